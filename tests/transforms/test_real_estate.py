"""The real estate transform on small hand-made inputs typed like the cleaned tables."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from pipelines.components.errors import PipelinesError
from pipelines.components.registry import load_contract
from pipelines.transforms.real_estate import (
    CONFLICTS_SCHEMA,
    PROPERTIES_SCHEMA,
    parcel_key,
    properties,
    property_conflicts,
    standardise_address,
    standardise_agent_type,
    standardise_county_type,
    standardise_status,
)

CONTRACTS = Path(__file__).resolve().parents[2] / "pipelines" / "registry" / "contracts"


def _schema(name: str) -> dict[str, pl.DataType]:
    problems: list = []
    contract = load_contract(CONTRACTS / f"{name}.yaml", problems)
    assert problems == []
    return contract.schema


COUNTY_DEFAULTS = {
    "owner_name": "OWNER",
    "situs_zip": "02139",
    "land_use_code": "R1",
    "lot_size_sqft": 5000,
    "building_sqft": 1000,
    "year_built": 1950,
    "assessed_value": Decimal("500000"),
    "recorded_date": dt.date(2020, 1, 1),
}
LISTING_DEFAULTS = {
    "zip": "02139",
    "property_type": "Single Family",
    "list_price": Decimal("600000"),
    "status": "Active",
    "listed_date": dt.date(2024, 3, 1),
    "status_date": dt.date(2024, 3, 1),
    "sqft": Decimal("1000"),
    "beds": 3,
    "baths": Decimal("2.0"),
    "updated_at": dt.datetime(2024, 3, 1, 9),
}


def _frame(name: str, defaults: dict, rows: list[dict]) -> pl.LazyFrame:
    schema = _schema(name)
    data = [defaults | row for row in rows]
    frame = pl.DataFrame([{c: r.get(c) for c in schema} for r in data], schema=schema, orient="row")
    # what a cleaned table also carries; the transform must ignore it
    return frame.with_columns(pl.lit("all").alias("_partition"), pl.lit("run").alias("_run_id")).lazy()


def _inputs(county: list[dict], listings: list[dict]) -> dict[str, pl.LazyFrame]:
    return {
        "county_parcels": _frame("county_parcels", COUNTY_DEFAULTS, county),
        "listings": _frame("listings", LISTING_DEFAULTS, listings),
    }


def _by_parcel(frame: pl.LazyFrame) -> dict[str, dict]:
    return {row["parcel_id"]: row for row in frame.collect().to_dicts()}


@pytest.mark.parametrize(
    ("typed", "standard"),
    [
        ("12 Oak Street", "12 OAK ST"),
        ("12 oak st.", "12 OAK ST"),
        ("  12   OAK  ST ", "12 OAK ST"),
        ("7 Church St, Apt. 2b", "7 CHURCH ST UNIT 2B"),
        ("7 church street #2B", "7 CHURCH ST UNIT 2B"),
        ("7 CHURCH ST # 2B", "7 CHURCH ST UNIT 2B"),
        ("7 Church Street Suite 2B", "7 CHURCH ST UNIT 2B"),
        ("7 Church St Apartment #2B", "7 CHURCH ST UNIT 2B"),
        ("19 Willow Lane", "19 WILLOW LN"),
        ("5 North Alder Court", "5 N ALDER CT"),
        ("3 Lake Terrace", "3 LAKE TER"),
        ("40 Summit Boulevard", "40 SUMMIT BLVD"),
        ("88 Harbour Avenue #4", "88 HARBOUR AVE UNIT 4"),
        ("1 Stanton Way", "1 STANTON WAY"),  # a street name starting like a suffix stays whole
        ("", None),
        (None, None),
    ],
)
def test_standardise_address(typed, standard):
    result = pl.select(standardise_address(pl.lit(typed, pl.String))).item()
    assert result == standard


@pytest.mark.parametrize(
    ("text", "standard"),
    [
        ("Single-Family Home", "single_family"),
        ("single family residence", "single_family"),
        ("SFR", "single_family"),
        ("Condominium", "condo"),
        ("condo/apartment", "condo"),
        ("Townhome", "townhouse"),
        ("Town House", "townhouse"),
        ("2-4 Units", "multi_family"),
        ("Duplex", "multi_family"),
        ("Lot/Land", "land"),
        ("multi_family", "multi_family"),
        ("Houseboat", "other"),
        (None, None),
    ],
)
def test_standardise_agent_type(text, standard):
    assert pl.select(standardise_agent_type(pl.lit(text, pl.String))).item() == standard


@pytest.mark.parametrize(
    ("code", "standard"),
    [
        ("R1", "single_family"),
        (" rc ", "condo"),
        ("RT", "townhouse"),
        ("R3", "multi_family"),
        ("VL", "land"),
        ("CM", "other"),
    ],
)
def test_standardise_county_type(code, standard):
    assert pl.select(standardise_county_type(pl.lit(code))).item() == standard


@pytest.mark.parametrize(
    ("text", "standard"),
    [
        ("ACTIVE", "active"),
        ("Under Contract", "pending"),
        ("Closed", "sold"),
        ("Withdrawn", "withdrawn"),
        ("Expired", "expired"),
        ("Sold-ish", "other"),
    ],
)
def test_standardise_status(text, standard):
    assert pl.select(standardise_status(pl.lit(text))).item() == standard


def test_parcel_key_ignores_case_and_punctuation():
    keys = pl.select(
        parcel_key(pl.Series(["1001-001-008", "1001001008", " 1001 001 008 ", "ab-1"]))
    ).to_series()
    assert keys.to_list() == ["1001001008", "1001001008", "1001001008", "AB1"]


def test_output_types_are_the_contracts():
    assert _schema("properties") == PROPERTIES_SCHEMA
    assert _schema("property_conflicts") == CONFLICTS_SCHEMA
    inputs = _inputs(
        [{"parcel_id": "1", "situs_address": "1 A ST"}],
        [{"listing_id": "L", "parcel_id": "1", "address": "1 A St"}],
    )
    assert dict(properties(inputs).collect_schema()) == PROPERTIES_SCHEMA
    assert dict(property_conflicts(inputs).collect_schema()) == CONFLICTS_SCHEMA


def test_county_is_authoritative_and_the_listing_gives_price_and_status():
    inputs = _inputs(
        [
            {
                "parcel_id": "1001-001-001",
                "situs_address": "12 OAK ST",
                "owner_name": "GARCIA MARIA",
                "building_sqft": 1850,
            }
        ],
        [
            {
                "listing_id": "L1",
                "parcel_id": "1001001001",
                "address": "12 Oak Street",
                "zip": "02139",
                "list_price": Decimal("1199000"),
                "status": "Closed",
                "listed_date": dt.date(2024, 1, 10),
                "status_date": dt.date(2024, 3, 12),
                "sqft": Decimal("1850.5"),
                "updated_at": dt.datetime(2024, 3, 12, 17),
            }
        ],
    )
    row = _by_parcel(properties(inputs))["1001-001-001"]
    assert row["record_source"] == "both"
    assert row["owner_name"] == "GARCIA MARIA"
    assert row["address"] == "12 OAK ST"
    assert row["sqft"] == Decimal("1850")  # the county's, not the listing's 1850.5
    assert row["list_price"] == Decimal("1199000")
    assert row["listing_status"] == "sold"
    assert row["days_on_market"] == 62  # 2024-01-10 .. 2024-03-12 (leap year)
    assert row["price_per_sqft"] == Decimal("648.11")
    assert row["conflicts"] is None and row["conflict_count"] == 0  # half a square foot apart agrees


def test_days_on_market_of_active_listings_run_to_the_feeds_as_of_date():
    inputs = _inputs(
        [{"parcel_id": "A"}, {"parcel_id": "B"}, {"parcel_id": "C"}],
        [
            {
                "listing_id": "LA",
                "parcel_id": "A",
                "listed_date": dt.date(2024, 2, 5),
                "updated_at": dt.datetime(2024, 2, 27, 9),
            },
            {
                "listing_id": "LB",
                "parcel_id": "B",
                "status": "Pending",
                "listed_date": dt.date(2024, 1, 5),
                "status_date": dt.date(2024, 3, 15),
                "updated_at": dt.datetime(2024, 3, 15, 16, 30),
            },
            {
                "listing_id": "LC",
                "parcel_id": "C",
                "status": "Withdrawn",
                "listed_date": dt.date(2024, 1, 1),
                "status_date": None,
                "updated_at": dt.datetime(2024, 1, 31, 8),
            },
        ],
    )
    rows = _by_parcel(properties(inputs))
    assert {r["listings_as_of"] for r in rows.values()} == {dt.date(2024, 3, 15)}
    assert rows["A"]["days_on_market"] == 39  # active: 2024-02-05 .. as of 2024-03-15
    assert rows["B"]["days_on_market"] == 70  # pending since its status date
    assert rows["C"]["days_on_market"] == 30  # no status date: the day of its last update


def test_the_current_listing_is_the_latest_listed_and_all_are_counted():
    inputs = _inputs(
        [{"parcel_id": "1001-001-006"}],
        [
            {
                "listing_id": "OLD",
                "parcel_id": "1001-001-006",
                "status": "Withdrawn",
                "listed_date": dt.date(2023, 11, 15),
                "updated_at": dt.datetime(2024, 2, 12),
            },
            {
                "listing_id": "NEW",
                "parcel_id": "1001001006",
                "list_price": Decimal("1525000"),
                "listed_date": dt.date(2024, 2, 20),
                "updated_at": dt.datetime(2024, 2, 20),
            },
            {
                "listing_id": "SAME-DAY-EARLIER",
                "parcel_id": "1001-001-006",
                "listed_date": dt.date(2024, 2, 20),
                "updated_at": dt.datetime(2024, 2, 19),
            },
        ],
    )
    row = _by_parcel(properties(inputs))["1001-001-006"]
    assert row["listing_id"] == "NEW"
    assert row["listing_count"] == 3
    assert row["list_price"] == Decimal("1525000")


def test_parcels_only_one_side_knows_are_kept():
    inputs = _inputs(
        [{"parcel_id": "1001-001-007", "situs_address": "19 Willow Lane", "land_use_code": "RT"}],
        [
            {
                "listing_id": "L9",
                "parcel_id": "9999-999-999",
                "address": "3 Lake Terrace",
                "property_type": "Townhome",
                "list_price": Decimal("799000"),
                "sqft": Decimal("1500"),
            }
        ],
    )
    rows = _by_parcel(properties(inputs))
    assert set(rows) == {"1001-001-007", "9999-999-999"}
    county_only, listing_only = rows["1001-001-007"], rows["9999-999-999"]
    assert county_only["record_source"] == "county_only"
    assert county_only["address"] == "19 WILLOW LN" and county_only["property_type"] == "townhouse"
    assert county_only["listing_id"] is None and county_only["price_per_sqft"] is None
    assert county_only["days_on_market"] is None and county_only["listing_count"] is None
    assert listing_only["record_source"] == "listing_only"
    assert listing_only["owner_name"] is None
    assert listing_only["address"] == "3 LAKE TER" and listing_only["property_type"] == "townhouse"
    assert listing_only["sqft"] == Decimal("1500") and listing_only["price_per_sqft"] == Decimal("532.67")


def test_conflicts_are_recorded_per_field():
    inputs = _inputs(
        [
            {"parcel_id": "P1", "situs_address": "14 ELM ST", "building_sqft": 1400},
            {
                "parcel_id": "P2",
                "situs_address": "88 HARBOR AVE UNIT 4",
                "land_use_code": "RC",
                "building_sqft": 920,
            },
            {
                "parcel_id": "P3",
                "situs_address": "230 MAPLE AVE",
                "land_use_code": "R2",
                "situs_zip": "02140",
            },
            {
                "parcel_id": "P4",
                "situs_address": "7 CHURCH ST UNIT 2B",
                "land_use_code": "RC",
                "building_sqft": 1050,
            },
            {"parcel_id": "P5", "situs_address": "1 A ST", "building_sqft": 1000},
        ],
        [
            {"listing_id": "L1", "parcel_id": "P1", "address": "14 elm st.", "sqft": Decimal("1720")},
            {
                "listing_id": "L2",
                "parcel_id": "P2",
                "address": "88 Harbour Avenue #4",
                "property_type": "Condo",
                "sqft": Decimal("920"),
            },
            {
                "listing_id": "L3",
                "parcel_id": "P3",
                "address": "230 Maple Ave.",
                "zip": "02141",
                "property_type": "Single Family Home",
            },
            {
                "listing_id": "L4",
                "parcel_id": "P4",
                "address": "7  church street,  apt. 2b",
                "property_type": "Condominium",
                "sqft": Decimal("1050"),
            },
            {"listing_id": "L5", "parcel_id": "P5", "address": "1 A St", "sqft": Decimal("1001")},
        ],
    )
    rows = _by_parcel(properties(inputs))
    assert {p: (r["conflicts"], r["conflict_count"]) for p, r in rows.items()} == {
        "P1": ("sqft", 1),
        "P2": ("address", 1),
        "P3": ("property_type|zip", 2),
        "P4": (None, 0),
        "P5": ("sqft", 1),  # one square foot apart is a disagreement
    }
    conflicts = property_conflicts(inputs).collect()
    assert conflicts.rows() == [
        ("P1", "sqft", "1400.00", "1720.00", "1400.00", "1720.00", "L1"),
        (
            "P2",
            "address",
            "88 HARBOR AVE UNIT 4",
            "88 HARBOUR AVE UNIT 4",
            "88 HARBOR AVE UNIT 4",
            "88 Harbour Avenue #4",
            "L2",
        ),
        ("P3", "property_type", "multi_family", "single_family", "R2", "Single Family Home", "L3"),
        ("P3", "zip", "02140", "02141", "02140", "02141", "L3"),
        ("P5", "sqft", "1000.00", "1001.00", "1000.00", "1001.00", "L5"),
    ]


def test_a_missing_value_on_one_side_is_not_a_conflict_and_falls_back():
    inputs = _inputs(
        [{"parcel_id": "P", "situs_address": "300 SUMMIT RD", "land_use_code": "VL", "building_sqft": None}],
        [
            {
                "listing_id": "L",
                "parcel_id": "P",
                "address": None,
                "property_type": None,
                "sqft": None,
                "list_price": Decimal("350000"),
            }
        ],
    )
    row = _by_parcel(properties(inputs))["P"]
    assert row["conflicts"] is None
    assert row["sqft"] is None and row["price_per_sqft"] is None
    assert row["property_type"] == "land" and row["address"] == "300 SUMMIT RD"


@pytest.mark.parametrize(
    ("price", "sqft", "expected"),
    [
        ("1", "8", "0.12"),
        ("3", "8", "0.38"),
        ("2", "3", "0.67"),
        ("649000", "920", "705.43"),
        ("100", "0", None),
    ],
)
def test_price_per_sqft_rounds_half_to_even_and_needs_a_positive_size(price, sqft, expected):
    inputs = _inputs(
        [{"parcel_id": "P", "building_sqft": None}],
        [{"listing_id": "L", "parcel_id": "P", "list_price": Decimal(price), "sqft": Decimal(sqft)}],
    )
    value = _by_parcel(properties(inputs))["P"]["price_per_sqft"]
    assert value == (Decimal(expected) if expected else None)


def test_missing_inputs_and_columns_are_named():
    inputs = _inputs([{"parcel_id": "P"}], [])
    with pytest.raises(PipelinesError, match=r"needs the input 'listings' but got \['county_parcels'\]"):
        properties({"county_parcels": inputs["county_parcels"]})
    broken = {**inputs, "listings": inputs["listings"].drop("sqft", "status")}
    with pytest.raises(
        PipelinesError,
        match=r"input 'listings' lacks column\(s\) status, sqft; add them to contracts/listings.yaml",
    ):
        properties(broken)


def test_empty_listings_give_county_only_records():
    rows = _by_parcel(properties(_inputs([{"parcel_id": "A"}, {"parcel_id": "B"}], [])))
    assert {r["record_source"] for r in rows.values()} == {"county_only"}
    assert property_conflicts(_inputs([{"parcel_id": "A"}], [])).collect().height == 0


def test_the_registry_names_these_transforms_and_their_inputs():
    import importlib

    from pipelines.components.environment import DEFAULT_REGISTRY
    from pipelines.components.registry import load_registry

    registry = load_registry(DEFAULT_REGISTRY)
    for name, function in (("properties", properties), ("property_conflicts", property_conflicts)):
        spec = registry.get(name)
        assert (spec.stage, spec.inputs) == ("aggregated", ("county_parcels", "listings"))
        module, attribute = spec.transform.split(":")
        assert getattr(importlib.import_module(module), attribute) is function
        assert spec.contract.schema == (PROPERTIES_SCHEMA if name == "properties" else CONFLICTS_SCHEMA)


def test_the_transform_module_does_not_import_prefect():
    import subprocess
    import sys

    code = "import sys, pipelines.transforms.real_estate; print('prefect' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
