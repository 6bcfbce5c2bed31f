"""Importing pipelines: what it sets up for the process."""

import os
import subprocess
import sys

PROBE = "import pipelines, polars as pl, os; pl.DataFrame({'a': range(1000)}).sum(); print(os.environ['_RJEM_MALLOC_CONF'])"


def _probe(**extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"} | extra
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)


def test_polars_returns_freed_pages_at_once_after_its_own_defaults():
    done = _probe()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(",muzzy_decay_ms:0")  # after polars' defaults, so it is the one used
    assert "<jemalloc>" not in done.stderr  # jemalloc accepted every option


def test_polars_defaults_inherited_from_a_parent_are_not_a_choice():
    # a parent process that imported polars passes polars' own defaults down in the environment
    done = _probe(_RJEM_MALLOC_CONF="dirty_decay_ms:500,muzzy_decay_ms:1000")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(",muzzy_decay_ms:0")


def test_a_value_already_in_the_environment_wins():
    done = _probe(_RJEM_MALLOC_CONF="dirty_decay_ms:10000")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(",dirty_decay_ms:10000")
    assert "muzzy_decay_ms:0" not in done.stdout
