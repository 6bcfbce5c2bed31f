"""The in-process API is started once, kept up for later clients, and its bound is a checked setting."""

import pytest

from pipelines.components import localapi


def _held_on_loop_thread() -> dict:
    from prefect._internal.concurrency.threads import get_global_loop
    from prefect.client.base import APP_LIFESPANS

    loop_thread = get_global_loop().thread.ident
    return {key: manager for key, manager in APP_LIFESPANS.items() if key[0] == loop_thread}


def test_the_api_starts_once_and_later_clients_join_it_instead_of_starting_it_again(prefect_harness):
    from prefect import flow

    from pipelines.client import Client

    localapi.ensure_local_api()
    held = _held_on_loop_thread()
    assert len(held) == 1
    client = Client(namespace="research-localapi")
    for _ in range(3):  # each call opens and closes a Prefect client on the loop thread
        client.runs(outputs=False)
    assert _held_on_loop_thread() == held  # the same lifespan, never stopped and started again

    # A top-level flow run ends by replacing Prefect's loop thread (closing what was open on it, even
    # when the new thread gets the old one's ident); the client's next call holds the API again.
    flow(name="localapi-probe")(lambda: 1)()
    client.runs(outputs=False)
    again = _held_on_loop_thread()
    assert len(again) == 1
    client.runs(outputs=False)
    assert _held_on_loop_thread() == again


@pytest.mark.unit
@pytest.mark.parametrize("value", ["soon", "0", "-5"])
def test_a_bad_start_timeout_names_the_setting_and_the_fix(monkeypatch, value):
    monkeypatch.setenv("PIPELINES_LOCAL_API_TIMEOUT", value)
    with pytest.raises(localapi.LocalApiError) as caught:
        localapi.start_timeout()
    assert str(caught.value) == (
        f"PIPELINES_LOCAL_API_TIMEOUT={value!r} is not a number of seconds; set it to a positive number such "
        "as 300, or unset it for the default (300 s)."
    )


@pytest.mark.unit
def test_the_start_timeout_defaults_to_300_seconds(monkeypatch):
    monkeypatch.delenv("PIPELINES_LOCAL_API_TIMEOUT", raising=False)
    assert localapi.start_timeout() == 300.0
    monkeypatch.setenv("PIPELINES_LOCAL_API_TIMEOUT", "42.5")
    assert localapi.start_timeout() == 42.5
