"""The share workflow against real SQLite and PostgreSQL: semantics, idempotence, crashes, races."""

import csv
import json
import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from deltalake import CommitProperties, write_deltalake

from pipelines.components.environment import get_settings
from pipelines.components.errors import PipelinesError
from pipelines.components.resources import STATE_KEY, Lake, Storage, Warehouse
from pipelines.components.sharing import ShareError
from pipelines.workflows.ingest import IngestResult, ingest
from pipelines.workflows.share import ShareResult, share

pytestmark = pytest.mark.usefixtures("prefect_harness")

FIELDS = ["name", "stage", "source", "format", "primary_key", "incremental_field", "partition_field",
          "ingestion_style", "inputs", "transform", "description"]  # fmt: skip
ORDERS = """\
description: Orders as the shop records them.
columns:
  order_id:   {type: int64, nullable: false, description: "The order's number"}
  amount:     {type: "decimal(12,2)", description: Total in EUR}
  ordered_at: {type: datetime, format: "%Y-%m-%d %H:%M:%S"}
  updated_at: {type: datetime, format: "%Y-%m-%d %H:%M:%S", nullable: false}
  status:     {type: string}
"""
HEADER = "order_id,amount,ordered_at,updated_at,status\n"
CUSTOMERS = """\
columns:
  customer_id: {type: int64, nullable: false}
  name:        {type: string}
"""
ODD = """\
columns:
  order:  {type: int64, nullable: false, description: "a keyword as a name"}
  from:   {type: date}
  'a"b':  {type: int32, description: "a quote in the name"}
  select: {type: string}
"""
ROWS = {
    "orders": {"source": "orders/*.csv", "format": "csv", "primary_key": "order_id",
               "incremental_field": "updated_at", "partition_field": "ordered_at",
               "ingestion_style": "incremental", "description": "Orders we took"},
    "customers": {"source": "customers/*.csv", "format": "csv", "primary_key": "customer_id",
                  "ingestion_style": "full"},
    "group": {"source": "group/*.ndjson", "format": "ndjson", "primary_key": "order", "incremental_field": 'a"b',
              "partition_field": "from", "ingestion_style": "incremental"},
    "daily": {"stage": "aggregated", "primary_key": "day", "inputs": "orders",
              "transform": "pipelines.transforms.orders:daily"},
    "events": {"stage": "aggregated", "inputs": "orders", "transform": "pipelines.transforms.orders:events"},
}  # fmt: skip
CONTRACTS = {"orders": ORDERS, "customers": CUSTOMERS, "group": ODD}

DIALECTS = [
    pytest.param("sqlite", marks=pytest.mark.local, id="sqlite"),
    pytest.param("postgresql", marks=pytest.mark.integration, id="postgresql"),
]


