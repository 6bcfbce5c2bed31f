"""Ingest one registry dataset: landing -> raw (kept) -> cleaned Delta table, incremental and late-aware.

Two coarse tasks. ``_land`` copies what arrived (files, SQL extracts, API pages) unchanged into the
raw zone (:mod:`pipelines.lake.raw`: files already landed are known by the manifest, content by its
hash). ``_clean_and_commit`` streams the raw files the cleaned table has not committed yet in
bounded batches (:mod:`pipelines.components.batches`): each batch is parsed, cast to the contract,
quarantined with reasons, collapsed last-wins on the primary key, checked by the contract's
expectations and committed (a merge where an older row never overwrites a newer one) together with
the state it reaches: watermark, ledger of consumed raw files and how far into a file a batch got.
A first load (no table yet, or a full refresh) cleans every batch before its first commit and then
appends each batch's winners instead of merging (see ``_stream``). A crash leaves a consistent prefix
and the next run, on any machine, continues from there. A full
dataset's snapshot is replaced in one overwrite commit. A concurrent run's commit makes this run
re-plan from the new state (optimistic concurrency; see docs/ingestion.md); runs of one dataset take a slot
of its Prefect concurrency limit around clean-and-commit, so they rarely race (docs/backfill.md#limits).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import polars as pl
from prefect import get_run_logger, task
from pydantic import BaseModel, Field, PrivateAttr

from pipelines.components import batches, cleaning, limits, quality
from pipelines.components.environment import Settings, get_settings
from pipelines.components.errors import ConfigError, PipelinesError
from pipelines.components.errors import retry_transient as _retry_transient
from pipelines.components.registry import DatasetSpec, load_registry
from pipelines.components.resources import Storage
from pipelines.components.runs import new_run_id
from pipelines.components.summary import artifact_key, publish_markdown
from pipelines.components.workflow import as_is, workflow
from pipelines.lake import CommitConflict, Lake, ledger, quarantine
from pipelines.lake.layout import CLEANED, INGESTED_AT, PARTITION, RUN_ID, raw_hash
from pipelines.lake.raw import Landed, RawZone, list_files

_ATTEMPTS = 8


class SchemaFrozenError(PipelinesError):
    """A batch brought columns that a dataset with schema_policy=freeze does not accept."""


class IngestResult(BaseModel):
    """What one ingest run did. rows_in == written + quarantined + duplicates_collapsed, always."""

    dataset: str
    namespace: str
    run_id: str
    mode: str = Field(description="incremental, full or full_refresh")
    status: str = Field(description="completed, or no_new_data when nothing was pending")
    rows_in: int = 0
    written: int = 0
    quarantined: int = 0
    duplicates_collapsed: int = 0
    late_rows: int = 0
    watermark_before: str | None = None
    watermark_after: str | None = None
    touched_partitions: list[str] = []
    schema_changes: list[str] = []
    raw_files: list[str] = Field(default=[], description="raw files written by this run")
    processed_files: list[str] = Field(default=[], description="raw files committed by this run")
    skipped_files: int = Field(
        default=0, description="arrivals already in raw (same file by the landing manifest, or same content)"
    )
    batches: int = Field(default=0, description="batches committed by this run (each with its state)")
    conflicts: int = Field(
        default=0, description="commits lost to a concurrent run of the dataset, then re-planned"
    )
    rejected_files: list[str] = Field(default=[], description="raw files quarantined whole (unreadable)")
    cleaned_table: str = ""
    cleaned_version: int | None = None
    duration_seconds: float = 0.0
    validation_status: str = Field(
        default="not_run",
        description="not_run, passed, warned (promoted, but an expectation failed: its rows were quarantined "
        "or it is a warning) or failed (not promoted; raised as ValidationFailedError)",
    )
    expectations_evaluated: int = 0
    quarantined_by_expectations: int = Field(
        default=0, description="rows of `quarantined` that failed an error-severity row-level expectation"
    )
    held_back: int = Field(
        default=0,
        description="rows that passed but were not promoted because the batch was stopped (0 when completed)",
    )
    validation_issues: list[str] = Field(
        default=[], description="every check that did not pass and its action"
    )
    _committed: Any = PrivateAttr(
        default=None
    )  # a copy as of the last committed batch (not part of the result)


# landing --------------------------------------------------------------------------------------


def _landing_storage(spec: DatasetSpec, settings: Settings) -> tuple[Storage, str]:
    """The storage to glob and the pattern: absolute paths, file:// and s3:// URLs, or a glob under the landing URL."""
    source = spec.source
    if source.startswith("file://"):
        source = source.removeprefix("file://")
        if not source.startswith("/"):
            raise ConfigError(
                f"Dataset {spec.name!r} (registry row {spec.row}): source {spec.source!r} is a file:// URL "
                "without an absolute path. Write file:///absolute/path/*.csv (three slashes), or a glob "
                "relative to the landing zone."
            )
    if source.startswith("s3://") or source.startswith("/"):
        parts = source.split("/")
        cut = next((i for i, p in enumerate(parts) if any(ch in p for ch in "*?[")), len(parts) - 1)
        root, pattern = "/".join(parts[:cut]) or "/", "/".join(parts[cut:])
        return Storage.from_settings(root, settings), pattern
    return Storage.from_settings(settings.landing_url, settings), source


