"""N:M pruning: keep the N highest-scoring weights in every M consecutive
ones along the reduction axis.

Scores: `magnitude` is |W|; `wanda` is |W| times the L2 norm of the input
channel each weight multiplies, measured on calibration data (Sun et al.,
"A Simple and Effective Pruning Approach for Large Language Models").
`sparsegpt` prunes with the layer Hessian and updates the kept weights
(passes/reconstruct.py).
"""

from __future__ import annotations

import numpy as np

CRITERIA = ("magnitude", "wanda", "sparsegpt")  # sparsegpt: passes/reconstruct.py


def parse_pattern(text: str) -> tuple[int, int]:
    try:
        n, m = (int(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"N:M pattern {text!r} is not of the form N:M (e.g. 2:4)") from None
    if not 0 < n <= m:
        raise ValueError(f"N:M pattern {text!r} needs 0 < N <= M")
    return n, m


def nm_mask(scores: np.ndarray, n: int, m: int, axis: int) -> np.ndarray:
    """Boolean mask keeping the top-n scores of each group of m along `axis`
    (ties keep the earlier position)."""
    moved = np.moveaxis(scores, axis, -1)
    groups = moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m)
    order = np.argsort(-groups, axis=-1, kind="stable")
    keep = np.zeros(groups.shape, bool)
    np.put_along_axis(keep, order[..., :n], True, axis=-1)
    return np.moveaxis(keep.reshape(moved.shape), -1, axis)


def scores(w: np.ndarray, criterion: str, axis: int, channel_norms=None) -> np.ndarray:
    if criterion == "magnitude":  # |w| orders exactly in w's own float type
        w = np.asarray(w)
        return np.abs(w if w.dtype in (np.float32, np.float64) else w.astype(np.float32))
    s = np.abs(np.asarray(w, np.float64))
    if criterion == "wanda":
        if channel_norms is None:
            raise ValueError("the wanda criterion needs calibration data")
        shape = [1] * w.ndim
        shape[axis] = -1
        return s * np.asarray(channel_norms, np.float64).reshape(shape)
    raise ValueError(f"unknown pruning criterion {criterion!r} (known: {', '.join(CRITERIA)})")
