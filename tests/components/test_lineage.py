"""OpenLineage: an ingest run sends START and COMPLETE to the configured file transport."""

import json

import pytest

from pipelines.workflows.ingest import ingest
from tests.components.test_alerts import ROWS, _registry

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_ingest_emits_start_and_complete_to_the_file_transport(tmp_path, monkeypatch):
    from pipelines.components.resources import Storage

    events_file = tmp_path / "lineage" / "events.jsonl"
    events_file.parent.mkdir()
    monkeypatch.setenv("PIPELINES_OPENLINEAGE_URL", str(events_file))
    monkeypatch.setenv("PIPELINES_REGISTRY", str(_registry(tmp_path)))
    monkeypatch.setenv("PIPELINES_LANDING_URL", str(tmp_path / "landing"))
    Storage(str(tmp_path / "landing")).write_atomic("items/day1.csv", ROWS.encode())

    state = ingest(dataset="items", return_state=True)
    assert state.is_completed()
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    run_id = str(state.state_details.flow_run_id)
    for event in events:
        assert event["run"]["runId"] == run_id
        assert (event["job"]["namespace"], event["job"]["name"]) == ("pipelines.test", "ingest.items")
        assert [(d["namespace"], d["name"]) for d in event["inputs"]] == [
            ("file", f"{tmp_path}/landing/items/*.csv")
        ]
        assert [(d["namespace"], d["name"]) for d in event["outputs"]] == [
            ("file", f"{tmp_path}/data/test/cleaned/items")
        ]
        fields = event["outputs"][0]["facets"]["schema"]["fields"]
        assert [(f["name"], f["type"]) for f in fields] == [("order_id", "int64"), ("amount", "float64")]
    assert events[1]["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] == 3


def test_no_url_no_events(tmp_path, monkeypatch):
    from pipelines.components import lineage

    assert lineage.transport_url({}) is None
    assert lineage.transport_url({"PIPELINES_OPENLINEAGE_URL": " "}) is None
