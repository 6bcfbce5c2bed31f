"""parallel: a cookbook of independent datasets on 2 Dask workers, against the same cookbook in-process.

Both sides run one flow that declares N generated datasets (no aggregates) and calls the cookbook
runner (``pipelines.cookbooks._runner.run_graph``): one coarse task per dataset. Ours runs the tasks
on a Dask cluster of 2 single-threaded worker processes (``dask scheduler`` + ``dask worker
--nworkers 2`` on loopback, started once by the setup, as an existing cluster would be:
PIPELINES_DASK_ADDRESS); the baseline is the in-process path (no Dask setting), one task at a time.
Dask workers report task runs to a Prefect API, so the setup starts a ``prefect server`` on loopback,
on a PostgreSQL database of its own, and both sides use it. The score is the speedup, baseline time / ours.

The floor is the same ingests as plain function calls (the ingest flow's steps through ``.fn``, as
``orchestration``'s baseline) in a pool of 2 worker processes with the same polars threads as the Dask
workers: no Prefect, no Dask. Its speedup over the baseline is the most 2 processes give on this machine.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench import _common, _data, _env, _postgres
from bench._harness import Benchmark, Case, Context, Stats, Target

WORKERS = 2


def _dataset_name(index: int) -> str:
    return f"part_{index:02d}"


def _landing(cache: Path, datasets: int, rows: int) -> Path:
    def build(tmp: Path) -> None:
        for index in range(datasets):
            path = tmp / _dataset_name(index) / "part-0000.csv"
            path.parent.mkdir(parents=True)
            _data.events(rows, seed=_data.SEED + 300 + index).write_csv(path)

    return _data._generated(cache / "data" / f"parallel-{datasets}x{rows}-{_data.DATA_VERSION}", build)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(command: list[str], log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    """A child in its own session, so stopping its group stops what it started (nannies, workers)."""
    return subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        stdout=open(log, "wb"),  # the child owns it
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _wait(ready, proc: subprocess.Popen, what: str, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if ready():
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{what} did not start (see {log}):\n{tail}")
        time.sleep(0.5)


def _health(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


def _services(work: Path, stack: contextlib.ExitStack, database: str) -> str:
    """A Prefect server on PostgreSQL (this process's API for the benchmark) and a Dask cluster; returns
    the cluster's address.

    PostgreSQL, as Prefect asks of a server that several processes write to at once: on SQLite, two
    workers' task-state and slot writes meet "database is locked", and Prefect's client waits a second or
    more before each retry (docs/scaling.md)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    env = _env.child_env()
    server_home = work / "prefect-server"
    server_home.mkdir()
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    server_env = {k: v for k, v in env.items() if not k.startswith("PREFECT_API_URL")} | {
        "PREFECT_HOME": str(server_home),
        "PREFECT_API_DATABASE_CONNECTION_URL": _postgres.url(database, driver="asyncpg"),
        "PREFECT_API_SERVICES_LATE_RUNS_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    prefect = str(Path(sys.executable).with_name("prefect"))
    server_log = work / "server.log"
    server = _start(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], server_log, server_env, work
    )
    stack.callback(_stop, server)
    _wait(lambda: _health(f"{api}/health"), server, "prefect server", server_log)

    dask = str(Path(sys.executable).with_name("dask"))
    scheduler_port = _free_port()
    address = f"tcp://127.0.0.1:{scheduler_port}"
    scheduler_log = work / "scheduler.log"
    scheduler = _start(
        [dask, "scheduler", "--host", "127.0.0.1", "--port", str(scheduler_port), "--no-dashboard"],
        scheduler_log,
        env,
        work,
    )
    stack.callback(_stop, scheduler)
    _wait(
        lambda: socket.create_connection(("127.0.0.1", scheduler_port), 1).close() or True,
        scheduler,
        "dask scheduler",
        scheduler_log,
    )
    worker_log = work / "worker.log"
    # as docs/scaling.md asks of a cluster's workers: each worker's polars uses its share of the cores
    worker_env = env | {"POLARS_MAX_THREADS": str(max(1, (os.cpu_count() or 1) // WORKERS))}
    worker = _start(
        [
            dask,
            "worker",
            address,
            "--nworkers",
            str(WORKERS),
            "--nthreads",
            "1",
            "--host",
            "127.0.0.1",
            "--no-dashboard",
        ],
        worker_log,
        worker_env,
        work,
    )
    stack.callback(_stop, worker)
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(WORKERS, timeout=180)
    stack.enter_context(temporary_settings(updates={PREFECT_API_URL: api}))
    return address


def _plain_start(data: str, landing: str, registry: str) -> None:
    _env.use_pipelines(
        data_url=Path(data), landing_url=Path(landing), registry=Path(registry), namespace=_common.NAMESPACE
    )


def _plain_ingest(dataset: str) -> int:
    from bench.orchestration import bare_ingest

    return bare_ingest(dataset).written


def _plain_pool(data: Path, landing: Path, registry: Path, stack: contextlib.ExitStack):
    """WORKERS fresh processes, started now with the Dask workers' POLARS_MAX_THREADS (polars reads it once,
    when a process imports it), each pointed at ``data``; stopped by ``stack``."""
    threads = str(max(1, (os.cpu_count() or 1) // WORKERS))
    before = os.environ.get("POLARS_MAX_THREADS")
    os.environ["POLARS_MAX_THREADS"] = threads  # inherited by the children started here, then put back
    try:
        pool = multiprocessing.get_context("spawn").Pool(
            WORKERS, initializer=_plain_start, initargs=(str(data), str(landing), str(registry))
        )
    finally:
        if before is None:
            os.environ.pop("POLARS_MAX_THREADS", None)
        else:
            os.environ["POLARS_MAX_THREADS"] = before

    def stop() -> None:
        pool.terminate()
        pool.join()

    stack.callback(stop)
    return pool


def _cookbook():
    from prefect import flow

    from pipelines.components.engine import SettingsTaskRunner
    from pipelines.components.environment import get_settings
    from pipelines.components.summary import RunSummary
    from pipelines.cookbooks._runner import run_graph

    @flow(name="bench-parallel", task_runner=SettingsTaskRunner())
    def parallel_cookbook(datasets: list[str]) -> int:
        """A cookbook that declares independent datasets; the runner fans them out."""
        done = run_graph(
            "bench-parallel",
            datasets=datasets,
            window="all",
            rerun="python -m bench --only parallel",
            summary=RunSummary("bench-parallel", get_settings()),
        )
        return sum(result.written for result in done.ingested.values())

    return parallel_cookbook


def setup(size: tuple[int, int], context: Context) -> Case:
    datasets, rows = size
    landing = _landing(context.cache, datasets, rows)
    names = [_dataset_name(i) for i in range(datasets)]
    registry = _data.write_registry(context.work / "registry", {n: f"{n}/*.csv" for n in names})
    ours_data, bare_data, plain_data = (
        context.work / "ours",
        context.work / "baseline",
        context.work / "plain",
    )
    stack = contextlib.ExitStack()
    databases = _postgres.Databases("parallel")
    stack.callback(databases.drop_all)  # after the server has stopped (callbacks run last-in, first-out)
    try:
        address = _services(context.work, stack, databases.create("prefect"))
        pool = _plain_pool(plain_data, landing, registry, stack)
    except BaseException:
        stack.close()
        raise
    cookbook = _cookbook()
    written: dict[str, int] = {}

    def point(data: Path, dask: bool) -> None:
        shutil.rmtree(data, ignore_errors=True)
        _env.use_pipelines(data_url=data, landing_url=landing, registry=registry, namespace=_common.NAMESPACE)
        os.environ.pop("PIPELINES_WORKERS", None)
        if dask:
            os.environ["PIPELINES_DASK_ADDRESS"] = address
        else:
            os.environ.pop("PIPELINES_DASK_ADDRESS", None)

    def ours() -> None:
        written["ours"] = cookbook(names)

    def baseline() -> None:
        written["baseline"] = cookbook(names)

    def plain() -> None:
        written["floor"] = sum(pool.imap_unordered(_plain_ingest, names, chunksize=1))

    def verify() -> dict:
        if not written["ours"] == written["baseline"] == written["floor"]:
            raise AssertionError(f"rows written differ: {written}")
        for name in names:
            _common.same_table(_common.cleaned_path(ours_data, name), _common.cleaned_path(bare_data, name))
            _common.same_table(_common.cleaned_path(ours_data, name), _common.cleaned_path(plain_data, name))
        return {"datasets": datasets, "rows_written": written["ours"], "dask_workers": WORKERS}

    def cleanup() -> None:
        os.environ.pop("PIPELINES_DASK_ADDRESS", None)
        stack.close()

    return Case(
        ours=ours,
        baseline=baseline,
        reset_ours=lambda: point(ours_data, True),
        reset_baseline=lambda: point(bare_data, False),
        verify=verify,
        floor=plain,
        reset_floor=lambda: _common.fresh(plain_data),
        details={
            "datasets": datasets,
            "rows_per_dataset": rows,
            "dask_workers": WORKERS,
            "databases": f"{databases.prefix}_*",
        },
        cleanup=cleanup,
    )


def speedup(ours: Stats, baseline: Stats, case: Case) -> float:
    return baseline.median / ours.median


BENCHMARK = Benchmark(
    name="parallel",
    ours=f"a cookbook of independent datasets, one task each, on a Dask cluster of {WORKERS} worker processes",
    baseline="the same cookbook in-process (no Dask setting): one dataset after another",
    target=Target(1.6, ">=", f"≥ 1.6x faster on {WORKERS} workers"),
    floor=f"the same ingests as plain function calls (no Prefect, no Dask) in a pool of {WORKERS} processes "
    "with the Dask workers' polars threads",
    setup=setup,
    quick_size=(2, 2_000),
    full_size=(8, 1_000_000),
    describe_size=lambda size: f"{size[0]} datasets x {size[1]:,} rows",
    score=speedup,
    score_unit="x speedup",
    order=35,
)