@task(
    name="land",
    retries=3,
    retry_delay_seconds=[2, 8, 30],
    retry_jitter_factor=0.5,
    retry_condition_fn=_retry_transient,
)
def _land(spec: DatasetSpec, settings: Settings, storage: Storage, state: dict | None, run_id: str) -> Landed:
    """Copy new arrivals into the raw zone unchanged; returns the raw paths written, seen and skipped."""
    logger = get_run_logger()
    zone = RawZone(storage, spec.name, run_id, datetime.now(UTC).date().isoformat())
    if spec.source_kind == "files":
        landing, pattern = _landing_storage(spec, settings)
        files = list_files(landing, pattern)
        if not files:
            first = state is None
            logger.warning(
                "%s: no file matches %r under %s%s",
                spec.name,
                pattern,
                landing.url,
                " (nothing has been ingested yet: check the registry's source column, "
                "PIPELINES_LANDING_URL for a relative glob, and that files have arrived)"
                if first
                else "",
            )
        for path, info in files:
            zone.keep_file(landing, path, info)
        zone.save_manifest()
    elif spec.source_kind == "sql":
        from pipelines.components.secrets import get_secret
        from pipelines.components.sources import query_sql

        options = spec.contract.source
        since = _since(spec, state)
        url = get_secret(str(options["connection"])).reveal()
        table = options.get("table") or spec.source.removeprefix("sql:") or None
        for arrival in query_sql(
            url,
            table=None if options.get("query") else table,
            query=options.get("query"),
            incremental_field=spec.incremental_field if spec.incremental else None,
            since=since,
        ):
            zone.keep(f"{arrival.name}.{arrival.ext}", [arrival.data])
    else:
        from pipelines.components.sources import fetch_http

        options = spec.contract.source
        since = _since(spec, state)
        for arrival in fetch_http(
            spec.source,
            params=options.get("params"),
            headers=options.get("headers"),
            pagination=options.get("pagination"),
            records_path=options.get("records_path"),
            since=str(since) if since is not None else None,
            since_param=options.get("since_param"),
            timeout=float(options.get("timeout", 30)),
        ):
            zone.keep(f"{arrival.name}.{arrival.ext}", [arrival.data])
    landed = zone.landed
    if landed.swept:
        logger.info("%s: removed %d staging file(s) left by interrupted runs", spec.name, landed.swept)
    logger.info("%s: %d new raw file(s), %d already landed", spec.name, len(landed.written), landed.skipped)
    return landed


def _since(spec: DatasetSpec, state: dict | None) -> Any:
    """The lower bound pushed down to a source: watermark minus lookback (None = everything)."""
    if not spec.incremental or not state or state.get("watermark") is None:
        return None
    column = spec.contract.columns[spec.incremental_field]
    value = _from_text(state["watermark"], column.type)
    if spec.lookback and isinstance(value, datetime | date):
        value = value - spec.lookback
    return value


# values <-> text -----------------------------------------------------------------------------


def _to_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _from_text(text: str, type_: str) -> Any:
    if type_ == "datetime":
        return datetime.fromisoformat(text)
    if type_ == "date":
        return date.fromisoformat(text)
    if type_.startswith("int"):
        return int(text)
    if type_.startswith(("float", "decimal")):
        return float(text)
    return text


# clean and commit ----------------------------------------------------------------------------


