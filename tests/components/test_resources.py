import sqlite3
import threading
import time

import pytest
import sqlalchemy as sa

from pipelines.components.environment import Settings
from pipelines.components.errors import ConfigError
from pipelines.components.resources import Storage, Warehouse, quote_ident, schema_for, use_wal


def _failing_chunks():
    yield b"first half,"
    raise OSError("disk went away midway")


def test_local_atomic_write_and_failed_write_leaves_nothing(tmp_path):
    storage = Storage(str(tmp_path / "root"))
    uri = storage.write_atomic("a/b/file.csv", [b"x,y\n", b"1,2\n"])
    assert uri == str(tmp_path / "root" / "a" / "b" / "file.csv")
    assert storage.read_bytes("a/b/file.csv") == b"x,y\n1,2\n"
    with pytest.raises(OSError, match="midway"):
        storage.write_atomic("a/b/other.csv", _failing_chunks())
    assert not storage.exists("a/b/other.csv")
    assert sorted(p.name for p in (tmp_path / "root" / "a" / "b").iterdir()) == ["file.csv"]
    # a failed overwrite keeps the old content whole
    with pytest.raises(OSError):
        storage.write_atomic("a/b/file.csv", _failing_chunks())
    assert storage.read_bytes("a/b/file.csv") == b"x,y\n1,2\n"
    assert storage.glob("**/*.csv") == ["a/b/file.csv"]


def test_put_atomic_and_child(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"\x00" * 1000)
    storage = Storage(str(tmp_path / "root")).child("zone")
    storage.put_atomic(src, "x/y.bin")
    assert storage.size("x/y.bin") == 1000


def test_unsupported_url_is_rejected():
    with pytest.raises(ConfigError, match="s3://bucket/prefix"):
        Storage("gs://bucket/x")


def test_s3_atomic_write(s3):
    storage = Storage(s3.url + "/prefix", s3.options)
    assert storage.write_atomic("raw/f.csv", b"a,b\n1,2\n") == f"s3://{s3.bucket}/prefix/raw/f.csv"
    assert storage.read_bytes("raw/f.csv") == b"a,b\n1,2\n"
    with pytest.raises(OSError, match="midway"):
        storage.write_atomic("raw/g.csv", _failing_chunks())
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=s3.bucket).get("Contents", [])]
    assert keys == ["prefix/raw/f.csv"]
    assert storage.glob("raw/*.csv") == ["raw/f.csv"]


def test_s3_storage_from_settings_uses_endpoint_and_secrets(s3, monkeypatch):
    monkeypatch.setenv("PIPELINES_DATA_URL", s3.url)
    settings = Settings.resolve()
    storage = Storage.from_settings(f"s3://{s3.bucket}/test/x", settings)
    storage.write_atomic("k.txt", b"hello")
    assert s3.client().get_object(Bucket=s3.bucket, Key="test/x/k.txt")["Body"].read() == b"hello"
    assert storage.delta_options["AWS_ENDPOINT_URL"] == s3.endpoint_url
    assert "testing" not in repr(storage.s3)


def test_quote_ident_handles_keywords_and_quotes():
    assert quote_ident("order") == '"order"'
    assert quote_ident('a"b') == '"a""b"'
    with pytest.raises(ConfigError):
        quote_ident("")


def test_sqlite_warehouse_is_one_file_per_namespace(tmp_path):
    url = f"sqlite:///{tmp_path}/wh/{{namespace}}.sqlite"
    a = Warehouse.from_settings(
        Settings.resolve(environ={"PIPELINES_NAMESPACE": "a", "PIPELINES_WAREHOUSE_URL": url})
    )
    b = Warehouse.from_settings(
        Settings.resolve(environ={"PIPELINES_NAMESPACE": "b", "PIPELINES_WAREHOUSE_URL": url})
    )
    with a.begin(write=True) as conn:
        conn.exec_driver_sql('CREATE TABLE "order" ("from" INTEGER)')
        conn.exec_driver_sql('INSERT INTO "order" VALUES (1)')
    assert a.table_names() == ["order"]
    assert b.table_names() == []
    assert (tmp_path / "wh" / "a.sqlite").exists() and (tmp_path / "wh" / "b.sqlite").exists()
    a.drop_schema()
    assert not (tmp_path / "wh" / "a.sqlite").exists()


def test_sqlite_transaction_rolls_back_on_error(tmp_path):
    wh = Warehouse(f"sqlite:///{tmp_path}/w.sqlite", "x")
    with wh.begin(write=True) as conn:
        conn.exec_driver_sql("CREATE TABLE t (v INTEGER)")
    with pytest.raises(RuntimeError), wh.begin(write=True) as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        raise RuntimeError("boom")
    with wh.begin() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0


