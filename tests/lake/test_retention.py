"""Raw file rewrites of PII expiry, per format (pipelines.lake.retention.rewrite)."""

import gzip
import io
import json

import polars as pl
import pytest

from pipelines.components.registry import Contract, DatasetSpec
from pipelines.lake.retention import Rule, pseudonym, rewrite

pytestmark = pytest.mark.unit

KEY = b"0123456789abcdef0123456789abcdef"


def _spec(fmt, action="pseudonymise", **source):
    return DatasetSpec(
        name="d",
        stage="cleaned",
        format=fmt,
        pii_columns=("email",),
        retention_days=1,
        retention_action=action,
        contract=Contract(columns={}, source=source),
    )


def _rule(spec):
    return Rule.of(spec, KEY)


def test_a_pseudonym_is_a_keyed_hash_and_is_kept_as_it_is():
    first = pseudonym(KEY, "ada@example.org")
    assert first.startswith("pn:") and len(first) == 67
    assert (
        pseudonym(KEY, "ada@example.org")
        == first
        != pseudonym(b"another key of 32 characters!!!", "ada@example.org")
    )
    assert pseudonym(KEY, first) == first


def test_csv_keeps_encoding_line_ends_delimiter_and_other_columns():
    spec = _spec("csv", encoding="latin-1", delimiter=";")
    text = 'id;email;city\r\n1;"ada@example.org";Zürich\r\n\r\n2;;"Bad; Ems"\r\n3;x@y.org\r\n'
    out = rewrite(gzip.compress(text.encode("latin-1")), "f.csv.gz", spec, _rule(spec))
    lines = gzip.decompress(out).decode("latin-1").split("\r\n")
    assert lines[0] == "id;email;city"
    assert lines[1] == f"1;{pseudonym(KEY, 'ada@example.org')};Zürich"
    assert lines[2:5] == [
        "",
        '2;;"Bad; Ems"',
        f"3;{pseudonym(KEY, 'x@y.org')}",
    ]


def test_ndjson_json_and_parquet_are_rewritten_in_place():
    spec = _spec("ndjson")
    ndjson = b'{"id": 1, "email": "ada@example.org"}\nnot json ada@example.org\n\n{"id": 2, "email": null}\n'
    lines = rewrite(ndjson, "f.ndjson", spec, _rule(spec)).decode().split("\n")
    assert json.loads(lines[0]) == {"id": 1, "email": pseudonym(KEY, "ada@example.org")}
    assert lines[1:4] == ["", "", '{"id": 2, "email": null}']  # an unparseable line cannot keep PII

    spec = _spec("json", action="null", records_path="data.items")
    doc = {"data": {"items": [{"id": 1, "email": "ada@example.org"}], "next": None}}
    assert json.loads(rewrite(json.dumps(doc).encode(), "f.json", spec, _rule(spec))) == {
        "data": {"items": [{"id": 1, "email": None}], "next": None}
    }

    spec = _spec("parquet")
    buffer = io.BytesIO()
    pl.DataFrame({"id": [1, 2], "email": ["ada@example.org", None]}).write_parquet(buffer)
    frame = pl.read_parquet(io.BytesIO(rewrite(buffer.getvalue(), "f.parquet", spec, _rule(spec))))
    assert frame.get_column("email").to_list() == [pseudonym(KEY, "ada@example.org"), None]
    assert frame.get_column("id").to_list() == [1, 2]
    spec = _spec("sql", action="null")  # SQL extracts land as Parquet
    frame = pl.read_parquet(io.BytesIO(rewrite(buffer.getvalue(), "part-00000.parquet", spec, _rule(spec))))
    assert frame.get_column("email").to_list() == [None, None] and frame.get_column("id").to_list() == [1, 2]
