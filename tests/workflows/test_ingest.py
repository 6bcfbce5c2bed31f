import contextlib
import csv
import gzip
import io
import json

import polars as pl
import pytest

from pipelines.components.resources import Lake, Storage
from pipelines.workflows.ingest import SchemaFrozenError, ingest

pytestmark = pytest.mark.usefixtures("prefect_harness")

ORDERS = """\
columns:
  order_id:   {type: int64, nullable: false}
  amount:     {type: "decimal(12,2)", thousands: ","}
  ordered_at: {type: datetime, format: ["%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M"]}
  updated_at: {type: datetime, format: "%Y-%m-%d %H:%M:%S", nullable: false}
  status:     {type: string}
"""
HEADER = "order_id,amount,ordered_at,updated_at,status\n"
FIELDS = ["name", "stage", "source", "format", "primary_key", "incremental_field", "partition_field",
          "ingestion_style", "lookback", "schema_policy", "quality_policy"]  # fmt: skip


def _registry(root, rows, contracts):
    folder = root / "registry"
    (folder / "contracts").mkdir(parents=True, exist_ok=True)
    with open(folder / "datasets.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in FIELDS})
    for name, text in contracts.items():
        (folder / "contracts" / f"{name}.yaml").write_text(text)
    return folder / "datasets.csv"


def _orders_row(**overrides):
    row = {
        "name": "orders",
        "stage": "cleaned",
        "source": "orders/*.csv",
        "format": "csv",
        "primary_key": "order_id",
        "incremental_field": "updated_at",
        "partition_field": "ordered_at",
        "ingestion_style": "incremental",
        "lookback": "1d",
        "schema_policy": "evolve",
        "quality_policy": "quarantine",
    }
    return row | overrides


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A registry with an `orders` dataset and a landing folder, wired through settings."""
    registry = _registry(tmp_path, [_orders_row()], {"orders": ORDERS})
    monkeypatch.setenv("PIPELINES_REGISTRY", str(registry))
    monkeypatch.setenv("PIPELINES_LANDING_URL", str(tmp_path / "landing"))
    landing = Storage(str(tmp_path / "landing"))
    lake = Lake(Storage(str(tmp_path / "data" / "test")))

    class Env:
        def land(self, name, text, dataset="orders"):
            data = text if isinstance(text, bytes) else text.encode()
            landing.write_atomic(f"{dataset}/{name}", data)

        def cleaned(self, dataset="orders"):
            return lake.read("cleaned", dataset)

        def quarantine(self, dataset="orders"):
            return lake.read("quarantine", dataset)

        def registry(self, rows, contracts):
            _registry(tmp_path, rows, contracts)

    e = Env()
    e.lake, e.landing, e.root = lake, landing, tmp_path
    return e


def _conserved(result):
    assert result.rows_in == result.written + result.quarantined + result.duplicates_collapsed


def test_typed_output_quarantine_reasons_and_counts(env):
    env.land(
        "day1.csv",
        HEADER
        + '1,"1,234.50",2024-01-01 10:00:00,2024-01-01 10:00:00,new\n'
        + "2,abc,2024-01-01 11:00:00,2024-01-01 11:00:00,new\n"  # bad decimal
        + ",5,2024-01-01 12:00:00,2024-01-01 12:00:00,new\n"  # null key
        + "4,5,02/01/2024 09:30,2024-01-02 09:30:00,new\n"  # second date format
        + "5,5,2024-01-02 10:00:00\n"  # short line
        + "6,5,2024-01-02 10:00:00,2024-01-02 10:00:00,new,extra\n",  # long line
    )
    result = ingest("orders")
    _conserved(result)
    assert (result.rows_in, result.written, result.quarantined) == (6, 2, 4)
    cleaned = env.cleaned().sort("order_id")
    assert cleaned.schema["order_id"] == pl.Int64
    assert cleaned.schema["amount"] == pl.Decimal(12, 2)
    assert cleaned.schema["ordered_at"] == pl.Datetime("us")
    assert cleaned.get_column("order_id").to_list() == [1, 4]
    assert str(cleaned.get_column("amount")[0]) == "1234.50"
    assert cleaned.get_column("ordered_at")[1].isoformat() == "2024-01-02T09:30:00"
    assert sorted(cleaned.get_column("_partition").to_list()) == ["2024-01-01", "2024-01-02"]
    bad = env.quarantine().sort("source_line")
    assert bad.get_column("source_line").to_list() == [3, 4, 6, 7]
    reasons = dict(zip(bad.get_column("source_line"), bad.get_column("reason"), strict=True))
    assert "amount: 'abc' is not a valid decimal(12,2)" in reasons[3]
    assert "order_id: null in a primary key column" in reasons[4]
    assert "line 6 has 3 fields, the header has 5" in reasons[6]
    assert "line 7 has 6 fields" in reasons[7]
    assert set(bad.get_column("rule")) == {"type", "not_null", "malformed_line"}
    assert all(f.startswith("raw/orders/ingest_date=") for f in bad.get_column("source_file"))
    assert json.loads(bad.filter(pl.col("source_line") == 3).get_column("record")[0])["amount"] == "abc"


def test_running_twice_is_a_no_op(env):
    env.land("day1.csv", HEADER + "1,10,2024-01-01 10:00:00,2024-01-01 10:00:00,new\n")
    first = ingest("orders")
    second = ingest("orders")
    assert second.status == "no_new_data"
    assert (second.rows_in, second.written, second.skipped_files) == (0, 0, 1)
    assert second.cleaned_version == first.cleaned_version
    assert env.cleaned().height == 1
    assert len(env.landing.glob("orders/*")) == 1
    assert len(Storage(str(env.root / "data" / "test")).glob("raw/orders/*/*")) == 1


def test_a_run_with_nothing_new_takes_no_slot_and_commits_nothing(env):
    from pipelines.components import limits
    from pipelines.workflows import ingest as ingest_module

    def refuse(*args, **kwargs):
        raise AssertionError("a run with nothing new took a slot or ran clean and commit")

    @contextlib.contextmanager
    def refusing():
        with pytest.MonkeyPatch.context() as patched:
            patched.setattr(limits, "slot", refuse)
            patched.setattr(ingest_module._clean_and_commit, "fn", refuse)
            yield

    env.land("day1.csv", HEADER + "1,10,2024-01-01 10:00:00,2024-01-01 10:00:00,new\n")
    first = ingest("orders")
    with refusing():
        again = ingest("orders")
    assert (again.status, again.mode, again.rows_in, again.skipped_files) == (
        "no_new_data",
        "incremental",
        0,
        1,
    )
    assert again.cleaned_version == first.cleaned_version
    assert again.watermark_before == again.watermark_after == first.watermark_after == "2024-01-01T10:00:00"

    _full(env)  # a full-style dataset whose snapshot did not change: the same
    env.land("snap.csv", HEADER + "1,10,,2024-01-01 10:00:00,a\n")
    ingest("orders", full_refresh=True)
    with refusing():
        assert ingest("orders").status == "no_new_data"
    env.land("snap.csv", HEADER + "1,10,,2024-01-01 10:00:00,b\n")  # a changed snapshot is work again
    assert ingest("orders").status == "completed"
    assert env.cleaned().get_column("status").to_list() == ["b"]


def test_same_content_under_another_name_is_skipped(env):
    text = HEADER + "1,10,2024-01-01 10:00:00,2024-01-01 10:00:00,new\n"
    env.land("a.csv", text)
    ingest("orders")
    env.land("copy-of-a.csv", text)
    result = ingest("orders")
    assert result.status == "no_new_data" and result.skipped_files == 2


def test_in_batch_duplicates_resolve_last_wins(env):
    env.land(
        "a.csv",
        HEADER
        + "1,10,2024-01-01 10:00:00,2024-01-01 10:00:00,first\n"
        + "1,11,2024-01-01 10:00:00,2024-01-01 10:00:00,second-same-time\n"
        + "2,20,2024-01-01 10:00:00,2024-01-03 10:00:00,newest\n"
        + "2,21,2024-01-01 10:00:00,2024-01-02 10:00:00,older-later-line\n",
    )
    env.land("b.csv", HEADER + "1,12,2024-01-01 10:00:00,2024-01-01 10:00:00,third-later-file\n")
    result = ingest("orders")
    _conserved(result)
    assert result.duplicates_collapsed == 3
    rows = dict(env.cleaned().select("order_id", "status").iter_rows())
    assert rows == {1: "third-later-file", 2: "newest"}


def test_late_rows_merge_and_older_versions_never_overwrite(env):
    env.land("d1.csv", HEADER + "1,10,2024-01-01 10:00:00,2024-01-01 10:00:00,new\n")
    env.land("d3.csv", HEADER + "3,30,2024-01-03 10:00:00,2024-01-03 10:00:00,new\n")
    first = ingest("orders")
    assert first.watermark_after == "2024-01-03T10:00:00"
    env.land(
        "late.csv",
        HEADER
        + "2,20,2024-01-02 10:00:00,2024-01-02 10:00:00,late-arrival\n"  # a late row for 01-02
        + "1,15,2024-01-01 10:00:00,2024-01-04 10:00:00,paid\n"  # a newer version of 1
        + "3,99,2024-01-03 10:00:00,2024-01-02 00:00:00,stale\n",  # an older version of 3
    )
    second = ingest("orders")
    _conserved(second)
    assert second.late_rows == 2  # rows 1 and 2 belong to partitions before 2024-01-03
    assert second.watermark_before == "2024-01-03T10:00:00"
    assert second.watermark_after == "2024-01-04T10:00:00"
    assert second.touched_partitions == ["2024-01-01", "2024-01-02", "2024-01-03"]
    rows = dict(env.cleaned().select("order_id", "status").iter_rows())
    assert rows == {1: "paid", 2: "late-arrival", 3: "new"}


def test_failure_between_raw_write_and_commit_leaves_nothing_partial(env, monkeypatch):
    env.land(
        "d1.csv",
        HEADER
        + "1,10,2024-01-01 10:00:00,2024-01-01 10:00:00,new\n2,x,2024-01-01 10:00:00,2024-01-01 10:00:00,bad\n",
    )
    ingest("orders")
    version = env.lake.table("cleaned", "orders").version()
    env.land(
        "d2.csv",
        HEADER
        + "3,30,2024-01-02 10:00:00,2024-01-02 10:00:00,new\n4,y,2024-01-02 10:00:00,2024-01-02 10:00:00,bad\n",
    )

    def crash(*args, **kwargs):
        raise RuntimeError("power cut between raw write and cleaned commit")

    with monkeypatch.context() as patch, pytest.raises(RuntimeError, match="power cut"):
        patch.setattr(Lake, "merge", crash)
        ingest("orders")
    assert env.lake.table("cleaned", "orders").version() == version
    assert env.cleaned().height == 1
    assert len(Storage(str(env.root / "data" / "test")).glob("raw/orders/*/*")) == 2  # the raw copy was kept
    rerun = ingest("orders")
    _conserved(rerun)
    assert rerun.skipped_files == 2 and rerun.written == 1 and rerun.quarantined == 1
    assert sorted(env.cleaned().get_column("order_id").to_list()) == [1, 3]
    assert env.quarantine().height == 2  # the crashed attempt's quarantine rows were replaced, not doubled


def test_empty_file_and_header_only_file(env):
    env.land("empty.csv", b"")
    env.land("header.csv", HEADER)
    env.land("one.csv", HEADER + "1,10,2024-01-01 10:00:00,2024-01-01 10:00:00,new\n")
    result = ingest("orders")
    _conserved(result)
    assert (result.rows_in, result.written) == (1, 1)


def test_wrong_encoding_is_quarantined_whole_with_the_fix(env):
    env.land("latin1.csv", (HEADER + "1,10,2024-01-01 10:00:00,2024-01-01 10:00:00,café\n").encode("latin-1"))
    env.land("ok.csv", HEADER + "2,10,2024-01-01 10:00:00,2024-01-01 10:00:00,new\n")
    result = ingest("orders")
    assert len(result.rejected_files) == 1
    bad = env.quarantine()
    assert bad.get_column("rule").to_list() == ["encoding"]
    reason = bad.get_column("reason")[0]
    assert "is not valid utf8 (byte 0xe9" in reason and "source.encoding" in reason
    assert env.cleaned().get_column("order_id").to_list() == [2]


def test_contract_encoding_reads_latin1(env):
    env.registry([_orders_row()], {"orders": ORDERS + "source:\n  encoding: latin-1\n"})
    env.land("latin1.csv", (HEADER + "1,10,2024-01-01 10:00:00,2024-01-01 10:00:00,café\n").encode("latin-1"))
    ingest("orders")
    assert env.cleaned().get_column("status").to_list() == ["café"]


def test_ndjson_broken_lines_and_gzip(env):
    env.registry([_orders_row(source="orders/*.ndjson*", format="ndjson")], {"orders": ORDERS})
    lines = [
        json.dumps(
            {
                "order_id": 1,
                "amount": 10.5,
                "ordered_at": "2024-01-01 10:00:00",
                "updated_at": "2024-01-01 10:00:00",
                "status": "new",
            }
        ),
        '{"order_id": 2, "amount": ',
        "[1, 2]",
        json.dumps(
            {
                "order_id": 3,
                "amount": "7",
                "ordered_at": "2024-01-01 10:00:00",
                "updated_at": "2024-01-01 10:00:00",
            }
        ),
    ]
    env.land("a.ndjson.gz", gzip.compress("\n".join(lines).encode()))
    result = ingest("orders")
    _conserved(result)
    assert (result.written, result.quarantined) == (2, 2)
    reasons = env.quarantine().sort("source_line").get_column("reason").to_list()
    assert reasons[0].startswith("line 2 is not JSON") and "not an object" in reasons[1]
    assert env.cleaned().sort("order_id").get_column("status").to_list() == ["new", None]


def test_broken_json_file_is_rejected_with_a_message(env):
    env.registry([_orders_row(source="orders/*.json", format="json")], {"orders": ORDERS})
    env.land("bad.json", '[{"order_id": 1,')
    env.land("good.json", json.dumps([{"order_id": 2, "updated_at": "2024-01-01 10:00:00"}]))
    result = ingest("orders")
    assert result.written == 1 and len(result.rejected_files) == 1
    assert "is not valid JSON" in env.quarantine().get_column("reason")[0]


def test_parquet_source(env):
    env.registry([_orders_row(source="orders/*.parquet", format="parquet")], {"orders": ORDERS})
    frame = pl.DataFrame(
        {
            "order_id": [1, 2],
            "updated_at": ["2024-01-01 10:00:00", "2024-01-01 11:00:00"],
            "amount": ["1", "2"],
        }
    )
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    env.land("a.parquet", buffer.getvalue())
    result = ingest("orders")
    assert result.written == 2
    assert env.cleaned().schema["order_id"] == pl.Int64


def test_schema_evolve_adds_the_column_and_records_a_schema_version(env):
    env.land("d1.csv", HEADER + "1,10,2024-01-01 10:00:00,2024-01-01 10:00:00,new\n")
    ingest("orders")
    env.land("d2.csv", HEADER.strip() + ",channel\n2,10,2024-01-02 10:00:00,2024-01-02 10:00:00,new,web\n")
    result = ingest("orders")
    assert result.schema_changes == ["added column channel (string)"]
    cleaned = env.cleaned().sort("order_id")
    assert cleaned.get_column("channel").to_list() == [None, "web"]
    schemas = env.lake.read("_meta", "schemas").sort("version")
    assert schemas.get_column("version").to_list() == [1, 2]
    assert "channel" in json.loads(schemas.get_column("columns")[1])


def test_schema_freeze_rejects_the_batch_before_writing(env):
    env.registry([_orders_row(schema_policy="freeze")], {"orders": ORDERS})
    env.land("d1.csv", HEADER + "1,10,2024-01-01 10:00:00,2024-01-01 10:00:00,new\n")
    ingest("orders")
    version = env.lake.table("cleaned", "orders").version()
    env.land("d2.csv", HEADER.strip() + ",channel\n2,10,2024-01-02 10:00:00,2024-01-02 10:00:00,new,web\n")
    with pytest.raises(SchemaFrozenError, match=r"column\(s\) channel") as info:
        ingest("orders")
    assert "contracts/orders.yaml" in str(info.value)
    assert env.lake.table("cleaned", "orders").version() == version
    assert env.quarantine().height == 0


def test_schema_discard_columns_drops_and_records(env):
    env.registry([_orders_row(schema_policy="discard_columns")], {"orders": ORDERS})
    env.land("d1.csv", HEADER.strip() + ",channel\n1,10,2024-01-01 10:00:00,2024-01-01 10:00:00,new,web\n")
    result = ingest("orders")
    assert result.schema_changes == ["discarded column channel"]
    assert "channel" not in env.cleaned().columns


def test_a_type_change_midway_quarantines_the_rows(env):
    env.land("d1.csv", HEADER + "1,10,2024-01-01 10:00:00,2024-01-01 10:00:00,new\n")
    ingest("orders")
    env.land("d2.csv", HEADER + "2,ten euros,2024-01-02 10:00:00,2024-01-02 10:00:00,new\n")
    result = ingest("orders")
    assert result.quarantined == 1
    assert "amount: 'ten euros' is not a valid decimal(12,2)" in env.quarantine().get_column("reason")[0]


def test_full_style_replaces_and_full_refresh_rebuilds_from_raw(env):
    env.registry(
        [_orders_row(ingestion_style="full", incremental_field="", partition_field="")],
        {"orders": ORDERS},
    )
    env.land("snap.csv", HEADER + "1,10,,2024-01-01 10:00:00,a\n2,10,,2024-01-01 10:00:00,b\n")
    ingest("orders")
    env.land("snap.csv", HEADER + "2,10,,2024-01-01 10:00:00,b\n3,10,,2024-01-01 10:00:00,c\n")
    result = ingest("orders")
    assert result.mode == "full"
    assert sorted(env.cleaned().get_column("order_id").to_list()) == [2, 3]
    env.landing.delete("orders")  # landing is gone; raw keeps what arrived
    rebuilt = ingest("orders", full_refresh=True)
    assert rebuilt.mode == "full_refresh"
    assert sorted(env.cleaned().get_column("order_id").to_list()) == [2, 3]


def test_full_refresh_of_incremental_dataset_replays_every_raw_file(env):
    env.land("d1.csv", HEADER + "1,10,2024-01-01 10:00:00,2024-01-01 10:00:00,new\n")
    ingest("orders")
    env.land(
        "d2.csv",
        HEADER
        + "1,11,2024-01-01 10:00:00,2024-01-02 10:00:00,paid\n2,5,2024-01-02 10:00:00,2024-01-02 10:00:00,new\n",
    )
    ingest("orders")
    incremental = env.cleaned().drop("_run_id", "_ingested_at").sort("order_id")
    env.landing.delete("orders")
    rebuilt = ingest("orders", full_refresh=True)
    _conserved(rebuilt)
    assert rebuilt.duplicates_collapsed == 1
    assert env.cleaned().drop("_run_id", "_ingested_at").sort("order_id").equals(incremental)


def test_run_history_is_recorded(env):
    env.land("d1.csv", HEADER + "1,10,2024-01-01 10:00:00,2024-01-01 10:00:00,new\n")
    result = ingest("orders")
    runs = env.lake.read("_meta", "runs")
    assert runs.get_column("run_id").to_list() == [result.run_id]
    assert runs.get_column("written").to_list() == [1]


def test_unknown_dataset_suggests_the_name(env):
    with pytest.raises(Exception, match="Did you mean 'orders'"):
        ingest("order")


def test_ingest_on_s3_continues_from_state_at_the_destination(env, s3, monkeypatch):
    monkeypatch.setenv("PIPELINES_DATA_URL", f"{s3.url}/lake")
    monkeypatch.setenv("PIPELINES_LANDING_URL", f"{s3.url}/landing")
    landing = Storage(f"{s3.url}/landing", s3.options)
    landing.write_atomic(
        "orders/d1.csv", (HEADER + "1,10,2024-01-01 10:00:00,2024-01-01 10:00:00,new\n").encode()
    )
    first = ingest("orders")
    assert first.cleaned_table == f"s3://{s3.bucket}/lake/test/cleaned/orders"
    assert ingest("orders").status == "no_new_data"
    # a new machine: nothing local survives, the state travels with the Delta table on S3
    monkeypatch.chdir(env.root / "registry")
    landing.write_atomic(
        "orders/d2.csv", (HEADER + "2,10,2024-01-02 10:00:00,2024-01-02 10:00:00,new\n").encode()
    )
    second = ingest("orders")
    assert second.watermark_before == "2024-01-01T10:00:00"
    assert (second.written, second.skipped_files) == (1, 1)
    lake = Lake(Storage(f"{s3.url}/lake/test", s3.options))
    assert sorted(lake.read("cleaned", "orders").get_column("order_id").to_list()) == [1, 2]


def _full(env):
    env.registry(
        [_orders_row(ingestion_style="full", incremental_field="", partition_field="")], {"orders": ORDERS}
    )


def test_full_snapshot_of_several_files_keeps_the_unchanged_ones(env):
    _full(env)
    env.land("part1.csv", HEADER + "1,10,,2024-01-01 10:00:00,a\n")
    env.land("part2.csv", HEADER + "2,10,,2024-01-01 10:00:00,b\n")
    ingest("orders")
    env.land("part2.csv", HEADER + "2,10,,2024-01-01 10:00:00,b-changed\n")
    ingest("orders")
    assert dict(env.cleaned().select("order_id", "status").iter_rows()) == {1: "a", 2: "b-changed"}


def test_full_snapshot_reverted_to_earlier_bytes_is_applied(env):
    _full(env)
    original = HEADER + "1,10,,2024-01-01 10:00:00,original\n"
    env.land("snap.csv", original)
    ingest("orders")
    env.land("snap.csv", HEADER + "1,10,,2024-01-01 10:00:00,changed\n")
    ingest("orders")
    env.land("snap.csv", original)
    result = ingest("orders")
    assert result.status == "completed"
    assert env.cleaned().get_column("status").to_list() == ["original"]


def test_unreadable_full_snapshot_leaves_the_table_as_it_was(env):
    _full(env)
    env.land("snap.csv", HEADER + "1,10,,2024-01-01 10:00:00,good\n")
    ingest("orders")
    env.land("snap.csv", (HEADER + "2,10,,2024-01-01 10:00:00,café\n").encode("latin-1"))
    with pytest.raises(Exception, match="left as it was"):
        ingest("orders")
    assert env.cleaned().get_column("status").to_list() == ["good"]
    assert env.quarantine().get_column("rule").to_list() == ["encoding"]


def test_contract_fix_and_full_refresh_clear_old_quarantine_rows(env):
    env.land(
        "d1.csv",
        HEADER
        + "1,10,2024-01-01 10:00:00,2024-01-01 10:00:00,new\n2,10 EUR,2024-01-01 10:00:00,2024-01-01 10:00:00,x\n",
    )
    ingest("orders")
    assert env.quarantine().height == 1
    env.registry(
        [_orders_row()],
        {
            "orders": ORDERS.replace(
                'amount:     {type: "decimal(12,2)", thousands: ","}', "amount: {type: string}"
            )
        },
    )
    result = ingest("orders", full_refresh=True)
    assert (result.written, result.quarantined) == (2, 0)
    assert env.quarantine().height == 0


def test_typed_sources_never_round_silently(env):
    contract = ORDERS.replace(
        'amount:     {type: "decimal(12,2)", thousands: ","}', 'amount: {type: "decimal(5,1)"}'
    )
    env.registry([_orders_row(source="orders/*.parquet", format="parquet")], {"orders": contract})
    frame = pl.DataFrame(
        {"order_id": [1.0, 2.0, 3.7], "amount": [1.5, 1.25, 2.0], "updated_at": ["2024-01-01 10:00:00"] * 3}
    )
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    env.land("a.parquet", buffer.getvalue())
    result = ingest("orders")
    assert (result.written, result.quarantined) == (1, 2)
    reasons = " ".join(env.quarantine().get_column("reason").to_list())
    assert "order_id: '3.7' is not a valid int64" in reasons
    assert "amount: '1.25' is not a valid decimal(5,1)" in reasons


def test_schema_history_is_readable_and_only_grows_on_change(env):
    env.registry([_orders_row(schema_policy="discard_columns")], {"orders": ORDERS})
    env.land("d1.csv", HEADER.strip() + ",channel\n1,10,2024-01-01 10:00:00,2024-01-01 10:00:00,new,web\n")
    ingest("orders")
    env.land("d2.csv", HEADER.strip() + ",channel\n2,10,2024-01-02 10:00:00,2024-01-02 10:00:00,new,app\n")
    ingest("orders")
    schemas = env.lake.read("_meta", "schemas")
    assert schemas.height == 1
    assert json.loads(schemas.get_column("columns")[0])["amount"] == "Decimal(precision=12, scale=2)"
