"""The forget workflow: one subject planted in three datasets leaves no byte behind, and nothing else changes."""

import csv
import gzip
import json
import logging
import os
import sqlite3
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.components import sharing
from pipelines.components.environment import get_settings
from pipelines.components.resources import Lake, Storage, Warehouse
from pipelines.lake.erasure import read_request
from pipelines.workflows.aggregate import aggregate
from pipelines.workflows.backfill import backfill
from pipelines.workflows.ingest import ingest
from pipelines.workflows.share import share

pytestmark = pytest.mark.usefixtures("prefect_harness")

HERE = "tests.workflows.test_forget"
EMAIL, NAME = "ada.lovelace@example.org", "Ada Lovelace-Byron"
SALT = "test-salt-0123456789abcdef"
FIELDS = ["name", "stage", "source", "format", "primary_key", "incremental_field", "partition_field",
          "ingestion_style", "inputs", "transform", "pii_columns", "subject_key"]  # fmt: skip
ROWS = [
    {"name": "customers", "stage": "cleaned", "source": "customers/*.csv", "format": "csv",
     "primary_key": "customer_id", "ingestion_style": "full", "pii_columns": "email|name", "subject_key": "email"},
    {"name": "orders", "stage": "cleaned", "source": "orders/*.csv", "format": "csv", "primary_key": "order_id",
     "incremental_field": "updated_at", "partition_field": "ordered_at", "ingestion_style": "incremental",
     "pii_columns": "buyer_email|buyer_name", "subject_key": "buyer_email"},
    {"name": "tickets", "stage": "cleaned", "source": "tickets/*.ndjson", "format": "ndjson",
     "primary_key": "ticket_id", "partition_field": "opened_at", "ingestion_style": "incremental",
     "incremental_field": "opened_at", "pii_columns": "contact|who", "subject_key": "contact"},
    {"name": "daily_orders", "stage": "aggregated", "primary_key": "day", "partition_field": "day",
     "inputs": "orders", "transform": f"{HERE}:daily_orders"},
    {"name": "spend", "stage": "aggregated", "primary_key": "buyer_email", "inputs": "orders",
     "transform": f"{HERE}:spend", "pii_columns": "buyer_email", "subject_key": "buyer_email"},
]  # fmt: skip
CONTRACTS = {
    "customers": """\
columns:
  customer_id: {type: int64, nullable: false}
  email:       {type: string}
  name:        {type: string}
  city:        {type: string}
""",
    "orders": """\
columns:
  order_id:    {type: int64, nullable: false}
  buyer_email: {type: string}
  buyer_name:  {type: string}
  amount:      {type: int64}
  ordered_at:  {type: datetime, format: "%Y-%m-%d %H:%M:%S", nullable: false}
  updated_at:  {type: datetime, format: "%Y-%m-%d %H:%M:%S", nullable: false}
""",
    "tickets": """\
columns:
  ticket_id: {type: int64, nullable: false}
  contact:   {type: string}
  who:       {type: string}
  opened_at: {type: date, nullable: false}
""",
    "daily_orders": """\
columns:
  day:    {type: date, nullable: false}
  orders: {type: int64, nullable: false}
  amount: {type: int64}
""",
    "spend": """\
columns:
  buyer_email: {type: string, nullable: false}
  orders:      {type: int64, nullable: false}
  amount:      {type: int64}
""",
}


def daily_orders(inputs):
    return (
        inputs["orders"]
        .group_by(pl.col("ordered_at").dt.date().alias("day"))
        .agg(pl.len().cast(pl.Int64).alias("orders"), pl.col("amount").sum().alias("amount"))
    )


def spend(inputs):
    return (
        inputs["orders"]
        .filter(pl.col("buyer_email").is_not_null())
        .group_by("buyer_email")
        .agg(pl.len().cast(pl.Int64).alias("orders"), pl.col("amount").sum().alias("amount"))
    )


def _order(order_id, email, name, amount, day):
    at = f"2024-01-{day:02d} 10:00:00"
    return f"{order_id},{email},{name},{amount},{at},{at}\n"


