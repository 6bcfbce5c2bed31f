"""Streaming ingest: bounded batches committed with their state, crash resume, concurrent runs, file:// sources."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from pipelines.components.resources import Storage
from pipelines.lake import Lake
from pipelines.lake.table import Lake as LakeClass
from pipelines.workflows.ingest import ingest
from tests.workflows.test_ingest import HEADER, ORDERS, _orders_row, _registry

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _rows(count: int, keys: int, seed: int, first: int = 0) -> list[str]:
    """Orders with repeated keys, tied update times and some bad amounts (quarantined)."""
    rng = random.Random(seed)
    lines = []
    for i in range(first, first + count):
        key = rng.randrange(keys)
        amount = "x" if rng.random() < 0.03 else f"{rng.randrange(1000)}.5"
        day = 1 + rng.randrange(3)
        updated = f"2024-01-0{day} 1{rng.randrange(3)}:00:00"
        lines.append(f'{key},{amount},2024-01-0{day} 09:00:00,{updated},"s{i}, ""q"""\n')
    return lines


def _expected(files: list[list[str]]) -> pl.DataFrame:
    """Independent polars computation: good rows in arrival order, the latest per key (ties: the later)."""
    text = HEADER + "".join(line for lines in files for line in lines)
    frame = pl.read_csv(text.encode(), infer_schema=False).with_row_index("arrival")
    good = frame.filter(pl.col("amount") != "x").with_columns(
        pl.col("order_id").cast(pl.Int64), pl.col("updated_at").str.to_datetime("%Y-%m-%d %H:%M:%S")
    )
    latest = good.sort("updated_at", "arrival").unique("order_id", keep="last")
    return latest.select("order_id", "status", "updated_at").sort("order_id")


def _cleaned(lake: Lake) -> pl.DataFrame:
    return lake.read("cleaned", "orders").select("order_id", "status", "updated_at").sort("order_id")


def _bad_count(files: list[list[str]]) -> int:
    return sum(line.split(",")[1] == "x" for lines in files for line in lines)


@pytest.fixture
def orders(tmp_path, monkeypatch):
    registry = _registry(tmp_path, [_orders_row()], {"orders": ORDERS})
    monkeypatch.setenv("PIPELINES_REGISTRY", str(registry))
    monkeypatch.setenv("PIPELINES_LANDING_URL", str(tmp_path / "landing"))
    return tmp_path


def _land(root: Path, name: str, lines: list[str]) -> None:
    Storage(str(root / "landing")).write_atomic(f"orders/{name}", (HEADER + "".join(lines)).encode())


def test_batch_boundaries_inside_and_between_files_keep_the_latest_row_per_key(orders):
    files = [_rows(400, 60, seed=1), _rows(400, 60, seed=2, first=400)]
    for number, lines in enumerate(files):
        _land(orders, f"part-{number}.csv", lines)
    result = ingest("orders", batch_bytes=4096)  # each file is cut into several chunks
    lake = Lake(Storage(str(orders / "data" / "test")))
    assert result.batches > 4
    assert result.rows_in == 800
    assert result.rows_in == result.written + result.quarantined + result.duplicates_collapsed
    assert result.quarantined == _bad_count(files)
    assert _cleaned(lake).equals(_expected(files))
    assert lake.read("quarantine", "orders").height == _bad_count(files)
    bad = lake.read("quarantine", "orders")
    for number, lines in enumerate(files):  # each row is quarantined at its line in its file
        mine = bad.filter(pl.col("source_file") == result.processed_files[number])
        expected = [n + 2 for n, line in enumerate(lines) if line.split(",")[1] == "x"]
        assert sorted(mine.get_column("source_line").to_list()) == expected
    # one key split across a batch boundary: its older row in a later batch does not win
    _land(orders, "late.csv", ['7,1.5,2024-01-01 09:00:00,2023-12-31 00:00:00,"stale"\n'])
    again = ingest("orders", batch_bytes=4096)
    assert (again.rows_in, again.written, again.processed_files) == (1, 1, again.raw_files)
    assert _cleaned(lake).equals(_expected(files))


_CHILD = """
import sys
from pipelines.workflows.ingest import ingest
ingest("orders", batch_bytes=int(sys.argv[1]))
"""


def _log_versions(table: Path) -> int:
    log = table / "_delta_log"
    return len(list(log.glob("*.json"))) if log.exists() else 0


