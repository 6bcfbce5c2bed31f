"""Forget one data subject: remove their rows from every zone and the warehouse, then vacuum.

The subject comes in as a keyed hash (``pipelines forget`` computes it from the identifier; see
:mod:`pipelines.components.erasure`), so no identifier reaches Prefect's parameters, logs or
results. For every dataset with a ``subject_key``: raw files are rewritten without the subject's
records, the cleaned table, quarantine and ``_meta`` lose their rows, the aggregates built from
them recompute the partitions they fed (aggregates keyed by the subject lose their rows), the
shared warehouse tables follow in one transaction each, and every rewritten table is vacuumed with
no retention so no older file still holds the rows. The erasure ledger (``_meta/erasures``)
records each step; a finished request is a no-op, an interrupted one resumes. See docs/privacy.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from datetime import UTC, datetime

from prefect import get_run_logger
from pydantic import BaseModel, Field

from pipelines.components import forgetting, limits, sharing
from pipelines.components.environment import get_settings
from pipelines.components.erasure import Subject, load_salt
from pipelines.components.registry import load_registry
from pipelines.components.resources import Storage, Warehouse
from pipelines.components.runs import new_run_id
from pipelines.components.summary import artifact_key, publish_markdown
from pipelines.components.workflow import workflow
from pipelines.lake import Lake
from pipelines.lake import erasure as ledger
from pipelines.lake.layout import AGGREGATED, CLEANED


class ForgetResult(BaseModel):
    """What one forget run did (or, with dry_run, would do). Holds no personal data."""

    request_id: str
    namespace: str
    subject_hash: str = Field(description="keyed hash of the subject's identifier (never the identifier)")
    pseudonym_hash: str | None = Field(
        default=None, description="keyed hash of the subject's retention pseudonym, when one was given"
    )
    dry_run: bool
    status: str = Field(
        description="completed, already_completed (a finished request: nothing done) or dry_run"
    )
    datasets: list[str] = Field(default=[], description="datasets searched (those with a subject_key)")
    rows: dict[str, dict[str, int]] = Field(
        default={}, description="dataset -> zone (raw, cleaned, quarantine, aggregated, warehouse) -> rows"
    )
    meta_rows: int = Field(default=0, description="_meta rows (e.g. validation samples) holding the subject")
    recomputed: dict[str, list[str]] = Field(
        default={}, description="aggregated dataset -> partitions recomputed (with dry_run: to recompute)"
    )
    raw_files: int = Field(default=0, description="raw files rewritten (with dry_run: to rewrite)")
    vacuumed_files: int = Field(default=0, description="Delta data files deleted by the vacuum")
    flow_run_id: str | None = None
    requested_by: str | None = None
    duration_seconds: float = 0.0


def request_id_for(subject_hash: str, datasets: list[str]) -> str:
    """The same subject and datasets always make the same request (so a rerun finds it)."""
    digest = hashlib.sha256(f"{subject_hash}:{','.join(sorted(datasets))}".encode()).hexdigest()
    return f"er-{digest[:16]}"


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    return str(run_id) if run_id else None


def _add(result: ForgetResult, dataset: str, zone: str, rows: int) -> None:
    result.rows.setdefault(dataset, {})
    result.rows[dataset][zone] = result.rows[dataset].get(zone, 0) + rows


def _markdown(result: ForgetResult) -> str:
    lines = [
        f"# forget {result.request_id} ({result.namespace})",
        "",
        f"**{result.status}**; subject hash `{result.subject_hash[:12]}…`",
        "",
        "| dataset | zone | rows |",
        "|---|---|---|",
    ]
    for dataset, zones in sorted(result.rows.items()):
        lines += [f"| {dataset} | {zone} | {rows} |" for zone, rows in sorted(zones.items())]
    lines += ["", f"_meta rows: {result.meta_rows}; raw files rewritten: {result.raw_files}; "
              f"data files vacuumed: {result.vacuumed_files}"]  # fmt: skip
    return "\n".join(lines) + "\n"


@workflow(name="forget")
def forget(
    subject_hash: str,
    datasets: list[str] | None = None,
    dry_run: bool = False,
    requested_by: str | None = None,
    pseudonym_hash: str | None = None,
) -> ForgetResult:
    """Forget a data subject (given as the keyed hash `pipelines forget` computes) in every zone and the warehouse.

    ``pseudonym_hash``: the keyed hash of the pseudonym retention gives the identifier, so raw and
    quarantine values that retention already pseudonymised are found too (the command computes it).
    """
    started = time.monotonic()
    logger = get_run_logger()
    settings = get_settings()
    registry = load_registry(settings.registry_path)
    lake = Lake(Storage.from_settings(settings.namespace_url, settings))
    also = (pseudonym_hash,) if pseudonym_hash else ()
    subject = Subject(subject_hash, load_salt(settings.namespace, lake.storage), also)
    specs = forgetting.in_scope(registry, datasets)
    names = [s.name for s in specs]
    request_id = request_id_for(subject_hash, names)
    result = ForgetResult(
        request_id=request_id,
        namespace=settings.namespace,
        subject_hash=subject_hash,
        pseudonym_hash=pseudonym_hash,
        dry_run=dry_run,
        status="dry_run" if dry_run else "completed",
        datasets=names,
        flow_run_id=_flow_run_id(),
        requested_by=requested_by,
    )
    entry = None if dry_run else ledger.read_request(lake, request_id)
    if entry is not None and entry["status"] == "completed":
        result.status, result.rows = "already_completed", entry["rows_removed"]
        logger.info("%s: already completed at %s; nothing to do", request_id, entry["finished_at"])
        return result
    if entry is None:
        entry = {
            "request_id": request_id,
            "namespace": settings.namespace,
            "subject_hash": subject_hash,
            "datasets": names,
            "steps": {},
            "rows_removed": {},
            "started_at": datetime.now(UTC),
        }
    entry.update(status="running", requested_by=requested_by, flow_run_id=result.flow_run_id, error=None)
    steps: dict = entry["steps"]
    result.rows = entry["rows_removed"]
    if not dry_run:
        ledger.save_request(lake, entry)
    run_id = new_run_id()

    def step(name: str, work, zone: str | None = None, dataset: str | None = None):
        """Run a step once per request: a finished step is skipped on resume; its rows are recorded."""
        if not dry_run and steps.get(name, {}).get("done"):
            return None
        outcome = work()
        if dataset is not None and zone is not None:
            _add(result, dataset, zone, outcome.rows)
        if not dry_run:
            previous = steps.get(name, {})
            steps[name] = {
                "done": True,
                "rows": outcome.rows,
                "tables": previous.get("tables", []) + outcome.tables,
            }
            entry["rows_removed"] = result.rows
            ledger.save_request(lake, entry)
        return outcome

    # ingests of these datasets wait to commit meanwhile (the vacuum below keeps no old files)
    held = contextlib.ExitStack()
    try:
        if not dry_run:
            held.enter_context(limits.datasets_slot(settings.namespace, names, settings=settings))
        changed: set[str] = set()
        touched: dict[str, list[str]] = {}  # dataset -> partitions holding the subject's rows (dry run)
        for spec in specs:
            if spec.stage != "cleaned":
                continue
            raw = step(
                f"raw:{spec.name}",
                lambda s=spec: forgetting.raw(lake, s, subject, dry_run=dry_run),
                "raw",
                spec.name,
            )
            if raw is not None:
                result.raw_files += len(raw.files)
            lines = raw.lines if raw is not None else {}
            cleaned = step(
                f"cleaned:{spec.name}",
                lambda s=spec: forgetting.keyed(
                    lake, s, subject, dry_run=dry_run, run_id=run_id, request_id=request_id
                ),
                CLEANED,
                spec.name,
            )
            if cleaned is not None and cleaned.rows:
                changed.add(spec.name)
                touched[spec.name] = cleaned.partitions
            step(
                f"quarantine:{spec.name}",
                lambda s=spec, lines=lines: forgetting.quarantine(lake, s, subject, lines, dry_run=dry_run),
                "quarantine",
                spec.name,
            )
        changed |= {
            name.split(":", 1)[1]
            for name, done in steps.items()
            if name.startswith("cleaned:") and done.get("rows")
        }
        for spec in forgetting.downstream(registry, changed):
            if not lake.exists(AGGREGATED, spec.name):
                continue
            if dry_run:
                fed = {p for name in spec.inputs for p in touched.get(name, [])}
                result.recomputed[spec.name] = sorted(fed) if spec.partition_field else ["all"]
                touched[spec.name] = result.recomputed[spec.name]
                continue
            name = f"aggregate:{spec.name}"
            if not steps.get(name, {}).get("done"):
                from pipelines.workflows.aggregate import aggregate

                built = aggregate(dataset=spec.name)
                steps[name] = {
                    "done": True,
                    "rows": 0,
                    "partitions": built.partitions_recomputed,
                    "tables": [f"{AGGREGATED}/{spec.name}"],
                }
                ledger.save_request(lake, entry)
            result.recomputed[spec.name] = steps[name].get("partitions", [])
        for spec in specs:
            if spec.stage == "aggregated":
                step(
                    f"aggregated:{spec.name}",
                    lambda s=spec: forgetting.keyed(
                        lake, s, subject, dry_run=dry_run, run_id=run_id, request_id=request_id
                    ),
                    AGGREGATED,
                    spec.name,
                )
        meta = step("meta", lambda: forgetting.meta(lake, subject, dry_run=dry_run))
        result.meta_rows = meta.rows if meta is not None else steps.get("meta", {}).get("rows", 0)
        _warehouse(settings, registry, lake, specs, changed, subject, result, steps, entry, dry_run, run_id)
        if not dry_run and not steps.get("vacuum", {}).get("done"):
            tables = sorted({t for s in steps.values() for t in s.get("tables", [])})
            for table in tables:
                zone, name = table.split("/", 1)
                result.vacuumed_files += len(lake.vacuum_now(zone, name))
            steps["vacuum"] = {"done": True, "rows": 0, "tables": []}
    except Exception as exc:
        if not dry_run:
            entry.update(status="failed", error=f"{type(exc).__name__} (see the flow run's logs)")
            ledger.save_request(lake, entry)
        raise
    finally:
        held.close()
    if not dry_run:
        entry.update(status="completed", finished_at=datetime.now(UTC), rows_removed=result.rows)
        ledger.save_request(lake, entry)
    result.duration_seconds = round(time.monotonic() - started, 3)
    logger.info(
        "%s: %s; rows by dataset and zone: %s",
        request_id,
        result.status,
        {d: dict(z) for d, z in result.rows.items()},
    )
    publish_markdown(
        key=artifact_key(settings.namespace, "forget", request_id),
        markdown=_markdown(result),
        description=f"forget request {request_id}",
    )
    return result


def _warehouse(
    settings, registry, lake, specs, changed, subject, result, steps, entry, dry_run, run_id
) -> None:
    """Every shared table of the datasets searched or rebuilt: the subject's rows deleted, then brought
    to the lake's new version (one transaction each), before old lake versions are vacuumed."""
    warehouse = Warehouse.from_settings(settings)
    try:
        shared = sharing.shared_states(warehouse)
        related = [s for s in specs if s.name in shared]
        related += [
            s for s in forgetting.downstream(registry, changed) if s.name in shared and s not in related
        ]
        for spec in related:
            name = f"warehouse:{spec.name}"
            if not dry_run and steps.get(name, {}).get("done"):
                continue
            deleted = 0
            if spec.subject_key:
                values = sharing.subject_values(warehouse, spec.name, spec.subject_key, subject.matching)
                if dry_run:
                    deleted = sharing.count_rows_with(warehouse, spec.name, spec.subject_key, values)
                else:
                    deleted = sharing.delete_rows_with(
                        spec, warehouse, spec.subject_key, values, run_id=run_id
                    )
                _add(result, spec.name, "warehouse", deleted)
                entry["rows_removed"] = result.rows
            if not dry_run:
                sharing.share_dataset(
                    spec,
                    lake,
                    warehouse,
                    run_id=run_id,
                    namespace=settings.namespace,
                    mode=shared[spec.name]["mode"],
                    logger=get_run_logger(),
                )
                steps[name] = {"done": True, "rows": deleted, "tables": []}
                ledger.save_request(lake, entry)
        if not dry_run:
            sharing.reclaim_space(warehouse, [s.name for s in related])
    finally:
        warehouse.dispose()
