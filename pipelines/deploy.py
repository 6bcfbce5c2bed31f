"""Deploy a git branch's namespace to Prefect, and tear it down.

``deploy`` reads prefect.yaml and deployments/<kind>.yaml, resolves every template, ships a
snapshot of the deployed commit, and makes the Prefect API hold exactly one deployment
``<flow>/<namespace>`` per entry: created when missing, updated when different, left alone when
identical, and pruned when the entry left prefect.yaml. Before anything changes it refuses a
commit that is not the tip of its branch, a namespace another branch owns (recorded in a Prefect
variable per namespace), and default data or warehouse locations for any namespace but ``local``.
``teardown`` removes what a branch owns and, when asked, the data root and warehouse its
deployments used. See docs/deploying.md.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from pipelines.components.alerts import configure_alerts, remove_alerts
from pipelines.components.codesnapshot import (
    CodeStore,
    FlowInfo,
    GitState,
    branch_tip,
    code_key,
    code_roots,
    export_commit,
    git_state,
    inspect_flows,
)
from pipelines.components.deployspec import (
    KIND_DIR,
    Entry,
    KindSettings,
    TemplateContext,
    load_kind_settings,
    load_prefect_file,
    parse_schedule,
)
from pipelines.components.environment import (
    Kind,
    Settings,
    get_settings,
    git_branch,
    kind_of,
    namespace_for_branch,
    validate_namespace,
)
from pipelines.components.errors import ConfigError, PipelinesError, did_you_mean
from pipelines.components.resources import S3Options, Storage, Warehouse, WriteScope

CODE_FOLDER = "_code"
RESULT_BLOCK_PREFIX = "pipelines-results-"
OWNER_VARIABLE_PREFIX = "pipelines_owner_"
# Work queue priority by kind (1 is served first): a worker on several queues takes serving's runs
# before e2e's, and e2e's before research's.
KIND_PRIORITY = {Kind.SERVING: 0, Kind.E2E: 1, Kind.RESEARCH: 2}
_COMPARED = (
    "version",
    "description",
    "entrypoint",
    "parameters",
    "parameter_openapi_schema",
    "enforce_parameter_schema",
    "tags",
    "work_pool_name",
    "work_queue_name",
    "job_variables",
    "pull_steps",
    "schedules",
)


class DeploymentChange(BaseModel):
    """What deploying did to one deployment."""

    name: str = Field(description="<flow>/<namespace>")
    action: str = Field(description="created, updated, unchanged or pruned")
    id: str | None = None
    changed: list[str] = Field(default=[], description="fields that differed (updated only)")


class DeployReport(BaseModel):
    """The outcome of ``deploy``: one line per deployment, plus what was set up around them."""

    namespace: str
    kind: str
    branch: str
    commit: str
    api_url: str
    work_pool: str
    work_queue: str
    code_url: str
    result_storage: str
    deployments: list[DeploymentChange] = []
    created_work_pool: bool = False
    created_work_queue: bool = False
    uploaded_code: bool = False
    warnings: list[str] = []

    @property
    def changed(self) -> bool:
        """False when deploying again found everything exactly as wanted."""
        return (
            self.created_work_pool
            or self.created_work_queue
            or any(d.action != "unchanged" for d in self.deployments)
        )

    def names(self, action: str | None = None) -> list[str]:
        return [d.name for d in self.deployments if action is None or d.action == action]


class NamespaceOwner(BaseModel):
    """Who deployed a namespace, and where its deployments keep data (a Prefect variable per namespace).

    Written by every deploy; teardown reads it to remove only what the branch owns and to purge the data
    root and warehouse the deployments actually used.
    """

    namespace: str
    branch: str = Field(description="the git branch that owns the namespace")
    commit: str = Field(description="the commit deployed last")
    data_url: str = Field(description="the data root the deployments were given")
    warehouse_url: str = Field(description="the warehouse URL the deployments were given (password hidden)")
    deployed_at: str


class TeardownReport(BaseModel):
    """The outcome of ``teardown``."""

    namespace: str
    kind: str
    api_url: str | None = Field(description="None: no Prefect API configured, only local data was purged")
    removed: list[str] = Field(default=[], description="deployments deleted, as <flow>/<namespace>")
    removed_work_queues: list[str] = Field(default=[], description="<pool>/<queue> deleted")
    removed_result_block: bool = False
    purged_data: str | None = Field(default=None, description="the data root deleted (--purge-data)")
    dropped_warehouse: str | None = Field(default=None, description="the schema or SQLite file dropped")
    owner: str | None = Field(default=None, description="the branch that owns the namespace, when known")
    skipped: str | None = Field(default=None, description="why nothing was removed (another branch owns it)")
    notes: list[str] = []


@dataclass
class PlannedDeployment:
    """One deployment as it should be in the API."""

    flow_name: str
    name: str
    fields: dict[str, Any]  # the _COMPARED fields, as the API stores them
    where: str

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"


@dataclass
class Plan:
    namespace: str
    kind: Kind
    branch: str
    commit: str
    settings: Settings
    kind_settings: KindSettings
    code_store: CodeStore
    result_storage: str
    result_block: dict[str, Any] | None
    deployments: list[PlannedDeployment] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# Public API --------------------------------------------------------------------------------


def _check_registry(path: str | Path) -> None:
    """Every problem of the registry, contracts' expectations included: a run checks those against Great
    Expectations only when it first validates, too late to stop a deploy."""
    from pipelines.components.registry import RegistryError, check_registry

    _, problems = check_registry(path)
    if problems:
        raise RegistryError(
            problems, path, lead=f"The registry {path} has {len(problems)} problem(s); nothing was deployed:"
        )


def deploy(
    branch: str | None = None,
    *,
    namespace: str | None = None,
    prefect_file: str | Path = "prefect.yaml",
    api_url: str | None = None,
) -> DeployReport:
    """Deploy every prefect.yaml entry as ``<flow>/<namespace>``, pinned to the current commit.

    The namespace comes from ``namespace``, else from ``branch`` (the rules of ``pipelines env``),
    else from the settings of this process. Deploying twice changes nothing; deployments tagged
    with the namespace that are no longer in prefect.yaml are deleted. Raises ``ConfigError``, with
    nothing changed, when HEAD is not the tip of ``branch``, another branch owns the namespace, or
    a namespace other than ``local`` has no explicit data and warehouse locations, and
    ``RegistryError`` when the registry or a contract (its expectations included) has a problem.
    """
    prefect_path = Path(prefect_file).resolve()
    git = git_state(prefect_path.parent)
    if prefect_path.parent != git.root.resolve():
        raise ConfigError(
            f"{prefect_path} must sit at the root of its git repository ({git.root}): runs start in the root of "
            "the deployed commit's snapshot and import the flows from there."
        )
    namespace, branch = _target(branch, namespace, git.root)
    _check_branch_tip(git, branch)
    settings = Settings.resolve(namespace=namespace)
    _check_explicit_locations(settings)
    _check_registry(settings.registry_path)
    url = _api_url(api_url, settings)
    entries = load_prefect_file(prefect_path)
    _run(lambda: _check_api_and_owner(url, namespace, branch))
    kind = kind_of(namespace)
    kind_settings = load_kind_settings(prefect_path.parent / KIND_DIR, kind)
    context = _context(settings, branch, git.commit)

    with tempfile.TemporaryDirectory(prefix="pipelines-deploy-") as tmp:
        roots = code_roots(git.root, git.commit, [e.entrypoint for e in entries])
        tree = export_commit(git.root, git.commit, Path(tmp) / git.commit, roots)
        key = code_key(git.root, git.commit, ignore=(prefect_path.name, KIND_DIR))
        flows = inspect_flows(tree, [e.entrypoint for e in entries], key=key)
        plan = _plan(settings, kind_settings, entries, flows, context, branch, git.commit, tree)
        if git.uncommitted:
            plan.warnings.append(
                f"{len(git.uncommitted)} file(s) have uncommitted changes ({', '.join(git.uncommitted[:5])}); "
                f"runs use commit {git.commit[:12]} without them."
            )
        if not settings.data_url.startswith("s3://") and not _is_loopback(url):
            plan.warnings.append(
                f"The data root {settings.data_url} is a local folder but the Prefect API {url} is not on this "
                "machine: workers elsewhere cannot read the code snapshot or the data. Set PIPELINES_DATA_URL "
                "to an s3:// location shared with the workers."
            )
        try:
            uploaded = plan.code_store.publish(git.commit, tree)
        except PipelinesError:
            raise
        except Exception as exc:
            raise PipelinesError(
                f"Could not store the code snapshot at {plan.code_store.url(git.commit)} "
                f"({type(exc).__name__}: {exc}). Nothing was deployed. The deploying process needs write access "
                "to the namespace's data root (for S3: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and the "
                "endpoint in PIPELINES_S3_ENDPOINT_URL if it is not AWS)."
            ) from exc
    report = DeployReport(
        namespace=namespace,
        kind=kind.value,
        branch=branch,
        commit=git.commit,
        api_url=url,
        work_pool=kind_settings.work_pool,
        work_queue=namespace,
        code_url=plan.code_store.url(git.commit),
        result_storage=plan.result_storage,
        uploaded_code=uploaded,
        warnings=plan.warnings,
    )
    report.warnings += configure_alerts(
        settings, url
    ).warnings  # alert blocks, policies (docs/observability.md)
    previous = _run(lambda: _apply(plan, report, url))
    try:
        plan.code_store.prune(keep={git.commit, *previous})
    except Exception as exc:  # the deploy itself succeeded; old snapshots only cost space
        report.warnings.append(
            f"Could not delete old code snapshots under {plan.code_store.storage.url}: {exc}"
        )
    return report


def teardown(
    branch: str | None = None,
    *,
    namespace: str | None = None,
    purge_data: bool = False,
    force: bool = False,
) -> TeardownReport:
    """Delete the namespace's deployments and work queue; with ``purge_data`` also its data and warehouse.

    Only what ``branch`` owns is touched: when another branch that maps to the same namespace deployed it,
    nothing is removed (the report says why). The purge deletes the data root and warehouse the
    deployments were given (recorded at deploy time). Purging serving is refused unless ``force`` is set.
    Without a Prefect API configured, only namespace ``local`` can be torn down: ``purge_data`` purges its data.
    """
    if namespace is not None:
        namespace = validate_namespace(namespace, "argument")
    elif branch is not None:
        namespace = validate_namespace(namespace_for_branch(branch), f"branch {branch!r}")
    else:
        namespace = get_settings().namespace
    kind = kind_of(namespace)
    if purge_data and kind is Kind.SERVING and not force:
        raise ConfigError(
            "Refusing to purge the serving namespace's data: it is what production reads. If you really mean "
            "to delete serving's data root and warehouse schema, run again with --force (force=True)."
        )
    settings = Settings.resolve(namespace=namespace)
    url = _configured_api_url(settings)
    if url is None:
        if namespace != "local":
            raise ConfigError(
                f"No Prefect API is configured (PREFECT_API_URL): tearing down namespace {namespace!r} needs the "
                "server that holds its deployments and the record of which branch owns it and which data root "
                "and warehouse it used. Set PREFECT_API_URL (and PREFECT_API_KEY for Prefect Cloud). Only "
                "namespace 'local' can be purged without a server."
            )
        if not purge_data:
            raise ConfigError(
                "No Prefect API is configured (PREFECT_API_URL), so namespace 'local' has no deployments to "
                "remove. To delete its data root and warehouse, add --purge-data."
            )
        report = TeardownReport(namespace=namespace, kind=kind.value, api_url=None)
        report.notes.append(
            "No Prefect API configured: no deployments were looked at; the local data was purged."
        )
        report.purged_data, report.dropped_warehouse = purge_namespace_data(settings)
        return report
    report = TeardownReport(namespace=namespace, kind=kind.value, api_url=url)
    owner = _run(lambda: _remove(namespace, branch, report, url))
    if not report.skipped:  # alert blocks and notification policies (docs/observability.md)
        remove_alerts(namespace, url)
    if report.skipped or not purge_data:
        return report
    report.purged_data, report.dropped_warehouse = purge_namespace_data(_purge_settings(settings, owner))
    _run(lambda: _forget_owner(url, namespace))
    return report


def purge_namespace_data(settings: Settings) -> tuple[str | None, str | None]:
    """Delete ``settings.namespace``'s data root and drop its warehouse schema (PostgreSQL) or SQLite file.

    Returns (the data root deleted, the schema or SQLite file dropped); each is None when there was nothing
    to delete. Callers decide whether the namespace may be purged (teardown refuses serving without force).
    """
    storage = Storage.from_settings(settings.namespace_url, settings)
    purged = settings.namespace_url if storage.exists() else None
    if purged:
        storage.delete()
    return purged, _drop_warehouse(settings)


def _drop_warehouse(settings: Settings) -> str | None:
    import sqlalchemy as sa

    url = sa.engine.make_url(settings.warehouse_url)
    if url.get_backend_name() == "sqlite":
        database = url.database
        if not database or database == ":memory:" or not Path(database).exists():
            return None
    warehouse = Warehouse.from_settings(settings)
    try:
        if warehouse.schema and warehouse.schema not in sa.inspect(warehouse.engine).get_schema_names():
            return None
        warehouse.drop_schema()
    finally:
        warehouse.dispose()
    return f"schema {warehouse.schema}" if warehouse.schema else f"SQLite file {warehouse.url.database}"


def _hidden(url: str) -> str:
    import sqlalchemy as sa

    return sa.engine.make_url(url).render_as_string(hide_password=True)


def _purge_settings(settings: Settings, owner: NamespaceOwner | None) -> Settings:
    """The settings that point at what the namespace's deployments used (recorded at deploy time)."""
    if owner is None:
        return settings
    warehouse = owner.warehouse_url
    if warehouse == _hidden(settings.warehouse_url):
        warehouse = settings.warehouse_url  # the same URL, with the password this process has
    elif "***" in warehouse:
        raise ConfigError(
            f"Namespace {settings.namespace!r} was deployed with the warehouse {owner.warehouse_url}, but this "
            f"process has {_hidden(settings.warehouse_url)} (from {settings.origins.get('warehouse_url')}). "
            "Nothing was purged. Set PIPELINES_WAREHOUSE_URL to the deployed warehouse, with its password, "
            "and tear down again."
        )
    return Settings.resolve(namespace=settings.namespace, data_url=owner.data_url, warehouse_url=warehouse)


