"""Alerts through Prefect's notification machinery: blocks per namespace, flow-run notification policies, state hooks.

``pipelines deploy`` calls :func:`configure_alerts`, which saves one Prefect notification block per
configured channel (a webhook, Slack, email over SMTP) as ``pipelines-alerts-<namespace>-<channel>``
and, for the channels the Prefect server can deliver itself (webhook, Slack), a flow-run notification
policy on the tag ``namespace:<namespace>`` for the states Failed, Crashed and TimedOut. What a policy
cannot see goes through the same blocks from state hooks (:func:`run_hooks`) and the ``monitor`` flow:
a failed or crashed run by email (the SMTP block is this module's, which the server does not import),
a stopped batch, a quarantine rate above the dataset's ``quarantine_threshold``, a freshness breach
and an unhealthy e2e report.

Serving and e2e namespaces alert by default; research namespaces do not (``PIPELINES_ALERTS`` = auto,
on or off). Every setting below is read from the environment (or ./.env); channel credentials are
secrets looked up by name (:mod:`pipelines.components.secrets`) when deploy saves the blocks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlencode

from prefect.blocks.notifications import (
    AbstractAppriseNotificationBlock,
    CustomWebhookNotificationBlock,
    SlackWebhook,
)
from pydantic import BaseModel
from pydantic.v1 import Field, SecretStr

from pipelines.components.environment import Kind, Settings, read_dotenv
from pipelines.components.errors import ConfigError
from pipelines.components.secrets import get_secret

CHANNELS = ("webhook", "slack", "email")
POLICY_CHANNELS = ("webhook", "slack")  # block types the Prefect server itself can load and send
POLICY_STATES = ["Failed", "Crashed", "TimedOut"]
SETTINGS = {
    "PIPELINES_ALERTS": "auto (serving and e2e alert, research does not), on or off.",
    "PIPELINES_ALERT_WEBHOOK": "Name of the secret holding the webhook URL (JSON POST {subject, text, namespace}).",
    "PIPELINES_ALERT_SLACK": "Name of the secret holding the Slack incoming-webhook URL.",
    "PIPELINES_ALERT_EMAIL_TO": "Comma-separated recipients; setting it turns email on.",
    "PIPELINES_ALERT_EMAIL_FROM": "Sender address of alert emails.",
    "PIPELINES_ALERT_SMTP_HOST": "SMTP server host.",
    "PIPELINES_ALERT_SMTP_PORT": "SMTP server port (default 587).",
    "PIPELINES_ALERT_SMTP_SECURITY": "starttls (default), ssl or none.",
    "PIPELINES_ALERT_SMTP_USERNAME": "SMTP user (optional).",
    "PIPELINES_ALERT_SMTP_PASSWORD": "Name of the secret holding the SMTP password (needed with a user).",
}
_SECURITY = {"starttls": "starttls", "ssl": "ssl", "none": "insecure"}


class SmtpEmail(AbstractAppriseNotificationBlock):
    """Email over SMTP (through Apprise, like Prefect's other notification blocks)."""

    _block_type_name = "Pipelines SMTP Email"
    _block_type_slug = "pipelines-smtp-email"
    _description = "Sends a notification as an email through an SMTP server."

    smtp_host: str = Field(description="SMTP server host.")
    smtp_port: int = Field(default=587, description="SMTP server port.")
    security: Literal["starttls", "ssl", "none"] = Field(
        default="starttls", description="Transport security."
    )
    username: str | None = Field(default=None, description="SMTP user, if the server needs a login.")
    password: SecretStr | None = Field(default=None, description="SMTP password.")
    from_email: str = Field(description="Sender address.")
    to_emails: list[str] = Field(description="Recipient addresses.")

    def apprise_url(self) -> SecretStr:
        login = ""
        if self.username:
            secret = self.password.get_secret_value() if self.password else ""
            login = f"{quote(self.username, safe='')}:{quote(secret, safe='')}@"
        query = urlencode(
            {"from": self.from_email, "to": ",".join(self.to_emails), "mode": _SECURITY[self.security]}
        )
        return SecretStr(f"mailto://{login}{self.smtp_host}:{self.smtp_port}?{query}")

    def block_initialization(self) -> None:
        self._start_apprise_client(self.apprise_url())


BLOCK_TYPES: dict[str, type] = {
    "webhook": CustomWebhookNotificationBlock,
    "slack": SlackWebhook,
    "email": SmtpEmail,
}


def block_name(namespace: str, channel: str) -> str:
    return f"pipelines-alerts-{namespace}-{channel}"


@dataclass(frozen=True)
class AlertSettings:
    """Which channels a namespace alerts through, from the environment; built with :meth:`resolve`."""

    namespace: str
    enabled: bool
    why: str
    webhook_secret: str | None = None
    slack_secret: str | None = None
    email_to: tuple[str, ...] = ()
    email_from: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_security: str = "starttls"
    smtp_username: str | None = None
    smtp_password_secret: str | None = None

    @classmethod
    def resolve(cls, settings: Settings, environ: Mapping[str, str] | None = None) -> AlertSettings:
        environ = dict(os.environ if environ is None else environ)
        dotenv = read_dotenv(Path.cwd() / ".env")

        def get(key: str) -> str | None:
            value = environ.get(key) or dotenv.get(key)
            return value.strip() if value and value.strip() else None

        mode = (get("PIPELINES_ALERTS") or "auto").lower()
        if mode not in ("auto", "on", "off"):
            raise ConfigError(f"PIPELINES_ALERTS={mode!r} is not allowed: use auto, on or off.")
        if mode == "auto":
            enabled = settings.kind in (Kind.SERVING, Kind.E2E)
            why = f"{settings.kind.value} namespaces {'alert' if enabled else 'do not alert'} by default"
        else:
            enabled, why = mode == "on", f"PIPELINES_ALERTS={mode}"
        email_to = tuple(a.strip() for a in (get("PIPELINES_ALERT_EMAIL_TO") or "").split(",") if a.strip())
        port_text = get("PIPELINES_ALERT_SMTP_PORT") or "587"
        if not port_text.isdigit():
            raise ConfigError(f"PIPELINES_ALERT_SMTP_PORT={port_text!r} is not a port number, e.g. 587.")
        security = (get("PIPELINES_ALERT_SMTP_SECURITY") or "starttls").lower()
        if security not in _SECURITY:
            raise ConfigError(
                f"PIPELINES_ALERT_SMTP_SECURITY={security!r} is not allowed: use {', '.join(_SECURITY)}."
            )
        found = cls(
            namespace=settings.namespace,
            enabled=enabled,
            why=why,
            webhook_secret=get("PIPELINES_ALERT_WEBHOOK"),
            slack_secret=get("PIPELINES_ALERT_SLACK"),
            email_to=email_to,
            email_from=get("PIPELINES_ALERT_EMAIL_FROM"),
            smtp_host=get("PIPELINES_ALERT_SMTP_HOST"),
            smtp_port=int(port_text),
            smtp_security=security,
            smtp_username=get("PIPELINES_ALERT_SMTP_USERNAME"),
            smtp_password_secret=get("PIPELINES_ALERT_SMTP_PASSWORD"),
        )
        if email_to:
            missing = [
                key
                for key, value in (
                    ("PIPELINES_ALERT_EMAIL_FROM", found.email_from),
                    ("PIPELINES_ALERT_SMTP_HOST", found.smtp_host),
                )
                if not value
            ]
            if found.smtp_username and not found.smtp_password_secret:
                missing.append("PIPELINES_ALERT_SMTP_PASSWORD (the secret's name)")
            if missing:
                raise ConfigError(
                    f"Email alerts to {', '.join(email_to)} need {', '.join(missing)}; set them in the "
                    "deploying environment (see docs/observability.md), or unset PIPELINES_ALERT_EMAIL_TO."
                )
        return found

    @property
    def channels(self) -> list[str]:
        chosen = []
        if self.webhook_secret:
            chosen.append("webhook")
        if self.slack_secret:
            chosen.append("slack")
        if self.email_to:
            chosen.append("email")
        return chosen

    def blocks(self) -> dict[str, Any]:
        """The notification block of every configured channel, with secrets looked up by name now."""
        made: dict[str, Any] = {}
        if self.webhook_secret:
            url = get_secret(self.webhook_secret).reveal()
            made["webhook"] = CustomWebhookNotificationBlock(
                name=block_name(self.namespace, "webhook"),
                url="{{url}}",
                json_data={"subject": "{{subject}}", "text": "{{body}}", "namespace": self.namespace},
                secrets={"url": url},
            )
        if self.slack_secret:
            # Apprise 1.13 rejects Prefect's default notify_type ("prefect_default"): name a real one.
            made["slack"] = SlackWebhook(url=get_secret(self.slack_secret).reveal(), notify_type="failure")
        if self.email_to:
            password = get_secret(self.smtp_password_secret).reveal() if self.smtp_password_secret else None
            made["email"] = SmtpEmail(
                smtp_host=self.smtp_host,
                smtp_port=self.smtp_port,
                security=self.smtp_security,
                username=self.smtp_username,
                password=password,
                from_email=self.email_from,
                to_emails=list(self.email_to),
                notify_type="failure",
            )
        return made


def policy_template(namespace: str) -> str:
    """The message of a failed/crashed run as the server sends it (Prefect's placeholders in braces)."""
    return (
        f"[{namespace}] flow run {{flow_run_name}} of {{flow_name}} is {{flow_run_state_name}}\n"
        f"namespace: {namespace}\n"
        "run: {flow_run_name} ({flow_run_id})\n"
        "parameters (dataset): {flow_run_parameters}\n"
        "what happened: {flow_run_state_message}\n"
        "UI: {flow_run_url}"
    )


class AlertSetup(BaseModel):
    """What :func:`configure_alerts` left in place for a namespace."""

    namespace: str
    enabled: bool
    why: str
    blocks: list[str] = []
    policies: int = 0
    removed_blocks: list[str] = []
    removed_policies: int = 0
    warnings: list[str] = []


def _run(factory):
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def _api(api_url: str | None):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: api_url} if api_url else {})


