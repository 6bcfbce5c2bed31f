import logging
import pickle

import pytest

from pipelines.components import secrets
from pipelines.components.errors import SecretNotFoundError
from pipelines.components.secrets import MASK, block_name, get_secret

VALUE = "sup3r-s3cret-value-42"


def _no_block(name):
    return None, "not found"


def test_block_wins_over_environment(tmp_path):
    found = get_secret(
        "API_TOKEN",
        environ={"API_TOKEN": "from-env"},
        cwd=tmp_path,
        block_reader=lambda n: ("from-block", "found"),
    )
    assert found.reveal() == "from-block"
    assert found.source == "Prefect Secret block 'api-token'"


def test_environment_then_dotenv(tmp_path):
    (tmp_path / ".env").write_text("API_TOKEN=from-dotenv\n")
    found = get_secret("API_TOKEN", environ={"API_TOKEN": "from-env"}, cwd=tmp_path, block_reader=_no_block)
    assert (found.reveal(), found.source) == ("from-env", "environment variable API_TOKEN")
    found = get_secret("API_TOKEN", environ={}, cwd=tmp_path, block_reader=_no_block)
    assert found.reveal() == "from-dotenv" and found.source.startswith(".env file")


def test_missing_secret_lists_every_place_looked_and_the_fix(tmp_path):
    with pytest.raises(SecretNotFoundError) as info:
        get_secret(
            "API_TOKEN",
            environ={},
            cwd=tmp_path,
            block_reader=lambda n: (None, "not reachable (ConnectError)"),
        )
    message = str(info.value)
    assert "Prefect Secret block 'api-token' (not reachable (ConnectError))" in message
    assert "environment variable API_TOKEN (not set)" in message
    assert ".env file" in message and "(no file)" in message
    assert "prefect block create secret" in message


def test_invalid_secret_name():
    with pytest.raises(Exception, match="Invalid secret name"):
        get_secret("not a name")


def test_value_never_shows_in_repr_str_format_or_pickle(tmp_path):
    found = get_secret("API_TOKEN", environ={"API_TOKEN": VALUE}, cwd=tmp_path, block_reader=_no_block)
    for text in (repr(found), str(found), f"{found}", repr([found]), repr({"k": found})):
        assert VALUE not in text and MASK in text
    with pytest.raises(TypeError, match="cannot be pickled") as info:
        pickle.dumps(found)
    assert VALUE not in str(info.value)


def test_value_is_redacted_from_every_log_line(tmp_path, caplog):
    found = get_secret("API_TOKEN", environ={"API_TOKEN": VALUE}, cwd=tmp_path, block_reader=_no_block)
    logger = logging.getLogger("pipelines.test.redaction")
    with caplog.at_level(logging.INFO, logger="pipelines.test.redaction"):
        logger.info("connecting with %s", found.reveal())
        logger.info(f"token={found.reveal()} inline")
        try:
            raise RuntimeError(f"auth failed for {found.reveal()}")
        except RuntimeError:
            logger.exception("request failed")
    text = caplog.text + " ".join(r.getMessage() for r in caplog.records)
    assert VALUE not in text
    assert text.count(MASK) >= 3


def test_redact_helper():
    secrets.register_redaction("abcd-1234-xyz")
    assert secrets.redact("x abcd-1234-xyz y") == f"x {MASK} y"


def test_block_name():
    assert block_name("AWS_SECRET_ACCESS_KEY") == "aws-secret-access-key"


def test_real_prefect_secret_block_is_found_first(prefect_harness, tmp_path):
    from prefect.blocks.system import Secret

    Secret(value=VALUE).save("pipelines-test-token", overwrite=True)
    found = get_secret("PIPELINES_TEST_TOKEN", environ={"PIPELINES_TEST_TOKEN": "env"}, cwd=tmp_path)
    assert found.reveal() == VALUE
    assert found.source == "Prefect Secret block 'pipelines-test-token'"
    with pytest.raises(SecretNotFoundError, match=r"block 'pipelines-absent' \(not found\)"):
        get_secret("PIPELINES_ABSENT", environ={}, cwd=tmp_path)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("postgresql//user:pw-1234@host/db", "postgresql//user:***@host/db"),
        ("postgresql://user:p@ss/w@host:5432/db?x=1", "postgresql://user:***@host:5432/db?x=1"),
        ("from string 'postgresql:/u:pw-1234@h/d'", "from string 'postgresql:/u:***@h/d'"),
        ("(mysql://u:pw-1234@h/d), next", "(mysql://u:***@h/d), next"),
        ("u:pw-1234@host:5432", "u:***@host:5432"),
        ("https://tok-1234@api.example.com/v1", "https://***@api.example.com/v1"),
        ("postgresql+psycopg://user@host/db", "postgresql+psycopg://user@host/db"),
        ("mail ops@example.com", "mail ops@example.com"),
    ],
)
def test_url_credentials_are_masked_whether_or_not_the_url_parses(text, masked):
    assert secrets.mask_credentials(text) == masked
    assert secrets.redact(text) == masked


def test_errors_and_log_records_never_carry_url_credentials(caplog):
    from pipelines.components.errors import ConfigError

    url = "postgresql//admin:hunter2-pass@db.internal/prod"
    assert "hunter2-pass" not in str(ConfigError(f"bad URL {url!r}"))
    logger = logging.getLogger("pipelines.test.urls")
    with caplog.at_level(logging.INFO, logger="pipelines.test.urls"):
        logger.info("connecting to %s", url)
        try:
            raise ValueError(f"Could not parse SQLAlchemy URL from string {url!r}")
        except ValueError:
            logger.exception("failed")
    assert "hunter2-pass" not in caplog.text + " ".join(r.getMessage() for r in caplog.records)
    assert caplog.text.count("admin:***@db.internal") == 2  # the message, and the exception's text
