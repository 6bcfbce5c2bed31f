"""Real estate: one property record per parcel from the county records and the listing service.

Pure polars (no Prefect): the registry names :func:`properties` and :func:`property_conflicts` as
the transforms of the aggregated datasets of the same names; both take the cleaned inputs
``county_parcels`` and ``listings`` as lazy frames.

Rules:
- Parcels are matched on their id with case and punctuation ignored (``1001-001-008`` is
  ``1001001008``), because agents type ids either way.
- The county is authoritative for legal fields (owner, address, zip, type, lot, building size,
  year built, assessed value, recorded date); the listing for price, status and dates, beds and
  baths. A field the county lacks falls back to the listing's value.
- A parcel with several listings takes its current one: the latest ``listed_date`` (then the
  latest ``updated_at``, then the largest ``listing_id``); ``listing_count`` says how many there were.
- A parcel only one side knows is kept (``record_source`` = ``county_only`` / ``listing_only``).
- Where both sides give address, zip, property type or square feet and they disagree after
  standardisation, the field is named in ``conflicts`` and detailed in ``property_conflicts``.
"""

from __future__ import annotations

import polars as pl

from pipelines.components.errors import PipelinesError

COUNTY, LISTINGS = "county_parcels", "listings"

PROPERTY_TYPES = ("single_family", "condo", "townhouse", "multi_family", "land", "other")

# County land-use codes -> the property type vocabulary.
COUNTY_USE_CODES = {
    "R1": "single_family",
    "RC": "condo",
    "RT": "townhouse",
    "R2": "multi_family",
    "R3": "multi_family",
    "R4": "multi_family",
    "VL": "land",
}

# Agent text, lower-cased with every run of non-alphanumerics turned into one space.
AGENT_TYPES = {
    **{
        text: "single_family"
        for text in (
            "single family",
            "single family home",
            "single family residence",
            "single family detached",
            "sfr",
            "sfh",
            "house",
            "detached",
        )
    },
    **{
        text: "condo"
        for text in ("condo", "condominium", "condo apartment", "condo unit", "apartment condo", "co op")
    },
    **{text: "townhouse" for text in ("townhouse", "townhome", "town house", "town home", "row house")},
    **{
        text: "multi_family"
        for text in (
            "multi family",
            "multifamily",
            "duplex",
            "triplex",
            "fourplex",
            "2 family",
            "3 family",
            "2 4 units",
            "two family",
            "three family",
        )
    },
    **{text: "land" for text in ("land", "lot", "lot land", "vacant land", "vacant lot", "acreage")},
}

LISTING_STATUSES = ("active", "pending", "sold", "withdrawn", "expired", "other")
STATUS_TEXT = {
    "active": "active",
    "coming soon": "active",
    "new": "active",
    "back on market": "active",
    "pending": "pending",
    "under contract": "pending",
    "contingent": "pending",
    "sold": "sold",
    "closed": "sold",
    "withdrawn": "withdrawn",
    "cancelled": "withdrawn",
    "canceled": "withdrawn",
    "off market": "withdrawn",
    "expired": "expired",
}

# USPS street suffix abbreviations (long and common variant forms -> standard).
STREET_SUFFIXES = {
    "STREET": "ST",
    "STR": "ST",
    "AVENUE": "AVE",
    "AV": "AVE",
    "ROAD": "RD",
    "DRIVE": "DR",
    "DRV": "DR",
    "LANE": "LN",
    "COURT": "CT",
    "PLACE": "PL",
    "BOULEVARD": "BLVD",
    "BLV": "BLVD",
    "TERRACE": "TER",
    "TERR": "TER",
    "CIRCLE": "CIR",
    "PARKWAY": "PKWY",
    "PKY": "PKWY",
    "HIGHWAY": "HWY",
    "SQUARE": "SQ",
}
DIRECTIONS = {
    "NORTH": "N",
    "SOUTH": "S",
    "EAST": "E",
    "WEST": "W",
    "NORTHEAST": "NE",
    "NORTHWEST": "NW",
    "SOUTHEAST": "SE",
    "SOUTHWEST": "SW",
}
_UNIT = r"\s*(?:\b(?:APT|APARTMENT|UNIT|STE|SUITE)\b\s*#?|#)\s*([0-9A-Z][0-9A-Z-]*)$"

