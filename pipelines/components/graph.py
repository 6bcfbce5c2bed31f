"""The build graph of a cookbook, derived from the registry's ``inputs``: what can run at the same time.

A cookbook declares the datasets it ingests, the aggregated datasets it builds and the ones it shares.
:func:`build_graph` checks those names against the registry and orders them in stages: every ingest
first (cleaned datasets do not depend on each other), then the aggregates level by level (a level only
needs datasets of earlier levels, or datasets this cookbook does not build), then the shares. Work in
one stage is independent and may run in parallel. Pure: no Prefect, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pipelines.components.errors import PipelinesError, did_you_mean
from pipelines.components.registry import DatasetSpec, Registry


class GraphError(PipelinesError):
    """A cookbook's declared datasets do not form a buildable graph."""


@dataclass(frozen=True)
class Step:
    """One coarse unit of work: a workflow on one dataset."""

    workflow: str  # ingest | aggregate | share
    dataset: str


@dataclass(frozen=True)
class Graph:
    """A cookbook's work in stages; the steps of one stage are independent of each other."""

    cookbook: str
    ingests: tuple[str, ...]
    levels: tuple[tuple[str, ...], ...]
    shares: tuple[str, ...]

    @property
    def aggregates(self) -> tuple[str, ...]:
        return tuple(name for level in self.levels for name in level)

    @property
    def stages(self) -> list[list[Step]]:
        stages = [[Step("ingest", n) for n in self.ingests]]
        stages += [[Step("aggregate", n) for n in level] for level in self.levels]
        stages.append([Step("share", n) for n in self.shares])
        return [stage for stage in stages if stage]

    @property
    def steps(self) -> int:
        return len(self.ingests) + len(self.aggregates) + len(self.shares)


def _names(cookbook: str, what: str, names: Iterable[str], registry: Registry, stage: str) -> tuple[str, ...]:
    names = tuple(names)
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise GraphError(f"{cookbook} cookbook: {name!r} is listed twice in its {what}; list it once.")
        seen.add(name)
        spec = registry.datasets.get(name)
        if spec is None:
            raise GraphError(
                f"{cookbook} cookbook: {what} name {name!r}, which is not a dataset in the registry "
                f"({registry.path}).{did_you_mean(name, registry.datasets)} Add a row for it or fix the name."
            )
        if stage and spec.stage != stage:
            where = "aggregates" if spec.stage == "aggregated" else "datasets"
            raise GraphError(
                f"{cookbook} cookbook: {what} name {name!r}, which is {spec.stage} (registry row {spec.row}); "
                f"list it under the cookbook's {where}."
            )
    return names


def _cycle(pending: dict[str, DatasetSpec]) -> list[str]:
    """One cycle among the pending aggregates, as a path that ends where it starts."""
    start = min(pending)
    path = [start]
    while True:
        following = sorted(i for i in pending[path[-1]].inputs if i in pending)
        step = following[0]
        if step in path:
            return [*path[path.index(step) :], step]
        path.append(step)


def build_graph(
    cookbook: str,
    registry: Registry,
    *,
    datasets: Iterable[str],
    aggregates: Iterable[str] = (),
    shares: Iterable[str] = (),
) -> Graph:
    """The stages of a cookbook's work; a :class:`GraphError` says which name or edge is wrong and how to fix it."""
    ingests = _names(cookbook, "datasets", datasets, registry, "cleaned")
    builds = _names(cookbook, "aggregates", aggregates, registry, "aggregated")
    shared = _names(cookbook, "shares", shares, registry, "")
    built = set(ingests) | set(builds)
    for name in shared:
        if name not in built:
            raise GraphError(
                f"{cookbook} cookbook: it shares {name!r} but does not build it; add {name!r} to its "
                "datasets or aggregates, or share it from the cookbook that builds it."
            )
    for name in builds:
        spec = registry.datasets[name]
        for upstream in spec.inputs:
            if upstream not in registry.datasets:
                raise GraphError(
                    f"{cookbook} cookbook: {name!r} (registry row {spec.row}) has input {upstream!r}, which is "
                    f"not a dataset in the registry.{did_you_mean(upstream, registry.datasets)} Fix the "
                    "inputs column of that row (`pipelines registry check` lists every problem)."
                )
    pending = {name: registry.datasets[name] for name in builds}
    levels: list[tuple[str, ...]] = []
    while pending:
        ready = [n for n in builds if n in pending and not (set(pending[n].inputs) & set(pending))]
        if not ready:
            cycle = _cycle(pending)
            rows = ", ".join(f"{n} row {registry.datasets[n].row}" for n in dict.fromkeys(cycle))
            raise GraphError(
                f"{cookbook} cookbook: the aggregates {' -> '.join(cycle)} depend on each other in a cycle "
                f"(registry inputs: {rows}), so none of them can be built first. Remove one of them from "
                "another's inputs column in the registry."
            )
        levels.append(tuple(ready))
        for name in ready:
            del pending[name]
    return Graph(cookbook=cookbook, ingests=ingests, levels=tuple(levels), shares=shared)
