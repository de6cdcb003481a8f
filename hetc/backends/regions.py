"""Fused regions (passes/fuse.py) as lowerings see them: each op of
a region's body with the region's own operands in place of the body's
inputs, so that lowerings and support tables look at the real values
(constants, their encodings) rather than at the body's parameters."""

from __future__ import annotations


class Seen:
    """An op of a fused body with operands mapped through `outer` (body
    value -> the value it stands for)."""

    __slots__ = ("kind", "inputs", "outputs", "attrs", "body")

    def __init__(self, op, outer):
        self.kind, self.attrs, self.body = op.kind, op.attrs, op.body
        self.inputs = [outer.get(v, v) for v in op.inputs]
        self.outputs = [outer.get(v, v) for v in op.outputs]

    @property
    def output(self):
        return self.outputs[0]


def outer_values(op) -> dict:
    """Fused `op`'s body inputs -> its operands, and the body's result -> its result."""
    outer = dict(zip(op.body.inputs, op.inputs))
    outer[op.body.outputs[0]] = op.output
    return outer


def seen_body(op) -> list:
    """The ops of fused `op`'s body, seen from outside."""
    outer = outer_values(op)
    return [Seen(inner, outer) for inner in op.body.ops]
