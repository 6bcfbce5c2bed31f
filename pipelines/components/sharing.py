"""Share a lake table (cleaned or aggregated Delta) into the namespace's SQL warehouse.

One share is one warehouse transaction, serialised per dataset (an advisory lock on
PostgreSQL, the write lock on SQLite). Inside it: read the share state, decide what changed in
the Delta table since the version last shared, deploy or evolve the table's DDL, load the rows
(PostgreSQL: COPY, into the table or into a staging table followed by one INSERT ... ON CONFLICT;
SQLite: batched executemany), then record the new state and a ledger row. A crash anywhere
before the commit leaves the table and the state as they were; the next share sends the same
changes once.

What changed is read from the Delta log: every commit since the shared version carries, in its
``pipelines.state`` metadata, the run id that wrote it, and every row carries in ``_run_id`` the
run that last wrote it. So the changed rows are those whose ``_run_id`` belongs to a commit
after the shared version. Commits that remove rows (deletes, partition replaces, merges that
delete) are followed by comparing keys with the shared version; a full overwrite, or a commit
whose rows cannot be identified, makes the share a full reload. See docs/share.md.
"""

from __future__ import annotations

import io
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl
import sqlalchemy as sa
from pydantic import BaseModel, Field

from pipelines.components.errors import PipelinesError, did_you_mean
from pipelines.components.registry import DatasetSpec
from pipelines.components.resources import TableInfo, Warehouse, quote_ident
from pipelines.components.sqlschema import (
    RUN_ID,
    TableDesign,
    create_statements,
    csv_expressions,
    design_table,
    evolve_statements,
    key_statements,
    sqlite_expressions,
)
from pipelines.lake import Lake
from pipelines.lake.state import changes_data, commit_state, commit_timestamp

MODES = ("merge", "replace", "append")
BATCH_ROWS = 100_000
STATE_TABLE, LOADS_TABLE = "_pipelines_state", "_pipelines_loads"
_STAGE, _REMOVED = "_pipelines_stage", "_pipelines_removed"


class ShareError(PipelinesError):
    """A share could not run; the warehouse table and the share state are unchanged."""


class ShareResult(BaseModel):
    """What one share did. ``rows`` were sent (inserted, updated or appended); ``deleted`` removed."""

    dataset: str
    namespace: str
    mode: str = Field(description="merge, replace or append")
    status: str = Field(description="loaded, or no_changes when the lake had nothing new")
    rows: int = 0
    deleted: int = Field(default=0, description="rows deleted because the lake removed them (merge)")
    table: str = Field(description="the warehouse table, quoted and schema-qualified")
    delta_version: int = Field(description="the lake table version the warehouse now holds")
    previous_version: int | None = Field(default=None, description="the version shared before")
    strategy: str = Field(default="none", description="incremental, full or none")
    reason: str = Field(default="", description="why the share was full or empty")
    run_id: str
    watermark: str | None = None
    schema_changes: list[str] = []
    source: str = Field(default="", description="the lake table that was read")
    warehouse: str = Field(default="", description="sqlite or postgresql")
    duration_seconds: float = 0.0


def resolve_mode(spec: DatasetSpec, mode: str | None) -> str:
    """The mode asked for, or the default: merge when the dataset has a primary key, else replace."""
    if mode is None:
        return "merge" if spec.primary_key else "replace"
    if mode not in MODES:
        raise ShareError(
            f"Unknown share mode {mode!r}: use merge, replace or append.{did_you_mean(mode, MODES)}"
        )
    if mode == "merge" and not spec.primary_key:
        raise ShareError(
            f"Dataset {spec.name!r} has no primary_key in the registry, and mode merge upserts on it. "
            "Declare primary_key for the dataset, or share it with --mode replace or --mode append."
        )
    return mode


# what changed ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Changes:
    """What the Delta commits after the shared version did."""

    run_ids: frozenset[str] = frozenset()
    removes_rows: bool = False  # some commit removed rows (delete, partition replace, merge delete)
    rewritten: bool = False  # a full overwrite replaced every row
    unidentified: str | None = None  # why the changed rows cannot be told apart, if so