# Resolving the target ------------------------------------------------------------------------


def _target(branch: str | None, namespace: str | None, root: Path) -> tuple[str, str]:
    """(namespace, branch) of a deploy; the branch is needed for the ``branch:`` tag."""
    if namespace is not None:
        namespace = validate_namespace(namespace, "argument")
    elif branch is not None:
        namespace = validate_namespace(namespace_for_branch(branch), f"branch {branch!r}")
    else:
        namespace = Settings.resolve(cwd=root).namespace
    branch = branch or git_branch(root)
    if not branch:
        raise ConfigError(
            f"Cannot tell which git branch {root} is on (a detached HEAD): every deployment is tagged with "
            "its branch. Pass it: `pipelines deploy --branch NAME`."
        )
    return namespace, branch


def _configured_api_url(settings: Settings) -> str | None:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value() or settings.prefect_api_url
    return url.rstrip("/") if url else None


def _api_url(api_url: str | None, settings: Settings) -> str:
    url = api_url or _configured_api_url(settings)
    if not url:
        raise ConfigError(
            "No Prefect API to deploy to: PREFECT_API_URL is not set (argument, environment, .env file or "
            "Prefect profile). Set it to your server or Prefect Cloud workspace, e.g. "
            "PREFECT_API_URL=http://127.0.0.1:4200/api; Prefect's in-process API would vanish with this command."
        )
    return url.rstrip("/")


