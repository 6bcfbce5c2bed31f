"""Pure polars functions that turn what arrived into typed rows and quarantined rows.

No Prefect here. The ingest workflow wires them: :func:`parse_raw` (bytes -> text columns
with lineage), :func:`cast_to_contract` (text -> contract types, every failure kept with a
reason), :func:`collapse_duplicates` (last-wins on the primary key).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field

import polars as pl

from pipelines.components.chunking import count_newlines
from pipelines.components.registry import ColumnSpec, Contract

SOURCE_FILE = "_source_file"
SOURCE_LINE = "_source_line"
SEQ = "_seq"
PARTITION = "_partition"
LINEAGE = (SOURCE_FILE, SOURCE_LINE, SEQ)

QUARANTINE_SCHEMA = {
    "source_file": pl.String,
    "source_line": pl.Int64,
    "column": pl.String,
    "rule": pl.String,
    "reason": pl.String,
    "record": pl.String,
}

_DEFAULT_DATETIME_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)
_DEFAULT_DATE_FORMATS = ("%Y-%m-%d",)


def empty_quarantine() -> pl.DataFrame:
    return pl.DataFrame(schema=QUARANTINE_SCHEMA)


def _rejects_frame(rejects: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rejects, schema=QUARANTINE_SCHEMA) if rejects else empty_quarantine()


@dataclass
class Parsed:
    """One raw file (or one record-aligned chunk of it) parsed to text columns, plus what could not be parsed.

    Every record the bytes hold is accounted for: ``rows_in`` == frame rows + rejects with a line
    number (> 0). A reject with line 0 rejects the whole input and carries the reason. ``lines`` is the
    number of physical lines read (header included) and ``blank_lines`` those that held no record, so
    for CSV ``lines`` == header lines + lines of the records + ``blank_lines``.
    """

    frame: pl.DataFrame
    rejects: pl.DataFrame = field(default_factory=empty_quarantine)
    rows_in: int = 0
    lines: int = 0
    blank_lines: int = 0


def _reject(source: str, line: int, rule: str, reason: str, record: str = "", column: str = "") -> dict:
    return {
        "source_file": source,
        "source_line": line,
        "column": column,
        "rule": rule,
        "reason": reason,
        "record": record,
    }


# sniffing and decoding -----------------------------------------------------------------------

SNIFF_BYTES = 64 * 1024
"""How many leading bytes :func:`sniff` needs to decide a file's BOM, encoding and line endings."""

_BOMS = (  # UTF-32 first: the UTF-32LE mark starts with the UTF-16LE one
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xfe\xff", "utf-16-be"),
    (b"\xff\xfe", "utf-16-le"),
)


@dataclass(frozen=True)
class Sniffed:
    """How to read a text file, decided once from its first bytes (see :func:`sniff`).

    ``encoding`` is a Python codec name, ``bom`` the byte-order mark the file starts with (b"" if
    none), ``newline`` one of "\\n", "\\r\\n", "\\r"; ``problem`` says why the file cannot be read
    as text at all (then the file is rejected whole with that reason).
    """

    encoding: str
    bom: bytes = b""
    newline: str = "\n"
    problem: str | None = None


def codec_name(encoding: str | None) -> str:
    """The Python codec for a contract's ``source.encoding`` (utf8, UTF-16LE, latin-1, cp1252, ...).

    Raises LookupError for a name Python does not know.
    """
    name = str(encoding or "utf8").strip().lower()
    unicode = re.fullmatch(r"utf[-_ ]?(8|16|32)[-_ ]?(le|be|sig)?", name)
    if unicode:
        size, suffix = unicode.groups()
        return "utf-8" if size == "8" else f"utf-{size}" + (f"-{suffix}" if suffix in ("le", "be") else "")
    return codecs.lookup(name).name


def _wide_text_guess(head: bytes) -> tuple[str, str] | None:
    """(what, contract value) when NUL bytes sit between the characters as in UTF-16/32 without a BOM."""
    sample = head[:4096]
    quarter = len(sample) // 4
    if quarter < 2 or sample.count(0) < len(sample) // 8:
        return None
    nuls = [sample[i::4].count(0) / quarter for i in range(4)]
    many, few = [n > 0.6 for n in nuls], [n < 0.1 for n in nuls]
    if few[0] and all(many[1:]):
        return "UTF-32LE", "utf-32-le"
    if all(many[:3]) and few[3]:
        return "UTF-32BE", "utf-32-be"
    if few[0] and few[2] and many[1] and many[3]:
        return "UTF-16LE", "utf-16-le"
    if many[0] and many[2] and few[1] and few[3]:
        return "UTF-16BE", "utf-16-be"
    if sample.count(0) > len(sample) // 4:
        return "binary data", ""
    return None


def _newline(sample: str) -> str:
    crlf = sample.count("\r\n")
    cr, lf = sample.count("\r") - crlf, sample.count("\n") - crlf
    if cr and not lf and not crlf:
        return "\r"
    return "\r\n" if crlf and not lf else "\n"


def sniff(head: bytes, encoding: str | None = "utf8", source: str = "the file") -> Sniffed:
    """Decide a text file's encoding, BOM and line endings from its first bytes (:data:`SNIFF_BYTES`).

    A BOM (UTF-8/16/32) wins over ``encoding`` (the contract's ``source.encoding``). Without one,
    a file whose NUL bytes sit between its characters (UTF-16/32 without a BOM) or that is mostly
    NUL (binary) gets a ``problem`` instead of being parsed into garbage. Call it once per file;
    :func:`parse_raw` calls it itself when it is given a whole file.
    """
    bom, codec = next(((mark, name) for mark, name in _BOMS if head.startswith(mark)), (b"", ""))
    if not bom:
        try:
            codec = codec_name(encoding)
        except LookupError:
            return Sniffed(
                encoding=str(encoding),
                problem=f"unknown encoding {encoding!r} in the contract's source.encoding; "
                "use a Python codec name such as utf8, latin-1, cp1252 or utf-16-le.",
            )
        if not codec.startswith(("utf-16", "utf-32")):
            guess = _wide_text_guess(head)
            if guess and guess[1]:
                return Sniffed(
                    encoding=codec,
                    problem=f"{source} looks like {guess[0]} without a byte-order mark (NUL bytes between "
                    f"its characters), not {encoding}; set source.encoding: {guess[1]} in the contract (or "
                    "have the provider send UTF-8) and reprocess with full_refresh.",
                )
            if guess:
                return Sniffed(
                    encoding=codec,
                    problem=f"{source} is binary data (over a quarter of its first bytes are NUL), not "
                    f"{encoding} text; check that the source pattern matches only the data files.",
                )
    sample = head[len(bom) : len(bom) + SNIFF_BYTES].decode(codec, errors="ignore")
    return Sniffed(encoding=codec, bom=bom, newline=_newline(sample))


