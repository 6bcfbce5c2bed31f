"""daily_delays on hand-made rows: counts, cancellations, percentiles, weather at departure."""

import subprocess
import sys
from datetime import UTC, date, datetime

import polars as pl
import pytest

from pipelines.transforms.flights import daily_delays


def _at(day, hour):
    return datetime(2013, 1, day, hour, tzinfo=UTC)


@pytest.fixture
def inputs():
    flights = pl.DataFrame(
        {
            "carrier": ["AA", "AA", "AA", "AA", "UA", "AA"],
            "origin": ["JFK", "JFK", "JFK", "JFK", "EWR", "JFK"],
            "time_hour": [_at(1, 10), _at(1, 10), _at(1, 11), _at(1, 23), _at(1, 10), _at(2, 1)],
            "dep_time": [512, 530, None, 1801, 600, 2010],
            "dep_delay": [-3, 5, None, 100, 0, 30],
            "arr_delay": [-10, 20, None, None, 4, 25],
        },
        schema_overrides={"dep_time": pl.Int16, "dep_delay": pl.Int16, "arr_delay": pl.Int16},
    )
    weather = pl.DataFrame(
        {
            "origin": ["JFK", "JFK", "EWR", "JFK"],
            "time_hour": [_at(1, 10), _at(1, 11), _at(1, 10), _at(2, 1)],
            "temp": [30.0, 32.0, 28.0, 40.0],
            "wind_speed": [10.0, 12.0, 5.0, 0.0],
            "precip": [0.0, 0.1, 0.0, 0.0],
            "visib": [10.0, 5.0, 10.0, 10.0],
        },
        schema_overrides={"temp": pl.Float32, "precip": pl.Float32, "visib": pl.Float32},
    )
    airlines = pl.DataFrame({"carrier": ["AA"], "name": ["American Airlines Inc."]})
    return {"flights": flights.lazy(), "weather": weather.lazy(), "airlines": airlines.lazy()}


def test_one_row_per_utc_day_carrier_and_origin(inputs):
    out = daily_delays(inputs).collect()
    assert out.select("day", "carrier", "origin").rows() == [
        (date(2013, 1, 1), "AA", "JFK"),
        (date(2013, 1, 1), "UA", "EWR"),
        (date(2013, 1, 2), "AA", "JFK"),
    ]
    aa = out.row(0, named=True)
    assert (aa["flights"], aa["cancelled"]) == (4, 1)
    assert aa["dep_delay_mean"] == pytest.approx((-3 + 5 + 100) / 3)
    # linear interpolation over [-3, 5, 100]: position 0.9 * 2 = 1.8 -> 5 + 0.8 * 95
    assert aa["dep_delay_p90"] == pytest.approx(81.0)
    assert aa["arr_delay_mean"] == pytest.approx(5.0) and aa["arr_delay_p90"] == pytest.approx(17.0)
    assert aa["carrier_name"] == "American Airlines Inc."
    assert out.row(1, named=True)["carrier_name"] is None


def test_weather_is_averaged_over_departures_that_have_an_observation(inputs):
    aa = daily_delays(inputs).collect().row(0, named=True)
    # three AA departures at JFK 10:00, 10:00 and 11:00 UTC have weather; the 23:00 one has none
    assert aa["weather_matched"] == 3
    assert aa["temp_mean"] == pytest.approx((30 + 30 + 32) / 3)
    assert aa["wind_speed_mean"] == pytest.approx((10 + 10 + 12) / 3)
    assert aa["precip_mean"] == pytest.approx(0.1 / 3, rel=1e-6)
    assert aa["visib_mean"] == pytest.approx((10 + 10 + 5) / 3)


def test_a_day_of_cancellations_has_null_delays_and_types_are_stable(inputs):
    flights = (
        inputs["flights"]
        .filter(pl.col("origin") == "EWR")
        .with_columns(
            pl.lit(None, dtype=pl.Int16).alias("dep_time"),
            pl.lit(None, dtype=pl.Int16).alias("dep_delay"),
            pl.lit(None, dtype=pl.Int16).alias("arr_delay"),
        )
    )
    out = daily_delays({**inputs, "flights": flights}).collect()
    row = out.row(0, named=True)
    assert (row["flights"], row["cancelled"], row["dep_delay_mean"], row["dep_delay_p90"]) == (
        1,
        1,
        None,
        None,
    )
    assert out.schema["flights"] == pl.Int64 and out.schema["temp_mean"] == pl.Float64


def test_airlines_is_optional(inputs):
    out = daily_delays({"flights": inputs["flights"], "weather": inputs["weather"]}).collect()
    assert out.get_column("carrier_name").null_count() == out.height == 3


def test_transform_modules_do_not_import_prefect():
    code = (
        "import sys, pipelines.transforms.flights, pipelines.transforms.social_likes; "
        "assert 'prefect' not in sys.modules, 'a transform imported prefect'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
