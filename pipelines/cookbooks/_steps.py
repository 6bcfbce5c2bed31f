"""Steps cookbooks have in common: run a workflow as a subflow, wrap its failure, summarise its result."""

from __future__ import annotations

from pydantic import BaseModel, Field

from pipelines.components.errors import PipelinesError
from pipelines.workflows.aggregate import AggregateResult, aggregate
from pipelines.workflows.share import ShareResult, share


class AggregateSummary(BaseModel):
    """One aggregated dataset as a cookbook reports it."""

    run_id: str = Field(description="the aggregate run; its rows carry it in _run_id")
    status: str
    mode: str
    reason: str
    rows_written: int
    partitions_recomputed: int
    partitions_marked_stale: list[str]
    stale_partitions: list[str]
    version: int | None


def summarise_aggregate(result: AggregateResult) -> AggregateSummary:
    return AggregateSummary(
        run_id=result.run_id,
        status=result.status,
        mode=result.mode,
        reason=result.reason,
        rows_written=result.rows_written,
        partitions_recomputed=len(result.partitions_recomputed),
        partitions_marked_stale=result.partitions_marked_stale,
        stale_partitions=result.stale_partitions,
        version=result.version,
    )


def build_aggregate(cookbook: str, dataset: str, window: str, namespace: str, rerun: str) -> AggregateResult:
    """The aggregate workflow as a subflow; a failure names the cookbook, dataset, window and next step."""
    try:
        return aggregate(dataset=dataset)
    except Exception as exc:
        raise PipelinesError(
            f"{cookbook} cookbook: aggregate of {dataset!r} failed for the window {window} in namespace "
            f"{namespace!r}: {exc} Every commit is atomic, so each table holds its last committed version; "
            f"fix the cause and run `{rerun}` again (it resumes: finished steps are no-ops)."
        ) from exc


class ShareSummary(BaseModel):
    """One dataset shared to the warehouse, as a cookbook reports it."""

    status: str = Field(
        description="loaded, or no_changes when the lake had nothing new since the last share"
    )
    mode: str
    strategy: str = Field(description="incremental, full or none")
    rows: int = Field(description="rows sent (inserted, updated or appended)")
    deleted: int
    table: str = Field(description="the warehouse table, quoted and schema-qualified")
    delta_version: int = Field(description="the lake table version the warehouse now holds")
    run_id: str


def summarise_share(result: ShareResult) -> ShareSummary:
    return ShareSummary(
        status=result.status,
        mode=result.mode,
        strategy=result.strategy,
        rows=result.rows,
        deleted=result.deleted,
        table=result.table,
        delta_version=result.delta_version,
        run_id=result.run_id,
    )


def share_output(cookbook: str, dataset: str, window: str, namespace: str, rerun: str) -> ShareResult:
    """The share workflow as a subflow; a failure names the cookbook, dataset, window and next step."""
    try:
        return share(dataset=dataset)
    except Exception as exc:
        raise PipelinesError(
            f"{cookbook} cookbook: share of {dataset!r} to the warehouse failed for the window {window} in "
            f"namespace {namespace!r}: {exc} The lake tables are committed and a share is one warehouse "
            f"transaction, so the warehouse holds its last complete share; fix the cause and run `{rerun}` "
            "again (it sends what the warehouse lacks)."
        ) from exc
