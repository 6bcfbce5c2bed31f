"""Alerts reach a real webhook receiver and a real SMTP server on loopback; research namespaces send none."""

import csv
import json
import socket
import threading
import time
import uuid
from datetime import timedelta
from email import message_from_bytes
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prefect import tags

from pipelines.components import alerts
from pipelines.components.environment import Settings
from pipelines.components.registry import COLUMNS, load_registry
from pipelines.components.resources import Storage
from pipelines.components.status import status_for_settings

CONTRACT = "columns:\n  order_id: {type: int64, nullable: false}\n  amount: {type: float64}\n"
STOPS = "expectations:\n  - expect_table_row_count_to_be_between: {min_value: 10}\n"
ROWS = "order_id,amount\n1,10.0\n2,-1.0\n3,5.5\n"


class Inbox:
    def __init__(self):
        self.items = []
        self.lock = threading.Lock()

    def add(self, item):
        with self.lock:
            self.items.append(item)

    def wait_for(self, predicate, what, timeout=60):
        """The first item matching predicate; the server's notification loop sends within seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [i for i in self.items if predicate(i)]
            if found:
                return found[0]
            time.sleep(0.2)
        raise AssertionError(f"no {what} arrived; got: {self.items}")


@pytest.fixture
def webhook():
    """An HTTP receiver on loopback that records every JSON body POSTed to it."""
    inbox = Inbox()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            inbox.add(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    inbox.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield inbox
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def smtp():
    """aiosmtpd on a free loopback port that records every message (subject and text)."""
    from aiosmtpd.controller import Controller

    inbox = Inbox()

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            message = message_from_bytes(envelope.content, policy=email_policy)
            part = message.get_body(preferencelist=("plain",))
            inbox.add({"to": envelope.rcpt_tos, "subject": message["subject"], "text": part.get_content()})
            return "250 OK"

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    inbox.port = port
    try:
        yield inbox
    finally:
        controller.stop()


def _registry(root):
    folder = root / "registry"
    (folder / "contracts").mkdir(parents=True)
    rows = [
        {"name": "orders", "stage": "cleaned", "source": "orders/*.csv", "format": "csv", "primary_key": "order_id"},
        {"name": "items", "stage": "cleaned", "source": "items/*.csv", "format": "csv", "primary_key": "order_id",
         "freshness": "1h", "quarantine_threshold": "10%"},
    ]  # fmt: skip
    with open(folder / "datasets.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows({k: row.get(k, "") for k in COLUMNS} for row in rows)
    (folder / "contracts" / "orders.yaml").write_text(CONTRACT + STOPS)
    (folder / "contracts" / "items.yaml").write_text(CONTRACT)
    return folder / "datasets.csv"


@pytest.fixture
def channels(webhook, smtp, tmp_path, monkeypatch):
    """The environment deploy reads: webhook URL and SMTP server behind setting names, a small registry."""
    monkeypatch.setenv("TEST_ALERT_HOOK_URL", webhook.url)
    monkeypatch.setenv("PIPELINES_ALERT_WEBHOOK", "TEST_ALERT_HOOK_URL")
    monkeypatch.setenv("PIPELINES_ALERT_EMAIL_TO", "ops@example.com")
    monkeypatch.setenv("PIPELINES_ALERT_EMAIL_FROM", "pipelines@example.com")
    monkeypatch.setenv("PIPELINES_ALERT_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("PIPELINES_ALERT_SMTP_PORT", str(smtp.port))
    monkeypatch.setenv("PIPELINES_ALERT_SMTP_SECURITY", "none")
    monkeypatch.setenv("PIPELINES_REGISTRY", str(_registry(tmp_path)))
    monkeypatch.setenv("PIPELINES_LANDING_URL", str(tmp_path / "landing"))
    landing = Storage(str(tmp_path / "landing"))
    landing.write_atomic("orders/day1.csv", ROWS.encode())
    landing.write_atomic("items/day1.csv", (ROWS + "4,not a number\n").encode())  # 1 of 4 quarantined
    return webhook, smtp


def _has(message: dict, *texts: str) -> bool:
    blob = json.dumps(message)
    return all(t in blob for t in texts)


@pytest.mark.integration
def test_failed_run_stopped_batch_and_freshness_breach_reach_webhook_and_smtp(
    prefect_server, channels, monkeypatch
):
    from pipelines.workflows.ingest import ingest
    from pipelines.workflows.monitor import monitor

    webhook, smtp = channels
    namespace = f"e2e-alerts-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("PIPELINES_NAMESPACE", namespace)
    settings = Settings.resolve()
    with prefect_server.settings():
        setup = alerts.configure_alerts(settings, prefect_server.api_url)
        try:
            assert setup.enabled and setup.policies == 1
            assert setup.warnings == []
            assert sorted(setup.blocks) == [
                f"pipelines-alerts-{namespace}-email",
                f"pipelines-alerts-{namespace}-webhook",
            ]
            # deploying twice leaves one policy, not two
            assert alerts.configure_alerts(settings, prefect_server.api_url).removed_policies == 1

            with tags(f"namespace:{namespace}"):  # what a run of the namespace's deployment carries
                failed = ingest(dataset="no_such_dataset", return_state=True)
            assert failed.is_failed()
            failed_id = str(failed.state_details.flow_run_id)
            stopped = ingest(dataset="orders", return_state=True)
            assert stopped.is_failed()
            stopped_id = str(stopped.state_details.flow_run_id)
            (orders,) = status_for_settings(
                settings, ["orders"]
            )  # status reads the stop from _meta/validations
            assert (orders.last_run.result, orders.exists) == ("stopped", False)
            assert orders.last_run.reasons == ["expect_table_row_count_to_be_between failed, observed 3"]
            ingest(dataset="items")
            result = monitor(at=_later(settings, "items", hours=2))
            assert result.stale == ["items"] and result.alerts_sent == {"items": ["webhook", "email"]}

            # failed run: the server's notification policy -> webhook; the flow's hook -> email
            message = webhook.wait_for(lambda m: _has(m, failed_id), "failed-run webhook")
            assert message["namespace"] == namespace
            assert f"[{namespace}] flow run" in message["text"] and "is Failed" in message["text"]
            assert "no_such_dataset" in message["text"]
            assert f"/flow-runs/flow-run/{failed_id}" in message["text"]
            mail = smtp.wait_for(lambda m: failed_id in m["text"], "failed-run email")
            assert mail["subject"] == f"[{namespace}] ingest run failed: no_such_dataset"
            assert mail["to"] == ["ops@example.com"]
            assert "Unknown dataset 'no_such_dataset'" in mail["text"] or "no_such_dataset" in mail["text"]
            assert (
                f"namespace: {namespace}" in mail["text"]
                and f"/flow-runs/flow-run/{failed_id}" in mail["text"]
            )

            # stopped batch: the hook -> webhook and email, naming the expectation that stopped it
            for inbox, key in ((webhook, "text"), (smtp, "text")):
                got = inbox.wait_for(
                    lambda m, k=key: "stopped batch" in m.get("subject", "") and stopped_id in m[k],
                    "stopped batch",
                )
                assert got["subject"] == f"[{namespace}] stopped batch: orders"
                assert "'orders' was not promoted" in got[key]
                assert "expect_table_row_count_to_be_between(min_value=10)" in got[key]
                assert f"/flow-runs/flow-run/{stopped_id}" in got[key]

            # quarantine rate above the dataset's threshold (10%): the ingest hook -> webhook and email
            for inbox in (webhook, smtp):
                got = inbox.wait_for(lambda m: "quarantine rate" in m.get("subject", ""), "quarantine rate")
                assert got["subject"] == f"[{namespace}] quarantine rate above threshold: items"
                assert (
                    "1 of 4 row(s) quarantined (25.0%), above the dataset's quarantine_threshold of 10.0%"
                    in got["text"]
                )

            # freshness breach: the monitor flow -> webhook and email
            for inbox in (webhook, smtp):
                got = inbox.wait_for(lambda m: "freshness breach" in m.get("subject", ""), "freshness breach")
                assert got["subject"] == f"[{namespace}] freshness breach: items"
                assert "the registry's freshness is 1h" in got["text"] and "monitor run" in got["text"]
        finally:
            alerts.remove_alerts(namespace, prefect_server.api_url)

        # research: deploy configures nothing, a failing run sends nothing
        before = (len(webhook.items), len(smtp.items))
        monkeypatch.setenv("PIPELINES_NAMESPACE", "research-alerts")
        research = Settings.resolve()
        setup = alerts.configure_alerts(research, prefect_server.api_url)
        assert (setup.enabled, setup.blocks, setup.policies) == (False, [], 0)
        assert "research namespaces do not alert" in setup.why
        assert setup.warnings == []
        assert ingest(dataset="no_such_dataset", return_state=True).is_failed()
        assert ingest(dataset="orders", return_state=True).is_failed()
    assert (len(webhook.items), len(smtp.items)) == before

    # alerts on (e2e) but no channel configured: deploy says so instead of staying silent
    for key in ("PIPELINES_ALERT_WEBHOOK", "PIPELINES_ALERT_EMAIL_TO"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("PIPELINES_NAMESPACE", f"e2e-quiet-{uuid.uuid4().hex[:6]}")
    quiet = alerts.configure_alerts(Settings.resolve(), prefect_server.api_url)
    assert (quiet.enabled, quiet.blocks, quiet.policies) == (True, [], 0)
    assert "but no channel is configured, so nothing will be sent" in quiet.warnings[0]


def _later(settings, dataset, hours):
    (status,) = status_for_settings(settings, [dataset])
    assert status.freshness_verdict == "fresh"
    return status.last_commit_at + timedelta(hours=hours)


def test_quarantine_threshold_breach_text(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINES_REGISTRY", str(_registry(tmp_path)))
    spec = load_registry(tmp_path / "registry" / "datasets.csv").get("items")
    assert alerts.quarantine_breach(spec, 100, 10) is None
    assert alerts.quarantine_breach(spec, 100, 11) == (
        "11 of 100 row(s) quarantined (11.0%), above the dataset's quarantine_threshold of 10.0%; "
        "the reasons are in quarantine/items"
    )


def test_alert_settings_explain_what_is_missing(monkeypatch):
    monkeypatch.setenv("PIPELINES_NAMESPACE", "serving")
    settings = Settings.resolve()
    with pytest.raises(Exception, match="need PIPELINES_ALERT_EMAIL_FROM, PIPELINES_ALERT_SMTP_HOST"):
        alerts.AlertSettings.resolve(settings, {"PIPELINES_ALERT_EMAIL_TO": "ops@example.com"})
    with pytest.raises(Exception, match="PIPELINES_ALERTS='sometimes' is not allowed: use auto, on or off"):
        alerts.AlertSettings.resolve(settings, {"PIPELINES_ALERTS": "sometimes"})
    assert alerts.AlertSettings.resolve(settings, {}).enabled
    assert not alerts.AlertSettings.resolve(settings, {"PIPELINES_ALERTS": "off"}).enabled
