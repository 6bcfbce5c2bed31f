"""The share workflow when the contract changes or a share breaks: schema changes, crashes, races, namespaces,
the command line (split from test_share.py so that two test workers can share the share tests)."""
# ruff: noqa: F811 (the fixtures imported from test_share.py are the tests' parameters)

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import pipelines
from pipelines.components import sharing
from pipelines.components.sharing import ShareError
from pipelines.components.sqlschema import SchemaChangeError
from pipelines.workflows.ingest import ingest
from pipelines.workflows.share import share
from tests.workflows._direct_share import direct_share
from tests.workflows.test_share import (  # noqa: F401 (fixtures)
    HEADER,
    ORDERS,
    Env,
    day1,
    day1_ingested,
    day1_template,
    env,
    mirrors,
    write_registry,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")


# schema evolution -----------------------------------------------------------------------------


def test_new_column_is_added_in_place(env, day1_ingested):
    share("orders")
    env.land(
        "orders",
        "d2.csv",
        "order_id,amount,ordered_at,updated_at,status,channel\n5,5.00,2024-01-02 10:00:00,2024-01-02 10:00:00,new,web\n",
    )
    ingest("orders")
    result = share("orders")
    assert result.schema_changes == [
        "added column channel (text)" if env.dialect == "postgresql" else "added column channel (TEXT)"
    ]
    assert result.strategy == "incremental"
    assert env.rows("orders", '"order_id", "channel"') == [(1, None), (2, None), (3, None), (5, "web")]
    assert [c.name for c in env.describe("orders").columns][-1] == "channel"


def test_safe_widening_is_applied(env):
    env.contract("orders", ORDERS.replace("order_id:   {type: int64", "order_id:   {type: int32"))
    day1(env)
    ingest("orders")
    share("orders")
    if env.dialect == "postgresql":
        assert env.describe("orders").column("order_id").type == "integer"
        env.query(f'ALTER TABLE {env.table("orders")} ALTER COLUMN "status" TYPE varchar(40)')
    env.contract("orders", ORDERS)
    env.land("orders", "d2.csv", HEADER + "3000000000,1,2024-01-02 10:00:00,2024-01-02 10:00:00,big\n")
    ingest("orders", full_refresh=True)
    result = share("orders")
    if env.dialect == "postgresql":
        assert result.schema_changes == [
            "widened column order_id from integer to bigint",
            "widened column status from character varying(40) to text",
        ]
        assert env.describe("orders").column("order_id").type == "bigint"
        assert env.describe("orders").column("status").type == "text"
    else:
        assert result.schema_changes == []  # SQLite stores every integer the same way
    assert [r[0] for r in mirrors(env)] == [1, 2, 3, 3000000000]


def test_unsafe_type_change_stops_with_the_way_forward(env, day1_ingested):
    share("orders")
    before = env.snapshot("orders")
    env.contract("orders", ORDERS.replace('amount:     {type: "decimal(12,2)"', "amount:     {type: float64"))
    with pytest.raises(SchemaChangeError) as caught:
        share("orders")
    message = str(caught.value)
    old, new = (
        ("numeric(12,2)", "double precision") if env.dialect == "postgresql" else ("NUMERIC(12,2)", "REAL")
    )
    assert f"column 'amount' is {old} in {env.table('orders')}" in message
    assert f"now makes it {new}" in message
    assert "not a safe widening" in message
    assert "pipelines share orders --full-refresh" in message
    assert "the table and the share state are unchanged" in message
    assert env.snapshot("orders") == before
    assert env.loads("orders")[-1]["status"] == "failed"

    rebuilt = share("orders", full_refresh=True)
    assert (rebuilt.strategy, rebuilt.rows) == ("full", 3)
    assert env.describe("orders").column("amount").type == new
    assert [float(r[1]) for r in env.rows("orders", '"order_id", "amount"')] == [10.5, 20.0, 30.25]


# failures and concurrency ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["merge", "append"])
def test_an_exception_before_commit_leaves_table_and_state_unchanged(env, day1_ingested, mode, monkeypatch):
    share("orders", mode=mode)
    env.land("orders", "d2.csv", HEADER + "2,22.00,2024-01-01 11:00:00,2024-01-02 09:00:00,paid\n")
    ingest("orders")
    before = env.snapshot("orders")
    real = sharing._record_load

    def fail_at_the_end(warehouse, conn, row):
        real(warehouse, conn, row)  # rows copied, merged, state written: only the commit is left
        if row["status"] == "loaded":
            raise RuntimeError("lost the connection just before COMMIT")

    monkeypatch.setattr(sharing, "_record_load", fail_at_the_end)
    with pytest.raises(RuntimeError, match="just before COMMIT"):
        share("orders", mode=mode)
    assert env.snapshot("orders") == before
    failed = env.loads("orders")[-1]
    assert failed["status"] == "failed" and "just before COMMIT" in failed["error"]

    monkeypatch.setattr(sharing, "_record_load", real)
    result = share("orders", mode=mode)
    assert (result.status, result.rows) == ("loaded", 1)
    assert env.count("orders") == (3 if mode == "merge" else 4)
    assert share("orders", mode=mode).status == "no_changes"


KILLED = """\
import sys, time
from pathlib import Path
from pipelines.components import sharing
real = sharing._record_load
def pause(warehouse, conn, row):
    real(warehouse, conn, row)
    if row["status"] == "loaded":
        Path(sys.argv[1]).write_text("rows copied, not committed")
        time.sleep(300)
sharing._record_load = pause
from tests.workflows._direct_share import direct_share
direct_share(mode=sys.argv[2], run_id="killed")
"""


@pytest.mark.parametrize("mode", ["merge", "append"])
def test_a_process_killed_before_commit_leaves_nothing_and_a_rerun_loads_once(
    env, day1_ingested, mode, tmp_path
):
    share("orders", mode=mode)
    env.land(
        "orders",
        "d2.csv",
        HEADER
        + "2,22.00,2024-01-01 11:00:00,2024-01-02 09:00:00,paid\n"
        + "6,60.00,2024-01-02 09:00:00,2024-01-02 09:00:00,new\n",
    )
    ingest("orders")
    before = env.snapshot("orders")
    marker = tmp_path / "paused"
    root = str(Path(pipelines.__file__).resolve().parents[1])
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(KILLED))
    proc = subprocess.Popen([sys.executable, str(script), str(marker), mode], env=environ)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, "the share process ended before reaching the commit"
            assert time.monotonic() < deadline, "the share process never reached the commit"
            time.sleep(0.1)
        assert env.snapshot("orders") == before  # readers never see uncommitted rows
    finally:
        proc.kill()
        proc.wait(30)
    assert proc.returncode == -9
    assert env.snapshot("orders") == before
    assert "killed" not in {x["run_id"] for x in env.loads("orders")}

    result = share("orders", mode=mode)
    assert (result.status, result.rows) == ("loaded", 2)
    assert env.count("orders") == (4 if mode == "merge" else 5)
    assert share("orders", mode=mode).status == "no_changes"
    if mode == "merge":
        mirrors(env)


