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


async def _ensure(wanted: dict[str, int]) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
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


class Reservation:
    """Slots being acquired (from the moment it is made) and held until the block that made it ends.

    Acquiring, holding and releasing run as one coroutine on Prefect's own event-loop thread (where
    its API client lives), using :func:`prefect.concurrency.asyncio.concurrency`; the caller's thread
    is free meanwhile, and :meth:`close` waits until the slots are released.
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
        self._call = from_sync.call_soon_in_loop_thread(create_call(self._hold))

    async def _hold(self) -> None:
        from prefect.concurrency.asyncio import concurrency

        self._loop, self._release = asyncio.get_running_loop(), asyncio.Event()
        try:
            missing = ENSURED.missing(self._api, self.wanted)
            if missing:
                await _ensure(missing)
                ENSURED.add(self._api, missing)
            async with concurrency(list(self.wanted), occupy=1):
                self._held = True
                self._got.set()
                if not self._closed:
                    await self._release.wait()
        finally:
            self._got.set()

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
        if not self._got.is_set():
            self._call.cancel()
        elif self._loop is not None and self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)
        with contextlib.suppress(asyncio.CancelledError, concurrent.futures.CancelledError):
            self._call.result()


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
