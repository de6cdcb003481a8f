"""The weight store: numpy arrays by name, saved beside the IR as .npz.

Two namespaces that never meet: the model's weights, under whatever names
the model gives them (any string: an ONNX initializer may well be called
"W:scale" or "__hetc_store__"), and the parameters of quantized weights
(scales, zero points, codebook variant indices), keyed by a tuple
`aux_key(name, kind)` that no weight name can equal.

The .npz file is what np.savez writes (one NAME.npy entry per weight, so
np.load shows the weights by name), plus an entry `__hetc_store__` holding
JSON: which entries are quantization parameters, the real names of weights
stored under another entry name (names starting with "__hetc", or too long
for a zip entry), and the hetc dtypes of arrays numpy cannot save natively
(bf16, fp8, int4), which are written as their raw bytes. Zip timestamps are
fixed, so the same store always gives the same bytes. Reading trusts
nothing in the file: no pickles, sizes checked against the file before
anything is allocated, every problem a HetcError naming the file.
"""

from __future__ import annotations

import json
import math
import os
import zipfile

import numpy as np

from hetc.core.errors import HetcError
from hetc.core.fsutil import atomic_open

from . import dtypes

AUX_KINDS = ("scale", "zero", "variant")
STORE_KEY = "__hetc_store__"
_LEGACY_DTYPES_KEY = "__hetc_dtypes__"  # the format before quantization parameters had their own keys
_RESERVED = "__hetc"
_MAX_ENTRY_NAME = 1024  # bytes; longer weight names are stored under an index entry
_RAW_VIEW = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def aux_key(name, kind):
    """Key of a weight's quantization parameter array (kind: "scale", "zero"
    or "variant"); a tuple, so it never collides with a weight's name."""
    return (name, kind)


def is_aux(key) -> bool:
    return isinstance(key, tuple)


def key_label(key) -> str:
    """How messages show a store key: `NAME:kind` for a parameter array."""
    return f"{key[0]}:{key[1]}" if is_aux(key) else key


class WeightStore(dict):
    """name (or aux_key) -> numpy array. A dict, plus saving and loading."""

    def save(self, path):
        """Write all arrays to `path` (.npz) atomically."""
        entries, meta = [], {"version": 2, "dtypes": {}, "names": {}, "aux": {}}
        for i, (key, arr) in enumerate(self.items()):
            if is_aux(key):
                entry = f"{_RESERVED}_aux{i}"
                meta["aux"][entry] = list(key)
            elif _plain_entry_name(key):
                entry = key
            else:
                entry = f"{_RESERVED}_w{i}"
                meta["names"][entry] = key
            arr = np.require(arr, requirements="C")  # keeps 0-d arrays 0-d
            if arr.dtype.type.__module__ != "numpy":  # an ml_dtypes extension type
                meta["dtypes"][entry] = dtypes.from_numpy(arr.dtype).name
                arr = arr.view(_RAW_VIEW[arr.dtype.itemsize])
            entries.append((entry, arr))
        entries.append((STORE_KEY, np.array(json.dumps(meta))))
        with atomic_open(path, "wb") as f:
            write_npz(f, entries)

    @classmethod
    def load(cls, source, where=None):
        """The store saved in `source` (a path or a binary file object);
        `where` names it in errors (default: the path)."""
        where = where or (os.fspath(source) if isinstance(source, (str, os.PathLike))
                          else "weights")
        arrays = read_npz(source, where)
        try:
            return cls._from_entries(arrays)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise HetcError(f"{where}: damaged weights file: {_first_line(e)}") from None

    @classmethod
    def _from_entries(cls, arrays):
        store = cls()
        described = STORE_KEY in arrays
        if described:
            meta = json.loads(str(arrays.pop(STORE_KEY)[()]))
            if not isinstance(meta, dict) or meta.get("version") != 2:
                raise ValueError(f"{STORE_KEY} is not a version-2 description")
            kinds, names, aux = (dict(meta.get(k, {})) for k in ("dtypes", "names", "aux"))
        else:  # written before version 2: parameters were NAME:kind beside NAME
            kinds = json.loads(str(arrays.pop(_LEGACY_DTYPES_KEY)[()])) \
                if _LEGACY_DTYPES_KEY in arrays else {}
            names = {}
            aux = {k: list(k.rsplit(":", 1)) for k in arrays
                   if k.rsplit(":", 1)[-1] in AUX_KINDS and k.rsplit(":", 1)[0] in arrays}
        for entry in list(kinds) + list(names) + list(aux):
            if entry not in arrays:
                raise ValueError(f"{STORE_KEY} names entry {entry!r}, which the file lacks")
        for entry, arr in arrays.items():
            if entry in kinds:
                arr = arr.view(dtypes.get(kinds[entry]).storage)
            if entry in aux:
                name, kind = aux[entry]
                if not isinstance(name, str) or kind not in AUX_KINDS:
                    raise ValueError(f"entry {entry!r} is described as {aux[entry]!r}")
                store[aux_key(name, kind)] = arr
            elif entry in names:
                if not isinstance(names[entry], str):
                    raise ValueError(f"entry {entry!r} is named {names[entry]!r}")
                store[names[entry]] = arr
            elif described and entry.startswith(_RESERVED):
                raise ValueError(f"entry {entry!r} is not described")
            else:
                store[entry] = arr
        return store

    def nbytes(self):
        return sum(a.nbytes for a in self.values())


