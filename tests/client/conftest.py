"""A namespace deployed on the session's Prefect server, with a worker for its work queue.

The deployments follow the project's conventions (``<flow>/<namespace>``, pool ``pipelines``, queue =
namespace, tags ``namespace:<ns>`` and ``kind:<kind>``, results written under
``<data root>/<namespace>/_results``), created here with Prefect's client API so these tests do not
depend on ``pipelines deploy``. ``ingest`` is left undeployed on purpose: it is in the code but not
in the namespace.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
POOL = "pipelines"
DEPLOYED = ("flights", "delay_model")


@dataclass
class DeployedNamespace:
    namespace: str
    api_url: str
    ui_url: str
    data_url: Path
    results: Path
    env: dict  # for a process acting as the analyst (CLI, notebook kernel): server and namespace
    worker: object  # the worker handle; .output() helps explain a failed assertion

    def client(self):
        from pipelines.client import Client

        return Client(namespace=self.namespace, api_url=self.api_url)


async def _deploy(namespace: str, job_env: dict) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    from pipelines.components.discovery import find
    from pipelines.components.environment import kind_of

    async with get_client() as client:
        try:
            await client.read_work_pool(POOL)
        except ObjectNotFound:
            try:
                await client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
            except ObjectAlreadyExists:
                pass
        for name in DEPLOYED:
            entry = find(name)
            flow = entry.load()
            await client.create_deployment(
                flow_id=await client.create_flow_from_name(flow.name),
                name=namespace,
                work_pool_name=POOL,
                work_queue_name=namespace,
                entrypoint=entry.entrypoint,
                pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}],
                parameter_openapi_schema=flow.parameters.dict(),
                description=flow.description,
                tags=[f"namespace:{namespace}", f"kind:{kind_of(namespace).value}"],
                job_variables={"env": job_env},
            )


async def _undeploy(namespace: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    async with get_client() as client:
        for deployment in await client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[namespace]))
        ):
            await client.delete_deployment(deployment.id)


@pytest.fixture(scope="module")
def deployed(prefect_server, tmp_path_factory):
    """flights and delay_model deployed to a fresh research namespace, and a worker for its queue."""
    namespace = f"research-client-{uuid.uuid4().hex[:8]}"
    root = tmp_path_factory.mktemp("deployed")
    data_url = root / "data"
    results = data_url / namespace / "_results"
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    job_env = {
        "PIPELINES_NAMESPACE": namespace,
        "PIPELINES_DATA_URL": str(data_url),
        "PIPELINES_WAREHOUSE_URL": f"sqlite:///{root}/warehouse/{{namespace}}.sqlite",
        "PREFECT_LOCAL_STORAGE_PATH": str(results),
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PYTHONPATH": pythonpath,
    }
    with prefect_server.settings():
        asyncio.run(_deploy(namespace, job_env))
    worker = prefect_server.start_worker(POOL, cwd=root, queues=[namespace])
    env = {
        "PREFECT_API_URL": prefect_server.api_url,
        "PIPELINES_NAMESPACE": namespace,
        "PIPELINES_DATA_URL": str(root / "analyst-data"),
    }
    try:
        yield DeployedNamespace(
            namespace=namespace,
            api_url=prefect_server.api_url,
            ui_url=prefect_server.ui_url,
            data_url=data_url,
            results=results,
            env=env,
            worker=worker,
        )
    finally:
        worker.stop()
        with prefect_server.settings():
            asyncio.run(_undeploy(namespace))
