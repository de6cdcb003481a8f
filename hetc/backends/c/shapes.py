"""Operand limits the C-family kernels share."""

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


def index_problem(idx):
    """Why `idx` cannot index (gather, embedding) in generated code, or None."""
    return None if idx.type.dtype.name in ("i64", "i32") else \
        f"indices of {idx.type.dtype} (needs i64 or i32)"


def mask_problem(op):
    """Why an attention's mask cannot be read by generated code, or None."""
    if len(op.inputs) > 3 and op.inputs[3].type.dtype.name not in ("bool", "f32"):
        return f"attention mask of {op.inputs[3].type.dtype} (needs bool or f32)"
    return None


CONV_INT8_ACTIVATIONS = "int8 activations (act_group) on a convolution (not lowered yet)"
