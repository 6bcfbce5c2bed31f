"""The social_likes cookbook on Dask gives the tables of the in-process run.

Three runs of the same small window on the session's real Prefect server: in-process (one task at a
time), on a local cluster of 2 worker processes (PIPELINES_WORKERS=2), and on a separately started
``dask scheduler`` + ``dask worker`` pair on loopback (PIPELINES_DASK_ADDRESS), as a real cluster
would be. Dask workers are other processes: they report their task runs to PREFECT_API_URL, so these
runs need a Prefect server (the in-process API of this process is out of their reach).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pipelines.components.environment import get_settings
from pipelines.components.resources import Lake, Storage, Warehouse
from tests.conftest import free_port, require_service

REPO = Path(__file__).resolve().parents[2]
WINDOW = {"start": "2024-03-01", "through": "2024-03-03"}
CLEANED = ("posts", "likes")
AGGREGATED = ("likes_per_user", "user_top3_avg", "top_users")
SHARED = ("top_users", "user_top3_avg")
# run ids, arrival times and raw file names (which carry the run id) differ between runs by design
VARYING = {"source_file", "run_id", "quarantined_at"}


def _content(frame: pl.DataFrame) -> pl.DataFrame:
    keep = [c for c in frame.columns if not c.startswith("_") and c not in VARYING]
    return frame.select(keep).sort(keep, nulls_last=True)


def _tables(root: Path) -> dict[str, pl.DataFrame]:
    """Every output table of the run whose data root is ``root``: lake zones and warehouse."""
    lake = Lake(Storage(str(root / "data" / "test")))
    tables = {f"cleaned/{n}": lake.read("cleaned", n) for n in CLEANED}
    tables |= {f"quarantine/{n}": lake.read("quarantine", n) for n in CLEANED}
    tables |= {f"aggregated/{n}": lake.read("aggregated", n) for n in AGGREGATED}
    warehouse = Warehouse.from_settings(get_settings(warehouse_url=f"sqlite:///{root}/warehouse.sqlite"))
    try:
        with warehouse.begin() as conn:
            for name in SHARED:
                tables[f"warehouse/{name}"] = pl.read_database(f'SELECT * FROM "{name}"', conn)
    finally:
        warehouse.dispose()
    return {name: _content(frame) for name, frame in tables.items()}


def _run(root: Path, monkeypatch, **engine: str):
    """The cookbook once, in its own data root and warehouse, on the engine the settings choose."""
    from pipelines.cookbooks.social_likes import social_likes

    monkeypatch.setenv("PIPELINES_DATA_URL", str(root / "data"))
    monkeypatch.setenv("PIPELINES_WAREHOUSE_URL", f"sqlite:///{root}/warehouse.sqlite")
    for key in ("PIPELINES_WORKERS", "PIPELINES_DASK_ADDRESS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in engine.items():
        monkeypatch.setenv(key, value)
    state = social_likes(**WINDOW, return_state=True)
    assert state.is_completed(), state.message
    return state.result()


def _wait_port(port: int, proc: subprocess.Popen, what: str, log: Path) -> None:
    import socket

    deadline = time.monotonic() + 120
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            require_service(
                f"{what} did not listen on 127.0.0.1:{port}: {log.read_text(errors='replace')[-2000:]}"
            )
        time.sleep(0.3)


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop a process started in its own session and everything it started (nannies, worker processes)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.fixture
def dask_cluster(tmp_path):
    """``dask scheduler`` and ``dask worker`` (2 single-threaded processes) on free loopback ports."""
    dask = str(Path(sys.executable).with_name("dask"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    started: list[subprocess.Popen] = []
    try:
        log = tmp_path / "scheduler.log"
        scheduler = subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            env=env,
            cwd=tmp_path,
            stdout=open(log, "wb"),  # noqa: SIM115 (the child owns it)
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(scheduler)
        _wait_port(port, scheduler, "dask scheduler", log)
        worker = subprocess.Popen(
            [
                dask,
                "worker",
                address,
                "--nworkers",
                "2",
                "--nthreads",
                "1",
                "--host",
                "127.0.0.1",
                "--no-dashboard",
            ],
            env=env,
            cwd=tmp_path,
            stdout=open(tmp_path / "worker.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(worker)
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for proc in reversed(started):
            _stop_group(proc)


def test_the_cookbook_on_dask_builds_the_tables_of_the_in_process_run(
    prefect_server, dask_cluster, tmp_path, monkeypatch
):
    with prefect_server.settings():
        sequential = _run(tmp_path / "sequential", monkeypatch)
        local = _run(tmp_path / "local", monkeypatch, PIPELINES_WORKERS="2")
        remote = _run(tmp_path / "remote", monkeypatch, PIPELINES_DASK_ADDRESS=dask_cluster)

    expected = _tables(tmp_path / "sequential")
    assert expected["cleaned/likes"].height > 0 and expected["quarantine/likes"].height == 1
    assert expected["warehouse/top_users"].height == 10
    for name in ("local", "remote"):
        tables = _tables(tmp_path / name)
        assert tables.keys() == expected.keys()
        for table, frame in expected.items():
            try:
                assert_frame_equal(tables[table], frame)
            except AssertionError as exc:
                raise AssertionError(f"{name} run, {table}: {exc}") from None
    for result in (local, remote):
        assert result.ingested == sequential.ingested
        assert [u.user_id for u in result.top_users] == [u.user_id for u in sequential.top_users]
        assert {n: (a.status, a.mode, a.rows_written) for n, a in result.aggregates.items()} == {
            n: (a.status, a.mode, a.rows_written) for n, a in sequential.aggregates.items()
        }