def write_registry(root: Path, contracts: dict[str, str] | None = None) -> Path:
    folder = root / "registry"
    (folder / "contracts").mkdir(parents=True, exist_ok=True)
    with open(folder / "datasets.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        for name, row in ROWS.items():
            writer.writerow({"stage": "cleaned", **row, "name": name})
    for name, text in (contracts or CONTRACTS).items():
        (folder / "contracts" / f"{name}.yaml").write_text(text)
    return folder / "datasets.csv"


class Env:
    def __init__(self, root: Path, dialect: str):
        self.root, self.dialect = root, dialect
        self.landing = Storage(str(root / "landing"))
        self.lake = Lake(Storage(str(root / "data" / "test")))

    def land(self, dataset: str, name: str, text: str) -> None:
        self.landing.write_atomic(f"{dataset}/{name}", text.encode())

    def contract(self, dataset: str, text: str) -> None:
        (self.root / "registry" / "contracts" / f"{dataset}.yaml").write_text(text)

    def warehouse(self, namespace: str = "test") -> Warehouse:
        return Warehouse(get_settings(namespace=namespace).warehouse_url, namespace)

    def query(self, sql: str, namespace: str = "test") -> list[tuple]:
        warehouse = self.warehouse(namespace)
        try:
            with warehouse.begin() as conn:
                result = conn.exec_driver_sql(sql)
                return [tuple(r) for r in result.all()] if result.returns_rows else []
        finally:
            warehouse.dispose()

    def table(self, name: str) -> str:
        return self.warehouse().qualify(name)

    def rows(self, dataset: str, columns: str, order: str = "1") -> list[tuple]:
        return self.query(f"SELECT {columns} FROM {self.table(dataset)} ORDER BY {order}")

    def count(self, dataset: str) -> int:
        return self.query(f"SELECT count(*) FROM {self.table(dataset)}")[0][0]

    def state(self, dataset: str) -> dict | None:
        rows = self.query(
            f"SELECT dataset, delta_version, run_id, mode, watermark FROM {self.table('_pipelines_state')} "
            f"WHERE dataset = '{dataset}'"
        )
        return (
            dict(zip(("dataset", "delta_version", "run_id", "mode", "watermark"), rows[0], strict=True))
            if rows
            else None
        )

    def loads(self, dataset: str) -> list[dict]:
        keys = (
            "run_id",
            "mode",
            "strategy",
            "status",
            "rows",
            "deleted",
            "from_version",
            "to_version",
            "error",
        )
        rows = self.query(
            f"SELECT {', '.join(keys)} FROM {self.table('_pipelines_loads')} "
            f"WHERE dataset = '{dataset}' ORDER BY started_at"
        )
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def describe(self, dataset: str):
        warehouse = self.warehouse()
        try:
            with warehouse.begin() as conn:
                return warehouse.describe(conn, dataset)
        finally:
            warehouse.dispose()

    def lake_rows(self, dataset: str, columns: list[str], zone: str = "cleaned") -> list[tuple]:
        return sorted(self.lake.read(zone, dataset).select(columns).iter_rows())

    def snapshot(self, dataset: str) -> tuple:
        """Everything a share could change: the table's rows and the state row."""
        return (self.rows(dataset, "*", order="1, 2"), self.state(dataset))


@pytest.fixture(params=DIALECTS)
def env(request, tmp_path, monkeypatch) -> Env:
    if request.param == "postgresql":
        monkeypatch.setenv("PIPELINES_WAREHOUSE_URL", request.getfixturevalue("postgres_url"))
    monkeypatch.setenv("PIPELINES_REGISTRY", str(write_registry(tmp_path)))
    monkeypatch.setenv("PIPELINES_LANDING_URL", str(tmp_path / "landing"))
    return Env(tmp_path, request.param)


@dataclass(frozen=True)
class Day1:
    """day1's orders landed and ingested once per module (an ingest costs seconds); tests copy it."""

    root: Path
    ingested: IngestResult

    def copy_to(self, env: Env) -> IngestResult:
        """Leave env as `day1(env); ingest("orders")` would, and return that ingest's result."""
        for part in ("landing", "data"):
            shutil.copytree(self.root / part, env.root / part, dirs_exist_ok=True)  # keeps mtimes
        # The landing manifest names landed files by absolute path: point it at the copy's landing.
        (manifest,) = (env.root / "data").rglob("_landed.json")
        manifest.write_text(manifest.read_text().replace(str(self.root), str(env.root)))
        for path in (env.root / "data").rglob("*"):
            assert not path.is_file() or str(self.root).encode() not in path.read_bytes(), (
                f"{path} names the template's folder: the copy would not stand on its own"
            )
        return self.ingested


@pytest.fixture(scope="module")
def day1_template(tmp_path_factory, prefect_harness) -> Day1:
    root = tmp_path_factory.mktemp("day1")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("PIPELINES_NAMESPACE", "test")
        patch.setenv("PIPELINES_DATA_URL", str(root / "data"))
        patch.setenv("PIPELINES_WAREHOUSE_URL", f"sqlite:///{root}/warehouse/{{namespace}}.sqlite")
        patch.setenv("PIPELINES_REGISTRY", str(write_registry(root)))
        patch.setenv("PIPELINES_LANDING_URL", str(root / "landing"))
        day1(Env(root, "sqlite"))
        ingested = ingest("orders")
    assert (ingested.written, ingested.status) == (3, "completed")
    return Day1(root, ingested)


@pytest.fixture
def day1_ingested(env, day1_template) -> IngestResult:
    """env after `day1(env); ingest("orders")`, copied from the module's template."""
    return day1_template.copy_to(env)


def _money(value) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"))


def mirrors(env: Env) -> list[tuple]:
    """The orders table as (id, amount, status, run id), after checking it equals the lake's."""
    shared = [
        (r[0], _money(r[1]), r[2], r[3])
        for r in env.rows("orders", '"order_id", "amount", "status", "_run_id"')
    ]
    lake = [
        (r[0], _money(r[1]), r[2], r[3])
        for r in env.lake_rows("orders", ["order_id", "amount", "status", "_run_id"])
    ]
    assert shared == lake
    return shared


def day1(env: Env) -> None:
    env.land(
        "orders",
        "d1.csv",
        HEADER
        + "1,10.50,2024-01-01 10:00:00,2024-01-01 10:00:00,new\n"
        + '2,20.00,2024-01-01 11:00:00,2024-01-01 11:00:00,"said ""hi"", then left"\n'
        + "3,30.25,2024-01-01 12:00:00,2024-01-01 12:00:00,\n",
    )


# creation and semantics -----------------------------------------------------------------------


def test_first_share_deploys_the_table_from_the_contract(env, day1_ingested):
    result = share("orders")
    assert isinstance(result, ShareResult)
    assert (result.status, result.mode, result.strategy, result.rows) == ("loaded", "merge", "full", 3)
    assert result.table == env.table("orders") and result.namespace == "test"
    assert result.delta_version == env.lake.table("cleaned", "orders").version()
    assert result.run_id and result.duration_seconds >= 0
    assert result.watermark == "2024-01-01T12:00:00"
    assert result.schema_changes == [f"created {result.table} with 7 columns"]

    info = env.describe("orders")
    names = [c.name for c in info.columns]
    assert names == ["order_id", "amount", "ordered_at", "updated_at", "status", "_run_id", "_ingested_at"]
    assert info.primary_key == ("order_id",)
    types = {c.name: c.type for c in info.columns}
    not_null = {c.name for c in info.columns if c.not_null}
    assert not_null == {"order_id", "updated_at"}
    if env.dialect == "postgresql":
        assert types == {
            "order_id": "bigint",
            "amount": "numeric(12,2)",
            "ordered_at": "timestamp without time zone",
            "updated_at": "timestamp without time zone",
            "status": "text",
            "_run_id": "text",
            "_ingested_at": "timestamp with time zone",
        }
        comments = {c.name: c.comment for c in info.columns}
        assert comments["order_id"] == "The order's number" and comments["amount"] == "Total in EUR"
        assert comments["_run_id"].startswith("The pipelines run that last wrote this row")
        assert info.comment == "Orders we took"
        indexes = env.query(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'test' AND tablename = 'orders'"
        )
        sql = "SELECT indexdef FROM pg_indexes WHERE schemaname = 'test' AND tablename = 'orders'"
        definitions = " ".join(r[0] for r in env.query(sql))
    else:
        assert types["order_id"] == "INTEGER" and types["amount"] == "NUMERIC(12,2)"
        create = env.query("SELECT sql FROM sqlite_master WHERE name = 'orders'")[0][0]
        assert "-- The order's number" in create and "-- Orders we took" in create
        indexes = env.query("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'orders'")
        definitions = " ".join(
            r[0] or "" for r in env.query("SELECT sql FROM sqlite_master WHERE type = 'index'")
        )
    assert {"orders__ordered_at_idx", "orders__updated_at_idx"} <= {r[0] for r in indexes}
    if env.dialect == "postgresql":
        assert "USING brin (ordered_at)" in definitions and "USING brin (updated_at)" in definitions
    quote = '"' if env.dialect == "sqlite" else ""
    assert f"({quote}ordered_at{quote})" in definitions and f"({quote}updated_at{quote})" in definitions

    assert mirrors(env)[1][2] == 'said "hi", then left'
    assert env.rows("orders", '"status"', order='"order_id"')[2] == (None,)  # empty CSV cell = null
    state = env.state("orders")
    assert (state["delta_version"], state["run_id"], state["mode"]) == (
        result.delta_version,
        result.run_id,
        "merge",
    )
    assert state["watermark"] == "2024-01-01T12:00:00"
    (load,) = env.loads("orders")
    assert (load["status"], load["strategy"], load["rows"], load["run_id"]) == (
        "loaded",
        "full",
        3,
        result.run_id,
    )


def test_rerun_is_a_no_op(env, day1_ingested):
    first = share("orders")
    before = env.snapshot("orders")
    again = share("orders")
    assert (again.status, again.strategy, again.rows) == ("no_changes", "none", 0)
    assert again.delta_version == first.delta_version == again.previous_version
    assert env.snapshot("orders") == before
    assert [(x["status"], x["rows"]) for x in env.loads("orders")] == [("loaded", 3), ("no_changes", 0)]


def test_merge_sends_only_what_changed_including_late_and_updated_rows(env, day1_ingested):
    share("orders")
    env.land(
        "orders",
        "d2.csv",
        HEADER
        + "2,22.00,2024-01-01 11:00:00,2024-01-02 09:00:00,paid\n"  # a newer version of 2
        + "3,99.99,2024-01-01 12:00:00,2023-12-31 00:00:00,stale\n"  # older than the lake's: ignored
        + "4,40.00,2023-12-30 08:00:00,2024-01-02 10:00:00,late\n",  # a late row for an old partition
    )
    second = ingest("orders")
    assert second.late_rows == 1
    result = share("orders")
    assert (result.status, result.strategy, result.rows, result.deleted) == ("loaded", "incremental", 2, 0)
    assert result.previous_version == second.cleaned_version - 1
    assert result.watermark == "2024-01-02T10:00:00"
    shared = mirrors(env)
    assert [(r[0], r[2]) for r in shared] == [(1, "new"), (2, "paid"), (3, None), (4, "late")]
    assert shared[0][3] != shared[1][3]  # row 1 still carries the first run's id

    env.land("orders", "d3.csv", HEADER + "1,11.00,2024-01-01 10:00:00,2024-01-03 00:00:00,refunded\n")
    ingest("orders")
    ingest("orders")  # a second run with nothing new commits nothing
    third = share("orders")
    assert (third.strategy, third.rows) == ("incremental", 1)
    assert mirrors(env)[0][2] == "refunded"
    assert env.state("orders")["delta_version"] == third.delta_version


def test_full_replace_in_the_lake_replaces_the_table(env):
    env.land("customers", "c.csv", "customer_id,name\n1,Ann\n2,Bob\n3,Cy\n")
    ingest("customers")
    assert share("customers").rows == 3
    env.landing.delete("customers/c.csv")
    env.land("customers", "c2.csv", "customer_id,name\n1,Ann\n3,Cyrus\n")  # 2 is gone from the snapshot
    ingest("customers")
    result = share("customers")
    assert (result.strategy, result.reason) == ("full", "the lake table was overwritten")
    assert result.rows == 2
    assert env.rows("customers", '"customer_id", "name"') == [(1, "Ann"), (3, "Cyrus")]


def test_replace_mode_reloads_the_whole_table_when_anything_changed(env, day1_ingested):
    first = share("orders", mode="replace")
    assert (first.mode, first.rows) == ("replace", 3)
    assert share("orders", mode="replace").status == "no_changes"
    env.land("orders", "d2.csv", HEADER + "5,50.00,2024-01-02 10:00:00,2024-01-02 10:00:00,new\n")
    ingest("orders")
    result = share("orders", mode="replace")
    assert (result.strategy, result.rows) == ("full", 4)
    assert [r[0] for r in mirrors(env)] == [1, 2, 3, 5]
    assert env.describe("orders").primary_key == ("order_id",)


def test_append_mode_keeps_every_version_and_never_duplicates(env, day1_ingested):
    first_ingest = day1_ingested
    assert share("orders", mode="append").rows == 3
    assert share("orders", mode="append").status == "no_changes"
    env.land("orders", "d2.csv", HEADER + "2,22.00,2024-01-01 11:00:00,2024-01-02 09:00:00,paid\n")
    second_ingest = ingest("orders")
    result = share("orders", mode="append")
    assert (result.strategy, result.rows) == ("incremental", 1)
    assert share("orders", mode="append").status == "no_changes"
    info = env.describe("orders")
    assert info.primary_key == ()  # an append table keeps history; its key is a plain index
    assert set(env.rows("orders", '"order_id", "status", "_run_id"')) == {
        (1, "new", first_ingest.run_id),
        (2, 'said "hi", then left', first_ingest.run_id),
        (2, "paid", second_ingest.run_id),
        (3, None, first_ingest.run_id),
    }
    with pytest.raises(
        PipelinesError, match=r"has no primary key, but the registry's primary_key is \(order_id\)"
    ):
        share("orders", mode="merge")


def test_deletes_in_the_lake_are_deleted_by_merge(env, day1_ingested):
    share("orders")
    table = env.lake.table("cleaned", "orders")
    table.delete('"order_id" = 2')  # e.g. an erasure request; the commit carries no run id
    result = share("orders")
    assert (result.strategy, result.rows, result.deleted) == ("incremental", 0, 1)
    assert [r[0] for r in mirrors(env)] == [1, 3]
    assert env.loads("orders")[-1]["deleted"] == 1


def test_removed_rows_after_the_shared_version_was_vacuumed_reload_the_table(env, day1_ingested):
    share("orders")
    env.lake.table("cleaned", "orders").delete("order_id = 3")
    env.lake.table("cleaned", "orders").vacuum(
        retention_hours=0, enforce_retention_duration=False, dry_run=False
    )
    result = share("orders")
    assert (result.strategy, result.reason) == ("full", "rows were removed and the shared version is gone")
    assert (result.rows, result.deleted) == (2, 0)
    assert [r[0] for r in mirrors(env)] == [1, 2]


def test_a_commit_without_a_run_id_makes_merge_full_and_append_refuse(env, day1_ingested):
    share("orders")
    env.lake.table("cleaned", "orders").update(
        updates={"status": "'fixed by hand'"}, predicate="order_id = 1"
    )
    result = share("orders")
    assert result.strategy == "full"
    assert "UPDATE" in result.reason
    assert mirrors(env)[0][2] == "fixed by hand"

    share("orders", mode="append", full_refresh=True)
    env.lake.table("cleaned", "orders").update(updates={"status": "'again'"}, predicate="order_id = 1")
    before = env.snapshot("orders")
    with pytest.raises(ShareError) as caught:
        share("orders", mode="append")
    message = str(caught.value)
    assert "Cannot tell which rows of 'orders' are new" in message and "UPDATE" in message
    assert "pipelines share orders --mode append --full-refresh" in message
    assert env.snapshot("orders") == before
    assert env.loads("orders")[-1]["status"] == "failed"


# aggregated datasets --------------------------------------------------------------------------


def write_aggregated(env: Env, name: str, frame: pl.DataFrame, run_id: str, **kwargs) -> None:
    state = {"run_id": run_id, "watermark": None}
    write_deltalake(
        env.lake.uri("aggregated", name),
        frame.with_columns(pl.lit(run_id).alias("_run_id")).to_arrow(),
        commit_properties=CommitProperties(custom_metadata={STATE_KEY: json.dumps(state)}),
        **kwargs,
    )


def test_aggregated_dataset_types_from_the_lake_and_partition_replace(env):
    days = [date(2024, 1, 1), date(2024, 1, 2), date(2024, 1, 3)]
    frame = pl.DataFrame({"day": days, "orders": [3, 1, 2], "revenue": [60.75, 1.0, 2.5]})
    write_aggregated(env, "daily", frame, "agg-1", mode="overwrite")
    first = share("daily")
    assert (first.mode, first.rows) == ("merge", 3)
    types = {c.name: c.type for c in env.describe("daily").columns}
    if env.dialect == "postgresql":
        assert types == {"day": "date", "orders": "bigint", "revenue": "double precision", "_run_id": "text"}
    else:
        assert types == {"day": "DATE", "orders": "INTEGER", "revenue": "REAL", "_run_id": "TEXT"}
    # The aggregate recomputes days 2 and 3: day 2 changes, day 3 has no orders any more.
    write_aggregated(
        env,
        "daily",
        pl.DataFrame({"day": [date(2024, 1, 2)], "orders": [5], "revenue": [9.5]}),
        "agg-2",
        mode="overwrite",
        predicate="day >= '2024-01-02'",
    )
    result = share("daily")
    assert (result.strategy, result.rows, result.deleted) == ("incremental", 1, 1)
    rows = env.rows("daily", '"day", "orders", "_run_id"')
    assert [(str(r[0]), r[1], r[2]) for r in rows] == [("2024-01-01", 3, "agg-1"), ("2024-01-02", 5, "agg-2")]


def test_dataset_without_key_defaults_to_replace(env):
    write_aggregated(env, "events", pl.DataFrame({"kind": ["a", "b"], "n": [1, 2]}), "e-1", mode="overwrite")
    assert share("events").mode == "replace"
    write_aggregated(env, "events", pl.DataFrame({"kind": ["c"], "n": [3]}), "e-2", mode="append")
    result = share("events")
    assert (result.mode, result.strategy, result.rows) == ("replace", "full", 3)
    assert env.rows("events", '"kind", "n"') == [("a", 1), ("b", 2), ("c", 3)]
    with pytest.raises(ShareError, match="has no primary_key in the registry"):
        share("events", mode="merge")


@pytest.mark.integration
def test_duplicate_keys_in_the_lake_are_explained(env_pg):
    env = env_pg
    frame = pl.DataFrame({"day": [date(2024, 1, 1)], "orders": [1], "revenue": [1.0]})
    write_aggregated(env, "daily", frame, "agg-1", mode="overwrite")
    share("daily")
    write_aggregated(env, "daily", pl.concat([frame, frame]), "agg-2", mode="append")
    with pytest.raises(ShareError, match=r"more than one row for the same primary key \(day\)"):
        share("daily")


def test_duplicate_keys_on_the_first_load_leave_no_table(env_pg):
    env = env_pg
    frame = pl.DataFrame({"day": [date(2024, 1, 1)], "orders": [1], "revenue": [1.0]})
    write_aggregated(env, "daily", pl.concat([frame, frame]), "agg-1", mode="overwrite")
    with pytest.raises(ShareError, match=r"broke its primary key: .*\(day\)=\(2024-01-01\) is duplicated"):
        share("daily")
    assert env.describe("daily") is None  # created, loaded and keyed in one transaction: all rolled back


@pytest.fixture
def env_pg(tmp_path, monkeypatch, postgres_url) -> Env:
    monkeypatch.setenv("PIPELINES_WAREHOUSE_URL", postgres_url)
    monkeypatch.setenv("PIPELINES_REGISTRY", str(write_registry(tmp_path)))
    monkeypatch.setenv("PIPELINES_LANDING_URL", str(tmp_path / "landing"))
    return Env(tmp_path, "postgresql")


# identifiers and values ---------------------------------------------------------------------


def test_odd_identifiers_load_correctly(env):
    def land(name, *records):
        env.land("group", name, "\n".join(json.dumps(r) for r in records) + "\n")

    land(
        "a.ndjson",
        {"order": 1, "from": "2024-01-01", 'a"b': 5, "select": "x"},
        {"order": 2, "from": "2024-01-02", 'a"b': 6, "select": "y,z"},
    )
    ingest("group")
    first = share("group")
    assert first.table == env.table("group")
    land(
        "b.ndjson",
        {"order": 1, "from": "2024-01-01", 'a"b': 7, "select": "changed"},
        {"order": 3, "from": None, 'a"b': 8, "select": "new"},
    )
    ingest("group")
    result = share("group")
    assert (result.strategy, result.rows) == ("incremental", 2)
    info = env.describe("group")
    assert [c.name for c in info.columns] == ["order", "from", 'a"b', "select", "_run_id", "_ingested_at"]
    assert info.primary_key == ("order",)
    rows = env.rows("group", '"order", "from", "a""b", "select"')
    assert [(r[0], None if r[1] is None else str(r[1]), r[2], r[3]) for r in rows] == [
        (1, "2024-01-01", 7, "changed"),
        (2, "2024-01-02", 6, "y,z"),
        (3, None, 8, "new"),
    ]
    if env.dialect == "postgresql":
        assert info.column('a"b').comment == "a quote in the name"


def test_values_of_every_type_arrive_intact(env):
    frame = pl.DataFrame(
        {
            "text": ['multi\nline, "quoted"', "", None],
            "tiny": pl.Series([-7, None, 127], dtype=pl.Int8),
            "ratio": pl.Series([0.5, None, -1.25], dtype=pl.Float32),
            "score": [1e300, None, float("inf")],
            "big": pl.Series(
                [Decimal("12345678901234567890.0123456789"), None, Decimal("-1")], dtype=pl.Decimal(30, 10)
            ),
            "vip": [True, None, False],
            "born": [date(1999, 12, 31), None, date(1, 1, 1)],
            "seen": [datetime(2024, 2, 29, 23, 59, 59, 123456), None, datetime(1970, 1, 1)],
            "seen_utc": pl.Series(
                [datetime(2024, 2, 29, 23, 59, 59, 500000), None, datetime(2000, 1, 1)]
            ).dt.replace_time_zone("UTC"),
            "blob": [b"\x00\xffraw", None, b""],
        }
    ).with_row_index("n")
    write_aggregated(env, "events", frame, "k-1", mode="overwrite")
    share("events")
    cols = ", ".join(f'"{c}"' for c in frame.columns)
    one, two, three = env.rows("events", cols)
    assert one[1] == 'multi\nline, "quoted"' and two[1] == "" and three[1] is None
    assert (one[2], one[3], one[4], three[4]) == (-7, 0.5, 1e300, float("inf"))
    assert two[2:] == (None,) * 9
    assert bytes(one[10]) == b"\x00\xffraw" and bytes(three[10]) == b""
    if env.dialect == "postgresql":
        assert one[5] == Decimal("12345678901234567890.0123456789")
        assert one[6] is True and one[7] == date(1999, 12, 31) and three[7] == date(1, 1, 1)
        assert one[8] == datetime(2024, 2, 29, 23, 59, 59, 123456)
        assert one[9] == datetime(2024, 2, 29, 23, 59, 59, 500000, tzinfo=UTC)
    else:  # SQLite: decimals wider than 15 digits stay exact as text; see docs/share.md
        assert one[5] == "12345678901234567890.0123456789"
        assert one[6] == 1 and one[7] == "1999-12-31"
        assert one[8] == "2024-02-29 23:59:59.123456"
        assert one[9] == "2024-02-29 23:59:59.500000+00:00"
        day = env.query(f'SELECT date("seen") FROM {env.table("events")} WHERE "n" = 0')
        assert day == [("2024-02-29",)]
