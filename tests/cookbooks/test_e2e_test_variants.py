"""The e2e_test cookbook's failure paths and options: a wrong output, a failing or stale cookbook, keep,
the command lines and a PostgreSQL warehouse (a file of its own so a second test worker runs them)."""

from __future__ import annotations

import io
import sqlite3
from contextlib import redirect_stdout

import polars as pl
import pytest

import pipelines.cookbooks.e2e_test as e2e_module
import pipelines.transforms.social_likes as social_transforms
from pipelines.components.discovery import FlowEntry, discover
from pipelines.cookbooks._e2e_cases import CASES, Case, Step
from pipelines.cookbooks.e2e_test import E2EUnhealthy, e2e_test
from tests.cookbooks.test_e2e_test import COOKBOOKS, FAKE, _artifact, _checks, _namespaces


@pytest.mark.usefixtures("prefect_harness")
def test_keep_leaves_the_throwaway_namespace_for_inspection(tmp_path):
    report = e2e_test(keep=True, cookbooks=["social_likes"])
    assert report.healthy and [c.name for c in report.cookbooks] == ["social_likes"]
    assert report.skipped == [n for n in COOKBOOKS if n != "social_likes"]
    root = tmp_path / "data" / report.namespace
    assert report.cleanup.kept and not report.cleanup.removed
    assert (root / "cleaned" / "likes" / "_delta_log").is_dir()
    assert (root / "aggregated" / "top_users" / "_delta_log").is_dir()
    assert len(list((root / "landing" / "social_likes" / "likes").glob("*.ndjson"))) == 14
    database = tmp_path / "warehouse" / f"{report.namespace}.sqlite"
    assert report.cleanup.warehouse == f"SQLite file {database}"
    with sqlite3.connect(database) as conn:
        assert conn.execute('SELECT count(*) FROM "top_users"').fetchone() == (10,)
    assert not (tmp_path / "data" / "landing").exists()  # the samples never reach the shared landing zone
    assert (
        f"kept for inspection: {root}" in report.summary and "(only social_likes; skipped" in report.summary
    )


@pytest.mark.usefixtures("prefect_harness")
def test_a_wrong_output_fails_the_run_and_names_the_check_with_expected_and_actual(tmp_path, monkeypatch):
    original = social_transforms.top_users

    def forgets_a_tie_break(inputs):  # ranks ties on the average by user_id, skipping top-3 likes
        ranked = original(inputs).collect()
        return (
            ranked.sort(["top3_avg_likes", "user_id"], descending=[True, False])
            .drop("rank")
            .with_row_index("rank", offset=1)
            .with_columns(pl.col("rank").cast(pl.Int64))
            .lazy()
        )

    monkeypatch.setattr(social_transforms, "top_users", forgets_a_tie_break)

    state = e2e_test(cookbooks=["social_likes"], return_state=True)

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, E2EUnhealthy)
    report = error.report
    assert not report.healthy and report.cookbooks[0].status == "failed"
    failed = {c.name: c for _, c in report.failures()}
    designed = failed["top_users: the top 10 the sample was designed to produce"]
    assert designed.expected[3:6] == ["u03", "u21", "u12"]
    assert designed.actual[3:6] == ["u03", "u12", "u21"]
    assert "top_users: the top 10 and their numbers" in failed
    shared = failed["top_users in the warehouse: the top 10 by rank"]
    assert shared.actual == designed.actual  # the warehouse got the wrong ranking as built
    assert report.checks_failed == len(failed) == 3  # everything upstream of the transform still passes
    message = str(error)
    assert message.startswith("e2e_test UNHEALTHY: 1 cookbook(s)")
    assert (
        "social_likes: top_users: the top 10 the sample was designed to produce: expected "
        "['u07', 'u01', 'u02', 'u03', 'u21', 'u12', 'u04', 'u05', 'u06', 'u08'], got "
        "['u07', 'u01', 'u02', 'u03', 'u12', 'u21', 'u04', 'u05', 'u06', 'u08']" in message
    )
    assert "top_users: the top 10 the sample was designed to produce" in state.message
    # the report is still recorded, and the throwaway namespace still removed
    markdown = _artifact(state.state_details.flow_run_id)
    assert markdown.startswith("# e2e_test: UNHEALTHY")
    assert "| ❌ | top_users: the top 10 the sample was designed to produce |" in markdown
    assert report.cleanup.removed and _namespaces(tmp_path / "data") == []


@pytest.mark.usefixtures("prefect_harness")
def test_a_cookbook_without_checks_is_a_failed_check(monkeypatch):
    monkeypatch.setattr(e2e_module, "discover", lambda: [*discover(), FAKE])

    state = e2e_test(cookbooks=["weather_alerts"], return_state=True)

    assert state.is_failed()
    report = state.result(raise_on_failure=False).report
    (cookbook,) = report.cookbooks
    assert (cookbook.name, cookbook.status, cookbook.runs) == ("weather_alerts", "unchecked", [])
    (failed,) = cookbook.checks
    assert failed.name == "weather_alerts has e2e checks" and not failed.passed
    assert (
        failed.expected == "a Case in CASES (pipelines/cookbooks/_e2e_cases.py)" and failed.actual == "none"
    )
    assert (
        "weather_alerts unchecked (cookbook 'weather_alerts' has no e2e case: add one to CASES in "
        "pipelines/cookbooks/_e2e_cases.py)" in report.summary
    )


