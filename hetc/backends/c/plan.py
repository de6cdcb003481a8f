"""Where each value of a graph lives in generated C-family code: the
activation arena planned from the values' lifetimes, and the ops whose
result is a view of their operand's bytes (no copy)."""

from __future__ import annotations

import math

from hetc.ir.ops import get_op, slice_ranges

from .values import nbytes, round_up, strides


def alias_offset(op):
    """Element offset into op's operand at which its result lies when the
    result is the operand's bytes unchanged (reshape) or one contiguous block
    of them (a slice of an outermost non-unit axis, as a decoder slicing its
    cache per layer); None when the result must be computed."""
    if get_op(op.kind).view:
        return 0
    if op.kind != "slice":
        return None
    x, t = op.inputs[0], op.output.type
    cut = []
    for a, kept in slice_ranges(op.attrs, x.type.shape):
        if kept != range(x.type.shape[a]):
            if len(kept) > 1 and kept.step != 1:
                return None
            cut.append((a, kept.start if len(kept) else 0))
    if len(cut) > 1 or (cut and math.prod(t.shape[:cut[0][0]]) != 1):
        return None
    return cut[0][1] * strides(x.type.shape)[cut[0][0]] if cut else 0


def slice_reads(op):
    """(strides, offset): a slice's output element at coordinates c is its
    operand's element offset + sum(c[d] * strides[d])."""
    xs = strides(op.inputs[0].type.shape)
    steps, offset = list(xs), 0
    for a, kept in slice_ranges(op.attrs, op.inputs[0].type.shape):
        offset += (kept.start if len(kept) else 0) * xs[a]
        steps[a] = xs[a] * kept.step
    return steps, offset


def output_slots(graph) -> dict:
    """{value: output index} for the graph outputs their producer writes in
    place into the caller's buffer (not inputs, constants or views)."""
    outs = {}
    for j, v in enumerate(graph.outputs):
        if v.producer is not None and v.producer.kind != "const" \
                and alias_offset(v.producer) is None and v not in outs and v not in graph.inputs:
            outs[v] = j
    return outs


def plan_arena(graph, ops, outs, reads=lambda op: op.inputs):
    """({value: arena byte offset}, arena bytes) for the results of `ops` (in
    order) that are neither views nor written in place (`outs`): first fit
    over buffers freed once their last reader (through views; `reads(op)`
    lists what an op reads) has run."""
    root, last = _lifetimes(graph, ops, reads)
    offsets, free, size, live = {}, [], 0, []
    for i, op in enumerate(ops):
        for r in [r for r in live if last.get(r, -1) < i]:
            live.remove(r)
            free.append((offsets[r], round_up(nbytes(r.type))))
        for v in op.outputs:
            if root[v] is not v or v in outs:
                continue
            need = round_up(nbytes(v.type))
            slot = next((s for s in sorted(free) if s[1] >= need), None)
            if slot:
                free.remove(slot)
                offsets[v] = slot[0]
                if slot[1] > need:
                    free.append((slot[0] + need, slot[1] - need))
            else:
                offsets[v] = size
                size += need
            live.append(v)
    return offsets, size


def _lifetimes(graph, ops, reads):
    """({value: the value whose buffer it uses}, {buffer: index of the last
    op reading it; len(ops) for graph outputs})."""
    root = {}
    for op in ops:
        view = alias_offset(op) is not None
        for v in op.outputs:
            root[v] = root.get(op.inputs[0], op.inputs[0]) if view else v
    last = {}
    for i, op in enumerate(ops):
        for v in reads(op):
            last[root.get(v, v)] = i
    for v in graph.outputs:
        last[root.get(v, v)] = len(ops)
    return root, last


def arena_lifetimes(graph, ops, offsets, reads=lambda op: op.inputs) -> list:
    """[(index of the op writing it, index of the last op reading it, arena
    offset, bytes)] of every arena buffer plan_arena placed: what must be
    restored to resume a run at op i (the buffers written before i and read
    from i on)."""
    _, last = _lifetimes(graph, ops, reads)
    out = []
    for i, op in enumerate(ops):
        for v in op.outputs:
            if v in offsets:
                out.append((i, last.get(v, i), offsets[v], round_up(nbytes(v.type))))
    return out
