"""Resources: Storage (fsspec) and Warehouse (SQLAlchemy); the Delta lake is :mod:`pipelines.lake`.

Each has a real and a local form behind one interface, chosen from the URL:
a local folder or ``s3://``; SQLite or PostgreSQL. Resources are built from
:class:`~pipelines.components.environment.Settings` and passed in, never imported as globals.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import fsspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipelines.components.environment import Settings
from pipelines.components.errors import ConfigError, NamespaceIsolationError
from pipelines.components.secrets import find_secret

_CHUNK = 8 * 1024 * 1024
# How long a SQLite warehouse connection waits for another writer's lock before "database is locked".
SQLITE_BUSY_SECONDS = 60.0


@dataclass(frozen=True)
class S3Options:
    """Connection options for s3:// URLs, shared by s3fs and delta-rs."""

    endpoint_url: str | None = None
    region: str | None = None
    key: str | None = None
    secret: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, use_blocks: bool = True) -> S3Options:
        """Endpoint and region from settings; credentials looked up as secrets by name.

        Without AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY the usual AWS credential chain
        (instance profile, ~/.aws) applies.
        """
        key = find_secret("AWS_ACCESS_KEY_ID", use_blocks=use_blocks)
        secret = find_secret("AWS_SECRET_ACCESS_KEY", use_blocks=use_blocks)
        return cls(
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            key=key.reveal() if key else None,
            secret=secret.reveal() if secret else None,
        )

    def fsspec_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.key:
            opts["key"], opts["secret"] = self.key, self.secret
        client_kwargs = {}
        if self.endpoint_url:
            client_kwargs["endpoint_url"] = self.endpoint_url
        if self.region:
            client_kwargs["region_name"] = self.region
        if client_kwargs:
            opts["client_kwargs"] = client_kwargs
        return opts

    def delta_options(self) -> dict[str, str]:
        opts: dict[str, str] = {"AWS_REGION": self.region or "us-east-1"}
        if self.endpoint_url:
            opts["AWS_ENDPOINT_URL"] = self.endpoint_url
            if self.endpoint_url.startswith("http://"):
                opts["AWS_ALLOW_HTTP"] = "true"
        if self.key:
            opts["AWS_ACCESS_KEY_ID"], opts["AWS_SECRET_ACCESS_KEY"] = self.key, self.secret or ""
        # S3 has conditional writes (If-None-Match), so concurrent Delta commits are safe
        # without an external lock table.
        opts["AWS_CONDITIONAL_PUT"] = "etag"
        return opts

    def __repr__(self) -> str:
        return f"S3Options(endpoint_url={self.endpoint_url!r}, region={self.region!r}, key=***)"


@dataclass(frozen=True)
class WriteScope:
    """Where a namespace may write: its own prefix and the shared landing zone, nothing else.

    Built by :meth:`Storage.from_settings`, so every resource a workflow gets from its settings
    refuses to write into another namespace's data (research may read serving, never write it).
    """

    namespace: str
    roots: tuple[str, ...]

    @classmethod
    def of(cls, settings: Settings) -> WriteScope:
        return cls(settings.namespace, (settings.namespace_url, settings.landing_url))

    def allows(self, uri: str) -> bool:
        return any(_is_within(uri, root) for root in self.roots)

    def check(self, uri: str) -> None:
        if self.allows(uri):
            return
        uri = _normal(uri)
        owner = ""
        data_root = self.roots[0].rstrip("/").rsplit("/", 1)[0]
        if _is_within(uri, data_root):
            other = uri.rstrip("/")[len(data_root) :].strip("/").split("/", 1)[0]
            owner = (
                f" {data_root}/{other} belongs to namespace {other!r}."
                if other
                else f" {data_root} is the data root every namespace shares."
            )
        raise NamespaceIsolationError(
            f"Refusing to write {uri}: namespace {self.namespace!r} writes only under {self.roots[0]} "
            f"(and the shared landing zone {self.roots[1]}).{owner} Other namespaces' data can be read, "
            "never written: write your outputs under this namespace's own prefix (settings.namespace_url), "
            "or run with PIPELINES_NAMESPACE set to the namespace that owns the data."
        )


