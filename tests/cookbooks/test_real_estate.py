"""The real_estate cookbook: land the samples, ingest both sources, build properties and conflicts."""

from __future__ import annotations

import polars as pl
import pytest

from pipelines.components.environment import get_settings
from pipelines.components.errors import PipelinesError
from pipelines.components.resources import Lake, Storage, Warehouse
from pipelines.cookbooks.real_estate import real_estate
from pipelines.samples.real_estate import land_real_estate
from pipelines.transforms.real_estate import PROPERTIES_SCHEMA, properties, property_conflicts

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _warehouse(sql: str) -> list[tuple]:
    """Rows of a query on the test namespace's warehouse (the SQLite file the shares wrote)."""
    warehouse = Warehouse.from_settings(get_settings())
    try:
        with warehouse.begin() as conn:
            return [tuple(row) for row in conn.exec_driver_sql(sql).all()]
    finally:
        warehouse.dispose()


def test_a_bad_window_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(
        PipelinesError,
        match=r"through must be a YYYY-MM-DD date .* got 'March'; e\.g\. -p through=2024-03-31",
    ):
        real_estate(through="March")
    assert not (tmp_path / "data").exists()


def test_a_failed_ingest_names_the_step_the_window_and_the_fix(tmp_path):
    landing = Storage(str(tmp_path / "data" / "landing"))
    land_real_estate(landing, through="2024-02-01")
    # the listing service adds a column: listings has schema_policy=freeze
    rel = "real_estate/listings/listings_2024-02-01.csv"
    lines = landing.read_bytes(rel).decode().splitlines()
    changed = [lines[0] + ",agent_phone"] + [line + ",555-0100" for line in lines[1:]]
    landing.write_atomic("real_estate/listings/listings_2024-02-02.csv", ("\n".join(changed) + "\n").encode())
    with pytest.raises(PipelinesError) as info:
        real_estate(through="2024-02-01")
    message = str(info.value)
    assert message.startswith(
        "real_estate cookbook: ingest of 'listings' failed for the window through 2024-02-01 in namespace 'test'"
    )
    assert "agent_phone" in message and "`pipelines run real_estate -p through=2024-02-01` again" in message
    # the step before it committed
    assert Lake(Storage(str(tmp_path / "data" / "test"))).read("cleaned", "county_parcels").height > 0


def test_the_cookbook_builds_what_the_transform_computes(tmp_path):
    lake = Lake(Storage(str(tmp_path / "data" / "test")))

    def expected():
        inputs = {
            "county_parcels": lake.scan("cleaned", "county_parcels"),
            "listings": lake.scan("cleaned", "listings"),
        }
        return properties(inputs).collect(), property_conflicts(inputs).collect()

    first = real_estate(through="2024-02-15")
    listings = first.sources["listings"]
    # two files at once: the second one's updates and its duplicate line collapse onto the first's listings
    assert listings.rows_in == listings.written + listings.duplicates_collapsed and listings.quarantined == 0
    assert first.conflicts == 3
    assert first.listing_only == 2  # new construction not yet recorded, and an unknown parcel

    second = real_estate()
    built = lake.read("aggregated", "properties").select(list(PROPERTIES_SCHEMA)).sort("parcel_id")
    want, conflicts = expected()
    assert built.equals(want)
    assert lake.read("aggregated", "property_conflicts").height == conflicts.height == second.conflicts == 3
    assert second.properties == want.height
    assert second.listed == want.filter(pl.col("listing_id").is_not_null()).height
    assert second.listing_only == 1
    assert second.sources["county_parcels"].quarantined == 3 and second.sources["listings"].quarantined == 4
    assert second.outputs["properties"].rows_written == want.height
    assert "namespace test" in second.summary and "3 county/listing conflict(s)" in second.summary

    # shared to the warehouse: one row per parcel, and the three conflicts
    assert {n: s.status for n, s in second.shared.items()} == {
        "properties": "loaded",
        "property_conflicts": "loaded",
    }
    assert _warehouse('SELECT count(*), count(DISTINCT parcel_id) FROM "properties"') == [
        (want.height, want.height)
    ]
    assert _warehouse('SELECT parcel_id, field FROM "property_conflicts" ORDER BY parcel_id, field') == [
        ("1001-001-002", "sqft"),
        ("1001-001-003", "address"),
        ("1001-001-005", "property_type"),
    ]
    assert "Shared properties loaded" in second.summary

    third = real_estate()
    assert {s.status for s in third.sources.values()} == {"no_new_data"}
    assert {s.status for s in third.shared.values()} == {"no_changes"}
    assert "county_parcels no new data; listings no new data" in third.summary
    assert (
        lake.read("aggregated", "properties").select(list(PROPERTIES_SCHEMA)).sort("parcel_id").equals(want)
    )
