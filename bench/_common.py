"""Helpers the ingest-based benchmarks share: run the flow against a folder, compare tables."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import polars as pl

from bench import _data, _env

NAMESPACE = "bench"


def fresh(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def link_tree(source: Path, target: Path) -> None:
    """Copy a data folder by hard links: raw files and Delta data files are never modified in place."""
    fresh(target)
    shutil.copytree(source, target, copy_function=os.link)


def run_ingest(*, data: Path, landing: Path, registry: Path, dataset: str = "events"):
    """The ingest flow (Prefect, in-process API) for one dataset; returns its IngestResult."""
    from pipelines.workflows.ingest import ingest

    _env.use_pipelines(data_url=data, landing_url=landing, registry=registry, namespace=NAMESPACE)
    return ingest(dataset)


def cleaned_path(data: Path, dataset: str = "events") -> Path:
    return data / NAMESPACE / "cleaned" / dataset


def table_rows(path: Path) -> pl.DataFrame:
    """The contract columns of a Delta table, sorted by key: what two sides must agree on."""
    frame = pl.read_delta(str(path)).select(list(_data.SCHEMA))
    return frame.sort(_data.PRIMARY_KEY)


def same_table(ours: Path, baseline: Path) -> dict[str, int]:
    """Raise unless both tables hold the same rows; returns the row count and partitions."""
    left, right = table_rows(ours), table_rows(baseline)
    if left.height != right.height:
        raise AssertionError(f"ours wrote {left.height} rows, the baseline {right.height}: the sides differ")
    if not left.equals(right):
        raise AssertionError("ours and the baseline wrote different rows for the same input")
    partitions = pl.read_delta(str(ours)).get_column("_partition").n_unique()
    return {"rows": left.height, "partitions": partitions}


SHARED_COLUMNS = [*_data.SCHEMA, "_run_id", "_ingested_at"]  # what the share sends, in table order


def run_share(*, data: Path, landing: Path, registry: Path, warehouse_url: str, mode: str | None = None):
    """The share flow (Prefect, in-process API) of `events` into a warehouse; returns its ShareResult."""
    from pipelines.workflows.share import share

    _env.use_pipelines(data_url=data, landing_url=landing, registry=registry, namespace=NAMESPACE)
    os.environ["PIPELINES_WAREHOUSE_URL"] = warehouse_url
    return share("events", mode=mode)


def shared_rows(data: Path, run_id: str | None = None) -> pl.DataFrame:
    """The cleaned table's rows as the share sends them (optionally one run's rows), in key order."""
    frame = pl.scan_delta(str(cleaned_path(data)))
    if run_id is not None:
        frame = frame.filter(pl.col("_run_id") == run_id)
    return frame.select(SHARED_COLUMNS).sort(_data.PRIMARY_KEY).collect()
