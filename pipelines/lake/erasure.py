"""Erasure mechanics: rewriting raw files and Delta tables without one subject's rows, and the ledger.

What belongs to the subject is decided by the caller (a mask over a frame); this module only
rewrites. Tables with committed state (cleaned, aggregated) are rewritten partition by partition in
one commit that carries their state forward, with ``touched_partitions`` naming what changed, so
downstream aggregates and shares follow it like any other change. Quarantine and ``_meta`` tables
are rewritten group by group (source file, run id). A raw file keeps its name, and with it the
content hash of what arrived: the landing manifest and the content-hash index still point at it, so
neither the landed file nor the same content arriving again is ever ingested a second time.

The erasure ledger (``_meta/erasures``) has one row per request, rewritten as the request moves on.
It holds no personal data: the subject appears only as a keyed hash (see
:mod:`pipelines.components.erasure`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import polars as pl

from pipelines.components.resources import Storage
from pipelines.lake.layout import META, PARTITION, raw_glob
from pipelines.lake.table import Lake, sql_in

ERASURES = "erasures"
Mask = Callable[[pl.DataFrame], pl.Series]

LEDGER_SCHEMA = {
    "request_id": pl.String,
    "namespace": pl.String,
    "subject_hash": pl.String,
    "datasets": pl.String,  # JSON list
    "status": pl.String,  # running | completed | failed
    "steps": pl.String,  # JSON {step: {"done": bool, "rows": int}}
    "rows_removed": pl.String,  # JSON {dataset: {zone: rows}}
    "started_at": pl.Datetime("us", "UTC"),
    "finished_at": pl.Datetime("us", "UTC"),
    "requested_by": pl.String,
    "flow_run_id": pl.String,
    "error": pl.String,
}


# raw ------------------------------------------------------------------------------------------


def raw_files(storage: Storage, dataset: str) -> list[str]:
    """Every raw file of a dataset (hidden temporaries excluded), oldest first."""
    return [r for r in storage.glob(raw_glob(dataset)) if not r.rsplit("/", 1)[-1].startswith(".")]


def replace_raw_file(storage: Storage, rel: str, data: bytes) -> None:
    """Put new bytes in place of a raw file, atomically, under the same name (see the module docstring)."""
    storage.write_atomic(rel, data)


# tables with state ------------------------------------------------------------------------------


def matching_values(lake: Lake, zone: str, name: str, column: str, match: Callable[[list], set[str]]):
    """(the table, the values of ``column`` that ``match`` picks): reads one column of the newest version."""
    table = lake.table(zone, name)
    if table is None or column not in table.schema().to_arrow().names:
        return table, set()
    values = (
        lake.scan(zone, name, table=table)
        .select(pl.col(column).cast(pl.String).str.strip_chars().unique())
        .collect()
        .to_series()
        .drop_nulls()
        .to_list()
    )
    return table, match(values)


def _key(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.String).str.strip_chars()


def count_rows(
    lake: Lake, zone: str, name: str, table, column: str, values: set[str]
) -> tuple[int, list[str]]:
    """(rows whose ``column`` is one of ``values``, the partitions holding them)."""
    if table is None or not values:
        return 0, []
    hits = lake.scan(zone, name, table=table).filter(_key(column).is_in(sorted(values)))
    rows = int(hits.select(pl.len()).collect().item())
    if PARTITION not in table.metadata().partition_columns:
        return rows, ["all"] if rows else []
    partitions = hits.select(pl.col(PARTITION).unique()).collect().to_series().drop_nulls().to_list()
    return rows, sorted(partitions)


def erase_keyed(
    lake: Lake, zone: str, name: str, table, column: str, values: set[str], *, run_id: str, request_id: str
) -> tuple[int, list[str]]:
    """Remove the rows whose ``column`` is one of ``values`` in one commit that carries the table's state.

    Only the partitions holding such rows are rewritten. Returns (rows removed, partitions touched).
    Raises :class:`~pipelines.lake.table.CommitConflict` when another run committed meanwhile.
    """
    if table is None or not values:
        return 0, []
    scan = lake.scan(zone, name, table=table)
    hit = _key(column).is_in(sorted(values))
    partitioned = PARTITION in table.metadata().partition_columns
    state = dict(lake.state(zone, name, table=table) or {})
    now = datetime.now(UTC)
    if partitioned:
        touched = sorted(
            scan.filter(hit).select(pl.col(PARTITION).unique()).collect().to_series().drop_nulls().to_list()
        )
        rows = scan.filter(pl.col(PARTITION).is_in(touched)).collect()
    else:
        touched = ["all"]
        rows = scan.collect()
    removed = rows.filter(hit.fill_null(False)).height
    if not removed:
        return 0, []
    kept = rows.filter(~hit.fill_null(False))
    state.update(
        {"run_id": run_id, "at": now.isoformat(), "touched_partitions": touched, "erasure": request_id}
    )
    if partitioned:
        lake.replace_partitions(zone, name, kept, touched, state=state, base=table)
    else:
        lake.overwrite(zone, name, kept, state=state, base=table)
    return removed, touched


# tables without state (quarantine, _meta) ---------------------------------------------------------


def erase_grouped(lake: Lake, zone: str, name: str, mask: Mask, group: str, *, dry_run: bool) -> int:
    """Remove the rows ``mask`` picks, rewriting only the groups (e.g. source files) that hold them."""
    frame = lake.read(zone, name)
    if frame.height == 0:
        return 0
    hits = mask(frame)
    removed = int(hits.sum())
    if not removed or dry_run:
        return removed
    groups = frame.filter(hits).get_column(group) if group in frame.columns else None
    if groups is None or groups.null_count():
        lake.overwrite(zone, name, frame.filter(~hits), state=None, base=lake.table(zone, name))
        return removed
    values = set(groups.to_list())
    kept = frame.filter(pl.col(group).is_in(sorted(values)) & ~hits)
    lake.replace_where(zone, name, kept, sql_in(group, values))
    return removed


def meta_tables(lake: Lake) -> list[str]:
    """The ``_meta`` Delta tables of the namespace (the erasure ledger excluded)."""
    names = {rel.split("/")[1] for rel in lake.storage.glob(f"{META}/*/_delta_log/*.json")}
    return sorted(n for n in names if n != ERASURES)


def text_columns(lake: Lake, zone: str, name: str) -> list[str]:
    table = lake.table(zone, name)
    if table is None:
        return []
    schema = lake.scan(zone, name, table=table).collect_schema()
    return [c for c, t in schema.items() if t == pl.String]


# the ledger -----------------------------------------------------------------------------------


def read_request(lake: Lake, request_id: str) -> dict[str, Any] | None:
    """The ledger row of a request (JSON fields decoded), or None."""
    frame = lake.read(META, ERASURES)
    if frame.height == 0:
        return None
    rows = frame.filter(pl.col("request_id") == request_id)
    if rows.height == 0:
        return None
    row = rows.row(0, named=True)
    for key in ("datasets", "steps", "rows_removed"):
        row[key] = json.loads(row[key]) if row[key] else {}
    return row


def save_request(lake: Lake, row: dict[str, Any]) -> None:
    """Write a request's ledger row (replacing its previous one)."""
    encoded = dict(row)
    for key in ("datasets", "steps", "rows_removed"):
        encoded[key] = json.dumps(row.get(key) or ({} if key != "datasets" else []), sort_keys=True)
    frame = pl.DataFrame([{k: encoded.get(k) for k in LEDGER_SCHEMA}], schema=LEDGER_SCHEMA)
    lake.replace_where(META, ERASURES, frame, sql_in("request_id", [row["request_id"]]))
