"""Ingest with a contract's expectations: severities, quality policies, quarantine reasons, records."""

import json

import polars as pl
import pytest
from prefect.artifacts import Artifact
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.components.quality import ValidationFailedError
from pipelines.workflows.ingest import ingest
from tests.workflows import test_ingest
from tests.workflows.test_ingest import HEADER, ORDERS, _orders_row

pytestmark = pytest.mark.usefixtures("prefect_harness")
env = test_ingest.env  # the registry + landing fixture of the ingest tests

# 6 rows: order 3 has a negative amount, order 4 an unknown status, order 5 both.
ROWS = (
    "1,10.00,2024-01-01 10:00:00,2024-01-01 10:00:00,new\n"
    "2,20.00,2024-01-01 11:00:00,2024-01-01 11:00:00,paid\n"
    "3,-5.00,2024-01-01 12:00:00,2024-01-01 12:00:00,new\n"
    "4,7.50,2024-01-02 09:00:00,2024-01-02 09:00:00,lost\n"
    "5,-1.00,2024-01-02 10:00:00,2024-01-02 10:00:00,weird\n"
    "6,3.00,2024-01-02 11:00:00,2024-01-02 11:00:00,\n"
)
AMOUNT = "  - expect_column_values_to_be_between: {column: amount, min_value: 0}\n"
STATUS = "  - expect_column_values_to_be_in_set: {column: status, value_set: [new, paid]}\n"


def _contract(*entries: str) -> str:
    return ORDERS + "expectations:\n" + "".join(entries)


def _conserved(result):
    assert (
        result.rows_in == result.written + result.quarantined + result.duplicates_collapsed + result.held_back
    )


def _validations(env) -> pl.DataFrame:
    return env.lake.read("_meta", "validations")


def test_row_level_errors_are_quarantined_with_reasons_that_name_the_expectation(env):
    env.registry([_orders_row()], {"orders": _contract(AMOUNT, STATUS)})
    env.land("day1.csv", HEADER + ROWS)
    result = ingest("orders")
    _conserved(result)
    assert (result.rows_in, result.written, result.quarantined) == (6, 3, 3)
    assert result.quarantined_by_expectations == 3
    assert result.validation_status == "warned"
    assert result.expectations_evaluated == 2
    assert sorted(env.cleaned().get_column("order_id").to_list()) == [1, 2, 6]
    bad = env.quarantine().sort("source_line")
    assert bad.get_column("source_line").to_list() == [4, 5, 6]
    reasons = dict(zip(bad.get_column("source_line"), bad.get_column("reason"), strict=True))
    assert reasons[4] == "expect_column_values_to_be_between(column=amount, min_value=0): amount = -5.00"
    assert (
        reasons[5] == "expect_column_values_to_be_in_set(column=status, value_set=[new, paid]): status = lost"
    )
    assert reasons[6] == (
        "expect_column_values_to_be_between(column=amount, min_value=0): amount = -1.00; "
        "expect_column_values_to_be_in_set(column=status, value_set=[new, paid]): status = weird"
    )
    rules = dict(zip(bad.get_column("source_line"), bad.get_column("rule"), strict=True))
    assert rules == {
        4: "expect_column_values_to_be_between",
        5: "expect_column_values_to_be_in_set",
        6: "expect_column_values_to_be_between",
    }
    assert json.loads(bad.get_column("record")[0])["order_id"] == "3"
    assert any("quarantined: expect_column_values_to_be_between" in i for i in result.validation_issues)


def test_validations_are_recorded_per_expectation(env):
    env.registry([_orders_row()], {"orders": _contract(AMOUNT, STATUS)})
    env.land("day1.csv", HEADER + ROWS)
    result = ingest("orders")
    rows = _validations(env).sort("index")
    assert rows.height == 2
    assert rows.get_column("run_id").to_list() == [result.run_id] * 2
    assert rows.get_column("dataset").to_list() == ["orders", "orders"]
    assert rows.get_column("workflow").to_list() == ["ingest", "ingest"]
    assert rows.get_column("scope").to_list() == ["batch", "batch"]
    assert rows.get_column("partition").to_list() == [None, None]
    assert rows.get_column("expectation").to_list() == [
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
    ]
    assert json.loads(rows.get_column("kwargs")[0]) == {"column": "amount", "min_value": 0}
    assert rows.get_column("success").to_list() == [False, False]
    assert rows.get_column("unexpected_count").to_list() == [2, 2]
    assert rows.get_column("element_count").to_list() == [6, 6]
    assert rows.get_column("action").to_list() == ["quarantined", "quarantined"]
    assert rows.get_column("severity").to_list() == ["error", "error"]
    assert rows.get_column("engine").to_list() == ["polars", "polars"]
    assert json.loads(rows.get_column("partial_unexpected_list")[1]) == ["lost", "weird"]
    assert rows.schema["validated_at"] == pl.Datetime("us", "UTC")


