"""Validate one dataset, or one partition of it, against its contract's expectations on demand.

Reads the dataset's Delta table (cleaned, or aggregated for an aggregated dataset), evaluates
every expectation of its contract on it (the whole table, or the rows of one ``_partition``),
and records the outcome in ``_meta/validations`` and a Prefect markdown artifact. It reads the
table only: nothing is quarantined, deleted or rewritten. Use it after changing a contract, to
see what the new expectations say about the data already promoted.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import polars as pl
from prefect import get_run_logger, task
from pydantic import BaseModel, Field

from pipelines.components import quality
from pipelines.components.environment import get_settings
from pipelines.components.errors import PipelinesError, did_you_mean
from pipelines.components.registry import DatasetSpec, load_registry
from pipelines.components.resources import Lake, Storage
from pipelines.components.runs import new_run_id
from pipelines.components.summary import artifact_key, publish_markdown
from pipelines.components.workflow import as_is, workflow

PARTITION = "_partition"


class ExpectationReport(BaseModel):
    """One expectation's result, as GX reported it, and what it means here."""

    index: int = Field(description="position in the contract's expectations list (from 0)")
    expectation: str
    call: str = Field(description="the expectation with its arguments as written in the contract")
    severity: str
    level: str = Field(description="row or table")
    engine: str = Field(description="polars, great_expectations, or none when it could not be evaluated")
    success: bool
    action: str = Field(description="passed, failed (severity error) or warned (severity warn)")
    observed_value: Any = None
    element_count: int | None = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    partial_unexpected_list: list[Any] = []
    exception: str | None = None


class ValidationResult(BaseModel):
    """The verdict on a dataset or partition: passed, warned, failed or no_expectations."""

    dataset: str
    namespace: str
    run_id: str
    partition: str | None = None
    table: str = Field(description="URI of the table validated")
    table_version: int | None = None
    rows: int = 0
    status: str = Field(description="passed, warned (a warn expectation failed), failed or no_expectations")
    expectations: list[ExpectationReport] = []
    failures: list[str] = Field(default=[], description="error-severity expectations that failed")
    warnings: list[str] = Field(default=[], description="warn-severity expectations that failed")
    duration_seconds: float = 0.0


def _read(lake: Lake, zone: str, spec: DatasetSpec, partition: str | None) -> tuple[pl.DataFrame, int]:
    table = lake.table(zone, spec.name)
    if table is None:
        how = (
            f"pipelines ingest {spec.name}" if zone == "cleaned" else f"the workflow that builds {spec.name}"
        )
        raise PipelinesError(
            f"{zone}/{spec.name} does not exist in this namespace yet, so there is nothing to validate; "
            f"run `{how}` first."
        )
    version = table.version()

    def scan() -> pl.LazyFrame:  # the version just opened, through the namespace's storage options
        return pl.scan_delta(
            lake.uri(zone, spec.name), version=version, storage_options=lake.storage.delta_options or None
        )

    rows = scan()
    if partition is not None:
        if PARTITION not in rows.collect_schema().names():
            raise PipelinesError(
                f"{zone}/{spec.name} has no {PARTITION} column; validate it without --partition."
            )
        rows = rows.filter(pl.col(PARTITION) == partition)
    frame = rows.collect()
    if partition is not None and frame.height == 0:
        known = scan().select(pl.col(PARTITION).unique().sort()).collect().to_series().to_list()
        shown = ", ".join(known[:5]) + (f", ... ({len(known)} in all)" if len(known) > 5 else "")
        raise PipelinesError(
            f"{zone}/{spec.name} has no partition {partition!r}.{did_you_mean(partition, known)} "
            f"Partitions: {shown or '(none)'}."
        )
    return frame, version


