"""Weight precision formats and the quantization arithmetic behind them.

A format names a storage dtype, a group size along the reduction axis (None:
one scale per output channel), symmetric or with zero points, and the scale
dtype. Quantizing gives the stored values plus the scale (and zero point)
arrays a `quant<...>` encoding describes; formats without a scale (bf16,
f16) are plain casts. Mixture formats (mx4, mx3) store codes into the best
of a codebook's value tables per group, with the table's index beside the
scale (hetc.ir.codebooks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import ml_dtypes
import numpy as np

from hetc.ir import codebooks, dtypes
from hetc.ir.types import Quant


@dataclass(frozen=True)
class Format:
    name: str
    dtype: dtypes.DType
    group: int | None = None  # None: the whole reduction axis (per channel)
    symmetric: bool = True
    scale: dtypes.DType | None = dtypes.f32  # None: no scale, a plain cast
    description: str = ""
    codebook: str = ""  # a mixture-of-datatype codebook: codes index its best variant per group

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
    Format("mx4", dtypes.u4, 128, True, dtypes.f16,
           "4-bit mixture: per 128 weights the best of 4 FP4 grids (each with one extra value)",
           codebook="mx4"),
    Format("mx3", dtypes.u3, 128, True, dtypes.f16,
           "3-bit mixture: per 128 weights the best of 4 FP3 grids (each with one extra value)",
           codebook="mx3"),
    Format("bf16", dtypes.bf16, scale=None, description="bfloat16 weights"),
    Format("f16", dtypes.f16, scale=None, description="float16 weights"),
]}


def get_format(name) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise KeyError(f"unknown precision {name!r} (known: {', '.join(FORMATS)})") from None


def fit(groups: np.ndarray, fmt: Format):
    """Scales (and zero points) for values grouped on the last axis: one per group."""
    if fmt.dtype.is_float:
        qmax = float(ml_dtypes.finfo(fmt.dtype.storage).max)
        scale = np.abs(groups).max(axis=-1) / qmax
        zero = None
    elif fmt.symmetric:
        scale = np.abs(groups).max(axis=-1) / fmt.dtype.int_range[1]
        zero = None
    else:
        lo, hi = fmt.dtype.int_range
        mn = np.minimum(groups.min(axis=-1), 0)  # keep 0 on the grid: pruned weights stay 0
        mx = np.maximum(groups.max(axis=-1), 0)
        scale = (mx - mn) / (hi - lo)
    # zero after the cast too: a scale below f16's range (a depthwise
    # convolution's groups of one tiny weight) would divide by zero
    scale = scale.astype(fmt.scale.storage)
    scale = np.where(scale == 0, 1, scale).astype(fmt.scale.storage)
    if not fmt.dtype.is_float and not fmt.symmetric:
        lo, hi = fmt.dtype.int_range
        zero = np.clip(np.rint(lo - mn / scale.astype(np.float32)), lo, hi)
    return scale, zero


def encode(groups, scale, zero, fmt: Format) -> np.ndarray:
    """Stored codes of values grouped on the last axis, given their group parameters."""
    s = np.asarray(scale, np.float32)[..., None]
    if fmt.dtype.is_float:
        return (groups / s).astype(fmt.dtype.storage)
    lo, hi = fmt.dtype.int_range
    z = 0 if zero is None else np.asarray(zero, np.float32)[..., None]
    return np.clip(np.rint(groups / s) + z, lo, hi).astype(fmt.dtype.storage)


def decode(codes, scale, zero) -> np.ndarray:
    """The real values codes stand for (the interpreter's dequantization)."""
    q = np.asarray(codes, np.float32)
    if zero is not None:
        q = q - np.asarray(zero, np.float32)[..., None]
    return q * np.asarray(scale, np.float32)[..., None]


def group_size(fmt: Format, length: int) -> int:
    """The format's group, or the whole axis when it does not divide it."""
    return fmt.group if fmt.group and length % fmt.group == 0 else length


class Quantized(NamedTuple):
    """Stored values and what the encoding needs beside them."""

    data: np.ndarray
    enc: Quant | None
    scale: np.ndarray | None = None
    zero: np.ndarray | None = None
    variant: np.ndarray | None = None  # codebook formats: the variant of each group

    def params(self) -> dict:
        """Auxiliary arrays by weight-store kind (None: absent)."""
        return {"scale": self.scale, "zero": self.zero, "variant": self.variant}

    def values(self) -> np.ndarray:
        """The real values stored (what the interpreter computes with)."""
        if self.enc is None:
            return self.data.astype(np.float32)
        return self.enc.dequantize(self.data, self.scale, self.zero, self.variant)


def _nearest(grid, x):
    """Index into `grid` (any order) of the value nearest each x: the number
    of midpoints below x (NaN past all), by bisection for long grids and by
    counting for short ones (a few vector compares beat a branchy search)."""
    order = np.argsort(grid, kind="stable")
    mids = (grid[order][1:] + grid[order][:-1]) / 2
    x = np.asarray(x)
    if len(mids) > 16:
        return order[np.searchsorted(mids, x)]
    below = np.zeros(x.shape, np.uint8)
    for m in mids.astype(x.dtype if x.dtype.kind == "f" else np.float64):
        below += x > m
    below[np.isnan(x)] = len(mids)
    return order[below]


def encode_codebook(groups, scale, variant, fmt: Format) -> np.ndarray:
    """Codes of values grouped on the last axis, each group on its variant's grid."""
    table = codebooks.get(fmt.codebook).table
    x = groups / np.asarray(scale, np.float32)[..., None]
    codes = np.zeros(groups.shape, np.int64)
    for v, grid in enumerate(table):
        pick = np.asarray(variant) == v
        codes[pick] = _nearest(grid, x[pick])
    return codes.astype(fmt.dtype.storage)


def fit_codebook(groups: np.ndarray, fmt: Format):
    """Per group (last axis), the variant and scale with the least squared
    error, and the codes: each group scaled so its largest magnitude lands on
    the variant's largest magnitude, then rounded to the nearest grid value."""
    table = codebooks.get(fmt.codebook).table  # [variants, codes]
    amax = np.abs(groups).max(axis=-1)
    best_err = best_scale = best_codes = best_var = None
    for v, grid in enumerate(table):
        scale = (amax / np.abs(grid).max()).astype(fmt.scale.storage)
        s = np.where(scale == 0, 1, scale).astype(np.float32)
        codes = _nearest(grid, groups / s[..., None])
        err = ((grid[codes] * s[..., None] - groups) ** 2).sum(axis=-1)
        if best_err is None:
            best_err, best_scale, best_codes = err, np.where(scale == 0, 1, scale), codes
            best_var = np.zeros(err.shape, np.uint8)
        else:
            better = err < best_err
            best_err = np.where(better, err, best_err)
            best_scale = np.where(better, np.where(scale == 0, 1, scale), best_scale)
            best_codes = np.where(better[..., None], codes, best_codes)
            best_var = np.where(better, v, best_var).astype(np.uint8)
    return best_codes.astype(fmt.dtype.storage), best_scale.astype(fmt.scale.storage), best_var


def quantize(w: np.ndarray, fmt: Format, axis: int) -> Quantized:
    w = np.asarray(w, np.float32)
    if fmt.scale is None:
        return Quantized(w.astype(fmt.dtype.storage), None)
    axis = axis % w.ndim
    length = w.shape[axis]
    group = group_size(fmt, length)
    moved = np.moveaxis(w, axis, -1)
    grouped = moved.reshape(*moved.shape[:-1], length // group, group)
    variant = None
    if fmt.codebook:
        q, scale, variant = fit_codebook(grouped, fmt)
        zero = None
    else:
        scale, zero = fit(grouped, fmt)
        q = encode(grouped, scale, zero, fmt)
    return _encoded(q.reshape(moved.shape), scale, zero, fmt, axis, group, w.ndim, variant)


def _encoded(q_moved, scale, zero, fmt, axis, group, ndim, variant=None) -> Quantized:
    """Codes and parameters with the reduction axis put back where it belongs."""
    def back(a, dtype=None):
        return None if a is None else np.moveaxis(np.asarray(a if dtype is None else
                                                             np.asarray(a).astype(dtype)), -1, axis)
    enc_axis = -1 if axis == ndim - 1 else axis
    return Quantized(back(q_moved), Quant(group, fmt.scale, fmt.symmetric, enc_axis, fmt.codebook),
                     back(scale), back(zero, fmt.dtype.storage), back(variant))


def from_columns(values, params, fmt, group):
    """Codes for [out, in] weights already on their groups' grids (as GPTQ
    leaves them), with the per-group (scale, zero or variant) list of its
    column groups."""
    scale = np.stack([p[0] for p in params], axis=-1)
    second = None if params[0][1] is None else np.stack([p[1] for p in params], axis=-1)
    grouped = np.asarray(values, np.float32).reshape(values.shape[0], -1, group)
    if fmt.codebook:
        q = encode_codebook(grouped, scale, second, fmt)
        return _encoded(q.reshape(values.shape), scale, None, fmt, 1, group, 2, second)
    q = encode(grouped, scale, second, fmt)
    return _encoded(q.reshape(values.shape), scale, second, fmt, 1, group, 2)
