"""Execute the example notebook with nbclient, as Jupyter would, and read what its cells printed."""

from __future__ import annotations

import json
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "submit_from_notebook.ipynb"


def execute(cwd: Path, timeout: int = 600):
    """Run every cell in a fresh python3 kernel started in ``cwd`` (it inherits this process's env)."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()
    return notebook


def printed(notebook, tag: str) -> str:
    """The text a tagged cell wrote to stdout."""
    cells = [c for c in notebook.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}"
    return "".join(
        o.get("text", "") for o in cells[0].outputs if o.output_type == "stream" and o.get("name") == "stdout"
    )


def metrics(notebook) -> dict:
    return json.loads(printed(notebook, "metrics"))


def all_text(notebook) -> str:
    """Everything the notebook displayed, for assertions about progress lines and tables."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(str(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)
