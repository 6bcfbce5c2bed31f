"""A configured Prefect API that does not answer: a clear error, before anything else happens."""

import os
import subprocess
import sys

import pytest

from pipelines.client import Client, ServerUnreachableError
from tests.conftest import free_port

pytestmark = pytest.mark.unit


def test_a_server_that_is_down_is_named_with_where_it_was_configured_and_the_fix():
    url = f"http://127.0.0.1:{free_port()}/api"
    with pytest.raises(ServerUnreachableError) as caught:
        Client(api_url=url)
    message = str(caught.value)
    assert message.startswith(f"Cannot reach the Prefect API at {url} (from argument): ")
    assert "Start the server (`prefect server start`) or fix PREFECT_API_URL" in message
    assert "unset it to run workflows in-process instead." in message


@pytest.mark.local  # real data or a subprocess: not unit-fast
def test_the_same_error_comes_from_the_environment_and_the_cli(tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{free_port()}/api"
    monkeypatch.setenv("PREFECT_API_URL", url)
    with pytest.raises(ServerUnreachableError, match="from environment PREFECT_API_URL"):
        Client()
    (tmp_path / ".env").write_text(f"PREFECT_API_URL={url}\n")
    monkeypatch.delenv("PREFECT_API_URL")
    with pytest.raises(ServerUnreachableError, match=r"from \.env file PREFECT_API_URL"):
        Client()
    result = subprocess.run(
        [sys.executable, "-m", "pipelines", "submit", "delay_model", "--wait"],
        cwd=tmp_path,
        env={**os.environ, "PREFECT_API_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert f"error: Cannot reach the Prefect API at {url}" in result.stderr
    assert result.stdout == ""
