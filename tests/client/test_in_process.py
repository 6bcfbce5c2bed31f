"""The client with no Prefect server configured: flows run in a background thread of this process."""

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid

import pytest

from pipelines.client import (
    Client,
    IdempotencyConflictError,
    ParameterError,
    RunFailedError,
    RunNotFinishedError,
    RunTimeoutError,
    UnknownWorkflowError,
)
from pipelines.components.discovery import discover
from pipelines.components.errors import PipelinesError
from pipelines.components.resources import Lake, Storage
from tests.client import notebook

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(autouse=True)
def namespace(monkeypatch):
    """A namespace of its own per test: the harness's API (and its run history) is shared by the session."""
    name = f"research-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PIPELINES_NAMESPACE", name)
    return name


def test_submit_wait_outputs_logs_and_runs_from_inside_a_running_event_loop(tmp_path):
    from prefect.settings import PREFECT_LOGGING_LEVEL, temporary_settings

    async def analyst():
        # A running loop, as in Jupyter: every call below is a plain synchronous call.
        asyncio.get_running_loop()
        client = Client(namespace="research-loop")
        flights = client.submit("flights", through="2013-01-02")
        assert re.fullmatch(
            rf"Run\(flights/research-loop, id={flights.id}, state=(Scheduled|Pending|Running)\)",
            repr(flights),
        )
        with pytest.raises(RunNotFinishedError, match=re.escape("Call run.wait() first")):
            _ = flights.outputs
        with pytest.raises(RunTimeoutError, match=r"is still (Pending|Running) after 0\.01 s\. It goes on"):
            flights.wait(timeout=0.01, progress=False)
        flights.wait()
        model = client.submit("delay_model", through="2013-01-02").wait()
        return client, flights, model

    # Prefect applies its logging level at each flow run; INFO lets the run's summary line through.
    with temporary_settings(updates={PREFECT_LOGGING_LEVEL: "INFO"}):
        client, flights, model = asyncio.run(analyst())

    assert client.mode == "in-process" and flights.url is None
    assert (flights.state, model.state) == ("Completed", "Completed")
    assert repr(model) == f"Run(delay_model/research-loop, id={model.id}, state=Completed)"
    assert flights.outputs["window"] == "2013-01-01..2013-01-02"
    assert flights.outputs["datasets"]["flights"]["written"] > 0
    outputs = model.outputs
    assert 0.5 < outputs["accuracy"] <= 1 and outputs["accuracy"] > outputs["baseline_accuracy"]
    assert outputs["mae"] < outputs["baseline_mae"]
    assert outputs["namespace"] == "research-loop"
    # The run used the client's namespace, not the process's (PIPELINES_NAMESPACE).
    assert Lake(Storage(str(tmp_path / "data" / "research-loop"))).exists("cleaned", "flights")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["landing", "research-loop"]

    messages = [line.message for line in model.logs()]
    assert outputs["summary"] in messages
    assert all(str(line).split(" ", 2)[1] in ("INFO", "WARNING", "ERROR") for line in model.logs())

    runs = client.runs()
    assert runs.columns == ["name", "namespace", "state", "start", "duration", "outputs", "id", "url"]
    assert runs.get_column("name").to_list() == ["delay_model", "flights"]  # newest first, no subflows
    assert runs.get_column("state").to_list() == ["Completed", "Completed"]
    assert runs.get_column("id").to_list() == [model.id, flights.id]
    assert f"accuracy={outputs['accuracy']:.4g}" in runs.get_column("outputs")[0]
    assert runs.get_column("duration")[0].total_seconds() > 0
    assert client.runs(name="flights", limit=5).get_column("id").to_list() == [flights.id]
    assert client.get_run(model.id).outputs == outputs
    assert Client(namespace="research-other").runs().height == 0


def test_a_failed_run_raises_with_its_failure_message_and_logs(namespace):
    client = Client()
    run = client.submit("delay_model").wait(progress=False)
    assert run.state == "Failed"
    with pytest.raises(RunFailedError) as caught:
        _ = run.outputs
    message = str(caught.value)
    assert f"delay_model run {run.id} in namespace {namespace} ended Failed" in message
    assert f"namespace '{namespace}' has no cleaned flights or weather table" in message
    assert "Run `pipelines run flights` first" in message
    assert message.endswith("Logs: run.logs().")
    errors = [line.message for line in run.logs() if line.level == "ERROR"]
    assert any("has no cleaned flights or weather table" in m for m in errors)


def test_unknown_workflows_and_bad_parameters_start_nothing():
    client = Client()
    with pytest.raises(UnknownWorkflowError) as caught:
        client.submit("delay_modle")
    known = ", ".join(sorted(entry.name for entry in discover()))
    assert {"delay_model", "flights", "ingest"} <= set(known.split(", "))
    assert str(caught.value) == (
        "Unknown workflow 'delay_modle'. Did you mean 'delay_model'? Known workflows and cookbooks: "
        f"{known} (`pipelines list`)."
    )
    with pytest.raises(
        ParameterError, match=re.escape("delay_model has no parameter 'thru'. Did you mean 'through'?")
    ):
        client.submit("delay_model", thru="2013-01-02")
    with pytest.raises(
        ParameterError,
        match=re.escape(
            "parameter 'test_fraction' expects float, got str 'a fifth'; pass e.g. test_fraction=0.2"
        ),
    ):
        client.submit("delay_model", test_fraction="a fifth")
    with pytest.raises(ParameterError, match=re.escape("ingest needs parameter 'dataset' (str)")):
        client.submit("ingest")
    assert client.runs().height == 0