def configure_alerts(
    settings: Settings, api_url: str | None = None, environ: Mapping[str, str] | None = None
) -> AlertSetup:
    """Make the Prefect API hold exactly this namespace's alert blocks and policies (what deploy calls)."""
    wanted = AlertSettings.resolve(settings, environ)
    blocks = wanted.blocks() if wanted.enabled else {}
    with _api(api_url):
        return _run(lambda: _apply(wanted, blocks))


def remove_alerts(namespace: str, api_url: str | None = None) -> AlertSetup:
    """Delete a namespace's alert blocks and policies (what teardown calls)."""
    nothing = AlertSettings(namespace=namespace, enabled=False, why="torn down")
    with _api(api_url):
        return _run(lambda: _apply(nothing, {}))


async def _apply(wanted: AlertSettings, blocks: dict[str, Any]) -> AlertSetup:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunNotificationPolicyFilter,
        FlowRunNotificationPolicyFilterIsActive,
    )
    from prefect.exceptions import ObjectNotFound

    setup = AlertSetup(namespace=wanted.namespace, enabled=wanted.enabled, why=wanted.why)
    if wanted.enabled and not blocks:
        setup.warnings.append(
            f"Alerts are on for namespace {wanted.namespace} ({wanted.why}) but no channel is configured, so "
            "nothing will be sent: set PIPELINES_ALERT_WEBHOOK, PIPELINES_ALERT_SLACK or PIPELINES_ALERT_EMAIL_TO "
            "where deploy runs (docs/observability.md), or PIPELINES_ALERTS=off to silence this."
        )
    tag = f"namespace:{wanted.namespace}"
    async with get_client() as client:
        existing: dict[str, Any] = {}
        for channel, block_type in BLOCK_TYPES.items():
            try:
                existing[channel] = await client.read_block_document_by_name(
                    block_name(wanted.namespace, channel), block_type.get_block_type_slug()
                )
            except ObjectNotFound:
                pass
        ours = {doc.id for doc in existing.values()}
        policies = await client.read_flow_run_notification_policies(
            FlowRunNotificationPolicyFilter(is_active=FlowRunNotificationPolicyFilterIsActive(eq_=None))
        )
        for policy in policies:
            if policy.block_document_id in ours and tag in policy.tags:
                await client.delete_flow_run_notification_policy(policy.id)
                setup.removed_policies += 1
        for channel, doc in existing.items():
            if channel not in blocks:
                await client.delete_block_document(doc.id)
                setup.removed_blocks.append(doc.name)
        for channel, block in blocks.items():
            name = block_name(wanted.namespace, channel)
            document_id = await block.save(name, overwrite=True, client=client)
            setup.blocks.append(name)
            if channel in POLICY_CHANNELS:
                await client.create_flow_run_notification_policy(
                    block_document_id=document_id,
                    tags=[tag],
                    state_names=POLICY_STATES,
                    message_template=policy_template(wanted.namespace),
                )
                setup.policies += 1
    return setup


