"""parse_raw on bad input: every line is a row, a quarantine row holding its text, or a blank line."""

from __future__ import annotations

import codecs
import gzip
import json
import random

import polars as pl
import pytest

from pipelines.components import cleaning
from pipelines.components.registry import ColumnSpec, Contract

pytestmark = pytest.mark.unit

CONTRACT = Contract(
    columns={"id": ColumnSpec(name="id", type="int64"), "v": ColumnSpec(name="v", type="string")}
)


def _parse(data: bytes, fmt: str = "csv", contract: Contract = CONTRACT, name: str = "f.csv", **kw):
    return cleaning.parse_raw(data, name, fmt, contract, source=name, **kw)


def _accounted(parsed: cleaning.Parsed, header_lines: int = 1) -> None:
    """Every physical line is the header, a row, a quarantined line or a blank line (one-line records)."""
    line_rejects = parsed.rejects.filter(pl.col("source_line") > 0)
    assert parsed.rows_in == parsed.frame.height + line_rejects.height
    assert parsed.lines == header_lines + parsed.rows_in + parsed.blank_lines
    assert line_rejects.filter(pl.col("record") == "").height == 0  # a quarantined line keeps its text


def _rows(n: int, start: int = 2) -> list[str]:
    return [f"{i},value {i}\n" for i in range(start, start + n)]


def test_a_stray_quote_quarantines_its_line_and_reads_the_rest():
    lines = ["id,v\n", *_rows(899)]
    lines[11] = '12,"the quote never closes\n'  # line 12 of a 900-line file
    parsed = _parse("".join(lines).encode())
    _accounted(parsed)
    assert (parsed.lines, parsed.rows_in, parsed.frame.height) == (900, 899, 898)
    (line, rule, reason, record), *_ = parsed.rejects.select("source_line", "rule", "reason", "record").rows()
    assert (line, rule, record) == (12, "malformed_line", '12,"the quote never closes')
    assert reason.startswith("line 12: a quote opens a field that does not close on this line")
    assert "the lines after it were read on their own" in reason
    ids = parsed.frame.get_column("id").to_list()
    assert ids[-1] == "900" and "12" not in ids and len(set(ids)) == 898
    assert parsed.frame.filter(pl.col("id") == "13").get_column(cleaning.SOURCE_LINE).item() == 13


def test_a_stray_quote_that_pairs_with_a_later_quote_loses_no_line():
    lines = ["id,v\n", *_rows(8)]
    lines[3] = '4,"opens here\n'
    lines[6] = '7,"quoted, properly"\n'
    parsed = _parse("".join(lines).encode())
    _accounted(parsed)
    assert parsed.rejects.get_column("source_line").to_list() == [4]
    assert parsed.frame.filter(pl.col("id") == "7").get_column("v").item() == "quoted, properly"
    assert parsed.frame.height == 7


def test_quoted_line_breaks_blank_and_ragged_lines_are_each_accounted():
    data = b'id,v\n1,"two\nlines"\n\n2,ok\n3\n4,a,b\n5,"x ""y"""\n'
    parsed = _parse(data)
    assert (parsed.lines, parsed.blank_lines, parsed.rows_in) == (8, 1, 5)
    assert parsed.frame.get_column("v").to_list() == ["two\nlines", "ok", 'x "y"']
    assert parsed.frame.get_column(cleaning.SOURCE_LINE).to_list() == [2, 5, 8]
    assert parsed.rejects.select("source_line", "record", "reason").rows() == [
        (6, "3", "line 6 has 1 fields, the header has 2"),
        (7, "4,a,b", "line 7 has 3 fields, the header has 2"),
    ]


def test_a_broken_header_quarantines_every_line_with_its_text():
    parsed = _parse(b'id,"v\n1,a\n\n2,b\n')
    assert parsed.frame.height == 0 and parsed.rows_in == 3 and parsed.blank_lines == 1
    rows = parsed.rejects.select("source_line", "rule", "record").rows()
    assert rows == [(0, "unreadable_file", ""), (1, "unreadable_file", 'id,"v'), (2, "unreadable_file", "1,a"),
                    (4, "unreadable_file", "2,b")]  # fmt: skip
    assert (
        "the header (line 1) cannot be read: a quote opens a field that never closes"
        in (parsed.rejects.get_column("reason")[0])
    )


