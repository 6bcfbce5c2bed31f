"""Data contracts: a contract's expectations, in Great Expectations' own vocabulary, checked and run.

Great Expectations (GX) 1.x is the engine of record. A contract's ``expectations`` are GX
expectation names with GX arguments; :func:`parse_expectations` builds each one as a GX
``Expectation`` (so GX validates the arguments) and :func:`compile_suite` turns a contract into
a GX ``ExpectationSuite``. Every result is a GX ``ExpectationValidationResult`` produced by the
expectation's own ``metrics_validate``: GX decides success, applies ``mostly`` and shapes the
result (observed value, unexpected count and percent, sample of unexpected values).

What GX needs to decide, its *metrics* (row count, null count, count of values outside a range,
a column's max, ...), is computed here with polars for the metrics in :data:`POLARS_METRICS`,
following the semantics of GX's pandas engine (null and NaN are missing, and map expectations
other than the null checks ignore missing values). An expectation that needs any other metric,
uses a ``row_condition``, or meets a case the polars code does not handle runs on GX's own
pandas engine instead, so every GX expectation works; tests/components/test_quality.py runs each
polars metric through both engines and compares the results.

No Prefect here: workflows call :func:`check_batch` (ingest) or :func:`evaluate` (validate),
then :func:`record` and :func:`report_markdown`.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import polars as pl

from pipelines.components.cleaning import QUARANTINE_SCHEMA, SOURCE_FILE, SOURCE_LINE
from pipelines.components.errors import PipelinesError, did_you_mean
from pipelines.components.registry import ColumnSpec, Problem
from pipelines.lake.layout import META, SYSTEM_COLUMNS

# Great Expectations (~2 s to import) is imported inside the functions that use it, so a contract
# without expectations, the CLI and `pipelines env` never pay for it.
if TYPE_CHECKING:
    import great_expectations as gx
    from great_expectations.expectations.expectation import Expectation

    from pipelines.components.registry import DatasetSpec
    from pipelines.components.resources import Lake

logger = logging.getLogger(__name__)

SEVERITIES = ("error", "warn")
PARAMETER = "$PARAMETER"
PARTIAL_UNEXPECTED = 20
VALIDATIONS = "validations"

# Expectations whose metrics exist only for SQL (or Spark) data sources; a batch here is a frame.
SQL_ONLY = {
    "unexpected_rows_expectation": "runs a SQL query against a SQL data source",
    "expect_query_results_to_match_comparison": "runs a SQL query against a SQL data source",
    "expect_table_row_count_to_equal_other_table": "compares two tables of one SQL data source",
}
# Arguments the pipelines set themselves.
RESERVED_ARGUMENTS = {
    "batch_id": "the batch is chosen by the workflow",
    "result_format": "results are always recorded in GX's BASIC format",
    "catch_exceptions": "an expectation that cannot be evaluated is always recorded as failed",
    "severity": "write severity next to the expectation's name (error or warn), not among its arguments",
    "id": "ids are assigned by the suite",
    "rendered_content": "rendering is GX's",
}
_HIDDEN_FIELDS = {
    "id",
    "rendered_content",
    "batch_id",
    "result_format",
    "catch_exceptions",
    "severity",
    "windows",
}
_GENERAL_FIELDS = ("notes", "description", "meta")
_REFERENCE = re.compile(r"^([a-z][a-z0-9_]{0,62})\.([^.\s]+)$")
_DOMAIN_KEYS = ("column", "column_A", "column_B", "column_list")

VALIDATIONS_SCHEMA = {
    "run_id": pl.String,
    "workflow": pl.String,
    "dataset": pl.String,
    "scope": pl.String,
    "partition": pl.String,
    "index": pl.Int64,
    "expectation": pl.String,
    "kwargs": pl.String,
    "severity": pl.String,
    "level": pl.String,
    "engine": pl.String,
    "success": pl.Boolean,
    "action": pl.String,
    "observed_value": pl.String,
    "element_count": pl.Int64,
    "unexpected_count": pl.Int64,
    "unexpected_percent": pl.Float64,
    "partial_unexpected_list": pl.String,
    "exception": pl.String,
    "validated_at": pl.Datetime("us", "UTC"),
}


class ValidationFailedError(PipelinesError):
    """An error-severity expectation failed: the batch was not promoted (ingest) or the data fails (validate).

    ``result`` holds the workflow's result (an IngestResult or a ValidationResult) with every outcome.
    """

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


# the contract's expectations ------------------------------------------------------------------


@dataclass(frozen=True)
class ExpectationSpec:
    """One entry of a contract's ``expectations`` list, checked against GX."""

    index: int
    name: str
    kwargs: Mapping[str, Any]
    severity: str | None = None  # error | warn; None: the dataset's quality_policy decides
    level: str = "table"  # row: fails individual rows (quarantinable); table: passes or fails the batch
    columns: tuple[str, ...] = ()

    def severity_under(self, policy: str) -> str:
        """The severity in force: the entry's own, else error (quality_policy fail, quarantine) or warn."""
        return self.severity or ("warn" if policy == "warn" else "error")

    @property
    def parameters(self) -> list[str]:
        """The ``$PARAMETER`` expressions among the arguments."""
        return [v[PARAMETER] for v in self.kwargs.values() if _is_parameter(v)]

    @property
    def call(self) -> str:
        """How the expectation reads in reasons and reports: name(arg=value, ...)."""
        args = ", ".join(f"{k}={_show_argument(v)}" for k, v in self.kwargs.items())
        return f"{self.name}({args})"


def _shown_value(value: Any) -> Any:
    """A value as a problem message shows it: dates and times as ISO text, the rest as written."""
    return value.isoformat() if isinstance(value, date) else value


def _is_parameter(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {PARAMETER}


def _show_argument(value: Any) -> str:
    if _is_parameter(value):
        return f"${value[PARAMETER]}"
    if isinstance(value, list | tuple | set):
        items = [_show_argument(v) for v in list(value)[:10]]
        more = f", ... (+{len(value) - 10})" if len(value) > 10 else ""
        return f"[{', '.join(items)}{more}]"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def registered_expectations() -> list[str]:
    """Every expectation name GX knows (its core expectations and any registered custom ones)."""
    from great_expectations.expectations.registry import list_registered_expectation_implementations

    return sorted(list_registered_expectation_implementations())


def _gx_not_found() -> type[Exception]:
    from great_expectations.exceptions import ExpectationNotFoundError

    return ExpectationNotFoundError


def _gx_validation_error() -> type[Exception]:
    from great_expectations.compatibility import pydantic as gx_pydantic

    return gx_pydantic.ValidationError


def _expectation_class(name: str) -> type[Expectation] | None:
    try:
        from great_expectations.expectations.registry import get_expectation_impl

        return get_expectation_impl(name)
    except _gx_not_found():
        return None


def _level(cls: type[Expectation]) -> str:
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )

    row = (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)
    return "row" if issubclass(cls, row) else "table"


