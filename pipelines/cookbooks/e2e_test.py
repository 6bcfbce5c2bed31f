"""Run every cookbook on sample data in a throwaway namespace, check their outputs, report the codebase's health."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import PurePosixPath
from typing import Any

import sqlalchemy as sa
from prefect import get_run_logger
from pydantic import BaseModel, Field, JsonValue

from pipelines.components import alerts
from pipelines.components.discovery import FlowEntry, discover
from pipelines.components.environment import Settings, get_settings, settings_overrides
from pipelines.components.errors import PipelinesError, unknown_name
from pipelines.components.resources import Lake, Storage, Warehouse, schema_for
from pipelines.components.summary import artifact_key, publish_markdown, tag_subflows
from pipelines.components.workflow import workflow
from pipelines.cookbooks._e2e_cases import CASES, Case, Check, Evidence, check, commits_check, table_versions

NAME = "e2e_test"
NAMESPACE_PREFIX = "e2e-run-"
ARTIFACT_KEY = "e2e-report"
CASES_FILE = "pipelines/cookbooks/_e2e_cases.py"


class StepRun(BaseModel):
    """One run of a cookbook inside the throwaway namespace."""

    label: str
    params: dict[str, JsonValue]
    status: str = Field(description="completed or failed")
    duration_seconds: float
    summary: str = Field(description="the cookbook's own summary, or the error that stopped it")


class CookbookReport(BaseModel):
    """One cookbook's health: its runs and every check on what they built."""

    name: str
    status: str = Field(
        description="passed, failed (a check failed), error (a run or a check raised) or unchecked"
    )
    description: str = ""
    runs: list[StepRun] = []
    checks: list[Check] = []
    error: str | None = None
    duration_seconds: float = 0.0

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


class Cleanup(BaseModel):
    """What happened to the throwaway namespace afterwards."""

    kept: bool = Field(description="keep=True: left in place for inspection")
    data_root: str
    warehouse: str
    removed: bool
    error: str | None = None


class E2EReport(BaseModel):
    """The health report: per cookbook, every check with expected and actual values, and an overall flag."""

    namespace: str = Field(description="the throwaway namespace the cookbooks ran in")
    parent_namespace: str = Field(description="the namespace e2e_test itself ran in")
    healthy: bool
    cookbooks: list[CookbookReport]
    skipped: list[str] = Field(default=[], description="cookbooks left out by the `cookbooks` parameter")
    checks_passed: int
    checks_failed: int
    cleanup: Cleanup
    duration_seconds: float
    summary: str

    def failures(self) -> list[tuple[str, Check]]:
        """(cookbook, check) for every failed check, in report order."""
        return [(c.name, f) for c in self.cookbooks for f in c.failed_checks]


class E2EUnhealthy(PipelinesError):
    """The e2e run found a problem; ``report`` (in the process that ran it) is the full health report."""

    def __init__(self, message: str, report: E2EReport | None = None) -> None:
        super().__init__(message)
        self.report = report


# The throwaway namespace ---------------------------------------------------------------------


def _throwaway(parent: Settings) -> dict[str, str]:
    """Settings overrides for a fresh namespace under the same data root and warehouse.

    Its landing zone is its own (under its data root), so the samples never reach the landing zone other
    namespaces ingest from, and its removal takes them along. A SQLite warehouse URL without ``{namespace}``
    would be the parent's own file: the throwaway namespace then gets a file of its own beside it.
    """
    namespace = f"{NAMESPACE_PREFIX}{uuid.uuid4().hex[:8]}"
    overrides = {"namespace": namespace, "landing_url": parent.namespace_url_of(namespace) + "/landing"}
    with settings_overrides(**overrides):
        candidate = get_settings()
    ours, theirs = sa.engine.make_url(candidate.warehouse_url), sa.engine.make_url(parent.warehouse_url)
    if ours.get_backend_name() == "sqlite" and ours.database == theirs.database:
        own = PurePosixPath(ours.database or "warehouse.sqlite").with_name(f"{namespace}.sqlite")
        overrides["warehouse_url"] = ours.set(database=str(own)).render_as_string(hide_password=False)
    return overrides


