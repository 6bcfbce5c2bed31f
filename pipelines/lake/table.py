"""The lake of one namespace, and the one commit API every Delta write goes through.

Reads: :meth:`Lake.table`, :meth:`Lake.read`, :meth:`Lake.scan`, :meth:`Lake.state`.
Writes: :meth:`Lake.merge`, :meth:`Lake.overwrite`, :meth:`Lake.replace_partitions`,
:meth:`Lake.append`, :meth:`Lake.delete_partitions`, :meth:`Lake.replace_where`. Every write
checks the namespace's write scope first.

Concurrency is optimistic. A commit that carries state is planned from a table version (``base``,
the DeltaTable the caller read its state from) and must land directly after it: if another run
committed in between, :class:`CommitConflict` is raised and the caller re-plans from the new
version. Writes without state (quarantine, ``_meta``) are re-attempted on a conflict.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

import polars as pl

from pipelines.components.environment import Settings
from pipelines.components.errors import PipelinesError
from pipelines.components.resources import Storage, quote_ident
from pipelines.lake.layout import PARTITION, STATE_KEY
from pipelines.lake.state import state_at

T = TypeVar("T")
_ATTEMPTS = 8
_log = logging.getLogger(__name__)


class CommitConflict(PipelinesError):
    """Another run committed to the table after the version this commit was planned from."""


class VersionExpiredError(PipelinesError):
    """A table version older than the vacuum window was asked for (its files may be gone)."""


def sql_in(column: str, values: Iterable[Any]) -> str:
    """``column IN ('a', 'b')`` with the values quoted for a Delta predicate."""
    quoted = ", ".join("'" + str(v).replace("'", "''") + "'" for v in sorted(set(values)))
    return f"{quote_ident(column)} IN ({quoted})"


def _commit_failed() -> tuple[type[BaseException], ...]:
    from deltalake.exceptions import CommitFailedError, DeltaError

    return (CommitFailedError, DeltaError)


def _is_conflict(exc: BaseException) -> bool:
    from deltalake.exceptions import CommitFailedError

    text = str(exc)
    return isinstance(exc, CommitFailedError) or "already exists" in text or "Failed to commit" in text


_WRITE_BATCH_ROWS = 256 * 1024


def _arrow(frame: pl.DataFrame):
    """A frame as delta-rs writes it: text columns as Arrow string views, polars' own layout, so no
    column is copied to another string layout on the way (the table's type is ``string`` either way).

    In record batches of at most ``_WRITE_BATCH_ROWS`` (zero-copy slices): delta-rs splits every batch
    it gets by partition, so many small batches (a parsed CSV's ~60k-row chunks) cost ~25% more CPU to
    write, and one huge batch raises the write's peak memory. Pass a contiguous frame to get large ones.
    """
    import pyarrow as pa

    table = frame.to_arrow(compat_level=pl.CompatLevel.newest())
    return pa.Table.from_batches(table.to_batches(max_chunksize=_WRITE_BATCH_ROWS), schema=table.schema)


def _newer_or_later(newer_field: str | None, tie_field: str) -> str:
    """A merge predicate: the incoming row is newer by ``newer_field`` (a value beats null), or as new
    and later by ``tie_field``: the order a full rebuild's last-wins collapse gives."""
    tie = quote_ident(tie_field)
    later = f"(t.{tie} IS NULL OR s.{tie} >= t.{tie})"
    if not newer_field:
        return later
    f = quote_ident(newer_field)
    return (
        f"(s.{f} IS NOT NULL AND (t.{f} IS NULL OR s.{f} > t.{f})) "
        f"OR ((s.{f} = t.{f} OR (s.{f} IS NULL AND t.{f} IS NULL)) AND {later})"
    )


class Lake:
    """The Delta tables of one namespace: <root>/<zone>/<dataset> (cleaned, quarantine, aggregated, _meta)."""

    def __init__(self, storage: Storage, *, retention_hours: int | None = None) -> None:
        """``retention_hours``: the vacuum window that time travel is checked against (None: the
        namespace's PIPELINES_VACUUM_RETENTION_HOURS, looked up when a version is first asked for)."""
        self.storage = storage
        self._retention_hours = retention_hours

    @classmethod
    def from_settings(cls, settings: Settings, namespace: str | None = None) -> Lake:
        """This namespace's lake, or (read-only) another's, e.g. ``Lake.from_settings(s, "serving")``."""
        url = settings.namespace_url if namespace is None else settings.namespace_url_of(namespace)
        return cls(Storage.from_settings(url, settings), retention_hours=settings.vacuum_retention_hours)

    @property
    def retention_hours(self) -> int:
        if self._retention_hours is None:
            from pipelines.components.environment import get_settings

            self._retention_hours = get_settings().vacuum_retention_hours
        return self._retention_hours

    def __repr__(self) -> str:
        return f"Lake({self.storage.url!r})"

    @property
    def namespace(self) -> str:
        return self.storage.url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def _options(self) -> dict[str, str] | None:
        return self.storage.delta_options or None

    # reading ---------------------------------------------------------------------------------

    def uri(self, zone: str, name: str) -> str:
        """Where a table lives, for reading (writes check the namespace's scope first)."""
        return self.storage.uri(zone, name)

    def write_uri(self, zone: str, name: str) -> str:
        """Where a table lives, after checking this namespace may write it."""
        return self.storage.check_writable(zone, name)

    def table(self, zone: str, name: str, *, version: int | None = None):
        """The DeltaTable (latest, or at ``version``), or None when it does not exist yet.

        A ``version`` replaced longer ago than the vacuum window (:attr:`retention_hours`) is refused
        with :class:`VersionExpiredError`: maintenance may have deleted its files and log entry.
        """
        from deltalake import DeltaTable

        uri = self.uri(zone, name)
        if not DeltaTable.is_deltatable(uri, storage_options=self._options):
            return None
        if version is None:
            return DeltaTable(uri, storage_options=self._options)
        latest = DeltaTable(uri, storage_options=self._options)
        if version < latest.version():
            self._check_window(zone, name, latest, version)
        return DeltaTable(uri, version=version, storage_options=self._options)

    def _check_window(self, zone: str, name: str, latest, version: int) -> None:
        """Refuse ``version`` when the commit that replaced it is older than the vacuum window (or gone)."""
        hours = self.retention_hours
        replaced = next(
            (
                c
                for c in latest.history(limit=latest.version() - version)
                if int(c.get("version", -1)) == version + 1
            ),
            None,
        )
        stamp = (
            int(replaced["timestamp"]) / 1000 if replaced and replaced.get("timestamp") is not None else None
        )
        if stamp is not None and time.time() - stamp < hours * 3600:
            return
        when = (
            f"was replaced by version {version + 1} at "
            f"{datetime.fromtimestamp(stamp, UTC).strftime('%Y-%m-%d %H:%M')} UTC"
            if stamp is not None
            else "was replaced by a version whose log entry is already cleaned up"
        )
        raise VersionExpiredError(
            f"{zone}/{name} version {version} {when}, more than the vacuum window of {hours} hour(s) "
            f"(PIPELINES_VACUUM_RETENTION_HOURS) ago, so `pipelines maintain` may have deleted its files. "
            f"Read the latest version (now {latest.version()}) or one replaced within the last {hours} hours; "
            "to keep older versions readable, raise PIPELINES_VACUUM_RETENTION_HOURS for this namespace "
            "(it protects only versions not yet vacuumed)."
        )

    def exists(self, zone: str, name: str) -> bool:
        return self.table(zone, name) is not None

    def read(self, zone: str, name: str, *, version: int | None = None) -> pl.DataFrame:
        """The whole table as a polars DataFrame (empty frame when the table does not exist)."""
        table = self.table(zone, name, version=version)
        if table is None:
            return pl.DataFrame()
        return pl.from_arrow(table.to_pyarrow_table())

    def scan(self, zone: str, name: str, *, table=None) -> pl.LazyFrame:
        """A lazy polars scan of the table (of ``table``'s loaded version when given)."""
        if table is not None:
            return pl.scan_delta(table)
        return pl.scan_delta(self.uri(zone, name), storage_options=self._options)

    def state(self, zone: str, name: str, *, table=None) -> dict | None:
        """The pipelines state committed with the table's newest data commit (watermark, files, ...)."""
        table = table if table is not None else self.table(zone, name)
        return None if table is None else state_at(table)

    def empty_like(self, table) -> pl.DataFrame:
        """An empty frame with a table's columns and types."""
        return pl.scan_delta(table).head(0).collect()

    # committing ------------------------------------------------------------------------------

    def _properties(self, state: dict | None, pinned: bool):
        from deltalake import CommitProperties

        metadata = {STATE_KEY: json.dumps(state)} if state is not None else None
        return CommitProperties(custom_metadata=metadata, max_commit_retries=0 if pinned else None)

    def _commit(self, zone: str, name: str, base, state: dict | None, write: Callable[[Any, Any], None]):
        """Run one write; with state it must land right after ``base`` (None: the table must not exist)."""
        uri = self.write_uri(zone, name)
        planned = base.version() if base is not None else None  # writes move ``base`` to the new version
        if state is None:
            return self._retrying(
                zone, name, lambda: write(self.table(zone, name) or uri, self._properties(None, False))
            )
        try:
            write(base if base is not None else uri, self._properties(state, base is not None))
        except _commit_failed() as exc:
            if not _is_conflict(exc) and not (base is None and self.exists(zone, name)):
                raise
            read = f"version {planned}" if base is not None else "no table"
            raise CommitConflict(
                f"Another run committed to {zone}/{name} after this run read it ({read}); "
                "this run's commit was not made and it re-plans from the new version."
            ) from None
        committed = self.table(zone, name)
        if base is not None and committed.version() == planned:
            # The operation changed nothing (e.g. a merge whose rows are all older than the table's),
            # and delta-rs then makes no commit: the state is committed on its own, still pinned.
            committed = self.commit_state(zone, name, state, planned)
        return committed

    def commit_state(self, zone: str, name: str, state: dict, planned: int):
        """Commit ``state`` alone (no rows), right after version ``planned``; CommitConflict when it is
        no longer the latest. Returns the new DeltaTable."""
        from deltalake import DeltaTable

        self.write_uri(zone, name)
        pinned = DeltaTable(self.uri(zone, name), version=planned, storage_options=self._options)
        try:
            pinned.create_write_transaction(
                [],
                mode="append",
                schema=pinned.schema(),
                partition_by=pinned.metadata().partition_columns or None,
                commit_properties=self._properties(state, True),
            )
        except _commit_failed():
            raise CommitConflict(
                f"Another run committed to {zone}/{name} after this run read it (version {planned}); "
                "this run's commit was not made and it re-plans from the new version."
            ) from None
        return self.table(zone, name)

    def _retrying(self, zone: str, name: str, attempt: Callable[[], T]) -> T:
        for number in range(1, _ATTEMPTS + 1):
            try:
                return attempt()
            except _commit_failed() as exc:
                if not _is_conflict(exc) or number == _ATTEMPTS:
                    if number == _ATTEMPTS:
                        raise PipelinesError(
                            f"{zone}/{name}: {_ATTEMPTS} commits in a row lost to concurrent writers "
                            f"({exc}). Nothing was half-written; run again when the other runs finish."
                        ) from None
                    raise
                _log.info("%s/%s: concurrent commit, trying again (%d)", zone, name, number)
                time.sleep(min(2.0, 0.05 * 2**number) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def merge(
        self,
        zone: str,
        name: str,
        frame: pl.DataFrame,
        *,
        key: Iterable[str],
        newer_field: str | None,
        state: dict,
        base,
        tie_field: str | None = None,
    ):
        """Upsert ``frame`` on ``key``; an older row (by ``newer_field``) never overwrites a newer one.

        Ties go to the incoming row, so a later batch wins over an earlier one, as arrival order does
        within a batch. With ``tie_field`` (reprocessing, where the incoming rows may be the older
        arrivals) a tie goes to the row whose ``tie_field`` is greater, e.g. the later raw file.
        Extra columns are added to the table's schema. Returns the new DeltaTable.
        """
        if base is None:
            return self.overwrite(zone, name, frame, state=state, base=None, partition_by=[PARTITION])
        keys = " AND ".join(f"t.{quote_ident(k)} = s.{quote_ident(k)}" for k in key)

        def write(table, properties) -> None:
            merger = table.merge(
                frame.to_arrow(),
                predicate=keys,
                source_alias="s",
                target_alias="t",
                merge_schema=True,
                # The batch is already in memory: let delta-rs read its key range first and skip the
                # target files outside it (about twice as fast as streaming the source).
                streamed_exec=False,
                commit_properties=properties,
            )
            if tie_field:
                merger = merger.when_matched_update_all(predicate=_newer_or_later(newer_field, tie_field))
            elif newer_field:
                field = quote_ident(newer_field)
                newer = f"t.{field} IS NULL OR (s.{field} IS NOT NULL AND s.{field} >= t.{field})"
                merger = merger.when_matched_update_all(predicate=newer)
            else:
                merger = merger.when_matched_update_all()
            merger.when_not_matched_insert_all().execute()

        if frame.height == 0:
            return self.append(zone, name, frame, state=state, base=base)
        return self._commit(zone, name, base, state, write)

    def overwrite(
        self,
        zone: str,
        name: str,
        data: pl.DataFrame | Any,
        *,
        state: dict | None,
        base,
        partition_by: list[str] | None = None,
    ):
        """Replace every row (and the schema) in one commit. ``data``: a DataFrame or an Arrow stream."""
        from deltalake import write_deltalake

        arrow = _arrow(data) if isinstance(data, pl.DataFrame) else data

        def write(target, properties) -> None:
            write_deltalake(
                target,
                arrow,
                mode="overwrite" if base is not None else "error",
                partition_by=partition_by,
                schema_mode="overwrite" if base is not None else None,
                storage_options=self._options if isinstance(target, str) else None,
                commit_properties=properties,
            )

        if state is None:
            return self._retrying(zone, name, lambda: self._blind_overwrite(zone, name, arrow, partition_by))
        return self._commit(zone, name, base, state, write)

    def _blind_overwrite(self, zone: str, name: str, arrow, partition_by) -> None:
        from deltalake import write_deltalake

        write_deltalake(
            self.write_uri(zone, name),
            arrow,
            mode="overwrite",
            partition_by=partition_by,
            schema_mode="overwrite",
            storage_options=self._options,
        )

    def replace_partitions(
        self,
        zone: str,
        name: str,
        frame: pl.DataFrame,
        partitions: Iterable[str],
        *,
        state: dict,
        base,
    ):
        """Replace the rows of ``partitions`` (``_partition`` values) with ``frame`` in one commit."""
        from deltalake import write_deltalake

        predicate = sql_in(PARTITION, partitions)

        def write(table, properties) -> None:
            write_deltalake(
                table,
                frame.to_arrow(),
                mode="overwrite",
                predicate=predicate,
                partition_by=[PARTITION],
                commit_properties=properties,
            )

        return self._commit(zone, name, base, state, write)

    def append(
        self,
        zone: str,
        name: str,
        frame: pl.DataFrame,
        *,
        state: dict | None = None,
        base=None,
        partition_by: list[str] | None = None,
    ):
        """Append rows, adding new columns to the schema. Without state: creates the table if needed,
        skips an empty frame, and re-attempts on a concurrent commit. With state: one commit after ``base``
        (an empty frame commits just the state)."""
        from deltalake import write_deltalake

        if state is None:
            if frame.height == 0:
                return self.table(zone, name)

            def write(target, properties) -> None:
                write_deltalake(
                    target,
                    _arrow(frame),
                    mode="append",
                    partition_by=partition_by,
                    schema_mode="merge",
                    storage_options=self._options if isinstance(target, str) else None,
                    commit_properties=properties,
                )

            return self._commit(zone, name, None, None, write)

        def write_state(table, properties) -> None:
            write_deltalake(
                table, _arrow(frame), mode="append", schema_mode="merge", commit_properties=properties
            )

        return self._commit(zone, name, base, state, write_state)

    def delete_partitions(self, zone: str, name: str, partitions: Iterable[str], *, state: dict, base):
        """Delete the rows of ``partitions`` in one commit that carries ``state``."""
        predicate = sql_in(PARTITION, partitions)
        return self._commit(
            zone,
            name,
            base,
            state,
            lambda table, properties: table.delete(predicate, commit_properties=properties),
        )

    def replace_where(
        self,
        zone: str,
        name: str,
        frame: pl.DataFrame,
        predicate: str,
        *,
        partition_by: list[str] | None = None,
    ) -> None:
        """Replace the rows matching ``predicate`` with ``frame`` (no state; concurrent commits re-attempted).

        The table is created when missing; an empty frame just deletes the matching rows.
        """
        from deltalake import write_deltalake

        def attempt() -> None:
            table = self.table(zone, name)
            if table is None:
                if frame.height:
                    write_deltalake(
                        self.write_uri(zone, name),
                        frame.to_arrow(),
                        mode="append",
                        partition_by=partition_by,
                        storage_options=self._options,
                    )
                return
            if frame.height == 0:
                table.delete(predicate)
                return
            write_deltalake(
                table, frame.to_arrow(), mode="overwrite", predicate=predicate, schema_mode="merge"
            )

        self.write_uri(zone, name)
        self._retrying(zone, name, attempt)

    def vacuum(self, zone: str, name: str, *, retention_hours: int, dry_run: bool = False) -> list[str]:
        """Delete files no version within ``retention_hours`` references, including orphans that a
        killed commit left behind; returns what was (or would be) deleted."""
        self.write_uri(zone, name)
        table = self.table(zone, name)
        if table is None:
            return []
        return table.vacuum(
            retention_hours=retention_hours, dry_run=dry_run, enforce_retention_duration=False, full=True
        )

    def vacuum_now(self, zone: str, name: str, *, keep_log_from: int | None = None) -> list[str]:
        """Make rows removed from a table unrecoverable: vacuum with no retention, then drop old log entries.

        Deletes every data file the newest version does not reference (retention 0: time travel to any
        earlier version ends here), writes a checkpoint at the newest version, and deletes the JSON
        commits before ``keep_log_from`` (default: the newest commit that carries pipelines state, so
        :func:`~pipelines.lake.state.state_at` still finds it) and older checkpoints, whose file
        statistics (column minimums and maximums) can hold removed values. Returns the data files deleted.
        Erasure (``forget``) calls it for every table it rewrote; it is not for routine maintenance.
        """
        deleted = self.vacuum(zone, name, retention_hours=0)
        table = self.table(zone, name)
        if table is None:
            return deleted
        latest = table.version()
        if keep_log_from is None:
            keep_log_from = latest
            for commit in table.history(limit=latest + 1):
                if STATE_KEY in commit and int(commit.get("version", -1)) <= latest:
                    keep_log_from = min(keep_log_from, int(commit["version"]))
                    break
        table.create_checkpoint()
        log = f"{zone}/{name}/_delta_log"
        for rel in self.storage.glob(f"{log}/*"):
            base = rel.rsplit("/", 1)[-1]
            stem = base.split(".", 1)[0]
            if not stem.isdigit():
                continue
            number = int(stem)
            old_commit = base.endswith(".json") and number < keep_log_from
            old_checkpoint = ".checkpoint." in base and number < latest
            if old_commit or old_checkpoint or (base.endswith(".crc") and number < keep_log_from):
                self.storage.delete(rel)
        return deleted
