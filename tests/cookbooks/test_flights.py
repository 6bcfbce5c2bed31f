from datetime import date

import polars as pl
import pytest

from pipelines.components.resources import Lake, Storage
from pipelines.cookbooks.flights import flights
from pipelines.samples.nycflights import read_source

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _package_rows(table: str, through: str) -> int:
    """An independent count: rows of the package's own CSV for local days up to `through`."""
    frame = read_source(table)
    day = pl.date(pl.col("year").cast(pl.Int32), pl.col("month").cast(pl.Int32), pl.col("day").cast(pl.Int32))
    return frame.filter(day <= date.fromisoformat(through)).height


def test_flights_cookbook_lands_ingests_and_absorbs_late_rows(tmp_path):
    first = flights(through="2013-01-12")
    lake = Lake(Storage(str(tmp_path / "data" / "test")))
    # the 2013-01-10 late rows (every 10th) are still on their way
    assert lake.read("cleaned", "flights").height < _package_rows("flights", "2013-01-12")
    assert first.datasets["airlines"].written == 16

    second = flights(through="2013-01-20")
    assert second.datasets["flights"].late_rows > 0
    assert second.datasets["airlines"].status == "no_new_data"
    cleaned = lake.read("cleaned", "flights")
    assert cleaned.height == _package_rows("flights", "2013-01-20")
    assert lake.read("cleaned", "weather").height == _package_rows("weather", "2013-01-20")
    assert cleaned.select(pl.struct("carrier", "flight", "time_hour").is_unique().all()).item()
    assert sum(d.quarantined for d in second.datasets.values()) == 0
    assert "namespace test" in second.summary
