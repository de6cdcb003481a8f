"""One self-contained HTML page of a compiled (or imported) graph: the
graph drawn as SVG (ops as nodes in topological layers, values as edges
with their types; a layer's node colored by its N:M pattern and precision
and as wide as its weights' bytes), the report's per-layer decisions as a
table, and, when given, the IR after each pass with a diff to the one
before. No server, no network: the page holds its data as JSON and a few
lines of script that show a node's details when it is clicked.

Everything from the model (names, types, attributes, the report's text)
reaches the page through html.escape or json (with "</" escaped), never as
markup.
"""

from __future__ import annotations

import difflib
import html
import json
import math
import re

from hetc.ir.report import layer_name

COLORS = {"dense": "#dfe7f2", "2:4": "#f7c873", "1:4": "#f29e6d", "1:3": "#e87d7d",
          "2:8": "#d7a5e4", "4:8": "#b9d98f"}
PRECISION_STROKE = {"i8": "#2d6a4f", "i4": "#9d0208", "u4": "#9d0208", "i3": "#6a040f",
                    "u3": "#6a040f", "f16": "#1d3557", "bf16": "#1d3557"}
NODE_H, LAYER_W, ROW_H = 34, 190, 56
DUMP = re.compile(r"^// -----// IR Dump (After|Before) (.*?) //----- //$", re.M)


def _layers(graph):
    """{op: depth}: the longest path from the inputs, in ops."""
    depth, value_depth = {}, {v: 0 for v in graph.inputs}
    for op in graph.ops:
        if op.kind == "const":
            continue
        d = 1 + max((value_depth.get(v, 0) for v in op.inputs), default=0)
        depth[op] = d
        for v in op.outputs:
            value_depth[v] = d
    return depth, value_depth


def node_details(op, rows):
    weights = [v for v in op.inputs if v.producer is not None and v.producer.kind == "const"
               and "name" in v.producer.attrs]
    row = rows.get(layer_name(weights[0].producer.attrs["name"])) if weights else None
    data = {"op": op.kind, "result": [f"%{v.name}: {v.type.text()}" for v in op.outputs],
            "inputs": [f"%{v.name}: {v.type.text()}" for v in op.inputs],
            "attributes": {k: repr(v) for k, v in op.attrs.items()}}
    if row is not None:
        data["layer"] = {k: getattr(row, k) for k in ("name", "pattern", "precision", "bits",
                                                     "bytes", "bytes_before", "sensitivity",
                                                     "speedup", "why")}
    return data, row


def _svg(graph, report):
    rows = {r.name: r for r in report.layers}
    depth, value_depth = _layers(graph)
    per_layer, pos, nodes, details = {}, {}, [], []
    top_bytes = max((r.bytes for r in report.layers), default=1) or 1
    for v in graph.inputs:
        pos[v] = (0, per_layer.get(0, 0))
        per_layer[0] = per_layer.get(0, 0) + 1
    for op in graph.ops:
        if op.kind == "const":
            continue
        d = depth[op]
        slot = per_layer.get(d, 0)
        per_layer[d] = slot + 1
        for v in op.outputs:
            pos[v] = (d, slot)
        data, row = node_details(op, rows)
        details.append(data)
        fill = COLORS.get(row.pattern, "#eeeeee") if row else "#ffffff"
        stroke = PRECISION_STROKE.get(row.precision, "#555555") if row else "#999999"
        width = 120 + (50 * math.log2(1 + row.bytes) / math.log2(1 + top_bytes) if row else 0)
        x, y = 20 + d * LAYER_W, 20 + slot * ROW_H
        label = op.kind + (f" {row.pattern} {row.precision}" if row else "")
        nodes.append(
            f'<g class="node" data-id="{len(details) - 1}" tabindex="0">'
            f'<rect x="{x}" y="{y}" width="{width:.0f}" height="{NODE_H}" rx="6" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="{3 if row else 1}"/>'
            f'<text x="{x + 8}" y="{y + 21}">{html.escape(label[:28])}</text></g>')
    edges = []
    for op in graph.ops:
        if op.kind == "const":
            continue
        x1 = 20 + depth[op] * LAYER_W
        y1 = 20 + pos[op.outputs[0]][1] * ROW_H + NODE_H / 2
        for v in op.inputs:
            if v not in pos:
                continue  # a constant
            d, slot = pos[v]
            x0, y0 = 20 + d * LAYER_W + (0 if d == 0 else 150), 20 + slot * ROW_H + NODE_H / 2
            edges.append(f'<path d="M{x0},{y0} C{x0 + 30},{y0} {x1 - 30},{y1} {x1},{y1}" '
                         f'class="edge"><title>{html.escape(v.type.text())}</title></path>')
    inputs = [f'<g class="input"><rect x="-60" y="{20 + i * ROW_H}" width="60" '
              f'height="{NODE_H}" rx="6" fill="#ffffff" stroke="#333"/><text x="-52" '
              f'y="{41 + i * ROW_H}">%{html.escape(v.name[:8])}</text></g>'
              for i, v in enumerate(graph.inputs)]
    width = 140 + (max(depth.values(), default=0) + 1) * LAYER_W
    height = 40 + max(per_layer.values(), default=1) * ROW_H
    svg = (f'<svg id="graph" xmlns="http://www.w3.org/2000/svg" viewBox="-70 0 {width} '
           f'{height}" width="{width}" height="{height}">' + "".join(edges) +
           "".join(inputs) + "".join(nodes) + "</svg>")
    return svg, details


