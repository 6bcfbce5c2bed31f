"""A static HTML data catalog: an index and one page per dataset, with lineage drawn from the registry.

Each page shows what the registry and the contract declare (description, owner, columns with types,
descriptions and PII flags, expectations) and what the destination holds (schema history from
``_meta/schemas``, recent runs, freshness, the warehouse table it is shared to). The lineage graph is
inline SVG built from the registry's ``inputs``: no JavaScript, nothing fetched from the network.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from html import escape
from pathlib import Path

from pipelines.components.registry import DatasetSpec, Registry
from pipelines.components.status import DatasetStatus, DestinationFacts, dataset_status

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem;color:#1d2430}
h1,h2{font-weight:600}table{border-collapse:collapse;margin:.5rem 0 1.5rem}
th,td{border:1px solid #ccd3dd;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#eef2f7}code{background:#f3f5f8;padding:0 .2rem}
.pii{color:#b00020;font-weight:600}.fresh{color:#137333}.stale{color:#b00020}
svg .node rect{fill:#eef2f7;stroke:#5b6b80}svg .node.current rect{fill:#ffe8a3;stroke:#a87b00}
svg .node text{font:12px system-ui,sans-serif;fill:#1d2430}svg .edge{stroke:#5b6b80;fill:none}
"""


def _page(title: str, body: str, css_path: str) -> str:
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)}</title><link rel=stylesheet href='{css_path}'></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


def lineage_edges(registry: Registry) -> list[tuple[str, str]]:
    """(upstream, downstream) for every input of every dataset, from the registry."""
    return sorted((upstream, spec.name) for spec in registry for upstream in spec.inputs)


def _depths(registry: Registry) -> dict[str, int]:
    depths: dict[str, int] = {}

    def depth(name: str, seen: tuple[str, ...] = ()) -> int:
        if name not in depths:
            spec = registry.get(name)
            inputs = [i for i in spec.inputs if i not in seen]
            depths[name] = 1 + max((depth(i, (*seen, name)) for i in inputs), default=-1)
        return depths[name]

    for spec in registry:
        depth(spec.name)
    return depths


def _untangle(registry: Registry, columns: dict[int, list[str]]) -> None:
    """Order each column by the mean row of its neighbours (a few barycentre sweeps), so fewer edges cross."""
    levels = sorted(columns)
    for _ in range(3):
        row = {n: i for level in levels for i, n in enumerate(columns[level])}
        for level in levels[1:]:
            columns[level].sort(
                key=lambda n: _mean([row[i] for i in registry.get(n).inputs if i in row], row[n])
            )
            row.update({n: i for i, n in enumerate(columns[level])})
        for level in reversed(levels[:-1]):
            columns[level].sort(
                key=lambda n: _mean([row[d.name] for d in registry.downstream(n) if d.name in row], row[n])
            )
            row.update({n: i for i, n in enumerate(columns[level])})


def _mean(values: list[int], default: int) -> float:
    return sum(values) / len(values) if values else float(default)


