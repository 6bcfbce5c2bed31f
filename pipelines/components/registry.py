"""The dataset registry (one CSV) and contracts (one YAML per dataset) as typed specs.

A bad registry never half-runs: :func:`load_registry` collects every problem in every row
and contract and raises them together; ``pipelines registry check`` prints them.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import importlib.util
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import yaml

from pipelines.components.errors import PipelinesError, did_you_mean, unknown_name

if TYPE_CHECKING:
    from pipelines.components.quality import ExpectationSpec

COLUMNS = (
    "name",
    "stage",
    "source",
    "format",
    "primary_key",
    "incremental_field",
    "partition_field",
    "ingestion_style",
    "lookback",
    "inputs",
    "transform",
    "pii_columns",
    "subject_key",
    "retention_days",
    "retention_action",
    "schema_policy",
    "quality_policy",
    "freshness",
    "owner",
    "description",
    "quarantine_threshold",
)
REQUIRED = ("name", "stage")
STAGES = ("cleaned", "aggregated")
FORMATS = ("csv", "json", "ndjson", "parquet", "sql")
STYLES = ("incremental", "full")
SCHEMA_POLICIES = ("evolve", "freeze", "discard_columns")
QUALITY_POLICIES = ("fail", "quarantine", "warn")
RETENTION_ACTIONS = ("pseudonymise", "null", "delete")
TYPES = (
    "string",
    "int8",
    "int16",
    "int32",
    "int64",
    "float32",
    "float64",
    "decimal(p,s)",
    "bool",
    "date",
    "datetime",
)
COLUMN_KEYS = (
    "type",
    "nullable",
    "description",
    "format",
    "timezone",
    "thousands",
    "decimal",
    "true_values",
    "false_values",
    "affixes",
)
SOURCE_KEYS = (
    "null_values",
    "encoding",
    "delimiter",
    "quote",
    "connection",
    "table",
    "query",
    "records_path",
    "pagination",
    "params",
    "headers",
    "since_param",
    "timeout",
)
CONTRACT_KEYS = ("description", "source", "columns", "expectations")

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_DURATION_RE = re.compile(r"^(\d+)\s*([smhdw])$")
_DECIMAL_RE = re.compile(r"^decimal\((\d+),\s*(\d+)\)$")
_TRANSFORM_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_SYNONYMS = {
    "int": "int64",
    "integer": "int64",
    "bigint": "int64",
    "smallint": "int16",
    "long": "int64",
    "float": "float64",
    "double": "float64",
    "real": "float32",
    "numeric": "decimal(p,s)",
    "str": "string",
    "text": "string",
    "varchar": "string",
    "boolean": "bool",
    "timestamp": "datetime",
    "timestamptz": "datetime",
}
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_INT_TYPES = {"int8": pl.Int8, "int16": pl.Int16, "int32": pl.Int32, "int64": pl.Int64}
_FLOAT_TYPES = {"float32": pl.Float32, "float64": pl.Float64}
DEFAULT_TRUE = ("true", "t", "yes", "y", "1")
DEFAULT_FALSE = ("false", "f", "no", "n", "0")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the registry, located and with what is allowed."""

    where: str  # "datasets.csv row 3" or "contracts/flights.yaml"
    column: str
    value: Any
    message: str

    def __str__(self) -> str:
        value = "" if self.value in (None, "") else f" = {self.value!r}"
        return f"{self.where}, {self.column}{value}: {self.message}"


class RegistryError(PipelinesError):
    """The registry or a contract is invalid; lists every problem found."""

    def __init__(self, problems: list[Problem], path: str | Path, *, lead: str | None = None) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        lead = lead or f"The registry {path} has {len(problems)} problem(s); nothing was run:"
        super().__init__(f"{lead}\n{lines}\nFix them and check again with `pipelines registry check`.")


