"""The results as a JSON document and a markdown table (machine, versions and date on top)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _number(value: float, unit: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    return f"{value:.3g} {unit}"


def _side(stats: dict[str, Any] | None, unit: str) -> str:
    if not stats:
        return "—"
    return (
        f"{_number(stats['median'], unit)} ({_number(stats['min'], unit)} to {_number(stats['max'], unit)})"
    )


def _score(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}x" if unit == "x" else f"{value:.3f} {unit}"


def _verdict(record: dict[str, Any]) -> str:
    if record.get("error"):
        return "**error**"
    if record.get("target") is None:
        return "reported only"
    if record.get("met"):
        return "met"
    return "**missed** (out of the floor's reach)" if record.get("out_of_reach") else "**missed**"


def markdown(document: dict[str, Any]) -> str:
    machine, versions = document["machine"], document["versions"]
    lines = [
        "# Benchmarks",
        "",
        f"Run {document['generated_at']} with `{document['command']}` "
        f"({'quick sizes, not a measurement' if document['quick'] else 'full sizes'}); "
        f"took {document['duration_seconds'] / 60:.1f} min.",
        "",
        f"Machine: {machine['cpu_count']} CPUs ({machine['cpu_model']}), {machine['ram_gib']} GiB RAM, "
        f"{machine['os']}; 1-minute load average {document['load_average']['start']} at the start, "
        f"{document['load_average']['end']} at the end (other work on the machine slows both sides).  ",
        "Versions: "
        + ", ".join(f"{name} {version}" for name, version in versions.items())
        + f"; pipelines at commit {document.get('commit', 'unknown')}.",
        "",
        "Each side ran alternately in one process after warm-up rounds (imports and data generation "
        "excluded), except where a side is a fresh interpreter by design (cold start, memory, no new data). "
        "Times are wall seconds: median (min to max) over the runs. The ratio is ours ÷ baseline of the "
        "medians; the score is what the target judges.",
        "",
        "| benchmark | size | runs | ours | baseline | ratio | score | target | verdict |",
        "|---|---|---:|---|---|---:|---:|---|---|",
    ]
    for record in document["benchmarks"]:
        target = record["target"]["text"] if record.get("target") else "—"
        ratio = record.get("ratio")
        lines.append(
            "| "
            + " | ".join(
                [
                    record["name"],
                    record["size"],
                    str(record["runs"]),
                    _side(record.get("ours_stats"), record["unit"]),
                    _side(record.get("baseline_stats"), record["unit"]),
                    f"{ratio:.2f}x" if isinstance(ratio, float) and math.isfinite(ratio) else "—",
                    _score(record.get("score"), record["score_unit"]),
                    target,
                    _verdict(record),
                ]
            )
            + " |"
        )
    lines += ["", "## What each row compares", ""]
    for record in document["benchmarks"]:
        lines.append(f"- **{record['name']}**: ours = {record['ours']}; baseline = {record['baseline']}.")
    checks = [
        (r["name"], r["details"]["verified"])
        for r in document["benchmarks"]
        if r.get("details", {}).get("verified")
    ]
    if checks:
        lines += ["", "## Checks after the runs (both sides produced the same result)", ""]
        lines += [f"- **{name}**: `{json.dumps(facts, sort_keys=True)}`" for name, facts in checks]
    floors = [r for r in document["benchmarks"] if r.get("floor_stats")]
    if floors:
        lines += [
            "",
            "## Floors (the engines alone on the same work, measured in the same rounds)",
            "",
        ]
        for r in floors:
            target = r.get("target")
            reach = ""
            if target:
                verdict = (
                    "out of its reach: no change to this library's code alone can meet it"
                    if r["out_of_reach"]
                    else "within its reach"
                )
                reach = f"; the target ({target['text']}) is {verdict}"
            lines.append(
                f"- **{r['name']}**: {r['floor']}: {_side(r['floor_stats'], r['unit'])}, "
                f"score {_score(r['floor_score'], r['score_unit'])}{reach}."
            )
    errors = [r for r in document["benchmarks"] if r.get("error")]
    if errors:
        lines += ["", "## Errors", ""]
        lines += [f"- **{r['name']}**: {r['error']}" for r in errors]
    notes = [
        (r["name"], r["details"]["notes"])
        for r in document["benchmarks"]
        if r.get("details", {}).get("notes")
    ]
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- **{name}**: {note}" for name, note in notes]
    return "\n".join(lines) + "\n"


def write(document: dict[str, Any], out: Path, docs: Path | None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(document)
    written = [out / "benchmarks.json", out / "benchmarks.md"]
    written[0].write_text(json.dumps(document, indent=2, default=str) + "\n")
    written[1].write_text(text)
    if docs is not None:
        docs.write_text(text)
        written.append(docs)
    return written
