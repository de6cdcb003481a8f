"""The MLIR export of the IR's typed elementwise ops, casts, reductions,
arg-reductions, running sums, indexing (gather, gather_elements,
embedding), padding, average pooling and log-softmax (hetc/ir/mlir.py holds
the writer, the layers and the composite ops).

Each op is a `linalg.generic` (or a few) whose body is `arith`/`math`,
chosen by its elements' class: float, signed integer or bool (i1), with the
interpreter's rules spelled out where MLIR's ops differ: integer division
and remainder by 0 give 0, `mod` takes the divisor's sign, shifts by a
count outside [0, bits) give 0 (or -1 for a negative value shifted right),
arg-reductions pick the first (or last) of ties with NaN as the extreme,
indexing reads `tensor.extract` with negative indices counted from the end.
"""

from __future__ import annotations

import re

import numpy as np

from hetc.core.errors import TargetError
from hetc.ir.mlir import (GELU, UNARY, _body, _broadcast_map, _dims, _f32, _literal, _map,
                          _operand, _padded, _reduce_last, _reshaped, _rowwise, element,
                          element_class, lowers, pool_geometry, ttype, vtype)

INF = {"f32": ("0x7F800000", "0xFF800000"), "f16": ("0x7C00", "0xFC00"),
       "bf16": ("0x7F80", "0xFF80"), "f64": ("0x7FF0000000000000", "0xFFF0000000000000")}
MATH = {"floor": "math.floor", "ceil": "math.ceil", "round": "math.roundeven",
        **{k: f"math.{k}" for k in ("sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh",
                                    "asinh", "acosh", "atanh")}}
CMP = {"equal": ("oeq", "eq"), "less": ("olt", "slt"), "greater": ("ogt", "sgt"),
       "less_equal": ("ole", "sle"), "greater_equal": ("oge", "sge")}


def _refuse(op, why):
    raise TargetError(f"to_mlir: {op.kind} %{op.outputs[0].name}: {why}")


def _elementwise(w, op, lines, operands=None):
    """op's result as one generic over its (broadcast) operands: `lines(args,
    T)` gives the body (args: the block's arguments, T: the first operand's
    element type) ending in its result, or just the argument to yield."""
    operands = op.inputs if operands is None else operands
    y = op.output
    rank, shape = y.type.rank, y.type.shape
    maps = [_broadcast_map(v.type.shape, rank, shape) for v in operands] + \
        [_map(rank, _dims(rank))]
    T = element(operands[0])
    w.names[y] = w.generic([(_operand(w, v), vtype(v)) for v in operands], shape, maps,
                           lambda a: lines(a, T), out_element=element(y))


def _lines(templates, **operands):
    """Numbered body lines (see mlir._body), or the one operand to yield as it is."""
    return _body(templates, **operands) if templates else [operands["x"]]


# -- unary ---------------------------------------------------------------------------

@lowers(*UNARY, "gelu", *MATH, "reciprocal", "sign", "isnan", "isinf", "logical_not",
        "bitwise_not")
def _unary(w, op):
    x = op.inputs[0]
    c = element_class(x)
    kind = op.kind
    if c == "f":
        if kind in UNARY or kind == "gelu":
            table = GELU["tanh" if op.attrs.get("approximate") == "tanh" else "none"] \
                if kind == "gelu" else UNARY[kind]
            body = [line.replace(": f32", ": {T}") for line in table]
        elif kind in MATH:
            body = [f"{MATH[kind]} {{x}} : {{T}}"]
        else:
            body = [t.replace("{INF}", INF.get(element(x), ("", ""))[0])
                    .replace("{NEGINF}", INF.get(element(x), ("", ""))[1])
                    for t in _float_unary(op)]
    elif kind in ("neg", "abs", "relu", "sign", "bitwise_not") and c == "s":
        body = {"neg": ["arith.constant 0 : {T}", "arith.subi %t0, {x} : {T}"],
                "abs": ["math.absi {x} : {T}"],
                "relu": ["arith.constant 0 : {T}", "arith.maxsi {x}, %t0 : {T}"],
                "sign": ["arith.constant 0 : {T}", "arith.constant 1 : {T}",
                         "arith.constant -1 : {T}", "arith.cmpi sgt, {x}, %t0 : {T}",
                         "arith.cmpi slt, {x}, %t0 : {T}", "arith.select %t4, %t2, %t0 : {T}",
                         "arith.select %t3, %t1, %t5 : {T}"],
                "bitwise_not": ["arith.constant -1 : {T}", "arith.xori {x}, %t0 : {T}"]}[kind]
    elif kind in ("logical_not", "bitwise_not") and c == "b":
        body = ["arith.constant true", "arith.xori {x}, %t0 : i1"]
    else:
        _refuse(op, f"{x.type.value_dtype} values (not exported)")
    _elementwise(w, op, lambda a, T: _lines([t.replace("{T}", T) for t in body], x=a[0]))


