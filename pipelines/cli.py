"""The ``pipelines`` command."""

from __future__ import annotations

import json
import sys
import warnings
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipelines.components.environment import get_settings
from pipelines.components.errors import PipelinesError

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
KNOWN_SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PREFECT_API_KEY")

ParamOption = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="A flow parameter as key=value (JSON values are decoded)."),
]


def _fail(exc: Exception) -> None:
    err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=1)


def _print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@app.command("env")
def env_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show the namespace, its kind, every setting and where it came from (secrets masked)."""
    from pipelines.components.secrets import MASK, find_secret

    try:
        settings = get_settings()
    except PipelinesError as exc:
        _fail(exc)
    rows = []
    for info in settings.describe():
        value = info.value
        if info.name == "warehouse_url" and value:
            import sqlalchemy as sa

            value = sa.engine.make_url(value).render_as_string(hide_password=True)
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

    try:
        entry = find(name)
        params = parse_params(param or [])
        flow = entry.load()
        check_params(flow, params)
    except PipelinesError as exc:
        _fail(exc)
    try:
        result = flow(**params)
    except PipelinesError as exc:
        _fail(exc)
    _print_json(to_jsonable(result))


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
    console.print(f"{registry_path}: {len(specs)} dataset(s), all valid.", highlight=False)


@registry_app.command("list")
def registry_list_command() -> None:
    """List the datasets the registry declares."""
    from pipelines.components.registry import load_registry

    try:
        registry = load_registry(get_settings().registry_path)
    except PipelinesError as exc:
        _fail(exc)
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
    from pipelines.components.discovery import to_jsonable
    from pipelines.workflows.ingest import ingest

    try:
        result = ingest(dataset=dataset, full_refresh=full_refresh)
    except PipelinesError as exc:
        _fail(exc)
    _print_json(to_jsonable(result))


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
    from pipelines.components.discovery import to_jsonable
    from pipelines.workflows.share import share

    try:
        result = share(dataset=dataset, mode=mode, full_refresh=full_refresh)
    except PipelinesError as exc:
        _fail(exc)
    _print_json(to_jsonable(result))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