def _commit_run_id(commit: dict[str, Any]) -> str | None:
    run_id = (commit_state(commit) or {}).get("run_id")
    return str(run_id) if run_id else None


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def changes_since(history: Iterable[dict[str, Any]], shared: int, current: int) -> Changes:
    """Classify the commits ``shared+1 .. current`` of a Delta table's history (any order)."""
    commits = sorted(
        (c for c in history if shared < _int(c.get("version")) <= current), key=lambda c: c["version"]
    )
    if [c["version"] for c in commits] != list(range(shared + 1, current + 1)):
        return Changes(
            unidentified=f"the lake's log no longer has every commit between versions {shared} and {current}"
        )
    run_ids: set[str] = set()
    removes = rewritten = False
    for commit in commits:
        version, operation = commit["version"], str(commit.get("operation", ""))
        params = commit.get("operationParameters") or {}
        metrics = commit.get("operationMetrics") or {}
        run_id = _commit_run_id(commit)
        if not changes_data(commit):
            continue
        if operation == "CREATE OR REPLACE TABLE":
            run_ids, removes, rewritten = set(), True, True
            continue
        if operation == "DELETE":
            removes = removes or _int(metrics.get("num_deleted_rows")) != 0
            continue
        if operation == "FSCK":
            removes = True
            continue
        if operation in ("WRITE", "STREAMING UPDATE"):
            overwrite = params.get("mode") == "Overwrite"
            if run_id is None:
                if not overwrite and _int(metrics.get("num_added_rows")) == 0:
                    continue
                return Changes(unidentified=f"version {version} ({operation}) carries no run id")
            if overwrite and not params.get("predicate"):
                run_ids, removes, rewritten = {run_id}, True, True
            else:
                run_ids.add(run_id)
                removes = removes or overwrite
            continue
        if operation == "MERGE":
            if run_id is None:
                return Changes(unidentified=f"version {version} (MERGE) carries no run id")
            run_ids.add(run_id)
            removes = removes or _int(metrics.get("num_target_rows_deleted")) > 0
            continue
        return Changes(
            unidentified=f"version {version} is a {operation}, which changes rows without a run id"
        )
    return Changes(frozenset(run_ids), removes, rewritten)


@dataclass
class _Plan:
    strategy: str  # none | incremental | full
    reason: str
    run_ids: frozenset[str] = frozenset()
    find_removed: bool = False
    recreate: bool = False  # drop and create the table (full refresh)


def _full_or_refuse(mode: str, dataset: str, shared: int, reason: str) -> _Plan:
    """A full reload, except in append mode, where reloading everything would duplicate rows."""
    if mode == "append":
        raise ShareError(
            f"Cannot tell which rows of {dataset!r} are new since version {shared}: {reason}. Append would "
            f"have to guess. Run `pipelines share {dataset} --mode append --full-refresh` to rebuild the table "
            "from the lake, or share it with mode merge or replace."
        )
    return _Plan("full", reason)


def _plan(
    *,
    mode: str,
    full_refresh: bool,
    state: dict[str, Any] | None,
    existing: TableInfo | None,
    table: Any,
    has_run_id: bool,
    qualified: str,
    dataset: str,
    held_rows: int | None = None,
) -> _Plan:
    version = table.version()
    if full_refresh:
        return _Plan(
            "full", "full refresh: the table is rebuilt from the lake", recreate=existing is not None
        )
    if existing is None:
        return _Plan("full", "first share" if state is None else f"{qualified} was missing; it is rebuilt")
    if state is None:
        if mode == "append":
            raise ShareError(
                f"{qualified} exists but has no share state for {dataset!r}, so it is unknown which rows it "
                f"already holds, and appending could duplicate them. Run `pipelines share {dataset} --mode "
                "append --full-refresh` to rebuild it from the lake, or drop the table."
            )
        return _Plan("full", f"{qualified} has no share state; its rows are replaced")
    shared = int(state["delta_version"])
    recorded_rows = state.get("row_count")
    if held_rows is not None and recorded_rows is not None and held_rows != recorded_rows:
        return _full_or_refuse(
            mode,
            dataset,
            shared,
            f"{qualified} holds {held_rows} row(s) but held {recorded_rows} after version {shared} was shared "
            "(truncated, edited or restored from a backup since); it is reloaded from the lake",
        )
    if shared > version:
        return _Plan("full", f"the lake table is at version {version}, behind the shared {shared}")
    history = table.history(limit=version - shared + 1)
    shared_commit = next((c for c in history if _int(c.get("version")) == shared), None)
    recorded = state.get("delta_timestamp")
    if (
        recorded is not None
        and shared_commit is not None
        and _int(shared_commit.get("timestamp")) != recorded
    ):
        return _full_or_refuse(mode, dataset, shared, "the lake table was recreated since the last share")
    if shared == version:
        if state.get("mode") != mode:
            return _Plan("full", f"the mode changed from {state.get('mode')} to {mode}")
        return _Plan("none", f"version {version} is already shared")
    if mode == "replace":
        return _Plan("full", "mode replace reloads the whole table")
    if not has_run_id:
        changes = Changes(unidentified=f"the lake table has no {RUN_ID} column")
    else:
        changes = changes_since(history, shared, version)
    if changes.unidentified:
        return _full_or_refuse(mode, dataset, shared, changes.unidentified)
    if changes.rewritten and mode == "merge":
        return _Plan("full", "the lake table was overwritten")
    return _Plan(
        "incremental",
        f"versions {shared + 1}..{version}",
        run_ids=changes.run_ids,
        find_removed=changes.removes_rows and mode == "merge",
    )