def _float_unary(op):
    kind = op.kind
    if kind == "reciprocal":
        return ["arith.constant 1.0 : {T}", "arith.divf %t0, {x} : {T}"]
    if kind == "sign":  # 0, -0 and NaN are themselves
        return ["arith.constant 0.0 : {T}", "arith.constant 1.0 : {T}",
                "arith.constant -1.0 : {T}", "arith.cmpf ogt, {x}, %t0 : {T}",
                "arith.cmpf olt, {x}, %t0 : {T}", "arith.select %t4, %t2, {x} : {T}",
                "arith.select %t3, %t1, %t5 : {T}"]
    if kind == "isnan":
        return ["arith.cmpf uno, {x}, {x} : {T}"]
    if kind == "isinf":
        pos, neg = op.attrs["detect_positive"], op.attrs["detect_negative"]
        if not (pos or neg):
            return ["arith.constant false"]
        lines = ["arith.constant {INF} : {T}", "arith.cmpf oeq, {x}, %t0 : {T}",
                 "arith.constant {NEGINF} : {T}", "arith.cmpf oeq, {x}, %t2 : {T}"]
        return lines + (["arith.ori %t1, %t3 : i1"] if pos and neg else
                        ["arith.ori %t1, %t1 : i1"] if pos else ["arith.ori %t3, %t3 : i1"])
    _refuse(op, "float values (not exported)")


# -- binary ----------------------------------------------------------------------------

FLOAT_BINARY = {"add": "arith.addf", "sub": "arith.subf", "mul": "arith.mulf",
                "div": "arith.divf", "maximum": "arith.maximumf", "minimum": "arith.minimumf",
                "pow": "math.powf", "fmod": "arith.remf"}
INT_BINARY = {"add": "arith.addi", "sub": "arith.subi", "mul": "arith.muli",
              "maximum": "arith.maxsi", "minimum": "arith.minsi", "bitwise_and": "arith.andi",
              "bitwise_or": "arith.ori", "bitwise_xor": "arith.xori"}
BOOL_BINARY = {"logical_and": "arith.andi", "logical_or": "arith.ori",
               "logical_xor": "arith.xori", "bitwise_and": "arith.andi",
               "bitwise_or": "arith.ori", "bitwise_xor": "arith.xori",
               "maximum": "arith.ori", "minimum": "arith.andi"}
# integer division and remainder: a divisor of 0 gives 0 (the interpreter's rule)
BY_ZERO = ["arith.constant 0 : {T}", "arith.constant 1 : {T}", "arith.cmpi eq, {b}, %t0 : {T}",
           "arith.select %t2, %t1, {b} : {T}"]


@lowers("add", "sub", "mul", "div", "maximum", "minimum", "pow", "mod", "fmod",
        "logical_and", "logical_or", "logical_xor", "bitwise_and", "bitwise_or",
        "bitwise_xor", "shift_left", "shift_right", *CMP)
