"""The weight store: numpy arrays by name, saved beside the IR as .npz.

Quantized weights keep their scales, zero points and codebook variant indices
under `NAME:scale`, `NAME:zero` and `NAME:variant`. Arrays whose dtype numpy cannot save natively (bf16, fp8, int4)
are written as their raw bytes with the dtype name recorded, so a file
round-trips exactly.
"""

import json

import numpy as np

from ..fsutil import atomic_open
from . import dtypes

_DTYPES_KEY = "__hetc_dtypes__"
_RAW_VIEW = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


AUX_KINDS = ("scale", "zero", "variant")


def aux_key(name, kind):
    """Key of a weight's auxiliary array (kind: "scale", "zero" or "variant")."""
    return f"{name}:{kind}"


class WeightStore(dict):
    """name -> numpy array. A dict, plus saving and loading."""

    def save(self, path):
        """Write all arrays to `path` (.npz) atomically."""
        arrays, kinds = {}, {}
        for name, arr in self.items():
            arr = np.require(arr, requirements="C")  # keeps 0-d arrays 0-d
            dt = dtypes.from_numpy(arr.dtype)
            if arr.dtype.type.__module__ != "numpy":  # an ml_dtypes extension type
                kinds[name] = dt.name
                arr = arr.view(_RAW_VIEW[arr.dtype.itemsize])
            arrays[name] = arr
        arrays[_DTYPES_KEY] = np.array(json.dumps(kinds))
        with atomic_open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path):
        store = cls()
        with np.load(path, allow_pickle=False) as data:
            kinds = json.loads(str(data[_DTYPES_KEY])) if _DTYPES_KEY in data else {}
            for name in data.files:
                if name == _DTYPES_KEY:
                    continue
                arr = data[name]
                if name in kinds:
                    arr = arr.view(dtypes.get(kinds[name]).storage)
                store[name] = arr
        return store

    def nbytes(self):
        return sum(a.nbytes for a in self.values())
