"""Deterministic real estate sample sources, landed as batches over time the way the providers drop them.

Two sources, each several CSV files:

- the county records office (``real_estate/county/parcels_<date>.csv``): one row per parcel with its
  legal fields. The first file is a full extract; later files carry what changed (sales recorded since).
- the listing service (``real_estate/listings/listings_<date>.csv``): one row per listing version,
  as agents typed it. A later file re-sends a listing whenever its price or status changes.

The mess they carry, on purpose:

- thousands separators in numbers (``"1,250,000"``), sometimes a ``$`` in prices;
- two date formats in one column: ISO ``2024-03-05`` and US ``03/05/2024`` (the county switched
  systems in February, and its March file mixes both; agents' tools differ);
- duplicates: an exact duplicate line within a file, and unchanged rows re-sent in later files;
- late updates: a later file changes an earlier listing's price or status, and one file re-sends a
  listing's *older* version after a newer one arrived (which must not win);
- a type change midway: the listing service sends ``sqft`` as integers (``1850``), then as text
  (``1,850 sq ft``) from March 1st, then as decimals (``1850.00``) from March 15th;
- agents type addresses, parcel ids and property types freely (``12 oak st.``, ``1001001008``,
  ``Single-Family Home``), and the county's new system writes ``19 Willow Lane`` where the old one
  wrote ``19 WILLOW LN``;
- rows that cannot be used: an impossible date (``2024-02-30``), a year ``19O8``, a price
  ``Call for price``, a day-first date ``15/03/2024``, a missing parcel id or listing id.

Most rows are generated from a seed; a few parcels (:data:`SCENARIO_PARCELS`) are written out by hand
so tests and docs can follow one story each. The same call always writes the same bytes.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
from dataclasses import dataclass, field, replace

from pipelines.components.resources import Storage

PREFIX = "real_estate"
COUNTY_BATCHES = ("2024-01-31", "2024-02-29", "2024-03-31")
LISTING_BATCHES = ("2024-02-01", "2024-02-15", "2024-03-01", "2024-03-15")
COUNTY_COLUMNS = (
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
LISTING_COLUMNS = (
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
DEFAULT_SEED = 20240131
GENERATED_PARCELS = 240

# The hand-written parcels and what each one shows (see docs/cookbooks.md).
SCENARIO_PARCELS = {
    "1001-001-001": "a listing's late updates: price cut, then under contract, then closed (sold)",
    "1001-001-002": "square feet conflict: county 1,400, listing 1,720",
    "1001-001-003": "address conflict: county HARBOR, agent Harbour; unit as #4",
    "1001-001-004": "address typed differently but the same after standardising; parcel id typed without dashes",
    "1001-001-005": "property type conflict: county two-to-four family (R2), agent Single Family Home",
    "1001-001-006": "withdrawn and relisted (two listings); the withdrawn one is re-sent late with an older version",
    "1001-001-007": "sale recorded in February (US date, duplicated line); the old deed re-sent in March must not win",
    "1001-001-008": "new construction: listed in January (id without dashes), in the county records from March",
    "9999-999-999": "a listing whose parcel id the county does not know",
    "1001-001-010": "vacant land: no square feet, so no price per square foot",
    "1001-001-011": "the county's March row has an impossible date (quarantined); the parcel keeps its record",
}

_SUFFIXES = {
    "ST": "STREET",
    "AVE": "AVENUE",
    "RD": "ROAD",
    "DR": "DRIVE",
    "LN": "LANE",
    "CT": "COURT",
    "PL": "PLACE",
    "BLVD": "BOULEVARD",
    "TER": "TERRACE",
    "WAY": "WAY",
}
_STREETS = (
    "OAK",
    "MAPLE",
    "CEDAR",
    "PINE",
    "ELM",
    "WALNUT",
    "CHESTNUT",
    "WILLOW",
    "BIRCH",
    "SPRUCE",
    "HIGHLAND",
    "LAKE",
    "HILL",
    "PARK",
    "RIVER",
    "SUMMIT",
    "MEADOW",
    "ORCHARD",
    "GARDEN",
    "FOREST",
)
_ZIPS = ("02138", "02139", "02140", "02141", "02142")
_SURNAMES = (
    "SMITH",
    "JOHNSON",
    "WILLIAMS",
    "BROWN",
    "JONES",
    "MILLER",
    "DAVIS",
    "GARCIA",
    "RODRIGUEZ",
    "WILSON",
    "MARTINEZ",
    "ANDERSON",
    "TAYLOR",
    "THOMAS",
    "MOORE",
    "LEE",
    "WALKER",
    "HALL",
    "YOUNG",
    "KING",
    "WRIGHT",
    "LOPEZ",
    "HILL",
    "SCOTT",
    "GREEN",
    "ADAMS",
    "BAKER",
    "NELSON",
    "CARTER",
    "MITCHELL",
)
_GIVEN = ("JAMES", "MARY", "ROBERT", "PATRICIA", "JOHN", "JENNIFER", "MICHAEL", "LINDA", "DAVID", "ELIZABETH")
_USE_CODES = (("R1", 55), ("RC", 20), ("RT", 10), ("R2", 6), ("R3", 5), ("VL", 4))
_AGENT_TYPES = {
    "R1": ("Single Family", "Single-Family Home", "SFR", "single family residence", "House"),
    "RC": ("Condo", "Condominium", "condo/apartment", "CONDO"),
    "RT": ("Townhouse", "Townhome", "Town House"),
    "R2": ("Multi-Family", "Duplex", "2-4 Units"),
    "R3": ("Multi-Family", "Triplex", "2-4 Units"),
    "VL": ("Land", "Lot/Land", "Vacant Land"),
}
_STATUS_TEXT = {
    "active": ("Active", "ACTIVE", "active"),
    "pending": ("Pending", "Under Contract"),
    "sold": ("Sold", "Closed"),
    "withdrawn": ("Withdrawn",),
}


@dataclass(frozen=True)
class _Parcel:
    parcel_id: str
    owner: str
    number: int
    street: str
    suffix: str  # a key of _SUFFIXES
    unit: str | None
    zip: str
    code: str
    lot: int | None
    building: int | None
    year: int | None
    assessed: int
    recorded: dt.date

    @property
    def address(self) -> str:
        unit = f" UNIT {self.unit}" if self.unit else ""
        return f"{self.number} {self.street} {self.suffix}{unit}"


@dataclass(frozen=True)
class _Listing:
    listing_id: str
    parcel: _Parcel
    typed_parcel_id: str
    typed_address: str
    typed_type: str
    price: int
    status: str  # a key of _STATUS_TEXT
    listed: dt.date
    status_date: dt.date
    sqft: float | None
    beds: int | None
    baths: float | None
    updated: dt.datetime


@dataclass
class LandingReport:
    """What one landing call wrote: files, and data rows per file."""

    files: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)


# formatting: how each provider writes values ---------------------------------------------------


def _money(value: int, style: str) -> str:
    if style == "plain":
        return str(value)
    text = f"{value:,}"
    return f"${text}" if style == "dollar" else text


def _iso(day: dt.date) -> str:
    return day.isoformat()


def _us(day: dt.date) -> str:
    return day.strftime("%m/%d/%Y")


def _sqft(value: float | None, batch: str) -> str:
    """The listing service's sqft: integer, then '1,850 sq ft' from March 1st, then decimal from March 15th."""
    if value is None:
        return ""
    if batch >= "2024-03-15":
        return f"{value:.2f}"
    if batch >= "2024-03-01":
        return f"{round(value):,} sq ft"
    return str(round(value))