def _pending(
    spec: DatasetSpec, state: dict | None, landed: Landed, full_refresh: bool
) -> list[batches.Pending]:
    """The raw files an incremental run still has to ingest, oldest first, resuming a cut file."""
    committed: dict[str, str] = dict((state or {}).get("files", {}))
    partial: dict[str, dict] = dict((state or {}).get("partial", {})) if not full_refresh else {}
    rels = (
        list(landed.index.values())
        if full_refresh
        else [r for d, r in landed.index.items() if d not in committed]
    )
    ordered = sorted(rels)  # arrival order: see layout.raw_name
    out = []
    for number, rel in enumerate(ordered):
        resume = partial.get(rel) or {}
        out.append(batches.Pending(rel, number, int(resume.get("offset", 0)), int(resume.get("line", 2))))
    return out


def _finish(
    spec: DatasetSpec, good: pl.DataFrame, run_id: str, now: datetime, keep_seq: bool = False
) -> pl.DataFrame:
    """Add the lake's columns (partition, run id, ingested at) and drop the parse bookkeeping."""
    partition_col = spec.contract.columns.get(spec.partition_field) if spec.partition_field else None
    bookkeeping = [cleaning.SOURCE_LINE] if keep_seq else [cleaning.SEQ, cleaning.SOURCE_LINE]
    return good.with_columns(
        cleaning.partition_expr(partition_col, spec.partition_field),
        pl.lit(run_id).alias(RUN_ID),
        pl.lit(now).dt.replace_time_zone("UTC").alias(INGESTED_AT),
    ).drop(bookkeeping, strict=False)


def _schema_policy(
    spec: DatasetSpec, extra: list[str], table, files: list[str], result: IngestResult
) -> None:
    """Refuse (freeze) or record (evolve, discard_columns) columns the contract does not declare."""
    if not extra:
        return
    if spec.schema_policy == "freeze":
        raise SchemaFrozenError(
            f"Dataset {spec.name!r} has schema_policy=freeze, and {', '.join(files)} brought column(s) "
            f"{', '.join(extra)} that its contract does not declare. Nothing was written; the raw files are "
            f"kept. Fix: add the column(s) to contracts/{spec.name}.yaml, or set schema_policy to evolve or "
            "discard_columns in the registry, then run ingest again."
        )
    if spec.schema_policy == "discard_columns":
        change = [f"discarded column {c}" for c in extra]
    else:
        known = set(table.schema().to_arrow().names) if table is not None else set()
        change = [f"added column {c} (string)" for c in extra if c not in known]
    result.schema_changes += [c for c in change if c not in result.schema_changes]


def _late_and_watermark(spec: DatasetSpec, good: pl.DataFrame, before: str | None, current: str | None):
    """(late rows against the run's starting watermark, the watermark after this batch)."""
    inc = spec.incremental_field
    if not inc or not good.height:
        return 0, current
    column = spec.contract.columns[inc]
    batch_max = good.get_column(inc).max()
    late = 0
    if before is not None:
        previous = _from_text(before, column.type)
        if isinstance(previous, datetime) and column.timezone and previous.tzinfo is None:
            previous = previous.replace(tzinfo=UTC)
        partition_col = spec.contract.columns.get(spec.partition_field) if spec.partition_field else None
        if partition_col is not None and partition_col.is_temporal and column.is_temporal:
            cutoff = previous.date().isoformat() if isinstance(previous, datetime) else str(previous)
            late = good.filter(pl.col(PARTITION) < cutoff).height
        else:
            late = good.filter(pl.col(inc) < previous).height
    if batch_max is None:
        return late, current
    if current is None:
        return late, _to_text(batch_max)
    now_max = _from_text(current, column.type)
    if isinstance(now_max, datetime) and column.timezone and now_max.tzinfo is None:
        now_max = now_max.replace(tzinfo=UTC)
    return late, _to_text(batch_max) if batch_max > now_max else current


def _account(
    spec: DatasetSpec, result: IngestResult, rows_in: int, written: int, bad: int, collapsed: int, held: int
) -> None:
    result.rows_in += rows_in
    result.written += written
    result.quarantined += bad
    result.duplicates_collapsed += collapsed
    if rows_in != written + bad + collapsed + held:
        raise PipelinesError(
            f"Row accounting failed for {spec.name}: {rows_in} in, {written} written, {bad} quarantined, "
            f"{collapsed} collapsed in one batch. Nothing is lost (raw files are kept), but this is a bug: "
            "please report it with the raw files."
        )