def decode_text(data: bytes, encoding: str, source: str) -> tuple[str | None, str | None]:
    """Decode bytes; returns (text, None) or (None, reason naming the byte and the fix)."""
    shown = (encoding or "utf8").lower().replace("-", "")
    try:
        codec = codec_name(encoding)
    except LookupError:
        return None, (
            f"unknown encoding {encoding!r} in the contract's source.encoding; "
            "use a Python codec name such as utf8, latin-1, cp1252 or utf-16-le."
        )
    try:
        return data.decode("utf-8-sig" if codec == "utf-8" else codec), None
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        return None, (
            f"{source} is not valid {shown} (byte 0x{bad} at offset {exc.start}); if the provider sends "
            "another encoding, set source.encoding in the contract (e.g. latin-1) and reprocess with full_refresh."
        )
    except (UnicodeError, ValueError) as exc:
        return (
            None,
            f"{source} could not be decoded as {shown}: {exc}; check source.encoding in the contract.",
        )


def to_utf8(data: bytes, sniffed: Sniffed, source: str) -> tuple[bytes | None, str | None]:
    """The bytes re-encoded as the parsers read them (UTF-8, "\\n" or "\\r\\n" line ends, no BOM).

    Returns (bytes, None) or (None, reason). UTF-8 input is passed through (its validity is checked
    by the parser, which names the offending byte); a BOM is dropped only where the bytes start with it,
    so a chunk of a file can be converted with the file's :class:`Sniffed`.
    """
    if sniffed.problem:
        return None, sniffed.problem
    if sniffed.bom and data.startswith(sniffed.bom):
        data = data[len(sniffed.bom) :]
    if sniffed.encoding == "utf-8":
        return (data.replace(b"\r", b"\n") if sniffed.newline == "\r" else data), None
    text, problem = decode_text(data, sniffed.encoding, source)
    if problem:
        return None, problem
    if sniffed.newline == "\r":
        text = text.replace("\r", "\n")
    return text.encode("utf-8"), None


# parsing -------------------------------------------------------------------------------------

_TEXT_FORMATS = ("csv", "ndjson", "json")
_FORMATS = (*_TEXT_FORMATS, "parquet", "sql")


def parse_raw(
    data: bytes,
    name: str,
    fmt: str,
    contract: Contract,
    source: str,
    seq_base: int = 0,
    *,
    sniffed: Sniffed | None = None,
    line_offset: int = 0,
    newlines: int | None = None,
) -> Parsed:
    """Parse one raw file's bytes into text columns with lineage, or reject it whole with a reason.

    ``name`` is the file name (a ``.gz`` suffix means gzip); ``source`` is what lineage records.
    Columns: every field as text (parquet keeps its types), plus _source_file, _source_line
    (CSV/NDJSON line, JSON record number) and _seq (arrival order, for deterministic last-wins).
    A text file is sniffed (:func:`sniff`) unless ``sniffed`` is given, as it must be for a chunk
    of a file (the chunk then carries the header line first); ``line_offset`` is added to the line
    numbers of such a chunk; ``newlines``, when given, is the number of line breaks in ``data`` (a
    chunk's, counted when it was cut). Nothing raises for bad input: a file that cannot be decoded or parsed
    at all is rejected whole with the reason.
    """
    if fmt not in _FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(_FORMATS)}")
    if name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except Exception as exc:
            return _whole_file_rejected(source, "unreadable_file", f"{source} is not valid gzip: {exc}")
    if fmt in _TEXT_FORMATS:
        if sniffed is None:
            sniffed = sniff(data[:SNIFF_BYTES], contract.source.get("encoding", "utf8"), source)
        given = data
        data, problem = to_utf8(data, sniffed, source)
        if data is not given:
            newlines = None  # re-encoded or without its byte-order mark: counted afresh
        if problem:
            return _whole_file_rejected(source, "encoding", problem)
    if not data[:256].strip() and not data.strip():  # the whole strip (a copy) only when it can be blank
        return Parsed(frame=pl.DataFrame(), rows_in=0)
    try:
        parsed = _parse(data, fmt, contract, source, newlines)
    except (Exception, pl.exceptions.PanicException) as exc:
        reason = f"{source} could not be parsed as {fmt} ({type(exc).__name__}: {str(exc)[:300]})"
        parsed = _every_line_rejected(data, source, reason) if fmt in _TEXT_FORMATS else None
        if parsed is None:
            return _whole_file_rejected(source, "unreadable_file", reason)
    frame = parsed.frame
    if frame.width:
        frame = frame.with_columns(
            pl.lit(source).alias(SOURCE_FILE),
            (
                pl.col(SOURCE_LINE).cast(pl.Int64) + line_offset
                if line_offset
                else pl.col(SOURCE_LINE).cast(pl.Int64)
            ).alias(SOURCE_LINE),
            (pl.lit(seq_base, pl.Int64) + pl.col(SOURCE_LINE).cast(pl.Int64)).alias(SEQ),
        )
    parsed.frame = frame
    if line_offset and parsed.rejects.height:
        line = pl.col("source_line")
        parsed.rejects = parsed.rejects.with_columns(
            pl.when(line > 0).then(line + line_offset).otherwise(line).alias("source_line")
        )
    return parsed


