"""collapse_duplicates and the decimal scale check: the fast paths agree with the definitions."""

import random

import polars as pl
import pytest

from pipelines.components import cleaning
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