def test_two_shares_at_once_equal_one(env, day1_ingested, monkeypatch):
    real = sharing._upsert_state
    inside = threading.Event()

    def slow_state(warehouse, conn, row):
        inside.set()
        time.sleep(0.5)  # hold the lock while the other share is waiting for it
        real(warehouse, conn, row)

    monkeypatch.setattr(sharing, "_upsert_state", slow_state)
    results: list = []
    errors: list = []
    start = threading.Barrier(2)

    def run(name):
        start.wait()
        try:
            results.append(direct_share(mode="append", run_id=name))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"t{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    assert inside.is_set()
    assert sorted(r.status for r in results) == ["loaded", "no_changes"]
    assert sum(r.rows for r in results) == 3
    assert env.count("orders") == 3  # append would have doubled the rows without the lock
    assert sorted(x["status"] for x in env.loads("orders")) == ["loaded", "no_changes"]


# namespaces, errors and the command line ------------------------------------------------------


def test_each_namespace_has_its_own_tables(env, day1_ingested, monkeypatch):
    share("orders")
    monkeypatch.setenv("PIPELINES_NAMESPACE", "research-x")
    with pytest.raises(ShareError, match="no cleaned table yet"):
        share("orders")
    ingest("orders")
    other = share("orders")
    assert other.namespace == "research-x"
    if env.dialect == "postgresql":
        assert other.table == '"research_x"."orders"'
    else:
        assert (env.root / "warehouse" / "research-x.sqlite").exists()
    assert env.count("orders") == 3
    assert env.query(f"SELECT count(*) FROM {other.table}", namespace="research-x") == [(3,)]


def test_missing_table_is_rebuilt(env, day1_ingested):
    share("orders")
    env.query(f"DROP TABLE {env.table('orders')}")
    result = share("orders")
    assert (result.strategy, result.rows) == ("full", 3)
    assert "was missing" in result.reason


@pytest.mark.local
def test_bad_arguments_are_named(env_sqlite):
    with pytest.raises(ShareError, match="Unknown share mode 'upsert'"):
        share("orders", mode="upsert")
    with pytest.raises(ShareError, match="Did you mean 'append'"):
        share("orders", mode="apend")
    with pytest.raises(ShareError, match=r"no cleaned table yet .*\(pipelines ingest orders\)"):
        share("orders")
    with pytest.raises(Exception, match="Did you mean 'orders'"):
        share("ordres")


@pytest.fixture
def env_sqlite(tmp_path, monkeypatch) -> Env:
    monkeypatch.setenv("PIPELINES_REGISTRY", str(write_registry(tmp_path)))
    monkeypatch.setenv("PIPELINES_LANDING_URL", str(tmp_path / "landing"))
    return Env(tmp_path, "sqlite")


@pytest.mark.local
def test_command_line(env_sqlite, day1_template):
    from pipelines.cli import app

    day1_template.copy_to(env_sqlite)
    runner = CliRunner()
    result = runner.invoke(app, ["share", "orders", "--mode", "append"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert (printed["dataset"], printed["mode"], printed["status"], printed["rows"]) == (
        "orders",
        "append",
        "loaded",
        3,
    )
    again = runner.invoke(app, ["share", "orders", "--mode", "append", "--full-refresh"])
    assert json.loads(again.stdout)["strategy"] == "full"
    assert env_sqlite.count("orders") == 3
    bad = runner.invoke(app, ["share", "orders", "--mode", "sideways"])
    assert bad.exit_code == 1
    assert "Unknown share mode 'sideways'" in bad.stderr
