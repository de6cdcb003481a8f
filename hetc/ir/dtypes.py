"""Element types of the IR and their numpy storage.

Every dtype has a short IR name (f32, bf16, i4, ...), a bit width and, where one
exists, a numpy dtype to hold its values (ml_dtypes provides bf16, the fp8
formats, 4-bit floats and 4-bit integers). Formats without a numpy type can
still be registered: they are stored as their raw codes in `storage`.
"""

from dataclasses import dataclass

import ml_dtypes
import numpy as np


@dataclass(frozen=True)
class DType:
    name: str
    bits: int
    kind: str  # "float", "int", "uint" or "bool"
    storage: np.dtype  # numpy type holding one value (or its raw code)

    @property
    def is_float(self):
        return self.kind == "float"

    @property
    def is_int(self):
        return self.kind in ("int", "uint")

    @property
    def int_range(self) -> tuple[int, int]:
        """Smallest and largest value of an integer type of `bits` bits."""
        if self.kind == "int":
            return -(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1
        return 0, (1 << self.bits) - 1

    def __str__(self):
        return self.name

    def __repr__(self):
        return f"DType({self.name})"


_REGISTRY: dict[str, DType] = {}
_BY_NUMPY: dict[np.dtype, DType] = {}


def register(name, bits, kind, storage) -> DType:
    """Add a dtype (e.g. a new 3-bit float format) to the registry."""
    if name in _REGISTRY:
        raise ValueError(f"dtype {name!r} is already registered")
    dt = DType(name, bits, kind, np.dtype(storage))
    _REGISTRY[name] = dt
    _BY_NUMPY.setdefault(dt.storage, dt)
    return dt


f64 = register("f64", 64, "float", np.float64)
f32 = register("f32", 32, "float", np.float32)
f16 = register("f16", 16, "float", np.float16)
bf16 = register("bf16", 16, "float", ml_dtypes.bfloat16)
f8e4m3 = register("f8e4m3", 8, "float", ml_dtypes.float8_e4m3fn)
f8e5m2 = register("f8e5m2", 8, "float", ml_dtypes.float8_e5m2)
f8e4m3fnuz = register("f8e4m3fnuz", 8, "float", ml_dtypes.float8_e4m3fnuz)
f8e5m2fnuz = register("f8e5m2fnuz", 8, "float", ml_dtypes.float8_e5m2fnuz)
f8e8m0 = register("f8e8m0", 8, "float", ml_dtypes.float8_e8m0fnu)
f4e2m1 = register("f4e2m1", 4, "float", ml_dtypes.float4_e2m1fn)
i64 = register("i64", 64, "int", np.int64)
i32 = register("i32", 32, "int", np.int32)
i16 = register("i16", 16, "int", np.int16)
i8 = register("i8", 8, "int", np.int8)
u64 = register("u64", 64, "uint", np.uint64)
u32 = register("u32", 32, "uint", np.uint32)
u16 = register("u16", 16, "uint", np.uint16)
u8 = register("u8", 8, "uint", np.uint8)
i4 = register("i4", 4, "int", ml_dtypes.int4)
u4 = register("u4", 4, "uint", ml_dtypes.uint4)
i3 = register("i3", 3, "int", np.int8)  # 3-bit integers, one per byte in memory
u3 = register("u3", 3, "uint", np.uint8)  # 3-bit codes, one per byte in memory
i2 = register("i2", 2, "int", ml_dtypes.int2)
u2 = register("u2", 2, "uint", ml_dtypes.uint2)
boolean = register("bool", 1, "bool", np.bool_)


def get(name: str) -> DType:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown dtype {name!r} (known: {', '.join(_REGISTRY)})") from None


def from_numpy(np_dtype) -> DType:
    try:
        return _BY_NUMPY[np.dtype(np_dtype)]
    except KeyError:
        raise KeyError(f"numpy dtype {np.dtype(np_dtype)} has no hetc dtype") from None


def all_dtypes() -> list[DType]:
    return list(_REGISTRY.values())
