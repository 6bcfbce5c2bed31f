"""The aggregate and cleanup workflows on a small sales registry: incremental == full, staleness, errors."""

import csv
import json
import sys

import duckdb
import polars as pl
import pytest
from deltalake import CommitProperties
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.components.partitions import partition_status, stale_partitions
from pipelines.components.resources import STATE_KEY, Lake, Storage
from pipelines.workflows.aggregate import InputNotReadyError, TransformError, aggregate
from pipelines.workflows.aggregate import _read_inputs as _READ
from pipelines.workflows.cleanup import cleanup
from pipelines.workflows.ingest import ingest

pytestmark = pytest.mark.usefixtures("prefect_harness")

HERE = "tests.workflows.test_aggregate"
FIELDS = ["name", "stage", "source", "format", "primary_key", "incremental_field", "partition_field",
          "ingestion_style", "inputs", "transform", "schema_policy"]  # fmt: skip
SALES = """\
columns:
  sale_id:    {type: int64, nullable: false}
  store_id:   {type: string, nullable: false}
  amount:     {type: int64}
  sold_at:    {type: datetime, format: "%Y-%m-%d %H:%M:%S", nullable: false}
  updated_at: {type: datetime, format: "%Y-%m-%d %H:%M:%S", nullable: false}
"""
STORES = """\
columns:
  store_id: {type: string, nullable: false}
  region:   {type: string}
"""
DAILY = """\
columns:
  day:      {type: date, nullable: false}
  store_id: {type: string, nullable: false}
  region:   {type: string}
  sales:    {type: int64, nullable: false}
  amount:   {type: int64}
"""
TOTALS = """\
columns:
  store_id: {type: string, nullable: false}
  days:     {type: int64, nullable: false}
  amount:   {type: int64}
"""
HEADER = "sale_id,store_id,amount,sold_at,updated_at\n"


# transforms used by the registry rows below (pure polars) -------------------------------------


def daily_sales(inputs):
    sales = inputs["sales"]
    return (
        sales.group_by(pl.col("sold_at").dt.date().alias("day"), "store_id")
        .agg(pl.len().cast(pl.Int64).alias("sales"), pl.col("amount").sum().alias("amount"))
        .join(inputs["stores"].select("store_id", "region"), on="store_id", how="left")
    )


def store_totals(inputs):
    return (
        inputs["daily_sales"]
        .group_by("store_id")
        .agg(pl.len().cast(pl.Int64).alias("days"), pl.col("amount").sum().alias("amount"))
    )


def explode(inputs):
    raise ValueError("boom: no such column 'amout'")


def not_a_frame(inputs):
    return {"rows": 1}


def without_region(inputs):
    return daily_sales(inputs).drop("region")


def twice(inputs):
    frame = daily_sales(inputs)
    return pl.concat([frame, frame])


def next_day(inputs):
    return daily_sales(inputs).with_columns(pl.col("day") + pl.duration(days=1))


# registry and data helpers ---------------------------------------------------------------------


def _row(name, **cells):
    return {"name": name, **cells}


def _rows(sales_style="incremental", daily_transform="daily_sales"):
    return [
        _row("sales", stage="cleaned", source="sales/*.csv", format="csv", primary_key="sale_id",
             incremental_field="updated_at", partition_field="sold_at", ingestion_style=sales_style,
             schema_policy="freeze"),
        _row("stores", stage="cleaned", source="stores/stores.csv", format="csv", primary_key="store_id",
             ingestion_style="full"),
        _row("daily_sales", stage="aggregated", primary_key="day|store_id", partition_field="day",
             inputs="sales|stores", transform=f"{HERE}:{daily_transform}"),
        _row("store_totals", stage="aggregated", primary_key="store_id", inputs="daily_sales",
             transform=f"{HERE}:store_totals"),
    ]  # fmt: skip


