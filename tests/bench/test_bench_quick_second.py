"""The second half of the --quick smoke run of every benchmark (see tests/bench/_quick.py)."""

import pytest

from tests.bench import _quick


@pytest.mark.integration
def test_quick_run_of_the_second_benchmarks_writes_json_and_markdown(tmp_path, postgres_url):
    # postgres_url: the share and peer benchmarks need PostgreSQL on 127.0.0.1:5432 (skipped locally
    # without it, a failure under CI=true); each benchmark creates and drops databases of its own.
    _quick.run_and_check(_quick.GROUPS[1], tmp_path)