# sending ------------------------------------------------------------------------------------


class Alert(BaseModel):
    """One alert: it names the namespace, the dataset, the run, what happened, and a UI link."""

    namespace: str
    dataset: str
    what: str
    detail: str
    run: str
    url: str

    @property
    def subject(self) -> str:
        return f"[{self.namespace}] {self.what}: {self.dataset}"

    @property
    def body(self) -> str:
        return (
            f"{self.subject}\n"
            f"namespace: {self.namespace}\n"
            f"dataset: {self.dataset}\n"
            f"run: {self.run}\n"
            f"what happened: {self.detail}\n"
            f"UI: {self.url}"
        )


def for_this_run(settings: Settings, dataset: str, what: str, detail: str) -> Alert:
    """An alert about the flow run this code runs in (its name, id and UI page)."""
    from prefect.runtime import flow_run

    return Alert(
        namespace=settings.namespace,
        dataset=dataset,
        what=what,
        detail=detail,
        run=f"{flow_run.get_flow_name()} run {flow_run.get_name()} ({flow_run.get_id()})",
        url=ui_url(flow_run.get_id()),
    )


def alerts_enabled(settings: Settings, environ: Mapping[str, str] | None = None) -> bool:
    return AlertSettings.resolve(settings, environ).enabled


def ui_url(flow_run_id: Any) -> str:
    """The flow run's page in the Prefect UI (PREFECT_UI_URL, else the API URL without /api)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    base = PREFECT_UI_URL.value() or (PREFECT_API_URL.value() or "").removesuffix("/api")
    if not base:
        return f"none: flow run {flow_run_id} ran on Prefect's ephemeral API (no server, no UI)"
    return f"{base.rstrip('/')}/flow-runs/flow-run/{flow_run_id}"


def _load(channel: str, namespace: str):
    """The namespace's saved block for a channel, or None when deploy configured none."""
    try:
        return BLOCK_TYPES[channel].load(block_name(namespace, channel), _sync=True)
    except ValueError as exc:  # Prefect's way of saying the block document does not exist
        if "Unable to find block document" in str(exc):
            return None
        raise


