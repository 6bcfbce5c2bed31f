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


def test_expire_raw_streams_old_files_skips_young_and_partial_and_empties_unreadable(tmp_path, monkeypatch):
    from datetime import date

    from pipelines.components.resources import Storage
    from pipelines.lake import retention
    from pipelines.lake.retention import expire_raw

    monkeypatch.setattr(retention, "_BLOCK", 64)  # many blocks per file
    storage = Storage(str(tmp_path))
    rows = "".join(f"{i},person{i}@example.org,City {i}\n" for i in range(200))
    files = {
        "raw/d/ingest_date=2026-01-01/r-000000-aaa.csv": ("id,email,city\n" + rows).encode(),
        "raw/d/ingest_date=2026-01-01/r-000001-bbb.csv.gz": b"not gzip at all, person1@example.org",
        "raw/d/ingest_date=2026-01-01/r-000002-ccc.csv": b"id,email,city\n1,cut@example.org,X\n",
        "raw/d/ingest_date=2026-01-05/r-000000-ddd.csv": b"id,email,city\n1,young@example.org,Y\n",
    }
    for rel, data in files.items():
        storage.write_atomic(rel, data)
    spec = _spec("csv")
    partial = ["raw/d/ingest_date=2026-01-01/r-000002-ccc.csv"]

    dry = expire_raw(storage, spec, _rule(spec), before=date(2026, 1, 5), partial=partial, dry_run=True)
    assert len(dry.expired) == 2 and {rel: storage.read_bytes(rel) for rel in files} == files

    done = expire_raw(storage, spec, _rule(spec), before=date(2026, 1, 5), partial=partial, dry_run=False)

    assert done.kept_partial == partial and done.unreadable == [
        "raw/d/ingest_date=2026-01-01/r-000001-bbb.csv.gz"
    ]
    rewritten = storage.read_bytes("raw/d/ingest_date=2026-01-01/r-000000-aaa.csv").decode()
    assert "@example.org" not in rewritten and rewritten.count("\n") == 201 and "199,pn:" in rewritten
    assert rewritten.splitlines()[5] == f"4,{pseudonym(KEY, 'person4@example.org')},City 4"
    assert storage.read_bytes("raw/d/ingest_date=2026-01-01/r-000001-bbb.csv.gz") == b""
    assert storage.read_bytes(partial[0]) == files[partial[0]]
    assert (
        storage.read_bytes("raw/d/ingest_date=2026-01-05/r-000000-ddd.csv")
        == files["raw/d/ingest_date=2026-01-05/r-000000-ddd.csv"]
    )
    assert done.bytes_after == len(rewritten.encode())
    again = expire_raw(storage, spec, _rule(spec), before=date(2026, 1, 5), partial=[], dry_run=False)
    assert again.already == 2 and again.expired == [partial[0]]  # the partial file, once ingest finished it