# reading the lake -----------------------------------------------------------------------------


def _lake_schema(table: Any) -> dict[str, pl.DataType]:
    return dict(pl.scan_delta(table).collect_schema())


def _batches(table: Any, columns: list[str], run_ids: frozenset[str] | None) -> Iterator[pl.DataFrame]:
    """The table's rows (only those written by ``run_ids`` when given), streamed in frames of BATCH_ROWS.

    The scan is pinned to the version ``table`` was opened at; files whose statistics exclude
    the run ids are skipped.
    """
    scan = pl.scan_delta(table)
    if run_ids is not None:
        scan = scan.filter(pl.col(RUN_ID).is_in(sorted(run_ids)))
    batches = scan.select(columns).collect_batches(chunk_size=BATCH_ROWS, maintain_order=False, lazy=True)
    for frame in batches:
        if frame.height:
            yield frame


def _removed_keys(lake: Lake, zone: str, name: str, shared: int, table: Any, key: tuple[str, ...]):
    """Keys present at the shared version and absent now, or None when that version is gone."""
    from deltalake.exceptions import DeltaError

    from pipelines.lake.table import VersionExpiredError

    try:
        old = lake.table(zone, name, version=shared)
        before = pl.scan_delta(old).select(key).collect()
    except (DeltaError, OSError, pl.exceptions.ComputeError, VersionExpiredError) as exc:
        logging.getLogger(__name__).info("version %s of %s cannot be read (%s)", shared, name, exc)
        return None
    return before.join(pl.scan_delta(table).select(key).collect(), on=list(key), how="anti")


# loading --------------------------------------------------------------------------------------


class _Loader(ABC):
    """Bulk writes into one table inside the caller's transaction."""

    def __init__(self, warehouse: Warehouse, conn: sa.Connection, design: TableDesign, qualified: str):
        self.warehouse, self.conn, self.design, self.qualified = warehouse, conn, design, qualified
        self.raw = warehouse.driver_connection(conn)
        self.columns = ", ".join(quote_ident(c) for c in design.names)

    @abstractmethod
    def clear(self) -> None:
        """Remove every row, inside the transaction (readers never see the table empty)."""

    @abstractmethod
    def insert(self, frames: Iterable[pl.DataFrame]) -> int:
        """Add the rows; returns how many."""

    @abstractmethod
    def upsert(self, frames: Iterable[pl.DataFrame]) -> int:
        """Insert the rows, replacing rows with the same primary key; returns how many were sent."""

    @abstractmethod
    def delete_keys(self, keys: pl.DataFrame) -> int:
        """Delete the rows with these keys; returns how many were deleted."""

    def _updates(self, excluded: str) -> str:
        key = set(self.design.primary_key)
        sets = [f"{quote_ident(c)} = {excluded}.{quote_ident(c)}" for c in self.design.names if c not in key]
        conflict = ", ".join(quote_ident(k) for k in self.design.primary_key)
        return f"ON CONFLICT ({conflict}) " + (f"DO UPDATE SET {', '.join(sets)}" if sets else "DO NOTHING")


class _PostgresLoader(_Loader):
    """COPY ... FROM STDIN (CSV written by polars, one batch at a time) on the raw psycopg connection."""

    def clear(self) -> None:
        self.conn.exec_driver_sql(f"TRUNCATE {self.qualified}")

    def _copy(self, target: str, columns: str, frames: Iterable[pl.DataFrame], exprs: list[pl.Expr]) -> int:
        from psycopg.copy import QueuedLibpqWriter

        rows = 0
        with (
            self.raw.cursor() as cursor,
            cursor.copy(
                f"COPY {target} ({columns}) FROM STDIN (FORMAT csv)", writer=QueuedLibpqWriter(cursor)
            ) as copy,
        ):
            for frame in frames:
                buffer = io.BytesIO()
                frame.select(exprs).write_csv(buffer, include_header=False)
                copy.write(buffer.getbuffer())  # the queued writer slices it without copying
                rows += frame.height
        return rows

    def _stage(self, name: str, columns: list[str]) -> str:
        cols = ", ".join(quote_ident(c) for c in columns)
        self.conn.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {quote_ident(name)} ON COMMIT DROP AS "
            f"SELECT {cols} FROM {self.qualified} WITH NO DATA"
        )
        return quote_ident(name)

    def insert(self, frames: Iterable[pl.DataFrame]) -> int:
        return self._copy(self.qualified, self.columns, frames, csv_expressions(self.design.columns))

    def upsert(self, frames: Iterable[pl.DataFrame]) -> int:
        stage = self._stage(_STAGE, self.design.names)
        rows = self._copy(stage, self.columns, frames, csv_expressions(self.design.columns))
        if rows:
            self.conn.exec_driver_sql(
                # In key order the key index (and a heap loaded in key order) is walked once, not at random.
                f"INSERT INTO {self.qualified} ({self.columns}) SELECT {self.columns} FROM {stage} "
                f"ORDER BY {', '.join(quote_ident(k) for k in self.design.primary_key)} "
                + self._updates("EXCLUDED")
            )
        return rows

    def delete_keys(self, keys: pl.DataFrame) -> int:
        key = self.design.key
        stage = self._stage(_REMOVED, list(key))
        columns = tuple(self.design.column(k) for k in key)
        self._copy(stage, ", ".join(quote_ident(k) for k in key), [keys], csv_expressions(columns))
        match = " AND ".join(f"t.{quote_ident(k)} = r.{quote_ident(k)}" for k in key)
        result = self.conn.exec_driver_sql(
            f"DELETE FROM {self.qualified} AS t USING {stage} AS r WHERE {match}"
        )
        return int(result.rowcount or 0)


