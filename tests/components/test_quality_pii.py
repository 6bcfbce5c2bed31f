"""Expectation outcomes on PII columns keep no value: samples and observed values are dropped."""

import pytest

from pipelines.components.quality import PII_SHOWN, ExpectationSpec, Outcome, redact_outcomes

pytestmark = pytest.mark.unit


def _outcome(name: str, column: str, observed=None, samples=()) -> Outcome:
    spec = ExpectationSpec(index=1, name=name, kwargs={"column": column}, columns=(column,))
    return Outcome(
        spec=spec, severity="error", engine="polars", success=False, observed_value=observed,
        unexpected_count=len(samples), element_count=10, partial_unexpected_list=list(samples),
    )  # fmt: skip


def test_values_of_pii_columns_are_dropped_and_counts_kept():
    regex = _outcome("expect_column_values_to_match_regex", "email", samples=["ada@x.org"])
    top = _outcome("expect_column_max_to_be_between", "age", observed=97)
    distinct = _outcome("expect_column_unique_value_count_to_be_between", "email", observed=3)
    other = _outcome("expect_column_max_to_be_between", "amount", observed=500)
    redact_outcomes([regex, top, distinct, other], ["email", "age"])
    assert regex.partial_unexpected_list == [PII_SHOWN] and "ada@x.org" not in regex.describe()
    assert "1 of 10 rows unexpected" in regex.describe()
    assert top.observed_value == PII_SHOWN and distinct.observed_value == 3 and other.observed_value == 500
