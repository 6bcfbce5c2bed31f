"""Error types shared by every component, and the "did you mean" helper."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PipelinesError(Exception):
    """Base class: every error the library raises on purpose says what, where and the fix.

    Its text never carries a credential: registered secret values and the userinfo of anything
    URL-shaped are masked when it is raised (see :func:`pipelines.components.secrets.redact`), so
    neither a log, a Prefect state message nor a stored result can show them.
    """

    def __init__(self, *args: object) -> None:
        from pipelines.components.secrets import redact  # secrets imports this module

        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class ConfigError(PipelinesError):
    """A setting or environment value is missing or invalid."""


class SecretNotFoundError(ConfigError):
    """A secret was looked up by name and found nowhere."""


class UnknownNameError(PipelinesError):
    """A workflow, cookbook, dataset or column name that does not exist."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    matches = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" Did you mean '{matches[0]}'?" if matches else ""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> UnknownNameError:
    choices = sorted(set(choices))
    listed = ", ".join(choices) if choices else "(none)"
    return UnknownNameError(f"Unknown {kind} '{name}'.{did_you_mean(name, choices)} Known {kind}s: {listed}.")


class NamespaceIsolationError(PipelinesError):
    """A write aimed outside the namespace's own prefix (e.g. research writing into serving's data)."""


def retry_transient(task, task_run, state) -> bool:
    """Prefect's ``retry_condition_fn`` (called with task, task_run, state): retry only a transient error
    (network, 429/5xx, lock timeouts; see ``sources.is_transient``), raised itself or as the cause."""
    from pipelines.components.sources import is_transient

    try:
        state.result()
    except Exception as exc:
        return is_transient(exc) or is_transient(exc.__cause__ or exc)
    return False