def _check_branch_tip(git: GitState, branch: str) -> None:
    """A namespace runs only its own branch's commit: HEAD must be the tip of ``branch``."""
    tip, refs = branch_tip(git.root, branch)
    here = f"{git.commit[:12]}" + (f" (branch {git.branch})" if git.branch else " (a detached HEAD)")
    if tip is None:
        raise ConfigError(
            f"Refusing to deploy branch {branch!r}: {git.root} has no such branch (looked at {', '.join(refs)}), "
            f"so nothing says that commit {here} is its tip. Nothing was deployed. Fetch the branch "
            f"(git fetch origin {branch}) or check it out, then deploy again."
        )
    if tip != git.commit:
        own = git.branch or "<this commit's branch>"
        raise ConfigError(
            f"Refusing to deploy branch {branch!r}: the checkout is at {here}, but {branch!r} is at "
            f"{tip[:12]}. A namespace runs only its branch's own commit; nothing was deployed. Either deploy "
            f"{branch!r} from its tip (git switch {branch}, then pipelines deploy --branch {branch}), or deploy "
            f"this commit to its own namespace (pipelines deploy --branch {own}); to put it into {branch!r}, "
            f"merge it into {branch!r} and push."
        )


def _check_explicit_locations(settings: Settings) -> None:
    """Every namespace but ``local`` needs data and warehouse locations set on purpose, not defaults."""
    if settings.namespace == "local":
        return
    missing = [
        f"{env} (the default would be {getattr(settings, name)})"
        for name, env in (("data_url", "PIPELINES_DATA_URL"), ("warehouse_url", "PIPELINES_WAREHOUSE_URL"))
        if settings.origins.get(name, "").startswith("default")
    ]
    if missing:
        raise ConfigError(
            f"Deploying namespace {settings.namespace!r} needs explicit data and warehouse locations, which "
            f"its runs (on the workers) and its teardown will use. Not set: {'; '.join(missing)}. Nothing was "
            "deployed. Set them in the environment or .env, e.g. PIPELINES_DATA_URL=s3://bucket/pipelines and "
            "PIPELINES_WAREHOUSE_URL=postgresql+psycopg://user@host:5432/warehouse; only namespace 'local' "
            "deploys with the local defaults."
        )


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def _context(settings: Settings, branch: str, commit: str) -> TemplateContext:
    return TemplateContext(
        values={
            "namespace": settings.namespace,
            "kind": settings.kind.value,
            "branch": branch,
            "commit": commit,
            "short_commit": commit[:12],
            "data_url": settings.data_url,
            "namespace_url": settings.namespace_url,
            "landing_url": settings.landing_url,
            "warehouse_url": settings.warehouse_url,
            "s3_endpoint_url": settings.s3_endpoint_url,
            "s3_region": settings.s3_region,
        },
        environ=dict(os.environ),
    )


