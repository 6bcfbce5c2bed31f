"""Reprocessing committed raw files (backfill): which files a range of event-time partitions reads,
which re-cleaned rows differ from the table, and whether a file's quarantine rows changed.

A raw file is selected when it produced a row of one of the partitions: a cleaned row (its
``_source_file`` lineage) or a quarantined one (the partition field's date as the quarantined record
wrote it). Only files the table's committed state has consumed are candidates; files still pending
(or cut by a crash) belong to the next ingest.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import polars as pl

from pipelines.components.errors import PipelinesError
from pipelines.lake import quarantine
from pipelines.lake.layout import CLEANED, INGESTED_AT, PARTITION, QUARANTINE, RUN_ID, SOURCE_FILE
from pipelines.lake.table import CommitConflict, Lake

_ATTEMPTS = 8

# columns that say who wrote a row and when, not what it holds
RUN_COLUMNS = (RUN_ID, INGESTED_AT)
_QUARANTINE_CONTENT = ("source_file", "source_line", "column", "rule", "reason", "record")


def committed_files(state: dict | None) -> set[str]:
    """The raw files (paths) the committed state records as wholly consumed."""
    files = set(((state or {}).get("files") or {}).values())
    return files - set((state or {}).get("partial") or {})


def select_files(
    lake: Lake, dataset: str, start: str, end: str, partition_field: str | None, committed: set[str]
) -> dict[str, list[str]]:
    """raw file -> the partitions ``start``..``end`` (``YYYY-MM-DD``, inclusive) it produced rows of."""
    found: dict[str, set[str]] = {}
    table = lake.table(CLEANED, dataset)
    if table is not None:
        rows = (
            lake.scan(CLEANED, dataset, table=table)
            .filter(pl.col(PARTITION).is_between(pl.lit(start), pl.lit(end)))
            .group_by(SOURCE_FILE)
            .agg(pl.col(PARTITION).unique())
            .collect()
        )
        for file, parts in rows.iter_rows():
            found.setdefault(file, set()).update(parts)
    quarantined = lake.table(QUARANTINE, dataset)
    if quarantined is not None and partition_field:
        day = pl.col("record").str.json_path_match(f"$.{partition_field}").str.slice(0, 10)
        rows = (
            lake.scan(QUARANTINE, dataset, table=quarantined)
            .select("source_file", day.alias("day"))
            .filter(pl.col("day").is_between(pl.lit(start), pl.lit(end)))
            .unique()
            .collect()
        )
        for file, part in rows.iter_rows():
            found.setdefault(file, set()).add(part)
    return {f: sorted(p) for f, p in sorted(found.items()) if f in committed}


def partitions_of(lake: Lake, dataset: str, files: Iterable[str]) -> list[str]:
    """Every partition the cleaned rows of ``files`` are in now (what re-reading them can touch)."""
    table = lake.table(CLEANED, dataset)
    files = list(files)
    if table is None or not files:
        return []
    parts = (
        lake.scan(CLEANED, dataset, table=table)
        .filter(pl.col(SOURCE_FILE).is_in(files))
        .select(pl.col(PARTITION).unique())
        .collect()
    )
    return sorted(parts.get_column(PARTITION).to_list())


def changed_rows(lake: Lake, dataset: str, table, frame: pl.DataFrame) -> pl.DataFrame:
    """The rows of ``frame`` that the table does not hold as they are (run columns aside).

    The table is read in ``frame``'s partitions only; a key whose row sits in another partition
    counts as changed (merging it again is harmless), so nothing that differs is missed.
    """
    if table is None or frame.height == 0:
        return frame
    columns = [c for c in frame.columns if c not in RUN_COLUMNS]
    schema = lake.scan(CLEANED, dataset, table=table).collect_schema()
    if any(c not in schema for c in columns):
        return frame
    parts = frame.get_column(PARTITION).unique().to_list()
    current = (
        lake.scan(CLEANED, dataset, table=table)
        .filter(pl.col(PARTITION).is_in(parts))
        .select(columns)
        .collect()
        .cast({c: frame.schema[c] for c in columns}, strict=False)
    )
    return frame.join(current, on=columns, how="anti", nulls_equal=True)


def quarantine_rows(lake: Lake, dataset: str, files: Iterable[str]) -> pl.DataFrame:
    """The quarantine rows that ``files`` produced (empty frame when there are none)."""
    table = lake.table(QUARANTINE, dataset)
    files = list(files)
    if table is None or not files:
        return pl.DataFrame()
    return lake.scan(QUARANTINE, dataset, table=table).filter(pl.col("source_file").is_in(files)).collect()


def same_quarantine(old: pl.DataFrame, new: pl.DataFrame) -> bool:
    """Whether two sets of quarantine rows say the same (who quarantined them, and when, aside)."""
    if old.height != new.height:
        return False
    if old.height == 0:
        return True

    def content(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.select([pl.col(c).cast(pl.String) for c in _QUARANTINE_CONTENT]).sort(
            list(_QUARANTINE_CONTENT), nulls_last=True
        )

    return content(old).equals(content(new))


def holds(lake: Lake, dataset: str, good: pl.DataFrame, bad: pl.DataFrame, files: list[str]) -> bool:
    """Whether the lake already holds exactly this outcome for ``files`` (nothing to commit)."""
    table = lake.table(CLEANED, dataset)
    if changed_rows(lake, dataset, table, good).height:
        return False
    return same_quarantine(quarantine_rows(lake, dataset, files), bad)


@dataclass
class Outcome:
    """What committing re-cleaned rows of some raw files did."""

    changed: int = 0
    touched_partitions: list[str] = field(default_factory=list)
    quarantine_before: int = 0
    quarantine_after: int = 0
    committed: bool = False
    quarantine_replaced: bool = False
    version: int | None = None
    conflicts: int = 0


def commit(
    lake: Lake,
    dataset: str,
    good: pl.DataFrame,
    bad: pl.DataFrame,
    files: list[str],
    *,
    key: Iterable[str],
    newer_field: str | None,
    run_id: str,
    now: datetime,
) -> Outcome:
    """Make ``files``' quarantine rows exactly ``bad`` and merge the rows of ``good`` that differ.

    The merge keeps ingest's rule (an older row never overwrites a newer one) with ties going to the
    later raw file, so the outcome does not depend on which window commits first and equals what a
    rebuild from every raw file gives. Nothing that already holds is written again: a repeated
    backfill makes no commit. The cleaned commit carries the table's state unchanged (watermark,
    ledger of raw files, when data last arrived) with the partitions it touched, for the downstream
    aggregates, and when it was backfilled.
    """
    outcome = Outcome()
    spans = [quarantine.Span(f) for f in files]
    for attempt in range(1, _ATTEMPTS + 1):
        table = lake.table(CLEANED, dataset)
        state = lake.state(CLEANED, dataset, table=table) or {}
        changed = changed_rows(lake, dataset, table, good)
        before = quarantine_rows(lake, dataset, files)
        if attempt == 1:
            outcome.quarantine_before = before.height
        outcome.quarantine_after = bad.height
        if not same_quarantine(before, bad):
            quarantine.replace(lake, dataset, bad, run_id, now, spans)
            outcome.quarantine_replaced = True
        outcome.changed = changed.height
        outcome.touched_partitions = (
            sorted(changed.get_column(PARTITION).unique().to_list()) if changed.height else []
        )
        if not changed.height:
            outcome.version = table.version() if table is not None else None
            return outcome
        # "at" stays when the newest data arrived (freshness): reprocessing old files brings nothing new
        new_state = {
            **state,
            "run_id": run_id,
            "at": state.get("at") or now.isoformat(),
            "touched_partitions": outcome.touched_partitions,
            "backfilled_at": now.isoformat(),
        }
        try:
            table = lake.merge(
                CLEANED,
                dataset,
                changed,
                key=key,
                newer_field=newer_field,
                state=new_state,
                base=table,
                tie_field=SOURCE_FILE,
            )
        except CommitConflict:
            outcome.conflicts += 1
            time.sleep(min(5.0, 0.2 * attempt))
            continue
        outcome.committed = True
        outcome.version = table.version()
        return outcome
    raise PipelinesError(
        f"{dataset}: {_ATTEMPTS} backfill commits in a row lost to concurrent runs of this dataset. Nothing "
        "is half-written; run the backfill again when the other runs have finished."
    )
