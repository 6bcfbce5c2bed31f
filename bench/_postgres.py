"""PostgreSQL for the share benchmarks: a database of their own on 127.0.0.1:5432, dropped after.

Each benchmark creates ``pipelines_bench_<name>_<random>`` (and, for snapshots, clones of it made
with ``CREATE DATABASE ... TEMPLATE``: a file copy, so every run starts from the same pages and
statistics instead of re-inserting millions of rows) and drops all of them in its cleanup.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

HOST, PORT, USER = "127.0.0.1", 5432, "postgres"
ADMIN_DSN = f"host={HOST} port={PORT} user={USER} dbname=postgres"


def dsn(database: str) -> str:
    return f"host={HOST} port={PORT} user={USER} dbname={database}"


def url(database: str, driver: str = "psycopg") -> str:
    """The SQLAlchemy URL pipelines' Warehouse takes (``driver="asyncpg"``: what a Prefect server takes)."""
    return f"postgresql+{driver}://{USER}@{HOST}:{PORT}/{database}"


def _admin(sql: str) -> None:
    import psycopg

    try:
        with psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)
    except psycopg.OperationalError as exc:
        raise RuntimeError(
            f"PostgreSQL on {HOST}:{PORT} (user {USER}) is needed by this benchmark and is not reachable: "
            f"{exc}. Start it (trust authentication for {USER} on {HOST}) or leave this benchmark out "
            "with --only."
        ) from exc


class Databases:
    """The databases one benchmark creates; ``drop_all()`` removes every one of them."""

    def __init__(self, benchmark: str) -> None:
        self.prefix = f"pipelines_bench_{benchmark}_{uuid.uuid4().hex[:8]}"
        self.created: list[str] = []

    def create(self, suffix: str, *, template: str | None = None) -> str:
        name = f"{self.prefix}_{suffix}"
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if template is None:
            _admin(f'CREATE DATABASE "{name}"')
        else:  # a file copy of the template (which must have no open connections)
            _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
        if name not in self.created:
            self.created.append(name)
        return name

    def drop(self, name: str) -> None:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def drop_all(self) -> None:
        for name in reversed(self.created):
            self.drop(name)
        self.created.clear()


def execute(database: str, *statements: str) -> None:
    """Run statements in autocommit (VACUUM and CHECKPOINT cannot run in a transaction)."""
    import psycopg

    with psycopg.connect(dsn(database), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def fetch(database: str, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(dsn(database), autocommit=True) as conn:
        conn.execute("SET TimeZone TO 'UTC'")
        return conn.execute(sql).fetchall()


def psql_executable() -> str:
    found = shutil.which("psql")
    if found is None:
        raise RuntimeError(
            "psql is not on PATH; the share_append baseline is psql's \\copy. Install the PostgreSQL "
            "client (e.g. apt-get install postgresql-client) or leave share_append out with --only."
        )
    return found


def psql(database: str, command: str) -> None:
    """Run one psql command (``\\copy ...``) against a database; raise with psql's output on failure."""
    done = subprocess.run(
        [
            psql_executable(),
            "-h",
            HOST,
            "-p",
            str(PORT),
            "-U",
            USER,
            "-d",
            database,
            "-qX",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            command,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PGTZ": "UTC"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"psql {command[:80]!r} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


def table_digest(database: str, table: str, columns: list[str]) -> dict[str, int]:
    """Row count and an order-independent hash of the listed columns: equal digests, equal rows."""
    listed = ", ".join(f'"{c}"' for c in columns)
    rows, digest = fetch(
        database, f"SELECT count(*), coalesce(sum(hashtext(ROW({listed})::text)::bigint), 0) FROM {table}"
    )[0]
    return {"rows": int(rows), "digest": int(digest)}


def write_csv_without_header(frame, path: Path) -> Path:
    """The rows as the CSV both COPY sides read (nulls empty, timestamps ISO)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(path, include_header=False)
    return path
