"""The cuda backend: the graph as generated CUDA C++ (emit.py, device.cuh),
compile-checked with NVRTC for sm_80 and sm_90a, and run here by compiling
the same source with g++ against device.cuh's CPU simulation
(`emulate=True`). Running on a GPU is not built yet: the driver-API
launcher is the next step (docs/cuda.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from hetc.backends.base import emulate_option, emulating
from hetc.backends.c.build import build
from hetc.backends.c.emitter import HEADERS as C_HEADERS
from hetc.backends.c.emitter import EmitterBackend, read_headers, shared_headers
from hetc.backends.c.library import Library
from hetc.core.errors import TargetError
from hetc.runtime.artifact import Artifact

from . import emit, nvrtc

HERE = os.path.dirname(os.path.abspath(__file__))
HEADER_FILES = ("device.cuh",)
SIM_FLAGS = ["-O2", "-std=c++17", "-fPIC", "-shared", "-DHETC_SIM", "-w"]
EMULATED_NOTE = ("cuda runs through hetc's CPU simulation of the generated kernels (emulate): "
                 "the numbers are the kernels', the speed means nothing")


@dataclass(frozen=True)
class CudaOptions:
    emulate: bool | None = emulate_option()


def sources(lowered) -> dict:
    return {"model.cu": lowered.source, **read_headers(HERE, HEADER_FILES), **shared_headers()}


def _resources_note(cubins) -> str:
    """One line per architecture: kernels, the most registers and shared
    memory one uses, and spills (which a hot kernel must not have)."""
    parts = []
    for arch, c in cubins.items():
        ks = c["kernels"].values()
        spills = sum(k["spill_bytes"] for k in ks)
        parts.append(f"{arch}: {len(ks)} kernels, <= {max((k['registers'] for k in ks), default=0)}"
                     f" registers, <= {max((k['shared_bytes'] for k in ks), default=0)} B shared, "
                     + (f"{spills} B of spills" if spills else "no spills"))
    return "cuda (NVRTC): " + "; ".join(parts)


class CudaBackend(EmitterBackend):
    name = "cuda"
    Options = CudaOptions
    emitter = emit.CudaEmitter

    def lower(self, graph, target, options) -> Artifact:
        lowered = emit.lower_graph(graph)
        srcs = sources(lowered)
        notes, cubins = [], {}
        why = nvrtc.available()
        if why is None:  # the compile check: the kernels as a GPU gets them
            device = {k: v for k, v in srcs.items() if k not in C_HEADERS}
            cubins = nvrtc.compile_check(device)
            notes.append(_resources_note(cubins))
        else:
            notes.append(f"cuda: the generated code was not compile-checked: {why}")
        emulate = emulating(options.emulate)
        artifact = Artifact(target.name, graph, srcs,
                            build={"compiler": "nvrtc", "archs": list(nvrtc.ARCHS),
                                   "emulate": emulate, "emulate_flags": SIM_FLAGS,
                                   "entry": "hetc_create(weights) -> ctx; hetc_run(ctx, in, out)"},
                            extra={"arena_bytes": lowered.arena_bytes,
                                   "weights_bytes": int(lowered.blob.nbytes),
                                   "kernels": lowered.kernels, "cubins": cubins,
                                   "notes": notes + ([EMULATED_NOTE] if emulate else [])})
        artifact.lowered = lowered  # the weights blob, for the executor (not saved: re-packed)
        return artifact

    def load(self, artifact):
        emulate = bool(artifact.build.get("emulate")) or emulating(None)
        if not emulate:
            raise TargetError(
                "cannot run target cuda on a GPU yet: hetc generates and NVRTC-compiles the "
                "kernels, but the GPU launcher is not built (docs/cuda.md); run the same "
                "kernels on the CPU: compile with emulate=True (hetc compile --emulate), or "
                "set HETC_EMULATE=1")
        lowered = getattr(artifact, "lowered", None) or emit.lower_graph(artifact.graph)
        path = build(sources(lowered), SIM_FLAGS, main="model.cu")
        return Library(artifact.graph, lowered, path, "cuda (emulated)")


BACKEND = CudaBackend()