def _parse(data: bytes, fmt: str, contract: Contract, source: str, newlines: int | None = None) -> Parsed:
    if fmt == "csv":
        return _parse_csv(data, contract, source, newlines)
    if fmt == "ndjson":
        return _parse_ndjson(data, source)
    if fmt == "json":
        return _parse_json(data, contract, source)
    try:
        frame = pl.read_parquet(io.BytesIO(data))
    except (Exception, pl.exceptions.PanicException) as exc:
        return _whole_file_rejected(source, "unreadable_file", f"{source} is not readable parquet: {exc}")
    return _without_nul_rows(
        Parsed(frame=frame.with_row_index(SOURCE_LINE, offset=1), rows_in=frame.height), source
    )


def _whole_file_rejected(source: str, rule: str, reason: str) -> Parsed:
    return Parsed(
        frame=pl.DataFrame(),
        rejects=pl.DataFrame([_reject(source, 0, rule, reason)], schema=QUARANTINE_SCHEMA),
    )


def _every_line_rejected(data: bytes, source: str, reason: str) -> Parsed:
    """Reject a text file whole, keeping each non-blank line's text as its own quarantine row."""
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    rejects = [_reject(source, 0, "unreadable_file", f"{reason}; every line is quarantined as it was")]
    rejects += [
        _reject(source, n, "unreadable_file", f"line {n}: not parsed ({reason})", record=line)
        for n, line in enumerate(lines, start=1)
        if line.strip()
    ]
    return Parsed(
        frame=pl.DataFrame(),
        rejects=_rejects_frame(rejects),
        rows_in=len(rejects) - 1,
        lines=len(lines),
        blank_lines=len(lines) - len(rejects) + 1,
    )


def _nul_reason(where: str, column: str) -> str:
    return (
        f"{where}: column {column!r} contains a NUL character (0x00), which PostgreSQL cannot store; "
        "fix the source (the provider's export) or clean the value upstream, then land the file again."
    )


def _without_nul_rows(parsed: Parsed, source: str) -> Parsed:
    """Move rows whose text holds a NUL character to the rejects (typed sources: parquet, SQL)."""
    frame = parsed.frame
    texts = [c for c, t in frame.schema.items() if t == pl.String and c not in LINEAGE]
    if not texts or not frame.height:
        return parsed
    flags = [pl.col(c).str.contains("\x00", literal=True).fill_null(False) for c in texts]
    mask = frame.select(pl.any_horizontal(flags)).to_series()
    if not mask.any():
        return parsed
    bad = frame.filter(mask)
    rows = bad.select(
        pl.col(SOURCE_LINE),
        pl.coalesce([pl.when(f).then(pl.lit(c)) for f, c in zip(flags, texts, strict=True)]).alias("column"),
        pl.struct([pl.col(c).cast(pl.String) for c in frame.columns if c not in LINEAGE])
        .struct.json_encode()
        .alias("record"),
    )
    rejects = [
        _reject(
            source, line, "nul_character", _nul_reason(f"row {line}", column), record=record, column=column
        )
        for line, column, record in rows.iter_rows()
    ]
    parsed.frame = frame.filter(~mask)
    parsed.rejects = pl.concat([parsed.rejects, _rejects_frame(rejects)], how="vertical_relaxed")
    return parsed


def _csv_options(contract: Contract) -> tuple[str, str | None]:
    opts = contract.source
    quote = opts.get("quote", '"')
    return str(opts.get("delimiter", ",")), (str(quote) if quote else None)


def _physical_lines(data: bytes, newlines: int | None = None) -> int:
    """Lines in ``data`` (a last one without its line break counts); ``newlines``: its breaks, if known."""
    return (count_newlines(data) if newlines is None else newlines) + (0 if data.endswith(b"\n") else 1)


def _split_fields(body: str, separator: str, quote: str | None) -> list[str]:
    """One record's fields; quoted fields unescaped ("a""b" -> a"b). Raises csv.Error."""
    if not quote or quote not in body:
        return body.split(separator)
    # One text item: a line end inside quotes stays in the field; one outside them is a csv.Error.
    return next(csv.reader([body], delimiter=separator, quotechar=quote, strict=True))


def _header_cells(data: bytes, separator: str, quote: str | None) -> list[str] | None:
    """The first line's cells unescaped like data cells, when the header is quoted (else None)."""
    end = data.find(b"\n")
    first = (data if end < 0 else data[:end]).rstrip(b"\r")
    if not quote or quote.encode() not in first:
        return None
    try:
        return _split_fields(first.decode("utf-8"), separator, quote)
    except (csv.Error, UnicodeDecodeError):
        return None


def _unique_names(cells: list[str]) -> list[str]:
    """Header cells as column names; a repeated name gets polars' `_duplicated_<n>` suffix."""
    seen: dict[str, int] = {}
    names = []
    for cell in cells:
        if cell in seen:
            names.append(f"{cell}_duplicated_{seen[cell]}")
            seen[cell] += 1
        else:
            names.append(cell)
            seen[cell] = 0
    return names


def _parse_csv(data: bytes, contract: Contract, source: str, newlines: int | None = None) -> Parsed:
    """Fast path: polars, accepted only when it gives one row per physical line after the header.

    Otherwise a file whose only problem is a few lines with a broken quote is read by polars with
    those lines taken out (:func:`_parse_csv_repaired`); anything else (a quoted field spanning
    lines, a short or blank line, a NUL byte, a polars error or panic) by :func:`_parse_csv_scanned`.
    Both account for every line.
    """
    separator, quote = _csv_options(contract)
    if b"\x00" in data:
        return _parse_csv_scanned(data, separator, quote, source)
    lines = _physical_lines(data, newlines)  # counted once: a scan of the whole batch, unless given
    frame, error = _polars_rows(data, separator, quote, lines)
    if error and ("utf-8" in error.lower() or "utf8" in error.lower()):
        _, problem = decode_text(data, "utf8", source)
        return _whole_file_rejected(source, "encoding", problem or f"{source}: {error}")
    if frame is not None:
        return Parsed(frame=frame, rows_in=frame.height, lines=lines)
    repaired = _parse_csv_repaired(data, separator, quote, source)
    return repaired if repaired is not None else _parse_csv_scanned(data, separator, quote, source)


