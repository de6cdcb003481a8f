"""Which activations x86 code keeps in blocks of 16 channels.

A blocked tensor [N, C, H, W] is stored as [N][C/16][H][W][16]: one
position's 16 channels side by side, the same bytes as NCHW. A depthwise
convolution on blocks has a channel in every lane whatever its plane's size,
where NCHW rows of 7 or 14 columns leave lanes idle and pay per-plane costs;
the channel-lane 1x1 kernel reads and writes blocks without its transposes.

So a depthwise convolution runs on blocks (k_conv2d_depthwise_b16) when it
sits between 1x1 convolutions on few positions (k_conv1x1_panels, or
k_conv1x1_q8 with int8 activations), as the
middle of an inverted residual block on 14x14 and 7x7 planes does: its input
is written by such a convolution and read by it alone, its result is read
only as the input of such convolutions, C is a multiple of 16, and the
epilogues on both blocked results are at most a clamp (the kernels apply it
in registers; other steps index NCHW). Every other value, graph inputs and
outputs among them, stays NCHW, so nothing outside the generated code sees
a block.

A 1x1 convolution on a large plane (k_conv2d_gemm's row tiles) whose result
only a depthwise convolution reads is not stored at all: the two run as one
kernel (k_conv1x1_depthwise), the 1x1 part 8 channels at a time into a
buffer that stays in cache (into_depthwise).

A 1x1 convolution with int8 activations that the integer kernels take
(emit.q8_takes) counts as the float one it stands in for: it reads and
writes blocks on channel lanes, and runs inside the depthwise kernel on a
large plane.
"""

from __future__ import annotations

from hetc.backends.regions import seen_body

from .emit import conv_kernel, direct_1x1, q8_takes
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
    """conv's kernel when it may read blocks (and write them: with its
    epilogue `steps` given), else None: a float one, or the integer 1x1
    (k_conv1x1_q8) as "1x1 panels" where the float one would be that."""
    if conv is None or (conv.attrs.get("act_group", 0) and not q8_takes(conv)) or \
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


def into_depthwise(graph, blocked, threads) -> dict:
    """{a depthwise convolution's top-level op: the 1x1 convolution's op
    whose result it alone reads}, for the pairs that run as one kernel: the
    1x1 on row tiles (a plane too large for the channel lanes), in f32 or
    with int8 activations the integer kernel takes (q8_takes), the
    depthwise one in f32, one output channel per input channel, the intermediate neither a
    graph output nor blocked, the 1x1's epilogue one the convolution
    kernels run (operands per channel or per element), and enough blocks
    of 8 channels (the kernel's tasks) for `threads` to share evenly or at
    least two each (a 16 -> 8 layer on 112x112, one task: 0.083 ms fused
    against 0.058 apart)."""
    readers = {}
    for op in graph.ops:
        for v in dict.fromkeys(op.inputs):
            readers.setdefault(v, []).append(op)
    outputs = set(graph.outputs)
    pairs = {}
    for op in graph.ops:
        conv, _ = conv_of(op)
        if conv is None or conv.attrs.get("act_group", 0) or conv_kernel(conv) != "depthwise":
            continue
        x = conv.inputs[0]
        producer = x.producer
        if x in outputs or x in blocked or op.output in blocked or \
                conv.inputs[1].type.shape[0] != x.type.shape[1] or producer is None or \
                readers.get(x) != [op] or not _reads_only_as_input(op, conv, x):
            continue
        first, _ = conv_of(producer)
        if first is None or (first.attrs.get("act_group", 0) and not q8_takes(first)) or \
                conv_kernel(first) != "gemm" or not direct_1x1(first):
            continue
        n, e = first.output.type.shape[:2]
        tasks = n * -(-e // 8)
        if tasks % threads and tasks < 2 * threads:
            continue
        ep = epilogue(producer) if producer.kind == "fused" else None
        if ep is None or ep.axis in (None, 1):
            pairs[op] = producer
    return pairs
