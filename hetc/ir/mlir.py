"""The graph as upstream MLIR (text): `func`, `arith`, `math`, `tensor`,
`linalg` and `sparse_tensor`, so that MLIR's own tools can parse, verify,
compile and run what hetc compiled.

How hetc's types and ops map (docs/mlir.md shows each with an example):

- float32 values are `tensor<...xf32>`; constants are `arith.constant` with
  their bytes in hexadecimal (`dense<"0x...">`).
- an N:M weight (`nm<n:m>`) is converted to a `sparse_tensor` encoding
  with a `structured[n, m]` level, `(i, j) -> (i : dense, j floordiv m :
  dense, j mod m : structured[n, m])`, which the matrix product consumes:
  MLIR's sparsifier then skips the pruned weights.
- a quantized weight (`quant<...>`) is its integer codes (`i8`) and scales
  as constants with an explicit dequantizing `linalg.generic` (codes x the
  group's scale, minus the zero point first). An N:M quantized weight with
  one scale per output channel is its codes as the f32 constant converted to
  the structured encoding, the scales applied after the product (MLIR's
  sparsifier converts only constants to a structured encoding without its
  runtime library). Codebook formats (mx4, mx3) and other quantized N:M
  weights are decoded to f32 constants, said in the `hetc.layers` attribute.
- `linear` is `linalg.matmul` with the weight transposed by its indexing
  maps, on the tokens collapsed to rows; int8 activations (`act_group`)
  are quantized and dequantized per token and group by generics first.
  convolutions are linalg's named convolutions over `tensor.pad`
  (`conv_2d_nchw_fchw`, grouped ones `conv_2d_ngchw_gfchw`), max pooling
  `pooling_nchw_max`; `matmul`, elementwise ops (broadcasting), softmax,
  layer, RMS and batch norms, global pooling and attention are
  `linalg.generic`s; transposes `linalg.transpose`; reshapes
  `tensor.reshape`; slices, splits and concatenations `tensor` slice ops.
- composite ops (linear, conv2d, softmax, the norms, attention, pooling,
  expand, slices, splits, concatenations) are `func.call`s of a private
  function per op holding its decomposition into linalg, tagged with the op
  (`hetc.op`, `hetc.attrs`, and a layer's weight: `hetc.weight`,
  `hetc.weight_type`, `hetc.weight_form`); MLIR's `inline` pass flattens
  them, and hetc's importer (hetc/frontends/mlir_import.py) gives back the
  op itself. Every other op is one MLIR op.
- hetc's facts ride as discardable attributes: `hetc.layers` on @main (each
  layer's weight name, its IR type and how it is written), `hetc.graph`
  (the graph's name), and each value's name as the location of the MLIR op
  defining it (`loc("name")`; `loc("name"("inline"))` for a constant written
  in the IR text rather than stored).

The typed elementwise ops, casts, reductions, indexing, padding, average
pooling and log-softmax are in mlir_ops.py: every op of the IR is exported;
what a lowering cannot write (unsigned values, integer pow, ...) raises
TargetError naming the op and the reason.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np

from hetc.core.errors import TargetError, UsageError
from hetc.core.registry import Registry
from hetc.ir import dtypes
from hetc.ir.interpret import load_const
from hetc.ir.ops import slice_ranges
from hetc.ir.weights import aux_key

# IR dtype -> MLIR element type (signless integers, read as signed; unsigned
# values are not exported: the importer could not tell them apart)
ELEMENT = {"f32": "f32", "f16": "f16", "bf16": "bf16", "f64": "f64", "i64": "i64",
           "i32": "i32", "i16": "i16", "i8": "i8", "bool": "i1"}
UNARY = {  # body of one element: {x} the operand, results f32
    "neg": ["arith.negf {x} : f32"], "abs": ["math.absf {x} : f32"],
    "exp": ["math.exp {x} : f32"], "tanh": ["math.tanh {x} : f32"],
    "sqrt": ["math.sqrt {x} : f32"], "rsqrt": ["math.rsqrt {x} : f32"],
    "erf": ["math.erf {x} : f32"], "log": ["math.log {x} : f32"],
    "relu": ["arith.constant 0.0 : f32", "arith.maximumf {x}, %t0 : f32"],
    "sigmoid": ["arith.negf {x} : f32", "math.exp %t0 : f32", "arith.constant 1.0 : f32",
                "arith.addf %t1, %t2 : f32", "arith.divf %t2, %t3 : f32"],
    "silu": ["arith.negf {x} : f32", "math.exp %t0 : f32", "arith.constant 1.0 : f32",
             "arith.addf %t1, %t2 : f32", "arith.divf {x}, %t3 : f32"],
}
GELU = {"none": ["arith.constant 0.707106769 : f32", "arith.mulf {x}, %t0 : f32",
                 "math.erf %t1 : f32", "arith.constant 1.0 : f32", "arith.addf %t2, %t3 : f32",
                 "arith.constant 0.5 : f32", "arith.mulf %t5, {x} : f32",
                 "arith.mulf %t6, %t4 : f32"],
        "tanh": ["arith.mulf {x}, {x} : f32", "arith.mulf %t0, {x} : f32",
                 "arith.constant 0.044715 : f32", "arith.mulf %t2, %t1 : f32",
                 "arith.addf {x}, %t3 : f32", "arith.constant 0.797884583 : f32",
                 "arith.mulf %t5, %t4 : f32", "math.tanh %t6 : f32",
                 "arith.constant 1.0 : f32", "arith.addf %t7, %t8 : f32",
                 "arith.constant 0.5 : f32", "arith.mulf %t10, {x} : f32",
                 "arith.mulf %t11, %t9 : f32"]}


# how quantized layer weights are written (docs/mlir.md): codes and a dequantizing
# generic; quant.uniform types (quant.scast, quant.dcast); decoded to f32
QUANT_FORMS = ("dequantize", "uniform", "decode")


def ttype(shape, element="f32", encoding=None) -> str:
    dims = "".join(f"{d}x" for d in shape)
    return f"tensor<{dims}{element}{', ' + encoding if encoding else ''}>"


def _dims(n):
    return [f"d{i}" for i in range(n)]


def _map(n, exprs):
    return f"affine_map<({', '.join(_dims(n))}) -> ({', '.join(exprs)})>"


def _broadcast_map(shape, out_rank, out_shape):
    """The indexing map reading an operand of `shape` broadcast to out_shape."""
    pad = out_rank - len(shape)
    return _map(out_rank, [("0" if d == 1 and out_shape[pad + i] != 1 else f"d{pad + i}")
                           for i, d in enumerate(shape)])


class Writer:
    """One graph as one `func.func @main`."""

    def __init__(self, graph, quant="dequantize"):
        if quant not in QUANT_FORMS:
            raise UsageError(f"to_mlir: quant must be one of {', '.join(QUANT_FORMS)}, got "
                             f"{quant!r}")
        self.g, self.quant = graph, quant
        self.lines, self.names, self.count = [], {}, 0
        self.encodings = {}
        self.functions = []  # the composite ops' private functions
        self.calls = 0
        self.layers = {}  # weight name -> its type and how it is written: hetc.layers

    # -- names and text -------------------------------------------------------------

    def fresh(self):
        self.count += 1
        return f"%v{self.count}"

    def emit(self, text):
        self.lines.append("    " + text)

    def value(self, v):
        if v not in self.names:
            raise TargetError(f"to_mlir: value %{v.name} is used before it is defined")
        return self.names[v]

    def constant(self, array, element="f32"):
        """An arith.constant of `array` as `element` (its bytes in
        hexadecimal: one byte per i1, as MLIR prints them)."""
        storage = {"f32": np.float32, "f16": np.float16, "bf16": dtypes.bf16.storage,
                   "f64": np.float64, "i64": np.int64, "i32": np.int32, "i16": np.int16,
                   "i8": np.int8, "i1": np.bool_}[element]
        a = np.array(array, order="C").astype(storage)  # 0-d stays 0-d
        name = self.fresh()
        literal = f'dense<"0x{a.tobytes().hex().upper()}">' if a.size else "dense<>"
        self.emit(f"{name} = arith.constant {literal} : {ttype(a.shape, element)}")
        return name

    def empty(self, shape, element="f32"):
        name = self.fresh()
        self.emit(f"{name} = tensor.empty() : {ttype(shape, element)}")
        return name

    def filled(self, shape, value, element="f32"):
        zero, empty = self.fresh(), self.empty(shape, element)
        self.emit(f"{zero} = arith.constant {value} : {element}")
        name = self.fresh()
        self.emit(f"{name} = linalg.fill ins({zero} : {element}) outs({empty} : "
                  f"{ttype(shape, element)}) -> {ttype(shape, element)}")
        return name

    def generic(self, ins, out_shape, maps, body, reductions=(), init=None,
                out_element="f32"):
        """A linalg.generic over len(maps[-1] domain) loops: `ins` are
        (name, type) pairs read through maps[:-1]; `body(args)` gives the
        lines of one element (args: the block's arguments, the output's
        last) ending in its result, of `out_element`."""
        rank = int(maps[-1].split("(")[1].count("d")) if "(" in maps[-1] else 0
        iters = ", ".join('"reduction"' if i in reductions else '"parallel"' for i in range(rank))
        out_type = ttype(out_shape, out_element)
        out = init or self.empty(out_shape, out_element)
        name = self.fresh()
        args = [f"%a{i}" for i in range(len(ins) + 1)]
        reads = f"ins({', '.join(n for n, _ in ins)} : {', '.join(t for _, t in ins)}) " \
            if ins else ""
        head = (f"{name} = linalg.generic {{indexing_maps = [{', '.join(maps)}], "
                f"iterator_types = [{iters}]}} {reads}outs({out} : {out_type}) {{")
        block = "^bb0(" + ", ".join(f"{a}: {_element(t)}" for a, (_, t) in zip(args, ins)) + \
            (", " if ins else "") + f"{args[-1]}: {out_element}):"
        self.emit(head)
        self.emit("  " + block)
        lines = body(args)
        for line in lines[:-1]:
            self.emit("    " + line)
        self.emit(f"    linalg.yield {lines[-1]} : {out_element}")
        self.emit(f"}} -> {out_type}")
        return name

    # -- the graph ------------------------------------------------------------------

    def run(self):
        args = [f"%arg{i}: {vtype(v)} loc({_string(v.name)})"
                for i, v in enumerate(self.g.inputs)]
        for i, v in enumerate(self.g.inputs):
            self.names[v] = f"%arg{i}"
        for op in self.g.ops:
            self.lower(op)
        results = [_operand(self, v) for v in self.g.outputs]
        types = [vtype(v) for v in self.g.outputs]
        encodings = "".join(f"{alias} = #sparse_tensor.encoding<{{ map = (i, j) -> (i : dense, "
                            f"j floordiv {m} : dense, j mod {m} : structured[{n}, {m}]) }}>\n"
                            for (n, m), alias in self.encodings.items())
        facts = ", ".join(f"{_string(k)} = {_string(v)}" for k, v in self.layers.items())
        return (f"// generated by hetc from graph @{_safe(self.g.name)}\n{encodings}"
                f"func.func @main({', '.join(args)}) -> ({', '.join(types)}) "
                f"attributes {{llvm.emit_c_interface, hetc.graph = {_string(self.g.name)}, "
                f"hetc.layers = {{{facts}}}}} {{\n" +
                "\n".join(self.lines) +
                f"\n    return {', '.join(results)} : {', '.join(types)}\n}}\n" +
                "".join(self.functions))

    def lower(self, op):
        """op in the current function: a call of its own, or its MLIR ops here."""
        if op.kind not in LOWER:
            raise TargetError(f"to_mlir: op {op.kind} (%{op.outputs[0].name}) is not "
                             f"exported yet (docs/mlir.md lists what is)")
        known, count = set(self.names.values()), len(self.lines)
        if needs_call(op):
            self.call(op)
        else:
            LOWER[op.kind](self, op)
        if len(self.lines) > count and op.outputs and self.names[op.outputs[0]] not in known:
            # the op's last MLIR op defines its results: their names as its location
            names = [_string(v.name) for v in op.outputs]
            self.lines[-1] += f" loc({names[0]})" if len(names) == 1 else \
                f" loc(fused[{', '.join(names)}])"

    def call(self, op):
        """A composite op as a `func.call` of a private function holding its
        lowering, tagged with the op (`hetc.op`, `hetc.attrs`) so that the
        importer gives back the op itself. A layer's constant weight lives in
        the function (`hetc.weight`, `hetc.weight_type`): MLIR's sparsifier
        converts only constants to a structured encoding."""
        weight = op.inputs[1] if op.kind in ("linear", "conv2d") else None
        if weight is not None and (weight.producer is None or weight.producer.kind != "const"):
            weight = None
        outer = [v for v in op.inputs if v is not weight]
        operands = [_operand(self, v) for v in outer]
        saved = self.lines, self.names
        self.lines, self.names = [], {v: f"%arg{i}" for i, v in enumerate(outer)}
        try:
            LOWER[op.kind](self, op)
            results = [self.names[v] for v in op.outputs]
            body = self.lines
        finally:
            self.lines, self.names = saved
        self.calls += 1
        fname = f"@{op.kind}_{self.calls}"
        ins = [vtype(v) for v in outer]
        outs = [vtype(v) for v in op.outputs]
        facts = [f"hetc.op = {_string(op.kind)}", f"hetc.attrs = {_string(_json(op.attrs))}"]
        if weight is not None:
            wname = weight.producer.attrs.get("name", weight.name)
            facts += [f"hetc.weight = {_string(wname)}",
                      f"hetc.weight_type = {_string(type_json(weight.type))}",
                      f"hetc.weight_form = {_string(self.layers.get(wname, ''))}"]
        if op.body is not None:
            facts.append(f"hetc.graph = {_string(op.body.name)}")
        names = [v.name for v in (op.body.inputs if op.body is not None else outer)]
        args = ", ".join(f"%arg{i}: {t} loc({_string(n)})"
                         for i, (t, n) in enumerate(zip(ins, names)))
        self.functions.append(
            f"func.func private {fname}({args}) -> ({', '.join(outs)}) attributes "
            f"{{{', '.join(facts)}}} {{\n" + "\n".join(body) +
            f"\n    return {', '.join(results)} : {', '.join(outs)}\n}}\n")
        name = self.fresh()
        count = f":{len(outs)}" if len(outs) > 1 else ""
        self.emit(f"{name}{count} = func.call {fname}({', '.join(operands)}) : "
                  f"({', '.join(ins)}) -> ({', '.join(outs)})")
        for k, v in enumerate(op.outputs):
            self.names[v] = f"{name}#{k}" if len(outs) > 1 else name


# ops written as one MLIR op that the importer maps back to the same op, by
# the classes of their operands' elements (float, signed int, bool); every
# other op is a call of its own function (see Writer.call)
DIRECT = {"const": "fsb", "reshape": "fsb", "transpose": "fsb", "matmul": "f", "gelu": "f",
          **{k: "f" for k in UNARY}, "add": "fs", "sub": "fs", "mul": "fs", "div": "f",
          "maximum": "fs", "minimum": "fs", "pow": "f", "where": "fsb",
          **{k: "f" for k in ("floor", "ceil", "round", "sin", "cos", "tan", "asin", "acos",
                              "atan", "sinh", "cosh", "asinh", "acosh", "atanh")},
          **{k: "fs" for k in ("equal", "less", "greater", "less_equal", "greater_equal")},
          **{k: "b" for k in ("logical_and", "logical_or", "logical_xor")},
          **{k: "s" for k in ("bitwise_and", "bitwise_or", "bitwise_xor")}}


def element_class(v) -> str:
    """f (float), s (signed integer) or b (bool): what a body's ops depend on."""
    d = v.type.value_dtype
    return "b" if d.name == "bool" else "f" if d.is_float else "s"