def _batch(
    spec: DatasetSpec,
    lake: Lake,
    units: list[batches.Unit],
    table,
    result: IngestResult,
    run_id: str,
    now: datetime,
    keep_seq: bool = False,
):
    """Clean one batch and run its checks; returns (rows to commit, quarantine rows, counts)."""
    spec.contract.check_expectations()  # the first batch checks them against GX, before anything is parsed
    cleaned = batches.clean(spec, ((u.rel, batches.parse_unit(u, spec)) for u in units))
    files = sorted({u.rel for u in units})
    _schema_policy(spec, cleaned.extra, table, files, result)
    for rel, reason in zip(cleaned.rejected_files, cleaned.rejections, strict=True):
        if spec.pii_columns:  # a parser's message can quote the file's content
            reason = f"see quarantine/{spec.name} (not logged: the dataset has PII columns)"
        get_run_logger().warning("Rejected whole file %s: %s", rel, reason)
        if rel not in result.rejected_files:
            result.rejected_files.append(rel)
    check = quality.check_batch(
        spec,
        cleaned.good,
        lake=lake,
        now=now,
        contract_failures=cleaned.rows_bad + len(cleaned.rejected_files),
    )
    bad = pl.concat([cleaned.bad, check.quarantine], how="vertical_relaxed")
    rows_bad = cleaned.rows_bad + check.quarantine.height
    return _finish(spec, check.kept, run_id, now, keep_seq), bad, cleaned, check, rows_bad


@dataclass
class _Ready:
    """A cleaned batch whose rows wait for their commit: the state it reaches and its counts."""

    units: list[batches.Unit]  # without their bytes
    now: datetime
    watermark: str | None
    late: int
    rows_in: int
    rows_bad: int


def _stream(
    spec: DatasetSpec,
    lake: Lake,
    table,
    state: dict | None,
    run_id: str,
    full_refresh: bool,
    landed: Landed,
    batch_bytes: int,
    result: IngestResult,
) -> None:
    """Incremental: commit the pending raw files batch by batch, each with the state it reaches.

    A first load (no table yet, or a full refresh) cleans every batch first and then commits each
    batch's winners as a plain append; later runs merge each batch into the table.
    """
    pending = _pending(spec, state, landed, full_refresh)
    if not pending:
        return
    consumed = _Ledger(
        files={} if full_refresh else dict((state or {}).get("files", {})),
        partial={} if full_refresh else dict((state or {}).get("partial", {})),
    )
    watermark = None if full_refresh else (state or {}).get("watermark")
    # the next batch's raw bytes are read while this one is cleaned and committed
    stream = batches.ReadAhead(
        batches.batches(batches.units(lake.storage, spec, pending, batch_bytes), batch_bytes)
    )
    first_load = table is None or full_refresh
    if not first_load:
        with stream:
            for units in stream:
                ready, good = _prepare(spec, lake, units, table, result, run_id, watermark)
                del units
                watermark = ready.watermark
                good = good.drop(cleaning.SEQ) if good.width else lake.empty_like(table)
                table = _commit(spec, lake, table, ready, good, consumed, result, merge=True)
        return
    with batches.Staged(spec.primary_key, spec.incremental_field) as staged:
        held: list[_Ready] = []
        try:
            with stream:
                for units in stream:
                    staged.spill()  # the previous batch's rows go to disk while this one is cleaned
                    ready, good = _prepare(spec, lake, units, table, result, run_id, watermark)
                    del units
                    watermark = ready.watermark
                    # one contiguous batch, as the writer takes it (see Lake): made now, while memory is
                    # lower than when the batch is filtered and written
                    staged.add(good.rechunk())
                    held.append(ready)
                    del good
        except Exception:
            # A batch that stops the run (validation, schema policy) leaves the ones before it committed;
            # a batch that could not be staged leaves nothing committed.
            if not staged.broken:
                _append_winners(spec, lake, table, staged, held, consumed, result)
            raise
        _append_winners(spec, lake, table, staged, held, consumed, result)


