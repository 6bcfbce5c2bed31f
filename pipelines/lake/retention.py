"""PII expiry in the raw and quarantine zones: a dataset's ``retention_days`` and ``retention_action``.

Raw files landed more than ``retention_days`` before the run's ``as_of`` day have the dataset's
``pii_columns`` replaced in place (see docs/lifecycle.md):

- ``pseudonymise``: each value becomes ``pn:`` + HMAC-SHA256(key, value as text in the file), hex;
  the same value gives the same pseudonym in every file and dataset, so joins on it still work.
  The key is the secret :data:`PSEUDONYM_KEY`; a value that already is a pseudonym is left alone.
- ``null``: each value becomes the contract's null text (CSV) or null (JSON, parquet).
- ``delete``: the file's content is removed (a zero-byte file stays under the same name).

A raw file keeps its name, so the content hash in it (the hash of the bytes as they arrived), the
landing manifest and the cleaned table's ledger still name it: it is not landed or ingested again,
and reprocessing from raw reads the rewritten bytes (every other column unchanged). Rewrites are
atomic (written beside, then moved over). Files done are listed in ``raw/<dataset>/_expired.json``,
so a daily run reads only files that crossed the line since. Quarantine rows quarantined before the
same cutoff have the PII fields of their ``record`` replaced the same way (a record that is not a
JSON object, e.g. an unparseable line, is dropped), or are deleted with ``delete``.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import gzip
import hashlib
import hmac
import io
import json
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import BinaryIO

import polars as pl

from pipelines.components.errors import PipelinesError, SecretNotFoundError
from pipelines.components.registry import DatasetSpec
from pipelines.components.resources import Storage
from pipelines.lake.layout import EXPIRED, QUARANTINE, raw_dir, raw_glob
from pipelines.lake.table import Lake

PSEUDONYM_KEY = "PIPELINES_PSEUDONYM_KEY"
PREFIX = "pn:"
_PSEUDONYM_RE = re.compile(r"^pn:[0-9a-f]{64}$")
_DAY_RE = re.compile(r"/ingest_date=(\d{4}-\d{2}-\d{2})/")
_MIN_KEY = 32
_BLOCK = 1 << 20


class RetentionKeyError(PipelinesError):
    """The pseudonymisation key is missing or too short."""


def load_key(spec_names: Iterable[str], lookup: Callable[[str], object] | None = None) -> bytes:
    """The pseudonymisation key (secret :data:`PSEUDONYM_KEY`), or an error naming the fix."""
    from pipelines.components.secrets import get_secret

    names = ", ".join(sorted(spec_names))
    fix = (
        f"create one with `python -c 'import secrets; print(secrets.token_hex(32))'` and store it as the Prefect "
        f"Secret block '{PSEUDONYM_KEY.lower().replace('_', '-')}' (deployed namespaces) or the environment variable "
        f"or .env entry {PSEUDONYM_KEY} (local runs). Keep it: a new key gives new pseudonyms, and joins with values "
        "pseudonymised before stop matching."
    )
    try:
        secret = (lookup or get_secret)(PSEUDONYM_KEY)
    except SecretNotFoundError as exc:
        raise RetentionKeyError(
            f"Retention pseudonymises the PII columns of {names} and needs the key {PSEUDONYM_KEY}. {exc} Fix: {fix}"
        ) from None
    value = secret.reveal()
    if len(value) < _MIN_KEY:
        raise RetentionKeyError(
            f"The key {PSEUDONYM_KEY} ({secret.source}) has {len(value)} characters; retention needs at least "
            f"{_MIN_KEY} so pseudonyms cannot be guessed by hashing candidate values. Fix: {fix}"
        )
    return value.encode("utf-8")


def pseudonym(key: bytes, value: str) -> str:
    """``pn:`` + HMAC-SHA256 of the value's UTF-8 text under ``key``, in hex (a pseudonym is kept as is)."""
    if _PSEUDONYM_RE.match(value):
        return value
    return PREFIX + hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Rule:
    """What expiry does to one dataset: its action, PII columns and (pseudonymise) key."""

    dataset: str
    action: str
    columns: tuple[str, ...]
    key: bytes | None = None
    null_text: str = ""

    @classmethod
    def of(cls, spec: DatasetSpec, key: bytes | None) -> Rule:
        nulls = spec.contract.null_values
        return cls(
            spec.name,
            spec.retention_action or "pseudonymise",
            spec.pii_columns,
            key if spec.retention_action in (None, "pseudonymise") else None,
            "" if "" in nulls or not nulls else nulls[0],
        )

    def text(self, value: str) -> str:
        """A CSV cell's new text."""
        if self.action == "null" or value == self.null_text:
            return self.null_text
        return pseudonym(self.key, value)

    def value(self, value):
        """A JSON value's replacement."""
        if self.action == "null" or value is None:
            return None
        return pseudonym(self.key, value if isinstance(value, str) else json.dumps(value))


