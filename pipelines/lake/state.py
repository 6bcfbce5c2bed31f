"""Committed state: the pipelines state stored in Delta commit metadata, and what changed since a version.

Every data commit of a cleaned or aggregated table carries a JSON state under
:data:`~pipelines.lake.layout.STATE_KEY` (watermark, ledger of raw files, touched partitions,
upstream versions...). The newest commit that has one is the table's state.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from pipelines.lake.layout import PARTITION, STATE_KEY

# Delta operations that never add, change or remove rows: commits with these are skipped when
# asking what changed.
NO_DATA_CHANGE_OPERATIONS = frozenset(
    {
        "CREATE TABLE",
        "OPTIMIZE",
        "VACUUM START",
        "VACUUM END",
        "SET TBLPROPERTIES",
        "ADD CONSTRAINT",
        "DROP CONSTRAINT",
        "ADD COLUMN",
        "ADD FEATURE",
        "UPDATE FIELD METADATA",
        "UPDATE TABLE METADATA",
    }
)


def changes_data(commit: dict[str, Any]) -> bool:
    """Whether a commit (an entry of ``DeltaTable.history()``) may have changed rows."""
    return commit.get("operation") not in NO_DATA_CHANGE_OPERATIONS


def commit_state(commit: dict[str, Any]) -> dict | None:
    """The pipelines state a commit carries, or None (a commit by another tool, or maintenance)."""
    raw = commit.get(STATE_KEY)
    if not raw:
        return None
    try:
        state = json.loads(raw)
    except ValueError:
        return None
    return state if isinstance(state, dict) else None


def state_at(table) -> dict | None:
    """The state of the newest commit, at or before the table's loaded version, that has one."""
    version = table.version()
    limit = 20
    while True:
        history = table.history(limit=limit)
        for commit in history:  # newest first
            if int(commit.get("version", version)) <= version and STATE_KEY in commit:
                return commit_state(commit)
        if len(history) < limit:
            return None
        limit *= 10


def commits_since(table, version: int) -> Iterator[tuple[int, dict | None]]:
    """(number, commit) for every version after ``version`` up to the loaded one, oldest first.

    The commit is None when the log no longer has that version (cleaned up); callers decide
    what that means (usually: rebuild fully).
    """
    latest = table.version()
    if latest <= version:
        return
    needed = latest - version
    commits = {int(c["version"]): c for c in table.history(limit=needed + 50) if "version" in c}
    for number in range(version + 1, latest + 1):
        yield number, commits.get(number)


def commit_timestamp(table, version: int) -> int | None:
    """When a version was committed (ms since 1970), if its log entry is still there."""
    for commit in table.history(limit=max(1, table.version() - version + 1)):
        if int(commit.get("version", -1)) == version:
            return int(commit["timestamp"]) if commit.get("timestamp") is not None else None
    return None


def table_partitions(table) -> set[str]:
    """The ``_partition`` values a Delta table holds at its loaded version (from the log, no data read)."""
    if PARTITION not in table.metadata().partition_columns:
        return set()
    return {p[PARTITION] for p in table.partitions()}
