"""The one runner of cookbooks: the registry's graph of the datasets a cookbook declares, stage by stage.

Each dataset is one coarse task (``ingest posts``, ``aggregate top_users``, ``share top_users``) that
does the workflow's work itself (``ingest_in_task`` and friends): no subflow per dataset, so a cookbook
pays one task run per dataset. Tasks of one stage are submitted together, so the flow's task runner
(:mod:`pipelines.components.engine`: in-process, or Dask) runs independent datasets at the same
time; the next stage starts when the previous one has finished. Tasks take and return references
(names, settings, small pydantic results with table URIs and partition lists), never DataFrames,
and each dataset's commits are its own (atomic per Delta commit, as the workflows make them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect import get_run_logger, task
from prefect.context import TaskRunContext

from pipelines.components import alerts, lineage
from pipelines.components.environment import Settings, get_settings, settings_overrides
from pipelines.components.errors import PipelinesError, retry_transient
from pipelines.components.graph import Graph, Step, build_graph
from pipelines.components.registry import load_registry
from pipelines.components.summary import RunSummary
from pipelines.workflows.aggregate import AggregateResult, aggregate_in_task
from pipelines.workflows.ingest import IngestResult, ingest_in_task
from pipelines.workflows.share import ShareResult, share_in_task

# What a worker needs to see the flow's namespace, whatever its own environment says.
_CARRIED = (
    "namespace",
    "data_url",
    "landing_url",
    "warehouse_url",
    "registry_path",
    "s3_endpoint_url",
    "s3_region",
)

_NEXT = {
    "ingest": "Datasets whose ingest finished are committed; fix the cause and run `{rerun}` again "
    "(it resumes, nothing is ingested twice).",
    "aggregate": "Every commit is atomic, so each table holds its last committed version; fix the cause and "
    "run `{rerun}` again (it resumes: finished steps are no-ops).",
    "share": "The lake tables are committed and a share is one warehouse transaction, so the warehouse "
    "holds its last complete share; fix the cause and run `{rerun}` again (it sends what the warehouse lacks).",
}


@dataclass
class GraphRun:
    """What a cookbook's graph did, per dataset, in the order the cookbook declared them."""

    graph: Graph
    ingested: dict[str, IngestResult] = field(default_factory=dict)
    aggregated: dict[str, AggregateResult] = field(default_factory=dict)
    shared: dict[str, ShareResult] = field(default_factory=dict)


def carried_settings(settings: Settings) -> dict[str, str]:
    """The flow's resolved settings that each task re-enters (see :func:`_dataset_task`).

    The registry shipped with the package is not carried: a worker on another machine has the
    package installed at a path of its own."""
    carried = {k: getattr(settings, k) for k in _CARRIED if getattr(settings, k) is not None}
    if settings.origins.get("registry_path", "").startswith("default"):
        carried.pop("registry_path", None)
    return carried


def _run_dataset(step: Step, full_refresh: bool) -> Any:
    """The body of one dataset's task: its workflow's work, with the lineage events and alerts its flow had.

    The one place a dataset's work runs; wrap here to bound it (e.g. a concurrency limit)."""
    context = TaskRunContext.get()
    run_id = str(context.task_run.id) if context else "-"
    label = f"task {step.workflow} {step.dataset} ({run_id})"
    url = alerts.ui_url(context.task_run.flow_run_id) if context else "-"
    lineage.emit_event(step.workflow, step.dataset, run_id, "START")
    try:
        if step.workflow == "ingest":
            result = ingest_in_task(step.dataset, full_refresh=full_refresh)
        elif step.workflow == "aggregate":
            result = aggregate_in_task(step.dataset, full_refresh=full_refresh)
        else:
            result = share_in_task(step.dataset)
    except Exception as exc:
        lineage.emit_event(step.workflow, step.dataset, run_id, "FAIL", message=str(exc))
        alerts.stopped_batch(get_settings(), step.dataset, exc, label, url)
        raise
    lineage.emit_event(step.workflow, step.dataset, run_id, "COMPLETE", result=result)
    if step.workflow == "ingest":
        alerts.quarantine_rate(get_settings(), result, label, url)
    return result


