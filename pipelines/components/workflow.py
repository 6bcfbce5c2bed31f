"""The decorator of every workflow and cookbook flow: ``@workflow(name="ingest")``.

A workflow is a Prefect flow that

- persists its result as JSON that any process reads back (``run.outputs`` in the notebook client,
  ``state.result(fetch=True)``): :data:`pipelines.components.results.RESULT_SERIALIZER`;
- runs the alert and lineage state hooks (:func:`pipelines.components.alerts.run_hooks`);
- keeps its results in one storage block per Prefect API and folder (:func:`result_storage`).

Other flow options pass through: ``@workflow(name="flights", task_runner=SettingsTaskRunner())``.

Why the storage: a Prefect 2 flow that persists its result and names no storage saves a new anonymous
``LocalFileSystem`` block document on every run (PrefectHQ/prefect#10358; Prefect's fix, #10649,
covers only flows that do not persist): four API requests per run, and a ``block_document`` table
that grows by one row per run for ever. A workflow's storage is saved on its first run in a process
and reused after that, so a process adds one block document per API, not one per run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect.flows import Flow

from pipelines.components.results import RESULT_SERIALIZER

_STORAGES: dict[tuple[str, str], Any] = {}


def result_storage():
    """Where a workflow run persists its result, as Prefect's default would, without a block per run.

    ``PREFECT_DEFAULT_RESULT_STORAGE_BLOCK`` when set (a deployment on S3: Prefect loads that saved
    block); otherwise one ``LocalFileSystem`` at ``PREFECT_LOCAL_STORAGE_PATH`` per API, saved by
    Prefect on its first use and reused by every later run in this process. The key includes the API
    (its URL, or the database of the in-process API), so a process that switches to another API never
    hands that API a block document it does not have.
    """
    from prefect.filesystems import LocalFileSystem
    from prefect.settings import (
        PREFECT_API_DATABASE_CONNECTION_URL,
        PREFECT_API_URL,
        PREFECT_DEFAULT_RESULT_STORAGE_BLOCK,
        PREFECT_LOCAL_STORAGE_PATH,
    )

    saved = PREFECT_DEFAULT_RESULT_STORAGE_BLOCK.value()
    if saved:
        return saved
    api = PREFECT_API_URL.value() or f"in-process:{PREFECT_API_DATABASE_CONNECTION_URL.value()}"
    folder = str(PREFECT_LOCAL_STORAGE_PATH.value())
    storage = _STORAGES.get((api, folder))
    if storage is None:
        storage = _STORAGES[(api, folder)] = LocalFileSystem(basepath=folder)
    return storage


class Workflow(Flow):
    """A Prefect flow whose result storage, unless given, is :func:`result_storage` at run time."""

    @property
    def result_storage(self):
        given = self.__dict__.get("_given_result_storage")
        return given if given is not None else result_storage()

    @result_storage.setter
    def result_storage(self, value) -> None:
        self.__dict__["_given_result_storage"] = value


def workflow(name: str, **options: Any) -> Callable[[Callable[..., Any]], Workflow]:
    """Decorate a workflow or cookbook function: a :class:`Workflow` with the library's result and hooks."""
    from pipelines.components.alerts import run_hooks

    settings = {"persist_result": True, "result_serializer": RESULT_SERIALIZER, **run_hooks(), **options}

    def decorate(fn: Callable[..., Any]) -> Workflow:
        return Workflow(fn=fn, name=name, **settings)

    return decorate


def as_is(task: Callable[..., Any]) -> Callable[..., Any]:
    """Call ``task`` with its arguments handed over as they are (each wrapped in Prefect's ``quote``).

    Before a task runs, Prefect walks its arguments, into every dict, list and pydantic model, looking
    for futures and states to resolve. The library's tasks are handed none; what they are handed (a
    dataset's committed state, naming every raw file it consumed, or the raw zone's index) grows with
    the dataset's history, and at 20,000 entries that walk costs about 0.16 s per task run.
    """
    from prefect.utilities.annotations import quote

    def call(*args: Any, **kwargs: Any) -> Any:
        return task(*(quote(a) for a in args), **{k: quote(v) for k, v in kwargs.items()})

    return call
