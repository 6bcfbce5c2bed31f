"""The shape STYLE.md asks for: one flow per workflow/cookbook file, named after the file."""

import ast
from pathlib import Path

import pytest

import pipelines
from pipelines.components.discovery import discover
from pipelines.components.results import result_problem


@pytest.mark.parametrize("entry", discover(), ids=lambda e: e.name)
def test_each_file_exports_one_flow_named_after_it(entry):
    flow = entry.load()
    assert flow.name == entry.name
    assert entry.summary, (
        f"{entry.module}: the flow needs a docstring; its first line is what `pipelines list` shows"
    )
    problem = result_problem(flow)
    assert problem is None, f"{entry.module}: another process could not read the flow's result: {problem}"


def test_there_is_at_least_one_workflow_and_one_cookbook():
    kinds = {e.kind for e in discover()}
    assert kinds == {"workflow", "cookbook"}


# Delta writes live in pipelines/lake ---------------------------------------------------------

_WRITE_IMPORTS = {"write_deltalake", "CommitProperties", "Transaction", "WriterProperties"}
_WRITE_CALLS = {"merge", "vacuum", "create_write_transaction", "optimize", "restore", "repair", "delete"}


def _delta_writes(path: Path) -> list[str]:
    """Where a module imports deltalake's write API, or calls a table's write/delete/vacuum methods."""
    tree = ast.parse(path.read_text(), str(path))
    imports_deltalake = False
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("deltalake"):
            imports_deltalake = True
            found += [f"line {node.lineno}: imports {a.name}" for a in node.names if a.name in _WRITE_IMPORTS]
        elif isinstance(node, ast.Import) and any(a.name.startswith("deltalake") for a in node.names):
            imports_deltalake = True
            found.append(f"line {node.lineno}: imports deltalake")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _WRITE_CALLS
        ):
            receiver = ast.unparse(node.func.value)
            # Storage.delete (files) and the lake's own API are fine; a DeltaTable's methods are not.
            suspect = node.func.attr != "delete" or imports_deltalake or "table" in receiver.lower()
            if suspect and not receiver.startswith(
                ("lake", "self.lake", "storage", "self.storage", "self.fs", "fs")
            ):
                found.append(f"line {node.lineno}: {receiver}.{node.func.attr}(...)")
    return found


def test_only_pipelines_lake_writes_deletes_or_vacuums_delta_tables():
    package = Path(pipelines.__file__).parent
    offenders = {
        str(path.relative_to(package.parent)): found
        for path in sorted(package.rglob("*.py"))
        if package / "lake" not in path.parents and (found := _delta_writes(path))
    }
    assert not offenders, (
        "Delta tables are written, merged, deleted and vacuumed only through pipelines/lake "
        f"(Lake.merge/overwrite/replace_partitions/append/delete_partitions/replace_where/vacuum): {offenders}"
    )


def test_the_layout_check_catches_a_direct_write(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from deltalake import DeltaTable, write_deltalake\n\ndef f(t):\n    t.merge(1, 'p')\n")
    assert _delta_writes(module) == ["line 1: imports write_deltalake", "line 4: t.merge(...)"]