# Planning ------------------------------------------------------------------------------------


def _plan(
    settings: Settings,
    kind_settings: KindSettings,
    entries: list[Entry],
    flows: dict[str, FlowInfo | str],
    context: TemplateContext,
    branch: str,
    commit: str,
    code_dir: Path,
) -> Plan:
    namespace, kind = settings.namespace, settings.kind
    kind_where = f"{KIND_DIR}/{kind_settings.file.name}"
    problems = []
    for entry in entries:
        info = flows.get(entry.entrypoint)
        if isinstance(info, str) or info is None:
            problems.append(
                f"{entry.where}: cannot import the flow from the deployed commit: {info or 'no result'}"
            )
        elif Path(info.file).resolve().is_relative_to(code_dir.resolve()) is False:
            problems.append(
                f"{entry.where}: the flow was imported from {info.file}, not from the deployed commit; another "
                "copy of the package shadows it."
            )
        elif info.result_problem:
            problems.append(
                f"{entry.where}: another process could not read what a run of flow {info.name!r} returns: "
                f"{info.result_problem}."
            )
    if problems:
        raise ConfigError("Nothing was deployed:\n  - " + "\n  - ".join(problems))
    infos = {e.entrypoint: flows[e.entrypoint] for e in entries}
    by_flow: dict[str, Entry] = {}
    for entry in entries:
        name = infos[entry.entrypoint].name
        if name in by_flow:
            raise ConfigError(
                f"{entry.where}: flow {name!r} is already deployed by {by_flow[name].where}; deployment names "
                f"are <flow>/<namespace>, so a flow can be deployed once per namespace."
            )
        by_flow[name] = entry
    for flow_name in kind_settings.parameters:
        if flow_name not in by_flow:
            raise ConfigError(
                f"{kind_where}: parameters for flow {flow_name!r}, which prefect.yaml does not deploy."
                f"{did_you_mean(flow_name, by_flow)} Deployed flows: {', '.join(sorted(by_flow))}."
            )

    # namespace-wide settings
    job_variables = context.render(kind_settings.job_variables, f"{kind_where} work_pool.job_variables")
    result_storage = context.render(kind_settings.result_storage, f"{kind_where} result_storage").rstrip("/")
    if "://" not in result_storage and not Path(result_storage).is_absolute():
        raise ConfigError(
            f"{kind_where}: result_storage {result_storage!r} must be an absolute folder or s3:// URL."
        )
    scope = WriteScope.of(settings)
    if not scope.allows(result_storage) or result_storage.startswith(settings.landing_url.rstrip("/") + "/"):
        raise ConfigError(
            f"{kind_where}: result_storage {result_storage} is outside namespace {namespace!r}'s data root "
            f"{settings.namespace_url}; results of a namespace are written under its own prefix, e.g. "
            "'{{ namespace_url }}/_results'."
        )
    result_env, result_block = _result_storage(result_storage, settings)
    s3 = (
        S3Options.from_settings(settings, use_blocks=False) if settings.data_url.startswith("s3://") else None
    )
    store = CodeStore(Storage.from_settings(f"{settings.namespace_url}/{CODE_FOLDER}", settings))
    plan = Plan(
        namespace=namespace,
        kind=kind,
        branch=branch,
        commit=commit,
        settings=settings,
        kind_settings=kind_settings,
        code_store=store,
        result_storage=result_storage,
        result_block=result_block,
    )
    pull_steps = store.pull_steps(commit, s3)
    standard_tags = [f"namespace:{namespace}", f"kind:{kind.value}", f"branch:{branch}", f"commit:{commit}"]

    for entry in entries:
        info = infos[entry.entrypoint]
        where = entry.where
        raw = entry.raw
        name = context.render(raw["name"], f"{where} name")
        if name != namespace:
            raise ConfigError(
                f"{where}: name renders to {name!r}, but a deployment is named after its namespace "
                f'({namespace!r}); write name: "{{{{ namespace }}}}".'
            )
        parameters = dict(context.render(raw.get("parameters") or {}, f"{where} parameters"))
        parameters.update(
            context.render(
                kind_settings.parameters.get(info.name, {}), f"{kind_where} parameters.{info.name}"
            )
        )
        for key in parameters:
            if key not in info.parameters:
                raise ConfigError(
                    f"{where}: flow {info.name!r} has no parameter {key!r}.{did_you_mean(key, info.parameters)} "
                    f"Its parameters: {', '.join(info.parameters) or '(none)'}."
                )
        tags = context.render(raw.get("tags") or [], f"{where} tags")
        if not all(isinstance(t, str) and t for t in tags):
            raise ConfigError(f"{where}: tags must be non-empty strings.")
        schedules_by_kind = raw.get("schedules") or {}
        declared = schedules_by_kind.get(kind.value) or []
        if not isinstance(declared, list):
            raise ConfigError(f"{where}: schedules.{kind.value} must be a list of schedules.")
        if declared and not kind_settings.schedules:
            plan.warnings.append(
                f"{where}: its {kind.value} schedules are not applied, because {kind_where} sets schedules: false."
            )
        schedules = (
            [
                parse_schedule(
                    context.render(spec, f"{where} schedules.{kind.value}[{i}]"),
                    f"{where} schedules.{kind.value}[{i}]",
                )
                for i, spec in enumerate(declared)
            ]
            if kind_settings.schedules
            else []
        )
        entry_jobs = context.render(raw.get("job_variables") or {}, f"{where} job_variables")
        jobs = _merge(job_variables, entry_jobs)
        env = jobs.get("env") or {}
        if not isinstance(env, dict):
            raise ConfigError(f"{where}: job_variables.env must be a mapping of variable names to values.")
        env = {str(k): _env_value(v, f"{where} job_variables.env.{k}") for k, v in env.items()}
        jobs["env"] = {**env, **result_env}
        description = context.render(raw.get("description"), f"{where} description") or info.description
        plan.deployments.append(
            PlannedDeployment(
                flow_name=info.name,
                name=namespace,
                where=where,
                fields={
                    "version": commit[:12],
                    "description": description,
                    "entrypoint": entry.entrypoint,
                    "parameters": parameters,
                    "parameter_openapi_schema": info.schema,
                    "enforce_parameter_schema": True,
                    "tags": sorted(set(tags) | set(standard_tags)),
                    "work_pool_name": kind_settings.work_pool,
                    "work_queue_name": namespace,
                    "job_variables": jobs,
                    "pull_steps": pull_steps,
                    "schedules": schedules,
                },
            )
        )
    return plan