def _polars_rows(
    data: bytes, separator: str, quote: str | None, lines: int | None = None
) -> tuple[pl.DataFrame | None, str | None]:
    """(rows, None) when polars reads one row per physical line after the header, else (None, its error).

    ``lines``: ``_physical_lines(data)`` when the caller has counted them already."""
    try:
        frame = pl.read_csv(
            data,
            infer_schema=False,
            separator=separator,
            quote_char=quote,
            row_index_name=SOURCE_LINE,
            row_index_offset=2,
            raise_if_empty=False,
        )
    except (Exception, pl.exceptions.PanicException) as exc:
        return None, str(exc)
    if frame.height != (_physical_lines(data) if lines is None else lines) - 1:
        return None, None
    if frame.width > 1 and frame.get_column(frame.columns[-1]).null_count():  # maybe a short line
        return None, None
    cells = _header_cells(data, separator, quote)
    if cells is not None and len(cells) == frame.width - 1:
        frame.columns = [SOURCE_LINE, *_unique_names(cells)]
    return frame, None


def _broken_quote_reason(line: int, width: int) -> str:
    return (
        f"line {line}: a quote opens a field that does not close on this line and the record it would start "
        f"is not {width} fields; this line was quarantined and the lines after it were read on their own. "
        "Fix the quoting in the source."
    )


def _parse_csv_repaired(data: bytes, separator: str, quote: str | None, source: str) -> Parsed | None:
    """Take out the lines whose quote never closes (and blank lines), and let polars read the rest.

    A light scan matches each record with the scanner's pattern; fields are split only for a record
    that spans lines. Returns None, for :func:`_parse_csv_scanned` to read the file, when there is
    nothing to take out, or anything else: a multi-line record that is whole, an odd header, or rows
    polars still cannot vouch for.
    """
    if not quote or not (separator.isascii() and quote.isascii()):
        return None
    pattern = re.compile(_record_pattern(separator, quote).pattern.encode())
    size, pos, line = len(data), 0, 1
    width: int | None = None
    removed: list[tuple[int, int, int]] = []  # (line, start, end) of each line taken out
    rejects: list[dict] = []
    blank = 0
    while pos < size:
        newline = data.find(b"\n", pos)
        line_end = size if newline < 0 else newline + 1
        match = pattern.match(data, pos)
        end = match.end() if match is not None else -1
        if match is not None and end <= line_end:  # a one-line record
            body = data[pos:end].rstrip(b"\r\n")
            if width is None:
                try:
                    width = (
                        len(_split_fields(body.decode("utf-8"), separator, quote)) if body.strip() else None
                    )
                except (csv.Error, UnicodeDecodeError):
                    return None
                if width is None:
                    return None
            elif not body.strip():
                blank += 1
                removed.append((line, pos, end))
            pos, line = end, line + 1
            continue
        if width is None:
            return None
        if match is not None:  # spans lines: whole (then the scanner reads it) or a broken quote
            try:
                text = data[pos:end].decode("utf-8").replace("\r\n", "\n").removesuffix("\n")
                if len(_split_fields(text, separator, quote)) == width:
                    return None
            except (csv.Error, UnicodeDecodeError):
                pass
        record = data[pos:line_end].rstrip(b"\r\n").decode("utf-8", errors="replace")
        rejects.append(
            _reject(source, line, "malformed_line", _broken_quote_reason(line, width), record=record)
        )
        removed.append((line, pos, line_end))
        pos, line = line_end, line + 1
    if not rejects:
        return None
    parts, start = [], 0
    for _, begin, finish in removed:
        parts.append(data[start:begin])
        start = finish
    parts.append(data[start:])
    frame, _ = _polars_rows(b"".join(parts), separator, quote)
    total = _physical_lines(data)
    numbers = pl.int_range(2, total + 1, eager=True, dtype=pl.Int64)
    numbers = numbers.filter(~numbers.is_in([n for n, _, _ in removed]))
    if frame is None or frame.height != numbers.len():
        return None
    return Parsed(
        frame=frame.with_columns(numbers.alias(SOURCE_LINE)),
        rejects=_rejects_frame(rejects),
        rows_in=frame.height + len(rejects),
        lines=total,
        blank_lines=blank,
    )


def _record_pattern(separator: str, quote: str | None) -> re.Pattern:
    """One CSV record from the current position: fields, then a line end or the end of the text.

    A quoted field may hold separators, doubled quotes and line ends; a quote that never closes
    makes the match fail, which marks the line as broken. Possessive quantifiers: no backtracking.
    """
    s = re.escape(separator)
    if quote:
        q = re.escape(quote)
        field = rf"(?:{q}(?:[^{q}]|{q}{q})*+{q}[^{s}\n]*+|(?!{q})[^{s}\n]*+)"
    else:
        field = rf"[^{s}\n]*+"
    return re.compile(rf"{field}(?:{s}{field})*+(?:\n|\Z)")