def needs_call(op) -> bool:
    allowed = DIRECT.get(op.kind, "")
    operands = op.inputs[1:] if op.kind == "where" else op.inputs
    return not allowed or any(element_class(v) not in allowed for v in operands)


def _json(attrs) -> str:
    """An op's attributes as JSON (numpy scalars as numbers), for hetc.attrs."""
    return json.dumps(dict(attrs), default=lambda o: o.item() if isinstance(o, np.generic)
                      else o.name if isinstance(o, dtypes.DType) else list(o))


def type_json(t) -> str:
    """A layer weight's IR type as JSON (hetc.weight_type; the importer reads it back)."""
    nm, q = t.nm, t.quant
    return json.dumps({"shape": list(t.shape), "dtype": t.dtype.name,
                       "order": [type(e).__name__ for e in t.encodings],
                       "nm": nm and [nm.n, nm.m, nm.axis],
                       "quant": q and {"group": q.group, "scale": q.scale.name,
                                       "symmetric": q.symmetric, "axis": q.axis,
                                       "codebook": q.codebook}})


def element(v) -> str:
    """The MLIR element type of value v (TargetError for dtypes MLIR export lacks)."""
    name = v.type.value_dtype.name
    if name not in ELEMENT:
        raise TargetError(f"to_mlir: value %{v.name} is {name} (exported: "
                          f"{', '.join(ELEMENT)})")
    return ELEMENT[name]


