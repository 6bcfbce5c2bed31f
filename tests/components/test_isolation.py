"""A namespace writes only under its own prefix (and the shared landing zone); it may read others'."""

import os

import polars as pl
import pytest
from prefect import flow

from pipelines.components.environment import Settings, get_settings
from pipelines.components.errors import NamespaceIsolationError
from pipelines.components.resources import Lake, Storage, WriteScope
from pipelines.cookbooks.flights import DATASETS, flights


def _settings(monkeypatch, namespace: str) -> Settings:
    monkeypatch.setenv("PIPELINES_NAMESPACE", namespace)
    return Settings.resolve()


def _files(root) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and modification time (ns)."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            stat = os.stat(path)
            found[os.path.relpath(path, root)] = (stat.st_size, stat.st_mtime_ns)
    return found


def test_writes_outside_the_namespace_are_refused_and_touch_nothing(tmp_path, monkeypatch):
    serving_file = tmp_path / "data" / "serving" / "cleaned" / "keep.txt"
    serving_file.parent.mkdir(parents=True)
    serving_file.write_bytes(b"serving's bytes")
    settings = _settings(monkeypatch, "research-x")

    own = Storage.from_settings(settings.namespace_url, settings)
    own.write_atomic("cleaned/a.txt", b"mine")
    Storage.from_settings(settings.landing_url, settings).write_atomic("orders/1.csv", b"id\n1\n")
    assert (tmp_path / "data" / "research-x" / "cleaned" / "a.txt").read_bytes() == b"mine"
    assert (tmp_path / "data" / "landing" / "orders" / "1.csv").exists()

    serving = Storage.from_settings(settings.namespace_url_of("serving"), settings)
    assert serving.read_bytes("cleaned/keep.txt") == b"serving's bytes"  # reading is allowed
    assert not serving.writable and own.writable
    attempts = [
        lambda: serving.write_atomic("cleaned/keep.txt", b"overwritten"),
        lambda: serving.put_atomic(
            tmp_path / "data" / "research-x" / "cleaned" / "a.txt", "cleaned/keep.txt"
        ),
        lambda: serving.delete("cleaned"),
        lambda: serving.child("cleaned").write_atomic("keep.txt", b"overwritten"),
        lambda: own.write_atomic("../serving/cleaned/keep.txt", b"overwritten"),
    ]
    for attempt in attempts:
        with pytest.raises(NamespaceIsolationError) as caught:
            attempt()
        message = str(caught.value)
        assert "namespace 'research-x' writes only under" in message
        assert f"{tmp_path / 'data' / 'serving'} belongs to namespace 'serving'" in message
        assert "Other namespaces' data can be read, never written" in message
    assert serving_file.read_bytes() == b"serving's bytes"

    # A prefix of the name is not the namespace: research-x may not write research-xy.
    neighbour = Storage.from_settings(str(tmp_path / "data" / "research-xy"), settings)
    with pytest.raises(NamespaceIsolationError, match="belongs to namespace 'research-xy'"):
        neighbour.write_atomic("a.txt", b"x")
    with pytest.raises(NamespaceIsolationError, match="the data root every namespace shares"):
        Storage.from_settings(settings.data_url, settings).delete()
    assert serving_file.exists()


def test_write_scope_on_s3_urls():
    scope = WriteScope("research-x", ("s3://bucket/data/research-x", "s3://bucket/data/landing"))
    assert scope.allows("s3://bucket/data/research-x/cleaned/t")
    assert scope.allows("s3://bucket/data/landing/orders/a.csv")
    assert not scope.allows("s3://bucket/data/serving/cleaned/t")
    assert not scope.allows("s3://bucket/data/research-x/../serving/cleaned/t")
    assert not scope.allows("s3://other-bucket/data/research-x")
    with pytest.raises(
        NamespaceIsolationError, match="s3://bucket/data/serving belongs to namespace 'serving'"
    ):
        scope.check("s3://bucket/data/serving/cleaned/t")


def test_a_lake_of_another_namespace_is_read_only(tmp_path, monkeypatch):
    serving_settings = _settings(monkeypatch, "serving")
    Lake.from_settings(serving_settings).append("cleaned", "scores", pl.DataFrame({"id": [1, 2]}))

    research = _settings(monkeypatch, "research-x")
    theirs = Lake.from_settings(research, "serving")
    assert theirs.read("cleaned", "scores").height == 2
    for attempt in (
        lambda: theirs.append("cleaned", "scores", pl.DataFrame({"id": [3]})),
        lambda: theirs.write_uri("cleaned", "scores"),
    ):
        with pytest.raises(NamespaceIsolationError, match="belongs to namespace 'serving'"):
            attempt()
    assert theirs.read("cleaned", "scores").get_column("id").to_list() == [1, 2]
    mine = Lake.from_settings(research)
    mine.append("cleaned", "scores", theirs.read("cleaned", "scores"))
    assert mine.uri("cleaned", "scores") == str(tmp_path / "data" / "research-x" / "cleaned" / "scores")
    assert mine.read("cleaned", "scores").height == 2


@flow(name="overwrite-serving")
def _overwrite_serving() -> int:
    """A research flow that reads serving's cleaned airlines, then tries to write them back."""
    lake = Lake.from_settings(get_settings(), "serving")
    rows = lake.read("cleaned", "airlines")
    lake.append("cleaned", "airlines", rows)
    return rows.height


@pytest.mark.usefixtures("prefect_harness")
def test_a_research_run_cannot_overwrite_serving_data(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINES_NAMESPACE", "serving")
    flights(start="2013-01-01", through="2013-01-01")
    serving_root = tmp_path / "data" / "serving"
    serving = Lake(Storage(str(serving_root)))
    before = {
        name: (serving.table("cleaned", name).version(), serving.read("cleaned", name).height)
        for name in DATASETS
    }
    files_before = _files(serving_root)

    monkeypatch.setenv("PIPELINES_NAMESPACE", "research-x")
    result = flights(start="2013-01-01", through="2013-01-02")
    assert result.namespace == "research-x"
    research = Lake(Storage(str(tmp_path / "data" / "research-x")))
    assert research.read("cleaned", "flights").height > serving.read("cleaned", "flights").height > 0

    with pytest.raises(NamespaceIsolationError, match="belongs to namespace 'serving'"):
        _overwrite_serving()

    after = {
        name: (serving.table("cleaned", name).version(), serving.read("cleaned", name).height)
        for name in DATASETS
    }
    assert after == before
    assert _files(serving_root) == files_before
