"""How far a compressed graph's outputs are from the uncompressed one's: the
error the accuracy budget bounds when no metric is given."""

from __future__ import annotations

import numpy as np

from hetc.ir.interpret import interpret

CHUNK = 1 << 16  # elements per step of relative_error


def relative_error(outputs, references) -> float:
    """Relative L2 error over the float arrays of paired output lists."""
    num = den = 0.0
    for a, b in zip(outputs, references):
        b = np.asarray(b)
        if b.dtype.kind == "f" or b.dtype.name == "bfloat16":
            # f32 pieces summed in f64: as exact as the arrays for any size
            wide = np.float64 if b.dtype == np.float64 else np.float32
            a, b = np.asarray(a).reshape(-1), b.reshape(-1)
            for i in range(0, b.size, CHUNK):
                bi = b[i:i + CHUNK].astype(wide, copy=False)
                d = a[i:i + CHUNK].astype(wide, copy=False) - bi
                num += float(np.dot(d, d))
                den += float(np.dot(bi, bi))
    return (num / den) ** 0.5 if den else 0.0


def output_error(reference, compressed, samples_) -> float:
    """Relative L2 error of the compressed graph's float outputs against the
    reference graph's, over all samples and outputs."""
    outs, refs = [], []
    for sample in samples_:
        outs += interpret(compressed, sample)
        refs += interpret(reference, sample)
    return relative_error(outs, refs)