def _merge(base: dict, override: dict) -> dict:
    merged = json.loads(json.dumps(base))
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _env_value(value: Any, where: str) -> str:
    if isinstance(value, dict | list) or value is None:
        raise ConfigError(f"{where}: an environment variable's value must be a string, not {value!r}.")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _result_storage(url: str, settings: Settings) -> tuple[dict[str, str], dict[str, Any] | None]:
    """The job environment that sends results to url, and the block to save for S3 (else None)."""
    if not url.startswith("s3://"):
        return {"PREFECT_LOCAL_STORAGE_PATH": url}, None
    client_kwargs = {}
    if settings.s3_endpoint_url:
        client_kwargs["endpoint_url"] = settings.s3_endpoint_url
    if settings.s3_region:
        client_kwargs["region_name"] = settings.s3_region
    name = RESULT_BLOCK_PREFIX + settings.namespace
    block = {
        "name": name,
        "data": {"basepath": url, "settings": {"client_kwargs": client_kwargs} if client_kwargs else {}},
    }
    return {"PREFECT_DEFAULT_RESULT_STORAGE_BLOCK": f"remote-file-system/{name}"}, block


# Talking to the Prefect API ------------------------------------------------------------------


def _run(factory: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine to completion, also from inside a running event loop (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def _client(url: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    class _Session:
        async def __aenter__(self):
            self._settings = temporary_settings(updates={PREFECT_API_URL: url})
            self._settings.__enter__()
            self._client = get_client()
            return await self._client.__aenter__()

        async def __aexit__(self, *exc):
            try:
                await self._client.__aexit__(*exc)
            finally:
                self._settings.__exit__(*exc)

    return _Session()


def _normalise(field_name: str, value: Any) -> str:
    if field_name == "tags":
        value = sorted(value or [])
    if field_name in ("parameters", "job_variables") and value is None:
        value = {}
    if field_name == "schedules":
        value = sorted(json.dumps(v, sort_keys=True, default=str) for v in value or [])
    return json.dumps(value, sort_keys=True, default=str)


def _current_fields(deployment) -> dict[str, Any]:
    return {
        "version": deployment.version,
        "description": deployment.description,
        "entrypoint": deployment.entrypoint,
        "parameters": deployment.parameters,
        "parameter_openapi_schema": deployment.parameter_openapi_schema,
        "enforce_parameter_schema": deployment.enforce_parameter_schema,
        "tags": deployment.tags,
        "work_pool_name": deployment.work_pool_name,
        "work_queue_name": deployment.work_queue_name,
        "job_variables": deployment.job_variables,
        "pull_steps": deployment.pull_steps,
        "schedules": [
            {"schedule": s.schedule.dict(json_compatible=True), "active": s.active}
            for s in deployment.schedules
        ],
    }


def _schedule_object(spec: dict[str, Any]):
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule

    data = spec["schedule"]
    cls = CronSchedule if "cron" in data else IntervalSchedule if "interval" in data else RRuleSchedule
    return DeploymentScheduleCreate(schedule=cls(**data), active=spec["active"])


async def _namespace_deployments(client, namespace: str) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

    found, offset = [], 0
    while True:
        page = await client.read_deployments(
            deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[f"namespace:{namespace}"])),
            limit=200,
            offset=offset,
        )
        found.extend(page)
        if len(page) < 200:
            return found
        offset += 200


async def _flow_names(client, deployments: list) -> dict:
    names = {}
    for flow_id in {d.flow_id for d in deployments}:
        names[flow_id] = (await client.read_flow(flow_id)).name
    return names


async def _ensure_pool(client, kind_settings: KindSettings) -> bool:
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    name, type_ = kind_settings.work_pool, kind_settings.work_pool_type
    try:
        pool = await client.read_work_pool(name)
    except ObjectNotFound:
        if type_ != "process":
            raise ConfigError(
                f"Work pool {name!r} (type {type_}, from {KIND_DIR}/{kind_settings.file.name}) does not exist. "
                f"Create it first: prefect work-pool create {name} --type {type_}."
            ) from None
        from prefect.workers.process import ProcessWorker

        try:
            await client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type="process",
                    description="Flow runs of the pipelines project (one work queue per namespace).",
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                )
            )
        except ObjectAlreadyExists:
            return False
        return True
    if pool.type != type_:
        raise ConfigError(
            f"Work pool {name!r} exists with type {pool.type!r}, but {KIND_DIR}/{kind_settings.file.name} says "
            f"{type_!r}. Fix work_pool.type in that file, or deploy to another pool."
        )
    return False


