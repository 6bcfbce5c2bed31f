"""The GitHub workflows: valid (checked by a real linter), and wired to the project's commands."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"


def _linter() -> str:
    beside_python = Path(sys.executable).with_name("check-jsonschema")
    found = str(beside_python) if beside_python.exists() else shutil.which("check-jsonschema")
    if not found:
        pytest.fail('check-jsonschema is missing: install the dev extra (pip install -e ".[dev]")')
    return found


def _lint(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_linter(), "--builtin-schema", "vendor.github-workflows", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _workflow(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


def _steps(workflow: dict) -> list[dict]:
    (job,) = workflow["jobs"].values()
    return job["steps"]


def _runs(workflow: dict) -> list[str]:
    return [step["run"] for step in _steps(workflow) if "run" in step]


def test_the_workflows_pass_the_github_workflow_schema():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert [f.name for f in files] == ["ci.yml", "deploy.yml", "teardown.yml"]
    result = _lint(*files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_linter_rejects_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("name: broken\non:\n  pull_request:\njobs:\n  test:\n    steps:\n      - run: pytest\n")
    result = _lint(broken)
    assert result.returncode != 0
    assert "runs-on" in result.stdout + result.stderr


def test_pull_requests_and_pushes_run_the_readme_test_command():
    ci = _workflow("ci.yml")
    assert ci["on"] == {"pull_request": None, "push": {"branches": ["**"]}}
    assert _runs(ci) == [".ci/run"]
    (job,) = ci["jobs"].values()
    assert job["env"]["CI"] == "true"
    assert job["services"]["postgres"]["ports"] == ["5432:5432"]
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"python3 -m venv .venv && .*? && pytest", readme).group(0)
    script = (ROOT / ".ci" / "run").read_text()
    # .ci/run is the README's command with the lint inserted before the tests
    assert script.replace("ruff check . && ruff format --check . && ", "").count(command) == 1
    assert "scripts/install-browser" in command


def test_a_push_deploys_only_after_its_tests_passed_and_a_branch_deletion_tears_down():
    ci, deploy = _workflow("ci.yml"), _workflow("deploy.yml")
    # deploy runs when the ci workflow (the one that runs .ci/run) has completed, never on a push itself
    assert deploy["on"] == {"workflow_run": {"workflows": [ci["name"]], "types": ["completed"]}}
    assert ".ci/run" in _runs(ci)
    job = deploy["jobs"]["deploy"]
    # ... and only when that run succeeded, for a push (not for a pull request's run)
    assert job["if"] == (
        "github.event.workflow_run.conclusion == 'success' && github.event.workflow_run.event == 'push'"
    )
    # it deploys exactly the commit that was tested, to the branch it was pushed to
    checkout = next(step for step in _steps(deploy) if step.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["ref"] == "${{ github.event.workflow_run.head_sha }}"
    assert job["env"]["BRANCH"] == "${{ github.event.workflow_run.head_branch }}"
    assert _runs(deploy)[-2] == (
        'git fetch --no-tags --depth=1 origin "+refs/heads/$BRANCH:refs/remotes/origin/$BRANCH"'
    )
    assert _runs(deploy)[-1] == 'pipelines deploy --branch "$BRANCH"'
    guide = (ROOT / "docs" / "deploying.md").read_text()
    assert "## Protected branches" in guide
    assert (
        "`serving`" in guide.split("## Protected branches")[1]
        and "`main`" in guide.split("## Protected branches")[1]
    )

    teardown = _workflow("teardown.yml")
    assert list(teardown["on"]) == ["delete"]
    job = teardown["jobs"]["teardown"]
    assert job["if"] == "github.event.ref_type == 'branch'"
    assert job["env"]["BRANCH"] == "${{ github.event.ref }}"
    assert _runs(teardown)[-1] == 'pipelines teardown --branch "$BRANCH" --purge-data'

    readme = (ROOT / "README.md").read_text()
    assert "## Deploying a branch" in readme
    for workflow in (deploy, teardown):
        env = next(iter(workflow["jobs"].values()))["env"]
        for secret in ("PREFECT_API_URL", "PREFECT_API_KEY"):
            assert env[secret] == f"${{{{ secrets.{secret} }}}}"
            assert f"`{secret}`" in readme


def test_install_browser_finds_an_installed_browser_and_never_fails(tmp_path):
    script = ROOT / "scripts" / "install-browser"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "chromium").write_text("#!/bin/sh\n")
    (fake / "chromium").chmod(0o755)
    found = subprocess.run(
        ["/bin/bash", str(script)], env={"PATH": str(fake)}, capture_output=True, text=True, timeout=60
    )
    assert found.returncode == 0 and f"found {fake / 'chromium'}" in found.stdout
    # Nothing to install with: it says so and still succeeds, leaving the UI test to report it.
    missing = subprocess.run(
        ["/bin/bash", str(script)],
        env={"PATH": str(tmp_path / "empty")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 0
    assert "no Chromium on PATH and no apt-get" in missing.stderr
