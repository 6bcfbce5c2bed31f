"""Each dataset's state at the destination, and whether it is fresh.

``pipelines status``, the ``monitor`` flow and the catalog read what the runs committed (the table's
Delta commit metadata, the ``_meta`` ledgers, the warehouse's share state), never Prefect's database.
:func:`read_destination` is the one place that reads it; everything else here is pure.

Freshness is measured as the time since the dataset's last successful commit: the ``at`` of the
pipelines state committed with the newest data version. The watermark (the newest event time in
the data) is reported, not judged: sample data from 2013 has a watermark years old, and a dataset
whose source keeps delivering is fresh however old its event times are.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from pipelines.components.registry import DatasetSpec, Registry
from pipelines.components.resources import Lake, Warehouse

CLEANED, AGGREGATED, META = "cleaned", "aggregated", "_meta"


class RunRecord(BaseModel):
    """One run of a dataset as the destination recorded it."""

    run_id: str
    workflow: str
    result: str = Field(description="committed, or stopped (validation failed; nothing was promoted)")
    at: datetime | None = None
    mode: str | None = None
    rows_in: int | None = None
    written: int | None = None
    quarantined: int | None = None
    late_rows: int | None = None
    reasons: list[str] = []


class DatasetStatus(BaseModel):
    """What `pipelines status` shows for one dataset."""

    dataset: str
    stage: str
    namespace: str
    table: str
    exists: bool
    last_run: RunRecord | None = Field(default=None, description="the newest run: committed or stopped")
    last_commit: RunRecord | None = Field(default=None, description="the newest run that committed data")
    rows_in: int | None = None
    written: int | None = None
    quarantined: int | None = None
    late_rows: int | None = None
    quarantine_rate: float | None = Field(
        default=None, description="quarantined / rows in of the last commit"
    )
    quarantine_threshold: float | None = None
    watermark: str | None = None
    last_commit_at: datetime | None = None
    age_seconds: float | None = Field(default=None, description="seconds since the last successful commit")
    freshness: str | None = Field(default=None, description="the registry's freshness, e.g. 1d")
    freshness_verdict: str = Field(
        description="fresh, stale (older than freshness), never_committed, or not_checked (no freshness)"
    )
    stale_partitions: list[str] = []
    version: int | None = None
    size_bytes: int | None = None
    files: int | None = None
    shared_version: int | None = None
    shared_at: datetime | None = None
    warehouse_table: str | None = None


@dataclass
class DestinationFacts:
    """What the destination holds for one dataset, as read (no judgement yet)."""

    table: str
    exists: bool
    state: dict[str, Any] | None = None
    version: int | None = None
    size_bytes: int | None = None
    files: int | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    stops: list[dict[str, Any]] = field(default_factory=list)
    schemas: list[dict[str, Any]] = field(default_factory=list)
    share: dict[str, Any] | None = None


def _zone(spec: DatasetSpec) -> str:
    return CLEANED if spec.stage == "cleaned" else AGGREGATED


def read_destination(
    lake: Lake, warehouse: Warehouse | None, specs: Iterable[DatasetSpec]
) -> dict[str, DestinationFacts]:
    """Read every dataset's committed state once: table state and size, _meta ledgers, share state.

    This is the only function that reads committed state for observability; point it at another
    reader (e.g. a lake package) and the rest follows.
    """
    import polars as pl
    import pyarrow as pa

    specs = list(specs)
    runs = lake.read(META, "runs")
    validations = lake.read(META, "validations")
    schemas = lake.read(META, "schemas")
    shares: dict[str, dict[str, Any]] = {}
    if warehouse is not None:
        shares = _share_states(warehouse)
    facts: dict[str, DestinationFacts] = {}
    for spec in specs:
        zone = _zone(spec)
        table = lake.table(zone, spec.name)
        fact = DestinationFacts(table=lake.uri(zone, spec.name), exists=table is not None)
        if table is not None:
            fact.state = lake.state(zone, spec.name, table=table)
            fact.version = table.version()
            actions = pl.DataFrame(pa.table(table.get_add_actions(flatten=True)))
            fact.files = actions.height
            fact.size_bytes = int(actions.get_column("size_bytes").sum()) if actions.height else 0
        if runs.height:
            mine = runs.filter(pl.col("dataset") == spec.name).sort("finished_at")
            fact.runs = mine.to_dicts()
        if validations.height:
            stopped = validations.filter((pl.col("dataset") == spec.name) & (pl.col("action") == "stopped"))
            fact.stops = stopped.sort("validated_at").to_dicts()
        if schemas.height:
            fact.schemas = schemas.filter(pl.col("dataset") == spec.name).sort("version").to_dicts()
        fact.share = shares.get(spec.name)
        facts[spec.name] = fact
    return facts


def _share_states(warehouse: Warehouse) -> dict[str, dict[str, Any]]:
    """dataset -> its row of the warehouse's share state table (empty before the first share)."""
    import sqlalchemy as sa

    from pipelines.components.sharing import STATE_TABLE, _meta_tables

    database = warehouse.url.database
    if warehouse.dialect == "sqlite" and database and not Path(database).exists():
        return {}  # nothing shared yet; reading must not create the file
    if STATE_TABLE not in sa.inspect(warehouse.engine).get_table_names(schema=warehouse.schema):
        return {}
    state, _ = _meta_tables(warehouse.schema)
    with warehouse.engine.connect() as conn:
        return {row["dataset"]: dict(row) for row in conn.execute(state.select()).mappings()}


