"""The --quick smoke run of the benchmarks, shared by the two files that split it.

Every benchmark runs end to end and verifies in one of two groups, each in its own test file, so that
pytest-xdist (which keeps a file on one worker) runs the two halves at the same time. The groups are balanced
by their quick-run times (parallel and memory, the two slowest, are in different groups);
test_bench.py checks that together they hold every benchmark once, in table order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench import Target

REPO = Path(__file__).resolve().parents[2]
GROUPS = (
    ["ingest", "incremental", "validation", "parallel", "cold_start", "no_new_data"],
    ["orchestration", "share_append", "share_merge", "peer", "memory", "small_ingest", "slot", "state_read"],
)
POSTGRES_BENCHMARKS = ("parallel", "share_append", "share_merge", "peer")  # each creates and drops databases


def dlt_python() -> str:
    """dlt's interpreter for the peer benchmark: $BENCH_DLT_PYTHON, else the venv in the default bench
    cache (built there once per machine, so smoke runs in fresh temporary caches reuse it)."""
    from bench.__main__ import _default_cache
    from bench.peer import DLT

    return os.environ.get(DLT.override_variable) or str(DLT.ensure(_default_cache()))


def bench(*args: str, tmp: Path, dlt_python: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    if dlt_python:
        env["BENCH_DLT_PYTHON"] = dlt_python
    return subprocess.run(
        [sys.executable, "-m", "bench", *args, "--out", str(tmp / "out"), "--cache", str(tmp / "cache")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        timeout=900,
    )


def _ingest(details: dict) -> None:
    assert details["verified"]["rows"] == 20_000 - 400  # 2% repeated keys


def _incremental(details: dict) -> None:
    assert details["verified"]["late_rows"] > 0  # and the floor's hand-written merge gave the same table


def _small_ingest(details: dict) -> None:
    """Its sides ran, were verified against each other (an error otherwise) and were measured; its floor too
    (checked for every record that has one, below)."""


def _validation(details: dict) -> None:
    assert details["verified"] == {"rows": 10_000 - 200, "partitions": 60, "expectations_evaluated": 9}


def _orchestration(details: dict) -> None:
    assert details["verified"]["datasets"] == 3


def _parallel(details: dict) -> None:
    # the floor's plain processes wrote the same tables too (checked before these facts are recorded)
    assert details["verified"] == {"datasets": 2, "rows_written": 3920, "dask_workers": 2}


def _share_append(details: dict) -> None:
    assert details["verified"]["rows"] == 10_000 - 200


def _share_merge(details: dict) -> None:
    merged = details["verified"]
    assert merged["upserts"] == details["upserts"] > 0
    assert (
        merged["rows_after"] == 10_000 - 200 + merged["new_keys"]
        and 0 < merged["new_keys"] < merged["upserts"]
    )


def _peer(details: dict) -> None:
    assert details["verified"] == {"rows": 10_000 - 200, "csv_rows": 10_000}
    assert all(run["rows_read"] == 10_000 for run in details["baseline_runs"])


def _cold_start(details: dict) -> None:
    assert all("import_seconds" in run for run in details["ours_runs"])


def _no_new_data(details: dict) -> None:
    assert details["verified"] == {"rows_in_table": 1_000 - 20, "runs": 1}
    [run] = details["ours_runs"]
    assert run["status"] == "no_new_data" and run["great_expectations_imported"] is False


def _checked_by_the_common_checks(details: dict) -> None:
    """Its sides ran, were verified against each other (an error otherwise) and were measured."""


FLOORED = (
    "incremental",
    "parallel",
    "small_ingest",
)  # the benchmarks that measure a floor beside their two sides

# What each benchmark's record must show beyond the checks every record gets (memory: its unit, below).
CHECKS = {
    "ingest": _ingest,
    "incremental": _incremental,
    "validation": _validation,
    "orchestration": _orchestration,
    "parallel": _parallel,
    "share_append": _share_append,
    "share_merge": _share_merge,
    "peer": _peer,
    "memory": _checked_by_the_common_checks,
    "small_ingest": _small_ingest,
    "slot": _checked_by_the_common_checks,
    "cold_start": _cold_start,
    "no_new_data": _no_new_data,
    "state_read": _checked_by_the_common_checks,
}


def run_and_check(names: list[str], tmp_path: Path) -> None:
    """Run `python -m bench --quick` on these benchmarks and check the JSON, the markdown and the databases."""
    docs = REPO / "docs" / "benchmarks.md"
    before = docs.read_text() if docs.exists() else None
    only = ",".join(names)
    done = bench(
        "--quick", "--only", only, "--runs", "1", "--warmup", "0", tmp=tmp_path, dlt_python=dlt_python()
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    document = json.loads((tmp_path / "out" / "benchmarks.json").read_text())
    assert document["quick"] is True
    assert document["command"] == f"python -m bench --quick --only {only} --runs 1 --warmup 0"
    assert set(document["machine"]) >= {"cpu_count", "cpu_model", "ram_gib"}
    assert set(document["versions"]) >= {"python", "prefect", "polars", "deltalake", "psycopg"}
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
    )
    assert document["commit"].split()[0] == head.stdout.strip()  # the code measured is this checkout's
    records = {r["name"]: r for r in document["benchmarks"]}
    assert list(records) == names
    for name, record in records.items():
        assert record["error"] is None, f"{name}: {record['error']}\n{record.get('traceback')}"
        assert record["runs"] == 1 and record["warmup"] == 0
        for side in ("ours_stats", "baseline_stats"):
            stats = record[side]
            assert len(stats["values"]) == 1
            assert stats["min"] <= stats["median"] <= stats["max"]
            assert all(isinstance(v, float) and v > 0 for v in stats["values"])
        assert isinstance(record["ratio"], float) and record["ratio"] > 0
        if record["target"] is None:
            assert record["score"] is None and record["met"] is None
        else:
            assert isinstance(record["score"], float) and isinstance(record["met"], bool)
            assert record["met"] == Target(**record["target"]).met(record["score"])
        # every side was checked against the other after the runs
        CHECKS[name](record["details"])
        if name in FLOORED:
            assert record["floor"] and len(record["floor_stats"]["values"]) == 1
            assert record["floor_score"] > 0 and isinstance(record["out_of_reach"], bool)
        else:
            assert "floor_stats" not in record
    if "memory" in records:
        assert records["memory"]["unit"] == "MiB"

    markdown = (tmp_path / "out" / "benchmarks.md").read_text()
    assert markdown.startswith("# Benchmarks")
    assert "| benchmark | size | runs | ours | baseline | ratio | score | target | verdict |" in markdown
    for name in names:
        assert f"\n| {name} | " in markdown
    assert "prefect 2." in markdown and "CPUs" in markdown and "GiB RAM" in markdown
    assert "load average" in markdown and set(document["load_average"]) == {"start", "end"}
    # a quick run never replaces the recorded full-size table
    assert (docs.read_text() if docs.exists() else None) == before
    # every database the PostgreSQL benchmarks created was dropped
    if not set(POSTGRES_BENCHMARKS) & set(records):
        return
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres") as conn:
        for name in (n for n in POSTGRES_BENCHMARKS if n in records):
            pattern = records[name]["details"]["databases"].replace("_*", "_%")
            assert pattern.startswith(f"pipelines_bench_{name}_")
            left = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (pattern,)
            ).fetchall()
            assert left == [], f"{name} left {left}"
