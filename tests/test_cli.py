import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from tests.workflows.test_ingest import HEADER, ORDERS, _orders_row, _registry

runner = CliRunner()


def _cli(*args, cwd=None, env=None):
    """Run the installed entry point in a subprocess (a real process, as a user would)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("env", "list", "run", "ingest", "aggregate", "cleanup", "forget", "registry"):
        assert command in result.stdout


def test_env_outside_git_is_local(tmp_path, monkeypatch):
    monkeypatch.delenv("PIPELINES_NAMESPACE")
    result = _cli("env", "--json", cwd=tmp_path)
    rows = {r["setting"]: r for r in json.loads(result.stdout)}
    assert rows["namespace"]["value"] == "local"
    assert rows["kind"]["value"] == "research"


def test_env_with_namespace_variable_is_serving(tmp_path):
    result = _cli("env", "--json", cwd=tmp_path, env={"PIPELINES_NAMESPACE": "serving"})
    rows = {r["setting"]: r for r in json.loads(result.stdout)}
    assert (rows["namespace"]["value"], rows["kind"]["value"]) == ("serving", "serving")
    assert rows["namespace"]["origin"] == "environment PIPELINES_NAMESPACE"


def test_env_on_a_feature_branch_and_secrets_are_masked(tmp_path, monkeypatch):
    monkeypatch.delenv("PIPELINES_NAMESPACE")
    subprocess.run(["git", "init", "-q", "-b", "feature/x"], cwd=tmp_path, check=True)
    result = _cli(
        "env", cwd=tmp_path, env={"AWS_SECRET_ACCESS_KEY": "very-secret-value-123", "COLUMNS": "200"}
    )
    assert result.returncode == 0, result.stderr
    assert "research-feature-x" in result.stdout
    assert "very-secret-value-123" not in result.stdout + result.stderr
    assert "**********" in result.stdout
    assert "environment variable AWS_SECRET_ACCESS_KEY" in result.stdout


def test_env_hides_the_warehouse_password():
    result = runner.invoke(
        app, ["env", "--json"], env={"PIPELINES_WAREHOUSE_URL": "postgresql://u:hunter2-pass@db/x"}
    )
    assert "hunter2-pass" not in result.stdout
    assert "postgresql://u:***@db/x" in result.stdout


def test_list_shows_workflows_and_cookbooks_with_their_summary():
    result = runner.invoke(app, ["list"])
    lines = result.stdout.splitlines()
    assert any(
        line.startswith("workflow") and "ingest" in line and "landing -> raw" in line for line in lines
    )
    assert any(line.startswith("cookbook") and "flights" in line for line in lines)


def test_run_unknown_name_suggests(tmp_path):
    result = runner.invoke(app, ["run", "ingset"])
    assert result.exit_code == 1
    assert "Unknown workflow or cookbook 'ingset'. Did you mean 'ingest'?" in result.stderr


def test_run_rejects_unknown_and_missing_parameters():
    result = runner.invoke(app, ["run", "ingest", "-p", "datasett=x"])
    assert result.exit_code == 1
    assert "has no parameter 'datasett'. Did you mean 'dataset'?" in result.stderr
    result = runner.invoke(app, ["run", "ingest"])
    assert "needs parameter(s) dataset; pass -p dataset=VALUE" in result.stderr
    result = runner.invoke(app, ["run", "ingest", "-p", "novalue"])
    assert "is not key=value" in result.stderr


@pytest.mark.usefixtures("prefect_harness")
def test_run_and_ingest_print_the_result_as_json(tmp_path, monkeypatch):
    registry = _registry(tmp_path, [_orders_row()], {"orders": ORDERS})
    monkeypatch.setenv("PIPELINES_REGISTRY", str(registry))
    monkeypatch.setenv("PIPELINES_LANDING_URL", str(tmp_path / "landing"))
    (tmp_path / "landing" / "orders").mkdir(parents=True)
    (tmp_path / "landing" / "orders" / "a.csv").write_text(
        HEADER + "1,10,2024-01-01 10:00:00,2024-01-01 10:00:00,new\n"
    )
    result = runner.invoke(app, ["run", "ingest", "-p", "dataset=orders"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout[result.stdout.index("{") :])
    assert (payload["dataset"], payload["written"]) == ("orders", 1)
    result = runner.invoke(app, ["ingest", "orders"])
    payload = json.loads(result.stdout[result.stdout.index("{") :])
    assert payload["status"] == "no_new_data"


def test_registry_check_reports_every_problem_and_exits_1(tmp_path):
    registry = _registry(
        tmp_path,
        [
            _orders_row(stage="cleened"),
            _orders_row(name="orders2", schema_policy="evolv", primary_key="order"),
        ],
        {"orders": ORDERS, "orders2": ORDERS.replace("int64", "integer")},
    )
    result = runner.invoke(app, ["registry", "check", "--path", str(registry)])
    assert result.exit_code == 1
    err = result.stderr
    assert "stage = 'cleened': must be one of cleaned, aggregated. Did you mean 'cleaned'?" in err
    assert "datasets.csv row 3, schema_policy = 'evolv'" in err
    assert "primary_key = 'order': is not a column of the contract. Did you mean 'order_id'?" in err
    assert "columns.order_id.type = 'integer': unknown type" in err and "Did you mean 'int64'?" in err


def test_the_shipped_registry_is_valid():
    result = runner.invoke(app, ["registry", "check"])
    assert result.exit_code == 0, result.stderr
    from pipelines.components.environment import DEFAULT_REGISTRY

    rows = len(DEFAULT_REGISTRY.read_text().strip().splitlines()) - 1
    assert f"{rows} dataset(s), all valid" in result.stdout


def test_python_dash_m_entry_point():
    result = _cli("--help")
    assert result.returncode == 0 and "registry" in result.stdout


@pytest.mark.usefixtures("prefect_harness")
def test_a_run_summary_ends_with_where_its_tables_and_warehouse_are(tmp_path, monkeypatch):
    registry = _registry(tmp_path, [_orders_row()], {"orders": ORDERS})
    monkeypatch.setenv("PIPELINES_REGISTRY", str(registry))
    monkeypatch.setenv("PIPELINES_LANDING_URL", str(tmp_path / "landing"))
    (tmp_path / "landing" / "orders").mkdir(parents=True)
    result = runner.invoke(app, ["run", "ingest", "-p", "dataset=orders"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert result.stderr.strip().splitlines()[-1] == (
        f"namespace test (research): tables under {tmp_path / 'data' / 'test'}; "
        f"warehouse sqlite:///{tmp_path}/warehouse/test.sqlite"
    )
    json.loads(result.stdout[result.stdout.index("{") :])  # stdout is still the JSON result alone
