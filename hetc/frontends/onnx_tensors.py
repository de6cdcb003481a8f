"""ONNX tensors as hetc values: element types, initializer data, and the
bound on what the importer evaluates at compile time.

onnx is imported inside the functions that use it: `import hetc` must not
load heavy optional packages.
"""

from __future__ import annotations

import numpy as np

from hetc.core.errors import FrontendError
from hetc.ir import dtypes

# Largest compile-time value evaluated during import; bigger ones stay runtime values.
MAX_STATIC_ELEMENTS = 1 << 16

_ONNX_DTYPES = {
    1: "f32", 2: "u8", 3: "i8", 4: "u16", 5: "i16", 6: "i32", 7: "i64", 9: "bool", 10: "f16",
    11: "f64", 12: "u32", 13: "u64", 16: "bf16", 17: "f8e4m3", 18: "f8e4m3fnuz", 19: "f8e5m2",
    20: "f8e5m2fnuz", 21: "u4", 22: "i4", 23: "f4e2m1", 24: "f8e8m0", 25: "u2", 26: "i2",
}


def onnx_dtype(elem_type: int, what: str) -> dtypes.DType:
    import onnx

    name = _ONNX_DTYPES.get(elem_type)
    if name is None:
        tname = onnx.TensorProto.DataType.Name(elem_type) if elem_type in \
            onnx.TensorProto.DataType.values() else str(elem_type)
        raise FrontendError(f"{what}: ONNX element type {tname} is not supported")
    return dtypes.get(name)


def to_array(tensor) -> np.ndarray:
    """An ONNX TensorProto as a numpy array of its hetc dtype's storage."""
    from onnx import numpy_helper

    what = f"tensor '{tensor.name}'" if tensor.name else "tensor"
    dt = onnx_dtype(tensor.data_type, what)
    if any(d < 0 for d in tensor.dims):
        raise FrontendError(f"{what}: negative dimension in {list(tensor.dims)}")
    try:
        arr = numpy_helper.to_array(tensor)
    except (ValueError, TypeError, IndexError, OverflowError, MemoryError) as e:
        raise FrontendError(f"{what}: its data does not fit its type "
                            f"{list(tensor.dims)} ({type(e).__name__}: {e})") from None
    return np.asarray(arr).astype(dt.storage, copy=False)
