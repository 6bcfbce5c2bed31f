"""The quarantine zone: rejected rows with rule, reason, original record and run id.

Rows are replaced per source range, so reprocessing a raw file (or one chunk of it) after a crash
or a conflict writes its quarantine rows once, never twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from pipelines.lake.layout import QUARANTINE
from pipelines.lake.table import Lake


@dataclass(frozen=True)
class Span:
    """Lines ``first``..``last`` of a raw file (``last`` None: the whole file)."""

    file: str
    first: int = 0
    last: int | None = None

    def predicate(self) -> str:
        quoted = "'" + self.file.replace("'", "''") + "'"
        if self.last is None:
            return f"source_file = {quoted}"
        return f"(source_file = {quoted} AND source_line >= {self.first} AND source_line <= {self.last})"


def replace(
    lake: Lake, dataset: str, rows: pl.DataFrame, run_id: str, now: datetime, spans: Iterable[Span]
) -> None:
    """Make the quarantine rows of ``spans`` exactly ``rows`` (one commit; a rerun writes no duplicates)."""
    spans = list(spans)
    if not spans and rows.height == 0:
        return
    frame = rows.with_columns(
        pl.lit(dataset).alias("dataset"),
        pl.lit(run_id).alias("run_id"),
        pl.lit(now).dt.replace_time_zone("UTC").alias("quarantined_at"),
    )
    # Rows of a file no span names (should not happen) replace that whole file's rows.
    named = {s.file for s in spans}
    extra = [Span(f) for f in sorted(set(frame.get_column("source_file").to_list()) - named)]
    predicate = " OR ".join(s.predicate() for s in [*spans, *extra])
    lake.replace_where(QUARANTINE, dataset, frame, predicate)


def read(lake: Lake, dataset: str) -> pl.DataFrame:
    return lake.read(QUARANTINE, dataset)
