"""The e2e_test cookbook: every cookbook in a throwaway namespace, checked, reported, cleaned up."""

from __future__ import annotations

import asyncio

import polars as pl
import pytest

import pipelines.cookbooks._e2e_cases as cases_module
import pipelines.cookbooks.e2e_test as e2e_module
from pipelines.components.discovery import FlowEntry, discover
from pipelines.components.environment import Settings, get_settings
from pipelines.components.errors import PipelinesError, UnknownNameError
from pipelines.components.resources import Storage
from pipelines.components.results import RESULT_SERIALIZER
from pipelines.components.summary import artifact_key
from pipelines.cookbooks._e2e_cases import CASES, landed_rows
from pipelines.cookbooks.e2e_test import ARTIFACT_KEY, E2EReport, E2EUnhealthy, e2e_test

COOKBOOKS = sorted(e.name for e in discover() if e.kind == "cookbook" and e.name != "e2e_test")
FAKE = FlowEntry(
    name="weather_alerts",
    kind="cookbook",
    module="pipelines.cookbooks.weather_alerts",
    summary="A cookbook somebody added without e2e checks.",
)


KEY = artifact_key("test", ARTIFACT_KEY)  # the key carries the parent namespace: test-e2e-report


def _artifact(flow_run_id) -> str:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[KEY]))
            )

    found = [a for a in asyncio.run(read()) if a.flow_run_id == flow_run_id]
    assert len(found) == 1, f"expected one {KEY} artifact for the run, found {len(found)}"
    return found[0].data


def _checks(report: E2EReport, cookbook: str) -> dict:
    return {c.name: c for c in next(r for r in report.cookbooks if r.name == cookbook).checks}


def _namespaces(root) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


# Unit: the cases, the throwaway namespace, the helpers ------------------------------------------


@pytest.mark.unit
def test_every_cookbook_has_a_case_and_every_case_a_cookbook():
    assert sorted(CASES) == COOKBOOKS, (
        "every cookbook in pipelines/cookbooks needs a Case in pipelines/cookbooks/_e2e_cases.py (and no other)"
    )
    for name, case in CASES.items():
        assert case.cookbook == name and case.steps and case.description


@pytest.mark.unit
def test_the_throwaway_namespace_has_its_own_landing_data_and_warehouse(tmp_path):
    parent = Settings.resolve(
        environ={"PIPELINES_NAMESPACE": "e2e", "PIPELINES_DATA_URL": str(tmp_path / "data")},
        cwd=tmp_path,
        warehouse_url=f"sqlite:///{tmp_path}/wh/{{namespace}}.sqlite",
    )
    overrides = e2e_module._throwaway(parent)
    namespace = overrides["namespace"]
    assert namespace.startswith("e2e-run-") and len(namespace) == len("e2e-run-") + 8
    assert overrides["landing_url"] == f"{tmp_path}/data/{namespace}/landing"
    assert "warehouse_url" not in overrides  # {namespace} already gives it a file of its own
    assert e2e_module._throwaway(parent)["namespace"] != namespace


