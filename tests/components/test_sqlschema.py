"""Warehouse table design: SQL types, identifiers, DDL and what counts as a safe change."""

import polars as pl
import pytest

from pipelines.components.registry import ColumnSpec, Contract, DatasetSpec
from pipelines.components.resources import ColumnInfo, TableInfo
from pipelines.components.sqlschema import (
    SchemaChangeError,
    create_statements,
    design_table,
    evolve_statements,
    index_name,
    key_statements,
    pg_widens,
    sql_type,
    sqlite_compatible,
)


def _spec(columns: dict[str, ColumnSpec], **kwargs) -> DatasetSpec:
    return DatasetSpec(name="orders", stage="cleaned", contract=Contract(columns=columns), **kwargs)


LAKE = {
    "order_id": pl.Int64(),
    "amount": pl.Decimal(12, 2),
    "at": pl.Datetime("us"),
    "extra": pl.String(),
    "_source_file": pl.String(),
    "_partition": pl.String(),
    "_run_id": pl.String(),
    "_ingested_at": pl.Datetime("us", "UTC"),
}
CONTRACT = {
    "order_id": ColumnSpec("order_id", "int64", nullable=False, description="id"),
    "amount": ColumnSpec("amount", "decimal(12,2)"),
    "at": ColumnSpec("at", "datetime"),
}


@pytest.mark.parametrize(
    ("dtype", "pg", "sqlite"),
    [
        (pl.Int8(), "smallint", "INTEGER"),
        (pl.Int32(), "integer", "INTEGER"),
        (pl.Int64(), "bigint", "INTEGER"),
        (pl.UInt64(), "numeric(20,0)", "INTEGER"),
        (pl.Float32(), "real", "REAL"),
        (pl.Float64(), "double precision", "REAL"),
        (pl.Decimal(12, 2), "numeric(12,2)", "NUMERIC(12,2)"),
        (pl.Decimal(30, 10), "numeric(30,10)", "TEXT"),
        (pl.String(), "text", "TEXT"),
        (pl.Boolean(), "boolean", "BOOLEAN"),
        (pl.Date(), "date", "DATE"),
        (pl.Datetime("us"), "timestamp without time zone", "TIMESTAMP"),
        (pl.Datetime("us", "UTC"), "timestamp with time zone", "TIMESTAMPTZ"),
        (pl.Binary(), "bytea", "BLOB"),
        (pl.List(pl.Int64()), None, None),
        (pl.Duration("us"), None, None),
    ],
)
def test_sql_types(dtype, pg, sqlite):
    assert sql_type(dtype, "postgresql") == pg
    assert sql_type(dtype, "sqlite") == sqlite


def test_design_orders_columns_and_leaves_lake_bookkeeping_out():
    spec = _spec(CONTRACT, primary_key=("order_id",), partition_field="at", description="Orders")
    design = design_table(spec, LAKE, "postgresql", key_constraint=True)
    assert design.names == ["order_id", "amount", "at", "extra", "_run_id", "_ingested_at"]
    assert design.column("order_id").not_null and not design.column("amount").not_null
    assert design.column("extra").origin == "the lake table"
    assert design.primary_key == ("order_id",) and design.indexes == (("at",),)
    append = design_table(spec, LAKE, "postgresql", key_constraint=False)
    assert append.primary_key == () and append.indexes == (("order_id",), ("at",))


def test_design_reports_every_bad_identifier_and_type_at_once():
    lake = {
        "ok": pl.Int64(),
        "x" * 64: pl.Int64(),
        "é" * 32: pl.Int64(),
        "Name": pl.String(),
        "name": pl.String(),
    }
    lake["tags"] = pl.List(pl.String())
    with pytest.raises(SchemaChangeError) as caught:
        design_table(_spec({}), lake, "sqlite", key_constraint=False)
    message = str(caught.value)
    assert "is 64 bytes long; SQL identifiers are at most 63" in message
    assert f"column {'é' * 32!r} is 64 bytes long" in message
    assert "columns 'Name' and 'name' differ only in case" in message
    assert "column 'tags' has type List(String), which the warehouse cannot hold" in message
    assert "Nothing was loaded" in message
    # PostgreSQL tells Name and name apart
    lake.pop("x" * 64), lake.pop("é" * 32), lake.pop("tags")
    assert design_table(_spec({}), lake, "postgresql", key_constraint=False).names == ["ok", "Name", "name"]


