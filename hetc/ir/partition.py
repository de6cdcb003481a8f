"""Split a graph into consecutive parts, each a graph of its own.

Some hardware compiles a large model only in pieces (an NPU's compiler and
memory have limits). Parts run one after another; a part's inputs are graph
inputs and values earlier parts computed. Cuts go near equal shares of the
weight bytes, where the fewest bytes of activations cross (in a decoder:
between layers, where the residual stream and a few shared tensors cross).
Constants are copied into every part that uses them.
"""

from __future__ import annotations

from dataclasses import dataclass

from hetc.core.errors import UsageError

from .graph import Graph
from .weights import AUX_KINDS, WeightStore, aux_key


@dataclass
class Part:
    graph: Graph
    inputs: list  # names of the values it takes (graph inputs or earlier parts' results)
    outputs: list  # names of the values it gives


def _weight_bytes(op) -> int:
    return op.output.type.storage_bytes() if op.kind == "const" and "name" in op.attrs else 0


def _cut_points(graph: Graph, ops: list, parts: int) -> list[int]:
    last_use = {}
    for i, op in enumerate(ops):
        for v in op.inputs:
            last_use[v] = i
    for v in graph.outputs:
        last_use[v] = len(ops)
    produced_at = {v: i for i, op in enumerate(ops) if op.kind != "const" for v in op.outputs}
    # bytes of computed values live across a cut before op i (a difference array)
    delta = [0] * (len(ops) + 2)
    for v, start in produced_at.items():
        end = last_use.get(v, start)
        if end > start:
            delta[start + 1] += v.type.storage_bytes()
            delta[end + 1] -= v.type.storage_bytes()
    crossing, running = [], 0
    for d in delta:
        running += d
        crossing.append(running)
    # weight bytes before op i, each weight counted at its first use (consts
    # may all sit at the top of the graph)
    weights, total, counted = [0], 0, set()
    for op in ops:
        for v in op.inputs:
            if v.producer is not None and v not in counted:
                counted.add(v)
                total += _weight_bytes(v.producer)
        weights.append(total)
    cuts = []
    first = next((i for i, op in enumerate(ops) if op.kind != "const"), len(ops))
    for k in range(1, parts):
        goal = total * k / parts
        window = total / parts / 4
        lo = cuts[-1] + 1 if cuts else first + 1  # every part computes something
        candidates = [i for i in range(lo, len(ops))
                      if abs(weights[i] - goal) <= window and ops[i].kind != "const"]
        if not candidates:
            raise UsageError(f"cannot split graph '{graph.name}' into {parts} parts: no cut "
                             f"near {k}/{parts} of its {total} weight bytes")
        cuts.append(min(candidates, key=lambda i: (crossing[i], abs(weights[i] - goal))))
    return cuts


_VIEWS = ("slice", "reshape", "transpose", "split", "cast")


def _sunk(graph: Graph) -> list:
    """graph.ops with views of graph inputs (a decoder's per-layer cache
    slices) moved down to just before their first use, so they fall in the
    part that uses them instead of crossing from the first one."""
    movable, order, placed = set(), [], set()
    inputs = set(graph.inputs)
    for op in graph.ops:
        if op.kind in _VIEWS and all(v in inputs or v.producer in movable for v in op.inputs):
            movable.add(op)

    def place(op):
        if op in placed:
            return
        for v in op.inputs:
            if v.producer in movable:
                place(v.producer)
        placed.add(op)
        order.append(op)

    for op in graph.ops:
        if op not in movable:
            place(op)
    for op in graph.ops:  # views only graph outputs use
        place(op)
    return order


def split(graph: Graph, parts: int) -> list[Part]:
    """`graph` as `parts` consecutive parts (one part: the graph itself)."""
    if not isinstance(parts, int) or isinstance(parts, bool) or parts < 1:
        raise UsageError(f"parts must be a positive integer, got {parts!r}")
    if parts == 1:
        return [Part(graph, [v.name for v in graph.inputs], [v.name for v in graph.outputs])]
    ops = _sunk(graph)
    bounds = [0] + _cut_points(graph, ops, parts) + [len(ops)]
    consts = {v: op for op in ops if op.kind == "const" for v in op.outputs}
    later_uses = [set() for _ in range(parts)]  # values each part's successors (or outputs) need
    need = set(graph.outputs)
    segments = [ops[a:b] for a, b in zip(bounds, bounds[1:])]
    for k in range(parts - 1, -1, -1):
        later_uses[k] = set(need)
        for op in segments[k]:
            need.update(v for v in op.inputs if v not in consts)
    out = []
    const_outputs = [consts[v] for v in graph.outputs if v in consts]  # given by the last part
    for k, seg in enumerate(segments):
        computed = [op for op in seg if op.kind != "const"]
        made = {v for op in computed for v in op.outputs}
        used = [v for op in computed for v in op.inputs]
        inputs = list(dict.fromkeys(v for v in used if v not in made and v not in consts))
        needed = [consts[v] for v in used if v in consts]
        if k == parts - 1:
            needed += const_outputs
        g = Graph(f"{graph.name}_part{k}", WeightStore())
        g.inputs, g.ops = inputs, list(dict.fromkeys(needed)) + computed
        g.outputs = [v for op in g.ops for v in op.outputs
                     if v in later_uses[k] and (v in made or k == parts - 1)]
        for op in g.ops:
            if op.kind == "const" and "name" in op.attrs:
                name = op.attrs["name"]
                for key in (name, *(aux_key(name, kind) for kind in AUX_KINDS)):
                    if key in graph.weights:
                        g.weights[key] = graph.weights[key]
        out.append(Part(g, [v.name for v in inputs], [v.name for v in g.outputs]))
    return out
