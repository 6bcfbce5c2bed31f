"""The client against a real Prefect server and process worker (see conftest.py for the deployments)."""

import asyncio
import json
import os
import re
import subprocess
import sys
import time

import pytest

from pipelines.client import (
    IdempotencyConflictError,
    ParameterError,
    RunFailedError,
    UnknownWorkflowError,
)
from tests.client import notebook

pytestmark = pytest.mark.integration

EMPTY = "nowhere"  # a namespace with no data: delay_model fails fast when told to read it


def _cli(*args, env, cwd):
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_example_notebook_submits_waits_and_reads_outputs_through_the_server(
    deployed, tmp_path, monkeypatch
):
    for key, value in deployed.env.items():
        monkeypatch.setenv(key, value)
    executed = notebook.execute(tmp_path)
    text = notebook.all_text(executed)
    assert f"Client(namespace='{deployed.namespace}', server {deployed.api_url})" in text
    assert f"deployment delay_model/{deployed.namespace}" in text

    metrics = notebook.metrics(executed)
    client = deployed.client()
    runs = client.runs(name="delay_model")
    completed = runs.filter(runs["state"] == "Completed")
    assert completed.height == 1, deployed.worker.output()[-3000:]
    run = client.get_run(completed["id"][0])
    outputs = run.outputs
    assert metrics == {key: outputs[key] for key in metrics}
    assert outputs["accuracy"] > outputs["baseline_accuracy"] and outputs["mae"] < outputs["baseline_mae"]
    assert outputs["namespace"] == deployed.namespace and outputs["window"] == "first..2013-01-03"
    assert run.url == f"{deployed.ui_url}/flow-runs/flow-run/{run.id}"
    assert completed["url"][0] == run.url
    assert f"accuracy={outputs['accuracy']:.4g}" in completed["outputs"][0]
    # The worker wrote the data and the results under the namespace's root; the notebook only read them.
    assert (deployed.data_url / deployed.namespace / "cleaned" / "flights" / "_delta_log").is_dir()
    assert any(deployed.results.iterdir())
    assert outputs["summary"] in [line.message for line in run.logs()]


def _eventually(check, seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def test_a_failed_run_raises_with_the_failure_message_and_the_ui_link_inside_a_running_loop(deployed):
    async def analyst():
        asyncio.get_running_loop()
        client = deployed.client()
        run = client.submit("delay_model", source_namespace=EMPTY)
        run.wait(timeout=300, progress=False)
        return run

    run = asyncio.run(analyst())
    assert run.state == "Failed", deployed.worker.output()[-3000:]
    with pytest.raises(RunFailedError) as caught:
        _ = run.outputs
    message = str(caught.value)
    assert f"delay_model run {run.id} in namespace {deployed.namespace} ended Failed" in message
    assert f"namespace '{EMPTY}' has no cleaned flights or weather table" in message
    assert message.endswith(f"UI: {deployed.ui_url}/flow-runs/flow-run/{run.id}")
    # The run's process ships its logs in batches and runs its failure hooks after the state is final,
    # so the error line may reach the API a moment after the run is Failed.
    assert _eventually(
        lambda: any("has no cleaned flights" in line.message for line in run.logs() if line.level == "ERROR")
    ), [str(line) for line in run.logs()]


def test_workflows_are_the_namespaces_deployments_with_their_parameters(deployed):
    workflows = {w.name: w for w in deployed.client().workflows()}
    assert set(workflows) == {"delay_model", "flights"}
    assert workflows["flights"].deployment == f"flights/{deployed.namespace}"
    assert workflows["flights"].kind == "cookbook"
    assert workflows["flights"].signature == (
        "flights(start: str = '2013-01-01', through: str = '2013-12-31', land_sample: bool = True)"
    )
    assert workflows["delay_model"].description.startswith("Train and score an arrival-delay model")


def test_unknown_and_undeployed_workflows_and_bad_parameters_send_nothing(deployed):
    client = deployed.client()
    before = client.runs(outputs=False).height
    with pytest.raises(UnknownWorkflowError) as caught:
        client.submit("delay_modle")
    assert str(caught.value) == (
        f"Unknown workflow 'delay_modle' in namespace '{deployed.namespace}' on {deployed.api_url}. "
        "Did you mean 'delay_model'? Deployed here: delay_model, flights."
    )
    with pytest.raises(UnknownWorkflowError) as caught:
        client.submit("ingest", dataset="flights")
    assert str(caught.value) == (
        f"Workflow 'ingest' is in the code but has no deployment ingest/{deployed.namespace} on "
        f"{deployed.api_url}. Deploy the namespace (`pipelines deploy`) and submit again."
    )
    with pytest.raises(ParameterError, match=re.escape("has no parameter 'throug'. Did you mean 'through'?")):
        client.submit("flights", throug="2013-01-02")
    with pytest.raises(
        ParameterError,
        match=re.escape("parameter 'seed' expects int, got str 'forty-two'; pass e.g. seed=42."),
    ):
        client.submit("delay_model", seed="forty-two")
    assert client.runs(outputs=False).height == before


def test_an_idempotency_key_returns_the_same_flow_run(deployed):
    client = deployed.client()
    first = client.submit("delay_model", source_namespace=EMPTY, seed=1, idempotency_key="cell-7")
    again = client.submit("delay_model", source_namespace=EMPTY, seed=1, idempotency_key="cell-7")
    assert again.id == first.id
    with pytest.raises(IdempotencyConflictError, match="differing: seed"):
        client.submit("delay_model", source_namespace=EMPTY, seed=2, idempotency_key="cell-7")
    first.wait(timeout=300, progress=False)
    assert len([i for i in client.runs(outputs=False)["id"] if i == first.id]) == 1


def test_cli_submit_prints_the_run_and_with_wait_its_outputs_or_the_failure(deployed, tmp_path):
    submitted = _cli("submit", "flights", "-p", "through=2013-01-01", env=deployed.env, cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    info = json.loads(submitted.stdout)
    assert info["workflow"] == "flights" and info["namespace"] == deployed.namespace
    assert info["url"] == f"{deployed.ui_url}/flow-runs/flow-run/{info['id']}"

    waited = _cli("submit", "flights", "-p", "through=2013-01-01", "--wait", env=deployed.env, cwd=tmp_path)
    assert waited.returncode == 0, waited.stderr + deployed.worker.output()[-3000:]
    outputs = json.loads(waited.stdout)
    assert outputs["window"] == "2013-01-01..2013-01-01"
    assert outputs["namespace"] == deployed.namespace
    assert "Completed" in waited.stderr

    failed = _cli(
        "submit", "delay_model", "-p", f"source_namespace={EMPTY}", "--wait", env=deployed.env, cwd=tmp_path
    )
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert "ended Failed" in failed.stderr and f"UI: {deployed.ui_url}/flow-runs/flow-run/" in failed.stderr