def _binary(w, op):
    c = element_class(op.inputs[0])
    kind = op.kind
    if kind in CMP:
        pred = CMP[kind][0] if c == "f" else CMP[kind][1] if c == "s" else \
            CMP[kind][1].replace("s", "u")
        body = [f"arith.{'cmpf' if c == 'f' else 'cmpi'} {pred}, {{a}}, {{b}} : {{T}}"]
    elif c == "f" and kind in FLOAT_BINARY:
        body = [f"{FLOAT_BINARY[kind]} {{a}}, {{b}} : {{T}}"]
    elif c == "f" and kind == "mod":  # fmod, plus the divisor where the signs differ
        body = ["arith.remf {a}, {b} : {T}", "arith.constant 0.0 : {T}",
                "arith.cmpf one, %t0, %t1 : {T}", "arith.cmpf olt, %t0, %t1 : {T}",
                "arith.cmpf olt, {b}, %t1 : {T}", "arith.xori %t3, %t4 : i1",
                "arith.andi %t2, %t5 : i1", "arith.addf %t0, {b} : {T}",
                "arith.select %t6, %t7, %t0 : {T}"]
    elif c == "s" and kind in INT_BINARY:
        body = [f"{INT_BINARY[kind]} {{a}}, {{b}} : {{T}}"]
    elif c == "s" and kind in ("div", "fmod", "mod"):
        op_name = "arith.divsi" if kind == "div" else "arith.remsi"
        body = BY_ZERO + [f"{op_name} {{a}}, %t3 : {{T}}"]
        if kind == "mod":  # the divisor's sign
            body += ["arith.cmpi ne, %t4, %t0 : {T}", "arith.cmpi slt, %t4, %t0 : {T}",
                     "arith.cmpi slt, {b}, %t0 : {T}", "arith.xori %t6, %t7 : i1",
                     "arith.andi %t5, %t8 : i1", "arith.addi %t4, {b} : {T}",
                     "arith.select %t9, %t10, %t4 : {T}"]
        body += [f"arith.select %t2, %t0, %t{len(body) - 1} : {{T}}"]
    elif c == "s" and kind in ("shift_left", "shift_right"):
        bits = op.inputs[0].type.value_dtype.bits
        shift = "arith.shli" if kind == "shift_left" else "arith.shrsi"
        # counts outside [0, bits) shift everything out: 0, or -1 for a negative value
        # shifted right
        body = ["arith.constant 0 : {T}", f"arith.constant {bits} : {{T}}",
                "arith.cmpi sge, {b}, %t0 : {T}", "arith.cmpi slt, {b}, %t1 : {T}",
                "arith.andi %t2, %t3 : i1", "arith.select %t4, {b}, %t0 : {T}",
                f"{shift} {{a}}, %t5 : {{T}}", "arith.constant -1 : {T}",
                "arith.cmpi slt, {a}, %t0 : {T}", "arith.select %t8, %t7, %t0 : {T}",
                "arith.select %t4, %t6, %t0 : {T}" if kind == "shift_left" else
                "arith.select %t4, %t6, %t9 : {T}"]
    elif c == "b" and kind in BOOL_BINARY:
        body = [f"{BOOL_BINARY[kind]} {{a}}, {{b}} : {{T}}"]
    else:
        _refuse(op, f"{op.inputs[0].type.value_dtype} operands (not exported)")
    _elementwise(w, op, lambda a, T: _body([t.replace("{T}", T) for t in body],
                                           a=a[0], b=a[1]))


@lowers("where")
def _where(w, op):
    _elementwise(w, op, lambda a, T: _body([f"arith.select {{c}}, {{a}}, {{b}} : "
                                            f"{element(op.output)}"],
                                           c=a[0], a=a[1], b=a[2]))


@lowers("cast")
def _cast(w, op):
    x, y = op.inputs[0], op.output
    fc, tc = element_class(x), element_class(y)
    fe, te = element(x), element(y)
    fb, tb = x.type.value_dtype.bits, y.type.value_dtype.bits
    if fe == te:
        body = []
    elif fc == "f" and tc == "f":  # through f32 between the 16-bit formats
        body = (["arith.extf {x} : {F} to {R}"] if fb < tb else
                ["arith.truncf {x} : {F} to {R}"] if fb > tb else
                ["arith.extf {x} : {F} to f32", "arith.truncf %t0 : f32 to {R}"])
    elif tc == "b":  # nonzero (and NaN) is true
        body = ["arith.constant 0.0 : {F}" if fc == "f" else "arith.constant 0 : {F}",
                "arith.cmpf une, {x}, %t0 : {F}" if fc == "f" else "arith.cmpi ne, {x}, %t0 : {F}"]
    elif fc == "f":
        body = ["arith.fptosi {x} : {F} to {R}"]
    elif tc == "f":
        body = ["arith.uitofp {x} : {F} to {R}" if fc == "b" else "arith.sitofp {x} : {F} to {R}"]
    else:
        body = ["arith.extui {x} : {F} to {R}" if fc == "b" else
                "arith.extsi {x} : {F} to {R}" if fb < tb else "arith.trunci {x} : {F} to {R}"]
    _elementwise(w, op, lambda a, T: _lines([t.replace("{F}", fe).replace("{R}", te)
                                             for t in body], x=a[0]))


