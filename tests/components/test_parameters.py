from datetime import date, datetime
from typing import Literal

import pytest
from prefect import flow
from pydantic import BaseModel

from pipelines.components.parameters import (
    ParameterError,
    check_parameters,
    parameters_of,
    parse_pairs,
    parse_text_value,
)

pytestmark = pytest.mark.unit


class Window(BaseModel):
    start: date
    days: int = 1


@flow
def sample(
    dataset: str,
    through: date | None = None,
    limit: int = 10,
    ratio: float = 0.5,
    full: bool = False,
    tags: list[str] = [],  # noqa: B006 (a schema default, never mutated)
    mode: Literal["fast", "exact"] = "fast",
    window: Window | None = None,
    at: datetime | None = None,
    anything=None,
):
    """A flow with one parameter of each kind."""


SCHEMA = sample.parameters.dict()


def test_parameters_are_listed_in_signature_order_with_python_types_and_defaults():
    described = [(p.name, p.type, p.required, p.default) for p in parameters_of(SCHEMA)]
    assert described == [
        ("dataset", "str", True, None),
        ("through", "date | None", False, None),
        ("limit", "int", False, 10),
        ("ratio", "float", False, 0.5),
        ("full", "bool", False, False),
        ("tags", "list[str]", False, []),
        ("mode", "Literal['fast', 'exact']", False, "fast"),
        ("window", "Window | None", False, None),
        ("at", "datetime | None", False, None),
        ("anything", "Any", False, None),
    ]
    assert str(parameters_of(SCHEMA)[0]) == "dataset: str"
    assert str(parameters_of(SCHEMA)[2]) == "limit: int = 10"


def test_values_of_the_right_type_pass():
    check_parameters(
        "sample",
        SCHEMA,
        {
            "dataset": "flights",
            "through": "2013-01-31",
            "limit": 3,
            "ratio": 1,  # an int is a valid float
            "full": True,
            "tags": ["a", "b"],
            "mode": "exact",
            "window": {"start": "2013-01-01"},
            "at": datetime(2013, 1, 1, 12),
            "anything": {"free": [1, 2]},
        },
    )
    check_parameters("sample", SCHEMA, {"dataset": "x", "through": date(2013, 1, 31), "window": None})
    check_parameters("sample", SCHEMA, {"dataset": "x", "window": Window(start=date(2013, 1, 1))})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"dataset": "x", "limit": "10"},
            "sample: parameter 'limit' expects int, got str '10'; pass e.g. limit=10.",
        ),
        ({"dataset": "x", "limit": 2.5}, "parameter 'limit' expects int, got float 2.5"),
        ({"dataset": "x", "limit": True}, "parameter 'limit' expects int, got bool True"),
        ({"dataset": "x", "ratio": "half"}, "parameter 'ratio' expects float, got str 'half'"),
        ({"dataset": "x", "full": "yes"}, "parameter 'full' expects bool, got str 'yes'"),
        (
            {"dataset": "x", "through": "31/01/2013"},
            "parameter 'through' expects date | None, got str '31/01/2013'",
        ),
        ({"dataset": "x", "tags": ["a", 1]}, "parameter 'tags' expects list[str], got list ['a', 1]"),
        (
            {"dataset": "x", "mode": "slow"},
            "parameter 'mode' expects Literal['fast', 'exact'], got str 'slow'",
        ),
        ({"dataset": "x", "window": {"days": 2}}, "parameter 'window' expects Window | None"),
        ({"dataset": 5}, "parameter 'dataset' expects str, got int 5; pass e.g. dataset=\"text\"."),
    ],
)
def test_a_wrong_type_names_the_parameter_the_expected_and_the_given_type(params, message):
    with pytest.raises(ParameterError) as caught:
        check_parameters("sample", SCHEMA, params)
    assert message in str(caught.value)
    assert str(caught.value).endswith("Nothing was started.")


def test_an_unknown_name_suggests_the_closest_and_lists_the_parameters():
    with pytest.raises(ParameterError) as caught:
        check_parameters("sample", SCHEMA, {"dataset": "x", "thru": "2013-01-31"})
    assert str(caught.value) == (
        "sample has no parameter 'thru'. Did you mean 'through'? Its parameters: dataset, through, limit, "
        "ratio, full, tags, mode, window, at, anything. Nothing was started."
    )


def test_a_missing_required_parameter_says_how_to_pass_it_unless_a_deployment_sets_it():
    with pytest.raises(
        ParameterError, match=r"sample needs parameter 'dataset' \(str\); pass dataset=\"text\""
    ):
        check_parameters("sample", SCHEMA, {})
    check_parameters("sample", SCHEMA, {}, preset=["dataset"])


def test_every_problem_is_reported_at_once():
    with pytest.raises(ParameterError) as caught:
        check_parameters("sample", SCHEMA, {"limt": 1, "ratio": "x"})
    text = str(caught.value)
    assert text.startswith("3 problems with the parameters of sample; nothing was started:")
    assert "Did you mean 'limit'?" in text
    assert "parameter 'ratio' expects float" in text
    assert "sample needs parameter 'dataset'" in text


def test_a_value_that_cannot_be_sent_as_json_is_refused():
    with pytest.raises(ParameterError, match="parameter 'anything' cannot be sent as JSON"):
        check_parameters("sample", SCHEMA, {"dataset": "x", "anything": object()})


def test_command_line_text_is_read_for_the_parameter_type():
    props = SCHEMA["properties"]
    assert parse_text_value("42", props["limit"]) == 42
    assert parse_text_value("42", props["dataset"]) == "42"
    assert parse_text_value("true", props["full"]) is True
    assert parse_text_value("null", props["through"]) is None
    assert parse_text_value("2013-01-31", props["through"]) == "2013-01-31"
    assert parse_text_value('["a","b"]', props["tags"]) == ["a", "b"]
    assert parse_text_value("0.25", props["ratio"]) == 0.25
    assert parse_text_value("abc", props["limit"]) == "abc"  # then reported as a wrong type
    assert parse_pairs(["dataset=7", "limit=7"], SCHEMA) == {"dataset": "7", "limit": 7}
    with pytest.raises(ParameterError, match=r"'limit' is not key=value; write e\.g\. -p through=2013-01-31"):
        parse_pairs(["limit"], SCHEMA)
