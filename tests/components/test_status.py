"""`pipelines status` reads what the runs committed; freshness is judged against an injectable clock."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.components.environment import get_settings
from pipelines.components.status import freshness_verdict, status_for_settings
from pipelines.cookbooks.flights import flights


@pytest.fixture(scope="module")
def flights_run(prefect_harness, tmp_path_factory):
    """One small window of the flights cookbook in a module-wide data root, shared by the tests below."""
    root = tmp_path_factory.mktemp("status")
    env = {
        "PIPELINES_NAMESPACE": "test",
        "PIPELINES_DATA_URL": str(root / "data"),
        "PIPELINES_WAREHOUSE_URL": f"sqlite:///{root}/warehouse/{{namespace}}.sqlite",
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        result = flights(start="2013-01-01", through="2013-01-01")
    return env, result


@pytest.fixture
def in_flights_env(flights_run, monkeypatch):
    env, result = flights_run
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return result


def test_status_json_reports_the_counts_the_runs_recorded(in_flights_env):
    result = in_flights_env
    out = CliRunner().invoke(app, ["status", "--json"])
    assert out.exit_code == 0, out.output
    statuses = {s["dataset"]: s for s in json.loads(out.output)}
    assert set(result.datasets) <= set(statuses)
    for name, summary in result.datasets.items():
        s = statuses[name]
        assert s["last_run"]["result"] == "committed"
        assert (s["rows_in"], s["written"], s["quarantined"], s["late_rows"]) == (
            summary.rows_in,
            summary.written,
            summary.quarantined,
            summary.late_rows,
        ), name
        assert s["watermark"] == summary.watermark
        assert s["freshness_verdict"] == "fresh"
        assert s["files"] >= 1 and s["size_bytes"] > 0
    delays = statuses["flight_delays_daily"]
    assert delays["written"] == result.aggregates["flight_delays_daily"].rows_written
    assert delays["shared_version"] == result.shared["flight_delays_daily"].delta_version
    assert delays["warehouse_table"] == "flight_delays_daily"
    # datasets of other cookbooks were never built here
    assert statuses["posts"]["exists"] is False
    assert statuses["posts"]["freshness_verdict"] == "never_committed"


def test_status_of_one_dataset_as_a_table(in_flights_env):
    out = CliRunner().invoke(app, ["status", "flights"], env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    assert "flights" in out.output and "fresh (1d)" in out.output
    assert "airlines" not in out.output


def test_freshness_breaks_when_the_clock_moves_past_the_registry_freshness(in_flights_env):
    settings = get_settings()
    (now,) = status_for_settings(settings, ["flights"])
    assert now.freshness_verdict == "fresh"
    later = now.last_commit_at + timedelta(days=1, minutes=1)
    (stale,) = status_for_settings(settings, ["flights"], now=later)
    assert stale.freshness_verdict == "stale"
    assert stale.age_seconds == pytest.approx(86460, abs=1)
    # the 2013 watermark is reported, not judged
    assert stale.watermark.startswith("2013-01-0")


def test_freshness_verdicts():
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert freshness_verdict(None, at, at) == "not_checked"
    assert freshness_verdict(timedelta(hours=1), None, at) == "never_committed"
    assert freshness_verdict(timedelta(hours=1), at, at + timedelta(minutes=59)) == "fresh"
    assert freshness_verdict(timedelta(hours=1), at, at + timedelta(minutes=61)) == "stale"


def test_status_of_an_unknown_dataset_says_did_you_mean(in_flights_env):
    out = CliRunner().invoke(app, ["status", "flight"])
    assert out.exit_code == 1
    assert "flight" in out.output and "flights" in out.output
