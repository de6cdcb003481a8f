"""Loading a .pt2 file (torch.export.save) without running code from it.

torch.export.load unpickles whatever the archive asks it to: weights and
constants marked `use_pickle`, custom and opaque objects, sample inputs
that fail a weights-only load (it then retries without the restriction),
the archive formats of older torch versions, and it loads the native
libraries of an AOTInductor package. So before torch sees the file, hetc
reads the archive itself and accepts only what loads without a pickle:
the files torch.export.save writes for a program, weights and constants as
raw tensor bytes, and sample inputs that torch.load(weights_only=True)
reads. Anything else is refused with a message naming it. What remains is
as safe as torch's JSON deserializer of the program (docs/reliability.md).

torch is imported inside the functions that use it: `import hetc` must not
load heavy optional packages.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import zipfile

from hetc.core.errors import FrontendError

# Paths inside the archive's top folder that torch.export.save writes.
_PLAIN = {"archive_format", "archive_version", "byteorder", ".data/version",
          ".data/serialization_id"}
_PROGRAM = re.compile(r"^models/([^/]+)\.json$")
_SAMPLE_INPUTS = re.compile(r"^data/sample_inputs/([^/]+)\.pt$")
_CONFIG = re.compile(r"^data/(weights|constants)/([^/]+)_(weights|constants)_config\.json$")
_PAYLOAD = re.compile(r"^data/(weights|constants)/([^/]+)$")
_EXTRA = re.compile(r"^extra/[^/]+$")


def load_pt2(path):
    """The ExportedProgram in `path`, after `check_pt2`."""
    import torch

    check_pt2(path)
    try:
        return torch.export.load(path)
    except Exception as e:  # corrupt or foreign file: say which
        raise FrontendError(f"{path}: not a loadable torch.export program "
                            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                            ) from None


def check_pt2(path):
    """FrontendError unless the archive at `path` holds only what
    torch.export.save writes for programs whose weights, constants and
    sample inputs load without unpickling anything."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise FrontendError(f"{path}: not a loadable torch.export program (not a zip "
                            f"archive: {e})") from None
    with zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        roots = {n.split("/", 1)[0] for n in names}
        if len(roots) != 1 or any("/" not in n for n in names):
            raise FrontendError(f"{path}: not a torch.export archive (no single top folder)")
        root = roots.pop() + "/"
        rel = [n[len(root):] for n in names]
        if "archive_version" not in rel or not any(_PROGRAM.match(r) for r in rel):
            raise FrontendError(f"{path}: not a torch.export archive of this torch's format "
                                f"(re-save it with torch.export.save)")
        for r in rel:
            if r in _PLAIN or _PROGRAM.match(r) or _EXTRA.match(r):
                continue
            m = _SAMPLE_INPUTS.match(r)
            if m:
                _check_sample_inputs(path, zf, root + r)
                continue
            m = _CONFIG.match(r)
            if m and m.group(1) == m.group(3):
                _check_config(path, zf, root + r, m.group(1))
                continue
            if _PAYLOAD.match(r) and not r.endswith(".pt"):  # raw bytes (a .pt is the old pickle)
                continue
            raise FrontendError(f"{path}: holds {r!r}, which hetc does not load: "
                                + ("compiled native code (AOTInductor), which loading would run"
                                   if r.startswith("data/aotinductor/") else
                                   "only torch.export.save's program, raw weights and constants "
                                   "are accepted, since other parts are unpickled"))


def _check_config(path, zf, name, kind):
    """Every entry of a weights or constants config: raw tensor bytes, not a pickle."""
    try:
        config = json.loads(zf.read(name)).get("config")
        entries = list(config.items())
    except (ValueError, AttributeError, zipfile.BadZipFile) as e:
        raise FrontendError(f"{path}: unreadable {name} ({e})") from None
    for fqn, meta in entries:
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False or \
                not isinstance(meta.get("path_name"), str) or \
                (kind == "constants" and not meta["path_name"].startswith("tensor_")):
            raise FrontendError(f"{path}: {kind[:-1]} '{fqn}' is stored as a pickle (or a "
                                f"custom object), which hetc never unpickles: save the model "
                                f"with plain tensor weights")


def _check_sample_inputs(path, zf, name):
    """torch would retry a failed weights-only load of the sample inputs
    with pickles allowed: make sure the weights-only load succeeds."""
    import torch

    try:
        torch.load(io.BytesIO(zf.read(name)), weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, zipfile.BadZipFile,
            OSError, TypeError, AttributeError) as e:
        raise FrontendError(f"{path}: its sample inputs ({os.path.basename(name)}) do not load "
                            f"with weights_only=True ({type(e).__name__}); hetc does not unpickle "
                            f"them") from None
