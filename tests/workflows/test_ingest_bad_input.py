"""Ingest on malformed files: the run's counts cover every line the file holds, not what a parser returned."""

import pytest

from pipelines.workflows.ingest import ingest
from tests.workflows.test_ingest import HEADER, _conserved, env  # noqa: F401 (env is a fixture)

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _line(n: int) -> str:
    return f"{n},10,2024-01-01 10:00:00,2024-01-01 10:00:00,new\n"


def test_a_stray_quote_does_not_drop_the_rest_of_the_file(env):  # noqa: F811
    lines = [HEADER, *(_line(n) for n in range(1, 900))]
    lines[11] = '11,10,2024-01-01 10:00:00,2024-01-01 10:00:00,"never closed\n'  # line 12 of 900
    env.land("quote.csv", "".join(lines))
    env.land("wide.csv", (HEADER + _line(2000)).encode("utf-16-le"))  # UTF-16LE without a BOM
    env.land("nul.csv", HEADER + _line(3000) + _line(3001).replace("new", "n\x00w"))
    result = ingest("orders")
    _conserved(result)
    assert (result.rows_in, result.written, result.quarantined) == (901, 899, 2)
    assert len(result.rejected_files) == 1
    bad = env.quarantine().sort("source_line")
    by_rule = {r: bad.filter(bad["rule"] == r) for r in ("malformed_line", "nul_character", "encoding")}
    assert by_rule["malformed_line"].select("source_line", "record").rows() == [(12, lines[11].rstrip("\n"))]
    assert by_rule["nul_character"].get_column("source_line").to_list() == [3]
    assert (
        by_rule["encoding"]
        .get_column("reason")[0]
        .endswith(
            "looks like UTF-16LE without a byte-order mark (NUL bytes between its characters), not utf8; "
            "set source.encoding: utf-16-le in the contract (or have the provider send UTF-8) and reprocess with "
            "full_refresh."
        )
    )
    assert env.cleaned().height == 899 and 11 not in env.cleaned().get_column("order_id").to_list()
