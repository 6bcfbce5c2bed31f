"""Flow parameters described and checked from their JSON schema, before a run is started or sent.

The schema is the one Prefect derives from a flow's signature (``flow.parameters``) and stores on
every deployment (``parameter_openapi_schema``), so a local flow and a deployed one are checked the
same way. Checking here, rather than letting the run fail, means a typo never reaches a worker.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time
from enum import Enum
from typing import Any

from pipelines.components.errors import PipelinesError, did_you_mean

_MISSING = object()


class ParameterError(PipelinesError, ValueError):
    """Parameters that do not match the flow's signature; nothing was run or sent."""


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One flow parameter: its name, type (as Python would write it), default and description."""

    name: str
    type: str
    required: bool
    default: Any = None
    description: str = ""

    def __str__(self) -> str:
        text = f"{self.name}: {self.type}"
        return text if self.required else f"{text} = {self.default!r}"


def _definitions(schema: Mapping) -> Mapping:
    return schema.get("definitions") or schema.get("$defs") or {}


def _resolve(prop: Mapping, definitions: Mapping) -> Mapping:
    ref = prop.get("$ref")
    if not ref:
        return prop
    target = definitions.get(ref.rsplit("/", 1)[-1])
    return target if target is not None else {}


def type_name(prop: Mapping, definitions: Mapping | None = None) -> str:
    """A JSON-schema property as a Python type: 'str | None', 'list[int]', 'date', "Literal['a', 'b']"."""
    definitions = definitions or {}
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1]
    for combinator in ("anyOf", "oneOf"):
        if combinator in prop:
            names = list(dict.fromkeys(type_name(p, definitions) for p in prop[combinator]))
            if "None" in names:  # written last, as in the signature
                names = [n for n in names if n != "None"] + ["None"]
            return " | ".join(names)
    if "allOf" in prop and len(prop["allOf"]) == 1:
        return type_name(prop["allOf"][0], definitions)
    if "enum" in prop:
        return f"Literal[{', '.join(repr(v) for v in prop['enum'])}]"
    kind = prop.get("type")
    if isinstance(kind, list):
        return " | ".join(type_name({**prop, "type": k}, definitions) for k in kind)
    if kind == "string":
        return {"date": "date", "date-time": "datetime", "time": "time", "uuid": "UUID"}.get(
            prop.get("format", ""), "str"
        )
    if kind == "array":
        if "prefixItems" in prop:
            return f"tuple[{', '.join(type_name(p, definitions) for p in prop['prefixItems'])}]"
        items = prop.get("items")
        return f"list[{type_name(items, definitions)}]" if items else "list"
    if kind == "object":
        extra = prop.get("additionalProperties")
        if isinstance(extra, Mapping) and extra:
            return f"dict[str, {type_name(extra, definitions)}]"
        return prop.get("title", "dict") if prop.get("properties") else "dict"
    return {"integer": "int", "number": "float", "boolean": "bool", "null": "None"}.get(kind or "", "Any")


def parameters_of(schema: Mapping) -> list[Parameter]:
    """The parameters a schema declares, in signature order."""
    definitions = _definitions(schema)
    required = set(schema.get("required") or [])
    props = schema.get("properties") or {}
    ordered = sorted(props.items(), key=lambda item: item[1].get("position", len(props)))
    return [
        Parameter(
            name=name,
            type=type_name(prop, definitions),
            required=name in required,
            default=prop.get("default"),
            description=prop.get("description", ""),
        )
        for name, prop in ordered
    ]


def _parses(parse, value: str) -> bool:
    try:
        parse(value)
    except ValueError:
        return False
    return True


def _matches_type(value: Any, kind: str, prop: Mapping, definitions: Mapping) -> bool:
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "string":
        fmt = prop.get("format")
        if fmt == "date":
            if isinstance(value, date) and not isinstance(value, datetime):
                return True
            return isinstance(value, str) and _parses(date.fromisoformat, value)
        if fmt == "date-time":
            return isinstance(value, datetime) or (
                isinstance(value, str) and _parses(datetime.fromisoformat, value)
            )
        if fmt == "time":
            return isinstance(value, time) or (isinstance(value, str) and _parses(time.fromisoformat, value))
        if fmt == "uuid":
            return isinstance(value, uuid.UUID) or (isinstance(value, str) and _parses(uuid.UUID, value))
        return isinstance(value, str) or (isinstance(value, Enum) and isinstance(value.value, str))
    if kind == "array":
        if not isinstance(value, list | tuple | set | frozenset):
            return False
        items = prop.get("items")
        return not items or all(matches(v, items, definitions) for v in value)
    if kind == "object":
        if hasattr(value, "model_dump"):
            value = value.model_dump(mode="json")
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if not isinstance(value, Mapping):
            return False
        props = prop.get("properties") or {}
        if any(name not in value for name in prop.get("required") or []):
            return False
        if any(name in value and not matches(value[name], sub, definitions) for name, sub in props.items()):
            return False
        extra = prop.get("additionalProperties")
        if isinstance(extra, Mapping) and extra:
            return all(matches(v, extra, definitions) for k, v in value.items() if k not in props)
        return True
    return True


def matches(value: Any, prop: Mapping, definitions: Mapping | None = None) -> bool:
    """Whether a Python value fits a JSON-schema property (the way the flow's signature would accept it)."""
    definitions = definitions or {}
    prop = _resolve(prop, definitions)
    if "anyOf" in prop or "oneOf" in prop:
        return any(matches(value, p, definitions) for p in prop.get("anyOf", prop.get("oneOf")))
    if "allOf" in prop:
        return all(matches(value, p, definitions) for p in prop["allOf"])
    if "enum" in prop:
        plain = value.value if isinstance(value, Enum) else value
        return plain in prop["enum"]
    if "const" in prop:
        return value == prop["const"]
    kind = prop.get("type")
    if kind is None:
        return True
    kinds = kind if isinstance(kind, list) else [kind]
    return any(_matches_type(value, k, prop, definitions) for k in kinds)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def to_json_values(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as plain JSON values (dates as ISO text, models as dicts), as the API stores them."""
    return json.loads(json.dumps(dict(params), default=_json_default))


def _example(prop: Mapping, definitions: Mapping) -> str:
    if "default" in prop and prop["default"] is not None:
        return json.dumps(prop["default"], default=str)
    examples = {
        "str": '"text"',
        "int": "1",
        "float": "0.5",
        "bool": "true",
        "date": '"2013-01-31"',
        "datetime": '"2013-01-31T12:00:00"',
    }
    first = type_name(prop, definitions).split(" | ")[0]
    return examples.get(first, "...")


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_parameters(
    flow_name: str,
    schema: Mapping,
    params: Mapping[str, Any],
    *,
    preset: Iterable[str] = (),
) -> None:
    """Raise :class:`ParameterError` listing every problem: unknown names, missing ones, wrong types.

    ``preset`` names parameters that already have a value elsewhere (a deployment's defaults), so
    they are not reported missing.
    """
    definitions = _definitions(schema)
    props: Mapping[str, Mapping] = schema.get("properties") or {}
    names = list(props)
    problems: list[str] = []
    for key, value in params.items():
        if key not in props:
            problems.append(
                f"{flow_name} has no parameter {key!r}.{did_you_mean(key, names)} "
                f"Its parameters: {', '.join(names) or '(none)'}."
            )
            continue
        prop = props[key]
        if "default" in prop and value == prop["default"]:
            continue
        if not matches(value, prop, definitions):
            expected = type_name(prop, definitions)
            problems.append(
                f"{flow_name}: parameter {key!r} expects {expected}, got {type(value).__name__} "
                f"{_describe(value)}; pass e.g. {key}={_example(prop, definitions)}."
            )
            continue
        try:
            json.dumps(value, default=_json_default)
        except (TypeError, ValueError) as exc:
            problems.append(
                f"{flow_name}: parameter {key!r} cannot be sent as JSON ({exc}); pass plain values "
                "(text, numbers, booleans, lists, dicts, dates)."
            )
    missing = [n for n in schema.get("required") or [] if n not in params and n not in set(preset)]
    for name in missing:
        problems.append(
            f"{flow_name} needs parameter {name!r} ({type_name(props.get(name, {}), definitions)}); "
            f"pass {name}={_example(props.get(name, {}), definitions)}."
        )
    if len(problems) == 1:
        raise ParameterError(f"{problems[0]} Nothing was started.")
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ParameterError(
            f"{len(problems)} problems with the parameters of {flow_name}; nothing was started:\n{lines}"
        )


def parse_text_value(raw: str, prop: Mapping | None, definitions: Mapping | None = None) -> Any:
    """A command-line value for a parameter: JSON when that fits the parameter's type, else the text.

    ``-p seed=42`` gives the integer 42 for an ``int`` parameter, but the text ``"42"`` for a
    ``str`` one; ``-p start=null`` gives None.
    """
    try:
        decoded = json.loads(raw)
    except ValueError:
        return raw
    if prop is None or matches(decoded, prop, definitions) or not matches(raw, prop, definitions):
        return decoded
    return raw


def parse_pairs(pairs: Iterable[str], schema: Mapping) -> dict[str, Any]:
    """``key=value`` command-line pairs as parameters, each value read for its parameter's type."""
    definitions = _definitions(schema)
    props: Mapping[str, Mapping] = schema.get("properties") or {}
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ParameterError(f"Parameter {pair!r} is not key=value; write e.g. -p through=2013-01-31.")
        params[key] = parse_text_value(raw, props.get(key), definitions)
    return params
