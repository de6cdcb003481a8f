"""The cuda backend: the graph as generated CUDA C++ (emit.py, device.cuh),
compile-checked with NVRTC for sm_80 and sm_90a, and run here by compiling
the same source with g++ against device.cuh's CPU simulation
(`emulate=True`); on a GPU through the driver API (gpu.py). Both play the
same launch table (launch.py)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from hetc.backends.base import emulate_option, emulating
from hetc.backends.c.build import build
from hetc.backends.c.emitter import EmitterBackend, read_headers, shared_headers
from hetc.core.errors import TargetError
from hetc.runtime.artifact import Artifact

from . import emit, nvrtc, roofline
from .gpu import RUN_ON_CPU, GpuDevice
from .launch import Executor, SimDevice

HERE = os.path.dirname(os.path.abspath(__file__))
HEADER_FILES = ("device.cuh",)
SIM_FLAGS = ["-O2", "-std=c++17", "-fPIC", "-shared", "-DHETC_SIM", "-w"]
EMULATED_NOTE = ("cuda runs through hetc's CPU simulation of the generated kernels (emulate): "
                 "the numbers are the kernels', the speed means nothing")


@dataclass(frozen=True)
class CudaOptions:
    emulate: bool | None = emulate_option()


def sources(lowered) -> dict:
    """The generated files: model.cu, its headers and the launch table a
    host plays (launch.py)."""
    return {"model.cu": lowered.source, **read_headers(HERE, HEADER_FILES), **shared_headers(),
            "launches.json": "[\n" + ",\n".join(json.dumps(s) for s in lowered.steps) + "\n]\n"}


def device_sources(srcs) -> dict:
    """What NVRTC compiles: model.cu and the headers it includes on a GPU."""
    return {k: v for k, v in srcs.items() if k.endswith((".cu", ".cuh"))}


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
            cubins = nvrtc.compile_check(device_sources(srcs))
            notes.append(_resources_note(cubins))
        else:
            notes.append(f"cuda: the generated code was not compile-checked: {why}")
        notes.append(roofline.note(graph, target, lowered.tensor_core_ops))
        emulate = emulating(options.emulate)
        artifact = Artifact(target.name, graph, srcs,
                            build={"compiler": "nvrtc", "archs": list(nvrtc.ARCHS),
                                   "emulate": emulate, "emulate_flags": SIM_FLAGS,
                                   "entry": "launches.json: the kernels and copies of a call, in order"},
                            extra={"arena_bytes": lowered.arena_bytes,
                                   "weights_bytes": int(lowered.blob.nbytes),
                                   "kernels": lowered.kernels, "cubins": cubins,
                                   "notes": notes + ([EMULATED_NOTE] if emulate else [])})
        artifact.lowered = lowered  # the weights blob, for the executor (not saved: re-packed)
        return artifact

    def load(self, artifact):
        emulate = bool(artifact.build.get("emulate")) or emulating(None)
        lowered = getattr(artifact, "lowered", None) or emit.lower_graph(artifact.graph)
        kernels = [s["kernel"] for s in lowered.steps if "kernel" in s]
        if emulate:
            device = SimDevice(build(sources(lowered), SIM_FLAGS, main="model.cu"), kernels)
        else:
            why = nvrtc.available()
            if why:
                raise TargetError(f"target cuda: cannot build the kernels for this GPU: {why}; "
                                  f"{RUN_ON_CPU}")
            device = GpuDevice(device_sources(sources(lowered)), kernels)
        return Executor(artifact.graph, lowered, device)


BACKEND = CudaBackend()
