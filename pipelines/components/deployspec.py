"""What to deploy: prefect.yaml entries and the per-kind rules in deployments/<kind>.yaml.

Pure parsing and template rendering, no Prefect API calls. ``pipelines deploy`` resolves every
``{{ variable }}`` itself (Prefect's own deploy leaves an unset ``{{ $VAR }}`` as literal text), so
a template that cannot be resolved is an error naming the variable and the entry, never text in a
deployment.

Variables: ``namespace``, ``kind``, ``branch``, ``commit``, ``short_commit``, ``data_url``,
``namespace_url``, ``landing_url``, ``warehouse_url``, ``s3_endpoint_url``, ``s3_region``, and
``$NAME`` for the deploying process's environment variable NAME. A mapping value that is exactly
one optional variable which has no value (``s3_endpoint_url``, ``s3_region``) is left out.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines.components.environment import Kind
from pipelines.components.errors import ConfigError, did_you_mean

KIND_DIR = "deployments"
DEFAULT_WORK_POOL = "pipelines"
DEFAULT_WORK_POOL_TYPE = "process"

_TEMPLATE = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_WHOLE_TEMPLATE = re.compile(r"^\{\{\s*([^{}]*?)\s*\}\}$")
_ENTRYPOINT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "API_KEY", "ACCESS_KEY", "PRIVATE")

OPTIONAL_VARIABLES = ("s3_endpoint_url", "s3_region")
VARIABLES = (
    "namespace",
    "kind",
    "branch",
    "commit",
    "short_commit",
    "data_url",
    "namespace_url",
    "landing_url",
    "warehouse_url",
    *OPTIONAL_VARIABLES,
)

TOP_LEVEL_KEYS = ("name", "prefect-version", "deployments", "definitions", "build", "push", "pull")
ENTRY_KEYS = ("name", "entrypoint", "description", "tags", "parameters", "schedules", "job_variables")
KIND_KEYS = ("work_pool", "schedules", "result_storage", "parameters")
WORK_POOL_KEYS = ("name", "type", "job_variables")
SCHEDULE_KEYS = {
    "cron": ("cron", "timezone", "day_or", "active"),
    "interval": ("interval", "anchor_date", "timezone", "active"),
    "rrule": ("rrule", "timezone", "active"),
}
# An interval schedule without an anchor would get "now" as its anchor, so every deploy would differ.
DEFAULT_ANCHOR = "2020-01-01T00:00:00+00:00"


@dataclass
class TemplateContext:
    """The values ``{{ variable }}`` resolves to, and the environment ``{{ $NAME }}`` reads."""

    values: dict[str, str | None]
    environ: Mapping[str, str]

    def lookup(self, name: str, where: str) -> str | None:
        if name.startswith("$"):
            key = name[1:].strip()
            if any(word in key.upper() for word in _SECRET_WORDS):
                raise ConfigError(
                    f"{where}: '{{{{ {name} }}}}' would copy the secret {key} into a deployment, where "
                    "anyone who can read deployments sees it. Remove it, and let the flow look the secret "
                    "up by name at run time (a Prefect Secret block or the worker's environment)."
                )
            if key not in self.environ or self.environ[key] == "":
                raise ConfigError(
                    f"{where}: unresolved template variable '{name}': the environment variable {key} is not "
                    f"set in the process running `pipelines deploy`. Set {key}, or remove the template."
                )
            return self.environ[key]
        if name not in self.values:
            if name.startswith("prefect."):
                hint = (
                    " Prefect's own {{ prefect.* }} references are not resolved by `pipelines deploy`; use a "
                    "{{ $VAR }} from the environment, or look the value up at run time."
                )
            else:
                hint = did_you_mean(name, self.values)
            raise ConfigError(
                f"{where}: unresolved template variable '{name}'.{hint} Known variables: "
                f"{', '.join(self.values)}, and $NAME for an environment variable."
            )
        value = self.values[name]
        if name == "warehouse_url" and value and _has_password(value):
            raise ConfigError(
                f"{where}: '{{{{ warehouse_url }}}}' would put the warehouse password into the deployment, "
                "where anyone who can read deployments sees it. Remove this line and set "
                "PIPELINES_WAREHOUSE_URL in the workers' environment instead (or use a URL without a "
                "password, e.g. with a .pgpass file on the workers)."
            )
        return value

    def render(self, obj: Any, where: str) -> Any:
        """Resolve every template in a YAML value (strings, lists, mappings); errors name `where`."""
        if isinstance(obj, str):
            return self._render_str(obj, where)
        if isinstance(obj, list):
            return [self.render(item, f"{where}[{i}]") for i, item in enumerate(obj)]
        if isinstance(obj, dict):
            rendered = {}
            for key, value in obj.items():
                if not isinstance(key, str):
                    raise ConfigError(f"{where}: key {key!r} must be a string.")
                if isinstance(value, str) and (whole := _WHOLE_TEMPLATE.match(value)):
                    name = whole.group(1).strip()
                    if name in OPTIONAL_VARIABLES and self.values.get(name) is None:
                        continue
                rendered[key] = self.render(value, f"{where}.{key}")
            return rendered
        if isinstance(obj, dt.datetime | dt.date):
            return obj.isoformat()
        return obj

    def _render_str(self, text: str, where: str) -> str:
        def replace(match: re.Match) -> str:
            name = match.group(1).strip()
            value = self.lookup(name, where)
            if value is None:
                raise ConfigError(
                    f"{where}: unresolved template variable '{name}': it has no value in this deploy "
                    f"(the setting is not configured). Configure it, or write this value without "
                    f"'{{{{ {name} }}}}'."
                )
            return str(value)

        rendered = _TEMPLATE.sub(replace, text)
        if "{{" in rendered or "}}" in rendered:
            raise ConfigError(
                f"{where}: {text!r} has an unbalanced '{{{{' or '}}}}'; a template is written {{{{ variable }}}}."
            )
        return rendered


def _has_password(url: str) -> bool:
    try:
        import sqlalchemy as sa

        return bool(sa.engine.make_url(url).password)
    except Exception:
        return "@" in url and ":" in url.split("@", 1)[0].split("//", 1)[-1]


# prefect.yaml --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One deployment of prefect.yaml, templates still unrendered."""

    index: int
    entrypoint: str  # module form: package.module:flow
    raw: dict[str, Any]
    file: Path

    @property
    def where(self) -> str:
        return f"{self.file.name} deployments[{self.index}] ({self.entrypoint})"

    @property
    def module(self) -> str:
        return self.entrypoint.split(":", 1)[0]

    @property
    def attribute(self) -> str:
        return self.entrypoint.split(":", 1)[1]


