"""Ingest one registry dataset: landing -> raw (kept) -> cleaned Delta table, incremental and late-aware.

Two coarse tasks. ``_land`` copies what arrived (files, SQL extracts, API pages) unchanged
into ``raw/<dataset>/ingest_date=YYYY-MM-DD/<run_id>-<content_hash>.<ext>``, skipping
content it already holds. ``_clean_and_commit`` parses every raw file the cleaned table
has not committed yet, casts it to the contract, quarantines what fails with reasons,
collapses duplicate keys last-wins, and commits: a merge on the primary key (incremental)
or a replace (full). The watermark and the ledger of committed raw files travel in that
same Delta commit, so a crash anywhere leaves the table as it was and a rerun, on any
machine, continues from the raw zone.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, date, datetime
from typing import Any

import polars as pl
from deltalake import CommitProperties, DeltaTable, write_deltalake
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from pipelines.components import cleaning, quality
from pipelines.components.alerts import run_hooks
from pipelines.components.environment import Settings, get_settings
from pipelines.components.errors import PipelinesError
from pipelines.components.registry import DatasetSpec, load_registry
from pipelines.components.resources import STATE_KEY, Lake, Storage, quote_ident
from pipelines.components.results import RESULT_SERIALIZER
from pipelines.components.runs import new_run_id
from pipelines.components.summary import artifact_key

RAW, CLEANED, QUARANTINE, META = "raw", "cleaned", "quarantine", "_meta"
RUN_ID, INGESTED_AT = "_run_id", "_ingested_at"


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
    skipped_files: int = Field(default=0, description="arrivals whose content was already ingested")
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


# raw zone ------------------------------------------------------------------------------------


def _content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _raw_hash(rel: str) -> str | None:
    """The content hash in a raw file name <run_id>-<hash>.<ext>, or None for another name."""
    stem = rel.rsplit("/", 1)[-1].split(".", 1)[0]
    return stem.rsplit("-", 1)[1] if "-" in stem else None


def raw_index(storage: Storage, dataset: str) -> dict[str, str]:
    """content hash -> raw path, for every raw file of the dataset (oldest first)."""
    index: dict[str, str] = {}
    for rel in storage.glob(f"{RAW}/{dataset}/ingest_date=*/*"):
        digest = _raw_hash(rel)
        if digest:
            index.setdefault(digest, rel)
    return index


def _ext(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    return base.split(".", 1)[1].lower() if "." in base else "dat"


def _landing_storage(spec: DatasetSpec, settings: Settings) -> tuple[Storage, str]:
    """The storage to glob and the pattern: relative globs live under the landing URL."""
    source = spec.source
    if source.startswith("s3://") or source.startswith("/"):
        parts = source.split("/")
        cut = next((i for i, p in enumerate(parts) if any(ch in p for ch in "*?[")), len(parts) - 1)
        root, pattern = "/".join(parts[:cut]), "/".join(parts[cut:])
        return Storage.from_settings(root, settings), pattern
    return Storage.from_settings(settings.landing_url, settings), source


def _retry_transient(task, task_run, state) -> bool:
    """Prefect's retry_condition_fn: called as fn(task=..., task_run=..., state=...); retry transient errors only."""
    from pipelines.components.sources import is_transient

    try:
        state.result()
    except Exception as exc:
        return is_transient(exc)
    return False


