"""Backfill one cleaned dataset from raw, by a range of event-time partitions, with the current contract.

The raw files selected are those that produced a row (cleaned or quarantined) of a partition in the
range (:mod:`pipelines.lake.reprocess`; docs/backfill.md says why event time, not ingest date). The
range is cut into windows of ``window_days``; each file belongs to the first window it has rows in
and is re-read whole. Windows run in parallel, at most PIPELINES_BACKFILL_WINDOWS at once (a Prefect
global concurrency limit, :mod:`pipelines.components.limits`): each re-cleans its files with ingest's
own batch code (contract casts, quarantine, collapse, expectations), then, holding the dataset's
slot, makes those files' quarantine rows the new outcome and merges the rows that differ into
cleaned. With ``downstream`` the aggregates that read the dataset recompute the partitions the
backfill touched and are shared again. ``dry_run`` lists what would be read and touched, and writes
nothing.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime, timedelta

from prefect import get_run_logger, task
from pydantic import BaseModel, Field

from pipelines.components import batches, limits, progress
from pipelines.components.environment import Settings, get_settings
from pipelines.components.errors import ConfigError, PipelinesError
from pipelines.components.quality import ValidationFailedError
from pipelines.components.registry import DatasetSpec, Registry, load_registry
from pipelines.components.resources import Storage
from pipelines.components.runs import new_run_id
from pipelines.components.summary import artifact_key, publish_markdown
from pipelines.components.workflow import as_is, workflow
from pipelines.lake import Lake, ledger, reprocess
from pipelines.lake.layout import CLEANED
from pipelines.workflows.aggregate import aggregate
from pipelines.workflows.ingest import IngestResult, _account, _batch
from pipelines.workflows.share import share


class WindowResult(BaseModel):
    """One window of a backfill. rows_in == written + quarantined + duplicates_collapsed + held_back."""

    start: str
    through: str
    files: list[str]
    rows_in: int = 0
    written: int = Field(default=0, description="rows the current contract accepts (merged if they differ)")
    quarantined: int = 0
    duplicates_collapsed: int = 0
    held_back: int = 0
    rows_changed: int = Field(default=0, description="cleaned rows added or updated")
    quarantine_before: int = Field(default=0, description="quarantine rows these files had before")
    touched_partitions: list[str] = []
    committed: bool = False
    started_at: datetime | None = Field(default=None, description="when the window got its slot (UTC)")
    finished_at: datetime | None = Field(default=None, description="when it gave the slot back (UTC)")


class BackfillResult(BaseModel):
    """What one backfill did (or, with dry_run, would do)."""

    dataset: str
    namespace: str
    run_id: str
    start: str
    through: str
    window_days: int
    status: str = Field(description="completed, unchanged (everything already held) or dry_run")
    files: list[str] = Field(default=[], description="raw files re-read (dry run: that would be)")
    partitions: list[str] = Field(
        default=[],
        description="partitions the files' rows are in (files are re-read whole, so some may lie outside the range)",
    )
    datasets: list[str] = Field(default=[], description="the dataset, then the downstream ones it reaches")
    windows: list[WindowResult] = []
    rows_in: int = 0
    written: int = 0
    quarantined: int = 0
    duplicates_collapsed: int = 0
    held_back: int = 0
    rows_changed: int = 0
    quarantine_cleared: int = Field(
        default=0, description="quarantine rows of these files the backfill removed"
    )
    touched_partitions: list[str] = []
    cleaned_version: int | None = None
    aggregates: dict[str, str] = Field(
        default={}, description="downstream aggregate -> status (mode, partitions)"
    )
    shared: dict[str, str] = Field(default={}, description="downstream aggregate -> share status")
    duration_seconds: float = 0.0


def _day(text: str, what: str) -> date:
    try:
        return date.fromisoformat(text)
    except (TypeError, ValueError):
        raise ConfigError(f"Invalid {what} date {text!r}: expected YYYY-MM-DD, e.g. 2013-03-01.") from None


def _check(spec: DatasetSpec, start: str, through: str, window_days: int) -> list[tuple[str, str]]:
    """The windows of the range, after checking the dataset and the range can be backfilled."""
    first, last = _day(start, "start (--from)"), _day(through, "end (--to)")
    if first > last:
        raise ConfigError(
            f"The backfill range {start}..{through} ends before it starts. Fix: give --from a date on or before --to."
        )
    if window_days < 1:
        raise ConfigError(
            f"window_days must be at least 1, got {window_days}. Fix: --window-days 7, for example."
        )
    if spec.stage != "cleaned":
        raise ConfigError(
            f"Dataset {spec.name!r} is {spec.stage}: backfill reprocesses a cleaned dataset from raw. Backfill its "
            f"inputs ({', '.join(spec.inputs)}) with --downstream, or rebuild it with "
            f"`pipelines aggregate {spec.name} --full-refresh`."
        )
    column = spec.contract.columns.get(spec.partition_field) if spec.partition_field else None
    if not spec.incremental or column is None or column.type not in ("date", "datetime"):
        raise ConfigError(
            f"Dataset {spec.name!r} (registry row {spec.row}) is not incremental with a date or datetime "
            "partition_field, so it has no event-time partitions to backfill by range. Re-apply the current "
            f"contract to all of it with `pipelines ingest {spec.name} --full-refresh`."
        )
    windows, day = [], first
    while day <= last:
        end = min(last, day + timedelta(days=window_days - 1))
        windows.append((day.isoformat(), end.isoformat()))
        day = end + timedelta(days=1)
    return windows


def _downstream(registry: Registry, name: str) -> list[str]:
    """Aggregates that read ``name``, directly or not, each after its inputs."""
    order: list[str] = []

    def visit(current: str) -> None:
        for spec in registry.downstream(current):
            if spec.name in order:
                order.remove(spec.name)
            order.append(spec.name)
            visit(spec.name)

    visit(name)
    return order


def _assign(selection: dict[str, list[str]], windows: list[tuple[str, str]]) -> list[list[str]]:
    """Each file goes to the first window it has a partition in (files in arrival order)."""
    assigned: list[list[str]] = [[] for _ in windows]
    for file, parts in selection.items():
        first = parts[0]
        index = next((i for i, (lo, hi) in enumerate(windows) if lo <= first <= hi), 0)
        assigned[index].append(file)
    return [sorted(files) for files in assigned]


@task(name="backfill window")
def _window(
    spec: DatasetSpec, lake: Lake, settings: Settings, run_id: str, bounds: tuple[str, str], files: list[str]
) -> WindowResult:
    """Re-clean one window's raw files and commit the outcome (windows bounded; commits one at a time)."""
    result = WindowResult(start=bounds[0], through=bounds[1], files=files)
    with limits.slot(settings.namespace, window=True, settings=settings):
        result.started_at = datetime.now(UTC)
        now = datetime.now(UTC)
        scratch = IngestResult(
            dataset=spec.name, namespace=lake.namespace, run_id=run_id, mode="backfill", status=""
        )
        pending = [batches.Pending(rel, number) for number, rel in enumerate(files)]
        units = list(batches.units(lake.storage, spec, pending, batches.DEFAULT_BATCH_BYTES))
        good, bad, cleaned, check, rows_bad = _batch(
            spec, lake, units, lake.table(CLEANED, spec.name), scratch, run_id, now
        )
        if check.stopped:
            raise ValidationFailedError(
                f"Backfill of {spec.name!r}, window {bounds[0]}..{bounds[1]}: checks with severity error failed "
                f"({'; '.join(check.stopped)}). Nothing of this window was written. Fix the data or the expectation "
                f"in contracts/{spec.name}.yaml, then run the backfill again."
            )
        _account(spec, scratch, cleaned.rows_in, good.height, rows_bad, cleaned.collapsed, check.held_back)
        result.rows_in, result.written, result.quarantined = cleaned.rows_in, good.height, rows_bad
        result.duplicates_collapsed, result.held_back = cleaned.collapsed, check.held_back
        if reprocess.holds(lake, spec.name, good, bad, files):  # a repeated backfill: no commit, no slot
            result.quarantine_before = bad.height
            result.finished_at = datetime.now(UTC)
            return result
        with limits.slot(settings.namespace, spec.name, in_namespace_slot=True, settings=settings):
            outcome = reprocess.commit(
                lake,
                spec.name,
                good,
                bad,
                files,
                key=spec.primary_key,
                newer_field=spec.incremental_field,
                run_id=run_id,
                now=now,
            )
        result.rows_changed, result.quarantine_before = outcome.changed, outcome.quarantine_before
        result.touched_partitions, result.committed = outcome.touched_partitions, outcome.committed
        result.finished_at = datetime.now(UTC)
    get_run_logger().info(
        "%s %s..%s: %d file(s), %d in, %d written (%d changed), %d quarantined (was %d)",
        spec.name,
        bounds[0],
        bounds[1],
        len(files),
        result.rows_in,
        result.written,
        result.rows_changed,
        result.quarantined,
        result.quarantine_before,
    )
    return result


