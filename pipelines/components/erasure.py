"""Recognising one data subject's records without holding their identifier in the clear.

A subject is named by a keyed hash of their identifier: ``HMAC-SHA256(salt, id)`` (hex). The CLI
hashes the identifier it is given; everything after it (flow parameters, results, logs, the
erasure ledger) carries only that hash. A value in the data belongs to the subject when its own
hash is the same, so a dataset's ``subject_key`` column is matched by hashing its distinct values,
and free text (a quarantined record, a list of sample values) by hashing each field it holds.

The salt is the secret ``PIPELINES_ERASURE_SALT`` (Prefect Secret block, environment or .env; see
:mod:`pipelines.components.secrets`). Only the namespace ``local`` may do without it: a random salt
is then generated once and kept at the destination (``_meta/erasure.salt``). See docs/privacy.md.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import hmac
import io
import json
import re
import secrets as _random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from pipelines.components import cleaning
from pipelines.components.errors import ConfigError
from pipelines.components.registry import DatasetSpec

SALT_SECRET = "PIPELINES_ERASURE_SALT"
LOCAL_SALT_FILE = "_meta/erasure.salt"
_SEPARATORS = (",", ";", "\t", "|")
_PIECES = re.compile(r"[,;|\t\"'{}\[\]=()<>\n\r]+")


def normalise(value: Any) -> str:
    """How an identifier is compared: its text with surrounding white space removed."""
    return str(value).strip()


def subject_hash(salt: str, subject_id: str) -> str:
    """The keyed hash that names a subject (the same identifier and salt always give the same hash)."""
    return hmac.new(salt.encode(), normalise(subject_id).encode(), hashlib.sha256).hexdigest()


def load_salt(namespace: str, storage) -> str:
    """The erasure salt: the secret, or (namespace ``local`` only) a salt kept at the destination."""
    from pipelines.components.secrets import find_secret

    found = find_secret(SALT_SECRET)
    if found is not None:
        return found.reveal()
    if namespace != "local":
        raise ConfigError(
            f"The secret {SALT_SECRET} is not set, and namespace {namespace!r} needs it to name a data "
            "subject by a keyed hash (the erasure ledger must not hold identifiers that anyone with the data "
            "could confirm by hashing a guess). Fix: create the Prefect Secret block "
            f"'{SALT_SECRET.lower().replace('_', '-')}' or set the environment variable {SALT_SECRET} to a "
            "long random value (e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`), the same "
            "for every run of this namespace. Changing it later makes earlier requests unrecognisable."
        )
    if storage.exists(LOCAL_SALT_FILE):
        return storage.read_bytes(LOCAL_SALT_FILE).decode().strip()
    salt = _random.token_hex(32)
    storage.write_atomic(LOCAL_SALT_FILE, salt.encode())
    return salt


def pseudonym_hash(salt: str, subject_id: str) -> str | None:
    """The keyed hash of the pseudonym retention gives the identifier (None without the retention key),
    so rows whose ``subject_key`` retention already pseudonymised are found too (docs/lifecycle.md)."""
    from pipelines.components.secrets import find_secret
    from pipelines.lake.retention import PSEUDONYM_KEY, pseudonym

    key = find_secret(PSEUDONYM_KEY)
    if key is None:
        return None
    return subject_hash(salt, pseudonym(key.reveal().encode("utf-8"), normalise(subject_id)))


def _check_hash(value: str) -> None:
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ConfigError(
            f"{value[:80]!r} is not a subject hash (64 lower-case hex digits, as `pipelines forget` "
            "computes from the identifier); pass the hash, never the identifier, to the forget flow."
        )


@dataclass
class Subject:
    """One subject, by hash (and the hash of their retention pseudonym, if any); :meth:`matching` finds
    the values among many that are theirs."""

    hash: str
    salt: str = field(repr=False)
    also: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for value in (self.hash, *self.also):
            _check_hash(value)

    def matches(self, value: Any) -> bool:
        if value is None:
            return False
        found = subject_hash(self.salt, value)
        return any(hmac.compare_digest(found, h) for h in (self.hash, *self.also))

    def matching(self, values: Iterable[Any]) -> set[str]:
        """The distinct values (as text) that are this subject's identifier."""
        return {normalise(v) for v in {normalise(v) for v in values if v is not None} if self.matches(v)}

    def column_mask(self, frame: pl.DataFrame, column: str) -> pl.Series:
        """True on the rows whose ``column`` holds the subject's identifier."""
        text = frame.get_column(column).cast(pl.String).str.strip_chars()
        found = self.matching(text.unique().drop_nulls().to_list())
        return text.is_in(sorted(found)).fill_null(False) if found else pl.Series([False] * frame.height)

    def text_mask(self, frame: pl.DataFrame, column: str) -> pl.Series:
        """True on the rows whose free text ``column`` (a record, a JSON list) holds the identifier as a field."""
        hits = [any(self.matches(t) for t in tokens(v)) for v in frame.get_column(column).to_list()]
        return pl.Series(hits, dtype=pl.Boolean)