def test_header_cells_are_unescaped_like_data_cells():
    fast = _parse(b'"a""b","c,d"\n1,2\n')
    slow = _parse(b'"a""b","c,d"\n1,2\n3\n')  # the ragged line sends it to the scanner
    assert fast.frame.columns[1:3] == ['a"b', "c,d"] and fast.frame.height == 1
    assert [c for c in slow.frame.columns if c != cleaning.SOURCE_LINE][:2] == ['a"b', "c,d"]
    assert slow.frame.height == 1 and slow.rejects.height == 1


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-be", "utf-32", "utf-32-be"])
def test_line_endings_and_boms_are_detected_before_parsing(newline, encoding):
    text = newline.join(["id,v", "1,café", "2,b", ""])
    data = text.encode(encoding)
    if encoding in ("utf-16-be", "utf-32-be"):
        data = codecs.BOM_UTF16_BE + data if "16" in encoding else codecs.BOM_UTF32_BE + data
    sniffed = cleaning.sniff(data[: cleaning.SNIFF_BYTES])
    assert sniffed.newline == newline and sniffed.problem is None
    parsed = _parse(data)
    _accounted(parsed)
    assert parsed.frame.columns == [cleaning.SOURCE_LINE, "id", "v", *cleaning.LINEAGE[:1], cleaning.SEQ]
    assert parsed.frame.get_column("v").to_list() == ["café", "b"]
    assert parsed.frame.get_column(cleaning.SOURCE_LINE).to_list() == [2, 3]


@pytest.mark.parametrize(
    ("codec", "named"),
    [
        ("utf-16-le", "UTF-16LE"),
        ("utf-16-be", "UTF-16BE"),
        ("utf-32-le", "UTF-32LE"),
        ("utf-32-be", "UTF-32BE"),
    ],
)
def test_wide_text_without_a_bom_is_rejected_whole_with_the_fix(codec, named):
    data = "id,v\n1,a\n2,b\n".encode(codec)
    parsed = _parse(data)
    assert parsed.frame.height == 0 and parsed.rows_in == 0
    (rule, reason), *_ = parsed.rejects.select("rule", "reason").rows()
    assert rule == "encoding"
    assert reason.startswith(f"f.csv looks like {named} without a byte-order mark")
    assert f"set source.encoding: {codec} in the contract" in reason
    named_contract = Contract(columns=CONTRACT.columns, source={"encoding": codec})
    assert _parse(data, contract=named_contract).frame.get_column("v").to_list() == ["a", "b"]


def test_binary_bytes_and_unknown_encodings_are_rejected_not_raised():
    binary = _parse(b"\x00\x01\x00\x00\x00\x02\x00\x00" * 64)
    assert binary.rejects.get_column("reason")[0].startswith("f.csv is binary data")
    unknown = _parse(
        b"id,v\n1,a\n", contract=Contract(columns=CONTRACT.columns, source={"encoding": "klingon"})
    )
    assert unknown.rejects.get_column("reason")[0].startswith("unknown encoding 'klingon'")
    bad_gzip = _parse(b"\x1f\x8b\x08 not really gzip", name="f.csv.gz")
    assert bad_gzip.rejects.get_column("reason")[0].startswith("f.csv.gz is not valid gzip")
    chinese = Contract(columns=CONTRACT.columns, source={"encoding": "utf-16-le"})
    odd = _parse(b"i\x00d\x00,\x00v\x00\n\x00\x00\xd8", contract=chinese)  # a lone surrogate half
    assert odd.rejects.get_column("rule").to_list() == ["encoding"]


def test_a_polars_panic_falls_back_to_the_scanner(monkeypatch):
    def panic(*args, **kwargs):
        raise pl.exceptions.PanicException("called `Result::unwrap()` on an `Err` value: NulError")

    monkeypatch.setattr(cleaning.pl, "read_csv", panic)
    parsed = _parse(b"id,v\n1,a\n2,b\n")
    _accounted(parsed)
    assert parsed.frame.get_column("v").to_list() == ["a", "b"]


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "json", "parquet"])
def test_text_with_a_nul_character_is_quarantined_with_a_reason(fmt, tmp_path):
    rows = [{"id": "1", "v": "fine"}, {"id": "2", "v": "bad\x00byte"}, {"id": "3", "v": "ok"}]
    if fmt == "csv":
        data = "".join(f"{r['id']},{r['v']}\n" for r in [{"id": "id", "v": "v"}, *rows]).encode()
    elif fmt == "ndjson":
        data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    elif fmt == "json":
        data = json.dumps(rows).encode()
    else:
        pl.DataFrame(rows).write_parquet(tmp_path / "f.parquet")
        data = (tmp_path / "f.parquet").read_bytes()
    parsed = _parse(data, fmt=fmt)
    assert parsed.rows_in == 3 and parsed.frame.get_column("id").to_list() == ["1", "3"]
    (rule, column, reason, record), *_ = parsed.rejects.select("rule", "column", "reason", "record").rows()
    assert (rule, column) == ("nul_character", "v")
    assert "column 'v' contains a NUL character (0x00), which PostgreSQL cannot store" in reason
    assert "bad" in record and ("\x00" in record or "\\u0000" in record)


def test_ndjson_lines_keep_their_text_and_gzip_is_sniffed_after_decompressing():
    data = b'{"id": 1, "v": "a"}\r\n\r\n[1, 2]\r\nnot json\r\n{"id": 2, "v": "b"}\r\n'
    parsed = _parse(gzip.compress(codecs.BOM_UTF8 + data), fmt="ndjson", name="f.ndjson.gz")
    assert (parsed.lines, parsed.blank_lines, parsed.rows_in, parsed.frame.height) == (5, 1, 4, 2)
    assert parsed.rejects.select("source_line", "record").rows() == [(3, "[1, 2]"), (4, "not json")]


