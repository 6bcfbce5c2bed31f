"""cold_start: a fresh interpreter imports and runs a first ingest, as a user's first command does."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from bench import _child, _common, _data, _env
from bench._harness import Benchmark, Case, Context, Measurement


def setup(rows: int, context: Context) -> Case:
    landing = _data.events_landing(context.cache, rows)
    registry = _data.write_registry(context.work / "registry", {"events": "events/*.csv"})
    ours_data, baseline_data = context.work / "ours", context.work / "baseline"

    def side(name: str, data) -> Measurement:
        command = [sys.executable, "-m", "bench._child", name, "--landing", str(landing)]
        command += ["--registry", str(registry), "--data", str(data)]
        wall, values = _child.run(command, env=_env.child_env())
        return Measurement(wall, values)

    prefect = _import_prefect_seconds(1 if context.quick else 3)
    return Case(
        ours=lambda: side("ours", ours_data),
        baseline=lambda: side("baseline", baseline_data),
        reset_ours=lambda: _common.fresh(ours_data),
        reset_baseline=lambda: _common.fresh(baseline_data),
        verify=lambda: _common.same_table(_common.cleaned_path(ours_data), baseline_data / "table"),
        details={
            "import_prefect_seconds": prefect,
            "notes": "wall time of a whole fresh interpreter: start, imports (Prefect's dominate), "
            "and the first run, including Prefect's first flow run in the process; the per-run "
            "import and run seconds are in the JSON. For scale, in the same run a fresh "
            f'`python -c "import prefect"` took {statistics.median(prefect):.2f} s (median of {len(prefect)})',
        },
    )


def _import_prefect_seconds(runs: int) -> list[float]:
    """Wall seconds of a fresh `python -c "import prefect"`: the floor any Prefect command starts from."""
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import prefect"], check=True, env=_env.child_env())
        seconds.append(round(time.perf_counter() - started, 3))
    return seconds


BENCHMARK = Benchmark(
    name="cold_start",
    ours="a fresh `python` that imports the ingest flow and runs it once (Prefect's in-process API, "
    "database already migrated)",
    baseline="a fresh `python` that imports polars + deltalake and runs the hand-written ingest once",
    target=None,
    setup=setup,
    quick_size=1_000,
    full_size=10_000,
    describe_size=lambda rows: f"{rows:,} rows",
    runs=5,
    order=90,
)
