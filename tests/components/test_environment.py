import subprocess

import pytest

from pipelines.components.environment import (
    Kind,
    Settings,
    git_branch,
    kind_of,
    namespace_for_branch,
    slugify,
)
from pipelines.components.errors import ConfigError


@pytest.mark.parametrize(
    ("branch", "namespace", "kind"),
    [
        ("serving", "serving", Kind.SERVING),
        ("main", "e2e", Kind.E2E),
        ("master", "e2e", Kind.E2E),
        ("feature/x", "research-feature-x", Kind.RESEARCH),
        ("Feature/JIRA-123_Add thing", "research-feature-jira-123-add-thing", Kind.RESEARCH),
        ("dependabot/pip/polars-1.2.3", "research-dependabot-pip-polars-1-2-3", Kind.RESEARCH),
        ("serving-hotfix", "research-serving-hotfix", Kind.RESEARCH),
    ],
)
def test_branch_to_namespace_table(branch, namespace, kind):
    assert namespace_for_branch(branch) == namespace
    assert kind_of(namespace) is kind


def test_long_branch_names_are_trimmed_to_a_valid_namespace():
    ns = namespace_for_branch("feature/" + "a-very-long-branch-name" * 5)
    assert len(ns) <= 63 and not ns.endswith("-")
    Settings.resolve(environ={"PIPELINES_NAMESPACE": ns})


def test_branch_without_letters_is_an_error_with_the_fix():
    with pytest.raises(ConfigError, match="set PIPELINES_NAMESPACE"):
        namespace_for_branch("///")


def test_slugify():
    assert slugify("  Hello__World!! ") == "hello-world"


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_namespace_outside_git_is_local(tmp_path):
    settings = Settings.resolve(environ={}, cwd=tmp_path)
    assert settings.namespace == "local"
    assert settings.kind is Kind.RESEARCH
    assert "no git branch" in settings.origins["namespace"]


def test_namespace_from_git_branch(tmp_path):
    _git(tmp_path, "init", "-q", "-b", "feature/x")
    settings = Settings.resolve(environ={}, cwd=tmp_path)
    assert settings.namespace == "research-feature-x"
    assert settings.branch == "feature/x"
    assert settings.origins["namespace"] == "git branch 'feature/x'"


def test_main_branch_is_e2e_and_env_var_wins(tmp_path):
    _git(tmp_path, "init", "-q", "-b", "main")
    assert Settings.resolve(environ={}, cwd=tmp_path).namespace == "e2e"
    settings = Settings.resolve(environ={"PIPELINES_NAMESPACE": "serving"}, cwd=tmp_path)
    assert (settings.namespace, settings.kind) == ("serving", Kind.SERVING)
    assert settings.origins["namespace"] == "environment PIPELINES_NAMESPACE"


def test_detached_head_uses_ci_branch_variables(tmp_path):
    _git(tmp_path, "init", "-q", "-b", "main")
    _git(tmp_path, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "x")
    _git(tmp_path, "checkout", "-q", "--detach")
    assert git_branch(tmp_path, {}) is None
    assert git_branch(tmp_path, {"GITHUB_HEAD_REF": "feature/y"}) == "feature/y"
    settings = Settings.resolve(environ={"GITHUB_HEAD_REF": "feature/y"}, cwd=tmp_path)
    assert settings.namespace == "research-feature-y"


def test_pipelines_branch_override(tmp_path):
    settings = Settings.resolve(environ={"PIPELINES_BRANCH": "serving"}, cwd=tmp_path)
    assert settings.namespace == "serving"


def test_invalid_namespace_names_the_source_and_the_rule(tmp_path):
    with pytest.raises(ConfigError) as info:
        Settings.resolve(environ={"PIPELINES_NAMESPACE": "Bad_Name"}, cwd=tmp_path)
    message = str(info.value)
    assert "'Bad_Name'" in message
    assert "environment PIPELINES_NAMESPACE" in message
    assert "lower-case letters" in message


