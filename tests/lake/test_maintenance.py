"""Compaction, vacuum, the bounded commit log, refused time travel, landing expiry (pipelines.lake.maintenance)."""

import json
from datetime import date

import polars as pl
import pytest

from pipelines.components.resources import Storage
from pipelines.lake import Lake
from pipelines.lake.layout import CLEANED, STATE_KEY
from pipelines.lake.maintenance import expire_landing, maintain_table
from pipelines.lake.raw import RawZone, list_files
from pipelines.lake.table import VersionExpiredError


def _table(lake: Lake, commits: int = 6):
    """cleaned/d with one merge commit per row, each carrying a state with a growing ledger."""
    table, files = None, {}
    for i in range(commits):
        files[f"h{i:03d}"] = f"raw/d/ingest_date=2026-01-01/r-{i:06d}-h{i:03d}.csv"
        state = {
            "run_id": f"r{i}",
            "files": dict(files),
            "partial": {},
            "watermark": str(i),
            "touched_partitions": ["p"],
        }
        frame = pl.DataFrame({"k": [i], "v": [f"value {i}"], "_partition": ["p"]})
        if table is None:
            table = lake.overwrite(CLEANED, "d", frame, state=state, base=None, partition_by=["_partition"])
        else:
            table = lake.merge(CLEANED, "d", frame, key=["k"], newer_field=None, state=state, base=table)
    return table


def _parquet_files(root) -> int:
    return len(list((root / CLEANED / "d").rglob("*.parquet")))


def test_compaction_and_vacuum_drop_files_keep_content_and_refuse_vacuumed_versions(tmp_path):
    lake = Lake(Storage(str(tmp_path)), retention_hours=0)
    _table(lake)
    before = lake.read(CLEANED, "d").sort("k")
    on_disk = _parquet_files(tmp_path)
    assert Lake(Storage(str(tmp_path)), retention_hours=24).table(CLEANED, "d", version=0) is not None

    report = maintain_table(lake, CLEANED, "d", retention_hours=0, run_id="m1", dry_run=False)

    assert (report.files_before, report.files_after) == (6, 1)
    assert report.compacted == 6 and report.vacuumed >= 6
    assert _parquet_files(tmp_path) < on_disk
    assert lake.read(CLEANED, "d").sort("k").equals(before)
    with pytest.raises(VersionExpiredError) as caught:
        lake.read(CLEANED, "d", version=2)
    text = str(caught.value)
    assert "cleaned/d version 2" in text
    assert "vacuum window of 0 hour(s) (PIPELINES_VACUUM_RETENTION_HOURS)" in text
    assert "Read the latest version" in text and "raise PIPELINES_VACUUM_RETENTION_HOURS" in text
    latest = lake.table(CLEANED, "d").version()
    assert lake.table(CLEANED, "d", version=latest).version() == latest  # the latest is always readable


def test_the_checkpoint_keeps_state_reads_right_after_the_log_is_cleaned_up(tmp_path):
    lake = Lake(Storage(str(tmp_path)), retention_hours=0)
    _table(lake, commits=8)
    state = lake.state(CLEANED, "d")

    report = maintain_table(lake, CLEANED, "d", retention_hours=0, run_id="m1", dry_run=False)

    assert report.log_entries_after < report.log_entries_before  # entries before the checkpoint went
    assert (tmp_path / CLEANED / "d" / "_delta_log" / "_last_checkpoint").exists()
    table = lake.table(CLEANED, "d")
    assert report.checkpoint == table.version()
    newest = table.history(limit=1)[0]
    assert STATE_KEY in newest  # the state was carried to the newest commit, which clean-up keeps
    carried = lake.state(CLEANED, "d")
    assert carried["files"] == state["files"] and carried["watermark"] == state["watermark"]
    assert carried["touched_partitions"] == [] and carried["workflow"] == "maintain"
    # A second run finds the state on the newest commit already and commits no extra state.
    again = maintain_table(lake, CLEANED, "d", retention_hours=0, run_id="m2", dry_run=False)
    assert json.loads(lake.table(CLEANED, "d").history(limit=1)[0][STATE_KEY])["run_id"] in ("m1", "m2")
    assert lake.state(CLEANED, "d")["files"] == state["files"] and again.files_after == 1