def vtype(v) -> str:
    """The MLIR tensor type of value v (its logical values: quantized ones are f32)."""
    return ttype(v.type.shape, element(v))


def _element(t):
    """The element type of a tensor type's text."""
    return re.match(r"tensor<(?:\d+x)*([a-z0-9]+)", t).group(1)


def _string(text):
    """An MLIR string literal: printable ASCII kept, the rest escaped as hex."""
    return '"' + "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else
                         "".join(f"\\{b:02X}" for b in c.encode("utf-8"))
                         for c in str(text)) + '"'


def _safe(name):
    return "".join(c if c.isascii() and (c.isalnum() or c in "_.") else "_" for c in str(name))


LOWER = Registry("mlir exports")
lowers = LOWER.register


def _f32(op, *values):
    for v in values:
        if v.type.value_dtype.name != "f32":
            raise TargetError(f"to_mlir: {op.kind} %{op.outputs[0].name}: {v.type.dtype} value "
                             f"%{v.name} (float32 only so far)")


@lowers("const")
def _const(w, op):
    """Nothing here: a constant is written where it is first used, in the
    function using it (a layer's weight by its layer: dequantized,
    quant.uniform or decoded)."""


def _operand(w, v):
    """The MLIR value of operand v (a quantized constant decoded to f32 here
    when it is not a layer's weight)."""
    if v not in w.names:
        w.names[v] = w.constant(np.asarray(load_const(v.producer, w.g)).reshape(v.type.shape),
                                element(v))
        # its name travels as the location: a stored weight's key, or an inline value's name
        named = v.producer.attrs.get("name")
        w.lines[-1] += f" loc({_string(named)})" if named else \
            f" loc({_string(v.name)}(\"inline\"))"
    return w.names[v]


def _body(lines, **operands):
    """Numbered temporaries %t0, %t1, ... for a body's lines; the last is its result."""
    out = []
    for i, line in enumerate(lines):
        out.append(f"%t{i} = " + line.format(**operands))
    return out + [f"%t{len(lines) - 1}"]


@lowers("reshape")
def _reshape(w, op):
    x, y = op.inputs[0], op.output
    shape = w.constant(np.asarray(y.type.shape, np.int64), "i64")
    name = w.fresh()
    w.emit(f"{name} = tensor.reshape {_operand(w, x)}({shape}) : ({vtype(x)}, "
           f"{ttype([y.type.rank], 'i64')}) -> {vtype(y)}")
    w.names[y] = name


