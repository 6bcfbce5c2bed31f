"""Which task runner a flow run's tasks go to: in-process, or Dask through prefect-dask.

Chosen from the settings (:mod:`pipelines.components.environment`) when a flow run starts, not when
the flow is decorated, so a deployment, the CLI, the notebook client and a test all pick up the
environment of the process that runs the flow:

- ``PIPELINES_DASK_ADDRESS=tcp://host:8786``: the scheduler of an existing Dask cluster
  (``DaskTaskRunner(address=...)``). Its workers run on other processes or machines, so they report
  task runs to a Prefect server: ``PREFECT_API_URL`` must be set (the in-process API lives and dies
  with this process). See docs/scaling.md for what the workers need.
- ``PIPELINES_WORKERS=N``: a local Dask cluster of N single-threaded worker processes, started for
  the flow run and closed with it. Each worker's polars gets its share of the cores
  (:func:`local_worker_environ`), so N workers do not run N pools of every core's threads.
- neither: in-process, one task at a time (Prefect's ``SequentialTaskRunner``): the same results as
  the Dask paths, no thread or process start-up, and no concurrent writers on the in-process API's
  SQLite database.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import AsyncExitStack, contextmanager
from typing import Any
from uuid import UUID

from prefect.task_runners import BaseTaskRunner, SequentialTaskRunner, TaskConcurrencyType

from pipelines.components.environment import Settings, get_settings
from pipelines.components.errors import ConfigError


def _api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def task_runner(settings: Settings) -> BaseTaskRunner:
    """The task runner the settings ask for (a new, unstarted instance)."""
    if settings.dask_address:
        if not _api_url():
            raise ConfigError(
                f"PIPELINES_DASK_ADDRESS={settings.dask_address} ({settings.origins.get('dask_address', '')}) "
                "runs tasks on the workers of that Dask cluster, and they report their task runs to the "
                "Prefect API; with no PREFECT_API_URL this process uses Prefect's in-process API, which "
                "they cannot reach. Set PREFECT_API_URL to a Prefect server both sides can reach, or unset "
                "PIPELINES_DASK_ADDRESS (PIPELINES_WORKERS=N starts a local cluster instead)."
            )
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=settings.dask_address)
    if settings.workers:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": settings.workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": ":0",
            }
        )
    return SequentialTaskRunner()


def local_worker_environ(workers: int, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What a local cluster's worker processes get on top of this process's environment.

    Polars sizes its thread pool to every core when it is imported; N single-threaded workers on one
    machine would then run N such pools. Each gets ``cores // N`` threads (at least one) instead, as
    docs/scaling.md asks of an existing cluster's workers; a POLARS_MAX_THREADS already set is kept."""
    if "POLARS_MAX_THREADS" in environ:
        return {}
    return {"POLARS_MAX_THREADS": str(max(1, (os.cpu_count() or 1) // workers))}


@contextmanager
def _spawn_environ(values: dict[str, str]) -> Iterator[None]:
    """Workers spawned inside the block start with ``values`` in their environment.

    Through distributed's ``distributed.nanny.pre-spawn-environ``: a nanny sets those variables before it
    spawns its worker (its ``env=`` comes too late for polars, which a spawned worker imports with the
    flow's main module). The nanny sets them in this process's environment; they are put back after."""
    if not values:
        yield
        return
    import dask

    saved = {name: os.environ.get(name) for name in values}
    try:
        with dask.config.set({f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in values.items()}):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class SettingsTaskRunner(BaseTaskRunner):
    """A flow's task runner that becomes :func:`task_runner` of the settings when the flow run starts.

    Set it at decoration (``@flow(task_runner=SettingsTaskRunner())``): Prefect starts a duplicate
    for every flow run, and this one delegates submit and wait to the runner the settings choose.
    """

    def __init__(self) -> None:
        super().__init__()
        self._inner: BaseTaskRunner | None = None

    @property
    def name(self) -> str:
        return "settings"

    @property
    def concurrency_type(self) -> TaskConcurrencyType:
        if self._inner is not None:
            return self._inner.concurrency_type
        try:
            settings = get_settings()
        except ConfigError:
            return TaskConcurrencyType.SEQUENTIAL  # the run fails at start with the setting's error
        if settings.dask_address or settings.workers:
            return TaskConcurrencyType.PARALLEL
        return TaskConcurrencyType.SEQUENTIAL

    @property
    def inner(self) -> BaseTaskRunner | None:
        """The runner this flow run delegates to (None before it starts)."""
        return self._inner

    def duplicate(self) -> SettingsTaskRunner:
        return type(self)()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

    async def _start(self, exit_stack: AsyncExitStack) -> None:
        settings = get_settings()
        runner = task_runner(settings)
        with _spawn_environ(local_worker_environ(settings.workers) if settings.workers else {}):
            self._inner = await exit_stack.enter_async_context(runner.start())
        exit_stack.callback(setattr, self, "_inner", None)

    async def submit(self, key: UUID, call: Any) -> None:
        await self._started_inner().submit(key, call)

    async def wait(self, key: UUID, timeout: float | None = None) -> Any:
        return await self._started_inner().wait(key, timeout)

    def _started_inner(self) -> BaseTaskRunner:
        if self._inner is None:
            raise RuntimeError("The task runner must be started before submitting work.")
        return self._inner
