"""Build generated C (or C++: the cuda simulation) into a shared library with
the system compiler, cached by the hash of the sources and flags (the flags
are the target's).

A cache entry is a folder named by that hash. It is built under a temporary
name and renamed into place whole, and the first complete build of an entry
wins: processes compiling or loading the same model at once never see a
half-written entry, and an entry once there is never replaced under a
reader. `hetc cache` shows the cache, `hetc cache clean` empties it."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile

from hetc.core.errors import TargetError
from hetc.core.fsutil import cache_root, check_file_name
from hetc.core.targets import c_compiler, cxx_compiler


def build(sources: dict, flags, what="model", main="model.c", link=()) -> str:
    """Path of the shared library built from `sources` (file name -> text;
    `main` is the translation unit: C, or C++ when it is not a .c file),
    linked against the shared libraries at paths `link` (by full path, so
    that two versions of a library never stand in for each other). Raises
    TargetError naming the compiler and its first errors when the build
    fails."""
    cxx = not main.endswith(".c")
    cc = cxx_compiler() if cxx else c_compiler()
    if cc is None:
        var, lang, names = ("CXX", "C++", "g++ or clang++") if cxx else ("CC", "C", "gcc or clang")
        named = os.environ.get(var)
        raise TargetError((f"no {lang} compiler: {var}={named} is not found" if named else
                           f"no {lang} compiler found: install {names}, or set {var} to one") +
                          " (the generated code is built with it)")
    flags = list(flags)
    link = [os.path.abspath(p) for p in link]
    key = hashlib.sha256(repr((cc, flags, sorted(sources.items()), link)).encode()).hexdigest()[:20]
    folder = os.path.join(cache_root(), "builds", key)
    lib = os.path.join(folder, f"{what}.so")
    if os.path.exists(lib):
        return lib
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(folder), prefix=f".tmp-{key}-")
    try:
        for name, text in sources.items():
            with open(os.path.join(tmp, check_file_name(name, "generated source")), "w") as f:
                f.write(text)
        cmd = [cc, *flags, "-o", os.path.join(tmp, f"{what}.so"),
               *(["-x", "c++"] if cxx else []), os.path.join(tmp, main), *link, "-lm"]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            errors = "\n".join(p.stderr.strip().splitlines()[:20])
            raise TargetError(f"building the generated code failed ({os.path.basename(cc)} exit "
                              f"{p.returncode}):\n{errors}")
        try:
            os.rename(tmp, folder)
        except OSError:  # the folder exists: another build of it finished first
            if not os.path.exists(lib):  # a stale folder without a library: replace it
                shutil.rmtree(folder, ignore_errors=True)
                os.rename(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return lib