def _parse_csv_scanned(data: bytes, separator: str, quote: str | None, source: str) -> Parsed:
    """Read a CSV record by record with a quote-aware scanner, accounting for every physical line.

    A record with the header's width is a row (it may span lines inside quotes). A line whose quote
    never closes, or opens a quoted field that swallows later lines without making a whole record,
    is quarantined alone and the lines after it are read on their own. A single line with the wrong
    number of fields, or holding a NUL character, is quarantined with its text.
    """
    text, problem = decode_text(data, "utf8", source)
    if problem:
        return _whole_file_rejected(source, "encoding", problem)
    text = text.replace("\r\n", "\n")
    pattern = _record_pattern(separator, quote)
    size = len(text)
    total_lines = text.count("\n") + (0 if text.endswith("\n") else 1)
    header: list[str] | None = None
    rows: list[list[str | None]] = []
    row_lines: list[int] = []
    rejects: list[dict] = []
    pos, line, blank = 0, 1, 0
    while pos < size:
        newline = text.find("\n", pos)
        first_end = size if newline < 0 else newline
        first_line = text[pos:first_end]
        match = pattern.match(text, pos)
        fields: list[str] | None = None
        body, span, error = first_line, 1, "a quote opens a field that never closes"
        if match is not None:
            body = text[pos : match.end()].removesuffix("\n")
            span = body.count("\n") + 1
            if not body.strip():
                blank += 1
                pos, line = first_end + 1, line + 1
                continue
            try:
                fields = _split_fields(body, separator, quote)
            except csv.Error as exc:
                error = str(exc)
        if header is None:
            if fields is None:
                return _every_line_rejected(
                    data, source, f"{source}: the header (line {line}) cannot be read: {error}"
                )
            header, width = _unique_names(fields), len(fields)
            pos, line = match.end(), line + span
            continue
        if fields is None and match is not None and span == 1:
            rejects.append(_reject(source, line, "malformed_line", f"line {line}: {error}", record=body))
            pos, line = first_end + 1, line + 1
            continue
        if fields is None or (span > 1 and len(fields) != width):
            rejects.append(
                _reject(source, line, "malformed_line", _broken_quote_reason(line, width), record=first_line)
            )
            pos, line = first_end + 1, line + 1
            continue
        if len(fields) != width:
            rejects.append(
                _reject(
                    source,
                    line,
                    "malformed_line",
                    f"line {line} has {len(fields)} fields, the header has {width}",
                    record=body,
                )
            )
        elif "\x00" in body:
            column = header[next(i for i, f in enumerate(fields) if "\x00" in f)]
            rejects.append(
                _reject(source, line, "nul_character", _nul_reason(f"line {line}", column), body, column)
            )
        else:
            rows.append([f if f != "" else None for f in fields])
            row_lines.append(line)
        pos, line = match.end(), line + span
    if header is None:
        return Parsed(frame=pl.DataFrame(), lines=total_lines, blank_lines=blank)
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in header]
    frame = pl.DataFrame(dict(zip(header, columns, strict=True)), schema=dict.fromkeys(header, pl.String))
    frame = frame.with_columns(pl.Series(SOURCE_LINE, row_lines, dtype=pl.Int64))
    return Parsed(
        frame=frame,
        rejects=_rejects_frame(rejects),
        rows_in=len(rows) + len(rejects),
        lines=total_lines,
        blank_lines=blank,
    )


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _records_frame(records: list[dict], lines: list[int]) -> pl.DataFrame:
    columns: dict[str, None] = {}
    for record in records:
        columns.update(dict.fromkeys(record))
    data = {c: [_text(r.get(c)) for r in records] for c in columns}
    frame = pl.DataFrame(data, schema=dict.fromkeys(columns, pl.String))
    return frame.with_columns(pl.Series(SOURCE_LINE, lines, dtype=pl.Int64))


def _nul_column(record: dict) -> str | None:
    """The first key whose text value holds a NUL character (nested values are JSON text, escaped)."""
    return next((k for k, v in record.items() if isinstance(v, str) and "\x00" in v), None)


def _parse_ndjson(data: bytes, source: str) -> Parsed:
    text, problem = decode_text(data, "utf8", source)
    if problem:
        return _whole_file_rejected(source, "encoding", problem)
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    records, numbers, rejects, blank = [], [], [], 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            blank += 1
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            rejects.append(
                _reject(source, number, "malformed_line", f"line {number} is not JSON: {exc}", record=line)
            )
            continue
        if not isinstance(value, dict):
            rejects.append(
                _reject(
                    source,
                    number,
                    "malformed_line",
                    f"line {number} is a JSON {type(value).__name__}, not an object",
                    record=line,
                )
            )
            continue
        column = _nul_column(value)
        if column is not None:
            reason = _nul_reason(f"line {number}", column)
            rejects.append(_reject(source, number, "nul_character", reason, record=line, column=column))
            continue
        records.append(value)
        numbers.append(number)
    return Parsed(
        frame=_records_frame(records, numbers),
        rejects=_rejects_frame(rejects),
        rows_in=len(records) + len(rejects),
        lines=len(lines),
        blank_lines=blank,
    )


def _parse_json(data: bytes, contract: Contract, source: str) -> Parsed:
    text, problem = decode_text(data, "utf8", source)
    if problem:
        return _whole_file_rejected(source, "encoding", problem)
    try:
        value = json.loads(text)
    except ValueError as exc:
        return _whole_file_rejected(source, "unreadable_file", f"{source} is not valid JSON: {exc}")
    path = contract.source.get("records_path")
    if path:
        for part in str(path).split("."):
            if not isinstance(value, dict) or part not in value:
                keys = sorted(value) if isinstance(value, dict) else type(value).__name__
                return _whole_file_rejected(
                    source,
                    "unreadable_file",
                    f"{source}: records_path {path!r} not found (at {part!r}; found {keys})",
                )
            value = value[part]
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return _whole_file_rejected(
            source,
            "unreadable_file",
            f"{source}: expected a JSON list of records, got {type(value).__name__}",
        )
    records, lines, rejects = [], [], []
    for number, record in enumerate(value, start=1):
        if not isinstance(record, dict):
            rejects.append(
                _reject(
                    source,
                    number,
                    "malformed_record",
                    f"record {number} is a {type(record).__name__}, not an object",
                    record=_text(record) or "",
                )
            )
        elif (column := _nul_column(record)) is not None:
            reason = _nul_reason(f"record {number}", column)
            rejects.append(
                _reject(source, number, "nul_character", reason, record=_text(record), column=column)
            )
        else:
            records.append(record)
            lines.append(number)
    return Parsed(
        frame=_records_frame(records, lines),
        rejects=_rejects_frame(rejects),
        rows_in=len(value),
    )


# casting -------------------------------------------------------------------------------------