async def _ensure_queue(client, pool: str, namespace: str) -> bool:
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    created = False
    try:
        await client.read_work_queue_by_name(name=namespace, work_pool_name=pool)
    except ObjectNotFound:
        try:
            await client.create_work_queue(
                name=namespace, work_pool_name=pool, description=f"Flow runs of namespace {namespace}."
            )
            created = True
        except ObjectAlreadyExists:
            pass
    await order_queues(client, pool)
    return created


async def order_queues(client, pool: str) -> None:
    """Give the pool's queues priorities serving > e2e > research (1 is served first).

    Prefect gives a new queue the first free priority, so a research queue created before serving's
    would otherwise outrank it. Queues keep their order within a kind.
    """
    queues = await client.read_work_queues(work_pool_name=pool)
    wanted = sorted(queues, key=lambda q: (KIND_PRIORITY[kind_of(q.name)], q.priority, q.name))
    for number, queue in enumerate(wanted, start=1):
        current = {q.id: q.priority for q in await client.read_work_queues(work_pool_name=pool)}
        if current.get(queue.id) != number:
            await client.update_work_queue(queue.id, priority=number)


async def _ensure_result_block(client, block: dict[str, Any]) -> None:
    from prefect.exceptions import ObjectNotFound
    from prefect.filesystems import RemoteFileSystem

    try:
        current = await client.read_block_document_by_name(
            name=block["name"], block_type_slug="remote-file-system", include_secrets=False
        )
        if json.dumps(current.data, sort_keys=True) == json.dumps(block["data"], sort_keys=True):
            return
    except ObjectNotFound:
        pass
    await RemoteFileSystem(**block["data"]).save(block["name"], overwrite=True, client=client)


