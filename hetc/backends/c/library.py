"""The executor of a library built from backends/c's generated C: one ctypes
call per run through the entry points of emitter.py."""

from __future__ import annotations

import ctypes
import math
import os

import numpy as np

from hetc.core.errors import TargetError
from hetc.runtime.buffers import aligned_empty


class Library:
    """A built model: one ctypes call per run, outputs allocated per call.
    `lowered` holds the packed weights; `path` is the built shared library.

    Safe to call from several threads at once: a call takes a context (the
    weights, an activation arena and its failure status) from a pool and
    puts it back, and makes one more when all are in use; so N threads
    calling together hold N arenas of `arena_bytes` each."""

    def __init__(self, graph, lowered, path, target="x86"):
        self.blob = lowered.blob  # kept alive: the contexts point into it
        self.slots = lowered.slots  # where each replaceable weight lies in it
        self.compiled = {}  # blob offset -> the compiled bytes of a replaced weight
        self.arena_bytes = lowered.arena_bytes
        self.lib = ctypes.CDLL(path)
        self.target = target
        self.lib.hetc_create.argtypes = [ctypes.c_void_p]
        self.lib.hetc_create.restype = ctypes.c_void_p
        self.lib.hetc_destroy.argtypes = [ctypes.c_void_p]
        self.lib.hetc_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self.lib.hetc_run_range.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                            ctypes.c_int, ctypes.c_int]
        self.lib.hetc_arena.argtypes = [ctypes.c_void_p]
        self.lib.hetc_arena.restype = ctypes.c_void_p
        self.lib.hetc_error.argtypes = [ctypes.c_void_p]
        self.lib.hetc_error.restype = ctypes.c_char_p
        code = self.lib.hetc_prepare()
        if code:
            raise TargetError(f"target {target}: the OS refused what the kernels need "
                              f"({os.strerror(code)})")
        # models with the same code share the loaded library, never a context
        self.free = [self._create()]  # pop and append are atomic under the GIL
        self.out_types = [(tuple(v.type.shape), v.type.dtype.storage) for v in graph.outputs]
        # outputs of 64 KB or more on a cache line; aligning a small one costs
        # more than its split lines (GPT-2-small's decode step has 25 outputs)
        self.out_made = [aligned_empty if math.prod(s) * np.dtype(d).itemsize >= 65536
                         else np.empty for s, d in self.out_types]
        self.n_in = len(graph.inputs)

    def _create(self):
        ctx = self.lib.hetc_create(self.blob.ctypes.data)
        if not ctx:
            raise TargetError(f"target {self.target}: cannot allocate the model's activation "
                              f"arena ({self.arena_bytes:,} bytes)")
        return ctx

    def set_weight(self, name, values):
        """Later calls compute with `values` (logical, as the interpreter
        holds weight `name`) in place of the compiled ones, or with the
        compiled ones again for None: re-packed into the blob, where every
        context reads it. Not while a call runs."""
        slots = self.slots.get(name)
        if slots is None:
            raise TargetError(f"target {self.target}: weight {name!r} cannot be replaced in "
                              f"this build (not a packed float weight)")
        for slot in slots:
            at = slice(slot.offset, slot.offset + slot.size)
            if slot.offset not in self.compiled:
                self.compiled[slot.offset] = self.blob[at].copy()
            if values is None:
                self.blob[at] = self.compiled[slot.offset]
                continue
            data = np.ascontiguousarray(slot.pack(np.asarray(values)))
            if data.nbytes != slot.size:
                raise TargetError(f"target {self.target}: weight {name!r} needs {slot.size} "
                                  f"bytes as packed, new values give {data.nbytes}")
            self.blob[at] = data.view(np.uint8).reshape(-1)

    def __call__(self, arrays, outs=None, steps=None, arena=None):
        """The outputs for `arrays` (the inputs), written into `outs` when
        given (arrays of the outputs' shapes and dtypes, reused across calls).

        `steps` (from, to) runs only those steps of the generated code, in
        one context; `arena(view)` is then called before them with that
        context's arena (a uint8 array) to restore or save what the steps
        read from earlier ones."""
        ins = [np.ascontiguousarray(a) for a in arrays]
        if outs is None:
            outs = [make(s, d) for make, (s, d) in zip(self.out_made, self.out_types)]
        pin = (ctypes.c_void_p * max(self.n_in, 1))(*[a.ctypes.data for a in ins])
        pout = (ctypes.c_void_p * max(len(outs), 1))(*[o.ctypes.data for o in outs])
        try:
            ctx = self.free.pop()
        except IndexError:  # every context is in use by another thread
            ctx = self._create()
        try:
            if steps is None:
                status = self.lib.hetc_run(ctx, pin, pout)
            else:
                if arena is not None:
                    arena(np.ctypeslib.as_array(
                        ctypes.cast(self.lib.hetc_arena(ctx), ctypes.POINTER(ctypes.c_ubyte)),
                        (max(self.arena_bytes, 1),)))
                status = self.lib.hetc_run_range(ctx, pin, pout, *steps)
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
