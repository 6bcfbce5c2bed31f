import io
import json
import logging
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import httpx
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from pipelines.components.sources import (
    Arrival,
    SourceError,
    TransientSourceError,
    fetch_http,
    is_transient,
    query_sql,
    records_from_json,
    with_retries,
)

# A scripted HTTP server on 127.0.0.1 ---------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: object = b"[]"  # bytes are sent as they are; anything else as JSON
    headers: dict = field(default_factory=dict)
    action: str | None = None  # "reset": close the socket unanswered; "slow": answer after the client gave up


@dataclass
class Request:
    path: str
    query: dict
    headers: dict


class FakeApi:
    """Replies come from `script` in order, then from `handler(request)`."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.script: list[Reply] = []
        self.handler: Callable[[Request], Reply] = lambda request: Reply()
        self.release = threading.Event()
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                parts = urlsplit(self.path)
                request = Request(parts.path, dict(parse_qsl(parts.query)), dict(self.headers))
                with api.lock:
                    api.requests.append(request)
                    reply = api.script.pop(0) if api.script else None
                reply = reply or api.handler(request)
                if reply.action == "reset":
                    # SO_LINGER 0 makes close() send a RST instead of a FIN.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                if reply.action == "slow":
                    api.release.wait(10)
                body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client already gave up on a slow reply

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def queries(self, path: str | None = None) -> list[dict]:
        return [r.query for r in self.requests if path is None or r.path == path]


@pytest.fixture
def api():
    server = FakeApi()
    server.thread.start()
    yield server
    server.release.set()
    server.server.shutdown()
    server.server.server_close()
    server.thread.join(5)


@pytest.fixture
def sleeps():
    """Delays recorded instead of waited: pass `sleeps.append` as the sleep."""
    return []


def records(arrivals: list[Arrival], path: str | None = None) -> list[dict]:
    return [r for a in arrivals for r in records_from_json(a.data, path)]


# Single page, status handling and retries ----------------------------------------------------


def test_single_page_is_yielded_byte_for_byte_with_params_and_headers(api):
    raw = b'{"items": [ {"id": 1}, {"id": 2} ],\n "note": "caf\xc3\xa9"}'
    api.handler = lambda request: Reply(body=raw)
    arrivals = list(
        fetch_http(
            f"{api.url}/v1/things",
            params={"status": "open"},
            headers={"Authorization": "Bearer abc"},
            since="2024-05-01T00:00:00Z",
            since_param="updated_since",
        )
    )
    assert arrivals == [Arrival(name="page-00001", ext="json", data=raw)]
    assert records(arrivals, "items") == [{"id": 1}, {"id": 2}]
    [request] = api.requests
    assert request.path == "/v1/things"
    assert request.query == {"status": "open", "updated_since": "2024-05-01T00:00:00Z"}
    assert request.headers["Authorization"] == "Bearer abc"
    assert "data" not in repr(arrivals[0])


def test_since_without_since_param_is_not_sent(api):
    list(fetch_http(api.url, params={"a": "1"}, since="2024-01-01"))
    assert api.queries() == [{"a": "1"}]


def test_429_honours_retry_after_seconds(api, sleeps):
    api.script = [Reply(429, {"error": "slow down"}, {"Retry-After": "1"})]
    api.handler = lambda request: Reply(body=[{"id": 1}])
    arrivals = list(fetch_http(api.url, sleep=sleeps.append))
    assert sleeps == [1.0]
    assert len(api.requests) == 2
    assert records(arrivals) == [{"id": 1}]


def test_503_retry_after_http_date_is_capped_at_max_delay(api, sleeps):
    later = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    api.script = [Reply(503, b"", {"Retry-After": later})]
    list(fetch_http(api.url, sleep=sleeps.append))
    assert sleeps == [30.0]
    assert len(api.requests) == 2


def test_500s_are_retried_with_growing_backoff(api, sleeps):
    api.script = [Reply(500), Reply(502), Reply(500)]
    api.handler = lambda request: Reply(body={"ok": True})
    arrivals = list(fetch_http(api.url, sleep=sleeps.append))
    assert records(arrivals) == [{"ok": True}]
    assert len(api.requests) == 4
    # base 0.5s doubling, each within the +-50% jitter band
    assert [0.25 <= sleeps[0] <= 0.75, 0.5 <= sleeps[1] <= 1.5, 1.0 <= sleeps[2] <= 3.0] == [True] * 3


def test_gives_up_after_attempts_with_a_clear_message(api, sleeps):
    api.handler = lambda request: Reply(500, b"boom")
    with pytest.raises(SourceError) as info:
        list(fetch_http(f"{api.url}/flaky", attempts=3, sleep=sleeps.append))
    message = str(info.value)
    assert "failed after 3 attempts" in message
    assert "HTTP 500" in message and f"{api.url}/flaky" in message
    assert isinstance(info.value.__cause__, TransientSourceError)
    assert len(api.requests) == 3
    assert len(sleeps) == 2


def test_a_response_slower_than_the_timeout_is_retried(api, sleeps):
    api.script = [Reply(action="slow")]
    api.handler = lambda request: Reply(body=[{"id": 7}])
    arrivals = list(fetch_http(api.url, timeout=0.2, sleep=sleeps.append))
    assert records(arrivals) == [{"id": 7}]
    assert len(api.requests) == 2
    assert len(sleeps) == 1


def test_a_connection_reset_is_retried(api, sleeps, caplog):
    api.script = [Reply(action="reset"), Reply(action="reset")]
    api.handler = lambda request: Reply(body=[{"id": 3}])
    with caplog.at_level(logging.WARNING, logger="pipelines.components.sources"):
        arrivals = list(fetch_http(api.url, sleep=sleeps.append))
    assert records(arrivals) == [{"id": 3}]
    assert len(api.requests) == 3
    assert len(sleeps) == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all("attempt" in w and api.url in w for w in warnings)


def test_404_fails_at_once_naming_status_url_and_body(api, sleeps):
    api.handler = lambda request: Reply(404, b'{"error": "no such endpoint"}')
    with pytest.raises(SourceError) as info:
        list(fetch_http(f"{api.url}/missing", params={"api_key": "s3cret"}, sleep=sleeps.append))
    message = str(info.value)
    assert "HTTP 404" in message
    assert f"{api.url}/missing" in message
    assert "no such endpoint" in message
    assert "s3cret" not in message
    assert not isinstance(info.value, TransientSourceError)
    assert len(api.requests) == 1
    assert sleeps == []


def test_a_body_that_is_not_json_fails_at_once(api, sleeps):
    api.handler = lambda request: Reply(body=b"<html>login</html>")
    with pytest.raises(SourceError, match="not JSON") as info:
        list(fetch_http(api.url, sleep=sleeps.append))
    assert "<html>login" in str(info.value)
    assert len(api.requests) == 1


# Pagination ----------------------------------------------------------------------------------

ROWS = [{"id": i} for i in range(250)]


def test_page_pagination(api):
    def handler(request):
        page, size = int(request.query["page"]), int(request.query["per_page"])
        return Reply(body={"data": {"items": ROWS[(page - 1) * size : page * size]}})

    api.handler = handler
    arrivals = list(
        fetch_http(
            api.url,
            pagination={"type": "page", "param": "page", "start": 1, "size_param": "per_page", "size": 100},
            records_path="data.items",
        )
    )
    # three full or partial pages, then the empty page that ends it
    assert [a.name for a in arrivals] == ["page-00001", "page-00002", "page-00003", "page-00004"]
    assert records(arrivals, "data.items") == ROWS
    assert [q["page"] for q in api.queries()] == ["1", "2", "3", "4"]


@pytest.mark.parametrize(("total", "pages"), [(250, 3), (200, 3), (0, 1)])
def test_offset_pagination_stops_on_a_short_or_empty_page(api, total, pages):
    def handler(request):
        offset, limit = int(request.query["skip"]), int(request.query["take"])
        return Reply(body=ROWS[:total][offset : offset + limit])

    api.handler = handler
    arrivals = list(
        fetch_http(
            api.url, pagination={"type": "offset", "param": "skip", "limit_param": "take", "limit": 100}
        )
    )
    assert len(arrivals) == pages
    assert records(arrivals) == ROWS[:total]
    assert [q["skip"] for q in api.queries()] == [str(100 * i) for i in range(pages)]


def test_cursor_pagination(api):
    chain = {None: ("c1", ROWS[:2]), "c1": ("c2", ROWS[2:4]), "c2": (None, ROWS[4:5])}

    def handler(request):
        next_cursor, rows = chain[request.query.get("after")]
        meta = {"next_cursor": next_cursor} if next_cursor else {}
        return Reply(body={"results": rows, "meta": meta})

    api.handler = handler
    arrivals = list(
        fetch_http(
            api.url,
            params={"q": "x"},
            pagination={"type": "cursor", "cursor_path": "meta.next_cursor", "param": "after"},
        )
    )
    assert len(arrivals) == 3
    assert records(arrivals, "results") == ROWS[:5]
    assert api.queries() == [{"q": "x"}, {"q": "x", "after": "c1"}, {"q": "x", "after": "c2"}]


def test_cursor_that_repeats_fails_instead_of_looping(api):
    api.handler = lambda request: Reply(body={"items": [], "next": "same"})
    with pytest.raises(SourceError, match="'same' a second time"):
        list(fetch_http(api.url, pagination={"type": "cursor", "cursor_path": "next"}))
    assert len(api.requests) == 2


def test_link_header_pagination(api):
    def handler(request):
        page = int(request.query.get("page", 1))
        # page 1 links absolutely, page 2 relatively; page 3 has no next link
        links = {1: f'<{api.url}/items?page=2&size=2>; rel="next"', 2: '</items?page=3&size=2>; rel="next"'}
        headers = {"Link": links[page]} if page in links else {}
        return Reply(body=ROWS[(page - 1) * 2 : page * 2], headers=headers)

    api.handler = handler
    arrivals = list(fetch_http(f"{api.url}/items", params={"size": 2}, pagination={"type": "link"}))
    assert len(arrivals) == 3
    assert records(arrivals) == ROWS[:6]
    assert api.queries() == [{"size": "2"}, {"page": "2", "size": "2"}, {"page": "3", "size": "2"}]


def test_link_pagination_from_a_next_url_in_the_body(api):
    def handler(request):
        page = int(request.query.get("page", 1))
        nxt = f"{api.url}/items?page={page + 1}" if page < 4 else None
        return Reply(body={"items": ROWS[page * 10 : page * 10 + 10], "paging": {"next": nxt}})

    api.handler = handler
    arrivals = list(
        fetch_http(
            f"{api.url}/items", pagination={"type": "link", "next_path": "paging.next"}, records_path="items"
        )
    )
    assert [a.name for a in arrivals] == [f"page-{i:05d}" for i in range(1, 5)]
    assert len(records(arrivals, "items")) == 40


def test_max_pages_guards_an_api_that_never_stops(api):
    counter = iter(range(10**6))
    api.handler = lambda request: Reply(body={"items": [1], "next": f"c{next(counter)}"})
    pages = fetch_http(api.url, pagination={"type": "cursor", "cursor_path": "next"}, max_pages=3)
    with pytest.raises(SourceError, match="more pages after max_pages=3"):
        list(pages)
    assert len(api.requests) == 3


def test_bad_records_path_names_the_path_and_the_keys_there(api):
    api.handler = lambda request: Reply(body={"data": {"rows": [{"id": 1}], "total": 1}})
    with pytest.raises(SourceError) as info:
        list(fetch_http(api.url, pagination={"type": "page"}, records_path="data.items"))
    message = str(info.value)
    assert "'data.items'" in message
    assert "rows, total" in message
    assert len(api.requests) == 1


def test_unknown_pagination_type_fails_before_any_request(api):
    with pytest.raises(SourceError) as info:
        fetch_http(api.url, pagination={"type": "cursors"})
    assert "Did you mean 'cursor'?" in str(info.value)
    assert "cursor, link, offset, page" in str(info.value)
    with pytest.raises(SourceError, match="Did you mean 'cursor_path'"):
        fetch_http(api.url, pagination={"type": "cursor", "cursor_path": "x", "cursorpath": "y"})
    assert api.requests == []


def test_a_client_passed_in_is_used_and_left_open(api):
    with httpx.Client(headers={"X-Tenant": "t1"}) as client:
        arrivals = list(fetch_http(api.url, client=client))
        assert not client.is_closed
    assert len(arrivals) == 1
    assert api.requests[0].headers["X-Tenant"] == "t1"


# records_from_json ---------------------------------------------------------------------------


def test_records_from_json_shapes():
    assert records_from_json(b'[{"a": 1}, {"a": 2}]') == [{"a": 1}, {"a": 2}]
    assert records_from_json(b'{"a": 1}') == [{"a": 1}]
    assert records_from_json(b'{"data": {"items": [{"a": 1}]}}', "data.items") == [{"a": 1}]
    assert records_from_json(b'{"data": {"items": null}}', "data.items") == []
    with pytest.raises(SourceError, match="leads to a object with keys x, y"):
        records_from_json(b'{"data": {"x": 1, "y": 2}}', "data")
    with pytest.raises(SourceError, match="no 'items' at data, which has no keys \\(it is a list\\)"):
        records_from_json(b'{"data": [1]}', "data.items")
    with pytest.raises(SourceError, match="not JSON"):
        records_from_json(b"nope")


# is_transient and with_retries ---------------------------------------------------------------


def _operational(message: str) -> sa.exc.OperationalError:
    return sa.exc.OperationalError("SELECT 1", {}, Exception(message))


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (TransientSourceError("x"), True),
        (httpx.ReadTimeout("slow"), True),
        (httpx.ConnectTimeout("slow"), True),
        (httpx.ConnectError("refused"), True),
        (httpx.ReadError("reset"), True),
        (httpx.RemoteProtocolError("disconnected"), True),
        (ConnectionResetError(), True),
        (_operational("server closed the connection unexpectedly"), True),
        (_operational('connection to server at "db", port 5432 failed: Connection refused'), True),
        (_operational("canceling statement due to lock timeout"), True),
        (_operational("database is locked"), True),
        (_operational('FATAL: database "nope" does not exist'), False),
        (_operational("no such table: t"), False),
        (sa.exc.ProgrammingError("SELECT", {}, Exception("syntax error")), False),
        (SourceError("terminal"), False),
        (ValueError("bug"), False),
    ],
)
def test_is_transient(exc, expected):
    assert is_transient(exc) is expected


def test_with_retries_backoff_doubles_and_caps(sleeps, caplog):
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 6:
            raise httpx.ConnectError("refused")
        return "done"

    logger = logging.getLogger("test.retries")
    with caplog.at_level(logging.WARNING, logger="test.retries"):
        result = with_retries(
            flaky, attempts=6, base_delay=1, max_delay=5, jitter=0, sleep=sleeps.append, logger=logger
        )
    assert result == "done"
    assert sleeps == [1, 2, 4, 5, 5]
    assert len([r for r in caplog.records if r.name == "test.retries"]) == 5


def test_with_retries_retry_after_overrides_and_is_capped(sleeps):
    errors = [TransientSourceError("429", retry_after=7), TransientSourceError("429", retry_after=99)]

    def fn():
        if errors:
            raise errors.pop(0)
        return 1

    assert with_retries(fn, max_delay=30, sleep=sleeps.append) == 1
    assert sleeps == [7, 30]


def test_with_retries_non_transient_propagates_at_once(sleeps):
    calls = []

    def broken():
        calls.append(1)
        raise KeyError("bug")

    with pytest.raises(KeyError):
        with_retries(broken, sleep=sleeps.append)
    assert calls == [1]
    assert sleeps == []


def test_with_retries_gives_up_naming_what_failed(sleeps):
    def down():
        raise httpx.ConnectError("Connection refused")

    with pytest.raises(SourceError) as info:
        with_retries(down, attempts=2, describe="GET http://127.0.0.1:9/x", sleep=sleeps.append)
    assert str(info.value).startswith("GET http://127.0.0.1:9/x failed after 2 attempts")
    assert "ConnectError: Connection refused" in str(info.value)
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert len(sleeps) == 1


# SQL -----------------------------------------------------------------------------------------

ODD_TABLE = 'odd "orders" table'
UPDATED = [datetime(2024, 1, d, 12, 0) for d in range(1, 6)]


def _create_odd_table(url: str, schema: str | None = None) -> None:
    engine = sa.create_engine(url)
    name = f'"{schema}".' if schema else ""
    name += '"' + ODD_TABLE.replace('"', '""') + '"'
    with engine.begin() as conn:
        if schema:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        conn.exec_driver_sql(
            f'CREATE TABLE {name} (id INTEGER, "order" INTEGER, note TEXT, updated TIMESTAMP)'
        )
        conn.execute(
            sa.text(f'INSERT INTO {name} (id, "order", note, updated) VALUES (:id, :o, :n, :u)'),
            [{"id": i, "o": 10 * i, "n": f"row {i}", "u": UPDATED[i - 1]} for i in (5, 3, 1, 4, 2)],
        )
    engine.dispose()


def _rows(arrivals: list[Arrival]) -> list[dict]:
    return [row for a in arrivals for row in pq.read_table(io.BytesIO(a.data)).to_pylist()]


def test_sql_pushdown_on_awkward_names_returns_only_rows_since(postgres_url):
    _create_odd_table(postgres_url)
    arrivals = list(query_sql(postgres_url, table=ODD_TABLE, incremental_field="order", since=30))
    assert [a.name for a in arrivals] == ["part-00000"]
    assert arrivals[0].ext == "parquet"
    rows = _rows(arrivals)
    assert [r["order"] for r in rows] == [30, 40, 50]
    assert rows[0] == {"id": 3, "order": 30, "note": "row 3", "updated": UPDATED[2]}
    # a timestamp predicate given as text is bound, and the database compares it as a timestamp
    later = list(query_sql(postgres_url, table=ODD_TABLE, incremental_field="updated", since="2024-01-04"))
    assert [r["id"] for r in _rows(later)] == [4, 5]
    assert list(query_sql(postgres_url, table=ODD_TABLE, incremental_field="order", since=999)) == []


def test_sql_since_is_a_bound_parameter_never_pasted(postgres_url):
    _create_odd_table(postgres_url)
    with pytest.raises(SourceError, match="invalid input syntax for type integer") as info:
        list(query_sql(postgres_url, table=ODD_TABLE, incremental_field="order", since="0 OR 1=1"))
    assert ODD_TABLE in str(info.value)
    assert len(_rows(list(query_sql(postgres_url, table=ODD_TABLE)))) == 5


def test_sql_batches_are_deterministic_parquet(postgres_url):
    _create_odd_table(postgres_url, schema="sales data")
    table = f"sales data.{ODD_TABLE}"
    first = list(query_sql(postgres_url, table=table, incremental_field="id", batch_rows=2))
    second = list(query_sql(postgres_url, table=table, incremental_field="id", batch_rows=2))
    assert [a.name for a in first] == ["part-00000", "part-00001", "part-00002"]
    assert [pq.read_metadata(io.BytesIO(a.data)).num_rows for a in first] == [2, 2, 1]
    assert [r["id"] for r in _rows(first)] == [1, 2, 3, 4, 5]
    assert [a.data for a in first] == [a.data for a in second]


def test_sql_query_source_keeps_colons_literal(postgres_url):
    _create_odd_table(postgres_url)
    query = """
        SELECT id, "order" * 2 AS doubled, '10:30'::time AS at, 'a :b' AS label
        FROM "odd ""orders"" table" WHERE note LIKE 'row %';
    """
    arrivals = list(query_sql(postgres_url, query=query, incremental_field="doubled", since=60))
    rows = _rows(arrivals)
    assert [(r["id"], r["doubled"]) for r in rows] == [(3, 60), (4, 80), (5, 100)]
    assert {str(r["at"]) for r in rows} == {"10:30:00"}
    assert {r["label"] for r in rows} == {"a :b"}


def test_sql_needs_exactly_one_of_table_or_query():
    with pytest.raises(SourceError, match="exactly one of table= or query=, got both"):
        query_sql("sqlite://", table="t", query="SELECT 1")
    with pytest.raises(SourceError, match="got neither"):
        query_sql("sqlite://")


def test_sql_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    _create_odd_table(url)
    arrivals = list(query_sql(url, table=ODD_TABLE, incremental_field="order", since=20, batch_rows=2))
    assert [a.name for a in arrivals] == ["part-00000", "part-00001"]
    assert [r["order"] for r in _rows(arrivals)] == [20, 30, 40, 50]
    with pytest.raises(SourceError, match="no such table: missing"):
        list(query_sql(url, table="missing"))
    with pytest.raises(SourceError, match="does not exist"):
        query_sql(f"sqlite:///{tmp_path / 'nope.sqlite'}", table="t")


def test_sql_connection_refused_is_retried_then_reported(sleeps):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        url = f"postgresql+psycopg://postgres:hunter2@127.0.0.1:{port}/db"
        with pytest.raises(SourceError) as info:
            list(query_sql(url, table="t", attempts=3, sleep=sleeps.append))
    message = str(info.value)
    assert f"Connecting to postgresql+psycopg://postgres:***@127.0.0.1:{port}/db failed after 3" in message
    assert "hunter2" not in message
    assert len(sleeps) == 2


def test_params_and_headers_take_secrets_by_name(api, caplog):
    from pipelines.components.secrets import get_secret

    def secret(name):
        return get_secret(name, environ={"API_TOKEN": "tok-8f3k2"}, use_blocks=False, cwd="/nonexistent")

    with caplog.at_level(logging.INFO):
        list(
            fetch_http(
                api.url,
                params={"key": "${secret:API_TOKEN}", "plain": "x"},
                headers={"Authorization": "Bearer ${secret:API_TOKEN}"},
                secret=secret,
            )
        )
        logging.getLogger("pipelines.test.http").info("sent %s", "Bearer tok-8f3k2")
    [request] = api.requests
    assert request.query == {"key": "tok-8f3k2", "plain": "x"}
    assert request.headers["Authorization"] == "Bearer tok-8f3k2"
    assert "tok-8f3k2" not in caplog.text and "Bearer **********" in caplog.text
    with pytest.raises(
        SourceError, match=r"^source\.headers\.Authorization: Secret 'API_TOKN' was not found"
    ):
        fetch_http(api.url, headers={"Authorization": "Bearer ${secret:API_TOKN}"}, secret=secret)
    with pytest.raises(
        SourceError, match=r"^source\.params\.key: a \$\{secret:\.\.\.\} reference is not closed"
    ):
        fetch_http(api.url, params={"key": "${secret:API_TOKEN"}, secret=secret)
    assert len(api.requests) == 1  # bad references fail before any request
