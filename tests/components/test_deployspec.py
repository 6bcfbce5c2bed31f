"""Parsing and rendering prefect.yaml and deployments/<kind>.yaml: every mistake is named."""

import re
import textwrap

import pytest

from pipelines.components.deployspec import (
    DEFAULT_ANCHOR,
    TemplateContext,
    load_kind_settings,
    load_prefect_file,
    normalise_entrypoint,
    parse_schedule,
)
from pipelines.components.environment import Kind
from pipelines.components.errors import ConfigError


def _context(**environ) -> TemplateContext:
    return TemplateContext(
        values={
            "namespace": "research-x",
            "kind": "research",
            "branch": "x",
            "commit": "a" * 40,
            "short_commit": "a" * 12,
            "data_url": "/data",
            "namespace_url": "/data/research-x",
            "landing_url": "/data/landing",
            "warehouse_url": "sqlite:////wh/research-x.sqlite",
            "s3_endpoint_url": None,
            "s3_region": None,
        },
        environ=environ,
    )


def _write(tmp_path, text: str, name: str = "prefect.yaml"):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_templates_resolve_namespace_settings_and_environment():
    context = _context(DATASET="flights")
    rendered = context.render(
        {
            "name": "{{ namespace }}",
            "parameters": {"dataset": "{{ $DATASET }}", "window": ["{{kind}}-{{ short_commit }}"]},
            "env": {"PIPELINES_S3_ENDPOINT_URL": "{{ s3_endpoint_url }}", "ROOT": "{{ namespace_url }}/x"},
        },
        "here",
    )
    assert rendered == {
        "name": "research-x",
        "parameters": {"dataset": "flights", "window": [f"research-{'a' * 12}"]},
        "env": {"ROOT": "/data/research-x/x"},  # the unset optional setting is left out
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "{{ namespce }}",
            "parameters.x: unresolved template variable 'namespce'. Did you mean 'namespace'?",
        ),
        (
            "{{ $DATASET }}",
            "unresolved template variable '$DATASET': the environment variable DATASET is not set",
        ),
        ("{{ prefect.variables.x }}", "Prefect's own {{ prefect.* }} references are not resolved"),
        ("{{ $AWS_SECRET_ACCESS_KEY }}", "would copy the secret AWS_SECRET_ACCESS_KEY into a deployment"),
        ("s3://{{ s3_endpoint_url }}/x", "unresolved template variable 's3_endpoint_url': it has no value"),
        ("{{ namespace }", "has an unbalanced '{{' or '}}'"),
    ],
)
def test_unresolvable_templates_are_errors_naming_the_variable_and_the_entry(value, expected):
    with pytest.raises(ConfigError) as caught:
        _context().render({"parameters": {"x": value}}, "prefect.yaml deployments[0] (m:f)")
    assert expected in str(caught.value)
    assert "prefect.yaml deployments[0] (m:f).parameters.x" in str(caught.value)