@lowers("transpose")
def _transpose(w, op):
    x, y = op.inputs[0], op.output
    init, name = w.empty(y.type.shape, element(y)), w.fresh()
    w.emit(f"{name} = linalg.transpose ins({_operand(w, x)} : {vtype(x)}) "
           f"outs({init} : {vtype(y)}) permutation = "
           f"[{', '.join(map(str, op.attrs['perm']))}]")
    w.names[y] = name


def _reduce_last(w, x, shape, combine, start):
    """x [..., n] reduced along its last axis into [...]: `combine(acc, x)`
    lines (ending in the result), from `start`."""
    rank = len(shape)
    init = w.filled(shape[:-1], start)
    return w.generic([(x, ttype(shape))], shape[:-1],
                     [_map(rank, _dims(rank)), _map(rank, _dims(rank)[:-1])],
                     lambda a: combine(a[1], a[0]), reductions=(rank - 1,), init=init)


def _rowwise(w, x, rows, shape, lines):
    """An elementwise generic of x [..., n] with a per-row value rows [...]."""
    rank = len(shape)
    ident = _map(rank, _dims(rank))
    return w.generic([(x, ttype(shape)), (rows, ttype(shape[:-1]))], shape,
                     [ident, _map(rank, _dims(rank)[:-1]), ident],
                     lambda a: _body(lines, x=a[0], r=a[1]))


@lowers("softmax")
def _softmax(w, op):
    x, y = op.inputs[0], op.output
    _f32(op, x, y)
    shape = x.type.shape
    if op.attrs["axis"] % x.type.rank != x.type.rank - 1:
        raise TargetError(f"to_mlir: softmax %{y.name} along an axis other than the last "
                         f"(not exported yet)")
    w.names[y] = _softmax_rows(w, _operand(w, x), shape)


