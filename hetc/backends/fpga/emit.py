"""The HLS renderer: the graph as a Vitis-HLS C++ project (model.cpp, the
layers' weights in weights.h, a test bench, a build script) over the
processing elements of hetc_fpga.h.

What it takes so far: a chain of `linear` layers with symmetric int8/int4
weights, dense or N:M (2:4, 1:4, 1:3), int8 activations quantized per
token and group (the groups of the weights), biases, and `relu` between
them, after reshapes of the input (a Flatten); one input and one output. Everything else is refused with
the reason. Each layer is resolved into a LayerConfig before code is
generated: sizes, pattern, the weights' ap_int type, the parallelism P
(multipliers) and the reuse factor (cycles per group), the accumulator
width.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from hetc.backends.c.quant import integer_codes, integer_weight, weight_scales
from hetc.backends.c.text import comment, float_literal
from hetc.core.errors import TargetError, UsageError
from hetc.core.registry import Registry
from hetc.ir.interpret import load_const
from hetc.ir.ops import OPS

from . import cost

LOWER = Registry("fpga lowerings")
PATTERNS = ((2, 4), (1, 4), (1, 3))  # the N:M units; dense otherwise
MAX_P = 16  # multipliers per unit at most (the reuse factor grows instead)
REFUSED_WHY = "not lowered for fpga yet (docs/fpga.md lists what is)"


@dataclass(frozen=True)
class LayerConfig:
    """One linear layer as the hardware is built for it."""

    index: int
    k: int  # inputs
    n: int  # outputs
    group: int  # inputs per scale (activations and weights)
    bits: int  # weight width: ap_int<bits>
    nm: tuple | None  # (n, m) kept of every m, or None (dense)
    p: int  # multipliers: kept weights per cycle
    bias: bool

    @property
    def kept(self) -> int:
        """Kept weights per row."""
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

    def pattern(self) -> str:
        return f"{self.nm[0]}:{self.nm[1]}" if self.nm else "dense"


def lowers(*kinds):
    return LOWER.register(*kinds)


def _divisors(n, most=MAX_P):
    return [p for p in range(1, min(n, most) + 1) if n % p == 0]


def layer_config(index, op, reuse=0) -> LayerConfig:
    """The hardware of one linear layer: P = a group's kept weights / `reuse`
    (UsageError when that does not divide), or with reuse 0 the largest P
    of at most MAX_P multipliers dividing them."""
    w = op.inputs[1]
    _, bits, group = integer_weight(w)
    n, k = w.type.shape
    nm = (w.type.nm.n, w.type.nm.m) if w.type.nm is not None else None
    group_kept = group * nm[0] // nm[1] if nm else group
    if reuse and group_kept % reuse:
        takes = ", ".join(str(group_kept // p) for p in _divisors(group_kept, group_kept))
        raise UsageError(f"fpga: reuse={reuse} does not divide the {group_kept} kept weights "
                         f"per group of layer %{op.output.name} (it takes {takes})")
    p = group_kept // reuse if reuse else max(_divisors(group_kept))
    return LayerConfig(index, k, n, group, bits, nm, p, len(op.inputs) > 2)


def plan(graph, reuse, part) -> dict:
    """{linear op: LayerConfig}: with reuse 0, the multipliers are halved
    (the next smaller divisor, in the layer with the most) until the model
    fits `part`; TargetError when even one multiplier per layer does not."""
    linears = [op for op in graph.ops if op.kind == "linear"]
    configs = {op: layer_config(i, op, reuse) for i, op in enumerate(linears)}
    while True:
        usage = cost.estimate(list(configs.values()), 1, part)  # fitting: tokens do not count
        if usage["fits"]:
            return configs
        wide = [(c.p, op) for op, c in configs.items() if c.p > 1]
        if reuse or not wide:
            raise TargetError(f"target fpga: the model does not fit {part.name} ({usage['dsp']} "
                              f"DSP, {usage['lut']} LUT, {usage['bram18']} BRAM18 of {part.dsp}"
                              f" / {part.lut} / {part.bram18})" +
                              ("" if reuse else " even with one multiplier per layer") +
                              (": raise reuse or choose a larger part" if reuse else ""))
        _, op = max(wide, key=lambda t: t[0])
        c = configs[op]
        configs[op] = dataclasses.replace(c, p=max(d for d in _divisors(c.group_kept) if d < c.p))


def why_not(op):
    """Why the fpga renderer cannot lower `op` (of a kind it lowers), or None."""
    if op.kind == "linear":
        w = op.inputs[1]
        q = integer_weight(w)
        if q is None:
            return ("weights that are not symmetric int8/int4 codes (give precision='int8' or "
                    "'int4')")
        if not op.attrs.get("act_group"):
            return "f32 activations (the fpga datapath quantizes them: activations='int8')"
        if op.attrs["act_group"] != q[2]:
            return (f"activation groups of {op.attrs['act_group']} and weight groups of {q[2]} "
                    f"(they must be the same)")
        nm = w.type.nm
        if nm is not None and (nm.n, nm.m) not in PATTERNS:
            return f"{nm.n}:{nm.m} weights (the units take 2:4, 1:4 and 1:3)"
        if nm is not None and q[2] % nm.m:
            return f"groups of {q[2]} that are not a multiple of M = {nm.m}"
        if len(op.inputs) > 2 and not _is_const(op.inputs[2]):
            return "a bias that is not a constant"
    for v in list(op.inputs) + list(op.outputs):
        if not _is_const(v) and v.type.dtype.name != "f32":
            return f"{v.type.dtype} value %{v.name}"
    return None


def graph_problems(graph) -> list:
    """The project streams one f32 input and one f32 output, token by token
    (vectors along the last axis), through one chain of ops: each takes the
    one before's result, the last gives the output."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        return [f"{len(graph.inputs)} inputs and {len(graph.outputs)} outputs (a project "
                f"streams one of each)"]
    x, y = graph.inputs[0], graph.outputs[0]
    if x.type.rank == 0 or y.type.rank == 0 or 0 in x.type.shape or 0 in y.type.shape:
        return ["an input or output without a last axis of vectors (a project streams "
                "vectors)"]
    out, prev, stream, started = [], x, x, False
    for i, op in enumerate(graph.ops):
        if op.kind == "const":
            continue
        where = f"op #{i} {op.kind} (%{op.outputs[0].name})"
        if op.inputs[0] is not prev:
            out.append(f"{where}: not the next link of one chain from the input")
        elif op.kind == "reshape" and started:
            out.append(f"{where}: a reshape after the first layer (the stream's vectors are "
                       f"fixed by then)")
        elif op.kind == "reshape":
            stream = op.output  # the input streamed as vectors of this shape's last axis
        elif op.output.type.shape[:-1] != stream.type.shape[:-1]:
            out.append(f"{where}: not token by token (leading axes {list(stream.type.shape[:-1])})")
        started |= op.kind != "reshape"
        prev = op.output
    if prev is not y:
        out.append(f"the output %{y.name} is not the end of the chain from the input")
    if 0 in stream.type.shape or stream.type.rank == 0:
        out.append("an input reshaped to no vectors")
    return out