# -- reductions --------------------------------------------------------------------------

def _extreme(v, high):
    """The start of a max (high=False) or min reduction: -inf/+inf, or the integer limits."""
    e, c = element(v), element_class(v)
    if c == "f":
        return INF[e][0 if high else 1]
    if c == "b":
        return "1" if high else "0"
    bits = v.type.value_dtype.bits
    return str((1 << (bits - 1)) - 1 if high else -(1 << (bits - 1)))


def _reduce_to(w, x, axes, combine, start, out_element=None):
    """x reduced over `axes` (kept axes in order): `combine(acc, v)` lines."""
    rank, shape = x.type.rank, x.type.shape
    kept = [i for i in range(rank) if i not in axes]
    out = [shape[i] for i in kept]
    e = out_element or element(x)
    init = w.filled(out, start, e)
    return w.generic([(_operand(w, x), vtype(x))], out,
                     [_map(rank, _dims(rank)), _map(rank, [f"d{i}" for i in kept])],
                     lambda a: combine(a[1], a[0]), reductions=tuple(axes), init=init,
                     out_element=e), out


@lowers("reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod")
def _reduce(w, op):
    x, y = op.inputs[0], op.output
    c, T = element_class(x), element(x)
    axes = sorted({a % x.type.rank for a in op.attrs["axes"]}) or list(range(x.type.rank))
    kind = op.kind
    if c == "b" and kind not in ("reduce_max", "reduce_min") or \
            (kind == "reduce_mean" and c != "f"):
        _refuse(op, f"{x.type.value_dtype} values (not exported)")
    if kind in ("reduce_sum", "reduce_mean"):
        combine, start = ("arith.addf" if c == "f" else "arith.addi"), \
            ("0.0" if c == "f" else "0")
    elif kind == "reduce_prod":
        combine, start = ("arith.mulf" if c == "f" else "arith.muli"), \
            ("1.0" if c == "f" else "1")
    else:
        high = kind == "reduce_min"
        combine = {"f": "arith.minimumf" if high else "arith.maximumf",
                   "s": "arith.minsi" if high else "arith.maxsi",
                   "b": "arith.andi" if high else "arith.ori"}[c]
        start = _extreme(x, high)
    out, shape = _reduce_to(w, x, axes, lambda acc, v: [f"%t0 = {combine} {acc}, {v} : {T}",
                                                        "%t0"], start)
    if kind == "reduce_mean":  # over no elements: 0 / 0, NaN
        count = float(np.prod([x.type.shape[a] for a in axes]))
        ident = _map(len(shape), _dims(len(shape)))
        out = w.generic([(out, ttype(shape, T))], shape, [ident, ident],
                        lambda a: _body([f"arith.constant {count!r} : {T}",
                                         f"arith.divf {{x}}, %t0 : {T}"], x=a[0]),
                        out_element=T)
    w.names[y] = _reshaped(w, out, shape, y.type.shape, T)


