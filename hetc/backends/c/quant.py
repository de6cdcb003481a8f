"""Quantized weights as generated C-family code keeps them: the symmetric
int8/int4 weights kernels read as integer codes with a scale per row and
group (other encodings are decoded to f32 when packed: correct, not fast)."""

from __future__ import annotations

import numpy as np

from hetc.ir.weights import aux_key


def integer_weight(w, axis=-1, odd_int4=False):
    """(name, bits, group) for a constant weight stored as symmetric int8/int4
    quantized along its input axis `axis` (N:M zeros included); None
    otherwise (other encodings are decoded to f32 at pack time: correct, not
    fast), and for int4 in groups of odd length unless `odd_int4` (the
    kernels that read a byte of two codes at a time cannot)."""
    t = w.type
    q = t.quant
    if w.producer is None or w.producer.kind != "const" or q is None or not q.symmetric \
            or q.codebook or t.dtype.name not in ("i8", "i4") or \
            q.axis % t.rank != axis % t.rank:
        return None
    group = q.group or t.shape[axis]
    if t.dtype.name == "i4" and group % 2 and not odd_int4:
        return None
    return w.producer.attrs["name"], (8 if t.dtype.name == "i8" else 4), group


def integer_codes(e, name):
    return np.asarray(e.g.weights[name]).astype(np.int8)


def stored_scales(e, name, *shape):
    """The scales of a quantized weight, one per row and group (the shape
    of its scales), in the dtype the weight stores them (f16 or f32;
    others widened to f32)."""
    a = np.asarray(e.g.weights[aux_key(name, "scale")])
    a = a if a.dtype in (np.float16, np.float32) else a.astype(np.float32)
    return np.ascontiguousarray(np.broadcast_to(a, shape))


def weight_scales(e, name, rows, groups):
    """The scales as f32, one per row and group."""
    return stored_scales(e, name, rows, groups).astype(np.float32)