def parse_duration(text: str | None) -> timedelta | None:
    """'3d' -> 3 days; '', '0' or None -> None. Units: s, m, h, d, w."""
    if text is None or str(text).strip() in ("", "0"):
        return None
    match = _DURATION_RE.match(str(text).strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration; write a number and a unit (s, m, h, d, w), e.g. 3d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def parse_threshold(problems: list[Problem], where: str, text: str | None) -> float | None:
    """'5%' or '0.05' -> 0.05; empty -> None. A share of a run's rows, from 0 to 1."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= 1:
        problems.append(
            Problem(
                where,
                "quarantine_threshold",
                text,
                "must be a share of a run's rows from 0 to 1 or a percentage, e.g. 0.05 or 5%.",
            )
        )
        return None
    return value


@dataclass(frozen=True)
class ColumnSpec:
    """One contract column: its type and how to parse it from text."""

    name: str
    type: str
    nullable: bool = True
    description: str = ""
    formats: tuple[str, ...] = ()
    timezone: str | None = None
    thousands: str | None = None
    decimal: str = "."
    true_values: tuple[str, ...] = DEFAULT_TRUE
    false_values: tuple[str, ...] = DEFAULT_FALSE
    affixes: tuple[str, ...] = ()  # texts allowed before/after a number ("$", "sq ft"), removed

    @property
    def dtype(self) -> pl.DataType:
        if self.type == "string":
            return pl.String()
        if self.type in _INT_TYPES:
            return _INT_TYPES[self.type]()
        if self.type in _FLOAT_TYPES:
            return _FLOAT_TYPES[self.type]()
        if self.type == "bool":
            return pl.Boolean()
        if self.type == "date":
            return pl.Date()
        if self.type == "datetime":
            return pl.Datetime("us", "UTC" if self.timezone else None)
        match = _DECIMAL_RE.match(self.type)
        if match:
            return pl.Decimal(int(match.group(1)), int(match.group(2)))
        raise PipelinesError(f"Column {self.name!r} has unknown type {self.type!r}.")

    @property
    def is_temporal(self) -> bool:
        return self.type in ("date", "datetime")


@dataclass(frozen=True)
class Contract:
    """What a dataset's columns are and how its source is read."""

    columns: Mapping[str, ColumnSpec]
    source: Mapping[str, Any] = field(default_factory=dict)
    # The `expectations` list as written; its shape is checked when the contract is loaded, the rest
    # against Great Expectations on first use of `expectations` (see quality.check_shapes).
    expectation_entries: tuple[Any, ...] = ()
    description: str = ""
    origin: str = "contract"  # where problems are reported, e.g. contracts/orders.yaml

    @property
    def expectations(self) -> tuple[ExpectationSpec, ...]:
        """The expectations, checked against Great Expectations when first asked for (see
        :meth:`check_expectations`)."""
        self.check_expectations()
        return self._checked[0]

    def check_expectations(self) -> None:
        """Raise RegistryError naming every problem of the expectations. GX is imported by the first call
        only, so a run with nothing to validate never pays for it; a run calls this before it parses,
        validates or commits anything."""
        problems = self._checked[1]
        if problems:
            raise RegistryError(
                problems,
                self.origin,
                lead=f"The expectations of {self.origin} have {len(problems)} problem(s); nothing was "
                "validated or committed with them:",
            )

    @functools.cached_property
    def _checked(self) -> tuple[tuple[ExpectationSpec, ...], list[Problem]]:
        if not self.expectation_entries:
            return (), []
        from pipelines.components.quality import parse_expectations

        problems: list[Problem] = []
        checked = parse_expectations(list(self.expectation_entries), self.columns, self.origin, problems)
        return checked, problems

    @property
    def null_values(self) -> tuple[str, ...]:
        values = self.source.get("null_values", [""])
        return tuple(str(v) for v in ([values] if isinstance(values, str) else values))

    @property
    def schema(self) -> dict[str, pl.DataType]:
        return {name: col.dtype for name, col in self.columns.items()}


@dataclass(frozen=True)
class DatasetSpec:
    """One registry row with its contract, validated."""

    name: str
    stage: str
    source: str = ""
    format: str = ""
    primary_key: tuple[str, ...] = ()
    incremental_field: str | None = None
    partition_field: str | None = None
    ingestion_style: str = "incremental"
    lookback: timedelta | None = None
    inputs: tuple[str, ...] = ()
    transform: str | None = None
    pii_columns: tuple[str, ...] = ()
    subject_key: str | None = None
    retention_days: int | None = None
    retention_action: str | None = None  # pseudonymise | null | delete, set when retention_days is
    schema_policy: str = "evolve"
    quality_policy: str = "quarantine"
    freshness: timedelta | None = None
    quarantine_threshold: float | None = None  # alert when quarantined / rows in of a run exceeds it
    owner: str = ""
    description: str = ""
    contract: Contract = field(default_factory=lambda: Contract(columns={}))
    row: int = 0

    @property
    def source_kind(self) -> str:
        """files, sql or http."""
        if self.format == "sql":
            return "sql"
        if self.source.startswith(("http://", "https://")):
            return "http"
        return "files"

    @property
    def incremental(self) -> bool:
        return self.ingestion_style == "incremental"


@dataclass(frozen=True)
class Registry:
    path: Path
    datasets: Mapping[str, DatasetSpec]

    def get(self, name: str) -> DatasetSpec:
        if name not in self.datasets:
            raise unknown_name("dataset", name, self.datasets)
        return self.datasets[name]

    def __iter__(self):
        return iter(self.datasets.values())

    def downstream(self, name: str) -> list[DatasetSpec]:
        return [d for d in self if name in d.inputs]


def _split(cell: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (cell or "").split("|") if p.strip())


def _choice(problems, where, column, value, allowed: Iterable[str], default: str | None = None):
    value = (value or "").strip()
    if not value and default is not None:
        return default
    if value not in allowed:
        problems.append(
            Problem(
                where, column, value, f"must be one of {', '.join(allowed)}.{did_you_mean(value, allowed)}"
            )
        )
    return value


def _values(value) -> tuple[str, ...]:
    """A list of strings from YAML; a single string is one value, not its characters."""
    items = [value] if isinstance(value, str | int | bool) else list(value or [])
    return tuple(str(v).lower() for v in items)


def _affixes(problems, where: str, col_where: str, col_type: str, value) -> tuple[str, ...]:
    """A number column's allowed prefixes/suffixes: one text or a list of non-blank texts."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) and v.strip() for v in items):
        problems.append(
            Problem(
                where,
                f"{col_where}.affixes",
                value,
                'must be a text or a list of texts, e.g. ["$", "sq ft"].',
            )
        )
        return ()
    clashing = [v for v in items if re.search(r"\d", v) or not v.strip(" +-.,")]
    if clashing:
        problems.append(
            Problem(
                where,
                f"{col_where}.affixes",
                clashing[0],
                "an affix must not contain digits or be only a sign or separator; it would change the number.",
            )
        )
        return ()
    numeric = col_type.startswith(("int", "float")) or bool(_DECIMAL_RE.match(col_type))
    if not numeric:
        problems.append(
            Problem(
                where,
                f"{col_where}.affixes",
                value,
                "affixes apply to number columns only (int, float, decimal).",
            )
        )
        return ()
    return tuple(v.strip() for v in items)


def load_contract(path: Path, problems: list[Problem], *, expectations: bool = True) -> Contract | None:
    """A contract file, or None when it cannot be read; every problem is appended to ``problems``.

    ``expectations=False`` checks only the shape of the expectations (no GX import): the rest is checked
    when they are first used (:meth:`Contract.check_expectations`)."""
    where = f"contracts/{path.name}"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        problems.append(Problem(where, "(yaml)", None, f"is not valid YAML: {exc}"))
        return None
    if not isinstance(data, dict):
        problems.append(Problem(where, "(top level)", None, "must be a mapping with a 'columns' key."))
        return None
    for key in data:
        if key not in CONTRACT_KEYS:
            problems.append(
                Problem(
                    where,
                    key,
                    None,
                    f"unknown key; allowed: {', '.join(CONTRACT_KEYS)}.{did_you_mean(key, CONTRACT_KEYS)}",
                )
            )
    source = data.get("source") or {}
    if not isinstance(source, dict):
        problems.append(Problem(where, "source", None, "must be a mapping."))
        source = {}
    for key in source:
        if key not in SOURCE_KEYS:
            problems.append(
                Problem(
                    where,
                    f"source.{key}",
                    None,
                    f"unknown key; allowed: {', '.join(SOURCE_KEYS)}.{did_you_mean(key, SOURCE_KEYS)}",
                )
            )
    raw_columns = data.get("columns")
    if not isinstance(raw_columns, dict) or not raw_columns:
        problems.append(Problem(where, "columns", None, "must map each column name to {type: ...}."))
        return None
    columns: dict[str, ColumnSpec] = {}
    for name, spec in raw_columns.items():
        col_where = f"columns.{name}"
        if isinstance(spec, str):
            spec = {"type": spec}
        if not isinstance(spec, dict):
            problems.append(Problem(where, col_where, spec, "must be a mapping like {type: int64}."))
            continue
        for key in spec:
            if key not in COLUMN_KEYS:
                problems.append(
                    Problem(
                        where,
                        f"{col_where}.{key}",
                        None,
                        f"unknown key; allowed: {', '.join(COLUMN_KEYS)}.{did_you_mean(key, COLUMN_KEYS)}",
                    )
                )
        col_type = str(spec.get("type", "")).strip().lower().replace(" ", "")
        if not ((col_type in TYPES and col_type != "decimal(p,s)") or _DECIMAL_RE.match(col_type)):
            hint = (
                f" Did you mean '{_SYNONYMS[col_type]}'?"
                if col_type in _SYNONYMS
                else did_you_mean(col_type, TYPES)
            )
            problems.append(
                Problem(
                    where,
                    f"{col_where}.type",
                    spec.get("type"),
                    f"unknown type; allowed: {', '.join(TYPES)}.{hint}",
                )
            )
            # keep the column (as text) so the same mistake is not reported again as a missing key
            columns[str(name)] = ColumnSpec(name=str(name), type="string")
            continue
        match = _DECIMAL_RE.match(col_type)
        if match and not (0 < int(match.group(1)) <= 38 and int(match.group(2)) <= int(match.group(1))):
            problems.append(
                Problem(where, f"{col_where}.type", col_type, "decimal(p,s) needs 1 <= p <= 38 and s <= p.")
            )
            continue
        formats = spec.get("format") or ()
        formats = (formats,) if isinstance(formats, str) else tuple(str(f) for f in formats)
        if formats and col_type not in ("date", "datetime"):
            problems.append(
                Problem(
                    where,
                    f"{col_where}.format",
                    formats[0],
                    "format applies to date and datetime columns only.",
                )
            )
        timezone = spec.get("timezone")
        if timezone:
            try:
                import zoneinfo

                zoneinfo.ZoneInfo(str(timezone))
            except Exception:
                problems.append(
                    Problem(
                        where,
                        f"{col_where}.timezone",
                        timezone,
                        "unknown time zone; use an IANA name such as UTC or America/New_York.",
                    )
                )
        affixes = _affixes(problems, where, col_where, col_type, spec.get("affixes"))
        nullable = spec.get("nullable", True)
        if not isinstance(nullable, bool):
            problems.append(Problem(where, f"{col_where}.nullable", nullable, "must be true or false."))
            nullable = True
        columns[str(name)] = ColumnSpec(
            name=str(name),
            type=col_type,
            nullable=nullable,
            description=str(spec.get("description", "")),
            formats=formats,
            timezone=str(timezone) if timezone else None,
            thousands=spec.get("thousands"),
            decimal=str(spec.get("decimal", ".")),
            true_values=_values(spec.get("true_values", DEFAULT_TRUE)),
            false_values=_values(spec.get("false_values", DEFAULT_FALSE)),
            affixes=affixes,
        )
    entries, shape_problems = (), []
    if data.get("expectations") is not None:
        from pipelines.components.quality import check_shapes

        entries = check_shapes(data["expectations"], where, shape_problems)
    contract = Contract(
        columns=columns,
        source=source,
        expectation_entries=entries,
        description=str(data.get("description", "")),
        origin=where,
    )
    # With ``expectations``, the GX check runs now and its result stays with the contract for later use;
    # it reports the shape problems too, in the order of the entries.
    problems += contract._checked[1] if expectations and entries else shape_problems
    return contract


def _check_columns(problems, where, column, names: Iterable[str], contract: Contract | None) -> None:
    if contract is None:
        return
    for name in names:
        if name not in contract.columns:
            problems.append(
                Problem(
                    where,
                    column,
                    name,
                    f"is not a column of the contract.{did_you_mean(name, contract.columns)}",
                )
            )


def _parse_row(
    row: dict[str, str],
    number: int,
    contracts_dir: Path,
    problems: list[Problem],
    names: set[str],
    expectations: bool = True,
):
    where = f"datasets.csv row {number}"
    name = (row.get("name") or "").strip()
    if not _NAME_RE.match(name):
        problems.append(
            Problem(
                where, "name", name, "must be 1-63 lower-case letters, digits or '_', starting with a letter."
            )
        )
    elif name in names:
        problems.append(Problem(where, "name", name, "is declared twice; dataset names are unique."))
    names.add(name)
    stage = _choice(problems, where, "stage", row.get("stage"), STAGES)
    style = _choice(problems, where, "ingestion_style", row.get("ingestion_style"), STYLES, "incremental")
    schema_policy = _choice(
        problems, where, "schema_policy", row.get("schema_policy"), SCHEMA_POLICIES, "evolve"
    )
    quality_policy = _choice(
        problems, where, "quality_policy", row.get("quality_policy"), QUALITY_POLICIES, "quarantine"
    )
    fmt = (row.get("format") or "").strip()
    source = (row.get("source") or "").strip()

    contract_path = contracts_dir / f"{name}.yaml"
    contract = None
    if contract_path.is_file():
        contract = load_contract(contract_path, problems, expectations=expectations)
    elif stage == "cleaned":
        problems.append(
            Problem(where, "name", name, f"has no contract; create {contract_path} with its columns.")
        )

    if stage == "cleaned":
        if not source:
            problems.append(
                Problem(
                    where,
                    "source",
                    "",
                    "is required for a cleaned dataset: a glob under the landing URL, sql:<table> or an http(s) URL.",
                )
            )
        scheme = source.split("://", 1)[0].lower() if "://" in source else None
        if scheme == "file" and not source[len("file://") :].startswith("/"):
            problems.append(
                Problem(
                    where,
                    "source",
                    source,
                    "is a file:// URL without an absolute path: write file:///absolute/path/*.csv "
                    "(three slashes), or a glob relative to the landing URL.",
                )
            )
        elif scheme not in (None, "file", "s3", "http", "https"):
            problems.append(
                Problem(
                    where,
                    "source",
                    source,
                    f"uses {scheme}://, which ingest cannot read: use a glob under the landing URL, an absolute "
                    "path, a file:// or s3:// URL, sql:<table> or an http(s) URL.",
                )
            )
        if fmt not in FORMATS:
            problems.append(
                Problem(
                    where, "format", fmt, f"must be one of {', '.join(FORMATS)}.{did_you_mean(fmt, FORMATS)}"
                )
            )
        if fmt == "sql" and contract is not None and not contract.source.get("connection"):
            problems.append(
                Problem(
                    where,
                    "format",
                    fmt,
                    "a sql source needs source.connection (the name of a secret holding the database URL) in its contract.",
                )
            )
    elif stage == "aggregated":
        inputs = _split(row.get("inputs"))
        if not inputs:
            problems.append(
                Problem(
                    where,
                    "inputs",
                    "",
                    "an aggregated dataset names its upstream datasets, separated by '|'.",
                )
            )
        transform = (row.get("transform") or "").strip()
        if not _TRANSFORM_RE.match(transform):
            problems.append(
                Problem(
                    where,
                    "transform",
                    transform,
                    "must be module:function, e.g. pipelines.transforms.flights:daily_delays.",
                )
            )

    primary_key = _split(row.get("primary_key"))
    incremental_field = (row.get("incremental_field") or "").strip() or None
    partition_field = (row.get("partition_field") or "").strip() or None
    if stage == "cleaned" and not primary_key:
        problems.append(
            Problem(
                where, "primary_key", "", "is required: the column(s) that identify a row, separated by '|'."
            )
        )
    if stage == "cleaned" and style == "incremental" and fmt == "sql" and not incremental_field:
        problems.append(
            Problem(
                where,
                "incremental_field",
                "",
                "an incremental sql source needs the field to push the predicate down on.",
            )
        )
    _check_columns(problems, where, "primary_key", primary_key, contract)
    _check_columns(
        problems, where, "incremental_field", [incremental_field] if incremental_field else [], contract
    )
    _check_columns(problems, where, "partition_field", [partition_field] if partition_field else [], contract)
    pii = _split(row.get("pii_columns"))
    _check_columns(problems, where, "pii_columns", pii, contract)
    subject_key = (row.get("subject_key") or "").strip() or None
    _check_columns(problems, where, "subject_key", [subject_key] if subject_key else [], contract)

    durations = {}
    for column in ("lookback", "freshness"):
        try:
            durations[column] = parse_duration(row.get(column))
        except ValueError as exc:
            problems.append(Problem(where, column, row.get(column), str(exc) + "."))
            durations[column] = None
    quarantine_threshold = parse_threshold(problems, where, row.get("quarantine_threshold"))
    retention_days, retention_action = _parse_retention(problems, where, row, pii, contract)

    return DatasetSpec(
        name=name,
        stage=stage,
        source=source,
        format=fmt,
        primary_key=primary_key,
        incremental_field=incremental_field,
        partition_field=partition_field,
        ingestion_style=style,
        lookback=durations["lookback"],
        inputs=_split(row.get("inputs")),
        transform=(row.get("transform") or "").strip() or None,
        pii_columns=pii,
        subject_key=subject_key,
        retention_days=retention_days,
        retention_action=retention_action,
        schema_policy=schema_policy,
        quality_policy=quality_policy,
        freshness=durations["freshness"],
        quarantine_threshold=quarantine_threshold,
        owner=(row.get("owner") or "").strip(),
        description=(row.get("description") or "").strip(),
        contract=contract or Contract(columns={}),
        row=number,
    )


def _parse_retention(
    problems: list[Problem],
    where: str,
    row: Mapping[str, str],
    pii: tuple[str, ...],
    contract: Contract | None,
) -> tuple[int | None, str | None]:
    """retention_days and retention_action, checked together (see docs/lifecycle.md)."""
    days_text = (row.get("retention_days") or "").strip()
    action = (row.get("retention_action") or "").strip() or None
    days = None
    if days_text:
        if days_text.isdigit() and int(days_text) >= 1:
            days = int(days_text)
        else:
            problems.append(
                Problem(where, "retention_days", days_text, "must be a whole number of days, at least 1.")
            )
    if action is not None and action not in RETENTION_ACTIONS:
        problems.append(
            Problem(
                where,
                "retention_action",
                action,
                f"must be one of {', '.join(RETENTION_ACTIONS)}.{did_you_mean(action, RETENTION_ACTIONS)}",
            )
        )
        return days, None
    if action is not None and not days_text:
        problems.append(
            Problem(
                where,
                "retention_action",
                action,
                "says what happens after retention_days, which is empty: set retention_days too, or clear it.",
            )
        )
        return None, None
    if days is None:
        return None, None
    action = action or "pseudonymise"
    if action != "delete" and not pii:
        problems.append(
            Problem(
                where,
                "retention_days",
                days_text,
                f"expires the pii_columns ({action}), and this dataset declares none: name them in pii_columns, "
                "or set retention_action=delete to remove whole raw files after that many days.",
            )
        )
    columns = contract.columns if contract is not None else {}
    for name in pii:
        column = columns.get(name)
        if column is None:
            continue
        if action == "pseudonymise" and column.type != "string":
            problems.append(
                Problem(
                    where,
                    "retention_action",
                    action,
                    f"replaces {name} with a keyed hash (text), but the contract types it {column.type}: "
                    "use retention_action=null or delete for this dataset, or type the column string.",
                )
            )
        if action == "null" and not column.nullable:
            problems.append(
                Problem(
                    where,
                    "retention_action",
                    action,
                    f"empties {name}, which the contract declares nullable: false, so reprocessing raw would "
                    "quarantine every expired row: use pseudonymise or delete, or make the column nullable.",
                )
            )
    return days, action


def check_registry(
    path: str | Path, *, expectations: bool = True
) -> tuple[dict[str, DatasetSpec], list[Problem]]:
    """Parse and validate every row and contract; returns the specs and every problem found.

    ``expectations=False`` leaves the contracts' expectations to be checked against Great Expectations
    when first used (their shape is still checked): what runs do, so that GX is imported only by a run
    that validates something."""
    path = Path(path)
    problems: list[Problem] = []
    if not path.is_file():
        return {}, [
            Problem(str(path), "(file)", None, "does not exist; set PIPELINES_REGISTRY to the registry CSV.")
        ]
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        for column in header:
            if column not in COLUMNS:
                problems.append(
                    Problem(
                        "datasets.csv header",
                        column,
                        None,
                        f"unknown column.{did_you_mean(column, COLUMNS)} Known: {', '.join(COLUMNS)}.",
                    )
                )
        for column in REQUIRED:
            if column not in header:
                problems.append(Problem("datasets.csv header", column, None, "required column is missing."))
        specs: dict[str, DatasetSpec] = {}
        names: set[str] = set()
        for number, row in enumerate(reader, start=2):
            if None in row:
                problems.append(
                    Problem(
                        f"datasets.csv row {number}",
                        "(row)",
                        None,
                        "has more cells than the header; quote cells that contain commas.",
                    )
                )
                continue
            if not any((v or "").strip() for v in row.values()):
                continue
            spec = _parse_row(row, number, path.parent / "contracts", problems, names, expectations)
            specs.setdefault(spec.name, spec)
    if any(spec.contract.expectation_entries for spec in specs.values()):
        from pipelines.components.quality import check_references

        check_references(specs, problems)
    for spec in specs.values():
        for upstream in spec.inputs:
            if upstream not in specs:
                problems.append(
                    Problem(
                        f"datasets.csv row {spec.row}",
                        "inputs",
                        upstream,
                        f"is not a dataset in the registry.{did_you_mean(upstream, specs)}",
                    )
                )
        if spec.transform and spec.stage == "aggregated" and _TRANSFORM_RE.match(spec.transform):
            module = spec.transform.split(":")[0]
            if importlib.util.find_spec(module.split(".")[0]) is None:
                problems.append(
                    Problem(
                        f"datasets.csv row {spec.row}",
                        "transform",
                        spec.transform,
                        f"module {module!r} cannot be imported.",
                    )
                )
    return specs, problems


def load_registry(path: str | Path) -> Registry:
    """The registry, or a RegistryError listing every problem (nothing half-runs).

    Parsed once per version of its files: a cookbook's tasks each load it, and parsing every contract
    costs milliseconds per dataset. An edited CSV or contract (other content) is parsed again; a
    registry with problems is never kept. The contracts' expectations are checked against Great
    Expectations when first used (``Contract.expectations``), not here: importing GX takes seconds,
    and a run with no new data validates nothing."""
    return _parsed(str(path), _fingerprint(Path(path)))


def _fingerprint(path: Path) -> str:
    """What the registry was read from: the CSV and every contract file, by name and content."""
    digest = hashlib.blake2b(digest_size=16)
    for file in [path, *sorted(path.parent.joinpath("contracts").glob("*"))]:
        digest.update(str(file).encode() + b"\0")
        try:
            digest.update(file.read_bytes() if file.is_file() else b"(not a file)")
        except OSError as exc:
            digest.update(f"(unreadable: {exc})".encode())
        digest.update(b"\0")
    return digest.hexdigest()


@functools.lru_cache(maxsize=8)
def _parsed(path: str, fingerprint: str) -> Registry:
    specs, problems = check_registry(path, expectations=False)
    if problems:
        raise RegistryError(problems, path)
    return Registry(path=Path(path), datasets=specs)