def tokens(text: Any) -> set[str]:
    """The field values a piece of text holds: JSON values, or CSV fields with a common separator."""
    if text is None:
        return set()
    text = str(text)
    found = {text.strip()}
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if value is not None:
        found |= set(_json_values(value))
        if isinstance(value, dict | list):
            return {t for t in found if t}
    # a record that is neither (a broken line): the runs between separators and quotes
    found |= {t.strip() for t in _PIECES.split(text)}
    for separator in _SEPARATORS:
        if separator in text:
            try:
                for row in csv.reader(io.StringIO(text), delimiter=separator):
                    found |= {f.strip() for f in row}
            except csv.Error:
                found |= {f.strip().strip('"') for f in text.split(separator)}
    return {t for t in found if t}


def _json_values(value: Any) -> Iterable[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _json_values(item)
    elif isinstance(value, list):
        for item in value:
            yield from _json_values(item)
    elif value is not None:
        yield normalise(value)
        if isinstance(value, str):  # a JSON string that is itself a record (a quarantined line)
            yield from (t for t in tokens(value) if t != normalise(value))


# raw files -------------------------------------------------------------------------------------


@dataclass
class RawMatch:
    """The records of one raw file that belong to the subject: their first lines (or record numbers)."""

    rel: str
    lines: list[int]
    records: int  # every record the file holds


def match_raw(data: bytes, rel: str, spec: DatasetSpec, subject: Subject) -> RawMatch:
    """Which records of a raw file are the subject's (by ``subject_key``, or by any field of an unparsed record)."""
    parsed = cleaning.parse_raw(data, rel, spec.format, spec.contract, source=rel)
    lines: set[int] = set()
    frame = parsed.frame
    if frame.height and spec.subject_key in frame.columns:
        mask = subject.column_mask(frame, spec.subject_key)
        lines |= set(frame.filter(mask).get_column(cleaning.SOURCE_LINE).to_list())
    rejects = parsed.rejects.filter(pl.col("source_line") > 0)
    if rejects.height:
        lines |= set(rejects.filter(subject.text_mask(rejects, "record")).get_column("source_line").to_list())
    return RawMatch(rel, sorted(int(n) for n in lines), parsed.rows_in)


def record_starts(data: bytes, rel: str, spec: DatasetSpec) -> list[int]:
    """The first line of every record of a text raw file (rejected ones included), in order."""
    parsed = cleaning.parse_raw(data, rel, spec.format, spec.contract, source=rel)
    starts = set()
    if parsed.frame.height:
        starts |= set(parsed.frame.get_column(cleaning.SOURCE_LINE).to_list())
    starts |= set(parsed.rejects.filter(pl.col("source_line") > 0).get_column("source_line").to_list())
    return sorted(int(s) for s in starts)


def without_records(data: bytes, rel: str, spec: DatasetSpec, lines: list[int]) -> bytes:
    """The raw file's bytes without the records that start on ``lines`` (record numbers for JSON, rows
    for parquet). Every other byte of a CSV or NDJSON file is kept as it was (encoding, BOM, line ends);
    a JSON file is written again as a list; a ``.gz`` file is compressed again."""
    drop = set(lines)
    if not drop:
        return data
    compressed = rel.endswith(".gz")
    body = gzip.decompress(data) if compressed else data
    if spec.format in ("csv", "ndjson"):
        out = _without_lines(body, rel.removesuffix(".gz"), spec, drop)
    elif spec.format == "json":
        out = _without_json_records(body, spec, drop)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(body))
        keep = [i for i in range(table.num_rows) if i + 1 not in drop]
        sink = io.BytesIO()
        pq.write_table(table.take(pa.array(keep, type=pa.int64())), sink)
        out = sink.getvalue()
    return gzip.compress(out, mtime=0) if compressed else out


def _without_lines(body: bytes, rel: str, spec: DatasetSpec, drop: set[int]) -> bytes:
    sniffed = cleaning.sniff(body[: cleaning.SNIFF_BYTES], spec.contract.source.get("encoding", "utf8"), rel)
    if sniffed.problem:
        raise ValueError(sniffed.problem)
    text = body[len(sniffed.bom) :].decode(sniffed.encoding)
    physical = text.split(sniffed.newline)
    starts = record_starts(body, rel, spec)
    removed: set[int] = set()
    for index, start in enumerate(starts):
        if start in drop:
            end = starts[index + 1] if index + 1 < len(starts) else len(physical) + 1
            removed |= set(range(start, end))
    kept = [line for number, line in enumerate(physical, start=1) if number not in removed]
    if text.endswith(sniffed.newline) and (not kept or kept[-1] != ""):
        kept.append("")
    return sniffed.bom + sniffed.newline.join(kept).encode(sniffed.encoding)


def _without_json_records(body: bytes, spec: DatasetSpec, drop: set[int]) -> bytes:
    text = body.decode("utf-8-sig")
    value = json.loads(text)
    holder, key = None, None
    path = spec.contract.source.get("records_path")
    target = value
    for part in str(path).split(".") if path else ():
        holder, key, target = target, part, target[part]
    if isinstance(target, dict):
        target = [] if 1 in drop else [target]
    else:
        target = [r for n, r in enumerate(target, start=1) if n not in drop]
    if holder is None:
        value = target
    else:
        holder[key] = target
    return json.dumps(value, ensure_ascii=False).encode()