def cutoff(as_of: date, days: int) -> date:
    """Files landed (rows quarantined) before this day are expired on ``as_of``."""
    return as_of - timedelta(days=days)


# raw -----------------------------------------------------------------------------------------


@dataclass
class RawExpiry:
    """What expiry did (or, dry, would do) to one dataset's raw files."""

    expired: list[str] = field(default_factory=list)  # rewritten or emptied now
    already: int = 0  # expired by an earlier run
    kept_partial: list[str] = field(default_factory=list)  # ingest stopped inside them: next run
    unreadable: list[str] = field(default_factory=list)  # could not be parsed: emptied instead
    bytes_before: int = 0
    bytes_after: int = 0


def expire_raw(
    storage: Storage, spec: DatasetSpec, rule: Rule, *, before: date, partial: Iterable[str], dry_run: bool
) -> RawExpiry:
    """Apply ``rule`` to the dataset's raw files landed before ``before`` (see the module docstring).

    CSV and NDJSON files are streamed (memory stays flat whatever their size); a dry run only lists.
    """
    record_rel = f"{raw_dir(spec.name)}/{EXPIRED}"
    done: dict[str, dict] = {}
    if storage.exists(record_rel):
        with contextlib.suppress(
            ValueError
        ):  # a damaged record only costs re-reading: rewrites are idempotent
            done = dict(json.loads(storage.read_bytes(record_rel)))
    partial = set(partial)
    out = RawExpiry()
    for rel in storage.glob(raw_glob(spec.name)):
        match = _DAY_RE.search("/" + rel)
        if rel.rsplit("/", 1)[-1].startswith(".") or not match or match.group(1) >= before.isoformat():
            continue
        if done.get(rel, {}).get("action") == rule.action:
            out.already += 1
            continue
        if rel in partial:
            out.kept_partial.append(rel)
            continue
        out.expired.append(rel)
        out.bytes_before += storage.size(rel)
        if dry_run:
            continue
        written = [0]
        try:
            if rule.action == "delete":
                storage.write_atomic(rel, b"")
            else:
                storage.write_atomic(
                    rel, _counted(_rewritten(lambda r=rel: storage.open(r), rel, spec, rule), written)
                )
        except _Unreadable:
            storage.write_atomic(rel, b"")
            written[0] = 0
            out.unreadable.append(rel)
        out.bytes_after += written[0]
        done[rel] = {"action": rule.action, "columns": list(rule.columns)}
    if out.expired and not dry_run:
        storage.write_atomic(record_rel, json.dumps(done, sort_keys=True).encode())
    return out


def _counted(blocks: Iterator[bytes], total: list[int]) -> Iterator[bytes]:
    for block in blocks:
        total[0] += len(block)
        yield block


class _Unreadable(Exception):
    """The bytes cannot be parsed, so the PII in them cannot be found."""


