"""Module: what `hetc.compile` returns and `hetc.load` gives back."""

from __future__ import annotations

import os
import threading

import numpy as np

from hetc.core.errors import HetcError, UsageError
from hetc.core.progress import stderr_progress
from hetc.ir.mlir import to_mlir
from hetc.ir.relax import to_relax
from hetc.ir.printer import print_graph
from hetc.ir.report import Report

from . import artifact as artifact_io
from .artifact import Artifact
from .convert import is_torch, numpy_dtype, to_numpy, to_torch
from .generate import DecoderSpec, HostCache, StateCache, generate


class Module:
    """A compiled model: call it like the original.

    `module(*inputs)` takes torch tensors (returns torch tensors) or numpy
    arrays (returns numpy arrays); one output comes back bare, several as a
    tuple.
    """

    def __init__(self, artifact: Artifact, report: Report, load):
        self.artifact = artifact
        self.report = report
        self._load = load  # artifact -> executor: its backend's load
        self._run = None  # the executor, made on first call
        self._making = threading.Lock()  # one thread makes it, the others wait

    @property
    def graph(self):
        return self.artifact.graph

    @property
    def target(self) -> str:
        return self.artifact.target

    @property
    def ir(self) -> str:
        return print_graph(self.artifact.graph)

    def to_mlir(self, quant="dequantize") -> str:
        """The compiled graph as upstream MLIR text (linalg, sparse_tensor
        N:M encodings; quantized weights as codes and a dequantizing generic,
        quant="uniform": quant.uniform types, quant="decode": f32;
        docs/mlir.md)."""
        return to_mlir(self.artifact.graph, quant)

    def to_relax(self):
        """The compiled graph as a TVM Relax IRModule (compressed weights
        decoded to f32, said in a warning: docs/tvm.md); needs apache-tvm."""
        return to_relax(self.artifact.graph)

    @property
    def sources(self) -> dict:
        return dict(self.artifact.sources)

    @property
    def input_names(self):
        return [v.name for v in self.graph.inputs]

    def __call__(self, *inputs, **named):
        graph = self.graph
        if named:
            unknown = set(named) - set(self.input_names)
            if unknown or inputs:
                raise UsageError(f"pass inputs either by position or by name "
                                 f"({', '.join(self.input_names)}); unknown: "
                                 f"{', '.join(sorted(unknown)) or '-'}")
            missing = [n for n in self.input_names if n not in named]
            if missing:
                raise UsageError(f"missing inputs: {', '.join(missing)}")
            inputs = tuple(named[n] for n in self.input_names)
        if len(inputs) != len(graph.inputs):
            raise UsageError(f"this module takes {len(graph.inputs)} inputs "
                             f"({', '.join(self.input_names)}), got {len(inputs)}")
        as_torch = any(is_torch(x) for x in inputs)
        gpu_tensors = as_torch and all(is_torch(x) and x.is_cuda for x in inputs)
        if gpu_tensors and getattr(self._executor(), "takes_gpu_tensors", False):
            executor = self._executor()
            for v, x in zip(graph.inputs, inputs):  # the GPU's tensors, used where they are
                if tuple(x.shape) != v.type.shape or numpy_dtype(x.dtype) != v.type.dtype.storage:
                    raise UsageError(f"input '{v.name}' must be {v.type}, got a "
                                     f"{list(x.shape)} {x.dtype} tensor")
            outs = executor.call_gpu_tensors(list(inputs))
            return outs[0] if len(outs) == 1 else tuple(outs)
        try:
            arrays = [v.type.coerce(to_numpy(x), f"input '{v.name}'")
                      for v, x in zip(graph.inputs, inputs)]
        except ValueError as e:
            raise UsageError(f"{e} (inputs are fixed at compile time)") from None
        try:
            outs = self._executor()(arrays)  # built after the inputs are checked
        except MemoryError:
            raise HetcError(f"not enough memory to run @{graph.name} on target "
                            f"{self.target}") from None
        outs = [to_torch(o) if as_torch else np.asarray(o) for o in outs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def generate(self, input_ids, max_new_tokens=32, eos_token_id=None):
        """Greedy generation for a model compiled with decoder=...: the prompt
        followed by the new tokens, [1, T + new] (torch in, torch out), like
        transformers' generate with do_sample=False."""
        if "decoder" not in self.artifact.extra:
            raise UsageError("generate needs a model compiled with decoder=True (or "
                             "decoder={'max_context': ..., 'chunk': ...})")
        spec = DecoderSpec.from_dict(self.artifact.extra["decoder"])
        run = self._executor()
        ids = to_numpy(input_ids)
        dtype = self.graph.inputs[-1].type.dtype.storage  # the cache's dtype
        if spec.states:  # a state-space model's recurrent states
            cache = StateCache(lambda *arrays: run(list(arrays)), spec, dtype)
        elif hasattr(run, "decoder_cache"):  # kept where the kernels run (a GPU)
            cache = run.decoder_cache(spec)
        else:
            cache = HostCache(lambda *arrays: run(list(arrays)), spec, dtype)
        new = generate(cache, spec, ids, max_new_tokens, eos_token_id, stderr_progress)
        seq = np.concatenate([ids.reshape(1, -1).astype(np.int64), np.array([new], np.int64)],
                             axis=1)
        return to_torch(seq) if is_torch(input_ids) else seq

    def prepare(self):
        """Make the executor now (native code: build it) instead of on the
        first call; returns the module."""
        self._executor()
        return self

    def _executor(self):
        """The executor, made by the first call. Executors are safe to call
        from several threads at once (see docs/reliability.md)."""
        if self._run is None:
            with self._making:
                if self._run is None:
                    self._run = self._load(self.artifact)
        return self._run

    # -- persistence ---------------------------------------------------------------
    def save(self, folder: str):
        """Write manifest, IR, weights, report and sources to `folder`,
        replaced atomically (a failed save leaves no partial folder). An
        existing folder is replaced only if it is empty or holds a saved
        artifact; anything else is refused."""
        return artifact_io.save(os.fspath(folder), self.artifact, self.report.to_json(timings=False))

    def __repr__(self):
        ins = ", ".join(f"{v.name}: {v.type.text()}" for v in self.graph.inputs)
        return f"<hetc.Module @{self.graph.name} target={self.target} ({ins})>"