def test_create_statements_quote_everything():
    spec = _spec(
        {"order": ColumnSpec("order", "int64", nullable=False, description="it's a keyword"),
         'a"b': ColumnSpec('a"b', "string")},
        primary_key=("order",),
        incremental_field='a"b',
    )  # fmt: skip
    design = design_table(spec, {"order": pl.Int64(), 'a"b': pl.String()}, "postgresql", key_constraint=True)
    create, *rest = create_statements(design, '"test"."orders"')
    assert '"order" bigint NOT NULL' in create and '"a""b" text' in create
    assert 'PRIMARY KEY ("order")' in create
    assert 'COMMENT ON COLUMN "test"."orders"."order" IS \'it\'\'s a keyword\'' in rest
    assert rest[-1] == 'CREATE INDEX IF NOT EXISTS "orders__a""b_idx" ON "test"."orders" USING btree ("a""b")'
    sqlite = design_table(spec, {"order": pl.Int64(), 'a"b': pl.String()}, "sqlite", key_constraint=True)
    assert "-- it's a keyword" in create_statements(sqlite, '"orders"')[0]


def test_a_table_to_bulk_load_gets_its_key_and_indexes_after_the_load():
    spec = _spec(CONTRACT, primary_key=("order_id",), partition_field="at")
    design = design_table(spec, LAKE, "postgresql", key_constraint=True)
    create = create_statements(design, '"orders"', keys_after_load=True)
    assert not any("PRIMARY KEY" in s or "CREATE INDEX" in s for s in create)
    assert '"order_id" bigint NOT NULL' in create[0]  # not-null stays with the columns
    assert key_statements(design, '"orders"') == [
        'ALTER TABLE "orders" ADD PRIMARY KEY ("order_id")',
        'CREATE INDEX IF NOT EXISTS "orders__at_idx" ON "orders" USING brin ("at")',
    ]
    together = create_statements(design, '"orders"')
    assert (
        'PRIMARY KEY ("order_id")' in together[0] and together[-1] == key_statements(design, '"orders"')[-1]
    )
    append = design_table(spec, LAKE, "postgresql", key_constraint=False)
    assert [s.split(" ON ")[0] for s in key_statements(append, '"orders"')] == [
        'CREATE INDEX IF NOT EXISTS "orders__order_id_idx"',
        'CREATE INDEX IF NOT EXISTS "orders__at_idx"',
    ]
    with pytest.raises(ValueError, match="SQLite cannot add a primary key"):
        create_statements(
            design_table(spec, LAKE, "sqlite", key_constraint=True), '"orders"', keys_after_load=True
        )


def test_date_and_time_fields_get_block_range_indexes_on_postgres():
    spec = _spec(CONTRACT, primary_key=("order_id",), partition_field="at", incremental_field="amount")
    pg = create_statements(design_table(spec, LAKE, "postgresql", key_constraint=True), '"orders"')
    assert 'CREATE INDEX IF NOT EXISTS "orders__at_idx" ON "orders" USING brin ("at")' in pg
    assert 'CREATE INDEX IF NOT EXISTS "orders__amount_idx" ON "orders" USING btree ("amount")' in pg
    sqlite = create_statements(design_table(spec, LAKE, "sqlite", key_constraint=True), '"orders"')
    assert 'CREATE INDEX IF NOT EXISTS "orders__at_idx" ON "orders" ("at")' in sqlite


def test_long_index_names_are_shortened_with_a_hash():
    name = index_name("t" * 40, ("c" * 40,))
    assert len(name.encode()) <= 63 and name.startswith("t" * 40 + "__") and name.endswith("_idx")
    assert name != index_name("t" * 40, ("c" * 39 + "d",))


@pytest.mark.parametrize(
    ("old", "new", "widens"),
    [
        ("integer", "bigint", True),
        ("smallint", "integer", True),
        ("bigint", "integer", False),
        ("real", "double precision", True),
        ("numeric(10,2)", "numeric(12,2)", True),
        ("numeric(10,2)", "numeric(10,3)", False),
        ("numeric(12,2)", "numeric", True),
        ("integer", "numeric(12,2)", True),
        ("bigint", "numeric(12,2)", False),
        ("character varying(10)", "text", True),
        ("character varying(10)", "character varying(20)", True),
        ("character varying(20)", "character varying(10)", False),
        ("text", "character varying(10)", False),
        ("numeric(12,2)", "double precision", False),
        ("timestamp without time zone", "timestamp with time zone", False),
        ("date", "timestamp without time zone", False),
    ],
)
def test_postgres_widening_rules(old, new, widens):
    assert pg_widens(old, new) is widens