def lineage_svg(
    registry: Registry, names: set[str], *, current: str | None = None, link_prefix: str = ""
) -> str:
    """The lineage of ``names`` as an SVG: one column per depth, an arrow per input edge, nodes link to pages."""
    depths = _depths(registry)
    columns: dict[int, list[str]] = {}
    for name in sorted(names, key=lambda n: (depths[n], n)):
        columns.setdefault(depths[name], []).append(name)
    _untangle(registry, columns)
    box_w, box_h, gap_x, gap_y = 170, 28, 70, 14
    order = sorted(columns)
    where: dict[str, tuple[int, int]] = {}
    for x_index, level in enumerate(order):
        for y_index, name in enumerate(columns[level]):
            where[name] = (10 + x_index * (box_w + gap_x), 10 + y_index * (box_h + gap_y))
    width = 20 + len(order) * (box_w + gap_x) - gap_x
    height = 20 + max((len(c) for c in columns.values()), default=0) * (box_h + gap_y) - gap_y
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' class=lineage width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' role=img aria-label='lineage'>",
        "<defs><marker id=arrow viewBox='0 0 10 10' refX=10 refY=5 markerWidth=7 markerHeight=7 orient=auto>"
        "<path d='M0,0 L10,5 L0,10 z' fill='#5b6b80'/></marker></defs>",
    ]
    for upstream, downstream in lineage_edges(registry):
        if upstream not in where or downstream not in where:
            continue
        (x1, y1), (x2, y2) = where[upstream], where[downstream]
        x1, y1, y2 = x1 + box_w, y1 + box_h // 2, y2 + box_h // 2
        middle = (x1 + x2) // 2
        parts.append(
            f"<path class=edge data-from='{escape(upstream)}' data-to='{escape(downstream)}' "
            f"d='M{x1},{y1} C{middle},{y1} {middle},{y2} {x2},{y2}' marker-end='url(#arrow)'/>"
        )
    for name, (x, y) in where.items():
        css = "node current" if name == current else "node"
        parts.append(
            f"<a href='{link_prefix}{escape(name)}.html'><g class='{css}' data-dataset='{escape(name)}'>"
            f"<rect x={x} y={y} width={box_w} height={box_h} rx=4 />"
            f"<text x={x + 8} y={y + 18}>{escape(name)}</text></g></a>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _related(registry: Registry, name: str) -> set[str]:
    """The dataset with everything upstream and downstream of it."""
    found = {name}
    frontier = [name]
    while frontier:
        spec = registry.get(frontier.pop())
        for upstream in spec.inputs:
            if upstream not in found:
                found.add(upstream)
                frontier.append(upstream)
    frontier = [name]
    while frontier:
        for spec in registry.downstream(frontier.pop()):
            if spec.name not in found:
                found.add(spec.name)
                frontier.append(spec.name)
    return found


def _table(header: list[str] | None, rows: list[list[str]], css: str = "") -> str:
    head = (
        "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr></thead>" if header else ""
    )
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table class='{css}'>{head}<tbody>{body}</tbody></table>"


def _verdict(status: DatasetStatus) -> str:
    text = status.freshness_verdict + (f" (freshness {status.freshness})" if status.freshness else "")
    return f"<span class='{escape(status.freshness_verdict)}'>{escape(text)}</span>"


def _dataset_page(
    spec: DatasetSpec, registry: Registry, facts: DestinationFacts, status: DatasetStatus
) -> str:
    e = escape
    pii = set(spec.pii_columns)
    columns = [
        [
            f"<code>{e(c.name)}</code>",
            e(c.type),
            "yes" if c.nullable else "no",
            e(c.description),
            "<span class=pii>PII</span>" if c.name in pii else "",
        ]
        for c in spec.contract.columns.values()
    ]
    expectations = [
        [f"<code>{e(x.call)}</code>", e(x.severity_under(spec.quality_policy)), e(x.level)]
        for x in spec.contract.expectations
    ]
    schemas = [
        [
            str(row["version"]),
            e(str(row.get("recorded_at") or "")),
            e(row.get("change") or ""),
            e(", ".join(f"{k}: {v}" for k, v in json.loads(row["columns"]).items())),
        ]
        for row in facts.schemas
    ]
    runs = [
        [
            e(str(row.get("finished_at") or "")),
            e(row.get("workflow") or ""),
            e(row["run_id"]),
            e(row.get("mode") or ""),
            "" if row.get("rows_in") is None else f"{row['rows_in']:,}",
            "" if row.get("written") is None else f"{row['written']:,}",
            "" if row.get("quarantined") is None else f"{row['quarantined']:,}",
        ]
        for row in reversed(facts.runs[-10:])
    ]
    upstream = ", ".join(f"<a href='{e(i)}.html'>{e(i)}</a>" for i in spec.inputs) or "none (a source)"
    downstream = ", ".join(
        f"<a href='{e(d.name)}.html'>{e(d.name)}</a>" for d in registry.downstream(spec.name)
    )
    shared = (
        f"<code>{e(status.warehouse_table)}</code> holds lake version {status.shared_version}"
        f" (shared {e(str(status.shared_at))})"
        if status.warehouse_table
        else "not shared to the warehouse in this namespace"
    )
    facts_rows = [
        ["stage", e(spec.stage)],
        ["owner", e(spec.owner or "-")],
        [
            "source" if spec.stage == "cleaned" else "transform",
            f"<code>{e(spec.source or spec.transform or '')}</code>",
        ],
        ["primary key", e(", ".join(spec.primary_key) or "-")],
        ["partitioned by", e(spec.partition_field or "-")],
        ["ingestion", e(spec.ingestion_style if spec.stage == "cleaned" else "aggregate")],
        ["quality policy", e(spec.quality_policy)],
        [
            "retention",
            f"{spec.retention_days} day(s), then {e(spec.retention_action or 'pseudonymise')}"
            if spec.retention_days
            else "-",
        ],
        ["freshness", _verdict(status)],
        ["last commit", e(str(status.last_commit_at or "never"))],
        ["watermark", e(status.watermark or "-")],
        [
            "table",
            f"<code>{e(status.table)}</code> (version {status.version})"
            if status.exists
            else "not built yet",
        ],
        ["warehouse", shared],
        ["upstream", upstream],
        ["downstream", downstream or "none"],
    ]
    body = [
        "<p><a href='../index.html'>all datasets</a></p>",
        f"<h1 id=dataset>{e(spec.name)}</h1>",
        f"<p class=description>{e(spec.description or spec.contract.description or '')}</p>",
        _table(None, facts_rows, "facts"),
        "<h2>Lineage</h2>",
        lineage_svg(registry, _related(registry, spec.name), current=spec.name),
        "<h2>Columns</h2>",
        _table(["column", "type", "nullable", "description", "PII"], columns, "columns")
        if columns
        else "<p>No contract columns declared.</p>",
        "<h2>Expectations</h2>",
        _table(["expectation", "severity", "level"], expectations, "expectations")
        if expectations
        else "<p>None.</p>",
        "<h2>Schema history</h2>",
        _table(["version", "recorded", "change", "columns"], schemas, "schemas")
        if schemas
        else "<p>No schema recorded yet.</p>",
        "<h2>Recent runs</h2>",
        _table(["finished", "workflow", "run", "mode", "rows in", "written", "quarantined"], runs, "runs")
        if runs
        else "<p>No runs recorded yet.</p>",
    ]
    return _page(f"{spec.name} — data catalog", "\n".join(body), "../catalog.css")


def build_catalog(
    registry: Registry,
    facts: dict[str, DestinationFacts],
    namespace: str,
    out: Path,
    *,
    now: datetime | None = None,
) -> Path:
    """Write index.html, datasets/<name>.html and catalog.css under ``out``; returns the index."""
    now = now or datetime.now(UTC)
    out = Path(out)
    (out / "datasets").mkdir(parents=True, exist_ok=True)
    (out / "catalog.css").write_text(_CSS)
    rows = []
    for spec in registry:
        status = dataset_status(spec, namespace, facts[spec.name], now)
        (out / "datasets" / f"{spec.name}.html").write_text(
            _dataset_page(spec, registry, facts[spec.name], status)
        )
        rows.append(
            [
                f"<a href='datasets/{escape(spec.name)}.html'>{escape(spec.name)}</a>",
                escape(spec.stage),
                escape(spec.owner or "-"),
                escape(spec.description),
                _verdict(status),
            ]
        )
    body = "\n".join(
        [
            f"<h1>Data catalog: namespace {escape(namespace)}</h1>",
            f"<p>{len(rows)} dataset(s) from <code>{escape(str(registry.path))}</code>, "
            f"built {now:%Y-%m-%d %H:%M} UTC.</p>",
            "<h2>Lineage</h2>",
            lineage_svg(registry, {s.name for s in registry}, link_prefix="datasets/"),
            "<h2>Datasets</h2>",
            _table(["dataset", "stage", "owner", "description", "freshness"], rows, "datasets"),
        ]
    )
    index = out / "index.html"
    index.write_text(_page(f"Data catalog: {namespace}", body, "catalog.css"))
    return index


def catalog_for_settings(settings, out: str | Path) -> Path:
    """The catalog of this process's registry and namespace (what ``pipelines catalog`` runs)."""
    from pipelines.components.registry import load_registry
    from pipelines.components.resources import Lake, Warehouse
    from pipelines.components.status import read_destination

    registry = load_registry(settings.registry_path)
    warehouse = Warehouse.from_settings(settings)
    try:
        facts = read_destination(Lake.from_settings(settings), warehouse, list(registry))
    finally:
        warehouse.dispose()
    return build_catalog(registry, facts, settings.namespace, Path(out))
