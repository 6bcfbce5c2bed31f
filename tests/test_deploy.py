"""pipelines deploy / teardown against a real Prefect server and process worker on loopback.

Each test deploys a copy of the project as it is on disk (committed into a temporary git
repository), so the code that runs is the code under test; data, warehouse and results go to the
test's own folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.components.environment import Settings
from pipelines.components.errors import ConfigError
from pipelines.components.resources import Warehouse
from pipelines.deploy import deploy, teardown
from tests.conftest import require_service

PROJECT = Path(__file__).resolve().parents[1]
# The flows prefect.yaml deploys (flow name == function name, as tests/test_layout.py checks).
FLOWS = sorted(
    entry["entrypoint"].rsplit(":", 1)[1]
    for entry in yaml.safe_load((PROJECT / "prefect.yaml").read_text())["deployments"]
)


def names(namespace: str, *, without: str | None = None) -> list[str]:
    """Every deployment of the namespace, <flow>/<namespace>, sorted."""
    return [f"{flow}/{namespace}" for flow in FLOWS if flow != without]


ARTIFACTS = PROJECT / "test-artifacts"
GIT = [
    "git",
    "-c",
    "user.name=pipelines tests",
    "-c",
    "user.email=tests@localhost",
    "-c",
    "commit.gpgsign=false",
]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def copy_project(dest: Path, branch: str) -> Path:
    """A one-commit git repository holding the project's files as they are on disk now."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT,
        capture_output=True,
        check=False,
    )
    if listed.returncode != 0:
        pytest.fail(f"the deployment tests copy the project with git, and {PROJECT} is not a git checkout")
    for rel in filter(None, listed.stdout.decode().split("\0")):
        source = PROJECT / rel
        if source.is_file():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    _git(dest, "init", "-q", "-b", branch)
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "the project as tested")
    return dest


def commit_all(repo: Path, message: str) -> str:
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return copy_project(tmp_path_factory.mktemp("project"), "feature/x")


@pytest.fixture(scope="module")
def worker(prefect_server, tmp_path_factory):
    handle = prefect_server.start_worker("pipelines", cwd=tmp_path_factory.mktemp("worker"))
    yield handle
    handle.stop()


def _api(server, call):
    """Run ``await call(client)`` against the test server."""
    from prefect.client.orchestration import get_client

    async def main():
        with server.settings():
            async with get_client() as client:
                return await call(client)

    return asyncio.run(main())


