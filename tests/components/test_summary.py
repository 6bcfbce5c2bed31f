"""Artifact keys carry the namespace (the cookbook run is checked in tests/cookbooks/test_flights_observability.py)."""

from pipelines.components.summary import artifact_key


def test_artifact_keys_carry_the_namespace_in_prefects_alphabet():
    assert artifact_key("research-feature-x", "ingest", "flight_delays_daily") == (
        "research-feature-x-ingest-flight-delays-daily"
    )
    assert artifact_key("e2e", "e2e-report") == "e2e-e2e-report"


def test_artifacts_belong_to_the_run_that_published_them(prefect_harness):
    import asyncio

    from prefect import flow, get_client, task
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.context import get_run_context

    from pipelines.components.summary import publish_markdown, publish_table

    @task
    def in_task() -> str:
        publish_table(key="probe-table", table=[{"a": 1, "b": "x"}], description="from a task")
        return str(get_run_context().task_run.id)

    from prefect.client.orchestration import PrefectClient

    opened = []
    original = PrefectClient.__init__

    def counting(self, *args, **kwargs):
        opened.append(1)
        original(self, *args, **kwargs)

    @flow
    def probe() -> tuple[str, str]:
        PrefectClient.__init__ = counting
        try:
            publish_markdown(key="probe-markdown", markdown="# hello", description="from the flow")
        finally:
            PrefectClient.__init__ = original
        return str(get_run_context().flow_run.id), in_task()

    flow_run_id, task_run_id = probe()
    assert opened == []  # published on the run's own client, not on a new one per artifact

    async def read(key: str):
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )
            return [a for a in found if str(a.flow_run_id) == flow_run_id]

    (markdown,) = asyncio.run(read("probe-markdown"))
    assert markdown.data == "# hello" and markdown.description == "from the flow"
    assert markdown.task_run_id is None
    (table,) = asyncio.run(read("probe-table"))
    assert str(table.task_run_id) == task_run_id and table.description == "from a task"
    assert '"b": "x"' in table.data


def test_an_artifact_outside_a_run_is_created_as_prefect_does(prefect_harness):
    from pipelines.components.summary import publish_markdown

    assert publish_markdown(key="probe-outside", markdown="# outside") is not None
