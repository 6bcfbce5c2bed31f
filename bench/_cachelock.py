"""One builder at a time for an entry of the bench cache, across processes (two bench runs, or a test
run beside a measurement, may share the default cache)."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def building(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<folder>.lock`` while ``folder`` is checked and built.

    A second process waits here, then finds the entry complete and reuses it. The lock is released
    when the holder exits, even when it is killed.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(f"{folder.name}.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