def test_defaults_live_under_the_working_directory(tmp_path):
    settings = Settings.resolve(environ={}, cwd=tmp_path)
    assert settings.data_url == str(tmp_path / ".pipelines" / "data")
    assert settings.namespace_url == str(tmp_path / ".pipelines" / "data" / "local")
    assert settings.warehouse_url == f"sqlite:///{tmp_path}/.pipelines/warehouse/local.sqlite"
    assert settings.landing_url == str(tmp_path / ".pipelines" / "data" / "landing")
    assert settings.registry_path.endswith("pipelines/registry/datasets.csv")
    assert settings.prefect_api_url is None
    assert "ephemeral" in settings.origins["prefect_api_url"]


def test_precedence_argument_env_dotenv_default(tmp_path):
    (tmp_path / ".env").write_text(
        "# comment\nexport PIPELINES_DATA_URL=/from/dotenv\nPIPELINES_LANDING_URL='/landing/dotenv'\n"
    )
    env = {"PIPELINES_DATA_URL": "s3://bucket/env/", "PIPELINES_NAMESPACE": "ns"}
    settings = Settings.resolve(environ=env, cwd=tmp_path)
    assert settings.data_url == "s3://bucket/env"
    assert settings.origins["data_url"] == "environment PIPELINES_DATA_URL"
    assert settings.landing_url == "/landing/dotenv"
    assert settings.origins["landing_url"].startswith(".env file PIPELINES_LANDING_URL")
    settings = Settings.resolve(environ=env, cwd=tmp_path, data_url="relative/data")
    assert settings.data_url == str(tmp_path / "relative" / "data")
    assert settings.origins["data_url"] == "argument"
    assert Settings.resolve(environ={}, cwd=tmp_path).data_url == "/from/dotenv"


def test_warehouse_url_templating_and_validation(tmp_path):
    env = {"PIPELINES_NAMESPACE": "research-a", "PIPELINES_WAREHOUSE_URL": "sqlite:///w/{namespace}.db"}
    assert Settings.resolve(environ=env, cwd=tmp_path).warehouse_url == "sqlite:///w/research-a.db"
    with pytest.raises(ConfigError, match="expected a SQLAlchemy URL"):
        Settings.resolve(environ={"PIPELINES_WAREHOUSE_URL": "nonsense"}, cwd=tmp_path)


def test_malformed_dotenv_line_names_file_and_line(tmp_path):
    (tmp_path / ".env").write_text("GOOD=1\nthis is not a pair\n")
    with pytest.raises(ConfigError, match=r"\.env:2: expected KEY=VALUE"):
        Settings.resolve(environ={}, cwd=tmp_path)


def test_prefect_profile_supplies_api_url(tmp_path):
    profiles = tmp_path / "profiles.toml"
    profiles.write_text('active = "dev"\n[profiles.dev]\nPREFECT_API_URL = "http://127.0.0.1:4200/api"\n')
    settings = Settings.resolve(environ={"PREFECT_PROFILES_PATH": str(profiles)}, cwd=tmp_path)
    assert settings.prefect_api_url == "http://127.0.0.1:4200/api"
    assert "Prefect profile 'dev'" in settings.origins["prefect_api_url"]


def test_unknown_override_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="Unknown setting"):
        Settings.resolve(environ={}, cwd=tmp_path, data_uri="x")


def test_describe_lists_every_setting_with_origin(tmp_path):
    rows = {r.name: r for r in Settings.resolve(environ={}, cwd=tmp_path).describe()}
    assert {"namespace", "kind", "data_url", "warehouse_url", "registry_path", "prefect_api_url"} <= set(rows)
    assert all(r.origin for n, r in rows.items() if n != "branch")


def test_settings_overrides_apply_to_the_block_and_what_it_starts_only(tmp_path):
    import contextvars
    import threading

    from pipelines.components.environment import get_settings, settings_overrides

    seen = {}
    with settings_overrides(namespace="research-x", data_url=str(tmp_path / "other")):
        assert get_settings().namespace == "research-x"
        assert get_settings().origins["namespace"] == "argument"
        assert get_settings(namespace="research-y").namespace == "research-y"  # an argument still wins
        context = contextvars.copy_context()
        thread = threading.Thread(
            target=context.run, args=(lambda: seen.update(ns=get_settings().namespace),)
        )
        thread.start()
        thread.join()
    assert seen == {"ns": "research-x"}
    assert get_settings().namespace == "test"
    with pytest.raises(ConfigError, match="Unknown setting"), settings_overrides(data_uri="x"):
        pass