def _append_winners(
    spec: DatasetSpec,
    lake: Lake,
    table,
    staged: batches.Staged,
    held: list[_Ready],
    consumed: _Ledger,
    result: IngestResult,
) -> None:
    """Commit a first load's cleaned batches in order, each with only the rows no other batch supersedes."""
    if not held:
        return
    losers = staged.superseded()
    for ready, good in zip(held, staged.frames(), strict=True):
        winners = good.filter(~pl.col(cleaning.SEQ).is_in(losers.implode())) if losers.len() else good
        dropped = good.height - winners.height
        del good  # while this batch is written the next one is read back: hold one copy of each
        result.written -= dropped  # superseded by a row of another batch of this run
        result.duplicates_collapsed += dropped
        table = _commit(spec, lake, table, ready, winners.drop(cleaning.SEQ), consumed, result, merge=False)
        del winners


@dataclass
class _Ledger:
    """The raw files the table has consumed so far: wholly (by hash), or up to an offset."""

    files: dict[str, str]
    partial: dict[str, dict]

    def consume(self, units: list[batches.Unit]) -> None:
        for unit in units:
            if unit.done:
                self.files[raw_hash(unit.rel)] = unit.rel
                self.partial.pop(unit.rel, None)
            else:
                self.partial[unit.rel] = unit.resume


def _prepare(
    spec: DatasetSpec,
    lake: Lake,
    units: list[batches.Unit],
    table,
    result: IngestResult,
    run_id: str,
    watermark: str | None,
) -> tuple[_Ready, pl.DataFrame]:
    """Clean and check one batch, record its quarantine rows and validation; returns its rows to commit."""
    now = datetime.now(UTC)
    good, bad, cleaned, check, rows_bad = _batch(spec, lake, units, table, result, run_id, now, keep_seq=True)
    late, watermark = _late_and_watermark(spec, good, result.watermark_before, watermark)
    quarantine.replace(lake, spec.name, bad, run_id, now, [u.span for u in units])
    _account(spec, result, cleaned.rows_in, good.height, rows_bad, cleaned.collapsed, check.held_back)
    _report_validation(lake, spec, check, result, now)
    if table is None and good.height == 0 and not good.width:
        raise PipelinesError(f"{spec.name}: a batch produced no columns; this is a bug, please report it.")
    ready = _Ready([u.consumed() for u in units], now, watermark, late, cleaned.rows_in, rows_bad)
    return ready, good


def _commit(
    spec: DatasetSpec,
    lake: Lake,
    table,
    ready: _Ready,
    good: pl.DataFrame,
    consumed: _Ledger,
    result: IngestResult,
    *,
    merge: bool,
):
    """Commit one batch's rows with the state it reaches (watermark, consumed raw files) in one commit."""
    consumed.consume(ready.units)
    touched = sorted(good.get_column(PARTITION).unique().to_list()) if good.height else []
    new_state = {
        "run_id": result.run_id,
        "at": ready.now.isoformat(),
        "watermark": ready.watermark,
        "files": consumed.files,
        "partial": consumed.partial,
        "snapshot": [],
        "touched_partitions": touched,
    }
    if table is None or (not merge and result.batches == 0):
        table = lake.overwrite(
            CLEANED, spec.name, good, state=new_state, base=table, partition_by=[PARTITION]
        )
    elif merge:
        table = lake.merge(
            CLEANED,
            spec.name,
            good,
            key=spec.primary_key,
            newer_field=spec.incremental_field,
            state=new_state,
            base=table,
        )
    else:
        table = lake.append(CLEANED, spec.name, good, state=new_state, base=table)
    result.batches += 1
    result.late_rows += ready.late
    result.watermark_after = ready.watermark
    result.touched_partitions = sorted(set(result.touched_partitions) | set(touched))
    result.processed_files += [u.rel for u in ready.units if u.done and u.rel not in result.processed_files]
    result.cleaned_version = table.version()
    result._committed = None
    result._committed = result.model_copy(deep=True)  # what a re-plan after a lost commit starts from
    get_run_logger().info(
        "%s: batch %d committed (version %d): %d in, %d written, %d quarantined",
        spec.name,
        result.batches,
        result.cleaned_version,
        ready.rows_in,
        good.height,
        ready.rows_bad,
    )
    return table