def _affix_pattern(affixes: tuple[str, ...]) -> str:
    """A regex whose group 1 is the text between at most one leading and one trailing affix."""
    options = "|".join(re.escape(a) for a in sorted(affixes, key=len, reverse=True))
    return rf"(?is)^(?:{options})?\s*(.*?)\s*(?:{options})?$"


def _number_text(expr: pl.Expr, col: ColumnSpec, strip: bool = True) -> pl.Expr:
    expr = expr.str.strip_chars() if strip else expr
    if col.affixes:
        expr = expr.str.extract(_affix_pattern(col.affixes), 1)
    if col.thousands:
        expr = expr.str.replace_all(col.thousands, "", literal=True)
    if col.decimal and col.decimal != ".":
        expr = expr.str.replace_all(col.decimal, ".", literal=True)
    return expr


def _parse_expr(expr: pl.Expr, col: ColumnSpec, strip: bool = True) -> pl.Expr:
    """Text -> the column's type; a value that does not parse becomes null (and is caught).

    ``strip=False`` skips trimming surrounding whitespace for integers, floats, dates and datetimes:
    a value that parses untrimmed parses to the same value trimmed, and one that does not is parsed
    again trimmed (see :func:`cast_to_contract`).
    """
    dtype = col.dtype
    if col.type == "string":
        return expr
    if col.type.startswith("decimal"):
        text = _number_text(expr, col)
        # Casting would silently round away digits beyond the scale; that is a failed value: a
        # fraction (digits to the end) with a non-zero digit past the scale. One regex test per
        # value, not an extraction.
        too_precise = text.str.contains(rf"\.\d{{{dtype.scale}}}\d*[1-9]0*$")
        return pl.when(too_precise).then(pl.lit(None, dtype)).otherwise(text.cast(dtype, strict=False))
    if col.type.startswith(("int", "float")):
        return _number_text(expr, col, strip).cast(dtype, strict=False)
    if col.type == "bool":
        lowered = expr.str.strip_chars().str.to_lowercase()
        return (
            pl.when(lowered.is_in(list(col.true_values)))
            .then(pl.lit(True))
            .when(lowered.is_in(list(col.false_values)))
            .then(pl.lit(False))
            .otherwise(pl.lit(None, pl.Boolean))
        )
    stripped = expr.str.strip_chars() if strip else expr
    if col.type == "date":
        formats = col.formats or _DEFAULT_DATE_FORMATS
        return pl.coalesce([stripped.str.strptime(pl.Date, f, strict=False) for f in formats])
    formats = col.formats or _DEFAULT_DATETIME_FORMATS
    parsed = []
    for fmt in formats:
        if "%z" in fmt or "%Z" in fmt:
            parsed.append(
                stripped.str.strptime(pl.Datetime("us", "UTC"), fmt, strict=False).dt.replace_time_zone(None)
            )
        elif col.timezone:
            local = stripped.str.strptime(pl.Datetime("us"), fmt, strict=False)
            parsed.append(
                local.dt.replace_time_zone(col.timezone, ambiguous="earliest", non_existent="null")
                .dt.convert_time_zone("UTC")
                .dt.replace_time_zone(None)
            )
        else:
            parsed.append(stripped.str.strptime(pl.Datetime("us"), fmt, strict=False))
    result = pl.coalesce(parsed)
    return result.dt.replace_time_zone("UTC") if col.timezone else result


def _cast_typed(expr: pl.Expr, col: ColumnSpec, source: pl.DataType) -> pl.Expr:
    """A typed source column (parquet, SQL) -> the contract's type; a lossy cast becomes null (caught).

    1.7 into int8 or 1.25 into decimal(5,1) would round silently, so a value that does not
    survive the round trip back to its source type fails instead.
    """
    if col.type == "datetime" and isinstance(source, pl.Datetime):
        if source.time_zone is None and col.timezone:
            return expr.dt.replace_time_zone(
                col.timezone, ambiguous="earliest", non_existent="null"
            ).dt.convert_time_zone("UTC")
        return expr.dt.convert_time_zone("UTC") if col.timezone else expr.dt.replace_time_zone(None)
    cast = expr.cast(col.dtype, strict=False)
    if source.is_numeric() or source == pl.Boolean:
        if col.type == "string":
            return cast
        return pl.when(cast.cast(source, strict=False) == expr).then(cast).otherwise(pl.lit(None, col.dtype))
    return cast


@dataclass
class CastResult:
    good: pl.DataFrame
    bad: pl.DataFrame  # quarantine rows
    extra_columns: list[str]
    missing_columns: list[str]


_ROW, _MARKED = "__row", "__marked"


