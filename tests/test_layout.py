"""The shape STYLE.md asks for: one flow per workflow/cookbook file, named after the file."""

import pytest

from pipelines.components.discovery import discover
from pipelines.components.results import result_problem


@pytest.mark.parametrize("entry", discover(), ids=lambda e: e.name)
def test_each_file_exports_one_flow_named_after_it(entry):
    flow = entry.load()
    assert flow.name == entry.name
    assert entry.summary, (
        f"{entry.module}: the flow needs a docstring; its first line is what `pipelines list` shows"
    )
    problem = result_problem(flow)
    assert problem is None, f"{entry.module}: another process could not read the flow's result: {problem}"


def test_there_is_at_least_one_workflow_and_one_cookbook():
    kinds = {e.kind for e in discover()}
    assert kinds == {"workflow", "cookbook"}
