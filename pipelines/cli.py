"""The ``pipelines`` command."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import sys
import traceback
import warnings
from collections.abc import Iterator
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.table import Table

from pipelines.components.environment import get_settings
from pipelines.components.errors import PipelinesError, unknown_name

warnings.filterwarnings("ignore", message=".*expression-based index.*")

app = typer.Typer(
    help="Registry-driven data pipelines on Prefect 2: run, inspect and deploy them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
registry_app = typer.Typer(help="Inspect and validate the dataset registry.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")

console = Console()
err = Console(stderr=True)

# Secret names the project knows about (the keys of .env.example); shown masked by `env`.
KNOWN_SECRETS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "PREFECT_API_KEY",
    "PIPELINES_PSEUDONYM_KEY",
    "PIPELINES_ERASURE_SALT",
)

ParamOption = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="A flow parameter as key=value (JSON values are decoded)."),
]


@app.callback()
def _options(
    debug: Annotated[
        bool,
        typer.Option("--debug", help="On an error, also print its traceback and Prefect's own logs of it."),
    ] = False,
) -> None:
    """Registry-driven data pipelines on Prefect 2: run, inspect and deploy them."""


def _debugging() -> bool:
    context = click.get_current_context(silent=True)
    return bool(context and context.find_root().params.get("debug"))


def _fail(exc: Exception) -> None:
    """Print one `error:` block (the message says what, where and the fix) and exit 1; --debug adds the traceback."""
    if _debugging():
        err.print("".join(traceback.format_exception(exc)), highlight=False, markup=False, soft_wrap=True)
    err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=1)


def _expected_names() -> set[str]:
    names, pending = set(), [PipelinesError]
    while pending:
        cls = pending.pop()
        names.add(cls.__name__)
        pending.extend(cls.__subclasses__())
    return names


class _QuietExpectedFailures(logging.Filter):
    """Drops the console copies Prefect logs of an expected error (its traceback, the failed-state line).

    The CLI prints that error once itself; the records still reach Prefect's API (the UI keeps them).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], PipelinesError):
            return False
        if record.levelno < logging.ERROR:
            return True
        message = record.getMessage()
        return not any(f"{name}: " in message for name in _expected_names())


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Run a command body: an expected error (PipelinesError) becomes one `error:` block, no traceback."""
    quiet, handlers = _QuietExpectedFailures(), []
    if not _debugging() and "prefect" in sys.modules:  # Prefect configured its console handlers on import
        handlers = [h for h in logging.getLogger().handlers if type(h).__name__ != "APILogHandler"]
        for handler in handlers:
            handler.addFilter(quiet)
    try:
        yield
    except PipelinesError as exc:
        _fail(exc)
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


def _check_dataset(dataset: str) -> None:
    """Answer an unknown dataset name from the registry CSV alone, before Prefect and GX are imported.

    Only the names are read (contracts are parsed, and GX imported, by the workflow itself); a
    registry that cannot be read is left for the workflow to report in full.
    """
    try:
        path = get_settings().registry_path
        with open(path, newline="", encoding="utf-8") as handle:
            names = [(row.get("name") or "").strip() for row in csv.DictReader(handle)]
    except (OSError, UnicodeDecodeError, csv.Error, PipelinesError):
        return
    names = [n for n in names if n]
    if names and dataset not in names:
        _fail(unknown_name("dataset", dataset, names))


def _print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@app.command("env")
def env_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show the namespace, its kind, every setting and where it came from (secrets masked)."""
    from pipelines.components.secrets import MASK, find_secret, mask_credentials

    with _user_errors():
        settings = get_settings()
    rows = []
    for info in settings.describe():
        value = info.value
        if info.name == "warehouse_url" and value:
            value = mask_credentials(value)
        rows.append({"setting": info.name, "value": value, "origin": info.origin})
    for name in KNOWN_SECRETS:
        found = find_secret(name, use_blocks=settings.prefect_api_url is not None)
        rows.append(
            {
                "setting": f"secret {name}",
                "value": MASK if found else None,
                "origin": found.source if found else "not set",
            }
        )
    if as_json:
        _print_json(rows)
        return
    table = Table(title=f"namespace {settings.namespace} ({settings.kind.value})")
    for column in ("setting", "value", "origin"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["setting"], "" if row["value"] is None else str(row["value"]), row["origin"])
    console.print(table)


