"""Resizing (ONNX Resize, PyTorch's upsample ops) as IR ops.

Resize is separable and, for fixed shapes, linear in the data: along each
resized axis every output element is a weighted sum of input elements whose
positions and weights depend only on the shapes and attributes. So each axis
becomes a gather (nearest) or a matmul with a constant [in, out] weight matrix
(linear, cubic), computed here from the coordinate formulas of the ONNX
specification.
"""

from __future__ import annotations

import numpy as np


def source_coords(mode, out_int, in_len, scale, roi):
    """Input coordinate of every output position along one axis, and which
    positions fall outside the input (tf_crop_and_resize only)."""
    y = np.arange(out_int, dtype=np.float64)
    out_len = scale * in_len  # the spec's (fractional) output width
    outside = None
    if mode == "align_corners":
        x = np.zeros(out_int) if out_len == 1 else y * (in_len - 1) / (out_len - 1)
    elif mode == "asymmetric":
        x = y / scale
    elif mode == "pytorch_half_pixel":
        x = np.full(out_int, -0.5) if out_len == 1 else (y + 0.5) / scale - 0.5
    elif mode == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif mode == "half_pixel_symmetric":
        offset = in_len / 2 * (1 - out_int / out_len)
        x = offset + (y + 0.5) / scale - 0.5
    elif mode == "tf_crop_and_resize":
        lo, hi = roi
        if out_len == 1:
            x = np.full(out_int, (hi - lo) * (in_len - 1) / 2)
        else:
            x = y * (hi - lo) * (in_len - 1) / (out_len - 1)
        x = x + lo * (in_len - 1)
        outside = (x < 0) | (x > in_len - 1)
    else:
        raise ValueError(f"coordinate_transformation_mode {mode!r} is not supported")
    return x, outside


def nearest_index(x, in_len, rounding):
    fl = np.floor(x)
    r = x - fl
    if rounding == "round_prefer_floor":
        up = r > 0.5
    elif rounding == "round_prefer_ceil":
        up = r >= 0.5
    elif rounding == "floor":
        up = np.zeros_like(r, bool)
    elif rounding == "ceil":
        up = r > 0
    else:
        raise ValueError(f"nearest_mode {rounding!r} is not supported")
    return np.clip(fl + up, 0, in_len - 1).astype(np.int64)


def cubic_coeffs(r, a):
    """Keys' cubic convolution weights of the 4 neighbours floor(x)-1 .. floor(x)+2."""
    def k(t):
        t = np.abs(t)
        return np.where(t <= 1, ((a + 2) * t - (a + 3)) * t * t + 1,
                        np.where(t < 2, ((a * t - 5 * a) * t + 8 * a) * t - 4 * a, 0.0))
    return np.stack([k(r + 1), k(r), k(1 - r), k(2 - r)], axis=-1)


def weight_matrix(x, in_len, mode, cubic_a, exclude_outside):
    """[out, in] weights of linear or cubic interpolation at coordinates x;
    neighbours past the edges repeat the edge value (or are dropped and the
    rest renormalized when exclude_outside)."""
    fl = np.floor(x)
    r = x - fl
    if mode == "linear":
        offsets, w = np.array([0, 1]), np.stack([1 - r, r], axis=-1)
    else:
        offsets, w = np.array([-1, 0, 1, 2]), cubic_coeffs(r, cubic_a)
    idx = fl[:, None].astype(np.int64) + offsets[None, :]
    if exclude_outside:
        w = np.where((idx < 0) | (idx >= in_len), 0.0, w)
        w = w / w.sum(axis=1, keepdims=True)
    m = np.zeros((len(x), in_len))
    np.add.at(m, (np.repeat(np.arange(len(x)), len(offsets)), np.clip(idx, 0, in_len - 1).ravel()),
              w.ravel())
    return m


def output_sizes(shape, axes, scales, sizes, policy):
    """(output shape, per-axis scale) as the ONNX specification computes them."""
    rank = len(shape)
    scale = [1.0] * rank
    out = list(shape)
    if sizes is not None:
        for i, ax in enumerate(axes):
            scale[ax] = sizes[i] / shape[ax]
        if policy in ("not_larger", "not_smaller"):
            pick = min if policy == "not_larger" else max
            s = pick(scale[ax] for ax in axes)
            for ax in axes:
                scale[ax] = s
                out[ax] = int(s * shape[ax] + 0.5)
        elif policy == "stretch":
            for i, ax in enumerate(axes):
                out[ax] = int(sizes[i])
        else:
            raise ValueError(f"keep_aspect_ratio_policy {policy!r} is not supported")
    else:
        for i, ax in enumerate(axes):
            scale[ax] = float(scales[i])
            out[ax] = int(scale[ax] * shape[ax])
    return out, scale


def apply_along(add, const, x, axis, m):
    """Contract axis `axis` of x with m [out, in]: a matmul on the moved axis
    (`add(kind, inputs, attrs)` adds an op, `const(array)` a constant)."""
    rank = x.type.rank
    perm = [i for i in range(rank) if i != axis] + [axis]
    moved = add("transpose", [x], {"perm": perm})
    y = add("matmul", [moved, const(m.T.astype(x.type.dtype.storage))])
    inverse = [perm.index(i) for i in range(rank)]
    return add("transpose", [y], {"perm": inverse})