class _SqliteLoader(_Loader):
    """Batched executemany on the raw sqlite3 connection (one prepared statement per batch)."""

    def clear(self) -> None:
        self.conn.exec_driver_sql(f"DELETE FROM {self.qualified}")

    def _many(self, sql: str, frames: Iterable[pl.DataFrame], columns) -> int:
        exprs = sqlite_expressions(columns)
        cursor = self.raw.cursor()
        rows = 0
        try:
            for frame in frames:
                cursor.executemany(sql, frame.select(exprs).rows())
                rows += frame.height
        finally:
            cursor.close()
        return rows

    def _insert_sql(self) -> str:
        marks = ", ".join("?" for _ in self.design.names)
        return f"INSERT INTO {self.qualified} ({self.columns}) VALUES ({marks})"

    def insert(self, frames: Iterable[pl.DataFrame]) -> int:
        return self._many(self._insert_sql(), frames, self.design.columns)

    def upsert(self, frames: Iterable[pl.DataFrame]) -> int:
        return self._many(self._insert_sql() + " " + self._updates("excluded"), frames, self.design.columns)

    def delete_keys(self, keys: pl.DataFrame) -> int:
        key = self.design.key
        match = " AND ".join(f"{quote_ident(k)} = ?" for k in key)
        before = self.raw.total_changes
        self._many(
            f"DELETE FROM {self.qualified} WHERE {match}", [keys], tuple(self.design.column(k) for k in key)
        )
        return self.raw.total_changes - before


def _loader(warehouse: Warehouse, conn: sa.Connection, design: TableDesign, qualified: str) -> _Loader:
    cls = _PostgresLoader if warehouse.dialect == "postgresql" else _SqliteLoader
    return cls(warehouse, conn, design, qualified)


# state and ledger tables ----------------------------------------------------------------------


def _meta_tables(schema: str | None) -> tuple[sa.Table, sa.Table]:
    metadata = sa.MetaData(schema=schema)
    state = sa.Table(
        STATE_TABLE,
        metadata,
        sa.Column("dataset", sa.Text, primary_key=True, comment="registry dataset name"),
        sa.Column("table_name", sa.Text, nullable=False, comment="warehouse table it is shared into"),
        sa.Column("source", sa.Text, nullable=False, comment="lake table that was read"),
        sa.Column("mode", sa.Text, nullable=False, comment="merge, replace or append"),
        sa.Column("delta_version", sa.BigInteger, nullable=False, comment="lake version the table holds"),
        sa.Column(
            "delta_timestamp",
            sa.BigInteger,
            comment="commit time of that lake version, ms since 1970 (differs if the lake table was recreated)",
        ),
        sa.Column("watermark", sa.Text, comment="the dataset's incremental watermark at that version"),
        sa.Column(
            "row_count",
            sa.BigInteger,
            comment="rows the table held after that share (a table truncated or restored since is reloaded)",
        ),
        sa.Column("run_id", sa.Text, nullable=False, comment="the share run that committed this state"),
        sa.Column("shared_at", sa.DateTime(timezone=True), nullable=False, comment="commit time (UTC)"),
        comment="What each dataset's warehouse table holds; written in the same transaction as its rows.",
    )
    loads = sa.Table(
        LOADS_TABLE,
        metadata,
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("dataset", sa.Text, nullable=False, index=True),
        sa.Column("table_name", sa.Text, nullable=False),
        sa.Column("mode", sa.Text, nullable=False),
        sa.Column("strategy", sa.Text, nullable=False, comment="incremental, full or none"),
        sa.Column("status", sa.Text, nullable=False, comment="loaded, no_changes or failed"),
        sa.Column("rows", sa.BigInteger, nullable=False, comment="rows sent"),
        sa.Column("deleted", sa.BigInteger, nullable=False, comment="rows deleted"),
        sa.Column("from_version", sa.BigInteger),
        sa.Column("to_version", sa.BigInteger),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_seconds", sa.Float, nullable=False),
        sa.Column("error", sa.Text),
        comment="One row per share run: what it loaded, or why it failed.",
    )
    return state, loads


