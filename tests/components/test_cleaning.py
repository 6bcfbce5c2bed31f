"""Casting text to contract types: thousands separators, several date formats, number affixes."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from pipelines.components.cleaning import cast_to_contract
from pipelines.components.registry import Problem, load_contract


def _contract(tmp_path: Path, columns: str):
    path = tmp_path / "contracts" / "things.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("columns:\n" + columns)
    problems: list[Problem] = []
    contract = load_contract(path, problems)
    return contract, problems


def _cast(tmp_path, columns: str, values: dict[str, list[str | None]]):
    contract, problems = _contract(tmp_path, columns)
    assert problems == []
    frame = pl.DataFrame(values, schema=dict.fromkeys(values, pl.String))
    return cast_to_contract(frame, contract)


def test_thousands_separators_in_integers_and_decimals(tmp_path):
    result = _cast(
        tmp_path,
        '  n: {type: int64, thousands: ","}\n  d: {type: "decimal(12,2)", thousands: ","}\n',
        {"n": ["1,250,000", "7405", " 12,500 "], "d": ["1,250,000", "899,000.50", "0.25"]},
    )
    assert result.bad.height == 0
    assert result.good.get_column("n").to_list() == [1_250_000, 7405, 12_500]
    assert result.good.get_column("d").to_list() == [
        Decimal("1250000.00"),
        Decimal("899000.50"),
        Decimal("0.25"),
    ]


def test_without_thousands_a_separated_number_is_quarantined(tmp_path):
    result = _cast(tmp_path, "  n: {type: int64}\n", {"n": ["1,250,000", "12"]})
    assert result.good.get_column("n").to_list() == [12]
    assert result.bad.get_column("reason").to_list() == ["n: '1,250,000' is not a valid int64"]


def test_two_date_formats_in_one_column(tmp_path):
    result = _cast(
        tmp_path,
        '  day: {type: date, format: ["%Y-%m-%d", "%m/%d/%Y"]}\n',
        {"day": ["2024-03-05", "03/05/2024", "3/5/2024", "15/03/2024", "2024-02-30"]},
    )
    assert result.good.get_column("day").to_list() == [dt.date(2024, 3, 5)] * 3
    assert result.bad.get_column("rule").to_list() == ["type", "type"]
    assert result.bad.get_column("reason").to_list() == [
        "day: '15/03/2024' is not a valid date (expected format %Y-%m-%d or %m/%d/%Y)",
        "day: '2024-02-30' is not a valid date (expected format %Y-%m-%d or %m/%d/%Y)",
    ]


def test_affixes_absorb_units_and_currency(tmp_path):
    result = _cast(
        tmp_path,
        '  sqft: {type: "decimal(9,2)", thousands: ",", affixes: ["sq ft", "sqft"]}\n'
        '  price: {type: int64, thousands: ",", affixes: "$"}\n',
        {
            "sqft": ["1850", "1,850 sq ft", "1850.50", "1,850SQFT", " 920  Sq Ft "],
            "price": ["$1,250,000", "899,000", "$ 5", "1000$", "7"],
        },
    )
    assert result.bad.height == 0
    assert result.good.get_column("sqft").to_list() == [
        Decimal("1850"),
        Decimal("1850"),
        Decimal("1850.5"),
        Decimal("1850"),
        Decimal("920"),
    ]
    assert result.good.get_column("price").to_list() == [1_250_000, 899_000, 5, 1000, 7]


def test_affixes_do_not_make_any_text_a_number(tmp_path):
    result = _cast(
        tmp_path,
        '  sqft: {type: "decimal(9,2)", thousands: ",", affixes: ["sq ft"]}\n',
        {"sqft": ["sq ft", "about 1850 sq ft", "1850 m2", "1850 sq ft sq ft", "1850"]},
    )
    assert result.good.get_column("sqft").to_list() == [Decimal("1850")]
    reasons = result.bad.get_column("reason").to_list()
    assert len(reasons) == 4
    assert reasons[1] == (
        "sqft: 'about 1850 sq ft' is not a valid decimal(9,2) (thousands separator ','; allowed affixes 'sq ft')"
    )


def test_affixes_are_validated(tmp_path):
    _, problems = _contract(
        tmp_path,
        '  name: {type: string, affixes: ["$"]}\n  n: {type: int64, affixes: 5}\n  m: {type: int64, affixes: [""]}\n',
    )
    messages = [str(p) for p in problems]
    assert messages == [
        "contracts/things.yaml, columns.name.affixes = ['$']: affixes apply to number columns only (int, float, decimal).",
        'contracts/things.yaml, columns.n.affixes = 5: must be a text or a list of texts, e.g. ["$", "sq ft"].',
        'contracts/things.yaml, columns.m.affixes = [\'\']: must be a text or a list of texts, e.g. ["$", "sq ft"].',
    ]


def test_a_single_affix_text_is_one_affix(tmp_path):
    contract, problems = _contract(tmp_path, '  n: {type: int64, affixes: "sq ft"}\n')
    assert problems == []
    assert contract.columns["n"].affixes == ("sq ft",)


def test_an_affix_alone_is_not_a_number(tmp_path):
    result = _cast(tmp_path, '  n: {type: int64, affixes: ["$"]}\n', {"n": ["$", "", "1"]})
    # blank text is null (the column is nullable); an affix alone is a failed value
    assert result.good.get_column("n").to_list() == [None, 1]
    assert result.bad.get_column("reason").to_list() == ["n: '$' is not a valid int64 (allowed affixes '$')"]


@pytest.mark.parametrize("affix", ["-", "+", ",", "m2", "1"])
def test_an_affix_that_would_change_the_number_is_refused(tmp_path, affix):
    _, problems = _contract(tmp_path, f'  n: {{type: int64, affixes: ["{affix}"]}}\n')
    assert [p.message for p in problems] == [
        "an affix must not contain digits or be only a sign or separator; it would change the number."
    ]


def test_padded_and_blank_numbers_and_datetimes_cast_as_trimmed_and_null(tmp_path):
    # typed text columns are parsed untrimmed first; a column with a failure is parsed again trimmed
    columns = (
        "  n: {type: int64}\n  f: {type: float64}\n  d: {type: date}\n"
        '  t: {type: datetime, format: "%Y-%m-%d %H:%M:%S", nullable: false}\n'
    )
    clean = {
        "n": ["1", "2"],
        "f": ["1.5", "2"],
        "d": ["2024-01-02", "2024-01-03"],
        "t": ["2024-01-02 10:00:00"] * 2,
    }
    padded = {
        "n": [" 1 ", "2"],
        "f": ["1.5", "  "],
        "d": [" 2024-01-02", "2024-01-03"],
        "t": ["2024-01-02 10:00:00 ", "2024-01-02 10:00:00"],
    }
    assert _cast(tmp_path, columns, clean).bad.height == 0
    result = _cast(tmp_path, columns, padded)
    assert result.bad.height == 0
    assert result.good.rows() == [
        (1, 1.5, dt.date(2024, 1, 2), dt.datetime(2024, 1, 2, 10)),
        (2, None, dt.date(2024, 1, 3), dt.datetime(2024, 1, 2, 10)),
    ]
    blank_required = _cast(tmp_path, columns, {**clean, "t": ["2024-01-02 10:00:00", "   "]})
    assert blank_required.bad.select("column", "rule").rows() == [("t", "not_null")]