ORDERS_HEADER = "order_id,buyer_email,buyer_name,amount,ordered_at,updated_at\n"


class Env:
    def __init__(self, root: Path, monkeypatch):
        self.root = root
        folder = root / "registry"
        (folder / "contracts").mkdir(parents=True)
        with open(folder / "datasets.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, FIELDS)
            writer.writeheader()
            for row in ROWS:
                writer.writerow({k: row.get(k, "") for k in FIELDS})
        for name, text in CONTRACTS.items():
            (folder / "contracts" / f"{name}.yaml").write_text(text)
        monkeypatch.setenv("PIPELINES_REGISTRY", str(folder / "datasets.csv"))
        monkeypatch.setenv("PIPELINES_LANDING_URL", str(root / "landing"))
        monkeypatch.setenv("PIPELINES_ERASURE_SALT", SALT)
        self.landing = Storage(str(root / "landing"))
        self.data = root / "data" / "test"
        self.lake = Lake(Storage(str(self.data)))

    def land(self, rel: str, text: str) -> None:
        self.landing.write_atomic(rel, text.encode())

    def plant(self) -> None:
        self.land(
            "customers/c.csv",
            f"customer_id,email,name,city\n1,{EMAIL},{NAME},London\n2,bob@example.org,Bob Stone,Paris\n"
            "3,carol@example.org,Carol King,Rome\n",
        )
        self.land(
            "orders/o1.csv",
            ORDERS_HEADER
            + _order(1, "bob@example.org", "Bob Stone", 10, 1)
            + _order(2, EMAIL, NAME, 20, 1)
            + _order(3, "carol@example.org", "Carol King", 5, 2)
            + _order(4, "bob@example.org", "Bob Stone", 7, 3)
            + _order(5, EMAIL, NAME, 30, 3)
            + f"6,{EMAIL},{NAME},lots,2024-01-02 10:00:00,2024-01-02 10:00:00\n",
        )
        self.land("orders/o2.csv", ORDERS_HEADER + _order(7, "carol@example.org", "Carol King", 3, 4))
        tickets = [
            {"ticket_id": 1, "contact": EMAIL, "who": NAME, "opened_at": "2024-01-02"},
            {"ticket_id": 2, "contact": "bob@example.org", "who": "Bob Stone", "opened_at": "2024-01-02"},
            {"ticket_id": 3, "contact": "carol@example.org", "who": "Carol King", "opened_at": "2024-01-05"},
        ]
        text = (
            "".join(json.dumps(t) + "\n" for t in tickets)
            + '{"ticket_id": 4, "contact": "'
            + EMAIL
            + '", broken\n'
        )
        self.land("tickets/t.ndjson", text)

    def build(self) -> None:
        for name in ("customers", "orders", "tickets"):
            ingest(name)
        for name in ("daily_orders", "spend"):
            aggregate(name)
        for name in ("customers", "orders", "daily_orders", "spend"):
            share(name)
        share("tickets", mode="append")

    def warehouse(self) -> Warehouse:
        return Warehouse(get_settings().warehouse_url, "test")

    def query(self, sql: str) -> list[tuple]:
        warehouse = self.warehouse()
        try:
            with warehouse.begin() as conn:
                return [tuple(r) for r in conn.exec_driver_sql(sql).all()]
        finally:
            warehouse.dispose()

    def shared(self, name: str, order: str) -> list[tuple]:
        warehouse = self.warehouse()
        qualified = warehouse.qualify(name)
        warehouse.dispose()
        return self.query(f"SELECT * FROM {qualified} ORDER BY {order}")


def _text_hits(data: bytes, needles: list[str]) -> list[str]:
    found = []
    for needle in needles:
        for encoding in ("utf-8", "utf-16-le"):
            if needle.encode(encoding) in data:
                found.append(needle)
    return found


def scan_tree(root: Path, needles: list[str]) -> dict[str, list[str]]:
    """Every file under root: its bytes, gunzipped bytes, and decoded parquet contents."""
    hits = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found = _text_hits(data, needles)
        if path.suffix == ".gz":
            found += _text_hits(gzip.decompress(data), needles)
        if path.suffix == ".parquet":
            decoded = json.dumps(pq.read_table(path).to_pylist(), default=str)
            found += [n for n in needles if n in decoded]
        if found:
            hits[str(path.relative_to(root))] = sorted(set(found))
    return hits


def _prefect_db() -> Path:
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

    return Path(PREFECT_API_DATABASE_CONNECTION_URL.value().split("///", 1)[1])


class Captured:
    lines: list[str]


@pytest.fixture
def captured():
    """Every log record created while the test runs (whatever logger, handler or level), as written."""
    handler = Captured()
    handler.lines = []
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        handler.lines.append(record.getMessage())
        return record

    loggers = [logging.getLogger(n) for n in ("prefect.flow_runs", "prefect.task_runs")]
    original = logging.Logger.isEnabledFor

    def enabled(self, level):  # INFO and up from the run loggers, whatever Prefect's logging setup says
        return level >= logging.INFO if self in loggers else original(self, level)

    logging.setLogRecordFactory(factory)
    logging.Logger.isEnabledFor = enabled
    try:
        yield handler
    finally:
        logging.setLogRecordFactory(previous)
        logging.Logger.isEnabledFor = original


def _others(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    return frame.filter(pl.col(column) != EMAIL).sort(frame.columns[0])


@pytest.mark.parametrize(
    "dialect",
    [
        pytest.param("sqlite", marks=pytest.mark.local, id="sqlite"),
        pytest.param("postgresql", marks=pytest.mark.integration, id="postgresql"),
    ],
)
def test_forget_leaves_no_trace_and_changes_nothing_else(tmp_path, monkeypatch, captured, dialect, request):
    if dialect == "postgresql":
        monkeypatch.setenv("PIPELINES_WAREHOUSE_URL", request.getfixturevalue("postgres_url"))
    env = Env(tmp_path, monkeypatch)
    env.plant()
    env.build()
    before = {name: env.lake.read("cleaned", name) for name in ("customers", "orders", "tickets")}
    keys = {"customers": "email", "orders": "buyer_email", "tickets": "contact"}
    assert all(before[n].filter(pl.col(k) == EMAIL).height for n, k in keys.items())
    shared_before = {n: env.shared(n, "1") for n in ("customers", "orders", "tickets")}

    runner = CliRunner()
    dry = runner.invoke(app, ["forget", EMAIL, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    counts = json.loads(dry.output)
    assert counts["status"] == "dry_run"
    assert counts["rows"]["orders"] == {"raw": 3, "cleaned": 2, "quarantine": 1, "warehouse": 2}
    assert counts["rows"]["customers"] == {"raw": 1, "cleaned": 1, "quarantine": 0, "warehouse": 1}
    assert counts["rows"]["tickets"] == {"raw": 2, "cleaned": 1, "quarantine": 1, "warehouse": 1}
    assert counts["rows"]["spend"]["aggregated"] == 1
    assert counts["recomputed"] == {"daily_orders": ["2024-01-01", "2024-01-03"], "spend": ["all"]}
    assert EMAIL not in dry.output and NAME not in dry.output
    assert (
        env.lake.read("cleaned", "orders").filter(pl.col("buyer_email") == EMAIL).height == 2
    )  # nothing written

    request_id = counts["request_id"]
    if dialect == "sqlite":  # the ledger and resuming do not depend on the warehouse: checked once
        # interrupted (the warehouse is unreachable while sharing): the ledger says how far it got
        def unreachable(*args, **kwargs):
            raise RuntimeError("warehouse down")

        with monkeypatch.context() as patch:
            patch.setattr(sharing, "share_dataset", unreachable)
            stopped = runner.invoke(app, ["forget", EMAIL])
        assert stopped.exit_code != 0
        entry = read_request(env.lake, request_id)
        assert entry["status"] == "failed" and entry["error"] == "RuntimeError (see the flow run's logs)"
        assert entry["steps"]["cleaned:orders"]["done"] and "vacuum" not in entry["steps"]
        assert entry["rows_removed"]["orders"]["cleaned"] == 2

    done = runner.invoke(app, ["forget", EMAIL])  # resumes: finished steps are skipped
    assert done.exit_code == 0, done.output
    result = json.loads(done.output)
    assert result["status"] == "completed" and result["request_id"] == request_id
    assert result["rows"]["orders"]["cleaned"] == 2 and result["rows"]["orders"]["raw"] == 3
    assert result["rows"]["spend"]["aggregated"] == 0  # the rebuild from orders already dropped it
    assert result["recomputed"]["daily_orders"] == ["2024-01-01", "2024-01-03"]

    # every other subject's rows are unchanged, in the lake and the warehouse
    for name, key in keys.items():
        assert_frame_equal(_others(env.lake.read("cleaned", name), key), _others(before[name], key))
    for name, rows in shared_before.items():
        assert env.shared(name, "1") == [r for r in rows if EMAIL not in r]

    # aggregates equal a rebuild without the subject
    orders = env.lake.read("cleaned", "orders").lazy()
    expected = daily_orders({"orders": orders}).collect().sort("day")
    got = env.lake.read("aggregated", "daily_orders").select("day", "orders", "amount").sort("day")
    assert_frame_equal(got, expected, check_dtypes=False)
    table = env.warehouse().qualify("daily_orders")
    shared = env.query(f"SELECT orders, amount FROM {table} ORDER BY day")
    assert shared == [tuple(r) for r in expected.select("orders", "amount").rows()]
    assert sorted(env.lake.read("aggregated", "spend")["buyer_email"]) == [
        "bob@example.org",
        "carol@example.org",
    ]

    # zero hits: the data root, the warehouse, Prefect's database and its logs, the run logs
    needles = [EMAIL, NAME]
    assert scan_tree(env.data, needles) == {}
    if dialect == "sqlite":
        assert scan_tree(tmp_path / "warehouse", needles) == {}
    else:
        for table in ("customers", "orders", "tickets", "daily_orders", "spend", "_pipelines_loads"):
            dump = env.query(f"SELECT * FROM {env.warehouse().qualify(table)}")
            assert not any(n in str(dump) for n in needles), table
    from prefect.logging.handlers import APILogHandler

    APILogHandler.flush()
    for suffix in ("", "-wal", "-journal"):
        path = Path(f"{_prefect_db()}{suffix}")
        assert not path.exists() or _text_hits(path.read_bytes(), needles) == [], path
    with sqlite3.connect(_prefect_db()) as db:
        logs = db.execute("SELECT message FROM log").fetchall()
        params = db.execute("SELECT parameters FROM flow_run").fetchall()
    assert not any(n in m for (m,) in logs for n in needles)
    assert params and not any(n in p for (p,) in params for n in needles)
    assert captured.lines and not any(n in line for line in captured.lines for n in needles), len(
        captured.lines
    )

    # the ledger holds no personal data, and a second forget is a no-op
    status = runner.invoke(app, ["forget", "--status", result["request_id"]])
    assert status.exit_code == 0, status.output
    entry = json.loads(status.output)
    assert entry["status"] == "completed" and entry["rows_removed"]["orders"]["cleaned"] == 2
    assert entry["subject_hash"] == result["subject_hash"] and EMAIL not in status.output
    versions = {n: env.lake.table("cleaned", n).version() for n in keys}
    again = runner.invoke(app, ["forget", EMAIL])
    assert json.loads(again.output)["status"] == "already_completed"
    assert {n: env.lake.table("cleaned", n).version() for n in keys} == versions

    if dialect != "sqlite":
        return
    # re-ingesting (the landed files are still there) and reprocessing raw bring nothing back
    assert ingest("orders").written == 0
    for name in ("orders", "tickets"):
        ingest(name, full_refresh=True)
        assert env.lake.read("cleaned", name).filter(pl.col(keys[name]) == EMAIL).height == 0
    os.utime(tmp_path / "landing" / "orders" / "o1.csv")  # touched: read again, same content, skipped
    assert ingest("orders").written == 0
    backfill("orders", start="2024-01-01", through="2024-01-04", downstream=True)
    assert env.lake.read("cleaned", "orders").filter(pl.col("buyer_email") == EMAIL).height == 0
    assert EMAIL not in env.lake.read("aggregated", "spend").get_column("buyer_email").to_list()
    assert (
        scan_tree(env.data / "cleaned", needles) == {} and scan_tree(env.data / "aggregated", needles) == {}
    )


def test_status_of_an_unknown_request_says_where_it_looked(tmp_path, monkeypatch):
    Env(tmp_path, monkeypatch)
    result = CliRunner().invoke(app, ["forget", "--status", "er-nothing"])
    assert result.exit_code == 1
    assert "No erasure request 'er-nothing' in namespace 'test'" in result.output


PEOPLE = """\
columns:
  person_id: {type: int64, nullable: false}
  email:     {type: string}
  age:       {type: int64}
expectations:
  - expect_column_values_to_match_regex: {column: email, regex: "^[a-z]+@example[.]org$", mostly: 0.99}
"""


def test_a_pii_value_in_a_failing_row_reaches_no_log_artifact_error_or_reason(
    tmp_path, monkeypatch, captured
):
    from prefect.logging.handlers import APILogHandler

    from pipelines.components.quality import ValidationFailedError

    folder = tmp_path / "registry"
    (folder / "contracts").mkdir(parents=True)
    (folder / "datasets.csv").write_text(
        "name,stage,source,format,primary_key,ingestion_style,pii_columns,subject_key,quality_policy\n"
        "people,cleaned,people/*.csv,csv,person_id,incremental,email|age,email,quarantine\n"
    )
    (folder / "contracts" / "people.yaml").write_text(PEOPLE)
    monkeypatch.setenv("PIPELINES_REGISTRY", str(folder / "datasets.csv"))
    monkeypatch.setenv("PIPELINES_LANDING_URL", str(tmp_path / "landing"))
    secret_email, secret_age = "Zed.Hidden@Elsewhere.net", "seventy-seven-zq"
    Storage(str(tmp_path / "landing")).write_atomic(
        "people/p.csv",
        f"person_id,email,age\n1,amy@example.org,30\n2,{secret_email},40\n3,bob@example.org,{secret_age}\n".encode(),
    )
    with pytest.raises(ValidationFailedError) as failure:
        ingest("people")
    message = str(failure.value)
    assert "expect_column_values_to_match_regex(column=email" in message
    assert secret_email not in message and "(not shown: PII)" in message

    lake = Lake(Storage(str(tmp_path / "data" / "test")))
    reasons = sorted(lake.read("quarantine", "people").get_column("reason").to_list())
    assert reasons == [
        "age: the value (not shown: a PII column) is not a valid int64",
        "expect_column_values_to_match_regex(column=email, regex=^[a-z]+@example[.]org$, mostly=0.99): "
        "email = (not shown: PII)",
    ]
    validations = lake.read("_meta", "validations")
    assert validations.height and secret_email not in str(validations.rows())

    APILogHandler.flush()
    needles = [secret_email, secret_age]
    with sqlite3.connect(_prefect_db()) as db:
        artifacts = db.execute("SELECT data, description FROM artifact").fetchall()
        logs = db.execute("SELECT message FROM log").fetchall()
    assert any("match_regex" in str(a) for a in artifacts)
    assert not any(n in str(row) for row in artifacts + logs for n in needles)
    assert _text_hits(_prefect_db().read_bytes(), needles) == []
    assert any("match_regex" in line for line in captured.lines), captured.lines[-5:]
    assert captured.lines and not any(n in line for line in captured.lines for n in needles), len(
        captured.lines
    )
