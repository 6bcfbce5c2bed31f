"""The share the flow runs, without Prefect: for threads, and for child processes that must start fast.

Kept apart from test_share.py so a child process imports only the share components (importing the test
module pulls in Prefect, the workflows and the command line, which costs seconds per child on a busy
machine)."""

from pipelines.components import sharing
from pipelines.components.environment import get_settings
from pipelines.components.registry import load_registry
from pipelines.components.resources import Lake, Storage, Warehouse
from pipelines.components.sharing import ShareResult


def direct_share(mode: str | None = None, namespace: str = "test", run_id: str = "direct") -> ShareResult:
    settings = get_settings(namespace=namespace)
    spec = load_registry(settings.registry_path).get("orders")
    warehouse = Warehouse.from_settings(settings)
    try:
        return sharing.share_dataset(
            spec,
            Lake(Storage(settings.namespace_url)),
            warehouse,
            run_id=run_id,
            namespace=namespace,
            mode=mode,
        )
    finally:
        warehouse.dispose()
