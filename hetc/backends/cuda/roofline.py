"""What a call of a cuda model would take on the target's reference GPU,
by the roofline of its cost model: each op's bytes (weights as stored,
activations read and written) over the memory bandwidth, or its
multiply-adds over the peak rate of the arithmetic its kernel uses,
whichever is longer. An estimate for the report until the kernels are
timed on a GPU (benchmarks/cuda_gpu.py); launch overheads are left out."""

from __future__ import annotations

import math

from hetc.ir.types import TensorType

#: op kinds counted as arithmetic; everything else is moved bytes only
_FLOPS = {
    "linear": lambda op: 2 * op.output.type.numel * op.inputs[1].type.shape[1],
    "matmul": lambda op: 2 * op.output.type.numel * op.inputs[0].type.shape[-1],
    "conv2d": lambda op: 2 * op.output.type.numel * math.prod(op.inputs[1].type.shape[1:]),
    "attention": lambda op: 4 * op.inputs[0].type.numel * op.inputs[1].type.shape[-2],
}


def _bytes(t: TensorType) -> int:
    return t.packed_bytes() if t.encodings else t.storage_bytes()


def estimate(graph, target, tensor_core_ops) -> tuple[float, int, float]:
    """(seconds, bytes, flops) of one call; `tensor_core_ops` are the ops
    whose kernels run on tensor cores (at the f16 rate, twice that on
    mma.sp), the rest at the f32 rate."""
    cost = target.cost
    seconds = nbytes = flops = 0
    for op in graph.ops:
        if op.kind == "const":
            continue
        moved = sum(_bytes(v.type) for v in op.inputs) + sum(_bytes(v.type) for v in op.outputs)
        ops = _FLOPS[op.kind](op) if op.kind in _FLOPS else 0
        rate = "f32"
        if op in tensor_core_ops:
            rate = op.output.type.dtype.name
            if tensor_core_ops[op]:
                ops /= cost.sparse_speedup.get("2:4", 1.0)
        seconds += cost.seconds(moved, ops, rate)
        nbytes += moved
        flops += ops
    return seconds, nbytes, flops


def note(graph, target, tensor_core_ops) -> str:
    seconds, nbytes, flops = estimate(graph, target, tensor_core_ops)
    return (f"cuda: roofline ESTIMATE on {target.cost.reference_part} "
            f"({target.cost.bandwidth_gbs:g} GB/s): {seconds * 1e3:.3g} ms per call "
            f"({nbytes / 1e6:.3g} MB moved, {flops / 1e9:.3g} GFLOP; not measured: "
            f"make gpu-check times the kernels on a GPU)")
