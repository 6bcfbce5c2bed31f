"""The first half of the --quick smoke run of every benchmark (see tests/bench/_quick.py)."""

import pytest

from tests.bench import _quick


@pytest.mark.integration
def test_quick_run_of_the_first_benchmarks_writes_json_and_markdown(tmp_path):
    _quick.run_and_check(_quick.GROUPS[0], tmp_path)
