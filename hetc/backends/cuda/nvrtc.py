"""The compile check of generated CUDA: NVRTC (pip `nvidia-cuda-nvrtc`,
driven through `cuda-bindings`) compiles the same .cu the simulation runs
to cubin for each GPU architecture, in process, without a GPU, and ptxas
reports each kernel's registers, shared memory and spills."""

from __future__ import annotations

import hashlib
import re

from hetc.core.errors import TargetError

#: what the cubins are built for: Ampere (A100) and Hopper (H100/H200)
ARCHS = ("sm_80", "sm_90a")

_CACHE_SIZE = 32
_CACHE: dict[str, tuple] = {}  # hash of the sources and arch -> (cubin, log)
_ENTRY = re.compile(r"Compiling entry function '(\w+)'")
_SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def available() -> str | None:
    """None when NVRTC can be used here, else why not."""
    try:
        from cuda.bindings import nvrtc  # heavy and optional: the `cuda` extra
    except ImportError:
        return "NVRTC is not installed (pip install 'hetc[cuda]')"
    try:
        nvrtc.nvrtcVersion()
    except Exception as e:  # the library is missing or does not load
        return f"NVRTC does not load here ({type(e).__name__}: {e})"
    return None


def compile_check(sources: dict, main="model.cu", archs=ARCHS) -> dict:
    """{arch: {"cubin_bytes": n, "kernels": {name: resources}}} for
    `sources[main]` with the other sources as its headers, resources being
    registers, shared_bytes, stack_bytes and spill_bytes (stores + loads);
    TargetError with NVRTC's log when it does not compile."""
    out = {}
    for arch in archs:
        cubin, log = compile_cubin(sources, arch, main)
        out[arch] = {"cubin_bytes": len(cubin), "kernels": resources(log)}
    return out


def compile_cubin(sources: dict, arch: str, main="model.cu") -> tuple[bytes, str]:
    """(cubin, ptxas's report) of `sources[main]` for `arch` (sm_XY),
    cached per process by the sources' hash."""
    from cuda.bindings import nvrtc

    key = hashlib.sha256(repr((sorted(sources.items()), arch)).encode()).hexdigest()
    if key in _CACHE:
        return _CACHE[key]
    headers = sorted(k for k in sources if k != main)
    err, prog = nvrtc.nvrtcCreateProgram(
        sources[main].encode(), main.encode(), len(headers),
        [sources[h].encode() for h in headers], [h.encode() for h in headers])
    _ok(nvrtc, err, "nvrtcCreateProgram")
    try:
        opts = [f"--gpu-architecture={arch}".encode(), b"--std=c++17", b"--ptxas-options=-v"]
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise TargetError(f"target cuda: NVRTC cannot compile the generated code for "
                              f"{arch}:\n{_log(nvrtc, prog)}")
        err, size = nvrtc.nvrtcGetCUBINSize(prog)
        _ok(nvrtc, err, "nvrtcGetCUBINSize")
        cubin = b" " * size
        (err,) = nvrtc.nvrtcGetCUBIN(prog, cubin)
        _ok(nvrtc, err, "nvrtcGetCUBIN")
        if len(_CACHE) >= _CACHE_SIZE:
            del _CACHE[next(iter(_CACHE))]  # the oldest
        _CACHE[key] = (cubin, _log(nvrtc, prog, None))
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    return _CACHE[key]


def _ok(nvrtc, err, what):
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise TargetError(f"target cuda: {what} failed ({err})")


def _log(nvrtc, prog, limit=20) -> str:
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