def _domain_columns(cls: type[Expectation], kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    """The data columns an expectation is about (empty for table-shape expectations)."""
    from great_expectations.expectations.expectation import (
        ColumnAggregateExpectation,
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )

    data_kinds = (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
        ColumnAggregateExpectation,
    )
    if not issubclass(cls, data_kinds):
        return ()
    names: list[str] = []
    for key in _DOMAIN_KEYS:
        value = kwargs.get(key)
        if isinstance(value, str):
            names.append(value)
        elif isinstance(value, list):
            names += [str(v) for v in value]
    return tuple(names)


def _as_list(raw: Any, where: str, problems: list[Problem]) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        problems.append(
            Problem(
                where,
                "expectations",
                None,
                "must be a list of entries such as {expect_column_values_to_not_be_null: {column: id}, severity: error}.",
            )
        )
        return []
    return raw


def check_shapes(raw: Any, where: str, problems: list[Problem]) -> tuple[dict, ...]:
    """What can be checked of a contract's ``expectations`` without Great Expectations (the list's shape,
    one name per entry, severities, arguments as mappings, reserved arguments); returns the entries.

    The rest (the name is a GX expectation, its arguments build it, the columns it names) is checked by
    :func:`parse_expectations` when the expectations are first used, so a run that validates nothing
    never imports GX; ``pipelines registry check`` does both at once."""
    for index, entry in enumerate(_as_list(raw, where, problems)):
        shape = _shape(index, entry, where, problems)
        if shape is not None:
            _reserved(shape[1], where, f"expectations[{index}].{shape[0]}", problems)
    return tuple(raw) if isinstance(raw, list) else ()


def parse_expectations(
    raw: Any, columns: Mapping[str, ColumnSpec], where: str, problems: list[Problem]
) -> tuple[ExpectationSpec, ...]:
    """Check a contract's ``expectations`` list against GX; every problem is appended, nothing raised.

    Each entry is ``{<expectation name>: {<GX arguments>}, severity: error|warn}``. The name must
    be a GX expectation, the arguments must build it (GX's own validation, reported in plain
    words), the columns it names must be in the contract and its bounds and value sets must
    suit their types.
    """
    specs = []
    for index, entry in enumerate(_as_list(raw, where, problems)):
        spec = _parse_entry(index, entry, columns, where, problems)
        if spec is not None:
            specs.append(spec)
    return tuple(specs)


def _shape(
    index: int, entry: Any, where: str, problems: list[Problem]
) -> tuple[str, dict, str | None] | None:
    """(name, arguments, severity) of an entry, or None when it cannot be read as one expectation."""
    label = f"expectations[{index}]"
    if not isinstance(entry, dict):
        problems.append(
            Problem(
                where,
                label,
                entry if isinstance(entry, str) else None,
                "must be a mapping: an expectation name with its arguments and an optional severity, "
                "e.g. {expect_column_values_to_not_be_null: {column: id}, severity: error}.",
            )
        )
        return None
    names = [str(k) for k in entry if k != "severity"]
    if len(names) != 1:
        found = f"found {', '.join(names)}" if names else "found none"
        problems.append(
            Problem(
                where,
                label,
                None,
                f"must name exactly one expectation ({found}); write one entry per expectation.",
            )
        )
        return None
    name = names[0]
    severity = entry.get("severity")
    if severity is not None and severity not in SEVERITIES:
        problems.append(
            Problem(
                where,
                f"{label}.severity",
                severity,
                "must be error or warn (leave it out to use the dataset's quality_policy)."
                + did_you_mean(str(severity), SEVERITIES),
            )
        )
    label = f"{label}.{name}"
    if name in SQL_ONLY:
        problems.append(
            Problem(
                where,
                label,
                None,
                f"this GX expectation {SQL_ONLY[name]}; pipelines validate data frames, so it cannot run here.",
            )
        )
        return None
    kwargs = entry[name]
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        problems.append(
            Problem(
                where,
                label,
                kwargs,
                "its arguments must be a mapping, e.g. {column: amount, min_value: 0}.",
            )
        )
        return None
    return name, {str(k): v for k, v in kwargs.items()}, severity


def _reserved(kwargs: Mapping[str, Any], where: str, label: str, problems: list[Problem]) -> None:
    for key in kwargs:
        if key in RESERVED_ARGUMENTS:
            problems.append(
                Problem(where, f"{label}.{key}", None, f"cannot be set here: {RESERVED_ARGUMENTS[key]}.")
            )


def _parse_entry(
    index: int, entry: Any, columns: Mapping[str, ColumnSpec], where: str, problems: list[Problem]
) -> ExpectationSpec | None:
    first = len(problems)
    shape = _shape(index, entry, where, problems)
    if shape is None:
        return None
    name, kwargs, severity = shape
    ok = len(problems) == first  # a bad severity: still check the rest, return nothing
    label = f"expectations[{index}].{name}"
    cls = _expectation_class(name)
    if cls is None:
        hint = did_you_mean(name, registered_expectations())
        problems.append(
            Problem(
                where,
                label,
                None,
                "is not a Great Expectations expectation."
                + (hint or " Names are GX 1.x's, e.g. expect_column_values_to_be_between."),
            )
        )
        return None
    before = len(problems)
    _reserved(kwargs, where, label, problems)
    constructible = {k: v for k, v in kwargs.items() if k not in RESERVED_ARGUMENTS}
    try:
        cls(**constructible)
    except _gx_validation_error() as exc:
        for argument, value, message in _explain(exc, cls, name, constructible):
            column = f"{label}.{argument}" if argument else label
            problems.append(Problem(where, column, value, message))
    except Exception as exc:  # GX's own configuration errors
        problems.append(Problem(where, label, None, f"Great Expectations rejects it: {exc}"))
    domain = _domain_columns(cls, kwargs)
    for key in _DOMAIN_KEYS:
        value = kwargs.get(key)
        named = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        for column in named:
            if domain and str(column) not in columns:
                problems.append(
                    Problem(
                        where,
                        f"{label}.{key}",
                        column,
                        f"is not a column of the contract.{did_you_mean(str(column), columns)}",
                    )
                )
    if len(problems) == before:
        problems += [
            Problem(where, f"{label}.{arg}", _shown_value(value), msg)
            for arg, value, msg in _semantics(name, kwargs, columns)
        ]
    if len(problems) != before or not ok:
        return None
    return ExpectationSpec(
        index=index,
        name=name,
        kwargs=kwargs,
        severity=severity,
        level=_level(cls),
        columns=domain,
    )


_WANTS = {
    "type_error.float": "a number",
    "type_error.integer": "a whole number",
    "type_error.bool": "true or false",
    "type_error.str": "text",
    "type_error.list": "a list",
    "type_error.set": "a list",
    "type_error.tuple": "a list",
    "value_error.date": "a date such as 2024-01-31",
    "value_error.datetime": "a date and time such as 2024-01-31T00:00:00Z",
    "type_error.none.not_allowed": "given a value",
    "value_error.any_str.min_length": "not empty",
    "value_error.list.min_items": "a list that is not empty",
}


def _explain(exc: Exception, cls: type[Expectation], name: str, kwargs: Mapping[str, Any]):
    """GX's (pydantic's) complaints, one per argument, in plain words: (argument, value, message)."""
    by_argument: dict[str, list[dict]] = {}
    for error in exc.errors():
        by_argument.setdefault(str(error["loc"][0]) if error["loc"] else "__root__", []).append(error)
    arguments = [f for f in cls.__fields__ if f not in _HIDDEN_FIELDS and f not in _GENERAL_FIELDS]
    arguments += [f for f in _GENERAL_FIELDS if f in cls.__fields__]
    for argument, errors in by_argument.items():
        kinds = [e["type"] for e in errors]
        if argument == "__root__":
            if len(by_argument) > 1:
                continue  # a consequence of an argument reported on its own
            for error in errors:
                yield None, None, f"Great Expectations rejects the arguments: {error['msg']}."
        elif "value_error.extra" in kinds:
            yield (
                argument,
                None,
                f"is not an argument of {name}; it takes {', '.join(arguments)}."
                + did_you_mean(argument, arguments),
            )
        elif "value_error.missing" in kinds:
            yield argument, None, f"is required by {name}."
        else:
            wants: list[str] = []
            for error in errors:
                if error["type"] == "type_error.dict":
                    continue  # the {$PARAMETER: ...} alternative GX also accepts
                kind = error["type"]
                limit = (error.get("ctx") or {}).get("limit_value")
                if kind.startswith("value_error.number.not_"):
                    text = {"le": "at most", "lt": "less than", "ge": "at least", "gt": "more than"}[
                        kind.rsplit("_", 1)[-1]
                    ]
                    wants.append(f"{text} {limit}")
                else:
                    wants.append(_WANTS.get(kind, error["msg"]))
            wants = list(dict.fromkeys(wants)) or ["a value Great Expectations accepts"]
            yield (
                argument,
                kwargs.get(argument),
                f"must be {' or '.join(wants)} (Great Expectations says: {errors[0]['msg']}).",
            )


def _type_family(column: ColumnSpec) -> str:
    if column.type == "string":
        return "string"
    if column.type in ("date", "datetime", "bool"):
        return column.type
    return "number"


def _fits(value: Any, column: ColumnSpec) -> str | None:
    """Why a literal cannot be compared with the column's values, or None when it can."""
    family = _type_family(column)
    if value is None or _is_parameter(value):
        return None
    if family == "number":
        ok = isinstance(value, int | float | Decimal) and not isinstance(value, bool)
        want = "a number"
    elif family == "string":
        ok = isinstance(value, str)
        want = "text (quote it in YAML, e.g. '01')"
    elif family == "bool":
        ok = isinstance(value, bool)
        want = "true or false"
    elif family == "date":
        ok = isinstance(value, date) and not isinstance(value, datetime)
        want = "a date such as 2024-01-31"
    else:
        if not isinstance(value, datetime):
            return f"{column.name} is a datetime column; write a date and time such as 2024-01-31T00:00:00Z"
        if column.timezone and value.tzinfo is None:
            return (
                f"{column.name} is stored in UTC (it has timezone {column.timezone}); give the time zone too, "
                "e.g. 2024-01-31T00:00:00Z"
            )
        if not column.timezone and value.tzinfo is not None:
            return f"{column.name} has no time zone; write the time without one, e.g. 2024-01-31 00:00:00"
        return None
    if ok:
        return None
    return f"{column.name} is a {column.type} column; write {want}"


_BOUNDED = {
    "expect_column_values_to_be_between",
    "expect_column_min_to_be_between",
    "expect_column_max_to_be_between",
    "expect_column_median_to_be_between",
}
_NUMERIC_AGGREGATES = {
    "expect_column_sum_to_be_between",
    "expect_column_mean_to_be_between",
    "expect_column_stdev_to_be_between",
}
_SETS = {
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_not_be_in_set",
    "expect_column_distinct_values_to_be_in_set",
    "expect_column_distinct_values_to_contain_set",
    "expect_column_distinct_values_to_equal_set",
    "expect_column_most_common_value_to_be_in_set",
}


def _semantics(name: str, kwargs: Mapping[str, Any], columns: Mapping[str, ColumnSpec]):
    """Checks GX leaves to run time: bounds and sets that cannot match the column, bad regexes, parameters."""
    name_column = kwargs.get("column")
    column = columns.get(name_column) if isinstance(name_column, str) else None
    if column is not None and name in _BOUNDED and _type_family(column) in ("string", "bool"):
        yield (
            "column",
            column.name,
            f"is a {column.type} column; {name} compares numbers, dates and times "
            "(for text, see expect_column_value_lengths_to_be_between or expect_column_values_to_match_regex).",
        )
        return
    for key in ("min_value", "max_value"):
        value = kwargs.get(key)
        if column is not None and value is not None and name in _BOUNDED:
            why = _fits(value, column)
            if why:
                yield key, value, f"cannot be compared with the column: {why}."
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is not None and high is not None and not _is_parameter(low) and not _is_parameter(high):
        try:
            if low > high:
                yield (
                    "min_value",
                    low,
                    f"is greater than max_value ({_show_argument(high)}); nothing could pass.",
                )
        except TypeError:
            pass  # e.g. one with a time zone, one without: reported against the column above
    if column is not None and name in _NUMERIC_AGGREGATES and _type_family(column) != "number":
        yield "column", column.name, f"is a {column.type} column; this expectation needs a number column."
    if column is not None and name in _SETS:
        values = kwargs.get("value_set")
        if isinstance(values, list):
            for value in values:
                why = _fits(value, column)
                if why:
                    yield "value_set", value, f"can never match: {why}."
                    break
    for key in ("regex",):
        value = kwargs.get(key)
        if isinstance(value, str):
            try:
                re.compile(value)
            except re.error as exc:
                yield key, value, f"is not a valid regular expression: {exc}."
    for key in ("regex_list",):
        for value in kwargs.get(key) or []:
            try:
                re.compile(str(value))
            except re.error as exc:
                yield key, value, f"is not a valid regular expression: {exc}."
    for key, value in kwargs.items():
        if _is_parameter(value):
            expression = value[PARAMETER]
            if not isinstance(expression, str) or not expression.strip():
                yield (
                    key,
                    expression,
                    "a $PARAMETER must be text: <dataset>.<column> or an expression such as now().",
                )
            elif not _REFERENCE.match(expression):
                try:
                    evaluate_expression(expression, datetime.now(UTC))
                except Exception as exc:
                    yield (
                        key,
                        expression,
                        f"cannot be evaluated ({exc}); write <dataset>.<column> for the values of another "
                        "dataset's column, or an expression such as now() - timedelta(days=1).",
                    )


def check_references(specs: Mapping[str, DatasetSpec], problems: list[Problem]) -> None:
    """Every ``{$PARAMETER: <dataset>.<column>}`` names a registry dataset and a column of its contract."""
    for spec in specs.values():
        for index, entry in enumerate(spec.contract.expectation_entries):
            shape = _shape(index, entry, "", [])  # its own problems are reported by check_shapes
            if shape is None:
                continue
            name, kwargs, _ = shape
            for key, value in kwargs.items():
                match = _REFERENCE.match(str(value[PARAMETER])) if _is_parameter(value) else None
                if not match:
                    continue
                dataset, column = match.groups()
                where = f"contracts/{spec.name}.yaml"
                label = f"expectations[{index}].{name}.{key}"
                other = specs.get(dataset)
                if other is None:
                    problems.append(
                        Problem(
                            where,
                            label,
                            value[PARAMETER],
                            f"names dataset {dataset!r}, which is not in the registry.{did_you_mean(dataset, specs)}",
                        )
                    )
                elif column not in other.contract.columns:
                    problems.append(
                        Problem(
                            where,
                            label,
                            value[PARAMETER],
                            f"{column!r} is not a column of {dataset}'s contract."
                            + did_you_mean(column, other.contract.columns),
                        )
                    )


# parameters and the suite ---------------------------------------------------------------------


def evaluate_expression(expression: str, now: datetime) -> Any:
    """A GX suite-parameter expression (arithmetic, ``now()``, ``timedelta(...)``); ``now()`` is ``now`` (UTC)."""
    from great_expectations.core.suite_parameters import SuiteParameterParser, parse_string

    parser = SuiteParameterParser()
    parser.fn = {**SuiteParameterParser.fn, "now": lambda: now}
    parse_string(parser.get_parser(), expression, parse_all=True)
    return parser.evaluate_stack(parser.exprStack)


def resolve_parameters(
    expectations: Iterable[ExpectationSpec], lake: Lake | None, now: datetime
) -> tuple[dict[str, Any], dict[str, str]]:
    """Values for every ``$PARAMETER`` of the expectations, and why any could not be found.

    ``<dataset>.<column>`` is the sorted distinct non-null values of that column in the
    namespace's cleaned (else aggregated) table; anything else is a GX expression such as
    ``now() - timedelta(days=1)``, evaluated with ``now()`` = ``now`` (UTC).
    """
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for expectation in expectations:
        for expression in expectation.parameters:
            if expression in values or expression in errors:
                continue
            match = _REFERENCE.match(str(expression))
            try:
                if match is None:
                    values[expression] = evaluate_expression(expression, now)
                    continue
                dataset, column = match.groups()
                zone = next(
                    (z for z in ("cleaned", "aggregated") if lake is not None and lake.exists(z, dataset)),
                    None,
                )
                if zone is None:
                    errors[expression] = (
                        f"${expression} needs the table of {dataset!r}, which does not exist yet in this "
                        f"namespace; ingest {dataset} first"
                    )
                    continue
                found = lake.scan(zone, dataset).select(pl.col(column).drop_nulls().unique().sort()).collect()
                values[expression] = found.to_series().to_list()
            except Exception as exc:
                errors[expression] = f"${expression} could not be resolved: {exc}"
    return values, errors


def build_expectation(
    spec: ExpectationSpec,
    parameters: Mapping[str, Any] | None = None,
    severity: str | None = None,
    *,
    keep_lists: bool = False,
) -> Expectation:
    """The GX expectation, with resolved parameters substituted (unresolved ones stay {$PARAMETER: ...}).

    ``keep_lists`` leaves list-valued parameters (another dataset's values) as {$PARAMETER: ...}:
    GX re-serialises an expectation's arguments on every access, which costs seconds with a value
    set of thousands; the polars metrics substitute them instead (:func:`_resolved`).
    """
    parameters = parameters or {}
    kwargs = {
        key: parameters[value[PARAMETER]]
        if _is_parameter(value)
        and value[PARAMETER] in parameters
        and not (keep_lists and isinstance(parameters[value[PARAMETER]], list))
        else value
        for key, value in spec.kwargs.items()
    }
    cls = _expectation_class(spec.name)
    if cls is None:
        raise PipelinesError(f"{spec.name} is not a Great Expectations expectation.")
    if severity:
        kwargs["meta"] = {**(kwargs.get("meta") or {}), "contract_index": spec.index, "severity": severity}
        from great_expectations.expectations.metadata_types import FailureSeverity

        kwargs["severity"] = {"error": FailureSeverity.CRITICAL, "warn": FailureSeverity.WARNING}[severity]
    return cls(**kwargs)


def compile_suite(
    dataset: str,
    expectations: Sequence[ExpectationSpec],
    policy: str = "quarantine",
    parameters: Mapping[str, Any] | None = None,
) -> gx.ExpectationSuite:
    """The contract as a GX ExpectationSuite named after the dataset, added to an ephemeral context.

    Severities are in GX's terms (error = critical, warn = warning); the contract's own severity and
    position are in each expectation's ``meta``. Unresolved parameters stay ``{$PARAMETER: ...}``.
    """
    import great_expectations as gx

    suite = gx.ExpectationSuite(
        name=dataset,
        expectations=[build_expectation(e, parameters, e.severity_under(policy)) for e in expectations],
    )
    return ephemeral_context().suites.add(suite)


def ephemeral_context():
    """A GX data context kept in memory: no project folder, no progress bars, no analytics."""
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
    )
    import great_expectations as gx

    return gx.get_context(mode="ephemeral", project_config=config)