def _warehouse_name(settings: Settings) -> str:
    url = sa.engine.make_url(settings.warehouse_url)
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {url.database}"
    return f"schema {schema_for(settings.namespace)} in {url.render_as_string(hide_password=True)}"


def _cleanup(settings: Settings, keep: bool) -> Cleanup:
    from pipelines.deploy import purge_namespace_data

    found = Cleanup(
        kept=keep, data_root=settings.namespace_url, warehouse=_warehouse_name(settings), removed=False
    )
    if keep:
        return found
    if not settings.namespace.startswith(NAMESPACE_PREFIX):  # never purge anything but a throwaway namespace
        found.error = (
            f"refused to remove namespace {settings.namespace!r}: not an {NAMESPACE_PREFIX}* namespace"
        )
        return found
    try:
        purge_namespace_data(settings)
    except Exception as exc:
        found.error = f"{type(exc).__name__}: {exc}"
    else:
        found.removed = True
    return found


# Running one cookbook ------------------------------------------------------------------------


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"


def _run_case(case: Case, entry: FlowEntry, settings: Settings, prefix: str) -> CookbookReport:
    logger = get_run_logger()
    started = time.monotonic()
    report = CookbookReport(name=case.cookbook, status="passed", description=case.description)
    lake = Lake(Storage.from_settings(settings.namespace_url, settings))
    landing = Storage.from_settings(settings.landing_url, settings)
    warehouse = Warehouse.from_settings(settings)
    evidence = Evidence(lake=lake, landing=landing, warehouse=warehouse, results={})

    def run(label: str, params: dict[str, Any]) -> Any:
        before = set(landing.glob("**"))
        logger.info("%s %s: run %r (%s)", prefix, case.cookbook, label, _params(params))
        step_started = time.monotonic()
        try:
            result = flow_(**params)
        except Exception as exc:
            report.runs.append(
                StepRun(
                    label=label,
                    params=params,
                    status="failed",
                    duration_seconds=round(time.monotonic() - step_started, 2),
                    summary=f"{type(exc).__name__}: {exc}",
                )
            )
            raise
        report.runs.append(
            StepRun(
                label=label,
                params=params,
                status="completed",
                duration_seconds=round(time.monotonic() - step_started, 2),
                summary=getattr(result, "summary", str(result)),
            )
        )
        evidence.landed[label] = sorted(set(landing.glob("**")) - before)
        return result

    stage = f"importing {entry.module}"
    try:
        flow_ = entry.load()
        for step in case.steps:
            stage = f"run {step.label!r}"
            evidence.results[step.label] = run(step.label, step.params)
        versions = table_versions(lake)
        stage = "run 'rerun'"
        evidence.rerun = run("rerun", case.steps[-1].params)
        stage = "checking its outputs"
        report.checks.append(commits_check(versions, table_versions(lake)))
        report.checks += case.checks(evidence)
    except Exception as exc:
        report.status = "error"
        report.error = f"{stage}: {type(exc).__name__}: {exc}"
    finally:
        warehouse.dispose()
    if report.status == "error":
        report.checks.append(
            check(
                f"{case.cookbook} runs and its outputs can be checked",
                "no error",
                report.error,
                "",
                passed=False,
            )
        )
    if report.status != "error" and report.failed_checks:
        report.status = "failed"
    report.duration_seconds = round(time.monotonic() - started, 2)
    return report


def _unchecked(name: str) -> CookbookReport:
    return CookbookReport(
        name=name,
        status="unchecked",
        error=f"cookbook {name!r} has no e2e case: add one to CASES in {CASES_FILE}",
        checks=[
            check(
                f"{name} has e2e checks",
                f"a Case in CASES ({CASES_FILE})",
                "none",
                "every cookbook in pipelines/cookbooks needs one",
                passed=False,
            )
        ],
    )


def _missing(name: str) -> CookbookReport:
    return CookbookReport(
        name=name,
        status="error",
        error=f"CASES in {CASES_FILE} has a case for {name!r}, which is not a cookbook in pipelines/cookbooks",
        checks=[
            check(
                f"the e2e case {name!r} has a cookbook",
                f"pipelines/cookbooks/{name}.py",
                "none",
                "CASES keys are cookbook names",
                passed=False,
            )
        ],
    )


