"""The x86 backend: the whole graph as one generated C function over
hand-written kernels (kernels.h), built into a shared library with the system
C compiler and called once per run through ctypes.

Ops and dtypes it cannot lower yet raise a TargetError naming them at
compile time (emit.check_supported).
"""

from __future__ import annotations

import ctypes
import os

import numpy as np

from hetc.runtime.artifact import Artifact
from hetc.runtime.executors import register_executor

from .emit import lower_graph

KERNELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels.h")


def threads() -> int:
    """Threads for the kernels: HETC_THREADS, else the cores this process may use."""
    env = os.environ.get("HETC_THREADS")
    return int(env) if env else len(os.sched_getaffinity(0))


def _sources(lowered):
    with open(KERNELS) as f:
        return {"model.c": lowered.source, "kernels.h": f.read()}


def lower(graph, target) -> Artifact:
    from .build import FLAGS

    lowered = lower_graph(graph, threads())
    artifact = Artifact(target.name, graph, _sources(lowered),
                        build={"flags": FLAGS,
                               "entry": "hetc_create(weights) -> ctx; hetc_run(ctx, in, out)"},
                        extra={"arena_bytes": lowered.arena_bytes,
                               "weights_bytes": int(lowered.blob.nbytes),
                               "kernels": lowered.kernels})
    artifact.lowered = lowered  # the packed weights, for the executor (not saved: re-packed)
    return artifact


class Library:
    """A built model: one ctypes call per run, outputs allocated per call."""

    def __init__(self, artifact):
        from hetc.errors import TargetError
        from hetc.targets import get_target

        from .build import build

        avail = get_target("x86").availability()
        if not avail.ok:
            raise TargetError(f"cannot run target x86 on this host: {avail.detail}")

        lowered = getattr(artifact, "lowered", None) or lower_graph(artifact.graph, threads())
        self.blob = lowered.blob  # kept alive: the context points into it
        self.lib = ctypes.CDLL(build(_sources(lowered)))
        self.lib.hetc_create.argtypes = [ctypes.c_void_p]
        self.lib.hetc_create.restype = ctypes.c_void_p
        self.lib.hetc_destroy.argtypes = [ctypes.c_void_p]
        self.lib.hetc_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        # models with the same code share the loaded library, never a context
        self.ctx = self.lib.hetc_create(self.blob.ctypes.data)
        if not self.ctx:
            raise MemoryError("hetc_create could not allocate the activation arena")
        graph = artifact.graph
        self.out_types = [(tuple(v.type.shape), v.type.dtype.storage) for v in graph.outputs]
        self.n_in = len(graph.inputs)

    def __call__(self, arrays):
        ins = [np.ascontiguousarray(a) for a in arrays]
        outs = [np.empty(s, d) for s, d in self.out_types]
        pin = (ctypes.c_void_p * max(self.n_in, 1))(*[a.ctypes.data for a in ins])
        pout = (ctypes.c_void_p * max(len(outs), 1))(*[o.ctypes.data for o in outs])
        self.lib.hetc_run(self.ctx, pin, pout)
        return outs

    def __del__(self):
        if getattr(self, "ctx", None):
            self.lib.hetc_destroy(self.ctx)
            self.ctx = None


@register_executor("x86")
def _x86(artifact):
    return Library(artifact)
