"""The benchmark spec, the registry of benchmark modules, and the alternating runner.

A benchmark is a module ``bench/<name>.py`` exposing ``BENCHMARK = Benchmark(...)``. Its
``setup(size, context)`` builds the data (cached) and returns a :class:`Case`: the two sides
as zero-argument callables plus optional untimed resets and a check that both sides produced
the same thing. The runner calls the sides alternately (ours first on even runs, the baseline
first on odd ones), after ``warmup`` uncounted rounds, in this one process: imports and data
generation are never inside a timed call.

A case may also have a **floor**: the engines alone doing the same work (an empty Prefect workflow
run, a bare delta-rs merge, plain processes without Prefect or Dask). It runs as a third side in the
same rounds, after the two sides, and is scored against the baseline as ours is: a target the floor's
score does not meet cannot be met by changing this library's code alone, and the report says so.
"""

from __future__ import annotations

import gc
import importlib
import pkgutil
import shutil
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

DEFAULT_RUNS = 3


@dataclass(frozen=True)
class Target:
    """What the score must be: ``score <direction> value``, e.g. ratio <= 1.3."""

    value: float
    direction: Literal["<=", ">="]
    text: str  # how people state the target, e.g. "≤ 1.3x the baseline's time"

    def met(self, score: float) -> bool:
        return score <= self.value if self.direction == "<=" else score >= self.value


@dataclass(frozen=True)
class Measurement:
    """Returned by a side that measures itself (a subprocess, a peak RSS): the value counted
    instead of the call's wall time, in the benchmark's unit, plus any detail worth keeping."""

    value: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Stats:
    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def as_dict(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "min": min(self.values),
            "max": max(self.values),
            "values": self.values,
        }


def ratio_of_medians(ours: Stats, baseline: Stats, case: Case) -> float:
    return ours.median / baseline.median if baseline.median else float("inf")


@dataclass
class Case:
    """One benchmark at one size, ready to run."""

    ours: Callable[[], Any]
    baseline: Callable[[], Any]
    reset_ours: Callable[[], None] | None = None  # untimed, before every call of ours
    reset_baseline: Callable[[], None] | None = None
    verify: Callable[[], dict[str, Any]] | None = None  # after the runs: raise if the sides disagree
    floor: Callable[[], Any] | None = None  # optional third side: the engines' own cost of the work
    reset_floor: Callable[[], None] | None = None
    details: dict[str, Any] = field(default_factory=dict)  # facts about the case (rows, files, ...)
    cleanup: Callable[[], None] | None = None


@dataclass(frozen=True)
class Context:
    """Where a benchmark keeps things: ``cache`` survives between invocations (generated data,
    Prefect's database, isolated venvs); ``work`` is this benchmark's scratch, removed after."""

    cache: Path
    work: Path
    quick: bool


@dataclass(frozen=True)
class Benchmark:
    name: str
    ours: str  # what "ours" does, one line
    baseline: str  # what it is compared with, one line
    target: Target | None  # None: reported, not judged (e.g. cold start)
    setup: Callable[[Any, Context], Case]
    quick_size: Any
    full_size: Any
    describe_size: Callable[[Any], str] = str
    unit: str = "s"  # of each side's values: "s" (wall seconds) or what a Measurement reports
    score: Callable[[Stats, Stats, Case], float] = ratio_of_medians
    score_unit: str = "x"  # of the score: "x" for a ratio, "s/dataset", ...
    runs: int | None = None  # this benchmark's default count (e.g. fewer for slow subprocess sides)
    warmup: int = 1
    baseline_first: bool = False  # which side opens the even-numbered runs
    order: int = 100  # position in the table
    floor: str | None = None  # what the case's floor side does, one line (when it has one)


# registry ------------------------------------------------------------------------------------


