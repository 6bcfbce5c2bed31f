"""Pure polars functions that turn what arrived into typed rows and quarantined rows.

No Prefect here. The ingest workflow wires them: :func:`parse_raw` (bytes -> text columns
with lineage), :func:`cast_to_contract` (text -> contract types, every failure kept with a
reason), :func:`collapse_duplicates` (last-wins on the primary key).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from dataclasses import dataclass, field

import polars as pl

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
    """One raw file parsed to text columns, plus what could not be parsed."""

    frame: pl.DataFrame
    rejects: pl.DataFrame = field(default_factory=empty_quarantine)
    rows_in: int = 0


def _reject(source: str, line: int, rule: str, reason: str, record: str = "", column: str = "") -> dict:
    return {
        "source_file": source,
        "source_line": line,
        "column": column,
        "rule": rule,
        "reason": reason,
        "record": record,
    }


def decode_text(data: bytes, encoding: str, source: str) -> tuple[str | None, str | None]:
    """Decode bytes; returns (text, None) or (None, reason naming the byte and the fix)."""
    encoding = (encoding or "utf8").lower().replace("-", "")
    codec = "utf-8-sig" if encoding in ("utf8", "utf8sig") else encoding
    try:
        return data.decode(codec), None
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        return None, (
            f"{source} is not valid {encoding} (byte 0x{bad} at offset {exc.start}); if the provider sends "
            "another encoding, set source.encoding in the contract (e.g. latin-1) and reprocess with full_refresh."
        )
    except LookupError:
        return (
            None,
            f"unknown encoding {encoding!r} in the contract's source.encoding; use e.g. utf8 or latin-1.",
        )


def parse_raw(data: bytes, name: str, fmt: str, contract: Contract, source: str, seq_base: int = 0) -> Parsed:
    """Parse one raw file's bytes into text columns with lineage, or reject it whole with a reason.

    ``name`` is the file name (a ``.gz`` suffix means gzip); ``source`` is what lineage records.
    Columns: every field as text (parquet keeps its types), plus _source_file, _source_line
    (CSV/NDJSON line, JSON record number) and _seq (arrival order, for deterministic last-wins).
    """
    if name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            return _whole_file_rejected(source, "unreadable_file", f"{source} is not valid gzip: {exc}")
    if not data.strip():
        return Parsed(frame=pl.DataFrame(), rows_in=0)
    if fmt == "csv":
        parsed = _parse_csv(data, contract, source)
    elif fmt == "ndjson":
        parsed = _parse_ndjson(data, contract, source)
    elif fmt == "json":
        parsed = _parse_json(data, contract, source)
    elif fmt in ("parquet", "sql"):
        try:
            frame = pl.read_parquet(io.BytesIO(data))
        except Exception as exc:
            return _whole_file_rejected(source, "unreadable_file", f"{source} is not readable parquet: {exc}")
        parsed = Parsed(frame=frame.with_row_index(SOURCE_LINE, offset=1), rows_in=frame.height)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    frame = parsed.frame
    if frame.width:
        frame = frame.with_columns(
            pl.lit(source).alias(SOURCE_FILE),
            pl.col(SOURCE_LINE).cast(pl.Int64),
            (pl.lit(seq_base, pl.Int64) + pl.col(SOURCE_LINE).cast(pl.Int64)).alias(SEQ),
        )
    parsed.frame = frame
    return parsed


def _whole_file_rejected(source: str, rule: str, reason: str) -> Parsed:
    return Parsed(
        frame=pl.DataFrame(),
        rejects=pl.DataFrame([_reject(source, 0, rule, reason)], schema=QUARANTINE_SCHEMA),
    )


def _parse_csv(data: bytes, contract: Contract, source: str) -> Parsed:
    opts = contract.source
    separator = str(opts.get("delimiter", ","))
    quote = opts.get("quote", '"')
    encoding = str(opts.get("encoding", "utf8")).lower().replace("-", "")
    if encoding not in ("utf8", "utf8sig"):
        text, problem = decode_text(data, encoding, source)
        if problem:
            return _whole_file_rejected(source, "encoding", problem)
        data = text.encode("utf-8")
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
    except pl.exceptions.ComputeError as exc:
        if "utf-8" in str(exc).lower() or "utf8" in str(exc).lower():
            _, problem = decode_text(data, "utf8", source)
            return _whole_file_rejected(source, "encoding", problem or f"{source}: {exc}")
        return _parse_csv_strict(data, separator, quote, source)
    if frame.width > 1:
        last = frame.columns[-1]
        # polars fills a short line's missing fields with null; confirm such rows line by line.
        if frame.get_column(last).null_count():
            return _parse_csv_strict(data, separator, quote, source)
    return Parsed(frame=frame, rows_in=frame.height)


def _parse_csv_strict(data: bytes, separator: str, quote: str | None, source: str) -> Parsed:
    """Line-by-line CSV reading for files the fast path could not vouch for."""
    text, problem = decode_text(data, "utf8", source)
    if problem:
        return _whole_file_rejected(source, "encoding", problem)
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=separator,
        quotechar=quote or '"',
        quoting=csv.QUOTE_MINIMAL if quote else csv.QUOTE_NONE,
        strict=True,
    )
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        return Parsed(frame=pl.DataFrame(), rows_in=0)
    rows, lines, rejects = [], [], []
    width = len(header)
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            rejects.append(_reject(source, start, "malformed_line", f"line {start}: {exc}"))
            continue
        if not fields:
            continue
        if len(fields) != width:
            rejects.append(
                _reject(
                    source,
                    start,
                    "malformed_line",
                    f"line {start} has {len(fields)} fields, the header has {width}",
                    record=json.dumps(fields),
                )
            )
            continue
        rows.append([f if f != "" else None for f in fields])
        lines.append(start)
    frame = pl.DataFrame(rows, schema=dict.fromkeys(header, pl.String), orient="row")
    frame = frame.with_columns(pl.Series(SOURCE_LINE, lines, dtype=pl.Int64))
    rejects_frame = _rejects_frame(rejects)
    return Parsed(frame=frame, rejects=rejects_frame, rows_in=len(rows) + len(rejects))


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


def _parse_ndjson(data: bytes, contract: Contract, source: str) -> Parsed:
    text, problem = decode_text(data, str(contract.source.get("encoding", "utf8")), source)
    if problem:
        return _whole_file_rejected(source, "encoding", problem)
    records, lines, rejects = [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            rejects.append(
                _reject(
                    source, number, "malformed_line", f"line {number} is not JSON: {exc}", record=line[:2000]
                )
            )
            continue
        if not isinstance(value, dict):
            rejects.append(
                _reject(
                    source,
                    number,
                    "malformed_line",
                    f"line {number} is a JSON {type(value).__name__}, not an object",
                    record=line[:2000],
                )
            )
            continue
        records.append(value)
        lines.append(number)
    return Parsed(
        frame=_records_frame(records, lines),
        rejects=_rejects_frame(rejects),
        rows_in=len(records) + len(rejects),
    )


def _parse_json(data: bytes, contract: Contract, source: str) -> Parsed:
    text, problem = decode_text(data, str(contract.source.get("encoding", "utf8")), source)
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
        if isinstance(record, dict):
            records.append(record)
            lines.append(number)
        else:
            rejects.append(
                _reject(
                    source,
                    number,
                    "malformed_record",
                    f"record {number} is a {type(record).__name__}, not an object",
                    record=_text(record) or "",
                )
            )
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


def _number_text(expr: pl.Expr, col: ColumnSpec) -> pl.Expr:
    expr = expr.str.strip_chars()
    if col.affixes:
        expr = expr.str.extract(_affix_pattern(col.affixes), 1)
    if col.thousands:
        expr = expr.str.replace_all(col.thousands, "", literal=True)
    if col.decimal and col.decimal != ".":
        expr = expr.str.replace_all(col.decimal, ".", literal=True)
    return expr


def _parse_expr(expr: pl.Expr, col: ColumnSpec) -> pl.Expr:
    """Text -> the column's type; a value that does not parse becomes null (and is caught)."""
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
        return _number_text(expr, col).cast(dtype, strict=False)
    if col.type == "bool":
        lowered = expr.str.strip_chars().str.to_lowercase()
        return (
            pl.when(lowered.is_in(list(col.true_values)))
            .then(pl.lit(True))
            .when(lowered.is_in(list(col.false_values)))
            .then(pl.lit(False))
            .otherwise(pl.lit(None, pl.Boolean))
        )
    stripped = expr.str.strip_chars()
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