@lowers("layer_norm", "rms_norm")
def _norm(w, op):
    x, y = op.inputs[0], op.output
    _f32(op, *op.inputs, y)
    shape = x.type.shape
    n = math.prod(shape[op.attrs["axis"] % x.type.rank:])
    rows = (x.type.numel // n, n)
    flat = _reshaped(w, _operand(w, x), shape, rows)
    count, eps = float(n), float(np.float32(op.attrs["eps"]))

    def mean_of(v):
        total = _reduce_last(w, v, rows, lambda acc, e: [f"%t0 = arith.addf {acc}, {e} : f32",
                                                         "%t0"], "0.0")
        return w.generic([(total, ttype(rows[:1]))], rows[:1], [_map(1, ["d0"])] * 2,
                         lambda a: _body([f"arith.constant {count!r} : f32",
                                          "arith.divf {x}, %t0 : f32"], x=a[0]))
    if op.kind == "layer_norm":
        mean = mean_of(flat)
        centered = _rowwise(w, flat, mean, rows, ["arith.subf {x}, {r} : f32"])
    else:
        centered = flat
    squares = w.generic([(centered, ttype(rows))], rows, [_map(2, ["d0", "d1"])] * 2,
                        lambda a: _body(["arith.mulf {x}, {x} : f32"], x=a[0]))
    var = mean_of(squares)
    out = _rowwise(w, centered, var, rows, [f"arith.constant {eps!r} : f32",
                                            "arith.addf {r}, %t0 : f32", "math.sqrt %t1 : f32",
                                            "arith.divf {x}, %t2 : f32"])
    for k, param in enumerate(op.inputs[1:3]):  # weight (mul), bias (add)
        p = _operand(w, param)
        out = w.generic([(out, ttype(rows)), (p, ttype([n]))], rows,
                        [_map(2, ["d0", "d1"]), _map(2, ["d1"]), _map(2, ["d0", "d1"])],
                        lambda a, k=k: [f"%t0 = {'arith.mulf' if k == 0 else 'arith.addf'} "
                                        f"{a[0]}, {a[1]} : f32", "%t0"])
    w.names[y] = _reshaped(w, out, rows, shape)


def _reshaped(w, x, shape, to, element="f32"):
    if tuple(shape) == tuple(to):
        return x
    s = w.constant(np.asarray(to, np.int64), "i64")
    name = w.fresh()
    w.emit(f"{name} = tensor.reshape {x}({s}) : ({ttype(shape, element)}, "
           f"{ttype([len(to)], 'i64')}) -> {ttype(to, element)}")
    return name


@lowers("matmul")
def _matmul(w, op):
    a, b = op.inputs
    y = op.output
    _f32(op, a, b, y)
    if a.type.rank < 2 or b.type.rank < 2:
        raise TargetError(f"to_mlir: matmul %{y.name} of a vector (not exported yet)")
    out = y.type.shape
    r = len(out) + 1  # the batch, m, n, then k
    dims = _dims(r)
    k = dims[-1]

    def operand_map(shape, rows, cols):
        pad = len(out) - len(shape)
        batch = [("0" if d == 1 and out[pad + i] != 1 else dims[pad + i])
                 for i, d in enumerate(shape[:-2])]
        return _map(r, batch + [rows, cols])
    m_, n_ = dims[len(out) - 2], dims[len(out) - 1]
    maps = [operand_map(a.type.shape, m_, k), operand_map(b.type.shape, k, n_),
            _map(r, dims[:-1])]
    init = w.filled(out, "0.0")
    w.names[y] = w.generic([(_operand(w, a), ttype(a.type.shape)),
                            (_operand(w, b), ttype(b.type.shape))], out, maps,
                           lambda args: [f"%t0 = arith.mulf {args[0]}, {args[1]} : f32",
                                         f"%t1 = arith.addf {args[2]}, %t0 : f32", "%t1"],
                           reductions=(r - 1,), init=init)


def _layer_weight(w, v):
    """(MLIR value, its type, what it is) of a layer's weight: f32, or
    dequantized from its codes by a generic, or decoded; an N:M weight
    converted to its structured sparse encoding."""
    t = v.type
    q = t.quant
    scale = None
    # MLIR's sparsifier converts only constants to a structured encoding
    # (without its runtime library): an N:M weight's codes are that constant,
    # times one scale per output after the product, when its scales are per
    # output channel; other quantized N:M weights are decoded
    if q is not None and t.nm is not None and t.rank == 2 and q.axis % 2 == 1 and \
            q.group == t.shape[1] and q.symmetric and not q.codebook and w.quant != "decode":
        const = v.producer.attrs["name"]
        name = w.constant(np.asarray(w.g.weights[const]).astype(np.float32))
        scale = w.constant(np.asarray(w.g.weights[aux_key(const, "scale")],
                                      np.float32).reshape(t.shape[0]))
        how = f"{t.dtype} codes as f32, scaled per output after the product"
    elif q is None or q.codebook or w.quant == "decode" or t.nm is not None:
        name, how = _operand(w, v), "f32" if q is None else "decoded to f32"
    elif w.quant == "uniform" and _uniform_type(w, v) is not None:
        name, how = _uniform(w, v), f"{t.dtype} codes of a quant.uniform type"
    else:
        name, how = _dequantized(w, v), f"dequantized from {t.dtype} codes"
    element_type = ttype(t.shape)
    if t.nm is not None and t.rank == 2:  # a convolution's N:M weight stays dense
        n, k = t.shape
        key = (t.nm.n, t.nm.m)
        alias = w.encodings.setdefault(key, f"#NM_{key[0]}_{key[1]}")
        sparse = w.fresh()
        element_type = ttype((n, k), "f32", alias)
        w.emit(f"{sparse} = sparse_tensor.convert {name} : {ttype((n, k))} to {element_type}")
        name = sparse
    w.layers[v.producer.attrs.get("name", v.name) if v.producer else v.name] = f"{t} ({how})"
    return name, element_type, how, scale


def _dequantized(w, v):
    """A quantized constant as its codes (i8), its scales (and zero points)
    and a generic computing (code - zero) x the scale of the code's group."""
    t, q = v.type, v.type.quant
    const = v.producer.attrs["name"]
    rank, axis = t.rank, q.axis % t.rank
    pshape = q.param_shape(t.shape)
    codes = w.constant(np.asarray(w.g.weights[const]).astype(np.int8), "i8")
    scales = np.broadcast_to(np.asarray(w.g.weights[aux_key(const, "scale")], np.float32),
                             pshape)
    ins = [(codes, ttype(t.shape, "i8")), (w.constant(scales), ttype(pshape))]
    ident = _map(rank, _dims(rank))
    grouped = _map(rank, [f"d{i} floordiv {q.group}" if i == axis else f"d{i}"
                          for i in range(rank)])
    maps = [ident, grouped]
    body = ["arith.sitofp {c} : i8 to f32", "arith.mulf %t0, {s} : f32"]
    zero = w.g.weights.get(aux_key(const, "zero"))
    if zero is not None:
        z = w.constant(np.broadcast_to(np.asarray(zero, np.float32), pshape))
        ins.append((z, ttype(pshape)))
        maps.append(grouped)
        body = ["arith.sitofp {c} : i8 to f32", "arith.subf %t0, {z} : f32",
                "arith.mulf %t1, {s} : f32"]
    if t.dtype.name in ("u4", "u8", "u3"):
        body[0] = "arith.uitofp {c} : i8 to f32"
    return w.generic(ins, t.shape, maps + [ident],
                     lambda a: _body(body, c=a[0], s=a[1], z=a[2] if len(a) > 3 else ""))


def _literal(x) -> str:
    """A float as an MLIR float literal (which needs its '.'), exactly."""
    r = repr(float(x))
    return r.replace("e", ".0e") if "e" in r and "." not in r else r


def _uniform_type(w, v):
    """The `!quant.uniform` type of a quantized weight: per tensor, per axis
    (one scale per index of one axis) or sub-channel (a block size per
    axis); None when MLIR's quant types cannot hold it (scales that are not
    positive, storage other than 2-8 bit integers)."""
    t, q = v.type, v.type.quant
    const = v.producer.attrs["name"]
    pshape = q.param_shape(t.shape)
    scales = np.broadcast_to(np.asarray(w.g.weights[aux_key(const, "scale")], np.float32),
                             pshape)
    zero = w.g.weights.get(aux_key(const, "zero"))
    zero = None if zero is None else np.broadcast_to(np.asarray(zero, np.int64), pshape)
    if t.dtype.kind not in ("int", "uint") or not 2 <= t.dtype.bits <= 8 or \
            not np.all(np.isfinite(scales)) or not np.all(scales > 0):
        return None
    storage = f"{'u' if t.dtype.kind == 'uint' else 'i'}{t.dtype.bits}"

    def nested(s, z):
        if s.ndim == 0:
            return _literal(s) + ("" if z is None else f":{int(z)}")
        return "{" + ", ".join(nested(s[i], None if z is None else z[i])
                               for i in range(s.shape[0])) + "}"
    spread = [d for d, p in enumerate(pshape) if p > 1]
    if not spread:
        one = nested(scales.reshape(()), None if zero is None else zero.reshape(()))
        return f"!quant.uniform<{storage}:f32, {one}>"
    if len(spread) == 1 and pshape[spread[0]] == t.shape[spread[0]]:
        d = spread[0]
        flat = scales.reshape(-1)
        zflat = None if zero is None else zero.reshape(-1)
        return f"!quant.uniform<{storage}:f32:{d}, {nested(flat, zflat)}>"
    blocks = ", ".join(f"{d}:{n // p}" for d, (n, p) in enumerate(zip(t.shape, pshape)))
    return f"!quant.uniform<{storage}:f32:{{{blocks}}}, {nested(scales, zero)}>"


def _uniform(w, v):
    """A quantized constant as its codes cast to its quant.uniform type
    (quant.scast) and dequantized by MLIR itself (quant.dcast, which MLIR's
    lower-quant-ops pass lowers)."""
    t = v.type
    container = ttype(t.shape, f"i{t.dtype.bits}")
    codes = np.asarray(w.g.weights[v.producer.attrs["name"]]).astype(np.int8)
    name = w.fresh()
    w.emit(f'{name} = arith.constant dense<"0x{codes.tobytes().hex().upper()}"> : {container}')
    quantized = ttype(t.shape, _uniform_type(w, v))
    cast, real = w.fresh(), w.fresh()
    w.emit(f"{cast} = quant.scast {name} : {container} to {quantized}")
    w.emit(f"{real} = quant.dcast {cast} : {quantized} to {ttype(t.shape)}")
    return real


def _fake_quant(w, x, rows, group):
    """x [T, K] quantized to int8 and back per row and group (the IR's
    act_group): scale = max |x| / 127, codes rounded half to even."""
    t, k = rows
    grouped = _reshaped(w, x, rows, (t, k // group, group))
    shape3 = (t, k // group, group)
    top = _reduce_last(w, grouped, shape3, lambda acc, v: [
        f"%t0 = math.absf {v} : f32", f"%t1 = arith.maximumf {acc}, %t0 : f32", "%t1"], "0.0")
    ident = _map(3, _dims(3))
    q = w.generic([(grouped, ttype(shape3)), (top, ttype(shape3[:2]))], shape3,
                  [ident, _map(3, ["d0", "d1"]), ident],
                  lambda a: _body(["arith.constant 127.0 : f32", "arith.divf {m}, %t0 : f32",
                                   "arith.constant 0.0 : f32", "arith.cmpf oeq, %t1, %t2 : f32",
                                   "arith.constant 1.0 : f32",
                                   "arith.select %t3, %t4, %t1 : f32",
                                   "arith.divf {x}, %t5 : f32", "math.roundeven %t6 : f32",
                                   "arith.mulf %t7, %t1 : f32"], x=a[0], m=a[1]))
    return _reshaped(w, q, shape3, rows)


@lowers("linear")
def _linear(w, op):
    x, weight = op.inputs[:2]
    y = op.output
    _f32(op, x, y)
    n, k = weight.type.shape
    rows = (x.type.numel // k, k)
    flat = _reshaped(w, _operand(w, x), x.type.shape, rows)
    if op.attrs.get("act_group"):
        flat = _fake_quant(w, flat, rows, op.attrs["act_group"])
    wt, wtype, how, scale = _layer_weight(w, weight)
    init = w.filled((rows[0], n), "0.0")
    name = w.fresh()
    w.emit(f"{name} = linalg.matmul indexing_maps = [{_map(3, ['d0', 'd2'])}, "
           f"{_map(3, ['d1', 'd2'])}, {_map(3, ['d0', 'd1'])}] ins({flat}, {wt} : "
           f"{ttype(rows)}, {wtype}) outs({init} : {ttype((rows[0], n))}) -> "
           f"{ttype((rows[0], n))}")
    out = name
    if scale is not None:
        out = w.generic([(out, ttype((rows[0], n))), (scale, ttype([n]))], (rows[0], n),
                        [_map(2, ["d0", "d1"]), _map(2, ["d1"]), _map(2, ["d0", "d1"])],
                        lambda a: [f"%t0 = arith.mulf {a[0]}, {a[1]} : f32", "%t0"])
    if len(op.inputs) > 2:
        b = _operand(w, op.inputs[2])
        out = w.generic([(out, ttype((rows[0], n))), (b, ttype([n]))], (rows[0], n),
                        [_map(2, ["d0", "d1"]), _map(2, ["d1"]), _map(2, ["d0", "d1"])],
                        lambda a: [f"%t0 = arith.addf {a[0]}, {a[1]} : f32", "%t0"])
    w.names[y] = _reshaped(w, out, (rows[0], n), y.type.shape)


def to_mlir(graph, quant="dequantize") -> str:
    """The graph as MLIR text (see the module's docstring); TargetError for
    what is not exported yet."""
    return Writer(graph, quant).run()


# -- convolutions, pooling, attention, copies ------------------------------------------

def _padded(w, x, shape, low, high, value, element="f32"):
    """x padded by `low`/`high` cells per axis with `value`."""
    if not any(low) and not any(high):
        return x
    out = [d + a + b for d, a, b in zip(shape, low, high)]
    name = w.fresh()
    idx = ", ".join(f"%i{i}: index" for i in range(len(shape)))
    w.emit(f"{name} = tensor.pad {x} low[{', '.join(map(str, low))}] "
           f"high[{', '.join(map(str, high))}] {{")
    w.emit(f"  ^bb0({idx}):")
    w.emit(f"    %c = arith.constant {value} : {element}")
    w.emit(f"    tensor.yield %c : {element}")
    w.emit(f"}} : {ttype(shape, element)} to {ttype(out, element)}")
    return name


@lowers("conv2d")
def _conv2d(w, op):
    x, wt = op.inputs[:2]
    y = op.output
    _f32(op, x, y)
    n, c, h, wd = x.type.shape
    o, cg, kh, kw = wt.type.shape
    oh, ow = y.type.shape[2:]
    (sh, sw), (dh, dw) = op.attrs["stride"], op.attrs["dilation"]
    t, lf, b, r = op.attrs["padding"]
    xs = _operand(w, x)
    if op.attrs.get("act_group"):  # each pixel's channels quantized: channels last
        g = op.attrs["act_group"]
        perm = w.empty((n, h, wd, c))
        moved = w.fresh()
        w.emit(f"{moved} = linalg.transpose ins({xs} : {ttype(x.type.shape)}) outs({perm} : "
               f"{ttype((n, h, wd, c))}) permutation = [0, 2, 3, 1]")
        rows = (n * h * wd, c)
        q = _reshaped(w, _fake_quant(w, _reshaped(w, moved, (n, h, wd, c), rows), rows, g),
                      rows, (n, h, wd, c))
        back = w.empty(x.type.shape)
        xs = w.fresh()
        w.emit(f"{xs} = linalg.transpose ins({q} : {ttype((n, h, wd, c))}) outs({back} : "
               f"{ttype(x.type.shape)}) permutation = [0, 3, 1, 2]")
    xp = _padded(w, xs, x.type.shape, [0, 0, t, lf], [0, 0, b, r], "0.0")
    padded = (n, c, h + t + b, wd + lf + r)
    groups = op.attrs["groups"]
    og = o // groups
    weight = _layer_weight(w, wt)[0] if wt.producer is not None and \
        wt.producer.kind == "const" else _operand(w, wt)
    windows = (f"{{dilations = dense<[{dh}, {dw}]> : tensor<2xi64>, "
               f"strides = dense<[{sh}, {sw}]> : tensor<2xi64>}}")
    # linalg's named convolutions: (n, c, h, w) x (o, c, kh, kw), or per group
    # (n, g, c/g, h, w) x (g, o/g, c/g, kh, kw)
    if groups == 1:
        named, xs_, ws_, ys_ = "conv_2d_nchw_fchw", (xp, padded), (weight, wt.type.shape), \
            y.type.shape
    else:
        gx = (n, groups, cg) + padded[2:]
        gw = (groups, og, cg, kh, kw)
        named, xs_, ws_ = "conv_2d_ngchw_gfchw", (_reshaped(w, xp, padded, gx), gx), \
            (_reshaped(w, weight, wt.type.shape, gw), gw)
        ys_ = (n, groups, og, oh, ow)
    init, out = w.filled(ys_, "0.0"), w.fresh()
    w.emit(f"{out} = linalg.{named} {windows} ins({xs_[0]}, {ws_[0]} : {ttype(xs_[1])}, "
           f"{ttype(ws_[1])}) outs({init} : {ttype(ys_)}) -> {ttype(ys_)}")
    out = _reshaped(w, out, ys_, y.type.shape)
    if len(op.inputs) > 2:
        bias = _operand(w, op.inputs[2])
        out = w.generic([(out, ttype(y.type.shape)), (bias, ttype([o]))], y.type.shape,
                        [_map(4, _dims(4)), _map(4, ["d1"]), _map(4, _dims(4))],
                        lambda a: [f"%t0 = arith.addf {a[0]}, {a[1]} : f32", "%t0"])
    w.names[y] = out


def pool_geometry(op):
    """(kernel, stride, dilation, [top, left, bottom, right] padding, the
    ceil mode's overhang [bottom, right]) of a pooling op."""
    x, y = op.inputs[0], op.output
    h, wd = x.type.shape[2:]
    oh, ow = y.type.shape[2:]
    (kh, kw), (t, lf, b, r) = op.attrs["kernel"], op.attrs["padding"]
    sh, sw = op.attrs.get("stride") or op.attrs["kernel"]
    dh, dw = op.attrs.get("dilation", [1, 1])
    eh = max(0, (oh - 1) * sh + dh * (kh - 1) + 1 - (h + t + b))
    ew = max(0, (ow - 1) * sw + dw * (kw - 1) + 1 - (wd + lf + r))
    return (kh, kw), (sh, sw), (dh, dw), (t, lf, b, r), (eh, ew)


@lowers("max_pool2d")
def _max_pool(w, op):
    x, y = op.inputs[0], op.output
    _f32(op, x, y)
    n, c, h, wd = x.type.shape
    (kh, kw), (sh, sw), (dh, dw), (t, lf, b, r), (eh, ew) = pool_geometry(op)
    xp = _padded(w, _operand(w, x), x.type.shape, [0, 0, t, lf], [0, 0, b + eh, r + ew],
                 "0xFF800000")
    padded = (n, c, h + t + b + eh, wd + lf + r + ew)
    window = w.empty((kh, kw))
    init, out = w.filled(y.type.shape, "0xFF800000"), w.fresh()
    w.emit(f"{out} = linalg.pooling_nchw_max {{dilations = dense<[{dh}, {dw}]> : tensor<2xi64>, "
           f"strides = dense<[{sh}, {sw}]> : tensor<2xi64>}} ins({xp}, {window} : "
           f"{ttype(padded)}, {ttype((kh, kw))}) outs({init} : {ttype(y.type.shape)}) -> "
           f"{ttype(y.type.shape)}")
    w.names[y] = out


@lowers("global_avg_pool")
def _global_avg_pool(w, op):
    x, y = op.inputs[0], op.output
    _f32(op, x, y)
    n, c = x.type.shape[:2]
    hw = x.type.numel // (n * c)
    flat = _reshaped(w, _operand(w, x), x.type.shape, (n, c, hw))
    total = _reduce_last(w, flat, (n, c, hw), lambda acc, v: [
        f"%t0 = arith.addf {acc}, {v} : f32", "%t0"], "0.0")
    mean = w.generic([(total, ttype((n, c)))], (n, c), [_map(2, ["d0", "d1"])] * 2,
                     lambda a: _body([f"arith.constant {float(hw)!r} : f32",
                                      "arith.divf {x}, %t0 : f32"], x=a[0]))
    w.names[y] = _reshaped(w, mean, (n, c), y.type.shape)


@lowers("batch_norm")
def _batch_norm(w, op):
    x, y = op.inputs[0], op.output
    _f32(op, x, y)
    scale, bias, mean, var = (np.asarray(load_const(v.producer, w.g), np.float32).reshape(-1)
                              for v in op.inputs[1:])
    inv = scale / np.sqrt(var + np.float32(op.attrs["eps"]))  # as the interpreter
    rank = x.type.rank
    consts = [w.constant(a) for a in (mean, inv, bias)]
    per_channel = _map(rank, ["d1"])
    w.names[y] = w.generic([(_operand(w, x), ttype(x.type.shape))] +
                           [(k, ttype([len(mean)])) for k in consts], x.type.shape,
                           [_map(rank, _dims(rank))] + [per_channel] * 3 +
                           [_map(rank, _dims(rank))],
                           lambda a: _body(["arith.subf {x}, {m} : f32",
                                            "arith.mulf %t0, {s} : f32",
                                            "arith.addf %t1, {b} : f32"],
                                           x=a[0], m=a[1], s=a[2], b=a[3]))


@lowers("expand")
def _expand(w, op):
    x, y = op.inputs[0], op.output
    _f32(op, x, y)
    rank, shape = y.type.rank, y.type.shape
    w.names[y] = w.generic([(_operand(w, x), ttype(x.type.shape))], shape,
                           [_broadcast_map(x.type.shape, rank, shape), _map(rank, _dims(rank))],
                           lambda a: [a[0]])


def _extract(w, x, shape, offsets, sizes, steps):
    name = w.fresh()
    w.emit(f"{name} = tensor.extract_slice {x}[{', '.join(map(str, offsets))}] "
           f"[{', '.join(map(str, sizes))}] [{', '.join(map(str, steps))}] : {ttype(shape)} to "
           f"{ttype(sizes)}")
    return name


@lowers("slice")
def _slice(w, op):
    """tensor.extract_slice for the axes with positive steps, then a
    generic reading the axes with negative steps backwards."""
    x, y = op.inputs[0], op.output
    _f32(op, x, y)
    shape, rank = list(x.type.shape), x.type.rank
    offsets, sizes, steps, backwards = [0] * rank, list(shape), [1] * rank, {}
    for axis, kept in slice_ranges(op.attrs, shape):
        if kept.step < 0 and len(kept):
            backwards[axis] = kept
        else:
            offsets[axis], sizes[axis], steps[axis] = \
                (kept.start if len(kept) else 0), len(kept), kept.step
    name = _operand(w, x)
    if (offsets, sizes, steps) != ([0] * rank, shape, [1] * rank):
        name = _extract(w, name, shape, offsets, sizes, steps)
    if backwards:
        exprs = [f"d{i} * {backwards[i].step} + {backwards[i].start}" if i in backwards
                 else f"d{i}" for i in range(rank)]
        name = w.generic([(name, ttype(sizes))], y.type.shape,
                         [_map(rank, exprs), _map(rank, _dims(rank))], lambda a: [a[0]])
    w.names[y] = name


@lowers("split")
def _split(w, op):
    x = op.inputs[0]
    _f32(op, x, *op.outputs)
    axis = op.attrs["axis"] % x.type.rank
    start = 0
    for out, size in zip(op.outputs, op.attrs["sizes"]):
        offsets = [0] * x.type.rank
        offsets[axis] = start
        w.names[out] = _extract(w, _operand(w, x), x.type.shape, offsets, list(out.type.shape),
                                [1] * x.type.rank)
        start += size


@lowers("concat")
def _concat(w, op):
    y = op.output
    _f32(op, *op.inputs, y)
    axis = op.attrs["axis"] % y.type.rank
    acc, start = w.empty(y.type.shape), 0
    for v in op.inputs:
        offsets = [0] * y.type.rank
        offsets[axis] = start
        name = w.fresh()
        w.emit(f"{name} = tensor.insert_slice {_operand(w, v)} into {acc}"
               f"[{', '.join(map(str, offsets))}] [{', '.join(map(str, v.type.shape))}] "
               f"[{', '.join(['1'] * y.type.rank)}] : {ttype(v.type.shape)} into "
               f"{ttype(y.type.shape)}")
        acc, start = name, start + v.type.shape[axis]
    w.names[y] = acc


@lowers("attention")
def _attention(w, op):
    q, k, v = op.inputs[:3]
    y = op.output
    _f32(op, q, k, v, y)
    if len(op.inputs) > 3 and op.inputs[3].type.dtype.name != "bool":
        _f32(op, op.inputs[3])
    (L, E), S = q.type.shape[-2:], k.type.shape[-2]
    batch = y.type.shape[:-2]
    nb = len(batch)
    scores = batch + (L, S)
    dims = _dims(nb + 3)  # batch, l, s, e

    def bmap(t, last):  # an operand broadcast over the batch, then its two last axes
        pad = nb - (t.rank - 2)
        return _map(nb + 3, [("0" if d == 1 and batch[pad + i] != 1 else dims[pad + i])
                             for i, d in enumerate(t.shape[:-2])] + last)
    scale = float(np.float32(op.attrs["scale"] or 1 / math.sqrt(E)))
    init = w.filled(scores, "0.0")
    s = w.generic([(_operand(w, q), ttype(q.type.shape)), (_operand(w, k), ttype(k.type.shape))],
                  scores, [bmap(q.type, [dims[nb], dims[nb + 2]]),
                           bmap(k.type, [dims[nb + 1], dims[nb + 2]]),
                           _map(nb + 3, dims[:nb + 2])],
                  lambda a: [f"%t0 = arith.mulf {a[0]}, {a[1]} : f32",
                             f"%t1 = arith.addf {a[2]}, %t0 : f32", "%t1"],
                  reductions=(nb + 2,), init=init)
    rank = len(scores)
    ident = _map(rank, _dims(rank))
    body = [f"arith.constant {scale!r} : f32", "arith.mulf {x}, %t0 : f32"]
    if op.attrs["softcap"]:
        cap = float(np.float32(op.attrs["softcap"]))
        body += [f"arith.constant {cap!r} : f32", "arith.divf %t1, %t2 : f32",
                 "math.tanh %t3 : f32", "arith.mulf %t2, %t4 : f32"]
    s = w.generic([(s, ttype(scores))], scores, [ident, ident],
                  lambda a: _body(body, x=a[0]))
    if op.attrs["causal"]:  # key j > query i + offset: -inf
        off = op.attrs["causal_offset"]
        s = w.generic([(s, ttype(scores))], scores, [ident, ident], lambda a: [
            f"%i = linalg.index {rank - 2} : index", f"%j = linalg.index {rank - 1} : index",
            f"%o = arith.constant {off} : index", "%io = arith.addi %i, %o : index",
            "%far = arith.cmpi sgt, %j, %io : index", "%ninf = arith.constant 0xFF800000 : f32",
            f"%t0 = arith.select %far, %ninf, {a[0]} : f32", "%t0"])
    if len(op.inputs) > 3:  # a float mask is added; a bool one keeps the keys it holds
        m = op.inputs[3]
        boolean = m.type.dtype.name == "bool"
        s = w.generic([(s, ttype(scores)), (_operand(w, m), vtype(m))], scores,
                      [ident, _broadcast_map(m.type.shape, rank, scores), ident],
                      lambda a: [f"%t0 = arith.addf {a[0]}, {a[1]} : f32", "%t0"] if not boolean
                      else ["%t0 = arith.constant 0xFF800000 : f32",
                            f"%t1 = arith.select {a[1]}, {a[0]}, %t0 : f32", "%t1"])
    flat = _reshaped(w, s, scores, (math.prod(scores[:-1]), S))
    p = _softmax_rows(w, flat, (math.prod(scores[:-1]), S), masked_zero=True)
    p = _reshaped(w, p, (math.prod(scores[:-1]), S), scores)
    init = w.filled(y.type.shape, "0.0")
    dims = _dims(nb + 3)  # batch, l, e, s
    w.names[y] = w.generic([(p, ttype(scores)), (_operand(w, v), ttype(v.type.shape))],
                           y.type.shape, [_map(nb + 3, dims[:nb] + [dims[nb], dims[nb + 2]]),
                                          bmap(v.type, [dims[nb + 2], dims[nb + 1]]),
                                          _map(nb + 3, dims[:nb + 2])],
                           lambda a: [f"%t0 = arith.mulf {a[0]}, {a[1]} : f32",
                                      f"%t1 = arith.addf {a[2]}, %t0 : f32", "%t1"],
                           reductions=(nb + 2,), init=init)


def _softmax_rows(w, x, shape, masked_zero=False):
    """Softmax of x along its last axis. A row of -inf has no max to
    subtract (NaN, the softmax op's rule), or gives zeros (`masked_zero`:
    the attention op's rule for a query whose every key is masked)."""
    top = _reduce_last(w, x, shape, lambda acc, v: [f"%t0 = arith.maximumf {acc}, {v} : f32",
                                                    "%t0"], "0xFF800000")
    e = _rowwise(w, x, top, shape, ["arith.constant 0xFF800000 : f32",
                                    "arith.cmpf oeq, {r}, %t0 : f32",
                                    "arith.constant 0.0 : f32", "arith.select %t1, %t2, {r} : f32",
                                    "arith.subf {x}, %t3 : f32", "math.exp %t4 : f32"])
    total = _reduce_last(w, e, shape, lambda acc, v: [f"%t0 = arith.addf {acc}, {v} : f32",
                                                      "%t0"], "0.0")
    p = _rowwise(w, e, total, shape, ["arith.divf {x}, {r} : f32"])
    if not masked_zero:
        return p
    return _rowwise(w, p, top, shape, ["arith.constant 0xFF800000 : f32",
                                       "arith.cmpf oeq, {r}, %t0 : f32",
                                       "arith.constant 0.0 : f32",
                                       "arith.select %t1, %t2, {x} : f32"])


@lowers("fused")
def _fused(w, op):
    """A fused region: its body's ops in its function (each a call of its
    own where it needs one), the body's inputs being the function's."""
    for outer, inner in zip(op.inputs, op.body.inputs):
        w.names[inner] = w.names[outer]
    for body_op in op.body.ops:
        w.lower(body_op)
    for outer, inner in zip(op.outputs, op.body.outputs):
        w.names[outer] = _operand(w, inner)


# the typed elementwise ops, reductions, indexing and pooling register themselves
from hetc.ir import mlir_ops  # noqa: E402, F401