def test_a_dry_run_changes_nothing(tmp_path):
    lake = Lake(Storage(str(tmp_path)), retention_hours=0)
    _table(lake)
    listing = sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))

    report = maintain_table(lake, CLEANED, "d", retention_hours=0, run_id="m", dry_run=True)

    assert report.files_before == report.files_after == 6 and report.compacted == 6
    assert sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == listing


def test_landing_expiry_removes_only_files_landed_before_the_day_and_unchanged(tmp_path):
    landing, raw = Storage(str(tmp_path / "landing")), Storage(str(tmp_path / "data"))
    for name in ("old.csv", "changed.csv", "young.csv", "unlanded.csv"):
        landing.write_atomic(f"d/{name}", f"id\n{name}\n".encode())
    infos = dict(list_files(landing, "d/*.csv"))
    old_zone = RawZone(raw, "d", "run1", "2026-01-01")
    for name in ("old.csv", "changed.csv"):
        old_zone.keep_file(landing, f"d/{name}", infos[f"d/{name}"])
    old_zone.save_manifest()
    young_zone = RawZone(raw, "d", "run2", "2026-01-09")
    young_zone.keep_file(landing, "d/young.csv", infos["d/young.csv"])
    young_zone.save_manifest()
    landing.write_atomic("d/changed.csv", b"id\nchanged, longer now\n")

    dry, _ = expire_landing(landing, raw, "d", before=date(2026, 1, 8), dry_run=True)
    assert dry == [landing.uri("d/old.csv")] and landing.exists("d/old.csv")

    removed, kept = expire_landing(landing, raw, "d", before=date(2026, 1, 8), dry_run=False)

    assert removed == [landing.uri("d/old.csv")] and kept == 1
    assert sorted(p.rsplit("/", 1)[-1] for p in landing.glob("d/*")) == [
        "changed.csv",
        "unlanded.csv",
        "young.csv",
    ]
    manifest = json.loads(raw.read_bytes("raw/d/_landed.json"))
    assert landing.uri("d/old.csv") not in manifest and landing.uri("d/young.csv") in manifest
    assert len(raw.glob("raw/d/ingest_date=*/*")) == 3  # raw keeps every copy


@pytest.mark.integration
def test_maintenance_and_raw_expiry_on_s3(s3):
    from pipelines.components.registry import Contract, DatasetSpec
    from pipelines.lake.retention import Rule, expire_raw

    storage = Storage(f"{s3.url}/test", s3.options)
    lake = Lake(storage, retention_hours=0)
    _table(lake, commits=4)
    before = lake.read(CLEANED, "d").sort("k")

    report = maintain_table(lake, CLEANED, "d", retention_hours=0, run_id="m", dry_run=False)

    assert (report.files_before, report.files_after) == (4, 1) and report.vacuumed >= 4
    assert lake.read(CLEANED, "d").sort("k").equals(before)
    assert lake.state(CLEANED, "d")["watermark"] == "3"
    with pytest.raises(VersionExpiredError, match="cleaned/d version 1"):
        lake.table(CLEANED, "d", version=1)

    rel = "raw/p/ingest_date=2026-01-01/r-000000-abc.csv"
    storage.write_atomic(rel, b"id,email\n1,ada@example.org\n")
    spec = DatasetSpec(name="p", stage="cleaned", format="csv", pii_columns=("email",), retention_days=1,
                       retention_action="null", contract=Contract(columns={}))  # fmt: skip
    done = expire_raw(storage, spec, Rule.of(spec, None), before=date(2026, 1, 2), partial=[], dry_run=False)
    assert done.expired == [rel] and storage.read_bytes(rel) == b"id,email\n1,\n"