# evaluation -----------------------------------------------------------------------------------


@dataclass(eq=False)
class Outcome:
    """One expectation evaluated on one frame: GX's result, the rows it failed, what was done."""

    spec: ExpectationSpec
    severity: str
    engine: str  # polars | great_expectations | none (could not be evaluated)
    success: bool
    observed_value: Any = None
    element_count: int | None = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    partial_unexpected_list: list = field(default_factory=list)
    exception: str | None = None
    mask: pl.Series | None = None  # row-level only: True on the rows that fail
    action: str = "passed"

    @property
    def failed_rows(self) -> int:
        return int(self.mask.sum()) if self.mask is not None else 0

    def describe(self) -> str:
        """What was found, in words: 'observed 0', '3 of 10 rows (30%) unexpected, e.g. -5, -1', ..."""
        if self.exception:
            return f"could not be evaluated: {self.exception}"
        if self.unexpected_count is not None:
            total = self.element_count if self.element_count is not None else "?"
            percent = f" ({self.unexpected_percent:.4g}% of non-missing)" if self.unexpected_percent else ""
            sample = ", ".join(_short(v) for v in self.partial_unexpected_list[:5])
            mostly = self.spec.kwargs.get("mostly")
            allowed = f", mostly={mostly}" if mostly is not None else ""
            return f"{self.unexpected_count} of {total} rows unexpected{percent}{allowed}" + (
                f", e.g. {sample}" if sample else ""
            )
        return f"observed {_short(self.observed_value)}"


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(jsonable(value), default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def jsonable(value: Any) -> Any:
    """A JSON-ready copy (GX's converter for numpy, Decimal, datetimes, pandas values); NaN becomes None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    if isinstance(value, float):  # numpy's float64 is a float too
        return None if math.isnan(value) else float(value)
    if type(value).__name__ == "NaTType":  # pandas' missing datetime
        return None
    try:
        from great_expectations.util import convert_to_json_serializable

        converted = convert_to_json_serializable(value)
    except Exception:
        return str(value)
    if isinstance(converted, float) and math.isnan(converted):
        return None
    return converted


class _NotInPolars(Exception):
    """This case is left to GX's own engine."""


# Metrics computed with polars; any other metric sends its expectation to GX's pandas engine.
MAP_CONDITIONS = (
    "column_values.nonnull",
    "column_values.null",
    "column_values.between",
    "column_values.in_set",
    "column_values.not_in_set",
    "column_values.match_regex",
    "column_values.not_match_regex",
    "column_values.unique",
    "column_values.value_length.between",
    "column_values.value_length.equals",
    "column_values.increasing",
    "column_values.decreasing",
    "column_pair_values.a_greater_than_b",
    "column_pair_values.equal",
    "compound_columns.unique",
)
AGGREGATES = ("column.min", "column.max", "column.sum", "column.mean", "column.non_null_proportion")
TABLE_METRICS = ("table.row_count", "table.columns")
POLARS_METRICS = (
    *TABLE_METRICS,
    *AGGREGATES,
    *(
        f"{c}.{s}"
        for c in MAP_CONDITIONS
        for s in ("unexpected_count", "unexpected_values", "filtered_row_count")
    ),
)
_SUFFIXES = ("unexpected_count", "unexpected_values", "filtered_row_count")


def _runtime() -> dict:
    return {"result_format": {"result_format": "BASIC", "partial_unexpected_count": PARTIAL_UNEXPECTED}}


_EVERY_ROW = pl.int_range(pl.len()) >= 0  # True on every row (a bare literal would be one value)


def _value(frame: pl.DataFrame, column: str) -> pl.Expr:
    """The column with NaN read as missing, as GX's pandas engine reads it."""
    if column not in frame.columns:
        raise _NotInPolars(f"no column {column}")
    expr = pl.col(column)
    if frame.schema[column].is_float():
        expr = pl.when(expr.is_nan()).then(None).otherwise(expr)
    return expr


def _is_temporal(frame: pl.DataFrame, column: str) -> bool:
    return frame.schema[column].is_temporal()


def _between(value: pl.Expr, low: Any, high: Any, strict_low: Any, strict_high: Any) -> pl.Expr:
    ok = pl.lit(True)
    if low is not None:
        ok = ok & ((value > low) if strict_low else (value >= low))
    if high is not None:
        ok = ok & ((value < high) if strict_high else (value <= high))
    return ok


def _parse_bound(frame: pl.DataFrame, column: str, bound: Any) -> Any:
    if isinstance(bound, str) and _is_temporal(frame, column):
        from dateutil.parser import parse

        return parse(bound)
    return bound


def _column_ok(frame: pl.DataFrame, name: str, column: str, kwargs: Mapping[str, Any]) -> pl.Expr:
    """True where a (non-missing) value meets the condition, as GX's pandas metric decides."""
    value = _value(frame, column)
    dtype = frame.schema[column]
    if name == "column_values.between":
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        if low is None and high is None:
            raise _NotInPolars("both bounds missing")
        low, high = _parse_bound(frame, column, low), _parse_bound(frame, column, high)
        if low is not None and high is not None and low > high:
            raise _NotInPolars("min_value > max_value")
        return _between(value, low, high, kwargs.get("strict_min"), kwargs.get("strict_max"))
    if name in ("column_values.in_set", "column_values.not_in_set"):
        value_set = kwargs.get("value_set")
        if value_set is None:
            return pl.lit(True)
        if _is_temporal(frame, column) and any(isinstance(v, str) for v in value_set):
            raise _NotInPolars("text values for a temporal column")
        hit = value.is_in(list(value_set))
        return hit if name.endswith(".in_set") else ~hit
    if name in ("column_values.match_regex", "column_values.not_match_regex"):
        if dtype != pl.String:
            raise _NotInPolars("regex on a non-text column")
        hit = value.str.contains(kwargs["regex"])
        return hit if name.endswith(".match_regex") else ~hit
    if name == "column_values.unique":
        return ~value.is_duplicated()
    if name.startswith("column_values.value_length."):
        if dtype != pl.String:
            raise _NotInPolars("lengths of a non-text column")
        length = value.str.len_chars()
        if name.endswith(".equals"):
            return length == kwargs["value"]
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        if low is None and high is None:
            raise _NotInPolars("both bounds missing")
        return _between(length, low, high, kwargs.get("strict_min"), kwargs.get("strict_max"))
    if name in ("column_values.increasing", "column_values.decreasing"):
        if not (dtype.is_numeric() or dtype.is_temporal()):
            raise _NotInPolars("order of a non-numeric column")
        previous = value.forward_fill().shift(1)
        strictly = bool(kwargs.get("strictly"))
        if name.endswith("increasing"):
            in_order = (value > previous) if strictly else (value >= previous)
        else:
            in_order = (value < previous) if strictly else (value <= previous)
        return pl.when(previous.is_null()).then(True).otherwise(in_order)
    raise _NotInPolars(name)


def _condition(
    frame: pl.DataFrame, name: str, domain: Mapping, kwargs: Mapping
) -> tuple[pl.Expr, pl.Expr, list[str]]:
    """(unexpected, included, columns) for a map condition; included = rows GX does not filter out."""
    if name in ("column_values.nonnull", "column_values.null"):
        column = domain["column"]
        missing = _value(frame, column).is_null()
        return (missing if name.endswith("nonnull") else ~missing), _EVERY_ROW, [column]
    if name.startswith("column_values."):
        column = domain["column"]
        included = _value(frame, column).is_not_null()
        ok = _column_ok(frame, name, column, kwargs)
        return included & ~ok.fill_null(False), included, [column]
    if name.startswith("column_pair_values."):
        a, b = domain["column_A"], domain["column_B"]
        value_a, value_b = _value(frame, a), _value(frame, b)
        missing_a, missing_b = value_a.is_null(), value_b.is_null()
        ignore = domain.get("ignore_row_if") or "both_values_are_missing"
        included = {
            "both_values_are_missing": ~(missing_a & missing_b),
            "either_value_is_missing": ~(missing_a | missing_b),
            "neither": _EVERY_ROW,
        }.get(ignore)
        if included is None:
            raise _NotInPolars(f"ignore_row_if={ignore}")
        if name.endswith("a_greater_than_b"):
            ok = (value_a >= value_b) if kwargs.get("or_equal") else (value_a > value_b)
        elif name.endswith(".equal"):
            ok = value_a == value_b
        else:
            raise _NotInPolars(name)
        return included & ~ok.fill_null(False), included, [a, b]
    if name == "compound_columns.unique":
        columns = list(domain["column_list"])
        values = [_value(frame, c) for c in columns]
        missing = [v.is_null() for v in values]
        ignore = domain.get("ignore_row_if") or "all_values_are_missing"
        included = {
            "all_values_are_missing": ~pl.all_horizontal(missing),
            "any_value_is_missing": ~pl.any_horizontal(missing),
            "never": _EVERY_ROW,
        }.get(ignore)
        if included is None:
            raise _NotInPolars(f"ignore_row_if={ignore}")
        duplicated = pl.when(included).then(pl.struct(values)).is_duplicated()
        return included & duplicated, included, columns
    raise _NotInPolars(name)


def _all_distinct(frame: pl.DataFrame, condition: str, columns: list[str], included: pl.Expr) -> int | None:
    """For the uniqueness conditions: the number of rows considered when all their values are distinct
    (then no row fails), else None. Distinct hashes prove distinct values, and counting them is several
    times cheaper than marking duplicates; any collision or duplicate takes the exact path."""
    if condition not in ("column_values.unique", "compound_columns.unique"):
        return None
    values = [_value(frame, c) for c in columns]
    key = values[0] if condition == "column_values.unique" else pl.struct(values)
    counts = frame.select(
        key.hash().filter(included).n_unique().alias("distinct"), included.sum().alias("rows")
    ).row(0)
    return int(counts[1]) if counts[0] == counts[1] else None


def _aggregate(frame: pl.DataFrame, name: str, column: str) -> Any:
    value = _value(frame, column)
    dtype = frame.schema[column]
    if name == "column.non_null_proportion":
        return (
            (frame.height - frame.select(value.is_null().sum()).item()) / frame.height if frame.height else 0
        )
    if name in ("column.sum", "column.mean"):
        if not dtype.is_numeric():
            raise _NotInPolars(f"{name} of a {dtype} column")
        if isinstance(dtype, pl.Decimal):
            value = value.cast(pl.Float64)  # GX converts decimals to floats first
        result = frame.select(value.sum() if name == "column.sum" else value.mean()).item()
        return result
    if name in ("column.min", "column.max"):
        if dtype == pl.Boolean or isinstance(dtype, pl.List | pl.Struct):
            raise _NotInPolars(f"{name} of a {dtype} column")
        return frame.select(value.min() if name == "column.min" else value.max()).item()
    raise _NotInPolars(name)


def _resolved(kwargs: Mapping[str, Any], parameters: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: parameters[v[PARAMETER]] if _is_parameter(v) and v[PARAMETER] in parameters else v
        for k, v in kwargs.items()
    }


def _run_polars(
    frame: pl.DataFrame,
    spec: ExpectationSpec,
    expectation: Expectation,
    severity: str,
    parameters: Mapping[str, Any],
) -> Outcome:
    """Compute the metrics GX asks for with polars, then let GX's metrics_validate decide."""
    dependencies = expectation.get_validation_dependencies(runtime_configuration=_runtime())
    metrics: dict = {}
    mask: pl.Series | None = None  # the rows that fail the expectation's own condition (its map_metric)
    computed: dict[str, tuple[pl.Series, int, list[str]]] = {}
    for metric_name, configuration in dependencies.metric_configurations.items():
        domain = configuration.metric_domain_kwargs
        kwargs = _resolved(configuration.metric_value_kwargs, parameters)
        if any(_is_parameter(v) for v in kwargs.values()):
            raise _NotInPolars("an unresolved parameter")
        if domain.get("row_condition"):
            raise _NotInPolars("row_condition")
        if metric_name == "table.row_count":
            value: Any = frame.height
        elif metric_name == "table.columns":
            value = list(frame.columns)
        elif metric_name in AGGREGATES:
            value = _aggregate(frame, metric_name, domain["column"])
        else:
            condition, _, suffix = metric_name.rpartition(".")
            if condition not in MAP_CONDITIONS or suffix not in _SUFFIXES:
                raise _NotInPolars(metric_name)
            if condition not in computed:  # each condition computed once, read by each of its metrics
                unexpected, included, columns = _condition(frame, condition, domain, kwargs)
                distinct = _all_distinct(frame, condition, columns, included)
                if distinct is not None:
                    computed[condition] = (pl.repeat(False, frame.height, eager=True), distinct, columns)
                else:
                    flags = frame.select(unexpected.alias("unexpected"), included.alias("included"))
                    computed[condition] = (
                        flags.get_column("unexpected").fill_null(False),
                        int(flags.get_column("included").sum()),
                        columns,
                    )
            unexpected_rows, filtered, columns = computed[condition]
            if condition == getattr(expectation, "map_metric", None):
                mask = unexpected_rows
            if suffix == "unexpected_count":
                value = int(unexpected_rows.sum())
            elif suffix == "filtered_row_count":
                value = filtered
            else:
                limit = (kwargs.get("result_format") or {}).get(
                    "partial_unexpected_count", PARTIAL_UNEXPECTED
                )
                rows = frame.select([pl.col(c) for c in columns]).filter(unexpected_rows).head(limit)
                if condition.startswith("column_pair_values."):
                    value = list(zip(*[rows.get_column(c).to_list() for c in columns], strict=True))
                elif condition == "compound_columns.unique":
                    value = rows.to_dicts()
                else:
                    value = rows.get_column(columns[0]).to_list()
        metrics[configuration.id] = value
    result = expectation.metrics_validate(metrics, runtime_configuration=_runtime())
    outcome = _outcome(spec, severity, result, "polars")
    if spec.level == "row" and mask is not None and not outcome.exception:
        outcome.mask = mask
    return outcome


def _exception_message(info: Any) -> str | None:
    if not isinstance(info, dict):
        return None
    if "raised_exception" in info:
        return info.get("exception_message") if info.get("raised_exception") else None
    messages = [
        v.get("exception_message") for v in info.values() if isinstance(v, dict) and v.get("raised_exception")
    ]
    return "; ".join(m for m in messages if m) or None


def _outcome(spec: ExpectationSpec, severity: str, result: Any, engine: str) -> Outcome:
    details = result.result or {}
    exception = _exception_message(result.exception_info)
    return Outcome(
        spec=spec,
        severity=severity,
        engine=engine,
        success=bool(result.success) and not exception,
        observed_value=jsonable(details.get("observed_value")),
        element_count=details.get("element_count"),
        unexpected_count=details.get("unexpected_count"),
        unexpected_percent=details.get("unexpected_percent"),
        partial_unexpected_list=[jsonable(v) for v in (details.get("partial_unexpected_list") or [])][
            :PARTIAL_UNEXPECTED
        ],
        exception=exception,
    )


def _run_gx(
    frame: pl.DataFrame, items: list[tuple[int, ExpectationSpec, Expectation, str]]
) -> dict[int, Outcome]:
    """Run expectations on GX's own pandas engine; rows that fail come from GX's unexpected_index_list."""
    needed: list[str] = []
    whole = False
    for _, spec, expectation, _ in items:
        if not spec.columns or getattr(expectation, "row_condition", None):
            whole = True
        needed += [c for c in spec.columns if c in frame.columns and c not in needed]
    pandas_frame = (frame if whole or not needed else frame.select(needed)).to_pandas()
    context = ephemeral_context()
    batch = (
        context.data_sources.add_pandas("pipelines")
        .add_dataframe_asset("batch")
        .add_batch_definition_whole_dataframe("batch")
        .get_batch(batch_parameters={"dataframe": pandas_frame})
    )
    outcomes: dict[int, Outcome] = {}
    complete = {"result_format": "COMPLETE", "partial_unexpected_count": PARTIAL_UNEXPECTED}
    for position, spec, expectation, severity in items:
        result = batch.validate(expectation, result_format=complete)
        outcome = _outcome(spec, severity, result, "great_expectations")
        indexes = (result.result or {}).get("unexpected_index_list")
        rows = [int(i) for i in indexes or [] if isinstance(i, int | float)]
        # a row-level result whose rows cannot all be named is judged like a table-level one
        if spec.level == "row" and not outcome.exception and len(rows) == (outcome.unexpected_count or 0):
            mask = pl.repeat(False, frame.height, eager=True)
            outcome.mask = mask.scatter(rows, True) if rows else mask
        outcomes[position] = outcome
    return outcomes


def evaluate(
    frame: pl.DataFrame,
    expectations: Sequence[ExpectationSpec],
    *,
    policy: str = "quarantine",
    parameters: Mapping[str, Any] | None = None,
    unresolved: Mapping[str, str] | None = None,
    engine: str = "auto",
) -> list[Outcome]:
    """Evaluate every expectation on the frame; one Outcome per expectation, in contract order.

    ``engine`` is ``auto`` (polars where it can, GX's pandas engine for the rest),
    ``great_expectations`` (GX for everything) or ``polars`` (polars only; a case it cannot
    handle raises). System columns (``_partition``, ``_run_id``, ...) are not shown to GX.
    """
    frame = frame.drop([c for c in SYSTEM_COLUMNS if c in frame.columns])
    parameters, unresolved = parameters or {}, unresolved or {}
    outcomes: dict[int, Outcome] = {}
    fallback: list[tuple[int, ExpectationSpec, Expectation, str]] = []
    for position, spec in enumerate(expectations):
        severity = spec.severity_under(policy)
        missing = [p for p in spec.parameters if p not in parameters]
        if missing:
            reasons = "; ".join(unresolved.get(p, f"${p} has no value") for p in missing)
            outcomes[position] = Outcome(
                spec=spec, severity=severity, engine="none", success=False, exception=reasons
            )
            continue
        try:
            expectation = build_expectation(
                spec, parameters, severity, keep_lists=engine != "great_expectations"
            )
        except Exception as exc:
            outcomes[position] = Outcome(
                spec=spec,
                severity=severity,
                engine="none",
                success=False,
                exception=f"Great Expectations rejects the arguments once parameters are filled in: {exc}",
            )
            continue
        if engine != "great_expectations":
            try:
                outcomes[position] = _run_polars(frame, spec, expectation, severity, parameters)
                continue
            except _NotInPolars as exc:
                if engine == "polars":
                    raise
                logger.debug("%s runs on GX's engine: %s", spec.call, exc)
            except Exception as exc:
                if engine == "polars":
                    raise
                logger.debug("%s runs on GX's engine after a polars error: %s", spec.call, exc)
        if any(_is_parameter(v) for v in expectation.configuration.kwargs.values()):
            expectation = build_expectation(spec, parameters, severity)  # GX substitutes nothing itself
        fallback.append((position, spec, expectation, severity))
    if fallback:
        outcomes.update(_run_gx(frame, fallback))
    return [outcomes[i] for i in range(len(expectations))]


# the quality gate of an ingest batch -----------------------------------------------------------


@dataclass
class BatchCheck:
    """What the contract's expectations decided about one batch."""

    outcomes: list[Outcome]
    kept: pl.DataFrame  # rows to promote (empty when stopped)
    quarantine: pl.DataFrame  # rows failing an error-severity row-level expectation (QUARANTINE_SCHEMA)
    stopped: list[str] = field(default_factory=list)  # why the batch is not promoted (empty: promoted)
    held_back: int = 0  # rows that passed but are not promoted because the batch stopped
    policy_stop: str | None = None  # quality_policy=fail and rows failed the contract's types

    @property
    def status(self) -> str:
        """not_run, passed, warned (promoted, but something failed: rows quarantined or a warning) or failed."""
        if self.stopped:
            return "failed"
        if not self.outcomes:
            return "not_run"
        return "passed" if all(o.success for o in self.outcomes) else "warned"

    @property
    def issues(self) -> list[str]:
        """One line per check that did not pass, saying what was done about it."""
        lines = [f"stopped: {self.policy_stop}"] if self.policy_stop else []
        return lines + [
            f"{o.action}: {o.spec.call} [{o.severity}]: {o.describe()}"
            for o in self.outcomes
            if not o.success
        ]


def check_batch(
    spec: DatasetSpec,
    batch: pl.DataFrame,
    *,
    lake: Lake | None,
    now: datetime,
    contract_failures: int = 0,
    engine: str = "auto",
) -> BatchCheck:
    """Run the contract's expectations on an ingest batch and apply severities and the quality_policy.

    - row-level, severity error: failing rows go to quarantine; the batch also stops when the
      expectation fails (GX's success, so ``mostly`` counts) and either it sets ``mostly`` or the
      policy is ``fail``;
    - table-level (or could not be evaluated), severity error: a failure stops the batch. Table-level
      expectations see the rows left after the row-level quarantine: what would be promoted;
    - severity warn: nothing is removed or stopped; a failure is reported as a warning;
    - quality_policy ``fail`` also stops the batch when ``contract_failures`` (rows or files that
      failed parsing, types or required columns) is not zero.
    ``batch`` keeps its lineage columns (_source_file, _source_line); the expectations do not see them.
    """
    policy = spec.quality_policy
    expectations = spec.contract.expectations
    stopped: list[str] = []
    policy_stop = None
    if policy == "fail" and contract_failures:
        policy_stop = (
            f"{contract_failures} row(s) or file(s) failed the contract's parsing, types or required columns, "
            "and quality_policy is fail"
        )
        stopped.append(policy_stop)
    row_outcomes: list[Outcome] = []
    table_outcomes: list[Outcome] = []
    kept = batch
    quarantining: list[Outcome] = []
    if expectations and batch.width:
        parameters, unresolved = resolve_parameters(expectations, lake, now)
        options = {"policy": policy, "parameters": parameters, "unresolved": unresolved, "engine": engine}
        # Row-level expectations first, on the whole batch; table-level ones then judge what would be promoted.
        row_outcomes = evaluate(batch, [e for e in expectations if e.level == "row"], **options)
        for outcome in row_outcomes:
            if outcome.severity == "error" and outcome.mask is not None and outcome.failed_rows:
                quarantining.append(outcome)
        if quarantining:
            failing = quarantining[0].mask
            for outcome in quarantining[1:]:
                failing = failing | outcome.mask
            kept = batch.filter(~failing)
        table_outcomes = evaluate(kept, [e for e in expectations if e.level != "row"], **options)
    outcomes = sorted(row_outcomes + table_outcomes, key=lambda o: o.spec.index)
    redact_outcomes(outcomes, spec.pii_columns)
    for outcome in outcomes:
        row_level = outcome.mask is not None
        if outcome.severity == "warn":
            outcome.action = "passed" if outcome.success else "warned"
            continue
        if any(outcome is q for q in quarantining):
            outcome.action = "quarantined"
        stops = not outcome.success and (
            not row_level or policy == "fail" or outcome.spec.kwargs.get("mostly") is not None
        )
        if stops:
            outcome.action = "stopped"
            stopped.append(f"{outcome.spec.call}: {outcome.describe()}")
    quarantine = quarantine_rows(batch, quarantining, spec.pii_columns)
    held_back = 0
    if stopped:
        held_back, kept = kept.height, kept.clear()
    return BatchCheck(
        outcomes=outcomes,
        kept=kept,
        quarantine=quarantine,
        stopped=stopped,
        held_back=held_back,
        policy_stop=policy_stop,
    )


PII_SHOWN = "(not shown: PII)"


def redact_outcomes(outcomes: Sequence[Outcome], pii: Iterable[str]) -> None:
    """Drop the values an outcome found (samples, observed value) when its columns include a PII column,
    so reports, logs, errors and _meta/validations name the column, never the value."""
    pii = set(pii)
    if not pii:
        return
    for outcome in outcomes:
        if pii & set(outcome.spec.columns or ()):
            outcome.partial_unexpected_list = [PII_SHOWN] if outcome.partial_unexpected_list else []
            counted = any(word in outcome.spec.name for word in ("count", "proportion", "length"))
            if outcome.observed_value is not None and not counted:  # a min, max, mean... is a value
                outcome.observed_value = PII_SHOWN


def quarantine_rows(
    batch: pl.DataFrame, outcomes: Sequence[Outcome], pii: Iterable[str] = ()
) -> pl.DataFrame:
    """Quarantine rows for the batch rows the outcomes fail: rule = first failing expectation,
    reason = every failing expectation with its arguments and the row's value(s) (a PII column's
    value is not shown)."""
    pii = set(pii)
    if not outcomes or batch.height == 0:
        return pl.DataFrame(schema=QUARANTINE_SCHEMA)
    flags = [f"__q{i}" for i in range(len(outcomes))]
    marked = batch.with_columns([o.mask.alias(f) for o, f in zip(outcomes, flags, strict=True)])
    failing = marked.filter(pl.any_horizontal(flags))
    data_columns = [c for c in batch.columns if c not in SYSTEM_COLUMNS]
    reasons, rules, columns = [], [], []
    for outcome, flag in zip(outcomes, flags, strict=True):
        shown = outcome.spec.columns or ()
        if len(shown) == 1:
            value = pl.concat_str([pl.lit(f"{shown[0]} = "), _shown(shown[0], pii)])
        else:
            values = pl.concat_str([_shown(c, pii) for c in shown], separator=", ")
            value = pl.concat_str([pl.lit(f"({', '.join(shown)}) = ("), values, pl.lit(")")])
        reasons.append(pl.when(pl.col(flag)).then(pl.concat_str([pl.lit(f"{outcome.spec.call}: "), value])))
        rules.append(pl.when(pl.col(flag)).then(pl.lit(outcome.spec.name)))
        columns.append(pl.when(pl.col(flag)).then(pl.lit("|".join(shown))))
    record = pl.struct([pl.col(c).cast(pl.String) for c in data_columns]).struct.json_encode()
    return failing.select(
        (pl.col(SOURCE_FILE) if SOURCE_FILE in failing.columns else pl.lit(None, pl.String)).alias(
            "source_file"
        ),
        (
            pl.col(SOURCE_LINE).cast(pl.Int64) if SOURCE_LINE in failing.columns else pl.lit(None, pl.Int64)
        ).alias("source_line"),
        pl.coalesce(columns).alias("column"),
        pl.coalesce(rules).alias("rule"),
        pl.concat_str(reasons, separator="; ", ignore_nulls=True).alias("reason"),
        record.alias("record"),
    )


def _shown(column: str, pii: Iterable[str] = ()) -> pl.Expr:
    if column in set(pii):
        return pl.lit(PII_SHOWN)
    return pl.col(column).cast(pl.String).str.slice(0, 200).fill_null("null")


# recording and reporting ----------------------------------------------------------------------


def records(
    outcomes: Sequence[Outcome],
    *,
    run_id: str,
    workflow: str,
    dataset: str,
    scope: str,
    partition: str | None,
    validated_at: datetime,
) -> pl.DataFrame:
    """One _meta/validations row per outcome."""
    rows = [
        {
            "run_id": run_id,
            "workflow": workflow,
            "dataset": dataset,
            "scope": scope,
            "partition": partition,
            "index": o.spec.index,
            "expectation": o.spec.name,
            "kwargs": json.dumps(jsonable(dict(o.spec.kwargs)), default=str),
            "severity": o.severity,
            "level": o.spec.level,
            "engine": o.engine,
            "success": o.success,
            "action": o.action,
            "observed_value": json.dumps(o.observed_value, default=str)
            if o.observed_value is not None
            else None,
            "element_count": o.element_count,
            "unexpected_count": o.unexpected_count,
            "unexpected_percent": o.unexpected_percent,
            "partial_unexpected_list": json.dumps(o.partial_unexpected_list, default=str),
            "exception": o.exception,
            "validated_at": validated_at,
        }
        for o in outcomes
    ]
    return pl.DataFrame(rows, schema=VALIDATIONS_SCHEMA)


def record(lake: Lake, frame: pl.DataFrame) -> None:
    """Append to the namespace's _meta/validations Delta table."""
    lake.append(META, VALIDATIONS, frame)


def report_markdown(title: str, status: str, outcomes: Sequence[Outcome], notes: Sequence[str] = ()) -> str:
    """A page a person reads in the Prefect UI: the verdict, then one row per expectation."""
    lines = [f"# {title}", "", f"**{status}**: {len(outcomes)} expectation(s)"]
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.action] = counts.get(outcome.action, 0) + 1
    if counts:
        lines[-1] += " (" + ", ".join(f"{n} {a}" for a, n in sorted(counts.items())) + ")"
    lines += ["", *[f"- {n}" for n in notes]] if notes else []
    lines += [
        "",
        "| # | expectation | severity | result | found | action |",
        "|---|---|---|---|---|---|",
    ]
    for outcome in outcomes:
        call = outcome.spec.call.replace("|", "\\|")
        found = outcome.describe().replace("|", "\\|")
        verdict = "pass" if outcome.success else "**FAIL**"
        lines.append(
            f"| {outcome.spec.index} | `{call}` | {outcome.severity} | {verdict} | {found} | {outcome.action} |"
        )
    return "\n".join(lines) + "\n"
