"""Backfill from raw by a range of event-time days: contract fixes, idempotency, dry runs, bounded windows."""

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.components import progress
from pipelines.components.environment import settings_overrides
from pipelines.workflows.backfill import backfill
from pipelines.workflows.ingest import ingest
from tests.workflows import test_ingest
from tests.workflows.test_ingest import HEADER, ORDERS, _orders_row

pytestmark = pytest.mark.usefixtures("prefect_harness")
env = test_ingest.env  # the registry + landing fixture of the ingest tests


def _contract(max_amount: int) -> str:
    return (
        ORDERS
        + "expectations:\n"
        + f"  - expect_column_values_to_be_between: {{column: amount, min_value: 0, max_value: {max_amount}}}\n"
    )


def _row(order_id: int, amount: str, day: str) -> str:
    return f"{order_id},{amount},{day} 10:00:00,{day} 10:00:00,new\n"


def _versions(env) -> tuple[int, int]:
    return env.lake_table("cleaned").version(), env.lake_table("quarantine").version()


@pytest.fixture
def orders(env, tmp_path):
    """Three days of orders; with max_amount 15, orders 2 (01-01), 3 (01-02) and 5 (01-03) are quarantined."""
    from pipelines.components.resources import Storage
    from pipelines.lake import Lake

    lake = Lake(Storage(str(tmp_path / "data" / "test")))
    env.lake_table = lambda zone: lake.table(zone, "orders")
    env.registry([_orders_row()], {"orders": _contract(15)})
    env.land("orders_01.csv", HEADER + _row(1, "10.00", "2024-01-01") + _row(2, "20.00", "2024-01-01"))
    env.land("orders_02.csv", HEADER + _row(3, "30.00", "2024-01-02") + _row(4, "5.00", "2024-01-02"))
    env.land("orders_03.csv", HEADER + _row(5, "40.00", "2024-01-03"))
    first = ingest("orders")
    assert (first.rows_in, first.written, first.quarantined) == (5, 2, 3)
    return env


def test_a_contract_fix_then_a_backfill_moves_the_fixed_rows_from_quarantine_to_cleaned(orders):
    orders.registry([_orders_row()], {"orders": _contract(100)})  # the range was too tight
    steps = []
    with progress.reporting(lambda what, done, total: steps.append((what, done, total))):
        result = backfill("orders", start="2024-01-01", through="2024-01-02", window_days=1)
    assert steps == [("orders 2024-01-01..2024-01-01", 1, 2), ("orders 2024-01-02..2024-01-02", 2, 2)]

    assert result.status == "completed"
    assert len(result.files) == 2 and len(result.windows) == 2
    assert all(f.startswith("raw/orders/ingest_date=") and f.endswith(".csv") for f in result.files)
    assert (result.rows_in, result.written, result.quarantined, result.duplicates_collapsed) == (4, 4, 0, 0)
    assert (result.rows_changed, result.quarantine_cleared) == (2, 2)
    assert result.touched_partitions == ["2024-01-01", "2024-01-02"]
    cleaned = orders.cleaned().sort("order_id")
    assert cleaned.get_column("order_id").to_list() == [1, 2, 3, 4]
    assert cleaned.filter(pl.col("order_id") == 3).get_column("_run_id").item() == result.run_id
    assert cleaned.filter(pl.col("order_id") == 1).get_column("_run_id").item() != result.run_id  # unchanged
    # order 5 (2024-01-03) is outside the range: still quarantined, by the old contract
    assert orders.quarantine().get_column("record").str.contains('"order_id":"5"').to_list() == [True]

    # idempotent: the same backfill again finds everything as it is and commits nothing
    before = _versions(orders)
    again = backfill("orders", start="2024-01-01", through="2024-01-02", window_days=1)
    assert (again.status, again.rows_changed, again.quarantine_cleared) == ("unchanged", 0, 0)
    assert again.rows_in == again.written == 4
    assert _versions(orders) == before


def test_dry_run_lists_files_partitions_and_datasets_and_writes_nothing(orders):
    orders.registry([_orders_row()], {"orders": _contract(100)})
    before = _versions(orders)
    out = CliRunner().invoke(
        app, ["backfill", "orders", "--from", "2024-01-02", "--to", "2024-01-03", "--dry-run"]
    )
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["status"] == "dry_run"
    assert len(result["files"]) == 2
    assert all(f.startswith("raw/orders/ingest_date=") for f in result["files"])
    assert result["partitions"] == ["2024-01-02", "2024-01-03"]
    assert result["datasets"] == ["orders"]
    assert "dry run, nothing written" in out.stderr and result["files"][0] in out.stderr
    assert _versions(orders) == before
    assert orders.quarantine().height == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["orders", "--from", "2024-13-01", "--to", "2024-01-02"], "--from '2024-13-01' is not a date: write YYYY-MM-DD"),
        (["orders", "--from", "2024-01-05", "--to", "2024-01-02"], "ends before it starts: give --from a date on or before --to"),
        (["orders", "--from", "2024-01-01", "--to", "2024-01-02", "--window-days", "0"], "--window-days must be at least 1"),
        (["ordres", "--from", "2024-01-01", "--to", "2024-01-02"], "Did you mean 'orders'?"),
    ],
)  # fmt: skip
def test_the_command_rejects_a_bad_range_or_dataset_with_the_fix(env, args, message):
    out = CliRunner().invoke(app, ["backfill", *args])
    assert out.exit_code == 1
    assert "error:" in out.stderr and message in " ".join(out.stderr.split())


