"""A cookbook run shows one summary artifact (namespaced key) and tags its subflows with the namespace."""

import asyncio
import json

import pytest

from pipelines.components.summary import artifact_key


def test_artifact_keys_carry_the_namespace_in_prefects_alphabet():
    assert artifact_key("research-feature-x", "ingest", "flight_delays_daily") == (
        "research-feature-x-ingest-flight-delays-daily"
    )
    assert artifact_key("e2e", "e2e-report") == "e2e-e2e-report"


async def _read(run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
    )

    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
        children = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id]))
        )
        flows = {c.flow_id: (await client.read_flow(c.flow_id)).name for c in children}
    return artifacts, [(flows[c.flow_id], c.tags, c.parameters) for c in children]


@pytest.mark.integration
def test_flights_run_on_a_server_has_a_summary_artifact_and_namespace_tagged_subflows(
    prefect_server, monkeypatch
):
    from pipelines.cookbooks.flights import flights

    monkeypatch.setenv("PIPELINES_NAMESPACE", "research-observe")
    with prefect_server.settings():
        state = flights(start="2013-01-01", through="2013-01-01", return_state=True)
        assert state.is_completed(), state.message
        result = state.result()
        artifacts, children = asyncio.run(_read(state.state_details.flow_run_id))

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

    assert sorted(name for name, _, _ in children) == sorted(["ingest"] * 5 + ["aggregate", "share"])
    for name, tags, parameters in children:
        assert {"namespace:research-observe", "kind:research"} <= set(tags), (name, parameters, tags)