def test_a_new_sqlite_warehouse_opened_while_another_connection_writes_it_waits_instead_of_failing(tmp_path):
    # Two shares opening a new warehouse file at once: the one that switches the file to WAL second
    # holds a read lock and needs the write lock the other has. SQLite does not wait for that upgrade
    # (busy_timeout does not apply), so without a retry it fails at once with "database is locked".
    path = tmp_path / "w.sqlite"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # the other connection holds the write lock of the new file
    other.execute("CREATE TABLE first (v INTEGER)")
    release = threading.Timer(0.3, other.execute, args=("COMMIT",))
    release.start()
    wh = Warehouse(f"sqlite:///{path}", "x")
    try:
        started = time.monotonic()
        with wh.begin(write=True) as conn:
            waited = time.monotonic() - started
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            conn.exec_driver_sql("CREATE TABLE second (v INTEGER)")
        assert waited >= 0.25  # it waited for the other writer to finish
        assert wh.table_names() == ["first", "second"]
    finally:
        release.join()
        other.close()
        wh.dispose()


def test_use_wal_gives_up_after_its_timeout_with_sqlites_error(tmp_path):
    path = tmp_path / "w.sqlite"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # never released while the switch is tried
    mine = sqlite3.connect(path, isolation_level=None, timeout=0.05)
    try:
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            use_wal(mine, 0.2)
        assert 0.1 <= time.monotonic() - started < 5
    finally:
        mine.close()
        other.close()


def test_postgres_warehouse_schema_per_namespace(postgres_url):
    a = Warehouse(postgres_url, "research-feature-x")
    b = Warehouse(postgres_url, "serving")
    assert a.schema == "research_feature_x" == schema_for("research-feature-x")
    with a.begin() as conn:  # the schema is created on first use
        conn.exec_driver_sql('CREATE TABLE "order" ("from" int)')
        conn.exec_driver_sql('INSERT INTO "order" VALUES (1)')
    with b.begin() as conn:
        conn.exec_driver_sql('CREATE TABLE "order" ("from" int)')
    assert a.table_names() == ["order"] == b.table_names()
    with a.engine.connect() as conn:
        assert conn.exec_driver_sql('SELECT count(*) FROM research_feature_x."order"').scalar() == 1
        assert conn.exec_driver_sql('SELECT count(*) FROM serving."order"').scalar() == 0
    a.drop_schema()
    inspector = sa.inspect(b.engine)
    assert "research_feature_x" not in inspector.get_schema_names()
    assert "serving" in inspector.get_schema_names()
    a.dispose()
    b.dispose()


def test_postgres_concurrent_first_use_creates_schema_once(postgres_url):
    errors = []

    def first_use():
        try:
            wh = Warehouse(postgres_url, "research-race")
            wh.ensure_schema()
            wh.dispose()
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_bad_warehouse_url():
    with pytest.raises(ConfigError, match="Unsupported warehouse 'mysql'"):
        Warehouse("mysql://x@y/z", "ns")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_write_changed_writes_only_new_or_different_bytes(where, tmp_path, request, monkeypatch):
    if where == "s3":
        s3 = request.getfixturevalue("s3")
        monkeypatch.setenv("PIPELINES_DATA_URL", s3.url)
        storage = Storage.from_settings(f"s3://{s3.bucket}/landing", Settings.resolve())
    else:
        storage = Storage(str(tmp_path / "root"))

    def stamp():
        storage.fs.invalidate_cache()
        info = storage.fs.info(storage.path("d/a.csv"))
        return info.get("mtime") or info["LastModified"]  # S3's is to the second

    assert storage.write_changed("d/a.csv", b"x,y\n1,2\n") is True  # new
    first = stamp()
    time.sleep(1.1 if where == "s3" else 0.05)
    assert storage.write_changed("d/a.csv", b"x,y\n1,2\n") is False  # the same bytes: left as it was
    assert stamp() == first
    storage.write_atomic("d/a.csv", b"x,y\n1,2\n")
    assert stamp() != first  # what a rewrite would have done
    assert storage.write_changed("d/a.csv", b"x,y\n1,3\n") is True  # same size, other bytes
    assert storage.write_changed("d/a.csv", b"x,y\n1,3,4\n") is True  # another size
    assert storage.read_bytes("d/a.csv") == b"x,y\n1,3,4\n"