@pytest.mark.usefixtures("prefect_harness")
def test_a_cookbook_that_fails_or_a_stale_case_is_reported_and_the_rest_still_runs(tmp_path, monkeypatch):
    broken = Case(
        "real_estate", (Step("a bad window", {"through": "March"}),), CASES["real_estate"].checks, "x"
    )
    monkeypatch.setitem(CASES, "real_estate", broken)
    monkeypatch.setitem(CASES, "retired", Case("retired", (Step("s", {}),), lambda e: [], "gone"))
    unimportable = FlowEntry("broken", "cookbook", "pipelines.cookbooks.broken_module", "Does not import.")
    monkeypatch.setattr(e2e_module, "discover", lambda: [*discover(), unimportable])
    monkeypatch.setitem(CASES, "broken", Case("broken", (Step("s", {}),), lambda e: [], "x"))

    with pytest.raises(E2EUnhealthy) as info:
        e2e_test(cookbooks=["broken", "real_estate", "retired", "social_likes"])

    report = info.value.report
    statuses = {c.name: c.status for c in report.cookbooks}
    assert statuses == {
        "broken": "error",
        "real_estate": "error",
        "retired": "error",
        "social_likes": "passed",
    }
    broken = report.cookbooks[0]
    assert broken.runs == [] and broken.error.startswith(
        "importing pipelines.cookbooks.broken_module: ModuleNotFoundError: No module named"
    )
    assert (
        broken.checks[0].name == "broken runs and its outputs can be checked" and not broken.checks[0].passed
    )
    estate = report.cookbooks[1]
    assert estate.runs[0].status == "failed"
    assert estate.error.startswith(
        "run 'a bad window': PipelinesError: real_estate: through must be a YYYY-MM-DD"
    )
    assert "CASES in pipelines/cookbooks/_e2e_cases.py has a case for 'retired'" in report.cookbooks[2].error
    assert report.cleanup.removed and _namespaces(tmp_path / "data") == []


@pytest.mark.usefixtures("prefect_harness")
def test_python_dash_m_prints_the_summary_and_exits_non_zero_when_unhealthy(monkeypatch):
    monkeypatch.setattr(e2e_module, "discover", lambda: [FAKE])
    monkeypatch.setattr(e2e_module, "CASES", {})
    printed = io.StringIO()
    with redirect_stdout(printed):
        assert e2e_module._main() == 1
    lines = printed.getvalue().splitlines()
    assert lines[0].startswith("e2e_test UNHEALTHY: 1 cookbook(s), 0/1 check(s) passed")
    assert lines[1].split() == ["weather_alerts", "unchecked", "0/1", "checks", "0.0", "s"]
    assert lines[2:] == [
        "Failed checks:",
        "  weather_alerts: weather_alerts has e2e checks: expected a Case in CASES "
        "(pipelines/cookbooks/_e2e_cases.py), got none",
    ]


@pytest.mark.usefixtures("prefect_harness")
def test_pipelines_run_reports_an_unhealthy_run_and_exits_1(monkeypatch):
    from typer.testing import CliRunner

    from pipelines.cli import app

    monkeypatch.setattr(e2e_module, "discover", lambda: [*discover(), FAKE])
    result = CliRunner().invoke(app, ["run", "e2e_test", "-p", 'cookbooks=["weather_alerts"]'])
    assert result.exit_code == 1
    assert (
        f"error: e2e_test UNHEALTHY: 1 cookbook(s) (only weather_alerts; skipped {', '.join(COOKBOOKS)}), "
        "0/1 check(s) passed" in result.output
    )
    assert "weather_alerts: weather_alerts has e2e checks: expected a Case in CASES" in result.output


@pytest.mark.usefixtures("prefect_harness")
def test_a_postgres_warehouse_gets_a_throwaway_schema_that_is_dropped_afterwards(postgres_url, monkeypatch):
    import psycopg

    monkeypatch.setenv("PIPELINES_WAREHOUSE_URL", postgres_url)
    report = e2e_test(cookbooks=["social_likes"])

    schema = report.namespace.replace("-", "_")
    assert report.healthy and report.cleanup.removed
    assert report.cleanup.warehouse.startswith(f"schema {schema} in postgresql+psycopg://postgres@127.0.0.1")
    checks = _checks(report, "social_likes")
    assert (
        checks["top_users: the result names the warehouse table it was shared to"].actual
        == f'"{schema}"."top_users"'
    )
    assert checks["top_users in the warehouse: the top 10 by rank"].passed
    assert checks["user_top3_avg in the warehouse: every user's numbers"].passed
    with psycopg.connect(postgres_url.replace("postgresql+psycopg", "postgresql")) as conn:
        schemas = [
            r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'e2e_run_%'")
        ]
    assert schemas == []
