"""`pipelines maintain` (the maintain flow) and its settings, end to end through the CLI."""

import polars as pl
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.components.resources import Storage
from pipelines.lake import Lake
from tests.workflows.test_ingest import ORDERS, _orders_row, _registry

runner = CliRunner()


@pytest.fixture
def lake(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINES_REGISTRY", str(_registry(tmp_path, [_orders_row()], {"orders": ORDERS})))
    lake = Lake(Storage(str(tmp_path / "data" / "test")))
    table = None
    for i in range(5):
        frame = pl.DataFrame({"order_id": [i], "status": [f"s{i}"], "_partition": ["p"]})
        state = {"run_id": f"r{i}", "files": {f"h{i}": f"f{i}"}, "touched_partitions": ["p"]}
        if table is None:
            table = lake.overwrite(
                "cleaned", "orders", frame, state=state, base=None, partition_by=["_partition"]
            )
        else:
            table = lake.merge(
                "cleaned", "orders", frame, key=["order_id"], newer_field=None, state=state, base=table
            )
        lake.append("quarantine", "orders", pl.DataFrame({"source_file": [f"f{i}"], "record": ["{}"]}))
    return lake


def _listing(root):
    return sorted((str(p), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file())


@pytest.mark.usefixtures("prefect_harness")
def test_maintain_dry_run_writes_nothing_then_maintain_compacts(lake, tmp_path):
    content = lake.read("cleaned", "orders").sort("order_id")
    before = _listing(tmp_path / "data")

    dry = runner.invoke(app, ["maintain", "--dry-run"])

    assert dry.exit_code == 0, dry.output
    assert "dry run: nothing changed" in dry.stdout and "vacuum window 168 h" in dry.stdout
    assert "cleaned/orders" in dry.stdout and "quarantine/orders" in dry.stdout
    assert _listing(tmp_path / "data") == before

    done = runner.invoke(app, ["maintain", "orders"])

    assert done.exit_code == 0, done.output
    row = next(line for line in done.stdout.splitlines() if line.startswith("cleaned/orders "))
    assert " ".join(row.split()[1:5]) == "files 5 -> 1"
    assert lake.read("cleaned", "orders").sort("order_id").equals(content)
    assert len(lake.table("quarantine", "orders").file_uris()) == 1
    assert lake.state("cleaned", "orders")["files"] == {"h4": "f4"}


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("PIPELINES_VACUUM_RETENTION_HOURS", "0", "Invalid PIPELINES_VACUUM_RETENTION_HOURS='0'"),
        ("PIPELINES_VACUUM_RETENTION_HOURS", "1w", "expected a whole number of at least 1"),
        ("PIPELINES_LANDING_EXPIRY_DAYS", "soon", "Invalid PIPELINES_LANDING_EXPIRY_DAYS='soon'"),
    ],
)
def test_a_bad_lifecycle_setting_is_refused_before_anything_runs(monkeypatch, variable, value, expected):
    monkeypatch.setenv(variable, value)
    result = runner.invoke(app, ["maintain"])
    assert result.exit_code == 1
    assert (
        "error:" in result.stderr
        and expected in result.stderr
        and "Fix the value or unset it" in result.stderr
    )


def test_retention_refuses_a_bad_as_of():
    result = runner.invoke(app, ["retention", "--as-of", "31/01/2026"])
    assert result.exit_code == 1
    assert "--as-of '31/01/2026' is not a date; write it as YYYY-MM-DD" in result.stderr


@pytest.mark.usefixtures("prefect_harness")
def test_landing_expiry_and_the_vacuum_window_are_acted_on(tmp_path, monkeypatch):
    from datetime import UTC, datetime, timedelta

    from pipelines.workflows.ingest import ingest
    from pipelines.workflows.maintain import maintain
    from tests.workflows.test_ingest import HEADER

    monkeypatch.setenv("PIPELINES_REGISTRY", str(_registry(tmp_path, [_orders_row()], {"orders": ORDERS})))
    monkeypatch.setenv("PIPELINES_LANDING_URL", str(tmp_path / "landing"))
    landing = Storage(str(tmp_path / "landing"))
    landing.write_atomic(
        "orders/a.csv", (HEADER + "1,10,2024-01-01 10:00:00,2024-01-01 10:00:00,new\n").encode()
    )
    ingest(dataset="orders")
    landing.write_atomic(
        "orders/b.csv", (HEADER + "2,10,2024-01-01 10:00:00,2024-01-01 10:00:00,new\n").encode()
    )
    monkeypatch.setenv("PIPELINES_LANDING_EXPIRY_DAYS", "3")
    monkeypatch.setenv("PIPELINES_VACUUM_RETENTION_HOURS", "2")
    today = datetime.now(UTC).date()

    kept = maintain(as_of=today + timedelta(days=3))  # landed 3 days before: not more than 3
    assert kept.landing_removed == [] and kept.retention_hours == 2
    dry = maintain(as_of=today + timedelta(days=4), dry_run=True)
    assert dry.landing_removed == [landing.uri("orders/a.csv")] and landing.exists("orders/a.csv")

    done = maintain(as_of=today + timedelta(days=4))

    assert done.landing_removed == [landing.uri("orders/a.csv")]
    assert landing.glob("orders/*") == ["orders/b.csv"]  # never landed: kept
    assert ingest(dataset="orders").written == 1  # b.csv; a.csv's rows stay in the table
    assert Lake(Storage(str(tmp_path / "data" / "test"))).read("cleaned", "orders").height == 2
