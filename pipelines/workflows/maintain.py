"""Keep a namespace's lake small and its commit log bounded (scheduled daily in serving; on demand).

For every table of the selected datasets (their cleaned or aggregated table and their quarantine,
and the ``_meta`` tables when no dataset is named): compaction, vacuum with the namespace's window
(``PIPELINES_VACUUM_RETENTION_HOURS``), and a checkpointed, cleaned-up log
(:mod:`pipelines.lake.maintenance`). With ``PIPELINES_LANDING_EXPIRY_DAYS`` set, landing files
copied to raw that many days before ``as_of`` are deleted. ``dry_run`` reports and changes nothing.
See docs/lifecycle.md.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta

from prefect import get_run_logger
from pydantic import BaseModel, Field

from pipelines.components.environment import get_settings
from pipelines.components.registry import load_registry
from pipelines.components.resources import Storage
from pipelines.components.runs import new_run_id
from pipelines.components.summary import artifact_key, publish_table
from pipelines.components.workflow import workflow
from pipelines.lake import Lake
from pipelines.lake.layout import AGGREGATED, CLEANED, META, QUARANTINE
from pipelines.lake.maintenance import expire_landing, maintain_table


class TableMaintained(BaseModel):
    """One table before and after (dry run: after == before, with what would change)."""

    table: str
    files_before: int
    files_after: int
    bytes_before: int
    bytes_after: int
    compacted: int = Field(
        description="files rewritten by compaction (dry run: in partitions holding several)"
    )
    vacuumed: int = Field(description="files deleted by vacuum (dry run: that would be)")
    log_entries_before: int
    log_entries_after: int
    checkpoint: int | None = Field(default=None, description="the version checkpointed")


class MaintainResult(BaseModel):
    """What one maintain run did (or, with dry_run, would do)."""

    namespace: str
    run_id: str
    dry_run: bool
    as_of: date
    retention_hours: int = Field(description="the vacuum window (PIPELINES_VACUUM_RETENTION_HOURS)")
    tables: list[TableMaintained] = []
    landing_expiry_days: int | None = None
    landing_removed: list[str] = Field(default=[], description="landing files deleted (dry run: to delete)")
    landing_kept: int = Field(
        default=0, description="old landing files kept: changed since, or outside landing"
    )
    duration_seconds: float = 0.0


def _meta_tables(lake: Lake) -> list[str]:
    found = lake.storage.glob(f"{META}/*/_delta_log/*.json")
    return sorted({rel.split("/")[1] for rel in found})


@workflow(name="maintain")
def maintain(dataset: str | None = None, dry_run: bool = False, as_of: date | None = None) -> MaintainResult:
    """Compact and vacuum the namespace's Delta tables, bound their logs, expire landed landing files."""
    started = time.monotonic()
    logger = get_run_logger()
    settings = get_settings()
    registry = load_registry(settings.registry_path)
    specs = [registry.get(dataset)] if dataset else list(registry)
    lake = Lake.from_settings(settings)
    result = MaintainResult(
        namespace=settings.namespace,
        run_id=new_run_id(),
        dry_run=dry_run,
        as_of=as_of or datetime.now(UTC).date(),
        retention_hours=settings.vacuum_retention_hours,
        landing_expiry_days=settings.landing_expiry_days,
    )
    tables = [(CLEANED if s.stage == "cleaned" else AGGREGATED, s.name) for s in specs]
    tables += [(QUARANTINE, s.name) for s in specs]
    tables += [] if dataset else [(META, name) for name in _meta_tables(lake)]
    for zone, name in tables:
        report = maintain_table(
            lake, zone, name, retention_hours=result.retention_hours, run_id=result.run_id, dry_run=dry_run
        )
        if report is None:
            continue
        result.tables.append(TableMaintained(**vars(report)))
        logger.info(
            "%s: %d -> %d file(s), %d -> %d bytes; compacted %d, vacuumed %d%s",
            report.table,
            report.files_before,
            report.files_after,
            report.bytes_before,
            report.bytes_after,
            report.compacted,
            report.vacuumed,
            " (dry run)" if dry_run else "",
        )
    if settings.landing_expiry_days:
        landing = Storage.from_settings(settings.landing_url, settings)
        before = result.as_of - timedelta(days=settings.landing_expiry_days)
        for spec in specs:
            if spec.stage == "cleaned" and spec.source_kind == "files":
                removed, kept = expire_landing(
                    landing, lake.storage, spec.name, before=before, dry_run=dry_run
                )
                result.landing_removed += removed
                result.landing_kept += kept
        logger.info(
            "landing: %s %d file(s) landed before %s; kept %d",
            "would delete" if dry_run else "deleted",
            len(result.landing_removed),
            before,
            result.landing_kept,
        )
    result.duration_seconds = round(time.monotonic() - started, 3)
    publish_table(
        key=artifact_key(settings.namespace, "maintain"),
        table=[t.model_dump() for t in result.tables],
        description=f"maintain {settings.namespace}{' (dry run)' if dry_run else ''}: {len(result.tables)} table(s)",
    )
    return result
