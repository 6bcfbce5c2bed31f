"""Submit workflows from a notebook, wait for them, read their outputs and list recent runs.

::

    from pipelines.client import Client

    client = Client()                          # namespace resolved like `pipelines env`
    run = client.submit("delay_model", through="2013-01-31")
    run.wait()                                 # progress line; returns the run
    run.outputs["accuracy"]                    # the flow's JSON result, as a dict
    run.result()                               # the same result as the flow's typed model
    client.runs()                              # recent runs as a polars DataFrame

With a Prefect API configured (the ``api_url`` argument, ``PREFECT_API_URL`` in the environment or
``.env``, or the active Prefect profile) the client works in **server mode**: a submission creates a
flow run of the deployment ``<workflow>/<namespace>`` and a worker runs it. Without one it works
**in-process**: the flow runs in a background thread of this process, on Prefect's ephemeral API,
and the same methods read its state, outputs and logs.

Every call is synchronous. Prefect's client is asynchronous, and its sync-looking helpers return
coroutines inside a running event loop (Jupyter); so every Prefect call runs on a background
event-loop thread (Prefect's own) and the caller just blocks until it is done.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import json
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import polars as pl

from pipelines.components.discovery import discover, to_jsonable
from pipelines.components.environment import Kind, Settings, get_settings, kind_of, settings_overrides
from pipelines.components.errors import (
    ConfigError,
    NamespaceIsolationError,
    PipelinesError,
    UnknownNameError,
    did_you_mean,
)
from pipelines.components.parameters import (
    Parameter,
    ParameterError,
    check_parameters,
    parameters_of,
    to_json_values,
)

__all__ = [
    "Client",
    "IdempotencyConflictError",
    "LogLine",
    "ParameterError",
    "Run",
    "RunFailedError",
    "RunNotFinishedError",
    "RunTimeoutError",
    "ServerUnreachableError",
    "UnknownWorkflowError",
    "Workflow",
]

T = TypeVar("T")

FINAL_STATES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
NAMESPACE_TAG = "namespace:"
_KEY_TAG = "idempotency-key:"
_SUBMISSION_TAG = "client-submission:"
_START_TIMEOUT = 120.0
_LOOP_REPLACED_RETRIES = 3  # reads cancelled by Prefect replacing its loop thread at the end of a run
WORKER_HINT_SECONDS = 30.0  # a run still Scheduled this long after its start time gets a hint about workers


class UnknownWorkflowError(UnknownNameError):
    """The workflow is not deployed in the namespace (server mode) or not in the code (in-process)."""


class ServerUnreachableError(ConfigError):
    """The configured Prefect API does not answer."""


class RunFailedError(PipelinesError):
    """The run ended Failed, Crashed or Cancelled, so it has no outputs."""


class RunNotFinishedError(PipelinesError):
    """Outputs were asked for before the run finished."""


class RunTimeoutError(PipelinesError, TimeoutError):
    """``Run.wait(timeout=...)`` ran out of time; the run itself goes on."""


class IdempotencyConflictError(PipelinesError):
    """An idempotency key was reused with other parameters."""


@dataclass(frozen=True)
class Workflow:
    """Something that can be submitted in the namespace: a workflow or cookbook flow."""

    name: str
    description: str
    parameters: tuple[Parameter, ...]
    deployment: str | None = None
    kind: str = "workflow"
    schema: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def signature(self) -> str:
        return f"{self.name}({', '.join(str(p) for p in self.parameters)})"

    def __str__(self) -> str:
        where = f"deployment {self.deployment}" if self.deployment else "in-process"
        lines = [f"{self.signature}  [{self.kind}, {where}]"]
        if self.description:
            lines.append(f"    {self.description}")
        return "\n".join(lines)


@dataclass(frozen=True)
class LogLine:
    """One log record of a run, as the Prefect API stored it."""

    timestamp: datetime
    level: str
    logger: str
    message: str

    def __str__(self) -> str:
        return f"{self.timestamp:%H:%M:%S} {self.level:<7} {self.message}"


_LEVELS = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}


# the background event loop -------------------------------------------------------------------


def _run_in_background_loop(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn()`` on Prefect's own event-loop thread and block the caller until it is done.

    Never on the caller's loop: inside Jupyter's running loop Prefect's helpers would hand back
    coroutines. Not on a loop of our own either: the in-process API starts once per thread, and a
    second thread starting it while a flow run starts it on Prefect's thread races (duplicate
    block registrations in the shared SQLite database). The call carries the caller's context
    variables, so Prefect settings active in the calling thread (a test harness) apply.
    """
    from prefect._internal.concurrency.api import create_call, from_sync
    from prefect._internal.concurrency.threads import get_global_loop

    if threading.current_thread().ident == get_global_loop().thread.ident:
        raise PipelinesError(
            "The pipelines client blocks until Prefect answers, so it cannot be used inside an async flow "
            "or task; call it from a notebook, a script or a synchronous flow."
        )
    return from_sync.call_soon_in_loop_thread(create_call(fn)).result()


