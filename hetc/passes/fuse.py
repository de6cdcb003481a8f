"""Fusion: raise written-out patterns to the IR's own ops, then group ops
into `fused` regions, one kernel each in every backend.

- `raise-patterns`: x * rsqrt(mean(x^2) + eps) becomes `rms_norm` (Llama's
  hand-written RMSNorm); GELU's tanh form written out (GPT-2's gelu_new)
  becomes `gelu` with approximate="tanh"; matmul(x, W) with a constant 2-D W becomes `linear`
  (GPT-2's Conv1D), taking a following constant bias add along, so
  compression and backends see layers.
- `fuse`: a linear/matmul/conv2d with its elementwise epilogue (activations,
  bias or residual adds), and chains of elementwise ops, become `fused` ops
  whose body is the original ops. The interpreter runs bodies as written, so
  fused graphs compute the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hetc.ir.graph import Graph, Op, Value
from hetc.ir.interpret import load_const
from hetc.ir.ops import get_op
from hetc.ir.types import TensorType
from hetc.passes.pipeline import Pass, register_pass

from .cleanup import move_before, remove_dead_ops


def _const_value(v: Value, graph):
    op = v.producer
    if op is None or op.kind != "const" or v.type.encodings:
        return None
    return np.asarray(load_const(op, graph))


def _is_scalar(v, graph, value=None):
    a = _const_value(v, graph)
    return a is not None and a.size == 1 and (value is None or float(a.reshape(())) == value)


# -- raising patterns --------------------------------------------------------------

def _raise_rms_norm(graph, op, users):
    """mul(x, rsqrt(add(reduce_mean(square(x), [-1], keep), eps))) -> rms_norm(x)."""
    if op.kind != "mul":
        return False
    for x, r in (op.inputs, op.inputs[::-1]):
        rs = r.producer
        if rs is None or rs.kind != "rsqrt":
            continue
        add = rs.inputs[0].producer
        if add is None or add.kind != "add" or not _is_scalar(add.inputs[1], graph):
            continue
        mean = add.inputs[0].producer
        if mean is None or mean.kind != "reduce_mean" or not mean.attrs["keepdims"] or \
                [a % x.type.rank for a in mean.attrs["axes"]] != [x.type.rank - 1]:
            continue
        sq = mean.inputs[0].producer
        squares = sq is not None and (
            (sq.kind == "mul" and sq.inputs[0] is x and sq.inputs[1] is x) or
            (sq.kind == "pow" and sq.inputs[0] is x and _is_scalar(sq.inputs[1], graph, 2.0)))
        if not squares or op.output.type != x.type:
            continue
        eps = float(_const_value(add.inputs[1], graph).reshape(()))
        new = graph.add("rms_norm", [x], {"eps": eps, "axis": -1}, name=op.output.name + "_rms")
        move_before(graph, new.producer, op)
        graph.replace_uses(op.output, new)
        return True
    return False


def _raise_linear(graph, op, users):
    """matmul(x, W) with a constant, named, single-use W [in, out] -> linear(x, W^T)."""
    if op.kind != "matmul":
        return False
    x, w = op.inputs
    wv = _const_value(w, graph)
    if wv is None or wv.ndim != 2 or x.type.rank < 1 or "name" not in w.producer.attrs \
            or len(users.get(w, [])) != 1 or op.output.type.shape != x.type.shape[:-1] + (wv.shape[1],):
        return False

    graph.weights[w.producer.attrs["name"]] = np.ascontiguousarray(wv.T)
    w.type = TensorType((wv.shape[1], wv.shape[0]), w.type.dtype)
    new = graph.add("linear", [x, w], name=op.output.name + "_linear")
    move_before(graph, new.producer, op)
    graph.replace_uses(op.output, new)
    return True


def _raise_bias(graph, op, users):
    """add(linear(x, W), b) with a constant b [out] -> linear(x, W, b)."""
    if op.kind != "add":
        return False
    for y, b in (op.inputs, op.inputs[::-1]):
        lin = y.producer
        if lin is None or lin.kind != "linear" or len(lin.inputs) != 2 or \
                len(users.get(y, [])) != 1 or op.output.type != y.type:
            continue
        bv = _const_value(b, graph)
        if bv is None or bv.shape != (lin.inputs[1].type.shape[0],) or b.type.dtype != y.type.dtype:
            continue
        new = graph.add("linear", lin.inputs + [b], name=op.output.name + "_linear")
        move_before(graph, new.producer, op)
        graph.replace_uses(op.output, new)
        return True
    return False


def _scalar_operand(graph, v, kind):
    """(a, c) when v = kind(a, c) or kind(c, a) with a scalar constant c, else None."""
    op = v.producer
    if op is None or op.kind != kind:
        return None
    for a, c in (op.inputs, op.inputs[::-1]):
        cv = _const_value(c, graph)
        if cv is not None and cv.size == 1:
            return a, float(cv.reshape(()))
    return None


def _near(a, b):
    return abs(a - b) <= 1e-6 * abs(b)


def _cubes(graph, v, x):
    """Whether v is x^3: pow(x, 3) or x * x * x."""
    p = v.producer
    if p is None:
        return False
    if p.kind == "pow":
        return p.inputs[0] is x and _is_scalar(p.inputs[1], graph, 3.0)
    if p.kind != "mul":
        return False
    for sq, y in (p.inputs, p.inputs[::-1]):
        q = sq.producer
        if y is x and q is not None and q.kind == "mul" and list(q.inputs) == [x, x]:
            return True
    return False


def _raise_gelu_tanh(graph, op, users):
    """0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), GELU's tanh form
    written out (GPT-2's gelu_new: a pow per element, 40% of its prefill on
    x86) -> gelu(x, approximate="tanh")."""
    if op.kind != "mul":
        return False
    for a, b in (op.inputs, op.inputs[::-1]):
        half, one = _scalar_operand(graph, a, "mul"), _scalar_operand(graph, b, "add")
        if not half or not one or not _near(half[1], 0.5) or not _near(one[1], 1.0):
            continue
        x, t = half[0], one[0].producer
        if t is None or t.kind != "tanh":
            continue
        scaled = _scalar_operand(graph, t.inputs[0], "mul")
        if not scaled or not _near(scaled[1], float(np.float32(np.sqrt(2 / np.pi)))):
            continue
        inner = scaled[0].producer
        if inner is None or inner.kind != "add" or op.output.type != x.type:
            continue
        for y, cube in (inner.inputs, inner.inputs[::-1]):
            c = _scalar_operand(graph, cube, "mul")
            if y is x and c and _near(c[1], float(np.float32(0.044715))) and _cubes(graph, c[0], x):
                new = graph.add("gelu", [x], {"approximate": "tanh"},
                                name=op.output.name + "_gelu")
                move_before(graph, new.producer, op)
                graph.replace_uses(op.output, new)
                return True
    return False


RULES = (_raise_rms_norm, _raise_gelu_tanh, _raise_linear, _raise_bias)


@register_pass
@dataclass(frozen=True)
class RaisePatterns(Pass):
    name = "raise-patterns"
    linear: bool = True  # matmul with a constant weight -> linear (stores the weight transposed)

    def run(self, graph, ctx):
        rules = RULES if self.linear else (_raise_rms_norm, _raise_gelu_tanh)
        for g in graph.graphs():
            live, users = set(g.ops), g.users()
            for op in list(g.ops):
                # skip ops an earlier rewrite left dead; uses change only on a rewrite
                if op in live and any(rule(g, op, users) for rule in rules):
                    remove_dead_ops(g)
                    live, users = set(g.ops), g.users()


# -- fused regions --------------------------------------------------------------------

def _regions(graph: Graph):
    """Lists of ops to fuse: an anchor or elementwise op followed by the
    elementwise ops that alone use its result (single-use chains)."""
    users = graph.users()
    outputs = set(graph.outputs)
    taken, regions = set(), []
    for op in graph.ops:
        d = get_op(op.kind)
        if op in taken or not (d.takes_epilogue or d.epilogue):
            continue
        region = [op]
        while True:
            tail = region[-1].output
            nxt = users.get(tail, [])
            if tail in outputs or len(nxt) != 1 or not get_op(nxt[0].kind).epilogue \
                    or nxt[0] in taken:
                break
            region.append(nxt[0])
        if len(region) > 1:
            regions.append(region)
            taken.update(region)
    return regions


def _fuse(graph: Graph, region: list[Op]):
    inside = {v for op in region for v in op.outputs}
    external = []
    for op in region:
        for v in op.inputs:
            if v not in inside and v not in external:
                external.append(v)
    body = Graph("_".join(op.kind for op in region), graph.weights)
    mapping = {}
    for v in external:
        mapping[v] = body.add_input(v.name, v.type)
    for op in region:
        outs = [Value(body.fresh_name(o.name), o.type) for o in op.outputs]
        body.ops.append(Op(op.kind, [mapping[v] for v in op.inputs], outs, dict(op.attrs), op.body))
        mapping.update(zip(op.outputs, outs))
    last = region[-1].output
    body.outputs = [mapping[last]]
    fused_inputs = list(external)
    result = Value(graph.fresh_name(last.name + "_fused"), last.type)
    fused = Op("fused", fused_inputs, [result], {"pattern": body.name}, body)
    graph.ops[graph.ops.index(region[-1])] = fused
    for op in region[:-1]:
        graph.ops.remove(op)
    graph.replace_uses(last, result)


@register_pass
@dataclass(frozen=True)
class Fuse(Pass):
    name = "fuse"

    def run(self, graph, ctx):
        for region in _regions(graph):
            _fuse(graph, region)