def _snapshot(
    spec: DatasetSpec,
    lake: Lake,
    table,
    state: dict | None,
    run_id: str,
    full_refresh: bool,
    landed: Landed,
    batch_bytes: int,
    result: IngestResult,
) -> None:
    """Full: the table becomes the snapshot the source shows now, replaced in one commit when it changed."""
    previous = list((state or {}).get("snapshot", []))
    pending = list(landed.current) if landed.current else previous
    if not full_refresh and sorted(pending) == sorted(previous):
        return
    now = datetime.now(UTC)
    units = list(
        batches.units(lake.storage, spec, [batches.Pending(r, n) for n, r in enumerate(pending)], batch_bytes)
    )
    good, bad, cleaned, check, rows_bad = _batch(spec, lake, units, table, result, run_id, now)
    spans = [u.span for u in units]
    if result.rejected_files:
        quarantine.replace(lake, spec.name, bad, run_id, now, spans)
        raise PipelinesError(
            f"The new snapshot of {spec.name!r} has unreadable file(s): {', '.join(result.rejected_files)}. "
            "Its cleaned table was left as it was (a partial snapshot would replace good rows); the reasons "
            f"are in quarantine/{spec.name}. Fix the source or the contract's source section and run ingest again."
        )
    _, watermark = _late_and_watermark(spec, good, None, None)
    touched = sorted(good.get_column(PARTITION).unique().to_list()) if good.height else []
    new_state = {
        "run_id": run_id,
        "at": now.isoformat(),
        "watermark": watermark,
        "files": {raw_hash(r): r for r in pending},
        "partial": {},
        "snapshot": pending,
        "touched_partitions": touched,
    }
    quarantine.replace(lake, spec.name, bad, run_id, now, spans)
    _account(spec, result, cleaned.rows_in, good.height, rows_bad, cleaned.collapsed, check.held_back)
    _report_validation(lake, spec, check, result, now)
    table = lake.overwrite(CLEANED, spec.name, good, state=new_state, base=table, partition_by=[PARTITION])
    result.batches = 1
    result.watermark_after = watermark
    result.touched_partitions = touched
    result.processed_files = pending
    result.cleaned_version = table.version()


def _new_result(
    spec: DatasetSpec, lake: Lake, run_id: str, full_refresh: bool, landed: Landed
) -> IngestResult:
    mode = "full_refresh" if full_refresh else ("incremental" if spec.incremental else "full")
    return IngestResult(
        dataset=spec.name,
        namespace=lake.namespace,
        run_id=run_id,
        mode=mode,
        status="completed",
        raw_files=landed.written,
        cleaned_table=lake.uri(CLEANED, spec.name),
    )


def _up_to_date(spec: DatasetSpec, state: dict | None, landed: Landed, full_refresh: bool) -> bool:
    """Whether the committed state (as read before landing) already holds everything landed."""
    if full_refresh or state is None:
        return False
    if spec.incremental:
        return not _pending(spec, state, landed, full_refresh)
    previous = sorted(state.get("snapshot", []))
    return sorted(landed.current or previous) == previous


def _no_new_data(
    spec: DatasetSpec, lake: Lake, run_id: str, landed: Landed, state: dict, version: int
) -> IngestResult:
    """The result of a run that found nothing to clean or commit: no slot, no task, no commit."""
    result = _new_result(spec, lake, run_id, False, landed)
    result.status = "no_new_data"
    result.watermark_before = result.watermark_after = state.get("watermark")
    result.cleaned_version = version
    return result


@task(name="clean and commit")
def _clean_and_commit(
    spec: DatasetSpec, lake: Lake, run_id: str, full_refresh: bool, landed: Landed, batch_bytes: int
) -> IngestResult:
    logger = get_run_logger()
    result = _new_result(spec, lake, run_id, full_refresh, landed)
    for attempt in range(1, _ATTEMPTS + 1):
        table = lake.table(CLEANED, spec.name)
        state = lake.state(CLEANED, spec.name, table=table)
        if attempt == 1:
            schema_before = table.schema().to_arrow() if table is not None else None
            result.watermark_before = None if full_refresh else (state or {}).get("watermark")
            result.watermark_after = result.watermark_before
            result._committed = result.model_copy(deep=True)
        # after a full refresh's first commit, the rest continues like an incremental run
        refresh = full_refresh and result.batches == 0
        try:
            (_stream if spec.incremental else _snapshot)(
                spec, lake, table, state, run_id, refresh, landed, batch_bytes, result
            )
            break
        except CommitConflict as exc:
            # Batches counted but not committed are counted again when the re-plan processes them.
            committed, conflicts = result._committed, result.conflicts
            for name in IngestResult.model_fields:
                setattr(result, name, getattr(committed, name))
            result._committed = committed
            result.conflicts = conflicts + 1
            if attempt == _ATTEMPTS:
                raise PipelinesError(
                    f"{spec.name}: {_ATTEMPTS} commits in a row lost to concurrent runs of this dataset. "
                    f"{result.batches} batch(es) of this run are committed and nothing is half-written; "
                    f"run `pipelines ingest {spec.name}` again when the other runs have finished."
                ) from None
            logger.warning(
                "%s: %s Waiting for it: re-planning from the committed state (attempt %d of %d).",
                spec.name,
                exc,
                attempt + 1,
                _ATTEMPTS,
            )
            time.sleep(min(5.0, 0.2 * attempt))
    if result.batches == 0:
        result.status = "no_new_data"
        table = lake.table(CLEANED, spec.name)
        result.cleaned_version = table.version() if table is not None else None
    else:
        _record_meta(lake, spec, result, datetime.now(UTC), schema_before)
    return result


