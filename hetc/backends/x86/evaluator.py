"""An x86 build of a graph as an Evaluator (runtime/evaluator.py): the
compression passes' calibration runs at compiled speed instead of in the
numpy interpreter.

The graph is lowered with the probes as extra outputs (so rewrites for
speed keep them), built once per source (the build cache), and its float
weights are re-packed in place when a pass replaces them
(Library.set_weight)."""

from __future__ import annotations

import numpy as np

from hetc.backends.c.library import Library
from hetc.core.errors import HetcError, TargetError
from hetc.runtime.evaluator import Evaluator

from . import X86Emitter, build_model, can_build, sources, threads
from .emit import lower_graph


MEMORY = 2 << 30  # bytes of arena kept for resumed runs (remember)


class X86Evaluator(Evaluator):
    """`prepare(graph)` may rewrite the copy that is built (the probes are
    among its outputs, so they survive) for speed, as long as every named
    weight keeps its logical values and layout."""

    what = "an x86 build of the graph"

    def __init__(self, graph, probes=(), prepare=None):
        super().__init__(graph, probes)
        can_build("x86")
        inputs = set(graph.inputs)
        self.extra = [v for v in dict.fromkeys(self.probes) if v not in inputs]
        built = graph.copy()
        named = {v.name: v for op in built.ops for v in op.outputs}
        built.outputs = list(built.outputs) + [named[v.name] for v in self.extra]
        if prepare is not None:
            built = prepare(built) or built
        problems = X86Emitter.problems(built)
        if problems:
            raise TargetError(f"x86 cannot run this graph: {problems[0]}")
        self.lowered = lowered = lower_graph(built, threads())
        self.lib = Library(built, lowered, build_model(sources(lowered)))
        self.buffers = [np.empty(v.type.shape, v.type.dtype.storage) for v in self.extra]

    def set_weight(self, name, values):
        self.lib.set_weight(name, values)

    def _inputs(self, sample):
        try:
            return [v.type.coerce(a, f"input %{v.name}") for v, a in zip(self.graph.inputs, sample)]
        except ValueError as e:
            raise HetcError(str(e)) from None

    def _found(self, arrays):
        found = dict(zip(self.graph.inputs, arrays))
        found.update(zip(self.extra, self.buffers))
        return [found[v] for v in self.probes]

    def __call__(self, sample):
        arrays = self._inputs(sample)
        outs = [np.empty(v.type.shape, v.type.dtype.storage) for v in self.graph.outputs]
        self.lib(arrays, outs + self.buffers)  # probes: valid until the next call
        self.clean = 0  # the remembered run's outputs and probes are overwritten
        return outs, self._found(arrays)

    def remember(self, sample, budget=MEMORY):
        """Run `sample` step range by step range, keeping at each step where
        a replaceable weight is first read (as many as `budget` bytes allow)
        the arena buffers later steps read, and every output."""
        lowered = self.lowered
        first = {name: min(s.step for s in slots) for name, slots in lowered.slots.items()}
        starts = sorted({s for s in first.values() if s > 0})
        need = {r: [(off, size) for made, last, off, size in lowered.lifetimes if made < r <= last]
                for r in starts}
        while starts and sum(size for r in starts for _, size in need[r]) > budget:
            starts = starts[1::2]  # resume from fewer places, further back
        self.kept = self._inputs(sample)
        self.first, self.starts, self.saved = first, starts, {}
        self.outs = [np.empty(v.type.shape, v.type.dtype.storage) for v in self.graph.outputs]
        edges = [0] + starts + [lowered.run_steps]
        for a, b in zip(edges, edges[1:]):
            def save(arena, a=a):
                if a:
                    self.saved[a] = [(off, arena[off:off + size].copy()) for off, size in need[a]]
            self.lib(self.kept, self.outs + self.buffers, (a, b), save)
        self.reference = [np.array(o) for o in self.outs + self.buffers]
        self.clean = lowered.run_steps  # outputs of steps before this are the reference's
        return self.reference[:len(self.outs)]

    def again(self, changed=()):
        read = min((self.first.get(name, 0) for name in changed), default=0)
        start = max((r for r in self.starts if r <= read), default=0)
        everything = self.outs + self.buffers
        for j, step in self.lowered.written.items():
            if self.clean <= step < start:
                everything[j][...] = self.reference[j]

        def restore(arena):
            for off, data in self.saved.get(start, ()):
                arena[off:off + len(data)] = data
        self.lib(self.kept, everything, (start, self.lowered.run_steps), restore)
        self.clean = start
        return self.outs

    def close(self):
        self.lib = self.buffers = self.saved = self.reference = None