def _owner_variable(namespace: str) -> str:
    return OWNER_VARIABLE_PREFIX + namespace.replace("-", "_")


async def _read_owner(client, namespace: str) -> tuple[str | None, NamespaceOwner | None]:
    """The branch that owns the namespace and its record; from the deployments' tags when no record exists."""
    variable = await client.read_variable_by_name(_owner_variable(namespace))
    if variable is not None:
        owner = NamespaceOwner.model_validate_json(variable.value)
        return owner.branch, owner
    branches = sorted(
        {
            tag.split(":", 1)[1]
            for d in await _namespace_deployments(client, namespace)
            for tag in d.tags
            if tag.startswith("branch:")
        }
    )
    return (branches[0] if len(branches) == 1 else None), None


async def _write_owner(client, owner: NamespaceOwner) -> None:
    """Record the owner; left alone when only the time would change (deploying again changes nothing)."""
    from prefect.client.schemas.actions import VariableCreate

    name = _owner_variable(owner.namespace)
    current = await client.read_variable_by_name(name)
    if current is not None:
        if NamespaceOwner.model_validate_json(current.value).model_dump(
            exclude={"deployed_at"}
        ) == owner.model_dump(exclude={"deployed_at"}):
            return
        await client.delete_variable_by_name(name)  # VariableUpdate caps values at 255 characters
    await client.create_variable(VariableCreate(name=name, value=owner.model_dump_json(), tags=["pipelines"]))


async def _forget_owner(url: str, namespace: str) -> None:
    from prefect.exceptions import ObjectNotFound

    async with _client(url) as client:
        try:
            await client.delete_variable_by_name(_owner_variable(namespace))
        except ObjectNotFound:
            pass


