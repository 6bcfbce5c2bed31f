"""Fixtures every test tier shares.

Isolation happens before anything imports Prefect: PREFECT_HOME points at a fresh folder for
the session, and no developer setting (PIPELINES_*, AWS_*, PREFECT_API_URL) leaks in.
Services: ``postgres_url`` (a fresh database on the local PostgreSQL, dropped afterwards),
``s3`` (moto_server on a free loopback port with a fresh bucket). With CI=true a missing
service fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="pipelines-tests-"))
for _key in list(os.environ):
    if _key.startswith(("PIPELINES_", "AWS_", "GITHUB_")) or _key in (
        "PREFECT_API_URL",
        "PREFECT_API_KEY",
        "PREFECT_PROFILE",
    ):
        del os.environ[_key]
os.environ["PREFECT_HOME"] = str(_SESSION_ROOT / "prefect-home")
os.environ["PREFECT_PROFILES_PATH"] = str(_SESSION_ROOT / "prefect-home" / "profiles.toml")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"

import pytest  # noqa: E402

CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
POSTGRES_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5"
_SERVICE_FIXTURES = {"postgres_url", "s3", "s3_server", "prefect_server"}


def require_service(message: str) -> None:
    """Skip locally, fail in CI: a required service that is missing in CI is a failure."""
    if CI:
        pytest.fail(f"{message} (CI=true: a missing service is a failure, not a skip)")
    pytest.skip(message)


_TIERS = ("integration", "local", "unit")


def pytest_collection_modifyitems(items):
    """Tier by fixture unless marked: services -> integration, Prefect harness -> local.

    Then order files by their heaviest tier (integration files first, each file kept whole and in
    its own order): pytest-xdist hands out whole files, and the long ones must not start last."""
    for item in items:
        if any(item.get_closest_marker(m) for m in _TIERS):
            continue
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & _SERVICE_FIXTURES:
            item.add_marker(pytest.mark.integration)
        elif "prefect_harness" in fixtures:
            item.add_marker(pytest.mark.local)
        else:
            item.add_marker(pytest.mark.unit)
    rank: dict[str, int] = {}
    for item in items:
        tier = next(i for i, name in enumerate(_TIERS) if item.get_closest_marker(name))
        rank[item.nodeid.split("::")[0]] = min(tier, rank.get(item.nodeid.split("::")[0], tier))
    position = {id(item): index for index, item in enumerate(items)}
    items.sort(key=lambda item: (rank[item.nodeid.split("::")[0]], position[id(item)]))


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_ROOT, ignore_errors=True)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Every test runs in its own folder with its own data root, warehouse and namespace."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIPELINES_NAMESPACE", "test")
    monkeypatch.setenv("PIPELINES_DATA_URL", str(tmp_path / "data"))
    monkeypatch.setenv("PIPELINES_WAREHOUSE_URL", f"sqlite:///{tmp_path}/warehouse/{{namespace}}.sqlite")
    return tmp_path


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect database for the session (flows run on the ephemeral API).

    The API is started once and kept up for the session, as the client does, so no flow run or
    client call of a test pays (or, on a busy machine, times out in) Prefect's start-up again."""
    from prefect.testing.utilities import prefect_test_harness

    from pipelines.components.localapi import ensure_local_api

    with prefect_test_harness():
        ensure_local_api()
        yield


# PostgreSQL ----------------------------------------------------------------------------------


@pytest.fixture
def postgres_url():
    """A fresh database on the local PostgreSQL; dropped after the test."""
    try:
        import psycopg

        admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True)
    except Exception as exc:
        require_service(f"PostgreSQL on 127.0.0.1:5432 is not reachable: {exc}")
    name = f"pipelines_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


