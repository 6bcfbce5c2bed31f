"""Bounded bursts through Prefect's own global concurrency limits, per namespace and per dataset.

Three limits per namespace, each sized by a setting (components/environment.py):

``pipelines:<namespace>``             PIPELINES_MAX_RUNS: dataset runs (ingests, backfill windows) at once
``pipelines:<namespace>:<dataset>``   PIPELINES_MAX_DATASET_RUNS: runs of one dataset cleaning and committing
``pipelines:<namespace>:backfill``    PIPELINES_BACKFILL_WINDOWS: backfill windows at once

The limits are named per namespace, so a research namespace's burst only ever fills research's
slots; serving keeps its own. They live in Prefect's database (the ephemeral in-process API or a
server): ``prefect global-concurrency-limit ls`` and the UI's Concurrency page show them, with the
slots in use. Prefect 2.20 quietly creates a missing limit as *inactive* when a slot is asked of it
(an inactive limit bounds nothing), so :func:`slot` makes each limit exist, active, with the
configured bound before it occupies a slot. The setting is the source of truth: a bound changed in
the UI is set back to the setting by the next run that uses it.

Prefect 2's limits have no lease: a process killed while it holds a slot never gives it back. So each
holding is recorded next to the limits, as a Prefect Variable ``pipelines_slot_<id>`` tagged
``pipelines-slot-holder`` and with the limit names (``prefect variable ls`` shows them): host, pid and
the process's start time, flow and task run, when acquired. It is deleted, then the slots released,
when the holder lets go. A run that has waited ``WAIT_NOTICE_SECONDS`` reads the records of the
limits it waits for and frees the slots of holders that are provably dead: a process on this machine
that is gone (or whose pid now belongs to another process), or a flow run in a final state. Whoever
deletes a record releases its slots, nobody else, so two waiters (or a waiter and a slow holder)
never both release one holding.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

from pipelines.components.environment import Settings, get_settings

PREFIX = "pipelines"
BACKFILL = "backfill"
WAIT_NOTICE_SECONDS = 2.0  # a run still waiting after this long logs what it waits for
RECHECK_SECONDS = 30.0  # and then looks for dead holders again this often
HOLDER_TAG = "pipelines-slot-holder"
HOLDER_PREFIX = "pipelines_slot_"  # Prefect Variable names: lowercase letters, digits and underscores


def namespace_limit(namespace: str) -> str:
    return f"{PREFIX}:{namespace}"


def dataset_limit(namespace: str, dataset: str) -> str:
    return f"{PREFIX}:{namespace}:{dataset}"


def backfill_limit(namespace: str) -> str:
    return f"{PREFIX}:{namespace}:{BACKFILL}"


def bounds(
    namespace: str,
    dataset: str | None,
    settings: Settings,
    *,
    window: bool = False,
    in_namespace_slot: bool = False,
) -> dict[str, int]:
    """The limits a slot occupies and their configured bounds (name -> slots).

    ``in_namespace_slot``: the caller already holds a slot of the namespace's limit (a backfill window
    committing its dataset), so taking a second one could deadlock once every window holds one.
    """
    if window:
        return {
            backfill_limit(namespace): settings.backfill_windows,
            namespace_limit(namespace): settings.max_runs,
        }
    names = {} if in_namespace_slot else {namespace_limit(namespace): settings.max_runs}
    if dataset is not None:
        names[dataset_limit(namespace, dataset)] = settings.max_dataset_runs
    return names


async def _ensure(wanted: dict[str, int], client=None) -> None:
    if client is None:
        from prefect import get_client

        async with get_client() as client:
            return await _ensure(wanted, client)
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    for name, limit in wanted.items():
        try:
            current = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                await client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=limit, active=True)
                )
                continue
            except Exception:  # created meanwhile by a concurrent run: read it again below
                current = await client.read_global_concurrency_limit_by_name(name)
        if current.limit != limit or not current.active:
            await client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(limit=limit, active=True)
            )


def _api_identity() -> str:
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_API_URL

    return PREFECT_API_URL.value() or f"ephemeral:{PREFECT_API_DATABASE_CONNECTION_URL.value()}"


class _Ensured:
    """Limits this process made sure of recently: (API, name, bound) -> when. Skips two API reads per
    slot; re-checked after ``ttl`` seconds, so a limit deleted or changed in the UI is put back soon."""

    def __init__(self, ttl: float = 60.0) -> None:
        self.ttl, self._seen, self._lock = ttl, {}, threading.Lock()

    def missing(self, api: str, wanted: dict[str, int]) -> dict[str, int]:
        now = time.monotonic()
        with self._lock:
            return {
                n: v for n, v in wanted.items() if now - self._seen.get((api, n, v), -self.ttl) >= self.ttl
            }

    def add(self, api: str, done: dict[str, int]) -> None:
        now = time.monotonic()
        with self._lock:
            self._seen.update({(api, n, v): now for n, v in done.items()})

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


ENSURED = _Ensured()


def ensure(wanted: dict[str, int]) -> None:
    """Make each limit exist and be active with its bound (created, or updated when it differs)."""
    api = _api_identity()
    wanted = ENSURED.missing(api, wanted)
    if not wanted:
        return
    # as prefect.concurrency.sync calls its own async functions: in the loop thread when there is one
    from prefect._internal.concurrency.api import create_call, from_sync
    from prefect._internal.concurrency.event_loop import get_running_loop

    call = create_call(_ensure, wanted)
    if get_running_loop() is not None:
        from_sync.call_soon_in_loop_thread(call).result()
    else:
        call()
    ENSURED.add(api, wanted)


def _logger() -> logging.Logger | logging.LoggerAdapter:
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def _run_client():
    """The API client of the Prefect run this thread is in (None outside a run)."""
    from prefect.context import FlowRunContext, TaskRunContext

    context = TaskRunContext.get() or FlowRunContext.get()
    return getattr(context, "client", None)


def _usable(client) -> bool:
    """Whether a run's client is open and bound to the running loop (a Dask worker's loop may be another)."""
    return (
        client is not None
        and getattr(client, "_started", False)
        and not getattr(client, "_closed", True)
        and getattr(client, "_loop", None) is asyncio.get_running_loop()
    )


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), or None when there is no such process."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is not None:
        return stat[stat.rfind(")") + 2 :].split()[19]  # field 22; the command name may hold spaces
    if os.path.isdir("/proc/self"):
        return None  # Linux: no such process
    try:
        import psutil
    except ImportError:
        return None
    try:
        return repr(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


@functools.lru_cache(maxsize=1)
def _machine() -> dict[str, str | None]:
    """Where pids mean the same processes: host name, kernel boot and pid namespace."""
    boot = _read("/proc/sys/kernel/random/boot_id")
    if boot is None:
        try:
            import psutil

            boot = repr(psutil.boot_time())
        except ImportError:
            pass
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = None
    return {"host": socket.gethostname(), "boot": boot, "pidns": pidns}


@functools.lru_cache(maxsize=4)
def _process(pid: int) -> dict:
    return {**_machine(), "pid": pid, "started": _start_time(pid)}


def _holder() -> dict:
    """Who is about to hold slots: this process, and the flow and task run of the calling thread."""
    from prefect.context import FlowRunContext, TaskRunContext

    task, flow = TaskRunContext.get(), FlowRunContext.get()
    flow_run = getattr(flow, "flow_run", None)
    flow_run_id = getattr(flow_run, "id", None) or getattr(
        getattr(task, "task_run", None), "flow_run_id", None
    )
    task_run_id = getattr(getattr(task, "task_run", None), "id", None)
    return {
        **_process(os.getpid()),
        "flow_run": str(flow_run_id) if flow_run_id else None,
        "task_run": str(task_run_id) if task_run_id else None,
    }


def _describe(record: dict) -> str:
    """``host h pid 12 (flow run <id>) since <time>``, as a log line names a holder."""
    run = f"flow run {record['flow_run']}" if record.get("flow_run") else "no flow run"
    return f"host {record.get('host')} pid {record.get('pid')} ({run}) since {record.get('acquired')}"


async def _dead(client, record: dict) -> str | None:
    """Why the holder is certainly gone, or None when it is alive or that cannot be decided."""
    here, pid = _machine(), record.get("pid")
    same = (
        here["host"] is not None
        and here["boot"] is not None
        and all(record.get(key) == here[key] for key in ("host", "boot", "pidns"))
    )
    if same and isinstance(pid, int):
        started = _start_time(pid)
        if started is None:
            return f"process {pid} is gone"
        if record.get("started") is not None and started != record["started"]:
            return f"pid {pid} now belongs to another process"
        return None  # alive here: its slots are in use, whatever its flow run's state says
    if record.get("flow_run"):
        from prefect.exceptions import ObjectNotFound

        try:
            run = await client.read_flow_run(uuid.UUID(record["flow_run"]))
        except (ObjectNotFound, ValueError):
            return None
        if run.state is not None and run.state.is_final():
            return f"its flow run is {run.state.type.value}"
    return None


async def _holders(client, wanted) -> list[tuple[str, list[str], dict]]:
    """The holder records of any of the ``wanted`` limits: (record name, its limits, the record)."""
    response = await client._client.post(
        "/variables/filter", json={"variables": {"tags": {"all_": [HOLDER_TAG]}}, "limit": 200}
    )
    found = []
    for variable in response.json():
        names = [tag for tag in variable.get("tags") or [] if tag != HOLDER_TAG]
        if not variable["name"].startswith(HOLDER_PREFIX) or not set(names) & set(wanted):
            continue
        try:
            record = json.loads(variable["value"])
        except (TypeError, ValueError):
            record = {}
        found.append((variable["name"], names, record if isinstance(record, dict) else {}))
    return found


async def _free(client, name: str, limit_names: list[str], record: dict) -> bool:
    """Delete a dead holder's record and, only if this call deleted it, release its slots."""
    from prefect.exceptions import ObjectNotFound

    try:
        await client.delete_variable_by_name(name)
    except ObjectNotFound:  # another run (or the holder itself) got there first: it released them
        return False
    try:
        since = datetime.fromisoformat(record["acquired"])
        held = (datetime.now(UTC) - since).total_seconds()
    except (KeyError, TypeError, ValueError):
        held = 0.0
    await client.release_concurrency_slots(names=limit_names, slots=1, occupancy_seconds=max(held, 0.001))
    return True


