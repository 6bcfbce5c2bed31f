"""Which engine runs a cookbook's tasks: the settings, their errors, and the task runner they give."""

import json
import os

import pytest
from prefect.task_runners import SequentialTaskRunner, TaskConcurrencyType
from prefect_dask import DaskTaskRunner
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.components.engine import SettingsTaskRunner, _spawn_environ, local_worker_environ, task_runner
from pipelines.components.environment import Settings
from pipelines.components.errors import ConfigError


def _settings(tmp_path, **environ) -> Settings:
    return Settings.resolve(environ={"PIPELINES_NAMESPACE": "test", **environ}, cwd=tmp_path)


def test_without_either_setting_runs_stay_in_process_one_task_at_a_time(tmp_path):
    settings = _settings(tmp_path)
    assert (settings.dask_address, settings.workers) == (None, None)
    assert settings.engine == "in-process, one task at a time"
    assert "neither PIPELINES_DASK_ADDRESS nor PIPELINES_WORKERS" in settings.origins["engine"]
    assert isinstance(task_runner(settings), SequentialTaskRunner)


def test_workers_start_a_local_cluster_of_that_many_single_threaded_processes(tmp_path):
    settings = _settings(tmp_path, PIPELINES_WORKERS="3")
    assert settings.workers == 3
    assert settings.engine == "local dask cluster of 3 worker process(es)"
    assert settings.origins["engine"] == "environment PIPELINES_WORKERS"
    runner = task_runner(settings)
    assert isinstance(runner, DaskTaskRunner) and runner.address is None
    assert runner.cluster_kwargs["n_workers"] == 3
    assert runner.cluster_kwargs["threads_per_worker"] == 1 and runner.cluster_kwargs["processes"] is True


def test_a_local_clusters_workers_get_their_share_of_the_cores_for_polars():
    share = str(max(1, (os.cpu_count() or 1) // 2))
    assert local_worker_environ(2, environ={}) == {"POLARS_MAX_THREADS": share}
    assert local_worker_environ(64, environ={}) == {"POLARS_MAX_THREADS": "1"}
    assert local_worker_environ(2, environ={"POLARS_MAX_THREADS": "3"}) == {}  # the user's setting stands


def _polars_threads() -> tuple[int, str | None]:
    import polars

    return polars.thread_pool_size(), os.environ.get("POLARS_MAX_THREADS")


def test_spawned_workers_start_with_the_environ_and_this_process_keeps_its_own(monkeypatch):
    from distributed import Client, LocalCluster

    monkeypatch.delenv("POLARS_MAX_THREADS", raising=False)
    with _spawn_environ({"POLARS_MAX_THREADS": "1"}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    assert "POLARS_MAX_THREADS" not in os.environ
    with cluster, Client(cluster) as client:
        assert set(client.run(_polars_threads).values()) == {(1, "1")}


def test_an_address_joins_that_cluster_when_a_prefect_server_is_set(tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    settings = _settings(tmp_path, PIPELINES_DASK_ADDRESS="tcp://10.0.0.5:8786/")
    assert settings.dask_address == "tcp://10.0.0.5:8786"
    assert settings.engine == "dask cluster at tcp://10.0.0.5:8786"
    with temporary_settings(updates={PREFECT_API_URL: "http://10.0.0.1:4200/api"}):
        runner = task_runner(settings)
    assert isinstance(runner, DaskTaskRunner) and runner.address == "tcp://10.0.0.5:8786"


def test_an_address_without_a_prefect_server_is_refused_with_the_fix(tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    settings = _settings(tmp_path, PIPELINES_DASK_ADDRESS="tcp://10.0.0.5:8786")
    with temporary_settings(updates={PREFECT_API_URL: None}), pytest.raises(ConfigError) as info:
        task_runner(settings)
    message = str(info.value)
    assert "PIPELINES_DASK_ADDRESS=tcp://10.0.0.5:8786 (environment PIPELINES_DASK_ADDRESS)" in message
    assert "Set PREFECT_API_URL to a Prefect server both sides can reach" in message


def test_both_settings_are_an_error_naming_each_fix(tmp_path):
    with pytest.raises(ConfigError) as info:
        _settings(tmp_path, PIPELINES_DASK_ADDRESS="tcp://h:8786", PIPELINES_WORKERS="2")
    message = str(info.value)
    assert "PIPELINES_DASK_ADDRESS (environment PIPELINES_DASK_ADDRESS) and PIPELINES_WORKERS" in message
    assert (
        "Unset PIPELINES_WORKERS to run on the cluster at the address, or unset PIPELINES_DASK_ADDRESS"
        in message
    )


@pytest.mark.parametrize("value", ["two", "0", "-1", "1.5", "257"])
def test_a_bad_worker_count_names_the_value_and_the_range(tmp_path, value):
    with pytest.raises(
        ConfigError,
        match=rf"Invalid PIPELINES_WORKERS '{value}' .* from 1 to 256, e\.g\. PIPELINES_WORKERS=2",
    ):
        _settings(tmp_path, PIPELINES_WORKERS=value)


@pytest.mark.parametrize("value", ["host:8786", "http://host:8786", "tcp://host", "tcp://host:port"])
def test_a_bad_address_names_the_expected_form(tmp_path, value):
    with pytest.raises(ConfigError, match=r"expected the address of a Dask scheduler, tcp://host:port"):
        _settings(tmp_path, PIPELINES_DASK_ADDRESS=value)


def test_the_flow_runner_follows_the_settings_of_the_run(monkeypatch):
    runner = SettingsTaskRunner()
    assert runner.concurrency_type == TaskConcurrencyType.SEQUENTIAL
    monkeypatch.setenv("PIPELINES_WORKERS", "2")
    assert runner.concurrency_type == TaskConcurrencyType.PARALLEL
    assert runner.duplicate() == runner and runner.inner is None


def test_pipelines_env_shows_the_engine(monkeypatch):
    monkeypatch.setenv("PIPELINES_WORKERS", "2")
    out = CliRunner().invoke(app, ["env", "--json"])
    assert out.exit_code == 0, out.output
    rows = {r["setting"]: r for r in json.loads(out.output)}
    assert rows["engine"]["value"] == "local dask cluster of 2 worker process(es)"
    assert str(rows["workers"]["value"]) == "2"
    assert rows["dask_address"]["origin"] == "default (unset)"

    monkeypatch.setenv("PIPELINES_DASK_ADDRESS", "tcp://h:8786")
    out = CliRunner().invoke(app, ["env"])
    assert out.exit_code != 0
    assert "error:" in out.output and "are both set" in out.output
