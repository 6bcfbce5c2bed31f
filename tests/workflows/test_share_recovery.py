"""Share against real SQLite and PostgreSQL: a target changed behind our back, a dropped connection, float32."""

import time

import polars as pl
import psycopg
import pytest

from pipelines.components import sharing
from pipelines.workflows.ingest import ingest
from pipelines.workflows.share import share
from tests.conftest import POSTGRES_ADMIN
from tests.workflows.test_share import day1, env, env_pg, write_aggregated  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_a_truncated_target_is_noticed_and_reloaded(env):  # noqa: F811
    day1(env)
    ingest("orders")
    assert share("orders").rows == 3
    assert env.query(f"SELECT row_count FROM {env.table('_pipelines_state')}") == [(3,)]
    env.query(f"DELETE FROM {env.table('orders')}")  # truncated behind our back
    again = share("orders")
    assert (again.status, again.strategy, again.rows, env.count("orders")) == ("loaded", "full", 3, 3)
    assert again.reason == (
        f"{env.table('orders')} holds 0 row(s) but held 3 after version {again.previous_version} was shared "
        "(truncated, edited or restored from a backup since); it is reloaded from the lake"
    )
    assert share("orders").status == "no_changes"  # consistent again: nothing to do
    env.query(f"DELETE FROM {env.table('orders')} WHERE order_id = 2")  # a restore that lost a row
    restored = share("orders")
    assert (restored.strategy, env.count("orders")) == ("full", 3)
    assert "holds 2 row(s) but held 3" in restored.reason


def test_float32_values_arrive_as_written(env):  # noqa: F811
    frame = pl.DataFrame({"n": [1, 2], "ratio": pl.Series([69.98, 80.96], dtype=pl.Float32)})
    write_aggregated(env, "events", frame, "f-1", mode="overwrite")
    share("events")
    assert env.rows("events", '"n", "ratio"') == [(1, 69.98), (2, 80.96)]
    shown = env.query(f'SELECT CAST("ratio" AS TEXT) FROM {env.table("events")} ORDER BY "n"')
    assert shown == [("69.98",), ("80.96",)]


@pytest.mark.integration
def test_a_connection_killed_mid_load_is_retried_and_loads_exactly_once(env_pg, monkeypatch):  # noqa: F811
    pg = env_pg
    day1(pg)
    ingest("orders")
    killed: list[int] = []
    copy = sharing._PostgresLoader._copy

    def copy_then_kill(self, target, columns, frames, exprs):
        def frames_then_kill():
            yield from frames
            if not killed:  # first attempt: the server drops the connection before COPY completes
                pid = self.raw.info.backend_pid
                with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
                    admin.execute("SELECT pg_terminate_backend(%s)", [pid])
                    for _ in range(500):  # until the server has really dropped it (bounded)
                        if not admin.execute(
                            "SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]
                        ).fetchone():
                            break
                        time.sleep(0.01)
                killed.append(pid)

        return copy(self, target, columns, frames_then_kill(), exprs)

    monkeypatch.setattr(sharing._PostgresLoader, "_copy", copy_then_kill)
    result = share("orders")
    assert len(killed) == 1
    assert (result.status, result.rows, pg.count("orders")) == ("loaded", 3, 3)
    assert [(r["status"], r["rows"]) for r in pg.loads("orders")] == [("failed", 0), ("loaded", 3)]
    assert (
        "OperationalError" in pg.loads("orders")[0]["error"]
        and "connection is lost" in pg.loads("orders")[0]["error"]
    )
    assert pg.state("orders")["run_id"] == result.run_id
