"""state_read: reading a table's committed state after `maintain`, against the same table without it.

Every ingest commit carries the state (watermark, the ledger of raw files committed so far), so a
table that has taken many commits is opened by replaying every commit since delta-rs's last automatic
checkpoint (one per 100 commits), each with its copy of the ledger. `maintain` carries the state to a
new commit, checkpoints there and cleans up the log (pipelines.lake.maintenance), so opening the table
and reading its state reads the checkpoint and one commit.
"""

from __future__ import annotations

import shutil

import polars as pl

from bench._harness import Benchmark, Case, Context, Target

_FILES_PER_COMMIT = 10


def setup(commits: int, context: Context) -> Case:
    from pipelines.components.resources import Storage
    from pipelines.lake import Lake
    from pipelines.lake.maintenance import maintain_table

    plain_root, maintained_root = context.work / "plain", context.work / "maintained"
    plain = Lake(Storage(str(plain_root)), retention_hours=1)
    table, files = None, {}
    for i in range(commits):  # one ingest-like commit per batch: a few rows, a growing ledger
        for j in range(_FILES_PER_COMMIT):
            digest = f"{i:08d}{j:04d}".ljust(32, "0")
            files[digest] = f"raw/events/ingest_date=2026-01-01/run{i:06d}-{j:06d}-{digest}.csv"
        state = {
            "run_id": f"r{i}",
            "files": dict(files),
            "partial": {},
            "watermark": str(i),
            "touched_partitions": ["p"],
        }
        frame = pl.DataFrame({"k": [i], "v": [i * 2], "_partition": ["p"]})
        if table is None:
            table = plain.overwrite(
                "cleaned", "events", frame, state=state, base=None, partition_by=["_partition"]
            )
        else:
            table = plain.merge(
                "cleaned", "events", frame, key=["k"], newer_field=None, state=state, base=table
            )
    shutil.copytree(plain_root, maintained_root)
    maintained = Lake(Storage(str(maintained_root)), retention_hours=1)
    report = maintain_table(maintained, "cleaned", "events", retention_hours=1, run_id="bench", dry_run=False)
    read: dict[str, dict] = {}

    def verify() -> dict:
        ours, theirs = read["ours"], read["baseline"]
        if ours["files"] != theirs["files"] or ours["watermark"] != theirs["watermark"]:
            raise AssertionError("the maintained table's state differs from the plain table's")
        return {"ledger_files": len(ours["files"]), "watermark": ours["watermark"]}

    return Case(
        ours=lambda: read.__setitem__("ours", maintained.state("cleaned", "events")),
        baseline=lambda: read.__setitem__("baseline", plain.state("cleaned", "events")),
        verify=verify,
        details={
            "commits": commits,
            "checkpoint": report.checkpoint,
            "log_entries": report.log_entries_before,
        },
    )


BENCHMARK = Benchmark(
    name="state_read",
    ours="open a table and read its committed state after `maintain` (checkpoint at the newest commit)",
    baseline="the same on the same table without maintenance (log replayed since delta-rs's last checkpoint)",
    target=Target(0.5, "<=", "≤ 0.5x the baseline's time"),
    setup=setup,
    quick_size=30,
    full_size=190,
    describe_size=lambda commits: f"{commits:,} commits, {commits * _FILES_PER_COMMIT:,} ledger entries",
    runs=10,
    order=95,
)
