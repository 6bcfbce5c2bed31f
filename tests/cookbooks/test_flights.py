from datetime import date

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pipelines.components.environment import get_settings
from pipelines.components.resources import Lake, Storage, Warehouse
from pipelines.cookbooks.flights import flights
from pipelines.samples.nycflights import read_source
from pipelines.workflows.aggregate import aggregate

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _warehouse(sql: str) -> list[tuple]:
    """Rows of a query on the test namespace's warehouse (the SQLite file the shares wrote)."""
    warehouse = Warehouse.from_settings(get_settings())
    try:
        with warehouse.begin() as conn:
            return [tuple(row) for row in conn.exec_driver_sql(sql).all()]
    finally:
        warehouse.dispose()


def _package_rows(table: str, through: str) -> int:
    """An independent count: rows of the package's own CSV for local days up to `through`."""
    frame = read_source(table)
    day = pl.date(pl.col("year").cast(pl.Int32), pl.col("month").cast(pl.Int32), pl.col("day").cast(pl.Int32))
    return frame.filter(day <= date.fromisoformat(through)).height


def _expected_daily_delays(through: str) -> pl.DataFrame:
    """flight_delays_daily answered in SQL by DuckDB over the package's own CSVs (local days <= through)."""
    con = duckdb.connect()
    for table in ("flights", "weather", "airlines"):
        con.register(table, read_source(table).to_arrow())
    sql = f"""
    WITH f AS (
        SELECT carrier, origin, strptime(time_hour, '%Y-%m-%dT%H:%M:%SZ') AS th,
               CAST(NULLIF(dep_time, 'NA') AS INTEGER) AS dep_time,
               CAST(NULLIF(dep_delay, 'NA') AS DOUBLE) AS dep_delay,
               CAST(NULLIF(arr_delay, 'NA') AS DOUBLE) AS arr_delay
        FROM flights
        WHERE make_date(CAST(year AS INT), CAST(month AS INT), CAST(day AS INT)) <= DATE '{through}'
    ), w AS (
        SELECT origin, strptime(time_hour, '%Y-%m-%dT%H:%M:%SZ') AS th,
               CAST(CAST(NULLIF(temp, 'NA') AS FLOAT) AS DOUBLE) AS temp,
               CAST(NULLIF(wind_speed, 'NA') AS DOUBLE) AS wind_speed,
               CAST(CAST(precip AS FLOAT) AS DOUBLE) AS precip,
               CAST(CAST(visib AS FLOAT) AS DOUBLE) AS visib
        FROM weather
        WHERE make_date(CAST(year AS INT), CAST(month AS INT), CAST(day AS INT)) <= DATE '{through}'
    )
    SELECT CAST(f.th AS DATE) AS day, f.carrier, a.name AS carrier_name, f.origin,
           count(*) AS flights, count(*) FILTER (WHERE f.dep_time IS NULL) AS cancelled,
           avg(f.dep_delay) AS dep_delay_mean, quantile_cont(f.dep_delay, 0.9) AS dep_delay_p90,
           avg(f.arr_delay) AS arr_delay_mean, quantile_cont(f.arr_delay, 0.9) AS arr_delay_p90,
           count(w.th) AS weather_matched, avg(w.temp) AS temp_mean, avg(w.wind_speed) AS wind_speed_mean,
           avg(w.precip) AS precip_mean, avg(w.visib) AS visib_mean
    FROM f
    LEFT JOIN w ON w.origin = f.origin AND w.th = f.th
    LEFT JOIN airlines a ON a.carrier = f.carrier
    GROUP BY ALL
    ORDER BY day, f.carrier, f.origin
    """
    return pl.from_arrow(con.sql(sql).arrow()).with_columns(
        pl.col("flights", "cancelled", "weather_matched").cast(pl.Int64)
    )


def _daily(lake) -> pl.DataFrame:
    return lake.read("aggregated", "flight_delays_daily").sort("day", "carrier", "origin")


def test_flights_cookbook_lands_ingests_and_absorbs_late_rows(tmp_path):
    first = flights(through="2013-01-12")
    lake = Lake(Storage(str(tmp_path / "data" / "test")))
    first_rows = _daily(lake).height
    # the 2013-01-10 late rows (every 10th) are still on their way
    assert lake.read("cleaned", "flights").height < _package_rows("flights", "2013-01-12")
    assert first.datasets["airlines"].written == 16
    built = first.aggregates["flight_delays_daily"]
    assert (built.status, built.mode, built.partitions_recomputed) == ("built", "full", 13)

    second = flights(through="2013-01-20")
    assert second.datasets["flights"].late_rows > 0
    assert second.datasets["airlines"].status == "no_new_data"
    cleaned = lake.read("cleaned", "flights")
    assert cleaned.height == _package_rows("flights", "2013-01-20")
    assert lake.read("cleaned", "weather").height == _package_rows("weather", "2013-01-20")
    assert cleaned.select(pl.struct("carrier", "flight", "time_hour").is_unique().all()).item()
    assert sum(d.quarantined for d in second.datasets.values()) == 0
    assert "namespace test" in second.summary

    # the daily delays: only the UTC days the late rows (local 01-10 -> UTC 01-10 and 01-11) and the new
    # days (local 01-13..01-20 -> UTC 01-13..01-21) touched were rewritten; 01-12 and earlier were not
    delays = second.aggregates["flight_delays_daily"]
    assert (delays.status, delays.mode) == ("built", "incremental")
    daily = _daily(lake)
    rewritten = daily.filter(pl.col("_run_id") == delays.run_id).get_column("_partition").unique().sort()
    assert rewritten.to_list() == ["2013-01-10", "2013-01-11", *(f"2013-01-{d}" for d in range(13, 22))]
    assert set(daily.filter(pl.col("_partition") <= "2013-01-09").get_column("_run_id")) == {built.run_id}
    assert "flight_delays_daily built (incremental, 11 day(s) recomputed)" in second.summary

    # the same question answered by DuckDB over the package's CSVs, and a full rebuild, agree with it
    incremental = daily.drop("_run_id", "_partition")
    assert_frame_equal(incremental, _expected_daily_delays("2013-01-20"), rtol=1e-9)
    assert incremental.get_column("flights").sum() == cleaned.height
    # shared to the warehouse: the first run sent every row, the second just the recomputed days' rows
    assert (first.shared["flight_delays_daily"].status, first.shared["flight_delays_daily"].rows) == (
        "loaded",
        first_rows,
    )
    shared = second.shared["flight_delays_daily"]
    assert (shared.status, shared.mode, shared.strategy) == ("loaded", "merge", "incremental")
    assert shared.rows == daily.filter(pl.col("_run_id") == delays.run_id).height
    assert shared.table == '"flight_delays_daily"'
    assert _warehouse('SELECT count(*), sum(flights) FROM "flight_delays_daily"') == [
        (daily.height, cleaned.height)
    ]
    assert "shared flight_delays_daily loaded" in second.summary

    full = aggregate("flight_delays_daily", full_refresh=True)
    assert full.mode == "full" and len(full.partitions_recomputed) == 21
    assert_frame_equal(_daily(lake).drop("_run_id", "_partition"), incremental, rtol=1e-12)