def _write_registry(folder, rows):
    (folder / "contracts").mkdir(parents=True, exist_ok=True)
    with open(folder / "datasets.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in FIELDS})
    for name, text in {
        "sales": SALES,
        "stores": STORES,
        "daily_sales": DAILY,
        "store_totals": TOTALS,
    }.items():
        (folder / "contracts" / f"{name}.yaml").write_text(text)
    return folder / "datasets.csv"


def _sale(sale_id, store, amount, day, updated=None, hour=10):
    sold = f"2024-01-{day:02d} {hour:02d}:00:00"
    return f"{sale_id},{store},{amount},{sold},{updated or sold}\n"


class Env:
    def __init__(self, root, monkeypatch):
        self.root = root
        self.folder = root / "registry"
        self.monkeypatch = monkeypatch
        self.landing = Storage(str(root / "landing"))
        self.lake = Lake(Storage(str(root / "data" / "test")))
        monkeypatch.setenv("PIPELINES_LANDING_URL", str(root / "landing"))
        self.registry()

    def registry(self, **options):
        path = _write_registry(self.folder, _rows(**options))
        self.monkeypatch.setenv("PIPELINES_REGISTRY", str(path))

    def land(self, name, text):
        self.landing.write_atomic(name, text.encode())

    def stores(self, regions):
        self.land(
            "stores/stores.csv", "store_id,region\n" + "".join(f"{s},{r}\n" for s, r in regions.items())
        )

    def ingest(self, *names):
        return [ingest(n) for n in names]

    def table(self, name="daily_sales"):
        return self.lake.read("aggregated", name)

    def rows(self, name="daily_sales"):
        """The aggregated rows without bookkeeping, in key order."""
        frame = self.table(name).drop("_run_id", "_partition", strict=False)
        return frame.sort(frame.columns[:2])


@pytest.fixture
def env(tmp_path, monkeypatch):
    e = Env(tmp_path, monkeypatch)
    e.stores({"s1": "north", "s2": "south"})
    e.land(
        "sales/d1.csv",
        HEADER + _sale(1, "s1", 10, 1) + _sale(2, "s2", 20, 1) + _sale(3, "s1", 5, 2) + _sale(4, "s2", 7, 2),
    )
    e.land("sales/d3.csv", HEADER + _sale(5, "s1", 30, 3) + _sale(6, "s1", 1, 4) + _sale(7, "s2", 2, 4))
    return e


def _independent_daily(landing_root) -> pl.DataFrame:
    """The same question answered in SQL by DuckDB over the landed CSV files."""
    sql = f"""
        WITH sales AS (
            SELECT * FROM read_csv('{landing_root}/sales/*.csv', header = true, all_varchar = true)
        ), latest AS (
            SELECT * FROM sales
            QUALIFY row_number() OVER (PARTITION BY sale_id ORDER BY updated_at DESC) = 1
        ), stores AS (
            SELECT * FROM read_csv('{landing_root}/stores/stores.csv', header = true, all_varchar = true)
        )
        SELECT CAST(CAST(sold_at AS TIMESTAMP) AS DATE) AS day, l.store_id, s.region,
               count(*) AS sales, sum(CAST(amount AS BIGINT)) AS amount
        FROM latest l LEFT JOIN stores s ON s.store_id = l.store_id
        GROUP BY ALL ORDER BY day, l.store_id
    """
    return pl.from_arrow(duckdb.sql(sql).arrow()).with_columns(
        pl.col("sales").cast(pl.Int64), pl.col("amount").cast(pl.Int64)
    )


# incremental == full -----------------------------------------------------------------------------


def test_first_build_matches_sql_and_a_rerun_is_up_to_date(env):
    env.ingest("sales", "stores")
    first = aggregate("daily_sales")
    assert (first.status, first.mode, first.reason) == ("built", "full", "first build")
    assert first.partitions_recomputed == ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]
    assert first.rows_written == 7
    assert set(first.inputs) == {"sales", "stores"}
    assert_frame_equal(env.rows(), _independent_daily(env.root / "landing"))
    table = env.table()
    assert set(table.columns) >= {"_run_id", "_partition"}
    assert table.get_column("_run_id").unique().to_list() == [first.run_id]

    second = aggregate("daily_sales")
    assert (second.status, second.mode, second.rows_written) == ("up_to_date", "incremental", 0)
    assert second.version == first.version == 0
    assert second.inputs == first.inputs

    state = json.loads(env.lake.table("aggregated", "daily_sales").history(1)[0][STATE_KEY])
    assert state["run_id"] == first.run_id
    assert state["inputs"]["sales"]["version"] == first.inputs["sales"]
    assert state["touched_partitions"] == first.partitions_recomputed


