"""An aggregate whose transform returns unsigned integers (pl.len() is UInt32) builds again and again.

The output is cast to the contract's (signed) types before every write, so the table's schema is the
same from the first build on."""

import datetime as dt

import polars as pl
import pytest

from pipelines.workflows.aggregate import aggregate
from tests.workflows import test_aggregate as agg
from tests.workflows.test_aggregate import HEADER, _sale, env  # noqa: F401 (env is a fixture)

pytestmark = pytest.mark.usefixtures("prefect_harness")


def counts(inputs):
    return inputs["sales"].group_by(pl.col("sold_at").dt.date().alias("day")).agg(pl.len().alias("n"))


def test_unsigned_transform_output_is_stored_as_a_stable_signed_type(env, monkeypatch):  # noqa: F811
    rows = [*agg._rows(), agg._row("counts", stage="aggregated", primary_key="day", partition_field="day",
                                   inputs="sales", transform="tests.workflows.test_aggregate_unsigned:counts")]  # fmt: skip
    monkeypatch.setattr(agg, "_rows", lambda **_: rows)
    env.registry()
    (env.folder / "contracts" / "counts.yaml").write_text(
        "columns:\n  day: {type: date, nullable: false}\n  n: {type: int32}\n"
    )
    env.ingest("sales")
    first = aggregate("counts")
    assert env.table("counts").schema["n"] == pl.Int32
    env.land("sales/d5.csv", HEADER + _sale(8, "s1", 3, 4) + _sale(9, "s2", 4, 5))
    env.ingest("sales")
    second = aggregate("counts")
    assert (first.status, second.status, second.mode) == ("built", "built", "incremental")
    assert dict(env.rows("counts").select("day", "n").iter_rows())[dt.date(2024, 1, 4)] == 3
