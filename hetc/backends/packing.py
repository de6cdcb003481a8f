"""Physical layouts more than one backend stores weights in."""

import numpy as np


def pack_nibbles(codes) -> np.ndarray:
    """4-bit codes (signed or unsigned), two per byte, low nibble first, in
    row-major order (a last odd code gets a zero partner): the layout of
    OpenVINO's i4/u4 and of the x86 scalar int4 kernel."""
    flat = np.asarray(codes).reshape(-1).astype(np.int16) & 0xF
    if flat.size % 2:
        flat = np.append(flat, 0)
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)
