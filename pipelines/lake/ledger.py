"""The ``_meta`` ledgers: run history and schema versions (derived; a table's commits are the truth)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import polars as pl

from pipelines.lake.layout import META
from pipelines.lake.table import Lake

RUNS, SCHEMAS = "runs", "schemas"


def record_run(lake: Lake, row: dict[str, Any]) -> None:
    """Append one run's counts to ``_meta/runs`` (``finished_at`` in UTC)."""
    frame = pl.DataFrame([row]).with_columns(pl.col("finished_at").dt.replace_time_zone("UTC"))
    lake.append(META, RUNS, frame)


def runs(lake: Lake) -> pl.DataFrame:
    return lake.read(META, RUNS)


def record_schema(lake: Lake, dataset: str, table, *, change: str, run_id: str, now: datetime) -> int | None:
    """Add a version to ``_meta/schemas`` when ``table``'s columns differ from the last recorded ones.

    Returns the new schema version, or None when nothing changed.
    """
    history = lake.read(META, SCHEMAS)
    previous = history.filter(pl.col("dataset") == dataset).sort("version") if history.height else history
    columns = {name: str(dtype) for name, dtype in pl.scan_delta(table).collect_schema().items()}
    if previous.height and json.loads(previous.get_column("columns")[-1]) == columns:
        return None
    version = int(previous.get_column("version").max()) + 1 if previous.height else 1
    frame = pl.DataFrame(
        [
            {
                "dataset": dataset,
                "version": version,
                "columns": json.dumps(columns),
                "change": change,
                "run_id": run_id,
                "recorded_at": now,
            }
        ]
    ).with_columns(pl.col("recorded_at").dt.replace_time_zone("UTC"))
    lake.append(META, SCHEMAS, frame)
    return version