def normalise_entrypoint(value: Any, where: str) -> str:
    """``pipelines/cookbooks/flights.py:flights`` or ``pipelines.cookbooks.flights:flights`` -> module form.

    Deployments import flows as modules, so result classes keep their real module names and
    another process can decode a run's JSON result.
    """
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"{where}: 'entrypoint' is required, e.g. pipelines.cookbooks.flights:flights "
            "(module path, a colon, the flow function)."
        )
    text = value.strip()
    if ".py:" in text:
        path, _, attr = text.rpartition(":")
        text = path[: -len(".py")].replace("\\", "/").strip("/").replace("/", ".") + ":" + attr
    if not _ENTRYPOINT.match(text):
        raise ConfigError(
            f"{where}: entrypoint {value!r} is not 'package.module:flow' (or 'path/to/file.py:flow'), "
            "e.g. pipelines.cookbooks.flights:flights."
        )
    return text


def _load_yaml(path: Path, what: str) -> Any:
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist.")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None


def _unknown_keys(data: Mapping, allowed: tuple[str, ...], where: str) -> None:
    for key in data:
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key {key!r}.{did_you_mean(str(key), allowed)} Allowed: {', '.join(allowed)}."
            )


def load_prefect_file(path: str | Path) -> list[Entry]:
    """Every deployment entry of a prefect.yaml, checked for shape (templates are rendered later)."""
    path = Path(path).resolve()
    data = _load_yaml(path, "The deployment file")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with a 'deployments' list.")
    _unknown_keys(data, TOP_LEVEL_KEYS, path.name)
    for key in ("build", "push", "pull"):
        if data.get(key):
            raise ConfigError(
                f"{path.name}: '{key}' steps are not used: `pipelines deploy` ships a snapshot of the deployed "
                "commit and adds the pull step that fetches it. Remove the section."
            )
    deployments = data.get("deployments")
    if not isinstance(deployments, list) or not deployments:
        raise ConfigError(f"{path.name}: 'deployments' must be a non-empty list of deployments.")
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(deployments):
        where = f"{path.name} deployments[{index}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a mapping with name, entrypoint, parameters, ...")
        _unknown_keys(raw, ENTRY_KEYS, where)
        entrypoint = normalise_entrypoint(raw.get("entrypoint"), where)
        where = f"{where} ({entrypoint})"
        if entrypoint in seen:
            raise ConfigError(
                f"{where}: the same entrypoint is already deployment [{seen[entrypoint]}]; a flow has one "
                "deployment per namespace."
            )
        seen[entrypoint] = index
        if raw.get("name") is None:
            raise ConfigError(f"{where}: 'name' is required; write name: \"{{{{ namespace }}}}\".")
        for key, kind in (("tags", list), ("parameters", dict), ("schedules", dict), ("job_variables", dict)):
            if raw.get(key) is not None and not isinstance(raw[key], kind):
                raise ConfigError(f"{where}: '{key}' must be a {kind.__name__}.")
        for kind_name in raw.get("schedules") or {}:
            if kind_name not in [k.value for k in Kind]:
                raise ConfigError(
                    f"{where}: schedules.{kind_name}: schedules are listed per namespace kind "
                    f"(serving, research, e2e).{did_you_mean(str(kind_name), [k.value for k in Kind])}"
                )
        entries.append(Entry(index=index, entrypoint=entrypoint, raw=raw, file=path))
    return entries