def test_a_dataset_without_event_time_partitions_is_refused_with_the_alternative(env):
    env.registry([_orders_row(partition_field="")], {"orders": ORDERS})
    out = CliRunner().invoke(app, ["backfill", "orders", "--from", "2024-01-01", "--to", "2024-01-02"])
    assert out.exit_code == 1
    assert "no event-time partitions to backfill by range" in " ".join(out.stderr.split())
    assert "pipelines ingest orders --full-refresh" in " ".join(out.stderr.split())


def test_twenty_windows_with_a_bound_of_two_never_run_more_than_two_at_once(env, monkeypatch):
    from pipelines.lake import reprocess

    holds = reprocess.holds

    def slow_holds(*args):  # each window works a while, so windows that can overlap do
        time.sleep(0.3)
        return holds(*args)

    monkeypatch.setattr(reprocess, "holds", slow_holds)
    first = date(2024, 1, 1)
    for n in range(20):
        day = (first + timedelta(days=n)).isoformat()
        env.land(f"orders_{n:02d}.csv", HEADER + _row(n, "10.00", day) + _row(100 + n, "20.50", day))
    assert ingest("orders").written == 40
    # windows that re-read and compare but find nothing to commit: the bound is what is measured
    with settings_overrides(backfill_windows="2"):
        result = backfill("orders", start="2024-01-01", through="2024-01-20", window_days=1)

    assert len(result.windows) == 20 and result.rows_in == 40 and result.status == "unchanged"
    events = sorted(
        [(w.started_at, 1) for w in result.windows] + [(w.finished_at, -1) for w in result.windows],
        key=lambda e: (e[0], e[1]),  # an end before a start at the same instant
    )
    running, most = 0, 0
    for _, step in events:
        running += step
        most = max(most, running)
    assert most == 2  # never more than the bound, and the bound was used


def test_backfilling_march_of_the_flights_cookbook_after_a_contract_fix_equals_a_full_rebuild(
    tmp_path, monkeypatch
):
    from pipelines.components.environment import DEFAULT_REGISTRY
    from pipelines.components.resources import Lake, Storage
    from pipelines.cookbooks.flights import flights
    from pipelines.workflows.aggregate import aggregate

    registry = tmp_path / "registry"
    shutil.copytree(DEFAULT_REGISTRY.parent, registry)
    contract = registry / "contracts" / "flights.yaml"
    fixed = contract.read_text()
    tight = "  - expect_column_values_to_be_between: {column: dep_delay, min_value: -100, max_value: 60}\n"
    contract.write_text(fixed.replace("expectations:\n", "expectations:\n" + tight, 1))
    monkeypatch.setenv("PIPELINES_REGISTRY", str(registry / "datasets.csv"))
    built = flights(start="2013-03-01", through="2013-03-01")
    held = built.datasets["flights"].quarantined
    assert held > 0  # departures more than an hour late wait in quarantine

    contract.write_text(fixed)  # the fix
    out = CliRunner().invoke(
        app, ["backfill", "flights", "--from", "2013-03-01", "--to", "2013-03-31", "--downstream"]
    )
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert (result["rows_changed"], result["quarantine_cleared"], result["quarantined"]) == (held, held, 0)
    assert result["rows_in"] == result["written"] + result["duplicates_collapsed"]
    assert result["datasets"] == ["flights", "flight_delays_daily"]
    assert result["aggregates"]["flight_delays_daily"].startswith("built (incremental")
    assert result["shared"]["flight_delays_daily"].startswith("loaded")

    lake = Lake(Storage(str(tmp_path / "data" / "test")))
    run_columns = ["_run_id", "_ingested_at"]
    cleaned = lake.read("cleaned", "flights").drop(run_columns).sort("carrier", "flight", "time_hour")
    daily = lake.read("aggregated", "flight_delays_daily").drop("_run_id").sort("day", "carrier", "origin")
    assert lake.read("quarantine", "flights").height == 0

    ingest("flights", full_refresh=True)
    aggregate("flight_delays_daily", full_refresh=True)
    rebuilt = lake.read("cleaned", "flights").drop(run_columns).sort("carrier", "flight", "time_hour")
    assert_frame_equal(cleaned, rebuilt.select(cleaned.columns))
    rebuilt_daily = (
        lake.read("aggregated", "flight_delays_daily").drop("_run_id").sort("day", "carrier", "origin")
    )
    assert_frame_equal(daily, rebuilt_daily.select(daily.columns))


@pytest.mark.local  # a subprocess: not unit-fast
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["flihgts", "--from", "2013-03-01", "--to", "2013-03-31"], "error: Unknown dataset 'flihgts'. Did you mean 'flights'?"),
        (["flights", "--from", "2013-03-31", "--to", "2013-03-01"], "error: The range 2013-03-31..2013-03-01 ends before it starts"),
    ],
)  # fmt: skip
def test_a_bad_range_or_name_is_answered_before_prefect_is_imported(tmp_path, args, message):
    from tests.test_cli_errors import WRAPPER

    result = subprocess.run(
        [sys.executable, "-c", WRAPPER, "backfill", *args],
        env={**os.environ, "PIPELINES_NAMESPACE": "test"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stdout == "imported: []\n"
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1