# S3 (moto_server) ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class S3Env:
    endpoint_url: str
    bucket: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}"

    @property
    def options(self):
        from pipelines.components.resources import S3Options

        return S3Options(endpoint_url=self.endpoint_url, region="us-east-1", key="testing", secret="testing")

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@pytest.fixture(scope="session")
def s3_server():
    """moto_server on a free loopback port for the session (as s3fs's own tests do)."""
    port = free_port()
    log = open(_SESSION_ROOT / "moto.log", "wb")  # noqa: SIM115 (closed at teardown)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    except OSError as exc:
        require_service(f"moto_server could not start: {exc}")
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    import urllib.request

    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
            break
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                require_service(f"moto_server did not start on {endpoint}; see {log.name}")
            time.sleep(0.2)
    yield endpoint
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture
def s3(s3_server, monkeypatch) -> S3Env:
    """A fresh bucket on the moto server, with the settings and secrets pointing at it."""
    env = S3Env(endpoint_url=s3_server, bucket=f"test-{uuid.uuid4().hex[:12]}")
    env.client().create_bucket(Bucket=env.bucket)
    monkeypatch.setenv("PIPELINES_S3_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("PIPELINES_S3_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return env


# Prefect server and worker (real processes on loopback) ---------------------------------------


def _prefect_executable() -> str:
    return str(Path(sys.executable).with_name("prefect"))


def _wait_http(url: str, proc: subprocess.Popen, timeout: float, what: str, log: Path) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except Exception:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            require_service(f"{what} did not come up at {url}; last log lines:\n{tail}")
        time.sleep(0.3)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass
class PrefectServer:
    """A real ``prefect server`` on a free loopback port, with its own home and SQLite database.

    ``env`` is what a subprocess (CLI, worker, notebook kernel) needs to talk to it;
    ``settings()`` points this process's Prefect client at it for the duration of a block.
    """

    api_url: str
    ui_url: str
    root: Path
    env: dict

    def settings(self):
        from prefect.settings import PREFECT_API_URL, temporary_settings

        return temporary_settings(updates={PREFECT_API_URL: self.api_url})

    def start_worker(
        self, pool: str, *, cwd: Path | None = None, env: dict | None = None, queues: list[str] | None = None
    ):
        """Start ``prefect worker start --pool <pool>`` (process type); returns a stoppable handle.

        ``queues`` limits the worker to those work queues (one per namespace), so tests sharing the
        session's server and pool do not run each other's flow runs.
        """
        log = self.root / f"worker-{pool}-{uuid.uuid4().hex[:6]}.log"
        queue_args = [arg for queue in queues or [] for arg in ("--work-queue", queue)]
        proc = subprocess.Popen(
            [_prefect_executable(), "worker", "start", "--pool", pool, "--type", "process", *queue_args],
            cwd=str(cwd or Path.cwd()),
            env={**self.env, **(env or {})},
            stdout=open(log, "wb"),  # noqa: SIM115 (the child owns it)
            stderr=subprocess.STDOUT,
        )
        return PrefectWorker(proc=proc, log=log)


@dataclass
class PrefectWorker:
    proc: subprocess.Popen
    log: Path

    def stop(self) -> None:
        _stop(self.proc)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture(scope="session")
def prefect_server():
    """One real Prefect server for the session (deployment, client and UI tests share it)."""
    root = _SESSION_ROOT / "prefect-server"
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINES_", "PREFECT_"))} | {
        "PREFECT_HOME": str(root / "home"),
        "PREFECT_PROFILES_PATH": str(root / "home" / "profiles.toml"),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{root / 'server.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        "PREFECT_API_SERVICES_LATE_RUNS_ENABLED": "false",
    }
    log = root / "server.log"
    proc = subprocess.Popen(
        [_prefect_executable(), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=open(log, "wb"),  # noqa: SIM115 (the child owns it)
        stderr=subprocess.STDOUT,
    )
    _wait_http(f"{api_url}/health", proc, 120, "prefect server", log)
    client_env = {k: v for k, v in env.items() if k != "PREFECT_API_DATABASE_CONNECTION_URL"}
    client_env["PREFECT_API_URL"] = api_url
    try:
        yield PrefectServer(api_url=api_url, ui_url=f"http://127.0.0.1:{port}", root=root, env=client_env)
    finally:
        _stop(proc)
