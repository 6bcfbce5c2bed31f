"""OpenLineage run events (openlineage-python) for ingest and aggregate runs, so Marquez or DataHub see lineage.

Off unless ``PIPELINES_OPENLINEAGE_URL`` is set: an ``http(s)://`` URL sends each event to that
OpenLineage endpoint (``/api/v1/lineage``; a token from the secret named by
``PIPELINES_OPENLINEAGE_API_KEY``), anything else is a file that each event is appended to as one JSON
line. The flow's state hooks emit START when a run starts, then COMPLETE (with row counts) or FAIL.
The run id is the Prefect flow run id; the job is ``<flow>.<dataset>`` in the namespace
``pipelines.<namespace>``; inputs and outputs come from the registry (the landing source or upstream
tables, and the dataset's own table).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from pipelines.components.environment import Settings

WORKFLOWS = ("ingest", "aggregate")
PRODUCER = "https://github.com/pipelines/pipelines"


def transport_url(environ: dict[str, str] | None = None) -> str | None:
    environ = os.environ if environ is None else environ
    return (environ.get("PIPELINES_OPENLINEAGE_URL") or "").strip() or None


def client(url: str):
    """An OpenLineageClient on the configured transport (HTTP endpoint or appended JSON-lines file)."""
    from openlineage.client import OpenLineageClient
    from openlineage.client.transport.file import FileConfig, FileTransport
    from openlineage.client.transport.http import HttpConfig, HttpTransport

    if url.startswith(("http://", "https://")):
        auth: dict[str, Any] = {}
        secret_name = os.environ.get("PIPELINES_OPENLINEAGE_API_KEY")
        if secret_name:
            from pipelines.components.secrets import get_secret

            auth = {"type": "api_key", "apiKey": get_secret(secret_name).reveal()}
        return OpenLineageClient(transport=HttpTransport(HttpConfig.from_dict({"url": url, "auth": auth})))
    path = url.removeprefix("file://")
    return OpenLineageClient(transport=FileTransport(FileConfig(log_file_path=path, append=True)))


def _dataset_id(uri: str) -> tuple[str, str]:
    """OpenLineage naming: s3://bucket/key -> ('s3://bucket', 'key'); a local path -> ('file', path)."""
    if uri.startswith("s3://"):
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return f"s3://{bucket}", key
    return "file", uri


def _schema_facet(spec):
    from openlineage.client.facet_v2 import schema_dataset

    fields = [
        schema_dataset.SchemaDatasetFacetFields(name=c.name, type=c.type, description=c.description or None)
        for c in spec.contract.columns.values()
    ]
    return {"schema": schema_dataset.SchemaDatasetFacet(fields=fields)} if fields else {}


def datasets(settings: Settings, spec, registry) -> tuple[list, list]:
    """(inputs, outputs) of a run that builds ``spec``: its source or upstream tables, and its own table."""
    from openlineage.client.event_v2 import InputDataset, OutputDataset

    from pipelines.components.resources import Lake

    lake = Lake.from_settings(settings)
    if spec.stage == "cleaned":
        source = spec.source if "://" in spec.source or spec.source.startswith("/") else None
        source = source or f"{settings.landing_url.rstrip('/')}/{spec.source}"
        inputs = [InputDataset(*_dataset_id(source))]
        output_uri = lake.uri("cleaned", spec.name)
    else:
        inputs = []
        for name in spec.inputs:
            upstream = registry.get(name)
            zone = "cleaned" if upstream.stage == "cleaned" else "aggregated"
            inputs.append(InputDataset(*_dataset_id(lake.uri(zone, name)), facets=_schema_facet(upstream)))
        output_uri = lake.uri("aggregated", spec.name)
    outputs = [OutputDataset(*_dataset_id(output_uri), facets=_schema_facet(spec))]
    return inputs, outputs


def emit(flow, flow_run, state, event_type: str) -> None:
    """Emit one run event for an ingest or aggregate flow run (nothing for other flows or without a URL)."""
    dataset = (flow_run.parameters or {}).get("dataset")
    if transport_url() is None or flow.name not in WORKFLOWS or not dataset:
        return
    result = state.result(fetch=True) if event_type == "COMPLETE" else None
    emit_event(
        flow.name,
        str(dataset),
        str(flow_run.id),
        event_type,
        result=result,
        message=state.message or state.name,
    )


def emit_event(
    workflow: str,
    dataset: str,
    run_id: str,
    event_type: str,
    *,
    result: Any = None,
    message: str | None = None,
) -> None:
    """One run event of ``workflow`` (ingest or aggregate) on ``dataset``; the run is a flow or task run id.

    A cookbook's one task per dataset calls this itself (a task has no flow hooks)."""
    url = transport_url()
    if url is None or workflow not in WORKFLOWS:
        return
    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import error_message_run, output_statistics_output_dataset

    from pipelines.components.environment import get_settings
    from pipelines.components.registry import load_registry

    settings = get_settings()
    registry = load_registry(settings.registry_path)
    spec = registry.get(dataset)
    inputs, outputs = datasets(settings, spec, registry)
    run_facets: dict[str, Any] = {}
    if event_type == "COMPLETE":
        written = getattr(result, "written", getattr(result, "rows_written", None))
        outputs[0].outputFacets = {
            "outputStatistics": output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                rowCount=written
            )
        }
    elif event_type == "FAIL":
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=message or "failed", programmingLanguage="python"
        )
    event = RunEvent(
        eventType=getattr(RunState, event_type),
        eventTime=datetime.now(UTC).isoformat(),
        run=Run(runId=run_id, facets=run_facets),
        job=Job(namespace=f"pipelines.{settings.namespace}", name=f"{workflow}.{spec.name}"),
        inputs=inputs,
        outputs=outputs,
        producer=PRODUCER,
    )
    client(url).emit(event)


def on_start(flow, flow_run, state) -> None:
    emit(flow, flow_run, state, "START")


def on_complete(flow, flow_run, state) -> None:
    emit(flow, flow_run, state, "COMPLETE")


def on_fail(flow, flow_run, state) -> None:
    emit(flow, flow_run, state, "FAIL")
