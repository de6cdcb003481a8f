"""The HLS renderer: the graph as a Vitis-HLS C++ project (model.cpp, the
layers' weights in weights.h, a test bench, a build script) over the
processing elements of hetc_fpga.h.

Every value is a float32 array of the whole call (reshapes alias their
operand); each op is one function, and the top function runs them in graph
order under DATAFLOW, a value read by several ops first copied once per
reader (a fork), as dataflow regions want one producer and one consumer
per channel.

The integer layers, `linear` and `conv2d` (no groups), take symmetric
int8/int4 weights, dense or N:M (2:4, 1:4, 1:3; along the inputs, a
convolution's channels), with int8 activations quantized per token (a
pixel) and group, the weights' groups; each is resolved into a
LayerConfig before code is generated: sizes, pattern, the weights' ap_int
type, the parallelism P (multipliers) and the reuse factor (cycles per
group), the accumulator width. Between them, in float32 on floating-point
operators: elementwise arithmetic and activations (broadcasting), softmax
along the last axis, layer, RMS and batch norms, products of two
activations, fused attention, pow by a small integer, copies (transposes,
slices, splits, concatenations, expands), max and global average pooling.
Everything else is refused with the reason.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from hetc.backends.c.quant import integer_codes, integer_weight, stored_scales
from hetc.backends.c.shapes import matmul_problem
from hetc.backends.c.text import comment, float_literal
from hetc.backends.c.values import broadcast_strides, strides
from hetc.backends.packing import pack_nibbles
from hetc.core.errors import TargetError, UsageError
from hetc.core.fpga_model import divisors, multipliers
from hetc.core.registry import Registry
from hetc.ir.interpret import load_const
from hetc.ir.ops import OPS, slice_ranges
from hetc.ir.types import TensorType

from . import cost, reference

LOWER = Registry("fpga lowerings")
PATTERNS = ((2, 4), (1, 4), (1, 3))  # the N:M units; dense otherwise
REFUSED_WHY = "not lowered for fpga yet (docs/fpga.md lists what is)"
LAYERS = ("linear", "conv2d")

#: elementwise ops: the C expression of one element ({0}, {1}: the operands)
UNARY = {"relu": "({0} < 0.f ? 0.f : {0})", "neg": "(-{0})", "abs": "fabsf({0})",
         "exp": "hetc::exp_({0})", "erf": "hetc::erf_({0})", "tanh": "hetc::tanh_({0})",
         "sigmoid": "hetc::sigmoid_({0})", "silu": "({0} * hetc::sigmoid_({0}))",
         "sqrt": "sqrtf({0})", "rsqrt": "(1.f / sqrtf({0}))"}
BINARY = {"add": "({0} + {1})", "sub": "({0} - {1})", "mul": "({0} * {1})",
          "div": "({0} / {1})", "maximum": "hetc::max_({0}, {1})",
          "minimum": "hetc::min_({0}, {1})"}
GELU = {"none": "hetc::gelu_({0})", "tanh": "hetc::gelu_tanh_({0})"}


@dataclass(frozen=True)
class LayerConfig:
    """One integer layer as the hardware is built for it: a linear layer
    (taps 1, rows its tokens) or a convolution (per tap a k x n matrix,
    rows its output pixels, vectors its input pixels)."""

    index: int
    k: int  # inputs (a convolution: input channels)
    n: int  # outputs
    group: int  # inputs per scale (activations and weights)
    bits: int  # weight width: ap_int<bits>
    nm: tuple | None  # (n, m) kept of every m, or None (dense)
    p: int  # multipliers: kept weights per cycle
    bias: bool
    stored: str = ""  # the weight's N:M pattern when its zeros run on the dense unit
    kind: str = "linear"
    taps: int = 1  # kernel positions
    rows: int = 1  # outputs vectors per call (tokens, output pixels)
    vectors: int = 1  # input vectors quantized per call (tokens, input pixels)
    offchip: int = -1  # the memory bank its weights stream from (m_axi), or -1: on chip

    @property
    def kept(self) -> int:
        """Kept weights per row (per tap)."""
        return self.k * self.nm[0] // self.nm[1] if self.nm else self.k

    @property
    def group_kept(self) -> int:
        return self.group * self.nm[0] // self.nm[1] if self.nm else self.group

    @property
    def reuse(self) -> int:
        """Cycles per group and output row: the reuse factor of each multiplier."""
        return self.group_kept // self.p

    @property
    def acc_bits(self) -> int:
        """Bits of a group's sum: 8-bit codes times `bits`-bit weights,
        group_kept of them, never overflowing."""
        return 8 + self.bits + max(1, math.ceil(math.log2(self.group_kept))) + 1

    @property
    def weight_partition(self) -> int:
        """Banks of the weight bytes: P weights a cycle, two per byte for int4."""
        return self.p // 2 if self.bits == 4 and self.p % 2 == 0 else self.p

    @property
    def index_partition(self) -> int:
        """Banks of the position bytes: P positions a cycle, four per byte."""
        return self.p // 4 if self.p % 4 == 0 else self.p

    @property
    def row_bytes(self) -> int:
        """Bytes of one row (output and tap) of kept codes as held."""
        return (self.kept + 1) // 2 if self.bits == 4 else self.kept

    @property
    def index_bytes(self) -> int:
        """Bytes of one row of N:M positions (four per byte); 0 for dense."""
        return (self.kept + 3) // 4 if self.nm else 0

    @property
    def code_partition(self) -> int:
        """Banks of the activation codes: the inputs P kept weights reach in
        a cycle (P / n groups of m for N:M)."""
        return self.p * self.nm[1] // self.nm[0] if self.nm else self.p

    def pattern(self) -> str:
        return f"{self.nm[0]}:{self.nm[1]}" if self.nm else "dense"


def lowers(*kinds):
    return LOWER.register(*kinds)


def _weight_axis(op):
    """The reduction axis of a layer's weight: the inputs, a convolution's channels."""
    return 1 if op.kind == "conv2d" else -1


def layer_config(index, op, reuse=0) -> LayerConfig:
    """The hardware of one integer layer: P = a group's kept weights / `reuse`
    (UsageError when that does not divide), or with reuse 0 the largest P
    of at most fpga_model.MAX_P multipliers dividing them."""
    w = op.inputs[1]
    _, bits, group = integer_weight(w, _weight_axis(op), odd_int4=True)
    n, k = w.type.shape[:2]
    nm = (w.type.nm.n, w.type.nm.m) if w.type.nm is not None else None
    # N:M along another axis than the inputs, or groups across quantization
    # groups: the dense unit (zeros stored)
    if nm and (group % nm[1] or w.type.nm.axis % w.type.rank != _weight_axis(op) % w.type.rank):
        nm = None
    group_kept = group * nm[0] // nm[1] if nm else group
    if reuse and group_kept % reuse:
        takes = ", ".join(str(group_kept // p) for p in divisors(group_kept, group_kept))
        raise UsageError(f"fpga: reuse={reuse} does not divide the {group_kept} kept weights "
                         f"per group of layer %{op.output.name} (it takes {takes})")
    p = group_kept // reuse if reuse else multipliers(group_kept)
    x, y = op.inputs[0].type, op.output.type
    if op.kind == "conv2d":
        shape = dict(taps=math.prod(w.type.shape[2:]), rows=y.numel // n,
                     vectors=x.numel // k)
    else:
        shape = dict(rows=x.numel // k, vectors=x.numel // k)
    stored = f"{w.type.nm.n}:{w.type.nm.m}" if w.type.nm is not None and nm is None else ""
    return LayerConfig(index, k, n, group, bits, nm, p, len(op.inputs) > 2, stored, op.kind,
                       **shape)


def usage(graph, configs, part) -> dict:
    """The cost model's estimate of the project of `graph` with `configs`:
    its integer layers, float32 functions and the buffers between them."""
    floats = [cost.float_usage(op, f"%{op.outputs[0].name}") for op in graph.ops
              if op.kind not in ("const", "reshape", *LAYERS)]
    return cost.estimate(list(configs.values()), part, floats, buffer_sizes(graph))


def buffer_sizes(graph) -> list:
    """The element counts of the arrays of the top function: each value
    computed by an op or given as an input (a reshape is its operand's
    array), and, for an array read more than once, a fork's copy per
    reader (the outputs' stream writers count as readers)."""
    root, readers = {}, {}
    for v in graph.inputs:
        root[v] = v
    for op in graph.ops:
        if op.kind == "const":
            continue
        for v in op.inputs:
            if v in root:
                readers[root[v]] = readers.get(root[v], 0) + 1
        for v in op.outputs:
            root[v] = root[op.inputs[0]] if op.kind == "reshape" else v
    for v in graph.outputs:
        if v in root:
            readers[root[v]] = readers.get(root[v], 0) + 1
    return [v.type.numel for v in set(root.values())
            for _ in range(1 + (readers.get(v, 0) if readers.get(v, 0) > 1 else 0))]


def plan(graph, reuse, part) -> dict:
    """{layer op: LayerConfig}. Until the model fits `part`: while its
    BRAM overflows, the layer whose weights take the most moves off chip
    (its weights stream from a memory bank through an m_axi port, the
    banks taken in turn); while its DSPs or LUTs overflow (with reuse 0),
    the multipliers are lowered (the next smaller divisor, in the layer with
    the most). TargetError when neither is left to do."""
    layers = [op for op in graph.ops if op.kind in LAYERS]
    configs = {op: layer_config(i, op, reuse) for i, op in enumerate(layers)}
    while True:
        est = usage(graph, configs, part)
        if est["fits"]:
            return configs
        rows = dict(zip(configs, est["layers"]))
        onchip = [(rows[op]["bram18"], op) for op, c in configs.items()
                  if c.offchip < 0 and rows[op]["bram18"]]
        wide = [(c.p, op) for op, c in configs.items() if c.p > 1]
        if est["bram18"] > part.bram18 and onchip:
            _, op = max(onchip, key=lambda t: t[0])
            banks = sum(c.offchip >= 0 for c in configs.values())
            configs[op] = dataclasses.replace(configs[op], offchip=banks % part.banks)
        elif est["bram18"] <= part.bram18 and wide and not reuse:
            _, op = max(wide, key=lambda t: t[0])
            c = configs[op]
            configs[op] = dataclasses.replace(
                c, p=max(d for d in divisors(c.group_kept) if d < c.p))
        else:
            raise TargetError(
                f"target fpga: the model does not fit {part.name} ({est['dsp']} DSP, "
                f"{est['lut']} LUT, {est['bram18']} BRAM18 of {part.dsp} / {part.lut} / "
                f"{part.bram18}, with every layer's weights that need BRAM off chip; the "
                f"buffers between functions, which hold whole tensors, take "
                f"{est['buffer_bram18']} BRAM18)" +
                (": raise reuse or choose a larger part" if reuse and wide else
                 " even with one multiplier per layer" if est["bram18"] <= part.bram18 else ""))


def _layer_problem(op):
    if op.kind == "conv2d" and op.attrs["groups"] != 1:
        return "a grouped (depthwise) convolution (not lowered yet)"
    w = op.inputs[1]
    q = integer_weight(w, _weight_axis(op), odd_int4=True)
    if q is None:
        return "weights that are not symmetric int8/int4 codes (give precision='int8' or 'int4')"
    if not op.attrs.get("act_group"):
        return "f32 activations (the fpga datapath quantizes them: activations='int8')"
    if op.attrs["act_group"] != q[2]:
        return (f"activation groups of {op.attrs['act_group']} and weight groups of {q[2]} "
                f"(they must be the same)")
    nm = w.type.nm
    if nm is not None and (nm.n, nm.m) not in PATTERNS:
        return f"{nm.n}:{nm.m} weights (the units take 2:4, 1:4 and 1:3)"
    return None


def why_not(op):
    """Why the fpga renderer cannot lower `op` (of a kind it lowers), or None."""
    if op.kind in LAYERS:
        problem = _layer_problem(op)
        if problem:
            return problem
    for v in list(op.inputs) + list(op.outputs):
        if not _is_const(v) and v.type.dtype.name != "f32":
            return f"{v.type.dtype} value %{v.name}"
        if _is_const(v) and op.kind not in LAYERS and v.type.value_dtype.name != "f32":
            return f"a {v.type.dtype} constant %{v.name} (float32 only between the layers)"
    params = op.inputs[2:] if op.kind in LAYERS else op.inputs[1:]
    varying = [v for v in params if not _is_const(v)]
    if op.kind in (*LAYERS, "layer_norm", "rms_norm", "batch_norm") and varying:
        return f"a bias or scale %{varying[0].name} that is not a constant"
    if op.kind == "softmax" and op.attrs["axis"] % op.inputs[0].type.rank != \
            op.inputs[0].type.rank - 1:
        return "an axis other than the last"
    if op.kind == "pow" and _exponent(op) is None:
        return "an exponent other than a constant 1, 2, 3 or 4"
    if op.kind == "matmul":
        if any(_is_const(v) for v in op.inputs):
            return "a constant operand (a weight: the fpga lowers it as a linear layer only)"
        return matmul_problem(op)
    if op.kind in ("max_pool2d", "global_avg_pool") and op.inputs[0].type.rank != 4:
        return "an input that is not NCHW"
    if op.kind == "batch_norm" and (op.inputs[0].type.rank < 2 or
                                    not all(_is_const(v) for v in op.inputs[1:])):
        return "statistics that are not constants, or an input without channels"
    return None


def graph_problems(graph) -> list:
    """A project streams float32 inputs in and outputs out, each computed by
    an op."""
    return [f"output %{y.name} is not computed by an op (an input or a constant)"
            for y in graph.outputs if y.producer is None or y.producer.kind == "const"]


def _is_const(v):
    return v.producer is not None and v.producer.kind == "const"


# -- the integer layers ------------------------------------------------------------

def _weights(e, op, cfg):
    """The layer's arrays in weights.h: per output (and tap) a row of kept
    codes as bytes (int4 two per byte; constant arrays of ap_int take g++
    minutes to compile), N:M positions four per byte, the scales per row
    and group as f32, the bias. Returns the pragmas partitioning them."""
    w, i = op.inputs[1], cfg.index
    name = integer_weight(w, _weight_axis(op), odd_int4=True)[0]
    codes = integer_codes(e, name)
    scales = stored_scales(e, name, *w.type.quant.param_shape(w.type.shape)).astype(np.float32)
    if cfg.kind == "conv2d":  # per output and tap a row of channels
        codes = codes.transpose(0, 2, 3, 1).reshape(cfg.n * cfg.taps, cfg.k)
        scales = scales.transpose(0, 2, 3, 1)
    scales = scales.reshape(cfg.n * cfg.taps, cfg.k // cfg.group)
    rows, pragmas, held = cfg.n * cfg.taps, [], {}
    if cfg.nm is not None:
        codes, idx = keep_nm(codes, *cfg.nm)
        held[f"I{i}"] = (pack_positions(idx), cfg.index_partition)
    held[f"W{i}"] = (pack_codes(codes, cfg.bits), cfg.weight_partition)
    for name, (data, banks) in sorted(held.items(), key=lambda t: t[0][0] == "I"):
        if cfg.offchip >= 0:  # streamed through an m_axi port of the top function
            e.offchip.append((name, cfg.offchip, data.tobytes()))
            continue
        e.weights.append(_array(name, "unsigned char", data, [rows, data.shape[1]]))
        pragmas.append(f"#pragma HLS ARRAY_PARTITION variable={name} cyclic factor={banks} "
                       f"dim=2")
    e.weights.append(_array(f"SW{i}", "float", scales, list(scales.shape)))
    if cfg.bias:
        e.weights.append(_array(f"B{i}", "float", e.const(op.inputs[2]), [cfg.n]))
    return pragmas


@lowers(*LAYERS)
def _layer(e, op):
    cfg = e.configs[op]
    e.layers.append(cfg)
    kernel = "x".join(map(str, op.inputs[1].type.shape[2:])) + " " if cfg.kind == "conv2d" else ""
    body = (_conv2d if cfg.kind == "conv2d" else _linear)(op, cfg)
    pragmas = _weights(e, op, cfg)
    ports = [name for name, *_ in e.offchip if name[1:] == str(cfg.index)]
    where = f", weights from memory bank {cfg.offchip}" if cfg.offchip >= 0 else ""
    e.function(f"layer{cfg.index}", [op.inputs[0]], op.output, pragmas + body,
               comment(f"{cfg.kind} {kernel}{cfg.pattern()} int{cfg.bits} g{cfg.group}: "
                       f"P = {cfg.p} multipliers, reuse factor {cfg.reuse}{where}"), ports)


def _mac_loop(cfg, outer, q, sx, row, write, where=(), guard=""):
    """The flattened pipeline of one token (output pixel): `outer` loops
    (name, count) outside, then groups g, outputs o and cycles c. Each
    group's integer sum (codes at q, their scales at sx, weight row `row`)
    is scaled into out[o] in order, and `write` takes output o's finished
    `sum`; `where` lines run first in each iteration, and where `guard`
    fails the group is skipped (a convolution's padding)."""
    i, n, c, acc = cfg.index, cfg.n, cfg.reuse, f"ap_int<{cfg.acc_bits}>"
    counts = [cnt for _, cnt in outer] + [cfg.k // cfg.group, n, c]
    names = [name for name, _ in outer] + ["g", "o", "c"]
    index = ", ".join(_digit(name, math.prod(counts[j + 1:]), cnt, j == 0)
                      for j, (name, cnt) in enumerate(zip(names, counts)))
    nn, m = cfg.nm or (1, 1)
    if cfg.offchip >= 0:  # flat m_axi pointers
        w, ix = f"W{i} + ({row}) * {cfg.row_bytes}", f"I{i} + ({row}) * {cfg.index_bytes}"
    else:
        w, ix = f"W{i}[{row}]", f"I{i}[{row}]"
    dot = (f"hetc::cycle_dot<{nn}, {m}, {cfg.p}, {cfg.acc_bits}, {cfg.bits}>({q} + g * "
           f"{cfg.group}, {w}, {ix if cfg.nm else 'nullptr'}, g * {cfg.group_kept}, c)")
    first = " && ".join(f"{name} == 0" for name in names[:-2])
    last = " && ".join(f"{name} == {cnt - 1}" for name, cnt in zip(names[:-2], counts[:-2]))
    term = f"prev + (float)acc * ({sx}[g] * SW{i}[{row}][g])"
    return [f"float out[{n}];",
            f"{acc} acc = 0;",
            f"for (int it = 0; it < {math.prod(counts)}; it++) {{",
            "#pragma HLS PIPELINE II=1",
            # out[o] is updated once per n * reuse iterations: Vitis schedules II=1 when
            # that distance covers the read, the adder and the write back
            f"#pragma HLS DEPENDENCE variable=out inter RAW distance={n * c} true",
            f"    int {index};",
            *(f"    {line}" for line in where),
            f"    acc = (c == 0 ? ({acc})0 : acc) + " +
            (f"({guard} ? {dot} : ({acc})0);" if guard else f"{dot};"),
            f"    if (c == {c - 1}) {{",
            f"        float prev = {first} ? 0.f : out[o];",
            f"        float sum = {f'{guard} ? {term} : prev' if guard else term};",
            "        out[o] = sum;",
            f"        if ({last}) {write}",
            "    }", "}"]


def _digit(name, below, count, outermost):
    """`name = ` its digit of the flattened index `it` (`below` iterations
    per step, `count` steps)."""
    value = "it" if below == 1 else f"it / {below}"
    return f"{name} = " + ("0" if count == 1 else value if outermost else f"{value} % {count}")


def _linear(op, cfg):
    """The body of a linear layer: each token quantized, then its flattened
    multiply-accumulate pipeline."""
    k, n, g = cfg.k, cfg.n, cfg.group
    bias = f" + B{cfg.index}[o]" if cfg.bias else ""
    return [f"for (int t = 0; t < {cfg.rows}; t++) {{",
            f"    ap_int<8> q[{k}];",
            f"#pragma HLS ARRAY_PARTITION variable=q cyclic factor={cfg.code_partition}",
            f"    float sx[{k // g}];",
            f"    hetc::quantize<{k}, {g}, 1>(x0 + t * {k}, q, sx);",
            *("    " + line for line in _mac_loop(cfg, [], "q", "sx", "o",
                                                    f"y[t * {n} + o] = sum{bias};")),
            "}"]


def _conv2d(op, cfg):
    """The body of a convolution: each input pixel's channels quantized
    once, then per output pixel a flattened pipeline over the taps (those
    outside the image skipped: padding), groups, outputs and cycles."""
    batch, c, h, wd = op.inputs[0].type.shape
    o, oh, ow = op.output.type.shape[1:]
    kh, kw = op.inputs[1].type.shape[2:]
    (sh, sw), (dh, dw) = op.attrs["stride"], op.attrs["dilation"]
    pt, pl = op.attrs["padding"][:2]
    g, hw = cfg.group, h * wd
    bias = f" + B{cfg.index}[o]" if cfg.bias else ""
    where = [f"int ih = oh * {sh} - {pt} + r * {dh}, iw = ow * {sw} - {pl} + s * {dw};",
             f"bool in = ih >= 0 && ih < {h} && iw >= 0 && iw < {wd};",
             f"int pix = in ? ih * {wd} + iw : 0;"]
    mac = _mac_loop(cfg, [("r", kh), ("s", kw)], "q[pix]", "sx[pix]",
                    f"(o * {kh} + r) * {kw} + s",
                    f"y[((b * {o} + o) * {oh} + oh) * {ow} + ow] = sum{bias};", where, "in")
    return [f"static ap_int<8> q[{hw}][{c}];",
            f"#pragma HLS ARRAY_PARTITION variable=q cyclic factor={cfg.code_partition} dim=2",
            f"static float sx[{hw}][{c // g}];",
            f"for (int b = 0; b < {batch}; b++) {{",
            f"    for (int i = 0; i < {hw}; i++)  /* each pixel's channels, once */",
            f"        hetc::quantize<{c}, {g}, {hw}>(x0 + b * {c * hw} + i, q[i], sx[i]);",
            f"    for (int oh = 0; oh < {oh}; oh++)",
            f"    for (int ow = 0; ow < {ow}; ow++) {{",
            *("        " + line for line in mac),
            "    }", "}"]


# -- float32 between the layers -----------------------------------------------------

def _exponent(op):
    """A pow's exponent when the units take it, a constant 1 to 4 (products
    in order), else None."""
    b = op.inputs[1]
    value = b.producer.attrs.get("value") if _is_const(b) and b.type.numel == 1 else None
    n = None if value is None else float(np.asarray(value).reshape(-1)[0])
    return int(n) if n in (1.0, 2.0, 3.0, 4.0) else None


@lowers("pow")
def _pow(e, op):
    n = _exponent(op)
    shape = op.output.type.shape
    x = broadcast_strides(op.inputs[0].type, shape)
    e.function(f"op{len(e.functions)}", [op.inputs[0]], op.output, _nest(shape, lambda ix: (
        f"y[{_offset(strides(shape), ix)}] = " +
        " * ".join([f"x0[{_offset(x, ix)}]"] * n) + ";")), comment(f"pow {n}"))


@lowers(*UNARY, *BINARY, "gelu")
def _elementwise(e, op):
    shape = op.output.type.shape
    gelu = GELU["tanh" if op.attrs.get("approximate") == "tanh" else "none"]  # as interpreted
    expr = gelu if op.kind == "gelu" else UNARY.get(op.kind) or BINARY[op.kind]
    params, names = _operands(e, op.inputs)
    args = [(a, broadcast_strides(v.type, shape)) for v, a in zip(op.inputs, names)]
    e.function(f"op{len(e.functions)}", params, op.output, _nest(shape, lambda ix: (
        f"y[{_offset(strides(shape), ix)}] = "
        f"{expr.format(*(f'{a}[{_offset(st, ix)}]' for a, st in args))};")), comment(op.kind))


def _operands(e, values):
    """(the function's parameters, the C name of each of `values`): a
    constant is its array in weights.h, every other operand a parameter of
    its own (x0, x1, ...), also when one value comes twice, as each reader
    gets its own fork of it."""
    params, names = [], []
    for v in values:
        if _is_const(v):
            names.append(e.const_array(v))
        else:
            names.append(f"x{len(params)}")
            params.append(v)
    return params, names


def _nest(shape, statement):
    """A loop nest over `shape`, its innermost loop pipelined, running
    `statement(index names)`."""
    names = [f"i{d}" for d in range(len(shape))]
    if not shape:
        return [statement(names)]
    lines = [f"{'    ' * d}for (int {n} = 0; {n} < {s}; {n}++)"
             for d, (n, s) in enumerate(zip(names, shape))]
    lines[-1] += " {"
    return lines + ["#pragma HLS PIPELINE II=1", "    " * len(shape) + statement(names),
                    "    " * (len(shape) - 1) + "}"]


def _offset(st, index):
    return " + ".join(f"{i} * {s}" if s != 1 else i for i, s in zip(index, st) if s) or "0"


@lowers("batch_norm")
def _batch_norm(e, op):
    mean, inv, bias = reference.bn_terms([e.const(v) for v in op.inputs[1:]], op)
    names = []
    for tag, values in (("mean", mean), ("scale", inv), ("bias", bias)):
        names.append(f"N{len(e.weights)}")
        e.weights.append(_array(names[-1], "float", values, [values.size]))
    shape = op.output.type.shape
    e.function(f"op{len(e.functions)}", [op.inputs[0]], op.output, _nest(shape, lambda ix: (
        f"y[{_offset(strides(shape), ix)}] = (x0[{_offset(strides(shape), ix)}] - "
        f"{names[0]}[{ix[1]}]) * {names[1]}[{ix[1]}] + {names[2]}[{ix[1]}];")),
        comment("batch_norm (its statistics folded into a scale and shift per channel)"))


@lowers("reshape")
def _reshape(e, op):
    e.alias(op.output, op.inputs[0])


def _copy(e, op, out, base, read, what):
    """A function copying op's input into `out` (one of its results): out's
    element at index ix is x0[base + ix . read]."""
    shape = out.type.shape
    src = e.const_array(op.inputs[0]) if _is_const(op.inputs[0]) else "x0"
    ins = [] if _is_const(op.inputs[0]) else [op.inputs[0]]
    e.function(f"op{len(e.functions)}", ins, out, _nest(shape, lambda ix: (
        f"y[{_offset(strides(shape), ix)}] = {src}[{base} + {_offset(read, ix)}];")),
        comment(what))


@lowers("transpose")
def _transpose(e, op):
    st = strides(op.inputs[0].type.shape)
    _copy(e, op, op.output, 0, [st[a] for a in op.attrs["perm"]],
          f"transpose {op.attrs['perm']}")


@lowers("expand")
def _expand(e, op):
    _copy(e, op, op.output, 0, broadcast_strides(op.inputs[0].type, op.output.type.shape),
          "expand")


@lowers("slice")
def _slice(e, op):
    st = strides(op.inputs[0].type.shape)
    base, read = 0, list(st)
    for axis, kept in slice_ranges(op.attrs, op.inputs[0].type.shape):
        base += (kept.start if len(kept) else 0) * st[axis]
        read[axis] = kept.step * st[axis]
    _copy(e, op, op.output, base, read, "slice")


@lowers("split")
def _split(e, op):
    st = strides(op.inputs[0].type.shape)
    axis = op.attrs["axis"] % op.inputs[0].type.rank
    start = 0
    for out, size in zip(op.outputs, op.attrs["sizes"]):
        _copy(e, op, out, start * st[axis], st, f"split: {start} .. {start + size - 1}")
        start += size


@lowers("concat")
def _concat(e, op):
    out = op.output.type.shape
    axis = op.attrs["axis"] % len(out)
    params, names = _operands(e, op.inputs)
    lines, start = [], 0
    for v, src in zip(op.inputs, names):
        at = strides(out)
        lines += _nest(v.type.shape, lambda ix, src=src, v=v, start=start: (
            f"y[{start * at[axis]} + {_offset(at, ix)}] = "
            f"{src}[{_offset(strides(v.type.shape), ix)}];"))
        start += v.type.shape[axis]
    e.function(f"op{len(e.functions)}", params, op.output, lines, comment("concat"))


def _rows(op):
    """(rows, row length) of an op over the trailing axes from `axis`."""
    t = op.inputs[0].type
    n = math.prod(t.shape[op.attrs["axis"] % t.rank:])
    return t.numel // n, n


@lowers("layer_norm", "rms_norm")
def _norm(e, op):
    rows, n = _rows(op)
    consts = [e.const_array(v) for v in op.inputs[1:]]
    eps = float_literal(np.float32(op.attrs["eps"]))
    if op.kind == "layer_norm":
        w, b = (consts + [None, None])[:2]
        call = (f"hetc::layer_norm<{rows}, {n}, {str(w is not None).lower()}, "
                f"{str(b is not None).lower()}>(x0, {w or 'nullptr'}, {b or 'nullptr'}, {eps}, y);")
    else:
        w = consts[0] if consts else None
        call = (f"hetc::rms_norm<{rows}, {n}, {str(w is not None).lower()}>(x0, "
                f"{w or 'nullptr'}, {eps}, y);")
    e.function(f"op{len(e.functions)}", [op.inputs[0]], op.output, [call], comment(op.kind))


@lowers("softmax")
def _softmax(e, op):
    t = op.inputs[0].type
    n = t.shape[-1]
    e.function(f"op{len(e.functions)}", [op.inputs[0]], op.output,
               [f"hetc::softmax<{t.numel // n}, {n}>(x0, y);"], comment("softmax"))


@lowers("matmul")
def _matmul(e, op):
    a, b = (v.type for v in op.inputs)
    y = op.output.type
    batch = math.prod(y.shape[:-2])
    (l, k), s = a.shape[-2:], b.shape[-1]
    sa = l * k if math.prod(a.shape[:-2]) == batch > 1 else 0
    sb = k * s if math.prod(b.shape[:-2]) == batch > 1 else 0
    e.function(f"op{len(e.functions)}", list(op.inputs), op.output,
               [f"hetc::matmul<{batch}, {l}, {k}, {s}, {sa}, {sb}>(x0, x1, y);"],
               comment("matmul of two activations"))


@lowers("attention")
def _attention(e, op):
    """softmax(q k^T * scale (softcapped, causal, + a float mask)) v, one
    query row at a time: its scores in a row buffer, sums in order."""
    q, k, v = (x.type for x in op.inputs[:3])
    y = op.output.type
    (L, E), S, EV = q.shape[-2:], k.shape[-2], v.shape[-1]
    batch = y.shape[:-2]
    ix = [f"b{d}" for d in range(len(batch))]
    loops = [f"for (int {n} = 0; {n} < {c}; {n}++)" for n, c in zip(ix, batch)]
    params, names = _operands(e, op.inputs)
    qn, kn, vn = names[:3]

    def base(t):  # the operand's offset at batch index ix (its matrices whole)
        whole = TensorType(t.shape[:-2] + (1, 1), t.dtype)
        return _offset(broadcast_strides(whole, batch + (1, 1))[:-2], ix)
    scale = float_literal(np.float32(op.attrs["scale"] or 1 / math.sqrt(E)))
    cap = op.attrs["softcap"]
    score = [f"float t = acc * {scale};"]
    if cap:
        c = float_literal(np.float32(cap))
        score.append(f"t = {c} * hetc::tanh_(t / {c});")
    if op.attrs["causal"]:
        score.append(f"if (j > i + {op.attrs['causal_offset']}) t = -INFINITY;")
    if len(op.inputs) > 3:  # a float mask, added (broadcast to [..., L, S])
        mst = broadcast_strides(op.inputs[3].type, batch + (L, S))
        score.append(f"t = t + {names[3]}[{_offset(mst, ix + ['i', 'j'])}];")
    body = [
        *loops, "for (int i = 0; i < " + str(L) + "; i++) {",
        f"    const float *qr = {qn} + ({base(q)}) * {L * E} + i * {E};",
        f"    const float *kb = {kn} + ({base(k)}) * {S * E}, *vb = {vn} + ({base(v)}) * "
        f"{S * EV};",
        f"    float *yr = y + ({_offset(strides(batch), ix)}) * {L * EV} + i * {EV};",
        "    float m = -INFINITY, sum = 0.f;",
        f"    for (int j = 0; j < {S}; j++) {{",
        "        float acc = 0.f;",
        f"        for (int d = 0; d < {E}; d++) {{",
        "#pragma HLS PIPELINE II=1",
        f"            acc += qr[d] * kb[j * {E} + d];",
        "        }",
        *(f"        {line}" for line in score),
        "        s[j] = t;",
        "        m = hetc::max_(m, t);",
        "    }",
        "    float shift = m == -INFINITY ? 0.f : m;",
        f"    for (int j = 0; j < {S}; j++) {{",
        "#pragma HLS PIPELINE II=1",
        "        s[j] = hetc::exp_(s[j] - shift);",
        "        sum += s[j];",
        "    }",
        "    float inv = m == -INFINITY ? 0.f : 1.f / sum;  /* every key masked: zeros */",
        f"    for (int d = 0; d < {EV}; d++) {{",
        "        float acc = 0.f;",
        f"        for (int j = 0; j < {S}; j++) {{",
        "#pragma HLS PIPELINE II=1",
        f"            acc += (s[j] * inv) * vb[j * {EV} + d];",
        "        }",
        "        yr[d] = acc;",
        "    }", "}"]
    e.function(f"op{len(e.functions)}", params, op.output, [f"float s[{S}];", *body],
               comment("attention (float32)"))


@lowers("max_pool2d")
def _max_pool(e, op):
    n, c, h, w = op.inputs[0].type.shape
    oh, ow = op.output.type.shape[2:]
    kh, kw = op.attrs["kernel"]
    sh, sw = op.attrs.get("stride") or op.attrs["kernel"]
    dh, dw = op.attrs["dilation"]
    pt, pl = op.attrs["padding"][:2]
    e.function(f"op{len(e.functions)}", [op.inputs[0]], op.output,
               [f"hetc::max_pool<{n * c}, {h}, {w}, {oh}, {ow}, {kh}, {kw}, {sh}, {sw}, {dh}, "
                f"{dw}, {pt}, {pl}>(x0, y);"], comment("max_pool2d"))


@lowers("global_avg_pool")
def _global_avg_pool(e, op):
    n, c = op.inputs[0].type.shape[:2]
    hw = math.prod(op.inputs[0].type.shape[2:])
    e.function(f"op{len(e.functions)}", [op.inputs[0]], op.output,
               [f"hetc::mean_planes<{n * c}, {hw}>(x0, y);"], comment("global_avg_pool"))


def pack_codes(codes, bits):
    """[N, KW] codes as bytes: int8 one per byte, int4 two per byte (low
    nibble first; an odd row padded with a zero code)."""
    codes = np.asarray(codes)
    if bits != 4:
        return (codes.astype(np.int16) & 255).astype(np.uint8)
    even = np.pad(codes, ((0, 0), (0, codes.shape[1] % 2)))  # rows of whole bytes
    return pack_nibbles(even).reshape(codes.shape[0], -1)


def pack_positions(idx):
    """[N, KK] 2-bit positions as bytes, four per byte, lowest bits first
    (a short last byte padded with zeros)."""
    b = np.asarray(idx).astype(np.uint8)
    if b.shape[1] % 4:
        b = np.pad(b, ((0, 0), (0, -b.shape[1] % 4)))
    return b[:, 0::4] | b[:, 1::4] << 2 | b[:, 2::4] << 4 | b[:, 3::4] << 6


def keep_nm(codes, n, m):
    """(kept codes [N, K * n / m], positions in their group of m) of N:M
    codes: the nonzero positions first, padded with zero positions,
    ascending (the unit multiplies a padded position's zero weight)."""
    rows, k = codes.shape
    groups = codes.reshape(rows, k // m, m)
    if ((groups != 0).sum(-1) > n).any():
        raise AssertionError("fpga: N:M weights with more than n nonzeros in a group")
    keep = np.sort(np.argsort(groups == 0, axis=-1, kind="stable")[..., :n], axis=-1)
    kept = np.take_along_axis(groups, keep, -1).reshape(rows, -1)
    return kept, keep.reshape(rows, -1)


def _array(name, ctype, data, shape):
    """A C array definition of the values of `data`."""
    flat = np.asarray(data).reshape(-1)
    if ctype == "float":
        body = ", ".join(float_literal(float(v)) for v in flat.astype(np.float32))
    else:
        body = ", ".join(str(int(v)) for v in flat)
    dims = "".join(f"[{d}]" for d in shape)
    return f"static const {ctype} {name}{dims} = {{{body}}};\n"


# -- the project ---------------------------------------------------------------------

#: every IR op this renderer has no lowering for, and why
REFUSED = {k: REFUSED_WHY for k in OPS if k not in LOWER and k != "const"}


@dataclass
class Call:
    """One function of model.cpp as the top function calls it."""

    name: str
    reads: list  # C arrays
    writes: str
    extra: dict = field(default_factory=dict)


class HlsEmitter:
    """The graph as the files of a Vitis-HLS project."""

    def __init__(self, graph, configs):
        self.g, self.configs = graph, configs
        self.layers, self.weights, self.functions, self.calls = [], [], [], []
        self.arrays, self.sizes, self.consts = {}, {}, {}
        self.offchip = []  # (port name, memory bank, bytes) of weights streamed over m_axi

    def var(self, v):
        """The C array holding value v (the whole call's)."""
        if v not in self.arrays:
            self.arrays[v] = f"v{len(self.sizes)}"
            self.sizes[self.arrays[v]] = v.type.numel
        return self.arrays[v]

    def alias(self, v, of):
        self.arrays[v] = self.var(of)

    def const(self, v):
        return load_const(v.producer, self.g)

    def const_array(self, v):
        """A float constant as an array in weights.h (once)."""
        if v not in self.consts:
            self.consts[v] = f"C{len(self.consts)}"
            self.weights.append(_array(self.consts[v], "float", self.const(v),
                                       [max(v.type.numel, 1)]))
        return self.consts[v]

    def function(self, name, ins, out, lines, note, ports=()):
        """A function of model.cpp: parameters x0, x1, ... (the values `ins`),
        y (`out`) and the m_axi `ports` it reads weights from."""
        params = [f"const float x{j}[{max(v.type.numel, 1)}]" for j, v in enumerate(ins)]
        params.append(f"float y[{max(out.type.numel, 1)}]")
        params += [f"const unsigned char *{p}" for p in ports]
        self.functions.append(f"{note}\nstatic void {name}({', '.join(params)}) {{\n" +
                              "".join(f"    {line}\n" for line in lines) + "}\n")
        self.calls.append(Call(name, [self.var(v) for v in ins], self.var(out),
                               extra={"ports": list(ports)}))

    def run(self):
        for v in self.g.inputs:
            self.var(v)
        for op in self.g.ops:
            if op.kind != "const":
                LOWER[op.kind](self, op)
        return HlsProject(self, _forked(self.calls, [self.var(v) for v in self.g.outputs],
                                        self.sizes))


def _forked(calls, outputs, sizes):
    """The calls with a fork after each array read more than once (the
    outputs' stream writers count as readers): a copy per reader, each
    reader given its own."""
    readers = {}
    for c in calls:
        for a in c.reads:
            readers[a] = readers.get(a, 0) + 1
    for a in outputs:
        readers[a] = readers.get(a, 0) + 1
    copies = {a: [f"{a}_{j}" for j in range(n)] for a, n in readers.items() if n > 1}
    for a, names in copies.items():
        for name in names:
            sizes[name] = sizes[a]
    taken = {a: 0 for a in copies}

    def take(a):
        if a not in copies:
            return a
        taken[a] += 1
        return copies[a][taken[a] - 1]

    out = [Call("fork", [a], "", extra={"copies": copies[a]}) for a in copies if a not in
           {c.writes for c in calls}]  # graph inputs read twice
    for c in calls:
        out.append(Call(c.name, [take(a) for a in c.reads], c.writes, extra=c.extra))
        if c.writes in copies:
            out.append(Call("fork", [c.writes], "", extra={"copies": copies[c.writes]}))
    return out, [take(a) for a in outputs]


@dataclass
class HlsProject:
    emitter: HlsEmitter
    schedule: tuple  # (calls, output arrays) after forks

    @property
    def layers(self):
        return self.emitter.layers

    @property
    def configs(self):
        return self.emitter.configs

    @property
    def inputs(self):
        return [(self.emitter.var(v), v.type.numel) for v in self.emitter.g.inputs]

    @property
    def outputs(self):
        return [(a, self.emitter.sizes[a]) for a in self.schedule[1]]

    def top(self) -> str:
        e = self.emitter
        calls, outs = self.schedule
        streams = [f"hls::stream<float> &in{j}" for j in range(len(self.inputs))] + \
            [f"hls::stream<float> &out{j}" for j in range(len(outs))]
        ports = "".join(f"#pragma HLS INTERFACE axis port={s.split('&')[1]}\n" for s in streams)
        for name, bank, data in e.offchip:  # weights in a memory bank, read over AXI
            streams.append(f"const unsigned char *{name}")
            ports += (f"#pragma HLS INTERFACE m_axi port={name} offset=slave bundle=gmem{bank} "
                      f"depth={len(data)}\n#pragma HLS INTERFACE s_axilite port={name}\n")
        written = {a for c in calls for a in ([c.writes] if c.writes else c.extra["copies"])}
        arrays = [a for a in e.sizes if a in written or a in dict(self.inputs)]
        body = "".join(f"    HETC_BUFFER float {a}[{max(e.sizes[a], 1)}];\n" for a in arrays)
        for j, (a, n) in enumerate(self.inputs):
            body += (f"    for (int i = 0; i < {n}; i++) {{\n#pragma HLS PIPELINE II=1\n"
                     f"        {a}[i] = in{j}.read();\n    }}\n")
        for c in calls:
            if c.name == "fork":
                a = c.reads[0]
                body += (f"    for (int i = 0; i < {e.sizes[a]}; i++) {{  /* fork */\n"
                         f"#pragma HLS PIPELINE II=1\n" +
                         "".join(f"        {d}[i] = {a}[i];\n" for d in c.extra["copies"]) +
                         "    }\n")
            else:
                body += f"    {c.name}({', '.join([*c.reads, c.writes, *c.extra['ports']])});\n"
        for j, (a, n) in enumerate(self.outputs):
            body += (f"    for (int i = 0; i < {n}; i++) {{\n#pragma HLS PIPELINE II=1\n"
                     f"        out{j}.write({a}[i]);\n    }}\n")
        return (comment("the top function: read the inputs, the ops (a dataflow pipeline), "
                        "write the outputs") + "\n"
                f"void hetc_top({', '.join(streams)}) {{\n{ports}"
                "#pragma HLS INTERFACE s_axilite port=return\n#pragma HLS DATAFLOW\n"
                f"{body}}}\n")

    def sources(self) -> dict:
        e = self.emitter
        ins, outs = self.inputs, self.outputs
        sizes = ", ".join(f"{n} in" for _, n in ins) + " -> " + \
            ", ".join(f"{n} out" for _, n in outs)
        model = (comment("generated by hetc: do not edit") + "\n" +
                 comment(f"graph @{e.g.name}: {sizes} float32 values") + "\n"
                 '#include "hetc_fpga.h"\n#include "weights.h"\n\n' +
                 "\n".join(e.functions) + "\n" + self.top())
        weights = (comment("generated by hetc: the layers' weights (N:M: kept values and "
                           "their positions), scales, biases and constants") + "\n"
                   "#ifndef HETC_WEIGHTS_H\n#define HETC_WEIGHTS_H\n#include \"ap_int.h\"\n" +
                   "".join(e.weights) + "#endif\n")
        streams = ", ".join([f"si{j}" for j in range(len(ins))] +
                            [f"so{j}" for j in range(len(outs))])
        declare = f"    hls::stream<float> {streams};\n"
        feed = "".join(f"    for (long i = 0; i < {n}; i++) si{j}.write(in[{j}][i]);\n"
                       for j, (_, n) in enumerate(ins))
        drain = "".join(f"    for (long i = 0; i < {n}; i++) out[{j}][i] = so{j}.read();\n"
                        for j, (_, n) in enumerate(outs))
        proto = ("void hetc_top(" + ", ".join(["hls::stream<float> &"] * (len(ins) + len(outs)) +
                                              ["const unsigned char *"] * len(e.offchip))
                 + ");\n")
        blob, offsets = offchip_blob(e.offchip)
        args = "".join(f", blob + {off}" for off in offsets)
        sim = (comment("the C simulation's entry (hetc runs it with ctypes): the test "
                       "bench's work without files; blob: weights.bin") + "\n"
               '#include "model.cpp"\n\n'
               'extern "C" int hetc_sim(const float **in, float **out, '
               'const unsigned char *blob) {\n' + declare + feed +
               f"    hetc_top({streams}{args});\n" + drain + "    return 0;\n}\n")
        read = "".join(
            f"    for (long i = 0; i < {n}; i++) {{\n"
            "        float v;\n"
            "        if (fread(&v, 4, 1, f) != 1) { fprintf(stderr, \"%s is short\\n\", src); "
            "return 1; }\n"
            f"        si{j}.write(v);\n    }}\n" for j, (_, n) in enumerate(ins))
        write = "".join(f"    for (long i = 0; i < {n}; i++) {{\n"
                        f"        float v = so{j}.read();\n        fwrite(&v, 4, 1, g);\n"
                        "    }\n" for j, (_, n) in enumerate(outs))
        tb = (comment("test bench (Vitis csim and cosim): input.bin -> output.bin, raw "
                      "little-endian float32, the inputs (outputs) one after another") + "\n"
              "#include <stdio.h>\n#include \"hls_stream.h\"\n\n" + proto + "\n"
              "int main(int argc, char **argv) {\n"
              "    const char *src = argc > 1 ? argv[1] : \"input.bin\";\n"
              "    const char *dst = argc > 2 ? argv[2] : \"output.bin\";\n"
              "    FILE *f = fopen(src, \"rb\");\n"
              "    if (!f) { fprintf(stderr, \"cannot open %s\\n\", src); return 1; }\n"
              + declare + read + "    fclose(f);\n" + _read_blob(len(blob)) +
              f"    hetc_top({streams}{args});\n"
              "    FILE *g = fopen(dst, \"wb\");\n"
              "    if (!g) { fprintf(stderr, \"cannot write %s\\n\", dst); return 1; }\n"
              + write + "    fclose(g);\n    return 0;\n}\n")
        files = {"model.cpp": model, "weights.h": weights, "sim.cpp": sim, "tb.cpp": tb}
        return {**files, "weights.bin": blob} if blob else files


def offchip_blob(arrays) -> tuple:
    """(bytes, offsets) of the off-chip weight arrays laid out one after
    another, each on a 64-byte boundary (an AXI burst's alignment)."""
    blob, offsets = b"", []
    for _, _, data in arrays:
        blob += bytes(-len(blob) % 64)
        offsets.append(len(blob))
        blob += data
    return blob, offsets


def _read_blob(size) -> str:
    """Test bench lines reading weights.bin (the m_axi weights) into `blob`."""
    if not size:
        return "    static const unsigned char *blob = 0;\n"
    return ("    static unsigned char blob[" + str(size) + "];\n"
            "    FILE *wf = fopen(\"weights.bin\", \"rb\");\n"
            "    if (!wf || fread(blob, 1, sizeof blob, wf) != sizeof blob) {\n"
            "        fprintf(stderr, \"cannot read weights.bin\\n\"); return 1; }\n"
            "    fclose(wf);\n")


def lower_graph(graph, reuse, part) -> HlsProject:
    return HlsEmitter(graph, plan(graph, reuse, part)).run()
