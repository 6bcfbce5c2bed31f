"""How cookbooks report an aggregate or a share in their results (the runner, :mod:`._runner`, runs them)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from pipelines.workflows.aggregate import AggregateResult
from pipelines.workflows.share import ShareResult


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