def _table(report):
    head = ("layer", "op", "N:M", "dtype", "bits/w", "bytes before", "bytes after",
            "sensitivity", "speedup", "why")
    body = []
    for r in report.layers:
        cells = (r.name, r.op, r.pattern, r.precision, f"{r.bits:g}", f"{r.bytes_before:,}",
                 f"{r.bytes:,}", "-" if r.sensitivity is None else f"{r.sensitivity:.3g}",
                 "-" if r.speedup is None else f"{r.speedup:.2f}x", "; ".join(r.why))
        body.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return ("<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) +
            "</tr></thead><tbody>" + "".join(body) + "</tbody></table>")


def _passes(dumps):
    """The IR after each pass (from --print-ir-after-all's text) with a diff
    to the one before."""
    parts = DUMP.split(dumps or "")
    out, before = [], ""
    for i in range(1, len(parts) - 2, 3):
        when, name, text = parts[i], parts[i + 1], parts[i + 2].strip("\n")
        diff = "\n".join(difflib.unified_diff(before.splitlines(), text.splitlines(),
                                              "before", f"{when.lower()} {name}", lineterm=""))
        out.append(f"<details><summary>{html.escape(when)} {html.escape(name)}</summary>"
                   f"<pre class=\"diff\">{html.escape(diff or '(no change)')}</pre>"
                   f"<pre>{html.escape(text)}</pre></details>")
        before = text
    return "".join(out)


SCRIPT = """
const details = JSON.parse(document.getElementById('details-data').textContent);
const panel = document.getElementById('details');
function show(node) {
  document.querySelectorAll('.node.selected').forEach(n => n.classList.remove('selected'));
  node.classList.add('selected');
  panel.textContent = JSON.stringify(details[Number(node.dataset.id)], null, 2);
}
document.querySelectorAll('.node').forEach(node => {
  node.addEventListener('click', () => show(node));
  node.addEventListener('keydown', e => { if (e.key === 'Enter') show(node); });
});
// #click-first: click the first node on load (how the tests drive a headless browser)
if (location.hash === '#click-first') {
  const first = document.querySelector('.node');
  if (first) first.dispatchEvent(new MouseEvent('click', {bubbles: true}));
}
document.body.dataset.ready = 'yes';
"""
STYLE = """
body { font: 14px sans-serif; margin: 16px; }
#view { display: flex; gap: 16px; align-items: flex-start; }
#canvas { overflow: auto; max-width: 75vw; border: 1px solid #ccc; }
#details { white-space: pre-wrap; font: 12px monospace; min-width: 320px; }
.edge { fill: none; stroke: #888; stroke-width: 1.5; }
.node { cursor: pointer; } .node text, .input text { font: 12px monospace; }
.node.selected rect { stroke: #000; stroke-width: 4; }
table { border-collapse: collapse; margin-top: 16px; }
td, th { border: 1px solid #ccc; padding: 2px 6px; font-size: 12px; }
pre { font-size: 12px; } .diff { background: #f6f8fa; }
"""


def render(graph, report, dumps=None) -> str:
    """The page (a string) for `graph` and its `report`; `dumps`: the text
    --print-ir-after-all wrote, for the per-pass views."""
    svg, details = _svg(graph, report)
    data = json.dumps(details).replace("</", "<\\/")
    legend = " ".join(f'<span style="background:{c};padding:0 6px">{html.escape(k)}</span>'
                      for k, c in COLORS.items())
    title = html.escape(f"@{graph.name} for target {report.target or '-'}")
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
            f"<title>hetc: {title}</title><style>{STYLE}</style></head><body>"
            f"<h1>hetc: {title}</h1><p>N:M (fill): {legend}; precision: the border "
            f"(green int8, red int4, blue f16); width: the weights' bytes. Click a node.</p>"
            f"<div id=\"view\"><div id=\"canvas\">{svg}</div>"
            f"<pre id=\"details\">(click a node)</pre></div>"
            f"<h2>Layers</h2>{_table(report)}"
            + (f"<h2>The IR after each pass</h2>{_passes(dumps)}" if dumps else "") +
            f"<script type=\"application/json\" id=\"details-data\">{data}</script>"
            f"<script>{SCRIPT}</script></body></html>")
