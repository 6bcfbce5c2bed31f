"""The hand-written baselines: what a competent engineer writes with polars and delta-rs alone.

The same steps as ingest, none of its guarantees: read the CSV as text, cast to the contract's
types, keep the last version of each key, derive the day partition, write a partitioned Delta
table. No raw copy, no quarantine, no ledger, no row accounting, no Prefect.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from deltalake import DeltaTable, write_deltalake

from bench import _data


def ingest_csv(csv_paths: list[Path], table_uri: Path) -> int:
    """CSV files -> typed, deduplicated (last wins on the key), partitioned Delta table; returns rows."""
    latest = _latest(csv_paths)
    write_deltalake(str(table_uri), latest.to_arrow(), mode="overwrite", partition_by=["_partition"])
    return latest.height


def merge_csv(csv_paths: list[Path], table_uri: Path) -> int:
    """CSV files merged into a table ingest_csv wrote: typed and deduplicated as there, then one delta-rs
    upsert on the key (a matched row is replaced, a new key inserted); returns the source's rows."""
    latest = _latest(csv_paths)
    key = _data.PRIMARY_KEY
    (
        DeltaTable(str(table_uri))
        .merge(latest.to_arrow(), predicate=f"t.{key} = s.{key}", source_alias="s", target_alias="t")
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )
    return latest.height


def _latest(csv_paths: list[Path]) -> pl.DataFrame:
    frame = pl.concat(
        [pl.read_csv(p, infer_schema=False, null_values=["NA"]) for p in csv_paths], how="vertical"
    )
    fmt = _data.DATETIME_FORMAT
    typed = frame.select(
        pl.col("event_id").cast(pl.Int64),
        pl.col("customer_id").cast(pl.Int32),
        pl.col("amount").cast(pl.Decimal(12, 2)),
        pl.col("currency"),
        pl.col("status"),
        pl.col("event_at").str.strptime(pl.Datetime("us"), fmt),
        pl.col("updated_at").str.strptime(pl.Datetime("us"), fmt),
    )
    latest = typed.sort(_data.INCREMENTAL_FIELD, maintain_order=True).unique(
        _data.PRIMARY_KEY, keep="last", maintain_order=True
    )
    return latest.with_columns(pl.col(_data.PARTITION_FIELD).dt.strftime("%Y-%m-%d").alias("_partition"))