def test_late_rows_and_updates_recompute_only_their_partitions_and_equal_a_full_rebuild(env):
    env.ingest("sales", "stores")
    first = aggregate("daily_sales")
    env.land(
        "sales/late.csv",
        HEADER
        + _sale(8, "s2", 40, 2, hour=18)  # a late sale for 01-02
        + _sale(5, "s1", 35, 3, updated="2024-01-05 09:00:00")  # an update of a 01-03 sale
        + _sale(9, "s1", 3, 5),  # a new day
    )
    (sales,) = env.ingest("sales")
    assert sales.late_rows == 2 and sales.touched_partitions == ["2024-01-02", "2024-01-03", "2024-01-05"]

    second = aggregate("daily_sales")
    assert (second.status, second.mode) == ("built", "incremental")
    assert second.partitions_recomputed == ["2024-01-02", "2024-01-03", "2024-01-05"]
    assert second.rows_written == 4  # 01-02 s1 and s2, 01-03 s1, 01-05 s1
    written = env.table()
    rewritten = written.filter(pl.col("_run_id") == second.run_id).get_column("_partition").unique().sort()
    assert rewritten.to_list() == second.partitions_recomputed
    untouched = written.filter(pl.col("_partition").is_in(["2024-01-01", "2024-01-04"]))
    assert untouched.get_column("_run_id").unique().to_list() == [first.run_id]
    incremental = env.rows()
    assert_frame_equal(incremental, _independent_daily(env.root / "landing"))
    day3 = incremental.filter(pl.col("day") == pl.date(2024, 1, 3)).row(0, named=True)
    assert (day3["sales"], day3["amount"]) == (1, 35)

    full = aggregate("daily_sales", full_refresh=True)
    assert (full.mode, full.reason) == ("full", "full refresh requested")
    assert full.partitions_recomputed == [f"2024-01-0{d}" for d in range(1, 6)]
    assert_frame_equal(env.rows(), incremental)
    assert full.partitions_marked_stale == [] and full.stale_partitions == []


def test_an_incremental_build_in_parallel_partition_batches_equals_one_pass(env, monkeypatch):
    import pipelines.workflows.aggregate as module

    env.ingest("sales", "stores")
    aggregate("daily_sales")
    env.land(
        "sales/late.csv",
        HEADER + _sale(8, "s2", 40, 2, hour=18) + _sale(10, "s1", 4, 4) + _sale(9, "s1", 3, 5),
    )
    env.ingest("sales")
    calls = []

    def spy(lake, plan, partitions=None):
        calls.append(partitions)
        return _READ(lake, plan, partitions)

    monkeypatch.setattr(module, "PARTITION_BATCH", 2)
    monkeypatch.setattr(module, "_read_inputs", spy)
    second = aggregate("daily_sales")
    assert (second.mode, second.partitions_recomputed) == (
        "incremental",
        ["2024-01-02", "2024-01-04", "2024-01-05"],
    )
    assert calls == [["2024-01-02", "2024-01-04"], ["2024-01-05"]]  # two transform calls, collected together
    batched = env.rows()
    assert_frame_equal(batched, _independent_daily(env.root / "landing"))
    assert aggregate("daily_sales", full_refresh=True).mode == "full"
    assert calls[2:] == [None]  # one pass over everything
    assert_frame_equal(env.rows(), batched)


