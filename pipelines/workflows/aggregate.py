"""Build one aggregated dataset: its registry transform over its upstream tables -> aggregated/<dataset>.

Two coarse tasks. ``_plan`` reads the output's committed state (the upstream Delta versions the
last build used) and each input's commit history since then, and decides: ``up_to_date`` (nothing
changed), ``incremental`` (recompute the partitions ingestion or an upstream build touched, plus
those that disappeared upstream) or ``full``. ``_build_and_commit`` reads the inputs at the pinned
versions, runs the pure polars transform, checks its rows against the dataset's contract and
commits them with the new state in one Delta commit: a partition replace (replace-where on
``_partition``) or a whole-table overwrite. A partition that can no longer be produced keeps its
rows and is marked stale; ``cleanup`` removes stale partitions on request.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import polars as pl
from prefect import get_run_logger, task
from pydantic import BaseModel, Field

from pipelines.components.environment import get_settings
from pipelines.components.errors import PipelinesError, did_you_mean
from pipelines.components.partitions import sync_status
from pipelines.components.registry import DatasetSpec, Registry, load_registry
from pipelines.components.resources import Storage
from pipelines.components.runs import new_run_id
from pipelines.components.summary import artifact_key, publish_markdown
from pipelines.components.workflow import as_is, workflow
from pipelines.lake import CommitConflict, Lake, ledger
from pipelines.lake.layout import AGGREGATED, CLEANED, INGESTED_AT, PARTITION, RUN_ID, SOURCE_FILE
from pipelines.lake.state import changes_data, commit_state, commits_since, state_at, table_partitions

# Bookkeeping columns of upstream tables that transforms do not see (``_partition`` they do).
HIDDEN_INPUT_COLUMNS = (SOURCE_FILE, RUN_ID, INGESTED_AT)
_ATTEMPTS = 5
# Partitions an incremental build recomputes per transform call; the batches run in parallel (polars).
PARTITION_BATCH = 31


class InputNotReadyError(PipelinesError):
    """An upstream dataset of an aggregated dataset has no table yet."""


class TransformError(PipelinesError):
    """A transform could not be loaded, failed, or returned rows that break its dataset's contract."""


class AggregateResult(BaseModel):
    """What one aggregate run did."""

    dataset: str
    namespace: str
    run_id: str
    status: str = Field(description="built, or up_to_date when no input changed since the last build")
    mode: str = Field(description="incremental (touched partitions only) or full")
    reason: str = Field(default="", description="why this mode was chosen")
    transform: str = ""
    rows_written: int = 0
    partitions_recomputed: list[str] = Field(
        default=[], description="partitions whose rows this run replaced ('all' for an unpartitioned table)"
    )
    partitions_marked_stale: list[str] = Field(default=[], description="partitions this run marked stale")
    stale_partitions: list[str] = Field(default=[], description="every partition stale after this run")
    inputs: dict[str, int] = Field(default={}, description="upstream dataset -> Delta version used")
    table: str = ""
    version: int | None = None
    duration_seconds: float = 0.0


class _Input(BaseModel):
    """One upstream table as this run uses it."""

    name: str
    zone: str
    version: int
    same_key: bool = Field(description="partitioned like the output: filtered to the recomputed partitions")
    partitions: list[str] | None = Field(
        description="its partitions (stale ones excluded); None if unpartitioned"
    )
    stale: list[str] = []
    touched: list[str] = []
    disappeared: list[str] = []
    changed: bool = False
    full_reason: str | None = None


class _Plan(BaseModel):
    mode: str  # up_to_date | incremental | full
    reason: str
    definition: str
    inputs: list[_Input]
    affected: list[str] = []
    previous: dict[str, Any] | None = None
    output_version: int | None = Field(default=None, description="the output's version this plan read")


# transform -----------------------------------------------------------------------------------


def _load_transform(spec: DatasetSpec) -> tuple[Callable[..., Any], str]:
    """The transform function and a hash of its module's source (a code change means a full rebuild)."""
    module_name, _, function_name = (spec.transform or "").partition(":")
    where = f"dataset {spec.name!r} (registry row {spec.row})"
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise TransformError(
            f"The transform {spec.transform!r} of {where} cannot be imported: {type(exc).__name__}: {exc}. "
            "Fix the module or the registry's transform column (module:function)."
        ) from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        public = [
            n
            for n, v in vars(module).items()
            if inspect.isfunction(v) and v.__module__ == module.__name__ and not n.startswith("_")
        ]
        raise TransformError(
            f"The transform {spec.transform!r} of {where}: module {module_name!r} has no function "
            f"{function_name!r}.{did_you_mean(function_name, public)} Its functions: {', '.join(sorted(public)) or '(none)'}."
        )
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        source = ""
    return function, hashlib.sha256(source.encode()).hexdigest()[:16]


