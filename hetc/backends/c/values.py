"""How generated C-family code holds IR values: element types, sizes,
pointers and literal arrays."""

from __future__ import annotations

import numpy as np

from hetc.runtime.buffers import ALIGN  # every buffer and weight starts on a cache line

#: the C element type of each IR dtype that generated code computes on
CTYPE = {"f32": "float", "i64": "int64_t", "i32": "int32_t", "bool": "uint8_t"}


def round_up(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


def itemsize(t) -> int:
    """Bytes per element as the generated code holds t: constants of narrow
    or quantized types are decoded to f32, so take sizes from op results."""
    return np.dtype(t.dtype.storage).itemsize


def nbytes(t) -> int:
    return itemsize(t) * t.numel


def cpointer(t, expr, const=False, ctypes=CTYPE) -> str:
    """`expr` (a byte address) as a pointer to the C element type of t (a
    TensorType or a dtype name) in `ctypes`."""
    name = t if isinstance(t, str) else t.dtype.name
    return f"(({'const ' if const else ''}{ctypes[name]} *)({expr}))"


def strides(shape):
    """Row-major element strides of a shape."""
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


def broadcast_strides(t, shape):
    """Element strides of a value of type t read as `shape` (numpy
    broadcasting: 0 along the axes it is repeated on)."""
    s = strides(t.shape)
    pad = len(shape) - t.rank
    return [0] * pad + [0 if d == 1 and n != 1 else st for d, st, n in
                        zip(t.shape, s, shape[pad:])]


def carray(values, ctype="long"):
    """A C compound literal holding integers."""
    return f"(const {ctype}[]){{{', '.join(str(int(v)) for v in values)}}}"
