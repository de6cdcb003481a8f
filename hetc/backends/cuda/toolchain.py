"""Building generated CUDA for GPUs: NVRTC (pip `nvidia-cuda-nvrtc`,
driven through `cuda-bindings`, in process, the default) or nvcc (on the
PATH, when asked) compiles the same .cu the simulation runs, without a
GPU, to a cubin per architecture and to PTX (compute_80, which newer GPUs'
drivers compile themselves), and ptxas reports each kernel's registers,
shared memory and spills.

Results are cached on disk by the hash of the sources, the architecture
and the compiler (`<hetc cache>/cuda/`), like backends/c's builds: a cubin
is written whole or not at all, and a model compiled again, or loaded on a
GPU after being compiled here, is not rebuilt."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile

from hetc.core.errors import TargetError
from hetc.core.fsutil import atomic_write_bytes, cache_root, check_file_name

#: the cubins every compile builds and checks: Ampere (A100, A10/RTX 30),
#: Ada (L4, L40, RTX 40) and Hopper (H100/H200); plus PTX for the rest
ARCHS = ("sm_80", "sm_86", "sm_89", "sm_90a")
PTX = "compute_80"
COMPILERS = ("nvrtc", "nvcc")

_ENTRY = re.compile(r"Compiling entry function '(\w+)'")
_SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def available(compiler="nvrtc") -> str | None:
    """None when `compiler` can be used here, else why not."""
    if compiler == "nvcc":
        return None if shutil.which("nvcc") else "nvcc is not on the PATH"
    try:
        from cuda.bindings import nvrtc  # heavy and optional: the `cuda` extra
    except ImportError:
        return "NVRTC is not installed (pip install 'hetc[cuda]')"
    try:
        nvrtc.nvrtcVersion()
    except Exception as e:  # the library is missing or does not load
        return f"NVRTC does not load here ({type(e).__name__}: {e})"
    return None


def compile_check(sources: dict, main="model.cu", archs=ARCHS, compiler="nvrtc") -> dict:
    """{arch: {"cubin_bytes": n, "kernels": {name: resources}}} for each
    cubin architecture, and {"ptx_bytes": n} under PTX, for `sources[main]`
    with the other sources as its headers; resources are registers,
    shared_bytes, stack_bytes and spill_bytes (stores + loads). TargetError
    with the compiler's log when it does not compile."""
    out = {}
    for arch in archs:
        cubin, log = build(sources, arch, main, compiler)
        out[arch] = {"cubin_bytes": len(cubin), "kernels": resources(log)}
    out[PTX] = {"ptx_bytes": len(build(sources, PTX, main, compiler)[0])}
    return out


def build(sources: dict, arch: str, main="model.cu", compiler="nvrtc") -> tuple[bytes, str]:
    """(cubin, or PTX for a compute_XY arch; the compiler's report), from
    the disk cache when built before."""
    version = _version(compiler)
    key = hashlib.sha256(repr((sorted(sources.items()), main, arch, compiler, version))
                         .encode()).hexdigest()[:24]
    folder = os.path.join(cache_root(), "cuda")
    binary, log = os.path.join(folder, key + ".bin"), os.path.join(folder, key + ".log")
    try:
        with open(binary, "rb") as f, open(log) as g:
            return f.read(), g.read()
    except OSError:
        pass
    code, report = (_nvrtc if compiler == "nvrtc" else _nvcc)(sources, arch, main)
    os.makedirs(folder, exist_ok=True)
    atomic_write_bytes(log, report.encode())
    atomic_write_bytes(binary, code)  # last: a binary without its log is never read
    return code, report


def _version(compiler):
    if compiler == "nvcc":
        p = subprocess.run(["nvcc", "--version"], capture_output=True, text=True)
        return p.stdout.strip().splitlines()[-1] if p.returncode == 0 else "?"
    from cuda.bindings import nvrtc

    return repr(nvrtc.nvrtcVersion())


def _nvrtc(sources, arch, main):
    from cuda.bindings import nvrtc

    headers = sorted(k for k in sources if k != main)
    err, prog = nvrtc.nvrtcCreateProgram(
        sources[main].encode(), main.encode(), len(headers),
        [sources[h].encode() for h in headers], [h.encode() for h in headers])
    _ok(nvrtc, err, "nvrtcCreateProgram")
    ptx = arch.startswith("compute_")
    try:
        opts = [f"--gpu-architecture={arch}".encode(), b"--std=c++17"]
        opts += [] if ptx else [b"--ptxas-options=-v"]
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise TargetError(f"target cuda: NVRTC cannot compile the generated code for "
                              f"{arch}:\n{_log(nvrtc, prog, 20)}")
        size_of, get = ((nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX) if ptx else
                        (nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN))
        err, size = size_of(prog)
        _ok(nvrtc, err, size_of.__name__)
        code = b" " * size
        (err,) = get(prog, code)
        _ok(nvrtc, err, get.__name__)
        return code, _log(nvrtc, prog)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def _nvcc(sources, arch, main):
    if shutil.which("nvcc") is None:
        raise TargetError("target cuda: compiler='nvcc' but nvcc is not on the PATH (or use "
                          "compiler='nvrtc', pip install 'hetc[cuda]')")
    with tempfile.TemporaryDirectory(prefix="hetc-nvcc-") as tmp:
        for name, text in sources.items():
            with open(os.path.join(tmp, check_file_name(name, "generated source")), "w") as f:
                f.write(text)
        ptx = arch.startswith("compute_")
        out = os.path.join(tmp, "model.ptx" if ptx else "model.cubin")
        cmd = ["nvcc", "-std=c++17", f"-arch={arch}", "-ptx" if ptx else "-cubin",
               *([] if ptx else ["-Xptxas", "-v"]), "-o", out, os.path.join(tmp, main)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            errors = "\n".join(p.stderr.strip().splitlines()[:20])
            raise TargetError(f"target cuda: nvcc cannot compile the generated code for "
                              f"{arch}:\n{errors}")
        with open(out, "rb") as f:
            return f.read(), p.stderr


def _ok(nvrtc, err, what):
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise TargetError(f"target cuda: {what} failed ({err})")


def _log(nvrtc, prog, limit=None) -> str:
    err, size = nvrtc.nvrtcGetProgramLogSize(prog)
    log = b" " * size
    nvrtc.nvrtcGetProgramLog(prog, log)
    lines = log.rstrip(b"\0").decode(errors="replace").strip().splitlines()
    return "\n".join(lines[:limit])


def resources(log: str) -> dict:
    """{kernel: {registers, shared_bytes, stack_bytes, spill_bytes}} from
    ptxas's -v report."""
    out, name = {}, None
    for line in log.splitlines():
        m = _ENTRY.search(line)
        if m:
            name = m.group(1)
            out[name] = {"registers": 0, "shared_bytes": 0, "stack_bytes": 0, "spill_bytes": 0}
            continue
        if name is None:
            continue
        m = _SPILLS.search(line)
        if m:
            out[name]["stack_bytes"] = int(m.group(1))
            out[name]["spill_bytes"] = int(m.group(2)) + int(m.group(3))
        m = _USED.search(line)
        if m:
            out[name]["registers"] = int(m.group(1))
            out[name]["shared_bytes"] = int(m.group(2) or 0)
    return out
