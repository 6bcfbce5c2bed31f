"""Prefect's in-process (ephemeral) API, made ready once per process before any run uses it.

Without a Prefect server, every Prefect client enters the ephemeral API's start-up (database
migrations, block registration) in its own thread, and Prefect gives that start-up a fixed 30 s.
On a fresh ``PREFECT_HOME`` or a busy machine the first start-up can take longer, and the run then
fails with a bare ``TimeoutError`` somewhere inside Prefect. Running that start-up once here, with
a bound of our own and a clear error, leaves only the quick checks for every later client.
"""

from __future__ import annotations

import os
import threading

from pipelines.components.errors import PipelinesError

START_TIMEOUT_ENV = "PIPELINES_LOCAL_API_TIMEOUT"
DEFAULT_START_TIMEOUT = 300.0

_ready: set[str] = set()
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
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_API_URL

    if PREFECT_API_URL.value():
        return
    database = str(PREFECT_API_DATABASE_CONNECTION_URL.value())
    with _lock:
        if database in _ready:
            return
        limit = start_timeout() if timeout is None else timeout
        try:
            _start_and_stop(limit)
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
        _ready.add(database)


def _start_and_stop(timeout: float) -> None:
    """Run the ephemeral app's start-up and shut-down hooks on Prefect's own event-loop thread."""
    from asgi_lifespan import LifespanManager
    from prefect._internal.concurrency.api import create_call, from_sync
    from prefect.server.api.server import create_app

    async def cycle() -> None:
        app = create_app(ephemeral=True)
        async with LifespanManager(app, startup_timeout=timeout, shutdown_timeout=timeout):
            pass

    call = from_sync.call_soon_in_loop_thread(create_call(cycle))
    call.result(timeout=timeout + 30)
