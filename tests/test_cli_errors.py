"""User mistakes get one `error:` block (what, where, the fix) and exit 1, never a traceback."""

import io
import json
import logging
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from tests.workflows.test_ingest import HEADER, ORDERS, _orders_row, _registry

runner = CliRunner()

WRAPPER = """
import atexit, sys
atexit.register(lambda: print("imported:", sorted(m for m in ("prefect", "great_expectations") if m in sys.modules)))
sys.argv = ["pipelines", *sys.argv[1:]]
from pipelines.cli import main
main()
"""


@pytest.mark.local  # a subprocess: not unit-fast
def test_an_unknown_dataset_is_answered_before_prefect_or_gx_is_imported(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", WRAPPER, "ingest", "flihgts"],
        env={**os.environ, "PIPELINES_NAMESPACE": "test"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stdout == "imported: []\n"
    assert result.stderr.startswith(
        "error: Unknown dataset 'flihgts'. Did you mean 'flights'? Known datasets: "
    )
    assert result.stderr.count("\n") == 1  # one line, no traceback


@pytest.fixture
def console():
    """A stand-in for the terminal Prefect logs to (a root handler, as Prefect's console handler is)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


@pytest.fixture
def orders(tmp_path, monkeypatch):
    def setup(contract=ORDERS, **row):
        monkeypatch.setenv(
            "PIPELINES_REGISTRY", str(_registry(tmp_path, [_orders_row(**row)], {"orders": contract}))
        )
        monkeypatch.setenv("PIPELINES_LANDING_URL", str(tmp_path / "landing"))
        (tmp_path / "landing" / "orders").mkdir(parents=True, exist_ok=True)
        (tmp_path / "landing" / "orders" / "a.csv").write_text(
            HEADER.rstrip("\n") + ",extra\n1,10,2024-01-01 10:00:00,2024-01-01 10:00:00,new,x\n"
        )

    return setup


def _one_error_block(result, console, *expected: str) -> str:
    assert result.exit_code == 1, result.output
    stderr = result.stderr
    assert stderr.count("error:") == 1 and stderr.startswith("error: "), stderr
    for text in expected:
        assert text in stderr
    shown = stderr + result.stdout + console.getvalue()
    assert "Traceback" not in shown
    message = stderr.removeprefix("error: ").strip()[:60]
    assert shown.count(message) == 1, shown  # said once, not repeated by Prefect's failure logs
    return stderr


@pytest.mark.usefixtures("prefect_harness")
def test_a_bad_parameter_value_is_one_error(orders, console):
    orders()
    result = runner.invoke(app, ["run", "ingest", "-p", "dataset=orders", "-p", "full_refresh=maybe"])
    _one_error_block(
        result,
        console,
        "Flow 'ingest' got an invalid parameter value: full_refresh: Input should be a valid boolean",
        "(got 'maybe'). Nothing was run; fix the -p value",
    )
    result = runner.invoke(app, ["run", "flights", "-p", "through=2013-13-45"])
    _one_error_block(
        result, console, "through must be a YYYY-MM-DD date, got '2013-13-45'; e.g. -p through=2013-01-31."
    )


@pytest.mark.usefixtures("prefect_harness")
def test_a_schema_change_a_contract_problem_and_a_missing_upstream_are_one_error_each(
    orders, console, monkeypatch
):
    orders(schema_policy="freeze")
    _one_error_block(
        runner.invoke(app, ["ingest", "orders"]),
        console,
        "Dataset 'orders' has schema_policy=freeze",
        "Fix: add the column(s) to contracts/orders.yaml",
    )
    orders(contract=ORDERS.replace("int64", "integr"))
    _one_error_block(
        runner.invoke(app, ["ingest", "orders"]), console, "columns.order_id.type = 'integr': unknown type"
    )
    monkeypatch.delenv("PIPELINES_REGISTRY")  # the shipped registry: flight_delays_daily reads flights
    _one_error_block(
        runner.invoke(app, ["aggregate", "flight_delays_daily"]),
        console,
        "its input 'flights' has no cleaned table yet",
        "Run `pipelines ingest flights` first.",
    )


@pytest.mark.usefixtures("prefect_harness")
def test_debug_shows_the_traceback(orders, console):
    orders(schema_policy="freeze")
    result = runner.invoke(app, ["--debug", "ingest", "orders"])
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr and "SchemaFrozenError" in result.stderr
    assert result.stderr.count("error: Dataset 'orders' has schema_policy=freeze") == 1


@pytest.mark.usefixtures("prefect_harness")
def test_submitting_into_serving_from_another_namespace_needs_force(orders, console, monkeypatch, tmp_path):
    orders()
    args = ["submit", "ingest", "--namespace", "serving", "-p", "dataset=orders"]
    _one_error_block(
        runner.invoke(app, args),
        console,
        "Refusing to submit ingest into the serving namespace from namespace 'test'",
        "submit again with --force",
    )
    assert not (tmp_path / "data" / "serving").exists()  # nothing ran
    result = runner.invoke(app, [*args, "--force"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout[result.stdout.index("{") :])["namespace"] == "serving"
    monkeypatch.setenv("PIPELINES_NAMESPACE", "serving")  # serving's own context needs no --force
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output


@pytest.mark.local  # a subprocess: not unit-fast
@pytest.mark.usefixtures("prefect_harness")
def test_expectations_cost_nothing_without_new_data_and_a_typo_stops_the_run_before_any_commit(
    orders, console, tmp_path
):
    from deltalake import DeltaTable

    with_expectation = ORDERS + "expectations:\n  - expect_column_values_to_not_be_null: {column: order_id}\n"
    orders(contract=with_expectation)
    assert runner.invoke(app, ["ingest", "orders"]).exit_code == 0
    table = tmp_path / "data" / "test" / "cleaned" / "orders"
    assert DeltaTable(str(table)).to_pyarrow_table().num_rows == 1

    # A fresh process with nothing new to ingest validates nothing, so it never imports GX (seconds).
    env = {**os.environ, "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp_path / 'p.db'}"}
    child = subprocess.run(
        [sys.executable, "-c", WRAPPER, "ingest", "orders"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.splitlines()[-1] == "imported: ['prefect']"
    assert '"status": "no_new_data"' in child.stdout

    # A typo in an expectation stops the next run with data before it validates or commits a row ...
    _registry(tmp_path, [_orders_row()], {"orders": with_expectation.replace("_null:", "_nul:")})
    (tmp_path / "landing" / "orders" / "b.csv").write_text(
        HEADER + "2,20,2024-01-02 10:00:00,2024-01-02 10:00:00,new\n"
    )
    _one_error_block(
        runner.invoke(app, ["ingest", "orders"]),
        console,
        "The expectations of contracts/orders.yaml have 1 problem(s); nothing was validated or committed",
        "expectations[0].expect_column_values_to_not_be_nul: is not a Great Expectations expectation. "
        "Did you mean 'expect_column_values_to_not_be_null'?",
        "Fix them and check again with `pipelines registry check`.",
    )
    assert DeltaTable(str(table)).to_pyarrow_table().num_rows == 1
    # ... and once fixed, the file it had landed is ingested.
    _registry(tmp_path, [_orders_row()], {"orders": with_expectation})
    result = runner.invoke(app, ["ingest", "orders"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout[result.stdout.index("{") :])["written"] == 1
    assert DeltaTable(str(table)).to_pyarrow_table().num_rows == 2
