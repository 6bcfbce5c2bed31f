"""Secrets, looked up by name at run time, never logged.

Lookup order for a secret called ``AWS_SECRET_ACCESS_KEY``:

1. the Prefect Secret block ``aws-secret-access-key`` (block names are lower-case with dashes);
2. the environment variable ``AWS_SECRET_ACCESS_KEY``;
3. the ``.env`` file in the working directory (see ``.env.example`` for the keys).

There is no fallback value: a missing secret raises :class:`SecretNotFoundError` listing
every place that was looked at. A found value is wrapped in :class:`SecretValue`, whose
repr never shows it, and is registered for redaction: any log record whose message
contains it has the value replaced by ``**********``, whatever logger or handler writes it.
The userinfo of anything URL-shaped (``postgresql://user:pw@host``, and malformed ones such as
``postgresql//user:pw@host``) is masked the same way, in log records and in the text of every
:class:`~pipelines.components.errors.PipelinesError`, whether or not the URL parses.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from pipelines.components.environment import read_dotenv
from pipelines.components.errors import ConfigError, SecretNotFoundError

MASK = "**********"
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_redacted: set[str] = set()
_redaction_lock = threading.Lock()
_installed = False


class SecretValue:
    """A secret's value with where it came from; the value shows only through :meth:`reveal`."""

    __slots__ = ("_value", "name", "source")

    def __init__(self, name: str, value: str, source: str) -> None:
        self.name = name
        self.source = source
        self._value = value
        register_redaction(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"SecretValue(name={self.name!r}, source={self.source!r}, value={MASK!r})"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError(f"Secret {self.name!r} cannot be pickled or persisted; look it up by name.")


def block_name(name: str) -> str:
    """The Prefect block name for a secret name: AWS_SECRET_ACCESS_KEY -> aws-secret-access-key."""
    return name.lower().replace("_", "-")


def _prefect_block(name: str) -> tuple[str | None, str]:
    """Read a Prefect Secret block; returns (value, what happened) and never raises."""
    try:
        from prefect.blocks.system import Secret

        block = Secret.load(block_name(name), _sync=True)
    except ValueError as exc:  # Prefect raises ValueError for a block that does not exist
        if "Unable to find block document" in str(exc) or "not found" in str(exc).lower():
            return None, "not found"
        return None, f"unreadable ({type(exc).__name__})"
    except Exception as exc:  # an unreachable API must not hide the other places
        return None, f"not reachable ({type(exc).__name__})"
    return block.get(), "found"


def get_secret(
    name: str,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    use_blocks: bool = True,
    block_reader: Callable[[str], tuple[str | None, str]] | None = None,
) -> SecretValue:
    """Look a secret up by name: Prefect Secret block, then environment, then ./.env."""
    if not _NAME_RE.match(name or ""):
        raise ConfigError(
            f"Invalid secret name {name!r}: use letters, digits and '_', e.g. AWS_SECRET_ACCESS_KEY."
        )
    environ = os.environ if environ is None else environ
    looked: list[str] = []
    if use_blocks:
        value, outcome = (block_reader or _prefect_block)(name)
        if value:
            return SecretValue(name, value, f"Prefect Secret block '{block_name(name)}'")
        looked.append(f"Prefect Secret block '{block_name(name)}' ({outcome})")
    if environ.get(name):
        return SecretValue(name, environ[name], f"environment variable {name}")
    looked.append(f"environment variable {name} (not set)")
    dotenv_path = Path(cwd or os.getcwd()) / ".env"
    dotenv = read_dotenv(dotenv_path)
    if dotenv.get(name):
        return SecretValue(name, dotenv[name], f".env file ({dotenv_path})")
    looked.append(f".env file {dotenv_path} ({'no such key' if dotenv_path.is_file() else 'no file'})")
    raise SecretNotFoundError(
        f"Secret {name!r} was not found. Looked in: "
        + "; ".join(looked)
        + f". Fix: create the Prefect Secret block '{block_name(name)}' "
        f"(prefect block create secret) or set the environment variable {name}."
    )


def find_secret(name: str, **kwargs) -> SecretValue | None:
    """Like :func:`get_secret`, for optional secrets: None when it is nowhere."""
    try:
        return get_secret(name, **kwargs)
    except SecretNotFoundError:
        return None


# scheme (also mistyped: "postgresql//", "postgresql:/"), then user[:password]@ where the @ is the
# last one of the token (a password may hold an unescaped @ or /).
_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*(?::?/{1,2}))?"
    r"(?P<user>[^\s:/@'\"<>\\()\[\]{},;]+)(?::(?P<password>[^\s'\"<>]*))?"
    r"@(?=[^\s@'\"<>]*(?:[\s'\"<>\\]|$))"
)


_TOKEN_AS_USER = ("http", "https", "ws", "wss", "ftp", "git+https")


def _mask_userinfo(match: re.Match) -> str:
    scheme = match.group("scheme") or ""
    if match.group("password") is not None:
        return f"{scheme}{match.group('user')}:***@"
    if scheme.lower().rstrip(":/") in _TOKEN_AS_USER:  # https://TOKEN@host: the user is the credential
        return f"{scheme}***@"
    return match.group(0)  # a database user, or an address such as ops@example.com


def mask_credentials(text: str) -> str:
    """Mask the password of anything URL-shaped in text (an HTTP URL's bare user is a token: masked too).

    Works on text that is not a valid URL: ``postgresql//user:pw@host/db`` becomes
    ``postgresql//user:***@host/db``; a bare address (``ops@example.com``) is left alone.
    """
    return _USERINFO.sub(_mask_userinfo, text) if "@" in text else text


def redact(text: str) -> str:
    """Replace every registered secret value in text with the mask, and mask URL credentials."""
    for value in sorted(_redacted, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    return mask_credentials(text)


def register_redaction(value: str) -> None:
    """Mask this value in every log record from now on (values shorter than 4 are too common)."""
    if not value or len(value) < 4:
        return
    with _redaction_lock:
        _redacted.add(value)


def _install_record_factory() -> None:
    """Redact every log record, whatever logger or handler writes it (installed once, on import)."""
    global _installed
    with _redaction_lock:
        if _installed:
            return
        _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's to report
            return record
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and record.exc_info[1] is not None:
            exc_text = redact(str(record.exc_info[1]))
            if exc_text != str(record.exc_info[1]):
                record.exc_info = None
                record.msg = f"{record.msg}\n{exc_text}"
        return record

    logging.setLogRecordFactory(factory)


_install_record_factory()
