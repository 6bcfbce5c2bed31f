"""Deterministic benchmark data: an `events` dataset, generated once per size into the cache dir.

Every file is a pure function of (rows, seed, part), so two machines, or two runs on one
machine, benchmark the same bytes. A generated folder is written under a temporary name and
renamed into place, so an interrupted generation is never mistaken for a finished one.
"""

from __future__ import annotations

import csv
import os
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from bench import _cachelock

SEED = 20240901
START = datetime(2024, 1, 1)
DAYS = 60  # event days, so a full load writes about 60 partitions
DUPLICATE_SHARE = 0.02  # rows that repeat an earlier key with a later updated_at
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
DATA_VERSION = "v1"  # bump when the generator changes, so stale caches are not reused

CONTRACT = """\
description: Generated order events for the benchmarks (deterministic, seeded).
source:
  null_values: ["NA"]
  delimiter: ","
columns:
  event_id:    {type: int64, nullable: false}
  customer_id: {type: int32, nullable: false}
  amount:      {type: "decimal(12,2)"}
  currency:    {type: string, nullable: false}
  status:      {type: string}
  event_at:    {type: datetime, format: "%Y-%m-%d %H:%M:%S", nullable: false}
  updated_at:  {type: datetime, format: "%Y-%m-%d %H:%M:%S", nullable: false}
"""

# The contract's types, for the hand-written baselines.
SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.Int64(),
    "customer_id": pl.Int32(),
    "amount": pl.Decimal(12, 2),
    "currency": pl.String(),
    "status": pl.String(),
    "event_at": pl.Datetime("us"),
    "updated_at": pl.Datetime("us"),
}
PRIMARY_KEY = "event_id"
INCREMENTAL_FIELD = "updated_at"
PARTITION_FIELD = "event_at"

REGISTRY_FIELDS = (
    "name",
    "stage",
    "source",
    "format",
    "primary_key",
    "incremental_field",
    "partition_field",
    "ingestion_style",
    "lookback",
    "schema_policy",
    "quality_policy",
    "description",
)
_STATUSES = ("new", "paid", "shipped", "refunded", "cancelled")
_CURRENCIES = ("EUR", "USD", "GBP")