@lowers("argmax", "argmin")
def _arg_reduce(w, op):
    """The extreme along the axis (NaN the most extreme), then the first (or
    last) position holding it."""
    x, y = op.inputs[0], op.output
    c, T = element_class(x), element(x)
    if c == "b":
        _refuse(op, "bool values (not exported)")
    rank, ax = x.type.rank, op.attrs["axis"] % x.type.rank
    high = op.kind == "argmin"
    combine = ("arith.minimumf" if high else "arith.maximumf") if c == "f" else \
        ("arith.minsi" if high else "arith.maxsi")
    best, shape = _reduce_to(w, x, [ax], lambda acc, v: [f"%t0 = {combine} {acc}, {v} : {T}",
                                                         "%t0"], _extreme(x, high))
    last = op.attrs["select_last_index"]
    n = x.type.shape[ax]
    kept = [f"d{i}" for i in range(rank) if i != ax]
    init = w.filled(shape, "-1" if last else str(n), "i64")
    same = ([f"arith.cmpf oeq, {{x}}, {{m}} : {T}", f"arith.cmpf uno, {{x}}, {{x}} : {T}",
             f"arith.cmpf uno, {{m}}, {{m}} : {T}", "arith.andi %t1, %t2 : i1",
             "arith.ori %t0, %t3 : i1"] if c == "f" else
            [f"arith.cmpi eq, {{x}}, {{m}} : {T}"])
    pick = "arith.maxsi" if last else "arith.minsi"
    k = len(same)

    def body(a):
        return _body(same + [f"linalg.index {ax} : index", f"arith.index_cast %t{k} : index to i64",
                             f"arith.constant {-1 if last else n} : i64",
                             f"arith.select %t{k - 1}, %t{k + 1}, %t{k + 2} : i64",
                             f"{pick} {{acc}}, %t{k + 3} : i64"], x=a[0], m=a[1], acc=a[2])
    index = w.generic([(_operand(w, x), vtype(x)), (best, ttype(shape, T))], shape,
                      [_map(rank, _dims(rank)), _map(rank, kept), _map(rank, kept)],
                      body, reductions=(ax,), init=init, out_element="i64")
    w.names[y] = _reshaped(w, index, shape, y.type.shape, "i64")


@lowers("cumsum")
def _cumsum(w, op):
    """Running sums as a reduction over a second loop j along the axis,
    adding x[j] where j <= i (j < i exclusive; j >= i, j > i reversed)."""
    x, y = op.inputs[0], op.output
    c, T = element_class(x), element(x)
    if c == "b":
        _refuse(op, "bool values (not exported)")
    rank, ax = x.type.rank, op.attrs["axis"] % x.type.rank
    pred = {(False, False): "ule", (False, True): "ult", (True, False): "uge",
            (True, True): "ugt"}[(op.attrs["reverse"], op.attrs["exclusive"])]
    add, zero = ("arith.addf", "0.0") if c == "f" else ("arith.addi", "0")
    read = [f"d{rank}" if i == ax else f"d{i}" for i in range(rank)]
    init = w.filled(y.type.shape, zero, T)
    w.names[y] = w.generic(
        [(_operand(w, x), vtype(x))], y.type.shape,
        [_map(rank + 1, read), _map(rank + 1, _dims(rank))],
        lambda a: _body([f"linalg.index {rank} : index", f"linalg.index {ax} : index",
                         f"arith.cmpi {pred}, %t0, %t1 : index", f"arith.constant {zero} : {T}",
                         f"arith.select %t2, {{x}}, %t3 : {T}", f"{add} {{acc}}, %t4 : {T}"],
                        x=a[0], acc=a[1]),
        reductions=(rank,), init=init, out_element=T)


def _better(c, T, largest, a, b):
    """Lines (numbered from %t0, the last the result) of `a` before `b` in
    topk's order: larger (smaller), NaN above every number."""
    if c != "f":
        return [f"arith.cmpi {'sgt' if largest else 'slt'}, {a}, {b} : {T}"]
    nan, number = (a, b) if largest else (b, a)
    return [f"arith.cmpf {'ogt' if largest else 'olt'}, {a}, {b} : {T}",
            f"arith.cmpf uno, {nan}, {nan} : {T}", f"arith.cmpf ord, {number}, {number} : {T}",
            "arith.andi %t1, %t2 : i1", "arith.ori %t0, %t3 : i1"]


def _renumbered(lines, start):
    """Body lines whose temporaries %tN become %t(N + start)."""
    return [re.sub(r"%t(\d+)", lambda m: f"%t{int(m.group(1)) + start}", line) for line in lines]


