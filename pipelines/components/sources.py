"""Extractors: HTTP JSON APIs and SQL databases, yielding the exact bytes that arrived.

The caller keeps each :class:`Arrival` unchanged in the raw zone, so nothing here parses,
reshapes or drops data beyond what paging needs. Transient failures (timeouts, resets, 429,
5xx, lost database connections) are retried with backoff; everything else fails at once.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from pipelines.components.errors import PipelinesError, did_you_mean
from pipelines.components.resources import quote_ident
from pipelines.components.secrets import SecretValue, get_secret

log = logging.getLogger(__name__)

T = TypeVar("T")


class TransientSourceError(PipelinesError):
    """A failure worth retrying; ``retry_after`` is the wait the source asked for, in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SourceError(PipelinesError):
    """A terminal source failure: retrying will not help."""


@dataclass(frozen=True)
class Arrival:
    """One unit of raw data exactly as it arrived: a page of JSON or a batch as Parquet."""

    name: str
    ext: str
    data: bytes = field(repr=False)


# Retries -------------------------------------------------------------------------------------

_TRANSIENT_ERRORS = (
    TransientSourceError,
    ConnectionResetError,
    httpx.TimeoutException,
    httpx.ConnectError,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)
_TRANSIENT_SQL = re.compile(
    "|".join(
        (
            r"connection refused",
            r"connection reset",
            r"connection timed out",
            r"timeout expired",
            r"could not connect to server",
            r"server closed the connection",
            r"connection is closed",
            r"connection already closed",
            r"terminating connection",
            r"could not (?:receive|send) data",
            r"consuming input failed",
            r"ssl connection has been closed",
            r"ssl syscall error",
            r"no route to host",
            r"network is unreachable",
            r"the database system is (?:starting up|shutting down|in recovery mode)",
            r"too many clients",
            r"lock timeout",
            r"could not obtain lock",
            r"deadlock detected",
            r"database is locked",
        )
    ),
    re.IGNORECASE,
)


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` is a failure worth retrying (timeouts, resets, lost connections, locks)."""
    if isinstance(exc, _TRANSIENT_ERRORS):
        return True
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa.exc.OperationalError):
        return bool(_TRANSIENT_SQL.search(str(exc.orig if exc.orig is not None else exc)))
    return False


def with_retries(
    fn: Callable[[], T],
    *,
    attempts: int = 5,
    base_delay: float = 0.5,
    max_delay: float = 30.0,
    jitter: float = 0.5,
    sleep: Callable[[float], Any] = time.sleep,
    describe: str = "request",
    logger: logging.Logger | None = None,
) -> T:
    """Call ``fn()``, retrying transient failures with exponential backoff; other errors propagate.

    The delay before retry ``n`` (from 0) is ``min(base_delay * 2**n, max_delay)`` times a random
    factor in ``[1 - jitter, 1 + jitter]``; a ``TransientSourceError.retry_after`` replaces it
    (capped at ``max_delay``). After ``attempts`` tries a :class:`SourceError` is raised.
    """
    if attempts < 1:
        raise SourceError(f"{describe}: attempts must be at least 1, got {attempts}.")
    if not 0 <= jitter <= 1:
        raise SourceError(f"{describe}: jitter must be between 0 and 1, got {jitter}.")
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt == attempts - 1:
                raise SourceError(
                    f"{describe} failed after {attempts} attempt{'s' if attempts != 1 else ''}; "
                    f"last error: {_describe_exc(exc)}. The source kept failing with errors that are "
                    "usually temporary: check that it is up and reachable, or raise attempts."
                ) from exc
            retry_after = getattr(exc, "retry_after", None)
            if retry_after is not None:
                delay = min(max(float(retry_after), 0.0), max_delay)
            else:
                delay = min(base_delay * 2**attempt, max_delay) * random.uniform(1 - jitter, 1 + jitter)
            if logger is not None:
                logger.warning(
                    "%s failed (attempt %d of %d): %s; retrying in %.2fs",
                    describe,
                    attempt + 1,
                    attempts,
                    _describe_exc(exc),
                    delay,
                )
            sleep(delay)
    raise AssertionError("unreachable")  # the loop always returns or raises


def _describe_exc(exc: BaseException) -> str:
    text = str(exc).strip() or "(no message)"
    return text if isinstance(exc, PipelinesError) else f"{type(exc).__name__}: {text}"


# HTTP ----------------------------------------------------------------------------------------

_PAGINATION_KEYS = {
    "page": {"type", "param", "start", "size_param", "size"},
    "offset": {"type", "param", "start", "limit_param", "limit"},
    "cursor": {"type", "cursor_path", "param"},
    "link": {"type", "next_path"},
}
_SECRET_PARAM = re.compile(r"key|token|secret|pass|auth|sig|credential", re.IGNORECASE)
_MISSING = object()


def _redact(url: str | httpx.URL) -> str:
    """The URL with the values of secret-looking query parameters masked, for messages."""
    parts = urlsplit(str(url))
    if not parts.query:
        return str(url)
    query = [(k, "***" if _SECRET_PARAM.search(k) else v) for k, v in parse_qsl(parts.query, True)]
    return urlunsplit(parts._replace(query=urlencode(query, safe="*")))


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date); None if unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _http_hint(status: int) -> str:
    if status in (401, 403):
        return "Check the credentials sent in the headers and that they allow this request."
    if status in (404, 410):
        return "Check the URL and path."
    if status in (400, 422):
        return "Check the query parameters."
    return "Check the URL, parameters and credentials."


def _get_json(
    client: httpx.Client, url: str, params: dict | None, headers: dict
) -> tuple[httpx.Response, Any]:
    """One GET; returns the response and its decoded body, or raises a (Transient)SourceError."""
    response = client.get(url, params=params, headers=headers)
    status = response.status_code
    where = _redact(response.request.url)
    if status == 429 or status >= 500:
        wait = _retry_after(response.headers.get("Retry-After")) if status in (429, 503) else None
        raise TransientSourceError(f"GET {where} returned HTTP {status} {response.reason_phrase}.", wait)
    if not 200 <= status < 300:
        snippet = response.content[:200].decode("utf-8", errors="replace")
        raise SourceError(
            f"GET {where} failed with HTTP {status} {response.reason_phrase}: {snippet!r}. {_http_hint(status)}"
        )
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        snippet = response.content[:200].decode("utf-8", errors="replace")
        raise SourceError(
            f"GET {where} returned a body that is not JSON ({exc}; Content-Type "
            f"{response.headers.get('Content-Type', 'missing')!r}): {snippet!r}. "
            "Check that the URL is the JSON API endpoint and not a web page."
        ) from None
    return response, body


def _lookup(body: Any, path: str) -> Any:
    """The value at a dotted path in decoded JSON, or _MISSING."""
    node = body
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _records(body: Any, records_path: str | None) -> list[dict]:
    if records_path is None:
        if body is None:
            return []
        if isinstance(body, list):
            return body
        if isinstance(body, dict):
            return [body]
        raise SourceError(
            f"The JSON body is a {type(body).__name__}, not a list of records or an object. "
            "Set records_path to the dotted path of the list of records."
        )
    node = body
    walked: list[str] = []
    for part in records_path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
            walked.append(part)
            continue
        where = ".".join(walked) or "the top level"
        keys = ", ".join(map(str, node)) if isinstance(node, dict) else f"no keys (it is a {_kind(node)})"
        hint = did_you_mean(part, node) if isinstance(node, dict) else ""
        raise SourceError(
            f"records_path {records_path!r} does not lead to a list: there is no {part!r} at {where}, "
            f"which has {keys}.{hint} Fix records_path to point at the list of records."
        )
    if node is None:  # some APIs send null for an empty list
        return []
    if not isinstance(node, list):
        keys = f" with keys {', '.join(map(str, node))}" if isinstance(node, dict) else ""
        raise SourceError(
            f"records_path {records_path!r} leads to a {_kind(node)}{keys}, not a list of records. "
            "Fix records_path to point at the list of records."
        )
    return node


def _kind(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def records_from_json(data: bytes, records_path: str | None = None) -> list[dict]:
    """Decode a page and return its records.

    ``records_path`` is a dotted path ("data.items") to the list of records; None means the
    body itself is the list (a single object becomes a one-record list). A null list is empty.
    """
    try:
        body = json.loads(data)
    except ValueError as exc:
        snippet = bytes(data[:200]).decode("utf-8", errors="replace")
        raise SourceError(f"The page is not JSON ({exc}): {snippet!r}.") from None
    return _records(body, records_path)


def _check_pagination(pagination: dict | None) -> dict | None:
    if pagination is None:
        return None
    if not isinstance(pagination, dict):
        raise SourceError(f"pagination must be a dict with a 'type' key, got {pagination!r}.")
    kind = pagination.get("type")
    known = sorted(_PAGINATION_KEYS)
    if kind not in _PAGINATION_KEYS:
        raise SourceError(
            f"Unknown pagination type {kind!r}.{did_you_mean(str(kind), known)} "
            f"Known types: {', '.join(known)} (or no pagination for a single page)."
        )
    allowed = _PAGINATION_KEYS[kind]
    for key in pagination:
        if key not in allowed:
            raise SourceError(
                f"Unknown key {key!r} in {kind!r} pagination.{did_you_mean(key, allowed)} "
                f"Allowed keys: {', '.join(sorted(allowed))}."
            )
    if kind == "cursor" and not pagination.get("cursor_path"):
        raise SourceError(
            "Cursor pagination needs 'cursor_path', the dotted path to the next cursor in the body."
        )
    if kind == "page" and ("size_param" in pagination) != ("size" in pagination):
        raise SourceError("Page pagination needs both 'size_param' and 'size', or neither.")
    if kind == "offset" and int(pagination.get("limit", 100)) < 1:
        raise SourceError(f"Offset pagination needs a positive 'limit', got {pagination['limit']!r}.")
    return pagination


def fetch_http(
    url: str,
    *,
    params: dict | None = None,
    headers: dict | None = None,
    pagination: dict | None = None,
    records_path: str | None = None,
    since: str | None = None,
    since_param: str | None = None,
    timeout: float = 30.0,
    attempts: int = 5,
    max_pages: int = 10_000,
    sleep: Callable[[float], Any] = time.sleep,
    client: httpx.Client | None = None,
    secret: Callable[[str], SecretValue] = get_secret,
) -> Iterator[Arrival]:
    """GET JSON pages; each response body is yielded unchanged as ``page-00001.json``, ...

    Every page fetched is yielded, including the empty one that ends page or offset paging.
    ``since`` goes into ``params[since_param]`` when both are set. ``timeout`` applies to the
    client made here; a ``client`` passed in keeps its own settings and is not closed.
    A ``${secret:NAME}`` in a ``params`` or ``headers`` value is replaced by the secret NAME,
    looked up with ``secret`` (see :mod:`pipelines.components.secrets`; never logged).
    Arguments are checked and secrets looked up at once; requests start when iteration does.
    """
    paging = _check_pagination(pagination)
    if max_pages < 1:
        raise SourceError(f"max_pages must be at least 1, got {max_pages}.")
    query = with_secrets(params, "params", secret)
    if since is not None and since_param:
        query[since_param] = since
    sent_headers = {"Accept": "application/json", **with_secrets(headers, "headers", secret)}
    return _pages(url, query, sent_headers, paging, records_path, timeout, attempts, max_pages, sleep, client)


_SECRET_REF = re.compile(r"\$\{secret:([^}]*)\}")


def with_secrets(
    values: dict | None, what: str, secret: Callable[[str], SecretValue] = get_secret
) -> dict[str, Any]:
    """A copy of ``values`` where each ``${secret:NAME}`` inside a text value is that secret's value.

    ``what`` (params or headers) names the contract field in errors; an unknown or misspelled
    secret fails with every place that was looked at.
    """
    resolved: dict[str, Any] = {}
    for key, value in (values or {}).items():
        if isinstance(value, str) and "${secret:" in value:
            try:
                value = _SECRET_REF.sub(lambda m: secret(m.group(1).strip()).reveal(), value)
            except PipelinesError as exc:
                raise SourceError(f"source.{what}.{key}: {exc}") from None
            if "${secret:" in value:
                raise SourceError(
                    f"source.{what}.{key}: a ${{secret:...}} reference is not closed; write e.g. "
                    f"{key}: 'Bearer ${{secret:API_TOKEN}}'."
                )
        resolved[key] = value
    return resolved


def _pages(
    url: str,
    query: dict,
    headers: dict,
    paging: dict | None,
    records_path: str | None,
    timeout: float,
    attempts: int,
    max_pages: int,
    sleep: Callable[[float], Any],
    client: httpx.Client | None,
) -> Iterator[Arrival]:
    own_client = client is None
    http = client or httpx.Client(timeout=timeout, follow_redirects=True)
    kind = paging["type"] if paging else None
    spec = paging or {}
    page_no = int(spec.get("start", 1)) if kind == "page" else 0
    offset = int(spec.get("start", 0)) if kind == "offset" else 0
    limit = int(spec.get("limit", 100))
    cursor: Any = None
    next_url: str | None = url
    seen: set[str] = set()
    try:
        for n in range(1, max_pages + 2):
            if n > max_pages:
                raise SourceError(
                    f"GET {_redact(url)} still had more pages after max_pages={max_pages}. Raise max_pages "
                    "if the source really is this large, or check the pagination settings."
                )
            page_params: dict | None = dict(query)
            if kind == "page":
                page_params[spec.get("param", "page")] = page_no
                if "size_param" in spec:
                    page_params[spec["size_param"]] = spec["size"]
            elif kind == "offset":
                page_params[spec.get("param", "offset")] = offset
                page_params[spec.get("limit_param", "limit")] = limit
            elif kind == "cursor" and cursor is not None:
                page_params[spec.get("param", "cursor")] = cursor
            elif kind == "link" and n > 1:
                page_params = None  # the next link already carries the query
            target = next_url if kind == "link" else url
            response, body = with_retries(
                functools.partial(_get_json, http, target, page_params, headers),
                attempts=attempts,
                sleep=sleep,
                describe=f"GET {_redact(target)} (page {n})",
                logger=log,
            )
            records = _records(body, records_path) if kind in ("page", "offset") or records_path else None
            yield Arrival(name=f"page-{n:05d}", ext="json", data=response.content)

            if kind is None:
                return
            if kind == "page":
                if not records:
                    return
                page_no += 1
            elif kind == "offset":
                if len(records) < limit:
                    return
                offset += len(records)
            elif kind == "cursor":
                cursor = _lookup(body, spec["cursor_path"])
                if cursor is _MISSING or cursor is None or cursor == "":
                    return
                token = json.dumps(cursor, sort_keys=True)
                if token in seen:
                    raise SourceError(
                        f"GET {_redact(url)} returned cursor {cursor!r} a second time (page {n}); "
                        f"following it would loop forever. Check cursor_path {spec['cursor_path']!r}."
                    )
                seen.add(token)
            else:
                if "next_path" in spec:
                    found = _lookup(body, spec["next_path"])
                    link = found if isinstance(found, str) and found else None
                else:
                    link = response.links.get("next", {}).get("url")
                if not link:
                    return
                next_url = str(response.url.join(link))
                if next_url in seen:
                    raise SourceError(
                        f"GET {_redact(url)} links back to {_redact(next_url)} (page {n}); "
                        "following it would loop forever."
                    )
                seen.add(next_url)
    finally:
        if own_client:
            http.close()


# SQL -----------------------------------------------------------------------------------------

# A ':name' that SQLAlchemy's text() would take for a bind parameter (not '::' casts).
_BIND_LIKE = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")


def _sql_url(url: str) -> sa.engine.URL:
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise SourceError(
            f"Invalid database URL: {exc}. Use e.g. postgresql+psycopg://user@host/db."
        ) from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not Path(database).exists():
            raise SourceError(f"SQLite file {database!r} does not exist. Check the path in the URL.")
    return parsed


def _qualified(table: str) -> str:
    """A quoted table name; 'schema.table' becomes "schema"."table"."""
    return ".".join(quote_ident(part) for part in table.split(".", 1))


def _select(
    table: str | None, query: str | None, incremental_field: str | None, since: object | None
) -> tuple[str, dict]:
    if query is not None:
        body = query.strip().rstrip(";").strip()
        if not body:
            raise SourceError("query is empty. Give a SELECT statement, or a table instead.")
        # The query is taken as literal SQL: escape anything text() would read as a parameter.
        literal = _BIND_LIKE.sub(r"\\:\1", body)
        sql = f"SELECT * FROM ({literal}) AS _source"
    else:
        sql = f"SELECT * FROM {_qualified(table)}"
    params: dict = {}
    if incremental_field:
        field_sql = quote_ident(incremental_field)
        if since is not None:
            sql += f" WHERE {field_sql} >= :since"
            params["since"] = since
        sql += f" ORDER BY {field_sql}"
    return sql, params


def query_sql(
    url: str,
    *,
    table: str | None = None,
    query: str | None = None,
    incremental_field: str | None = None,
    since: object | None = None,
    batch_rows: int = 500_000,
    attempts: int = 5,
    sleep: Callable[[float], Any] = time.sleep,
) -> Iterator[Arrival]:
    """Read a table or a query in batches, yielding each as Parquet (``part-00000.parquet``, ...).

    With ``incremental_field`` and ``since`` only rows where the field is ``>= since`` are read
    (a bound parameter), ordered by the field. The same rows give the same bytes. An empty result
    yields nothing. Arguments are checked at once; the database is contacted when iteration starts.
    """
    if (table is None) == (query is None):
        given = "both" if table is not None else "neither"
        raise SourceError(f"query_sql needs exactly one of table= or query=, got {given}.")
    if batch_rows < 1:
        raise SourceError(f"batch_rows must be at least 1, got {batch_rows}.")
    sql_url = _sql_url(url)
    sql, params = _select(table, query, incremental_field, since)
    what = f"table {table!r}" if table is not None else "the query"
    return _batches(sql_url, sql, params, what, batch_rows, attempts, sleep)


def _batches(
    url: sa.engine.URL,
    sql: str,
    params: dict,
    what: str,
    batch_rows: int,
    attempts: int,
    sleep: Callable[[float], Any],
) -> Iterator[Arrival]:
    where = url.render_as_string(hide_password=True)
    connect_args = {}
    if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = 10
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args=connect_args)

    def fail(exc: sa.exc.DBAPIError, doing: str) -> Exception:
        if is_transient(exc):
            return exc
        cause = str(exc.orig if exc.orig is not None else exc).strip()
        return SourceError(f"{doing} {what} from {where} failed: {cause}")

    try:
        try:
            conn = with_retries(
                engine.connect, attempts=attempts, sleep=sleep, describe=f"Connecting to {where}", logger=log
            )
        except sa.exc.DBAPIError as exc:
            raise fail(exc, "Connecting to read") from exc
        with conn:
            conn.execution_options(stream_results=True, yield_per=batch_rows)
            try:
                result = conn.execute(sa.text(sql), params)
                names = list(result.keys())
                duplicates = sorted({n for n in names if names.count(n) > 1})
                if duplicates:
                    raise SourceError(
                        f"Reading {what} from {where}: the result has more than one column named "
                        f"{', '.join(map(repr, duplicates))}. Give each column a distinct alias."
                    )
                batches = result.partitions(batch_rows)
                known: dict[str, pa.DataType] = {}
                for i, rows in enumerate(batches):
                    table = _arrow_table(names, rows, known)
                    yield Arrival(name=f"part-{i:05d}", ext="parquet", data=_parquet_bytes(table))
            except sa.exc.DBAPIError as exc:
                raise fail(exc, "Reading") from exc
    finally:
        engine.dispose()


def _arrow_table(names: list[str], rows: list, known: dict[str, pa.DataType]) -> pa.Table:
    """Rows as an Arrow table; a column that is all null in this batch keeps its earlier type."""
    arrays = []
    for name, values in zip(names, zip(*rows, strict=True), strict=True):
        array = _arrow_array(values)
        if pa.types.is_null(array.type) and name in known:
            array = pa.nulls(len(array), known[name])
        elif not pa.types.is_null(array.type):
            known.setdefault(name, array.type)
        arrays.append(array)
    return pa.Table.from_arrays(arrays, names=names)


def _arrow_array(values: tuple) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        # Types Arrow cannot infer (UUID, mixed JSON values) are kept as text.
        return pa.array(
            [None if v is None else json.dumps(v) if isinstance(v, dict | list) else str(v) for v in values],
            type=pa.string(),
        )


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()