# progress display ----------------------------------------------------------------------------


def _in_jupyter() -> bool:
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and hasattr(shell, "kernel")


class _Progress:
    """One line that follows a run: updated in place in Jupyter, a spinner in a terminal, else a line per change."""

    def __init__(self, enabled: bool, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.last = None
        self.handle = None
        self.status = None
        if not enabled:
            self.mode = "off"
        elif _in_jupyter():
            self.mode = "jupyter"
        elif getattr(self.stream, "isatty", lambda: False)():
            self.mode = "terminal"
        else:
            self.mode = "lines"

    def show(self, text: str, key: str) -> None:
        if self.mode == "jupyter":
            from IPython.display import display

            bundle = {"text/plain": text}
            if self.handle is None:
                self.handle = display(bundle, raw=True, display_id=True)
            else:
                self.handle.update(bundle, raw=True)
        elif self.mode == "terminal":
            if self.status is None:
                from rich.console import Console

                self.status = Console(file=self.stream).status(text)
                self.status.start()
            else:
                self.status.update(text)
        elif self.mode == "lines" and key != self.last:
            print(text, file=self.stream, flush=True)
        self.last = key

    def close(self, text: str) -> None:
        if self.mode == "terminal" and self.status is not None:
            self.status.stop()
            print(text, file=self.stream, flush=True)
        elif self.mode in ("jupyter", "lines"):
            self.last = None
            self.show(text, "final")


def _seconds(delta: timedelta | None) -> str:
    if delta is None:
        return ""
    total = int(delta.total_seconds())
    return f"{total // 60}m {total % 60:02d}s" if total >= 60 else f"{delta.total_seconds():.1f}s"


# Run -----------------------------------------------------------------------------------------


class Run:
    """A flow run submitted through (or found by) a :class:`Client`."""

    def __init__(
        self,
        client: Client,
        run_id: uuid.UUID | str,
        workflow: str,
        *,
        thread: threading.Thread | None = None,
        flow_run=None,
    ) -> None:
        """``flow_run``: the API's record of the run when the caller has it (the state ``repr`` shows)."""
        self._client = client
        self.id = str(run_id)
        self.workflow = workflow
        self.namespace = client.namespace
        self._thread = thread
        self._flow_run = flow_run
        self._outputs: dict | None = None

    def __repr__(self) -> str:
        # the state last read (submit and every wait or state read refresh it); repr never calls the API
        state = self._flow_run.state_name if self._flow_run is not None else None
        return f"Run({self.workflow}/{self.namespace}, id={self.id}, state={state or 'not read yet'})"

    @property
    def url(self) -> str | None:
        """The run's page in the Prefect UI (None in-process: the ephemeral API has no UI)."""
        return self._client._run_url(self.id)

    def _refresh(self):
        self._flow_run = self._client._call(lambda c: c.read_flow_run(uuid.UUID(self.id)))
        return self._flow_run

    @property
    def state(self) -> str:
        """The current state name: Scheduled, Pending, Running, Completed, Failed, Crashed, Cancelled, ..."""
        return self._refresh().state_name or "Unknown"

    @property
    def finished(self) -> bool:
        flow_run = self._flow_run if self._is_final(self._flow_run) else self._refresh()
        return self._is_final(flow_run)

    @staticmethod
    def _is_final(flow_run) -> bool:
        return (
            flow_run is not None and flow_run.state is not None and flow_run.state.type.value in FINAL_STATES
        )

    def _describe(self, flow_run) -> str:
        state = flow_run.state_name or "Unknown"
        now = datetime.now(UTC)
        if flow_run.start_time is not None:
            elapsed = f" {_seconds((flow_run.end_time or now) - flow_run.start_time)}"
        else:
            elapsed = ""
        hint = ""
        expected = flow_run.expected_start_time
        if (
            flow_run.state is not None
            and flow_run.state.type.value == "SCHEDULED"
            and flow_run.work_pool_name
            and expected is not None
            and (now - expected).total_seconds() > WORKER_HINT_SECONDS
        ):
            hint = (
                f" for {_seconds(now - expected)}: no worker has taken it; is one polling work pool "
                f"'{flow_run.work_pool_name}' (queue '{flow_run.work_queue_name}')? "
                f"`prefect worker start --pool {flow_run.work_pool_name}`"
            )
        url = f"  {self.url}" if self.url else ""
        return f"{self.workflow}/{self.namespace} {self.id[:8]}: {state}{elapsed}{hint}{url}"

    def wait(self, timeout: float | None = None, *, progress: bool = True, stream=None) -> Run:
        """Block until the run finishes (or ``timeout`` seconds pass) and return it.

        A failed run does not raise here; ``outputs`` does. A timeout raises :class:`RunTimeoutError`
        and leaves the run going. ``progress=False`` turns off the progress line.
        """
        display = _Progress(progress, stream)
        started = time.monotonic()
        interval = 0.5
        while True:
            flow_run = self._refresh()
            if self._is_final(flow_run):
                if self._thread is not None:
                    self._thread.join(timeout=30)
                display.close(self._describe(flow_run))
                return self
            display.show(self._describe(flow_run), flow_run.state_name or "")
            if timeout is not None and time.monotonic() - started >= timeout:
                display.close(self._describe(flow_run))
                raise RunTimeoutError(
                    f"{self.workflow} run {self.id} in namespace {self.namespace} is still "
                    f"{flow_run.state_name} after {timeout:g} s. It goes on; call run.wait() again"
                    + (f" or follow it at {self.url}." if self.url else ".")
                )
            remaining = None if timeout is None else timeout - (time.monotonic() - started)
            time.sleep(max(0.05, min(interval, remaining if remaining is not None else interval)))
            interval = min(interval * 1.5, 2.0)

    @property
    def outputs(self) -> dict[str, Any]:
        """The flow's persisted JSON result, as a dict (a non-dict result comes as {"result": value}).

        Raises :class:`RunNotFinishedError` before the run finishes and :class:`RunFailedError`
        (with the failure message and the UI link) when it did not complete.
        """
        if self._outputs is not None:
            return self._outputs
        flow_run = self._flow_run if self._is_final(self._flow_run) else self._refresh()
        state = flow_run.state
        kind = state.type.value if state is not None else "UNKNOWN"
        if kind not in FINAL_STATES:
            raise RunNotFinishedError(
                f"{self.workflow} run {self.id} is {flow_run.state_name}; its outputs exist once it completes. "
                "Call run.wait() first."
            )
        if kind != "COMPLETED":
            where = f" UI: {self.url}" if self.url else " Logs: run.logs()."
            message = (state.message or "").strip() or "no message"
            raise RunFailedError(
                f"{self.workflow} run {self.id} in namespace {self.namespace} ended {flow_run.state_name}: "
                f"{message}{where}"
            )
        value = self._client._read_result(flow_run, self)
        self._outputs = value if isinstance(value, dict) else {"result": value}
        return self._outputs

    def result(self) -> Any:
        """The flow's result as the type it returned, e.g. the cookbook's pydantic result model (``FlightsResult``).

        ``outputs`` is the same result as a JSON dict. The model's class is imported from this process's
        ``pipelines`` package, so this process needs the code that defines it. Raises like ``outputs``.
        """
        self.outputs  # noqa: B018 (raises RunNotFinishedError / RunFailedError before reading anything)
        return self._client._read_typed_result(self._flow_run, self)

    def logs(self) -> list[LogLine]:
        """Every log line the run sent to the API, oldest first."""
        if self._client.mode == "in-process":
            self._client._flush_local_logs()
        return self._client._read_logs(self.id)

    def print_logs(self) -> None:
        for line in self.logs():
            print(line)


# Client --------------------------------------------------------------------------------------


def _is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | ConnectionRefusedError)