def _report_validation(
    lake: Lake, spec: DatasetSpec, check: quality.BatchCheck, result: IngestResult, now: datetime
) -> None:
    """Record the batch's validation (_meta/validations, a Prefect artifact); stop here if it failed."""
    order = ("not_run", "passed", "warned", "failed")
    if order.index(check.status) >= order.index(result.validation_status):
        result.validation_status = check.status
    result.expectations_evaluated = max(result.expectations_evaluated, len(check.outcomes))
    result.quarantined_by_expectations += check.quarantine.height
    result.held_back += check.held_back
    result.validation_issues += [i for i in check.issues if i not in result.validation_issues]
    for issue in check.issues:
        get_run_logger().warning("%s: %s", spec.name, issue)
    if check.outcomes:
        quality.record(
            lake,
            quality.records(
                check.outcomes,
                run_id=result.run_id,
                workflow="ingest",
                dataset=spec.name,
                scope="batch",
                partition=None,
                validated_at=now,
            ),
        )
    key = artifact_key(result.namespace, "validation", spec.name)
    if check.outcomes or check.stopped:
        publish_markdown(
            key=key,
            markdown=quality.report_markdown(
                f"validation of {spec.name}: ingest batch of run {result.run_id}",
                check.status,
                check.outcomes,
                notes=[*check.stopped, f"{result.rows_in} row(s) in, {result.quarantined} quarantined"],
            ),
            description=f"expectations of {spec.name} on the ingest batch",
        )
    if check.stopped:
        lines = "\n".join(f"  - {reason}" for reason in check.stopped)
        raise quality.ValidationFailedError(
            f"{spec.name!r} was not promoted: checks with severity error failed on this batch:\n{lines}\n"
            f"Nothing was written to cleaned/{spec.name}. Failing rows are in quarantine/{spec.name}; every "
            f"result is in _meta/validations (run {result.run_id}) and the Prefect artifact {key}. The batch's "
            "raw files stay pending and are checked again, with anything that arrives next, on every run until "
            f"it passes. To promote it, change the expectation or give it severity: warn in contracts/{spec.name}.yaml "
            "(or change the dataset's quality_policy in the registry), then run ingest again.",
            result=result,
        )


def _record_meta(lake: Lake, spec: DatasetSpec, result: IngestResult, now: datetime, schema_before) -> None:
    """Run history and schema versions under _meta (derived; the cleaned commits are the truth).

    The schema history is only consulted when the table is new or its schema changed in this run.
    """
    ledger.record_run(
        lake,
        {
            "run_id": result.run_id,
            "dataset": spec.name,
            "workflow": "ingest",
            "mode": result.mode,
            "finished_at": now,
            "rows_in": result.rows_in,
            "written": result.written,
            "quarantined": result.quarantined,
            "duplicates_collapsed": result.duplicates_collapsed,
            "late_rows": result.late_rows,
            "watermark_before": result.watermark_before,
            "watermark_after": result.watermark_after,
            "touched_partitions": json.dumps(result.touched_partitions),
            "processed_files": json.dumps(result.processed_files),
            "cleaned_version": result.cleaned_version,
        },
    )
    table = lake.table(CLEANED, spec.name)
    if schema_before is not None and table.schema().to_arrow() == schema_before:
        return
    change = "; ".join(result.schema_changes) or "initial schema from the contract"
    ledger.record_schema(lake, spec.name, table, change=change, run_id=result.run_id, now=now)


