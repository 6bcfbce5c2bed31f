"""Re-validating promoted data on demand: whole table or one partition, severities, records, errors."""

import json
from datetime import date

import polars as pl
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.components.errors import PipelinesError
from pipelines.components.quality import ValidationFailedError
from pipelines.components.resources import Lake, Storage
from pipelines.workflows.ingest import ingest
from pipelines.workflows.validate import validate
from tests.workflows import test_ingest
from tests.workflows.test_ingest import HEADER, ORDERS, _orders_row

pytestmark = pytest.mark.usefixtures("prefect_harness")
env = test_ingest.env  # the registry + landing fixture of the ingest tests

DAY1 = (
    "1,10.00,2024-01-01 10:00:00,2024-01-01 10:00:00,new\n"
    "2,20.00,2024-01-01 11:00:00,2024-01-01 11:00:00,paid\n"
    "3,5.00,2024-01-01 12:00:00,2024-01-01 12:00:00,new\n"
)
DAY2 = (
    "4,7.50,2024-01-02 09:00:00,2024-01-02 09:00:00,paid\n"
    "5,1.00,2024-01-02 10:00:00,2024-01-02 10:00:00,lost\n"
)
KEY_AND_AMOUNT = (
    "expectations:\n"
    "  - expect_column_values_to_be_unique: {column: order_id}\n"
    "  - expect_column_values_to_be_between: {column: amount, min_value: 0}\n"
)


def _ingested(env, contract=ORDERS + KEY_AND_AMOUNT):
    env.registry([_orders_row()], {"orders": contract})
    env.land("day1.csv", HEADER + DAY1)
    env.land("day2.csv", HEADER + DAY2)
    assert ingest("orders").written == 5


def test_a_valid_table_passes_and_is_recorded(env):
    _ingested(env)
    result = validate("orders")
    assert (result.status, result.rows, result.partition) == ("passed", 5, None)
    assert [e.expectation for e in result.expectations] == [
        "expect_column_values_to_be_unique",
        "expect_column_values_to_be_between",
    ]
    assert all(e.success and e.engine == "polars" for e in result.expectations)
    assert result.expectations[1].element_count == 5
    records = env.lake.read("_meta", "validations").filter(pl.col("workflow") == "validate")
    assert records.height == 2
    assert set(records.get_column("run_id")) == {result.run_id}
    assert set(records.get_column("scope")) == {"table"}
    json.loads(result.model_dump_json())  # the persisted result is plain JSON


def test_after_a_contract_change_the_failures_are_reported_and_the_table_is_untouched(env):
    _ingested(env)
    version = env.lake.table("cleaned", "orders").version()
    stricter = ORDERS + (
        "expectations:\n"
        "  - expect_column_values_to_be_in_set: {column: status, value_set: [new, paid]}\n"
        "  - expect_column_sum_to_be_between: {column: amount, max_value: 40}\n"
        "    severity: warn\n"
    )
    env.registry([_orders_row()], {"orders": stricter})
    with pytest.raises(ValidationFailedError) as info:
        validate("orders")
    message = str(info.value)
    assert "'orders' fails 1 expectation(s) with severity error:" in message
    assert (
        "expect_column_values_to_be_in_set(column=status, value_set=[new, paid]): 1 of 5 rows unexpected"
        in message
    )
    result = info.value.result
    assert result.status == "failed"
    assert result.expectations[0].partial_unexpected_list == ["lost"]
    assert result.warnings == ["expect_column_sum_to_be_between(column=amount, max_value=40): observed 43.5"]
    assert env.lake.table("cleaned", "orders").version() == version
    assert env.cleaned().height == 5
    actions = env.lake.read("_meta", "validations").filter(pl.col("workflow") == "validate")
    assert sorted(actions.get_column("action")) == ["failed", "warned"]


def test_one_partition(env):
    _ingested(env)
    result = validate("orders", partition="2024-01-02")
    assert (result.status, result.rows, result.partition) == ("passed", 2, "2024-01-02")
    records = env.lake.read("_meta", "validations").filter(pl.col("workflow") == "validate")
    assert set(records.get_column("partition")) == {"2024-01-02"}
    assert set(records.get_column("scope")) == {"partition"}