# deployments/<kind>.yaml ---------------------------------------------------------------------


@dataclass(frozen=True)
class KindSettings:
    """The rules deploying applies to every namespace of one kind (templates still unrendered)."""

    kind: Kind
    file: Path
    work_pool: str = DEFAULT_WORK_POOL
    work_pool_type: str = DEFAULT_WORK_POOL_TYPE
    job_variables: dict[str, Any] = field(default_factory=dict)
    schedules: bool = False
    result_storage: str = "{{ namespace_url }}/_results"
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)


def load_kind_settings(directory: str | Path, kind: Kind) -> KindSettings:
    """deployments/<kind>.yaml, checked for shape."""
    path = Path(directory) / f"{kind.value}.yaml"
    data = _load_yaml(path, f"The settings of {kind.value} namespaces,")
    data = {} if data is None else data
    where = f"{KIND_DIR}/{path.name}"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of {', '.join(KIND_KEYS)}.")
    _unknown_keys(data, KIND_KEYS, where)
    pool = data.get("work_pool") or {}
    if not isinstance(pool, dict):
        raise ConfigError(f"{where}: 'work_pool' must be a mapping of {', '.join(WORK_POOL_KEYS)}.")
    _unknown_keys(pool, WORK_POOL_KEYS, f"{where} work_pool")
    job_variables = pool.get("job_variables") or {}
    if not isinstance(job_variables, dict):
        raise ConfigError(f"{where}: work_pool.job_variables must be a mapping (e.g. env: {{...}}).")
    schedules = data.get("schedules", False)
    if not isinstance(schedules, bool):
        raise ConfigError(
            f"{where}: 'schedules' must be true (deployments get the schedules prefect.yaml declares for "
            f"{kind.value}) or false (no schedules), not {schedules!r}."
        )
    result_storage = data.get("result_storage", KindSettings.result_storage)
    if not isinstance(result_storage, str) or not result_storage.strip():
        raise ConfigError(f"{where}: 'result_storage' must be a folder or s3:// URL.")
    parameters = data.get("parameters") or {}
    if not isinstance(parameters, dict) or not all(isinstance(v, dict) for v in parameters.values()):
        raise ConfigError(f"{where}: 'parameters' must map a flow name to a mapping of parameter values.")
    for name, value in (("name", pool.get("name")), ("type", pool.get("type"))):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"{where}: work_pool.{name} must be a non-empty string.")
    return KindSettings(
        kind=kind,
        file=path,
        work_pool=pool.get("name") or DEFAULT_WORK_POOL,
        work_pool_type=pool.get("type") or DEFAULT_WORK_POOL_TYPE,
        job_variables=job_variables,
        schedules=schedules,
        result_storage=result_storage.strip(),
        parameters=parameters,
    )


# schedules -----------------------------------------------------------------------------------


def parse_schedule(spec: Any, where: str) -> dict[str, Any]:
    """A schedule mapping (cron, interval or rrule, plus timezone/active) as a DeploymentScheduleCreate dict.

    Returned as plain JSON data in the form the Prefect API stores, so it can be compared with
    what a deployment already has.
    """
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule

    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: a schedule is a mapping such as {{cron: '0 6 * * *', timezone: UTC}}.")
    kinds = [k for k in SCHEDULE_KEYS if k in spec]
    if len(kinds) != 1:
        raise ConfigError(
            f"{where}: a schedule needs exactly one of cron, interval or rrule; got {sorted(spec)}."
        )
    kind = kinds[0]
    _unknown_keys(spec, SCHEDULE_KEYS[kind], where)
    values = {k: v for k, v in spec.items() if k != "active"}
    active = spec.get("active", True)
    if not isinstance(active, bool):
        raise ConfigError(f"{where}: 'active' must be true or false.")
    values.setdefault("timezone", "UTC")
    try:
        if kind == "cron":
            schedule = CronSchedule(**values)
        elif kind == "interval":
            values.setdefault("anchor_date", DEFAULT_ANCHOR)
            if isinstance(values["anchor_date"], dt.datetime | dt.date):
                values["anchor_date"] = values["anchor_date"].isoformat()
            schedule = IntervalSchedule(**values)
        else:
            schedule = RRuleSchedule(**values)
    except Exception as exc:
        raise ConfigError(f"{where}: invalid {kind} schedule {spec!r}: {exc}") from None
    return {"schedule": schedule.dict(json_compatible=True), "active": active}
