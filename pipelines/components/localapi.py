"""Prefect's in-process (ephemeral) API, started once per process and kept up.

Without a Prefect server, a Prefect client that finds the ephemeral API's start-up (database
migrations, block registration) not running starts it, with a fixed 30 s limit, and stops it again
when the last client on that event loop closes. Sequential calls (the notebook client polling a run)
therefore start it over and over; on a fresh ``PREFECT_HOME`` or a busy machine one start-up takes
longer than 30 s and the caller gets a bare ``TimeoutError`` or ``CancelledError`` from inside Prefect.

``ensure_local_api`` runs the first start-up with a bound of our own and a clear error, then keeps
the API's lifespan open on Prefect's event-loop thread (where the client's calls and sync flow runs'
orchestration happen), so later clients only join it. Prefect replaces that thread when a top-level
flow run ends (and closes what was open on it); the next ``ensure_local_api`` holds the lifespan again
on the new thread, which is quick once the database is migrated.
"""

from __future__ import annotations

import contextlib
import os
import threading

from pipelines.components.errors import PipelinesError

START_TIMEOUT_ENV = "PIPELINES_LOCAL_API_TIMEOUT"
DEFAULT_START_TIMEOUT = 300.0

# database URL -> (Prefect's loop thread, the lifespan held open on it); the thread object, not its
# ident: Python reuses the ident of a finished thread for the next one
_held: dict[str, tuple[threading.Thread, contextlib.AbstractAsyncContextManager]] = {}
_lock = threading.Lock()


class LocalApiError(PipelinesError):
    """Prefect's in-process API could not start."""


def start_timeout() -> float:
    """Seconds the first start-up may take (``PIPELINES_LOCAL_API_TIMEOUT``, default 300)."""
    text = os.environ.get(START_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_START_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise LocalApiError(
            f"{START_TIMEOUT_ENV}={text!r} is not a number of seconds; set it to a positive number "
            f"such as 300, or unset it for the default ({DEFAULT_START_TIMEOUT:g} s)."
        )
    return value


def ensure_local_api(timeout: float | None = None) -> None:
    """Migrate the in-process API's database and register its blocks, once per database.

    Does nothing when a Prefect server is configured (``PREFECT_API_URL``). Raises
    :class:`LocalApiError`, naming the database and the setting to raise, when the start-up fails or
    takes longer than ``timeout`` seconds; never waits without a bound.
    """
    from prefect._internal.concurrency.threads import get_global_loop
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_API_URL

    if PREFECT_API_URL.value():
        return
    database = str(PREFECT_API_DATABASE_CONNECTION_URL.value())
    with _lock:
        loop_thread = get_global_loop().thread
        if database in _held and _held[database][0] is loop_thread:
            return
        limit = start_timeout() if timeout is None else timeout
        try:
            _held[database] = (loop_thread, _start_and_hold(limit))
        except TimeoutError:
            raise LocalApiError(
                f"Prefect's in-process API did not start within {limit:g} s (database {database}). The machine "
                f"may be busy: set {START_TIMEOUT_ENV} to allow longer, or start a server (`prefect server start`) "
                "and set PREFECT_API_URL."
            ) from None
        except Exception as exc:
            raise LocalApiError(
                f"Prefect's in-process API could not start (database {database}): "
                f"{type(exc).__name__}: {exc}. Check that PREFECT_HOME is writable, or start a server and set "
                "PREFECT_API_URL."
            ) from exc


def _on_prefect_loop(fn, timeout: float):
    """Run ``fn()`` on Prefect's event-loop thread with the caller's context (its Prefect settings)."""
    from prefect._internal.concurrency.api import create_call, from_sync

    return from_sync.call_soon_in_loop_thread(create_call(fn)).result(timeout=timeout)


def _start_and_hold(timeout: float) -> contextlib.AbstractAsyncContextManager:
    """Start the ephemeral app (first with our own bound), then hold its lifespan open."""
    from asgi_lifespan import LifespanManager
    from prefect.client.base import app_lifespan_context
    from prefect.server.api.server import create_app

    async def start() -> contextlib.AbstractAsyncContextManager:
        app = create_app(ephemeral=True)  # the app Prefect's clients use for these settings (cached)
        # Migrations and block registration, bounded by us; they are then done for this database.
        async with LifespanManager(app, startup_timeout=timeout, shutdown_timeout=timeout):
            pass
        # The lifespan Prefect's own clients share on this thread: held open, they join it at once.
        held = app_lifespan_context(app)
        await held.__aenter__()
        return held

    return _on_prefect_loop(start, timeout + 30)