def test_a_changed_dimension_rebuilds_every_partition(env):
    env.ingest("sales", "stores")
    aggregate("daily_sales")
    env.stores({"s1": "north-east", "s2": "south"})
    env.ingest("stores")
    result = aggregate("daily_sales")
    assert result.mode == "full"
    assert result.reason == "unpartitioned input(s) changed: stores"
    assert len(result.partitions_recomputed) == 4
    regions = dict(env.rows().select("store_id", "region").unique().iter_rows())
    assert regions == {"s1": "north-east", "s2": "south"}


def test_an_unpartitioned_dataset_is_rebuilt_whole_only_when_an_input_changed(env):
    env.ingest("sales", "stores")
    aggregate("daily_sales")
    first = aggregate("store_totals")
    assert first.partitions_recomputed == ["all"] and "_partition" not in env.table("store_totals").columns
    assert aggregate("store_totals").status == "up_to_date"

    env.land("sales/more.csv", HEADER + _sale(10, "s2", 100, 4, hour=12))
    env.ingest("sales")
    assert aggregate("daily_sales").partitions_recomputed == ["2024-01-04"]
    again = aggregate("store_totals")
    assert (again.status, again.mode) == ("built", "full")
    assert again.reason == "changed input(s) daily_sales; the dataset is not partitioned"
    totals = dict(env.rows("store_totals").select("store_id", "amount").iter_rows())
    assert totals == {"s1": 10 + 5 + 30 + 1, "s2": 20 + 7 + 2 + 100}


def test_a_changed_definition_rebuilds_in_full(env):
    env.ingest("sales", "stores")
    aggregate("daily_sales")
    env.monkeypatch.setattr(sys.modules[__name__], "daily_sales_with_note", _with_note, raising=False)
    env.registry(daily_transform="daily_sales_with_note")
    env.folder.joinpath("contracts", "daily_sales.yaml").write_text(DAILY + "  note:     {type: string}\n")
    result = aggregate("daily_sales")
    assert result.mode == "full" and result.reason.startswith("the dataset's definition changed")
    assert env.table().get_column("note").unique().to_list() == ["x"]


# stale, not deleted ------------------------------------------------------------------------------


def test_a_vanished_upstream_partition_is_marked_stale_kept_and_removed_by_cleanup(env):
    env.registry(sales_style="full")
    env.ingest("sales", "stores")
    aggregate("daily_sales")
    aggregate("store_totals")
    before = env.rows()

    # the provider's snapshot loses 01-03 (sale 5): the cleaned table is replaced without that partition
    env.land("sales/d3.csv", HEADER + _sale(6, "s1", 1, 4) + _sale(7, "s2", 2, 4))
    (sales,) = env.ingest("sales")
    assert "2024-01-03" not in sales.touched_partitions
    result = aggregate("daily_sales")
    assert result.mode == "incremental"
    assert result.partitions_marked_stale == ["2024-01-03"] and result.stale_partitions == ["2024-01-03"]
    assert "2024-01-03" not in result.partitions_recomputed
    assert_frame_equal(env.rows(), before)  # nothing deleted
    status = partition_status(env.lake, "daily_sales").row(0, named=True)
    assert (status["partition"], status["status"]) == ("2024-01-03", "stale")
    assert "disappeared from sales" in status["reason"] and status["run_id"] == result.run_id
    assert set(stale_partitions(env.lake, "daily_sales")) == {"2024-01-03"}

    # downstream reads daily_sales without its stale partition
    totals = aggregate("store_totals")
    assert totals.mode == "full"
    assert dict(env.rows("store_totals").select("store_id", "amount").iter_rows()) == {"s1": 16, "s2": 29}

    # a rerun keeps it stale (and since when) without marking it again
    assert aggregate("daily_sales").status == "up_to_date"

    dry = cleanup("daily_sales", dry_run=True)
    assert (dry.status, dry.partitions, dry.rows_removed) == ("would_remove", ["2024-01-03"], 1)
    assert "disappeared from sales" in dry.reasons["2024-01-03"]
    assert_frame_equal(env.rows(), before)

    removed = cleanup("daily_sales")
    assert (removed.status, removed.partitions, removed.rows_removed) == ("removed", ["2024-01-03"], 1)
    assert env.rows().filter(pl.col("day") == pl.date(2024, 1, 3)).height == 0
    assert env.rows().height == before.height - 1
    status = partition_status(env.lake, "daily_sales").row(0, named=True)
    assert status["status"] == "removed" and status["reason"] == f"removed by cleanup run {removed.run_id}"
    assert stale_partitions(env.lake, "daily_sales") == {}
    assert cleanup("daily_sales").status == "nothing_stale"
    assert aggregate("daily_sales").status == "up_to_date"
    assert aggregate("store_totals").status == "up_to_date"

    # the day comes back: it is rebuilt and listed as current again
    env.land("sales/d3.csv", HEADER + _sale(5, "s1", 30, 3) + _sale(6, "s1", 1, 4) + _sale(7, "s2", 2, 4))
    env.ingest("sales")
    back = aggregate("daily_sales")
    assert "2024-01-03" in back.partitions_recomputed and back.stale_partitions == []
    assert partition_status(env.lake, "daily_sales").get_column("status").to_list() == ["current"]
    assert_frame_equal(env.rows(), before)


