"""Running one graph many times on calibration samples while compression
passes try other values for its named weights.

Compression passes need the activations each layer sees (statistics,
Hessians) and the end-to-end effect of compressing one layer or a whole
configuration (the per-layer search). `Evaluator` is the one interface for
that: the reference interpreter implements it here; the driver may hand the
passes a faster one built from a backend's generated code (x86), with the
interpreter kept as the checker of the compiled model's accuracy.

An evaluator's weight replacements take the layer's logical values (the
float array the interpreter would compute with, e.g. a quantized weight's
dequantized grid values), so every implementation computes the same
function; only float rounding differs.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from hetc.core.errors import HetcError
from hetc.ir.interpret import interpret
from hetc.ir.weights import aux_key


class Evaluator:
    """Runs `graph` on one sample at a time; returns its outputs and the
    arrays of `probes` (values of the graph, e.g. layer activations)."""

    what = "the reference interpreter"  # for the report

    def __init__(self, graph, probes=()):
        self.graph = graph
        self.probes = list(probes)

    def __call__(self, sample) -> tuple[list, list]:
        raise NotImplementedError

    def set_weight(self, name, values):
        """Later calls compute with `values` (logical, float) as weight `name`."""
        raise NotImplementedError

    def remember(self, sample) -> list:
        """Run `sample` and keep it for again(); its outputs (copies)."""
        self.kept = sample
        return [np.array(o) for o in self(sample)[0]]

    def again(self, changed=()) -> list:
        """The outputs for the remembered sample with the weights as they are
        now; `changed` names the weights that differ from when it was
        remembered, so that a build can resume where the first of them is
        read. The arrays are valid until the next call."""
        return self(self.kept)[0]

    @contextmanager
    def replaced(self, weights: dict):
        """Calls inside the block use `weights` ({name: logical values});
        the graph's own values come back after it."""
        try:
            for name, values in weights.items():
                self.set_weight(name, values)
            yield self
        finally:
            for name in weights:
                self.set_weight(name, None)

    def close(self):
        """Frees what the evaluator holds (a built library's buffers)."""


class Interpreted(Evaluator):
    """The reference interpreter; once a weight is replaced, on a copy of the
    graph with its own weight table (the arrays are shared, never written)."""

    def __init__(self, graph, probes=()):
        super().__init__(graph, probes)
        self._use(graph)
        self.original = {}

    def _use(self, graph):
        """Run `graph` (the graph or its copy), its probes found by name."""
        named = {v.name: v for op in graph.ops for v in op.outputs}
        named.update({v.name: v for v in graph.inputs})
        self.copy = graph
        self.inner = {named[v.name]: i for i, v in enumerate(self.probes)}

    def set_weight(self, name, values):
        if self.copy is self.graph:  # the first replacement: never in the caller's table
            self._use(self.graph.copy())
        store = self.copy.weights
        if aux_key(name, "scale") in store:
            raise HetcError(f"weight {name!r} is quantized: an evaluator replaces float "
                            f"weights only")
        if name not in self.original:
            self.original[name] = store[name]
        store[name] = (self.original[name] if values is None else
                       np.asarray(values).astype(self.original[name].dtype, copy=False))

    def __call__(self, sample):
        found = [None] * len(self.probes)

        def trace(op, value, array):
            i = self.inner.get(value)
            if i is not None:
                found[i] = array

        for v, a in zip(self.copy.inputs, sample):
            trace(None, v, np.asarray(a))
        outputs = interpret(self.copy, list(sample), trace=trace if self.inner else None)
        return outputs, found


def interpreted(graph, probes=(), runs=1) -> Evaluator:
    """The default evaluator factory (PassContext.evaluator): `runs` is how
    many calls the caller expects to make, for factories that weigh a
    build's cost against the interpreter's."""
    return Interpreted(graph, probes)
