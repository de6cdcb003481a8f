"""Constants as OpenVINO nodes, compressed weights in the decompression form
OpenVINO recognizes and keeps packed.

A quantized weight becomes

    Constant(i8 | i4 | u4 codes, [..., groups, group])
      -> Convert(f32) [-> Subtract(Convert(zero point))] -> Multiply(Convert(f16 scales))
      -> Reshape(logical shape)

which is the pattern OpenVINO's CPU and NPU plugins fold into their
compressed matmul kernels (the codes stay in 4 or 8 bits in the saved .bin).
The mx4 codebook has no OpenVINO type: its 4-bit codes index a small table
with a Gather, exact but no compressed-kernel fast path. (3-bit formats are
not npu weight dtypes: the passes keep those layers in float.)

openvino is imported inside the functions that use it: `import hetc` must not
load heavy optional packages.
"""

from __future__ import annotations

import numpy as np

from hetc.backends.packing import pack_nibbles
from hetc.core.errors import TargetError
from hetc.ir import dtypes
from hetc.ir.codebooks import get as get_codebook
from hetc.ir.weights import aux_key

# IR dtype name -> OpenVINO element type name (ov.Type attribute)
OV_TYPES = {"f64": "f64", "f32": "f32", "f16": "f16", "bf16": "bf16", "f8e4m3": "f8e4m3",
            "f8e5m2": "f8e5m2", "i64": "i64", "i32": "i32", "i16": "i16", "i8": "i8",
            "u64": "u64", "u32": "u32", "u16": "u16", "u8": "u8", "i4": "i4", "u4": "u4",
            "bool": "boolean"}
PACKED = ("i4", "u4")  # two codes per byte in OpenVINO's layout, low nibble first


def ov_type(dtype, where=""):
    import openvino as ov

    try:
        return getattr(ov.Type, OV_TYPES[dtype.name])
    except KeyError:
        raise TargetError(f"target npu: OpenVINO has no {dtype} element type"
                          f"{' (' + where + ')' if where else ''}") from None


def constant(array: np.ndarray, dtype) -> "object":
    """An OpenVINO Constant holding `array` (storage of IR `dtype`) exactly."""
    import openvino as ov
    import openvino.opset16 as o

    if dtype.name in PACKED:
        tensor = ov.Tensor(ov_type(dtype), list(array.shape))
        tensor.data.view(np.uint8).reshape(-1)[:] = pack_nibbles(array)
        return ov.op.Constant(tensor)
    if dtype.name in ("bf16", "f8e4m3", "f8e5m2"):  # no numpy type OpenVINO takes: raw bits
        tensor = ov.Tensor(ov_type(dtype), list(array.shape))
        tensor.data.view(np.uint8).reshape(-1)[:] = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
        return ov.op.Constant(tensor)
    return o.constant(np.ascontiguousarray(array, dtype.storage), ov_type(dtype))


def weight(graph, op) -> "object":
    """The node for a const op: plain, or decompressed from its quantized form."""
    import openvino.opset16 as o

    t = op.output.type
    if "value" in op.attrs:
        return constant(np.asarray(op.attrs["value"]), t.dtype)
    name = op.attrs["name"]
    data = graph.weights[name]
    q = t.quant
    if q is None:
        return constant(data, t.dtype)
    ax = q.axis % t.rank
    d = t.shape[ax]
    grouped = t.shape[:ax] + (d // q.group, q.group) + t.shape[ax + 1:]
    per_group = t.shape[:ax] + (d // q.group, 1) + t.shape[ax + 1:]
    scale = graph.weights[aux_key(name, "scale")]
    scales = o.convert(constant(scale.reshape(per_group), q.scale), "f32")
    if q.codebook:
        values = _codebook_values(graph, name, q, data, grouped, per_group)
    else:
        if t.dtype.name not in ("i8", "u8", "i4", "u4"):
            raise TargetError(f"target npu: weight @{name} is quantized to {t.dtype}; "
                              f"OpenVINO keeps i8, u8, i4 and u4 codes compressed")
        values = o.convert(constant(data.reshape(grouped), t.dtype), "f32")
        zero = graph.weights.get(aux_key(name, "zero"))
        if zero is not None:
            values = o.subtract(values, o.convert(constant(zero.reshape(per_group), t.dtype), "f32"))
    real = o.multiply(values, scales)
    return o.reshape(real, np.array(t.shape, np.int64), False)


def _codebook_values(graph, name, q, data, grouped, per_group):
    """table[variant, code] for every weight, as an OpenVINO Gather."""
    import openvino.opset16 as o

    book = get_codebook(q.codebook)
    table = book.table.reshape(-1)  # [variants * codes]
    variant = graph.weights[aux_key(name, "variant")].reshape(per_group).astype(np.uint8)
    codes = o.convert(constant(data.reshape(grouped), dtypes.u4), "i32")
    index = o.add(o.multiply(o.convert(constant(variant, dtypes.u8), "i32"),
                             np.int32(1 << book.bits)), codes)
    return o.gather(o.constant(table), index, np.int32(0))
