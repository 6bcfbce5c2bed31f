"""no_new_data: a fresh process runs an incremental ingest that finds nothing new, against Prefect's floor.

A scheduled run is a fresh process, and most scheduled runs of an incremental dataset find nothing new.
Ours: a fresh interpreter imports the ingest flow and runs it on a loaded table whose contract has
expectations, with no new file. Baseline: a fresh interpreter that imports Prefect and runs one empty
flow on the same in-process API, the floor any Prefect run in a fresh process pays. Both are timed
from outside, start to exit; each side also reports its import and run seconds, and ours whether it
imported Great Expectations (it should not: nothing is validated).
"""

from __future__ import annotations

import sys

from bench import _child, _common, _data, _env
from bench._harness import Benchmark, Case, Context, Measurement

EXPECTATIONS = """\
expectations:
  - expect_column_values_to_not_be_null: {column: event_id}
  - expect_column_values_to_be_between: {column: amount, min_value: -100000, max_value: 100000}
  - expect_column_values_to_be_in_set: {column: currency, value_set: [EUR, USD, GBP]}
"""


def setup(rows: int, context: Context) -> Case:
    landing = _data.events_landing(context.cache, rows)
    registry = _data.write_registry(context.work / "registry", {"events": "events/*.csv"})
    contract = registry.parent / "contracts" / "events.yaml"
    contract.write_text(contract.read_text() + EXPECTATIONS)
    data = context.work / "data"
    loaded = _common.run_ingest(data=data, landing=landing, registry=registry)  # untimed: the table exists
    runs: list[dict] = []

    def side(name: str) -> Measurement:
        command = [sys.executable, "-m", "bench._child", name, "--landing", str(landing)]
        command += ["--registry", str(registry), "--data", str(data)]
        wall, values = _child.run(command, env=_env.child_env())
        if name == "ours":
            runs.append(values)
        return Measurement(wall, values)

    def verify() -> dict:
        statuses = {run["status"] for run in runs}
        if statuses != {"no_new_data"}:
            raise AssertionError(f"expected runs that find nothing new, got {sorted(statuses)}")
        if any(run["great_expectations_imported"] for run in runs):
            raise AssertionError("a run that validated nothing imported Great Expectations")
        return {"rows_in_table": loaded.written, "runs": len(runs)}

    return Case(ours=lambda: side("ours"), baseline=lambda: side("prefect-floor"), verify=verify)


BENCHMARK = Benchmark(
    name="no_new_data",
    ours="a fresh `python` that imports the ingest flow and runs it on a loaded table with expectations, "
    "nothing new to ingest",
    baseline="a fresh `python` that imports Prefect and runs one empty flow (Prefect's floor for a run)",
    target=None,
    setup=setup,
    quick_size=1_000,
    full_size=100_000,
    describe_size=lambda rows: f"{rows:,} rows loaded",
    runs=5,
    order=92,
)
