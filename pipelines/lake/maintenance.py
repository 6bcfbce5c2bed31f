"""The lake's lifecycle: compaction, vacuum, a bounded commit log, and expiry of landed files.

:func:`maintain_table` runs, for one Delta table:

1. **compaction** (delta-rs ``optimize.compact``): small files of a partition are rewritten into
   bigger ones in one commit that changes no rows;
2. **vacuum**: files no version of the last ``retention_hours`` references are deleted (also the
   orphans a killed commit left); older versions can no longer be read, and :meth:`Lake.table`
   refuses them;
3. **a bounded log**: ``delta.logRetentionDuration`` is set to the same window, the table's state
   is carried forward into a commit after the maintenance commits (so the newest commit holding
   state is never one that log clean-up removes), a checkpoint is written at the latest version, and
   log entries older than the window before it are deleted (``cleanup_metadata``). Loading a table
   then reads the checkpoint plus the few commits after it, whatever the table's age.

:func:`expire_landing` deletes landing files that the landing manifest records as copied to raw
more than a given number of days ago (never a file that changed since, nor one outside the
landing zone).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import date

from pipelines.components.resources import Storage
from pipelines.lake.layout import MANIFEST, META, QUARANTINE, STATE_KEY, raw_dir
from pipelines.lake.raw import _identity
from pipelines.lake.state import state_at
from pipelines.lake.table import CommitConflict, Lake

# State fields that describe one commit (what it changed) rather than the table: a carried-forward
# state empties them, so readers of changes see that the maintenance commit changed nothing.
_PER_COMMIT = {"touched_partitions": [], "marked_stale": [], "removed_partitions": []}


@dataclass
class TableReport:
    """One table before and after maintenance (with dry_run: what would change)."""

    table: str
    files_before: int
    bytes_before: int
    files_after: int
    bytes_after: int
    compacted: int = 0  # files rewritten by compaction (dry run: files in partitions holding several)
    vacuumed: int = 0  # files deleted (dry run: that would be)
    log_entries_before: int = 0
    log_entries_after: int = 0
    checkpoint: int | None = None  # the version checkpointed


def _files(table) -> tuple[int, int, dict[str, int]]:
    """(active files, their bytes, files per partition) at the table's loaded version."""
    import pyarrow as pa

    actions = pa.table(table.get_add_actions(flatten=True)).to_pydict()
    sizes = actions.get("size_bytes", [])
    parts = [k for k in actions if k.startswith("partition.")]
    per: dict[str, int] = {}
    for i in range(len(sizes)):
        key = "|".join(str(actions[k][i]) for k in parts)
        per[key] = per.get(key, 0) + 1
    return len(sizes), int(sum(sizes)), per


def _log_entries(lake: Lake, zone: str, name: str) -> int:
    return len(lake.storage.glob(f"{zone}/{name}/_delta_log/*.json"))


def maintain_table(
    lake: Lake, zone: str, name: str, *, retention_hours: int, run_id: str, dry_run: bool
) -> TableReport | None:
    """Compact, vacuum and checkpoint one table (None when it does not exist); see the module docstring."""
    table = lake.table(zone, name)
    if table is None:
        return None
    files, size, per = _files(table)
    report = TableReport(
        f"{zone}/{name}", files, size, files, size, log_entries_before=_log_entries(lake, zone, name)
    )
    report.log_entries_after = report.log_entries_before
    if dry_run:
        report.compacted = sum(n for n in per.values() if n > 1)
        report.vacuumed = len(lake.vacuum(zone, name, retention_hours=retention_hours, dry_run=True))
        return report
    lake.write_uri(zone, name)
    metrics = lake._retrying(zone, name, lambda: lake.table(zone, name).optimize.compact())
    report.compacted = int(metrics.get("numFilesRemoved", 0))
    report.vacuumed = len(lake.vacuum(zone, name, retention_hours=retention_hours))
    report.checkpoint = _bound_log(lake, zone, name, retention_hours, run_id)
    report.files_after, report.bytes_after, _ = _files(lake.table(zone, name))
    report.log_entries_after = _log_entries(lake, zone, name)
    return report


def _bound_log(lake: Lake, zone: str, name: str, retention_hours: int, run_id: str) -> int:
    """Set the log window, carry the state to the newest commit, checkpoint it and clean the log up."""
    table = lake.table(zone, name)
    window = f"interval {retention_hours} hours"
    if table.metadata().configuration.get("delta.logRetentionDuration") != window:
        lake._retrying(
            zone,
            name,
            lambda: lake.table(zone, name).alter.set_table_properties({"delta.logRetentionDuration": window}),
        )
    for _ in range(8):
        table = lake.table(zone, name)
        if zone in (QUARANTINE, META) or STATE_KEY in (table.history(limit=1) or [{}])[0]:
            break
        state = state_at(table)
        if state is None:  # a table without pipelines state: nothing to carry
            break
        carried = {**state, **_PER_COMMIT, "run_id": run_id, "workflow": "maintain"}
        with contextlib.suppress(CommitConflict):  # a run committed meanwhile: look again
            table = lake.commit_state(zone, name, carried, table.version())
            break
    table.create_checkpoint()
    table.cleanup_metadata()
    return table.version()


# landing -------------------------------------------------------------------------------------


def expire_landing(
    landing: Storage, raw: Storage, dataset: str, *, before: date, dry_run: bool
) -> tuple[list[str], int]:
    """Delete the dataset's landing files landed into raw before ``before``; returns (removed, kept
    because they changed since landing or lie outside the landing zone)."""
    import json

    manifest_rel = f"{raw_dir(dataset)}/{MANIFEST}"
    if not raw.exists(manifest_rel):
        return [], 0
    manifest: dict[str, dict] = json.loads(raw.read_bytes(manifest_rel))
    root = landing.uri().rstrip("/") + "/"
    removed, kept, before_count = [], 0, len(manifest)
    for location, entry in sorted(manifest.items()):
        rel = entry.get("raw", "")
        day = rel.split("ingest_date=", 1)[1][:10] if "ingest_date=" in rel else ""
        if not day or day >= before.isoformat() or not raw.exists(rel):
            continue
        if not location.startswith(root):
            kept += 1
            continue
        path = location[len(root) :]
        try:
            info = landing.fs.info(landing.path(path))
        except FileNotFoundError:
            if not dry_run:
                manifest.pop(location)
            continue
        if _identity(info) != entry.get("identity"):
            kept += 1  # changed since it was landed: the next ingest lands it again
            continue
        removed.append(location)
        if not dry_run:
            landing.delete(path)
            manifest.pop(location)
    if not dry_run and len(manifest) != before_count:
        raw.write_atomic(manifest_rel, json.dumps(manifest, sort_keys=True).encode())
    return removed, kept