def test_uniqueness_is_checked_across_the_whole_table(env):
    # ingest sees one batch at a time: each of these two batches has unique statuses, the table does not
    env.registry(
        [_orders_row()],
        {"orders": ORDERS + "expectations:\n  - expect_column_values_to_be_unique: {column: status}\n"},
    )
    env.land("a.csv", HEADER + DAY1.splitlines(keepends=True)[0] + DAY1.splitlines(keepends=True)[1])
    assert ingest("orders").validation_status == "passed"
    env.land("b.csv", HEADER + "6,3.00,2024-01-02 10:00:00,2024-01-02 10:00:00,new\n")
    assert ingest("orders").validation_status == "passed"
    assert validate("orders", partition="2024-01-02").status == "passed"
    with pytest.raises(ValidationFailedError, match="2 of 3 rows unexpected"):
        validate("orders")  # new, paid, new


def test_an_unknown_partition_suggests_the_close_ones(env):
    _ingested(env)
    with pytest.raises(PipelinesError) as info:
        validate("orders", partition="2024-01-2")
    assert "cleaned/orders has no partition '2024-01-2'. Did you mean '2024-01-02'?" in str(info.value)
    assert "Partitions: 2024-01-01, 2024-01-02." in str(info.value)


def test_a_dataset_never_ingested(env):
    env.registry([_orders_row()], {"orders": ORDERS + KEY_AND_AMOUNT})
    with pytest.raises(PipelinesError, match="cleaned/orders does not exist in this namespace yet"):
        validate("orders")


def test_without_expectations(env):
    _ingested(env, ORDERS)
    result = validate("orders")
    assert (result.status, result.expectations) == ("no_expectations", [])


runner = CliRunner()


def test_cli_validate_exit_codes(env):
    _ingested(env)
    ok = runner.invoke(app, ["validate", "orders", "--partition", "2024-01-01"])
    assert ok.exit_code == 0, ok.output
    payload = json.loads(ok.stdout[ok.stdout.index("{") :])
    assert (payload["status"], payload["rows"]) == ("passed", 3)
    env.registry(
        [_orders_row()],
        {"orders": ORDERS + "expectations:\n  - expect_table_row_count_to_equal: {value: 4}\n"},
    )
    bad = runner.invoke(app, ["validate", "orders"])
    assert bad.exit_code == 1
    assert json.loads(bad.stdout[bad.stdout.index("{") :])["status"] == "failed"
    assert "error:" in bad.stderr and "expect_table_row_count_to_equal(value=4): observed 5" in bad.stderr
    missing = runner.invoke(app, ["validate", "orderz"])
    assert missing.exit_code == 1 and "Unknown dataset 'orderz'. Did you mean 'orders'?" in missing.stderr


def test_validate_on_s3(env, s3, monkeypatch):
    monkeypatch.setenv("PIPELINES_DATA_URL", f"{s3.url}/lake")
    monkeypatch.setenv("PIPELINES_LANDING_URL", f"{s3.url}/landing")
    env.registry([_orders_row()], {"orders": ORDERS + KEY_AND_AMOUNT})
    landing = Storage(f"{s3.url}/landing", s3.options)
    landing.write_atomic("orders/d1.csv", (HEADER + DAY1 + DAY2).encode())
    assert ingest("orders").validation_status == "passed"
    result = validate("orders", partition="2024-01-01")
    assert (result.status, result.rows) == ("passed", 3)
    assert result.table == f"s3://{s3.bucket}/lake/test/cleaned/orders"
    lake = Lake(Storage(f"{s3.url}/lake/test", s3.options))
    assert lake.read("_meta", "validations").height == 4  # 2 from ingest, 2 from validate


def test_an_aggregated_dataset_is_read_from_the_aggregated_zone(env):
    env.registry([_orders_row()], {"orders": ORDERS})
    folder = env.root / "registry"
    (folder / "datasets.csv").write_text(
        "name,stage,source,format,primary_key,inputs,transform\n"
        "orders,cleaned,orders/*.csv,csv,order_id,,\n"
        "daily,aggregated,,,day,orders,pipelines.transforms.orders:daily\n"
    )
    (folder / "contracts" / "daily.yaml").write_text(
        "columns:\n  day: {type: date}\n  orders: {type: int64}\nexpectations:\n"
        "  - expect_column_values_to_be_between: {column: orders, min_value: 1}\n"
    )
    frame = pl.DataFrame({"day": [date(2024, 1, 1), date(2024, 1, 2)], "orders": [3, 0]})
    env.lake.append("aggregated", "daily", frame)  # as the workflow that builds it would
    with pytest.raises(ValidationFailedError) as info:
        validate("daily")
    assert info.value.result.table.endswith("/aggregated/daily")
    assert info.value.result.expectations[0].partial_unexpected_list == [0]
