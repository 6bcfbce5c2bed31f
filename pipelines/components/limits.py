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
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Iterator

from pipelines.components.environment import Settings, get_settings

PREFIX = "pipelines"
BACKFILL = "backfill"
WAIT_NOTICE_SECONDS = 2.0  # a run still waiting after this long logs what it waits for


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


class Reservation:
    """Slots being acquired (from the moment it is made) and held until the block that made it ends.

    Acquiring, holding and releasing run as one coroutine on Prefect's own event-loop thread (where
    its API client lives); the caller's thread is free meanwhile, and :meth:`close` waits until the
    slots are released. Inside a Prefect run the coroutine uses the run's own API client, and it asks
    the API for the slots itself, as :func:`prefect.concurrency.asyncio.concurrency` does (the same
    request, the same wait the API asks for when the slots are taken, the same events), without its
    per-limit queue service and a new API client per release: acquire and release are one request each.
    """

    def __init__(self, wanted: dict[str, int], logger) -> None:
        from prefect._internal.concurrency.api import create_call, from_sync

        self.wanted, self.logger = wanted, logger
        self.what = ", ".join(f"{name} ({limit} slot(s))" for name, limit in wanted.items())
        self._got = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None
        self._closed = self._held = False
        self._started = time.monotonic()
        self._api = _api_identity()
        self._call = from_sync.call_soon_in_loop_thread(create_call(self._hold, _run_client()))

    async def _hold(self, client) -> None:
        if not _usable(client):
            from prefect import get_client

            async with get_client() as own:
                return await self._hold(own)
        self._release = asyncio.Event()
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
            got = time.monotonic()
            try:
                events = _acquired_events(response)
                self._held = True
                self._got.set()
                if not self._closed:
                    await self._release.wait()
            finally:
                # released even when this coroutine is cancelled (the loop shutting down): a slot
                # left taken bounds every later run
                await asyncio.shield(
                    client.release_concurrency_slots(
                        names=names, slots=1, occupancy_seconds=max(time.monotonic() - got, 0.001)
                    )
                )
                _released_events(events)
        finally:
            self._got.set()

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
                await asyncio.wait_for(self._release.wait(), max(retry_after, 0.05))
        return None

    def _in_use(self) -> str:
        """The limits' slots in use right now, e.g. ``pipelines:ns:orders 1/1``."""
        from prefect import get_client

        async def read() -> str:
            async with get_client() as client:
                found = [await client.read_global_concurrency_limit_by_name(n) for n in self.wanted]
            return ", ".join(f"{c.name} {c.active_slots}/{c.limit}" for c in found)

        try:
            from prefect._internal.concurrency.api import create_call, from_sync

            return from_sync.call_soon_in_loop_thread(create_call(read)).result(timeout=10)
        except Exception:  # the notice is best effort: the wait itself goes on
            return "unknown"

    def wait(self) -> None:
        """Block until the slots are held; log, once, when that takes a while and what it waits for."""
        if not self._got.wait(WAIT_NOTICE_SECONDS):
            self.logger.info(
                "Waiting for a slot of %s (slots in use: %s). See `prefect global-concurrency-limit ls`; "
                "the bounds are PIPELINES_MAX_RUNS, PIPELINES_MAX_DATASET_RUNS and PIPELINES_BACKFILL_WINDOWS.",
                self.what,
                self._in_use(),
            )
            self._got.wait()
            self.logger.info("Got a slot of %s after %.1f s", self.what, time.monotonic() - self._started)
        if not self._held:
            self._call.result()  # raises what went wrong (the API could not be reached, ...)
            raise RuntimeError(f"No slot of {self.what} was acquired; this is a bug, please report it.")

    def close(self) -> None:
        """Release the slots (or stop waiting for them) and wait until that is done."""
        self._closed = True
        loop, release = self._loop, self._release
        if loop is not None and release is not None:
            loop.call_soon_threadsafe(release.set)
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
