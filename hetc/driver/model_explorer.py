"""A graph for Google's Model Explorer (`pip install ai-edge-model-explorer`):
its graph JSON (a GraphCollection: the file its page opens as it is) and
two per-node data files to overlay on it, the layers' stored bytes and, when
the per-layer search measured it, their sensitivity.

Each op but the constants is a node: the report's per-layer decisions
(pattern, precision, bits, bytes, sensitivity, predicted speedup, why) are
its attributes, its namespace is its layer's module path (so the viewer
folds a model's blocks), its color its N:M pattern and its border its
precision, as in the HTML view; each edge carries its value's type.
"""

from __future__ import annotations

import json

from hetc.core.fsutil import atomic_write_text
from hetc.driver.html_view import COLORS, PRECISION_STROKE, node_details
from hetc.ir.report import layer_name


def _namespace(op):
    weights = [v.producer.attrs["name"] for v in op.inputs
               if v.producer is not None and v.producer.kind == "const" and
               "name" in v.producer.attrs]
    path = layer_name(weights[0]).split(".")[:-1] if weights else []
    return "/".join(path)


def graph_collection(graph, report) -> dict:
    """The graph as Model Explorer's GraphCollection (JSON-ready)."""
    rows = {r.name: r for r in report.layers}
    producer = {v: (f"input:{v.name}", 0) for v in graph.inputs}
    nodes = [{"id": f"input:{v.name}", "label": "Input", "namespace": "",
              "attrs": [{"key": "name", "value": v.name}],
              "outputsMetadata": [{"id": "0", "attrs": [
                  {"key": "tensor_shape", "value": v.type.text()},
                  {"key": "__tensor_tag", "value": v.name}]}]}
             for v in graph.inputs]
    for i, op in enumerate(graph.ops):
        if op.kind == "const":
            continue
        node_id = f"op{i}:{op.outputs[0].name}"
        data, row = node_details(op, rows)
        attrs = [{"key": "op", "value": op.kind}]
        attrs += [{"key": k, "value": v} for k, v in data["attributes"].items()]
        for k, v in data.get("layer", {}).items():
            attrs.append({"key": f"hetc.{k}", "value": "; ".join(v) if isinstance(v, list)
                          else "-" if v is None else str(v)})
        node = {"id": node_id, "label": op.kind, "namespace": _namespace(op), "attrs": attrs,
                "incomingEdges": [{"sourceNodeId": producer[v][0],
                                   "sourceNodeOutputId": str(producer[v][1]),
                                   "targetNodeInputId": str(k)}
                                  for k, v in enumerate(op.inputs) if v in producer],
                "inputsMetadata": [{"id": str(k), "attrs": [{"key": "weight",
                                                             "value": v.type.text()}]}
                                   for k, v in enumerate(op.inputs) if v not in producer],
                "outputsMetadata": [{"id": str(k), "attrs": [
                    {"key": "tensor_shape", "value": v.type.text()},
                    {"key": "__tensor_tag", "value": v.name}]}
                    for k, v in enumerate(op.outputs)]}
        if row is not None:
            node["style"] = {"backgroundColor": COLORS.get(row.pattern, "#eeeeee"),
                             "borderColor": PRECISION_STROKE.get(row.precision, "#555555"),
                             "hoveredBorderColor": "#000000"}
        nodes.append(node)
        for k, v in enumerate(op.outputs):
            producer[v] = (node_id, k)
    for k, v in enumerate(graph.outputs):
        nodes.append({"id": f"output:{k}", "label": "Output", "namespace": "",
                      "attrs": [{"key": "name", "value": v.name}],
                      "incomingEdges": [{"sourceNodeId": producer[v][0],
                                         "sourceNodeOutputId": str(producer[v][1]),
                                         "targetNodeInputId": "0"}] if v in producer else []})
    return {"label": f"hetc: {graph.name} ({report.target or 'imported'})",
            "graphs": [{"id": graph.name, "nodes": nodes}]}


def node_data(graph, report, field) -> dict | None:
    """Model Explorer node data ({graph id: GraphNodeData}) of each layer's
    `field` ("bytes" or "sensitivity"), or None when no layer has it."""
    collection = graph_collection(graph, report)
    rows = {r.name: r for r in report.layers}
    results = {}
    for i, op in enumerate(graph.ops):
        if op.kind == "const":
            continue
        row = node_details(op, rows)[1]
        value = getattr(row, field) if row is not None else None
        if value is not None:
            results[f"op{i}:{op.outputs[0].name}"] = {"value": float(value)}
    if not results:
        return None
    graph_id = collection["graphs"][0]["id"]
    return {graph_id: {"name": f"{field} per layer", "results": results,
                       "gradient": [{"stop": 0, "bgColor": "#dfe7f2"},
                                    {"stop": 1, "bgColor": "#e85d04"}]}}


def write(graph, report, path) -> list:
    """Write the graph JSON at `path` and the overlays beside it
    (PATH.bytes.json, PATH.sensitivity.json when measured); the paths written."""
    written = [path]
    atomic_write_text(path, json.dumps(graph_collection(graph, report), indent=1))
    stem = path[:-5] if path.endswith(".json") else path
    for field in ("bytes", "sensitivity"):
        data = node_data(graph, report, field)
        if data is not None:
            atomic_write_text(f"{stem}.{field}.json", json.dumps(data, indent=1))
            written.append(f"{stem}.{field}.json")
    return written