def send(alert: Alert, settings: Settings, *, channels: tuple[str, ...] = CHANNELS) -> list[str]:
    """Send through every configured block of the namespace; returns the channels used.

    Nothing is sent where alerts are off (research by default). A channel that fails raises after the
    others were tried, so a broken channel never hides an alert on a working one.
    """
    if not alerts_enabled(settings):
        return []
    sent, errors = [], []
    for channel in channels:
        block = _load(channel, alert.namespace)
        if block is None:
            continue
        try:
            with block.raise_on_failure():
                block.notify(alert.body, subject=alert.subject, _sync=True)
        except Exception as exc:
            log = getattr(exc, "log", "") or str(exc)
            errors.append(f"{channel} ({block_name(alert.namespace, channel)}): {type(exc).__name__}: {log}")
            continue
        sent.append(channel)
    if errors:
        raise ConfigError(
            f"Alert {alert.subject!r} could not be sent through {'; '.join(errors)}. Check the block in the "
            "Prefect UI (Blocks) or the settings deploy saved it from (docs/observability.md)."
        )
    return sent


def quarantine_breach(spec: Any, rows_in: int, quarantined: int) -> str | None:
    """Why a run's quarantine rate is above the dataset's threshold, or None."""
    threshold = spec.quarantine_threshold
    if threshold is None or not rows_in:
        return None
    rate = quarantined / rows_in
    if rate <= threshold:
        return None
    return (
        f"{quarantined:,} of {rows_in:,} row(s) quarantined ({rate:.1%}), above the dataset's quarantine_threshold "
        f"of {threshold:.1%}; the reasons are in quarantine/{spec.name}"
    )


