"""The cycle model of hetc's FPGA processing elements (hetc/backends/fpga):
shared by the fpga target's cost model, which the per-layer search ranks
compression choices by, and the fpga backend's resource report.

A layer's multiply-accumulates run as one flattened pipeline per token
(output pixel): taps x groups x outputs x reuse cycles, P multipliers each
taking one kept weight a cycle (P divides a group's kept weights, at most
MAX_P by default), after its inputs are quantized in two passes.
"""

from __future__ import annotations

import math

MAX_P = 16  # multipliers per unit at most by default (the reuse factor grows instead)
PIPELINE_DEPTH = 3  # a multiply, the adder tree's first stage, the accumulator
# cycles of a float32 adder at the target clock (nominal)
FADD_LATENCY = 8
# an output's f32 sum is read, added to and written back: updated less often
# than this, the flattened loop runs at II=1, else the pipeline waits on it
RECURRENCE = FADD_LATENCY + 2


def divisors(n, most=MAX_P) -> list:
    return [p for p in range(1, min(n, most) + 1) if n % p == 0]


def multipliers(group_kept, most=MAX_P) -> int:
    """The default P: the largest divisor of a group's kept weights, at most `most`."""
    return max(divisors(group_kept, most))


def quantize_cycles(k, vectors) -> int:
    """The two passes (max, then divide) over each of `vectors` inputs of k values."""
    return 2 * k * vectors


def mac_cycles(rows, taps, groups, n, reuse, p) -> int:
    """The flattened multiply-accumulate pipelines of `rows` tokens (output pixels)."""
    ii = 1 if n * reuse >= RECURRENCE else RECURRENCE
    return rows * (taps * groups * n * reuse * ii + PIPELINE_DEPTH +
                   math.ceil(math.log2(max(p, 2))))
