"""The graph as a TVM Relax module (`module.to_relax()`), so that TVM
compiles and runs the graph hetc runs: a peer on the same model, and a
third reference for hetc's semantics.

Dense float32 graphs map op for op onto Relax's operators (docs/tvm.md
lists them). TVM has no type for hetc's compressed weights, so quantized
and N:M weights are decoded to their f32 values (the same numbers the
interpreter multiplies by), with a warning naming how many; int8
activations (`act_group`) are written out with Relax ops (abs, max,
divide, round, multiply). Ops outside the table raise TargetError naming
them. TVM is imported only here, when asked.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from hetc.core.errors import TargetError
from hetc.core.registry import Registry
from hetc.ir.interpret import load_const
from hetc.ir.ops import slice_ranges

LOWER = Registry("relax exports")
lowers = LOWER.register

UNARY = {"neg": "negative", "abs": "abs", "exp": "exp", "log": "log", "tanh": "tanh",
         "sqrt": "sqrt", "rsqrt": "rsqrt", "erf": "erf", "sigmoid": "sigmoid"}
BINARY = {"add": "add", "sub": "subtract", "mul": "multiply", "div": "divide",
          "maximum": "maximum", "minimum": "minimum", "pow": "power"}


def tvm_modules():
    try:
        import tvm
        from tvm import relax
    except ImportError:
        raise TargetError("to_relax needs TVM: pip install apache-tvm") from None
    return tvm, relax


class Writer:
    def __init__(self, graph):
        self.g = graph
        self.tvm, self.relax = tvm_modules()
        self.op = self.relax.op
        self.bb = self.relax.BlockBuilder()
        self.values = {}
        self.decoded = 0

    def const(self, array):
        return self.relax.const(np.asarray(array, np.float32))

    def value(self, v):
        if v not in self.values:  # a constant operand
            t = v.type
            if t.quant is not None or t.nm is not None:
                self.decoded += 1
            self.values[v] = self.const(np.asarray(load_const(v.producer, self.g),
                                                   np.float32).reshape(t.shape))
        return self.values[v]

    def emit(self, expr):
        return self.bb.emit(expr)

    def run(self):
        relax = self.relax
        params = []
        for v in self.g.inputs:
            if v.type.dtype.name != "f32":
                raise TargetError(f"to_relax: input %{v.name} is {v.type.dtype} (float32 only "
                                  f"so far)")
            params.append(relax.Var(_name(v.name), relax.TensorType(
                tuple(v.type.shape), "float32")))
            self.values[v] = params[-1]
        with self.bb.function("main", params):
            with self.bb.dataflow():
                for i, op in enumerate(self.g.ops):
                    if op.kind == "const":
                        continue
                    if op.kind not in LOWER:
                        raise TargetError(f"to_relax: op #{i} {op.kind} (%{op.outputs[0].name})"
                                          f" is not exported yet (docs/tvm.md lists what is)")
                    for v in list(op.inputs) + list(op.outputs):
                        if v.type.value_dtype.name != "f32":
                            raise TargetError(f"to_relax: op #{i} {op.kind}: {v.type.dtype} "
                                              f"value %{v.name} (float32 only so far)")
                    LOWER[op.kind](self, op)
                outs = [self.values[v] for v in self.g.outputs]
                out = self.bb.emit_output(outs[0] if len(outs) == 1 else relax.Tuple(outs))
            self.bb.emit_func_output(out)
        if self.decoded:
            warnings.warn(f"to_relax: {self.decoded} compressed weight(s) decoded to float32 "
                          f"(TVM has no type for N:M or hetc's quantized weights)", stacklevel=3)
        return self.bb.get()


def _name(text):
    return "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in str(text))


def _set(w, op, expr):
    w.values[op.output] = w.emit(expr)


@lowers(*UNARY)
def _unary(w, op):
    _set(w, op, getattr(w.op, UNARY[op.kind])(w.value(op.inputs[0])))


@lowers("relu", "silu")
def _activation(w, op):
    _set(w, op, getattr(w.op.nn, op.kind)(w.value(op.inputs[0])))


@lowers("gelu")
def _gelu(w, op):
    fn = w.op.nn.gelu_tanh if op.attrs.get("approximate") == "tanh" else w.op.nn.gelu
    _set(w, op, fn(w.value(op.inputs[0])))


@lowers(*BINARY)
def _binary(w, op):
    a, b = (w.value(v) for v in op.inputs)
    _set(w, op, getattr(w.op, BINARY[op.kind])(a, b))


@lowers("reshape")
def _reshape(w, op):
    _set(w, op, w.op.reshape(w.value(op.inputs[0]), tuple(op.output.type.shape)))


@lowers("transpose")
def _transpose(w, op):
    _set(w, op, w.op.permute_dims(w.value(op.inputs[0]), list(op.attrs["perm"])))


@lowers("expand")
def _expand(w, op):
    _set(w, op, w.op.broadcast_to(w.value(op.inputs[0]), tuple(op.output.type.shape)))


@lowers("softmax")
def _softmax(w, op):
    _set(w, op, w.op.nn.softmax(w.value(op.inputs[0]), axis=op.attrs["axis"]))


@lowers("matmul")
def _matmul(w, op):
    _set(w, op, w.op.matmul(*(w.value(v) for v in op.inputs)))


def _fake_quant(w, x, shape, group):
    """x [..., K] quantized to int8 and back per token and group (act_group)."""
    op = w.op
    g = w.emit(op.reshape(x, tuple(shape[:-1]) + (shape[-1] // group, group)))
    scale = w.emit(op.divide(op.max(op.abs(g), axis=-1, keepdims=True), w.const(127.0)))
    safe = w.emit(op.where(op.equal(scale, w.const(0.0)), w.const(1.0), scale))
    q = w.emit(op.multiply(op.round(op.divide(g, safe)), scale))
    return w.emit(op.reshape(q, tuple(shape)))


@lowers("linear")
def _linear(w, op):
    x = w.value(op.inputs[0])
    if op.attrs.get("act_group"):
        x = _fake_quant(w, x, op.inputs[0].type.shape, op.attrs["act_group"])
    y = w.emit(w.op.matmul(x, w.op.permute_dims(w.value(op.inputs[1]), [1, 0])))
    if len(op.inputs) > 2:
        y = w.emit(w.op.add(y, w.value(op.inputs[2])))
    w.values[op.output] = y


@lowers("layer_norm", "rms_norm")
def _norm(w, op):
    x = op.inputs[0]
    axes = list(range(op.attrs["axis"] % x.type.rank, x.type.rank))
    inner = tuple(x.type.shape[axes[0]:])
    weight = w.value(op.inputs[1]) if len(op.inputs) > 1 else w.const(np.ones(inner))
    if op.kind == "rms_norm":
        _set(w, op, w.op.nn.rms_norm(w.value(x), weight, axes=axes, epsilon=op.attrs["eps"]))
        return
    bias = w.value(op.inputs[2]) if len(op.inputs) > 2 else w.const(np.zeros(inner))
    _set(w, op, w.op.nn.layer_norm(w.value(x), weight, bias, axes=axes,
                                    epsilon=op.attrs["eps"]))


@lowers("batch_norm")
def _batch_norm(w, op):
    scale, bias, mean, var = (np.asarray(load_const(v.producer, w.g), np.float32).reshape(-1)
                              for v in op.inputs[1:])
    inv = scale / np.sqrt(var + np.float32(op.attrs["eps"]))  # as the interpreter
    shape = (1, -1) + (1,) * (op.inputs[0].type.rank - 2)
    x = w.emit(w.op.subtract(w.value(op.inputs[0]), w.const(mean.reshape(shape))))
    x = w.emit(w.op.multiply(x, w.const(inv.reshape(shape))))
    _set(w, op, w.op.add(x, w.const(bias.reshape(shape))))


@lowers("conv2d")
def _conv2d(w, op):
    x = w.value(op.inputs[0])
    if op.attrs.get("act_group"):  # each pixel's channels: channels last, quantize, back
        n, c, h, wd = op.inputs[0].type.shape
        moved = w.emit(w.op.permute_dims(x, [0, 2, 3, 1]))
        x = w.emit(w.op.permute_dims(_fake_quant(w, moved, (n, h, wd, c), op.attrs["act_group"]),
                                     [0, 3, 1, 2]))
    y = w.emit(w.op.nn.conv2d(x, w.value(op.inputs[1]), strides=op.attrs["stride"],
                              padding=op.attrs["padding"], dilation=op.attrs["dilation"],
                              groups=op.attrs["groups"]))
    if len(op.inputs) > 2:
        y = w.emit(w.op.add(y, w.op.reshape(w.value(op.inputs[2]), (1, -1, 1, 1))))
    w.values[op.output] = y


@lowers("max_pool2d")
def _max_pool(w, op):
    _set(w, op, w.op.nn.max_pool2d(w.value(op.inputs[0]), pool_size=op.attrs["kernel"],
                                   strides=op.attrs.get("stride") or op.attrs["kernel"],
                                   padding=op.attrs["padding"],
                                   dilation=op.attrs.get("dilation", [1, 1]),
                                   ceil_mode=op.attrs["ceil_mode"]))


@lowers("global_avg_pool")
def _global_avg_pool(w, op):
    axes = list(range(2, op.inputs[0].type.rank))
    _set(w, op, w.op.mean(w.value(op.inputs[0]), axis=axes, keepdims=True))


@lowers("slice")
def _slice(w, op):
    ranges = slice_ranges(op.attrs, op.inputs[0].type.shape)
    axes = [a for a, _ in ranges]
    begin = [r.start if len(r) else 0 for _, r in ranges]
    end = [r.start + len(r) * r.step if len(r) else 0 for _, r in ranges]
    end = [e if e >= 0 else -(op.inputs[0].type.shape[a] + 1) for e, a in zip(end, axes)]
    _set(w, op, w.op.strided_slice(w.value(op.inputs[0]), axes, begin, end,
                                   [r.step for _, r in ranges]))


@lowers("split")
def _split(w, op):
    cuts = np.cumsum(op.attrs["sizes"])[:-1].tolist()
    parts = w.emit(w.op.split(w.value(op.inputs[0]), cuts, axis=op.attrs["axis"]))
    for i, out in enumerate(op.outputs):
        w.values[out] = w.emit(w.relax.TupleGetItem(parts, i))


@lowers("concat")
def _concat(w, op):
    _set(w, op, w.op.concat([w.value(v) for v in op.inputs], axis=op.attrs["axis"]))


@lowers("attention")
def _attention(w, op):
    q, k, v = (w.value(x) for x in op.inputs[:3])
    qt = op.inputs[0].type
    (L, E), S = qt.shape[-2:], op.inputs[1].type.shape[-2]
    scale = op.attrs["scale"] or 1 / math.sqrt(E)
    s = w.emit(w.op.multiply(w.op.matmul(q, w.op.permute_dims(
        k, list(range(op.inputs[1].type.rank - 2)) + [op.inputs[1].type.rank - 1,
                                                        op.inputs[1].type.rank - 2])),
        w.const(scale)))
    if op.attrs["softcap"]:
        cap = w.const(op.attrs["softcap"])
        s = w.emit(w.op.multiply(cap, w.op.tanh(w.op.divide(s, cap))))
    if op.attrs["causal"]:
        keep = np.tril(np.ones((L, S), bool), op.attrs["causal_offset"])
        s = w.emit(w.op.where(w.relax.const(keep), s, w.const(-np.inf)))
    if len(op.inputs) > 3:
        s = w.emit(w.op.add(s, w.value(op.inputs[3])))
    p = w.emit(w.op.nn.softmax(s, axis=-1))
    # a query whose every key is masked attends to nothing (zeros), as the IR says
    masked = w.emit(w.op.max(s, axis=-1, keepdims=True))
    p = w.emit(w.op.where(w.op.equal(masked, w.const(-np.inf)), w.const(0.0), p))
    _set(w, op, w.op.matmul(p, v))


def to_relax(graph):
    """The graph as a tvm.IRModule with one Relax function, `main`."""
    return Writer(graph).run()


def run(mod, inputs, target="llvm") -> list:
    """Compile a module from to_relax with TVM for `target` and run it on the CPU."""
    tvm, relax = tvm_modules()
    vm = relax.VirtualMachine(tvm.compile(mod, target=target), tvm.cpu())
    out = vm["main"](*(tvm.runtime.tensor(np.ascontiguousarray(x, np.float32)) for x in inputs))
    outs = list(out) if not hasattr(out, "numpy") else [out]
    return [o.numpy() for o in outs]