def events(rows: int, *, seed: int = SEED, first_id: int = 0, day_offset: int = 0) -> pl.DataFrame:
    """`rows` text rows of the events dataset; ~2% repeat an earlier key with a later updated_at."""
    rng = np.random.default_rng(seed)
    unique = max(1, rows - int(rows * DUPLICATE_SHARE))
    ids = np.arange(first_id, first_id + unique, dtype=np.int64)
    repeats = rng.choice(ids, size=rows - unique, replace=True) if rows > unique else ids[:0]
    event_id = np.concatenate([ids, repeats])
    # event time: spread over DAYS days from START (+ day_offset), a function of the key so a repeat
    # of a key keeps its event day; updated_at: event time + up to 2 days, repeats later still.
    event_seconds = (event_id * 7919 % (DAYS * 86_400)) + day_offset * 86_400
    lag = rng.integers(0, 2 * 86_400, size=rows)
    lag[unique:] += 3 * 86_400
    amount_cents = rng.integers(-5_000, 5_000_000, size=rows)
    frame = pl.DataFrame(
        {
            "event_id": event_id,
            "customer_id": rng.integers(1, 2_000_000, size=rows, dtype=np.int32),
            "cents": amount_cents,
            "currency": rng.choice(np.array(_CURRENCIES), size=rows),
            "status": rng.choice(np.array(_STATUSES), size=rows),
            "event_s": event_seconds,
            "updated_s": event_seconds + lag,
        }
    )
    start = pl.lit(START)
    cents = pl.col("cents")
    sign = pl.when(cents < 0).then(pl.lit("-")).otherwise(pl.lit(""))
    return frame.select(
        "event_id",
        "customer_id",
        pl.concat_str(
            sign,
            (cents.abs() // 100).cast(pl.String),
            pl.lit("."),
            (cents.abs() % 100).cast(pl.String).str.zfill(2),
        ).alias("amount"),
        "currency",
        # a few missing statuses, written as the contract's null value
        pl.when(pl.col("event_id") % 97 == 0).then(pl.lit("NA")).otherwise(pl.col("status")).alias("status"),
        (start + pl.duration(seconds=pl.col("event_s"))).dt.strftime(DATETIME_FORMAT).alias("event_at"),
        (start + pl.duration(seconds=pl.col("updated_s"))).dt.strftime(DATETIME_FORMAT).alias("updated_at"),
    )


def increment(base_rows: int, share: float = 0.01) -> pl.DataFrame:
    """share x base_rows rows after a base load: half new keys (new days), half late updates of old keys."""
    rows = max(2, int(base_rows * share))
    new = events(rows // 2, seed=SEED + 1, first_id=base_rows, day_offset=DAYS)
    rng = np.random.default_rng(SEED + 2)
    unique_base = max(1, base_rows - int(base_rows * DUPLICATE_SHARE))
    old_ids = np.sort(rng.choice(unique_base, size=rows - rows // 2, replace=False))
    late = (
        events(base_rows, seed=SEED)
        .filter(pl.col("event_id").is_in(old_ids))
        .unique("event_id", keep="first", maintain_order=True)
    )
    # A later version of each old row: newer updated_at (after the base watermark), new status.
    late = late.with_columns(
        pl.lit("refunded").alias("status"),
        (pl.lit(START) + pl.duration(days=DAYS + 7) + pl.duration(seconds=pl.col("event_id") % 86_400))
        .dt.strftime(DATETIME_FORMAT)
        .alias("updated_at"),
    )
    return pl.concat([new, late])


def _write_csv(frame: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(path)


def _generated(folder: Path, build) -> Path:
    """Build `folder` once: into a temporary sibling, then renamed (a partial build is never reused).

    Under the cache lock, so a process that finds another building the same entry waits for it."""
    if (folder / ".complete").exists():
        return folder
    with _cachelock.building(folder):
        if (folder / ".complete").exists():
            return folder
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        build(tmp)
        (tmp / ".complete").write_text("")
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    return folder


def events_landing(
    cache: Path, rows: int, *, with_increment: bool = False, increment_share: float = 0.01
) -> Path:
    """A landing folder holding events/part-0000.csv (`rows` rows) and, optionally, the increment
    (`increment_share` x rows: half new keys, half later versions of old keys) as part-0001.csv."""
    base = _generated(
        cache / "data" / f"events-{rows}-{DATA_VERSION}",
        lambda tmp: _write_csv(events(rows), tmp / "events" / "part-0000.csv"),
    )
    if not with_increment:
        return base

    def build(tmp: Path) -> None:
        (tmp / "events").mkdir(parents=True)
        os.link(base / "events" / "part-0000.csv", tmp / "events" / "part-0000.csv")
        _write_csv(increment(rows, increment_share), tmp / "events" / "part-0001.csv")

    name = f"events-{rows}-inc-{DATA_VERSION}"
    if increment_share != 0.01:
        name = f"events-{rows}-inc{increment_share:g}-{DATA_VERSION}"
    return _generated(cache / "data" / name, build)


def write_registry(folder: Path, datasets: dict[str, str]) -> Path:
    """A registry with one incremental `events`-shaped dataset per name -> landing glob."""
    (folder / "contracts").mkdir(parents=True, exist_ok=True)
    with open(folder / "datasets.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, REGISTRY_FIELDS)
        writer.writeheader()
        for name, source in datasets.items():
            writer.writerow(
                {
                    "name": name,
                    "stage": "cleaned",
                    "source": source,
                    "format": "csv",
                    "primary_key": PRIMARY_KEY,
                    "incremental_field": INCREMENTAL_FIELD,
                    "partition_field": PARTITION_FIELD,
                    "ingestion_style": "incremental",
                    "lookback": "1d",
                    "schema_policy": "freeze",
                    "quality_policy": "quarantine",
                    "description": "Generated order events (benchmark data).",
                }
            )
            (folder / "contracts" / f"{name}.yaml").write_text(CONTRACT)
    return folder / "datasets.csv"
