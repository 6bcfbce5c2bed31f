"""Pin deployed code to a commit: a snapshot of the commit's tree that every run pulls.

Prefect's ``git_clone`` pull step cannot check out a commit SHA (PrefectHQ/prefect#17904), so a
deploy exports the commit with ``git archive`` (only the top-level packages the entrypoints import
from, so each run pulls little) and stores the tree under the namespace's data root,
``<namespace_url>/_code/<sha>/``. A run's pull step points at that folder (a local one is
used in place; an S3 one is copied into the run's working directory), Prefect changes into it,
and the flow is imported as a module from there, so the run executes exactly the deployed
commit's ``pipelines`` package, whatever copy the worker has installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.components.errors import ConfigError, PipelinesError
from pipelines.components.resources import S3Options, Storage

MARKER = ".pipelines-snapshot.json"
KEEP_RECENT = 5


@dataclass(frozen=True)
class GitState:
    """The commit a deploy ships and the branch it came from."""

    root: Path
    commit: str
    branch: str | None
    uncommitted: tuple[str, ...]


def _git(root: Path, *args: str, binary: bool = False) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=not binary, timeout=120, check=False
        )
    except FileNotFoundError:
        raise ConfigError(
            "git is not installed; `pipelines deploy` needs it to pin the deployed commit."
        ) from None


def git_state(path: str | Path) -> GitState:
    """The git work tree that holds ``path``: its root, HEAD commit, branch and uncommitted files."""
    folder = Path(path).resolve()
    folder = folder if folder.is_dir() else folder.parent
    top = _git(folder, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise ConfigError(
            f"{folder} is not inside a git work tree: `pipelines deploy` pins every deployment to a commit. "
            "Run it from a clone of the project."
        )
    root = Path(top.stdout.strip())
    head = _git(root, "rev-parse", "--verify", "-q", "HEAD^{commit}")
    if head.returncode != 0 or not head.stdout.strip():
        raise ConfigError(f"The git repository at {root} has no commit yet; commit the code, then deploy.")
    branch = _git(root, "symbolic-ref", "--short", "-q", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return GitState(
        root=root,
        commit=head.stdout.strip(),
        branch=branch.stdout.strip() or None if branch.returncode == 0 else None,
        uncommitted=tuple(line[3:] for line in status.stdout.splitlines() if line.strip()),
    )


def branch_tip(root: Path, branch: str) -> tuple[str | None, list[str]]:
    """The commit at the tip of ``branch`` (the local branch, else ``origin``'s), and the refs looked at."""
    refs = [f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"]
    for ref in refs:
        found = _git(root, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}")
        if found.returncode == 0 and found.stdout.strip():
            return found.stdout.strip(), refs
    return None, refs


def code_key(root: Path, commit: str, ignore: tuple[str, ...]) -> str:
    """An id of the commit's tree without the top-level entries in ``ignore`` (deployment files).

    Two commits with the same key hold the same code, so what their flows look like is the same.
    """
    listing = _git(root, "ls-tree", commit)
    if listing.returncode != 0:
        raise PipelinesError(f"git ls-tree {commit} failed in {root}: {listing.stderr.strip()}")
    kept = [line for line in listing.stdout.splitlines() if line.split("\t", 1)[-1] not in ignore]
    return "\n".join(kept)


def code_roots(root: Path, commit: str, entrypoints: list[str]) -> list[str]:
    """The top-level packages (or modules) of the commit that the entrypoints import from.

    A run needs only those: shipping them alone keeps the snapshot, and each run's pull of it, small.
    """
    tops = sorted({entrypoint.split(":", 1)[0].split(".", 1)[0] for entrypoint in entrypoints})
    candidates = [name for top in tops for name in (top, f"{top}.py")]
    listing = _git(root, "ls-tree", "--name-only", commit, "--", *candidates)
    if listing.returncode != 0:
        raise PipelinesError(f"git ls-tree {commit} failed in {root}: {listing.stderr.strip()}")
    return sorted(set(listing.stdout.split()))


def export_commit(root: Path, commit: str, dest: Path, paths: list[str] | None = None) -> Path:
    """Write the commit's tree (``git archive``), or only ``paths`` of it, into dest; returns dest."""
    archive = _git(root, "archive", "--format=tar", commit, *(["--", *paths] if paths else []), binary=True)
    if archive.returncode != 0:
        raise PipelinesError(
            f"git archive {commit} failed in {root}: {archive.stderr.decode(errors='replace').strip()}"
        )
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as handle:
        handle.write(archive.stdout)
        handle.seek(0)
        with tarfile.open(fileobj=handle, mode="r:") as tar:
            tar.extractall(dest, filter="data")
    return dest


# Flow inspection (in a subprocess that imports the snapshot, not this process's copy) ---------

_INSPECT = r"""
import inspect, json, sys, traceback
try:
    from pipelines.components.results import result_problem
except ImportError:
    def result_problem(flow):
        serializer = flow.result_serializer
        kind = serializer if isinstance(serializer, str) else getattr(serializer, "type", None)
        if flow.persist_result is not True or kind != "json":
            return "it does not persist its result as JSON (persist_result=True, a JSON result serializer)"
        return None
out = {}
for entrypoint in sys.argv[1:]:
    try:
        from prefect.flows import Flow
        from prefect.utilities.importtools import import_object
        flow = import_object(entrypoint)
        if not isinstance(flow, Flow):
            raise TypeError(f"{entrypoint} is a {type(flow).__name__}, not a Prefect flow (decorate it with @flow)")
        signature = inspect.signature(flow.fn)
        out[entrypoint] = {
            "name": flow.name,
            "description": flow.description,
            "parameters": list(signature.parameters),
            "required": [n for n, p in signature.parameters.items() if p.default is inspect.Parameter.empty],
            "schema": json.loads(json.dumps(flow.parameters.dict(), default=str)),
            "file": inspect.getfile(flow.fn),
            "result_problem": result_problem(flow),
        }
    except BaseException as exc:
        lines = traceback.format_exception_only(type(exc), exc)
        out[entrypoint] = {"error": "".join(lines).strip()}
sys.stdout.write("\n__PIPELINES_FLOWS__" + json.dumps(out) + "\n")
"""


@dataclass(frozen=True)
class FlowInfo:
    """What the deployed commit's flow looks like: name, parameters and its JSON schema."""

    entrypoint: str
    name: str
    description: str | None
    parameters: tuple[str, ...]
    required: tuple[str, ...]
    schema: dict[str, Any]
    file: str
    result_problem: str | None


# What the flows of a code tree look like, by (code key, entrypoint, interpreter): importing them
# takes seconds, and a process that deploys the same code to several namespaces needs it once.
_INSPECTED: dict[tuple, dict] = {}


def inspect_flows(
    code_dir: Path, entrypoints: list[str], key: str | None = None
) -> dict[str, FlowInfo | str]:
    """Import each entrypoint from code_dir in a fresh interpreter; a FlowInfo, or the error text.

    With ``key`` (see :func:`code_key`), entrypoints of code this process inspected already are not
    imported again.
    """
    where = (key, sys.executable, os.environ.get("PYTHONPATH"))
    known = {e: _INSPECTED[(*where, e)] for e in entrypoints if key is not None and (*where, e) in _INSPECTED}
    missing = [e for e in entrypoints if e not in known]
    fresh = _import_flows(code_dir, missing) if missing else {}
    if key is not None:
        _INSPECTED.update({(*where, e): info for e, info in fresh.items()})
    raw = {e: known.get(e) or fresh[e] for e in entrypoints}
    found: dict[str, FlowInfo | str] = {}
    for entrypoint, info in raw.items():
        if "error" in info:
            found[entrypoint] = info["error"]
            continue
        file = Path(info["file"])
        found[entrypoint] = FlowInfo(
            entrypoint=entrypoint,
            name=info["name"],
            description=info["description"],
            parameters=tuple(info["parameters"]),
            required=tuple(info["required"]),
            schema=info["schema"],
            file=str(file if file.is_absolute() else code_dir / file),
            result_problem=info["result_problem"],
        )
    return found


def _import_flows(code_dir: Path, entrypoints: list[str]) -> dict[str, dict]:
    """The raw inspection of every entrypoint; a flow file inside code_dir is given relative to it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(code_dir), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", _INSPECT, *entrypoints],
        cwd=code_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    marker = "__PIPELINES_FLOWS__"
    if marker not in proc.stdout:
        raise PipelinesError(
            f"Could not import the flows of the deployed commit (exit code {proc.returncode}):\n"
            f"{(proc.stderr or proc.stdout)[-3000:]}"
        )
    raw = json.loads(proc.stdout.rsplit(marker, 1)[1])
    for info in raw.values():
        if "file" in info and Path(info["file"]).resolve().is_relative_to(code_dir.resolve()):
            info["file"] = str(Path(info["file"]).resolve().relative_to(code_dir.resolve()))
    return raw


# The store of snapshots ----------------------------------------------------------------------


class CodeStore:
    """Commit snapshots under ``<namespace_url>/_code/<sha>/``; each is complete once its marker exists."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def url(self, commit: str) -> str:
        return self.storage.uri(commit)

    def has(self, commit: str) -> bool:
        return self.storage.exists(commit, MARKER)

    def publish(self, commit: str, tree: Path) -> bool:
        """Store the tree for commit unless it is already there; True when it was uploaded now."""
        if self.has(commit):
            return False
        self.storage.check_writable(commit)
        marker = json.dumps({"commit": commit, "created_at": datetime.now(UTC).isoformat()})
        if self.storage.is_s3:
            target = self.storage.path(commit)
            self.storage.fs.put(str(tree) + "/", target, recursive=True)
            self.storage.write_atomic(f"{commit}/{MARKER}", marker.encode())
            return True
        # Local: build beside the target, then one rename makes it appear whole.
        final = Path(self.storage.path(commit))
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = final.with_name(f".{commit}.{uuid.uuid4().hex}.tmp")
        try:
            shutil.copytree(tree, staging)
            (staging / MARKER).write_text(marker, encoding="utf-8")
            if final.exists():  # an earlier copy that never got its marker
                shutil.rmtree(final)
            os.replace(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return True

    def pull_steps(self, commit: str, s3: S3Options | None) -> list[dict[str, Any]]:
        """The deployment's pull steps: Prefect built-ins only, so nothing imports ``pipelines`` early."""
        if not self.storage.is_s3:
            return [{"prefect.deployments.steps.set_working_directory": {"directory": self.url(commit)}}]
        settings: dict[str, Any] = {}
        client_kwargs = {}
        if s3 and s3.endpoint_url:
            client_kwargs["endpoint_url"] = s3.endpoint_url
        if s3 and s3.region:
            client_kwargs["region_name"] = s3.region
        if client_kwargs:
            settings["client_kwargs"] = client_kwargs
        return [{"prefect.deployments.steps.pull_from_remote_storage": {"url": self.url(commit), **settings}}]

    def snapshots(self) -> list[tuple[str, str]]:
        """(commit, created_at) of every complete snapshot, newest first."""
        if not self.storage.exists():
            return []
        found = []
        for marker in self.storage.glob(f"*/{MARKER}"):
            commit = marker.split("/", 1)[0]
            try:
                created = json.loads(self.storage.read_bytes(marker)).get("created_at", "")
            except (OSError, ValueError):
                created = ""
            found.append((commit, created))
        return sorted(found, key=lambda item: item[1], reverse=True)

    def prune(self, keep: set[str]) -> list[str]:
        """Delete snapshots other than ``keep`` and the most recent few (runs may still use them)."""
        removed = []
        for number, (commit, _) in enumerate(self.snapshots()):
            if commit in keep or number < KEEP_RECENT:
                continue
            self.storage.delete(commit)
            removed.append(commit)
        return removed