def test_warn_severity_promotes_and_flags(env):
    warn_status = STATUS.rstrip("\n") + "\n    severity: warn\n"
    env.registry([_orders_row()], {"orders": _contract(warn_status)})
    env.land("day1.csv", HEADER + ROWS)
    result = ingest("orders")
    _conserved(result)
    assert (result.written, result.quarantined) == (6, 0)
    assert result.validation_status == "warned"
    assert result.validation_issues == [
        "warned: expect_column_values_to_be_in_set(column=status, value_set=[new, paid]) [warn]: "
        "2 of 6 rows unexpected (40% of non-missing), e.g. lost, weird"
    ]
    assert _validations(env).get_column("action").to_list() == ["warned"]


def test_table_level_error_stops_promotion_but_writes_quarantine_and_report(env):
    rows_at_least_10 = "  - expect_table_row_count_to_be_between: {min_value: 10}\n"
    env.registry([_orders_row()], {"orders": _contract(AMOUNT, rows_at_least_10)})
    env.land("day1.csv", HEADER + ROWS)
    with pytest.raises(ValidationFailedError) as info:
        ingest("orders")
    message = str(info.value)
    assert "'orders' was not promoted" in message
    assert "expect_table_row_count_to_be_between(min_value=10): observed 4" in message
    assert "contracts/orders.yaml" in message
    result = info.value.result
    assert result.validation_status == "failed"
    assert (result.rows_in, result.written, result.quarantined, result.held_back) == (6, 0, 2, 4)
    _conserved(result)
    assert not env.lake.exists("cleaned", "orders")
    assert env.quarantine().height == 2
    actions = dict(zip(*_validations(env).select("expectation", "action"), strict=True))
    assert actions == {
        "expect_column_values_to_be_between": "quarantined",
        "expect_table_row_count_to_be_between": "stopped",
    }
    artifact = Artifact.get("test-validation-orders")
    assert "**failed**: 2 expectation(s)" in artifact.data
    assert (
        "| `expect_table_row_count_to_be_between(min_value=10)` | error | **FAIL** | observed 4 | stopped |"
        in (artifact.data)
    )


def test_the_ingest_command_prints_the_result_of_a_stopped_batch(env):
    rows_at_least_10 = "  - expect_table_row_count_to_be_between: {min_value: 10}\n"
    env.registry([_orders_row()], {"orders": _contract(rows_at_least_10)})
    env.land("day1.csv", HEADER + ROWS)
    outcome = CliRunner().invoke(app, ["ingest", "orders"])
    assert outcome.exit_code == 1
    payload = json.loads(outcome.stdout[outcome.stdout.index("{") :])
    assert (payload["validation_status"], payload["held_back"], payload["written"]) == ("failed", 6, 0)
    assert "error: 'orders' was not promoted" in outcome.stderr


def test_a_stopped_batch_stays_pending_and_passes_once_the_contract_allows_it(env):
    rows_at_least_10 = "  - expect_table_row_count_to_be_between: {min_value: 10}\n"
    env.registry([_orders_row()], {"orders": _contract(rows_at_least_10)})
    env.land("day1.csv", HEADER + ROWS)
    with pytest.raises(ValidationFailedError):
        ingest("orders")
    with pytest.raises(ValidationFailedError):
        ingest("orders")  # the same files, still pending
    env.registry([_orders_row()], {"orders": _contract(rows_at_least_10.replace("10", "1"))})
    result = ingest("orders")
    assert (result.rows_in, result.written, result.held_back) == (6, 6, 0)
    assert result.validation_status == "passed"
    assert env.cleaned().height == 6


def test_table_level_warn_promotes(env):
    warn = "  - expect_table_row_count_to_be_between: {min_value: 10}\n    severity: warn\n"
    env.registry([_orders_row()], {"orders": _contract(warn)})
    env.land("day1.csv", HEADER + ROWS)
    result = ingest("orders")
    assert (result.written, result.validation_status) == (6, "warned")
    assert result.validation_issues == [
        "warned: expect_table_row_count_to_be_between(min_value=10) [warn]: observed 6"
    ]


def test_mostly_quarantines_the_rows_and_stops_only_past_the_tolerance(env):
    tolerant = "  - expect_column_values_to_be_between: {column: amount, min_value: 0, mostly: 0.6}\n"
    env.registry([_orders_row()], {"orders": _contract(tolerant)})
    env.land("day1.csv", HEADER + ROWS)
    result = ingest("orders")  # 2 of 6 negative: 67% pass >= 60%
    assert (result.written, result.quarantined, result.validation_status) == (4, 2, "passed")
    strict = tolerant.replace("0.6", "0.9")
    env.registry([_orders_row()], {"orders": _contract(strict)})
    env.land("day2.csv", HEADER + ROWS.replace("2024-01-0", "2024-02-0"))
    with pytest.raises(ValidationFailedError, match=r"mostly=0\.9"):
        ingest("orders")


