"""Progress of long work, reported to whoever started it in this process (the CLI draws a rich bar).

A flow calls :func:`advance` as it goes; without a :func:`reporting` block around the call (a
deployment run, a notebook) nothing is drawn and the flow's logs tell the same story.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

Reporter = Callable[[str, int, int], None]  # (what just finished, done, total)
_REPORTER: ContextVar[Reporter | None] = ContextVar("pipelines_progress", default=None)


@contextlib.contextmanager
def reporting(reporter: Reporter) -> Iterator[None]:
    """Within this block (and the Prefect runs started from it), :func:`advance` calls ``reporter``."""
    token = _REPORTER.set(reporter)
    try:
        yield
    finally:
        _REPORTER.reset(token)


def advance(what: str, done: int, total: int) -> None:
    reporter = _REPORTER.get()
    if reporter is not None:
        reporter(what, done, total)