def discover() -> dict[str, Benchmark]:
    """Every ``bench/<name>.py`` (not starting with _) that exposes BENCHMARK, in table order."""
    import bench

    found: dict[str, Benchmark] = {}
    for info in pkgutil.iter_modules(bench.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"bench.{info.name}")
        spec = getattr(module, "BENCHMARK", None)
        if spec is None:
            continue
        if not isinstance(spec, Benchmark):
            raise TypeError(f"bench/{info.name}.py: BENCHMARK must be a bench.Benchmark, not {type(spec)}")
        if spec.name in found:
            raise ValueError(f"two benchmarks are named {spec.name!r}; rename one")
        found[spec.name] = spec
    return dict(sorted(found.items(), key=lambda item: (item[1].order, item[0])))


# runner --------------------------------------------------------------------------------------


def _call(side: Callable[[], Any], reset: Callable[[], None] | None) -> tuple[float, dict[str, Any]]:
    if reset is not None:
        reset()
    gc.collect()
    started = time.perf_counter()
    outcome = side()
    elapsed = time.perf_counter() - started
    if isinstance(outcome, Measurement):
        return outcome.value, outcome.detail
    return elapsed, {}


def run_benchmark(
    spec: Benchmark,
    *,
    quick: bool,
    runs: int | None,
    cache: Path,
    keep: bool = False,
    warmup: int | None = None,
) -> dict:
    """Run one benchmark; returns its JSON record (with ``error`` set when it failed).

    ``warmup`` overrides the benchmark's own count of uncounted rounds (0 for a smoke run)."""
    size = spec.quick_size if quick else spec.full_size
    count = runs or spec.runs or DEFAULT_RUNS
    warmup = spec.warmup if warmup is None else warmup
    record: dict[str, Any] = {
        "name": spec.name,
        "ours": spec.ours,
        "baseline": spec.baseline,
        "size": spec.describe_size(size),
        "unit": spec.unit,
        "runs": count,
        "warmup": warmup,
        "target": asdict(spec.target) if spec.target else None,
        "score_unit": spec.score_unit,
        "error": None,
    }
    work = cache / "work" / spec.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.perf_counter()
    case = None
    try:
        case = spec.setup(size, Context(cache=cache, work=work, quick=quick))
        record["setup_seconds"] = round(time.perf_counter() - started, 3)
        for _ in range(warmup):
            warm = [(case.ours, case.reset_ours), (case.baseline, case.reset_baseline)]
            for side, reset in warm[::-1] if spec.baseline_first else warm:
                _call(side, reset)
            if case.floor is not None:
                _call(case.floor, case.reset_floor)
        ours, baseline, floor, ours_detail, baseline_detail = [], [], [], [], []
        for index in range(count):
            sides = [("ours", case.ours, case.reset_ours), ("baseline", case.baseline, case.reset_baseline)]
            if spec.baseline_first:
                sides.reverse()
            for which, side, reset in sides if index % 2 == 0 else sides[::-1]:
                value, detail = _call(side, reset)
                (ours if which == "ours" else baseline).append(value)
                if detail:
                    (ours_detail if which == "ours" else baseline_detail).append(detail)
            if case.floor is not None:
                floor.append(_call(case.floor, case.reset_floor)[0])
        ours_stats, baseline_stats = Stats(ours), Stats(baseline)
        record["ours_stats"] = ours_stats.as_dict()
        record["baseline_stats"] = baseline_stats.as_dict()
        record["ratio"] = ratio_of_medians(ours_stats, baseline_stats, case)
        record["score"] = spec.score(ours_stats, baseline_stats, case) if spec.target else None
        record["met"] = spec.target.met(record["score"]) if spec.target else None
        if floor:
            floor_stats = Stats(floor)
            record["floor"] = spec.floor
            record["floor_stats"] = floor_stats.as_dict()
            record["floor_score"] = spec.score(floor_stats, baseline_stats, case)
            record["out_of_reach"] = bool(spec.target) and not spec.target.met(record["floor_score"])
        record["details"] = dict(case.details)
        if ours_detail:
            record["details"]["ours_runs"] = ours_detail
        if baseline_detail:
            record["details"]["baseline_runs"] = baseline_detail
        if case.verify is not None:
            record["details"]["verified"] = case.verify()
    except Exception as exc:  # one broken benchmark must not hide the others' results
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc()
    finally:
        if case is not None and case.cleanup is not None:
            case.cleanup()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    record["seconds"] = round(time.perf_counter() - started, 3)
    return record