@pytest.mark.unit
def test_a_shared_sqlite_file_is_never_the_throwaway_warehouse(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINES_WAREHOUSE_URL", f"sqlite:///{tmp_path}/wh/shared.sqlite")
    overrides = e2e_module._throwaway(get_settings())
    assert overrides["warehouse_url"] == f"sqlite:///{tmp_path}/wh/{overrides['namespace']}.sqlite"


@pytest.mark.unit
def test_postgres_keeps_its_url_and_gets_a_schema_of_its_own(monkeypatch):
    monkeypatch.setenv("PIPELINES_WAREHOUSE_URL", "postgresql+psycopg://pipelines@db:5432/warehouse")
    overrides = e2e_module._throwaway(get_settings())
    assert "warehouse_url" not in overrides
    from pipelines.components.environment import settings_overrides

    with settings_overrides(**overrides):
        described = e2e_module._warehouse_name(get_settings())
    assert described.startswith(f"schema {overrides['namespace'].replace('-', '_')} in postgresql")


@pytest.mark.unit
def test_cleanup_refuses_anything_but_a_throwaway_namespace(tmp_path):
    (tmp_path / "data" / "test").mkdir(parents=True)
    cleanup = e2e_module._cleanup(get_settings(), keep=False)
    assert not cleanup.removed and "refused to remove namespace 'test'" in cleanup.error
    assert (tmp_path / "data" / "test").is_dir()


@pytest.mark.unit
def test_an_unknown_cookbook_name_is_refused_with_a_suggestion():
    with pytest.raises(
        UnknownNameError, match=r"Unknown cookbook 'social_like'. Did you mean 'social_likes'\?"
    ):
        e2e_module._select(["social_like"])


@pytest.mark.unit
def test_an_empty_cookbook_list_is_refused():
    with pytest.raises(PipelinesError, match=r"cookbooks is an empty list, so nothing would be checked"):
        e2e_module._select([])


@pytest.mark.unit
def test_landed_rows_counts_csv_records_and_ndjson_lines(tmp_path):
    landing = Storage(str(tmp_path))
    landing.write_atomic("a.csv", b'id,title\n1,"two\nlines"\n2,plain\n\n')
    landing.write_atomic("b.ndjson", b'{"id": 1}\n\n{"id": 2}\n{"id": 3}\n')
    assert landed_rows(landing, ["a.csv"]) == 2
    assert landed_rows(landing, ["b.ndjson"]) == 3


@pytest.mark.unit
def test_frame_comparison_names_the_first_difference():
    expected = pl.DataFrame({"day": ["d1", "d2"], "flights": [3, 4], "mean": [1.0, 2.0]})
    same, found, agree = cases_module._compare_frames(
        expected, expected.with_columns(pl.col("mean") + 1e-9), ["day"]
    )
    assert agree and same == found == "2 rows, flights 7"
    wanted, found, agree = cases_module._compare_frames(
        expected, pl.DataFrame({"day": ["d1", "d2"], "flights": [3, 5], "mean": [1.0, 2.0]}), ["day"]
    )
    assert not agree
    assert wanted == "2 rows, flights 7"
    assert found == "2 rows, flights 8; 1 row(s) differ, first d2: flights 5 (expected 4)"
    _, found, agree = cases_module._compare_frames(expected, expected.head(1), ["day"])
    assert not agree and "first d2: flights None (expected 4)" in found


@pytest.mark.unit
def test_the_report_and_its_failure_survive_the_result_serializer():
    check = cases_module.check("a check", {"a": 1}, {"a": 2}, "by hand")
    report = E2EReport(
        namespace="e2e-run-00000000",
        parent_namespace="e2e",
        healthy=False,
        cookbooks=[e2e_module.CookbookReport(name="x", status="failed", checks=[check])],
        checks_passed=0,
        checks_failed=1,
        cleanup=e2e_module.Cleanup(kept=False, data_root="/d", warehouse="SQLite file /w", removed=True),
        duration_seconds=1.0,
        summary="s",
    )
    assert RESULT_SERIALIZER.loads(RESULT_SERIALIZER.dumps(report)) == report
    assert report.failures() == [("x", check)]
    assert not check.passed and check.expected == {"a": 1}
    # Prefect stores a raised exception as its type and message and rebuilds it from the message alone
    error = RESULT_SERIALIZER.loads(RESULT_SERIALIZER.dumps(E2EUnhealthy("2 checks failed", report)))
    assert isinstance(error, E2EUnhealthy) and isinstance(error, PipelinesError)
    assert str(error) == "2 checks failed" and error.report is None


# Local: real runs on the Prefect test harness ------------------------------------------------


@pytest.mark.usefixtures("prefect_harness")
def test_a_healthy_run_checks_every_cookbook_and_removes_the_throwaway_namespace(tmp_path):
    data = tmp_path / "data"
    (data / "test").mkdir(parents=True)
    (data / "test" / "mine.txt").write_text("the parent namespace's data")

    state = e2e_test(return_state=True)

    assert state.is_completed(), state.message
    report = state.result()
    assert isinstance(report, E2EReport)
    assert report.healthy and report.checks_failed == 0 and report.parent_namespace == "test"
    assert [c.name for c in report.cookbooks] == COOKBOOKS and report.skipped == []
    assert {c.name: c.status for c in report.cookbooks} == dict.fromkeys(COOKBOOKS, "passed")
    for cookbook in report.cookbooks:
        assert [r.label for r in cookbook.runs] == [s.label for s in CASES[cookbook.name].steps] + ["rerun"]
        assert all(
            r.status == "completed" and f"namespace {report.namespace}" in r.summary for r in cookbook.runs
        )
        assert len(cookbook.checks) >= 10
    assert report.checks_passed == sum(len(c.checks) for c in report.cookbooks)

    flights = _checks(report, "flights")
    assert flights["flights: every source row of the window is cleaned or quarantined"].actual == 5181
    assert flights["flights: late rows in the second window"].expected == 78
    per_day = flights["flight_delays_daily: flights per UTC day sum to the source's"]
    assert sum(per_day.expected.values()) == 5181 and per_day.actual == per_day.expected
    social = _checks(report, "social_likes")
    assert social["top_users: the top 10 the sample was designed to produce"].actual == [
        "u07", "u01", "u02", "u03", "u21", "u12", "u04", "u05", "u06", "u08",
    ]  # fmt: skip
    assert (
        social["likes: one cleaned row per distinct (post, user) like with a real timestamp"].actual == 1090
    )
    estate = _checks(report, "real_estate")
    assert estate["real_estate: parcel counts of the sample"].actual == {
        "properties": 255,
        "listed": 159,
        "listing_only": 1,
        "conflicts": 3,
    }
    assert all(c["rerun: no table gets a new commit"].actual == {} for c in (flights, social, estate))
    shares = {
        "flights": ["flight_delays_daily"],
        "social_likes": ["top_users", "user_top3_avg"],
        "real_estate": ["properties", "property_conflicts"],
    }
    for cookbook, datasets in shares.items():
        checks = _checks(report, cookbook)
        rerun = checks["rerun: nothing new to ingest, build or share"].actual
        assert all(rerun[f"share {d}"] == "no_changes" for d in datasets)
        for dataset in datasets:
            assert checks[f"{dataset}: the warehouse table holds every row of the lake table"].passed
    assert social["top_users in the warehouse: the top 10 by rank"].passed
    assert estate[
        "property_conflicts in the warehouse: the sample's county/listing disagreements"
    ].actual == [
        ["1001-001-002", "sqft"],
        ["1001-001-003", "address"],
        ["1001-001-005", "property_type"],
    ]

    # gone afterwards: its data root (with its own landing zone) and warehouse; the parent's data untouched
    assert report.cleanup.removed and not report.cleanup.kept and report.cleanup.error is None
    assert report.cleanup.data_root == f"{data}/{report.namespace}"
    assert report.cleanup.warehouse == f"SQLite file {tmp_path}/warehouse/{report.namespace}.sqlite"
    assert _namespaces(data) == ["test"]
    assert (data / "test" / "mine.txt").read_text() == "the parent namespace's data"
    assert not (tmp_path / "warehouse" / f"{report.namespace}.sqlite").exists()

    assert report.summary.startswith(
        f"e2e_test healthy: {len(COOKBOOKS)} cookbook(s), {report.checks_passed}/"
    )
    assert f"throwaway namespace {report.namespace} removed afterwards." in report.summary
    markdown = _artifact(state.state_details.flow_run_id)
    assert markdown.startswith("# e2e_test: healthy")
    assert "| ✅ | top_users: the top 10 the sample was designed to produce |" in markdown
    assert "❌" not in markdown