# Fields compared between the county and the current listing, after standardisation.
CONFLICT_FIELDS = ("address", "property_type", "sqft", "zip")
SQFT_TOLERANCE = 1  # square feet: sizes less than this apart agree (1850 and 1850.5)

PROPERTIES_SCHEMA: dict[str, pl.DataType] = {
    "parcel_id": pl.String(),
    "record_source": pl.String(),
    "address": pl.String(),
    "zip": pl.String(),
    "property_type": pl.String(),
    "owner_name": pl.String(),
    "lot_size_sqft": pl.Int32(),
    "year_built": pl.Int16(),
    "assessed_value": pl.Decimal(12, 2),
    "recorded_date": pl.Date(),
    "sqft": pl.Decimal(9, 2),
    "listing_id": pl.String(),
    "listing_count": pl.Int32(),
    "list_price": pl.Decimal(12, 2),
    "listing_status": pl.String(),
    "listed_date": pl.Date(),
    "status_date": pl.Date(),
    "days_on_market": pl.Int32(),
    "listings_as_of": pl.Date(),
    "price_per_sqft": pl.Decimal(10, 2),
    "beds": pl.Int8(),
    "baths": pl.Decimal(3, 1),
    "conflicts": pl.String(),
    "conflict_count": pl.Int32(),
}

CONFLICTS_SCHEMA: dict[str, pl.DataType] = {
    "parcel_id": pl.String(),
    "field": pl.String(),
    "county_value": pl.String(),
    "listing_value": pl.String(),
    "county_raw": pl.String(),
    "listing_raw": pl.String(),
    "listing_id": pl.String(),
}

_COUNTY_COLUMNS = (
    "parcel_id",
    "owner_name",
    "situs_address",
    "situs_zip",
    "land_use_code",
    "lot_size_sqft",
    "building_sqft",
    "year_built",
    "assessed_value",
    "recorded_date",
)
_LISTING_COLUMNS = (
    "listing_id",
    "parcel_id",
    "address",
    "zip",
    "property_type",
    "list_price",
    "status",
    "listed_date",
    "status_date",
    "sqft",
    "beds",
    "baths",
    "updated_at",
)


# standardisation (public: reusable and unit-tested) --------------------------------------------


def parcel_key(expr: pl.Expr) -> pl.Expr:
    """The matching key of a parcel id: upper case, letters and digits only."""
    return expr.str.to_uppercase().str.replace_all(r"[^0-9A-Z]", "")


def _squash(expr: pl.Expr) -> pl.Expr:
    return expr.str.replace_all(r"\s+", " ").str.strip_chars()


def standardise_address(expr: pl.Expr) -> pl.Expr:
    """A street line in one form: upper case, USPS suffixes and directions, units as ``UNIT x``.

    ``12 Oak Street``, ``12 oak st.`` and ``12  OAK ST`` -> ``12 OAK ST``;
    ``7 Church St, Apt. 2b``, ``7 church street #2B`` -> ``7 CHURCH ST UNIT 2B``. Blank -> null.
    """
    text = _squash(expr.str.to_uppercase().str.replace_all(r"[.,]", " "))
    text = text.str.replace(_UNIT, " UNIT ${1}")
    for long, short in {**STREET_SUFFIXES, **DIRECTIONS}.items():
        text = text.str.replace_all(rf"\b{long}\b", short)
    text = _squash(text)
    return pl.when(text == "").then(pl.lit(None, pl.String)).otherwise(text)


def _vocabulary_text(expr: pl.Expr) -> pl.Expr:
    return _squash(expr.str.to_lowercase().str.replace_all(r"[^0-9a-z]+", " "))


def _lookup(text: pl.Expr, mapping: dict[str, str]) -> pl.Expr:
    """Mapped value; ``other`` for a value the mapping lacks; null stays null."""
    return (
        pl.when(text.is_null() | (text == ""))
        .then(pl.lit(None, pl.String))
        .otherwise(text.replace_strict(mapping, default="other", return_dtype=pl.String))
    )


