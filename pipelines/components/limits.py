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

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

from pipelines.components.environment import Settings, get_settings

PREFIX = "pipelines"
BACKFILL = "backfill"
WAIT_NOTICE_SECONDS = 0.5  # a run still waiting after this long logs what it waits for


def namespace_limit(namespace: str) -> str:
    return f"{PREFIX}:{namespace}"


def dataset_limit(namespace: str, dataset: str) -> str:
    return f"{PREFIX}:{namespace}:{dataset}"


def backfill_limit(namespace: str) -> str:
    return f"{PREFIX}:{namespace}:{BACKFILL}"


def bounds(
    namespace: str, dataset: str | None, settings: Settings, *, window: bool = False
) -> dict[str, int]:
    """The limits a slot occupies and their configured bounds (name -> slots)."""
    if window:
        return {
            backfill_limit(namespace): settings.backfill_windows,
            namespace_limit(namespace): settings.max_runs,
        }
    names = {namespace_limit(namespace): settings.max_runs}
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


@contextlib.contextmanager
def slot(
    namespace: str, dataset: str | None = None, *, window: bool = False, settings: Settings | None = None
) -> Iterator[None]:
    """Occupy one slot of the namespace's limit and of the dataset's (or, with ``window``, the backfill one).

    Every named limit is taken in one request (all or nothing), so two holders never wait on each
    other. A run that has to wait logs, once, which limits it waits for and how to change them.
    """
    from prefect.concurrency.sync import concurrency

    settings = settings or get_settings()
    wanted = bounds(namespace, dataset, settings, window=window)
    ensure(wanted)
    logger = _logger()
    what = ", ".join(f"{name} ({limit} slot(s))" for name, limit in wanted.items())
    acquired = threading.Event()

    def notice() -> None:
        if not acquired.wait(WAIT_NOTICE_SECONDS):
            logger.info(
                "Waiting for a slot of %s: the limit is in use by other runs. See `prefect "
                "global-concurrency-limit ls`; the bounds are PIPELINES_MAX_RUNS, PIPELINES_MAX_DATASET_RUNS "
                "and PIPELINES_BACKFILL_WINDOWS.",
                what,
            )

    watcher = threading.Thread(target=notice, name="pipelines-slot-wait", daemon=True)
    watcher.start()
    started = time.monotonic()
    try:
        with concurrency(list(wanted), occupy=1):
            acquired.set()
            waited = time.monotonic() - started
            if waited >= WAIT_NOTICE_SECONDS:
                logger.info("Got a slot of %s after %.1f s", what, waited)
            yield
    finally:
        acquired.set()
        watcher.join()
