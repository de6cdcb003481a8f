"""Fused regions (passes/fuse.py) on x86: the region's first op runs its own
kernel and the elementwise ops after it run as that kernel's epilogue
(kernels.h, hetc_step): inside the convolution kernels on each tile as it is
stored, after other kernels as one pass over the result while it is in
cache. A region whose steps an epilogue cannot express (a broadcast that
grows the result, an operand neither scalar, per channel nor of the result's
shape, non-f32 values) runs its ops one by one, intermediates in scratch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hetc.backends.c.values import cpointer, nbytes, round_up
from hetc.backends.regions import Seen, outer_values

from .emit import BINARY, EPILOGUE_KERNELS, LOWER, UNARY

#: the epilogue's unary steps: kernels.h's hetc_unary1 codes
STEP_UNARY = {k: v for k, v in UNARY.items()
              if k in {"relu", "silu", "sigmoid", "tanh", "exp", "neg", "sqrt", "rsqrt", "abs",
                       "erf"}}


@dataclass
class Epilogue:
    first: Seen  # the op whose kernel runs (its result: the region's)
    steps: list  # (C initializer of a hetc_step, operand or None)
    axis: int | None  # the axis E_CHANNEL operands vary along

    def args(self, e):
        """`steps, count` C arguments (a compound literal array)."""
        if not self.steps:
            return "0, 0"
        items = ", ".join(init.replace("@", e.val(v)) if v is not None else init
                          for init, v in self.steps)
        return f"(const hetc_step[]){{{items}}}, {len(self.steps)}"


def _step(op, chain, shape):
    """(initializer, operand, channel axis or None) of one epilogue step, or None."""
    if op.output.type.shape != shape or op.output.type.dtype.name != "f32":
        return None
    if op.kind in STEP_UNARY or op.kind == "gelu":
        code = STEP_UNARY.get(op.kind) or ("U_GELU_TANH" if op.attrs.get("approximate") == "tanh"
                                           else "U_GELU")
        return f"{{{code}, E_UNARY, 0, 0}}", None, None
    if op.kind not in BINARY or len(op.inputs) != 2:
        return None
    a, b = op.inputs
    if (a is chain) == (b is chain):
        return None
    left = int(b is chain)
    other = a if left else b
    t = other.type
    if t.dtype.name != "f32":
        return None
    if t.numel == 1:
        kind, axis = "E_SCALAR", None
    elif t.shape == shape:
        kind, axis = "E_TENSOR", None
    else:
        full = (1,) * (len(shape) - t.rank) + tuple(t.shape)
        varying = [d for d, n in enumerate(full) if n != 1]
        if len(full) != len(shape) or len(varying) != 1 or full[varying[0]] != shape[varying[0]]:
            return None
        kind, axis = "E_CHANNEL", varying[0]
    return f"{{{BINARY[op.kind]}, {kind}, {left}, @}}", other, axis  # @: the operand


def epilogue(op) -> Epilogue | None:
    """How fused `op` runs as one kernel and an epilogue, or None."""
    body = op.body
    outer = outer_values(op)
    ops = body.ops
    if not ops or body.outputs[0] is not ops[-1].output or any(len(o.outputs) != 1 for o in ops):
        return None
    shape = ops[0].output.type.shape
    steps, axes = [], set()
    for prev, op_ in zip(ops, ops[1:]):
        step = _step(op_, prev.output, shape)
        if step is None:
            return None
        steps.append(step[:2])
        if step[2] is not None:
            axes.add(step[2])
    if len(axes) > 1:
        return None
    steps = [(init, outer.get(v, v) if v is not None else None) for init, v in steps]
    first = Seen(ops[0], {**outer, ops[0].output: op.output})  # it writes the region's result
    return Epilogue(first, steps, axes.pop() if axes else None)


@LOWER.register("fused")
def lower_fused(e, op):
    """Emit a fused region: one kernel with its epilogue when it can, else its ops."""
    ep = epilogue(op)
    if ep is None:
        _one_by_one(e, op)
        return
    e.fused_ops += len(op.body.ops) - 1
    kernel = EPILOGUE_KERNELS.get(ep.first.kind)
    if kernel is not None and e.lowerings.get(ep.first.kind) is kernel:  # not another target's
        ran = kernel(e, ep.first, ep)
    else:
        e.lower(ep.first)
        ran = False
    if ep.steps and not ran:
        _after(e, ep)


def _after(e, ep):
    """The epilogue as one pass over the first op's result (k_epilogue)."""
    shape = ep.first.output.type.shape or (1,)
    numel = math.prod(shape)
    if ep.axis is None:  # runs of 4096, the last one shorter
        run = min(numel, 4096)
        runs, channels, cstride = -(-numel // run), 1, 0
    elif ep.axis == len(shape) - 1:
        run = shape[-1]
        runs, channels, cstride = numel // run, run, 1
    else:
        run = math.prod(shape[ep.axis + 1:])
        runs, channels, cstride = numel // run, shape[ep.axis], 0
    e.emit(f"k_epilogue({e.ptr[ep.first.output]}, {numel}, {runs}, {run}, {channels}, "
           f"{cstride}, {ep.args(e)});")


def _one_by_one(e, op):
    """Each op of the body with its own kernel: intermediates in scratch,
    ahead of what those kernels ask of it themselves."""
    body = op.body
    outer = outer_values(op)
    at = 0
    for inner in body.ops:
        for v in inner.outputs:
            if v not in outer:
                e.ptr[v] = cpointer(v.type, f"A + {e.arena_size + at}", ctypes=e.ctypes)
                at += round_up(nbytes(v.type))
    base, e.scratch_base = e.scratch_base, at
    e.scratch(0)
    try:
        for inner in body.ops:
            e.lower(Seen(inner, outer))
    finally:
        e.scratch_base = base