class Reservation:
    """Slots being acquired (from the moment it is made) and held until the block that made it ends.

    Acquiring, holding and releasing run as one coroutine on Prefect's own event-loop thread (where
    its API client lives); the caller's thread is free meanwhile, and :meth:`close` waits until the
    slots are released. Inside a Prefect run the coroutine uses the run's own API client, and it asks
    the API for the slots itself, as :func:`prefect.concurrency.asyncio.concurrency` does (the same
    request, the same wait the API asks for when the slots are taken, the same events), without its
    per-limit queue service and a new API client per release: acquire and release are one request each,
    plus one to create and one to delete the holder record (see the module's docstring).
    """

    def __init__(self, wanted: dict[str, int], logger) -> None:
        from prefect._internal.concurrency.api import create_call, from_sync

        self.wanted, self.logger = wanted, logger
        self.what = ", ".join(f"{name} ({limit} slot(s))" for name, limit in wanted.items())
        self._got = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None  # set to ask for the slots again now
        self._closed = self._held = False
        self._started = time.monotonic()
        self._api = _api_identity()
        self._holder = _holder()
        self._call = from_sync.call_soon_in_loop_thread(create_call(self._hold, _run_client()))

    async def _hold(self, client) -> None:
        if not _usable(client):
            from prefect import get_client

            async with get_client() as own:
                return await self._hold(own)
        self._release, self._wake = asyncio.Event(), asyncio.Event()
        self._loop = asyncio.get_running_loop()
        try:
            missing = ENSURED.missing(self._api, self.wanted)
            if missing:
                await _ensure(missing, client)
                ENSURED.add(self._api, missing)
            names = list(self.wanted)
            response = await self._acquire(client, names)
            if response is None:  # closed before the slots were free
                return
            got, record, events = time.monotonic(), None, None
            try:
                record = await self._record(client, names)
                events = _acquired_events(response)
                self._held = True
                self._got.set()
                if not self._closed:
                    await self._release.wait()
            finally:
                # released even when this coroutine is cancelled (the loop shutting down): a slot
                # left taken bounds every later run
                await asyncio.shield(self._let_go(client, names, record, max(time.monotonic() - got, 0.001)))
                if events is not None:
                    _released_events(events)
        finally:
            self._got.set()

    async def _record(self, client, names: list[str]) -> str | None:
        """Record who holds the slots (one request); None when the API refused (the slots are held anyway)."""
        from prefect.client.schemas.actions import VariableCreate

        name = f"{HOLDER_PREFIX}{uuid.uuid4().hex}"
        value = {**self._holder, "acquired": datetime.now(UTC).isoformat(timespec="seconds")}
        try:
            await client.create_variable(
                VariableCreate(name=name, value=json.dumps(value), tags=[HOLDER_TAG, *names])
            )
        except Exception as exc:
            self.logger.warning(
                "Could not record who holds %s (%s: %s): if this process is killed, its slots are not freed "
                "automatically.",
                self.what,
                type(exc).__name__,
                exc,
            )
            return None
        return name

    async def _let_go(self, client, names: list[str], record: str | None, held: float) -> None:
        """Delete the holder record, then release the slots, unless a waiting run deleted it first (it released them)."""
        from prefect.exceptions import ObjectNotFound

        if record is not None:
            try:
                await client.delete_variable_by_name(record)
            except ObjectNotFound:
                self.logger.warning(
                    "The slots of %s were freed while this run held them: a waiting run judged it dead (its flow "
                    "run was marked finished). Not releasing them twice.",
                    self.what,
                )
                return
            except Exception as exc:  # the slots matter more than the record: release them anyway
                self.logger.warning(
                    "Could not delete the holder record %s (%s: %s); delete it with `prefect variable delete %s`.",
                    record,
                    type(exc).__name__,
                    exc,
                    record,
                )
        await client.release_concurrency_slots(names=names, slots=1, occupancy_seconds=held)

    async def _acquire(self, client, names: list[str]):
        """One request for every slot; while they are taken, ask again when the API says to (or stop when closed)."""
        import httpx

        while not self._closed:
            try:
                return await client.increment_concurrency_slots(names=names, slots=1, mode="concurrency")
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 423:  # 423 Locked: the slots are taken
                    raise
                retry_after = float(exc.response.headers.get("Retry-After", 1.0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(retry_after, 0.05))
            self._wake.clear()
        return None

    async def _look(self) -> tuple[str, list[tuple[str, list[str], dict]], list[str]]:
        """Slots in use, the holders of the wanted limits that are alive or undecided, and what was freed."""
        from prefect import get_client

        alive, freed = [], []
        async with get_client() as client:
            for name, limit_names, record in await _holders(client, self.wanted):
                why = await _dead(client, record)
                if why is None:
                    alive.append((name, limit_names, record))
                elif await _free(client, name, limit_names, record):
                    freed.append(
                        f"Freed the slots of {', '.join(limit_names)} held by a dead run ({why}): "
                        f"{_describe(record)}, holder record {name}."
                    )
            found = [await client.read_global_concurrency_limit_by_name(n) for n in self.wanted]
        return ", ".join(f"{c.name} {c.active_slots}/{c.limit}" for c in found), alive, freed

    def _check(self) -> tuple[str, list[tuple[str, list[str], dict]], bool]:
        """Free the slots of dead holders (logging each) and ask for the slots again at once if any were."""
        try:
            from prefect._internal.concurrency.api import create_call, from_sync

            in_use, alive, freed = from_sync.call_soon_in_loop_thread(create_call(self._look)).result(
                timeout=30
            )
        except Exception as exc:  # best effort: the wait itself goes on
            return f"unknown ({type(exc).__name__}: {exc})", [], False
        for line in freed:
            self.logger.warning(line)
        loop, wake = self._loop, self._wake
        if freed and loop is not None and wake is not None:
            loop.call_soon_threadsafe(wake.set)
        return in_use, alive, bool(freed)

    def _notice(self, in_use: str, alive: list[tuple[str, list[str], dict]]) -> None:
        held_by = "; ".join(f"{_describe(record)} [record {name}]" for name, _, record in alive)
        manual = ""
        if alive:
            manual = (
                " A holder on another machine whose flow run is never marked finished is not freed automatically: "
                "once sure it is gone, run `prefect global-concurrency-limit update <limit> --active-slots 0` for "
                "each of its limits and `prefect variable delete <record>`."
            )
        self.logger.info(
            "Waiting for a slot of %s (slots in use: %s; held by: %s). See `prefect global-concurrency-limit ls`; "
            "the bounds are PIPELINES_MAX_RUNS, PIPELINES_MAX_DATASET_RUNS and PIPELINES_BACKFILL_WINDOWS.%s",
            self.what,
            in_use,
            held_by or "no recorded holder",
            manual,
        )

    def wait(self) -> None:
        """Block until the slots are held. After a while, free dead holders' slots and say what it waits for."""
        waited, noticed, interval = False, False, WAIT_NOTICE_SECONDS
        while not self._got.wait(interval):
            waited = True
            in_use, alive, freed = self._check()
            if not freed and not noticed:
                self._notice(in_use, alive)
                noticed = True
            interval = WAIT_NOTICE_SECONDS if freed else RECHECK_SECONDS
        if waited:
            self.logger.info("Got a slot of %s after %.1f s", self.what, time.monotonic() - self._started)
        if not self._held:
            self._call.result()  # raises what went wrong (the API could not be reached, ...)
            raise RuntimeError(f"No slot of {self.what} was acquired; this is a bug, please report it.")

    def close(self) -> None:
        """Release the slots (or stop waiting for them) and wait until that is done."""
        self._closed = True
        loop, release, wake = self._loop, self._release, self._wake
        if loop is not None and release is not None and wake is not None:
            loop.call_soon_threadsafe(release.set)
            loop.call_soon_threadsafe(wake.set)
        with contextlib.suppress(asyncio.CancelledError, concurrent.futures.CancelledError):
            self._call.result()


def _acquired_events(response) -> tuple[list, dict]:
    """Prefect's own concurrency events for slots taken (they go nowhere unless Prefect emits events)."""
    from prefect.concurrency.asyncio import _response_to_minimal_concurrency_limit_response
    from prefect.concurrency.events import _emit_concurrency_acquisition_events

    taken = _response_to_minimal_concurrency_limit_response(response)
    return taken, _emit_concurrency_acquisition_events(taken, 1)


def _released_events(events: tuple[list, dict]) -> None:
    from prefect.concurrency.events import _emit_concurrency_release_events

    _emit_concurrency_release_events(events[0], 1, events[1])


@contextlib.contextmanager
def reserve(
    namespace: str,
    dataset: str | None = None,
    *,
    window: bool = False,
    in_namespace_slot: bool = False,
    settings: Settings | None = None,
) -> Iterator[Reservation]:
    """Start acquiring the slots now, do other work, call ``.wait()`` where they are needed; released at the end.

    Ingest lands its files (idempotent, no slot needed) while its slot is being acquired, so the two
    API calls a slot costs overlap with work it does anyway.
    """
    settings = settings or get_settings()
    wanted = bounds(namespace, dataset, settings, window=window, in_namespace_slot=in_namespace_slot)
    reservation = Reservation(wanted, _logger())
    try:
        yield reservation
    finally:
        reservation.close()


@contextlib.contextmanager
def slot(
    namespace: str,
    dataset: str | None = None,
    *,
    window: bool = False,
    in_namespace_slot: bool = False,
    settings: Settings | None = None,
) -> Iterator[None]:
    """Occupy one slot of the namespace's limit and of the dataset's (or, with ``window``, the backfill one).

    Every named limit is taken in one request (all or nothing), so two holders never wait on each
    other. A run that has to wait logs, once, which limits it waits for and how to change them.
    """
    with reserve(
        namespace, dataset, window=window, in_namespace_slot=in_namespace_slot, settings=settings
    ) as reservation:
        reservation.wait()
        yield


@contextlib.contextmanager
def datasets_slot(namespace: str, datasets: list[str], *, settings: Settings | None = None) -> Iterator[None]:
    """Occupy one namespace slot and one slot of each dataset's limit, all in one request.

    For work that rewrites several tables outside a normal commit (``forget`` vacuums with no retention):
    ingests of those datasets wait to clean and commit until it is done, so the vacuum never deletes
    files a commit in progress still needs.
    """
    settings = settings or get_settings()
    wanted = {namespace_limit(namespace): settings.max_runs}
    wanted |= {dataset_limit(namespace, name): settings.max_dataset_runs for name in sorted(datasets)}
    reservation = Reservation(wanted, _logger())
    try:
        reservation.wait()
        yield
    finally:
        reservation.close()