def _county_row(p: _Parcel, date_text: str, address: str | None = None, **overrides: str) -> dict:
    row = {
        "parcel_id": p.parcel_id,
        "owner_name": p.owner,
        "situs_address": address or p.address,
        "situs_zip": p.zip,
        "land_use_code": p.code,
        "lot_size_sqft": f"{p.lot:,}" if p.lot is not None else "",
        "building_sqft": f"{p.building:,}" if p.building is not None else "",
        "year_built": str(p.year) if p.year is not None else "",
        "assessed_value": _money(p.assessed, "thousands"),
        "recorded_date": date_text,
    }
    return row | overrides


def _new_system_address(p: _Parcel) -> str:
    """The county's new system (from February): title case and the suffix written out."""
    unit = f" Unit {p.unit}" if p.unit else ""
    return f"{p.number} {p.street.title()} {_SUFFIXES[p.suffix].title()}{unit}"


def _listing_row(
    item: _Listing, batch: str, dates: str = "iso", price: str = "thousands", **overrides
) -> dict:
    day = _us if dates == "us" else _iso
    row = {
        "listing_id": item.listing_id,
        "parcel_id": item.typed_parcel_id,
        "address": item.typed_address,
        "zip": item.parcel.zip,
        "property_type": item.typed_type,
        "list_price": _money(item.price, price),
        "status": _STATUS_TEXT[item.status][0],
        "listed_date": day(item.listed),
        "status_date": day(item.status_date),
        "sqft": _sqft(item.sqft, batch),
        "beds": "" if item.beds is None else str(item.beds),
        "baths": "" if item.baths is None else f"{item.baths:.1f}",
        "updated_at": item.updated.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return row | overrides


def _typed_address(rng: random.Random, p: _Parcel) -> str:
    """An address as an agent might type it: any case, suffix short, dotted or long, units any way."""
    suffix = rng.choice((p.suffix, f"{p.suffix}.", _SUFFIXES[p.suffix]))
    text = f"{p.number} {p.street} {suffix}"
    if p.unit:
        text += rng.choice(
            (f" Apt {p.unit}", f" #{p.unit}", f" Unit {p.unit}", f", apt. {p.unit}", f" # {p.unit}")
        )
    case = rng.choice(("title", "title", "lower", "upper"))
    text = text.title() if case == "title" else text.lower() if case == "lower" else text.upper()
    return text.replace(" ", "  ", 1) if rng.random() < 0.1 else text


# the scenario parcels ------------------------------------------------------------------------


def _scenario_parcels() -> list[_Parcel]:
    d = dt.date
    return [
        _Parcel("1001-001-001", "GARCIA MARIA", 12, "OAK", "ST", None, "02139", "R1", 5000, 1850, 1925, 1_100_000, d(2016, 6, 15)),
        _Parcel("1001-001-002", "PATEL ANIL & RIYA", 14, "ELM", "ST", None, "02139", "R1", 4200, 1400, 1931, 780_000, d(2011, 9, 1)),
        _Parcel("1001-001-003", "CHEN WEI", 88, "HARBOR", "AVE", "4", "02141", "RC", None, 920, 2004, 610_000, d(2019, 3, 22)),
        _Parcel("1001-001-004", "OKAFOR NNAMDI", 7, "CHURCH", "ST", "2B", "02140", "RC", None, 1050, 1988, 655_000, d(2020, 7, 30)),
        _Parcel("1001-001-005", "LINDQVIST ERIK", 230, "MAPLE", "AVE", None, "02140", "R2", 6100, 2640, 1912, 1_320_000, d(2008, 4, 11)),
        _Parcel("1001-001-006", "BROWN DAVID", 45, "CEDAR", "RD", None, "02138", "R1", 7405, 2210, 1955, 1_450_000, d(2013, 11, 19)),
        _Parcel("1001-001-007", "HARRIS JOAN", 19, "WILLOW", "LN", None, "02138", "RT", 2300, 1600, 1999, 890_000, d(2015, 5, 1)),
        _Parcel("1001-001-010", "RIVERSIDE LAND TRUST", 300, "SUMMIT", "RD", None, "02142", "VL", 12500, None, None, 410_000, d(2021, 2, 8)),
        _Parcel("1001-001-011", "KOWALSKI ANNA", 61, "BIRCH", "ST", None, "02139", "R1", 3900, 1320, 1940, 700_000, d(2012, 1, 5)),
    ]  # fmt: skip


_NEW_CONSTRUCTION = _Parcel(
    "1001-001-008", "ALDER HOMES LLC", 5, "ALDER", "CT", None, "02142", "R1", 4800, 2400, 2023, 1_380_000,
    dt.date(2024, 3, 5),
)  # fmt: skip
_UNKNOWN_PARCEL = _Parcel(
    "9999-999-999", "", 3, "LAKE", "TER", None, "02142", "RT", None, 1500, None, 0, dt.date(2024, 1, 1)
)


def _scenario_listings(parcels: dict[str, _Parcel]) -> dict[str, list[dict]]:
    """Listing rows of the scenario parcels, per batch (the hand-written stories)."""
    p = parcels
    t = dt.datetime
    d = dt.date
    a = _Listing(
        "RE24-90001", p["1001-001-001"], "1001-001-001", "12 Oak Street", "Single Family Home",
        1_250_000, "active", d(2024, 1, 10), d(2024, 1, 10), 1850, 4, 2.5, t(2024, 1, 10, 9, 30),
    )  # fmt: skip
    price_cut = replace(a, price=1_199_000, updated=t(2024, 2, 10, 9, 0))
    under_contract = replace(
        price_cut, status="pending", status_date=d(2024, 2, 26), updated=t(2024, 2, 26, 15, 0)
    )
    closed = replace(under_contract, status="sold", status_date=d(2024, 3, 12), updated=t(2024, 3, 12, 17, 0))
    b = _Listing(
        "RE24-90002", p["1001-001-002"], "1001-001-002", "14 elm st.", "single family",
        899_000, "active", d(2024, 2, 5), d(2024, 2, 5), 1720, 3, 2.0, t(2024, 2, 5, 13, 0),
    )  # fmt: skip
    c = _Listing(
        "RE24-90003", p["1001-001-003"], "1001-001-003", "88 Harbour Avenue #4", "Condo",
        649_000, "active", d(2024, 2, 8), d(2024, 2, 8), 920, 2, 2.0, t(2024, 2, 8, 10, 30),
    )  # fmt: skip
    e = _Listing(
        "RE24-90004", p["1001-001-004"], "1001001004", "7  church street,  apt. 2b", "Condominium",
        689_000, "active", d(2024, 1, 22), d(2024, 1, 22), 1050, 2, 1.0, t(2024, 1, 22, 11, 0),
    )  # fmt: skip
    f = _Listing(
        "RE24-90005", p["1001-001-005"], "1001-001-005", "230 Maple Ave.", "Single Family Home",
        1_495_000, "active", d(2024, 1, 5), d(2024, 1, 5), 2640, 5, 3.0, t(2024, 1, 5, 10, 0),
    )  # fmt: skip
    g = _Listing(
        "RE24-90006", p["1001-001-006"], "1001-001-006", "45 Cedar Road", "SFR",
        1_599_000, "active", d(2023, 11, 15), d(2023, 11, 15), 2210, 4, 2.0, t(2024, 1, 20, 10, 0),
    )  # fmt: skip
    relist = replace(
        g, listing_id="RE24-90016", typed_address="45 Cedar Rd", typed_type="Single Family", price=1_525_000,
        listed=d(2024, 2, 20), status_date=d(2024, 2, 20), updated=t(2024, 2, 20, 9, 0),
    )  # fmt: skip
    h = _Listing(
        "RE24-90008", _NEW_CONSTRUCTION, "1001001008", "5 Alder Ct", "Single Family",
        1_425_000, "active", d(2024, 1, 25), d(2024, 1, 25), 2400, 4, 3.5, t(2024, 1, 25, 12, 0),
    )  # fmt: skip
    i = _Listing(
        "RE24-90009", _UNKNOWN_PARCEL, "9999-999-999", "3 Lake Terrace", "Townhome",
        799_000, "active", d(2024, 1, 18), d(2024, 1, 18), 1500, 3, 2.5, t(2024, 1, 18, 14, 0),
    )  # fmt: skip
    j = _Listing(
        "RE24-90010", p["1001-001-010"], "1001-001-010", "300 Summit Road", "Lot/Land",
        350_000, "active", d(2023, 12, 1), d(2023, 12, 1), None, None, None, t(2023, 12, 1, 9, 0),
    )  # fmt: skip
    unpriced = replace(
        a, listing_id="RE24-90020", parcel=p["1001-001-011"], typed_parcel_id="1001-001-011",
        typed_address="61 Birch St", updated=t(2024, 3, 14, 11, 0), listed=d(2024, 3, 14), status_date=d(2024, 3, 14),
    )  # fmt: skip
    day_first = replace(unpriced, listing_id="RE24-90021", updated=t(2024, 3, 14, 12, 0))
    no_parcel = replace(unpriced, listing_id="RE24-90022", updated=t(2024, 3, 14, 13, 0))
    no_id = replace(unpriced, listing_id="", updated=t(2024, 3, 14, 14, 0))
    withdrawn = replace(g, status="withdrawn", status_date=d(2024, 2, 12), updated=t(2024, 2, 12, 16, 0))
    return {
        "2024-02-01": [
            _listing_row(a, "2024-02-01"),
            _listing_row(e, "2024-02-01"),
            _listing_row(f, "2024-02-01"),
            _listing_row(g, "2024-02-01"),
            _listing_row(h, "2024-02-01"),
            _listing_row(i, "2024-02-01"),
            _listing_row(j, "2024-02-01"),
        ],
        "2024-02-15": [
            _listing_row(price_cut, "2024-02-15", dates="us"),
            _listing_row(price_cut, "2024-02-15", dates="us"),  # the same line twice
            _listing_row(b, "2024-02-15", dates="us", price="dollar"),
            _listing_row(c, "2024-02-15"),
            _listing_row(withdrawn, "2024-02-15", dates="us"),
        ],
        "2024-03-01": [
            _listing_row(under_contract, "2024-03-01", status="Under Contract"),
            _listing_row(replace(b, price=879_000, updated=t(2024, 2, 27, 9, 0)), "2024-03-01"),
            _listing_row(relist, "2024-03-01", dates="us"),
        ],
        "2024-03-15": [
            _listing_row(closed, "2024-03-15", dates="us", status="Closed"),
            _listing_row(
                replace(f, status="pending", status_date=d(2024, 3, 15), updated=t(2024, 3, 15, 16, 30)),
                "2024-03-15",
            ),
            _listing_row(g, "2024-03-15"),  # the older version of RE24-90006, re-sent after its withdrawal
            _listing_row(unpriced, "2024-03-15", list_price="Call for price"),
            _listing_row(day_first, "2024-03-15", listed_date="15/03/2024"),
            _listing_row(no_parcel, "2024-03-15", parcel_id=""),
            _listing_row(no_id, "2024-03-15"),
        ],
    }


def _scenario_county(parcels: dict[str, _Parcel]) -> dict[str, list[dict]]:
    """County rows of the scenario parcels after the first extract, per batch."""
    p = parcels
    sold = replace(p["1001-001-007"], owner="NGUYEN LINH", assessed=1_020_000, recorded=dt.date(2024, 2, 20))
    birch = p["1001-001-011"]
    return {
        "2024-02-29": [
            _county_row(sold, _us(sold.recorded), _new_system_address(sold)),
            _county_row(sold, _us(sold.recorded), _new_system_address(sold)),  # the same line twice
            _county_row(birch, _us(birch.recorded), _new_system_address(birch)),  # re-sent unchanged
        ],
        "2024-03-31": [
            _county_row(
                _NEW_CONSTRUCTION, _us(_NEW_CONSTRUCTION.recorded), _new_system_address(_NEW_CONSTRUCTION)
            ),
            _county_row(p["1001-001-007"], _iso(p["1001-001-007"].recorded)),  # the old deed, re-sent late
            _county_row(birch, "2024-02-30", _new_system_address(birch)),
            _county_row(
                replace(birch, parcel_id="1001-001-012", owner="FOSTER GRACE", number=9, street="PINE"),
                "2024-03-11",
                year_built="19O8",
            ),
            _county_row(
                replace(birch, parcel_id="", owner="UNKNOWN", number=77, street="SPRUCE"), "2024-03-12"
            ),
        ],
    }


# generated parcels and listings ----------------------------------------------------------------


def _generated_parcels(rng: random.Random, count: int) -> list[_Parcel]:
    codes = [code for code, weight in _USE_CODES for _ in range(weight)]
    ids: set[str] = set()
    parcels = []
    while len(parcels) < count:
        parcel_id = f"{rng.randint(2000, 4999)}-{rng.randint(1, 999):03d}-{rng.randint(1, 999):03d}"
        if parcel_id in ids:
            continue
        ids.add(parcel_id)
        code = rng.choice(codes)
        building = {
            "R1": (1100, 3600),
            "RC": (550, 1600),
            "RT": (1200, 2400),
            "R2": (2000, 4200),
            "R3": (2400, 4800),
        }.get(code)
        lot = {
            "R1": (3000, 15000),
            "RT": (1500, 4000),
            "R2": (3000, 8000),
            "R3": (3500, 9000),
            "VL": (4000, 20000),
        }.get(code)
        size = rng.randint(*building) if building else None
        area = rng.randint(*lot) if lot else None
        assessed = int(round((size * rng.randint(350, 650)) if size else (area * rng.randint(25, 45)), -3))
        owner = (
            f"{rng.choice(_STREETS)} HOLDINGS LLC"
            if rng.random() < 0.08
            else f"{rng.choice(_SURNAMES)} {rng.choice(_GIVEN)}"
            + (f" & {rng.choice(_GIVEN)}" if rng.random() < 0.3 else "")
        )
        parcels.append(
            _Parcel(
                parcel_id=parcel_id,
                owner=owner,
                number=rng.randint(1, 999),
                street=rng.choice(_STREETS),
                suffix=rng.choice(tuple(_SUFFIXES)),
                unit=rng.choice(("1", "2", "3", "4", "1A", "2B", "3C")) if code == "RC" else None,
                zip=rng.choice(_ZIPS),
                code=code,
                lot=area,
                building=size,
                year=rng.randint(1890, 2020) if size else None,
                assessed=assessed,
                recorded=dt.date(1995, 1, 1) + dt.timedelta(days=rng.randint(0, 10_500)),
            )
        )
    return parcels


def _moment(rng: random.Random, after: dt.date, through: dt.date) -> dt.datetime:
    """A working-hours time on a day in (after, through]."""
    day = after + dt.timedelta(days=rng.randint(1, (through - after).days))
    return dt.datetime(day.year, day.month, day.day, rng.randint(8, 17), rng.choice((0, 15, 30, 45)))


def _generated_listings(rng: random.Random, parcels: list[_Parcel]) -> dict[str, list[dict]]:
    """Listings of generated parcels: new ones in every batch, and price/status updates of earlier ones."""
    rows: dict[str, list[dict]] = {batch: [] for batch in LISTING_BATCHES}
    pool = list(parcels)
    rng.shuffle(pool)
    live: list[_Listing] = []
    previous = dt.date(2023, 10, 31)
    number = 100
    for batch, new_count in zip(LISTING_BATCHES, (105, 20, 15, 10), strict=True):
        cut = dt.date.fromisoformat(batch)
        dates = "iso" if batch == LISTING_BATCHES[0] else None
        # updates of listings that arrived in earlier batches: at most one per listing per batch
        for index, item in enumerate(live):
            roll = rng.random()
            if item.status in ("sold", "withdrawn") or roll > 0.35:
                continue
            moment = _moment(rng, previous, cut)
            if item.status == "active" and roll < 0.15:
                changed = replace(item, price=int(round(item.price * 0.97, -3)), updated=moment)
            elif item.status == "active" and roll < 0.30:
                changed = replace(item, status="pending", status_date=moment.date(), updated=moment)
            elif item.status == "active":
                changed = replace(item, status="withdrawn", status_date=moment.date(), updated=moment)
            else:
                changed = replace(item, status="sold", status_date=moment.date(), updated=moment)
            live[index] = changed
            rows[batch].append(_row_as_typed(rng, changed, batch, dates))
        for _ in range(new_count):
            parcel = pool.pop()
            moment = _moment(rng, previous, cut)
            number += 1
            building = parcel.building
            item = _Listing(
                listing_id=f"RE24-{number:05d}",
                parcel=parcel,
                typed_parcel_id=parcel.parcel_id
                if rng.random() < 0.85
                else parcel.parcel_id.replace("-", ""),
                typed_address=_typed_address(rng, parcel),
                typed_type=rng.choice(_AGENT_TYPES[parcel.code]),
                price=int(round(parcel.assessed * rng.uniform(1.02, 1.30), -3)),
                status="active",
                listed=moment.date(),
                status_date=moment.date(),
                sqft=float(building) if building else None,
                beds=None if parcel.code == "VL" else rng.randint(0 if parcel.code == "RC" else 2, 5),
                baths=None if parcel.code == "VL" else rng.choice((1.0, 1.5, 2.0, 2.5, 3.0, 3.5)),
                updated=moment,
            )
            live.append(item)
            rows[batch].append(_row_as_typed(rng, item, batch, dates))
        previous = cut
    return rows


def _row_as_typed(rng: random.Random, item: _Listing, batch: str, dates: str | None) -> dict:
    price = rng.choices(("thousands", "plain", "dollar"), weights=(7, 2, 1))[0]
    row = _listing_row(item, batch, dates=dates or rng.choice(("iso", "iso", "us")), price=price)
    row["status"] = rng.choice(_STATUS_TEXT[item.status])
    return row


def _generated_county(
    rng: random.Random, parcels: list[_Parcel], new: list[_Parcel]
) -> dict[str, list[dict]]:
    """County change files: sales since the last file, a few unchanged rows re-sent, new parcels."""
    rows: dict[str, list[dict]] = {batch: [] for batch in COUNTY_BATCHES[1:]}
    candidates = list(parcels)
    rng.shuffle(candidates)
    previous = dt.date.fromisoformat(COUNTY_BATCHES[0])
    for batch in COUNTY_BATCHES[1:]:
        cut = dt.date.fromisoformat(batch)
        for _ in range(8):
            parcel = candidates.pop()
            day = previous + dt.timedelta(days=rng.randint(1, (cut - previous).days))
            owner = f"{rng.choice(_SURNAMES)} {rng.choice(_GIVEN)}"
            assessed = int(round(parcel.assessed * rng.uniform(1.0, 1.2), -3))
            sold = replace(parcel, owner=owner, assessed=assessed, recorded=day)
            date_text = _us(day) if batch == COUNTY_BATCHES[1] or rng.random() < 0.5 else _iso(day)
            rows[batch].append(_county_row(sold, date_text, _new_system_address(sold)))
        previous = cut
    for parcel in candidates[-3:]:
        rows[COUNTY_BATCHES[1]].append(_county_row(parcel, _us(parcel.recorded), _new_system_address(parcel)))
    for parcel in new:
        day = dt.date(2024, 3, rng.randint(1, 31))
        rows[COUNTY_BATCHES[2]].append(
            _county_row(
                replace(parcel, recorded=day),
                _iso(day) if rng.random() < 0.5 else _us(day),
                _new_system_address(parcel),
            )
        )
    return rows


# landing -------------------------------------------------------------------------------------


def sample_files(seed: int = DEFAULT_SEED) -> dict[str, list[dict]]:
    """Every batch file of both sources (relative path -> rows as text), before any landing."""
    rng = random.Random(seed)
    scenario = {p.parcel_id: p for p in _scenario_parcels()}
    generated = _generated_parcels(rng, GENERATED_PARCELS + 4)
    existing, subdivision = generated[:GENERATED_PARCELS], generated[GENERATED_PARCELS:]
    listings = _generated_listings(rng, existing)
    county_changes = _generated_county(rng, existing, subdivision)
    scenario_listings = _scenario_listings(scenario)
    scenario_county = _scenario_county(scenario)

    files: dict[str, list[dict]] = {}
    first = [_county_row(p, _iso(p.recorded)) for p in [*scenario.values(), *existing]]
    files[f"{PREFIX}/county/parcels_{COUNTY_BATCHES[0]}.csv"] = sorted(first, key=lambda r: r["parcel_id"])
    for batch in COUNTY_BATCHES[1:]:
        files[f"{PREFIX}/county/parcels_{batch}.csv"] = county_changes[batch] + scenario_county[batch]
    for batch in LISTING_BATCHES:
        files[f"{PREFIX}/listings/listings_{batch}.csv"] = listings[batch] + scenario_listings[batch]
    return files


def _csv_bytes(columns: tuple[str, ...], rows: list[dict]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _batch_date(path: str) -> str:
    return path.rsplit("_", 1)[1].removesuffix(".csv")


def land_real_estate(
    landing: Storage, *, through: str = "2024-03-31", seed: int = DEFAULT_SEED
) -> LandingReport:
    """Write every batch file of both sources dated on or before ``through`` into ``landing``.

    Landing through an earlier date and then a later one delivers the batches in the order the
    providers sent them. Files already landed are rewritten with the same bytes.
    """
    try:
        cut = dt.date.fromisoformat(through).isoformat()
    except ValueError as exc:
        raise ValueError(f"through must be a YYYY-MM-DD date, got {through!r}.") from exc
    report = LandingReport()
    for rel, rows in sample_files(seed).items():
        if _batch_date(rel) > cut:
            continue
        columns = COUNTY_COLUMNS if "/county/" in rel else LISTING_COLUMNS
        landing.write_atomic(rel, _csv_bytes(columns, rows))
        report.files.append(rel)
        report.rows[rel] = len(rows)
    report.files.sort()
    return report