def ensure_meta_tables(warehouse: Warehouse) -> None:
    """Create _pipelines_state and _pipelines_loads once (serialised with other first uses)."""
    state, _ = _meta_tables(warehouse.schema)
    with warehouse.begin(write=True) as conn:
        warehouse.lock(conn, "meta")
        state.metadata.create_all(conn, checkfirst=True)
        columns = {c["name"] for c in sa.inspect(conn).get_columns(STATE_TABLE, schema=warehouse.schema)}
        if "row_count" not in columns:  # a state table from before row counts were recorded
            conn.exec_driver_sql(f"ALTER TABLE {warehouse.qualify(STATE_TABLE)} ADD COLUMN row_count BIGINT")


def _upsert_state(warehouse: Warehouse, conn: sa.Connection, row: dict[str, Any]) -> None:
    state, _ = _meta_tables(warehouse.schema)
    if warehouse.dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(state).values(**row)
    update = {k: statement.excluded[k] for k in row if k != "dataset"}
    conn.execute(statement.on_conflict_do_update(index_elements=["dataset"], set_=update))


def _record_load(warehouse: Warehouse, conn: sa.Connection, row: dict[str, Any]) -> None:
    """The ledger row; written last, in the load's transaction."""
    _, loads = _meta_tables(warehouse.schema)
    conn.execute(loads.insert().values(**row))


def read_state(warehouse: Warehouse, conn: sa.Connection, dataset: str) -> dict[str, Any] | None:
    state, _ = _meta_tables(warehouse.schema)
    row = conn.execute(sa.select(state).where(state.c.dataset == dataset)).mappings().first()
    return dict(row) if row else None


# errors ---------------------------------------------------------------------------------------


