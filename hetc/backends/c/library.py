"""The executor of a library built from backends/c's generated C: one ctypes
call per run through the entry points of emitter.py."""

from __future__ import annotations

import ctypes
import os

import numpy as np

from hetc.core.errors import TargetError


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