def standardise_agent_type(expr: pl.Expr) -> pl.Expr:
    """Agent text (``Single-Family Home``, ``Townhome``, ``Lot/Land``) -> the property type vocabulary."""
    vocabulary = {**AGENT_TYPES, **{t.replace("_", " "): t for t in PROPERTY_TYPES}}
    return _lookup(_vocabulary_text(expr), vocabulary)


def standardise_county_type(expr: pl.Expr) -> pl.Expr:
    """County land-use code (``R1``, ``RC``, ...) -> the property type vocabulary."""
    return _lookup(expr.str.strip_chars().str.to_uppercase(), COUNTY_USE_CODES)


def standardise_status(expr: pl.Expr) -> pl.Expr:
    """Listing status text (``ACTIVE``, ``Under Contract``, ``Closed``) -> the status vocabulary."""
    return _lookup(_vocabulary_text(expr), {**STATUS_TEXT, **{s: s for s in LISTING_STATUSES}})


# the merge ----------------------------------------------------------------------------------


def _input(inputs: dict[str, pl.LazyFrame], name: str, columns: tuple[str, ...]) -> pl.LazyFrame:
    if name not in inputs:
        raise PipelinesError(
            f"The real estate transform needs the input {name!r} but got {sorted(inputs)}; "
            "name it in the registry row's inputs (county_parcels|listings)."
        )
    frame = inputs[name]
    missing = [c for c in columns if c not in frame.collect_schema()]
    if missing:
        raise PipelinesError(
            f"The real estate transform's input {name!r} lacks column(s) {', '.join(missing)}; "
            f"add them to contracts/{name}.yaml and re-ingest with full_refresh."
        )
    return frame.select(columns)


def _merged(inputs: dict[str, pl.LazyFrame]) -> pl.LazyFrame:
    """County and current listing side by side, one row per parcel, with standardised fields."""
    county = _input(inputs, COUNTY, _COUNTY_COLUMNS).select(
        parcel_key(pl.col("parcel_id")).alias("_key"),
        pl.col("parcel_id").str.strip_chars().alias("c_parcel_id"),
        pl.col("owner_name"),
        pl.col("situs_address").alias("c_address_raw"),
        standardise_address(pl.col("situs_address")).alias("c_address"),
        pl.col("situs_zip").str.strip_chars().alias("c_zip"),
        pl.col("land_use_code").alias("c_type_raw"),
        standardise_county_type(pl.col("land_use_code")).alias("c_type"),
        pl.col("lot_size_sqft"),
        pl.col("building_sqft").cast(pl.Decimal(9, 2)).alias("c_sqft"),
        pl.col("year_built"),
        pl.col("assessed_value"),
        pl.col("recorded_date"),
    )
    listings = _input(inputs, LISTINGS, _LISTING_COLUMNS)
    current = (
        listings.with_columns(
            parcel_key(pl.col("parcel_id")).alias("_key"),
            pl.col("updated_at").max().dt.date().alias("listings_as_of"),
        )
        .with_columns(pl.len().over("_key").cast(pl.Int32).alias("listing_count"))
        .sort(["_key", "listed_date", "updated_at", "listing_id"], nulls_last=False)
        .unique(subset="_key", keep="last", maintain_order=True)
        .select(
            pl.col("_key"),
            pl.col("parcel_id").str.strip_chars().alias("l_parcel_id"),
            pl.col("listing_id"),
            pl.col("listing_count"),
            pl.col("listings_as_of"),
            pl.col("address").alias("l_address_raw"),
            standardise_address(pl.col("address")).alias("l_address"),
            pl.col("zip").str.strip_chars().alias("l_zip"),
            pl.col("property_type").alias("l_type_raw"),
            standardise_agent_type(pl.col("property_type")).alias("l_type"),
            pl.col("sqft").cast(pl.Decimal(9, 2)).alias("l_sqft"),
            pl.col("list_price"),
            standardise_status(pl.col("status")).alias("listing_status"),
            pl.col("listed_date"),
            pl.col("status_date"),
            pl.col("updated_at"),
            pl.col("beds"),
            pl.col("baths"),
        )
    )
    merged = county.join(current, on="_key", how="full", coalesce=True)
    sqft_gap = (pl.col("c_sqft").cast(pl.Float64) - pl.col("l_sqft").cast(pl.Float64)).abs()
    flags = {
        "address": pl.col("c_address") != pl.col("l_address"),
        "property_type": pl.col("c_type") != pl.col("l_type"),
        "sqft": sqft_gap >= SQFT_TOLERANCE,
        "zip": pl.col("c_zip") != pl.col("l_zip"),
    }
    ended = pl.col("listing_status") != "active"
    end = (
        pl.when(ended)
        .then(pl.coalesce(pl.col("status_date"), pl.col("updated_at").dt.date()))
        .otherwise(pl.col("listings_as_of"))
    )
    sqft = pl.coalesce(pl.col("c_sqft"), pl.col("l_sqft"))
    return merged.with_columns(
        pl.coalesce(pl.col("c_parcel_id"), pl.col("l_parcel_id")).alias("parcel_id"),
        pl.when(pl.col("c_parcel_id").is_not_null() & pl.col("listing_id").is_not_null())
        .then(pl.lit("both"))
        .when(pl.col("c_parcel_id").is_not_null())
        .then(pl.lit("county_only"))
        .otherwise(pl.lit("listing_only"))
        .alias("record_source"),
        pl.coalesce(pl.col("c_address"), pl.col("l_address")).alias("address"),
        pl.coalesce(pl.col("c_zip"), pl.col("l_zip")).alias("zip"),
        pl.coalesce(pl.col("c_type"), pl.col("l_type")).alias("property_type"),
        sqft.alias("sqft"),
        (end - pl.col("listed_date")).dt.total_days().alias("days_on_market"),
        pl.when(sqft > 0).then(pl.col("list_price") / sqft).alias("price_per_sqft"),
        *[flag.fill_null(False).alias(f"_conflict_{name}") for name, flag in flags.items()],
    ).with_columns(
        pl.concat_list([pl.when(pl.col(f"_conflict_{n}")).then(pl.lit(n)) for n in CONFLICT_FIELDS])
        .list.drop_nulls()
        .alias("_conflicts")
    )