def test_a_chunk_uses_the_file_sniff_and_shifts_its_line_numbers():
    whole = codecs.BOM_UTF8 + b"id,v\r1,a\r2,b\r3,c\r"
    sniffed = cleaning.sniff(whole[: cleaning.SNIFF_BYTES])
    chunk = b"id,v\r3,c\r"  # the header, then the file's line 4
    parsed = _parse(chunk, sniffed=sniffed, line_offset=2)
    assert parsed.frame.get_column(cleaning.SOURCE_LINE).to_list() == [4]
    broken = _parse(b'id,v\r"3,c\r', sniffed=sniffed, line_offset=2)
    assert broken.rejects.select("source_line", "record").rows() == [(4, '"3,c')]


@pytest.mark.parametrize(("separator", "quote"), [(",", '"'), (";", "'"), ("\t", None)])
def test_random_malformed_csv_accounts_for_every_physical_line(separator, quote):
    rng = random.Random(19)
    contract = Contract(columns=CONTRACT.columns, source={"delimiter": separator, "quote": quote})
    pieces = [
        "a",
        "b c",
        '"q"',
        '"x,y"',
        '"multi\nline"',
        '"',
        'in"side',
        '""',
        "",
        "\x00",
        "'",
        "'s;t'",
        "t\tu",
    ]
    repairs = 0
    for _ in range(200):
        lines = [separator.join(["id", "v", "w"])]
        for _ in range(rng.randint(0, 12)):
            lines.append(separator.join(rng.choice(pieces) for _ in range(rng.choice([1, 2, 3, 3, 3, 4]))))
        text = "\n".join(lines) + rng.choice(["", "\n", "\n\n"])
        parsed = _parse(text.encode(), contract=contract)
        # a chunk's line breaks, counted when it was cut, give the same parse
        given = _parse(text.encode(), contract=contract, newlines=text.count("\n"))
        assert given.frame.equals(parsed.frame) and given.rejects.equals(parsed.rejects), text
        assert (given.lines, given.rows_in, given.blank_lines) == (
            parsed.lines,
            parsed.rows_in,
            parsed.blank_lines,
        )
        line_rejects = parsed.rejects.filter(pl.col("source_line") > 0)
        assert parsed.rows_in == parsed.frame.height + line_rejects.height
        if parsed.rejects.filter(pl.col("source_line") == 0).height:  # the header itself was broken
            continue
        values = parsed.frame.select(pl.exclude(cleaning.LINEAGE, cleaning.SOURCE_LINE)).rows()
        spans = sum(1 + sum((v or "").count("\n") for v in row) for row in values)
        spans += sum(1 + record.count("\n") for record in line_rejects.get_column("record"))
        assert parsed.lines == 1 + spans + parsed.blank_lines, text
        numbers = [*parsed.frame.get_column(cleaning.SOURCE_LINE), *line_rejects.get_column("source_line")]
        assert len(set(numbers)) == len(numbers) and all(2 <= n <= parsed.lines for n in numbers), text
        repaired = cleaning._parse_csv_repaired(text.encode(), separator, quote, "f.csv")
        if repaired is not None:  # the fast repair, when it applies, agrees with the scanner line for line
            repairs += 1
            scanned = cleaning._parse_csv_scanned(text.encode(), separator, quote, "f.csv")
            columns = scanned.frame.columns

            def cells(frame):  # polars reads a quoted empty field as "", the scanner as null: both null later
                return [tuple(None if v == "" else v for v in row) for row in frame.rows()]

            assert cells(repaired.frame.select(columns)) == cells(scanned.frame), text
            assert repaired.rejects.rows() == scanned.rejects.rows(), text
            assert (repaired.lines, repaired.blank_lines) == (scanned.lines, scanned.blank_lines)
    assert repairs > 0 or quote is None


def test_a_line_break_count_given_for_bytes_that_are_then_converted_is_not_used(monkeypatch):
    def slow(*args):
        raise AssertionError("a wrong line count sent a well-formed file down the slow path")

    monkeypatch.setattr(cleaning, "_parse_csv_repaired", slow)
    monkeypatch.setattr(cleaning, "_parse_csv_scanned", slow)
    parsed = _parse(b"id,v\r1,a\r2,b\r", newlines=0)  # "\r" line ends become "\n" before parsing
    assert (parsed.lines, parsed.rows_in, parsed.frame.get_column("v").to_list()) == (3, 2, ["a", "b"])
    with_bom = _parse(b"\xef\xbb\xbfid,v\n1,a\n", newlines=2)
    assert (with_bom.lines, with_bom.frame.get_column("v").to_list()) == (2, ["a"])