def _explain(exc: BaseException, spec: DatasetSpec, qualified: str, mode: str) -> PipelinesError | None:
    """A clear error for a database rejection during the load, or None for anything else."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    name = type(orig).__name__
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else name
    diag = getattr(orig, "diag", None)
    where = f" ({diag.context.strip().splitlines()[0]})" if diag is not None and diag.context else ""
    if not where and diag is not None and diag.message_detail:  # a key built after the load names the key
        where = f" ({diag.message_detail.strip().splitlines()[0]})"
    if spec.pii_columns and where:  # COPY's context and a key's detail quote the row's values
        where = " (the row's values are not shown: the dataset has PII columns)"
    unchanged = "Nothing was loaded; the table and the share state are unchanged."
    if name == "CardinalityViolation":
        return ShareError(
            f"The lake table of {spec.name!r} has more than one row for the same primary key "
            f"({', '.join(spec.primary_key)}), so merge cannot tell which one to keep. {unchanged} Fix the "
            "dataset's primary_key in the registry (or the transform that builds it) so it identifies one row."
        )
    if name == "UniqueViolation" or (name == "IntegrityError" and "UNIQUE" in text):
        hint = (
            "append adds rows and never updates them, but this table has a primary key and a changed row "
            "arrived again. Share it with --mode merge, or rebuild it as an append table with "
            f"`pipelines share {spec.name} --mode append --full-refresh`"
            if mode == "append"
            else "the lake table has duplicate keys; fix the dataset's primary_key in the registry"
        )
        return ShareError(
            f"Loading {spec.name!r} into {qualified} broke its primary key: {text}{where}. {unchanged} Fix: {hint}."
        )
    if name == "NotNullViolation" or (name == "IntegrityError" and "NOT NULL" in text):
        return ShareError(
            f"Loading {spec.name!r} into {qualified} put a null into a NOT NULL column: {text}{where}. {unchanged} "
            f"Fix: mark the column nullable in contracts/{spec.name}.yaml (a primary key column never is), or "
            "repair the rows in the lake."
        )
    if name in ("InvalidTextRepresentation", "NumericValueOutOfRange", "InvalidDatetimeFormat",
                "DatetimeFieldOverflow", "StringDataRightTruncation", "CharacterNotInRepertoire",
                "UntranslatableCharacter", "InvalidBinaryRepresentation", "BadCopyFileFormat"):  # fmt: skip
        return ShareError(
            f"{qualified} rejected a value from the lake table of {spec.name!r}: {text}{where}. {unchanged} "
            "Fix: the lake column's values do not fit the warehouse type; make the contract's type match the "
            f"data and run `pipelines ingest {spec.name} --full-refresh`, or widen the warehouse column."
        )
    if name == "DependentObjectsStillExist":
        return ShareError(
            f"{qualified} cannot be dropped for a full refresh because other objects depend on it: {text}. "
            f"{unchanged} Drop or redefine those views first, or share without --full-refresh."
        )
    return None


# the share ------------------------------------------------------------------------------------


@dataclass
class _Outcome:
    status: str = "no_changes"
    rows: int = 0
    deleted: int = 0
    strategy: str = "none"
    reason: str = ""
    previous: int | None = None
    version: int = -1
    watermark: str | None = None
    changes: list[str] = field(default_factory=list)
    after_load: list[str] = field(default_factory=list)  # the new table's key and indexes, built once loaded


def share_dataset(
    spec: DatasetSpec,
    lake: Lake,
    warehouse: Warehouse,
    *,
    run_id: str,
    namespace: str,
    mode: str | None = None,
    full_refresh: bool = False,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
) -> ShareResult:
    """Share one dataset's lake table into the warehouse in one transaction (see the module docstring)."""
    log = logger or logging.getLogger(__name__)
    started, started_at = time.monotonic(), datetime.now(UTC)
    mode = resolve_mode(spec, mode)
    zone = spec.stage
    source = lake.uri(zone, spec.name)
    if lake.table(zone, spec.name) is None:
        build = f"pipelines ingest {spec.name}" if zone == "cleaned" else "the aggregate workflow"
        raise ShareError(
            f"Dataset {spec.name!r} has no {zone} table yet at {source}; build it first ({build}), then share."
        )
    qualified = warehouse.qualify(spec.name)
    ensure_meta_tables(warehouse)
    outcome = _Outcome()
    try:
        with warehouse.begin(write=True) as conn:
            warehouse.lock(conn, f"share:{spec.name}")
            if warehouse.dialect == "postgresql":
                conn.exec_driver_sql("SET LOCAL TimeZone TO 'UTC'")
            state = read_state(warehouse, conn, spec.name)
            table = lake.table(zone, spec.name)  # opened under the lock: the newest committed version
            outcome.version = table.version()
            outcome.previous = int(state["delta_version"]) if state else None
            outcome.watermark = (state or {}).get("watermark")
            existing = warehouse.describe(conn, spec.name)
            held = _row_count(conn, qualified) if existing is not None and state else None
            lake_schema = _lake_schema(table)
            plan = _plan(
                mode=mode,
                full_refresh=full_refresh,
                state=state,
                existing=existing,
                table=table,
                has_run_id=RUN_ID in lake_schema,
                qualified=qualified,
                dataset=spec.name,
                held_rows=held,
            )
            outcome.strategy, outcome.reason = plan.strategy, plan.reason
            if plan.strategy == "none":
                # Nothing new in the lake, but the contract may have changed: apply only real changes.
                _deploy(spec, warehouse, conn, lake_schema, existing, plan, mode, qualified, outcome)
            else:
                design = _deploy(spec, warehouse, conn, lake_schema, existing, plan, mode, qualified, outcome)
                _load(spec, lake, warehouse, conn, table, design, existing, plan, mode, qualified, outcome)
                for statement in outcome.after_load:
                    conn.exec_driver_sql(statement)
                lake_state = lake.state(zone, spec.name, table=table) or {}
                outcome.watermark = lake_state.get("watermark", outcome.watermark)
                outcome.status = "loaded"
                _upsert_state(
                    warehouse,
                    conn,
                    {
                        "dataset": spec.name,
                        "table_name": spec.name,
                        "source": source,
                        "mode": mode,
                        "delta_version": outcome.version,
                        "delta_timestamp": commit_timestamp(table, outcome.version),
                        "watermark": outcome.watermark,
                        "row_count": _row_count(conn, qualified),
                        "run_id": run_id,
                        "shared_at": datetime.now(UTC),
                    },
                )
            _record_load(warehouse, conn, _ledger_row(spec, mode, run_id, outcome, started, started_at))
    except Exception as exc:
        _record_failure(warehouse, spec, mode, run_id, outcome, started, started_at, exc, log)
        explained = _explain(exc, spec, qualified, mode)
        if explained is not None:
            raise explained from exc
        raise
    log.info(
        "%s -> %s: %s (%s, %s), %d row(s) sent, %d deleted, lake version %s",
        spec.name,
        qualified,
        outcome.status,
        mode,
        outcome.reason,
        outcome.rows,
        outcome.deleted,
        outcome.version,
    )
    return ShareResult(
        dataset=spec.name,
        namespace=namespace,
        mode=mode,
        status=outcome.status,
        rows=outcome.rows,
        deleted=outcome.deleted,
        table=qualified,
        delta_version=outcome.version,
        previous_version=outcome.previous,
        strategy=outcome.strategy,
        reason=outcome.reason,
        run_id=run_id,
        watermark=outcome.watermark,
        schema_changes=outcome.changes,
        source=source,
        warehouse=warehouse.dialect,
        duration_seconds=round(time.monotonic() - started, 3),
    )


