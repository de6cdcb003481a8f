"""Tensor types and the logical compression encodings they may carry.

An encoding says what the stored data obeys, never how a backend lays it out:
`nm<2:4>` means at most 2 nonzeros in every 4 consecutive elements along the
reduction axis; `quant<group=128, scale=f16>` means the stored integers times
a per-group scale (minus a zero point when asymmetric) give the real values.
The verifier checks the data against the encodings; each backend packs the data
into its own physical layout when it lowers.
"""

from dataclasses import dataclass, field
from math import ceil, log2, prod

import numpy as np

from . import dtypes
from .codebooks import CODEBOOKS, get
from .dtypes import DType

# Largest tensor the IR takes (elements): generated code indexes with 64-bit
# integers, and a bigger shape in a model file is a mistake or an attack.
MAX_ELEMENTS = 1 << 48


def _norm_axis(axis, rank):
    return axis + rank if axis < 0 else axis


@dataclass(frozen=True)
class NM:
    """N nonzeros in every group of M consecutive elements along `axis`."""

    n: int
    m: int
    axis: int = -1

    def text(self):
        extra = "" if self.axis == -1 else f", axis={self.axis}"
        return f"nm<{self.n}:{self.m}{extra}>"

    def problem(self, shape, data=None):
        """Why `data` (or a tensor of `shape`) breaks this encoding, or None."""
        if not 0 < self.n <= self.m:
            return f"nm<{self.n}:{self.m}> needs 0 < N <= M"
        if not shape or not -len(shape) <= self.axis < len(shape):
            return f"nm axis {self.axis} is out of range for shape {list(shape)}"
        size = shape[self.axis]
        if size % self.m:
            return f"axis {self.axis} has {size} elements, not a multiple of M={self.m}"
        if data is None:
            return None
        moved = np.moveaxis(np.asarray(data), self.axis, -1)
        groups = moved.reshape(*moved.shape[:-1], size // self.m, self.m)
        counts = np.count_nonzero(groups.astype(np.float32) != 0, axis=-1)
        if counts.size and counts.max() > self.n:
            where = np.unravel_index(int(np.argmax(counts)), counts.shape)
            return (f"group {list(map(int, where))} has {int(counts.max())} nonzeros, "
                    f"more than N={self.n} of M={self.m}")
        return None


@dataclass(frozen=True)
class Quant:
    """Group-wise affine quantization along `axis`.

    real = (stored - zero) * scale, with one scale (and zero point when not
    symmetric) per `group` consecutive elements along `axis`. A group equal to
    the axis length is per-channel quantization. Scales have dtype `scale`;
    zero points have the stored dtype.
    """

    group: int
    scale: DType
    symmetric: bool = True
    axis: int = -1
    codebook: str = ""  # a mixture-of-datatype codebook (hetc.ir.codebooks): codes index it

    def text(self):
        parts = [f"group={self.group}", f"scale={self.scale.name}"]
        if not self.symmetric:
            parts.append("zero_point")
        if self.axis != -1:
            parts.append(f"axis={self.axis}")
        if self.codebook:
            parts.append(f"codebook={self.codebook}")
        return f"quant<{', '.join(parts)}>"

    def param_shape(self, shape):
        """Shape of the scale (and zero point) array for a tensor of `shape`."""
        ax = _norm_axis(self.axis, len(shape))
        return tuple(d // self.group if i == ax else d for i, d in enumerate(shape))

    def problem(self, shape, dtype):
        if self.codebook:
            cb = CODEBOOKS.get(self.codebook)
            if cb is None:
                return f"unknown codebook {self.codebook!r}"
            if dtype.kind != "uint" or dtype.bits != cb.bits or not self.symmetric:
                return (f"codebook {cb.name} needs {cb.bits}-bit unsigned codes and no zero "
                        f"point, got {dtype}")
        if not dtype.is_int and not dtype.is_float:
            return f"quant storage dtype {dtype} is neither integer nor float"
        if not self.scale.is_float:
            return f"quant scale dtype {self.scale} is not a float type"
        if not shape or not -len(shape) <= self.axis < len(shape):
            return f"quant axis {self.axis} is out of range for shape {list(shape)}"
        if self.group <= 0 or shape[self.axis] % self.group:
            return (f"quant group {self.group} does not divide axis {self.axis} "
                    f"of length {shape[self.axis]}")
        return None

    def dequantize(self, data, scale, zero=None, variant=None):
        """The real values (f32) that stored `data` stands for; with a
        codebook, `variant` holds each group's variant index."""
        ax = _norm_axis(self.axis, data.ndim)
        if self.codebook:
            v = np.repeat(np.asarray(variant, np.int64), self.group, axis=ax)
            q = get(self.codebook).table[v, np.asarray(data, np.int64)]
            return q * np.repeat(np.asarray(scale).astype(np.float32), self.group, axis=ax)
        q = data.astype(np.float32)
        s = np.repeat(np.asarray(scale).astype(np.float32), self.group, axis=ax)
        if zero is not None:
            q = q - np.repeat(np.asarray(zero).astype(np.float32), self.group, axis=ax)
        return q * s


@dataclass(frozen=True)
class TensorType:
    shape: tuple
    dtype: DType
    encodings: tuple = field(default=())

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "encodings", tuple(self.encodings))

    @property
    def rank(self):
        return len(self.shape)

    @property
    def numel(self):
        return prod(self.shape)

    def encoding(self, cls):
        for e in self.encodings:
            if isinstance(e, cls):
                return e
        return None

    @property
    def nm(self) -> NM | None:
        return self.encoding(NM)

    @property
    def quant(self) -> Quant | None:
        return self.encoding(Quant)

    @property
    def value_dtype(self) -> DType:
        """The dtype of the logical values: quantized data stands for f32."""
        return dtypes.f32 if self.quant else self.dtype

    def plain(self):
        """This type without encodings, holding the logical values."""
        return TensorType(self.shape, self.value_dtype)

    def with_shape(self, shape):
        return TensorType(shape, self.dtype, self.encodings)

    def storage_bytes(self):
        """Bytes the stored form takes: values, plus quant scales/zero points.

        N:M data is counted dense here; what a sparse layout saves depends on
        the backend's packing and is reported by the compression passes.
        """
        total = self.numel * self.dtype.bits / 8
        return int(-(-(total + self._param_bits() / 8) // 1))

    def _param_bits(self):
        """Bits of the quantization parameters: scales, zero points, variants."""
        q = self.quant
        if not q:
            return 0
        groups = prod(q.param_shape(self.shape))
        bits = groups * (q.scale.bits + (0 if q.symmetric else self.dtype.bits))
        if q.codebook:
            bits += groups * get(q.codebook).index_bits
        return bits

    def coerce(self, array, what="input") -> np.ndarray:
        """`array` as this type's storage; ValueError (naming `what`) when its
        shape differs or its values would change kind (float to int, to bool)."""
        a = np.asarray(array)
        if a.shape != self.shape:
            raise ValueError(f"{what} must have shape {list(self.shape)}, got {list(a.shape)}")
        if a.dtype == self.dtype.storage:
            return a
        try:
            given = dtypes.from_numpy(a.dtype)
        except KeyError:
            raise ValueError(f"{what} has numpy dtype {a.dtype}, which hetc cannot take") from None
        if self.dtype.is_float:
            kind_ok = given.kind != "bool"
        elif self.dtype.is_int:
            kind_ok = given.is_int
        else:
            kind_ok = given.kind == self.dtype.kind
        if not kind_ok:
            raise ValueError(f"{what} is {self.dtype}, got an array of {given} "
                             f"(convert it explicitly)")
        if self.dtype.is_int and a.size:
            lo, hi = self.dtype.int_range
            if a.min() < lo or a.max() > hi:
                raise ValueError(f"{what} values {a.min()}..{a.max()} do not fit {self.dtype}")
        return a.astype(self.dtype.storage)

    def packed_bytes(self):
        """Bytes as a backend stores the data: for N:M only the kept values,
        each with a ceil(log2 M)-bit position inside its group (as 2:4 sparse
        tensor cores store them), plus quantization scales and zero points."""
        nm = self.nm
        if nm is None:
            return self.storage_bytes()
        kept = self.numel * nm.n // nm.m
        bits = kept * (self.dtype.bits + max(1, ceil(log2(nm.m)))) + self._param_bits()
        return -(-bits // 8)

    def text(self):
        body = "x".join([str(d) for d in self.shape] + [self.dtype.name])
        encs = "".join(", " + e.text() for e in self.encodings)
        return f"tensor<{body}{encs}>"

    __str__ = text