def properties(inputs: dict[str, pl.LazyFrame]) -> pl.LazyFrame:
    """One property record per parcel: county legal fields, the current listing, derived fields, conflicts."""
    merged = _merged(inputs)
    return (
        merged.with_columns(
            pl.when(pl.col("_conflicts").list.len() > 0)
            .then(pl.col("_conflicts").list.join("|"))
            .alias("conflicts"),
            pl.col("_conflicts").list.len().alias("conflict_count"),
        )
        .select([pl.col(name).cast(dtype) for name, dtype in PROPERTIES_SCHEMA.items()])
        .sort("parcel_id")
    )


def property_conflicts(inputs: dict[str, pl.LazyFrame]) -> pl.LazyFrame:
    """One row per parcel and field where the county and the current listing disagree."""
    merged = _merged(inputs)
    values = {
        "address": ("c_address", "l_address", "c_address_raw", "l_address_raw"),
        "property_type": ("c_type", "l_type", "c_type_raw", "l_type_raw"),
        "sqft": ("c_sqft", "l_sqft", "c_sqft", "l_sqft"),
        "zip": ("c_zip", "l_zip", "c_zip", "l_zip"),
    }
    parts = [
        merged.filter(pl.col(f"_conflict_{name}")).select(
            pl.col("parcel_id"),
            pl.lit(name).alias("field"),
            *[
                pl.col(column).cast(pl.String).alias(alias)
                for column, alias in zip(
                    values[name], ("county_value", "listing_value", "county_raw", "listing_raw"), strict=True
                )
            ],
            pl.col("listing_id"),
        )
        for name in CONFLICT_FIELDS
    ]
    return (
        pl.concat(parts, how="vertical")
        .select([pl.col(name).cast(dtype) for name, dtype in CONFLICTS_SCHEMA.items()])
        .sort("parcel_id", "field")
    )
