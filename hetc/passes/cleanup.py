"""Dead code elimination, common subexpression elimination, constant folding."""

from dataclasses import dataclass

import numpy as np

from hetc.ir.graph import Graph, Op
from hetc.ir.interpret import run_graph
from hetc.ir.printer import format_value
from hetc.ir.weights import is_aux
from hetc.passes.pipeline import Pass, register_pass


def remove_dead_ops(g: Graph):
    """Erase ops of `g` (not its bodies) whose results nothing uses."""
    live = set(g.outputs)
    kept = []
    for op in reversed(g.ops):
        if any(v in live for v in op.outputs):
            kept.append(op)
            live.update(op.inputs)
    g.ops = kept[::-1]


def move_before(graph: Graph, op: Op, anchor: Op):
    """Graph.add appends an op; put it right before `anchor` instead."""
    graph.ops.remove(op)
    graph.ops.insert(graph.ops.index(anchor), op)


@register_pass
@dataclass(frozen=True)
class DCE(Pass):
    """Drop ops whose results nothing uses, and weights no const names."""

    name = "dce"

    def run(self, graph, ctx):
        for g in graph.graphs():
            remove_dead_ops(g)
        used = {op.attrs["name"] for op in graph.walk() if op.kind == "const" and "name" in op.attrs}
        for key in list(graph.weights):
            if (key[0] if is_aux(key) else key) not in used:  # a weight and its scales go together
                del graph.weights[key]


def _op_key(op: Op):
    """Two ops with equal keys compute the same values."""
    attrs = tuple(sorted((k, format_value(v)) for k, v in op.attrs.items()))
    body = str(op.body) if op.body is not None else None
    types = tuple(v.type for v in op.outputs)
    return (op.kind, tuple(id(v) for v in op.inputs), attrs, body, types)


@register_pass
@dataclass(frozen=True)
class CSE(Pass):
    """Merge ops of the same kind, operands and attributes."""

    name = "cse"

    def run(self, graph, ctx):
        for g in graph.graphs():
            seen: dict = {}
            kept = []
            for op in g.ops:
                key = _op_key(op)
                if key in seen:
                    for old, new in zip(op.outputs, seen[key].outputs):
                        g.replace_uses(old, new)
                else:
                    seen[key] = op
                    kept.append(op)
            g.ops = kept


@register_pass
@dataclass(frozen=True)
class Fold(Pass):
    """Evaluate ops whose operands are all constants.

    Results up to `inline_elements` are written inline, larger ones go to the
    weight store; results over `max_elements` are left unfolded so folding
    never blows up the model (an expand of a scalar, say), unless they are
    no larger than the op's operands together (a reshape of a large 1-D
    convolution's weight: unfolded, the convolution had a computed weight
    and ran the generic loop). Quantized or sparse constants are left alone:
    folding would throw their encoding away.
    """

    name = "fold"
    max_elements: int = 1 << 20
    inline_elements: int = 16

    def run(self, graph, ctx):
        for g in graph.graphs():
            consts = {op.output: op for op in g.ops if op.kind == "const"}
            new_ops = []
            for op in g.ops:
                bound = max(self.max_elements, sum(v.type.numel for v in op.inputs))
                foldable = (op.kind != "const" and op.inputs
                            and all(v in consts and not v.type.encodings for v in op.inputs)
                            and all(v.type.numel <= bound for v in op.outputs))
                if not foldable:
                    new_ops.append(op)
                    continue
                values = self._evaluate(g, op, consts)
                for v, arr in zip(op.outputs, values):
                    attrs = ({"value": arr} if arr.size <= self.inline_elements
                             else {"name": self._store(g, v.name, arr)})
                    c = Op("const", [], [v], attrs)
                    consts[v] = c
                    new_ops.append(c)
            g.ops = new_ops

    @staticmethod
    def _evaluate(g, op, consts):
        sub = Graph("fold", g.weights)
        sub.ops = [consts[v] for v in dict.fromkeys(op.inputs)] + [op]
        sub.outputs = list(op.outputs)
        return [np.asarray(a) for a in run_graph(sub, [])]

    @staticmethod
    def _store(g, base, arr):
        key, i = f"folded.{base}", 1
        while key in g.weights:
            key, i = f"folded.{base}_{i}", i + 1
        g.weights[key] = arr
        return key
