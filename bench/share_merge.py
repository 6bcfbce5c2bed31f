"""share_merge: upserts (half new keys) shared into a loaded PostgreSQL table, against hand-written SQL.

The lake holds the base load and then an ingest merge commit of the increment (20% of the base:
half new keys, half later versions of old keys). The warehouse table holds the base, shared
before the increment arrived. Ours is the share flow in merge mode, sending the rows of that
merge commit; the baseline is what one would write by hand: COPY a CSV of the same rows into a
temporary table, then one INSERT ... ON CONFLICT DO UPDATE. Before every call the side's database
is a fresh file copy of the loaded one (CREATE DATABASE ... TEMPLATE), so both start from the same
pages, indexes and statistics.
"""

from __future__ import annotations

import os

import polars as pl

from bench import _common, _data, _postgres
from bench._harness import Benchmark, Case, Context, Target

TABLE = '"bench"."events"'
INCREMENT_SHARE = 0.2  # 5M base rows -> 1M upserts


def _hand_written_merge(database: str, csv_path) -> int:
    """COPY into a temporary table and INSERT ... ON CONFLICT DO UPDATE, in one transaction."""
    import psycopg

    columns = ", ".join(f'"{c}"' for c in _common.SHARED_COLUMNS)
    updates = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in _common.SHARED_COLUMNS if c != _data.PRIMARY_KEY)
    with psycopg.connect(_postgres.dsn(database)) as conn:
        conn.execute("SET TimeZone TO 'UTC'")
        conn.execute(f"CREATE TEMP TABLE stage ON COMMIT DROP AS SELECT {columns} FROM {TABLE} WITH NO DATA")
        copy_sql = f"COPY stage ({columns}) FROM STDIN (FORMAT csv)"
        with conn.cursor().copy(copy_sql) as copy, open(csv_path, "rb") as handle:
            while chunk := handle.read(8 << 20):
                copy.write(chunk)
        done = conn.execute(
            f"INSERT INTO {TABLE} ({columns}) SELECT {columns} FROM stage "
            f'ON CONFLICT ("{_data.PRIMARY_KEY}") DO UPDATE SET {updates}'
        )
        return done.rowcount


def setup(rows: int, context: Context) -> Case:
    both = _data.events_landing(context.cache, rows, with_increment=True, increment_share=INCREMENT_SHARE)
    first = context.work / "landing-first"  # the base file alone: the lake before the increment
    (first / "events").mkdir(parents=True)
    os.link(both / "events" / "part-0000.csv", first / "events" / "part-0000.csv")
    registry = _data.write_registry(context.work / "registry", {"events": "events/*.csv"})
    data = context.work / "data"
    base = _common.run_ingest(data=data, landing=first, registry=registry)

    databases = _postgres.Databases("share_merge")
    try:
        loaded = databases.create("loaded")  # the base, shared before the increment: the snapshot
        loaded_url = _postgres.url(loaded)
        shared = _common.run_share(data=data, landing=first, registry=registry, warehouse_url=loaded_url)
        if (shared.mode, shared.rows) != ("merge", base.written):
            raise AssertionError(f"the base share should merge {base.written} rows, got {shared}")
        _postgres.execute(loaded, f"VACUUM ANALYZE {TABLE}", "CHECKPOINT")
        base_keys = _common.shared_rows(data).get_column(_data.PRIMARY_KEY)
        increment = _common.run_ingest(data=data, landing=both, registry=registry)  # the lake's merge commit
        changes = _common.shared_rows(data, increment.run_id)
        new_keys = changes.filter(~pl.col(_data.PRIMARY_KEY).is_in(base_keys.implode())).height
        del base_keys
        csv_path = _postgres.write_csv_without_header(changes, context.work / "changes.csv")
        ours_db, hand_db = f"{databases.prefix}_ours", f"{databases.prefix}_hand"
    except BaseException:
        databases.drop_all()
        raise

    def ours():
        result = _common.run_share(
            data=data, landing=both, registry=registry, warehouse_url=_postgres.url(ours_db)
        )
        if (result.strategy, result.rows) != ("incremental", changes.height):
            raise AssertionError(f"expected an incremental merge of {changes.height} rows, got {result}")

    def baseline():
        _hand_written_merge(hand_db, csv_path)

    def verify() -> dict:
        left = _postgres.table_digest(ours_db, TABLE, _common.SHARED_COLUMNS)
        right = _postgres.table_digest(hand_db, TABLE, _common.SHARED_COLUMNS)
        if left != right:
            raise AssertionError(f"the share left {left}, the hand-written merge {right}: the tables differ")
        expected = base.written + new_keys
        if left["rows"] != expected:
            raise AssertionError(f"{left['rows']} rows after the merge, expected {expected}")
        return {"rows_after": left["rows"], "upserts": changes.height, "new_keys": new_keys}

    return Case(
        ours=ours,
        baseline=baseline,
        reset_ours=lambda: databases.create("ours", template=loaded),
        reset_baseline=lambda: databases.create("hand", template=loaded),
        verify=verify,
        cleanup=databases.drop_all,
        details={
            "databases": f"{databases.prefix}_*",
            "base_rows": base.written,
            "upserts": changes.height,
            "new_keys": new_keys,
            "csv_bytes": os.path.getsize(csv_path),
        },
    )


BENCHMARK = Benchmark(
    name="share_merge",
    ours="the share flow, mode merge, after an ingest merge commit: the commit's rows through COPY into "
    "a staging table, INSERT ... ON CONFLICT DO UPDATE in key order, state and ledger in one transaction",
    baseline="hand-written: COPY a CSV of the same rows into a temporary table, INSERT ... ON CONFLICT "
    "DO UPDATE (psycopg, one transaction)",
    target=Target(0.5, ">=", "≥ 0.5x its speed"),
    setup=setup,
    quick_size=10_000,
    full_size=5_000_000,
    describe_size=lambda rows: f"{int(rows * INCREMENT_SHARE):,} upserts into {rows:,} rows",
    score=lambda ours, baseline, case: baseline.median / ours.median,
    score_unit="x speed",
    order=41,
)