@app.command("list")
def list_command() -> None:
    """List the workflows and cookbooks, one line each."""
    from pipelines.components.discovery import discover

    for entry in discover():
        console.print(f"{entry.kind:<9} {entry.name:<16} {entry.summary}", highlight=False, soft_wrap=True)


@app.command("run")
def run_command(
    name: Annotated[str, typer.Argument(help="A workflow or cookbook name (see `pipelines list`).")],
    param: ParamOption = None,
) -> None:
    """Run a workflow or cookbook locally as plain Python and print its result as JSON."""
    from pipelines.components.discovery import check_params, find, parse_params, to_jsonable

    with _user_errors():
        entry = find(name)
        params = parse_params(param or [])
    if isinstance(params.get("dataset"), str):
        _check_dataset(params["dataset"])
    with _user_errors():
        flow = entry.load()
        check_params(flow, params)
    with _user_errors():
        _start_local_api()
        result = flow(**params)
    _print_json(to_jsonable(result))
    _print_where()


def _start_local_api() -> None:
    """Without a Prefect server, start Prefect's in-process API once, bounded, with a clear error if it cannot."""
    from pipelines.components.localapi import ensure_local_api

    ensure_local_api()


def _print_where() -> None:
    """End a run's summary with where its tables and its warehouse are (on stderr: stdout stays JSON)."""
    import sqlalchemy as sa

    from pipelines.components.resources import schema_for

    settings = get_settings()
    url = sa.engine.make_url(settings.warehouse_url)
    schema = f", schema {schema_for(settings.namespace)}" if url.get_backend_name() == "postgresql" else ""
    err.print(
        f"namespace {settings.namespace} ({settings.kind.value}): tables under {settings.namespace_url}; "
        f"warehouse {url.render_as_string(hide_password=True)}{schema}",
        highlight=False,
        soft_wrap=True,
    )


@app.command("submit")
def submit_command(
    name: Annotated[str, typer.Argument(help="A workflow or cookbook (see `pipelines list`).")],
    param: ParamOption = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the run to end; print its outputs as JSON.")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="With --wait: stop waiting after this many seconds.")
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option("--idempotency-key", help="Submitting again with this key returns the same run."),
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", help="Namespace (default: resolved like `pipelines env`).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Allow submitting into serving from another namespace.")
    ] = False,
) -> None:
    """Submit a run: to the namespace's deployment on a Prefect server, or in this process without one."""
    from pipelines.components.discovery import find

    with _user_errors():
        find(name)
    from pipelines.client import Client
    from pipelines.components.parameters import parse_pairs

    with _user_errors():
        client = Client(namespace=namespace, force=force)
        workflow = client.workflow(name)
        run = client.submit(
            name, idempotency_key=idempotency_key, **parse_pairs(param or [], workflow.schema)
        )
    if client.mode == "server" and not wait:
        _print_json(
            {
                "id": run.id,
                "workflow": name,
                "namespace": client.namespace,
                "state": run.state,
                "url": run.url,
            }
        )
        return
    if not wait:
        err.print("No Prefect server is configured: the run executes in this process, so this waits for it.")
    err.print(f"submitted {name} run {run.id}" + (f": {run.url}" if run.url else ""), highlight=False)
    with _user_errors():
        outputs = run.wait(timeout=timeout).outputs
    _print_json(outputs)