@lowers("topk")
def _topk(w, op):
    """Sorting as counting (O(n^2) compares, no loops beyond linalg's): each
    element's place is the number of elements before it (better, or as good
    at a lower index), a reduction over a second loop j along the axis; then
    output position p takes the index and the value of the element whose
    place is p (selects, so values are exact), reductions over the axis."""
    x = op.inputs[0]
    values, indices = op.outputs
    c, T = element_class(x), element(x)
    if c == "b":
        _refuse(op, "bool values (not exported)")
    rank, ax, largest = x.type.rank, op.attrs["axis"] % x.type.rank, op.attrs["largest"]
    shape, xs = x.type.shape, _operand(w, x)
    other = [f"d{rank}" if i == ax else f"d{i}" for i in range(rank)]
    j_first = _better(c, T, largest, "{j}", "{i}")
    i_first = _renumbered(_better(c, T, largest, "{i}", "{j}"), len(j_first))
    n = len(j_first) + len(i_first)
    # j before i: j better; or, at j < i, i not better (as good)
    place = _body(j_first + i_first + [
        f"linalg.index {rank} : index", f"linalg.index {ax} : index",
        f"arith.cmpi ult, %t{n}, %t{n + 1} : index", "arith.constant true",
        f"arith.xori %t{n - 1}, %t{n + 3} : i1",
        f"arith.select %t{n + 2}, %t{n + 4}, %t{len(j_first) - 1} : i1",
        f"arith.extui %t{n + 5} : i1 to i64", f"arith.addi {{acc}}, %t{n + 6} : i64"],
        i="{i}", j="{j}", acc="{acc}")
    places = w.generic([(xs, vtype(x)), (xs, vtype(x))], shape,
                       [_map(rank + 1, _dims(rank)), _map(rank + 1, other),
                        _map(rank + 1, _dims(rank))],
                       lambda a: [line.format(i=a[0], j=a[1], acc=a[2]) for line in place],
                       reductions=(rank,), init=w.filled(shape, "0", "i64"), out_element="i64")
    out = values.type.shape
    hit = [f"linalg.index {ax} : index", "arith.index_cast %t0 : index to i64",
           "arith.cmpi eq, {r}, %t1 : i64"]
    maps = [_map(rank + 1, other), _map(rank + 1, _dims(rank))]
    w.names[indices] = w.generic(
        [(places, ttype(shape, "i64"))], out, maps,
        lambda a: _body(hit + [f"linalg.index {rank} : index",
                               "arith.index_cast %t3 : index to i64",
                               "arith.select %t2, %t4, {acc} : i64"], r=a[0], acc=a[1]),
        reductions=(rank,), init=w.filled(out, "0", "i64"), out_element="i64")
    w.names[values] = w.generic(
        [(places, ttype(shape, "i64")), (xs, vtype(x))], out, [maps[0]] + maps,
        lambda a: _body(hit + [f"arith.select %t2, {{x}}, {{acc}} : {T}"], r=a[0], x=a[1],
                        acc=a[2]),
        reductions=(rank,), init=w.filled(out, "0.0" if c == "f" else "0", T), out_element=T)


# -- indexing ----------------------------------------------------------------------------

def _index_lines(idx, n):
    """Lines turning the integer `idx` into an index, negative ones counted from n."""
    return [f"arith.index_cast {idx} : {{I}} to index", f"arith.constant {n} : index",
            "arith.addi %t0, %t1 : index", "arith.constant 0 : index",
            "arith.cmpi slt, %t0, %t3 : index", "arith.select %t4, %t2, %t0 : index"]


def _gather_into(w, y, x, idx, axis, spread):
    """y[...] = x[..., idx[...], ...]: a generic over y reading idx through
    `spread` (the loops it spans) and x by tensor.extract."""
    rank, xr = y.type.rank, x.type.rank
    xs, I = _operand(w, x), element(idx)
    lines = [t.replace("{I}", I) for t in _index_lines("{i}", x.type.shape[axis])]
    loops = [f"linalg.index {d} : index" for d in range(rank)]
    k = len(lines)
    subscripts = []
    for d in range(xr):
        if d == axis:
            subscripts.append(f"%t{k - 1}")
        else:
            subscripts.append(f"%t{k + (d if d < axis else d + len(spread) - 1)}")
    extract = f"tensor.extract {xs}[{', '.join(subscripts)}] : {vtype(x)}"
    return w.generic([(_operand(w, idx), vtype(idx))], y.type.shape,
                     [_map(rank, spread), _map(rank, _dims(rank))],
                     lambda a: _body(lines + loops + [extract], i=a[0]),
                     out_element=element(y))


