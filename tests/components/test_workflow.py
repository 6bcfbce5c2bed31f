"""The workflow decorator: the library's result settings, and one result storage block per API, not per run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from prefect.filesystems import LocalFileSystem
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_DEFAULT_RESULT_STORAGE_BLOCK,
    PREFECT_LOCAL_STORAGE_PATH,
    temporary_settings,
)

from pipelines.components.results import RESULT_SERIALIZER
from pipelines.components.workflow import Workflow, result_storage, workflow


@workflow(name="workflow-probe")
def probe(value: int) -> dict:
    return {"value": value}


def test_a_workflow_persists_json_and_runs_the_librarys_hooks():
    assert isinstance(probe, Workflow)
    assert probe.persist_result is True
    assert probe.result_serializer is RESULT_SERIALIZER
    assert [h.__name__ for h in probe.on_completion] == ["on_run_completion", "on_complete"]
    assert [h.__name__ for h in probe.on_failure] == ["on_run_failure", "on_fail"]


def test_runs_share_one_storage_block_and_any_process_reads_their_results(prefect_harness):
    states = [probe(n, return_state=True) for n in range(3)]
    block_ids = {state.data.storage_block_id for state in states}
    assert len(block_ids) == 1 and None not in block_ids  # Prefect alone saves a new block per run

    # another process, as the notebook client is, reads each result back through the API
    run_ids = [str(state.state_details.flow_run_id) for state in states]
    script = (
        "import asyncio, json, sys\n"
        "from prefect import get_client\n"
        "async def main():\n"
        "    async with get_client() as client:\n"
        "        out = []\n"
        "        for run_id in sys.argv[1:]:\n"
        "            run = await client.read_flow_run(run_id)\n"
        "            out.append(await run.state.result(fetch=True))\n"
        "        print(json.dumps(out))\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ}
    if PREFECT_API_URL.value():
        env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    else:
        from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

        env["PREFECT_API_DATABASE_CONNECTION_URL"] = PREFECT_API_DATABASE_CONNECTION_URL.value()
    done = subprocess.run(
        [sys.executable, "-c", script, *run_ids], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [{"value": n} for n in range(3)]


def test_the_storage_is_kept_per_api_and_folder(tmp_path):
    with temporary_settings(
        {PREFECT_API_URL: "http://127.0.0.1:9/api", PREFECT_LOCAL_STORAGE_PATH: str(tmp_path)}
    ):
        first = result_storage()
        assert isinstance(first, LocalFileSystem) and first.basepath == str(tmp_path)
        assert result_storage() is first  # saved once, then reused by every run
    with temporary_settings(
        {PREFECT_API_URL: "http://127.0.0.1:10/api", PREFECT_LOCAL_STORAGE_PATH: str(tmp_path)}
    ):
        assert result_storage() is not first  # another API never gets a block id it does not have
    with temporary_settings(
        {PREFECT_API_URL: "http://127.0.0.1:9/api", PREFECT_LOCAL_STORAGE_PATH: str(tmp_path / "x")}
    ):
        assert result_storage().basepath == str(tmp_path / "x")


def test_a_saved_default_block_or_a_given_storage_wins(tmp_path):
    with temporary_settings({PREFECT_DEFAULT_RESULT_STORAGE_BLOCK: "remote-file-system/pipelines-results-x"}):
        assert probe.result_storage == "remote-file-system/pipelines-results-x"
    given = LocalFileSystem(basepath=str(tmp_path))

    @workflow(name="workflow-given", result_storage=given)
    def with_storage() -> int:
        return 1

    assert with_storage.result_storage is given
    assert probe.with_options(name="copy").result_storage is probe.result_storage


def test_as_is_hands_arguments_to_the_task_without_prefect_walking_them(prefect_harness):
    from prefect import flow, task
    from prefect.states import Completed

    from pipelines.components.workflow import as_is

    @task
    def look(state: dict, *, label: str) -> tuple[str, str]:
        return type(state["inner"]).__name__, label

    def argument() -> dict:
        # Prefect's walk resolves a state found anywhere in an argument into its result: what it
        # finds shows whether it walked
        return {"inner": Completed(data=5), "files": {f"raw/{n}.csv": f"{n:032x}" for n in range(1000)}}

    @flow
    def probe() -> tuple[tuple[str, str], tuple[str, str]]:
        return as_is(look)(argument(), label="x"), look(argument(), label="x")

    handed, walked = probe()
    assert handed == ("State", "x")
    assert walked == ("int", "x")
