"""Matching a subject by keyed hash, and rewriting raw files without their records (pure functions)."""

import gzip
import json

import pytest

from pipelines.components.erasure import (
    Subject,
    load_salt,
    match_raw,
    subject_hash,
    tokens,
    without_records,
)
from pipelines.components.errors import ConfigError
from pipelines.components.registry import ColumnSpec, Contract, DatasetSpec
from pipelines.components.resources import Storage

pytestmark = pytest.mark.unit

SALT = "unit-salt"


def _spec(fmt: str, key: str = "email", source: dict | None = None) -> DatasetSpec:
    columns = {"id": ColumnSpec("id", "int64"), key: ColumnSpec(key, "string")}
    contract = Contract(columns=columns, source=source or {})
    return DatasetSpec(name="d", stage="cleaned", format=fmt, subject_key=key, contract=contract)


def _subject(value: str) -> Subject:
    return Subject(subject_hash(SALT, value), SALT)


def test_the_hash_is_keyed_and_ignores_surrounding_space():
    assert subject_hash(SALT, " ada@x.org ") == subject_hash(SALT, "ada@x.org")
    assert subject_hash(SALT, "ada@x.org") != subject_hash("other", "ada@x.org")
    assert _subject("ada@x.org").matching(["bob@x.org", "ada@x.org ", None]) == {"ada@x.org"}


def test_a_flow_given_an_identifier_instead_of_a_hash_is_refused():
    with pytest.raises(ConfigError, match="is not a subject hash"):
        Subject("ada@x.org", SALT)


def test_tokens_find_fields_of_json_csv_and_broken_records():
    assert "ada@x.org" in tokens('{"id": "1", "email": "ada@x.org"}')
    assert "ada@x.org" in tokens('1,"ada@x.org",Ada')
    assert "ada@x.org" in tokens('{"id": 4, "email": "ada@x.org", broken')
    assert "ada@x.org" not in tokens("1,ada@x.org.evil,Ada")


def test_a_csv_file_loses_the_subjects_records_and_keeps_every_other_byte():
    data = (
        b'id,email\r\n1,bob@x.org\r\n2,"ada@x.org"\r\n3,"carol\r\n@x.org"\r\n4,ada@x.org\r\n5,dan@x.org\r\n'
    )
    found = match_raw(data, "raw/d/f.csv", _spec("csv"), _subject("ada@x.org"))
    assert found.lines == [3, 6] and found.records == 5
    out = without_records(data, "raw/d/f.csv", _spec("csv"), found.lines)
    assert out == b'id,email\r\n1,bob@x.org\r\n3,"carol\r\n@x.org"\r\n5,dan@x.org\r\n'


def test_a_gzipped_ndjson_file_and_a_json_list_are_rewritten_without_the_subject():
    lines = [{"id": 1, "email": "ada@x.org"}, {"id": 2, "email": "bob@x.org"}]
    data = gzip.compress(
        "".join(json.dumps(r) + "\n" for r in lines).encode() + b'{"email": "ada@x.org", oops\n'
    )
    spec = _spec("ndjson")
    found = match_raw(data, "raw/d/f.ndjson.gz", spec, _subject("ada@x.org"))
    assert found.lines == [1, 3]
    out = gzip.decompress(without_records(data, "raw/d/f.ndjson.gz", spec, found.lines))
    assert out == (json.dumps(lines[1]) + "\n").encode()

    listed = json.dumps({"data": {"items": lines}}).encode()
    spec = _spec("json", source={"records_path": "data.items"})
    found = match_raw(listed, "raw/d/f.json", spec, _subject("ada@x.org"))
    assert json.loads(without_records(listed, "raw/d/f.json", spec, found.lines)) == {
        "data": {"items": lines[1:]}
    }


def test_the_salt_is_required_outside_the_local_namespace(tmp_path, monkeypatch):
    monkeypatch.delenv("PIPELINES_ERASURE_SALT", raising=False)
    storage = Storage(str(tmp_path / "ns"))
    with pytest.raises(
        ConfigError, match="The secret PIPELINES_ERASURE_SALT is not set, and namespace 'serving'"
    ):
        load_salt("serving", storage)
    first = load_salt("local", storage)
    assert load_salt("local", storage) == first and len(first) == 64
    monkeypatch.setenv("PIPELINES_ERASURE_SALT", "from-the-environment")
    assert load_salt("serving", storage) == "from-the-environment"


def test_a_value_retention_already_pseudonymised_is_still_the_subjects(monkeypatch):
    from pipelines.components.erasure import pseudonym_hash
    from pipelines.lake.retention import pseudonym

    key = "k" * 40
    monkeypatch.setenv("PIPELINES_PSEUDONYM_KEY", key)
    expired = pseudonym(key.encode(), "ada@x.org")
    data = f"id,email\n1,{expired}\n2,bob@x.org\n".encode()
    subject = Subject(subject_hash(SALT, "ada@x.org"), SALT, (pseudonym_hash(SALT, " ada@x.org"),))
    assert match_raw(data, "raw/d/f.csv", _spec("csv"), subject).lines == [2]
    assert match_raw(data, "raw/d/f.csv", _spec("csv"), _subject("ada@x.org")).lines == []
    monkeypatch.delenv("PIPELINES_PSEUDONYM_KEY")
    assert pseudonym_hash(SALT, "ada@x.org") is None