def test_erasure_with_state_marks_stale_and_a_commit_without_state_forces_a_full_rebuild(env):
    env.ingest("sales", "stores")
    aggregate("daily_sales")
    cleaned = env.lake.table("cleaned", "sales")
    state = json.loads(cleaned.history(1)[0][STATE_KEY])
    erased = {**state, "touched_partitions": []}
    cleaned.delete(
        "sale_id = 5", commit_properties=CommitProperties(custom_metadata={STATE_KEY: json.dumps(erased)})
    )
    result = aggregate("daily_sales")
    assert result.mode == "incremental" and result.partitions_marked_stale == ["2024-01-03"]

    env.lake.table("cleaned", "sales").delete("sale_id = 6")  # a commit that records nothing
    result = aggregate("daily_sales")
    assert result.mode == "full"
    assert result.reason == "sales version 2 (DELETE) records no touched partitions"
    day4 = env.rows().filter(pl.col("day") == pl.date(2024, 1, 4))
    assert day4.select("store_id", "amount").rows() == [("s2", 2)]
    assert result.stale_partitions == ["2024-01-03"]


def _with_note(inputs):
    return daily_sales(inputs).with_columns(pl.lit("x").alias("note"))


def test_a_new_schema_never_drops_stale_partitions_silently(env):
    env.registry(sales_style="full")
    env.ingest("sales", "stores")
    aggregate("daily_sales")
    env.land("sales/d3.csv", HEADER + _sale(6, "s1", 1, 4) + _sale(7, "s2", 2, 4))
    env.ingest("sales")
    assert aggregate("daily_sales").stale_partitions == ["2024-01-03"]

    env.monkeypatch.setattr(sys.modules[__name__], "daily_sales_with_note", _with_note, raising=False)
    env.registry(sales_style="full", daily_transform="daily_sales_with_note")
    env.folder.joinpath("contracts", "daily_sales.yaml").write_text(DAILY + "  note:     {type: string}\n")
    version = env.lake.table("aggregated", "daily_sales").version()
    with pytest.raises(TransformError) as info:
        aggregate("daily_sales")
    message = str(info.value)
    assert "adds column(s) note" in message
    assert "keeps (2024-01-03), which cannot be rewritten to the new schema" in message
    assert "`pipelines cleanup daily_sales`" in message and "--full-refresh" in message
    assert env.lake.table("aggregated", "daily_sales").version() == version

    cleanup("daily_sales")
    rebuilt = aggregate("daily_sales")
    assert rebuilt.mode == "full" and rebuilt.stale_partitions == []
    assert env.rows().get_column("note").to_list() == ["x"] * 6  # 01-01, 01-02 and 01-04, two stores each


# errors ------------------------------------------------------------------------------------------


def _build_with(env, transform):
    env.registry(daily_transform=transform)
    with pytest.raises(TransformError) as info:
        aggregate("daily_sales")
    assert env.lake.table("aggregated", "daily_sales") is None
    return str(info.value)


