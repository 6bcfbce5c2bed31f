"""Steps cookbooks share: run a workflow as a subflow, wrap its failure, summarise its result."""

from __future__ import annotations

from pydantic import BaseModel, Field

from pipelines.components.errors import PipelinesError
from pipelines.workflows.aggregate import AggregateResult, aggregate


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