def _as_utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _duration_text(value: timedelta | None) -> str | None:
    if value is None:
        return None
    seconds = int(value.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def freshness_verdict(freshness: timedelta | None, last_commit_at: datetime | None, now: datetime) -> str:
    """fresh / stale / never_committed / not_checked: the time since the last commit against freshness."""
    if freshness is None:
        return "not_checked"
    if last_commit_at is None:
        return "never_committed"
    return "stale" if now - last_commit_at > freshness else "fresh"


def _run_record(row: dict[str, Any]) -> RunRecord:
    written = row.get("written")
    return RunRecord(
        run_id=row["run_id"],
        workflow=row.get("workflow") or "",
        result="committed",
        at=_as_utc(row.get("finished_at")),
        mode=row.get("mode"),
        rows_in=row.get("rows_in"),
        written=int(written) if written is not None else None,
        quarantined=row.get("quarantined"),
        late_rows=row.get("late_rows"),
    )


def _stop_reason(row: dict[str, Any]) -> str:
    """One stopping check as a line: the expectation, what was observed, how many rows were unexpected."""
    parts = [f"{row['expectation']} failed"]
    if row.get("observed_value") not in (None, "null"):
        parts.append(f"observed {row['observed_value']}")
    if row.get("unexpected_count"):
        parts.append(f"{row['unexpected_count']} row(s) unexpected")
    return ", ".join(parts)


def _stop_record(rows: list[dict[str, Any]]) -> RunRecord:
    return RunRecord(
        run_id=rows[-1]["run_id"],
        workflow=rows[-1].get("workflow") or "",
        result="stopped",
        at=_as_utc(rows[-1].get("validated_at")),
        reasons=[_stop_reason(r) for r in rows],
    )


def dataset_status(
    spec: DatasetSpec, namespace: str, facts: DestinationFacts, now: datetime
) -> DatasetStatus:
    """Judge one dataset's facts: last run and result, counts, freshness, size, share."""
    state = facts.state or {}
    last_commit = _run_record(facts.runs[-1]) if facts.runs else None
    committed_ids = {r["run_id"] for r in facts.runs}
    stop_runs: dict[str, list[dict[str, Any]]] = {}
    for row in facts.stops:
        if row["run_id"] not in committed_ids:
            stop_runs.setdefault(row["run_id"], []).append(row)
    last_stop = _stop_record(list(stop_runs.values())[-1]) if stop_runs else None
    last_run = last_commit
    if last_stop is not None and (last_commit is None or (last_stop.at or now) > (last_commit.at or now)):
        last_run = last_stop
    last_commit_at = _as_utc(state.get("at")) if state.get("at") else None
    status = DatasetStatus(
        dataset=spec.name,
        stage=spec.stage,
        namespace=namespace,
        table=facts.table,
        exists=facts.exists,
        last_run=last_run,
        last_commit=last_commit,
        quarantine_threshold=spec.quarantine_threshold,
        watermark=state.get("watermark"),
        last_commit_at=last_commit_at,
        age_seconds=round((now - last_commit_at).total_seconds(), 1) if last_commit_at else None,
        freshness=_duration_text(spec.freshness),
        freshness_verdict=freshness_verdict(spec.freshness, last_commit_at, now),
        stale_partitions=sorted(state.get("stale_partitions") or {}),
        version=facts.version,
        size_bytes=facts.size_bytes,
        files=facts.files,
    )
    if last_commit is not None:
        status.rows_in = last_commit.rows_in
        status.written = last_commit.written
        status.quarantined = last_commit.quarantined
        status.late_rows = last_commit.late_rows
        if last_commit.rows_in:
            status.quarantine_rate = round((last_commit.quarantined or 0) / last_commit.rows_in, 4)
    if facts.share:
        status.shared_version = facts.share.get("delta_version")
        status.shared_at = _as_utc(facts.share.get("shared_at"))
        status.warehouse_table = facts.share.get("table_name")
    return status


def namespace_status(
    registry: Registry,
    lake: Lake,
    warehouse: Warehouse | None,
    namespace: str,
    *,
    datasets: list[str] | None = None,
    now: datetime | None = None,
) -> list[DatasetStatus]:
    """Every (or the named) dataset's status; ``now`` is injectable so tests can move the clock."""
    specs = [registry.get(name) for name in datasets] if datasets else list(registry)
    now = now or datetime.now(UTC)
    facts = read_destination(lake, warehouse, specs)
    return [dataset_status(spec, namespace, facts[spec.name], now) for spec in specs]


def status_for_settings(settings, datasets: list[str] | None = None, *, now: datetime | None = None):
    """:func:`namespace_status` for this process's namespace (its lake and warehouse)."""
    from pipelines.components.registry import load_registry

    registry = load_registry(settings.registry_path)
    lake = Lake.from_settings(settings)
    warehouse = Warehouse.from_settings(settings)
    try:
        return namespace_status(registry, lake, warehouse, settings.namespace, datasets=datasets, now=now)
    finally:
        warehouse.dispose()


def _size(value: int | None) -> str:
    if value is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return ""


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def render_status(statuses: list[DatasetStatus]):
    """A rich table: one row per dataset."""
    from rich.table import Table

    namespace = statuses[0].namespace if statuses else ""
    table = Table(title=f"namespace {namespace}", title_justify="left")
    for column in (
        "dataset",
        "last run",
        "result",
        "in",
        "written",
        "quar.",
        "late",
        "watermark",
        "age",
        "freshness",
        "stale parts",
        "version",
        "size / files",
        "shared",
    ):
        table.add_column(column, overflow="fold")
    colours = {"fresh": "green", "stale": "red", "never_committed": "yellow", "not_checked": "dim"}
    for s in statuses:
        run = s.last_run
        verdict = f"[{colours[s.freshness_verdict]}]{s.freshness_verdict}[/]" + (
            f" ({s.freshness})" if s.freshness else ""
        )
        table.add_row(
            s.dataset,
            f"{run.at:%Y-%m-%d %H:%M} {run.workflow}" if run and run.at else "never",
            ("[red]stopped[/]" if run.result == "stopped" else run.result) if run else "",
            "" if s.rows_in is None else f"{s.rows_in:,}",
            "" if s.written is None else f"{s.written:,}",
            "" if s.quarantined is None else f"{s.quarantined:,}",
            "" if s.late_rows is None else f"{s.late_rows:,}",
            s.watermark or "",
            _age(s.age_seconds),
            verdict,
            ", ".join(s.stale_partitions[:3])
            + (f" (+{len(s.stale_partitions) - 3})" if len(s.stale_partitions) > 3 else ""),
            "" if s.version is None else str(s.version),
            f"{_size(s.size_bytes)} / {s.files}" if s.exists else "no table",
            "" if s.shared_version is None else f"v{s.shared_version}",
        )
    return table