def _deployments(server, namespace: str) -> dict:
    """The API's deployments tagged with the namespace, by <flow>/<name>."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

    async def call(client):
        found = await client.read_deployments(
            deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[f"namespace:{namespace}"]))
        )
        return {f"{(await client.read_flow(d.flow_id)).name}/{d.name}": d for d in found}

    return _api(server, call)


def _strings(value):
    """Every string inside a JSON-like value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _cli(server, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_API_URL": server.api_url, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _run_deployment(server, worker, name: str, parameters: dict):
    from prefect.deployments import run_deployment

    with server.settings():
        run = run_deployment(name, parameters=parameters, timeout=600)
    assert run.state.is_completed(), f"{name} ended {run.state!r}; worker log:\n{worker.output()[-6000:]}"
    return run


READ_RESULT = """
import asyncio, json, sys
from prefect import get_client

async def main():
    async with get_client() as client:
        run = await client.read_flow_run(sys.argv[1])
        result = await run.state.result(fetch=True)
    print(type(result).__module__ + "." + type(result).__qualname__)
    print(json.dumps(result.model_dump(mode="json") if hasattr(result, "model_dump") else result))

asyncio.run(main())
"""


def _read_result_elsewhere(server, run_id, cwd: Path) -> tuple[str, dict]:
    """A separate Python process fetches a run's result through the API (as the notebook client does)."""
    proc = subprocess.run(
        [sys.executable, "-c", READ_RESULT, str(run_id)],
        env=server.env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    type_name, payload = proc.stdout.strip().splitlines()[-2:]
    return type_name, json.loads(payload)


# Deploying -----------------------------------------------------------------------------------


def test_deploy_feature_branch_and_main(repo, prefect_server, tmp_path):
    commit = _git(repo, "rev-parse", "HEAD")
    feature = deploy("feature/x", prefect_file=repo / "prefect.yaml", api_url=prefect_server.api_url)
    main = deploy("main", prefect_file=repo / "prefect.yaml", api_url=prefect_server.api_url)

    assert (feature.namespace, feature.kind, main.namespace, main.kind) == (
        "research-feature-x",
        "research",
        "e2e",
        "e2e",
    )
    assert sorted(feature.names("created")) == names("research-feature-x")
    assert sorted(main.names("created")) == names("e2e")
    assert feature.uploaded_code and feature.created_work_queue and feature.warnings == []

    for namespace, kind, branch in (("research-feature-x", "research", "feature/x"), ("e2e", "e2e", "main")):
        deployments = _deployments(prefect_server, namespace)
        assert sorted(deployments) == names(namespace)
        code = tmp_path / "data" / namespace / "_code" / commit
        for full_name, deployment in deployments.items():
            assert deployment.name == namespace
            assert {f"namespace:{namespace}", f"kind:{kind}", f"branch:{branch}", f"commit:{commit}"} <= set(
                deployment.tags
            )
            assert (deployment.work_pool_name, deployment.work_queue_name) == ("pipelines", namespace)
            assert deployment.version == commit[:12]
            if full_name == "e2e_test/e2e":  # e2e runs the e2e_test cookbook on the schedule it declares
                assert [(s.schedule.cron, s.schedule.timezone) for s in deployment.schedules] == [
                    ("0 */6 * * *", "UTC")
                ]
            else:
                assert deployment.schedules == []  # research: never; e2e: only what declares schedules.e2e
            assert deployment.enforce_parameter_schema is True
            env = deployment.job_variables["env"]
            assert env["PIPELINES_NAMESPACE"] == namespace
            assert env["PIPELINES_DATA_URL"] == str(tmp_path / "data")
            assert env["PIPELINES_WAREHOUSE_URL"] == f"sqlite:///{tmp_path}/warehouse/{namespace}.sqlite"
            assert env["PREFECT_LOCAL_STORAGE_PATH"] == str(tmp_path / "data" / namespace / "_results")
            assert "PIPELINES_S3_ENDPOINT_URL" not in env
            assert deployment.pull_steps == [
                {"prefect.deployments.steps.set_working_directory": {"directory": str(code)}}
            ]
            stored = [
                deployment.parameters,
                deployment.job_variables,
                deployment.pull_steps,
                deployment.description,
            ]
            assert not [text for text in _strings(stored) if "{{" in text or "}}" in text]
        flights, ingest = deployments[f"flights/{namespace}"], deployments[f"ingest/{namespace}"]
        assert flights.entrypoint == "pipelines.cookbooks.flights:flights"
        assert ingest.entrypoint == "pipelines.workflows.ingest:ingest"
        assert "cookbook" in flights.tags and "workflow" in ingest.tags
        assert flights.parameters == {} and ingest.parameters == {}
        assert list(flights.parameter_openapi_schema["properties"]) == ["start", "through", "land_sample"]
        assert ingest.parameter_openapi_schema["required"] == ["dataset"]
        assert flights.description.startswith("nycflights13 end to end")
        # the pinned code is the commit's tree
        assert (code / "pipelines" / "cookbooks" / "flights.py").read_bytes() == (
            repo / "pipelines" / "cookbooks" / "flights.py"
        ).read_bytes()

    async def queues(client):
        return sorted(q.name for q in await client.read_work_queues(work_pool_name="pipelines"))

    assert {"research-feature-x", "e2e"} <= set(_api(prefect_server, queues))


def test_deploying_twice_changes_nothing(repo, prefect_server):
    first = deploy("feature/twice", prefect_file=repo / "prefect.yaml", api_url=prefect_server.api_url)
    before = {
        n: (str(d.id), d.updated) for n, d in _deployments(prefect_server, "research-feature-twice").items()
    }
    assert first.changed and sorted(before) == sorted(first.names("created"))

    again = _cli(
        prefect_server,
        "deploy",
        "--branch",
        "feature/twice",
        "--prefect-file",
        str(repo / "prefect.yaml"),
        "--json",
        cwd=repo,
    )
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["changed"] is False and report["uploaded_code"] is False
    assert {d["action"] for d in report["deployments"]} == {"unchanged"}
    after = {
        n: (str(d.id), d.updated) for n, d in _deployments(prefect_server, "research-feature-twice").items()
    }
    assert after == before  # same ids, not even touched


def test_serving_runs_each_cookbook_on_its_schedule_and_purging_it_needs_force(
    repo, prefect_server, tmp_path
):
    try:
        report = deploy("serving", prefect_file=repo / "prefect.yaml", api_url=prefect_server.api_url)
        assert report.kind == "serving"
        deployments = _deployments(prefect_server, "serving")
        schedules = [
            (s.schedule.cron, s.schedule.timezone, s.active) for s in deployments["flights/serving"].schedules
        ]
        assert schedules == [("30 6 * * *", "UTC", True)]
        assert deployments["ingest/serving"].schedules == []  # a workflow users submit: no schedule
        assert deployments["e2e_test/serving"].schedules == []  # its schedule is for the e2e namespace only

        with prefect_server.settings(), pytest.raises(ConfigError) as refused:
            teardown("serving", purge_data=True)
        assert "Refusing to purge the serving namespace's data" in str(refused.value)
        assert "--force" in str(refused.value)
        assert (tmp_path / "data" / "serving" / "_code").is_dir()
        assert sorted(_deployments(prefect_server, "serving")) == names("serving")
    finally:
        with prefect_server.settings():
            removed = teardown("serving")
    assert sorted(removed.removed) == names("serving")
    assert _deployments(prefect_server, "serving") == {}
    assert (tmp_path / "data" / "serving").is_dir()  # no purge asked: the data stays


def test_an_entry_removed_from_prefect_yaml_is_pruned(prefect_server, tmp_path_factory):
    repo = copy_project(tmp_path_factory.mktemp("prune"), "feature/prune")
    first = deploy("feature/prune", prefect_file=repo / "prefect.yaml", api_url=prefect_server.api_url)
    assert sorted(first.names("created")) == names("research-feature-prune")

    async def other_namespace(client):
        flow_id = await client.create_flow_from_name("ingest")
        return await client.create_deployment(
            flow_id=flow_id, name="research-other", tags=["namespace:research-other"], entrypoint="x:y"
        )

    other_id = _api(prefect_server, other_namespace)

    document = yaml.safe_load((repo / "prefect.yaml").read_text())
    document["deployments"] = [d for d in document["deployments"] if not d["entrypoint"].endswith(":ingest")]
    (repo / "prefect.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    commit = commit_all(repo, "stop deploying ingest")

    second = deploy("feature/prune", prefect_file=repo / "prefect.yaml", api_url=prefect_server.api_url)
    assert sorted(second.names("pruned")) == ["ingest/research-feature-prune"]
    assert sorted(second.names("updated")) == names("research-feature-prune", without="ingest")
    remaining = _deployments(prefect_server, "research-feature-prune")
    assert sorted(remaining) == names("research-feature-prune", without="ingest")
    assert f"commit:{commit}" in remaining["flights/research-feature-prune"].tags
    assert list(_deployments(prefect_server, "research-other")) == ["ingest/research-other"]

    async def cleanup(client):
        await client.delete_deployment(other_id)

    _api(prefect_server, cleanup)


def test_deploy_refuses_a_broken_file_and_deploys_nothing(prefect_server, tmp_path_factory):
    repo = copy_project(tmp_path_factory.mktemp("broken"), "feature/broken")
    (repo / "pipelines" / "cookbooks" / "pickled.py").write_text(
        'from prefect import flow\n\n\n@flow(name="pickled", persist_result=True, result_serializer="pickle")\n'
        'def pickled() -> int:\n    """Returns a pickled result."""\n    return 1\n'
    )
    document = yaml.safe_load((repo / "prefect.yaml").read_text())
    deployments = document["deployments"]
    document["deployments"] = [
        *deployments,
        {"name": "{{ namespace }}", "entrypoint": "pipelines.cookbooks.missing:missing"},
        {"name": "{{ namespace }}", "entrypoint": "pipelines.cookbooks.pickled:pickled"},
    ]
    (repo / "prefect.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    commit_all(repo, "broken entries")
    with pytest.raises(ConfigError) as caught:
        deploy("feature/broken", prefect_file=repo / "prefect.yaml", api_url=prefect_server.api_url)
    message = str(caught.value)
    assert message.startswith("Nothing was deployed:")
    assert (
        f"deployments[{len(deployments)}] (pipelines.cookbooks.missing:missing): cannot import the flow"
        in message
    )
    assert "No module named 'pipelines.cookbooks.missing'" in message
    assert f"deployments[{len(deployments) + 1}] (pipelines.cookbooks.pickled:pickled)" in message
    assert "its result serializer is 'pickle', not JSON" in message

    document["deployments"] = [{**deployments[1], "parameters": {"datset": "flights"}}]
    (repo / "prefect.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    commit_all(repo, "a misspelt parameter")
    with pytest.raises(ConfigError) as caught:
        deploy("feature/broken", prefect_file=repo / "prefect.yaml", api_url=prefect_server.api_url)
    assert "flow 'ingest' has no parameter 'datset'. Did you mean 'dataset'?" in str(caught.value)
    assert _deployments(prefect_server, "research-feature-broken") == {}


def test_deploy_needs_a_git_checkout_and_a_prefect_api(tmp_path, monkeypatch):
    (tmp_path / "prefect.yaml").write_text("deployments: []\n")
    with pytest.raises(ConfigError, match="is not inside a git work tree"):
        deploy("feature/x", prefect_file=tmp_path / "prefect.yaml")
    _git(tmp_path, "init", "-q", "-b", "feature/x")
    with pytest.raises(ConfigError, match="has no commit yet"):
        deploy("feature/x", prefect_file=tmp_path / "prefect.yaml")
    commit_all(tmp_path, "first")
    with pytest.raises(ConfigError) as caught:
        deploy("feature/x", prefect_file=tmp_path / "prefect.yaml")
    assert "No Prefect API to deploy to: PREFECT_API_URL is not set" in str(caught.value)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "prefect.yaml").write_text("deployments: []\n")
    with pytest.raises(ConfigError, match="must sit at the root of its git repository"):
        deploy("feature/x", prefect_file=tmp_path / "sub" / "prefect.yaml")


# Running -------------------------------------------------------------------------------------


def test_a_deployed_run_completes_and_another_process_reads_its_result(
    repo, prefect_server, worker, tmp_path
):
    deploy("feature/run", prefect_file=repo / "prefect.yaml", api_url=prefect_server.api_url)
    run = _run_deployment(
        prefect_server,
        worker,
        "flights/research-feature-run",
        {"start": "2013-01-01", "through": "2013-01-02"},
    )
    type_name, result = _read_result_elsewhere(prefect_server, run.id, tmp_path)
    assert type_name == "pipelines.cookbooks.flights.FlightsResult"
    assert result["namespace"] == "research-feature-run"
    assert result["window"] == "2013-01-01..2013-01-02"
    assert result["datasets"]["airlines"]["written"] == 16
    assert result["datasets"]["flights"]["written"] > 1000
    assert list((tmp_path / "data" / "research-feature-run" / "_results").iterdir())
    # the run wrote into its own namespace, with the settings the deployment gave it
    assert (tmp_path / "data" / "research-feature-run" / "cleaned" / "flights" / "_delta_log").is_dir()
    assert not (tmp_path / "data" / "serving").exists()


PROBE = '''"""Report which code a run executes."""

import os

import pipelines
from prefect import flow

from pipelines.components.results import RESULT_SERIALIZER

MARKER = "{marker}"


@flow(name="probe", persist_result=True, result_serializer=RESULT_SERIALIZER)
def probe() -> dict:
    """Report which code a run executes."""
    return {{"marker": MARKER, "package": pipelines.__file__, "cwd": os.getcwd()}}
'''


def test_a_run_executes_the_deployed_commit_not_a_newer_one(
    prefect_server, worker, tmp_path_factory, tmp_path
):
    repo = copy_project(tmp_path_factory.mktemp("pinned"), "feature/pin")
    (repo / "pipelines" / "cookbooks" / "probe.py").write_text(PROBE.format(marker="deployed"))
    (repo / "prefect.yaml").write_text(
        'deployments:\n  - name: "{{ namespace }}"\n    entrypoint: pipelines.cookbooks.probe:probe\n'
    )
    deployed = commit_all(repo, "probe")
    deploy("feature/pin", prefect_file=repo / "prefect.yaml", api_url=prefect_server.api_url)

    (repo / "pipelines" / "cookbooks" / "probe.py").write_text(PROBE.format(marker="newer"))
    newer = commit_all(repo, "a newer commit, not deployed")
    assert newer != deployed

    run = _run_deployment(prefect_server, worker, "probe/research-feature-pin", {})
    _, result = _read_result_elsewhere(prefect_server, run.id, tmp_path)
    code = tmp_path / "data" / "research-feature-pin" / "_code" / deployed
    assert result["marker"] == "deployed"
    # the package came from the deployed commit's snapshot, not from an installed or checked-out copy
    assert result["package"] == str(code / "pipelines" / "__init__.py")
    assert result["cwd"] == str(code)
    assert not (tmp_path / "data" / "research-feature-pin" / "_code" / newer).exists()


# Tearing down --------------------------------------------------------------------------------


def test_teardown_removes_deployments_and_purges_data(repo, prefect_server, tmp_path):
    deploy("feature/gone", prefect_file=repo / "prefect.yaml", api_url=prefect_server.api_url)
    namespace = "research-feature-gone"
    root = tmp_path / "data" / namespace
    warehouse = Warehouse.from_settings(Settings.resolve(namespace=namespace))
    with warehouse.begin(write=True) as conn:
        conn.exec_driver_sql("CREATE TABLE shared (x INTEGER)")
    warehouse.dispose()
    sqlite_file = tmp_path / "warehouse" / f"{namespace}.sqlite"
    assert root.is_dir() and sqlite_file.is_file()
    keep = tmp_path / "data" / "research-feature-x" / "cleaned" / "t.txt"
    keep.parent.mkdir(parents=True)
    keep.write_text("another namespace")

    proc = _cli(
        prefect_server, "teardown", "--branch", "feature/gone", "--purge-data", "--json", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert sorted(report["removed"]) == names(namespace)
    assert report["removed_work_queues"] == [f"pipelines/{namespace}"]
    assert report["purged_data"] == str(root)
    assert report["dropped_warehouse"] == f"SQLite file {sqlite_file}"
    assert not root.exists() and not sqlite_file.exists()
    assert keep.read_text() == "another namespace"
    assert _deployments(prefect_server, namespace) == {}

    async def queue_names(client):
        return {q.name for q in await client.read_work_queues(work_pool_name="pipelines")}

    assert namespace not in _api(prefect_server, queue_names)

    with prefect_server.settings():
        again = teardown("feature/gone")
    assert (again.removed, again.removed_work_queues) == ([], [])


def test_teardown_purge_drops_the_postgres_schema(prefect_server, postgres_url, monkeypatch):
    monkeypatch.setenv("PIPELINES_WAREHOUSE_URL", postgres_url)
    warehouses = {
        ns: Warehouse.from_settings(Settings.resolve(namespace=ns)) for ns in ("research-pg", "serving")
    }
    for warehouse in warehouses.values():
        with warehouse.begin(write=True) as conn:
            conn.exec_driver_sql("CREATE TABLE shared (x INTEGER)")
    with prefect_server.settings():
        report = teardown(namespace="research-pg", purge_data=True)
    assert report.dropped_warehouse == "schema research_pg"
    assert warehouses["serving"].table_names() == ["shared"]
    import sqlalchemy as sa

    schemas = sa.inspect(warehouses["serving"].engine).get_schema_names()
    assert "research_pg" not in schemas and "serving" in schemas
    for warehouse in warehouses.values():
        warehouse.dispose()


# The Prefect UI ------------------------------------------------------------------------------


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    require_service("Chromium is not installed: run scripts/install-browser (it installs Debian's chromium)")
    raise AssertionError("unreachable")


def _chromium_args(profile: Path) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=30000",
    ]


def test_the_prefect_ui_lists_the_namespace_deployments(repo, prefect_server, tmp_path):
    browser = _chromium()
    deploy("feature/ui", prefect_file=repo / "prefect.yaml", api_url=prefect_server.api_url)
    page = f"{prefect_server.ui_url}/deployments"
    dom = subprocess.run(
        [browser, *_chromium_args(tmp_path / "profile"), "--dump-dom", page],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert dom.returncode == 0, dom.stderr[-3000:]
    assert dom.stdout.count("research-feature-ui") >= 2, dom.stdout[-3000:]  # one row per deployment
    assert "flights" in dom.stdout and "ingest" in dom.stdout

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "prefect-ui-deployments.png"
    screenshot.unlink(missing_ok=True)
    shot = subprocess.run(
        [
            browser,
            *_chromium_args(tmp_path / "profile"),
            f"--screenshot={screenshot}",
            "--window-size=1440,1000",
            page,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert shot.returncode == 0, shot.stderr[-3000:]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_s3_data_root_code_snapshot_and_results(prefect_server, s3, monkeypatch, tmp_path_factory, tmp_path):
    """Production shape: the snapshot and the results live in S3; the worker pulls the code from there."""
    monkeypatch.setenv("PIPELINES_DATA_URL", s3.url)
    repo = copy_project(tmp_path_factory.mktemp("s3"), "feature/s3")
    (repo / "pipelines" / "cookbooks" / "probe.py").write_text(PROBE.format(marker="from-s3"))
    (repo / "prefect.yaml").write_text(
        'deployments:\n  - name: "{{ namespace }}"\n    entrypoint: pipelines.cookbooks.probe:probe\n'
    )
    rules = yaml.safe_load((repo / "deployments" / "research.yaml").read_text())
    rules["work_pool"]["name"] = "pipelines-s3"  # its own pool: only the worker with S3 credentials runs it
    (repo / "deployments" / "research.yaml").write_text(yaml.safe_dump(rules))
    commit = commit_all(repo, "probe on S3")
    namespace = "research-feature-s3"

    report = deploy("feature/s3", prefect_file=repo / "prefect.yaml", api_url=prefect_server.api_url)
    assert report.code_url == f"{s3.url}/{namespace}/_code/{commit}"
    assert report.result_storage == f"{s3.url}/{namespace}/_results"
    deployment = _deployments(prefect_server, namespace)[f"probe/{namespace}"]
    assert deployment.pull_steps == [
        {
            "prefect.deployments.steps.pull_from_remote_storage": {
                "url": report.code_url,
                "client_kwargs": {"endpoint_url": s3.endpoint_url, "region_name": "us-east-1"},
            }
        }
    ]
    env = deployment.job_variables["env"]
    assert env["PREFECT_DEFAULT_RESULT_STORAGE_BLOCK"] == f"remote-file-system/pipelines-results-{namespace}"
    assert env["PIPELINES_S3_ENDPOINT_URL"] == s3.endpoint_url
    assert not [k for k in env if k.startswith("AWS_")]  # credentials stay on the workers
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=s3.bucket)["Contents"]]
    assert f"{namespace}/_code/{commit}/.pipelines-snapshot.json" in keys
    assert f"{namespace}/_code/{commit}/pipelines/cookbooks/probe.py" in keys

    credentials = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    worker = prefect_server.start_worker("pipelines-s3", cwd=tmp_path, env=credentials)
    try:
        run = _run_deployment(prefect_server, worker, f"probe/{namespace}", {})
    finally:
        worker.stop()
    reader_env = {**prefect_server.env, **credentials}
    proc = subprocess.run(
        [sys.executable, "-c", READ_RESULT, str(run.id)],
        env=reader_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["marker"] == "from-s3"
    pulled = f"{s3.bucket}/{namespace}/_code/{commit}"
    assert result["package"].endswith(f"{pulled}/pipelines/__init__.py") and result["cwd"].endswith(pulled)
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=s3.bucket)["Contents"]]
    assert [k for k in keys if k.startswith(f"{namespace}/_results/")]

    with prefect_server.settings():
        gone = teardown("feature/s3", purge_data=True)
    assert gone.removed == [f"probe/{namespace}"] and gone.removed_result_block
    assert gone.removed_work_queues == [f"pipelines-s3/{namespace}"]
    assert s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=f"{namespace}/").get("KeyCount", 0) == 0
