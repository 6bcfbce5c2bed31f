"""orchestration: a cookbook ingesting many small datasets, against the same work without Prefect.

Ours is a cookbook flow that declares the datasets and calls the cookbook runner
(``pipelines.cookbooks._runner.run_graph``) on the default in-process engine: one coarse task per
dataset (named ``ingest <dataset>``), no artifact per dataset, one summary artifact per run. The
baseline calls the ingest flow's own steps (the task functions, through ``.fn``) in the order the flow
does, so the two sides do the same work and differ only by Prefect: the flow run, a task run per
dataset, state tracking, each dataset's slot of the namespace's and the dataset's Prefect concurrency
limits (``pipelines.components.limits``), the summary artifact and the run logger.
"""

from __future__ import annotations

import shutil

from bench import _common, _data, _env
from bench._harness import Benchmark, Case, Context, Stats, Target

ROWS = 2_000


def _dataset_name(index: int) -> str:
    return f"orders_{index:02d}"


def _landing(cache, datasets: int, rows: int):
    def build(tmp):
        for index in range(datasets):
            path = tmp / _dataset_name(index) / "part-0000.csv"
            path.parent.mkdir(parents=True)
            _data.events(rows, seed=_data.SEED + 100 + index).write_csv(path)

    return _data._generated(cache / "data" / f"many-{datasets}x{rows}-{_data.DATA_VERSION}", build)


def bare_ingest(dataset: str):
    """The body of the ingest flow with the task functions called directly: no Prefect runs."""
    from prefect.logging import disable_run_logger

    from pipelines.components.environment import get_settings
    from pipelines.components.registry import load_registry
    from pipelines.components.resources import Lake, Storage
    from pipelines.components.runs import new_run_id
    from pipelines.workflows import ingest as flow_module

    with disable_run_logger():
        settings = get_settings()
        spec = load_registry(settings.registry_path).get(dataset)
        storage = Storage.from_settings(settings.namespace_url, settings)
        lake = Lake(storage)
        state = lake.state(flow_module.CLEANED, spec.name)
        run_id = new_run_id()
        landed = flow_module._land.fn(spec, settings, storage, state, run_id)
        result = flow_module._clean_and_commit.fn(
            spec, lake, run_id, False, landed, flow_module.batches.DEFAULT_BATCH_BYTES
        )
    return result


def _each_flow():
    from prefect import flow

    from pipelines.components.engine import SettingsTaskRunner
    from pipelines.components.environment import get_settings
    from pipelines.components.summary import RunSummary
    from pipelines.cookbooks._runner import run_graph

    @flow(name="bench-ingest-each", task_runner=SettingsTaskRunner())
    def ingest_each(datasets: list[str]) -> int:
        """A cookbook: it declares the datasets and the cookbook runner runs one task per dataset."""
        summary = RunSummary("bench-orchestration", get_settings())
        done = run_graph(
            "bench-orchestration",
            datasets=datasets,
            window="all",
            rerun="python -m bench --only orchestration",
            summary=summary,
        )
        summary.publish()
        return sum(result.written for result in done.ingested.values())

    return ingest_each


def prefect_floor(repeats: int = 5) -> dict[str, float]:
    """What bare Prefect costs here, per subflow: the floor under the orchestration overhead."""
    import statistics
    import time

    from prefect import flow, task
    from prefect.artifacts import create_markdown_artifact

    @task
    def step(value: int) -> int:
        return value

    @flow(name="bench-empty")
    def empty() -> None:
        return None

    @flow(name="bench-two-tasks")
    def two_tasks() -> int:
        return step(step(1))

    @flow(name="bench-like-ingest", persist_result=True, result_serializer="json")
    def like_ingest() -> dict:
        step(step(1))
        create_markdown_artifact(key="bench-floor", markdown="# floor")
        return {"written": 1}

    @task
    def task_with_artifact() -> int:
        create_markdown_artifact(key="bench-floor-task", markdown="# floor")
        return 1

    @flow(name="bench-floor")
    def parent(child) -> list[float]:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            child()
            times.append(time.perf_counter() - started)
        return times

    shapes = {
        "empty subflow": empty,
        "subflow + 2 tasks": two_tasks,
        "subflow + 2 tasks + persisted json result + artifact": like_ingest,
        "task + artifact (bounds the runner's shape per dataset)": task_with_artifact,
    }
    return {name: round(statistics.median(parent(child)), 3) for name, child in shapes.items()}


def setup(size: tuple[int, int], context: Context) -> Case:
    datasets, rows = size
    landing = _landing(context.cache, datasets, rows)
    names = [_dataset_name(i) for i in range(datasets)]
    registry = _data.write_registry(context.work / "registry", {n: f"{n}/*.csv" for n in names})
    ours_data, bare_data = context.work / "ours", context.work / "bare"
    ingest_each = _each_flow()
    written: dict[str, int] = {}

    def point(data):
        shutil.rmtree(data, ignore_errors=True)
        _env.use_pipelines(data_url=data, landing_url=landing, registry=registry, namespace=_common.NAMESPACE)

    def ours():
        written["ours"] = ingest_each(names)

    def bare():
        written["baseline"] = sum(bare_ingest(name).written for name in names)

    def verify() -> dict:
        if written["ours"] != written["baseline"]:
            raise AssertionError(f"rows written differ: {written}")
        for name in names:
            _common.same_table(_common.cleaned_path(ours_data, name), _common.cleaned_path(bare_data, name))
        floor = prefect_floor(3 if context.quick else 5)
        return {"datasets": datasets, "rows_written": written["ours"], "prefect_floor_seconds": floor}

    return Case(
        ours=ours,
        baseline=bare,
        reset_ours=lambda: point(ours_data),
        reset_baseline=lambda: point(bare_data),
        verify=verify,
        details={"datasets": datasets, "rows_per_dataset": rows},
    )


def overhead_per_dataset(ours: Stats, baseline: Stats, case: Case) -> float:
    return (ours.median - baseline.median) / case.details["datasets"]


BENCHMARK = Benchmark(
    name="orchestration",
    ours="a cookbook flow whose runner ingests each small dataset in one task holding its concurrency "
    "slot (no artifact per dataset, one summary artifact per run)",
    baseline="the same ingest steps called as plain functions, without Prefect",
    target=Target(0.2, "<=", "overhead ≤ 0.2 s per dataset"),
    setup=setup,
    quick_size=(3, 200),
    full_size=(50, ROWS),
    describe_size=lambda size: f"{size[0]} datasets x {size[1]:,} rows",
    score=overhead_per_dataset,
    score_unit="s/dataset",
    order=30,
)
