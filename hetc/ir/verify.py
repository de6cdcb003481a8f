"""The verifier: is a Graph well-formed, and does its data obey its types?

Every finding names the graph, the op's position and kind, its results and
what is wrong, e.g.
  @mlp op #3 (%2 = linear): linear input [1, 5] does not match weight [8, 4]
"""

from __future__ import annotations

import math

import numpy as np

from hetc.core.errors import VerifyError
from hetc.ir.interpret import load_const

from . import dtypes
from .codebooks import get
from .graph import Graph, Op
from .ops import InferError, get_op
from .types import MAX_ELEMENTS
from .weights import aux_key, key_label


def _where(graph: Graph, index: int, op: Op) -> str:
    outs = ", ".join("%" + v.name for v in op.outputs)
    return f"@{graph.name} op #{index} ({outs} = {op.kind})"


def verify(graph: Graph, where: str | None = None):
    """Raise VerifyError with every problem found (the first few)."""
    problems = list(check(graph))
    if problems:
        head = f"{where}: " if where else ""
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise VerifyError(head + "IR verification failed:\n  " + "\n  ".join(problems[:10]) + more)


MAX_RANK = 32  # numpy stops at 64; no model comes near


def _size_problem(t):
    if t.rank > MAX_RANK:
        return f"rank {t.rank} is more than the {MAX_RANK} dimensions hetc handles"
    if any(d < 0 for d in t.shape):
        return f"negative dimension in {list(t.shape)}"
    if math.prod(max(d, 1) for d in t.shape) > MAX_ELEMENTS:  # zero dims hide none of it
        return f"shape {list(t.shape)} is larger than the 2**48 elements hetc handles"
    return None


def check(graph: Graph, is_body=False):
    """Yield one message per problem."""
    defined = set()
    names = set()
    for v in graph.inputs:
        if _size_problem(v.type):
            yield f"@{graph.name}: input %{v.name}: {_size_problem(v.type)}"
        if v.name in names:
            yield f"@{graph.name}: input %{v.name} is defined twice"
        if v.type.encodings and not is_body:  # a fused body's inputs mirror its operands
            yield (f"@{graph.name}: input %{v.name}: encodings may only stand on constants "
                   f"(got {v.type.text()})")
        names.add(v.name)
        defined.add(v)
    for i, op in enumerate(graph.ops):
        where = _where(graph, i, op)
        for v in op.inputs:
            if v not in defined:
                yield f"{where}: operand %{v.name} is not defined before use in this graph"
        yield from (f"{where}: {p}" for p in _check_op(graph, op))
        for v in op.outputs:
            if _size_problem(v.type):
                yield f"{where}: %{v.name}: {_size_problem(v.type)}"
            if v.name in names:
                yield f"{where}: %{v.name} is defined twice"
            if v.producer is not op:
                yield f"{where}: %{v.name} does not record this op as its producer"
            names.add(v.name)
            defined.add(v)
        if op.body is not None:
            if op.body.weights is not graph.weights:
                yield f"{where}: body graph does not share the weight store of @{graph.name}"
            yield from check(op.body, is_body=True)
    for v in graph.outputs:
        if v not in defined:
            yield f"@{graph.name}: returned value %{v.name} is not defined"


def _check_op(graph: Graph, op: Op):
    if op.kind == "const":
        yield from _check_const(graph, op)
        return
    try:
        opdef = get_op(op.kind)
        if opdef.complete_attrs(op.attrs) != op.attrs:
            yield "attributes are not in canonical form (missing defaults or wrong types)"
        inferred = opdef.infer([v.type for v in op.inputs], op.attrs, op.body)
    except InferError as e:
        yield str(e)
        return
    declared = [v.type for v in op.outputs]
    if inferred != declared:
        yield ("declared " + ", ".join(t.text() for t in declared)
               + " but the operands give " + ", ".join(t.text() for t in inferred))
    for v in op.outputs:
        if v.type.encodings:
            yield f"%{v.name}: encodings may only stand on constants (got {v.type.text()})"


def _check_const(graph: Graph, op: Op):
    if len(op.outputs) != 1 or op.inputs:
        yield "const takes no operands and has one result"
        return
    t = op.output.type
    if ("name" in op.attrs) == ("value" in op.attrs) or set(op.attrs) - {"name", "value"}:
        yield "const needs exactly one attribute: a weight name or an inline value"
        return
    if "value" in op.attrs:
        data = op.attrs["value"]
        label = "inline value"
    else:
        name = op.attrs["name"]
        label = f"weight @{name}"
        if name not in graph.weights:
            yield f"no weight named '{name}' in the weight store"
            return
        data = graph.weights[name]
    if tuple(data.shape) != t.shape:
        yield f"{label} has shape {list(data.shape)}, type says {list(t.shape)}"
        return
    if data.dtype != t.dtype.storage:
        yield f"{label} has numpy dtype {data.dtype}, type {t.dtype} needs {t.dtype.storage}"
        return
    if t.dtype.is_int and t.dtype.bits < 8 * data.dtype.itemsize and data.size:
        lo, hi = t.dtype.int_range  # e.g. i3 stored one per byte
        if data.min() < lo or data.max() > hi:
            yield f"{label} holds values {data.min()}..{data.max()} outside {t.dtype} [{lo}, {hi}]"
            return
    q = t.quant
    if q is not None:
        problem = q.problem(t.shape, t.dtype)
        if problem:
            yield problem
            return
        if "value" in op.attrs:
            yield "quantized constants must be named weights (their scales live in the store)"
            return
        yield from _check_quant_params(graph, op.attrs["name"], t)
    nm = t.nm
    if nm is not None:
        logical = load_const(op, graph)
        problem = nm.problem(t.shape, logical)
        if problem:
            yield f"{label} breaks {nm.text()}: {problem}"


def _check_quant_params(graph, name, t):
    q = t.quant
    want = q.param_shape(t.shape)
    params = [("scale", q.scale)] + ([] if q.symmetric else [("zero", t.dtype)]) + \
        ([("variant", dtypes.u8)] if q.codebook else [])
    for kind, dt in params:
        key = aux_key(name, kind)
        arr = graph.weights.get(key)
        if arr is None:
            yield f"{q.text()} needs the array '{key_label(key)}' in the weight store"
        elif tuple(arr.shape) != want or arr.dtype != dt.storage:
            yield (f"'{key_label(key)}' must be {list(want)} of {dt}, got {list(arr.shape)} of "
                   f"{np.dtype(arr.dtype)}")
    if q.symmetric and aux_key(name, "zero") in graph.weights:
        yield f"{q.text()} is symmetric but the store has '{key_label(aux_key(name, 'zero'))}'"
    variant = graph.weights.get(aux_key(name, "variant"))
    if q.codebook and variant is not None and variant.size:
        count = len(get(q.codebook).variants)
        if variant.max() >= count:
            yield (f"'{key_label(aux_key(name, 'variant'))}' holds index {variant.max()}, "
                   f"{q.codebook} has {count}")
