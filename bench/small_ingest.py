"""small_ingest: a 20k-row CSV -> cleaned Delta through the ingest flow, against hand-written polars.

At this size the run is mostly fixed cost (Prefect's flow and task runs, landing, the commit and the
_meta ledgers), which is what every small incremental run pays.
"""

from __future__ import annotations

from bench import ingest
from bench._harness import Benchmark, Case, Context, Target


def setup(rows: int, context: Context) -> Case:
    case = ingest.setup(rows, context)  # the same case as `ingest`, at a small size
    case.floor = _empty_workflow()
    return case


def _empty_workflow():
    """A Prefect flow that does nothing and persists its JSON result where the workflows keep theirs: what
    every workflow run pays (the notebook client reads each run's result back), without the library's hooks."""
    from pipelines.components.results import RESULT_SERIALIZER
    from pipelines.components.workflow import Workflow

    return Workflow(
        fn=lambda: {}, name="bench-empty-workflow", persist_result=True, result_serializer=RESULT_SERIALIZER
    )


BENCHMARK = Benchmark(
    name="small_ingest",
    ours="the ingest flow on a small input (as `ingest`): its fixed cost per run",
    baseline="hand-written polars: read CSV as text, cast, dedupe last-wins on the key, "
    "partitioned write_deltalake",
    target=Target(3.0, "<=", "≤ 3x the baseline's time"),
    setup=setup,
    floor="an empty Prefect flow run with a persisted JSON result, in the same process and API",
    quick_size=2_000,
    full_size=20_000,
    describe_size=lambda rows: f"{rows:,} rows",
    runs=5,
    order=85,
)
