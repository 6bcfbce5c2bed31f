"""Share one registry dataset (cleaned or aggregated) into the namespace's SQL warehouse.

One coarse task runs the whole share in one warehouse transaction: deploy or evolve the table
from the contract, send what changed in the Delta table since the version last shared (merge,
replace or append), and record the new share state and a ledger row with it. See
``pipelines.components.sharing`` and docs/share.md.
"""

from __future__ import annotations

from prefect import get_run_logger, task

from pipelines.components.environment import get_settings
from pipelines.components.errors import retry_transient
from pipelines.components.registry import DatasetSpec, load_registry
from pipelines.components.resources import Lake, Storage, Warehouse
from pipelines.components.runs import new_run_id
from pipelines.components.sharing import ShareResult, resolve_mode, share_dataset
from pipelines.components.summary import artifact_key, publish_markdown
from pipelines.components.workflow import as_is, workflow

__all__ = ["ShareResult", "share", "share_in_task"]


@task(
    name="share to warehouse",
    retries=3,
    retry_delay_seconds=[2, 8, 30],
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
)
def _share(
    spec: DatasetSpec,
    lake: Lake,
    warehouse: Warehouse,
    run_id: str,
    namespace: str,
    mode: str | None,
    full_refresh: bool,
) -> ShareResult:
    return share_dataset(
        spec,
        lake,
        warehouse,
        run_id=run_id,
        namespace=namespace,
        mode=mode,
        full_refresh=full_refresh,
        logger=get_run_logger(),
    )


def _markdown(result: ShareResult) -> str:
    rows = [
        ("mode", result.mode),
        ("status", result.status),
        ("strategy", f"{result.strategy} ({result.reason})"),
        ("rows sent", result.rows),
        ("rows deleted", result.deleted),
        ("lake version", f"{result.previous_version} → {result.delta_version}"),
        ("watermark", result.watermark),
        ("schema changes", "; ".join(result.schema_changes) or "none"),
        ("duration", f"{result.duration_seconds:.2f} s"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"# share {result.dataset} ({result.namespace})\n\n| | |\n|---|---|\n{table}\n\n`{result.table}`\n"


@workflow(name="share")
def share(dataset: str, mode: str | None = None, full_refresh: bool = False) -> ShareResult:
    """Share a dataset into the warehouse: self-deploying table, incremental merge/replace/append, state in the same transaction."""
    return _run(dataset, mode, full_refresh, as_is(_share), artifact=True)


def share_in_task(dataset: str, mode: str | None = None, full_refresh: bool = False) -> ShareResult:
    """The share flow's work inside a caller's task (a cookbook's one task per dataset): same transaction,
    no flow or task runs of its own, and no run artifact (the cookbook publishes one summary)."""
    return _run(dataset, mode, full_refresh, _share.fn, artifact=False)


def _run(dataset: str, mode: str | None, full_refresh: bool, share_step, *, artifact: bool) -> ShareResult:
    settings = get_settings()
    spec = load_registry(settings.registry_path).get(dataset)
    resolve_mode(spec, mode)  # a bad mode fails before anything is opened
    lake = Lake(Storage.from_settings(settings.namespace_url, settings))
    warehouse = Warehouse.from_settings(settings)
    try:
        result = share_step(spec, lake, warehouse, new_run_id(), settings.namespace, mode, full_refresh)
    finally:
        warehouse.dispose()
    if not artifact:
        return result
    publish_markdown(
        key=artifact_key(settings.namespace, "share", dataset),
        markdown=_markdown(result),
        description=f"share {dataset}",
    )
    return result
