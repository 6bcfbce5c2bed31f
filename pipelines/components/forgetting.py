"""The steps of forgetting one subject, zone by zone; the ``forget`` workflow wires them.

Each step finds the subject's rows by hash (:class:`~pipelines.components.erasure.Subject`) and
either counts them (``dry_run``) or removes them, and is idempotent: run again, it finds nothing
left and removes nothing, which is how an interrupted request resumes. Values found are held in
memory only, never logged or returned.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import polars as pl

from pipelines.components.erasure import Subject, match_raw, without_records
from pipelines.components.errors import PipelinesError
from pipelines.components.registry import DatasetSpec, Registry
from pipelines.lake import CommitConflict, Lake
from pipelines.lake import erasure as lake_erasure
from pipelines.lake.layout import AGGREGATED, CLEANED, META, QUARANTINE

_ATTEMPTS = 5


@dataclass
class StepOutcome:
    rows: int = 0
    tables: list[str] = field(default_factory=list)  # "zone/name" of the Delta tables rewritten
    partitions: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    lines: dict[str, list[int]] = field(
        default_factory=dict
    )  # raw file -> first lines of the records removed


class ForgetError(PipelinesError):
    """A forget request could not run (nothing of that step was changed)."""


def zone_of(spec: DatasetSpec) -> str:
    return CLEANED if spec.stage == "cleaned" else AGGREGATED


def in_scope(registry: Registry, names: Iterable[str] | None) -> list[DatasetSpec]:
    """The datasets to search: those named (each must declare a subject_key), or every one that declares one."""
    if names:
        specs = [registry.get(n) for n in names]
        missing = [s for s in specs if not s.subject_key]
        if missing:
            raise ForgetError(
                "Dataset(s) "
                + ", ".join(f"{s.name!r} (registry row {s.row})" for s in missing)
                + " declare no subject_key, so forget cannot tell whose rows they hold. Fix: set subject_key "
                "(and pii_columns) in the registry (docs/privacy.md), or leave them out of --dataset."
            )
        return specs
    return [s for s in registry.datasets.values() if s.subject_key]


def downstream(registry: Registry, changed: Iterable[str]) -> list[DatasetSpec]:
    """Aggregated datasets built (directly or not) from ``changed``, in build order."""
    reached, order = set(changed), []
    specs = list(registry.datasets.values())
    progress = True
    while progress:
        progress = False
        for spec in specs:
            if spec.stage == "aggregated" and spec.name not in reached and reached & set(spec.inputs):
                reached.add(spec.name)
                order.append(spec)
                progress = True
    return order


# raw ------------------------------------------------------------------------------------------


def raw(lake: Lake, spec: DatasetSpec, subject: Subject, *, dry_run: bool) -> StepOutcome:
    """The subject's records in the dataset's raw files; each affected file rewritten in place."""
    outcome = StepOutcome()
    partial = (lake.state(CLEANED, spec.name) or {}).get("partial") or {} if spec.stage == "cleaned" else {}
    for rel in lake_erasure.raw_files(lake.storage, spec.name):
        data = lake.storage.read_bytes(rel)
        found = match_raw(data, rel, spec, subject)
        if not found.lines:
            continue
        if rel in partial and not dry_run:
            raise ForgetError(
                f"{rel} is only partly ingested (an ingest of {spec.name!r} stopped inside it), and removing "
                "records from it would move the place the next ingest resumes from. Nothing was removed from "
                f"it. Fix: run `pipelines ingest {spec.name}` to finish it, then run the same forget again "
                "(it resumes)."
            )
        outcome.rows += len(found.lines)
        outcome.files.append(rel)
        outcome.lines[rel] = found.lines
        if not dry_run:
            lake_erasure.replace_raw_file(lake.storage, rel, without_records(data, rel, spec, found.lines))
    return outcome


# cleaned and aggregated ---------------------------------------------------------------------------


def keyed(
    lake: Lake, spec: DatasetSpec, subject: Subject, *, dry_run: bool, run_id: str, request_id: str
) -> StepOutcome:
    """The subject's rows of a cleaned or aggregated table (by ``subject_key``), removed in one commit."""
    zone = zone_of(spec)
    for attempt in range(1, _ATTEMPTS + 1):
        table, values = lake_erasure.matching_values(
            lake, zone, spec.name, spec.subject_key, subject.matching
        )
        if dry_run or not values:
            rows, partitions = lake_erasure.count_rows(lake, zone, spec.name, table, spec.subject_key, values)
            return StepOutcome(rows=rows, partitions=partitions if dry_run else [])
        try:
            rows, touched = lake_erasure.erase_keyed(
                lake, zone, spec.name, table, spec.subject_key, values, run_id=run_id, request_id=request_id
            )
        except CommitConflict:
            if attempt == _ATTEMPTS:
                raise ForgetError(
                    f"{zone}/{spec.name}: {_ATTEMPTS} attempts in a row lost to concurrent commits; nothing of "
                    "this table was changed. Run the same forget again when the other runs have finished."
                ) from None
            continue
        return StepOutcome(rows=rows, tables=[f"{zone}/{spec.name}"], partitions=touched)
    raise AssertionError("unreachable")


# quarantine and _meta ---------------------------------------------------------------------------


def quarantine(
    lake: Lake, spec: DatasetSpec, subject: Subject, raw_lines: dict[str, list[int]], *, dry_run: bool
) -> StepOutcome:
    """Quarantine rows whose record holds the subject's identifier as a field, or that came from the
    raw records the raw step removed."""

    def mask(frame: pl.DataFrame) -> pl.Series:
        hits = (
            subject.text_mask(frame, "record")
            if "record" in frame.columns
            else pl.Series([False] * frame.height)
        )
        if raw_lines and "source_file" in frame.columns:
            pairs = {(f, n) for f, lines in raw_lines.items() for n in lines}
            origin = [
                (f, n) in pairs
                for f, n in zip(frame["source_file"].to_list(), frame["source_line"].to_list(), strict=True)
            ]
            hits = hits | pl.Series(origin, dtype=pl.Boolean)
        if "reason" in frame.columns:
            hits = hits | subject.text_mask(frame, "reason")
        return hits

    if not lake.exists(QUARANTINE, spec.name):
        return StepOutcome()
    rows = lake_erasure.erase_grouped(lake, QUARANTINE, spec.name, mask, "source_file", dry_run=dry_run)
    return StepOutcome(rows=rows, tables=[f"{QUARANTINE}/{spec.name}"] if rows and not dry_run else [])


def meta(lake: Lake, subject: Subject, *, dry_run: bool) -> StepOutcome:
    """``_meta`` rows (e.g. sample values in _meta/validations) that hold the identifier in a text column."""
    outcome = StepOutcome()
    for name in lake_erasure.meta_tables(lake):
        columns = lake_erasure.text_columns(lake, META, name)
        if not columns:
            continue

        def mask(frame: pl.DataFrame, columns=columns) -> pl.Series:
            hits = pl.Series([False] * frame.height)
            for column in columns:
                hits = hits | subject.text_mask(frame, column)
            return hits

        rows = lake_erasure.erase_grouped(lake, META, name, mask, "run_id", dry_run=dry_run)
        outcome.rows += rows
        if rows and not dry_run:
            outcome.tables.append(f"{META}/{name}")
    return outcome
