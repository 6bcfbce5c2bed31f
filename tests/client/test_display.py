"""What the client shows: the progress line of a run and the key outputs of runs()."""

import io
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from pipelines.client import Run, _key_outputs, _Progress

pytestmark = pytest.mark.unit


def _flow_run(state, *, started=None, expected=None, ended=None):
    return SimpleNamespace(
        state=SimpleNamespace(type=SimpleNamespace(value=state.upper())),
        state_name=state,
        start_time=started,
        end_time=ended,
        expected_start_time=expected,
        work_pool_name="pipelines",
        work_queue_name="research-x",
    )


def _run():
    client = SimpleNamespace(
        namespace="research-x", _run_url=lambda run_id: f"http://ui/flow-runs/flow-run/{run_id}"
    )
    return Run(client, "1f0c2a9b-0000-4000-8000-000000000000", "delay_model")


def test_the_progress_line_names_the_run_its_state_time_and_link():
    now = datetime.now(UTC)
    line = _run()._describe(_flow_run("Running", started=now - timedelta(seconds=75)))
    assert line.startswith("delay_model/research-x 1f0c2a9b: Running 1m 1")
    assert line.endswith("  http://ui/flow-runs/flow-run/1f0c2a9b-0000-4000-8000-000000000000")
    done = _run()._describe(_flow_run("Completed", started=now - timedelta(seconds=9), ended=now))
    assert "Completed 9.0s" in done


def test_a_run_no_worker_takes_says_which_pool_and_queue_need_one():
    now = datetime.now(UTC)
    fresh = _run()._describe(_flow_run("Scheduled", expected=now - timedelta(seconds=5)))
    assert "no worker" not in fresh
    stuck = _run()._describe(_flow_run("Scheduled", expected=now - timedelta(seconds=45)))
    assert (
        "Scheduled for 45" in stuck
        and "no worker has taken it; is one polling work pool 'pipelines' (queue 'research-x')?" in stuck
    )
    assert "`prefect worker start --pool pipelines`" in stuck


def test_without_a_terminal_or_notebook_progress_is_one_line_per_state_change():
    stream = io.StringIO()
    progress = _Progress(True, stream)
    assert progress.mode == "lines"
    for text, key in [
        ("a: Scheduled", "Scheduled"),
        ("a: Running 1s", "Running"),
        ("a: Running 2s", "Running"),
    ]:
        progress.show(text, key)
    progress.close("a: Completed 3s")
    assert stream.getvalue().splitlines() == ["a: Scheduled", "a: Running 1s", "a: Completed 3s"]
    silent = io.StringIO()
    off = _Progress(False, silent)
    off.show("x", "Running")
    off.close("y")
    assert silent.getvalue() == ""


def test_key_outputs_put_metrics_first_then_counts_and_skip_text_and_nesting():
    outputs = {
        "namespace": "research-x",
        "rows_used": 2659,
        "accuracy": 0.87406,
        "mae": 10.947,
        "features": ["dep_delay"],
        "duration_seconds": 3.2,
        "summary": "long text",
        "full": False,
    }
    assert _key_outputs(outputs) == "accuracy=0.8741, mae=10.95, rows_used=2659, full=False"
    assert _key_outputs({"a": 1.0, "b": 2.0, "c": 3, "d": 4}, limit=3) == "a=1, b=2, c=3"
