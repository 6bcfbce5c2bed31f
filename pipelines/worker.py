"""``pipelines worker``: a Prefect process worker on the work queues of one namespace or one kind.

Deploy gives every namespace a work queue in the pool (``<namespace>``) and orders the pool's queues
serving > e2e > research, so one worker on every queue takes serving's runs first. To keep a slow
research run from ever delaying serving, run a worker per kind:

- ``--namespace NS``: the queue ``NS`` only;
- ``--kind serving`` / ``--kind e2e``: the ``serving`` / ``e2e`` queue;
- ``--kind research``: every research queue of the pool, looked up again on every poll, so a branch
  deployed after the worker started is served without a restart;
- neither: every queue of the pool, highest priority first.

A run that fails before its flow starts (a pull step could not fetch the deployed code) ends in
Prefect with "Flow could not be retrieved from deployment. StepExecutionError: ..."; the cause
(``FileNotFoundError``, ``NoCredentialsError``) is only in the traceback in the run's logs. This
worker reads that traceback once the run's process has exited and puts the root cause, and what to
do about it, into the run's state message.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterable
from functools import partial
from typing import Any

from pipelines.components.environment import Kind, kind_of
from pipelines.components.errors import ConfigError

DEFAULT_POOL = "pipelines"
# Prefect's workers poll every 10 s by default, so a run waits 5 s on average before it even starts.
DEFAULT_POLL_SECONDS = 2.0
_RETRIEVAL_FAILED = "Flow could not be retrieved from"
_STEP = re.compile(r"Encountered error while running (\S+)")
_CHAIN = re.compile(
    r"\n(?:The above exception was the direct cause of the following exception:"
    r"|During handling of the above exception, another exception occurred:)\n"
)
_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Denied|Interrupt)[\w]*)(?::\s?(.*))?$")

_HINTS = {
    "FileNotFoundError": (
        "The deployed code snapshot is not where the deployment points. A local data root is readable only on "
        "the machine that deployed; give workers elsewhere an s3:// PIPELINES_DATA_URL, or deploy the "
        "namespace again if the snapshot was deleted."
    ),
    "NoCredentialsError": (
        "The worker has no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an instance "
        "role) in the worker's environment, then run the deployment again."
    ),
    "PermissionError": "The worker's user cannot read the deployed code snapshot; fix the folder's permissions.",
}


def queues_of(kind: Kind, names: Iterable[str]) -> list[str]:
    """The queue names that belong to namespaces of ``kind``."""
    return sorted(name for name in names if kind_of(name) is kind)


def root_cause(traceback_text: str) -> tuple[str, str] | None:
    """(exception type, message) of the first exception of a chained traceback: the one that started it."""
    first = _CHAIN.split(traceback_text)[0]
    for line in reversed(first.strip().splitlines()):
        match = _ERROR_LINE.match(line.strip())
        if match:
            return match.group(1), (match.group(2) or "").strip()
    return None


def explain_retrieval_failure(state_message: str, logs: list[str]) -> str | None:
    """A state message that names the root cause of a failed pull step, or None if the run failed otherwise."""
    if not state_message.startswith(_RETRIEVAL_FAILED):
        return None
    traceback_text = next(
        (text for text in reversed(logs) if "Traceback (most recent call last)" in text), ""
    )
    cause = root_cause(traceback_text)
    if cause is None:
        return None
    name, message = cause
    step = _STEP.search(state_message + "\n" + traceback_text)
    where = f" (pull step {step.group(1).rsplit('.', 1)[-1]})" if step else ""
    hint = _HINTS.get(name.rsplit(".", 1)[-1], "The run's logs hold the whole traceback.")
    return f"Could not fetch the deployed code{where}: {name}: {message}. {hint}"


async def explain_run(client, flow_run_id) -> str | None:
    """Rewrite a failed run's state message to name the root cause; returns the new message, if any."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.states import Failed

    flow_run = await client.read_flow_run(flow_run_id)
    state = flow_run.state
    if (
        state is None
        or state.type.value != "FAILED"
        or not (state.message or "").startswith(_RETRIEVAL_FAILED)
    ):
        return None
    message = None
    for attempt in range(5):  # the run's last log lines may reach the API just after its process exits
        if attempt:
            await asyncio.sleep(1)
        logs = await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200
        )
        message = explain_retrieval_failure(state.message, [log.message for log in logs])
        if message is not None:
            await client.set_flow_run_state(flow_run_id, state=Failed(message=message), force=True)
            break
    return message


