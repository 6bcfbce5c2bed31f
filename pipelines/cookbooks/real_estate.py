"""Real estate: county records and a listing service merged into one property record per parcel, shared to the warehouse."""

from __future__ import annotations

import datetime as dt
import time

import polars as pl
from prefect import get_run_logger, task
from pydantic import BaseModel, Field

from pipelines.components.engine import SettingsTaskRunner
from pipelines.components.environment import get_settings
from pipelines.components.errors import PipelinesError
from pipelines.components.resources import Lake, Storage
from pipelines.components.summary import RunSummary, tag_subflows
from pipelines.components.workflow import workflow
from pipelines.cookbooks._runner import run_graph
from pipelines.cookbooks._steps import ShareSummary, summarise_share
from pipelines.samples.real_estate import land_real_estate
from pipelines.workflows.ingest import IngestResult

SOURCES = ("county_parcels", "listings")
OUTPUTS = ("properties", "property_conflicts")
SHARED = ("properties", "property_conflicts")


class SourceSummary(BaseModel):
    """One source's ingest run."""

    status: str
    rows_in: int
    written: int
    quarantined: int
    duplicates_collapsed: int
    late_rows: int


class OutputSummary(BaseModel):
    """One aggregated dataset's build."""

    status: str
    rows_written: int
    table: str
    version: int | None


class RealEstateResult(BaseModel):
    """What the real_estate cookbook did, and a few facts about the properties it built."""

    namespace: str
    through: str = Field(description="the last batch date landed (the data window)")
    landed_files: int
    sources: dict[str, SourceSummary]
    outputs: dict[str, OutputSummary]
    shared: dict[str, ShareSummary] = Field(default={}, description="per dataset shared to the warehouse")
    properties: int = Field(description="property records (one per parcel)")
    listed: int = Field(description="properties with a listing")
    listing_only: int = Field(description="listings whose parcel the county does not know")
    conflicts: int = Field(description="rows of property_conflicts")
    median_price_per_sqft: float | None = Field(description="over active and pending listings")
    duration_seconds: float
    summary: str


def _source_summary(result: IngestResult) -> SourceSummary:
    return SourceSummary(
        status=result.status,
        rows_in=result.rows_in,
        written=result.written,
        quarantined=result.quarantined,
        duplicates_collapsed=result.duplicates_collapsed,
        late_rows=result.late_rows,
    )


@task(name="land real estate sample")
def _land(landing_url: str, through: str) -> int:
    report = land_real_estate(Storage.from_settings(landing_url, get_settings()), through=through)
    get_run_logger().info("Landed %d sample file(s) dated through %s", len(report.files), through)
    return len(report.files)


@task(name="describe properties")
def _describe(namespace_url: str) -> dict:
    """Counts and the median price per square foot, read from the aggregated tables."""
    lake = Lake(Storage.from_settings(namespace_url, get_settings()))
    properties = lake.read("aggregated", "properties")
    conflicts = lake.read("aggregated", "property_conflicts")
    on_market = properties.filter(pl.col("listing_status").is_in(["active", "pending"]))
    median = on_market.get_column("price_per_sqft").cast(pl.Float64).median() if on_market.height else None
    return {
        "properties": properties.height,
        "listed": properties.filter(pl.col("listing_id").is_not_null()).height,
        "listing_only": properties.filter(pl.col("record_source") == "listing_only").height,
        "conflicts": conflicts.height,
        "median_price_per_sqft": round(median, 2) if median is not None else None,
    }


def _window(through: str) -> str:
    try:
        return dt.date.fromisoformat(through).isoformat()
    except ValueError:
        raise PipelinesError(
            f"real_estate: through must be a YYYY-MM-DD date (the last batch date to land), got {through!r}; "
            "e.g. -p through=2024-03-31."
        ) from None


def _summary(
    namespace: str,
    through: str,
    landed: int,
    sources: dict[str, SourceSummary],
    facts: dict,
    shared: dict[str, ShareSummary],
) -> str:
    def source(name: str, s: SourceSummary) -> str:
        if s.status == "no_new_data":
            return f"{name} no new data"
        return f"{name} {s.rows_in} in, {s.written} written, {s.quarantined} quarantined"

    price = facts["median_price_per_sqft"]
    quarantined = sum(s.quarantined for s in sources.values())
    return (
        f"real_estate through {through} in namespace {namespace}: {facts['properties']} properties "
        f"({facts['listed']} listed, {facts['listing_only']} unknown to the county), "
        f"{facts['conflicts']} county/listing conflict(s)"
        + (f", median ${price:,.2f} per sq ft on the market" if price is not None else "")
        + (f". {landed} sample file(s) landed; " if landed else ". ")
        + "; ".join(source(name, s) for name, s in sources.items())
        + ". Shared "
        + ", ".join(f"{name} {s.status} ({s.rows} row(s) sent)" for name, s in shared.items())
        + "."
        + (" Quarantined rows and their reasons: quarantine/<dataset>." if quarantined else "")
    )


@workflow(
    name="real_estate",
    task_runner=SettingsTaskRunner(),
)
@tag_subflows
def real_estate(
    through: str = "2024-03-31", land_sample: bool = True, full_refresh: bool = False
) -> RealEstateResult:
    """Real estate: county records + listings -> one property record per parcel, with conflicts recorded, shared."""
    started = time.monotonic()
    logger = get_run_logger()
    settings = get_settings()
    through = _window(through)
    run_summary = RunSummary("real_estate", settings)
    landed = _land(settings.landing_url, through) if land_sample else 0
    done = run_graph(
        "real_estate",
        datasets=SOURCES,
        aggregates=OUTPUTS,
        shares=SHARED,
        window=f"through {through}",
        rerun=f"pipelines run real_estate -p through={through}",
        summary=run_summary,
        full_refresh=full_refresh,
    )
    sources = {name: _source_summary(result) for name, result in done.ingested.items()}
    outputs = {
        name: OutputSummary(status=b.status, rows_written=b.rows_written, table=b.table, version=b.version)
        for name, b in done.aggregated.items()
    }
    shared = {name: summarise_share(sent) for name, sent in done.shared.items()}

    facts = _describe(settings.namespace_url)
    summary = _summary(settings.namespace, through, landed, sources, facts, shared)
    logger.info(summary)
    run_summary.publish()
    return RealEstateResult(
        namespace=settings.namespace,
        through=through,
        landed_files=landed,
        sources=sources,
        outputs=outputs,
        shared=shared,
        duration_seconds=round(time.monotonic() - started, 2),
        summary=summary,
        **facts,
    )


if __name__ == "__main__":
    outcome = real_estate()
    print(outcome.summary)
    for name, item in outcome.sources.items():
        print(
            f"  {name:<18} {item.rows_in:>5} in  {item.written:>5} written  {item.quarantined:>3} quarantined"
            f"  {item.duplicates_collapsed:>3} duplicates  {item.late_rows:>3} late"
        )
    for name, item in outcome.outputs.items():
        print(f"  {name:<18} {item.rows_written:>5} rows  ({item.status})  {item.table}")
    for name, sent in outcome.shared.items():
        print(
            f"  {name:<18} shared to {sent.table}: {sent.status}, {sent.rows} row(s) sent ({sent.strategy})"
        )