@task(name="validate")
def _validate(
    spec: DatasetSpec, lake: Lake, partition: str | None, run_id: str, namespace: str
) -> ValidationResult:
    zone = "aggregated" if spec.stage == "aggregated" else "cleaned"
    frame, version = _read(lake, zone, spec, partition)
    now = datetime.now(UTC)
    parameters, unresolved = quality.resolve_parameters(spec.contract.expectations, lake, now)
    outcomes = quality.evaluate(
        frame,
        spec.contract.expectations,
        policy=spec.quality_policy,
        parameters=parameters,
        unresolved=unresolved,
    )
    quality.redact_outcomes(outcomes, spec.pii_columns)
    for outcome in outcomes:
        outcome.action = (
            "passed" if outcome.success else ("failed" if outcome.severity == "error" else "warned")
        )
    failures = [f"{o.spec.call}: {o.describe()}" for o in outcomes if o.action == "failed"]
    warnings = [f"{o.spec.call}: {o.describe()}" for o in outcomes if o.action == "warned"]
    status = (
        "no_expectations" if not outcomes else "failed" if failures else "warned" if warnings else "passed"
    )
    scope = "partition" if partition is not None else "table"
    if outcomes:
        quality.record(
            lake,
            quality.records(
                outcomes,
                run_id=run_id,
                workflow="validate",
                dataset=spec.name,
                scope=scope,
                partition=partition,
                validated_at=now,
            ),
        )
    where = f"{zone}/{spec.name}" + (f" partition {partition}" if partition is not None else "")
    publish_markdown(
        key=artifact_key(namespace, "validation", spec.name),
        markdown=quality.report_markdown(
            f"validation of {where} (version {version}), run {run_id}",
            status,
            outcomes,
            notes=[f"{frame.height} row(s) validated"],
        ),
        description=f"expectations of {spec.name} on {where}",
    )
    return ValidationResult(
        dataset=spec.name,
        namespace=namespace,
        run_id=run_id,
        partition=partition,
        table=lake.uri(zone, spec.name),
        table_version=version,
        rows=frame.height,
        status=status,
        expectations=[
            ExpectationReport(
                index=o.spec.index,
                expectation=o.spec.name,
                call=o.spec.call,
                severity=o.severity,
                level=o.spec.level,
                engine=o.engine,
                success=o.success,
                action=o.action,
                observed_value=o.observed_value,
                element_count=o.element_count,
                unexpected_count=o.unexpected_count,
                unexpected_percent=o.unexpected_percent,
                partial_unexpected_list=o.partial_unexpected_list,
                exception=o.exception,
            )
            for o in outcomes
        ],
        failures=failures,
        warnings=warnings,
    )


@workflow(name="validate")
def validate(dataset: str, partition: str | None = None) -> ValidationResult:
    """Re-validate a cleaned dataset (or one partition) against its contract's expectations, on demand."""
    started = time.monotonic()
    settings = get_settings()
    spec = load_registry(settings.registry_path).get(dataset)
    lake = Lake(Storage.from_settings(settings.namespace_url, settings))
    result = as_is(_validate)(spec, lake, partition, new_run_id(), settings.namespace)
    result.duration_seconds = round(time.monotonic() - started, 3)
    logger = get_run_logger()
    logger.info(
        "%s%s: %s, %d row(s), %d expectation(s)",
        dataset,
        f" partition {partition}" if partition is not None else "",
        result.status,
        result.rows,
        len(result.expectations),
    )
    for line in result.warnings:
        logger.warning("%s: warning: %s", dataset, line)
    if result.failures:
        lines = "\n".join(f"  - {line}" for line in result.failures)
        where = f"{dataset!r}" + (f" partition {partition!r}" if partition is not None else "")
        raise quality.ValidationFailedError(
            f"{where} fails {len(result.failures)} expectation(s) with severity error:\n{lines}\n"
            f"The table was not changed. Every result is in _meta/validations (run {result.run_id}) and the "
            f"Prefect artifact {artifact_key(settings.namespace, 'validation', dataset)}. Fix the data (re-ingest it) or the "
            f"expectation in contracts/{dataset}.yaml.",
            result=result,
        )
    return result