def cast_to_contract(
    frame: pl.DataFrame,
    contract: Contract,
    *,
    primary_key: tuple[str, ...] = (),
    keep_extra: bool = True,
) -> CastResult:
    """Cast every contract column; a row with any failed cast or null in a required column is bad.

    Bad rows become quarantine rows naming the first failing column, the rule (type /
    not_null) and every reason; good rows come out strongly typed. Columns the contract
    does not know are returned in extra_columns (kept as text when keep_extra).
    Typed values and failure flags are computed in one pass; reasons and the raw record
    are built for the failing rows only, so clean data pays almost nothing for them.
    """
    null_values = [v for v in contract.null_values if v != ""]
    present = [c for c in frame.columns if c not in LINEAGE]
    extra = [c for c in present if c not in contract.columns]
    missing = [c for c in contract.columns if c not in frame.columns]
    if missing:
        frame = frame.with_columns([pl.lit(None, pl.String).alias(c) for c in missing])

    cleaned_exprs, typed_exprs, flag_exprs = [], [], []
    rules: list[tuple[str, ColumnSpec, bool]] = []
    for index, (name, col) in enumerate(contract.columns.items()):
        raw = pl.col(name)
        if frame.schema[name] == pl.String:
            cleaned = raw
            if null_values:
                cleaned = pl.when(raw.is_in(null_values)).then(pl.lit(None, pl.String)).otherwise(raw)
            cleaned = (
                pl.when(cleaned.str.strip_chars() == "").then(pl.lit(None, pl.String)).otherwise(cleaned)
            )
            typed = _parse_expr(pl.col(f"__c{index}"), col)
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

    lineage = [c for c in LINEAGE if c in frame.columns]
    staged = (
        frame.lazy()
        .with_columns(cleaned_exprs)
        .with_columns(typed_exprs)
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
        reason_exprs.append(
            pl.when(type_failed)
            .then(pl.format(f"{name}: '{{}}' is not a valid {col.type}{_format_hint(col)}", shown))
            .when(null_failed)
            .then(pl.lit(null_reason))
        )
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
    if (
        SEQ in frame.columns
        and frame.get_column(SEQ).null_count() == 0
        and frame.get_column(SEQ).is_unique().all()
    ):
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