@pytest.mark.parametrize(
    ("old", "new", "ok"),
    [
        ("INTEGER", "INTEGER", True),
        ("BIGINT", "INTEGER", True),
        ("VARCHAR(10)", "TEXT", True),
        ("NUMERIC(10,2)", "NUMERIC(12,2)", True),
        ("DECIMAL(10,2)", "NUMERIC(12,2)", True),
        ("NUMERIC(12,2)", "REAL", False),
        ("NUMERIC(12,2)", "TEXT", False),
        ("DATE", "TIMESTAMP", False),
        ("INTEGER", "TEXT", False),
    ],
)
def test_sqlite_compatibility_by_affinity(old, new, ok):
    assert sqlite_compatible(old, new) is ok


def _existing(*columns: ColumnInfo, key=("order_id",)) -> TableInfo:
    return TableInfo("orders", columns, key)


def test_evolution_adds_widens_relaxes_and_keeps_wider_columns():
    spec = _spec({**CONTRACT, "amount": ColumnSpec("amount", "decimal(14,2)")}, primary_key=("order_id",))
    design = design_table(spec, LAKE, "postgresql", key_constraint=True)
    existing = _existing(
        ColumnInfo("order_id", "bigint", True, "id"),
        ColumnInfo("amount", "numeric(12,2)", False),
        ColumnInfo("at", "timestamp without time zone", True),
        ColumnInfo("gone", "text", True),
        ColumnInfo("extra", "character varying(5)", False),
        ColumnInfo("_run_id", "text", False, "The pipelines run that last wrote this row in the lake (see _pipelines_loads)."),
        ColumnInfo("_ingested_at", "timestamp with time zone", False, "When that run processed this row (UTC)."),
    )  # fmt: skip
    evolution = evolve_statements(design, existing, '"orders"', refresh_hint="rebuild")
    assert evolution.changes == [
        "widened column amount from numeric(12,2) to numeric(14,2)",
        "column at may now be null",
        "widened column extra from character varying(5) to text",
        "column gone is no longer shared; it may now be null",
    ]
    assert 'ALTER TABLE "orders" ALTER COLUMN "amount" TYPE numeric(14,2)' in evolution.statements
    assert 'ALTER TABLE "orders" ALTER COLUMN "gone" DROP NOT NULL' in evolution.statements
    # the same design against a table that already matches changes nothing
    wider = _existing(*(ColumnInfo(c.name, "numeric(20,4)" if c.name == "amount" else c.type, c.name == "order_id", c.description or None) for c in design.columns))  # fmt: skip
    assert evolve_statements(design, wider, '"orders"', refresh_hint="rebuild").changes == []


def test_evolution_names_every_unsafe_change_and_the_way_forward():
    spec = _spec({**CONTRACT, "amount": ColumnSpec("amount", "float64")}, primary_key=("order_id", "at"))
    design = design_table(spec, LAKE, "sqlite", key_constraint=True)
    existing = _existing(
        ColumnInfo("order_id", "INTEGER", True),
        ColumnInfo("amount", "NUMERIC(12,2)", False),
        ColumnInfo("at", "TIMESTAMP", False),
        ColumnInfo("legacy", "TEXT", True),
    )
    with pytest.raises(SchemaChangeError) as caught:
        evolve_statements(design, existing, '"orders"', refresh_hint="run the full refresh")
    message = str(caught.value)
    assert (
        "column 'amount' is NUMERIC(12,2) in \"orders\" but the contract (contracts/orders.yaml) now makes it REAL"
        in message
    )
    assert "column 'legacy' is NOT NULL in \"orders\" but is no longer shared" in message
    assert '"orders" has (order_id), but the registry\'s primary_key is (order_id, at)' in message
    assert message.count("run the full refresh") == 3
    assert message.endswith("Nothing was loaded; the table and the share state are unchanged.")