def test_a_warehouse_password_never_goes_into_a_deployment():
    context = _context()
    context.values["warehouse_url"] = "postgresql+psycopg://app:hunter2@db/wh"
    with pytest.raises(ConfigError) as caught:
        context.render({"PIPELINES_WAREHOUSE_URL": "{{ warehouse_url }}"}, "deployments/serving.yaml env")
    assert "would put the warehouse password into the deployment" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_entrypoints_are_module_paths():
    assert (
        normalise_entrypoint("pipelines/cookbooks/flights.py:flights", "e")
        == "pipelines.cookbooks.flights:flights"
    )
    assert (
        normalise_entrypoint("pipelines.workflows.ingest:ingest", "e") == "pipelines.workflows.ingest:ingest"
    )
    with pytest.raises(ConfigError, match=re.escape("is not 'package.module:flow'")):
        normalise_entrypoint("pipelines.workflows.ingest", "e")
    with pytest.raises(ConfigError, match="'entrypoint' is required"):
        normalise_entrypoint(None, "e")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("deployments: []\n", "'deployments' must be a non-empty list"),
        (
            "deployments:\n  - name: x\n    entrypoint: a.b:c\n    paramters: {}\n",
            "deployments[0]: unknown key 'paramters'. Did you mean 'parameters'?",
        ),
        ("deployments:\n  - name: x\n", "deployments[0]: 'entrypoint' is required"),
        ("deployments:\n  - entrypoint: a.b:c\n", "'name' is required; write name: \"{{ namespace }}\""),
        (
            "deployments:\n  - {name: x, entrypoint: a.b:c}\n  - {name: x, entrypoint: a/b.py:c}\n",
            "deployments[1] (a.b:c): the same entrypoint is already deployment [0]",
        ),
        (
            "deployments:\n  - {name: x, entrypoint: a.b:c, schedules: {servng: []}}\n",
            "schedules.servng: schedules are listed per namespace kind (serving, research, e2e). Did you mean 'serving'?",
        ),
        ("pull:\n  - x: {}\ndeployments:\n  - {name: x, entrypoint: a.b:c}\n", "'pull' steps are not used"),
        ("deployments:\n  - {name: x, entrypoint: a.b:c, parameters: [1]}\n", "'parameters' must be a dict"),
        ("deployments: [\n", "is not valid YAML"),
    ],
)
def test_prefect_file_mistakes_are_named(tmp_path, text, expected):
    with pytest.raises(ConfigError) as caught:
        load_prefect_file(_write(tmp_path, text))
    assert expected in str(caught.value)


def test_missing_prefect_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_prefect_file(tmp_path / "prefect.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("schedule: true\n", "deployments/research.yaml: unknown key 'schedule'. Did you mean 'schedules'?"),
        ("schedules: yes please\n", "'schedules' must be true"),
        ("work_pool: {nme: x}\n", "work_pool: unknown key 'nme'. Did you mean 'name'?"),
        ("work_pool: {job_variables: [1]}\n", "work_pool.job_variables must be a mapping"),
        ("parameters: {flights: 3}\n", "'parameters' must map a flow name to a mapping"),
    ],
)
def test_kind_file_mistakes_are_named(tmp_path, text, expected):
    _write(tmp_path, text, "research.yaml")
    with pytest.raises(ConfigError) as caught:
        load_kind_settings(tmp_path, Kind.RESEARCH)
    assert expected in str(caught.value)


def test_kind_file_defaults(tmp_path):
    _write(tmp_path, "# nothing set\n", "e2e.yaml")
    rules = load_kind_settings(tmp_path, Kind.E2E)
    assert (rules.work_pool, rules.work_pool_type, rules.schedules) == ("pipelines", "process", False)
    assert rules.result_storage == "{{ namespace_url }}/_results"
    with pytest.raises(ConfigError, match=r"serving namespaces, .*serving\.yaml does not exist"):
        load_kind_settings(tmp_path, Kind.SERVING)


def test_schedules():
    cron = parse_schedule({"cron": "30 6 * * *"}, "s")
    assert cron == {"schedule": {"cron": "30 6 * * *", "timezone": "UTC", "day_or": True}, "active": True}
    interval = parse_schedule({"interval": 3600, "active": False}, "s")
    assert interval["schedule"]["anchor_date"].startswith(DEFAULT_ANCHOR[:19])  # stable, never "now"
    assert interval["active"] is False
    assert parse_schedule({"rrule": "FREQ=DAILY"}, "s")["schedule"]["rrule"] == "FREQ=DAILY"
    with pytest.raises(ConfigError, match="exactly one of cron, interval or rrule"):
        parse_schedule({"cron": "* * * * *", "interval": 5}, "s")
    with pytest.raises(ConfigError, match="s: invalid cron schedule"):
        parse_schedule({"cron": "every day"}, "s")
    with pytest.raises(ConfigError, match=re.escape("unknown key 'timezon'. Did you mean 'timezone'?")):
        parse_schedule({"cron": "* * * * *", "timezon": "UTC"}, "s")
