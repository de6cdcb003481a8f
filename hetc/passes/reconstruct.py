"""Second-order weight reconstruction with calibration Hessians (OBS family).

For a linear layer y = x W^T, the layer Hessian H = X^T X over calibration
activations says how much an error in each input column costs. Pruning
(SparseGPT, Frantar & Alistarh 2023) and rounding (GPTQ, Frantar et al. 2022)
process the columns left to right: each column is pruned or quantized, and
its error is spread over the columns not yet processed through H^-1, so the
layer's output changes as little as possible.
"""

from __future__ import annotations

import numpy as np

from .layers import activations

DAMP = 0.01  # fraction of the mean Hessian diagonal added for a stable inverse
BLOCK = 128  # columns updated together (the lazy batch of GPTQ)


def hessians(graph, layers, samples, evaluator=None) -> dict[str, np.ndarray]:
    """H = 2/n X^T X per linear/matmul layer, X its activation rows (from
    `evaluator`'s runs, see layers.activations)."""
    acc: dict[str, tuple] = {}
    for ly, array in activations(graph, layers, samples, evaluator):
        x = np.asarray(array, np.float64).reshape(-1, array.shape[-1])
        h, n = acc.get(ly.name, (0.0, 0))
        acc[ly.name] = (h + x.T @ x, n + x.shape[0])
    return {name: 2 * h / max(n, 1) for name, (h, n) in acc.items()}


def _inverse_cholesky(h):
    """Upper Cholesky factor of H^-1 (damped), as GPTQ uses it."""
    h = h.copy()
    dead = np.diag(h) == 0
    h[dead, dead] = 1
    h += DAMP * np.mean(np.diag(h)) * np.eye(len(h))
    inv = np.linalg.inv(np.linalg.cholesky(h))
    return np.linalg.cholesky(inv.T @ inv).T, dead


def reconstruct(w, h, nm=None, quantizer=None, group=None, mask=None):
    """Prune (N:M along columns, by w^2 / [H^-1]_jj^2) and/or quantize the
    columns of w [out, in] with error feedback through H.

    `quantizer(cols) -> (fn, params)` fits scales to a group of columns
    (called at each group start, on the updated weights) and returns a
    function rounding one column to the grid and the group's parameters.
    `mask` keeps an earlier pruning: masked weights stay exactly zero.
    Returns the new weights and the list of per-group parameters.
    """
    w = np.array(w, np.float64)
    rows, cols = w.shape
    hinv, dead = _inverse_cholesky(h)
    w[:, dead] = 0
    out = np.zeros_like(w)
    keep = np.ones_like(w, bool) if mask is None else np.asarray(mask, bool).copy()
    params, qfn = [], None
    group = group or cols
    for b0 in range(0, cols, BLOCK):
        b1 = min(b0 + BLOCK, cols)
        block = w[:, b0:b1].copy()
        errs = np.zeros_like(block)
        hb = hinv[b0:b1, b0:b1]
        for i in range(b1 - b0):
            j = b0 + i
            if nm is not None and j % nm[1] == 0:
                n, m = nm
                sc = block[:, i:i + m] ** 2 / np.diag(hb)[i:i + m][None, :] ** 2
                order = np.argsort(-sc, axis=1, kind="stable")
                mask = np.zeros_like(sc, bool)
                np.put_along_axis(mask, order[:, :n], True, axis=1)
                keep[:, j:j + m] = mask
            if quantizer is not None and j % group == 0:
                span = np.concatenate([block[:, i:], w[:, b1:]], axis=1)[:, :group]
                qfn, p = quantizer(np.where(keep[:, j:j + group], span, 0))
                params.append(p)
            col = block[:, i]
            q = col * keep[:, j]
            if qfn is not None:
                q = qfn(q) * keep[:, j]
            out[:, j] = q
            err = (col - q) / hb[i, i]
            block[:, i:] -= err[:, None] * hb[i, i:][None, :]
            errs[:, i] = err
        w[:, b1:] -= errs @ hinv[b0:b1, b1:]
    return out, params
