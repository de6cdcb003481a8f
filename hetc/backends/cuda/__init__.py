"""The cuda backend: the graph as generated CUDA C++ (emit.py, device.cuh),
compile-checked for sm_80, sm_86, sm_89 and sm_90a (toolchain.py), run
here by compiling the same source with g++ against device.cuh's CPU
simulation (`emulate=True`), and on a GPU through the driver API (gpu.py).
Both play the same launch table (launch.py)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from hetc.backends.base import emulate_option, emulating, option
from hetc.backends.c.build import build
from hetc.backends.c.emitter import EmitterBackend, read_headers, shared_headers
from hetc.core.errors import TargetError
from hetc.runtime.artifact import Artifact

from . import emit, roofline, toolchain
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
    compiler: str = option("nvrtc", "what builds the GPU code: nvrtc (the pip wheel, in "
                                    "process) or nvcc (on the PATH)", toolchain.COMPILERS)


def sources(lowered) -> dict:
    """The generated files: model.cu, its headers and the launch table a
    host plays (launch.py)."""
    return {"model.cu": lowered.source, **read_headers(HERE, HEADER_FILES), **shared_headers(),
            "launches.json": "[\n" + ",\n".join(json.dumps(s) for s in lowered.steps) + "\n]\n"}


def device_sources(srcs) -> dict:
    """What the GPU compiler gets: model.cu and the headers it includes."""
    return {k: v for k, v in srcs.items() if k.endswith((".cu", ".cuh"))}


def _resources_note(cubins, compiler) -> str:
    """One line per architecture: kernels, the most registers and shared
    memory one uses, and spills (which a hot kernel must not have)."""
    parts = []
    for arch, c in cubins.items():
        if "kernels" not in c:
            continue  # the PTX
        ks = c["kernels"].values()
        spills = sum(k["spill_bytes"] for k in ks)
        parts.append(f"{arch}: {len(ks)} kernels, <= {max((k['registers'] for k in ks), default=0)}"
                     f" registers, <= {max((k['shared_bytes'] for k in ks), default=0)} B shared, "
                     + (f"{spills} B of spills" if spills else "no spills"))
    return f"cuda ({compiler}): " + "; ".join(parts) + f"; PTX for {toolchain.PTX}"


class CudaBackend(EmitterBackend):
    name = "cuda"
    Options = CudaOptions
    emitter = emit.CudaEmitter

    def lower(self, graph, target, options) -> Artifact:
        lowered = emit.lower_graph(graph)
        srcs = sources(lowered)
        notes, cubins = [], {}
        why = toolchain.available(options.compiler)
        if why is not None and options.compiler == "nvcc":  # asked for: not skipped silently
            raise TargetError(f"target cuda: compiler='nvcc' but {why}")
        if why is None:  # the compile check: the kernels as a GPU gets them
            cubins = toolchain.compile_check(device_sources(srcs), compiler=options.compiler)
            notes.append(_resources_note(cubins, options.compiler))
        else:
            notes.append(f"cuda: the generated code was not compile-checked: {why}")
        notes.append(roofline.note(graph, target, lowered.tensor_core_ops))
        emulate = emulating(options.emulate)
        artifact = Artifact(target.name, graph, srcs,
                            build={"compiler": options.compiler, "archs": list(toolchain.ARCHS),
                                   "ptx": toolchain.PTX, "emulate": emulate,
                                   "emulate_flags": SIM_FLAGS,
                                   "entry": "launches.json: the kernels and copies of a call, "
                                            "in order"},
                            extra={"arena_bytes": lowered.arena_bytes,
                                   "weights_bytes": int(lowered.blob.nbytes),
                                   "kernels": lowered.kernels, "cubins": cubins,
                                   "notes": notes + ([EMULATED_NOTE] if emulate else [])})
        artifact.lowered = lowered  # the weights blob, for the executor (not saved: re-packed)
        return artifact

    def load(self, artifact):
        emulate = bool(artifact.build.get("emulate")) or emulating(None)
        lowered = getattr(artifact, "lowered", None) or emit.lower_graph(artifact.graph)
        kernels = lowered.kernel_names
        if emulate:
            device = SimDevice(build(sources(lowered), SIM_FLAGS, main="model.cu"), kernels)
        else:
            compiler = artifact.build.get("compiler", "nvrtc")
            if compiler not in toolchain.COMPILERS:  # a saved manifest: trust nothing
                raise TargetError(f"target cuda: the artifact names an unknown compiler "
                                  f"{compiler!r} (known: {', '.join(toolchain.COMPILERS)})")
            why = toolchain.available(compiler)
            if why:
                raise TargetError(f"target cuda: cannot build the kernels for this GPU: {why}; "
                                  f"{RUN_ON_CPU}")
            device = GpuDevice(device_sources(sources(lowered)), kernels, compiler)
        return Executor(artifact.graph, lowered, device)


BACKEND = CudaBackend()
