"""The MLIR-like text form of a Graph (see docs/ir-text.md).

Printing is canonical: attributes at their default value are left out, floats
print so they parse back to the same bits, so `parse(print(g)) == g`.
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING

import numpy as np

from .dtypes import DType
from .ops import get_op

if TYPE_CHECKING:  # the graph prints itself with this module
    from .graph import Graph, Op

_BARE_WEIGHT = re.compile(r"^[A-Za-z0-9_.$:/-]+$")


def _scalar(x) -> str:
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    f = float(x)
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return repr(f)


def format_value(v) -> str:
    if isinstance(v, DType):
        return v.name
    if isinstance(v, str):  # JSON's escapes; \u ones only where UTF-8 cannot go (lone surrogates)
        return json.dumps(v, ensure_ascii=not _encodable(v))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    if isinstance(v, np.ndarray):
        return format_dense(v)
    return _scalar(v)


def _encodable(text) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def format_dense(a: np.ndarray) -> str:
    def rec(x):
        if x.ndim == 0:
            return _scalar(x.item() if x.dtype.type.__module__ == "numpy" else float(x))
        return "[" + ", ".join(rec(e) for e in x) + "]"
    return f"dense<{rec(np.asarray(a))}>"


def format_weight_name(name: str) -> str:
    return "@" + (name if _BARE_WEIGHT.match(name) else format_value(name))


def _attrs_text(op: Op) -> str:
    opdef = get_op(op.kind)
    shown = []
    for a in opdef.attrs:
        if a.name not in op.attrs or (op.kind == "const"):
            continue
        v = op.attrs[a.name]
        default = list(a.default) if isinstance(a.default, tuple) else a.default
        if v == default:
            continue
        shown.append(f"{a.name} = {format_value(v)}")
    return " {" + ", ".join(shown) + "}" if shown else ""


def _op_lines(op: Op, indent: str) -> list[str]:
    results = ", ".join("%" + v.name for v in op.outputs)
    types = ", ".join(v.type.text() for v in op.outputs)
    if op.kind == "const":
        src = (format_weight_name(op.attrs["name"]) if "name" in op.attrs
               else format_dense(op.attrs["value"]))
        return [f"{indent}{results} = const {src} : {types}"]
    operands = ", ".join("%" + v.name for v in op.inputs)
    head = f"{indent}{results} = {op.kind}({operands}){_attrs_text(op)} : {types}"
    if op.body is None:
        return [head]
    body = _graph_lines(op.body, indent)
    return [head + " " + body[0].lstrip()] + body[1:]


def _graph_lines(g: Graph, indent: str = "") -> list[str]:
    args = ", ".join(f"%{v.name}: {v.type.text()}" for v in g.inputs)
    rets = ", ".join(v.type.text() for v in g.outputs)
    lines = [f"{indent}graph {format_weight_name(g.name)}({args}) -> ({rets}) {{"]
    for op in g.ops:
        lines += _op_lines(op, indent + "  ")
    ret = ", ".join("%" + v.name for v in g.outputs)
    lines.append(f"{indent}  return {ret}".rstrip())
    lines.append(indent + "}")
    return lines


def print_graph(g: Graph) -> str:
    return "\n".join(_graph_lines(g)) + "\n"