@registry_app.command("check")
def registry_check_command(
    path: Annotated[
        str | None, typer.Option("--path", help="Registry CSV (default: the configured one).")
    ] = None,
) -> None:
    """Validate every registry row and contract; report every problem at once."""
    from pipelines.components.registry import check_registry

    registry_path = path or get_settings().registry_path
    specs, problems = check_registry(registry_path)
    if problems:
        err.print(f"[bold red]{len(problems)} problem(s)[/] in {registry_path}:", highlight=False)
        for problem in problems:
            err.print(f"  - {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1)
    console.print(f"{registry_path}: {len(specs)} dataset(s), all valid.", highlight=False, soft_wrap=True)


@registry_app.command("list")
def registry_list_command() -> None:
    """List the datasets the registry declares."""
    from pipelines.components.registry import load_registry

    with _user_errors():
        registry = load_registry(get_settings().registry_path)
    for spec in registry:
        key = "|".join(spec.primary_key) or "-"
        console.print(
            f"{spec.name:<16} {spec.stage:<10} {spec.ingestion_style:<11} key={key:<28} {spec.description}",
            highlight=False,
        )


@app.command("ingest")
def ingest_command(
    dataset: Annotated[str, typer.Argument(help="A dataset from the registry.")],
    full_refresh: Annotated[
        bool, typer.Option("--full-refresh", help="Rebuild from every raw file.")
    ] = False,
) -> None:
    """Ingest a dataset: landing -> raw (kept) -> cleaned Delta table; prints the result as JSON."""
    _check_dataset(dataset)
    from pipelines.components.discovery import to_jsonable
    from pipelines.components.quality import ValidationFailedError
    from pipelines.workflows.ingest import ingest

    with _user_errors():
        try:
            _start_local_api()
            result = ingest(dataset=dataset, full_refresh=full_refresh)
        except ValidationFailedError as exc:
            if exc.result is not None:
                _print_json(to_jsonable(exc.result))
            raise
    _print_json(to_jsonable(result))


def _backfill_range(start: str, through: str, window_days: int) -> None:
    """Check the range before anything heavy is imported; one `error:` naming the fix."""
    from datetime import date

    days = {}
    for option, text in (("--from", start), ("--to", through)):
        try:
            days[option] = date.fromisoformat(text)
        except ValueError:
            _fail(
                PipelinesError(
                    f"{option} {text!r} is not a date: write YYYY-MM-DD, e.g. {option} 2013-03-01."
                )
            )
    if days["--from"] > days["--to"]:
        _fail(
            PipelinesError(
                f"The range {start}..{through} ends before it starts: give --from a date on or before --to."
            )
        )
    if window_days < 1:
        _fail(PipelinesError(f"--window-days must be at least 1, got {window_days}: e.g. --window-days 7."))


@app.command("backfill")
def backfill_command(
    dataset: Annotated[str, typer.Argument(help="A cleaned dataset from the registry.")],
    start: Annotated[str, typer.Option("--from", help="First event-time day, YYYY-MM-DD.")],
    through: Annotated[str, typer.Option("--to", help="Last event-time day (inclusive), YYYY-MM-DD.")],
    downstream: Annotated[
        bool, typer.Option("--downstream", help="Then recompute and re-share the aggregates that read it.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="List the raw files, partitions and datasets it would touch; write nothing."
        ),
    ] = False,
    window_days: Annotated[
        int,
        typer.Option(
            "--window-days", help="Days per window; windows run in parallel up to PIPELINES_BACKFILL_WINDOWS."
        ),
    ] = 7,
) -> None:
    """Reprocess a dataset from raw for a range of event-time days with the current contract; prints the result as JSON."""
    _backfill_range(start, through, window_days)
    _check_dataset(dataset)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pipelines.components import progress
    from pipelines.components.discovery import to_jsonable
    from pipelines.workflows.backfill import backfill

    bar = Progress(
        TextColumn("backfill {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=True,
    )  # fmt: skip
    windows = bar.add_task(dataset, total=None)

    def advance(what: str, done: int, total: int) -> None:
        bar.update(windows, description=what, completed=done, total=total)

    with _user_errors():
        _start_local_api()
        with bar, progress.reporting(advance):
            result = backfill(
                dataset=dataset,
                start=start,
                through=through,
                downstream=downstream,
                dry_run=dry_run,
                window_days=window_days,
            )
    if dry_run:
        err.print(
            f"dry run, nothing written. {dataset} {start}..{through} would re-read {len(result.files)} raw file(s) "
            f"in {len(result.windows)} window(s):",
            highlight=False,
            soft_wrap=True,
        )
        for name in result.files:
            err.print(f"  {name}", highlight=False, soft_wrap=True)
        err.print(f"partitions: {', '.join(result.partitions) or 'none'}", highlight=False, soft_wrap=True)
        err.print(f"datasets: {', '.join(result.datasets)}", highlight=False, soft_wrap=True)
    _print_json(to_jsonable(result))


@app.command("validate")
def validate_command(
    dataset: Annotated[str, typer.Argument(help="A dataset from the registry.")],
    partition: Annotated[
        str | None, typer.Option("--partition", help="Only this _partition value, e.g. 2013-01-31.")
    ] = None,
) -> None:
    """Re-validate a dataset (or one partition) against its contract; exit code 1 when an error fails."""
    _check_dataset(dataset)
    from pipelines.components.discovery import to_jsonable
    from pipelines.components.quality import ValidationFailedError
    from pipelines.workflows.validate import validate

    with _user_errors():
        try:
            _start_local_api()
            result = validate(dataset=dataset, partition=partition)
        except ValidationFailedError as exc:
            if exc.result is not None:
                _print_json(to_jsonable(exc.result))
            raise
    _print_json(to_jsonable(result))


@app.command("aggregate")
def aggregate_command(
    dataset: Annotated[str, typer.Argument(help="An aggregated dataset from the registry.")],
    full_refresh: Annotated[
        bool, typer.Option("--full-refresh", help="Recompute every partition from the inputs.")
    ] = False,
) -> None:
    """Build an aggregated dataset, recomputing only the partitions touched upstream; prints the result as JSON."""
    _check_dataset(dataset)
    from pipelines.components.discovery import to_jsonable
    from pipelines.workflows.aggregate import aggregate

    with _user_errors():
        _start_local_api()
        result = aggregate(dataset=dataset, full_refresh=full_refresh)
    _print_json(to_jsonable(result))


@app.command("cleanup")
def cleanup_command(
    dataset: Annotated[str, typer.Argument(help="An aggregated dataset from the registry.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the stale partitions and their rows; remove nothing.")
    ] = False,
) -> None:
    """Remove the stale partitions of an aggregated dataset; prints the result as JSON."""
    _check_dataset(dataset)
    from pipelines.components.discovery import to_jsonable
    from pipelines.workflows.cleanup import cleanup

    with _user_errors():
        _start_local_api()
        result = cleanup(dataset=dataset, dry_run=dry_run)
    _print_json(to_jsonable(result))


@app.command("maintain")
def maintain_command(
    dataset: Annotated[
        str | None,
        typer.Argument(help="A dataset from the registry (default: every table of the namespace)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what compaction and vacuum would do; change nothing.")
    ] = False,
) -> None:
    """Compact and vacuum Delta tables, checkpoint their logs, expire landed landing files (docs/lifecycle.md)."""
    if dataset is not None:
        _check_dataset(dataset)
    with _user_errors():
        settings = get_settings()  # a bad PIPELINES_VACUUM_RETENTION_HOURS is reported before Prefect starts
        from pipelines.workflows.maintain import maintain

        _start_local_api()
        result = maintain(dataset=dataset, dry_run=dry_run)
    console.print(
        f"maintain {settings.namespace}{' (dry run: nothing changed)' if dry_run else ''}, "
        f"vacuum window {result.retention_hours} h",
        highlight=False,
        soft_wrap=True,
    )
    for t in result.tables:
        console.print(
            f"{t.table:<36} files {t.files_before:>6} -> {t.files_after:<6} "
            f"bytes {t.bytes_before:>12} -> {t.bytes_after:<12} compacted {t.compacted:<5} vacuumed {t.vacuumed}",
            highlight=False,
            soft_wrap=True,
        )
    if result.landing_expiry_days:
        verb = "would delete" if dry_run else "deleted"
        console.print(
            f"landing: {verb} {len(result.landing_removed)} file(s) landed over {result.landing_expiry_days} "
            f"day(s) ago; kept {result.landing_kept}",
            highlight=False,
        )


@app.command("retention")
def retention_command(
    dataset: Annotated[
        str | None, typer.Argument(help="A dataset with retention_days (default: every such dataset).")
    ] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Judge ages on this day, YYYY-MM-DD (default: today, UTC).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report the raw files and quarantine rows that would expire.")
    ] = False,
) -> None:
    """Expire PII in raw files and quarantine rows older than retention_days; prints the result as JSON."""
    from datetime import date

    if dataset is not None:
        _check_dataset(dataset)
    day = None
    if as_of is not None:
        try:
            day = date.fromisoformat(as_of)
        except ValueError:
            _fail(
                PipelinesError(f"--as-of {as_of!r} is not a date; write it as YYYY-MM-DD, e.g. 2026-01-31.")
            )
    from pipelines.components.discovery import to_jsonable
    from pipelines.workflows.retention import retention

    with _user_errors():
        _start_local_api()
        result = retention(dataset=dataset, as_of=day, dry_run=dry_run)
    _print_json(to_jsonable(result))


@app.command("deploy")
def deploy_command(
    branch: Annotated[
        str | None, typer.Option("--branch", help="Deploy this branch's namespace (default: the checkout's).")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", help="Deploy to this namespace instead of the branch's.")
    ] = None,
    prefect_file: Annotated[
        str, typer.Option("--prefect-file", help="The deployments file, at the root of the repository.")
    ] = "prefect.yaml",
    api_url: Annotated[
        str | None, typer.Option("--api-url", help="Prefect API (default: PREFECT_API_URL).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Deploy every prefect.yaml entry as <flow>/<namespace>, pinned to this commit; prune the rest."""
    from pipelines.deploy import deploy

    with _user_errors():
        report = deploy(branch, namespace=namespace, prefect_file=prefect_file, api_url=api_url)
    if as_json:
        _print_json(report.model_dump(mode="json") | {"changed": report.changed})
        return
    console.print(
        f"namespace [bold]{report.namespace}[/] ({report.kind}) from branch {report.branch} at "
        f"{report.commit[:12]} -> {report.api_url}, work pool {report.work_pool}, queue {report.work_queue}",
        highlight=False,
        soft_wrap=True,
    )
    for change in report.deployments:
        detail = f" ({', '.join(change.changed)})" if change.changed else ""
        console.print(f"  {change.action:<9} {change.name}{detail}", highlight=False, soft_wrap=True)
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    console.print("nothing changed" if not report.changed else "done", highlight=False)


@app.command("teardown")
def teardown_command(
    branch: Annotated[
        str | None,
        typer.Option("--branch", help="Tear down this branch's namespace (default: the checkout's)."),
    ] = None,
    namespace: Annotated[str | None, typer.Option("--namespace", help="Tear down this namespace.")] = None,
    purge_data: Annotated[
        bool, typer.Option("--purge-data", help="Also delete the namespace's data root and warehouse schema.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Allow purging the serving namespace.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Remove a namespace's deployments and work queue (and with --purge-data its data)."""
    from pipelines.deploy import teardown

    with _user_errors():
        report = teardown(branch, namespace=namespace, purge_data=purge_data, force=force)
    if as_json:
        _print_json(report.model_dump(mode="json"))
        return
    where = report.api_url or "no Prefect API (local data only)"
    console.print(f"namespace [bold]{report.namespace}[/] ({report.kind}) at {where}", highlight=False)
    if report.skipped:
        console.print(f"  skipped   {report.skipped}", highlight=False, soft_wrap=True)
        return
    for note in report.notes:
        console.print(f"  note      {note}", highlight=False, soft_wrap=True)
    for name in report.removed:
        console.print(f"  removed   {name}", highlight=False)
    for queue in report.removed_work_queues:
        console.print(f"  removed   work queue {queue}", highlight=False)
    if report.purged_data:
        console.print(f"  purged    {report.purged_data}", highlight=False, soft_wrap=True)
    if report.dropped_warehouse:
        console.print(f"  dropped   {report.dropped_warehouse}", highlight=False, soft_wrap=True)
    if not (report.removed or report.removed_work_queues or report.purged_data):
        console.print("  nothing to remove", highlight=False)


@app.command("worker")
def worker_command(
    namespace: Annotated[
        str | None, typer.Option("--namespace", help="Serve only this namespace's work queue.")
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option("--kind", help="Serve the queues of one kind: serving, e2e or research."),
    ] = None,
    pool: Annotated[
        str, typer.Option("--pool", help="The work pool (deployments/<kind>.yaml).")
    ] = "pipelines",
    limit: Annotated[int | None, typer.Option("--limit", help="At most this many flow runs at once.")] = None,
    poll: Annotated[float, typer.Option("--poll", help="Seconds between asks for scheduled runs.")] = 2.0,
) -> None:
    """Start a Prefect worker on the right work queues (serving > e2e > research); runs until stopped."""
    from pipelines.components.environment import Kind, validate_namespace
    from pipelines.worker import start

    try:
        if kind is not None and kind not in {k.value for k in Kind}:
            raise PipelinesError(f"--kind {kind!r}: expected serving, e2e or research.")
        if namespace is not None:
            validate_namespace(namespace, "--namespace")
        start(pool, namespace=namespace, kind=Kind(kind) if kind else None, limit=limit, poll_seconds=poll)
    except PipelinesError as exc:
        _fail(exc)


@app.command("share")
def share_command(
    dataset: Annotated[str, typer.Argument(help="A dataset from the registry (cleaned or aggregated).")],
    mode: Annotated[
        str | None,
        typer.Option(
            "--mode", help="merge, replace or append (default: merge with a primary key, else replace)."
        ),
    ] = None,
    full_refresh: Annotated[
        bool, typer.Option("--full-refresh", help="Drop and rebuild the warehouse table from the lake.")
    ] = False,
) -> None:
    """Share a dataset into the warehouse (only what changed); prints the result as JSON."""
    _check_dataset(dataset)
    from pipelines.components.discovery import to_jsonable
    from pipelines.workflows.share import share

    with _user_errors():
        _start_local_api()
        result = share(dataset=dataset, mode=mode, full_refresh=full_refresh)
    _print_json(to_jsonable(result))


@app.command("forget")
def forget_command(
    subject_id: Annotated[
        str | None,
        typer.Argument(help="The subject's identifier, as the datasets' subject_key columns hold it."),
    ] = None,
    dataset: Annotated[
        list[str] | None,
        typer.Option(
            "--dataset", help="Only this dataset (repeat for more); default: every one with a subject_key."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would go, per dataset and zone; change nothing.")
    ] = False,
    status: Annotated[
        str | None, typer.Option("--status", help="Show an erasure request from the ledger (er-...).")
    ] = None,
) -> None:
    """Remove a data subject from every zone and the warehouse (docs/privacy.md); prints the result as JSON."""
    from pipelines.components.discovery import to_jsonable

    if status is not None:
        with _user_errors():
            _print_json(to_jsonable(_erasure_status(status)))
        return
    if not subject_id or not subject_id.strip():
        _fail(
            PipelinesError(
                "Name the subject: `pipelines forget SUBJECT_ID` (the value their datasets' subject_key "
                "columns hold), or read a request with `pipelines forget --status REQUEST`."
            )
        )
    for name in dataset or []:
        _check_dataset(name)
    import getpass

    from pipelines.components.erasure import load_salt, pseudonym_hash, subject_hash
    from pipelines.components.resources import Storage
    from pipelines.components.secrets import register_redaction

    register_redaction(subject_id.strip())  # whatever logs it from here on shows a mask
    with _user_errors():
        settings = get_settings()
        storage = Storage.from_settings(settings.namespace_url, settings)
        salt = load_salt(settings.namespace, storage)
        hashed = subject_hash(salt, subject_id)
        pseudonymised = pseudonym_hash(salt, subject_id)
        from pipelines.workflows.forget import forget

        _start_local_api()
        result = forget(
            subject_hash=hashed,
            datasets=dataset or None,
            dry_run=dry_run,
            requested_by=getpass.getuser(),
            pseudonym_hash=pseudonymised,
        )
    _print_json(to_jsonable(result))


def _erasure_status(request_id: str) -> dict:
    from pipelines.components.resources import Storage
    from pipelines.lake import Lake
    from pipelines.lake.erasure import read_request

    settings = get_settings()
    lake = Lake(Storage.from_settings(settings.namespace_url, settings))
    row = read_request(lake, request_id)
    if row is None:
        raise PipelinesError(
            f"No erasure request {request_id!r} in namespace {settings.namespace!r} ({lake.uri('_meta', 'erasures')}). "
            "Fix: use the request_id a `pipelines forget` run printed, in the namespace it ran in "
            "(PIPELINES_NAMESPACE)."
        )
    return row


@app.command("status")
def status_command(
    dataset: Annotated[str | None, typer.Argument(help="One dataset (default: every dataset).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Each dataset's last run, counts, watermark, freshness, size and share, read from the destination."""
    from pipelines.components.status import render_status, status_for_settings

    try:
        statuses = status_for_settings(get_settings(), [dataset] if dataset else None)
    except PipelinesError as exc:
        _fail(exc)
    if as_json:
        _print_json([s.model_dump(mode="json") for s in statuses])
        return
    # Piped or captured output keeps whole lines (for grep); a terminal gets its own width.
    (console if console.is_terminal else Console(width=220)).print(render_status(statuses))


@app.command("catalog")
def catalog_command(
    out: Annotated[str, typer.Option("--out", help="Folder to write the HTML catalog into.")] = "catalog",
) -> None:
    """Write a static HTML data catalog (datasets, columns, expectations, schema history, runs, lineage)."""
    from pipelines.components.catalog import catalog_for_settings

    try:
        index = catalog_for_settings(get_settings(), out)
    except PipelinesError as exc:
        _fail(exc)
    console.print(f"catalog written: {index}", highlight=False, soft_wrap=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