def _plain_entry_name(name) -> bool:
    """A weight name that can be its own zip entry name (zip cuts names at a NUL)."""
    if not isinstance(name, str) or name.startswith(_RESERVED) or not name.isprintable():
        return False
    try:
        return len(name.encode("utf-8")) <= _MAX_ENTRY_NAME
    except UnicodeEncodeError:  # lone surrogates
        return False


def write_npz(f, entries):
    """(name, array) pairs as an .npz (stored, as np.savez writes it) with
    fixed timestamps, to the binary file `f`."""
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in entries:
            info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.asarray(arr), allow_pickle=False)


def read_npz(source, where) -> dict:
    """{entry name: array} of an .npz file, read without trusting it: no
    pickled objects, every entry's declared size checked against the data
    the file holds before memory is taken for it."""
    try:
        zf = zipfile.ZipFile(source)
    except FileNotFoundError:
        raise HetcError(f"{where}: no such file") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise HetcError(f"{where}: not a readable .npz file ({_first_line(e)})") from None
    out = {}
    with zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy") or info.is_dir():
                raise HetcError(f"{where}: entry {info.filename[:80]!r} is not an .npy array")
            try:
                out[info.filename[:-4]] = _read_npy(zf, info)
            except HetcError as e:
                raise HetcError(f"{where}: entry {info.filename[:80]!r}: {e}") from None
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError,
                    RuntimeError, TypeError, SyntaxError, MemoryError) as e:
                raise HetcError(f"{where}: entry {info.filename[:80]!r} is damaged "
                                f"({type(e).__name__}: {_first_line(e)})") from None
    return out


def _read_npy(zf, info):
    fmt = np.lib.format
    with zf.open(info) as f:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            raise HetcError(f"unknown .npy version {version}")
        if dtype.hasobject:
            raise HetcError("holds Python objects (a pickle); hetc never unpickles")
        if dtype.itemsize == 0 and dtype.kind != "U":
            raise HetcError(f"dtype {dtype} has no size")
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        if nbytes != info.file_size - f.tell():
            raise HetcError(f"declares {list(shape)} of {dtype} ({nbytes:,} bytes) but holds "
                            f"{info.file_size - f.tell():,} bytes of data")
        arr = np.empty(count, dtype)
        if nbytes and f.readinto(memoryview(arr.view(np.uint8))) != nbytes:
            raise HetcError("is truncated")
    return arr.reshape(shape, order="F" if fortran else "C")


def _first_line(e) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__
