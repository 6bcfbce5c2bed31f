"""The real estate sample sources: their mess, ingested batch by batch, then merged into properties.

The ingest tests run the real ``ingest`` flow once per batch (in the order the providers sent them)
and check the cleaned tables against the landed text parsed independently here with the standard
library. The last tests apply the transform to those cleaned tables and check it against the
scenario parcels' stories and against the same question answered in SQL by DuckDB.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import duckdb
import polars as pl
import pytest
import yaml

from pipelines.components.resources import Lake, Storage
from pipelines.samples.real_estate import (
    COUNTY_BATCHES,
    COUNTY_COLUMNS,
    LISTING_BATCHES,
    LISTING_COLUMNS,
    SCENARIO_PARCELS,
    land_real_estate,
)
from pipelines.transforms.real_estate import properties, property_conflicts
from pipelines.workflows.ingest import IngestResult, ingest

CONTRACTS = Path(__file__).resolve().parents[2] / "pipelines" / "registry" / "contracts"
BATCHES = sorted(COUNTY_BATCHES + LISTING_BATCHES)
COUNTY_DIR, LISTINGS_DIR = "real_estate/county", "real_estate/listings"


def _rows(storage: Storage, rel: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(storage.read_bytes(rel).decode())))


def _date(text: str) -> dt.date | None:
    """The two formats the sources use, parsed without polars; None for blank or unparseable text."""
    for fmt in ("%Y-%m-%d", "%m/%d/%Y"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    return None


def _number(text: str) -> Decimal | None:
    text = text.strip().removeprefix("$").removesuffix("sq ft").strip().replace(",", "")
    return Decimal(text) if text else None


def _key(parcel_id: str) -> str:
    return re.sub(r"[^0-9A-Z]", "", parcel_id.upper())


# the landed files, without Prefect -------------------------------------------------------------


@pytest.fixture
def landing(tmp_path) -> Storage:
    return Storage(str(tmp_path / "landing"))


def test_batches_land_by_date_and_identically(tmp_path, landing):
    early = land_real_estate(landing, through="2024-02-15")
    assert early.files == [
        f"{COUNTY_DIR}/parcels_2024-01-31.csv",
        f"{LISTINGS_DIR}/listings_2024-02-01.csv",
        f"{LISTINGS_DIR}/listings_2024-02-15.csv",
    ]
    before = {rel: landing.read_bytes(rel) for rel in early.files}
    full = land_real_estate(landing)
    assert len(full.files) == 7 and set(early.files) < set(full.files)
    assert {rel: landing.read_bytes(rel) for rel in early.files} == before
    other = Storage(str(tmp_path / "other"))
    assert land_real_estate(other) == full
    assert all(other.read_bytes(rel) == landing.read_bytes(rel) for rel in full.files)
    assert full.rows == {rel: len(_rows(landing, rel)) for rel in full.files}
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        land_real_estate(landing, through="March")


def test_the_files_carry_the_promised_mess(landing):
    land_real_estate(landing)
    county = {d: _rows(landing, f"{COUNTY_DIR}/parcels_{d}.csv") for d in COUNTY_BATCHES}
    listings = {d: _rows(landing, f"{LISTINGS_DIR}/listings_{d}.csv") for d in LISTING_BATCHES}
    iso, us = re.compile(r"^\d{4}-\d\d-\d\d$"), re.compile(r"^\d\d/\d\d/\d{4}$")

    # thousands separators (and a dollar sign in some prices)
    assert all("," in r["assessed_value"] for r in county["2024-01-31"])
    prices = [r["list_price"] for rows in listings.values() for r in rows]
    assert any(re.match(r"^\d{1,3}(,\d{3})+$", p) for p in prices) and any(p.startswith("$") for p in prices)
    # two date formats in one column of one file
    for column, rows in (("recorded_date", county["2024-03-31"]), ("listed_date", listings["2024-02-15"])):
        texts = [r[column] for r in rows]
        assert any(iso.match(t) for t in texts) and any(us.match(t) for t in texts), column
    # sqft changes type: integers, then text with a unit, then decimals
    patterns = {
        "2024-02-01": r"^\d+$",
        "2024-02-15": r"^\d+$",
        "2024-03-01": r"^\d{1,3}(,\d{3})* sq ft$",
        "2024-03-15": r"^\d+\.\d\d$",
    }
    for day, pattern in patterns.items():
        sizes = [r["sqft"] for r in listings[day] if r["sqft"]]
        assert sizes and all(re.match(pattern, s) for s in sizes), day
    # an exact duplicate line within a file
    for rows in (county["2024-02-29"], listings["2024-02-15"]):
        lines = [tuple(r.values()) for r in rows]
        assert len(lines) - len(set(lines)) == 1
    # a late update (price/status changed later), and an older version re-sent after a newer one
    versions = [
        (r["updated_at"], r["status"])
        for rows in listings.values()
        for r in rows
        if r["listing_id"] == "RE24-90006"
    ]
    assert versions == [
        ("2024-01-20 10:00:00", "Active"),
        ("2024-02-12 16:00:00", "Withdrawn"),
        ("2024-01-20 10:00:00", "Active"),
    ]


@pytest.mark.parametrize(
    ("name", "columns"), [("county_parcels", COUNTY_COLUMNS), ("listings", LISTING_COLUMNS)]
)
def test_contract_columns_match_the_landed_header(landing, name, columns):
    report = land_real_estate(landing)
    folder = COUNTY_DIR if name == "county_parcels" else LISTINGS_DIR
    for rel in (f for f in report.files if f.startswith(folder)):
        assert landing.read_bytes(rel).decode().splitlines()[0].split(",") == list(columns)
    contract = yaml.safe_load((CONTRACTS / f"{name}.yaml").read_text())
    assert list(contract["columns"]) == list(columns)
    assert all(spec.get("type") and spec.get("description") for spec in contract["columns"].values())


# ingested batch by batch through the real flow --------------------------------------------------


@dataclass
class Story:
    landing: Storage
    lake: Lake
    runs: dict[str, IngestResult]  # batch date -> the ingest run of the source that sent it

    def cleaned(self, name: str) -> pl.DataFrame:
        return self.lake.read("cleaned", name)

    def quarantine(self, name: str) -> pl.DataFrame:
        return self.lake.read("quarantine", name).sort("source_line")

    def landed(self, name: str) -> dict[str, list[dict]]:
        folder, prefix, batches = (
            (COUNTY_DIR, "parcels", COUNTY_BATCHES)
            if name == "county_parcels"
            else (LISTINGS_DIR, "listings", LISTING_BATCHES)
        )
        return {d: _rows(self.landing, f"{folder}/{prefix}_{d}.csv") for d in batches}

    def inputs(self, county_version: int | None = None) -> dict[str, pl.LazyFrame]:
        county = pl.scan_delta(self.lake.uri("cleaned", "county_parcels"), version=county_version)
        return {"county_parcels": county, "listings": self.lake.scan("cleaned", "listings")}


@pytest.fixture(scope="module")
def story(prefect_harness, tmp_path_factory) -> Story:
    """Land and ingest the batches one date at a time, as the providers send them."""
    root = tmp_path_factory.mktemp("real_estate")
    runs: dict[str, IngestResult] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("PIPELINES_NAMESPACE", "test")
        patch.setenv("PIPELINES_DATA_URL", str(root / "data"))
        patch.setenv("PIPELINES_WAREHOUSE_URL", f"sqlite:///{root}/warehouse.sqlite")
        landing = Storage(str(root / "data" / "landing"))
        for batch in BATCHES:
            land_real_estate(landing, through=batch)
            runs[batch] = ingest(dataset="county_parcels" if batch in COUNTY_BATCHES else "listings")
    return Story(landing=landing, lake=Lake(Storage(str(root / "data" / "test"))), runs=runs)


def test_every_run_accounts_for_every_landed_row(story):
    for name in ("county_parcels", "listings"):
        for batch, rows in story.landed(name).items():
            run = story.runs[batch]
            assert run.status == "completed" and len(run.processed_files) == 1, batch
            assert run.rows_in == len(rows), batch
            assert run.rows_in == run.written + run.quarantined + run.duplicates_collapsed, batch


def test_nothing_is_silently_dropped(story):
    for name, key in (("county_parcels", "parcel_id"), ("listings", "listing_id")):
        landed = {r[key] for rows in story.landed(name).values() for r in rows}
        cleaned = set(story.cleaned(name).get_column(key).to_list())
        quarantined = {json.loads(r).get(key) or "" for r in story.quarantine(name).get_column("record")}
        assert landed == cleaned | quarantined, name
        assert cleaned.isdisjoint({""})


def test_quarantine_reasons(story):
    county = story.quarantine("county_parcels")
    assert county.select("source_line", "column", "rule", "reason").rows() == [
        (
            16,
            "recorded_date",
            "type",
            "recorded_date: '2024-02-30' is not a valid date (expected format %Y-%m-%d or %m/%d/%Y)",
        ),
        (17, "year_built", "type", "year_built: '19O8' is not a valid int16"),
        (18, "parcel_id", "not_null", "parcel_id: null in a primary key column"),
    ]
    assert set(county.get_column("source_file")) == set(story.runs["2024-03-31"].processed_files)
    listings = story.quarantine("listings")
    assert listings.select("column", "rule", "reason").rows() == [
        (
            "list_price",
            "type",
            "list_price: 'Call for price' is not a valid decimal(12,2) (thousands separator ','; allowed affixes '$')",
        ),
        (
            "listed_date",
            "type",
            "listed_date: '15/03/2024' is not a valid date (expected format %Y-%m-%d or %m/%d/%Y)",
        ),
        ("parcel_id", "not_null", "parcel_id: null in a non-nullable column"),
        ("listing_id", "not_null", "listing_id: null in a primary key column"),
    ]
    assert json.loads(listings.get_column("record")[0])["list_price"] == "Call for price"
    assert [r.quarantined for r in story.runs.values()] == [0, 0, 0, 0, 0, 4, 3]


def test_duplicates_collapse_and_late_updates_apply_newest_first(story):
    assert story.runs["2024-02-15"].duplicates_collapsed == 1
    assert story.runs["2024-02-29"].duplicates_collapsed == 1
    listings = {r["listing_id"]: r for r in story.cleaned("listings").to_dicts()}
    sold = listings["RE24-90001"]
    assert (sold["status"], sold["list_price"], sold["status_date"]) == (
        "Closed",
        Decimal("1199000"),
        dt.date(2024, 3, 12),
    )
    assert listings["RE24-90002"]["list_price"] == Decimal("879000")  # "$899,000", then cut to "879,000"
    # the older version of RE24-90006 re-sent on 2024-03-15 is late and does not undo its withdrawal
    assert story.runs["2024-03-15"].late_rows == 1
    assert listings["RE24-90006"]["status"] == "Withdrawn"
    assert listings["RE24-90006"]["updated_at"] == dt.datetime(2024, 2, 12, 16)
    county = {r["parcel_id"]: r for r in story.cleaned("county_parcels").to_dicts()}
    # the sale recorded in February wins over the old deed re-sent in March
    assert story.runs["2024-03-31"].late_rows == 1
    assert (county["1001-001-007"]["owner_name"], county["1001-001-007"]["recorded_date"]) == (
        "NGUYEN LINH",
        dt.date(2024, 2, 20),
    )
    assert county["1001-001-007"]["assessed_value"] == Decimal("1020000")
    # the impossible date was quarantined; the parcel keeps its earlier record
    assert county["1001-001-011"]["recorded_date"] == dt.date(2012, 1, 5)


def test_values_are_typed_exactly_as_the_text_says(story):
    """Every cleaned row against its landed line, parsed here with the standard library."""
    landed = {
        (r["listing_id"], r["updated_at"]): r
        for rows in story.landed("listings").values()
        for r in rows
        if r["listing_id"]
    }
    cleaned = story.cleaned("listings")
    assert cleaned.schema["sqft"] == pl.Decimal(9, 2) and cleaned.schema["listed_date"] == pl.Date
    for row in cleaned.to_dicts():
        text = landed[(row["listing_id"], row["updated_at"].strftime("%Y-%m-%d %H:%M:%S"))]
        assert row["listed_date"] == _date(text["listed_date"])
        assert row["status_date"] == _date(text["status_date"])
        assert row["list_price"] == _number(text["list_price"])
        assert row["sqft"] == _number(text["sqft"]), text["sqft"]
        assert row["beds"] == (int(text["beds"]) if text["beds"] else None)
    county_landed = {
        (r["parcel_id"], r["recorded_date"]): r
        for rows in story.landed("county_parcels").values()
        for r in rows
    }
    for row in story.cleaned("county_parcels").to_dicts():
        texts = [
            t
            for (p, d), t in county_landed.items()
            if p == row["parcel_id"] and _date(d) == row["recorded_date"]
        ]
        assert texts, row["parcel_id"]
        text = texts[-1]
        assert row["assessed_value"] == _number(text["assessed_value"])
        assert row["lot_size_sqft"] == _number(text["lot_size_sqft"])
        assert row["building_sqft"] == _number(text["building_sqft"])


def test_the_sqft_type_change_is_absorbed(story):
    cleaned = story.cleaned("listings")
    by_file = {story.runs[d].processed_files[0]: d for d in LISTING_BATCHES}
    eras = cleaned.with_columns(pl.col("_source_file").replace_strict(by_file).alias("batch"))
    sized = eras.filter(pl.col("sqft").is_not_null()).group_by("batch").len()
    # listings whose latest version arrived as "1,850 sq ft" text and as "1850.00" decimals are all typed
    assert set(sized.get_column("batch")) == set(LISTING_BATCHES)
    assert "sqft" not in story.quarantine("listings").get_column("column").to_list()
    # whatever the era, the listed size is the county's for every listing but the scenario's disagreement
    county = story.cleaned("county_parcels").select(
        pl.col("parcel_id").str.replace_all("-", "").alias("key"), "building_sqft"
    )
    joined = cleaned.with_columns(pl.col("parcel_id").str.replace_all("-", "").alias("key")).join(
        county, on="key"
    )
    differs = joined.filter(pl.col("sqft") != pl.col("building_sqft").cast(pl.Decimal(9, 2)))
    assert differs.get_column("listing_id").to_list() == ["RE24-90002"]


# merged into properties ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def merged(story) -> pl.DataFrame:
    return properties(story.inputs()).collect()


def test_one_property_per_parcel_and_every_listing_belongs_to_one(story, merged):
    county_ids = set(story.cleaned("county_parcels").get_column("parcel_id"))
    listings = story.cleaned("listings")
    listing_keys = {_key(p) for p in listings.get_column("parcel_id")}
    unknown = listing_keys - {_key(p) for p in county_ids}
    assert merged.height == len(county_ids) + len(unknown)
    assert merged.get_column("parcel_id").is_unique().all()
    assert county_ids <= set(merged.get_column("parcel_id"))
    assert {_key(p) for p in merged.get_column("parcel_id")} >= listing_keys
    assert merged.get_column("listing_count").sum() == listings.height
    assert unknown == {"9999999999"}


SCENARIOS = {
    "1001-001-001": dict(record_source="both", owner_name="GARCIA MARIA", address="12 OAK ST", property_type="single_family", listing_id="RE24-90001", list_price=Decimal("1199000"), listing_status="sold", listed_date=dt.date(2024, 1, 10), status_date=dt.date(2024, 3, 12), days_on_market=62, price_per_sqft=Decimal("648.11"), sqft=Decimal("1850"), conflicts=None),
    "1001-001-002": dict(record_source="both", address="14 ELM ST", list_price=Decimal("879000"), listing_status="active", days_on_market=39, sqft=Decimal("1400"), price_per_sqft=Decimal("627.86"), conflicts="sqft", conflict_count=1),
    "1001-001-003": dict(address="88 HARBOR AVE UNIT 4", property_type="condo", list_price=Decimal("649000"), days_on_market=36, price_per_sqft=Decimal("705.43"), conflicts="address"),
    "1001-001-004": dict(address="7 CHURCH ST UNIT 2B", property_type="condo", listing_id="RE24-90004", days_on_market=53, price_per_sqft=Decimal("656.19"), conflicts=None, conflict_count=0),
    "1001-001-005": dict(property_type="multi_family", listing_status="pending", status_date=dt.date(2024, 3, 15), days_on_market=70, price_per_sqft=Decimal("566.29"), conflicts="property_type"),
    "1001-001-006": dict(listing_id="RE24-90016", listing_count=2, list_price=Decimal("1525000"), listing_status="active", listed_date=dt.date(2024, 2, 20), days_on_market=24, price_per_sqft=Decimal("690.05")),
    "1001-001-007": dict(record_source="county_only", owner_name="NGUYEN LINH", address="19 WILLOW LN", property_type="townhouse", recorded_date=dt.date(2024, 2, 20), assessed_value=Decimal("1020000"), listing_id=None, list_price=None, days_on_market=None, price_per_sqft=None, conflict_count=0),
    "1001-001-008": dict(record_source="both", owner_name="ALDER HOMES LLC", address="5 ALDER CT", recorded_date=dt.date(2024, 3, 5), listing_id="RE24-90008", days_on_market=50, price_per_sqft=Decimal("593.75")),
    "9999-999-999": dict(record_source="listing_only", owner_name=None, address="3 LAKE TER", property_type="townhouse", sqft=Decimal("1500"), price_per_sqft=Decimal("532.67"), days_on_market=57, conflicts=None),
    "1001-001-010": dict(property_type="land", sqft=None, price_per_sqft=None, list_price=Decimal("350000"), days_on_market=105, year_built=None),
    "1001-001-011": dict(record_source="county_only", recorded_date=dt.date(2012, 1, 5), address="61 BIRCH ST"),
}  # fmt: skip


@pytest.mark.parametrize("parcel", sorted(SCENARIOS))
def test_scenario_parcels(merged, parcel):
    assert set(SCENARIOS) == set(SCENARIO_PARCELS)
    row = merged.filter(pl.col("parcel_id") == parcel).to_dicts()
    assert len(row) == 1
    assert {k: row[0][k] for k in SCENARIOS[parcel]} == SCENARIOS[parcel]
    assert row[0]["listings_as_of"] == (dt.date(2024, 3, 15) if row[0]["listing_id"] else None)


def test_conflicts_are_exactly_the_scenarios_disagreements(story, merged):
    conflicts = property_conflicts(story.inputs()).collect()
    assert conflicts.select("parcel_id", "field", "county_value", "listing_value", "listing_raw").rows() == [
        ("1001-001-002", "sqft", "1400.00", "1720.00", "1720.00"),
        ("1001-001-003", "address", "88 HARBOR AVE UNIT 4", "88 HARBOUR AVE UNIT 4", "88 Harbour Avenue #4"),
        ("1001-001-005", "property_type", "multi_family", "single_family", "Single Family Home"),
    ]
    # every agent spelling of the generated addresses and types standardised to the county's
    assert merged.get_column("conflict_count").sum() == conflicts.height


def test_new_construction_before_the_county_recorded_it(story):
    """Time travel: the county table as it was before its March file."""
    county_version = story.runs["2024-02-29"].cleaned_version
    earlier = properties(story.inputs(county_version)).collect()
    row = earlier.filter(pl.col("parcel_id").str.replace_all("-", "") == "1001001008").to_dicts()
    assert len(row) == 1
    assert (row[0]["parcel_id"], row[0]["record_source"], row[0]["address"]) == (
        "1001001008",
        "listing_only",
        "5 ALDER CT",
    )


def test_properties_match_the_same_question_asked_in_duckdb(story, merged):
    """The current listing, price per sq ft, days on market and source per parcel, answered in SQL."""
    con = duckdb.connect()
    con.register("county", story.cleaned("county_parcels").drop("_ingested_at").to_arrow())
    con.register("listings", story.cleaned("listings").drop("_ingested_at").to_arrow())
    expected = con.sql(
        r"""
        WITH l AS (
            SELECT *, regexp_replace(upper(parcel_id), '[^0-9A-Z]', '', 'g') AS k,
                   count(*) OVER (PARTITION BY regexp_replace(upper(parcel_id), '[^0-9A-Z]', '', 'g')) AS n,
                   row_number() OVER (PARTITION BY regexp_replace(upper(parcel_id), '[^0-9A-Z]', '', 'g')
                                      ORDER BY listed_date DESC, updated_at DESC, listing_id DESC) AS rn
            FROM listings
        ),
        cur AS (SELECT * FROM l WHERE rn = 1),
        c AS (SELECT *, regexp_replace(upper(parcel_id), '[^0-9A-Z]', '', 'g') AS k FROM county),
        feed AS (SELECT max(updated_at)::DATE AS as_of FROM listings)
        SELECT coalesce(c.parcel_id, trim(cur.parcel_id)) AS parcel_id,
               CASE WHEN c.parcel_id IS NOT NULL AND cur.listing_id IS NOT NULL THEN 'both'
                    WHEN c.parcel_id IS NOT NULL THEN 'county_only' ELSE 'listing_only' END AS record_source,
               cur.listing_id, cur.n AS listing_count, cur.list_price::DOUBLE AS list_price,
               date_diff('day', cur.listed_date,
                   CASE WHEN lower(trim(cur.status)) = 'active' THEN (SELECT as_of FROM feed)
                        ELSE coalesce(cur.status_date, cur.updated_at::DATE) END) AS days_on_market,
               cur.list_price::VARCHAR AS price_text,
               coalesce(c.building_sqft::VARCHAR, cur.sqft::VARCHAR) AS sqft_text
        FROM c FULL JOIN cur ON c.k = cur.k
        ORDER BY parcel_id
        """
    ).pl()
    ours = merged.select(
        "parcel_id",
        "record_source",
        "listing_id",
        "listing_count",
        pl.col("list_price").cast(pl.Float64),
        "days_on_market",
        "price_per_sqft",
    )
    assert ours.height == expected.height
    assert (
        ours.drop("price_per_sqft").rows()
        == expected.drop("price_text", "sqft_text")
        .with_columns(pl.col("listing_count").cast(pl.Int32), pl.col("days_on_market").cast(pl.Int32))
        .rows()
    )
    for mine, price, sqft in zip(
        ours.get_column("price_per_sqft"), *expected.select("price_text", "sqft_text"), strict=True
    ):
        if price is None or sqft is None or Decimal(sqft) == 0:
            assert mine is None
        else:
            assert mine == (Decimal(price) / Decimal(sqft)).quantize(
                Decimal("0.01"), rounding=ROUND_HALF_EVEN
            )
