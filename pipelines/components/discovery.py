"""Find the workflows and cookbooks: one flow per file, named after the file."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.components.errors import PipelinesError, did_you_mean, unknown_name

PACKAGES = ("workflows", "cookbooks")
_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class FlowEntry:
    """A workflow or cookbook file: its name, kind, module and one-line summary."""

    name: str
    kind: str  # "workflow" | "cookbook"
    module: str
    summary: str

    @property
    def entrypoint(self) -> str:
        return f"pipelines/{self.kind}s/{self.name}.py:{self.name}"

    def load(self):
        """Import the module and return its flow (the attribute named after the file)."""
        module = importlib.import_module(self.module)
        flow = getattr(module, self.name, None)
        if flow is None or not hasattr(flow, "fn"):
            raise PipelinesError(
                f"{self.module} must define a Prefect flow named {self.name!r} "
                "(one flow per file, named after the file)."
            )
        return flow


def _summary(path: Path) -> str:
    """First docstring line of the flow function, else of the module, read without importing."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == path.stem:
            doc = ast.get_docstring(node)
            if doc:
                return doc.strip().splitlines()[0]
    doc = ast.get_docstring(tree)
    return doc.strip().splitlines()[0] if doc else ""


def discover() -> list[FlowEntry]:
    """Every workflow and cookbook file in the package, sorted by kind then name."""
    entries = []
    for package in PACKAGES:
        folder = _ROOT / package
        for info in sorted(pkgutil.iter_modules([str(folder)]), key=lambda i: i.name):
            if info.name.startswith("_") or info.ispkg:
                continue
            entries.append(
                FlowEntry(
                    name=info.name,
                    kind=package.rstrip("s"),
                    module=f"pipelines.{package}.{info.name}",
                    summary=_summary(folder / f"{info.name}.py"),
                )
            )
    return entries


def find(name: str) -> FlowEntry:
    entries = {e.name: e for e in discover()}
    if name not in entries:
        raise unknown_name("workflow or cookbook", name, entries)
    return entries[name]


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """Parse ``key=value`` pairs; a value that is valid JSON (1, true, [..]) is decoded."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise PipelinesError(f"Parameter {pair!r} is not key=value; write e.g. -p dataset=flights.")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        params[key.strip()] = value
    return params


def check_params(flow, params: dict[str, Any]) -> None:
    """Reject parameter names the flow does not take, with "did you mean", before running."""
    signature = inspect.signature(flow.fn)
    accepted = list(signature.parameters)
    for key in params:
        if key not in accepted:
            raise PipelinesError(
                f"Flow {flow.name!r} has no parameter {key!r}.{did_you_mean(key, accepted)} "
                f"Its parameters: {', '.join(accepted) or '(none)'}."
            )
    missing = [
        n for n, p in signature.parameters.items() if p.default is inspect.Parameter.empty and n not in params
    ]
    if missing:
        raise PipelinesError(
            f"Flow {flow.name!r} needs parameter(s) {', '.join(missing)}; pass -p {missing[0]}=VALUE."
        )
    from prefect.exceptions import ParameterTypeError  # the flow is loaded, so prefect already is

    try:
        flow.validate_parameters(params)
    except ParameterTypeError as exc:  # one " - name: problem" line per bad value
        problems = [line.strip(" -") for line in str(exc).splitlines()[1:] if line.strip()] or [str(exc)]
        shown = "; ".join(
            f"{text} (got {params[name]!r})" if (name := text.partition(":")[0]) in params else text
            for text in problems
        )
        raise PipelinesError(
            f"Flow {flow.name!r} got an invalid parameter value: {shown}. Nothing was run; "
            "fix the -p value (e.g. -p full_refresh=true, -p through=2013-01-31)."
        ) from exc


def to_jsonable(result: Any) -> Any:
    """A flow result as plain JSON data (pydantic models, dataclasses, dicts, lists)."""
    if hasattr(result, "model_dump"):
        return result.model_dump(mode="json")
    if hasattr(result, "__dataclass_fields__"):
        import dataclasses

        return to_jsonable(dataclasses.asdict(result))
    if isinstance(result, dict):
        return {str(k): to_jsonable(v) for k, v in result.items()}
    if isinstance(result, list | tuple):
        return [to_jsonable(v) for v in result]
    return result