def test_policy_warn_makes_warn_the_default_and_an_explicit_error_still_quarantines(env):
    explicit_error = AMOUNT.rstrip("\n") + "\n    severity: error\n"
    env.registry([_orders_row(quality_policy="warn")], {"orders": _contract(explicit_error, STATUS)})
    env.land("day1.csv", HEADER + ROWS)
    result = ingest("orders")
    _conserved(result)
    # amount < 0 (orders 3 and 5) quarantined; unknown status (order 4) kept with a warning
    assert sorted(env.cleaned().get_column("order_id").to_list()) == [1, 2, 4, 6]
    assert result.quarantined == 2
    severities = dict(zip(*_validations(env).select("expectation", "severity"), strict=True))
    assert severities == {
        "expect_column_values_to_be_between": "error",
        "expect_column_values_to_be_in_set": "warn",
    }


def test_policy_fail_stops_on_any_failing_row(env):
    env.registry([_orders_row(quality_policy="fail")], {"orders": _contract(STATUS)})
    env.land("day1.csv", HEADER + ROWS)
    with pytest.raises(ValidationFailedError) as info:
        ingest("orders")
    result = info.value.result
    assert (result.written, result.quarantined, result.held_back) == (0, 2, 4)
    assert "expect_column_values_to_be_in_set(column=status, value_set=[new, paid])" in str(info.value)
    assert env.quarantine().height == 2 and not env.lake.exists("cleaned", "orders")


def test_policy_fail_stops_on_type_failures_even_without_expectations(env):
    env.registry([_orders_row(quality_policy="fail")], {"orders": ORDERS})
    env.land(
        "day1.csv", HEADER + "1,abc,2024-01-01 10:00:00,2024-01-01 10:00:00,new\n" + ROWS.split("\n", 1)[1]
    )
    with pytest.raises(
        ValidationFailedError, match="failed the contract's parsing, types or required columns"
    ):
        ingest("orders")
    assert env.quarantine().get_column("rule").to_list() == ["type"]


def test_policy_quarantine_keeps_type_failures_apart_and_promotes(env):
    env.registry([_orders_row()], {"orders": ORDERS})
    env.land(
        "day1.csv", HEADER + "1,abc,2024-01-01 10:00:00,2024-01-01 10:00:00,new\n" + ROWS.split("\n", 1)[1]
    )
    result = ingest("orders")
    assert (result.written, result.quarantined, result.validation_status) == (5, 1, "not_run")
    assert not env.lake.exists("_meta", "validations")


def test_uniqueness_runs_after_duplicates_collapse(env):
    unique_key = "  - expect_column_values_to_be_unique: {column: order_id}\n"
    env.registry([_orders_row()], {"orders": _contract(unique_key)})
    dup = "1,11.00,2024-01-01 10:00:00,2024-01-01 10:30:00,paid\n"
    env.land("day1.csv", HEADER + ROWS + dup)
    result = ingest("orders")
    _conserved(result)
    assert (result.rows_in, result.written, result.duplicates_collapsed) == (7, 6, 1)
    assert result.validation_status == "passed"


def test_reference_to_another_dataset(env):
    statuses = "columns:\n  code: {type: string, nullable: false}\n"
    reference = (
        "  - expect_column_values_to_be_in_set: {column: status, value_set: {$PARAMETER: statuses.code}}\n"
    )
    rows = [
        _orders_row(),
        _orders_row(
            name="statuses", source="statuses/*.csv", primary_key="code", incremental_field="",
            partition_field="", ingestion_style="full",
        ),
    ]  # fmt: skip
    env.registry(rows, {"orders": _contract(reference), "statuses": statuses})
    env.land("day1.csv", HEADER + ROWS)
    with pytest.raises(
        ValidationFailedError, match="needs the table of 'statuses', which does not exist yet"
    ):
        ingest("orders")
    env.land("codes.csv", "code\nnew\npaid\nlost\n", dataset="statuses")
    assert ingest("statuses").written == 3
    result = ingest("orders")
    assert result.quarantined == 1  # only 'weird' is unknown
    assert "value_set=$statuses.code): status = weird" in env.quarantine().get_column("reason")[0]


def test_a_batch_stopped_during_a_first_load_leaves_the_batches_before_it_committed(env):
    rows_at_least_2 = "  - expect_table_row_count_to_be_between: {min_value: 2}\n"
    env.registry([_orders_row()], {"orders": _contract(rows_at_least_2)})
    first = HEADER + "1,1.00,2024-01-01 10:00:00,2024-01-01 10:00:00,new\n" + ROWS.split("\n", 1)[1]
    env.land("a.csv", first)
    # the second batch repeats order 1 with a newer row, but it stops: the first batch's row is kept
    env.land("b.csv", HEADER + "1,9.00,2024-01-01 10:00:00,2024-01-05 10:00:00,paid\n")
    with pytest.raises(ValidationFailedError) as info:
        ingest("orders", batch_bytes=len(first.encode()))  # one batch per file
    result = info.value.result
    assert (result.batches, result.written, result.held_back) == (1, 6, 1)
    _conserved(result)
    cleaned = env.cleaned()
    assert cleaned.height == 6
    assert cleaned.filter(pl.col("order_id") == 1).get_column("status").to_list() == ["new"]
    assert len(env.lake.state("cleaned", "orders")["files"]) == 1  # b.csv stays pending
