"""Social likes end to end: land the sample, ingest posts and likes, build and share likes per user and the top users."""

from __future__ import annotations

import time
from datetime import timedelta

from prefect import get_run_logger, task
from pydantic import BaseModel

from pipelines.components.engine import SettingsTaskRunner
from pipelines.components.environment import get_settings
from pipelines.components.resources import Lake, Storage
from pipelines.components.summary import RunSummary, tag_subflows
from pipelines.components.workflow import workflow
from pipelines.cookbooks._runner import run_graph
from pipelines.cookbooks._steps import AggregateSummary, ShareSummary, summarise_aggregate, summarise_share
from pipelines.samples import social_likes as sample

INGESTED = ("posts", "likes")
AGGREGATES = ("likes_per_user", "user_top3_avg", "top_users")
SHARED = ("top_users", "user_top3_avg")
FIRST_DAY = sample.START.isoformat()
LAST_DAY = (sample.START + timedelta(days=sample.DAYS - 1)).isoformat()


class IngestSummary(BaseModel):
    status: str
    rows_in: int
    written: int
    quarantined: int
    duplicates_collapsed: int
    late_rows: int


class TopUser(BaseModel):
    rank: int
    user_id: str
    top3_avg_likes: float
    top3_likes: int
    top3_posts: int


class SocialLikesResult(BaseModel):
    """What the social likes cookbook did, the top 10 users, and a line a person can read."""

    namespace: str
    window: str
    landed_files: int
    ingested: dict[str, IngestSummary]
    aggregates: dict[str, AggregateSummary]
    shared: dict[str, ShareSummary] = {}
    top_users: list[TopUser]
    duration_seconds: float
    summary: str


@task(name="land social likes sample")
def _land(landing_url: str, start: str, through: str) -> int:
    report = sample.land_social_likes(
        Storage.from_settings(landing_url, get_settings()), start=start, through=through
    )
    get_run_logger().info(
        "Landed %d file(s) for %s..%s, %d of them new or changed: %d post row(s), %d like row(s)",
        len(report.files),
        start,
        through,
        len(report.changed),
        report.rows["posts"],
        report.rows["likes"],
    )
    return len(report.files)


@workflow(
    name="social_likes",
    task_runner=SettingsTaskRunner(),
)
@tag_subflows
def social_likes(
    start: str = FIRST_DAY, through: str = LAST_DAY, land_sample: bool = True
) -> SocialLikesResult:
    """Social likes end to end: land the sample, ingest posts and likes, build and share likes per user and the top users."""
    started = time.monotonic()
    logger = get_run_logger()
    settings = get_settings()
    window = f"{start}..{through}"
    run_summary = RunSummary("social_likes", settings)
    rerun = f"pipelines run social_likes -p start={start} -p through={through}"
    landed = _land(settings.landing_url, start, through) if land_sample else 0
    done = run_graph(
        "social_likes",
        datasets=INGESTED,
        aggregates=AGGREGATES,
        shares=SHARED,
        window=window,
        rerun=rerun,
        summary=run_summary,
    )
    ingested = {
        name: IngestSummary(
            status=r.status,
            rows_in=r.rows_in,
            written=r.written,
            quarantined=r.quarantined,
            duplicates_collapsed=r.duplicates_collapsed,
            late_rows=r.late_rows,
        )
        for name, r in done.ingested.items()
    }
    aggregates = {name: summarise_aggregate(built) for name, built in done.aggregated.items()}
    shared = {name: summarise_share(sent) for name, sent in done.shared.items()}

    lake = Lake(Storage.from_settings(settings.namespace_url, settings))
    ranking = lake.read("aggregated", "top_users").sort("rank")
    top = [TopUser(**row) for row in ranking.drop("_run_id").iter_rows(named=True)]
    leader = (
        f" Top user: {top[0].user_id} ({top[0].top3_avg_likes:.1f} likes on average over "
        f"{top[0].top3_posts} post(s))."
        if top
        else ""
    )
    likes = ingested["likes"]
    summary = (
        f"social_likes {window} in namespace {settings.namespace}: {landed} file(s) landed; "
        f"{ingested['posts'].written} post(s) and {likes.written} like(s) ingested "
        f"({likes.quarantined} quarantined, {likes.duplicates_collapsed} duplicate(s) collapsed, "
        f"{likes.late_rows} late); "
        + ", ".join(f"{n} {a.status} ({a.mode})" for n, a in aggregates.items())
        + "; shared "
        + ", ".join(f"{n} {s.status} ({s.rows} row(s) sent)" for n, s in shared.items())
        + "."
        + leader
    )
    logger.info(summary)
    run_summary.publish()
    return SocialLikesResult(
        namespace=settings.namespace,
        window=window,
        landed_files=landed,
        ingested=ingested,
        aggregates=aggregates,
        shared=shared,
        top_users=top,
        duration_seconds=round(time.monotonic() - started, 2),
        summary=summary,
    )


if __name__ == "__main__":
    outcome = social_likes()
    print(outcome.summary)
    for user in outcome.top_users:
        print(
            f"  {user.rank:>2}. {user.user_id}  {user.top3_avg_likes:5.1f} average over {user.top3_posts} "
            f"post(s), {user.top3_likes} likes"
        )
    for name, sent in outcome.shared.items():
        print(f"  {name}: shared to {sent.table}, {sent.status}, {sent.rows} row(s) sent ({sent.strategy})")