# What parsing a damaged file raises (a storage error is not one: it fails the run, nothing changed).
_PARSE_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error, UnicodeError, csv.Error)


def rewrite(data: bytes, name: str, spec: DatasetSpec, rule: Rule) -> bytes:
    """The raw file's bytes with the rule applied to its PII columns (same format, encoding, compression)."""
    return b"".join(_rewritten(lambda: io.BytesIO(data), name, spec, rule))


def _rewritten(
    open_file: Callable[[], BinaryIO], name: str, spec: DatasetSpec, rule: Rule
) -> Iterator[bytes]:
    """The rewritten bytes of a raw file, in blocks; raises _Unreadable when they cannot be parsed."""
    fmt = "parquet" if spec.format == "sql" or name.endswith(".parquet") else spec.format
    zipped = name.endswith(".gz")
    try:
        with open_file() as handle:
            binary = gzip.GzipFile(fileobj=handle, mode="rb") if zipped else handle
            if fmt in ("csv", "ndjson"):
                blocks = _csv(binary, spec, rule) if fmt == "csv" else _ndjson(binary, rule)
            else:
                data = binary.read()
                if fmt == "json":
                    blocks = iter([_json(data, spec, rule)] if data.strip() else [data])
                elif fmt == "parquet":
                    blocks = iter([_parquet(data, rule)] if data.strip() else [data])
                else:
                    raise _Unreadable(f"format {fmt}")
            if not zipped:
                yield from blocks
                return
            packer = zlib.compressobj(6, zlib.DEFLATED, 31)  # gzip framing
            for block in blocks:
                if packed := packer.compress(block):
                    yield packed
            yield packer.flush()
    except _PARSE_ERRORS as exc:
        raise _Unreadable(f"{type(exc).__name__}: {exc}") from None


def _csv(binary: BinaryIO, spec: DatasetSpec, rule: Rule) -> Iterator[bytes]:
    from pipelines.components.cleaning import SNIFF_BYTES, sniff

    source = spec.contract.source
    head = binary.read(SNIFF_BYTES)
    if not head.strip():
        yield head + binary.read()
        return
    sniffed = sniff(head, source.get("encoding", "utf8"))
    if sniffed.problem:
        raise _Unreadable(sniffed.problem)
    binary.seek(len(sniffed.bom))
    text = io.TextIOWrapper(binary, encoding=sniffed.encoding, newline="")
    encoder = codecs.getincrementalencoder(sniffed.encoding)()
    delimiter = str(source.get("delimiter", ","))
    quote = source.get("quote", '"')
    dialect = {"delimiter": delimiter}
    dialect |= {"quotechar": str(quote)} if quote else {"quoting": csv.QUOTE_NONE, "escapechar": "\\"}
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator=sniffed.newline, **dialect)
    targets: list[int] = []
    yield sniffed.bom
    for number, row in enumerate(csv.reader(text, **dialect)):
        if number == 0:
            targets = [i for i, c in enumerate(row) if c.strip() in rule.columns]
        else:
            for i in targets:
                if i < len(row):
                    row[i] = rule.text(row[i])
        writer.writerow(row)
        if out.tell() >= _BLOCK:
            yield encoder.encode(out.getvalue())
            out.seek(0)
            out.truncate()
    yield encoder.encode(out.getvalue(), final=True)
    text.detach()


def _record(obj: dict, rule: Rule) -> dict:
    return {k: (rule.value(v) if k in rule.columns else v) for k, v in obj.items()}


def _ndjson(binary: BinaryIO, rule: Rule) -> Iterator[bytes]:
    text = io.TextIOWrapper(binary, encoding="utf-8", errors="replace", newline="")
    out = io.StringIO()
    for line in text:
        body = line.rstrip("\r\n")
        end = line[len(body) :]
        if not body.strip():
            out.write(line)
        else:
            try:
                obj = json.loads(body)
            except ValueError:
                obj = None
            # A line that is not a JSON object cannot be searched for the PII fields: it goes (blank line).
            out.write(
                (json.dumps(_record(obj, rule), ensure_ascii=False) if isinstance(obj, dict) else "") + end
            )
        if out.tell() >= _BLOCK:
            yield out.getvalue().encode("utf-8")
            out.seek(0)
            out.truncate()
    yield out.getvalue().encode("utf-8")
    text.detach()