@task(
    name="land",
    retries=3,
    retry_delay_seconds=[2, 8, 30],
    retry_jitter_factor=0.5,
    retry_condition_fn=_retry_transient,
)
def _land(
    spec: DatasetSpec, settings: Settings, storage: Storage, state: dict | None, run_id: str
) -> dict[str, Any]:
    """Copy new arrivals into the raw zone unchanged; returns the new raw paths and skipped count."""
    logger = get_run_logger()
    known = raw_index(storage, spec.name)
    today = datetime.now(UTC).date().isoformat()
    written: list[str] = []
    current: list[str] = []
    skipped = 0

    def keep(name: str, data: bytes) -> None:
        nonlocal skipped
        digest = _content_hash(data)
        if digest in known:
            skipped += 1
            if known[digest] not in current:
                current.append(known[digest])
            return
        rel = f"{RAW}/{spec.name}/ingest_date={today}/{run_id}-{digest}.{_ext(name)}"
        storage.write_atomic(rel, data)
        known[digest] = rel
        written.append(rel)
        current.append(rel)

    if spec.source_kind == "files":
        landing, pattern = _landing_storage(spec, settings)
        files = landing.glob(pattern)
        if not files:
            logger.warning("No files match %s under %s", pattern, landing.url)
        for name in files:
            keep(name, landing.read_bytes(name))
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
            keep(f"{arrival.name}.{arrival.ext}", arrival.data)
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
            keep(f"{arrival.name}.{arrival.ext}", arrival.data)
    logger.info("%s: %d new raw file(s), %d already ingested", spec.name, len(written), skipped)
    return {"written": written, "skipped": skipped, "current": current, "index": known}


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


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@task(name="clean and commit")
def _clean_and_commit(
    spec: DatasetSpec,
    lake: Lake,
    state: dict | None,
    run_id: str,
    full_refresh: bool,
    landed: dict[str, Any],
) -> IngestResult:
    logger = get_run_logger()
    storage = lake.storage
    namespace = storage.url.rstrip("/").rsplit("/", 1)[-1]
    committed: dict[str, str] = dict((state or {}).get("files", {}))
    table = lake.table(CLEANED, spec.name)
    index: dict[str, str] = landed["index"]
    current: list[str] = landed["current"]
    mode = "full_refresh" if full_refresh else ("incremental" if spec.incremental else "full")

    if spec.incremental:
        pending = (
            list(index.values()) if full_refresh else [r for d, r in index.items() if d not in committed]
        )
        # Files from earlier, interrupted runs first; this run's files in the order they landed.
        written = landed["written"]
        pending = sorted(p for p in pending if p not in set(written)) + [
            p for p in written if p in set(pending)
        ]
    else:
        # A full dataset's table is the snapshot the source shows now: every file it currently
        # offers, new or already seen. It is replaced only when that set differs from the last one.
        previous = list((state or {}).get("snapshot", []))
        pending = list(current) if current else previous
        if not full_refresh and sorted(pending) == sorted(previous):
            pending = []
    result = IngestResult(
        dataset=spec.name,
        namespace=namespace,
        run_id=run_id,
        mode=mode,
        status="completed",
        raw_files=landed["written"],
        watermark_before=(state or {}).get("watermark"),
        watermark_after=(state or {}).get("watermark"),
        cleaned_table=lake.uri(CLEANED, spec.name),
    )
    if not pending:
        result.status = "no_new_data"
        result.cleaned_version = table.version() if table is not None else None
        return result

    frames, rejects, rows_in = [], [], 0
    for number, rel in enumerate(pending):
        parsed = cleaning.parse_raw(
            storage.read_bytes(rel), rel, spec.format, spec.contract, source=rel, seq_base=number << 32
        )
        rows_in += parsed.rows_in
        if parsed.frame.width:
            frames.append(parsed.frame)
        if parsed.rejects.height:
            whole = parsed.rejects.filter(pl.col("source_line") == 0)
            if whole.height:
                result.rejected_files.append(rel)
                logger.warning("Rejected whole file: %s", whole.get_column("reason")[0])
            rejects.append(parsed.rejects)
    frame = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
    if not spec.incremental and result.rejected_files:
        whole = pl.concat(rejects, how="vertical_relaxed")
        _write_quarantine(lake, spec.name, whole, run_id, datetime.now(UTC), pending)
        raise PipelinesError(
            f"The new snapshot of {spec.name!r} has unreadable file(s): {', '.join(result.rejected_files)}. "
            "Its cleaned table was left as it was (a partial snapshot would replace good rows); the reasons "
            f"are in quarantine/{spec.name}. Fix the source or the contract's source section and run ingest again."
        )

    # schema policy, decided before anything is written
    extra = [c for c in frame.columns if c not in spec.contract.columns and c not in cleaning.LINEAGE]
    known_extra = set(table.schema().to_arrow().names) if table is not None else set()
    new_extra = [c for c in extra if c not in known_extra]
    if extra and spec.schema_policy == "freeze":
        raise SchemaFrozenError(
            f"Dataset {spec.name!r} has schema_policy=freeze, and {', '.join(pending)} brought column(s) "
            f"{', '.join(extra)} that its contract does not declare. Nothing was written; the raw files are "
            f"kept. Fix: add the column(s) to contracts/{spec.name}.yaml, or set schema_policy to evolve or "
            "discard_columns in the registry, then run ingest again."
        )
    if extra and spec.schema_policy == "discard_columns":
        frame = frame.drop(extra)
        result.schema_changes += [f"discarded column {c}" for c in extra]
    elif new_extra:
        result.schema_changes += [f"added column {c} (string)" for c in new_extra]

    if frame.width:
        cast = cleaning.cast_to_contract(frame, spec.contract, primary_key=spec.primary_key)
        good, bad = cast.good, cast.bad
    else:
        good, bad = pl.DataFrame(), cleaning.empty_quarantine()
    rows_bad = bad.height + sum(r.filter(pl.col("source_line") > 0).height for r in rejects)
    all_bad = pl.concat([bad, *rejects], how="vertical_relaxed") if rejects else bad

    good, collapsed = cleaning.collapse_duplicates(good, spec.primary_key, spec.incremental_field)
    now = datetime.now(UTC)
    # quality gate: the contract's expectations and the quality_policy decide what is promoted
    check = quality.check_batch(
        spec, good, lake=lake, now=now, contract_failures=rows_bad + len(result.rejected_files)
    )
    good = check.kept
    all_bad = pl.concat([all_bad, check.quarantine], how="vertical_relaxed")
    rows_bad += check.quarantine.height
    if good.width:
        partition_col = spec.contract.columns.get(spec.partition_field) if spec.partition_field else None
        good = good.with_columns(
            cleaning.partition_expr(partition_col, spec.partition_field),
            pl.lit(run_id).alias(RUN_ID),
            pl.lit(now).dt.replace_time_zone("UTC").alias(INGESTED_AT),
        ).drop(cleaning.SEQ, cleaning.SOURCE_LINE)

    # late rows and watermark
    watermark_before = (state or {}).get("watermark") if not full_refresh else None
    late = 0
    watermark_after = watermark_before
    inc = spec.incremental_field
    if inc and good.height:
        column = spec.contract.columns[inc]
        batch_max = good.get_column(inc).max()
        if watermark_before is not None:
            previous = _from_text(watermark_before, column.type)
            if isinstance(previous, datetime) and column.timezone and previous.tzinfo is None:
                previous = previous.replace(tzinfo=UTC)
            partition_col = spec.contract.columns.get(spec.partition_field) if spec.partition_field else None
            if partition_col is not None and partition_col.is_temporal and column.is_temporal:
                cutoff = previous.date().isoformat() if isinstance(previous, datetime) else str(previous)
                late = good.filter(pl.col(cleaning.PARTITION) < cutoff).height
            else:
                late = good.filter(pl.col(inc) < previous).height
            if batch_max is not None and batch_max > previous:
                watermark_after = _to_text(batch_max)
        else:
            watermark_after = _to_text(batch_max)

    touched = sorted(good.get_column(cleaning.PARTITION).unique().to_list()) if good.height else []
    files_after = {} if (full_refresh and spec.incremental) else committed
    for rel in pending:
        files_after[_raw_hash(rel)] = rel
    new_state = {
        "run_id": run_id,
        "at": now.isoformat(),
        "watermark": watermark_after,
        "files": files_after,
        "snapshot": pending if not spec.incremental else [],
        "touched_partitions": touched,
    }

    _write_quarantine(lake, spec.name, all_bad, run_id, now, pending)
    result.rows_in, result.quarantined, result.duplicates_collapsed = rows_in, rows_bad, collapsed
    _report_validation(lake, spec, check, result, now)
    committed_table = _commit_cleaned(
        lake, spec, table, good, new_state, overwrite=full_refresh or not spec.incremental
    )

    result.rows_in = rows_in
    result.written = good.height
    result.quarantined = rows_bad
    result.duplicates_collapsed = collapsed
    result.late_rows = late
    result.watermark_before = watermark_before
    result.watermark_after = watermark_after
    result.touched_partitions = touched
    result.processed_files = pending
    result.cleaned_version = committed_table.version()
    if result.rows_in != result.written + result.quarantined + result.duplicates_collapsed + result.held_back:
        raise PipelinesError(
            f"Row accounting failed for {spec.name}: {result.rows_in} in, {result.written} written, "
            f"{result.quarantined} quarantined, {result.duplicates_collapsed} collapsed. Nothing is lost "
            "(raw files are kept), but this is a bug: please report it with the raw files."
        )
    _record_meta(lake, spec, result, committed_table, now)
    return result