def _row_count(conn: sa.Connection, qualified: str) -> int:
    return int(conn.exec_driver_sql(f"SELECT count(*) FROM {qualified}").scalar_one())


def _deploy(
    spec: DatasetSpec,
    warehouse: Warehouse,
    conn: sa.Connection,
    lake_schema: dict[str, pl.DataType],
    existing: TableInfo | None,
    plan: _Plan,
    mode: str,
    qualified: str,
    outcome: _Outcome,
) -> TableDesign:
    """Create, rebuild or evolve the table, inside the share's transaction."""
    loading = plan.strategy != "none"
    if loading and existing is not None and mode == "append" and existing.primary_key and not plan.recreate:
        raise ShareError(
            f"{qualified} has a primary key ({', '.join(existing.primary_key)}): it was created for merge or "
            "replace, and appending a changed row would break that key. Share it with --mode merge, or rebuild "
            f"it as an append table with `pipelines share {spec.name} --mode append --full-refresh`."
        )
    design = design_table(
        spec, lake_schema, warehouse.dialect, key_constraint=mode != "append" and bool(spec.primary_key)
    )
    refresh = f"run `pipelines share {spec.name} --full-refresh` to drop and rebuild the table from the lake"
    if existing is None or plan.recreate:
        if plan.recreate:
            conn.exec_driver_sql(f"DROP TABLE {qualified}")
        # A new table that is about to be bulk-loaded gets its key and indexes after the load (PostgreSQL)
        after = warehouse.dialect == "postgresql" and plan.strategy == "full"
        for statement in create_statements(design, qualified, keys_after_load=after):
            conn.exec_driver_sql(statement)
        outcome.after_load = key_statements(design, qualified) if after else []
        outcome.changes.append(f"created {qualified} with {len(design.columns)} columns")
        return design
    evolution = evolve_statements(design, existing, qualified, refresh_hint=refresh)
    if loading or evolution.changes:
        for statement in evolution.statements:
            conn.exec_driver_sql(statement)
        outcome.changes += evolution.changes
    return design


def _load(
    spec: DatasetSpec,
    lake: Lake,
    warehouse: Warehouse,
    conn: sa.Connection,
    table: Any,
    design: TableDesign,
    existing: TableInfo | None,
    plan: _Plan,
    mode: str,
    qualified: str,
    outcome: _Outcome,
) -> None:
    """Send the rows the plan names, inside the share's transaction."""
    loader = _loader(warehouse, conn, design, qualified)
    if plan.strategy == "full":
        if existing is not None and not plan.recreate:
            loader.clear()
        outcome.rows = loader.insert(_batches(table, design.names, None))
        return
    removed = None
    if plan.find_removed:
        removed = _removed_keys(lake, spec.stage, spec.name, int(outcome.previous or 0), table, design.key)
        if removed is None:  # the shared version's files were vacuumed: reload everything
            outcome.strategy, outcome.reason = "full", "rows were removed and the shared version is gone"
            loader.clear()
            outcome.rows = loader.insert(_batches(table, design.names, None))
            return
    frames = _batches(table, design.names, plan.run_ids)
    outcome.rows = loader.upsert(frames) if mode == "merge" else loader.insert(frames)
    if removed is not None and removed.height:
        outcome.deleted = loader.delete_keys(removed)


def _ledger_row(
    spec: DatasetSpec,
    mode: str,
    run_id: str,
    outcome: _Outcome,
    started: float,
    started_at: datetime,
    error: str | None = None,
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "dataset": spec.name,
        "table_name": spec.name,
        "mode": mode,
        "strategy": outcome.strategy,
        "status": "failed" if error else outcome.status,
        "rows": 0 if error else outcome.rows,
        "deleted": 0 if error else outcome.deleted,
        "from_version": outcome.previous,
        "to_version": outcome.version if outcome.version >= 0 else None,
        "started_at": started_at,
        "finished_at": datetime.now(UTC),
        "duration_seconds": round(time.monotonic() - started, 3),
        "error": error,
    }


