"""How far a compressed graph's outputs are from the uncompressed one's: the
error the accuracy budget bounds when no metric is given."""

from __future__ import annotations

import numpy as np

from hetc.ir.interpret import interpret


def relative_error(outputs, references) -> float:
    """Relative L2 error over the float arrays of paired output lists."""
    num = den = 0.0
    for a, b in zip(outputs, references):
        b = np.asarray(b)
        if b.dtype.kind == "f" or b.dtype.name == "bfloat16":
            a64, b64 = np.asarray(a, np.float64), b.astype(np.float64)
            num += float(np.sum((a64 - b64) ** 2))
            den += float(np.sum(b64 ** 2))
    return (num / den) ** 0.5 if den else 0.0


def output_error(reference, compressed, samples_) -> float:
    """Relative L2 error of the compressed graph's float outputs against the
    reference graph's, over all samples and outputs."""
    outs, refs = [], []
    for sample in samples_:
        outs += interpret(compressed, sample)
        refs += interpret(reference, sample)
    return relative_error(outs, refs)
