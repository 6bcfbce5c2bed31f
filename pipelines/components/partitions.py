"""Partition status of aggregated tables: which partitions are stale, and the catalog table of it.

The truth is the ``pipelines.state`` committed with each aggregated table's data: its
``stale_partitions`` maps a partition value to why and since when it is stale. A stale partition
keeps its rows (nothing is silently removed); ``cleanup`` deletes them on request.

``_meta/partitions`` is the catalog's view of the same facts, one row per (dataset, partition)
that was ever stale: ``status`` is ``stale``, ``removed`` (deleted by cleanup) or ``current``
(rebuilt since), with ``reason``, ``since`` (UTC) and the ``run_id`` that set it. It is rewritten
from the state after every commit, so it heals itself if a run dies between the two writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import polars as pl

from pipelines.lake import Lake
from pipelines.lake.layout import AGGREGATED, META, PARTITION
from pipelines.lake.state import state_at, table_partitions
from pipelines.lake.table import sql_in

PARTITIONS = "partitions"
__all__ = ["AGGREGATED", "PARTITION", "sql_in", "state_at", "table_partitions"]

STATUS_SCHEMA = {
    "dataset": pl.String,
    "partition": pl.String,
    "status": pl.String,
    "reason": pl.String,
    "since": pl.Datetime("us", "UTC"),
    "run_id": pl.String,
}


def stale_partitions(lake: Lake, dataset: str) -> dict[str, dict]:
    """partition -> {reason, since, run_id} for the aggregated dataset's stale partitions ({} if none)."""
    table = lake.table(AGGREGATED, dataset)
    if table is None:
        return {}
    return dict((state_at(table) or {}).get("stale_partitions") or {})


def partition_status(lake: Lake, dataset: str | None = None) -> pl.DataFrame:
    """The ``_meta/partitions`` rows (all datasets, or one), sorted by dataset and partition."""
    frame = lake.read(META, PARTITIONS)
    if frame.height == 0:
        return pl.DataFrame(schema=STATUS_SCHEMA)
    if dataset is not None:
        frame = frame.filter(pl.col("dataset") == dataset)
    return frame.select(list(STATUS_SCHEMA)).sort("dataset", "partition")


def sync_status(
    lake: Lake,
    dataset: str,
    *,
    stale: Mapping[str, Mapping[str, str]],
    present: set[str],
    run_id: str,
    now: datetime,
    removed_reason: str,
) -> None:
    """Make the dataset's ``_meta/partitions`` rows agree with its committed state.

    Every partition in ``stale`` is listed as stale with its reason. A listed partition that is no
    longer stale becomes ``current`` when the table holds it again (it was rebuilt), and a stale one
    the table no longer holds becomes ``removed`` with ``removed_reason``.
    """
    existing = partition_status(lake, dataset)
    rows = {row["partition"]: row for row in existing.iter_rows(named=True)}
    desired = dict(rows)
    for partition, info in stale.items():
        desired[partition] = {
            "dataset": dataset,
            "partition": partition,
            "status": "stale",
            "reason": info["reason"],
            "since": datetime.fromisoformat(info["since"]),
            "run_id": info["run_id"],
        }
    for partition, row in rows.items():
        if partition in stale:
            continue
        rebuilt = partition in present
        if (rebuilt and row["status"] != "current") or (not rebuilt and row["status"] == "stale"):
            desired[partition] = {
                "dataset": dataset,
                "partition": partition,
                "status": "current" if rebuilt else "removed",
                "reason": f"rebuilt by run {run_id}" if rebuilt else removed_reason,
                "since": now,
                "run_id": run_id,
            }
    if desired == rows:
        return
    frame = pl.DataFrame(list(desired.values()), schema=STATUS_SCHEMA).sort("partition")
    lake.replace_where(META, PARTITIONS, frame, sql_in("dataset", [dataset]), partition_by=["dataset"])