def _select(cookbooks: list[str] | None) -> tuple[list[str], list[str], dict[str, FlowEntry]]:
    """(names to check, names skipped, loaded entries): every cookbook but this one, and stale cases."""
    entries = {e.name: e for e in discover() if e.kind == "cookbook" and e.name != NAME}
    known = sorted(set(entries) | set(CASES))
    if cookbooks is None:
        return known, [], entries
    if not cookbooks:
        raise PipelinesError(
            "e2e_test: cookbooks is an empty list, so nothing would be checked. Leave it out to check every "
            f"cookbook, or name some of: {', '.join(known)}."
        )
    for name in cookbooks:
        if name not in known:
            raise unknown_name("cookbook", name, known)
    chosen = [n for n in known if n in cookbooks]
    return chosen, [n for n in known if n not in cookbooks], entries


# The report ----------------------------------------------------------------------------------


def _short(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else str(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _summary(report: E2EReport) -> str:
    total = report.checks_passed + report.checks_failed
    ran = len(report.cookbooks)
    scope = (
        f" (only {', '.join(c.name for c in report.cookbooks)}; skipped {', '.join(report.skipped)})"
        if report.skipped
        else ""
    )
    if report.cleanup.kept:
        after = f"kept for inspection: {report.cleanup.data_root} and {report.cleanup.warehouse}"
    elif report.cleanup.removed:
        after = "removed afterwards"
    else:
        after = (
            f"NOT removed ({report.cleanup.error}): {report.cleanup.data_root}, {report.cleanup.warehouse}"
        )
    head = (
        f"e2e_test {'healthy' if report.healthy else 'UNHEALTHY'}: {ran} cookbook(s){scope}, "
        f"{report.checks_passed}/{total} check(s) passed in {report.duration_seconds:.1f} s; "
        f"throwaway namespace {report.namespace} {after}."
    )
    problems = [
        f"{c.name} {c.status}" + (f" ({c.error})" if c.error and c.status in ("error", "unchecked") else "")
        for c in report.cookbooks
        if c.status != "passed"
    ]
    return head + (" Problems: " + "; ".join(problems) + "." if problems else "")


def _failure_lines(report: E2EReport) -> list[str]:
    return [
        f"  {cookbook}: {c.name}: expected {_short(c.expected, 300)}, got {_short(c.actual, 300)}"
        for cookbook, c in report.failures()
    ]


def _markdown(report: E2EReport) -> str:
    mark = {"passed": "✅", "failed": "❌", "error": "💥", "unchecked": "❓"}
    lines = [f"# e2e_test: {'healthy' if report.healthy else 'UNHEALTHY'}", "", report.summary, ""]
    lines += ["| cookbook | status | checks | runs | seconds |", "|---|---|---|---|---|"]
    for c in report.cookbooks:
        passed = sum(x.passed for x in c.checks)
        lines.append(
            f"| {c.name} | {mark.get(c.status, '')} {c.status} | {passed}/{len(c.checks)} | {len(c.runs)} | "
            f"{c.duration_seconds:.1f} |"
        )
    for c in report.cookbooks:
        lines += ["", f"## {c.name}: {c.status}", ""]
        if c.description:
            lines += [c.description, ""]
        if c.error:
            lines += [f"**{_short(c.error, 600)}**", ""]
        for r in c.runs:
            lines.append(
                f"- run `{r.label}` ({_params(r.params)}), {r.status}, {r.duration_seconds:.1f} s: {_short(r.summary, 400)}"
            )
        lines += ["", "| | check | expected | actual | expected from |", "|---|---|---|---|---|"]
        lines += [
            f"| {'✅' if x.passed else '❌'} | {_short(x.name)} | {_short(x.expected)} | {_short(x.actual)} | "
            f"{_short(x.expected_from, 120)} |"
            for x in c.checks
        ]
    cleanup = report.cleanup
    lines += [
        "",
        "## throwaway namespace",
        "",
        f"`{report.namespace}`: data root `{cleanup.data_root}`, warehouse {cleanup.warehouse}; "
        + (
            "kept (keep=true)."
            if cleanup.kept
            else "removed."
            if cleanup.removed
            else f"not removed: {cleanup.error}"
        ),
    ]
    return "\n".join(lines) + "\n"


def _record(report: E2EReport) -> None:
    logger = get_run_logger()
    key = artifact_key(report.parent_namespace, ARTIFACT_KEY)
    publish_markdown(key=key, markdown=_markdown(report), description=report.summary[:500])
    for cookbook, failed in report.failures():
        logger.error(
            "%s: check failed: %s: expected %s, got %s (expected from: %s)",
            cookbook,
            failed.name,
            _short(failed.expected, 500),
            _short(failed.actual, 500),
            failed.expected_from or "-",
        )
    (logger.info if report.healthy else logger.error)(report.summary)


@workflow(name="e2e_test")
@tag_subflows
def e2e_test(keep: bool = False, cookbooks: list[str] | None = None) -> E2EReport:
    """Run every cookbook on sample data in a throwaway namespace, check their outputs, report the codebase's health."""
    started = time.monotonic()
    logger = get_run_logger()
    parent = get_settings()
    selected, skipped, entries = _select(cookbooks)
    overrides = _throwaway(parent)
    namespace = overrides["namespace"]
    logger.info(
        "Throwaway namespace %s (data under %s); %d cookbook(s): %s",
        namespace,
        parent.namespace_url_of(namespace),
        len(selected),
        ", ".join(selected),
    )
    reports: list[CookbookReport] = []
    with settings_overrides(**overrides):
        settings = get_settings()
        try:
            for number, name in enumerate(selected, start=1):
                prefix = f"[{number}/{len(selected)}]"
                if name not in entries:
                    reports.append(_missing(name))
                elif name not in CASES:
                    reports.append(_unchecked(name))
                else:
                    reports.append(_run_case(CASES[name], entries[name], settings, prefix))
                done = reports[-1]
                passed = sum(c.passed for c in done.checks)
                (logger.info if done.status == "passed" else logger.error)(
                    "%s %s: %s, %d/%d check(s) passed (%.1f s)",
                    prefix,
                    name,
                    done.status,
                    passed,
                    len(done.checks),
                    done.duration_seconds,
                )
        finally:
            cleanup = _cleanup(settings, keep)
    failed = sum(not c.passed for r in reports for c in r.checks)
    report = E2EReport(
        namespace=namespace,
        parent_namespace=parent.namespace,
        healthy=failed == 0 and all(r.status == "passed" for r in reports) and cleanup.error is None,
        cookbooks=reports,
        skipped=skipped,
        checks_passed=sum(c.passed for r in reports for c in r.checks),
        checks_failed=failed,
        cleanup=cleanup,
        duration_seconds=round(time.monotonic() - started, 2),
        summary="",
    )
    report.summary = _summary(report)
    _record(report)
    if not report.healthy:
        failing = ", ".join(r.name for r in report.cookbooks if r.status != "passed") or "cleanup"
        try:
            alerts.send(alerts.for_this_run(parent, failing, "unhealthy e2e report", report.summary), parent)
        except PipelinesError as exc:  # the report must still fail the run; the broken channel is logged
            logger.error("%s", exc)
        raise E2EUnhealthy("\n".join([report.summary, *_failure_lines(report)]), report)
    return report


def _readable(report: E2EReport) -> str:
    """The summary, one line per cookbook, and every failed check with expected and actual values."""
    lines = [report.summary]
    for c in report.cookbooks:
        passed = sum(x.passed for x in c.checks)
        lines.append(
            f"  {c.name:<14} {c.status:<9} {passed:>3}/{len(c.checks):<3} checks  {c.duration_seconds:6.1f} s"
        )
    failures = _failure_lines(report)
    if failures:
        lines += ["Failed checks:", *failures]
    return "\n".join(lines)


def _main() -> int:
    """``python -m pipelines.cookbooks.e2e_test``: run everything, print the readable report; 1 when unhealthy."""
    try:
        outcome = e2e_test()
    except E2EUnhealthy as exc:
        if exc.report is None:
            raise
        outcome = exc.report
    print(_readable(outcome))
    return 0 if outcome.healthy else 1


if __name__ == "__main__":
    sys.exit(_main())
