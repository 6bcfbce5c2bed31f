"""The benchmark process's environment: isolated Prefect home, pipelines settings, machine facts.

`isolate()` must run before Prefect is imported: it points PREFECT_HOME at the cache dir (so
the benchmarks never touch a developer's profile or database, and database migrations are paid
once per cache, not per run) and removes settings that would send runs elsewhere.
"""

from __future__ import annotations

import os
import platform
import sys
import warnings
from importlib import metadata
from pathlib import Path

_LEAKY = ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE")


def isolate(cache: Path) -> dict[str, str]:
    """Set the process environment for benchmarking; returns what was set (for child processes)."""
    for key in list(os.environ):
        if key.startswith(("PIPELINES_", "AWS_")) or key in _LEAKY:
            del os.environ[key]
    home = cache / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    values = {
        "PREFECT_HOME": str(home),
        "PREFECT_PROFILES_PATH": str(home / "profiles.toml"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_LOGGING_TO_API_ENABLED": "false",
    }
    os.environ.update(values)
    warnings.filterwarnings("ignore", message=".*expression-based index.*")  # Prefect's SQLite reflection
    return values


def use_pipelines(*, data_url: Path, landing_url: Path, registry: Path, namespace: str = "bench") -> None:
    """Point the pipelines settings of this process at a benchmark's folders."""
    os.environ["PIPELINES_NAMESPACE"] = namespace
    os.environ["PIPELINES_DATA_URL"] = str(data_url)
    os.environ["PIPELINES_LANDING_URL"] = str(landing_url)
    os.environ["PIPELINES_REGISTRY"] = str(registry)


def child_env() -> dict[str, str]:
    """The environment for a child interpreter: this one's, with the repo importable."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def machine() -> dict[str, object]:
    """CPU count and model, RAM, OS: what a reader needs to compare tables across machines."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        ram_gib = round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": ram_gib,
        "os": f"{platform.system()} {platform.release()}",
    }


def code() -> dict[str, str]:
    """The code this process measures: the folder ``pipelines`` is imported from and its git commit.

    ``python -m bench`` puts the working directory ahead of PYTHONPATH, so an A/B run measures another
    checkout only when it starts in that checkout; the report names the commit it measured."""
    import subprocess

    import pipelines

    root = Path(pipelines.__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown (not a git checkout)"
    if git("status", "--porcelain", "--untracked-files=no", "--", "pipelines", "bench"):
        commit += " with uncommitted changes"
    return {"folder": str(root), "commit": commit}


def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for name in ("prefect", "polars", "deltalake", "psycopg", "pyarrow"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found