def cast_to_contract(
    frame: pl.DataFrame,
    contract: Contract,
    *,
    primary_key: tuple[str, ...] = (),
    keep_extra: bool = True,
    pii: Collection[str] = (),
) -> CastResult:
    """Cast every contract column; a row with any failed cast or null in a required column is bad.

    Bad rows become quarantine rows naming the first failing column, the rule (type /
    not_null) and every reason; good rows come out strongly typed. Columns the contract
    does not know are returned in extra_columns (kept as text when keep_extra).
    A reason names the failing value, except in a ``pii`` column: there it names the column only.

    One pass types every value and marks the rows that need a closer look: a value that did not
    parse as it stands (it may be padded, blank or invalid) or a null where one is not allowed.
    Every other row is final after that pass. The marked rows (usually few) alone go through the
    full rules (:func:`_cast_rows`: trimming, blanks, reasons, the raw record) and rejoin the
    others in their original order, so the result is the same as applying the rules to every row.
    """
    null_values = [v for v in contract.null_values if v != ""]
    extra = [c for c in frame.columns if c not in LINEAGE and c not in contract.columns]
    missing = [c for c in contract.columns if c not in frame.columns]
    full = frame.with_columns([pl.lit(None, pl.String).alias(c) for c in missing]) if missing else frame
    values, outputs, suspects = [], [], []
    for index, (name, col) in enumerate(contract.columns.items()):
        value, suspect = _fast_cast(pl.col(name), col, full.schema[name], null_values)
        required = (not col.nullable) or name in primary_key
        values.append(value.alias(f"__v{index}"))  # computed once, then both kept and tested
        outputs.append(pl.col(f"__v{index}").alias(name))
        if required:
            suspects.append(pl.col(f"__v{index}").is_null())
        elif suspect is not None:
            suspects.append(pl.col(f"__v{index}").is_null() & suspect)
    lineage = [pl.col(c) for c in LINEAGE if c in frame.columns]
    marker = pl.any_horizontal(suspects) if suspects else pl.lit(False)
    checked = (
        full.lazy()
        .with_columns(values)
        .select(
            *outputs,
            *([pl.col(c).cast(pl.String) for c in extra] if keep_extra else []),
            *lineage,
            marker.alias(_MARKED),
        )
        .collect()
    )
    if not checked.get_column(_MARKED).any():  # every row is final: no filtering pass over the frame
        return CastResult(
            good=checked.drop(_MARKED), bad=empty_quarantine(), extra_columns=extra, missing_columns=missing
        )
    # Filter by expression: filtering by the Series mask panicked in polars on some frames.
    marked = checked.get_column(_MARKED)
    closer = _cast_rows(
        frame.with_columns(marked).with_row_index(_ROW).filter(pl.col(_MARKED)).drop(_MARKED),
        contract,
        primary_key=primary_key,
        keep_extra=keep_extra,
        pii=pii,
    )
    final = checked.with_row_index(_ROW).filter(~pl.col(_MARKED)).drop(_MARKED)
    if closer.good.height:
        final = final.merge_sorted(closer.good.select(final.columns), key=_ROW)
    return CastResult(good=final.drop(_ROW), bad=closer.bad, extra_columns=extra, missing_columns=missing)


def _fast_cast(
    raw: pl.Expr, col: ColumnSpec, source: pl.DataType, null_values: list[str]
) -> tuple[pl.Expr, pl.Expr | None]:
    """(the column's typed value where it is final, when a null value needs a closer look or None: never).

    The value is what :func:`_cast_rows` gives for every row except those where the value is null
    and the second expression is true (and, for a required column, any null value). A null value
    token is null; a value that does not parse as it stands is null and marked, because the full
    rules may still trim it to a valid value, call it blank, or quarantine it.
    """
    if source != pl.String:
        return _cast_typed(raw, col, source), raw.is_not_null()
    null_value = raw.is_in(null_values) if null_values else None
    if col.type == "string" or col.type == "bool":
        # The full rules' blank test, here already: a blank text is null, and a blank could read as a bool.
        blank = raw.str.strip_chars() == ""
        null_value = blank if null_value is None else (null_value | blank)
    if col.type == "string":
        return pl.when(null_value).then(pl.lit(None, pl.String)).otherwise(raw), None
    # A blank or padded number or date does not parse untrimmed (and a blank never parses): marked.
    typed = _parse_expr(raw, col, strip=not col.type.startswith(("int", "float", "date")))
    if null_value is None:
        return typed, raw.is_not_null()
    return pl.when(null_value).then(pl.lit(None, col.dtype)).otherwise(typed), raw.is_not_null() & ~null_value


