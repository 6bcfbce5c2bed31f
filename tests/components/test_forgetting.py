"""Which datasets forget searches, and which aggregates it rebuilds (from the registry alone)."""

from pathlib import Path

import pytest

from pipelines.components.forgetting import ForgetError, downstream, in_scope
from pipelines.components.registry import DatasetSpec, Registry

pytestmark = pytest.mark.unit


def _registry() -> Registry:
    specs = [
        DatasetSpec(name="users", stage="cleaned", subject_key="email", row=2),
        DatasetSpec(name="events", stage="cleaned", subject_key="user_email", row=3),
        DatasetSpec(name="weather", stage="cleaned", row=4),
        DatasetSpec(name="daily", stage="aggregated", inputs=("events", "weather"), row=5),
        DatasetSpec(name="weekly", stage="aggregated", inputs=("daily",), row=6),
        DatasetSpec(name="per_user", stage="aggregated", inputs=("users",), subject_key="email", row=7),
    ]
    return Registry(Path("datasets.csv"), {s.name: s for s in specs})


def test_every_dataset_with_a_subject_key_is_searched_unless_some_are_named():
    registry = _registry()
    assert [s.name for s in in_scope(registry, None)] == ["users", "events", "per_user"]
    assert [s.name for s in in_scope(registry, ["events"])] == ["events"]


def test_a_named_dataset_without_a_subject_key_is_refused_with_its_row():
    with pytest.raises(
        ForgetError, match=r"Dataset\(s\) 'weather' \(registry row 4\) declare no subject_key"
    ):
        in_scope(_registry(), ["users", "weather"])


def test_aggregates_built_from_a_changed_dataset_are_rebuilt_in_order():
    assert [s.name for s in downstream(_registry(), {"events"})] == ["daily", "weekly"]
    assert [s.name for s in downstream(_registry(), {"weather"})] == ["daily", "weekly"]
    assert downstream(_registry(), set()) == []
