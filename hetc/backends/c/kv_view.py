"""Attention reading its keys and values where they lie: a decoder step's
cache and its new tokens are two segments along the sequence axis, and
grouped-query heads a repeat; the concat and repeat that would copy them
into one [B, H, S, D] operand are never run (the C-family renderers read
the segments in place, with one key head per `group` query heads)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class KVView:
    keys: list  # one or two segments along the sequence axis, [B, H / group, S_i, D] each
    values: list
    group: int  # query heads per key head
    ops: list  # the ops that would build the [B, H, S, D] operands


def _kv_view(v):
    """(segments, group, ops) for an attention key/value operand: looks
    through the grouped-query repeat (reshape -> expand -> reshape) and a
    concat along the sequence axis, which attention then never builds."""
    x, group, ops = v, 1, []
    r2 = v.producer
    ex = r2.inputs[0].producer if r2 is not None and r2.kind == "reshape" else None
    r1 = ex.inputs[0].producer if ex is not None and ex.kind == "expand" else None
    if r1 is not None and r1.kind == "reshape" and r1.inputs[0].type.rank == 4:
        base = r1.inputs[0].type.shape
        B, Hk, S, D = base
        g = ex.output.type.shape[2] if ex.output.type.rank == 5 else 0
        if (r1.output.type.shape == (B, Hk, 1, S, D) and ex.output.type.shape == (B, Hk, g, S, D)
                and v.type.shape == (B, Hk * g, S, D)):
            x, group, ops = r1.inputs[0], g, [r2, ex, r1]
    segments = [x]
    c = x.producer
    if c is not None and c.kind == "concat" and x.type.rank == 4 and \
            c.attrs["axis"] % 4 == 2 and len(c.inputs) == 2:
        segments, ops = list(c.inputs), ops + [c]
    return segments, group, ops


def attention_views(graph):
    """({attention op: KVView}, ops no longer needed): attention reads its
    keys and values where they lie; the ops that would have copied them into
    one tensor are skipped when nothing else reads their results."""
    views, chain = {}, set()
    for op in graph.ops:
        if op.kind != "attention" or op.inputs[0].type.rank != 4:
            continue
        (ks, kg, kops), (vs, vg, vops) = _kv_view(op.inputs[1]), _kv_view(op.inputs[2])
        if kg != vg or len(ks) != len(vs) or \
                [t.type.shape[2] for t in ks] != [t.type.shape[2] for t in vs]:
            continue
        if len(ks) == 1 and kg == 1:
            continue  # nothing to look through
        views[op] = KVView(ks, vs, kg, kops + vops)
        chain.update(kops + vops)
    users = graph.users()
    outputs = set(graph.outputs)
    skipped, changed = set(), True
    while changed:
        changed = False
        for op in chain - skipped:
            if any(v in outputs for v in op.outputs):
                continue
            if all(u in skipped or (u in views and op in views[u].ops and
                                    v not in u.inputs[:1] + u.inputs[3:])
                   for v in op.outputs for u in users.get(v, ())):
                skipped.add(op)
                changed = True
    return views, skipped