def _cast_rows(
    frame: pl.DataFrame,
    contract: Contract,
    *,
    primary_key: tuple[str, ...],
    keep_extra: bool,
    pii: Collection[str],
) -> CastResult:
    """The full rules of :func:`cast_to_contract`, on the rows it marked (a ``__row`` column is carried).

    Typed values and failure flags are computed in one pass; reasons and the raw record are built
    for the failing rows only.
    """
    null_values = [v for v in contract.null_values if v != ""]
    present = [c for c in frame.columns if c not in LINEAGE and c != _ROW]
    extra = [c for c in present if c not in contract.columns]
    missing = [c for c in contract.columns if c not in frame.columns]
    if missing:
        frame = frame.with_columns([pl.lit(None, pl.String).alias(c) for c in missing])

    cleaned_exprs, typed_exprs, flag_exprs = [], [], []
    exact: dict[int, tuple[pl.Expr, pl.Expr]] = {}  # text columns parsed untrimmed at first
    rules: list[tuple[str, ColumnSpec, bool]] = []
    for index, (name, col) in enumerate(contract.columns.items()):
        raw = pl.col(name)
        if frame.schema[name] == pl.String:
            cleaned = raw
            if null_values:
                cleaned = pl.when(raw.is_in(null_values)).then(pl.lit(None, pl.String)).otherwise(raw)
            blank_is_null = (
                pl.when(cleaned.str.strip_chars() == "").then(pl.lit(None, pl.String)).otherwise(cleaned)
            )
            typed = _parse_expr(pl.col(f"__c{index}"), col)
            if col.type.startswith(("int", "float", "date")):
                # Trimming and the blank test cost a pass over every value each; a blank or padded
                # value does not parse untrimmed, so only a column with a failure pays for them.
                exact[index] = (blank_is_null, typed)
                typed = _parse_expr(pl.col(f"__c{index}"), col, strip=False)
            else:
                cleaned = blank_is_null
        else:
            cleaned = raw
            typed = _cast_typed(pl.col(f"__c{index}"), col, frame.schema[name])
        required = (not col.nullable) or name in primary_key
        cleaned_exprs.append(cleaned.alias(f"__c{index}"))
        typed_exprs.append(typed.alias(f"__t{index}"))
        type_failed = pl.col(f"__c{index}").is_not_null() & pl.col(f"__t{index}").is_null()
        null_failed = pl.col(f"__c{index}").is_null() if required else pl.lit(False)
        flag_exprs.append((type_failed | null_failed).alias(f"__f{index}"))
        rules.append((name, col, required))

    lineage = [c for c in LINEAGE if c in frame.columns] + [c for c in (_ROW,) if c in frame.columns]
    parsed = frame.lazy().with_columns(cleaned_exprs).with_columns(typed_exprs).collect()
    if exact:
        failing = parsed.select(
            (pl.col(f"__c{i}").is_not_null() & pl.col(f"__t{i}").is_null()).any().alias(str(i)) for i in exact
        ).row(0)
        again = [i for i, failed in zip(exact, failing, strict=True) if failed]
        if again:
            parsed = (
                parsed.lazy()
                .with_columns(exact[i][0].alias(f"__c{i}") for i in again)
                .with_columns(exact[i][1].alias(f"__t{i}") for i in again)
                .collect()
            )
    staged = (
        parsed.lazy()
        .with_columns(flag_exprs)
        .with_columns(
            pl.any_horizontal([f"__f{i}" for i in range(len(rules))]).alias("__bad")
            if rules
            else pl.lit(False).alias("__bad")
        )
        .collect()
    )
    outputs = [
        *[pl.col(f"__t{i}").alias(name) for i, (name, _, _) in enumerate(rules)],
        *([pl.col(c).cast(pl.String) for c in extra] if keep_extra else []),
        *[pl.col(c) for c in lineage],
    ]
    good = staged.select(outputs)
    bad_mask = staged.get_column("__bad")
    if not bad_mask.any():  # clean data: no filtering pass over the frame
        return CastResult(good=good, bad=empty_quarantine(), extra_columns=extra, missing_columns=missing)
    # Filter by expression: filtering by the Series mask panicked in polars on some frames.
    good = staged.filter(~pl.col("__bad")).select(outputs)
    failing = staged.filter(pl.col("__bad"))

    rule_exprs, column_exprs, reason_exprs = [], [], []
    for index, (name, col, required) in enumerate(rules):
        c, t = pl.col(f"__c{index}"), pl.col(f"__t{index}")
        type_failed = c.is_not_null() & t.is_null()
        null_failed = pl.lit(required) & c.is_null()
        null_reason = (
            f"{name}: missing from the source but required"
            if name in missing
            else f"{name}: null in a {'primary key' if name in primary_key else 'non-nullable'} column"
        )
        shown = c.cast(pl.String).str.slice(0, 200)
        rule_exprs.append(
            pl.when(type_failed).then(pl.lit("type")).when(null_failed).then(pl.lit("not_null"))
        )
        column_exprs.append(pl.when(type_failed | null_failed).then(pl.lit(name)))
        invalid = (
            pl.lit(
                f"{name}: the value (not shown: a PII column) is not a valid {col.type}{_format_hint(col)}"
            )
            if name in pii
            else pl.format(f"{name}: '{{}}' is not a valid {col.type}{_format_hint(col)}", shown)
        )
        reason_exprs.append(pl.when(type_failed).then(invalid).when(null_failed).then(pl.lit(null_reason)))
    record = (
        pl.struct([pl.col(c).cast(pl.String) for c in present]).struct.json_encode()
        if present
        else pl.lit("{}")
    )
    bad = failing.select(
        pl.col(SOURCE_FILE).alias("source_file")
        if SOURCE_FILE in failing.columns
        else pl.lit(None, pl.String).alias("source_file"),
        pl.col(SOURCE_LINE).cast(pl.Int64).alias("source_line")
        if SOURCE_LINE in failing.columns
        else pl.lit(None, pl.Int64).alias("source_line"),
        pl.coalesce(column_exprs).alias("column"),
        pl.coalesce(rule_exprs).alias("rule"),
        pl.concat_str(reason_exprs, separator="; ", ignore_nulls=True).alias("reason"),
        record.alias("record"),
    )
    return CastResult(good=good, bad=bad, extra_columns=extra, missing_columns=missing)


def _format_hint(col: ColumnSpec) -> str:
    if col.formats:
        return f" (expected format {' or '.join(col.formats)})"
    notes = []
    if col.thousands:
        notes.append(f"thousands separator {col.thousands!r}")
    if col.affixes:
        notes.append(f"allowed affixes {', '.join(repr(a) for a in col.affixes)}")
    return f" ({'; '.join(notes)})" if notes else ""


def _unique_order(seq: pl.Series) -> bool:
    """Whether every row has its own arrival number: strictly increasing (as parsed) is checked in one
    cheap pass; only otherwise is the column hashed."""
    if seq.null_count():
        return False
    if seq.len() < 2 or bool((seq.diff(null_behavior="drop") > 0).all()):
        return True
    return bool(seq.is_unique().all())


def collapse_duplicates(
    frame: pl.DataFrame, primary_key: tuple[str, ...], incremental_field: str | None
) -> tuple[pl.DataFrame, int]:
    """Keep one row per primary key: the latest by the incremental field, ties broken by arrival order.

    Arrival order is _seq (file order, then line), so the result does not depend on how the
    input happened to be split or sorted.
    """
    if not primary_key or frame.height == 0:
        return frame, 0
    keys = list(primary_key)
    key = pl.col(keys[0]) if len(keys) == 1 else pl.struct(keys)
    duplicated = frame.select(key.is_duplicated()).to_series()
    if not duplicated.any():
        return frame, 0
    order = ([incremental_field] if incremental_field else []) + ([SEQ] if SEQ in frame.columns else [])
    if SEQ in frame.columns and _unique_order(frame.get_column(SEQ)):
        # Rank only the rows whose key repeats (usually few), then keep every other row as it is,
        # in its original order: the same winners as ranking the whole frame, without sorting it.
        contenders = frame.filter(duplicated).sort(order, nulls_last=False)
        winners = contenders.unique(subset=keys, keep="last").get_column(SEQ)
        kept = frame.filter(~duplicated | pl.col(SEQ).is_in(winners.implode()))
    else:
        ranked = frame.sort(order, nulls_last=False) if order else frame
        kept = ranked.unique(subset=keys, keep="last", maintain_order=True)
    return kept, frame.height - kept.height


def partition_expr(col: ColumnSpec | None, name: str | None) -> pl.Expr:
    """The partition value of a row: the day of a date/datetime field, else the field as text."""
    if not name or col is None:
        return pl.lit("all").alias(PARTITION)
    if col.type in ("date", "datetime"):
        return pl.col(name).dt.strftime("%Y-%m-%d").fill_null("unknown").alias(PARTITION)
    return pl.col(name).cast(pl.String).fill_null("unknown").alias(PARTITION)
