"""small_ingest: a 20k-row CSV -> cleaned Delta through the ingest flow, against hand-written polars.

At this size the run is mostly fixed cost (Prefect's flow and task runs, landing, the commit and the
_meta ledgers), which is what every small incremental run pays.
"""

from __future__ import annotations

from bench import ingest
from bench._harness import Benchmark, Target

BENCHMARK = Benchmark(
    name="small_ingest",
    ours="the ingest flow on a small input (as `ingest`): its fixed cost per run",
    baseline="hand-written polars: read CSV as text, cast, dedupe last-wins on the key, "
    "partitioned write_deltalake",
    target=Target(3.0, "<=", "≤ 3x the baseline's time"),
    setup=ingest.setup,  # the same case as `ingest`, at a small size
    quick_size=2_000,
    full_size=20_000,
    describe_size=lambda rows: f"{rows:,} rows",
    runs=5,
    order=85,
)
