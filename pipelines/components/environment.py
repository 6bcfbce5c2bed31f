"""Namespace and settings, resolved once, in one place, with a safe default.

The namespace comes from ``PIPELINES_NAMESPACE``; else from the git branch
(``serving`` -> serving, ``main``/``master`` -> e2e, any other branch -> ``research-<slug>``);
else ``local``. It never defaults to serving.

Every setting records where its value came from (an argument, the process environment,
a ``.env`` file in the working directory, the active Prefect profile, or a default), so
``pipelines env`` can show it and an error can say where to fix it.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from pipelines.components.errors import ConfigError

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REGISTRY = PACKAGE_ROOT / "registry" / "datasets.csv"
LOCAL_FOLDER = ".pipelines"

_NAMESPACE_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_SLUG_MAX = 48


class Kind(StrEnum):
    """What a namespace is for; it decides schedules and safety rules, never code paths."""

    SERVING = "serving"
    RESEARCH = "research"
    E2E = "e2e"


def slugify(text: str) -> str:
    """Lower-case, every run of other characters becomes one '-', trimmed to 48 characters."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:_SLUG_MAX].rstrip("-")


def namespace_for_branch(branch: str) -> str:
    """The namespace a git branch deploys to (the table in DESIGN.md)."""
    if branch == "serving":
        return "serving"
    if branch in ("main", "master"):
        return "e2e"
    slug = slugify(branch)
    if not slug:
        raise ConfigError(
            f"Branch name {branch!r} has no letters or digits to build a namespace from. "
            "Rename the branch or set PIPELINES_NAMESPACE."
        )
    return f"research-{slug}"


def kind_of(namespace: str) -> Kind:
    """serving -> serving; e2e and e2e-* -> e2e; everything else (local included) -> research."""
    if namespace == "serving":
        return Kind.SERVING
    if namespace == "e2e" or namespace.startswith("e2e-"):
        return Kind.E2E
    return Kind.RESEARCH


def validate_namespace(namespace: str, origin: str) -> str:
    if not _NAMESPACE_RE.match(namespace):
        raise ConfigError(
            f"Invalid namespace {namespace!r} (from {origin}): a namespace is 1-63 characters, "
            "lower-case letters, digits and '-', starting with a letter, e.g. 'research-my-idea'."
        )
    return namespace


def git_branch(cwd: str | Path | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """The checked-out branch, or None outside a git work tree.

    A detached HEAD (as in CI on a pull request) falls back to ``GITHUB_HEAD_REF`` or
    ``GITHUB_REF_NAME`` when they are set.
    """
    environ = os.environ if environ is None else environ

    def git(*args: str) -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None

    # symbolic-ref also names an unborn branch (a fresh repository with no commit yet).
    out = git("symbolic-ref", "--short", "-q", "HEAD")
    if out is None:
        return None
    if out.returncode == 0 and out.stdout.strip():
        return out.stdout.strip()
    inside = git("rev-parse", "--is-inside-work-tree")
    if inside is None or inside.returncode != 0:
        return None
    return environ.get("GITHUB_HEAD_REF") or environ.get("GITHUB_REF_NAME") or None


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; '#' comments, blank lines, 'export ' prefixes and quotes are handled."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].strip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE, got {raw!r}.")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        if value:
            values[key.strip()] = value
    return values