def _total(result: BackfillResult) -> None:
    for window in result.windows:
        result.rows_in += window.rows_in
        result.written += window.written
        result.quarantined += window.quarantined
        result.duplicates_collapsed += window.duplicates_collapsed
        result.held_back += window.held_back
        result.rows_changed += window.rows_changed
        result.quarantine_cleared += max(0, window.quarantine_before - window.quarantined)
        result.touched_partitions = sorted(set(result.touched_partitions) | set(window.touched_partitions))
    if result.rows_in != result.written + result.quarantined + result.duplicates_collapsed + result.held_back:
        raise PipelinesError(
            f"Row accounting failed for the backfill of {result.dataset}: {result.rows_in} in, {result.written} "
            f"written, {result.quarantined} quarantined, {result.duplicates_collapsed} collapsed, {result.held_back} "
            "held back. The raw files are kept; this is a bug, please report it with the run id "
            f"{result.run_id}."
        )


def _markdown(result: BackfillResult) -> str:
    rows = [
        (
            "range",
            f"{result.start}..{result.through} ({len(result.windows)} window(s) of {result.window_days} day(s))",
        ),
        ("status", result.status),
        ("raw files re-read", len(result.files)),
        (
            "rows in / written / quarantined / collapsed",
            f"{result.rows_in} / {result.written} / {result.quarantined} / {result.duplicates_collapsed}",
        ),
        ("cleaned rows changed", result.rows_changed),
        ("quarantine rows cleared", result.quarantine_cleared),
        ("touched partitions", len(result.touched_partitions)),
        ("downstream", ", ".join(f"{k}: {v}" for k, v in result.aggregates.items()) or "not run"),
        ("duration", f"{result.duration_seconds:.2f} s"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"# backfill {result.dataset} ({result.namespace})\n\n| | |\n|---|---|\n{table}\n"


@workflow(name="backfill")
def backfill(
    dataset: str,
    start: str,
    through: str,
    downstream: bool = False,
    dry_run: bool = False,
    window_days: int = 7,
) -> BackfillResult:
    """Reprocess a cleaned dataset from raw for the event-time days start..through with the current contract."""
    started = time.monotonic()
    logger = get_run_logger()
    settings = get_settings()
    registry = load_registry(settings.registry_path)
    spec = registry.get(dataset)
    windows = _check(spec, start, through, window_days)
    lake = Lake(Storage.from_settings(settings.namespace_url, settings))
    table = lake.table(CLEANED, spec.name)
    if table is None:
        raise PipelinesError(
            f"{dataset!r} has no cleaned table in namespace {settings.namespace!r} yet, so there is nothing to "
            f"backfill. Run `pipelines ingest {dataset}` first."
        )
    committed = reprocess.committed_files(lake.state(CLEANED, spec.name, table=table))
    selection = reprocess.select_files(lake, spec.name, start, through, spec.partition_field, committed)
    files = list(selection)
    result = BackfillResult(
        dataset=dataset,
        namespace=settings.namespace,
        run_id=new_run_id(),
        start=start,
        through=through,
        window_days=window_days,
        status="dry_run" if dry_run else "completed",
        files=files,
        partitions=sorted(
            set(reprocess.partitions_of(lake, spec.name, files))
            | {p for parts in selection.values() for p in parts}
        ),
        datasets=[dataset, *(_downstream(registry, dataset) if downstream else [])],
    )
    assigned = [(w, f) for w, f in zip(windows, _assign(selection, windows), strict=True) if f]
    logger.info(
        "%s %s..%s: %d raw file(s) in %d window(s), partitions %s; datasets %s%s",
        dataset,
        start,
        through,
        len(files),
        len(assigned),
        ", ".join(result.partitions) or "none",
        ", ".join(result.datasets),
        " (dry run: nothing written)" if dry_run else "",
    )
    if dry_run:
        result.windows = [WindowResult(start=w[0], through=w[1], files=f) for w, f in assigned]
        result.duration_seconds = round(time.monotonic() - started, 3)
        return result

    # make the limits exist before the windows race to (each window then finds them made)
    limits.ensure(
        {
            **limits.bounds(settings.namespace, spec.name, settings),
            **limits.bounds(settings.namespace, None, settings, window=True),
        }
    )
    futures = [as_is(_window.submit)(spec, lake, settings, result.run_id, w, f) for w, f in assigned]
    for done, future in enumerate(futures, start=1):
        window = future.result()
        result.windows.append(window)
        progress.advance(f"{dataset} {window.start}..{window.through}", done, len(futures))
    _total(result)
    result.cleaned_version = lake.table(CLEANED, spec.name).version()
    if not any(w.committed for w in result.windows):
        result.status = "unchanged"
    else:
        ledger.record_run(
            lake,
            {
                "run_id": result.run_id,
                "dataset": dataset,
                "workflow": "backfill",
                "mode": "backfill",
                "finished_at": datetime.now(UTC),
                "rows_in": result.rows_in,
                "written": result.written,
                "quarantined": result.quarantined,
                "duplicates_collapsed": result.duplicates_collapsed,
                "late_rows": 0,
                "watermark_before": None,
                "watermark_after": None,
                "touched_partitions": json.dumps(result.touched_partitions),
                "processed_files": json.dumps(files),
                "cleaned_version": result.cleaned_version,
            },
        )
    for name in result.datasets[1:]:
        if result.status == "unchanged":
            result.aggregates[name] = "not run: the backfill changed nothing"
            continue
        built = aggregate(dataset=name)
        result.aggregates[name] = (
            f"{built.status} ({built.mode}, {len(built.partitions_recomputed)} partition(s))"
        )
        sent = share(dataset=name)
        result.shared[name] = f"{sent.status} ({sent.rows} row(s))"
    result.duration_seconds = round(time.monotonic() - started, 3)
    publish_markdown(
        key=artifact_key(settings.namespace, "backfill", dataset),
        markdown=_markdown(result),
        description=f"backfill {dataset} {start}..{through}",
    )
    logger.info(
        "%s: %d in, %d written (%d changed), %d quarantined (%d cleared), %d collapsed; touched %d partition(s)",
        dataset,
        result.rows_in,
        result.written,
        result.rows_changed,
        result.quarantined,
        result.quarantine_cleared,
        result.duplicates_collapsed,
        len(result.touched_partitions),
    )
    return result