# state hooks --------------------------------------------------------------------------------


def _exception(state) -> BaseException | None:
    try:
        value = state.result(raise_on_failure=False, fetch=True)
    except Exception as exc:  # the result could not be read back; the state message still says what
        return exc
    return value if isinstance(value, BaseException) else None


def _run_label(flow, flow_run) -> str:
    return f"{flow.name} run {flow_run.name} ({flow_run.id})"


def on_run_failure(flow, flow_run, state) -> None:
    """Flow hook (on_failure, on_crashed): a stopped batch at any level; a failed top-level run by email."""
    from pipelines.components.environment import get_settings

    settings = get_settings()
    if not alerts_enabled(settings):
        return
    dataset = str((flow_run.parameters or {}).get("dataset") or "-")
    error = _exception(state)
    label, url = _run_label(flow, flow_run), ui_url(flow_run.id)
    stopped_batch(settings, dataset, error, label, url)
    if flow_run.parent_task_run_id is None:
        send(
            Alert(
                namespace=settings.namespace,
                dataset=dataset,
                what=f"{flow.name} run {state.name.lower()}",
                detail=state.message or (str(error) if error else state.name),
                run=label,
                url=url,
            ),
            settings,
            channels=tuple(c for c in CHANNELS if c not in POLICY_CHANNELS),
        )


def on_run_completion(flow, flow_run, state) -> None:
    """Flow hook (on_completion) of ingest: a quarantine rate above the dataset's threshold."""
    from pipelines.components.environment import get_settings

    settings = get_settings()
    if not alerts_enabled(settings):
        return
    quarantine_rate(settings, state.result(fetch=True), _run_label(flow, flow_run), ui_url(flow_run.id))


def stopped_batch(settings: Settings, dataset: str, error: BaseException | None, run: str, url: str) -> None:
    """Alert when ``error`` is a stopped batch (a failed error-severity check); nothing otherwise.

    Called by the flow hooks and by a cookbook's task per dataset (tasks have no flow hooks)."""
    from pipelines.components.quality import ValidationFailedError

    if not isinstance(error, ValidationFailedError) or not alerts_enabled(settings):
        return
    send(
        Alert(
            namespace=settings.namespace,
            dataset=dataset,
            what="stopped batch",
            detail=str(error),
            run=run,
            url=url,
        ),
        settings,
    )


def quarantine_rate(settings: Settings, result: Any, run: str, url: str) -> None:
    """Alert when an ingest result quarantined more than its dataset's threshold; nothing otherwise."""
    from pipelines.components.registry import load_registry

    rows_in, quarantined = getattr(result, "rows_in", 0), getattr(result, "quarantined", 0)
    if not rows_in or not alerts_enabled(settings):
        return
    spec = load_registry(settings.registry_path).get(result.dataset)
    breach = quarantine_breach(spec, rows_in, quarantined)
    if breach:
        send(
            Alert(
                namespace=settings.namespace,
                dataset=spec.name,
                what="quarantine rate above threshold",
                detail=f"{breach} (pipelines run {result.run_id})",
                run=run,
                url=url,
            ),
            settings,
        )


def run_hooks() -> dict[str, list]:
    """The state hooks of a workflow or cookbook flow (``@workflow`` sets them: :mod:`pipelines.components.workflow`).

    Alerts (this module) and OpenLineage run events (:mod:`pipelines.components.lineage`).
    """
    from pipelines.components import lineage

    return {
        "on_running": [lineage.on_start],
        "on_failure": [on_run_failure, lineage.on_fail],
        "on_crashed": [on_run_failure, lineage.on_fail],
        "on_completion": [on_run_completion, lineage.on_complete],
    }