@task(
    name="dataset",
    task_run_name="{workflow} {dataset}",
    persist_result=False,
    retries=2,
    retry_delay_seconds=[2, 8],
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
)
def _dataset_task(workflow: str, dataset: str, full_refresh: bool, settings: dict[str, str]) -> Any:
    """One dataset's workflow, under the flow's settings (a Dask worker has an environment of its own)."""
    with settings_overrides(**settings):
        return _run_dataset(Step(workflow, dataset), full_refresh)


def _failure(cookbook: str, step: Step, exc: BaseException, window: str, namespace: str, rerun: str) -> str:
    what = "share of {!r} to the warehouse" if step.workflow == "share" else f"{step.workflow} of {{!r}}"
    return (
        f"{cookbook} cookbook: {what.format(step.dataset)} failed for the window {window} in namespace "
        f"{namespace!r}: {exc} " + _NEXT[step.workflow].format(rerun=rerun)
    )


def _sequential_shares(settings: Settings) -> bool:
    """A SQLite warehouse has one writer at a time: its shares go one after another."""
    return settings.warehouse_url.startswith("sqlite")


def run_graph(
    cookbook: str,
    *,
    datasets: Sequence[str],
    aggregates: Sequence[str] = (),
    shares: Sequence[str] = (),
    window: str,
    rerun: str,
    summary: RunSummary,
    full_refresh: bool = False,
) -> GraphRun:
    """Run a cookbook's declared datasets: ingests at once, aggregates level by level, then shares.

    Must run inside the cookbook's flow. A failed dataset lets the others of its stage finish, then
    raises a :class:`PipelinesError` naming the cookbook, step, dataset, window and the command to rerun.
    """
    settings = get_settings()
    graph = build_graph(
        cookbook,
        load_registry(settings.registry_path),
        datasets=datasets,
        aggregates=aggregates,
        shares=shares,
    )
    logger = get_run_logger()
    carried = carried_settings(settings)
    done = GraphRun(graph=graph)
    number = 0
    for stage in graph.stages:
        waves = (
            [[s] for s in stage] if stage[0].workflow == "share" and _sequential_shares(settings) else [stage]
        )
        for wave in waves:
            futures = [
                (step, _dataset_task.submit(step.workflow, step.dataset, full_refresh, carried))
                for step in wave
            ]
            failed: list[tuple[Step, BaseException]] = []
            for step, future in futures:
                state = future.wait()
                value = state.result(raise_on_failure=False)
                if not state.is_completed() or isinstance(value, BaseException):
                    error = (
                        value
                        if isinstance(value, BaseException)
                        else PipelinesError(state.message or state.name)
                    )
                    failed.append((step, error))
                    continue
                number += 1
                _record(done, summary, step, value)
                logger.info("[%d/%d] %s", number, graph.steps, _line(step, value))
            if failed:
                step, error = failed[0]
                others = [f"{s.workflow} of {s.dataset!r}" for s, _ in failed[1:]]
                message = _failure(cookbook, step, error, window, settings.namespace, rerun)
                if others:
                    message += f" Also failed in the same stage: {', '.join(others)}."
                raise PipelinesError(message) from error
    return done


def _record(done: GraphRun, summary: RunSummary, step: Step, value: Any) -> None:
    if step.workflow == "ingest":
        done.ingested[step.dataset] = value
        summary.ingested(value)
    elif step.workflow == "aggregate":
        done.aggregated[step.dataset] = value
        summary.aggregated(value)
    else:
        done.shared[step.dataset] = value
        summary.shared(value)


def _line(step: Step, value: Any) -> str:
    if step.workflow == "ingest":
        return (
            f"ingest {step.dataset}: {value.rows_in} in, {value.written} written, {value.quarantined} "
            f"quarantined, {value.duplicates_collapsed} duplicates, {value.late_rows} late"
        )
    if step.workflow == "aggregate":
        return (
            f"aggregate {step.dataset}: {value.status}, {value.mode}, {value.rows_written} row(s) in "
            f"{len(value.partitions_recomputed)} partition(s) ({value.reason})"
        )
    return f"share {step.dataset}: {value.status}, {value.mode}, {value.rows} row(s) sent to {value.table}"