@lowers("gather", "embedding")
def _gather(w, op):
    if op.kind == "embedding":
        idx, x = op.inputs
        axis = 0
    else:
        x, idx = op.inputs
        axis = op.attrs["axis"] % x.type.rank
    spread = [f"d{axis + i}" for i in range(idx.type.rank)]
    w.names[op.output] = _gather_into(w, op.output, x, idx, axis, spread)


@lowers("gather_elements")
def _gather_elements(w, op):
    x, idx = op.inputs
    axis = op.attrs["axis"] % x.type.rank
    rank = idx.type.rank
    xs, I = _operand(w, x), element(idx)
    lines = [t.replace("{I}", I) for t in _index_lines("{i}", x.type.shape[axis])]
    k = len(lines)
    loops = [f"linalg.index {d} : index" for d in range(rank)]
    subscripts = [f"%t{k - 1}" if d == axis else f"%t{k + d}" for d in range(rank)]
    extract = f"tensor.extract {xs}[{', '.join(subscripts)}] : {vtype(x)}"
    w.names[op.output] = w.generic(
        [(_operand(w, idx), vtype(idx))], op.output.type.shape,
        [_map(rank, _dims(rank)), _map(rank, _dims(rank))],
        lambda a: _body(lines + loops + [extract], i=a[0]), out_element=element(op.output))


@lowers("pad")
def _pad(w, op):
    """Each output position reads x at its position minus the padding before
    it: inside x, or `value` (constant mode), or the position clamped
    (edge), mirrored (reflect) or wrapped (wrap); negative pads crop."""
    x, y = op.inputs[0], op.output
    rank, mode = x.type.rank, op.attrs["mode"]
    if rank == 0 or 0 in x.type.shape:
        _refuse(op, "a 0-d or empty input (not exported)")
    pads = op.attrs["pads"]
    begins, ends = pads[:rank], pads[rank:]
    T, xs = element(x), _operand(w, x)
    lines, subscripts, inside = [], [], []

    def add(line):
        lines.append(line)
        return f"%t{len(lines) - 1}"
    zero = add("arith.constant 0 : index")
    for d in range(rank):
        crop_b, crop_e = max(-begins[d], 0), max(-ends[d], 0)
        n = x.type.shape[d] - crop_b - crop_e  # what cropping leaves
        p = add(f"linalg.index {d} : index")
        grow = add(f"arith.constant {max(begins[d], 0)} : index")
        j = add(f"arith.subi {p}, {grow} : index")  # position in the cropped x
        last = add(f"arith.constant {n - 1} : index")
        below = add(f"arith.cmpi slt, {j}, {zero} : index")
        above = add(f"arith.cmpi sgt, {j}, {last} : index")
        if mode in ("constant", "edge"):
            inside.append((below, above))
            j = add(f"arith.select {below}, {zero}, {j} : index")
            j = add(f"arith.select {above}, {last}, {j} : index")
        elif mode == "reflect":
            neg = add(f"arith.subi {zero}, {j} : index")
            twice = add(f"arith.constant {2 * (n - 1)} : index")
            back = add(f"arith.subi {twice}, {j} : index")
            j = add(f"arith.select {below}, {neg}, {j} : index")
            j = add(f"arith.select {above}, {back}, {j} : index")
        elif mode == "wrap":
            size = add(f"arith.constant {n} : index")
            r = add(f"arith.remsi {j}, {size} : index")
            shifted = add(f"arith.addi {r}, {size} : index")
            j = add(f"arith.remsi {shifted}, {size} : index")
        else:
            _refuse(op, f"mode {mode!r} (not exported)")
        start = add(f"arith.constant {crop_b} : index")
        subscripts.append(add(f"arith.addi {j}, {start} : index"))
    got = add(f"tensor.extract {xs}[{', '.join(subscripts)}] : {vtype(x)}")
    if mode == "constant":
        value = np.asarray(op.attrs["value"]).astype(x.type.value_dtype.storage)
        if T == "i1":
            literal = "1" if value else "0"
        elif element_class(x) != "f":
            literal = str(int(value))
        elif np.isfinite(value):
            literal = _literal(value)
        elif np.isinf(value) and T in INF:
            literal = INF[T][0 if value > 0 else 1]
        else:
            _refuse(op, f"a padding value {float(value)} in {T} (not exported)")
        out = add(f"arith.constant {literal} : {T}")
        outside = add("arith.constant false")
        for below, above in inside:
            either = add(f"arith.ori {below}, {above} : i1")
            outside = add(f"arith.ori {outside}, {either} : i1")
        got = add(f"arith.select {outside}, {out}, {got} : {T}")
    rank_y = y.type.rank
    w.names[y] = w.generic([], y.type.shape, [_map(rank_y, _dims(rank_y))],
                           lambda a: [f"%t{i} = {line}" for i, line in enumerate(lines)] + [got],
                           out_element=T)


