"""Bounds through Prefect's global concurrency limits: settings, limits made active, slots held and waited for."""

import asyncio
import logging
import os
import threading

import pytest

from pipelines.components import limits
from pipelines.components.environment import Settings, get_settings
from pipelines.components.errors import ConfigError


def _limits() -> dict[str, tuple[int, bool, int]]:
    """name -> (limit, active, slots in use), read back from Prefect's API."""
    from prefect import get_client

    async def read():
        async with get_client() as client:
            found = await client.read_global_concurrency_limits(limit=200)
            return {c.name: (c.limit, c.active, c.active_slots) for c in found}

    return asyncio.run(read())


@pytest.mark.unit
@pytest.mark.parametrize("value", ["0", "two", "-3"])
def test_a_bound_that_is_not_a_whole_number_of_at_least_one_is_refused_with_the_fix(value):
    with pytest.raises(ConfigError) as raised:
        Settings.resolve(environ={"PIPELINES_MAX_DATASET_RUNS": value, "PIPELINES_NAMESPACE": "test"})
    assert str(raised.value) == (
        f"Invalid PIPELINES_MAX_DATASET_RUNS={value!r} (from environment PIPELINES_MAX_DATASET_RUNS): expected a "
        "whole number of at least 1 (the slots of its Prefect concurrency limit; default 1). Fix the value or "
        "unset it for the default."
    )


@pytest.mark.unit
def test_bounds_default_and_are_described_with_where_they_came_from():
    settings = Settings.resolve(environ={"PIPELINES_NAMESPACE": "test", "PIPELINES_BACKFILL_WINDOWS": "5"})
    assert (settings.max_runs, settings.max_dataset_runs, settings.backfill_windows) == (8, 1, 5)
    shown = {row.name: row for row in settings.describe()}
    assert shown["backfill_windows"].value == "5"
    assert shown["backfill_windows"].origin == "environment PIPELINES_BACKFILL_WINDOWS"
    assert "pipelines:<namespace>:<dataset>" in shown["max_dataset_runs"].description
    assert limits.bounds("research-x", "orders", settings) == {
        "pipelines:research-x": 8,
        "pipelines:research-x:orders": 1,
    }
    assert limits.bounds("research-x", None, settings, window=True) == {
        "pipelines:research-x:backfill": 5,
        "pipelines:research-x": 8,
    }
    # a backfill window already holds a namespace slot: its commit takes only the dataset's, so windows
    # that each hold one can never wait on each other for a second
    assert limits.bounds("research-x", "orders", settings, in_namespace_slot=True) == {
        "pipelines:research-x:orders": 1
    }


@pytest.mark.usefixtures("prefect_harness")
def test_a_slot_makes_its_limits_active_with_the_configured_bounds_and_holds_one_slot(monkeypatch):
    monkeypatch.setenv("PIPELINES_MAX_RUNS", "3")
    limits.ENSURED.clear()
    # Prefect 2 creates a limit it is asked a slot of as *inactive* (it bounds nothing): such a limit is made active
    from prefect.concurrency.sync import concurrency

    with concurrency("pipelines:limits-a:orders"):
        pass
    assert _limits()["pipelines:limits-a:orders"][:2] == (1, False)

    with limits.slot("limits-a", "orders"):
        inside = _limits()
    after = _limits()
    assert inside["pipelines:limits-a"] == (3, True, 1)
    assert inside["pipelines:limits-a:orders"] == (1, True, 1)
    assert after["pipelines:limits-a"][2] == after["pipelines:limits-a:orders"][2] == 0
    # per namespace: another namespace's slots are other limits
    with limits.slot("limits-b", "orders"):
        assert _limits()["pipelines:limits-a"][2] == 0


