"""small_ingest: a 20k-row CSV -> cleaned Delta through the ingest flow, against hand-written polars.

At this size the run is mostly fixed cost (Prefect's flow and task runs, landing, the commit and the
_meta ledgers), which is what every small incremental run pays.
"""

from __future__ import annotations

import os

from bench import _common, _data, _handwritten
from bench._harness import Benchmark, Case, Context, Target


def setup(rows: int, context: Context) -> Case:
    landing = _data.events_landing(context.cache, rows)
    registry = _data.write_registry(context.work / "registry", {"events": "events/*.csv"})
    ours_data, baseline_table = context.work / "ours", context.work / "baseline"
    csv_path = landing / "events" / "part-0000.csv"

    def ours():
        result = _common.run_ingest(data=ours_data, landing=landing, registry=registry)
        if result.rows_in != rows:
            raise AssertionError(f"ingest read {result.rows_in} rows, expected {rows}")

    return Case(
        ours=ours,
        baseline=lambda: _handwritten.ingest_csv([csv_path], baseline_table),
        reset_ours=lambda: _common.fresh(ours_data),
        reset_baseline=lambda: _common.fresh(baseline_table),
        verify=lambda: _common.same_table(_common.cleaned_path(ours_data), baseline_table),
        details={"csv_bytes": os.path.getsize(csv_path)},
    )


BENCHMARK = Benchmark(
    name="small_ingest",
    ours="the ingest flow on a small input (as `ingest`): its fixed cost per run",
    baseline="hand-written polars: read CSV as text, cast, dedupe last-wins on the key, "
    "partitioned write_deltalake",
    target=Target(3.0, "<=", "≤ 3x the baseline's time"),
    setup=setup,
    quick_size=2_000,
    full_size=20_000,
    describe_size=lambda rows: f"{rows:,} rows",
    runs=5,
    order=85,
)