def _start_and_kill(root: Path, batch_bytes: int, ready, what: str) -> None:
    """Run an ingest in a child process and kill -9 it once ``ready()`` holds (``what`` says when)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]),
        # The dataset keeps its default bound of one: the second child frees the slot the killed first
        # child left taken (docs/backfill.md) and then commits. The children get this test's own Prefect
        # home, so a slot the last one leaves taken stays out of other tests.
        "PREFECT_HOME": str(root / "prefect-home"),
    }
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(batch_bytes)], env=env, cwd=root)
    try:
        deadline = time.monotonic() + 120
        while not ready() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert child.poll() is None, f"the ingest ended (exit code {child.returncode}) before {what}"
        assert ready(), f"the ingest did not get to {what} within 120 s"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_kill_between_and_during_batch_commits_then_rerun_gives_the_exact_rows(orders):
    files = [_rows(700, 150, seed=3), _rows(700, 150, seed=4, first=700), _rows(700, 150, seed=5, first=1400)]
    for number, lines in enumerate(files):
        _land(orders, f"part-{number}.csv", lines)
    table = orders / "data" / "test" / "cleaned" / "orders"
    # between commits: once two batches are committed
    _start_and_kill(orders, 6000, lambda: _log_versions(table) >= 2, "its second commit")
    between = _log_versions(table)
    # during a commit: as soon as the next batch's data file appears, before its log entry
    parquet = lambda: len(list(table.rglob("*.parquet")))  # noqa: E731
    seen = parquet()
    _start_and_kill(orders, 6000, lambda: parquet() > seen, "writing a new data file")
    assert _log_versions(table) >= between
    result = ingest("orders", batch_bytes=6000)
    lake = Lake(Storage(str(orders / "data" / "test")))
    assert _cleaned(lake).equals(_expected(files))
    assert lake.read("quarantine", "orders").height == _bad_count(files)
    assert lake.state("cleaned", "orders")["partial"] == {}
    assert len(lake.state("cleaned", "orders")["files"]) == 3
    assert result.rows_in == result.written + result.quarantined + result.duplicates_collapsed
    assert not list((orders / "data" / "test" / "raw").rglob(".*"))  # no temporaries in raw


def _child_env() -> dict:
    here = str(Path(__file__).parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}


def _run_concurrently(monkeypatch, root: Path, second_file) -> int:
    """Pause this run just before its first commit while a whole second ingest runs in another process."""
    original = LakeClass.overwrite
    done: list[int] = []

    def paused(self, *args, **kwargs):
        if not done:
            second_file()
            child = subprocess.run(
                [sys.executable, "-c", _CHILD, "2048"], env=_child_env(), cwd=root, timeout=300
            )
            done.append(child.returncode)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LakeClass, "overwrite", paused)
    return ingest("orders", batch_bytes=2048), done[0]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_two_concurrent_ingests_with_different_files_give_exactly_the_union(
    orders, monkeypatch, request, where
):
    # Two slots per dataset: by default the second run would wait for the paused one's slot
    # (tests/components/test_limits.py); this checks what guards writers that do not share a bound.
    monkeypatch.setenv("PIPELINES_MAX_DATASET_RUNS", "2")
    if where == "s3":
        s3 = request.getfixturevalue("s3")
        monkeypatch.setenv("PIPELINES_DATA_URL", f"{s3.url}/lake")
        lake = Lake(Storage(f"{s3.url}/lake/test", s3.options))
    else:
        lake = Lake(Storage(str(orders / "data" / "test")))
    files = [_rows(120, 40, seed=6), _rows(120, 40, seed=7, first=120)]
    _land(orders, "a.csv", files[0])
    first, second_exit = _run_concurrently(monkeypatch, orders, lambda: _land(orders, "b.csv", files[1]))
    assert second_exit == 0
    assert first.conflicts >= 1  # the paused run lost its commit and re-planned
    # the other run committed both files, so the paused run counts nothing it had cleaned before
    assert (first.status, first.rows_in, first.written, first.quarantined) == ("no_new_data", 0, 0, 0)
    assert _cleaned(lake).equals(_expected(files))
    state = lake.state("cleaned", "orders")
    assert len(state["files"]) == 2 and state["partial"] == {}
    assert lake.read("quarantine", "orders").height == _bad_count(files)
    runs = lake.read("_meta", "runs")
    assert runs.get_column("rows_in").sum() == 240  # every row was ingested once, by one run or the other
    assert ingest("orders").status == "no_new_data"


def test_a_file_url_source_ingests(orders, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "one.csv").write_text(HEADER + "1,10,2024-01-01 10:00:00,2024-01-01 10:00:00,new\n")
    _registry(tmp_path, [_orders_row(source=f"file://{outside}/*.csv")], {"orders": ORDERS})
    result = ingest("orders")
    assert (result.status, result.written) == ("completed", 1)
    assert ingest("orders").skipped_files == 1  # known from the manifest, not read again


def test_a_stale_staging_file_from_a_killed_landing_is_swept(orders):
    staging = orders / "data" / "test" / "_tmp"
    staging.mkdir(parents=True)
    leftover = staging / "run-1-abc.part"
    leftover.write_bytes(b"half a file")
    old = time.time() - 2 * 3600
    os.utime(leftover, (old, old))
    fresh = staging / "run-2-def.part"  # a concurrent run's file being written now stays
    fresh.write_bytes(b"in progress")
    _land(orders, "a.csv", _rows(5, 5, seed=8))
    ingest("orders")
    assert not leftover.exists() and fresh.exists()


def test_a_file_rejected_whole_for_its_encoding_is_recorded_once_and_later_runs_work(orders, tmp_path):
    _registry(tmp_path, [_orders_row()], {"orders": ORDERS + "source: {encoding: ascii}\n"})
    _land(orders, "latin.csv", ['1,1.5,2024-01-01 09:00:00,2024-01-01 10:00:00,"caf\xe9"\n'])
    path = orders / "landing" / "orders" / "latin.csv"
    path.write_bytes(path.read_text().encode("latin-1"))
    first = ingest("orders")  # the only file, on a table that does not exist yet
    assert (first.rows_in, first.written, len(first.rejected_files)) == (0, 0, 1)
    lake = Lake(Storage(str(orders / "data" / "test")))
    assert lake.read("quarantine", "orders").get_column("rule").to_list() == ["encoding"]
    assert ingest("orders").status == "no_new_data"
    _land(orders, "good.csv", _rows(3, 3, seed=9))
    assert ingest("orders").rows_in == 3
    assert lake.read("quarantine", "orders").filter(pl.col("rule") == "encoding").height == 1


def test_importing_the_ingest_workflow_does_not_import_great_expectations():
    code = "import sys, pipelines.workflows.ingest; print('great_expectations' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=_child_env(), capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_cleanup_vacuum_removes_orphan_files_of_a_killed_commit(orders):
    from pipelines.workflows.cleanup import cleanup

    _land(orders, "a.csv", _rows(20, 10, seed=10))
    ingest("orders")
    table = orders / "data" / "test" / "cleaned" / "orders"
    orphan = table / "_partition=2024-01-01" / "part-00000-killed-c000.snappy.parquet"
    orphan.write_bytes(b"PAR1 half written")
    old = time.time() - 3 * 3600
    os.utime(orphan, (old, old))
    lake = Lake(Storage(str(orders / "data" / "test")))
    before = _cleaned(lake)
    assert cleanup("orders", dry_run=True, vacuum_hours=1).vacuumed == [str(orphan.relative_to(table))]
    assert orphan.exists()
    result = cleanup("orders", vacuum_hours=1)
    assert result.vacuumed == [str(orphan.relative_to(table))] and not orphan.exists()
    assert _cleaned(lake).equals(before)


def test_a_first_load_appends_winners_and_a_quarantined_later_row_does_not_hide_the_earlier_one(orders):
    # key 1: newest version in the second file, but its amount is bad (quarantined): the first file's
    # row must stay; key 2: the second file's newer row wins; key 3: the first file's newer row wins.
    _land(
        orders,
        "part-0.csv",
        [
            '1,1.5,2024-01-01 09:00:00,2024-01-01 10:00:00,"one-old"\n',
            '2,1.5,2024-01-01 09:00:00,2024-01-01 10:00:00,"two-old"\n',
            '3,1.5,2024-01-02 09:00:00,2024-01-03 10:00:00,"three-newest"\n',
        ]
        + [f'{k},2.5,2024-01-03 09:00:00,2024-01-03 10:00:00,"filler"\n' for k in range(100, 140)],
    )
    _land(
        orders,
        "part-1.csv",
        [
            '1,x,2024-01-01 09:00:00,2024-01-02 10:00:00,"one-bad"\n',
            '2,1.5,2024-01-02 09:00:00,2024-01-02 10:00:00,"two-new"\n',
            '3,1.5,2024-01-02 09:00:00,2024-01-02 10:00:00,"three-stale"\n',
        ],
    )
    result = ingest("orders", batch_bytes=512)
    lake = Lake(Storage(str(orders / "data" / "test")))
    statuses = dict(lake.read("cleaned", "orders").select("order_id", "status").iter_rows())
    assert (statuses[1], statuses[2], statuses[3]) == ("one-old", "two-new", "three-newest")
    assert result.rows_in == result.written + result.quarantined + result.duplicates_collapsed
    assert result.written == lake.read("cleaned", "orders").height  # superseded rows are never written
    operations = [c["operation"] for c in lake.table("cleaned", "orders").history()]
    assert result.batches > 2
    assert operations.count("WRITE") == result.batches and "MERGE" not in operations


def test_a_first_load_whose_spill_fails_commits_nothing_and_a_rerun_gives_the_exact_rows(orders, monkeypatch):
    from pipelines.components import batches

    files = [_rows(300, 80, seed=6), _rows(300, 80, seed=7, first=300)]
    for number, lines in enumerate(files):
        _land(orders, f"part-{number}.csv", lines)
    original = batches.Staged._write

    def fail(frame, path):
        raise OSError("No space left on device")

    monkeypatch.setattr(batches.Staged, "_write", staticmethod(fail))
    with pytest.raises(OSError, match="No space left"):
        ingest("orders", batch_bytes=2048)  # the background spill's error fails the run
    lake = Lake(Storage(str(orders / "data" / "test")))
    assert lake.table("cleaned", "orders") is None  # nothing committed
    monkeypatch.setattr(batches.Staged, "_write", staticmethod(original))
    result = ingest("orders", batch_bytes=2048)
    assert result.batches > 2 and result.rows_in == 600
    assert result.rows_in == result.written + result.quarantined + result.duplicates_collapsed
    assert _cleaned(lake).equals(_expected(files))
    one = ingest("orders", full_refresh=True)  # one batch: nothing staged on disk, the same table
    assert one.batches == 1 and _cleaned(lake).equals(_expected(files))