def _prefect_profile_value(key: str, environ: Mapping[str, str]) -> tuple[str | None, str]:
    """A value from the active Prefect profile, read from profiles.toml without importing Prefect."""
    home = Path(environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    path = Path(environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    if not path.is_file():
        return None, ""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None, ""
    active = environ.get("PREFECT_PROFILE") or data.get("active", "default")
    value = data.get("profiles", {}).get(active, {}).get(key)
    return (str(value), f"Prefect profile '{active}' ({path})") if value else (None, "")


@dataclass(frozen=True)
class SettingInfo:
    name: str
    value: str | None
    origin: str
    description: str
    secret: bool = False


_DESCRIPTIONS = {
    "namespace": "Where this process reads and writes: data prefix, warehouse schema, deployments.",
    "kind": "serving, research or e2e: decides schedules and safety rules.",
    "branch": "The git branch the namespace was derived from, if any.",
    "data_url": "Root of the data zones; the namespace's zones live under <data_url>/<namespace>.",
    "landing_url": "Where sources drop files to be ingested (shared by namespaces).",
    "warehouse_url": "SQLAlchemy URL of the warehouse (SQLite file per namespace, or PostgreSQL).",
    "registry_path": "The dataset registry CSV; contracts live in contracts/ beside it.",
    "prefect_api_url": "Prefect API; unset means Prefect's ephemeral in-process API (no server).",
    "s3_endpoint_url": "S3 API endpoint for s3:// URLs (unset: AWS's own).",
    "s3_region": "S3 region for s3:// URLs.",
    "max_runs": "Dataset runs (ingests, backfill windows) at once in this namespace: Prefect global "
    "concurrency limit pipelines:<namespace>. Per namespace, so research never takes serving's slots.",
    "max_dataset_runs": "Runs of one dataset that may clean and commit at once: Prefect global concurrency "
    "limit pipelines:<namespace>:<dataset> (1 serialises them).",
    "backfill_windows": "Backfill windows processed at once in this namespace: Prefect global concurrency "
    "limit pipelines:<namespace>:backfill.",
    "vacuum_retention_hours": "Hours a replaced Delta file (and commit log entry) is kept for time travel before "
    "`pipelines maintain` vacuums it; reading an older version is refused. Whole hours, at least 1.",
    "landing_expiry_days": "Days after landing that `pipelines maintain` deletes a landing file already copied to "
    "raw (only files the landing manifest records). Unset: landing files are never deleted.",
}

DEFAULT_VACUUM_RETENTION_HOURS = 168

_ENV_KEYS = {
    "data_url": "PIPELINES_DATA_URL",
    "landing_url": "PIPELINES_LANDING_URL",
    "warehouse_url": "PIPELINES_WAREHOUSE_URL",
    "registry_path": "PIPELINES_REGISTRY",
    "prefect_api_url": "PREFECT_API_URL",
    "s3_endpoint_url": "PIPELINES_S3_ENDPOINT_URL",
    "s3_region": "PIPELINES_S3_REGION",
    "max_runs": "PIPELINES_MAX_RUNS",
    "max_dataset_runs": "PIPELINES_MAX_DATASET_RUNS",
    "backfill_windows": "PIPELINES_BACKFILL_WINDOWS",
    "vacuum_retention_hours": "PIPELINES_VACUUM_RETENTION_HOURS",
    "landing_expiry_days": "PIPELINES_LANDING_EXPIRY_DAYS",
}

# Bounds (Prefect global concurrency limits, see components/limits.py): setting -> default.
_BOUNDS = {"max_runs": 8, "max_dataset_runs": 1, "backfill_windows": 2}


@dataclass(frozen=True)
class Settings:
    """Typed settings of one process. Build with :meth:`Settings.resolve`."""

    namespace: str
    kind: Kind
    branch: str | None
    data_url: str
    landing_url: str
    warehouse_url: str
    registry_path: str
    prefect_api_url: str | None
    s3_endpoint_url: str | None
    s3_region: str | None
    max_runs: int = _BOUNDS["max_runs"]
    max_dataset_runs: int = _BOUNDS["max_dataset_runs"]
    backfill_windows: int = _BOUNDS["backfill_windows"]
    vacuum_retention_hours: int = DEFAULT_VACUUM_RETENTION_HOURS
    landing_expiry_days: int | None = None
    origins: Mapping[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def resolve(
        cls,
        environ: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        **overrides: str | None,
    ) -> Settings:
        """Resolve every setting: argument > process environment > ./.env > profile > default."""
        environ = dict(os.environ if environ is None else environ)
        workdir = Path(cwd or os.getcwd()).resolve()
        unknown = set(overrides) - set(_ENV_KEYS) - {"namespace", "branch"}
        if unknown:
            raise ConfigError(f"Unknown setting(s) {sorted(unknown)}; known: {sorted(_DESCRIPTIONS)}.")
        dotenv_path = workdir / ".env"
        dotenv = read_dotenv(dotenv_path)
        origins: dict[str, str] = {}

        def lookup(key: str, env_key: str) -> str | None:
            if overrides.get(key) is not None:
                origins[key] = "argument"
                return str(overrides[key])
            if environ.get(env_key):
                origins[key] = f"environment {env_key}"
                return environ[env_key]
            if dotenv.get(env_key):
                origins[key] = f".env file {env_key} ({dotenv_path})"
                return dotenv[env_key]
            return None

        # namespace
        branch = None
        namespace = lookup("namespace", "PIPELINES_NAMESPACE")
        if namespace is not None:
            validate_namespace(namespace, origins["namespace"])
        else:
            branch = lookup("branch", "PIPELINES_BRANCH")
            if branch is None:
                branch = git_branch(workdir, environ)
                if branch:
                    origins["branch"] = f"git work tree at {workdir}"
            if branch:
                namespace = validate_namespace(namespace_for_branch(branch), f"branch {branch!r}")
                origins["namespace"] = f"git branch {branch!r}"
            else:
                namespace = "local"
                origins["namespace"] = "default (no PIPELINES_NAMESPACE and no git branch)"
        origins.setdefault("branch", "not a git work tree" if branch is None else "")
        origins["kind"] = f"namespace {namespace!r}"

        local_root = workdir / LOCAL_FOLDER
        data_url = lookup("data_url", "PIPELINES_DATA_URL")
        if data_url is None:
            data_url = str(local_root / "data")
            origins["data_url"] = f"default ({LOCAL_FOLDER}/data under the working directory)"
        data_url = _normalise_url(data_url, workdir)

        landing_url = lookup("landing_url", "PIPELINES_LANDING_URL")
        if landing_url is None:
            landing_url = _join(data_url, "landing")
            origins["landing_url"] = "default (<data_url>/landing)"
        landing_url = _normalise_url(landing_url, workdir)

        warehouse_url = lookup("warehouse_url", "PIPELINES_WAREHOUSE_URL")
        if warehouse_url is None:
            warehouse_url = f"sqlite:///{local_root / 'warehouse' / '{namespace}.sqlite'}"
            origins["warehouse_url"] = "default (one SQLite file per namespace)"
        warehouse_url = warehouse_url.replace("{namespace}", namespace)
        if "://" not in warehouse_url:
            raise ConfigError(
                f"Invalid warehouse URL {warehouse_url!r} (from {origins['warehouse_url']}): expected a "
                "SQLAlchemy URL such as sqlite:///path/to/file.sqlite or "
                "postgresql+psycopg://user@host:5432/db."
            )

        registry_path = lookup("registry_path", "PIPELINES_REGISTRY")
        if registry_path is None:
            registry_path = str(DEFAULT_REGISTRY)
            origins["registry_path"] = "default (the registry shipped with the package)"
        elif not Path(registry_path).is_absolute():
            registry_path = str(workdir / registry_path)

        api = lookup("prefect_api_url", "PREFECT_API_URL")
        if api is None:
            api, origin = _prefect_profile_value("PREFECT_API_URL", environ)
            origins["prefect_api_url"] = origin or "default (ephemeral in-process API, no server)"

        endpoint = lookup("s3_endpoint_url", "PIPELINES_S3_ENDPOINT_URL")
        if endpoint is None and environ.get("AWS_ENDPOINT_URL"):
            endpoint = environ["AWS_ENDPOINT_URL"]
            origins["s3_endpoint_url"] = "environment AWS_ENDPOINT_URL"
        origins.setdefault("s3_endpoint_url", "default (AWS)")
        region = lookup("s3_region", "PIPELINES_S3_REGION")
        if region is None and environ.get("AWS_REGION"):
            region = environ["AWS_REGION"]
            origins["s3_region"] = "environment AWS_REGION"
        origins.setdefault("s3_region", "default (unset)")

        bounds = {}
        for key, default in _BOUNDS.items():
            why = f"the slots of its Prefect concurrency limit; default {default}"
            bounds[key] = _whole_number(lookup(key, _ENV_KEYS[key]), key, origins, minimum=1, why=why)
            if bounds[key] is None:
                bounds[key] = default
                origins[key] = f"default ({default})"
        vacuum_hours = _whole_number(
            lookup("vacuum_retention_hours", _ENV_KEYS["vacuum_retention_hours"]),
            "vacuum_retention_hours",
            origins,
            minimum=1,
            why="a commit being written has files younger than that, which a vacuum would delete",
        )
        if vacuum_hours is None:
            vacuum_hours = DEFAULT_VACUUM_RETENTION_HOURS
            origins["vacuum_retention_hours"] = f"default ({DEFAULT_VACUUM_RETENTION_HOURS} hours, 7 days)"
        expiry_days = _whole_number(
            lookup("landing_expiry_days", _ENV_KEYS["landing_expiry_days"]),
            "landing_expiry_days",
            origins,
            minimum=1,
            why="unset it to keep landing files forever",
        )
        origins.setdefault("landing_expiry_days", "default (unset: landing files are kept)")

        return cls(
            namespace=namespace,
            kind=kind_of(namespace),
            branch=branch,
            data_url=data_url,
            landing_url=landing_url,
            warehouse_url=warehouse_url,
            registry_path=registry_path,
            prefect_api_url=api,
            s3_endpoint_url=endpoint,
            s3_region=region,
            **bounds,
            vacuum_retention_hours=vacuum_hours,
            landing_expiry_days=expiry_days,
            origins=origins,
        )

    @property
    def namespace_url(self) -> str:
        """Root of this namespace's zones: <data_url>/<namespace>."""
        return _join(self.data_url, self.namespace)

    def namespace_url_of(self, namespace: str) -> str:
        """Root of another namespace's zones, e.g. serving's, for reading its cleaned data."""
        return _join(self.data_url, validate_namespace(namespace, "argument"))

    def describe(self) -> list[SettingInfo]:
        """Every setting with its value, origin and description, in display order."""
        rows = []
        for name in _DESCRIPTIONS:
            value = getattr(self, name)
            value = value.value if isinstance(value, Kind) else value
            value = str(value) if isinstance(value, int) else value
            rows.append(SettingInfo(name, value, self.origins.get(name, ""), _DESCRIPTIONS[name]))
        return rows


def _whole_number(
    text: str | None, key: str, origins: Mapping[str, str], *, minimum: int, why: str
) -> int | None:
    """A whole-number setting (None when unset), or a ConfigError naming the variable, its origin and the fix."""
    if text is None:
        return None
    value = text.strip()
    if not value.isdigit() or int(value) < minimum:
        raise ConfigError(
            f"Invalid {_ENV_KEYS[key]}={text!r} (from {origins[key]}): expected a whole number of at least "
            f"{minimum} ({why}). Fix the value or unset it for the default."
        )
    return int(value)


def _normalise_url(url: str, workdir: Path) -> str:
    """Relative local paths become absolute; file:// is stripped; other schemes stay."""
    if "://" in url:
        if url.startswith("file://"):
            return str(Path(url[len("file://") :]).resolve())
        return url.rstrip("/")
    path = Path(url).expanduser()
    return str(path if path.is_absolute() else (workdir / path).resolve())


def _join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *(p.strip("/") for p in parts)])


# Overrides for the code running in one context (a thread, and the flow and task runs it starts),
# so a flow run in this process can use another namespace without touching os.environ.
_CONTEXT_OVERRIDES: ContextVar[tuple[tuple[str, str], ...]] = ContextVar(
    "pipelines_settings_overrides", default=()
)


@contextlib.contextmanager
def settings_overrides(**overrides: str | None) -> Iterator[None]:
    """Within this block (and threads or Prefect runs started from it), ``get_settings`` uses these values.

    ``None`` values are ignored. Unknown names are rejected like :meth:`Settings.resolve` does.
    """
    values = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(values) - set(_ENV_KEYS) - {"namespace", "branch"}
    if unknown:
        raise ConfigError(f"Unknown setting(s) {sorted(unknown)}; known: {sorted(_DESCRIPTIONS)}.")
    token = _CONTEXT_OVERRIDES.set(tuple({**dict(_CONTEXT_OVERRIDES.get()), **values}.items()))
    try:
        yield
    finally:
        _CONTEXT_OVERRIDES.reset(token)


def get_settings(**overrides: str | None) -> Settings:
    """Resolve settings from the current process environment and working directory.

    Precedence: ``overrides`` > an enclosing :func:`settings_overrides` block > environment > .env > ...
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    return Settings.resolve(**{**dict(_CONTEXT_OVERRIDES.get()), **given})