def _markdown(result: IngestResult) -> str:
    rows = [
        ("mode", result.mode),
        ("status", result.status),
        ("rows in", result.rows_in),
        ("written", result.written),
        ("quarantined", result.quarantined),
        ("duplicates collapsed", result.duplicates_collapsed),
        ("late rows", result.late_rows),
        ("watermark", f"{result.watermark_before} → {result.watermark_after}"),
        ("touched partitions", len(result.touched_partitions)),
        ("raw files written / skipped", f"{len(result.raw_files)} / {result.skipped_files}"),
        ("rejected files", len(result.rejected_files)),
        ("batches committed", result.batches),
        ("concurrent commits re-planned", result.conflicts),
        ("schema changes", "; ".join(result.schema_changes) or "none"),
        ("validation", f"{result.validation_status} ({result.expectations_evaluated} expectation(s))"),
        ("quarantined by expectations", result.quarantined_by_expectations),
        ("duration", f"{result.duration_seconds:.2f} s"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"# ingest {result.dataset} ({result.namespace})\n\n| | |\n|---|---|\n{table}\n\n`{result.cleaned_table}`\n"


@workflow(name="ingest")
def ingest(
    dataset: str, full_refresh: bool = False, batch_bytes: int = batches.DEFAULT_BATCH_BYTES
) -> IngestResult:
    """Ingest a registry dataset: landing -> raw (kept) -> cleaned Delta, incremental and late-aware.

    ``batch_bytes`` bounds how much raw input one batch (one commit) holds; a larger CSV file is
    read in record-aligned chunks of that size.
    """
    return _ingest(dataset, full_refresh, batch_bytes, as_is(_land), as_is(_clean_and_commit), artifact=True)


def ingest_in_task(
    dataset: str, full_refresh: bool = False, batch_bytes: int = batches.DEFAULT_BATCH_BYTES
) -> IngestResult:
    """The ingest flow's work inside a caller's task (a cookbook's one task per dataset): same steps and
    commits, no flow or task runs of its own, and no run artifact (the cookbook publishes one summary)."""
    return _ingest(dataset, full_refresh, batch_bytes, _land.fn, _clean_and_commit.fn, artifact=False)


def _ingest(
    dataset: str, full_refresh: bool, batch_bytes: int, land, clean_and_commit, *, artifact: bool
) -> IngestResult:
    started = time.monotonic()
    if batch_bytes < 1:
        raise ConfigError(f"batch_bytes must be a positive number of bytes, got {batch_bytes}.")
    settings = get_settings()
    spec = load_registry(settings.registry_path).get(dataset)
    if spec.stage != "cleaned":
        raise PipelinesError(
            f"Dataset {dataset!r} is {spec.stage}; ingest builds cleaned datasets. Build it with the aggregate workflow."
        )
    storage = Storage.from_settings(settings.namespace_url, settings)
    lake = Lake(storage)
    table = lake.table(CLEANED, spec.name)
    state = lake.state(CLEANED, spec.name, table=table)
    run_id = new_run_id()
    landed = land(spec, settings, storage, state, run_id)
    if _up_to_date(spec, state, landed, full_refresh):
        # nothing arrived that the table does not hold: a no-new-data run costs the landing check only
        result = _no_new_data(spec, lake, run_id, landed, state, table.version())
    else:
        # a slot of the namespace's and the dataset's Prefect concurrency limits (docs/backfill.md#limits):
        # runs of one dataset clean and commit one at a time
        with limits.slot(settings.namespace, spec.name, settings=settings):
            result = clean_and_commit(spec, lake, run_id, full_refresh, landed, batch_bytes)
    result.skipped_files = landed.skipped
    result.duration_seconds = round(time.monotonic() - started, 3)
    get_run_logger().info(
        "%s: %d in, %d written, %d quarantined, %d duplicates collapsed, %d late in %d batch(es); watermark %s",
        dataset,
        result.rows_in,
        result.written,
        result.quarantined,
        result.duplicates_collapsed,
        result.late_rows,
        result.batches,
        result.watermark_after,
    )
    if artifact:
        publish_markdown(
            key=artifact_key(settings.namespace, "ingest", dataset),
            markdown=_markdown(result),
            description=f"ingest {dataset}",
        )
    return result
