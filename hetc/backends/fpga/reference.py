"""The fpga datapath's arithmetic in numpy, step for step as hetc_fpga.h
computes it (float32 operations in the same order, integer sums exact):
the C simulation of a generated project and this model agree bit for bit,
which tests/test_fpga.py checks. It differs from the interpreter (which
dequantizes the activations before an f32 matrix product) by f32
rounding only."""

from __future__ import annotations

import numpy as np

from hetc.backends.c.quant import integer_weight, weight_scales
from hetc.ir.interpret import load_const

F32 = np.float32


def run(graph, x) -> np.ndarray:
    """The output of `graph` (as the fpga backend lowers it) for input x."""
    values = {graph.inputs[0]: np.asarray(x, F32)}
    for op in graph.ops:
        if op.kind == "const":
            continue
        a = values[op.inputs[0]]
        a = a.reshape(-1, a.shape[-1]) if a.ndim else a  # tokens as rows
        if op.kind == "reshape":
            values[op.output] = a.reshape(op.output.type.shape)
        elif op.kind == "relu":
            values[op.output] = np.where(a < 0, F32(0), a)
        elif op.kind == "linear":
            values[op.output] = _linear(graph, op, a)
        else:
            raise ValueError(f"the fpga reference has no {op.kind}")
    y = graph.outputs[0]
    return values[y].reshape(y.type.shape)


def _linear(graph, op, x):
    w = op.inputs[1]
    name, _, group = integer_weight(w)
    n, k = w.type.shape
    tokens, groups = x.shape[0], k // group
    xg = x.reshape(tokens, groups, group)
    top = np.abs(xg).max(axis=-1)  # NaN wins, as in the kernel
    scale = top / F32(127)
    d = np.where(scale == 0, F32(1), scale)
    q = np.rint(xg / d[..., None]).astype(np.int64)
    codes = np.asarray(graph.weights[name]).astype(np.int64).reshape(n, groups, group)
    acc = np.einsum("tgj,ngj->tng", q, codes)  # exact
    sw = weight_scales(_Graph(graph), name, n, groups)
    out = np.zeros((tokens, n), F32)
    for g in range(groups):
        out = out + acc[:, :, g].astype(F32) * (scale[:, g][:, None] * sw[None, :, g])
    if len(op.inputs) > 2:
        out = out + np.asarray(load_const(op.inputs[2].producer, graph), F32)
    return out


class _Graph:
    """What weight_scales reads of an emitter: its graph."""

    def __init__(self, graph):
        self.g = graph
