"""collapse_duplicates, the decimal scale check and line counting: the fast paths agree with the definitions."""

import random

import polars as pl
import pytest

from pipelines.components import chunking, cleaning
from pipelines.components.registry import ColumnSpec


def _by_definition(frame, keys, inc):
    """Last wins: the greatest incremental value (nulls lowest), ties broken by the greater _seq."""
    order = ([inc] if inc else []) + ["_seq"]
    return frame.sort(order, nulls_last=False).unique(subset=list(keys), keep="last")


@pytest.mark.parametrize("keys", [("a",), ("a", "b")])
@pytest.mark.parametrize("inc", ["inc", None])
def test_collapse_duplicates_keeps_the_latest_row_per_key(keys, inc):
    rng = random.Random(7)
    for _ in range(100):
        n = rng.randint(0, 40)
        frame = pl.DataFrame(
            {
                "a": [rng.randint(0, 4) for _ in range(n)],
                "b": [rng.choice(["x", "y"]) for _ in range(n)],
                "inc": [rng.choice([None, 1, 2, 3]) for _ in range(n)],
                "_seq": rng.sample(range(1_000), n),
                "row": list(range(n)),
            },
            schema={"a": pl.Int64, "b": pl.String, "inc": pl.Int64, "_seq": pl.Int64, "row": pl.Int64},
        )
        kept, collapsed = cleaning.collapse_duplicates(frame, keys, inc)
        expected = _by_definition(frame, keys, inc)
        assert collapsed == n - expected.height
        assert sorted(kept.get_column("row")) == sorted(expected.get_column("row"))


def test_collapse_duplicates_keeps_input_order_and_handles_repeated_seq():
    frame = pl.DataFrame(
        {"k": [3, 1, 3, 2], "inc": [1, 5, 2, 1], "_seq": [10, 11, 12, 13], "v": list("abcd")}
    )
    kept, collapsed = cleaning.collapse_duplicates(frame, ("k",), "inc")
    assert (kept.get_column("v").to_list(), collapsed) == (["b", "c", "d"], 1)
    # _seq values that repeat cannot identify rows: the result is still one row per key
    same_seq = frame.with_columns(pl.lit(1).alias("_seq"))
    kept, collapsed = cleaning.collapse_duplicates(same_seq, ("k",), "inc")
    assert sorted(kept.get_column("v").to_list()) == ["b", "c", "d"] and collapsed == 1


@pytest.mark.parametrize(
    ("text", "scale", "valid"),
    [
        ("1.23", 2, True),
        ("1.230000", 2, True),  # trailing zeros lose nothing
        ("1.234", 2, False),  # would round away a digit
        ("1.2300001", 2, False),
        ("-0.001", 2, False),
        ("5", 0, True),
        ("5.0", 0, True),
        ("5.5", 0, False),
        (" 7.10 ", 1, True),
    ],
)
def test_decimal_never_rounds_silently(text, scale, valid):
    col = ColumnSpec(name="x", type=f"decimal(12,{scale})")
    value = pl.DataFrame({"x": [text]}).select(cleaning._parse_expr(pl.col("x"), col)).item()
    assert (value is not None) == valid


_TEXTS = {  # per type: valid, padded, blank, null-value tokens and invalid texts
    "int64": ["12", "-3", " 7 ", "", "  ", "NA", "0", "x1", "1.5", None],
    "int32": ["5", "99999999999", " 4", "\t", "NA", "-", None],
    "float64": ["1.5", "1e3", " 2.5", "nan", "NA", "", "abc", None],
    "decimal(12,2)": ["1.23", "1.234", " 7.10 ", "", "NA", "1,5", "0", None],
    "bool": ["true", "False", " yes ", "", "  ", "NA", "maybe", "0", None],
    "date": ["2024-01-02", " 2024-01-03", "2024-13-01", "", "NA", None],
    "datetime": ["2024-01-02 03:04:05", "2024-01-02T03:04:05 ", "bad", " ", "NA", None],
    "string": ["a", " b ", "", "   ", "NA", "0", None],
}


@pytest.mark.parametrize("null_values", [["NA", "0"], [""], []])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cast_marks_rows_for_the_full_rules_with_the_same_result(null_values, seed):
    """cast_to_contract's one-pass typing plus the full rules on marked rows == the full rules on every row."""
    from pipelines.components.registry import Contract

    rng = random.Random(seed)
    columns, data = {}, {}
    for number, type_ in enumerate(_TEXTS):
        name = f"c{number}"
        columns[name] = ColumnSpec(
            name=name, type=type_, nullable=rng.random() < 0.6, false_values=("no", "")
        )
        texts = _TEXTS[type_]  # mostly the valid first text, so that some rows pass every column
        data[name] = [texts[0] if rng.random() < 0.9 else rng.choice(texts) for _ in range(300)]
    data["extra"] = [rng.choice(["x", None]) for _ in range(300)]
    del data["c1"]  # a contract column the source lacks
    contract = Contract(columns=columns, source={"null_values": null_values})
    frame = pl.DataFrame(data, schema=dict.fromkeys(data, pl.String)).with_columns(
        pl.lit("f.csv").alias("_source_file"),
        pl.int_range(2, 302, dtype=pl.Int64).alias("_source_line"),
        pl.int_range(2, 302, dtype=pl.Int64).alias("_seq"),
    )
    for keys in [(), ("c0",)]:
        got = cleaning.cast_to_contract(frame, contract, primary_key=keys, pii=("c7",))
        want = cleaning._cast_rows(frame, contract, primary_key=keys, keep_extra=True, pii=("c7",))
        assert got.good.equals(want.good) and got.good.schema == want.good.schema
        assert got.bad.equals(want.bad)
        assert (got.extra_columns, got.missing_columns) == (want.extra_columns, want.missing_columns)
        assert got.good.height and got.bad.height  # both kinds of rows, and padded values rejoined


@pytest.mark.parametrize("step", [1, 3, 1 << 20])
def test_line_counts_count_like_the_definition(monkeypatch, step):
    monkeypatch.setattr(chunking, "_COUNT_STEP", step)
    rng = random.Random(11)
    cases = [b"", b"\n", b"a", b"a\n", b"a\nb", b"\n\n\r\n", b"h\n" + b"x,y\n" * 1000 + b"z"]
    cases += [bytes(rng.choice(b"ab\n\r,") for _ in range(rng.randint(0, 50))) for _ in range(200)]
    for data in cases:
        assert cleaning._physical_lines(data) == data.count(b"\n") + (0 if data.endswith(b"\n") else 1), data
        start, end = sorted(rng.randint(0, len(data) + 2) for _ in range(2))
        assert chunking.count_newlines(data, start, end) == data.count(b"\n", start, end), (data, start, end)