def _json_outputs(blob_data: str) -> Any:
    """A persisted JSON result read without importing the result's classes."""

    def unwrap(value: Any) -> Any:
        if isinstance(value, dict):
            if "__class__" in value and "data" in value and len(value) == 2:
                return unwrap(value["data"])
            return {k: unwrap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [unwrap(v) for v in value]
        return value

    return unwrap(json.loads(blob_data))


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0].strip() if lines else ""


def _top_level_runs_tagged(tags: list[str]):
    """Flow runs carrying all these tags that are not subflows of another run."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentTaskRunId, FlowRunFilterTags

    return FlowRunFilter(
        tags=FlowRunFilterTags(all_=tags), parent_task_run_id=FlowRunFilterParentTaskRunId(is_null_=True)
    )


def _key_outputs(outputs: dict, limit: int = 6) -> str:
    """The scalar outputs of a run for one table cell: fractional numbers (metrics) first, then counts."""
    numbers = [(k, v) for k, v in outputs.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    ordered = [kv for kv in numbers if isinstance(kv[1], float) and not kv[0].endswith("_seconds")]
    ordered += [kv for kv in numbers if isinstance(kv[1], int)]
    ordered += [(k, v) for k, v in outputs.items() if isinstance(v, bool)]
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in ordered[:limit])


class _RunThread(threading.Thread):
    """A flow run in a background thread of this process.

    A daemon thread: a caller that gives up (a failed start, an interrupted notebook cell, the end of
    a script) is never held at interpreter exit by a run it no longer waits for. ``abandon`` stops a
    run that has not begun yet; one already going is left to Prefect, which marks it when it ends.
    """

    def __init__(self, flow, params: dict, tags: list[str], namespace: str) -> None:
        super().__init__(name=f"pipelines-run-{flow.name}", daemon=True)
        self._flow = flow
        self._params = params
        self._tags = tags
        self._namespace = namespace
        self._context = contextvars.copy_context()
        self._abandoned = threading.Event()
        self.error: BaseException | None = None

    def abandon(self) -> None:
        self._abandoned.set()

    def run(self) -> None:
        self._context.run(self._execute)

    def _execute(self) -> None:
        from prefect import tags as prefect_tags

        if self._abandoned.is_set():
            return
        with settings_overrides(namespace=self._namespace), prefect_tags(*self._tags):
            try:
                self._flow(**self._params, return_state=True)
            except BaseException as exc:  # reported by the caller, or by the run's state
                self.error = exc


class Client:
    """Submit workflows of one namespace and read their runs, against a Prefect server or in-process."""

    def __init__(
        self, namespace: str | None = None, api_url: str | None = None, *, force: bool = False
    ) -> None:
        self.settings: Settings = get_settings(namespace=namespace, prefect_api_url=api_url)
        self.namespace = self.settings.namespace
        self._force = force
        self.api_url = self.settings.prefect_api_url
        self.mode = "server" if self.api_url else "in-process"
        self._lock = threading.Lock()
        self._local_runs: dict[str, Run] = {}
        self._ui_url: str | None = None
        if self.api_url:
            with self._prefect_settings():
                from prefect.settings import PREFECT_UI_URL

                self._ui_url = PREFECT_UI_URL.value()
            self._check_server()

    def __repr__(self) -> str:
        where = f"server {self.api_url}" if self.api_url else "in-process (no Prefect server configured)"
        return f"Client(namespace={self.namespace!r}, {where})"

    # plumbing --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _prefect_settings(self) -> Iterator[None]:
        if self.api_url:
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings(updates={PREFECT_API_URL: self.api_url}):
                yield
        else:
            yield

    def _unreachable(self, exc: BaseException) -> ServerUnreachableError:
        origin = self.settings.origins.get("prefect_api_url", "")
        return ServerUnreachableError(
            f"Cannot reach the Prefect API at {self.api_url} (from {origin}): {exc or type(exc).__name__}. "
            "Start the server (`prefect server start`) or fix PREFECT_API_URL (a server's API URL looks like "
            "http://127.0.0.1:4200/api); unset it to run workflows in-process instead."
        )

    def _call(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``fn(prefect_client)`` on the background loop with this client's Prefect settings."""

        async def call() -> T:
            with self._prefect_settings():
                from prefect.client.orchestration import get_client

                async with get_client() as client:
                    return await fn(client)

        if self.api_url:
            try:
                return _run_in_background_loop(call)
            except Exception as exc:
                if _is_connection_error(exc):
                    raise self._unreachable(exc) from None
                raise
        return self._call_in_process(call)

    @staticmethod
    def _call_in_process(call: Callable[[], Awaitable[T]]) -> T:
        """In-process calls only read. When an in-process run ends, Prefect replaces its event-loop thread
        and cancels what was running there, a read of ours included: that read is made again on the new
        thread (a cancellation on a thread that is still current is the caller's and is raised)."""
        from prefect._internal.concurrency.threads import get_global_loop

        from pipelines.components.localapi import ensure_local_api

        for attempt in range(_LOOP_REPLACED_RETRIES + 1):
            ensure_local_api()
            loop_thread = get_global_loop().thread
            try:
                return _run_in_background_loop(call)
            except (asyncio.CancelledError, concurrent.futures.CancelledError):
                replaced = not loop_thread.is_alive() or get_global_loop().thread is not loop_thread
                if not replaced or attempt == _LOOP_REPLACED_RETRIES:
                    raise
        raise AssertionError("unreachable")

    def _check_server(self) -> None:
        async def health(client):
            return await client.api_healthcheck()

        problem = self._call(health)
        if problem is not None:
            raise self._unreachable(problem) from None

    def _run_url(self, run_id: str) -> str | None:
        return f"{self._ui_url.rstrip('/')}/flow-runs/flow-run/{run_id}" if self._ui_url else None

    # what can be submitted ---------------------------------------------------------------------

    def _deployments(self) -> list[tuple[str, Any]]:
        from prefect.client.schemas.filters import (
            DeploymentFilter,
            DeploymentFilterName,
            FlowFilter,
            FlowFilterId,
        )

        async def read(client):
            deployments = await client.read_deployments(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[self.namespace]))
            )
            flows = (
                await client.read_flows(
                    flow_filter=FlowFilter(id=FlowFilterId(any_=[d.flow_id for d in deployments]))
                )
                if deployments
                else []
            )
            names = {f.id: f.name for f in flows}
            return sorted(((names.get(d.flow_id, "?"), d) for d in deployments), key=lambda item: item[0])

        return self._call(read)

    @staticmethod
    def _workflow_from_deployment(flow_name: str, deployment) -> Workflow:
        schema = dict(deployment.parameter_openapi_schema or {})
        entrypoint = deployment.entrypoint or ""
        kind = (
            "cookbook" if "/cookbooks/" in entrypoint or entrypoint.startswith("cookbooks/") else "workflow"
        )
        return Workflow(
            name=flow_name,
            description=_first_line(deployment.description),
            parameters=tuple(parameters_of(schema)),
            deployment=f"{flow_name}/{deployment.name}",
            kind=kind,
            schema=schema,
        )

    def workflows(self) -> list[Workflow]:
        """What can be submitted here, with parameters, types and defaults.

        Server mode: the namespace's deployments (``<flow>/<namespace>``). In-process: every workflow
        and cookbook in the code.
        """
        if self.api_url:
            return [self._workflow_from_deployment(name, d) for name, d in self._deployments()]
        return [self._local_workflow(entry) for entry in discover()]

    @staticmethod
    def _local_workflow(entry) -> Workflow:
        schema = entry.load().parameters.dict()
        return Workflow(
            name=entry.name,
            description=entry.summary,
            parameters=tuple(parameters_of(schema)),
            kind=entry.kind,
            schema=schema,
        )

    def workflow(self, name: str) -> Workflow:
        """One submittable workflow by name; an unknown name says what is there and how to fix it."""
        return self._resolve(name)[0]

    def _resolve(self, name: str) -> tuple[Workflow, Any]:
        """The workflow and, in server mode, its deployment."""
        if not self.api_url:
            entries = {e.name: e for e in discover()}
            if name not in entries:
                raise UnknownWorkflowError(
                    f"Unknown workflow {name!r}.{did_you_mean(name, entries)} Known workflows and cookbooks: "
                    f"{', '.join(sorted(entries)) or '(none)'} (`pipelines list`)."
                )
            return self._local_workflow(entries[name]), None

        from prefect.exceptions import ObjectNotFound

        async def read(client):
            try:
                return await client.read_deployment_by_name(f"{name}/{self.namespace}")
            except ObjectNotFound:
                return None

        deployment = self._call(read)
        if deployment is not None:
            return self._workflow_from_deployment(name, deployment), deployment
        deployed = [flow_name for flow_name, _ in self._deployments()]
        in_code = {e.name for e in discover()}
        if name in in_code:
            reason = (
                f"Workflow {name!r} is in the code but has no deployment {name}/{self.namespace} on "
                f"{self.api_url}. Deploy the namespace (`pipelines deploy`) and submit again."
            )
        else:
            hint = did_you_mean(name, deployed) or did_you_mean(name, in_code)
            reason = (
                f"Unknown workflow {name!r} in namespace {self.namespace!r} on {self.api_url}.{hint} "
                f"Deployed here: {', '.join(deployed) or '(nothing; run `pipelines deploy`)'}."
            )
        raise UnknownWorkflowError(reason)

    # submitting --------------------------------------------------------------------------------

    def submit(self, name: str, /, *, idempotency_key: str | None = None, **params: Any) -> Run:
        """Start a run of ``name`` with ``params`` and return at once.

        Parameters are checked against the flow's signature first (unknown name, missing or
        wrongly typed value: nothing is started). With ``idempotency_key``, submitting again with
        the same key returns the run the first call started instead of starting another one (so a
        re-executed notebook cell does not duplicate work); reusing a key with other parameters is
        an error.
        """
        self._check_serving_write(name)
        workflow, deployment = self._resolve(name)
        preset = list(deployment.parameters or {}) if deployment is not None else []
        check_parameters(name, workflow.schema, params, preset=preset)
        if idempotency_key is not None:
            idempotency_key = str(idempotency_key).strip()
            if not idempotency_key:
                raise ParameterError(
                    "idempotency_key must be a non-empty text, e.g. idempotency_key='exp-1'."
                )
        if deployment is not None:
            return self._submit_to_server(workflow, deployment, params, idempotency_key)
        return self._submit_in_process(workflow, params, idempotency_key)

    def _check_serving_write(self, name: str) -> None:
        """Submitting into serving from another namespace needs force=True, as teardown's purge does."""
        if self.settings.kind is not Kind.SERVING or self._force:
            return
        context = get_settings(prefect_api_url=self.api_url).namespace
        if kind_of(context) is not Kind.SERVING:
            raise NamespaceIsolationError(
                f"Refusing to submit {name} into the serving namespace from namespace {context!r}: serving is "
                "what production reads. If you really mean to write there, submit again with --force "
                "(Client(namespace='serving', force=True)); to try it out, submit to your own namespace."
            )

    @staticmethod
    def _check_reuse(run_id, key: str, workflow: Workflow, stored: dict, expected: dict) -> None:
        """The run an idempotency key found must have been started with the same parameters."""
        defaults = {p.name: p.default for p in workflow.parameters if not p.required}

        def explicit(values: dict) -> dict:
            return {k: v for k, v in values.items() if not (k in defaults and v == defaults[k])}

        stored, expected = explicit(stored), explicit(expected)
        if stored != expected:
            changed = sorted(k for k in set(stored) | set(expected) if stored.get(k) != expected.get(k))
            raise IdempotencyConflictError(
                f"idempotency_key {key!r} already started {workflow.name} run {run_id} with other parameters "
                f"(differing: {', '.join(changed)}; that run has {stored or 'the defaults'}). Use a new key to "
                f"start a new run, or client.get_run('{run_id}') to follow the earlier one."
            )

    def _submit_to_server(self, workflow: Workflow, deployment, params: dict, key: str | None) -> Run:
        from prefect.deployments import run_deployment

        values = to_json_values(params)

        async def submit(client):
            return await run_deployment(
                workflow.deployment,
                client=client,
                parameters=values,
                timeout=0,
                idempotency_key=key,
                tags=[f"{NAMESPACE_TAG}{self.namespace}"],
                as_subflow=False,
            )

        flow_run = self._call(submit)
        if key is not None:
            expected = {**to_json_values(deployment.parameters or {}), **values}
            self._check_reuse(flow_run.id, key, workflow, dict(flow_run.parameters or {}), expected)
        return Run(self, flow_run.id, workflow.name, flow_run=flow_run)

    def _find_runs_tagged(self, flow_name: str, tags: list[str]) -> list:
        from prefect.client.schemas.filters import FlowFilter, FlowFilterName

        async def read(client):
            return await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                flow_run_filter=_top_level_runs_tagged(tags),
                limit=1,
            )

        return self._call(read)

    def _submit_in_process(self, workflow: Workflow, params: dict, key: str | None) -> Run:
        from pipelines.components.localapi import ensure_local_api

        flow = next(e for e in discover() if e.name == workflow.name).load()
        run_tags = [f"{NAMESPACE_TAG}{self.namespace}"]
        with self._lock:
            # Start the in-process API here, in the caller, so a failing start is the caller's error
            # and no run thread exists yet.
            ensure_local_api()
            if key is not None:
                key_tag = f"{_KEY_TAG}{key}"
                earlier = self._find_runs_tagged(flow.name, [*run_tags, key_tag])
                if earlier:
                    self._check_reuse(
                        earlier[0].id,
                        key,
                        workflow,
                        dict(earlier[0].parameters or {}),
                        to_json_values(params),
                    )
                    return self._local_runs.get(str(earlier[0].id)) or Run(
                        self, earlier[0].id, workflow.name, flow_run=earlier[0]
                    )
                run_tags.append(key_tag)
            marker = f"{_SUBMISSION_TAG}{uuid.uuid4().hex}"
            thread = _RunThread(flow, params, [*run_tags, marker], self.namespace)
            thread.start()
            try:
                found = self._wait_for_run(flow.name, marker, thread)
            except BaseException:
                thread.abandon()
                raise
            run = Run(self, found.id, workflow.name, thread=thread, flow_run=found)
            self._local_runs[run.id] = run
            return run

    def _wait_for_run(self, flow_name: str, marker: str, thread: _RunThread):
        """The flow run ``thread`` created (tagged ``marker``); a clear error if it never appears."""
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            try:
                found = self._find_runs_tagged(flow_name, [marker])
            except Exception as exc:
                raise PipelinesError(
                    f"{flow_name} could not start in-process: reading its run from Prefect's in-process API "
                    f"failed ({type(exc).__name__}: {exc or 'no detail'}). The run was abandoned; try again, or "
                    "start a server (`prefect server start`) and set PREFECT_API_URL."
                ) from exc
            if found:
                return found[0]
            if not thread.is_alive() or time.monotonic() > deadline:
                error = thread.error
                detail = error if error else f"no flow run was created within {_START_TIMEOUT:g} s"
                raise PipelinesError(f"{flow_name} could not start in-process: {detail}.") from error
            time.sleep(0.05)

    def get_run(self, run_id: str | uuid.UUID) -> Run:
        """A run by id (for example one listed by :meth:`runs`, or started before a kernel restart)."""
        try:
            flow_run_id = uuid.UUID(str(run_id))
        except ValueError:
            raise PipelinesError(f"{run_id!r} is not a run id; run ids look like {uuid.uuid4()}.") from None
        from prefect.exceptions import ObjectNotFound

        async def read(client):
            try:
                flow_run = await client.read_flow_run(flow_run_id)
            except ObjectNotFound:
                return None, None
            return flow_run, await client.read_flow(flow_run.flow_id)

        flow_run, flow = self._call(read)
        if flow_run is None:
            where = self.api_url or "the in-process API"
            raise PipelinesError(f"No run {run_id} on {where}; list recent runs with client.runs().")
        run = self._local_runs.get(str(flow_run.id)) or Run(self, flow_run.id, flow.name)
        run._flow_run = flow_run
        return run

    # reading -----------------------------------------------------------------------------------

    def _read_result(self, flow_run, run: Run) -> Any:
        """The persisted result as plain JSON data.

        A JSON result is read as the JSON it was stored as. Prefect's own decoding
        (``state.result(fetch=True)``) imports the class the result names and cannot rebuild a
        pydantic 2 model (PrefectHQ/prefect #12224), and this process may hold another version of
        the code; it is used for the other serializers only.
        """
        from prefect.results import PersistedResult

        state = flow_run.state

        async def read(client):
            if isinstance(state.data, PersistedResult):
                blob = await state.data._read_blob(client=client)
                if getattr(blob.serializer, "type", None) == "json":
                    return _json_outputs(blob.data)
            value = state.result(fetch=True)
            if asyncio.iscoroutine(value):
                value = await value
            return to_jsonable(value)

        try:
            return self._call(read)
        except ServerUnreachableError:
            raise
        except Exception as exc:
            raise PipelinesError(
                f"{run.workflow} run {run.id} completed, but its result could not be read: "
                f"{type(exc).__name__}: {exc}. Results are persisted to the namespace's result storage, which "
                "this process must be able to read (the PREFECT_LOCAL_STORAGE_PATH folder the run wrote to, "
                "or its S3 location)."
            ) from exc

    def _read_typed_result(self, flow_run, run: Run) -> Any:
        """The persisted result decoded by the serializer it was written with (pydantic models rebuilt)."""
        from prefect.results import PersistedResult

        state = flow_run.state

        async def read(client):
            if isinstance(state.data, PersistedResult):
                blob = await state.data._read_blob(client=client)
                data = blob.data
                return blob.serializer.loads(data if isinstance(data, bytes) else data.encode())
            value = state.result(fetch=True)
            return await value if asyncio.iscoroutine(value) else value

        try:
            return self._call(read)
        except ServerUnreachableError:
            raise
        except Exception as exc:
            raise PipelinesError(
                f"{run.workflow} run {run.id} completed, but its result could not be rebuilt as the type the flow "
                f"returned: {type(exc).__name__}: {exc}. This process needs the code that defines that type "
                "(the same version of the pipelines package); run.outputs gives the result as a JSON dict."
            ) from exc

    def _flush_local_logs(self) -> None:
        from prefect.logging.handlers import APILogWorker

        with contextlib.suppress(Exception):
            # Runs in a plain thread: inside a running loop drain_all would return a coroutine.
            drain = threading.Thread(target=APILogWorker.drain_all, kwargs={"timeout": 10})
            drain.start()
            drain.join(15)

    def _read_logs(self, run_id: str) -> list[LogLine]:
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
        from prefect.client.schemas.sorting import LogSort

        async def read(client):
            records, offset = [], 0
            while True:
                page = await client.read_logs(
                    log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(run_id)])),
                    limit=200,
                    offset=offset,
                    sort=LogSort.TIMESTAMP_ASC,
                )
                records.extend(page)
                if len(page) < 200:
                    return records
                offset += len(page)

        return [
            LogLine(
                timestamp=r.timestamp,
                level=_LEVELS.get(r.level, str(r.level)),
                logger=r.name,
                message=r.message,
            )
            for r in self._call(read)
        ]

    def runs(self, name: str | None = None, limit: int = 20, *, outputs: bool = True) -> pl.DataFrame:
        """Recent runs of this namespace, newest first, as a polars DataFrame.

        Columns: name, namespace, state, start, duration, outputs (the scalar outputs of completed
        runs, e.g. ``accuracy=0.874``; ``outputs=False`` skips reading them), id, url.
        """
        if limit < 1:
            raise PipelinesError(f"limit={limit}: ask for at least 1 run.")
        from prefect.client.schemas.filters import FlowFilter, FlowFilterId, FlowFilterName
        from prefect.client.schemas.sorting import FlowRunSort

        async def read(client):
            flow_runs = await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[name])) if name else None,
                flow_run_filter=_top_level_runs_tagged([f"{NAMESPACE_TAG}{self.namespace}"]),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=limit,
            )
            ids = list({r.flow_id for r in flow_runs})
            flows = await client.read_flows(flow_filter=FlowFilter(id=FlowFilterId(any_=ids))) if ids else []
            return flow_runs, {f.id: f.name for f in flows}

        flow_runs, flow_names = self._call(read)
        rows = []
        now = datetime.now(UTC)
        for flow_run in flow_runs:
            run = Run(self, flow_run.id, flow_names.get(flow_run.flow_id, "?"), flow_run=flow_run)
            summary = ""
            if outputs and flow_run.state is not None and flow_run.state.type.value == "COMPLETED":
                try:
                    summary = _key_outputs(run.outputs)
                except PipelinesError as exc:
                    summary = f"(unreadable: {exc})"
            start = flow_run.start_time
            end = flow_run.end_time or (now if start is not None else None)
            rows.append(
                {
                    "name": run.workflow,
                    "namespace": self.namespace,
                    "state": flow_run.state_name,
                    "start": datetime.fromtimestamp(start.timestamp(), UTC) if start is not None else None,
                    "duration": timedelta(seconds=(end - start).total_seconds())
                    if start is not None
                    else None,
                    "outputs": summary,
                    "id": run.id,
                    "url": run.url,
                }
            )
        schema = {
            "name": pl.String,
            "namespace": pl.String,
            "state": pl.String,
            "start": pl.Datetime("us", "UTC"),
            "duration": pl.Duration("ms"),
            "outputs": pl.String,
            "id": pl.String,
            "url": pl.String,
        }
        return pl.DataFrame(rows, schema=schema)
