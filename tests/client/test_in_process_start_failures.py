"""An in-process submit whose start fails raises in the caller, leaves no run thread behind, and the
interpreter still exits (the process runs in a subprocess, so a hang fails the test by its timeout)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.local

SCRIPT = textwrap.dedent(
    """
    import json, sys, threading, time
    from prefect import flow

    import pipelines.client as client_module
    from pipelines.client import Client
    from pipelines.components.errors import PipelinesError

    report = {}
    client = Client(namespace="research-start")

    # 1. The in-process API cannot start in time: the caller gets the error, no run thread starts.
    try:
        client.submit("flights", through="2013-01-01")
    except PipelinesError as exc:
        report["api"] = str(exc)
    report["threads_after_api"] = [t.name for t in threading.enumerate() if t.name.startswith("pipelines-run")]

    # 2. The API is up, but the run cannot be found (as when the API times out under load) while
    #    the flow itself never ends: the caller gets the error and is not held at exit.
    import os
    os.environ.pop("PIPELINES_LOCAL_API_TIMEOUT")
    forever = threading.Event()

    @flow(name="flights")
    def stuck(through: str = "2013-01-01"):
        forever.wait()

    real_discover = client_module.discover

    class Entry(type(next(e for e in real_discover() if e.name == "flights"))):
        def load(self):
            return stuck

    def patched():
        return [Entry(**vars(e)) if e.name == "flights" else e for e in real_discover()]

    client_module.discover = patched

    def unreadable(self, flow_name, tags):
        if any(t.startswith("client-submission:") for t in tags):
            raise TimeoutError("simulated: the in-process API did not answer")
        return []

    client_module.Client._find_runs_tagged = unreadable
    try:
        client.submit("flights", through="2013-01-01")
    except PipelinesError as exc:
        report["find"] = str(exc)
    report["daemon"] = [t.daemon for t in threading.enumerate() if t.name.startswith("pipelines-run")]
    print(json.dumps(report))
    """
)


def test_a_failed_in_process_start_raises_leaves_no_run_thread_and_lets_the_interpreter_exit(tmp_path):
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),  # fresh: the API's start-up has real work to do
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}",
        "PIPELINES_LOCAL_API_TIMEOUT": "0.001",
    }
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["api"].startswith("Prefect's in-process API did not start within 0.001 s"), report
    assert "set PIPELINES_LOCAL_API_TIMEOUT to allow longer" in report["api"]
    assert report["threads_after_api"] == []
    assert report["find"].startswith("flights could not start in-process: reading its run from Prefect's")
    assert "simulated: the in-process API did not answer" in report["find"]
    assert "The run was abandoned" in report["find"]
    # The stuck run's thread is a daemon, so the interpreter exited (returncode 0 above) instead of waiting.
    assert report["daemon"] in ([], [True])
