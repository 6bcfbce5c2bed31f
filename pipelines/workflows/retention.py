"""Expire PII in the raw and quarantine zones after each dataset's ``retention_days`` (scheduled daily in serving).

For every dataset with ``retention_days`` (or the one named): raw files landed more than that many
days before ``as_of`` have their ``pii_columns`` pseudonymised (keyed hash), nulled, or the file's
content removed, as ``retention_action`` says; quarantine rows quarantined before the same day
expire by the same rule (:mod:`pipelines.lake.retention`). Files are rewritten under the same name,
so they are not landed or ingested again and reprocessing from raw reads every other column as it
arrived. ``dry_run`` reports what would change and writes nothing. See docs/lifecycle.md.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime

from prefect import get_run_logger
from pydantic import BaseModel, Field

from pipelines.components.environment import get_settings
from pipelines.components.errors import PipelinesError
from pipelines.components.registry import load_registry
from pipelines.components.runs import new_run_id
from pipelines.components.summary import artifact_key, publish_table
from pipelines.components.workflow import workflow
from pipelines.lake import Lake
from pipelines.lake.layout import CLEANED
from pipelines.lake.retention import Rule, cutoff, expire_quarantine, expire_raw, load_key


class DatasetRetention(BaseModel):
    """What retention did to one dataset (with dry_run: would do)."""

    dataset: str
    action: str = Field(description="pseudonymise, null or delete")
    columns: list[str] = Field(description="the PII columns")
    before: date = Field(
        description="raw files landed and quarantine rows quarantined before this day expire"
    )
    raw_expired: list[str] = Field(default=[], description="raw files rewritten (dry run: to rewrite)")
    raw_already: int = Field(default=0, description="raw files expired by earlier runs")
    raw_kept_partial: list[str] = Field(default=[], description="old files ingest stopped inside: next run")
    raw_unreadable: list[str] = Field(default=[], description="old files that could not be parsed: emptied")
    raw_bytes_before: int = Field(default=0, description="size of the expired raw files before")
    raw_bytes_after: int = Field(
        default=0, description="their size after (0 in a dry run, which reads nothing)"
    )
    quarantine_rows: int = Field(
        default=0, description="quarantine rows changed or deleted (dry run: would be)"
    )


class RetentionResult(BaseModel):
    """What one retention run did."""

    namespace: str
    run_id: str
    as_of: date
    dry_run: bool
    datasets: list[DatasetRetention] = []
    duration_seconds: float = 0.0


@workflow(name="retention")
def retention(
    dataset: str | None = None, as_of: date | None = None, dry_run: bool = False
) -> RetentionResult:
    """Pseudonymise, null or remove PII in raw files and quarantine rows older than retention_days."""
    started = time.monotonic()
    logger = get_run_logger()
    settings = get_settings()
    registry = load_registry(settings.registry_path)
    if dataset is not None and registry.get(dataset).retention_days is None:
        raise PipelinesError(
            f"Dataset {dataset!r} has no retention_days in the registry ({settings.registry_path}), so retention "
            "has nothing to expire. Set retention_days (and pii_columns, retention_action) on its row; see "
            "docs/lifecycle.md."
        )
    specs = [s for s in ([registry.get(dataset)] if dataset else registry) if s.retention_days]
    result = RetentionResult(
        namespace=settings.namespace,
        run_id=new_run_id(),
        as_of=as_of or datetime.now(UTC).date(),
        dry_run=dry_run,
    )
    hashing = [s.name for s in specs if (s.retention_action or "pseudonymise") == "pseudonymise"]
    key = load_key(hashing) if hashing else None
    lake = Lake.from_settings(settings)
    for spec in specs:
        rule = Rule.of(spec, key)
        before = cutoff(result.as_of, spec.retention_days)
        done = DatasetRetention(
            dataset=spec.name, action=rule.action, columns=list(rule.columns), before=before
        )
        if spec.stage == "cleaned":
            partial = (lake.state(CLEANED, spec.name) or {}).get("partial") or {}
            raw = expire_raw(lake.storage, spec, rule, before=before, partial=partial, dry_run=dry_run)
            done.raw_expired, done.raw_already = raw.expired, raw.already
            done.raw_kept_partial, done.raw_unreadable = raw.kept_partial, raw.unreadable
            done.raw_bytes_before, done.raw_bytes_after = raw.bytes_before, raw.bytes_after
        done.quarantine_rows = expire_quarantine(lake, rule, before=before, dry_run=dry_run)
        logger.info(
            "%s: %s %s in %d raw file(s) and %d quarantine row(s) from before %s%s",
            spec.name,
            rule.action,
            ", ".join(rule.columns) or "whole files",
            len(done.raw_expired),
            done.quarantine_rows,
            before,
            " (dry run)" if dry_run else "",
        )
        result.datasets.append(done)
    result.duration_seconds = round(time.monotonic() - started, 3)
    publish_table(
        key=artifact_key(settings.namespace, "retention"),
        table=[
            {
                "dataset": d.dataset,
                "action": d.action,
                "before": d.before.isoformat(),
                "raw files": len(d.raw_expired),
                "quarantine rows": d.quarantine_rows,
            }
            for d in result.datasets
        ],
        description=f"retention {settings.namespace} as of {result.as_of}{' (dry run)' if dry_run else ''}",
    )
    return result
