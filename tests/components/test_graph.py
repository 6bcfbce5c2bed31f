"""A cookbook's build graph from the registry's inputs: stages, order, and the errors that name the fix."""

from pathlib import Path

import pytest

from pipelines.components.environment import DEFAULT_REGISTRY
from pipelines.components.graph import GraphError, Step, build_graph
from pipelines.components.registry import DatasetSpec, Registry, load_registry


def _registry(**aggregates: tuple[str, ...]) -> Registry:
    """Cleaned a, b, c and the given aggregated datasets (name -> inputs), rows numbered in order."""
    specs = [DatasetSpec(name=n, stage="cleaned") for n in ("a", "b", "c")]
    specs += [DatasetSpec(name=n, stage="aggregated", inputs=i) for n, i in aggregates.items()]
    return Registry(
        path=Path("datasets.csv"),
        datasets={s.name: DatasetSpec(**{**s.__dict__, "row": r}) for r, s in enumerate(specs, start=2)},
    )


def test_ingests_first_then_aggregates_level_by_level_then_shares():
    registry = _registry(top=("per_user",), per_user=("a", "b"), per_day=("b",), mix=("top", "per_day", "c"))
    graph = build_graph(
        "demo",
        registry,
        datasets=["b", "a"],
        aggregates=["top", "mix", "per_user", "per_day"],
        shares=["mix", "a"],
    )
    assert graph.ingests == ("b", "a")
    # a level keeps the declared order; an aggregate waits for every aggregate it reads
    assert graph.levels == (("per_user", "per_day"), ("top",), ("mix",))
    assert graph.steps == 2 + 4 + 2
    assert graph.stages == [
        [Step("ingest", "b"), Step("ingest", "a")],
        [Step("aggregate", "per_user"), Step("aggregate", "per_day")],
        [Step("aggregate", "top")],
        [Step("aggregate", "mix")],
        [Step("share", "mix"), Step("share", "a")],
    ]


def test_an_input_the_cookbook_does_not_build_is_read_as_committed():
    graph = build_graph("demo", _registry(per_user=("a", "b")), datasets=["a"], aggregates=["per_user"])
    assert graph.stages == [[Step("ingest", "a")], [Step("aggregate", "per_user")]]


def test_a_cycle_names_its_path_and_rows_and_the_fix():
    registry = _registry(x=("a", "z"), y=("x",), z=("y",), free=("a",))
    with pytest.raises(GraphError) as info:
        build_graph("demo", registry, datasets=["a"], aggregates=["free", "x", "y", "z"])
    assert str(info.value) == (
        "demo cookbook: the aggregates x -> z -> y -> x depend on each other in a cycle (registry inputs: "
        "x row 5, z row 7, y row 6), so none of them can be built first. Remove one of them from "
        "another's inputs column in the registry."
    )


def test_an_unknown_input_names_the_row_and_the_nearest_name():
    with pytest.raises(GraphError) as info:
        build_graph("demo", _registry(per_user=("a", "bb")), datasets=["a"], aggregates=["per_user"])
    assert str(info.value).startswith(
        "demo cookbook: 'per_user' (registry row 5) has input 'bb', which is not a dataset in the registry. "
        "Did you mean 'b'? Fix the inputs column of that row"
    )


def test_unknown_misplaced_duplicated_or_unbuilt_names_are_refused():
    registry = _registry(per_user=("a",))
    cases = [
        (dict(datasets=["aa"]), "demo cookbook: datasets name 'aa', which is not a dataset in the registry"),
        (dict(datasets=["per_user"]), "which is aggregated (registry row 5); list it under the cookbook's aggregates"),
        (dict(datasets=["a"], aggregates=["b"]), "which is cleaned (registry row 3); list it under the cookbook's datasets"),
        (dict(datasets=["a", "a"]), "'a' is listed twice in its datasets; list it once."),
        (dict(datasets=["a"], shares=["b"]), "it shares 'b' but does not build it; add 'b' to its datasets or aggregates"),
    ]  # fmt: skip
    for kwargs, text in cases:
        with pytest.raises(GraphError) as info:
            build_graph("demo", registry, **kwargs)
        assert text in str(info.value), kwargs


@pytest.mark.parametrize(
    "module",
    ["pipelines.cookbooks.flights", "pipelines.cookbooks.social_likes", "pipelines.cookbooks.real_estate"],
)
def test_every_cookbook_declares_a_graph_the_registry_can_build(module):
    import importlib

    cookbook = importlib.import_module(module)
    names = {n: v for n, v in vars(cookbook).items() if n.isupper() and isinstance(v, tuple)}
    datasets = names.get("DATASETS") or names.get("INGESTED") or names["SOURCES"]
    aggregates = names.get("AGGREGATES") or names["OUTPUTS"]
    graph = build_graph(
        "x", load_registry(DEFAULT_REGISTRY), datasets=datasets, aggregates=aggregates, shares=names["SHARED"]
    )
    assert set(graph.aggregates) == set(aggregates)
    if module.endswith("social_likes"):
        assert graph.levels == (("likes_per_user", "user_top3_avg"), ("top_users",))
