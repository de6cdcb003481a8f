"""Graph, Op and Value: the in-memory IR.

A Graph holds SSA values, ops in topological order, named inputs and outputs
and a weight store. Ops are plain records (kind, inputs, outputs, attrs, and a
body Graph for `fused`). Types of op results come from the op table's
inference, so building a graph through `Graph.add` always yields typed values.
"""

from __future__ import annotations

import re

import numpy as np

from . import dtypes
from .ops import get_op
from .printer import print_graph
from .types import TensorType
from .weights import WeightStore

NAME_RE = re.compile(r"^[A-Za-z0-9_.$-]+$")


class Value:
    __slots__ = ("name", "type", "producer")

    def __init__(self, name: str, type: TensorType, producer: "Op | None" = None):
        self.name, self.type, self.producer = name, type, producer

    def __repr__(self):
        return f"%{self.name}: {self.type}"


class Op:
    __slots__ = ("kind", "inputs", "outputs", "attrs", "body")

    def __init__(self, kind, inputs, outputs, attrs=None, body=None):
        self.kind = kind
        self.inputs: list[Value] = list(inputs)
        self.outputs: list[Value] = list(outputs)
        self.attrs: dict = dict(attrs or {})
        self.body: Graph | None = body
        for v in self.outputs:
            v.producer = self

    @property
    def output(self) -> Value:
        return self.outputs[0]

    def __repr__(self):
        outs = ", ".join("%" + v.name for v in self.outputs)
        ins = ", ".join("%" + v.name for v in self.inputs)
        return f"<{outs} = {self.kind}({ins})>"


class Graph:
    def __init__(self, name="main", weights: WeightStore | None = None):
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.ops: list[Op] = []
        self.weights = weights if weights is not None else WeightStore()
        self.notes: list[str] = []  # what an importer wants the report to say
        self._names: set[str] = set()
        self._counter = 0

    # -- building ---------------------------------------------------------
    def fresh_name(self, hint: str | None = None) -> str:
        if hint:
            base = re.sub(r"[^A-Za-z0-9_.$-]", "_", hint)
            name, i = base, 1
            while name in self._names:
                name, i = f"{base}_{i}", i + 1
        else:
            while str(self._counter) in self._names:
                self._counter += 1
            name = str(self._counter)
        self._names.add(name)
        return name

    def claim_name(self, name: str):
        """Reserve an exact SSA name (as the parser does); duplicates are errors."""
        if name in self._names:
            raise ValueError(f"SSA name %{name} is defined twice")
        self._names.add(name)

    def rename(self, names: dict):
        """Give the values in `names` ({Value: name}) those names (made
        unique, in graph order) and every other value a name of its own that
        does not collide (an importer learns names only after building)."""
        values = list(self.inputs) + [v for op in self.ops for v in op.outputs]
        self._names, self._counter = set(), 0
        for v in values:
            if v in names:
                v.name = self.fresh_name(names[v])
        for v in values:
            if v not in names:
                v.name = self.fresh_name(v.name)

    def add_input(self, name: str, type: TensorType) -> Value:
        v = Value(self.fresh_name(name), type)
        self.inputs.append(v)
        return v

    def add(self, kind, inputs=(), attrs=None, name=None, body=None, result_types=None):
        """Append an op; returns its Value (or a list of Values for several)."""
        opdef = get_op(kind)
        attrs = opdef.complete_attrs(attrs or {})
        if result_types is None:
            result_types = opdef.infer([v.type for v in inputs], attrs, body)
        outs = [Value(self.fresh_name(name if len(result_types) == 1 or not name
                                      else f"{name}_{i}"), t)
                for i, t in enumerate(result_types)]
        self.ops.append(Op(kind, inputs, outs, attrs, body))
        return outs[0] if len(outs) == 1 else outs

    INLINE_MAX = 16  # constants up to this many elements print inline by default

    def const(self, array, name=None, type: TensorType | None = None, inline=False):
        """A constant: in the weight store under `name` (made unique), or
        written inline; inline=None decides by size (small ones inline)."""
        array = np.asarray(array)
        if type is None:
            type = TensorType(array.shape, dtypes.from_numpy(array.dtype))
        if inline is None:
            inline = array.size <= self.INLINE_MAX
        if inline:
            return self.add("const", [], {"value": array}, result_types=[type])
        key = name = name or "const"
        i = 1
        while key in self.weights and self.weights[key] is not array:
            key, i = f"{name}_{i}", i + 1
        self.weights[key] = array
        return self.add("const", [], {"name": key}, name=key, result_types=[type])

    # -- queries ------------------------------------------------------------
    def users(self) -> dict[Value, list[Op]]:
        uses: dict[Value, list[Op]] = {}
        for op in self.ops:
            for v in op.inputs:
                uses.setdefault(v, []).append(op)
        return uses

    def replace_uses(self, old: Value, new: Value):
        for op in self.ops:
            op.inputs = [new if v is old else v for v in op.inputs]
        self.outputs = [new if v is old else v for v in self.outputs]

    def graphs(self):
        """This graph and every fused body inside it."""
        yield self
        for op in self.ops:
            if op.body is not None:
                yield from op.body.graphs()

    def walk(self):
        """Every op, including those inside fused bodies, outermost first."""
        for op in self.ops:
            yield op
            if op.body is not None:
                yield from op.body.walk()

    def copy(self) -> "Graph":
        """An independent copy (through the text form); weight arrays are
        shared, so passes must store new arrays rather than write into them."""
        from .parser import parse  # the parser builds Graphs: a cycle at import time

        g = parse(print_graph(self), weights=WeightStore(self.weights), verify=False)
        g.notes = list(self.notes)
        return g

    def __eq__(self, other):
        if not isinstance(other, Graph):
            return NotImplemented
        if print_graph(self) != print_graph(other):
            return False
        if self.weights.keys() != other.weights.keys():
            return False
        return all(a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
                   for a, b in ((self.weights[k], other.weights[k]) for k in self.weights))

    __hash__ = object.__hash__

    def __str__(self):
        return print_graph(self)
