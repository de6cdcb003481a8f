"""Compressible layers of a graph and calibration statistics for them.

A layer is an op that multiplies activations by a named constant weight:
`linear` (weight [out, in], reduction axis -1), `matmul` with a constant 2-D
right operand ([in, out], axis 0) and `conv2d` (weight [O, I, kh, kw]; axis
1, the input channels). Its name is the weight's name without a trailing
".weight", the name reports and per-layer choices use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from hetc.core.errors import UsageError
from hetc.ir.graph import Graph, Op, Value
from hetc.ir.ops import get_op
from hetc.ir.report import layer_name
from hetc.runtime.evaluator import Interpreted


@dataclass
class Layer:
    name: str
    op: Op
    weight: Value  # the const op's result
    axis: int  # the weight's reduction axis
    activation: Value  # the data operand the weight multiplies

    @property
    def weight_name(self) -> str:
        return self.weight.producer.attrs["name"]


def _named_const(v: Value) -> bool:
    return v.producer is not None and v.producer.kind == "const" and "name" in v.producer.attrs


def find_layers(graph: Graph) -> list[Layer]:
    """Compressible layers, in graph order; a weight used by several layers
    (tied embeddings) is listed once, at its first use."""
    layers, seen = [], set()
    for op in graph.ops:
        weight = get_op(op.kind).weight
        if weight is not None and len(op.inputs) > weight[0]:
            operand, axis = weight
            w = op.inputs[operand]
            if not _named_const(w) or w in seen or not w.type.value_dtype.is_float:
                continue
            if op.kind == "matmul" and w.type.rank != 2:
                continue
            seen.add(w)
            layers.append(Layer(layer_name(w.producer.attrs["name"]), op, w, axis, op.inputs[0]))
    return layers


def select(layers, pattern: str, exclude: str = ""):
    """Layers whose name matches `pattern` (all when empty) and not `exclude`
    (regular expressions, searched anywhere in the name). A pattern that
    matches no layer at all is a UsageError (a typo would otherwise leave
    the model uncompressed without a word)."""
    rx, ex = _regex(pattern), _regex(exclude)
    if rx is not None and not any(rx.search(ly.name) for ly in layers):
        names = [ly.name for ly in layers]
        raise UsageError(f"layer pattern {pattern!r} matches no layer (the model's layers: "
                         f"{', '.join(names[:12]) or 'none'}{', ...' if len(names) > 12 else ''})")
    return [ly for ly in layers
            if (rx is None or rx.search(ly.name)) and not (ex and ex.search(ly.name))]


def _regex(pattern):
    try:
        return re.compile(pattern) if pattern else None
    except re.error as e:
        raise UsageError(f"layer pattern {pattern!r} is not a regular expression: {e}") from None


def probing(ctx, graph: Graph, layers, runs=None):
    """The context's evaluator for `graph`, probing the layers' activations,
    for `runs` calls (default: one per calibration sample)."""
    runs = len(ctx.calibration or ()) if runs is None else runs
    return ctx.evaluator(graph, list(dict.fromkeys(ly.activation for ly in layers)), runs)


def multiply_adds(graph: Graph) -> int:
    """Multiply-adds of one run through the compressible layers (every op
    with a named weight): each output element takes the weight's reduction."""
    total = 0
    for ly in find_layers(graph):
        out = ly.op.output.type
        channels = out.shape[1] if ly.op.kind == "conv2d" else out.shape[-1]
        total += out.numel * (ly.weight.type.numel // max(channels, 1))
    return total


def activations(graph: Graph, layers, samples, evaluator=None):
    """(layer, activation array) for every layer on every calibration sample,
    activations that are graph inputs included: one run per sample, of
    `evaluator` (whose probes include the layers' activations) or of the
    interpreter. An array is valid until the next one is taken."""
    if evaluator is None:
        evaluator = Interpreted(graph, [ly.activation for ly in layers])
    where = {v: i for i, v in enumerate(evaluator.probes)}
    for sample in samples:
        _, found = evaluator(sample)
        for ly in layers:
            yield ly, found[where[ly.activation]]


def channel_squares(layer: Layer, array) -> np.ndarray:
    """Sum of squares of each input channel of one activation array."""
    a = np.asarray(array, np.float64)
    a = np.moveaxis(a, 1, -1) if layer.op.kind == "conv2d" else a  # NCHW: channels on 1
    return (a * a).reshape(-1, a.shape[-1]).sum(axis=0)


def input_channel_norms(graph: Graph, layers, samples, evaluator=None) -> dict[str, np.ndarray]:
    """Per layer, the L2 norm of each input channel of its activation over
    the calibration samples (Wanda's activation statistic)."""
    sums: dict[str, np.ndarray] = {}
    for layer, array in activations(graph, layers, samples, evaluator):
        sums[layer.name] = sums.get(layer.name, 0) + channel_squares(layer, array)
    return {name: np.sqrt(s) for name, s in sums.items()}
