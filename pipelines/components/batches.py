"""Streaming ingest: pending raw files as bounded batches of parse units, and one batch cleaned.

No Prefect and no Delta here. A *unit* is what :func:`cleaning.parse_raw` parses at once: a whole
raw file, or for a large CSV one record-aligned chunk of it (:func:`chunking.csv_chunks`). Units are
grouped into batches of about ``batch_bytes`` input bytes; the ingest workflow commits each batch
with its state, so memory stays bounded by the batch, not the input.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import polars as pl

from pipelines.components import cleaning
from pipelines.components.chunking import csv_chunks
from pipelines.components.registry import DatasetSpec
from pipelines.components.resources import Storage
from pipelines.lake import raw
from pipelines.lake.quarantine import Span

T = TypeVar("T")

DEFAULT_BATCH_BYTES = 128 * 1024 * 1024
_SEQ_FILE_BITS = 32  # _seq = file number << 32 | line: arrival order across the files of a run


@dataclass(frozen=True)
class Pending:
    """A raw file still to ingest (wholly, or from ``offset``/``line`` when a crash cut it)."""

    rel: str
    number: int
    offset: int = 0
    line: int = 2


@dataclass
class Unit:
    rel: str
    number: int
    data: bytes
    line_offset: int
    span: Span
    done: bool  # the file is fully consumed once this unit is committed
    resume: dict | None  # where the file continues otherwise: {"offset": ..., "line": ...}
    sniffed: cleaning.Sniffed | None = None  # a chunk's file as sniffed from its first bytes
    newlines: int | None = None  # line breaks in ``data`` when already counted (a chunk's)

    @property
    def size(self) -> int:
        return len(self.data)

    def consumed(self) -> Unit:
        """This unit without its bytes: what a batch waiting for its commit still needs."""
        return Unit(self.rel, self.number, b"", self.line_offset, self.span, self.done, self.resume, None)


def _chunkable(spec: DatasetSpec, rel: str) -> bool:
    encoding = str(spec.contract.source.get("encoding", "utf8")).lower().replace("-", "")
    return spec.format == "csv" and not rel.endswith(".gz") and encoding in ("utf8", "utf8sig")


def units(
    storage: Storage, spec: DatasetSpec, pending: Iterable[Pending], chunk_bytes: int
) -> Iterator[Unit]:
    """Parse units of the pending files in order: CSVs larger than ``chunk_bytes`` in record-aligned chunks."""
    quote = spec.contract.source.get("quote", '"')
    for item in pending:
        if _chunkable(spec, item.rel) and (item.offset or storage.size(item.rel) > chunk_bytes):
            with raw.read_once(storage, item.rel) as handle:
                head = handle.read(cleaning.SNIFF_BYTES)
                handle.seek(0)
                sniffed = cleaning.sniff(head, spec.contract.source.get("encoding", "utf8"), item.rel)
                chunks = csv_chunks(handle, chunk_bytes, quote=quote, start=item.offset, first_line=item.line)
                for number, chunk in enumerate(chunks):
                    # the file's first chunk also owns its whole-file (line 0) quarantine rows
                    first = 0 if number == 0 and item.offset == 0 else chunk.first_line
                    yield Unit(
                        rel=item.rel,
                        number=item.number,
                        data=chunk.data,
                        line_offset=chunk.line_offset,
                        span=Span(item.rel, first, chunk.last_line),
                        done=chunk.last,
                        resume=None if chunk.last else {"offset": chunk.end, "line": chunk.last_line + 1},
                        sniffed=sniffed,
                        newlines=chunk.newlines,
                    )
            continue
        yield Unit(
            rel=item.rel,
            number=item.number,
            data=storage.read_bytes(item.rel),
            line_offset=0,
            span=Span(item.rel),
            done=True,
            resume=None,
        )


def batches(stream: Iterable[Unit], batch_bytes: int) -> Iterator[list[Unit]]:
    """Consecutive units of about ``batch_bytes`` input bytes (at least one unit each)."""
    batch: list[Unit] = []
    size = 0
    for unit in stream:
        batch.append(unit)
        size += unit.size
        if size >= batch_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


class ReadAhead(Generic[T]):
    """Iterate ``items`` with the next one produced on a background thread while the caller works on
    the current one (reading a batch's raw bytes overlaps cleaning the batch before it).

    Exactly one item is produced ahead; an error producing it is raised where the caller asks for
    it. Use as a context manager: the thread is stopped and ``items`` closed on exit.
    """

    _END = object()

    def __init__(self, items: Iterable[T]) -> None:
        self._items = iter(items)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipelines-read-ahead")
        self._ahead: Future | None = None

    def __enter__(self) -> ReadAhead[T]:
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._ahead is not None:
                wait([self._ahead])
                self._ahead = None
            close = getattr(self._items, "close", None)
            if close is not None:
                close()
        finally:
            self._worker.shutdown(wait=True, cancel_futures=True)

    def __iter__(self) -> Iterator[T]:
        ahead = self._worker.submit(next, self._items, self._END)
        self._ahead = ahead
        while True:
            item = ahead.result()
            if item is self._END:
                self._ahead = None
                return
            ahead = self._worker.submit(next, self._items, self._END)
            self._ahead = ahead
            held = [item]
            del item
            yield held.pop()  # this frame keeps no reference: the caller's `del` frees the item


@dataclass
class Cleaned:
    """One batch parsed and cast: typed rows (duplicates collapsed), quarantine rows and the counts."""

    good: pl.DataFrame
    bad: pl.DataFrame
    rows_in: int
    rows_bad: int
    collapsed: int
    rejected_files: list[str] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)


def parse_unit(unit: Unit, spec: DatasetSpec) -> cleaning.Parsed:
    """``cleaning.parse_raw`` on one unit, with line numbers and arrival order placed in the whole file."""
    seq_base = (unit.number << _SEQ_FILE_BITS) + unit.line_offset
    parsed = cleaning.parse_raw(
        unit.data,
        unit.rel,
        spec.format,
        spec.contract,
        source=unit.rel,
        seq_base=seq_base,
        sniffed=unit.sniffed,
        line_offset=unit.line_offset,
        newlines=unit.newlines,
    )
    if unit.span.first and parsed.rejects.height:
        # a later chunk rejected whole is recorded at its first line, inside the chunk's quarantine span
        line = pl.col("source_line")
        parsed.rejects = parsed.rejects.with_columns(
            pl.when(line > 0).then(line).otherwise(pl.lit(unit.span.first, pl.Int64)).alias("source_line")
        )
    return parsed


def _empty_text_frame(spec: DatasetSpec) -> pl.DataFrame:
    """No rows, the contract's columns as text plus lineage: casts to the table's typed empty batch."""
    schema = dict.fromkeys(spec.contract.columns, pl.String)
    schema |= {cleaning.SOURCE_FILE: pl.String, cleaning.SOURCE_LINE: pl.Int64, cleaning.SEQ: pl.Int64}
    return pl.DataFrame(schema=schema)


def clean(spec: DatasetSpec, parsed: Iterable[tuple[str, cleaning.Parsed]]) -> Cleaned:
    """Concatenate parsed units, cast to the contract, collapse duplicate keys last-wins."""
    frames, rejects, rows_in = [], [], 0
    rejected: list[str] = []
    reasons: list[str] = []
    for rel, result in parsed:
        rows_in += result.rows_in
        if result.frame.width:
            frames.append(result.frame)
        if result.rejects.height:
            whole = result.rejects.filter(pl.col("source_line") == 0)
            if whole.height and rel not in rejected:
                rejected.append(rel)
                reasons.append(str(whole.get_column("reason")[0]))
            rejects.append(result.rejects)
    frame = pl.concat(frames, how="diagonal_relaxed") if frames else _empty_text_frame(spec)
    extra = [c for c in frame.columns if c not in spec.contract.columns and c not in cleaning.LINEAGE]
    if extra and spec.schema_policy == "discard_columns":
        frame = frame.drop(extra)
    cast = cleaning.cast_to_contract(frame, spec.contract, primary_key=spec.primary_key, pii=spec.pii_columns)
    rows_bad = cast.bad.height + sum(r.filter(pl.col("source_line") > 0).height for r in rejects)
    bad = pl.concat([cast.bad, *rejects], how="vertical_relaxed") if rejects else cast.bad
    good, collapsed = cleaning.collapse_duplicates(cast.good, spec.primary_key, spec.incremental_field)
    return Cleaned(good, bad, rows_in, rows_bad, collapsed, rejected, reasons, extra)


class Staged:
    """A first load's cleaned batches, held until every batch is cleaned, then committed as appends.

    Only the winners of a first load need writing: a row that a row of another batch supersedes is
    dropped instead of being merged over. Knowing which rows lose takes every batch's keys, so the
    batches are cleaned first: each batch's rows wait as an Arrow file in a local temporary folder
    (all but the newest, which stays in memory until :meth:`spill`), and a 32-bit fingerprint of each
    row's key stays in memory (4 bytes a row). :meth:`superseded` finds the fingerprints seen in more
    than one place, reads back only those rows' key, incremental field and arrival order (every key
    repeated across batches, plus the few that merely share a fingerprint), and names the losers with
    the same rule as :func:`cleaning.collapse_duplicates` (latest by the incremental field, ties to the
    later arrival), comparing the keys themselves; :meth:`frames` gives the batches back in order.

    The disk work runs on one background thread, so it overlaps the caller's work: a spilled batch is
    written while the next batch is cleaned, and :meth:`frames` reads the next batch back while the
    caller commits the current one. At most one batch is being written or read ahead at a time, and
    an error of that work is raised by the next call on this object (or on exit), never dropped.
    Use as a context manager: the thread is stopped and the folder removed on exit.
    """

    def __init__(self, primary_key: Iterable[str], incremental_field: str | None) -> None:
        self._key = list(primary_key)
        self._newer = incremental_field
        self._folder: Path | None = None
        self._frames: list[pl.DataFrame | Path] = []
        self._heights: list[int] = []
        self._prints: list[pl.Series] = []  # each batch's key fingerprints, in row order
        self._worker: ThreadPoolExecutor | None = None
        self._writing: Future | None = None  # the spill in flight
        self.broken = False  # a spill failed: the held batches are incomplete and must not be committed

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, kind, *exc) -> None:
        try:
            if self._writing is not None:
                writing, self._writing = self._writing, None
                if kind is None:
                    writing.result()  # a failed spill fails the run instead of vanishing
                else:
                    wait([writing])  # the error already on its way wins
        finally:
            if self._worker is not None:
                self._worker.shutdown(wait=True, cancel_futures=True)
                self._worker = None
            self._frames.clear()
            self._prints.clear()
            if self._folder is not None:
                shutil.rmtree(self._folder, ignore_errors=True)
                self._folder = None

    def __len__(self) -> int:
        return len(self._frames)

    def _background(self) -> ThreadPoolExecutor:
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipelines-staged")
        return self._worker

    def _settle(self) -> None:
        """Wait for the spill in flight; raises its error."""
        if self._writing is not None:
            writing, self._writing = self._writing, None
            if writing.exception() is not None:
                self.broken = True
            writing.result()

    @staticmethod
    def _write(frame: pl.DataFrame, path: Path) -> None:
        frame.write_ipc(path, compression="uncompressed")

    @staticmethod
    def _read(path: Path) -> pl.DataFrame:
        frame = pl.read_ipc(path)
        path.unlink()
        return frame

    def spill(self) -> None:
        """Move the batch held in memory to disk, in the background (call before cleaning the next batch)."""
        self._settle()
        if self._frames and isinstance(self._frames[-1], pl.DataFrame):
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="pipelines-ingest-"))
            path = self._folder / f"batch-{len(self._frames) - 1:06d}.arrow"
            self._writing = self._background().submit(self._write, self._frames[-1], path)
            self._frames[-1] = path

    def add(self, good: pl.DataFrame) -> None:
        """Hold a batch's rows to commit (with the ``_seq`` column) in memory, until :meth:`spill`."""
        self.spill()
        self._frames.append(good)
        self._heights.append(good.height)
        if self._key:
            self._prints.append(self._fingerprint(good, self._key))

    @staticmethod
    def _fingerprint(frame: pl.DataFrame, key: list[str]) -> pl.Series:
        """32 bits of the key's hash: equal keys always share a fingerprint, some unequal ones do too."""
        hashed = pl.col(key[0]).hash(seed=0) if len(key) == 1 else pl.struct(key).hash(seed=0)
        return frame.select((hashed & 0xFFFFFFFF).cast(pl.UInt32).alias("print")).to_series()

    def superseded(self) -> pl.Series:
        """``_seq`` of the held rows that a held row of another batch supersedes (empty: keys disjoint)."""
        self._settle()
        none = pl.Series(cleaning.SEQ, [], pl.Int64)
        if not self._key:
            return none
        held = [
            (item, prints)
            for item, height, prints in zip(self._frames, self._heights, self._prints, strict=True)
            if height
        ]
        self._prints = [prints.clear() for prints in self._prints]  # not needed again: free them now
        if len(held) < 2:
            return none
        # Within a batch keys are unique already, so a key held twice is held by two batches; a shared
        # fingerprint only makes the row a candidate, and the keys themselves decide below.
        every = pl.concat([prints for _, prints in held])
        ordered = every.sort()  # sorted neighbours find the shared ones ~3x faster than is_duplicated
        shared = ordered.filter(ordered == ordered.shift(1)).unique()
        del ordered
        candidates = every.is_in(shared.implode())
        del every, shared
        columns = [*self._key, *([self._newer] if self._newer else []), cleaning.SEQ]
        parts, start = [], 0
        for item, prints in held:
            mask = candidates.slice(start, prints.len())
            start += prints.len()
            if not mask.any():
                continue
            rows = pl.read_ipc(item, columns=columns) if isinstance(item, Path) else item
            parts.append(rows.select(columns).filter(mask))
            del rows
        if not parts:
            return none
        repeated = pl.concat(parts, how="vertical_relaxed")
        del parts
        key = pl.col(self._key[0]) if len(self._key) == 1 else pl.struct(self._key)
        repeated = repeated.filter(key.is_duplicated())
        if not repeated.height:
            return none
        kept, _ = cleaning.collapse_duplicates(repeated, tuple(self._key), self._newer)
        return repeated.join(kept.select(cleaning.SEQ), on=cleaning.SEQ, how="anti").get_column(cleaning.SEQ)

    def frames(self) -> Iterator[pl.DataFrame]:
        """The held batches in order (each read back from disk when it was moved there); the next one
        is read in the background while the caller works on the current one."""
        self._settle()

        def load(index: int) -> Future | pl.DataFrame | None:
            if index >= len(self._frames):
                return None
            item = self._frames[index]
            return self._background().submit(self._read, item) if isinstance(item, Path) else item

        ahead = load(0)
        try:
            for index in range(len(self._frames)):
                held = [ahead.result() if isinstance(ahead, Future) else ahead]
                self._frames[index] = pl.DataFrame()
                ahead = load(index + 1)
                yield held.pop()  # this frame keeps no reference: the caller's `del` frees the batch
        finally:
            if isinstance(ahead, Future):
                wait([ahead])  # the caller stopped early: let the read finish before the folder goes