def _json(data: bytes, spec: DatasetSpec, rule: Rule) -> bytes:
    try:
        value = json.loads(data.decode("utf-8-sig"))
    except ValueError as exc:
        raise _Unreadable(str(exc)) from None
    path = spec.contract.source.get("records_path")
    holder, key = None, None
    records = value
    for part in str(path).split(".") if path else []:
        if not isinstance(records, dict) or part not in records:
            raise _Unreadable(f"records_path {path!r} not found")
        holder, key, records = records, part, records[part]
    if isinstance(records, dict):
        records = _record(records, rule)
    elif isinstance(records, list):
        records = [_record(r, rule) if isinstance(r, dict) else None for r in records]
    else:
        raise _Unreadable("not a list of records")
    if holder is None:
        value = records
    else:
        holder[key] = records
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def _parquet(data: bytes, rule: Rule) -> bytes:
    try:
        frame = pl.read_parquet(io.BytesIO(data))
    except Exception as exc:
        raise _Unreadable(str(exc)) from None
    changes = []
    for name in rule.columns:
        if name not in frame.columns:
            continue
        if rule.action == "null":
            changes.append(pl.lit(None, frame.schema[name]).alias(name))
        else:
            key = rule.key
            changes.append(
                pl.col(name)
                .cast(pl.String)
                .map_elements(lambda v, key=key: pseudonym(key, v), return_dtype=pl.String)
                .alias(name)
            )
    out = io.BytesIO()
    frame.with_columns(changes).write_parquet(out)
    return out.getvalue()


# quarantine ----------------------------------------------------------------------------------


def _expire_record(text: str | None, rule: Rule) -> str | None:
    if text is None:
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None  # the raw text of a line that did not parse: PII cannot be found in it
    if not isinstance(obj, dict):
        return None
    return json.dumps(_record(obj, rule), ensure_ascii=False, separators=(",", ":"))


def expire_quarantine(lake: Lake, rule: Rule, *, before: date, dry_run: bool) -> int:
    """Apply ``rule`` to the dataset's quarantine rows quarantined before ``before``; returns rows changed."""
    table = lake.table(QUARANTINE, rule.dataset)
    if table is None:
        return 0
    moment = datetime.combine(before, time(), tzinfo=UTC)
    predicate = f"quarantined_at < '{moment.isoformat().replace('+00:00', 'Z')}'"
    old = lake.scan(QUARANTINE, rule.dataset, table=table).filter(pl.col("quarantined_at") < moment).collect()
    if old.height == 0:
        return 0
    if rule.action == "delete":
        if not dry_run:
            lake.replace_where(QUARANTINE, rule.dataset, old.head(0), predicate)
        return old.height
    pii = set(rule.columns)
    names_pii = (
        pl.col("column").fill_null("").str.split("|").list.eval(pl.element().is_in(sorted(pii))).list.any()
    )
    new = old.with_columns(
        pl.col("record").map_elements(lambda t: _expire_record(t, rule), return_dtype=pl.String),
        pl.when(names_pii)
        .then(
            pl.concat_str([pl.col("rule"), pl.lit(": reason removed by retention (it may show a PII value)")])
        )
        .otherwise(pl.col("reason"))
        .alias("reason"),
    )
    differs = ~new.get_column("record").eq_missing(old.get_column("record")) | ~new.get_column(
        "reason"
    ).eq_missing(old.get_column("reason"))
    changed = int(differs.sum())
    if changed and not dry_run:
        lake.replace_where(QUARANTINE, rule.dataset, new, predicate)
    return changed