def start(
    pool: str = DEFAULT_POOL,
    *,
    namespace: str | None = None,
    kind: Kind | None = None,
    limit: int | None = None,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    run_once: bool = False,
    printer=print,
) -> None:
    """Run a worker until it is stopped (SIGINT/SIGTERM); ``run_once`` polls once and returns.

    ``poll_seconds`` is how often it asks for scheduled runs: a run waits for the next poll before it starts.
    """
    import anyio

    if namespace is not None and kind is not None:
        raise ConfigError("Give --namespace or --kind, not both: a worker serves one namespace or one kind.")
    if poll_seconds <= 0:
        raise ConfigError(f"The poll interval must be more than 0 seconds, not {poll_seconds:g}.")
    anyio.run(partial(_serve, pool, namespace, kind, limit, poll_seconds, run_once, printer))


def _fixed_queues(namespace: str | None, kind: Kind | None) -> list[str] | None:
    if namespace is not None:
        return [namespace]
    if kind in (Kind.SERVING, Kind.E2E):
        return [kind.value]
    return None  # research: found on every poll; neither: every queue of the pool


async def _serve(
    pool: str,
    namespace: str | None,
    kind: Kind | None,
    limit: int | None,
    query: float,
    run_once: bool,
    printer,
) -> None:
    import anyio
    from prefect.settings import PREFECT_WORKER_HEARTBEAT_SECONDS
    from prefect.utilities.services import critical_service_loop
    from prefect.workers.process import ProcessWorker

    scope = f"namespace {namespace}" if namespace else f"{kind.value} queues" if kind else "every queue"
    name = f"pipelines-{namespace or (kind.value if kind else 'all')}-{socket.gethostname()}"
    async with ProcessWorker(
        name=name,
        work_pool_name=pool,
        work_queues=_fixed_queues(namespace, kind),
        limit=limit,
        heartbeat_interval_seconds=PREFECT_WORKER_HEARTBEAT_SECONDS.value(),
    ) as worker:
        _wrap(worker, pool, kind if namespace is None else None)
        printer(f"Worker {worker.name!r} started on pool {pool!r}, {scope}.")
        async with anyio.create_task_group() as group:
            await worker.sync_with_backend()
            for workload, interval in (
                (worker.get_and_submit_flow_runs, query),
                (worker.sync_with_backend, worker.heartbeat_interval_seconds),
                (worker.check_for_cancelled_flow_runs, query * 2),
            ):
                group.start_soon(
                    partial(
                        critical_service_loop,
                        workload=workload,
                        interval=interval,
                        run_once=run_once,
                        printer=printer,
                        jitter_range=0.3,
                        backoff=4,
                    )
                )


def _wrap(worker: Any, pool: str, kind: Kind | None) -> None:
    """Explain failed pulls after each run; for research, find the research queues on every poll.

    Prefect 2.20's ProcessWorker has no hooks for either, so this wraps two of its methods on this
    instance (``run`` and ``_get_scheduled_flow_runs``) and sets the queues it polls (``_work_queues``).
    """
    run = worker.run

    async def run_and_explain(flow_run, configuration, task_status=None):
        result = await run(flow_run=flow_run, configuration=configuration, task_status=task_status)
        logger = worker.get_flow_run_logger(flow_run)
        try:
            message = await explain_run(worker._client, flow_run.id)
        except Exception as exc:  # the run itself is over; only its message stays Prefect's
            logger.warning("Could not check why flow run %s ended as it did: %r", flow_run.id, exc)
        else:
            if message:
                logger.error(message)
        return result

    worker.run = run_and_explain
    if kind is not Kind.RESEARCH:
        return
    scheduled = worker._get_scheduled_flow_runs

    async def research_runs():
        names = [q.name for q in await worker._client.read_work_queues(work_pool_name=pool)]
        worker._work_queues = set(queues_of(Kind.RESEARCH, names))
        return await scheduled() if worker._work_queues else []

    worker._get_scheduled_flow_runs = research_runs