async def _check_api_and_owner(url: str, namespace: str, branch: str) -> None:
    """The API answers, and no other branch owns the namespace; refuses before anything changes."""
    async with _client(url) as client:
        await _hello(client, url)
        owner, record = await _read_owner(client, namespace)
    if owner is None or owner == branch:
        return
    since = f" (commit {record.commit[:12]}, deployed {record.deployed_at})" if record else ""
    raise ConfigError(
        f"Refusing to deploy branch {branch!r} into namespace {namespace!r}: branch {owner!r} owns it{since}. "
        f"Branch names that differ only in case or punctuation map to the same namespace. Nothing was deployed. "
        f"Rename this branch (git branch -m {branch} <another-name>), or deploy it to a namespace of its own "
        f"(pipelines deploy --branch {branch} --namespace research-<name>); if {owner!r} is gone, remove its "
        f"namespace first: pipelines teardown --branch {owner} --purge-data."
    )


async def _hello(client, url: str) -> None:
    try:
        await client.hello()
    except Exception as exc:
        raise PipelinesError(
            f"The Prefect API at {url} is not reachable ({type(exc).__name__}: {exc}). Is the server running, "
            "and are PREFECT_API_URL (and PREFECT_API_KEY for Prefect Cloud) right?"
        ) from None


async def _apply(plan: Plan, report: DeployReport, url: str) -> set[str]:
    """Make the API match the plan; returns the commits the namespace's deployments had before."""
    from prefect.exceptions import ObjectNotFound

    async with _client(url) as client:
        await _hello(client, url)
        report.created_work_pool = await _ensure_pool(client, plan.kind_settings)
        report.created_work_queue = await _ensure_queue(client, plan.kind_settings.work_pool, plan.namespace)
        if plan.result_block is not None:
            await _ensure_result_block(client, plan.result_block)
        existing = await _namespace_deployments(client, plan.namespace)
        previous = {t.split(":", 1)[1] for d in existing for t in d.tags if t.startswith("commit:")}
        wanted = set()
        for planned in plan.deployments:
            wanted.add(planned.full_name)
            try:
                current = await client.read_deployment_by_name(planned.full_name)
            except ObjectNotFound:
                current = None
            if current is not None:
                have = _current_fields(current)
                changed = [f for f in _COMPARED if _normalise(f, have[f]) != _normalise(f, planned.fields[f])]
                if not changed:
                    report.deployments.append(
                        DeploymentChange(name=planned.full_name, action="unchanged", id=str(current.id))
                    )
                    continue
            flow_id = await client.create_flow_from_name(planned.flow_name)
            fields = dict(planned.fields)
            schedules = [_schedule_object(s) for s in fields.pop("schedules")]
            deployment_id = await client.create_deployment(
                flow_id=flow_id, name=planned.name, schedules=schedules, path=None, **fields
            )
            report.deployments.append(
                DeploymentChange(
                    name=planned.full_name,
                    action="created" if current is None else "updated",
                    id=str(deployment_id),
                    changed=[] if current is None else changed,
                )
            )
        names = await _flow_names(client, existing)
        for deployment in existing:
            full_name = f"{names[deployment.flow_id]}/{deployment.name}"
            if full_name in wanted:
                continue
            await client.delete_deployment(deployment.id)
            report.deployments.append(
                DeploymentChange(name=full_name, action="pruned", id=str(deployment.id))
            )
        await _write_owner(
            client,
            NamespaceOwner(
                namespace=plan.namespace,
                branch=plan.branch,
                commit=plan.commit,
                data_url=plan.settings.data_url,
                warehouse_url=_hidden(plan.settings.warehouse_url),
                deployed_at=datetime.now(UTC).isoformat(timespec="seconds"),
            ),
        )
    return previous


async def _remove(
    namespace: str, branch: str | None, report: TeardownReport, url: str
) -> NamespaceOwner | None:
    """Remove the namespace's deployments, queue and result block, unless another branch owns it."""
    from prefect.exceptions import ObjectNotFound

    async with _client(url) as client:
        await _hello(client, url)
        report.owner, record = await _read_owner(client, namespace)
        if branch is not None and report.owner is not None and report.owner != branch:
            report.skipped = (
                f"namespace {namespace!r} belongs to branch {report.owner!r}, not {branch!r} (both map to it): "
                "nothing was removed or purged"
            )
            return record
        existing = await _namespace_deployments(client, namespace)
        names = await _flow_names(client, existing)
        pools = {pool.name for pool in await client.read_work_pools()}
        for deployment in existing:
            await client.delete_deployment(deployment.id)
            report.removed.append(f"{names[deployment.flow_id]}/{deployment.name}")
        for pool in sorted(pools):
            try:
                queue = await client.read_work_queue_by_name(name=namespace, work_pool_name=pool)
            except ObjectNotFound:
                continue
            await client.delete_work_queue_by_id(queue.id)
            report.removed_work_queues.append(f"{pool}/{namespace}")
        try:
            block = await client.read_block_document_by_name(
                name=RESULT_BLOCK_PREFIX + namespace,
                block_type_slug="remote-file-system",
                include_secrets=False,
            )
        except ObjectNotFound:
            return record
        await client.delete_block_document(block.id)
        report.removed_result_block = True
    return record
