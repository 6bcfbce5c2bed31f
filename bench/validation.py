"""validation: the ingest flow with a contract of expectations, against the same ingest without them.

Both sides ingest the same CSV into an empty namespace; the only difference is the contract's
``expectations`` (Great Expectations vocabulary, evaluated on the batch before anything is
promoted, see docs/quality.md). The data meets every expectation, so both sides promote the same rows:
the difference in time is the cost of checking them.
"""

from __future__ import annotations

from bench import _common, _data
from bench._harness import Benchmark, Case, Context, Target

# Row-level and table-level checks of the kinds a contract usually holds; all pass on the data.
EXPECTATIONS = """\
expectations:
  - expect_column_values_to_not_be_null: {column: event_id}
  - expect_column_values_to_be_between: {column: amount, min_value: -50, max_value: 50000}
  - expect_column_values_to_be_between: {column: customer_id, min_value: 1, max_value: 2000000}
  - expect_column_values_to_be_in_set: {column: currency, value_set: [EUR, USD, GBP]}
  - expect_column_values_to_be_in_set: {column: status, value_set: [new, paid, shipped, refunded, cancelled]}
  - expect_column_value_lengths_to_equal: {column: currency, value: 3}
  - expect_column_values_to_match_regex: {column: status, regex: "^[a-z]+$"}
  - expect_column_max_to_be_between: {column: updated_at, min_value: 2024-01-01T00:00:00}
  - expect_table_row_count_to_be_between: {min_value: 1}
"""
EXPECTATION_COUNT = EXPECTATIONS.count("\n  - ")


def setup(rows: int, context: Context) -> Case:
    landing = _data.events_landing(context.cache, rows)
    checked = _data.write_registry(context.work / "registry-checked", {"events": "events/*.csv"})
    contract = checked.parent / "contracts" / "events.yaml"
    contract.write_text(contract.read_text() + EXPECTATIONS)
    plain = _data.write_registry(context.work / "registry-plain", {"events": "events/*.csv"})
    ours_data, plain_data = context.work / "checked", context.work / "plain"
    evaluated: list[int] = []

    def ours():
        result = _common.run_ingest(data=ours_data, landing=landing, registry=checked)
        if result.validation_status != "passed" or result.quarantined_by_expectations:
            raise AssertionError(f"the expectations should all pass on the benchmark data, got {result}")
        evaluated[:] = [result.expectations_evaluated]

    def baseline():
        result = _common.run_ingest(data=plain_data, landing=landing, registry=plain)
        if result.expectations_evaluated:
            raise AssertionError(f"the plain contract has no expectations, yet {result} evaluated some")

    def verify() -> dict:
        facts = _common.same_table(_common.cleaned_path(ours_data), _common.cleaned_path(plain_data))
        if evaluated != [EXPECTATION_COUNT]:
            raise AssertionError(f"expected {EXPECTATION_COUNT} expectations evaluated, got {evaluated}")
        facts["expectations_evaluated"] = evaluated[0]
        return facts

    return Case(
        ours=ours,
        baseline=baseline,
        reset_ours=lambda: _common.fresh(ours_data),
        reset_baseline=lambda: _common.fresh(plain_data),
        verify=verify,
        details={"expectations": EXPECTATION_COUNT},
    )


BENCHMARK = Benchmark(
    name="validation",
    ours=f"the ingest flow with {EXPECTATION_COUNT} expectations in the contract (nulls, ranges, sets, "
    "lengths, regex, column max, row count), checked on the batch before promotion",
    baseline="the same ingest flow and CSV with a contract without expectations",
    target=Target(1.25, "<=", "≤ 1.25x the time without expectations"),
    setup=setup,
    quick_size=10_000,
    full_size=1_000_000,
    describe_size=lambda rows: f"{rows:,} rows, {EXPECTATION_COUNT} expectations",
    order=25,
)
