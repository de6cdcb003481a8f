"""The x86 backend: the whole graph as one generated C function (backends/c)
over hand-written kernels (kernels.h), built into a shared library with the
system C compiler and called once per run through ctypes.

Ops and dtypes it cannot lower yet raise a TargetError naming them at
compile time (emit.check_supported).
"""

from __future__ import annotations

import ctypes
import os

import numpy as np

from hetc.errors import TargetError
from hetc.runtime.artifact import Artifact
from hetc.runtime.executors import register_executor

from hetc.backends.c.emitter import read_headers, shared_headers

from .emit import X86Emitter, lower_graph

HERE = os.path.dirname(os.path.abspath(__file__))


def threads() -> int:
    """Threads for the kernels: HETC_THREADS, else the cores this process may use."""
    env = os.environ.get("HETC_THREADS")
    return int(env) if env else len(os.sched_getaffinity(0))


def sources(lowered, headers=()) -> dict:
    """model.c, the shared and x86 headers, and a renderer's own headers (name -> text)."""
    return {"model.c": lowered.source, **shared_headers(), **read_headers(HERE, ["kernels.h"]),
            **dict(headers)}


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
                               "kernels": lowered.kernels})
    artifact.lowered = lowered  # the packed weights, for the executor (not saved: re-packed)
    return artifact


def lower(graph, target) -> Artifact:
    from .build import FLAGS

    lowered = lower_graph(graph, threads())
    return make_artifact(graph, target, lowered, sources(lowered),
                         {"flags": FLAGS,
                          "entry": "hetc_create(weights) -> ctx; hetc_run(ctx, in, out)"})


class Library:
    """A built model: one ctypes call per run, outputs allocated per call.
    `lowered` holds the packed weights; `path` is the built shared library.

    Safe to call from several threads at once: a call takes a context (the
    weights, an activation arena and its failure status) from a pool and
    puts it back, and makes one more when all are in use; so N threads
    calling together hold N arenas of `arena_bytes` each."""

    def __init__(self, graph, lowered, path, target="x86"):
        self.blob = lowered.blob  # kept alive: the contexts point into it
        self.arena_bytes = lowered.arena_bytes
        self.lib = ctypes.CDLL(path)
        self.target = target
        self.lib.hetc_create.argtypes = [ctypes.c_void_p]
        self.lib.hetc_create.restype = ctypes.c_void_p
        self.lib.hetc_destroy.argtypes = [ctypes.c_void_p]
        self.lib.hetc_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self.lib.hetc_error.argtypes = [ctypes.c_void_p]
        self.lib.hetc_error.restype = ctypes.c_char_p
        code = self.lib.hetc_prepare()
        if code:
            raise TargetError(f"target {target}: the OS refused what the kernels need "
                              f"({os.strerror(code)})")
        # models with the same code share the loaded library, never a context
        self.free = [self._create()]  # pop and append are atomic under the GIL
        self.out_types = [(tuple(v.type.shape), v.type.dtype.storage) for v in graph.outputs]
        self.n_in = len(graph.inputs)

    def _create(self):
        ctx = self.lib.hetc_create(self.blob.ctypes.data)
        if not ctx:
            raise TargetError(f"target {self.target}: cannot allocate the model's activation "
                              f"arena ({self.arena_bytes:,} bytes)")
        return ctx

    def __call__(self, arrays):
        ins = [np.ascontiguousarray(a) for a in arrays]
        outs = [np.empty(s, d) for s, d in self.out_types]
        pin = (ctypes.c_void_p * max(self.n_in, 1))(*[a.ctypes.data for a in ins])
        pout = (ctypes.c_void_p * max(len(outs), 1))(*[o.ctypes.data for o in outs])
        try:
            ctx = self.free.pop()
        except IndexError:  # every context is in use by another thread
            ctx = self._create()
        try:
            status = self.lib.hetc_run(ctx, pin, pout)
            detail = self.lib.hetc_error(ctx).decode(errors="replace") if status else ""
        finally:
            self.free.append(ctx)
        if status:
            raise TargetError(f"target {self.target}: the generated code failed (status "
                              f"{status}): {detail or 'no detail'}")
        return outs

    def __del__(self):
        for ctx in getattr(self, "free", ()):
            self.lib.hetc_destroy(ctx)
        self.free = []


@register_executor("x86")
def _x86(artifact):
    from hetc.targets import get_target

    from .build import build

    avail = get_target("x86").availability()
    if not avail.ok:
        raise TargetError(f"cannot run target x86 on this host: {avail.detail}")
    lowered, srcs = packed(artifact)
    return Library(artifact.graph, lowered, build(srcs))
