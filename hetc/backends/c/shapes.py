"""Shape limits the C-family GEMM kernels share."""

from __future__ import annotations

import math


def matmul_problem(op):
    """Why a matmul is not a plain batched GEMM the kernels take, or None:
    both operands at least 2-D, each batched fully or not at all."""
    a, b = (x.type for x in op.inputs)
    if a.rank < 2 or b.rank < 2:
        return f"{a} x {b}: vector operands (not lowered yet)"
    batch = math.prod(op.output.type.shape[:-2])
    if any(math.prod(t.shape[:-2]) not in (1, batch) for t in (a, b)):
        return f"{a} x {b}: partial batch broadcasting (not lowered yet)"
    return None
