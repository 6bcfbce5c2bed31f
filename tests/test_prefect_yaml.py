"""prefect.yaml and deployments/<kind>.yaml stay in step with the code (STYLE.md rule 14).

Generic over the files: a new entry or kind rule is checked without touching this test.
"""

from pathlib import Path

import pytest

from pipelines.components.deployspec import (
    KIND_DIR,
    TemplateContext,
    load_kind_settings,
    load_prefect_file,
    parse_schedule,
)
from pipelines.components.discovery import discover
from pipelines.components.environment import Kind
from pipelines.components.errors import did_you_mean
from pipelines.components.results import result_problem

ROOT = Path(__file__).resolve().parents[1]
PREFECT_FILE = ROOT / "prefect.yaml"
ENTRIES = load_prefect_file(PREFECT_FILE)


def _context(kind: Kind) -> TemplateContext:
    namespace = {Kind.SERVING: "serving", Kind.E2E: "e2e", Kind.RESEARCH: "research-feature-x"}[kind]
    return TemplateContext(
        values={
            "namespace": namespace,
            "kind": kind.value,
            "branch": "feature/x",
            "commit": "0" * 40,
            "short_commit": "0" * 12,
            "data_url": "s3://bucket/data",
            "namespace_url": f"s3://bucket/data/{namespace}",
            "landing_url": "s3://bucket/data/landing",
            "warehouse_url": "postgresql+psycopg://pipelines@db:5432/warehouse",
            "s3_endpoint_url": None,
            "s3_region": "eu-west-1",
        },
        environ={},
    )


def _load(entry):
    module = __import__(entry.module, fromlist=[entry.attribute])
    flow = getattr(module, entry.attribute, None)
    assert flow is not None and hasattr(flow, "fn"), (
        f"{entry.where}: {entry.entrypoint} is not a Prefect flow"
    )
    return flow


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.entrypoint)
def test_entrypoint_imports_and_every_parameter_exists(entry):
    flow = _load(entry)
    accepted = list(flow.parameters.properties)
    for kind in Kind:
        context = _context(kind)
        assert context.render(entry.raw["name"], entry.where) == context.values["namespace"]
        parameters = context.render(entry.raw.get("parameters") or {}, entry.where)
        overrides = load_kind_settings(ROOT / KIND_DIR, kind).parameters.get(flow.name, {})
        for name in [*parameters, *overrides]:
            assert name in accepted, (
                f"{entry.where}: flow {flow.name!r} has no parameter {name!r}.{did_you_mean(name, accepted)}"
            )
        for number, spec in enumerate((entry.raw.get("schedules") or {}).get(kind.value) or []):
            parse_schedule(context.render(spec, entry.where), f"{entry.where} schedules[{number}]")
    assert result_problem(flow) is None


def test_every_cookbook_is_deployed_and_flow_names_are_unique():
    deployed = [_load(entry).name for entry in ENTRIES]
    assert len(deployed) == len(set(deployed))
    cookbooks = {e.name for e in discover() if e.kind == "cookbook"}
    assert cookbooks <= set(deployed), (
        f"cookbooks without a prefect.yaml entry: {sorted(cookbooks - set(deployed))}"
    )
    assert "ingest" in deployed  # users submit it


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.value)
def test_kind_rules_load_and_render(kind):
    rules = load_kind_settings(ROOT / KIND_DIR, kind)
    context = _context(kind)
    jobs = context.render(rules.job_variables, str(rules.file))
    env = jobs["env"]
    assert env["PIPELINES_NAMESPACE"] == context.values["namespace"]
    assert env["PIPELINES_DATA_URL"] == "s3://bucket/data"
    assert "PIPELINES_S3_ENDPOINT_URL" not in env  # an unset optional setting is left out
    assert env["PIPELINES_S3_REGION"] == "eu-west-1"
    assert (
        context.render(rules.result_storage, str(rules.file)) == f"{context.values['namespace_url']}/_results"
    )
    assert rules.work_pool == "pipelines" and rules.work_pool_type == "process"
    assert rules.schedules is (kind is not Kind.RESEARCH)
    known = {_load(entry).name for entry in ENTRIES}
    assert set(rules.parameters) <= known
