"""Codebooks of mixture-of-datatype formats.

A codebook has several variants, each a table of the real values the
codes 0 .. 2^bits - 1 stand for. Each group of weights picks the variant that
fits it best and stores its index beside its scale, as in BitMoD (Chen et
al., "BitMoD: Bit-serial Mixture-of-Datatype LLM Acceleration", HPCA 2025):
small float grids, each extended with one extra value in place of the
redundant negative zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, log2

import numpy as np


@dataclass(frozen=True)
class Codebook:
    name: str
    bits: int
    variants: tuple  # tuple of tuples of 2^bits real values

    @property
    def table(self) -> np.ndarray:
        return np.array(self.variants, np.float32)

    @property
    def index_bits(self) -> int:
        return max(1, ceil(log2(len(self.variants))))


CODEBOOKS: dict[str, Codebook] = {}


def register(cb: Codebook) -> Codebook:
    for v in cb.variants:
        if len(v) != 1 << cb.bits:
            raise ValueError(f"codebook {cb.name}: each variant needs {1 << cb.bits} values")
    CODEBOOKS[cb.name] = cb
    return cb


def get(name) -> Codebook:
    try:
        return CODEBOOKS[name]
    except KeyError:
        raise KeyError(f"unknown codebook {name!r} (known: {', '.join(CODEBOOKS)})") from None


_FP4 = (-6, -4, -3, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 3, 4, 6)  # e2m1, one zero
_FP3 = (-4, -2, -1, 0, 1, 2, 4)  # e2m0, one zero

register(Codebook("mx4", 4, tuple(_FP4 + (extra,) for extra in (-8, 8, -5, 5))))
register(Codebook("mx3", 3, tuple(_FP3 + (extra,) for extra in (-6, 6, -3, 3))))