def test_workflows_lists_parameters_types_and_defaults():
    workflows = {w.name: w for w in Client().workflows()}
    assert set(workflows) == {entry.name for entry in discover()}
    assert {"delay_model", "flights", "ingest"} <= set(workflows)
    assert workflows["ingest"].signature == (
        "ingest(dataset: str, full_refresh: bool = False, batch_bytes: int = 134217728)"
    )
    assert workflows["flights"].kind == "cookbook" and workflows["delay_model"].kind == "workflow"
    seed = next(p for p in workflows["delay_model"].parameters if p.name == "seed")
    assert (seed.type, seed.default, seed.required) == ("int", 42, False)
    assert workflows["delay_model"].description.startswith("Train and score an arrival-delay model")


def test_an_idempotency_key_returns_the_first_run_instead_of_starting_another():
    client = Client()
    first = client.submit("delay_model", seed=3, idempotency_key="cell-1")
    again = client.submit("delay_model", seed=3, idempotency_key="cell-1")
    assert again.id == first.id
    assert "state=not read yet" not in repr(first)
    first.wait(progress=False)
    # A new client (a restarted kernel) finds it through the API.
    found = Client().submit("delay_model", seed=3, idempotency_key="cell-1")
    assert found.id == first.id and repr(found).endswith(f", state={first.state})")  # as the API has it
    with pytest.raises(IdempotencyConflictError) as caught:
        client.submit("delay_model", seed=4, idempotency_key="cell-1")
    assert (
        f"idempotency_key 'cell-1' already started delay_model run {first.id} with other parameters"
        in str(caught.value)
    )
    assert "differing: seed" in str(caught.value)
    assert client.runs().height == 1


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        cwd=cwd,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_submit_in_process_waits_and_reports_failures(tmp_path):
    failed = _cli("submit", "delay_model", "-p", "through=2013-01-02", cwd=tmp_path)
    assert failed.returncode == 1
    assert "No Prefect server is configured: the run executes in this process" in failed.stderr
    assert "ended Failed" in failed.stderr and "Run `pipelines run flights` first" in failed.stderr
    assert failed.stdout == ""

    typo = _cli("submit", "delay_model", "-p", "seed=abc", cwd=tmp_path)
    assert typo.returncode == 1
    assert "parameter 'seed' expects int, got str 'abc'" in typo.stderr

    unknown = _cli("submit", "flight", cwd=tmp_path)
    assert unknown.returncode == 1 and "Did you mean 'flights'?" in unknown.stderr

    ok = _cli("submit", "flights", "-p", "through=2013-01-01", "--wait", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["window"] == "2013-01-01..2013-01-01"
    assert "submitted flights run" in ok.stderr and "Completed" in ok.stderr


def test_the_example_notebook_runs_in_process_with_no_server(tmp_path, namespace):
    executed = notebook.execute(tmp_path)
    metrics = notebook.metrics(executed)
    assert metrics["accuracy"] > metrics["baseline_accuracy"]
    assert metrics["mae"] < metrics["baseline_mae"]
    assert metrics["rows_used"] > 100
    text = notebook.all_text(executed)
    assert f"Client(namespace='{namespace}', in-process (no Prefect server configured))" in text
    assert f"delay_model/{namespace}" in text and "Completed" in text
    assert f"flights 2013-01-01..2013-01-03 in namespace {namespace}" in text
    assert Lake(Storage(str(tmp_path / "data" / namespace))).exists("cleaned", "weather")


def test_a_result_that_cannot_be_read_says_which_storage_must_be_readable():
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    run = Client().submit("ingest", dataset="airlines").wait(progress=False)
    assert run.outputs["status"] == "no_new_data"  # nothing landed: a quick, completed run
    stored = run._refresh().state.data
    (PREFECT_LOCAL_STORAGE_PATH.value() / stored.storage_key).unlink()
    with pytest.raises(PipelinesError) as caught:
        _ = Client().get_run(run.id).outputs
    message = str(caught.value)
    missing = PREFECT_LOCAL_STORAGE_PATH.value() / stored.storage_key
    assert f"ingest run {run.id} completed, but its result could not be read: " in message
    assert f"Path {missing} does not exist" in message
    assert (
        "this process must be able to read (the PREFECT_LOCAL_STORAGE_PATH folder the run wrote to" in message
    )


def test_a_read_cancelled_by_prefect_replacing_its_loop_thread_is_made_again():
    """When an in-process run ends, Prefect shuts its event-loop thread down (cancelling whatever runs
    there) and starts another: a client read caught in that moment is repeated, not raised."""
    import threading

    from prefect._internal.concurrency.threads import get_global_loop, wait_for_global_loop_exit

    client = Client()
    calls: list[int] = []
    first_started = threading.Event()

    async def slow_read(prefect_client):
        calls.append(threading.get_ident())
        if len(calls) == 1:
            first_started.set()
            await asyncio.sleep(30)  # cancelled by the shutdown below
        return await prefect_client.api_healthcheck()

    old_thread = get_global_loop().thread
    shutter = threading.Thread(target=lambda: (first_started.wait(30), wait_for_global_loop_exit(30)))
    shutter.start()
    assert client._call(slow_read) is None  # healthy
    shutter.join(30)
    assert len(calls) == 2 and calls[0] == old_thread.ident
    assert get_global_loop().thread is not old_thread