@pytest.mark.usefixtures("prefect_harness")
def test_a_run_that_waits_for_a_slot_says_what_it_waits_for(caplog, monkeypatch):
    monkeypatch.setattr(limits, "WAIT_NOTICE_SECONDS", 0.3)
    settings = get_settings()
    held, release, order = threading.Event(), threading.Event(), []

    class ReleaseOnNotice(logging.Handler):  # the holder lets go once the waiting run has said so
        def emit(self, record):
            if record.getMessage().startswith("Waiting for a slot"):
                release.set()

    def holder():
        with limits.slot("limits-c", "orders", settings=settings):
            order.append("first in")
            held.set()
            release.wait(120)
            order.append("first out")

    notice, logger = ReleaseOnNotice(), logging.getLogger(limits.__name__)
    logger.addHandler(notice)
    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(60)
        with (
            caplog.at_level(logging.INFO, logger=limits.__name__),
            limits.slot("limits-c", "orders", settings=settings),
        ):
            order.append("second in")
    finally:
        logger.removeHandler(notice)
        release.set()
        thread.join(60)
    assert order == ["first in", "first out", "second in"]  # the dataset's bound of 1 serialised them
    text = caplog.text
    assert (
        "Waiting for a slot of pipelines:limits-c (8 slot(s)), pipelines:limits-c:orders (1 slot(s))" in text
    )
    assert "(slots in use: pipelines:limits-c 1/8, pipelines:limits-c:orders 1/1; held by: host " in text
    # the holder is alive in this process: named with its pid, never freed, and the manual fix is given
    assert f" pid {os.getpid()} (no flow run) since " in text
    assert "Freed the slots" not in text
    assert "--active-slots 0" in text and "prefect variable delete" in text
    assert "prefect global-concurrency-limit ls" in text and "PIPELINES_MAX_DATASET_RUNS" in text
    assert "Got a slot of" in text


@pytest.mark.usefixtures("prefect_harness")
def test_the_overhead_of_a_slot_is_four_api_calls(monkeypatch):
    """Ensuring the limits is cached per process: a second slot makes no read, only acquire, record and release."""
    from prefect.client.orchestration import PrefectClient

    monkeypatch.setattr(limits, "WAIT_NOTICE_SECONDS", 600)  # no "waiting" notice (it reads the limits)
    calls = []
    for name in (
        "read_global_concurrency_limit_by_name",
        "increment_concurrency_slots",
        "create_variable",
        "delete_variable_by_name",
        "release_concurrency_slots",
    ):
        original = getattr(PrefectClient, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(PrefectClient, name, spy)
    settings = get_settings()
    with limits.slot("limits-d", "orders", settings=settings):
        pass
    first = list(calls)
    calls.clear()
    with limits.slot("limits-d", "orders", settings=settings):
        pass
    assert first.count("read_global_concurrency_limit_by_name") == 2
    # acquire, record who holds the slots, delete that record, release
    assert calls == [
        "increment_concurrency_slots",
        "create_variable",
        "delete_variable_by_name",
        "release_concurrency_slots",
    ]


@pytest.mark.usefixtures("prefect_harness")
def test_a_research_namespace_with_every_slot_taken_does_not_hold_serving_back(monkeypatch):
    monkeypatch.setenv("PIPELINES_MAX_RUNS", "1")
    settings = get_settings()
    served = threading.Event()

    def serving_run():
        with limits.slot("serving", "flights", settings=settings):
            served.set()

    with limits.slot("research-burst", "flights", settings=settings):  # research's only slot, taken
        thread = threading.Thread(target=serving_run)
        thread.start()
        assert served.wait(120)  # serving got its own slot while research's stays taken
        assert _limits()["pipelines:research-burst"][2] == 1
    thread.join(60)


def test_limits_live_on_a_real_server_and_prefect_s_cli_lists_them(prefect_server):
    import subprocess

    from tests.conftest import _prefect_executable

    settings = get_settings()
    with prefect_server.settings():
        with limits.slot("limits-server", "orders", settings=settings):
            inside = _limits()
        after = _limits()
    assert inside["pipelines:limits-server:orders"] == (1, True, 1)
    assert after["pipelines:limits-server:orders"] == (1, True, 0)
    listed = subprocess.run(
        [_prefect_executable(), "global-concurrency-limit", "ls"],
        env={**prefect_server.env, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    assert "pipelines:limits-server:orders" in listed.stdout and "pipelines:limits-server" in listed.stdout


@pytest.mark.usefixtures("prefect_harness")
def test_forget_s_slot_holds_every_dataset_it_rewrites_so_their_commits_wait():
    limits.ENSURED.clear()
    with limits.datasets_slot("limits-f", ["posts", "likes"]):
        inside = _limits()
        committed = threading.Event()

        def commit():
            with limits.slot("limits-f", "likes"):
                committed.set()

        other = threading.Thread(target=commit)
        other.start()
        assert not committed.wait(3)  # the ingest of likes cannot commit while forget holds likes
    other.join(30)
    assert committed.is_set()
    assert inside["pipelines:limits-f:posts"] == (1, True, 1)
    assert inside["pipelines:limits-f:likes"] == (1, True, 1)
    assert inside["pipelines:limits-f"][2] == 1
    assert all(
        slots == 0 for name, (_, _, slots) in _limits().items() if name.startswith("pipelines:limits-f")
    )
