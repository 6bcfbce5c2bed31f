"""A run killed while it holds a slot no longer blocks its dataset: waiting runs free a dead holder's slots.

The holders are child processes on the same Prefect database as the test (the in-process API of the
session's harness, opened by each process on the same SQLite file).
"""

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipelines.components import limits
from pipelines.components.environment import get_settings

pytestmark = pytest.mark.usefixtures("prefect_harness")

_HOLDER = """
import sys
from pipelines.components import limits
with limits.slot(sys.argv[1], "orders"):
    print("held", flush=True)
    sys.stdin.readline()  # holds until the test writes a line (or kills it)
print("released", flush=True)
"""


def _slots(*names: str) -> dict[str, int]:
    """Slots in use per limit, read back from Prefect's API."""
    from prefect import get_client

    async def read():
        async with get_client() as client:
            return {n: (await client.read_global_concurrency_limit_by_name(n)).active_slots for n in names}

    return asyncio.run(read())


def _records(namespace: str) -> list[str]:
    """Names of the holder records of a namespace's limits."""
    from prefect import get_client

    async def read():
        async with get_client() as client:
            found = await limits._holders(client, {limits.namespace_limit(namespace)})
            return [name for name, _, _ in found]

    return asyncio.run(read())


def _start_holder(namespace: str) -> subprocess.Popen:
    """A child process holding a slot of ``namespace``'s orders limit (and its namespace limit)."""
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]),
        "PREFECT_API_DATABASE_CONNECTION_URL": str(PREFECT_API_DATABASE_CONNECTION_URL.value()),
    }
    env.pop("PREFECT_API_URL", None)
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, namespace],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = []
    reader = threading.Thread(target=lambda: line.append(child.stdout.readline()), daemon=True)
    reader.start()
    reader.join(60)
    if line != ["held\n"]:
        child.kill()
        child.wait()
        pytest.fail(
            f"the holder process did not take its slot within 60 s (got {line!r}, exit {child.poll()})"
        )
    return child


def _kill(child: subprocess.Popen) -> None:
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(30) == -signal.SIGKILL


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setattr(limits, "WAIT_NOTICE_SECONDS", 0.3)
    monkeypatch.setattr(limits, "RECHECK_SECONDS", 0.3)


def test_a_holder_killed_with_its_slot_is_freed_by_the_next_run(quick, caplog):
    namespace = "recovery-a"
    names = (limits.namespace_limit(namespace), limits.dataset_limit(namespace, "orders"))
    child = _start_holder(namespace)
    try:
        assert _slots(*names) == {names[0]: 1, names[1]: 1}
        assert len(_records(namespace)) == 1
        _kill(child)
        assert _slots(*names) == {names[0]: 1, names[1]: 1}  # the dead process's slots are still taken
        started, waited = time.monotonic(), []

        def waiter():
            with limits.slot(namespace, "orders"):
                waited.append(time.monotonic() - started)
                waited.append(_slots(*names))

        thread = threading.Thread(
            target=waiter, daemon=True
        )  # a daemon: a wait that never ends fails the test
        with caplog.at_level(logging.INFO, logger=limits.__name__):
            thread.start()
            thread.join(30)
        assert not thread.is_alive(), "the dead holder's slot was not freed within 30 s"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert waited[0] < 10, f"the dead holder's slot took {waited[0]:.1f} s to be freed"
    assert waited[1] == {names[0]: 1, names[1]: 1}  # its own slots, not the dead one's too
    freed = [r for r in caplog.records if r.getMessage().startswith("Freed the slots")]
    assert len(freed) == 1 and freed[0].levelno == logging.WARNING
    message = freed[0].getMessage()
    assert f"process {child.pid} is gone" in message and f" pid {child.pid} (no flow run) since " in message
    assert f"{names[0]}, {names[1]}" in message or f"{names[1]}, {names[0]}" in message
    assert _slots(*names) == {names[0]: 0, names[1]: 0}
    assert _records(namespace) == []