def _record_failure(
    warehouse: Warehouse,
    spec: DatasetSpec,
    mode: str,
    run_id: str,
    outcome: _Outcome,
    started: float,
    started_at: datetime,
    exc: Exception,
    log: logging.Logger | logging.LoggerAdapter,
) -> None:
    """A 'failed' ledger row in its own transaction; the original error is what the caller sees."""
    message = f"{type(exc).__name__}: {exc}"[:4000]
    if spec.pii_columns:  # a database error's detail can quote the row (Key (email)=(...))
        message = "\n".join(
            line for line in message.splitlines() if not line.startswith(("DETAIL", "CONTEXT"))
        )
    try:
        with warehouse.begin(write=True) as conn:
            _record_load(
                warehouse, conn, _ledger_row(spec, mode, run_id, outcome, started, started_at, message)
            )
    except Exception as ledger_exc:  # the share already failed; report that, not this
        log.warning("Could not record the failed share of %s in %s: %s", spec.name, LOADS_TABLE, ledger_exc)


# erasure --------------------------------------------------------------------------------------


def shared_states(warehouse: Warehouse) -> dict[str, dict[str, Any]]:
    """dataset -> its share state, for every dataset shared into this warehouse ({} before the first share)."""
    state, _ = _meta_tables(warehouse.schema)
    with warehouse.begin() as conn:
        if not sa.inspect(conn).has_table(STATE_TABLE, schema=warehouse.schema):
            return {}
        return {row["dataset"]: dict(row) for row in conn.execute(sa.select(state)).mappings()}


def _as_text(column: str) -> str:
    return f"TRIM(CAST({quote_ident(column)} AS TEXT))"


def subject_values(warehouse: Warehouse, table: str, column: str, match) -> set[str]:
    """The values of ``column`` in a warehouse table that ``match`` picks (it gets every distinct value)."""
    qualified = warehouse.qualify(table)
    with warehouse.begin() as conn:
        if warehouse.describe(conn, table) is None:
            return set()
        rows = conn.exec_driver_sql(f"SELECT DISTINCT {_as_text(column)} FROM {qualified}").all()
    return match([r[0] for r in rows if r[0] is not None])


def count_rows_with(warehouse: Warehouse, table: str, column: str, values: set[str]) -> int:
    if not values:
        return 0
    statement = sa.text(
        f"SELECT count(*) FROM {warehouse.qualify(table)} WHERE {_as_text(column)} IN :values"
    ).bindparams(sa.bindparam("values", expanding=True))
    with warehouse.begin() as conn:
        return int(conn.execute(statement, {"values": sorted(values)}).scalar_one())


def delete_rows_with(
    spec: DatasetSpec, warehouse: Warehouse, column: str, values: set[str], *, run_id: str
) -> int:
    """Delete a shared table's rows whose ``column`` is one of ``values``, in one transaction.

    The share state's row count is updated in the same transaction (so the next share does not take
    the smaller table for a truncated one), and a ledger row records the rows deleted (no values).
    """
    if not values:
        return 0
    started, started_at = time.monotonic(), datetime.now(UTC)
    qualified = warehouse.qualify(spec.name)
    state_table, _ = _meta_tables(warehouse.schema)
    statement = sa.text(f"DELETE FROM {qualified} WHERE {_as_text(column)} IN :values").bindparams(
        sa.bindparam("values", expanding=True)
    )
    with warehouse.begin(write=True) as conn:
        warehouse.lock(conn, f"share:{spec.name}")
        state = read_state(warehouse, conn, spec.name)
        deleted = int(conn.execute(statement, {"values": sorted(values)}).rowcount or 0)
        if state is not None:
            conn.execute(
                state_table.update()
                .where(state_table.c.dataset == spec.name)
                .values(row_count=_row_count(conn, qualified))
            )
        outcome = _Outcome(
            status="erased",
            deleted=deleted,
            strategy="erasure",
            previous=int(state["delta_version"]) if state else None,
            version=int(state["delta_version"]) if state else -1,
        )
        mode = (state or {}).get("mode") or "merge"
        _record_load(warehouse, conn, _ledger_row(spec, mode, run_id, outcome, started, started_at))
    return deleted


def reclaim_space(warehouse: Warehouse, tables: Iterable[str]) -> None:
    """Rewrite storage so deleted rows are gone from disk, not just invisible: SQLite's VACUUM (free
    pages keep deleted rows' bytes), PostgreSQL's VACUUM of each table (dead tuples)."""
    tables = list(tables)
    if not tables:
        return
    if warehouse.dialect == "sqlite":
        raw = warehouse.engine.raw_connection()
        try:
            driver = raw.driver_connection
            previous, driver.isolation_level = driver.isolation_level, None
            try:
                driver.execute("VACUUM")
            finally:
                driver.isolation_level = previous
        finally:
            raw.close()
        return
    with warehouse.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        for table in [*tables, STATE_TABLE, LOADS_TABLE]:
            conn.exec_driver_sql(f"VACUUM {warehouse.qualify(table)}")