# -- pooling and log-softmax --------------------------------------------------------------

@lowers("avg_pool2d")
def _avg_pool(w, op):
    """Window sums (linalg.pooling_nchw_sum over the zero-padded input)
    divided by each window's count of input cells, plus padding cells with
    count_include_pad, never the ceil-mode overhang: the same sum over a
    padded tensor of ones."""
    x, y = op.inputs[0], op.output
    _f32(op, x, y)
    n, c, h, wd = x.type.shape
    oh, ow = y.type.shape[2:]
    (kh, kw), (sh, sw), _, (t, lf, b, r), (eh, ew) = pool_geometry(op)
    padded = (h + t + b + eh, wd + lf + r + ew)

    def window_sum(src, shape, out_shape):
        window, init, out = w.empty((kh, kw)), w.filled(out_shape, "0.0"), w.fresh()
        w.emit(f"{out} = linalg.pooling_nchw_sum {{dilations = dense<1> : tensor<2xi64>, "
               f"strides = dense<[{sh}, {sw}]> : tensor<2xi64>}} ins({src}, {window} : "
               f"{ttype(shape)}, {ttype((kh, kw))}) outs({init} : {ttype(out_shape)}) -> "
               f"{ttype(out_shape)}")
        return out
    xp = _padded(w, _operand(w, x), x.type.shape, [0, 0, t, lf], [0, 0, b + eh, r + ew], "0.0")
    total = window_sum(xp, (n, c) + padded, y.type.shape)
    ones = w.constant(np.ones((1, 1, h, wd), np.float32))
    inner = _padded(w, ones, (1, 1, h, wd), [0, 0, t, lf], [0, 0, b, r],
                    "1.0" if op.attrs["count_include_pad"] else "0.0")
    cells = _padded(w, inner, (1, 1, h + t + b, wd + lf + r), [0, 0, 0, 0], [0, 0, eh, ew],
                    "0.0")
    count = window_sum(cells, (1, 1) + padded, (1, 1, oh, ow))
    ident = _map(4, _dims(4))
    w.names[y] = w.generic([(total, ttype(y.type.shape)), (count, ttype((1, 1, oh, ow)))],
                           y.type.shape, [ident, _map(4, ["0", "0", "d2", "d3"]), ident],
                           lambda a: _body(["arith.divf {x}, {k} : f32"], x=a[0], k=a[1]))


@lowers("log_softmax")
def _log_softmax(w, op):
    """x - max - log(sum(exp(x - max))) along the last axis (a row of -inf
    has no max to subtract, and gives NaN)."""
    x, y = op.inputs[0], op.output
    _f32(op, x, y)
    shape = x.type.shape
    if op.attrs["axis"] % x.type.rank != x.type.rank - 1:
        _refuse(op, "along an axis other than the last (not exported)")
    xs = _operand(w, x)
    top = _reduce_last(w, xs, shape, lambda acc, v: [f"%t0 = arith.maximumf {acc}, {v} : f32",
                                                     "%t0"], "0xFF800000")
    s = _rowwise(w, xs, top, shape, ["arith.constant 0xFF800000 : f32",
                                     "arith.cmpf oeq, {r}, %t0 : f32",
                                     "arith.constant 0.0 : f32", "arith.select %t1, %t2, {r} : f32",
                                     "arith.subf {x}, %t3 : f32"])
    total = _reduce_last(w, s, shape, lambda acc, v: [f"%t0 = math.exp {v} : f32",
                                                      f"%t1 = arith.addf {acc}, %t0 : f32", "%t1"],
                         "0.0")
    w.names[y] = _rowwise(w, s, total, shape, ["math.log {r} : f32", "arith.subf {x}, %t0 : f32"])
