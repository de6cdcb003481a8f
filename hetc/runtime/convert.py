"""numpy <-> torch conversion that keeps bf16 and other narrow types exact.

torch is imported inside the functions that use it: `import hetc` must not
load heavy optional packages.
"""

import ml_dtypes
import numpy as np

# torch dtypes numpy lacks -> (torch int view, numpy int view, numpy dtype)
_TORCH_VIA_BITS = {}


def _torch_bits():
    import torch

    if not _TORCH_VIA_BITS:
        _TORCH_VIA_BITS.update({
            torch.bfloat16: (torch.int16, np.int16, np.dtype(ml_dtypes.bfloat16)),
            torch.float8_e4m3fn: (torch.int8, np.int8, np.dtype(ml_dtypes.float8_e4m3fn)),
            torch.float8_e5m2: (torch.int8, np.int8, np.dtype(ml_dtypes.float8_e5m2)),
        })
    return _TORCH_VIA_BITS


def is_torch(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def to_numpy(x) -> np.ndarray:
    if not is_torch(x):
        return np.asarray(x)
    t = x.detach().cpu().contiguous()
    via = _torch_bits().get(t.dtype)
    if via:
        return t.view(via[0]).numpy().view(via[2])
    return t.numpy()


def numpy_dtype(torch_dtype) -> np.dtype:
    """The numpy dtype holding a torch dtype's values (bf16, fp8 included)."""
    import torch

    via = _torch_bits().get(torch_dtype)
    return via[2] if via else torch.empty(0, dtype=torch_dtype).numpy().dtype


def torch_dtype(np_dtype):
    """The torch dtype of a numpy dtype (bf16, fp8 included)."""
    import torch

    for tdt, (_, _, npdt) in _torch_bits().items():
        if np.dtype(np_dtype) == npdt:
            return tdt
    return torch.from_numpy(np.empty(0, np_dtype)).dtype


def to_torch(a: np.ndarray):
    import torch

    a = np.require(a, requirements="C")  # ascontiguousarray would make 0-d arrays 1-d
    for tdt, (_, np_view, npdt) in _torch_bits().items():
        if a.dtype == npdt:
            return torch.from_numpy(a.view(np_view).copy()).view(tdt)
    if a.dtype.type.__module__ != "numpy":  # int4 and friends: widen to a torch type
        a = a.astype(np.int8 if "int" in a.dtype.name else np.float32)
    return torch.from_numpy(a.copy())
