"""The lineage columns are text to every Delta reader and name the right file and run after a merge."""

import json

import polars as pl
import pytest
from deltalake import DeltaTable

from pipelines.workflows.ingest import ingest
from tests.workflows.test_ingest import HEADER, env  # noqa: F401 (env is a fixture)

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_lineage_columns_read_back_as_strings_after_overwrite_and_merge(env):  # noqa: F811
    env.land("d1.csv", HEADER + "1,10,2024-01-01 10:00:00,2024-01-01 10:00:00,new\n")
    first = ingest("orders")
    env.land("d2.csv", HEADER + "2,20,2024-01-02 10:00:00,2024-01-02 10:00:00,new\n")
    second = ingest("orders")  # a merge into the existing table

    uri = str(env.root / "data" / "test" / "cleaned" / "orders")
    schema_json = DeltaTable(uri).schema().to_json()
    for frame in (env.cleaned(), pl.read_delta(uri), pl.from_arrow(DeltaTable(uri).to_pyarrow_table())):
        assert frame.schema["_source_file"] == pl.String
        assert frame.schema["_run_id"] == pl.String
    delta_types = {f["name"]: f["type"] for f in json.loads(schema_json)["fields"]}
    assert delta_types["_source_file"] == delta_types["_run_id"] == "string"
    rows = {r["order_id"]: r for r in env.cleaned().iter_rows(named=True)}
    assert rows[1]["_run_id"] == first.run_id and rows[2]["_run_id"] == second.run_id
    assert rows[1]["_source_file"] == first.processed_files[0]
    assert rows[2]["_source_file"] == second.processed_files[0]
