"""`fold-conv`: fold what surrounds a convolution into its constants, before
compression sees the layer.

- A zero `pad` of the spatial axes whose result only convolutions read
  becomes their padding (TensorFlow-style "same" padding, EfficientNet's
  Conv2dStaticSamePadding).
- An inference `batch_norm` right after a convolution with constant weights
  becomes part of them: w' = w * k, b' = b * k + d with
  k = scale / sqrt(var + eps), d = bias - mean * k, per output channel.

The weight keeps its name (a layer's compression decisions are keyed by it);
the folded values replace it only when no other op reads that constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hetc.ir.interpret import load_const
from hetc.passes.pipeline import Pass, register_pass

from .cleanup import move_before, remove_dead_ops


def _plain_const(v, graph):
    """The f32 values of a constant without encodings, else None."""
    op = v.producer
    if op is None or op.kind != "const" or v.type.encodings or v.type.dtype.name != "f32":
        return None
    return np.asarray(load_const(op, graph), np.float32)


def _fold_pad(graph, op, users):
    """pad(x) read only by convolutions, zeros added on H and W only -> their padding."""
    if op.kind != "pad" or op.attrs["mode"] != "constant" or op.attrs["value"] != 0 \
            or op.output in graph.outputs:
        return False
    pads, rank = list(op.attrs["pads"]), op.inputs[0].type.rank
    readers = users.get(op.output, [])
    if rank != 4 or min(pads) < 0 or any(pads[i] or pads[i + 4] for i in (0, 1)) or not readers \
            or any(u.kind != "conv2d" or u.inputs[0] is not op.output for u in readers):
        return False
    added = (pads[2], pads[3], pads[6], pads[7])  # top, left, bottom, right
    for conv in readers:
        conv.attrs["padding"] = [p + a for p, a in zip(conv.attrs["padding"], added)]
        conv.inputs[0] = op.inputs[0]
    return True


def _fold_batch_norm(graph, op, users):
    """batch_norm(conv2d(x, w, b)) with constants throughout -> conv2d(x, w', b')."""
    if op.kind != "batch_norm":
        return False
    conv = op.inputs[0].producer
    if conv is None or conv.kind != "conv2d" or len(users.get(conv.output, [])) != 1 \
            or conv.output in graph.outputs or conv.attrs.get("act_group"):
        return False
    w = _plain_const(conv.inputs[1], graph)
    params = [_plain_const(v, graph) for v in op.inputs[1:]]
    b = _plain_const(conv.inputs[2], graph) if len(conv.inputs) > 2 else \
        np.zeros(conv.output.type.shape[1], np.float32)
    if w is None or b is None or any(p is None for p in params):
        return False
    scale, bias, mean, var = params
    k = scale / np.sqrt(var + np.float32(op.attrs["eps"]))
    d = bias - mean * k
    folded_w = (w * k.reshape(-1, 1, 1, 1)).astype(np.float32)
    folded_b = (b * k + d).astype(np.float32)
    wv = conv.inputs[1]
    name = wv.producer.attrs.get("name")
    if name is not None and len(users.get(wv, [])) == 1:
        graph.weights[name] = folded_w  # same name: the layer stays the layer
    else:
        wv = graph.const(folded_w, name=f"{name or 'conv'}_folded")
        move_before(graph, wv.producer, conv)
    bv = graph.const(folded_b, name=f"{(name or 'conv').removesuffix('.weight')}.bias_folded")
    move_before(graph, bv.producer, conv)
    conv.inputs = [conv.inputs[0], wv, bv]
    graph.replace_uses(op.output, conv.output)
    return True


@register_pass
@dataclass(frozen=True)
class FoldConv(Pass):
    name = "fold-conv"

    def run(self, graph, ctx):
        for g in graph.graphs():
            users = g.users()
            for op in list(g.ops):
                if _fold_pad(g, op, users) or _fold_batch_norm(g, op, users):
                    users = g.users()
            remove_dead_ops(g)