def _is_const(v):
    return v.producer is not None and v.producer.kind == "const"


# -- lowering ------------------------------------------------------------------------

@lowers("linear")
def _linear(e, op):
    x, w = op.inputs[:2]
    cfg = e.configs[op]
    name = integer_weight(w)[0]
    bits, group, nm, n, k = cfg.bits, cfg.group, cfg.nm, cfg.n, cfg.k
    e.layers.append(cfg)
    codes = integer_codes(e, name)
    scales = weight_scales(e, name, n, k // group)
    bias = (np.asarray(e.const(op.inputs[2]), np.float32) if cfg.bias
            else np.zeros(n, np.float32))
    i = cfg.index
    # held as bytes, int4 two per byte (constant arrays of ap_int take g++
    # minutes to compile); the units multiply them as ap_int<bits>
    if nm is not None:
        codes, idx = keep_nm(codes, *nm)
        idx = pack_positions(idx)
        e.weights.append(_array(f"I{i}", "unsigned char", idx, list(idx.shape)))
    held = pack_codes(codes, bits)
    e.weights.append(_array(f"W{i}", "unsigned char", held, list(held.shape)))
    e.weights.append(_array(f"SW{i}", "float", scales, [n, k // group]))
    e.weights.append(_array(f"B{i}", "float", bias, [n]))
    src, dst = e.var(x), e.var(op.output)
    mv = (f"hetc::dense_mv<{k}, {n}, {group}, {cfg.p}, {cfg.acc_bits}, {bits}>"
          f"(q, sx, W{i}, SW{i}, B{i}, {str(cfg.bias).lower()}, {dst});" if nm is None else
          f"hetc::nm_mv<{k}, {n}, {nm[0]}, {nm[1]}, {group}, {cfg.p}, {cfg.acc_bits}, {bits}>"
          f"(q, sx, W{i}, I{i}, SW{i}, B{i}, {str(cfg.bias).lower()}, {dst});")
    e.function(f"layer{i}", src, dst, k, n, [
        f"#pragma HLS ARRAY_PARTITION variable=W{i} cyclic factor={cfg.weight_partition} dim=2",
        *([f"#pragma HLS ARRAY_PARTITION variable=I{i} cyclic factor={cfg.index_partition} "
           f"dim=2"] if nm else []),
        f"ap_int<8> q[{k}];",
        f"float sx[{k // group}];",
        f"hetc::quantize<{k}, {group}>({src}, q, sx);",
        mv], comment(f"linear {cfg.pattern()} int{bits} g{group}: P = {cfg.p} multipliers, "
                     f"reuse factor {cfg.reuse}"))


@lowers("reshape")
def _reshape(e, op):
    """Leading reshapes (a Flatten before the first layer) relabel the
    stream: the same values, as vectors of the new last axis."""
    e.stream = op.output


@lowers("relu")
def _relu(e, op):
    n = op.output.type.shape[-1]
    src, dst = e.var(op.inputs[0]), e.var(op.output)
    e.function(f"act{len(e.functions)}", src, dst, n, n, [f"hetc::relu<{n}>({src}, {dst});"],
               comment("relu"))


def pack_codes(codes, bits):
    """[N, KW] codes as bytes: int8 one per byte, int4 two per byte (low
    nibble first; an odd row padded with a zero code)."""
    b = (np.asarray(codes).astype(np.int16) & 255).astype(np.uint8)
    if bits != 4:
        return b
    if b.shape[1] % 2:
        b = np.pad(b, ((0, 0), (0, 1)))
    return (b[:, 0::2] & 15) | (b[:, 1::2] & 15) << 4


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


class HlsEmitter:
    """The graph as the files of a Vitis-HLS project."""

    def __init__(self, graph, configs):
        self.g, self.configs = graph, configs
        self.layers, self.weights, self.functions, self.calls = [], [], [], []
        self.names = {}

    def var(self, v):
        """The C array holding value v for one token."""
        if v not in self.names:
            self.names[v] = f"v{len(self.names)}"
        return self.names[v]

    def const(self, v):
        return load_const(v.producer, self.g)

    def function(self, name, src, dst, k, n, lines, note):
        self.functions.append(f"{note}\nstatic void {name}(const float {src}[{k}], "
                              f"float {dst}[{n}]) {{\n" +
                              "".join(f"    {line}\n" for line in lines) + "}\n")
        self.calls.append((name, src, dst, n))

    def run(self):
        self.stream = self.g.inputs[0]  # what the top function reads, as vectors
        for op in self.g.ops:
            if op.kind != "const":
                LOWER[op.kind](self, op)
        k, n = self.stream.type.shape[-1], self.g.outputs[0].type.shape[-1]
        return HlsProject(self, self.stream.type.numel // k, k, n)


@dataclass
class HlsProject:
    emitter: HlsEmitter
    tokens: int
    k: int
    n: int

    @property
    def layers(self):
        return self.emitter.layers

    def sources(self) -> dict:
        e = self.emitter
        x, y = e.var(e.stream), e.var(e.g.outputs[0])
        arrays = "".join(f"    float {dst}[{n}];\n" for _, _, dst, n in e.calls)
        calls = "".join(f"    {name}({src}, {dst});\n" for name, src, dst, _ in e.calls)
        model = (comment("generated by hetc: do not edit") + "\n" +
                 comment(f"graph @{e.g.name}: {self.tokens} token(s) of {self.k} inputs -> "
                         f"{self.n} outputs") + "\n"
                 '#include "hetc_fpga.h"\n#include "weights.h"\n\n' +
                 "\n".join(e.functions) + "\n" +
                 comment("one token: read, the layers (a dataflow pipeline), write") + "\n"
                 f"static void token(hls::stream<float> &in, hls::stream<float> &out) {{\n"
                 f"#pragma HLS DATAFLOW\n"
                 f"    float {x}[{self.k}];\n"
                 f"    for (int i = 0; i < {self.k}; i++) {{\n"
                 f"#pragma HLS PIPELINE II=1\n"
                 f"        {x}[i] = in.read();\n    }}\n"
                 f"{arrays}{calls}"
                 f"    for (int i = 0; i < {self.n}; i++) {{\n"
                 f"#pragma HLS PIPELINE II=1\n"
                 f"        out.write({y}[i]);\n    }}\n}}\n\n"
                 "void hetc_top(hls::stream<float> &in, hls::stream<float> &out) {\n"
                 "#pragma HLS INTERFACE axis port=in\n"
                 "#pragma HLS INTERFACE axis port=out\n"
                 "#pragma HLS INTERFACE s_axilite port=return\n"
                 f"    for (int t = 0; t < {self.tokens}; t++) token(in, out);\n}}\n")
        weights = (comment("generated by hetc: the layers' weights (N:M: kept values and "
                           "their positions), scales and biases") + "\n"
                   "#ifndef HETC_WEIGHTS_H\n#define HETC_WEIGHTS_H\n#include \"ap_int.h\"\n" +
                   "".join(e.weights) + "#endif\n")
        count_in, count_out = self.tokens * self.k, self.tokens * self.n
        sim = (comment("the C simulation's entry (hetc runs it with ctypes): the test "
                       "bench's work without files") + "\n"
               '#include "model.cpp"\n\n'
               'extern "C" int hetc_sim(const float *in, float *out) {\n'
               "    hls::stream<float> si, so;\n"
               f"    for (long i = 0; i < {count_in}; i++) si.write(in[i]);\n"
               "    hetc_top(si, so);\n"
               f"    for (long i = 0; i < {count_out}; i++) out[i] = so.read();\n"
               "    return 0;\n}\n")
        tb = (comment("test bench (Vitis csim and cosim): input.bin -> output.bin, raw "
                      "little-endian float32") + "\n"
              "#include <stdio.h>\n#include \"hls_stream.h\"\n\n"
              "void hetc_top(hls::stream<float> &in, hls::stream<float> &out);\n\n"
              "int main(int argc, char **argv) {\n"
              "    const char *src = argc > 1 ? argv[1] : \"input.bin\";\n"
              "    const char *dst = argc > 2 ? argv[2] : \"output.bin\";\n"
              "    FILE *f = fopen(src, \"rb\");\n"
              "    if (!f) { fprintf(stderr, \"cannot open %s\\n\", src); return 1; }\n"
              "    hls::stream<float> si, so;\n"
              f"    for (long i = 0; i < {count_in}; i++) {{\n"
              "        float v;\n"
              "        if (fread(&v, 4, 1, f) != 1) { fprintf(stderr, \"%s is short\\n\", src); "
              "return 1; }\n"
              "        si.write(v);\n    }\n    fclose(f);\n"
              "    hetc_top(si, so);\n"
              "    FILE *g = fopen(dst, \"wb\");\n"
              "    if (!g) { fprintf(stderr, \"cannot write %s\\n\", dst); return 1; }\n"
              f"    for (long i = 0; i < {count_out}; i++) {{\n"
              "        float v = so.read();\n        fwrite(&v, 4, 1, g);\n    }\n"
              "    fclose(g);\n    return 0;\n}\n")
        return {"model.cpp": model, "weights.h": weights, "sim.cpp": sim, "tb.cpp": tb}


def lower_graph(graph, reuse, part) -> HlsProject:
    return HlsEmitter(graph, plan(graph, reuse, part)).run()
