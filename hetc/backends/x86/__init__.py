"""The x86 backend: the whole graph as one generated C function (backends/c)
over hand-written kernels (kernels.h), built into a shared library with the
system C compiler and called once per run through ctypes.

Ops and dtypes it cannot lower yet raise a TargetError naming them at
compile time (the renderer's support table).
"""

from __future__ import annotations

import os

from hetc.backends.c.build import build
from hetc.backends.c.emitter import EmitterBackend, read_headers, shared_headers
from hetc.backends.c.library import Library
from hetc.core.errors import TargetError
from hetc.core.targets import get_target
from hetc.runtime.artifact import Artifact

from . import fusion  # noqa: F401  (registers the fused-region lowering)
from .emit import X86Emitter, lower_graph

HERE = os.path.dirname(os.path.abspath(__file__))
# AVX2 + FMA is the baseline; kernels carry AVX-512 clones picked at load time
# from CPUID, so one library serves both kinds of CPU.
FLAGS = ["-O3", "-march=x86-64-v3", "-fopenmp", "-fPIC", "-shared", "-std=gnu11",
         "-ffp-contract=fast", "-fno-math-errno"]


def threads() -> int:
    """Threads for the kernels: HETC_THREADS, else the cores this process may use."""
    env = os.environ.get("HETC_THREADS")
    return int(env) if env else len(os.sched_getaffinity(0))


KERNEL_HEADERS = ["kernels.h", "kernels_api.h"]


def sources(lowered, headers=()) -> dict:
    """model.c, the shared and x86 headers, and a renderer's own headers
    (name -> text): they build in one unit (gcc FLAGS model.c)."""
    return {"model.c": lowered.source, **shared_headers(), **read_headers(HERE, KERNEL_HEADERS),
            **dict(headers)}


def kernel_library() -> str:
    """Path of kernels.h built alone with its kernels exported (kernels_api.h):
    once per machine, compiler and hetc version, in the build cache."""
    srcs = {"kernels.c": '#define HETC_KERNEL_LIBRARY\n#include "kernels.h"\n',
            **shared_headers(), **read_headers(HERE, KERNEL_HEADERS)}
    # missing prototypes: a kernel the models could not call; -Bsymbolic:
    # the kernels call each other, never a same-named function of another library
    return build(srcs, FLAGS + ["-Werror=missing-prototypes", "-Wl,-Bsymbolic"],
                 what="kernels", main="kernels.c")


def build_model(srcs) -> str:
    """Path of the built x86 model of sources `srcs`: its model.c alone,
    against the kernel library (EfficientNet-Lite0 0.1 s, SmolLM2-135M 1.0 s;
    2.9 s and 4.1 s with the kernels compiled in)."""
    return build(srcs, FLAGS + ["-DHETC_PREBUILT_KERNELS"], link=[kernel_library()])


def packed(artifact, emitter=X86Emitter, header_files=(), folder=HERE):
    """(lowered, sources) to build and run `artifact`: those of its compile,
    or, for one loaded from disk (weights are not saved), lowered again with
    this hetc's kernels."""
    if getattr(artifact, "lowered", None) is not None:
        return artifact.lowered, artifact.sources
    lowered = lower_graph(artifact.graph, threads(), emitter)
    return lowered, sources(lowered, read_headers(folder, header_files))


def make_artifact(graph, target, lowered, srcs, build) -> Artifact:
    artifact = Artifact(target.name, graph, srcs, build=build,
                        extra={"arena_bytes": lowered.arena_bytes,
                               "weights_bytes": int(lowered.blob.nbytes),
                               "kernels": lowered.kernels, "notes": lowered.notes})
    artifact.lowered = lowered  # the packed weights, for the executor (not saved: re-packed)
    return artifact


def can_build(target_name):
    """TargetError unless this host can build and run x86 code."""
    avail = get_target("x86").availability()
    if not avail.ok:
        raise TargetError(f"cannot run target {target_name} on this host: {avail.detail}")


class X86Backend(EmitterBackend):
    name = "x86"
    emitter = X86Emitter
    builds_at_compile = True

    def lower(self, graph, target, options) -> Artifact:
        lowered = lower_graph(graph, threads())
        return make_artifact(graph, target, lowered, sources(lowered),
                             {"flags": FLAGS,
                              "entry": "hetc_create(weights) -> ctx; hetc_run(ctx, in, out)"})

    def load(self, artifact):
        can_build("x86")
        lowered, srcs = packed(artifact)
        return Library(artifact.graph, lowered, build_model(srcs))


BACKEND = X86Backend()
