"""Which activations x86 code keeps in blocks of 16 channels.

A blocked tensor [N, C, H, W] is stored as [N][C/16][H][W][16]: one
position's 16 channels side by side, the same bytes as NCHW. A depthwise
convolution on blocks has a channel in every lane whatever its plane's size,
where NCHW rows of 7 or 14 columns leave lanes idle and pay per-plane costs;
the channel-lane 1x1 kernel reads and writes blocks without its transposes.

So a depthwise convolution runs on blocks (k_conv2d_depthwise_b16) when it
sits between 1x1 convolutions on few positions (k_conv1x1_panels), as the
middle of an inverted residual block on 14x14 and 7x7 planes does: its input
is written by such a convolution and read by it alone, its result is read
only as the input of such convolutions, C is a multiple of 16, and the
epilogues on both blocked results are at most a clamp (the kernels apply it
in registers; other steps index NCHW). Every other value, graph inputs and
outputs among them, stays NCHW, so nothing outside the generated code sees
a block.
"""

from __future__ import annotations

from hetc.backends.regions import seen_body

from .emit import conv_kernel
from .fusion import epilogue

#: epilogue steps a blocked result may take (fusion.py initializers): a clamp
CLAMP_STEPS = ("{U_RELU, E_UNARY,", "{B_MAX, E_SCALAR,", "{B_MIN, E_SCALAR,")


def conv_of(op):
    """(the conv2d op whose kernel runs for top-level `op`, its epilogue's
    steps) or (None, None): op itself, or a fused region's first op."""
    if op.kind == "conv2d":
        return op, []
    if op.kind == "fused":
        ep = epilogue(op)
        if ep is not None and ep.first.kind == "conv2d":
            return ep.first, ep.steps
    return None, None


def _kernel(conv, steps=None):
    """conv's float kernel when it may read blocks (and write them: with
    its epilogue `steps` given), else None."""
    if conv is None or conv.attrs.get("act_group", 0) or \
            any(not init.startswith(CLAMP_STEPS) for init, _ in steps or ()):
        return None
    return conv_kernel(conv)


def _reads_only_as_input(op, conv, v) -> bool:
    """Whether top-level op reads v once, as its convolution's data input."""
    seen = seen_body(op) if op.kind == "fused" else [op]
    uses = sum(list(s.inputs).count(v) for s in seen)
    return uses == 1 and conv.inputs[0] is v


def blocked_values(graph) -> set:
    """The values the generated code stores in blocks of 16 channels."""
    readers = {}
    for op in graph.ops:
        for v in dict.fromkeys(op.inputs):
            readers.setdefault(v, []).append(op)
    outputs = set(graph.outputs)
    blocked = set()
    for op in graph.ops:
        conv, steps = conv_of(op)
        if _kernel(conv, steps) != "depthwise":
            continue
        x, y = conv.inputs[0], op.output
        c = x.type.shape[1]
        if c % 16 or y.type.shape[1] != c or x in outputs or y in outputs:
            continue
        producer = x.producer
        if producer is None or _kernel(*conv_of(producer)) != "1x1 panels" or \
                readers.get(x) != [op] or not _reads_only_as_input(op, conv, x):
            continue
        users = readers.get(y, [])
        if users and all(_kernel(conv_of(u)[0]) == "1x1 panels" and
                         _reads_only_as_input(u, conv_of(u)[0], y) for u in users):
            blocked |= {x, y}
    return blocked
