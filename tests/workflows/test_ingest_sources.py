"""Ingest from a SQL table (PostgreSQL) and a paginated HTTP API through the whole workflow."""

import polars as pl
import pytest
import sqlalchemy as sa

from pipelines.components.resources import Lake, Storage
from pipelines.workflows.ingest import ingest
from tests.components.test_sources import Reply, api  # noqa: F401  (the scripted API fixture)
from tests.workflows.test_ingest import _orders_row, _registry

pytestmark = pytest.mark.usefixtures("prefect_harness")

SQL_CONTRACT = """\
source:
  connection: ORDERS_DB_URL
  table: shop.orders
columns:
  order_id:   {type: int64, nullable: false}
  amount:     {type: "decimal(12,2)"}
  updated_at: {type: datetime, nullable: false}
  order:      {type: string, description: "a column named like a SQL keyword"}
"""


def test_sql_source_pushes_the_incremental_predicate_down(tmp_path, monkeypatch, postgres_url):
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA shop")
        conn.exec_driver_sql(
            'CREATE TABLE shop.orders (order_id int primary key, amount numeric(12,2), updated_at timestamp, "order" text)'
        )
        conn.exec_driver_sql(
            "INSERT INTO shop.orders SELECT i, i * 1.5, timestamp '2024-01-01' + i * interval '1 day', 'o' || i "
            "FROM generate_series(1, 10) AS i"
        )
    registry = _registry(
        tmp_path,
        [_orders_row(source="sql:shop.orders", format="sql", partition_field="updated_at", lookback="2d")],
        {"orders": SQL_CONTRACT},
    )
    monkeypatch.setenv("PIPELINES_REGISTRY", str(registry))
    monkeypatch.setenv("ORDERS_DB_URL", postgres_url)

    first = ingest("orders")
    assert (first.rows_in, first.written, first.quarantined) == (10, 10, 0)
    assert first.watermark_after == "2024-01-11T00:00:00"

    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO shop.orders VALUES (11, 99, '2024-01-12', 'new')")
        conn.exec_driver_sql(
            "UPDATE shop.orders SET amount = 1, updated_at = '2024-01-12 06:00' WHERE order_id = 3"
        )
    second = ingest("orders")
    # since = watermark (01-11) - lookback (2d) = 01-09: rows 8, 9, 10 re-read, plus 11 and the updated 3
    assert second.rows_in == 5
    assert second.watermark_before == "2024-01-11T00:00:00"
    lake = Lake(Storage(str(tmp_path / "data" / "test")))
    cleaned = lake.read("cleaned", "orders").sort("order_id")
    assert cleaned.height == 11
    assert str(cleaned.filter(pl.col("order_id") == 3).get_column("amount")[0]) == "1.00"
    assert cleaned.get_column("order").to_list()[-1] == "new"
    third = ingest("orders")  # the window moved with the watermark: rows 10, 11 and 3 re-read
    assert (third.rows_in, third.watermark_after) == (3, "2024-01-12T06:00:00")
    assert (
        lake.read("cleaned", "orders")
        .drop("_run_id", "_ingested_at", "_source_file")
        .sort("order_id")
        .equals(cleaned.drop("_run_id", "_ingested_at", "_source_file"))
    )
    assert ingest("orders").status == "no_new_data"  # the same window re-read gives the same bytes
    engine.dispose()


HTTP_CONTRACT = """\
source:
  records_path: data
  pagination: {type: page, param: page, start: 1}
  since_param: updated_since
columns:
  order_id:   {type: int64, nullable: false}
  updated_at: {type: datetime, format: "%Y-%m-%dT%H:%M:%S", nullable: false}
  status:     {type: string}
"""


def test_http_source_retries_transient_failures_and_keeps_every_page(tmp_path, monkeypatch, api):  # noqa: F811
    pages = {
        "1": [{"order_id": 1, "updated_at": "2024-01-01T10:00:00", "status": "new"}],
        "2": [
            {"order_id": 2, "updated_at": "2024-01-02T10:00:00", "status": "new"},
            {"order_id": None, "updated_at": "2024-01-02T11:00:00"},
        ],
    }
    api.handler = lambda request: Reply(body={"data": pages.get(request.query.get("page"), [])})
    api.script = [
        Reply(status=429, headers={"Retry-After": "1"}),
        Reply(status=500),
        Reply(action="reset"),
    ]
    registry = _registry(
        tmp_path,
        [_orders_row(source=f"{api.url}/orders", format="json", partition_field="", lookback="1d")],
        {"orders": HTTP_CONTRACT},
    )
    monkeypatch.setenv("PIPELINES_REGISTRY", str(registry))
    result = ingest("orders")
    assert (result.rows_in, result.written, result.quarantined) == (3, 2, 1)
    assert len(result.raw_files) == 3  # two pages with records and the empty page that ended paging
    pages_requested = [q.get("page") for q in api.queries("/orders")]
    assert pages_requested[:4] == ["1", "1", "1", "1"]  # 429, 500, reset, then success
    # the incremental predicate reaches the API on the next run: watermark - lookback
    api.requests.clear()
    again = ingest("orders")
    assert again.status == "no_new_data", again
    assert api.queries("/orders")[0]["updated_since"] == "2024-01-01 10:00:00"


def test_http_source_client_error_fails_at_once_with_the_cause(tmp_path, monkeypatch, api):  # noqa: F811
    api.handler = lambda request: Reply(status=404, body={"error": "no such resource"})
    registry = _registry(
        tmp_path,
        [_orders_row(source=f"{api.url}/missing", format="json", partition_field="")],
        {"orders": HTTP_CONTRACT},
    )
    monkeypatch.setenv("PIPELINES_REGISTRY", str(registry))
    with pytest.raises(Exception, match="404") as info:
        ingest("orders")
    assert "/missing" in str(info.value)
    assert len(api.requests) == 1  # not retried: the flow's task retries only transient errors


def test_the_land_task_retries_transient_errors_only():
    """Prefect calls retry_condition_fn with keywords (task=, task_run=, state=); a wrong name means no retry."""
    from prefect.states import Failed

    from pipelines.components.sources import SourceError, TransientSourceError
    from pipelines.workflows.ingest import _land, _retry_transient

    assert _land.retry_condition_fn is _retry_transient
    transient = Failed(data=TransientSourceError("503 from the API"))
    permanent = Failed(data=SourceError("404 from the API"))
    assert _retry_transient(task=_land, task_run=None, state=transient) is True
    assert _retry_transient(task=_land, task_run=None, state=permanent) is False
