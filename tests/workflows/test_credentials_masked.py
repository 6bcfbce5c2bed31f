"""A mistyped warehouse URL never puts its password into Prefect's database or the run's error."""

import asyncio

import pytest

from pipelines.components.errors import ConfigError
from pipelines.workflows.ingest import ingest

PASSWORD = "hunter2-pass-9"


@pytest.mark.usefixtures("prefect_harness")
def test_a_malformed_warehouse_url_does_not_leak_its_password(monkeypatch, capfd):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

    monkeypatch.setenv("PIPELINES_WAREHOUSE_URL", f"postgresql//analyst:{PASSWORD}@db.internal/warehouse")
    with pytest.raises(ConfigError) as info:
        ingest("flights")
    assert "'postgresql//analyst:***@db.internal/warehouse'" in str(info.value)

    async def stored() -> str:
        async with get_client() as client:
            runs = await client.read_flow_runs(limit=1, sort="EXPECTED_START_TIME_DESC")
            run = runs[0]
            logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
            states = await client.read_flow_run_states(run.id)
            again = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
            )
            result = await again[0].state.result(raise_on_failure=False, fetch=True)
            return "\n".join(
                [*(s.message or "" for s in states), *(log.message for log in logs), repr(result)]
            )

    text = stored_text = asyncio.run(stored())
    assert "analyst:***@db.internal" in stored_text
    assert PASSWORD not in text + capfd.readouterr().err


def test_the_cli_shows_a_malformed_url_masked_in_one_error_line(monkeypatch):
    from typer.testing import CliRunner

    from pipelines.cli import app

    monkeypatch.setenv("PIPELINES_WAREHOUSE_URL", f"postgresql//analyst:{PASSWORD}@db.internal/warehouse")
    result = CliRunner().invoke(app, ["env"])
    assert result.exit_code == 1 and PASSWORD not in result.output
    assert result.stderr.startswith(
        "error: Invalid warehouse URL 'postgresql//analyst:***@db.internal/warehouse' (from environment "
        "PIPELINES_WAREHOUSE_URL)"
    )