def test_a_live_holder_in_another_process_is_waited_for_not_freed(quick, caplog):
    namespace = "recovery-b"
    names = (limits.namespace_limit(namespace), limits.dataset_limit(namespace, "orders"))
    child = _start_holder(namespace)
    got = threading.Event()

    def waiter():
        with limits.slot(namespace, "orders", settings=get_settings()):
            got.set()

    thread = threading.Thread(target=waiter)
    try:
        with caplog.at_level(logging.INFO, logger=limits.__name__):
            thread.start()
            assert not got.wait(4)  # about a dozen checks of its holders, and it is still waiting
            assert child.poll() is None
            child.stdin.write("\n")
            child.stdin.flush()
            assert child.stdout.readline() == "released\n"
            assert got.wait(30)
        thread.join(30)
        assert child.wait(30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        thread.join(30)
    text = caplog.text
    assert "Freed the slots" not in text
    assert f" pid {child.pid} (no flow run) since " in text and "--active-slots 0" in text
    assert _slots(*names) == {names[0]: 0, names[1]: 0}
    assert _records(namespace) == []


def test_two_waiters_free_one_dead_holder_once(quick, caplog):
    namespace = "recovery-c"
    names = (limits.namespace_limit(namespace), limits.dataset_limit(namespace, "orders"))
    child = _start_holder(namespace)
    inside, most, lock, seen = [0], [0], threading.Lock(), []
    errors: list[BaseException] = []
    settings = get_settings()

    def waiter():
        try:
            with limits.slot(namespace, "orders", settings=settings):
                with lock:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                seen.append(_slots(*names))
                time.sleep(0.5)
                with lock:
                    inside[0] -= 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    try:
        _kill(child)
        with caplog.at_level(logging.INFO, logger=limits.__name__):
            threads = [threading.Thread(target=waiter) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert not errors and len(seen) == 2
    assert most[0] == 1  # the dataset's bound of 1 held: the dead holder's slot was released once only
    # while a waiter held the dataset's slot, exactly that one slot was in use (the dead one's was freed once)
    assert all(slots == {names[0]: 1, names[1]: 1} for slots in seen)
    freed = [r for r in caplog.records if r.getMessage().startswith("Freed the slots")]
    assert len(freed) == 1 and f"process {child.pid} is gone" in freed[0].getMessage()
    assert _slots(*names) == {names[0]: 0, names[1]: 0}
    assert _records(namespace) == []


def test_of_two_runs_freeing_one_record_only_the_one_that_deleted_it_releases():
    """The race itself, against the API: two frees of one dead holding release its slots once."""
    from prefect import get_client
    from prefect.client.schemas.actions import VariableCreate

    namespace = "recovery-d"
    wanted = limits.bounds(namespace, "orders", get_settings())
    names = list(wanted)
    limits.ensure(wanted)
    # two holdings: the dead one (recorded below) and a live one that must keep its slot of the namespace
    record = {"host": "elsewhere", "pid": 1, "acquired": "2026-01-01T00:00:00+00:00"}

    async def race():
        async with get_client() as client:
            await client.increment_concurrency_slots(names=names, slots=1, mode="concurrency")
            await client.increment_concurrency_slots(names=names[:1], slots=1, mode="concurrency")
            await client.create_variable(
                VariableCreate(
                    name="pipelines_slot_race",
                    value=limits.json.dumps(record),
                    tags=[limits.HOLDER_TAG, *names],
                )
            )
            async with get_client() as other:
                return await asyncio.gather(
                    limits._free(client, "pipelines_slot_race", names, record),
                    limits._free(other, "pipelines_slot_race", names, record),
                )

    assert sorted(asyncio.run(race())) == [False, True]
    assert _slots(*names) == {names[0]: 1, names[1]: 0}  # the live holding's namespace slot was not taken
    assert _records(namespace) == []


def test_a_holder_elsewhere_is_freed_once_its_flow_run_has_crashed_and_left_alone_while_it_runs(
    quick, caplog
):
    """Holders on another machine: the pid says nothing here, their flow run's state decides."""
    from prefect import flow, get_client
    from prefect.client.schemas.actions import VariableCreate
    from prefect.states import Crashed, Running

    @flow
    def elsewhere():
        pass

    namespace = "recovery-e"
    wanted = limits.bounds(namespace, "orders", get_settings())
    names = list(wanted)
    limits.ensure(wanted)

    async def hold(state) -> str:
        """Take the slots and record a holder on another machine, in a flow run in ``state``."""
        async with get_client() as client:
            run = await client.create_flow_run(elsewhere, state=state)
            await client.increment_concurrency_slots(names=names, slots=1, mode="concurrency")
            record = {"host": "another-machine", "pid": os.getpid(), "flow_run": str(run.id), "acquired": "x"}
            await client.create_variable(
                VariableCreate(
                    name=f"pipelines_slot_{run.id.hex}",
                    value=limits.json.dumps(record),
                    tags=[limits.HOLDER_TAG, *names],
                )
            )
            return str(run.id)

    crashed = asyncio.run(hold(Crashed()))
    with caplog.at_level(logging.INFO, logger=limits.__name__), limits.slot(namespace, "orders"):
        pass
    freed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Freed the slots")]
    assert len(freed) == 1 and "its flow run is CRASHED" in freed[0]
    assert f"host another-machine pid {os.getpid()} (flow run {crashed}) since x" in freed[0]
    assert _slots(*names) == {names[0]: 0, names[1]: 0}

    caplog.clear()
    running = asyncio.run(hold(Running()))
    got = threading.Event()

    def waiter():
        with limits.slot(namespace, "orders"):
            got.set()

    thread = threading.Thread(target=waiter, daemon=True)
    with caplog.at_level(logging.INFO, logger=limits.__name__):
        thread.start()
        assert not got.wait(3)  # its flow run is running: it may well be alive over there
    assert "Freed the slots" not in caplog.text
    assert f"held by: host another-machine pid {os.getpid()} (flow run {running}) since x" in caplog.text
    assert "prefect variable delete pipelines_slot_" not in caplog.text  # the command names <record>
    assert f"[record pipelines_slot_{running.replace('-', '')}]" in caplog.text

    async def crash():
        async with get_client() as client:
            await client.set_flow_run_state(running, Crashed(), force=True)

    asyncio.run(crash())  # once the run is marked crashed, the waiting run frees its slots at its next check
    assert got.wait(30)
    thread.join(30)
    assert _slots(*names) == {names[0]: 0, names[1]: 0}
    assert _records(namespace) == []