def _definition(spec: DatasetSpec, source_hash: str) -> str:
    """What the output depends on besides the data: transform, its code, inputs, partitioning, contract."""
    described = {
        "transform": spec.transform,
        "source": source_hash,
        "inputs": list(spec.inputs),
        "partition_field": spec.partition_field,
        "primary_key": list(spec.primary_key),
        "columns": {n: c.type for n, c in spec.contract.columns.items()},
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


# plan ----------------------------------------------------------------------------------------


def _zone(spec: DatasetSpec) -> str:
    return CLEANED if spec.stage == "cleaned" else AGGREGATED


def _changes(name: str, table, built: int) -> tuple[set[str], bool, str | None]:
    """Partitions touched by the commits after version ``built``; (touched, changed, full-rebuild reason)."""
    version = table.version()
    if built > version:
        return (
            set(),
            True,
            f"{name} is at version {version}, before version {built} that the last build used (the table was recreated)",
        )
    touched: set[str] = set()
    changed = False
    for number, commit in commits_since(table, built):
        if commit is None:
            return touched, True, f"the Delta log of {name} no longer has version {number}"
        if not changes_data(commit):
            continue
        state = commit_state(commit)
        if not state or "touched_partitions" not in state:
            return (
                touched,
                True,
                f"{name} version {number} ({commit.get('operation', '?')}) records no touched partitions",
            )
        if state["touched_partitions"]:
            changed = True
            touched |= set(state["touched_partitions"])
    return touched, changed, None


@task(name="plan", persist_result=False)
def _plan(spec: DatasetSpec, registry: Registry, lake: Lake, full_refresh: bool, definition: str) -> _Plan:
    output = lake.table(AGGREGATED, spec.name)
    previous = state_at(output) if output is not None else None
    built_inputs = (previous or {}).get("inputs") or {}
    inputs: list[_Input] = []
    for name in spec.inputs:
        upstream = registry.get(name)
        zone = _zone(upstream)
        table = lake.table(zone, name)
        if table is None:
            command = f"pipelines ingest {name}" if zone == CLEANED else f"pipelines aggregate {name}"
            raise InputNotReadyError(
                f"Cannot build {spec.name!r}: its input {name!r} has no {zone} table yet in namespace "
                f"{lake.storage.url.rsplit('/', 1)[-1]!r} ({lake.uri(zone, name)}). Run `{command}` first."
            )
        stale = sorted((state_at(table) or {}).get("stale_partitions") or {}) if zone == AGGREGATED else []
        partitions = sorted(table_partitions(table) - set(stale)) if upstream.partition_field else None
        item = _Input(
            name=name,
            zone=zone,
            version=table.version(),
            same_key=bool(upstream.partition_field and spec.partition_field),
            partitions=partitions,
            stale=stale,
        )
        before = built_inputs.get(name)
        if before is None:
            item.changed, item.full_reason = True, f"{name} was not an input of the last build"
        else:
            touched, changed, reason = _changes(name, table, int(before["version"]))
            item.touched, item.changed, item.full_reason = sorted(touched), changed, reason
            if partitions is not None and before.get("partitions") is not None:
                item.disappeared = sorted(set(before["partitions"]) - set(partitions))
                item.changed = item.changed or bool(item.disappeared)
        inputs.append(item)

    plan = _Plan(
        mode="full",
        reason="",
        definition=definition,
        inputs=inputs,
        previous=previous,
        output_version=output.version() if output is not None else None,
    )
    changed = [i for i in inputs if i.changed]
    if output is None or previous is None:
        plan.reason = "first build"
    elif full_refresh:
        plan.reason = "full refresh requested"
    elif previous.get("definition") != definition:
        plan.reason = (
            "the dataset's definition changed since the last build (transform or its module's code, "
            "inputs, partition field, primary key or contract columns)"
        )
    elif not changed:
        plan.mode, plan.reason = "up_to_date", "no input changed since the last build"
    elif not spec.partition_field:
        plan.reason = (
            "changed input(s) " + ", ".join(i.name for i in changed) + "; the dataset is not partitioned"
        )
    elif any(not i.same_key for i in changed):
        names = ", ".join(i.name for i in changed if not i.same_key)
        plan.reason = f"unpartitioned input(s) changed: {names}"
    elif any(i.full_reason for i in changed):
        plan.reason = "; ".join(i.full_reason for i in changed if i.full_reason)
    else:
        plan.mode = "incremental"
        plan.affected = sorted({p for i in changed for p in (*i.touched, *i.disappeared)})
        plan.reason = "partitions touched or removed upstream: " + ", ".join(
            f"{i.name} {len(i.touched) + len(i.disappeared)}" for i in changed
        )
    return plan


# build ---------------------------------------------------------------------------------------


def _read_inputs(lake: Lake, plan: _Plan, partitions: list[str] | None = None) -> dict[str, pl.LazyFrame]:
    """The inputs at their pinned versions; partitioned like the output: just ``partitions``
    (default: every partition an incremental plan recomputes)."""
    frames = {}
    options = lake.storage.delta_options or None
    for item in plan.inputs:
        scan = pl.scan_delta(lake.uri(item.zone, item.name), version=item.version, storage_options=options)
        names = scan.collect_schema().names()
        scan = scan.select([c for c in names if c not in HIDDEN_INPUT_COLUMNS])
        if item.stale:
            scan = scan.filter(~pl.col(PARTITION).is_in(item.stale))
        if plan.mode == "incremental" and item.same_key:
            scan = scan.filter(pl.col(PARTITION).is_in(plan.affected if partitions is None else partitions))
        frames[item.name] = scan
    return frames


def partition_batches(plan: _Plan, size: int) -> list[list[str]] | None:
    """The recomputed partitions in batches of ``size``, or None when the transform runs once.

    Only an incremental plan is split: it already relies on each output partition coming from the same
    partition of the partitioned inputs (a build checks that), so a transform over a batch gives that
    batch's rows of the transform over them all. A full build runs once."""
    if plan.mode != "incremental" or len(plan.affected) <= size:
        return None
    return [plan.affected[i : i + size] for i in range(0, len(plan.affected), size)]


def _run_transform(
    spec: DatasetSpec, function, inputs: list[dict[str, pl.LazyFrame]], what: str
) -> pl.DataFrame:
    """The transform over each set of inputs (one per partition batch), run together by polars'
    ``collect_all`` on its thread pool, their rows concatenated."""
    where = f"Transform {spec.transform!r} (dataset {spec.name!r})"
    try:
        outs = [function(frames) for frames in inputs]
        for out in outs:
            if not isinstance(out, pl.LazyFrame | pl.DataFrame):
                raise TransformError(
                    f"{where} returned {type(out).__name__}; a transform must return a polars LazyFrame or DataFrame."
                )
        outs = pl.collect_all([out.lazy() for out in outs])
    except TransformError:
        raise
    except Exception as exc:
        raise TransformError(
            f"{where} failed on {what}: {type(exc).__name__}: {exc}. Nothing was written; "
            f"fix the transform and run `pipelines aggregate {spec.name}` again."
        ) from exc
    return outs[0] if len(outs) == 1 else pl.concat(outs, how="vertical_relaxed")


def _conform(spec: DatasetSpec, frame: pl.DataFrame) -> pl.DataFrame:
    """The transform's rows checked against the contract (columns, types, nulls, key) and ordered like it."""
    where = f"Transform {spec.transform!r} (dataset {spec.name!r})"
    frame = frame.drop([c for c in (PARTITION, RUN_ID) if c in frame.columns])
    columns = spec.contract.columns
    if columns:
        missing = [c for c in columns if c not in frame.columns]
        extra = [c for c in frame.columns if c not in columns]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing column(s) {', '.join(missing)}")
            if extra:
                parts.append(f"column(s) {', '.join(extra)} not in the contract")
            raise TransformError(
                f"{where} returned {'; '.join(parts)}. Make the transform return exactly the columns of "
                f"contracts/{spec.name}.yaml, or change the contract."
            )
        cast = []
        for name, column in columns.items():
            try:
                cast.append(frame.get_column(name).cast(column.dtype, strict=True))
            except Exception as exc:
                raise TransformError(
                    f"{where} returned column {name!r} as {frame.schema[name]}, which does not convert to "
                    f"the contract's {column.type}: {exc}. Cast it in the transform or fix the contract."
                ) from exc
        frame = pl.DataFrame(cast)
        for name, column in columns.items():
            nulls = frame.get_column(name).null_count()
            if not column.nullable and nulls:
                raise TransformError(
                    f"{where} returned {nulls} null(s) in column {name!r}, which contracts/{spec.name}.yaml "
                    "declares nullable: false."
                )
    if spec.partition_field and spec.partition_field not in frame.columns:
        raise TransformError(
            f"{where} returned no column {spec.partition_field!r}, the dataset's partition_field."
        )
    if spec.primary_key:
        missing = [k for k in spec.primary_key if k not in frame.columns]
        if missing:
            raise TransformError(f"{where} returned no primary key column(s) {', '.join(missing)}.")
        dupes = frame.filter(pl.struct(list(spec.primary_key)).is_duplicated())
        if dupes.height:
            example = dupes.select(spec.primary_key).row(0, named=True)
            example = {k: "(not shown: PII)" if k in spec.pii_columns else v for k, v in example.items()}
            raise TransformError(
                f"{where} returned {dupes.height} rows that share a primary key ({'|'.join(spec.primary_key)}), "
                f"e.g. {example}. Each key must appear once: group or deduplicate in the transform."
            )
        frame = frame.sort(list(spec.primary_key))
    return frame


def _partition_values(frame: pl.DataFrame, field: str) -> pl.Expr:
    dtype = frame.schema[field]
    if dtype == pl.Date or isinstance(dtype, pl.Datetime):
        return pl.col(field).dt.strftime("%Y-%m-%d").fill_null("unknown").alias(PARTITION)
    return pl.col(field).cast(pl.String).fill_null("unknown").alias(PARTITION)


def _schema_difference(table: dict, output: dict) -> str:
    """'adds column(s) x; drops column(s) y; changes z from Int64 to Float64', or '' when they match."""
    parts = []
    added = [c for c in output if c not in table]
    dropped = [c for c in table if c not in output]
    changed = [f"{c} from {table[c]} to {output[c]}" for c in output if c in table and table[c] != output[c]]
    if added:
        parts.append(f"adds column(s) {', '.join(added)}")
    if dropped:
        parts.append(f"drops column(s) {', '.join(dropped)}")
    if changed:
        parts.append(f"changes {', '.join(changed)}")
    return "; ".join(parts)


def _stale_reason(partition: str, plan: _Plan, run_id: str) -> str:
    gone = [f"{i.name} (version {i.version})" for i in plan.inputs if partition in i.disappeared]
    if gone:
        return f"its upstream partition disappeared from {', '.join(gone)}; no rows can be derived for it"
    return f"the {plan.mode} rebuild by run {run_id} produced no rows for it"


@task(name="build and commit", persist_result=False)
def _build_and_commit(spec: DatasetSpec, lake: Lake, plan: _Plan, run_id: str, function) -> AggregateResult:
    logger = get_run_logger()
    now = datetime.now(UTC)
    uri = lake.uri(AGGREGATED, spec.name)
    table = lake.table(AGGREGATED, spec.name, version=plan.output_version)
    partitioned = bool(spec.partition_field)

    if plan.mode == "incremental":
        more = f" and {len(plan.affected) - 5} more" if len(plan.affected) > 5 else ""
        what = f"partition(s) {', '.join(plan.affected[:5])}{more}"
    else:
        what = "all the input rows"
    batches = partition_batches(plan, PARTITION_BATCH)
    inputs = [_read_inputs(lake, plan, batch) for batch in batches] if batches else [_read_inputs(lake, plan)]
    frame = _conform(spec, _run_transform(spec, function, inputs, what))
    if partitioned:
        frame = frame.with_columns(_partition_values(frame, spec.partition_field))
    frame = frame.with_columns(pl.lit(run_id).alias(RUN_ID))
    produced = sorted(set(frame.get_column(PARTITION).to_list())) if partitioned else ["all"]
    if plan.mode == "incremental":
        outside = sorted(set(produced) - set(plan.affected))
        if outside:
            raise TransformError(
                f"Transform {spec.transform!r} (dataset {spec.name!r}) produced partition(s) "
                f"{', '.join(outside[:5])} from the input rows of partition(s) {', '.join(plan.affected[:5])}. "
                f"An incremental build needs each output partition ({spec.partition_field}) to come from the "
                "same partition of the partitioned inputs. Nothing was written; partition the dataset on the "
                "same key as its inputs, or leave its partition_field empty so it is rebuilt whole."
            )

    if table is not None and not partitioned and PARTITION in table.metadata().partition_columns:
        raise PipelinesError(
            f"{uri} is partitioned by {PARTITION}, but {spec.name!r} no longer has a partition_field "
            f"(registry row {spec.row}), and a Delta table's partitioning cannot be dropped in place. Its "
            "rows are derived, so delete that folder (or move it away) and run "
            f"`pipelines aggregate {spec.name}` to rebuild it unpartitioned."
        )
    existing = table_partitions(table) if (table is not None and partitioned) else set()
    stale: dict[str, dict] = dict((plan.previous or {}).get("stale_partitions") or {})
    if stale and not partitioned:
        raise PipelinesError(
            f"{spec.name!r} is no longer partitioned, but its table has stale partition(s) "
            f"{', '.join(sorted(stale)[:5])} that a whole rebuild would delete. Run `pipelines cleanup "
            f"{spec.name}` to remove them first, then build it again."
        )
    for partition in produced:
        stale.pop(partition, None)
    if partitioned:
        candidates = existing if plan.mode == "full" else existing & set(plan.affected)
        newly = sorted(p for p in candidates - set(produced) if p not in stale)
    else:
        newly = []
    for partition in newly:
        stale[partition] = {
            "reason": _stale_reason(partition, plan, run_id),
            "since": now.isoformat(),
            "run_id": run_id,
        }
    kept = existing - set(produced)

    state = {
        "run_id": run_id,
        "at": now.isoformat(),
        "workflow": "aggregate",
        "mode": plan.mode,
        "transform": spec.transform,
        "definition": plan.definition,
        "inputs": {
            i.name: {"zone": i.zone, "version": i.version, "partitions": i.partitions} for i in plan.inputs
        },
        "touched_partitions": produced,
        "stale_partitions": dict(sorted(stale.items())),
        "marked_stale": newly,
    }
    partition_by = [PARTITION] if partitioned else None
    if table is None or not kept:
        committed = lake.overwrite(
            AGGREGATED, spec.name, frame, state=state, base=table, partition_by=partition_by
        )
    else:
        difference = _schema_difference(dict(pl.scan_delta(table).collect_schema()), dict(frame.schema))
        if difference:
            raise TransformError(
                f"The output of {spec.transform!r} {difference} compared with {uri}, and the table has "
                f"partition(s) this run keeps ({', '.join(sorted(kept)[:5])}), which cannot be rewritten to the new schema. "
                f"Remove them with `pipelines cleanup {spec.name}` if they are stale, then run "
                f"`pipelines aggregate {spec.name} --full-refresh`."
            )
        if produced:
            committed = lake.replace_partitions(
                AGGREGATED, spec.name, frame, produced, state=state, base=table
            )
        else:
            committed = lake.append(AGGREGATED, spec.name, frame, state=state, base=table)
    present = table_partitions(committed) if partitioned else set()
    sync_status(
        lake,
        spec.name,
        stale=state["stale_partitions"],
        present=present,
        run_id=run_id,
        now=now,
        removed_reason=f"no longer in the table (deleted outside cleanup; noticed by run {run_id})",
    )
    logger.info(
        "%s: %s build wrote %d row(s) in %d partition(s); %d marked stale",
        spec.name,
        plan.mode,
        frame.height,
        len(produced),
        len(newly),
    )
    return AggregateResult(
        dataset=spec.name,
        namespace=lake.storage.url.rstrip("/").rsplit("/", 1)[-1],
        run_id=run_id,
        status="built",
        mode=plan.mode,
        reason=plan.reason,
        transform=spec.transform or "",
        rows_written=frame.height,
        partitions_recomputed=produced,
        partitions_marked_stale=newly,
        stale_partitions=sorted(stale),
        inputs={i.name: i.version for i in plan.inputs},
        table=uri,
        version=committed.version(),
    )


def _record_run(lake: Lake, result: AggregateResult, now: datetime) -> None:
    """One row in _meta/runs (derived; the aggregated table's commit is the truth)."""
    ledger.record_run(
        lake,
        {
            "run_id": result.run_id,
            "dataset": result.dataset,
            "workflow": "aggregate",
            "mode": result.mode,
            "finished_at": now,
            "written": result.rows_written,
            "touched_partitions": json.dumps(result.partitions_recomputed),
            "stale_partitions": json.dumps(result.stale_partitions),
            "inputs": json.dumps(result.inputs),
            "table_version": result.version,
        },
    )


def _markdown(result: AggregateResult) -> str:
    recomputed = result.partitions_recomputed
    shown = ", ".join(recomputed[:10]) + (f" … ({len(recomputed)})" if len(recomputed) > 10 else "")
    rows = [
        ("status", result.status),
        ("mode", f"{result.mode} ({result.reason})"),
        ("transform", f"`{result.transform}`"),
        ("rows written", result.rows_written),
        ("partitions recomputed", shown or "none"),
        ("marked stale", ", ".join(result.partitions_marked_stale) or "none"),
        ("stale now", ", ".join(result.stale_partitions) or "none"),
        ("inputs (Delta version)", ", ".join(f"{k} v{v}" for k, v in result.inputs.items())),
        ("duration", f"{result.duration_seconds:.2f} s"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"# aggregate {result.dataset} ({result.namespace})\n\n| | |\n|---|---|\n{table}\n\n`{result.table}`\n"


@workflow(name="aggregate")
def aggregate(dataset: str, full_refresh: bool = False) -> AggregateResult:
    """Build an aggregated dataset from its inputs with its transform, recomputing only touched partitions."""
    return _aggregate(dataset, full_refresh, as_is(_plan), as_is(_build_and_commit), artifact=True)


def aggregate_in_task(dataset: str, full_refresh: bool = False) -> AggregateResult:
    """The aggregate flow's work inside a caller's task (a cookbook's one task per dataset): same plan and
    commit, no flow or task runs of its own, and no run artifact (the cookbook publishes one summary)."""
    return _aggregate(dataset, full_refresh, _plan.fn, _build_and_commit.fn, artifact=False)


def _aggregate(dataset: str, full_refresh: bool, plan_step, build_step, *, artifact: bool) -> AggregateResult:
    started = time.monotonic()
    settings = get_settings()
    registry = load_registry(settings.registry_path)
    spec = registry.get(dataset)
    if spec.stage != "aggregated":
        raise PipelinesError(
            f"Dataset {dataset!r} is {spec.stage}; aggregate builds aggregated datasets. "
            f"Ingest it with `pipelines ingest {dataset}`."
        )
    if spec.name in spec.inputs:
        raise PipelinesError(
            f"Dataset {dataset!r} (registry row {spec.row}) names itself in inputs; an aggregated dataset "
            "is built from other datasets."
        )
    function, source_hash = _load_transform(spec)
    lake = Lake(Storage.from_settings(settings.namespace_url, settings))
    run_id = new_run_id()
    logger = get_run_logger()
    for attempt in range(1, _ATTEMPTS + 1):
        plan = plan_step(spec, registry, lake, full_refresh, _definition(spec, source_hash))
        if plan.mode == "up_to_date":
            break
        try:
            result = build_step(spec, lake, plan, run_id, function)
            break
        except CommitConflict as exc:
            if attempt == _ATTEMPTS:
                raise PipelinesError(
                    f"{dataset!r}: {_ATTEMPTS} builds in a row lost to concurrent commits to aggregated/{dataset}. "
                    "Nothing was half-written; run it again when the other runs have finished."
                ) from None
            logger.warning("%s: %s (attempt %d of %d)", dataset, exc, attempt, _ATTEMPTS)
    if plan.mode == "up_to_date":
        table = lake.table(AGGREGATED, spec.name)
        result = AggregateResult(
            dataset=spec.name,
            namespace=settings.namespace,
            run_id=run_id,
            status="up_to_date",
            mode="incremental",
            reason=plan.reason,
            transform=spec.transform or "",
            stale_partitions=sorted((plan.previous or {}).get("stale_partitions") or {}),
            inputs={i.name: i.version for i in plan.inputs},
            table=lake.uri(AGGREGATED, spec.name),
            version=table.version() if table is not None else None,
        )
    else:
        _record_run(lake, result, datetime.now(UTC))
    result.duration_seconds = round(time.monotonic() - started, 3)
    get_run_logger().info("%s: %s, %s (%s)", dataset, result.status, result.mode, result.reason)
    if not artifact:
        return result
    publish_markdown(
        key=artifact_key(settings.namespace, "aggregate", dataset),
        markdown=_markdown(result),
        description=f"aggregate {dataset}",
    )
    return result
