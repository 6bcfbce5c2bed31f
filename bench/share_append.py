"""share_append: a cleaned Delta table shared into PostgreSQL (mode append), against psql \\copy.

Both sides load the same rows into an empty table of the same shape (the append table the share
creates: no primary key, a btree index on the key and BRIN indexes on the partition and
incremental fields). The baseline reads a CSV of exactly the rows the share sends, written from
the lake untimed; ours reads the Delta table, writes CSV batches and streams them through COPY.
"""

from __future__ import annotations

import os

from bench import _common, _data, _postgres
from bench._harness import Benchmark, Case, Context, Target

TABLE = '"bench"."events"'
COPY_TABLE = '"bench"."copy_target"'


def setup(rows: int, context: Context) -> Case:
    landing = _data.events_landing(context.cache, rows)
    registry = _data.write_registry(context.work / "registry", {"events": "events/*.csv"})
    data = context.work / "data"
    ingested = _common.run_ingest(data=data, landing=landing, registry=registry)
    csv_path = _postgres.write_csv_without_header(_common.shared_rows(data), context.work / "shared.csv")
    _postgres.psql_executable()  # fail before any run when the baseline's tool is missing

    databases = _postgres.Databases("share_append")
    try:
        database = databases.create("db")
        url = _postgres.url(database)
        first = _common.run_share(
            data=data, landing=landing, registry=registry, warehouse_url=url, mode="append"
        )
        if first.rows != ingested.written:
            raise AssertionError(f"the first share sent {first.rows} rows, the lake holds {ingested.written}")
        # the baseline's table: the same columns, types and indexes as the table the share created
        _postgres.execute(database, f"CREATE TABLE bench.append_template (LIKE {TABLE} INCLUDING ALL)")
    except BaseException:
        databases.drop_all()
        raise

    def ours():
        result = _common.run_share(
            data=data, landing=landing, registry=registry, warehouse_url=url, mode="append"
        )
        if (result.rows, result.strategy) != (ingested.written, "full"):
            raise AssertionError(f"expected a full append of {ingested.written} rows, got {result}")

    def reset_ours():
        _postgres.execute(
            database,
            f"DROP TABLE IF EXISTS {TABLE}",
            "DELETE FROM bench._pipelines_state WHERE dataset = 'events'",
            "CHECKPOINT",
        )

    def baseline():
        columns = ", ".join(f'"{c}"' for c in _common.SHARED_COLUMNS)
        _postgres.psql(database, f"\\copy {COPY_TABLE} ({columns}) FROM '{csv_path}' CSV")

    def reset_baseline():
        _postgres.execute(
            database,
            f"DROP TABLE IF EXISTS {COPY_TABLE}",
            f"CREATE TABLE {COPY_TABLE} (LIKE bench.append_template INCLUDING ALL)",
            "CHECKPOINT",
        )

    def verify() -> dict:
        left = _postgres.table_digest(database, TABLE, _common.SHARED_COLUMNS)
        right = _postgres.table_digest(database, COPY_TABLE, _common.SHARED_COLUMNS)
        if left != right:
            raise AssertionError(f"the share loaded {left}, psql \\copy {right}: the tables differ")
        return {"rows": left["rows"]}

    return Case(
        ours=ours,
        baseline=baseline,
        reset_ours=reset_ours,
        reset_baseline=reset_baseline,
        verify=verify,
        cleanup=databases.drop_all,
        details={
            "databases": f"{databases.prefix}_*",
            "rows_shared": ingested.written,
            "csv_bytes": os.path.getsize(csv_path),
        },
    )


BENCHMARK = Benchmark(
    name="share_append",
    ours="the share flow, mode append, into an empty PostgreSQL table: read the Delta table, CSV batches "
    "through COPY, share state and ledger in the same transaction",
    baseline="psql \\copy of a CSV of the same rows into a table of the same shape (indexes included)",
    target=Target(0.7, ">=", "≥ 0.7x its speed"),
    setup=setup,
    quick_size=10_000,
    full_size=5_000_000,
    describe_size=lambda rows: f"{rows:,} rows ({rows - int(rows * _data.DUPLICATE_SHARE):,} shared)",
    score=lambda ours, baseline, case: baseline.median / ours.median,
    score_unit="x speed",
    order=40,
)