def _normal(uri: str) -> str:
    """The location with '.' and '..' resolved, so a relative part cannot climb out of a root."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return os.path.normpath(uri)
    return f"{scheme}://{posixpath.normpath(rest)}"


def _is_within(uri: str, root: str) -> bool:
    uri, root = _normal(uri).rstrip("/"), _normal(root).rstrip("/")
    return uri == root or uri.startswith(root + "/")


class Storage:
    """Files under one root URL (a local folder or s3://bucket/prefix), with atomic writes.

    A storage made by :meth:`from_settings` carries its namespace's :class:`WriteScope`: writes,
    moves and deletes outside it raise :class:`NamespaceIsolationError` before touching anything.
    """

    def __init__(self, url: str, s3: S3Options | None = None, *, scope: WriteScope | None = None) -> None:
        self.url = url.rstrip("/") if url not in ("/",) else url
        self.scope = scope
        self.is_s3 = self.url.startswith("s3://")
        if "://" in self.url and not self.is_s3:
            raise ConfigError(f"Unsupported storage URL {url!r}: use a local folder or s3://bucket/prefix.")
        self.s3 = (s3 or S3Options()) if self.is_s3 else None
        options = self.s3.fsspec_options() if self.s3 else {}
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **options)
        if not self.is_s3:
            self.root = str(Path(self.root).resolve())

    @classmethod
    def from_settings(cls, url: str, settings: Settings) -> Storage:
        """A storage at url that may write only inside the namespace's prefix or the landing zone."""
        s3 = S3Options.from_settings(settings) if url.startswith("s3://") else None
        return cls(url, s3, scope=WriteScope.of(settings))

    def __repr__(self) -> str:
        return f"Storage({self.url!r})"

    # paths
    def path(self, *parts: str) -> str:
        """The filesystem path (no scheme) of a location under the root."""
        clean = [str(p).strip("/") for p in parts if str(p).strip("/")]
        return "/".join([self.root.rstrip("/"), *clean]) if clean else self.root

    def uri(self, *parts: str) -> str:
        """The full URL of a location under the root (what delta-rs and polars take)."""
        path = self.path(*parts)
        return f"s3://{path}" if self.is_s3 else path

    def relative(self, path: str) -> str:
        path = path.removeprefix("s3://")
        root = self.root.rstrip("/") + "/"
        return path[len(root) :] if path.startswith(root) else path

    def child(self, *parts: str) -> Storage:
        return Storage(self.uri(*parts), self.s3, scope=self.scope)

    @property
    def writable(self) -> bool:
        """Whether this storage's root is inside its namespace's write scope (always, without one)."""
        return self.scope is None or self.scope.allows(self.uri())

    def check_writable(self, *parts: str) -> str:
        """The URI of a location under the root, after checking the namespace may write there."""
        uri = self.uri(*parts)
        if self.scope is not None:
            self.scope.check(uri)
        return uri

    @property
    def delta_options(self) -> dict[str, str]:
        return self.s3.delta_options() if self.s3 else {}

    # reading
    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    def glob(self, pattern: str) -> list[str]:
        """Files matching a glob under the root, as paths relative to it, sorted."""
        found = self.fs.glob(self.path(pattern))
        return sorted(self.relative(p) for p in found if not self.fs.isdir(p))

    def read_bytes(self, *parts: str) -> bytes:
        return self.fs.cat_file(self.path(*parts))

    def open(self, *parts: str, mode: str = "rb") -> IO:
        return self.fs.open(self.path(*parts), mode)

    def size(self, *parts: str) -> int:
        return int(self.fs.size(self.path(*parts)))

    def delete(self, *parts: str, recursive: bool = True) -> None:
        self.check_writable(*parts)
        path = self.path(*parts)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=recursive)

    # writing
    def write_atomic(self, rel: str, data: bytes | Iterable[bytes]) -> str:
        """Write a file so that readers see all of it or nothing; returns its URI.

        Local: the bytes go to a hidden temporary name in the same folder, are fsynced,
        then renamed over the target. S3: they are spooled to a local temporary file and
        uploaded in one PUT, and an object only becomes visible once its upload completes.
        If the data iterator raises midway, nothing is left at the target.
        """
        self.check_writable(rel)
        chunks = [data] if isinstance(data, bytes | bytearray) else data
        if self.is_s3:
            with tempfile.NamedTemporaryFile(prefix="pipelines-", suffix=".part") as tmp:
                for chunk in chunks:
                    tmp.write(chunk)
                tmp.flush()
                self.fs.put_file(tmp.name, self.path(rel))
            return self.uri(rel)
        target = Path(self.path(rel))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp_path, "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_path, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()
        return self.uri(rel)

    def write_changed(self, rel: str, data: bytes) -> bool:
        """Write ``data`` atomically unless ``rel`` already holds exactly these bytes; returns whether it wrote.

        A file left as it was keeps its modification time (and ETag), so whatever knows files by their
        identity, as ingest's landing manifest does, recognises it without reading it again."""
        try:
            if self.size(rel) == len(data) and self.read_bytes(rel) == data:
                return False
        except FileNotFoundError:
            pass
        self.write_atomic(rel, data)
        return True

    def put_atomic(self, local_path: str | Path, rel: str) -> str:
        """Copy a local file to rel atomically (see :meth:`write_atomic`)."""
        self.check_writable(rel)
        if self.is_s3:
            self.fs.put_file(str(local_path), self.path(rel))
            return self.uri(rel)

        def chunks() -> Iterator[bytes]:
            with open(local_path, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    yield chunk

        return self.write_atomic(rel, chunks())


# Warehouse ---------------------------------------------------------------------------------

_IDENT_RE = re.compile(r"^[^\x00]{1,63}$")


def schema_for(namespace: str) -> str:
    """The PostgreSQL schema a namespace owns: research-feature-x -> research_feature_x."""
    return namespace.replace("-", "_")


def quote_ident(name: str) -> str:
    """Quote an identifier for SQL (double quotes, inner quotes doubled); validates it first."""
    if not isinstance(name, str) or not _IDENT_RE.match(name):
        raise ConfigError(f"Invalid SQL identifier {name!r}: it must be 1-63 characters with no NUL byte.")
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class ColumnInfo:
    """A column as the warehouse has it: declared type (PostgreSQL's format_type spelling)."""

    name: str
    type: str
    not_null: bool
    comment: str | None = None


@dataclass(frozen=True)
class TableInfo:
    """A warehouse table's columns in order, its primary key and its comment."""

    name: str
    columns: tuple[ColumnInfo, ...]
    primary_key: tuple[str, ...]
    comment: str | None = None

    def column(self, name: str) -> ColumnInfo | None:
        return next((c for c in self.columns if c.name == name), None)


def use_wal(dbapi_conn: sqlite3.Connection, timeout: float) -> None:
    """Switch a SQLite database file to WAL mode (a no-op once it is WAL), waiting up to ``timeout`` s.

    The switch reads the file's header, then upgrades that read lock to a write lock, and SQLite
    never waits for a lock upgrade (busy_timeout does not apply: waiting could deadlock). So when two
    connections open a new warehouse file at once (two shares, two processes), the one that loses
    the race gets "database is locked" at once. Retrying is safe: once the winner has switched the
    file, the switch is a no-op that only reads.
    """
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        try:
            dbapi_conn.execute("PRAGMA journal_mode=WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if "database is locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


class Warehouse:
    """A SQL warehouse: SQLite (one file per namespace) or PostgreSQL (one schema per namespace)."""

    def __init__(self, url: str, namespace: str) -> None:
        try:
            self.url = sa.engine.make_url(url)
        except sa.exc.ArgumentError as exc:
            raise ConfigError(f"Invalid warehouse URL: {exc}.") from None
        self.namespace = namespace
        self.dialect = self.url.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ConfigError(
                f"Unsupported warehouse {self.dialect!r}: use sqlite:///file.sqlite or "
                "postgresql+psycopg://user@host/db."
            )
        if self.dialect == "postgresql" and self.url.drivername == "postgresql":
            self.url = self.url.set(drivername="postgresql+psycopg")
        self.schema: str | None = schema_for(namespace) if self.dialect == "postgresql" else None
        self._schema_ready = False
        self.engine: Engine = self._create_engine()

    @classmethod
    def from_settings(cls, settings: Settings) -> Warehouse:
        return cls(settings.warehouse_url, settings.namespace)

    def __repr__(self) -> str:
        return f"Warehouse({self.url.render_as_string(hide_password=True)!r}, schema={self.schema!r})"

    def _create_engine(self) -> Engine:
        if self.dialect == "sqlite":
            database = self.url.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(self.url, connect_args={"timeout": SQLITE_BUSY_SECONDS})

            @sa.event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_conn, _record):
                # Let SQLAlchemy's begin() emit BEGIN so a transaction can take the write lock.
                dbapi_conn.isolation_level = None
                dbapi_conn.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_SECONDS * 1000)}")
                use_wal(dbapi_conn, SQLITE_BUSY_SECONDS)

            @sa.event.listens_for(engine, "begin")
            def _sqlite_begin(conn):
                conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")

            return engine
        return sa.create_engine(self.url, pool_pre_ping=True)

    def qualify(self, table: str) -> str:
        """Quoted, schema-qualified table name."""
        return f"{quote_ident(self.schema)}.{quote_ident(table)}" if self.schema else quote_ident(table)

    def ensure_schema(self) -> None:
        """Create the namespace's schema on first use (PostgreSQL); SQLite needs none."""
        if self._schema_ready or self.schema is None:
            self._schema_ready = True
            return
        with self.engine.begin() as conn:
            # A transaction-scoped advisory lock makes concurrent first uses safe.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": self.schema})
            conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(self.schema)}")
        self._schema_ready = True

    @contextlib.contextmanager
    def begin(self, *, write: bool = False) -> Iterator[Connection]:
        """A transaction on this namespace's schema; commits on success, rolls back on error.

        ``write=True`` takes SQLite's write lock at BEGIN, serialising writers.
        """
        self.ensure_schema()
        with self.engine.connect() as conn:
            conn.info["write"] = write
            with conn.begin():
                if self.schema:
                    conn.exec_driver_sql(f"SET LOCAL search_path TO {quote_ident(self.schema)}")
                yield conn

    def lock(self, conn: Connection, name: str) -> None:
        """Serialise writers of ``name`` until this transaction ends.

        PostgreSQL: a transaction-scoped advisory lock on the namespace's schema and ``name``.
        SQLite: the transaction already holds the database's write lock (``begin(write=True)``).
        """
        if self.dialect == "postgresql":
            conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                {"k": f"pipelines:{self.schema}:{name}"},
            )
        elif not conn.info.get("write"):
            raise ConfigError("Warehouse.lock on SQLite needs a transaction opened with begin(write=True).")

    @staticmethod
    def driver_connection(conn: Connection) -> Any:
        """The DBAPI connection under ``conn`` (psycopg or sqlite3), inside the same transaction."""
        return conn.connection.driver_connection

    def describe(self, conn: Connection, table: str) -> TableInfo | None:
        """Columns (declared type, NOT NULL, comment) and primary key of a table, or None if absent."""
        if self.dialect == "postgresql":
            qualified = self.qualify(table)
            oid = conn.execute(sa.text("SELECT to_regclass(:q)::oid"), {"q": qualified}).scalar()
            if oid is None:
                return None
            rows = conn.execute(
                sa.text(
                    "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
                    "col_description(a.attrelid, a.attnum) FROM pg_attribute a "
                    "WHERE a.attrelid = :oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
                ),
                {"oid": oid},
            ).all()
            key = conn.execute(
                sa.text(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
                    "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                    "WHERE i.indrelid = :oid AND i.indisprimary "
                    "ORDER BY array_position(i.indkey::int2[], a.attnum)"
                ),
                {"oid": oid},
            ).scalars()
            comment = conn.execute(sa.text("SELECT obj_description(:oid, 'pg_class')"), {"oid": oid}).scalar()
            columns = tuple(ColumnInfo(r[0], r[1], bool(r[2]), r[3]) for r in rows)
            return TableInfo(table, columns, tuple(key), comment)
        found = conn.exec_driver_sql(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).scalar()
        if found is None:
            return None
        rows = conn.exec_driver_sql(f"PRAGMA table_info({quote_ident(table)})").all()
        columns = tuple(ColumnInfo(r[1], r[2] or "", bool(r[3]), None) for r in rows)
        key = tuple(r[1] for r in sorted((r for r in rows if r[5] > 0), key=lambda r: r[5]))
        return TableInfo(table, columns, key, None)

    def table_names(self) -> list[str]:
        self.ensure_schema()
        return sorted(sa.inspect(self.engine).get_table_names(schema=self.schema))

    def drop_schema(self) -> None:
        """Remove everything this namespace owns in the warehouse (teardown --purge-data)."""
        if self.schema:
            with self.engine.begin() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {quote_ident(self.schema)} CASCADE")
            self._schema_ready = False
        else:
            self.engine.dispose()
            database = self.url.database
            if database and database != ":memory:":
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(database + suffix)

    def dispose(self) -> None:
        self.engine.dispose()


# The lake (Delta tables) lives in pipelines.lake, the one package that writes them.


def __getattr__(name: str):
    """``Lake`` and ``STATE_KEY`` are importable from here too (they live in :mod:`pipelines.lake`)."""
    if name in ("Lake", "STATE_KEY"):
        import pipelines.lake

        return getattr(pipelines.lake, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
