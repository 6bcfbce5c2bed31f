"""Remove the stale partitions of an aggregated dataset, on request.

A partition becomes stale when the aggregate workflow can no longer derive it (its upstream
partition disappeared); its rows stay, marked stale, until this workflow deletes them. The delete
is one Delta commit that carries the table's state forward with ``stale_partitions`` emptied and
``removed_partitions`` listing what went, so downstream aggregates see the partitions disappear.
Deleted files stay reachable by Delta time travel until the table is vacuumed: with
``vacuum_hours`` the run also vacuums the dataset's table and its quarantine table (cleaned or
aggregated), deleting files no version of the last ``vacuum_hours`` references, including the
orphan data files a commit killed half-way leaves behind.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import polars as pl
from prefect import get_run_logger
from pydantic import BaseModel, Field

from pipelines.components.environment import get_settings
from pipelines.components.errors import PipelinesError
from pipelines.components.partitions import (
    AGGREGATED,
    PARTITION,
    state_at,
    sync_status,
    table_partitions,
)
from pipelines.components.registry import load_registry
from pipelines.components.resources import Storage
from pipelines.components.runs import new_run_id
from pipelines.components.summary import artifact_key, publish_markdown
from pipelines.components.workflow import workflow
from pipelines.lake import Lake
from pipelines.lake.layout import CLEANED, QUARANTINE


class CleanupResult(BaseModel):
    """What one cleanup run removed (or, with dry_run, would remove)."""

    dataset: str
    namespace: str
    run_id: str
    dry_run: bool
    status: str = Field(description="removed, would_remove (dry run) or nothing_stale")
    partitions: list[str] = Field(default=[], description="the stale partitions removed or to remove")
    reasons: dict[str, str] = Field(default={}, description="partition -> why it was stale")
    rows_removed: int = Field(default=0, description="rows deleted (with dry_run: rows that would be)")
    table: str = ""
    version: int | None = None
    vacuumed: list[str] = Field(
        default=[], description="files deleted by the vacuum (with dry_run: to delete)"
    )
    duration_seconds: float = 0.0


def _vacuum(lake: Lake, zone: str, dataset: str, hours: int, dry_run: bool) -> list[str]:
    removed = lake.vacuum(zone, dataset, retention_hours=hours, dry_run=dry_run)
    removed += lake.vacuum(QUARANTINE, dataset, retention_hours=hours, dry_run=dry_run)
    get_run_logger().info(
        "%s: vacuum %s %d file(s)", dataset, "would delete" if dry_run else "deleted", len(removed)
    )
    return removed


@workflow(name="cleanup")
def cleanup(dataset: str, dry_run: bool = False, vacuum_hours: int | None = None) -> CleanupResult:
    """Remove the stale partitions of an aggregated dataset (dry_run lists them and removes nothing).

    With ``vacuum_hours`` (any dataset), also vacuum its table and quarantine: delete files unreferenced
    for that long, including orphans of killed commits.
    """
    started = time.monotonic()
    logger = get_run_logger()
    settings = get_settings()
    spec = load_registry(settings.registry_path).get(dataset)
    if vacuum_hours is not None and vacuum_hours < 1:
        raise PipelinesError(
            f"vacuum_hours must be at least 1 (files a running commit is writing are younger), got {vacuum_hours}."
        )
    lake = Lake(Storage.from_settings(settings.namespace_url, settings))
    if spec.stage != "aggregated":
        if vacuum_hours is None:
            raise PipelinesError(
                f"Dataset {dataset!r} is {spec.stage}; only aggregated datasets have stale partitions to clean up. "
                f"To vacuum its table, run `pipelines run cleanup -p dataset={dataset} -p vacuum_hours=168`."
            )
        result = CleanupResult(
            dataset=dataset,
            namespace=settings.namespace,
            run_id=new_run_id(),
            dry_run=dry_run,
            status="would_remove" if dry_run else "removed",
            table=lake.uri(CLEANED, dataset),
        )
        result.vacuumed = _vacuum(lake, CLEANED, dataset, vacuum_hours, dry_run)
        result.duration_seconds = round(time.monotonic() - started, 3)
        return result
    run_id = new_run_id()
    uri = lake.uri(AGGREGATED, dataset)
    table = lake.table(AGGREGATED, dataset)
    if table is None:
        raise PipelinesError(
            f"{dataset!r} has no aggregated table in namespace {settings.namespace!r} ({uri}); "
            f"build it with `pipelines aggregate {dataset}` first."
        )
    state = state_at(table) or {}
    stale: dict[str, dict] = dict(state.get("stale_partitions") or {})
    result = CleanupResult(
        dataset=dataset,
        namespace=settings.namespace,
        run_id=run_id,
        dry_run=dry_run,
        status="nothing_stale",
        partitions=sorted(stale),
        reasons={p: info["reason"] for p, info in sorted(stale.items())},
        table=uri,
        version=table.version(),
    )
    if stale:
        predicate = pl.col(PARTITION).is_in(sorted(stale))
        result.rows_removed = (
            pl.scan_delta(table).filter(predicate).select(pl.len()).collect().item()
            if PARTITION in table.metadata().partition_columns
            else 0
        )
        if dry_run:
            result.status = "would_remove"
        else:
            now = datetime.now(UTC)
            new_state = {
                **state,
                "run_id": run_id,
                "at": now.isoformat(),
                "workflow": "cleanup",
                "touched_partitions": [],
                "stale_partitions": {},
                "marked_stale": [],
                "removed_partitions": sorted(stale),
            }
            committed = lake.delete_partitions(AGGREGATED, dataset, stale, state=new_state, base=table)
            sync_status(
                lake,
                dataset,
                stale={},
                present=table_partitions(committed),
                run_id=run_id,
                now=now,
                removed_reason=f"removed by cleanup run {run_id}",
            )
            result.status = "removed"
            result.version = committed.version()
    if vacuum_hours is not None:
        result.vacuumed = _vacuum(lake, AGGREGATED, dataset, vacuum_hours, dry_run)
    logger.info(
        "%s: %s %d stale partition(s), %d row(s)%s",
        dataset,
        "would remove" if dry_run else "removed",
        len(result.partitions),
        result.rows_removed,
        "" if result.partitions else " (nothing stale)",
    )
    result.duration_seconds = round(time.monotonic() - started, 3)
    listed = "\n".join(f"| {p} | {r} |" for p, r in result.reasons.items()) or "| (none) | |"
    publish_markdown(
        key=artifact_key(result.namespace, "cleanup", dataset),
        markdown=f"# cleanup {dataset} ({result.namespace}): {result.status}\n\n"
        f"{result.rows_removed} row(s)\n\n| partition | why it was stale |\n|---|---|\n{listed}\n",
        description=f"cleanup {dataset}",
    )
    return result
