"""Weight precision formats and the quantization arithmetic behind them.

A format names a storage dtype, a group size along the reduction axis (None:
one scale per output channel), symmetric or with zero points, and the scale
dtype. Quantizing gives the stored values plus the scale (and zero point)
arrays a `quant<...>` encoding describes; formats without a scale (bf16,
f16) are plain casts.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

from hetc.ir import dtypes
from hetc.ir.types import Quant


@dataclass(frozen=True)
class Format:
    name: str
    dtype: dtypes.DType
    group: int | None = None  # None: the whole reduction axis (per channel)
    symmetric: bool = True
    scale: dtypes.DType | None = dtypes.f32  # None: no scale, a plain cast
    description: str = ""

    @property
    def bits(self) -> int:
        return self.dtype.bits


FORMATS = {f.name: f for f in [
    Format("int8", dtypes.i8, None, True, dtypes.f32, "8-bit integers, one f32 scale per output channel"),
    Format("int4", dtypes.i4, 128, True, dtypes.f16, "4-bit integers, an f16 scale per 128 weights"),
    Format("int4-g64", dtypes.i4, 64, True, dtypes.f16, "4-bit integers, group 64"),
    Format("int4-g32", dtypes.i4, 32, True, dtypes.f16, "4-bit integers, group 32"),
    Format("int4-asym", dtypes.u4, 128, False, dtypes.f16,
           "4-bit unsigned integers with a zero point per group of 128"),
    Format("int3", dtypes.i3, 128, True, dtypes.f16, "3-bit integers, group 128"),
    Format("fp8", dtypes.f8e4m3, None, True, dtypes.f32, "float8 e4m3, one f32 scale per channel"),
    Format("bf16", dtypes.bf16, scale=None, description="bfloat16 weights"),
    Format("f16", dtypes.f16, scale=None, description="float16 weights"),
]}


def get_format(name) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise KeyError(f"unknown precision {name!r} (known: {', '.join(FORMATS)})") from None


def quantize(w: np.ndarray, fmt: Format, axis: int):
    """(stored values, Quant encoding or None, scale, zero point or None).

    The group falls back to the whole axis when it does not divide it.
    """
    w = np.asarray(w, np.float32)
    if fmt.scale is None:
        return w.astype(fmt.dtype.storage), None, None, None
    axis = axis % w.ndim
    length = w.shape[axis]
    group = fmt.group if fmt.group and length % fmt.group == 0 else length
    moved = np.moveaxis(w, axis, -1)
    grouped = moved.reshape(*moved.shape[:-1], length // group, group)
    if fmt.dtype.is_float:
        qmax = float(ml_dtypes.finfo(fmt.dtype.storage).max)
        scale = np.abs(grouped).max(axis=-1) / qmax
        scale = np.where(scale == 0, 1, scale).astype(fmt.scale.storage)
        q = grouped / scale.astype(np.float32)[..., None]
        zero = None
    else:
        lo, hi = fmt.dtype.int_range
        if fmt.symmetric:
            scale = np.abs(grouped).max(axis=-1) / hi
            scale = np.where(scale == 0, 1, scale).astype(fmt.scale.storage)
            q = np.clip(np.rint(grouped / scale.astype(np.float32)[..., None]), lo, hi)
            zero = None
        else:
            mn = np.minimum(grouped.min(axis=-1), 0)
            mx = np.maximum(grouped.max(axis=-1), 0)  # keep 0 exact: pruned weights stay 0
            scale = (mx - mn) / (hi - lo)
            scale = np.where(scale == 0, 1, scale).astype(fmt.scale.storage)
            s = scale.astype(np.float32)
            zero = np.clip(np.rint(lo - mn / s), lo, hi)
            q = np.clip(np.rint(grouped / s[..., None]) + zero[..., None], lo, hi)
            zero = np.moveaxis(zero.astype(fmt.dtype.storage), -1, axis)
    q = np.moveaxis(q.reshape(moved.shape), -1, axis).astype(fmt.dtype.storage)
    scale = np.moveaxis(scale, -1, axis)
    enc_axis = -1 if axis == w.ndim - 1 else axis
    return q, Quant(group, fmt.scale, fmt.symmetric, enc_axis), scale, zero