def test_transform_errors_name_the_transform_and_write_nothing(env):
    env.ingest("sales", "stores")
    message = _build_with(env, "explode")
    assert f"Transform '{HERE}:explode' (dataset 'daily_sales') failed on all the input rows" in message
    assert "ValueError: boom: no such column 'amout'" in message and "Nothing was written" in message

    message = _build_with(env, "not_a_frame")
    assert "returned dict; a transform must return a polars LazyFrame or DataFrame" in message

    message = _build_with(env, "without_region")
    assert "returned missing column(s) region" in message and "contracts/daily_sales.yaml" in message

    message = _build_with(env, "twice")
    assert "rows that share a primary key (day|store_id)" in message

    message = _build_with(env, "daily_sale")
    assert f"module '{HERE}' has no function 'daily_sale'. Did you mean 'daily_sales'?" in message

    env.registry(daily_transform="x")
    registry = env.folder / "datasets.csv"
    registry.write_text(
        registry.read_text().replace(f"{HERE}:x", "tests.workflows.no_such_module:daily_sales")
    )
    with pytest.raises(TransformError) as info:
        aggregate("daily_sales")
    assert (
        "The transform 'tests.workflows.no_such_module:daily_sales' of dataset 'daily_sales' (registry row 4) "
        "cannot be imported: ModuleNotFoundError"
    ) in str(info.value)


def test_an_output_partition_from_other_input_partitions_is_refused_incrementally(env):
    env.registry(daily_transform="next_day")
    env.ingest("sales", "stores")
    first = aggregate("daily_sales")
    assert first.partitions_recomputed[0] == "2024-01-02"
    env.land("sales/late.csv", HEADER + _sale(8, "s2", 40, 2, hour=18))
    env.ingest("sales")
    with pytest.raises(TransformError) as info:
        aggregate("daily_sales")
    assert "produced partition(s) 2024-01-03 from the input rows of partition(s) 2024-01-02" in str(
        info.value
    )
    assert "Nothing was written" in str(info.value)
    assert env.lake.table("aggregated", "daily_sales").version() == first.version


def test_wrong_stage_and_missing_inputs_are_explained(env):
    with pytest.raises(
        InputNotReadyError,
        match=r"input 'sales' has no cleaned table yet .* Run `pipelines ingest sales` first",
    ):
        aggregate("daily_sales")
    env.ingest("sales", "stores")
    with pytest.raises(InputNotReadyError, match="Run `pipelines aggregate daily_sales` first"):
        aggregate("store_totals")
    with pytest.raises(Exception, match="Dataset 'sales' is cleaned; aggregate builds aggregated datasets"):
        aggregate("sales")
    with pytest.raises(Exception, match="only aggregated datasets have stale partitions"):
        cleanup("stores")
    with pytest.raises(Exception, match=r"build it with `pipelines aggregate daily_sales` first"):
        cleanup("daily_sales")


def test_cli_aggregate_and_cleanup_print_json(env):
    env.ingest("sales", "stores")
    runner = CliRunner()
    result = runner.invoke(app, ["aggregate", "daily_sales"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout[result.stdout.index("{") :])
    assert (payload["status"], payload["rows_written"]) == ("built", 7)
    result = runner.invoke(app, ["aggregate", "daily_sales", "--full-refresh"])
    assert json.loads(result.stdout[result.stdout.index("{") :])["reason"] == "full refresh requested"
    result = runner.invoke(app, ["cleanup", "daily_sales", "--dry-run"])
    payload = json.loads(result.stdout[result.stdout.index("{") :])
    assert (payload["status"], payload["dry_run"]) == ("nothing_stale", True)
    result = runner.invoke(app, ["aggregate", "sale"])
    assert result.exit_code == 1 and "Did you mean 'sales'?" in result.stderr
    runs = env.lake.read("_meta", "runs").filter(pl.col("workflow") == "aggregate")
    assert runs.height == 2 and set(runs.get_column("dataset")) == {"daily_sales"}
