"""slot: the small ingest flow with its concurrency slot, against the same flow with the slot left out.

Both sides run the ingest flow on the same small input, on the same Prefect API; the baseline
replaces :func:`pipelines.components.limits.slot` with a block that takes nothing, so the
difference is what the namespace's and dataset's Prefect global concurrency limits cost a run
(acquire, record the holder, delete the record, release: four API calls; the limits' existence is
checked once a minute per process).
"""

from __future__ import annotations

import contextlib
from unittest import mock

from bench import _common, _data
from bench._harness import Benchmark, Case, Context, Target


@contextlib.contextmanager
def _no_slot(*args, **kwargs):
    yield


def setup(rows: int, context: Context) -> Case:
    landing = _data.events_landing(context.cache, rows)
    registry = _data.write_registry(context.work / "registry", {"events": "events/*.csv"})
    ours_data, baseline_data = context.work / "ours", context.work / "baseline"

    def run(data):
        result = _common.run_ingest(data=data, landing=landing, registry=registry)
        if result.rows_in != rows:
            raise AssertionError(f"ingest read {result.rows_in} rows, expected {rows}")

    def baseline():
        with mock.patch("pipelines.components.limits.slot", _no_slot):
            run(baseline_data)

    return Case(
        ours=lambda: run(ours_data),
        baseline=baseline,
        reset_ours=lambda: _common.fresh(ours_data),
        reset_baseline=lambda: _common.fresh(baseline_data),
        verify=lambda: _common.same_table(
            _common.cleaned_path(ours_data), _common.cleaned_path(baseline_data)
        ),
    )


BENCHMARK = Benchmark(
    name="slot",
    ours="the ingest flow on a small input, holding a slot of pipelines:<ns> and pipelines:<ns>:<dataset>",
    baseline="the same flow with the slot left out (limits.slot replaced by a no-op)",
    target=Target(1.1, "<=", "≤ 1.1x the baseline's time"),
    setup=setup,
    quick_size=2_000,
    full_size=20_000,
    describe_size=lambda rows: f"{rows:,} rows",
    runs=7,
    order=86,
)