def _report_validation(
    lake: Lake, spec: DatasetSpec, check: quality.BatchCheck, result: IngestResult, now: datetime
) -> None:
    """Record the batch's validation (_meta/validations, a Prefect artifact); stop here if it failed."""
    result.validation_status = check.status
    result.expectations_evaluated = len(check.outcomes)
    result.quarantined_by_expectations = check.quarantine.height
    result.held_back = check.held_back
    result.validation_issues = check.issues
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
        create_markdown_artifact(
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


def _write_quarantine(
    lake: Lake, dataset: str, bad: pl.DataFrame, run_id: str, now: datetime, files: list[str]
) -> None:
    """Replace the quarantine rows of these raw files in one commit (a rerun writes no duplicates)."""
    uri = lake.write_uri(QUARANTINE, dataset)
    options = lake.storage.delta_options or None
    table = lake.table(QUARANTINE, dataset)
    if bad.height == 0:
        if table is not None and files:
            table.delete(f"source_file IN ({', '.join(_sql_str(f) for f in sorted(set(files)))})")
        return
    frame = bad.with_columns(
        pl.lit(dataset).alias("dataset"),
        pl.lit(run_id).alias("run_id"),
        pl.lit(now).dt.replace_time_zone("UTC").alias("quarantined_at"),
    )
    if table is None:
        write_deltalake(uri, frame.to_arrow(), mode="append", storage_options=options)
        return
    names = sorted(set(files) | set(frame.get_column("source_file").to_list()))
    predicate = f"source_file IN ({', '.join(_sql_str(f) for f in names)})"
    write_deltalake(uri, frame.to_arrow(), mode="overwrite", predicate=predicate, storage_options=options)


def _commit_cleaned(
    lake: Lake,
    spec: DatasetSpec,
    table: DeltaTable | None,
    good: pl.DataFrame,
    state: dict,
    *,
    overwrite: bool,
) -> DeltaTable:
    """One Delta commit carrying the rows and the state that describes them; returns the new table."""
    uri = lake.write_uri(CLEANED, spec.name)
    options = lake.storage.delta_options or None
    commit = CommitProperties(custom_metadata={STATE_KEY: json.dumps(state)})
    partition_by = [cleaning.PARTITION]
    if good.width == 0:
        if table is None:
            raise PipelinesError(
                f"Nothing readable arrived for {spec.name!r} and its cleaned table does not exist yet; "
                "see the quarantine table for why each file was rejected."
            )
        good = pl.from_arrow(table.schema().to_arrow().empty_table())
    arrow = good.to_arrow()
    if overwrite or table is None:
        write_deltalake(
            uri,
            arrow,
            mode="overwrite",
            partition_by=partition_by,
            schema_mode="overwrite",
            storage_options=options,
            commit_properties=commit,
        )
    elif good.height == 0:
        write_deltalake(
            uri, arrow, mode="append", storage_options=options, commit_properties=commit, schema_mode="merge"
        )
    else:
        keys = " AND ".join(f"t.{quote_ident(k)} = s.{quote_ident(k)}" for k in spec.primary_key)
        merger = table.merge(
            arrow,
            predicate=keys,
            source_alias="s",
            target_alias="t",
            merge_schema=True,  # extra columns were already rejected or dropped by the schema policy
            commit_properties=commit,
        )
        inc = spec.incremental_field
        if inc:
            # An older version of a row (by the incremental field) never overwrites a newer one.
            newer = f"t.{quote_ident(inc)} IS NULL OR (s.{quote_ident(inc)} IS NOT NULL AND s.{quote_ident(inc)} >= t.{quote_ident(inc)})"
            merger = merger.when_matched_update_all(predicate=newer)
        else:
            merger = merger.when_matched_update_all()
        merger.when_not_matched_insert_all().execute()
    return lake.table(CLEANED, spec.name)


def _record_meta(
    lake: Lake, spec: DatasetSpec, result: IngestResult, table: DeltaTable, now: datetime
) -> None:
    """Run history and schema versions under _meta (derived; the cleaned commit is the truth)."""
    lake.append(
        META,
        "runs",
        pl.DataFrame(
            [
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
                }
            ]
        ).with_columns(pl.col("finished_at").dt.replace_time_zone("UTC")),
    )
    history = lake.read(META, "schemas")
    previous = history.filter(pl.col("dataset") == spec.name).sort("version") if history.height else history
    columns = {name: str(dtype) for name, dtype in pl.scan_delta(table).collect_schema().items()}
    if previous.height and json.loads(previous.get_column("columns")[-1]) == columns:
        return
    version = int(previous.get_column("version").max()) + 1 if previous.height else 1
    change = "; ".join(result.schema_changes) or "initial schema from the contract"
    lake.append(
        META,
        "schemas",
        pl.DataFrame(
            [
                {
                    "dataset": spec.name,
                    "version": version,
                    "columns": json.dumps(columns),
                    "change": change,
                    "run_id": result.run_id,
                    "recorded_at": now,
                }
            ]
        ).with_columns(pl.col("recorded_at").dt.replace_time_zone("UTC")),
    )


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
        ("schema changes", "; ".join(result.schema_changes) or "none"),
        ("validation", f"{result.validation_status} ({result.expectations_evaluated} expectation(s))"),
        ("quarantined by expectations", result.quarantined_by_expectations),
        ("duration", f"{result.duration_seconds:.2f} s"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"# ingest {result.dataset} ({result.namespace})\n\n| | |\n|---|---|\n{table}\n\n`{result.cleaned_table}`\n"


@flow(name="ingest", persist_result=True, result_serializer=RESULT_SERIALIZER, **run_hooks())
def ingest(dataset: str, full_refresh: bool = False) -> IngestResult:
    """Ingest a registry dataset: landing -> raw (kept) -> cleaned Delta, incremental and late-aware."""
    started = time.monotonic()
    settings = get_settings()
    spec = load_registry(settings.registry_path).get(dataset)
    if spec.stage != "cleaned":
        raise PipelinesError(
            f"Dataset {dataset!r} is {spec.stage}; ingest builds cleaned datasets. Build it with the aggregate workflow."
        )
    storage = Storage.from_settings(settings.namespace_url, settings)
    lake = Lake(storage)
    state = lake.state(CLEANED, spec.name)
    run_id = new_run_id()
    landed = _land(spec, settings, storage, state, run_id)
    result = _clean_and_commit(spec, lake, state, run_id, full_refresh, landed)
    result.skipped_files = landed["skipped"]
    result.duration_seconds = round(time.monotonic() - started, 3)
    get_run_logger().info(
        "%s: %d in, %d written, %d quarantined, %d duplicates collapsed, %d late; watermark %s",
        dataset,
        result.rows_in,
        result.written,
        result.quarantined,
        result.duplicates_collapsed,
        result.late_rows,
        result.watermark_after,
    )
    create_markdown_artifact(
        key=artifact_key(settings.namespace, "ingest", dataset),
        markdown=_markdown(result),
        description=f"ingest {dataset}",
    )
    return result
