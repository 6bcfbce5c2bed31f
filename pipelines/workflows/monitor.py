"""Check every dataset's freshness at the destination and alert on a breach (scheduled per namespace)."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import get_run_logger
from pydantic import BaseModel, Field

from pipelines.components import alerts
from pipelines.components.environment import get_settings
from pipelines.components.status import DatasetStatus, status_for_settings
from pipelines.components.summary import artifact_key, publish_table
from pipelines.components.workflow import workflow


class MonitorResult(BaseModel):
    """What one monitor run found."""

    namespace: str
    at: datetime = Field(description="the time freshness was judged at")
    checked: int = Field(description="datasets with a freshness in the registry and a committed table")
    stale: list[str] = Field(default=[], description="datasets older than their freshness")
    alerts_sent: dict[str, list[str]] = Field(default={}, description="dataset -> channels alerted")


def _breach(status: DatasetStatus) -> str:
    hours = (status.age_seconds or 0) / 3600
    return (
        f"last successful commit {status.last_commit_at:%Y-%m-%d %H:%M} UTC ({hours:.1f} h ago) by run "
        f"{status.last_commit.run_id if status.last_commit else '-'}; the registry's freshness is {status.freshness}. "
        f"Check the source and the {status.dataset} runs, or run `pipelines status {status.dataset}`."
    )


@workflow(name="monitor")
def monitor(datasets: list[str] | None = None, at: datetime | None = None) -> MonitorResult:
    """Judge each dataset's freshness (time since its last successful commit) and alert on a breach."""
    settings = get_settings()
    now = at or datetime.now(UTC)
    statuses = status_for_settings(settings, datasets, now=now)
    # A dataset this namespace never built is not late: there is nothing to be fresh.
    judged = [s for s in statuses if s.freshness_verdict in ("fresh", "stale")]
    stale = [s for s in judged if s.freshness_verdict == "stale"]
    result = MonitorResult(
        namespace=settings.namespace, at=now, checked=len(judged), stale=[s.dataset for s in stale]
    )
    logger = get_run_logger()
    for status in stale:
        logger.warning("%s is stale: %s", status.dataset, _breach(status))
        alert = alerts.for_this_run(settings, status.dataset, "freshness breach", _breach(status))
        result.alerts_sent[status.dataset] = alerts.send(alert, settings)
    publish_table(
        key=artifact_key(settings.namespace, "monitor"),
        table=[
            {
                "dataset": s.dataset,
                "freshness": s.freshness,
                "verdict": s.freshness_verdict,
                "last commit": s.last_commit_at.isoformat() if s.last_commit_at else "",
                "watermark": s.watermark or "",
            }
            for s in judged
        ],
        description=f"freshness in {settings.namespace} at {now:%Y-%m-%d %H:%M} UTC: {len(stale)} stale of {len(judged)}",
    )
    logger.info(
        "%d dataset(s) checked, %d stale: %s", len(judged), len(stale), ", ".join(result.stale) or "none"
    )
    return result
