"""Canonicalization: local algebraic simplifications, applied to a fixpoint.

Each rewrite looks at one op and either returns the value that replaces its
result, rewrites the op in place to a simpler form, or does nothing. Ops left
without users are erased, as MLIR's canonicalizer does.
"""

from dataclasses import dataclass

import numpy as np

from hetc.ir.interpret import load_const
from hetc.ir.ops import OPS, get_op, slice_ranges
from hetc.passes.pipeline import Pass, register_pass

from .cleanup import remove_dead_ops

REWRITES = []


def rewrite(*kinds):
    def deco(fn):
        REWRITES.append((set(kinds), fn))
        return fn
    return deco


def _const_equal(g, v, scalar):
    """Is `v` a plain constant whose every element equals `scalar`?"""
    op = v.producer
    if op is None or op.kind != "const" or v.type.encodings:
        return False
    if v.type.numel > 4096:  # not worth reading large weights for this
        return False
    return bool(np.all(np.asarray(load_const(op, g), np.float64) == scalar))


def _same(v, op):
    return v if v.type == op.output.type else None


@rewrite(*(kind for kind, d in OPS.items() if d.identity is not None))
def _identity_operand(g, op):
    """x op e == x for the op's identity element e on the right; on either
    side when the op is commutative."""
    a, b = op.inputs
    d = get_op(op.kind)
    if _const_equal(g, b, d.identity):
        return _same(a, op)
    if d.commutative and _const_equal(g, a, d.identity):
        return _same(b, op)


@rewrite("pad")
def _no_pad(g, op):
    """A pad of zero everywhere is its input (Swin pads its windows' input
    by what the window size lacks: nothing at 224x224)."""
    if not any(op.attrs["pads"]):
        return _same(op.inputs[0], op)


@rewrite("pow")
def _square(g, op):
    """pow(x, 2) is mul(x, x): one product instead of a libm call per element
    (x86 ran pow at about 12 ns an element), the same number."""
    x, e = op.inputs
    if _const_equal(g, e, 2.0) and op.output.type == x.type:
        op.kind, op.inputs, op.attrs = "mul", [x, x], {}


@rewrite("reshape", "expand")
def _no_reshape(g, op):
    x = op.inputs[0]
    if x.type.shape == op.output.type.shape:
        return _same(x, op)
    inner = x.producer
    if op.kind == "reshape" and inner is not None and inner.kind == "reshape":
        op.inputs = [inner.inputs[0]]


@rewrite("transpose")
def _transpose(g, op):
    perm = op.attrs["perm"]
    if perm == sorted(perm):
        return _same(op.inputs[0], op)
    inner = op.inputs[0].producer
    if inner is not None and inner.kind == "transpose":
        op.attrs["perm"] = [inner.attrs["perm"][p] for p in perm]
        op.inputs = [inner.inputs[0]]


@rewrite("cast")
def _cast_same(g, op):
    return _same(op.inputs[0], op)


@rewrite("neg")
def _neg_neg(g, op):
    inner = op.inputs[0].producer
    if inner is not None and inner.kind == "neg":
        return _same(inner.inputs[0], op)


@rewrite("concat")
def _single_concat(g, op):
    if len(op.inputs) == 1:
        return _same(op.inputs[0], op)


@rewrite("slice")
def _whole_slice(g, op):
    """A slice that keeps every element in order is its input."""
    x = op.inputs[0]
    if any(kept != range(x.type.shape[ax]) for ax, kept in slice_ranges(op.attrs, x.type.shape)):
        return None
    return _same(x, op)


@rewrite("slice")
def _slice_of_concat(g, op):
    """A slice along a concat's axis that stays within one operand slices that
    operand (a decoder's new keys: the tail of concat(cache, new))."""
    x, inner = op.inputs[0], op.inputs[0].producer
    if inner is None or inner.kind != "concat" or len(op.attrs["axes"]) != 1:
        return None
    [(ax, kept)] = slice_ranges(op.attrs, x.type.shape)
    if ax != inner.attrs["axis"] % x.type.rank or kept.step != 1:
        return None
    start = 0
    for part in inner.inputs:
        n = part.type.shape[ax]
        if len(kept) and start <= kept.start and kept.stop <= start + n:
            op.inputs = [part]
            op.attrs["starts"], op.attrs["ends"] = [kept.start - start], [kept.stop - start]
            return None
        start += n
    return None


@register_pass
@dataclass(frozen=True)
class Canonicalize(Pass):
    name = "canonicalize"
    max_iterations: int = 10

    def run(self, graph, ctx):
        for g in graph.graphs():
            for _ in range(self.max_iterations):
                if not self._sweep(g):
                    break
            remove_dead_ops(g)

    @staticmethod
    def _sweep(g) -> bool:
        changed = False
        for op in list(g.ops):
            for kinds, fn in REWRITES:
                if op.kind not in kinds:
                    continue
                before = (list(op.inputs), dict(op.attrs))
                new = fn(g, op)
                if new is not None and new is not op.output:
                    g.replace_uses(op.output, new)
                    changed = True
                elif before != (op.inputs, op.attrs):
                    changed = True
        return changed
