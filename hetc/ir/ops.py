"""The op table: for every op kind, its operands, typed attributes with
defaults, its shape/dtype inference and its traits (what passes and backends
ask of an op instead of keeping their own lists of kinds). Its numpy
semantics live in `hetc.ir.interpret`, one function per kind.

Adding an op = one `define(...)` here + one function in interpret.py + its
importer entries (frontends) + tests; each backend lowers it or lists it as
refused (docs/ops.md is generated from these tables).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, prod
from typing import Callable

import numpy as np

from . import dtypes
from .dtypes import DType
from .types import MAX_ELEMENTS, TensorType


class InferError(Exception):
    """An op's operands or attributes do not fit; the verifier adds where."""


REQUIRED = object()
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1  # integer attributes are 64-bit, as in ONNX
ATTR_TYPES = ("int", "float", "bool", "str", "ints", "floats", "dtype", "array")


@dataclass(frozen=True)
class Attr:
    name: str
    type: str
    default: object = REQUIRED

    def coerce(self, value, kind):
        t = self.type
        try:
            if t == "int" and isinstance(value, (int, np.integer)) and not isinstance(value, bool) \
                    and _I64_MIN <= value <= _I64_MAX:
                return int(value)
            if t == "float" and isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
                return float(value)
            if t == "bool" and isinstance(value, (bool, np.bool_)):
                return bool(value)
            if t == "str" and isinstance(value, str):
                return value
            if t == "ints" and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                   and _I64_MIN <= v <= _I64_MAX for v in value):
                return [int(v) for v in value]
            if t == "floats":
                return [float(v) for v in value]
            if t == "dtype":
                return value if isinstance(value, DType) else dtypes.get(value)
            if t == "array":
                return np.asarray(value)
        except (TypeError, KeyError, ValueError):
            pass
        raise InferError(f"attribute '{self.name}' of {kind} must be {t}, got {value!r}")


@dataclass(frozen=True)
class OpDef:
    kind: str
    operands: tuple[str, ...]  # "x", optional "b?", variadic "xs*"
    attrs: tuple[Attr, ...]
    infer_fn: Callable
    doc: str = ""
    # -- traits -------------------------------------------------------------
    #: the result maps element to element from operands of (broadcast) shape
    elementwise: bool = False
    #: operands broadcast against each other (numpy rules)
    broadcasting: bool = False
    #: swapping the two operands leaves the result unchanged
    commutative: bool = False
    #: b with op(a, b) == a for every a (a right identity), or None
    identity: float | None = None
    #: (operand index, reduction axis) of the operand that may be a stored
    #: weight compression passes prune and quantize, or None
    weight: tuple[int, int] | None = None
    #: operands that may be stored in another float type than the input
    #: (a weight and bias kept in bf16 beside f32 activations)
    stored_floats: tuple[int, ...] = ()
    #: a fused kernel may run elementwise ops on its result (an epilogue)
    takes_epilogue: bool = False
    #: may run inside an epilogue
    epilogue: bool = False
    #: the result is the operand's bytes unchanged (no computation)
    view: bool = False

    def attr(self, name):
        return next((a for a in self.attrs if a.name == name), None)

    def complete_attrs(self, given: dict) -> dict:
        out = {}
        for key in given:
            if self.attr(key) is None:
                known = ", ".join(a.name for a in self.attrs) or "none"
                raise InferError(f"{self.kind} has no attribute '{key}' (known: {known})")
        for a in self.attrs:
            if a.name in given:
                out[a.name] = a.coerce(given[a.name], self.kind)
            elif a.default is REQUIRED:
                raise InferError(f"{self.kind} needs attribute '{a.name}'")
            elif a.default is not None:
                out[a.name] = list(a.default) if isinstance(a.default, tuple) else a.default
        return out

    def operand_range(self):
        lo = sum(1 for o in self.operands if not o.endswith(("?", "*")))
        hi = None if any(o.endswith("*") for o in self.operands) else len(self.operands)
        return lo, hi

    def infer(self, types, attrs, body=None) -> list[TensorType]:
        lo, hi = self.operand_range()
        if len(types) < lo or (hi is not None and len(types) > hi):
            want = f"{lo}" if lo == hi else f"{lo}..{hi if hi is not None else 'n'}"
            raise InferError(f"{self.kind} takes {want} operands ({', '.join(self.operands)}), "
                             f"got {len(types)}")
        try:
            res = self.infer_fn(types, attrs, body) if self.kind == "fused" \
                else self.infer_fn(types, attrs)
        except (TypeError, ValueError, IndexError, KeyError, ZeroDivisionError, OverflowError,
                AttributeError) as e:  # operands or attributes no check above foresaw
            raise InferError(f"{self.kind} cannot take these operands or attributes "
                             f"({type(e).__name__}: {e})") from None
        return res if isinstance(res, list) else [res]


OPS: dict[str, OpDef] = {}


def define(kind, operands, attrs=(), doc="", **traits):
    """Decorator: `fn` infers `kind`'s result types; `traits` are OpDef's."""
    def deco(fn):
        if kind in OPS:
            raise ValueError(f"op '{kind}' is defined twice")
        OPS[kind] = OpDef(kind, tuple(operands), tuple(attrs), fn, doc or (fn.__doc__ or ""),
                          **traits)
        return fn
    return deco


def get_op(kind) -> OpDef:
    try:
        return OPS[kind]
    except KeyError:
        raise InferError(f"unknown op '{kind}'") from None


# -- helpers ------------------------------------------------------------------

def _axis(axis, rank, what="axis"):
    if not -rank <= axis < max(rank, 1):
        raise InferError(f"{what} {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


# dtype kinds (DType.kind) an op accepts
_FLOAT, _INT, _BOOL = ("float",), ("int", "uint"), ("bool",)
_KIND_WORDS = {"float": "float", "int": "integer", "uint": "integer", "bool": "bool"}


def _kinds(t: TensorType, kinds, who):
    """Reject `t` unless its (logical) dtype is of one of `kinds`."""
    if t.value_dtype.kind not in kinds:
        words = " or ".join(dict.fromkeys(_KIND_WORDS[k] for k in kinds))
        article = "an" if words[0] in "aeiou" else "a"
        raise InferError(f"{who} needs {article} {words} tensor, got {t.value_dtype}")


def _float(t: TensorType, who):
    _kinds(t, _FLOAT, who)


def _rank1(t: TensorType, who):
    if t.rank == 0:
        raise InferError(f"{who} needs a tensor of rank >= 1, got a scalar")


def _same_dtype(types, who):
    ds = {t.value_dtype for t in types}
    if len(ds) > 1:
        raise InferError(f"{who} operands have different dtypes: "
                         f"{', '.join(t.value_dtype.name for t in types)}")


def broadcast(*shapes):
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise InferError("shapes " + ", ".join(str(list(s)) for s in shapes)
                         + " do not broadcast") from None


def pool_out(size, k, s, pad_lo, pad_hi, dil, ceil_mode):
    """Output length of a pooling/conv window sweep, as PyTorch/ONNX define it."""
    span = size + pad_lo + pad_hi - dil * (k - 1) - 1
    if span < 0:
        raise InferError(f"window of {k} (dilation {dil}) does not fit in {size} + padding")
    out = (ceil(span / s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + pad_lo:
        out -= 1  # the last window must start inside the input or left padding
    return out


# -- constants ----------------------------------------------------------------

@define("const", [], [Attr("name", "str", None), Attr("value", "array", None)])
def _const(types, attrs):
    """A weight from the store (`@name`) or a small inline value."""
    if "value" in attrs:
        v = attrs["value"]
        return TensorType(v.shape, dtypes.from_numpy(v.dtype))
    raise InferError("a named const's type is declared, not inferred")


# -- elementwise ----------------------------------------------------------------

def _unary(kind, kinds=_FLOAT, result=None):
    """Elementwise on x of a dtype of `kinds`; the result has x's dtype unless
    `result` is given."""
    def infer(types, attrs):
        _kinds(types[0], kinds, kind)
        return TensorType(types[0].shape, result or types[0].value_dtype)
    return infer


# ops an epilogue of a fused linear/matmul/conv2d may run
_EPILOGUE = {"add", "sub", "mul", "div", "neg", "relu", "gelu", "silu", "sigmoid", "tanh", "exp",
             "sqrt", "rsqrt", "abs", "maximum", "minimum", "pow", "erf"}
_EW = {"elementwise": True}

for _k in ("sqrt", "rsqrt", "exp", "log", "tanh", "sigmoid", "silu", "erf",
           "floor", "ceil", "round", "reciprocal",
           "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh"):
    define(_k, ["x"], epilogue=_k in _EPILOGUE, **_EW)(_unary(_k))
define("gelu", ["x"], [Attr("approximate", "str", "none")], epilogue=True, **_EW)(_unary("gelu"))
define("sign", ["x"], **_EW)(_unary("sign", _FLOAT + _INT))
define("isnan", ["x"], **_EW)(_unary("isnan", result=dtypes.boolean))
define("isinf", ["x"], [Attr("detect_positive", "bool", True), Attr("detect_negative", "bool", True)],
       **_EW)(_unary("isinf", result=dtypes.boolean))
define("logical_not", ["x"], **_EW)(_unary("logical_not", _BOOL))
define("bitwise_not", ["x"], **_EW)(_unary("bitwise_not", _INT))


for _k in ("neg", "relu", "abs"):
    define(_k, ["x"], epilogue=True, **_EW)(_unary(_k, _FLOAT + _INT))


def _binary(kind, kinds=None):
    """Broadcasting a, b of one dtype (of `kinds`, when given); result of that dtype."""
    def infer(types, attrs):
        _same_dtype(types, kind)
        if kinds:
            _kinds(types[0], kinds, kind)
        return TensorType(broadcast(types[0].shape, types[1].shape), types[0].value_dtype)
    return infer


_BW = {"elementwise": True, "broadcasting": True}
_COMMUTATIVE = {"add", "mul", "maximum", "minimum", "logical_and", "logical_or", "logical_xor",
                "bitwise_and", "bitwise_or", "bitwise_xor", "equal"}
_IDENTITY = {"add": 0, "sub": 0, "mul": 1, "div": 1, "pow": 1}

for _k in ("add", "sub", "mul", "div", "maximum", "minimum"):
    define(_k, ["a", "b"], commutative=_k in _COMMUTATIVE, identity=_IDENTITY.get(_k),
           epilogue=True, **_BW)(_binary(_k))
define("pow", ["a", "b"], identity=1, epilogue=True, **_BW)(_binary("pow", _FLOAT + _INT))
for _k in ("mod", "fmod"):
    define(_k, ["a", "b"], **_BW)(_binary(_k, _FLOAT + _INT))
for _k in ("logical_and", "logical_or", "logical_xor"):
    define(_k, ["a", "b"], commutative=True, **_BW)(_binary(_k, _BOOL))
for _k in ("bitwise_and", "bitwise_or", "bitwise_xor"):
    define(_k, ["a", "b"], commutative=True, **_BW)(_binary(_k, _INT + _BOOL))
for _k in ("shift_left", "shift_right"):
    define(_k, ["a", "b"], **_BW)(_binary(_k, _INT))


def _compare(kind):
    def infer(types, attrs):
        _same_dtype(types, kind)
        return TensorType(broadcast(types[0].shape, types[1].shape), dtypes.boolean)
    return infer


for _k in ("equal", "less", "greater", "less_equal", "greater_equal"):
    define(_k, ["a", "b"], commutative=_k in _COMMUTATIVE, **_BW)(_compare(_k))


@define("where", ["cond", "a", "b"], **_BW)
def _where(types, attrs):
    if types[0].dtype != dtypes.boolean:
        raise InferError(f"where needs a bool condition, got {types[0].dtype}")
    _same_dtype(types[1:], "where")
    return TensorType(broadcast(*(t.shape for t in types)), types[1].value_dtype)


@define("cast", ["x"], [Attr("dtype", "dtype")], **_EW)
def _cast(types, attrs):
    return TensorType(types[0].shape, attrs["dtype"])


# -- linear algebra -----------------------------------------------------------------

@define("linear", ["x", "w", "b?"], [Attr("act_group", "int", 0)], weight=(1, -1),
        stored_floats=(1, 2), takes_epilogue=True)
def _linear(types, attrs):
    """y = x @ w^T + b, w is [out, in]. act_group G > 0: x is first quantized
    to int8 dynamically, symmetric, one scale (max |x| / 127) per token and
    group of G input features, as integer dot-product kernels compute."""
    x, w = types[0], types[1]
    _float(x, "linear")
    if w.rank != 2:
        raise InferError(f"linear weight must be 2-D [out, in], got {list(w.shape)}")
    if x.rank < 1 or x.shape[-1] != w.shape[1]:
        raise InferError(f"linear input {list(x.shape)} does not match weight {list(w.shape)}: "
                         f"last dim must be {w.shape[1]}")
    g = attrs["act_group"]
    if g < 0 or (g and w.shape[1] % g):
        raise InferError(f"linear act_group {g} does not divide the {w.shape[1]} input features")
    if len(types) == 3 and types[2].shape != (w.shape[0],):
        raise InferError(f"linear bias must be [{w.shape[0]}], got {list(types[2].shape)}")
    return TensorType(x.shape[:-1] + (w.shape[0],), x.value_dtype)


@define("matmul", ["a", "b"], weight=(1, 0), takes_epilogue=True)
def _matmul(types, attrs):
    a, b = types
    _same_dtype(types, "matmul")
    if a.rank == 0 or b.rank == 0:
        raise InferError("matmul operands must have rank >= 1")
    ash = (1,) + a.shape if a.rank == 1 else a.shape
    bsh = b.shape + (1,) if b.rank == 1 else b.shape
    if ash[-1] != bsh[-2]:
        raise InferError(f"matmul shapes {list(a.shape)} and {list(b.shape)} do not contract")
    shape = broadcast(ash[:-2], bsh[:-2]) + (ash[-2], bsh[-1])
    if a.rank == 1:
        shape = shape[:-2] + shape[-1:]
    if b.rank == 1:
        shape = shape[:-1]
    return TensorType(shape, a.value_dtype)


_CONV_ATTRS = [Attr("stride", "ints", (1, 1)), Attr("padding", "ints", (0, 0, 0, 0)),
               Attr("dilation", "ints", (1, 1))]


def _pads(attrs, who, x=None):
    """The padding attribute [top, left, bottom, right], checked (and, given
    the NCHW input type x, that the padded input is a tensor the IR takes)."""
    p = attrs["padding"]
    if len(p) != 4 or min(p) < 0:
        raise InferError(f"{who} padding is [top, left, bottom, right] >= 0, got {p}")
    if x is not None and prod(x.shape[:2]) * (x.shape[2] + p[0] + p[2]) * \
            (x.shape[3] + p[1] + p[3]) > MAX_ELEMENTS:
        raise InferError(f"{who} padding {p} makes the padded input larger than 2**48 elements")
    return p


def _pairs(attrs, who, *names):
    """Each named window attribute as a (height, width) pair of positive ints."""
    out = []
    for name in names:
        v = attrs.get(name)
        if v is None:  # a pooling stride defaults to the kernel
            v = attrs.get("kernel")
        if v is None or len(v) != 2 or min(v) < 1:
            raise InferError(f"{who} {name} must be two positive integers, got {v}")
        out.append(v)
    return out


@define("conv2d", ["x", "w", "b?"], _CONV_ATTRS + [Attr("groups", "int", 1),
                                                 Attr("act_group", "int", 0)],
        weight=(1, 1), stored_floats=(1, 2), takes_epilogue=True)
def _conv2d(types, attrs):
    """NCHW input, OIHW weight; padding is [top, left, bottom, right].
    act_group G > 0 (groups 1 only): x is first quantized to int8
    dynamically, symmetric, one scale (max |x| / 127) per pixel and group of
    G channels, as integer convolution kernels compute (linear's act_group,
    with pixels as tokens)."""
    x, w = types[0], types[1]
    _float(x, "conv2d")
    if x.rank != 4 or w.rank != 4:
        raise InferError(f"conv2d needs 4-D input and weight, got {list(x.shape)} and {list(w.shape)}")
    if min(w.shape[2:]) < 1:
        raise InferError(f"conv2d kernel {list(w.shape[2:])} is empty")
    g = attrs["groups"]
    if g < 1 or x.shape[1] != w.shape[1] * g or w.shape[0] % g:
        raise InferError(f"conv2d input channels {x.shape[1]} do not match weight "
                         f"{list(w.shape)} with groups={g}")
    if len(types) == 3 and types[2].shape != (w.shape[0],):
        raise InferError(f"conv2d bias must be [{w.shape[0]}], got {list(types[2].shape)}")
    ag = attrs["act_group"]
    if ag < 0 or (ag and (g != 1 or x.shape[1] % ag)):
        raise InferError(f"conv2d act_group {ag} needs groups=1 and to divide the "
                         f"{x.shape[1]} input channels (groups={g})")
    t, l, b, r = _pads(attrs, "conv2d", x)
    (sh, sw), (dh, dw) = _pairs(attrs, "conv2d", "stride", "dilation")
    oh = pool_out(x.shape[2], w.shape[2], sh, t, b, dh, False)
    ow = pool_out(x.shape[3], w.shape[3], sw, l, r, dw, False)
    return TensorType((x.shape[0], w.shape[0], oh, ow), x.value_dtype)


@define("attention", ["q", "k", "v", "mask?"], [Attr("causal", "bool", False),
                                                 Attr("causal_offset", "int", 0),
                                                 Attr("scale", "float", 0.0),
                                                 Attr("softcap", "float", 0.0)])
def _attention(types, attrs):
    """softmax(q k^T * scale + mask) v; scale 0 means 1/sqrt(head dim).

    q [..., L, E], k [..., S, E], v [..., S, Ev]; a bool mask keeps True
    positions, a float mask is added; causal keeps key j <= query i + offset
    (offset 0: PyTorch's top-left alignment; S - L: bottom-right, as with a
    KV cache). softcap c > 0 replaces the scaled scores s by c * tanh(s / c)
    before masking (Gemma 2). A query row whose keys are all masked gives zeros.
    """
    q, k, v = types[:3]
    _same_dtype(types[:3], "attention")
    _float(q, "attention")
    if min(q.rank, k.rank, v.rank) < 2 or q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise InferError(f"attention shapes q {list(q.shape)}, k {list(k.shape)}, "
                         f"v {list(v.shape)} do not fit [..., L, E], [..., S, E], [..., S, Ev]")
    batch = broadcast(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    if len(types) == 4:  # the mask broadcasts to the scores, never widens them (as in torch)
        scores = batch + (q.shape[-2], k.shape[-2])
        if broadcast(types[3].shape, scores) != scores:
            raise InferError(f"attention mask {list(types[3].shape)} does not broadcast to "
                             f"the scores {list(scores)}")
    return TensorType(batch + (q.shape[-2], v.shape[-1]), q.value_dtype)


# -- normalization ----------------------------------------------------------------

def _softmax(kind):
    def infer(types, attrs):
        _float(types[0], kind)
        _axis(attrs["axis"], types[0].rank)
        return types[0].plain()
    return infer


for _k in ("softmax", "log_softmax"):
    define(_k, ["x"], [Attr("axis", "int", -1)])(_softmax(_k))


@define("layer_norm", ["x", "w?", "b?"], [Attr("axis", "int", -1), Attr("eps", "float", 1e-5)])
def _layer_norm(types, attrs):
    """Normalize over dims axis..end; w and b have the shape of those dims."""
    x = types[0]
    _float(x, "layer_norm")
    ax = _axis(attrs["axis"], x.rank)
    for t in types[1:]:
        if t.shape != x.shape[ax:]:
            raise InferError(f"layer_norm weight/bias must be {list(x.shape[ax:])}, got {list(t.shape)}")
    return x.plain()


@define("rms_norm", ["x", "w?"], [Attr("axis", "int", -1), Attr("eps", "float", 1e-6)])
def _rms_norm(types, attrs):
    return _layer_norm(types, attrs)


@define("batch_norm", ["x", "scale", "bias", "mean", "var"], [Attr("eps", "float", 1e-5)])
def _batch_norm(types, attrs):
    """Inference batch norm over channel axis 1."""
    x = types[0]
    _float(x, "batch_norm")
    if x.rank < 2:
        raise InferError(f"batch_norm needs rank >= 2, got {list(x.shape)}")
    for t in types[1:]:
        if t.shape != (x.shape[1],):
            raise InferError(f"batch_norm parameters must be [{x.shape[1]}], got {list(t.shape)}")
    return x.plain()


# -- shape ops ---------------------------------------------------------------------

@define("reshape", ["x"], [Attr("shape", "ints")], view=True)
def _reshape(types, attrs):
    x, shape = types[0], list(attrs["shape"])
    if shape.count(-1) > 1 or any(d < -1 for d in shape):
        raise InferError(f"reshape shape {shape} may hold one -1 and no other negative")
    known = prod(d for d in shape if d != -1)
    if -1 in shape:
        if known == 0 or x.numel % known:
            raise InferError(f"cannot reshape {list(x.shape)} to {shape}")
        shape[shape.index(-1)] = x.numel // known
    if prod(shape) != x.numel:
        raise InferError(f"cannot reshape {list(x.shape)} ({x.numel} elements) to {shape}")
    return TensorType(shape, x.value_dtype)


@define("expand", ["x"], [Attr("shape", "ints")])
def _expand(types, attrs):
    """Broadcast x to `shape` (numpy rules)."""
    return TensorType(broadcast(types[0].shape, attrs["shape"]), types[0].value_dtype)


@define("transpose", ["x"], [Attr("perm", "ints")])
def _transpose(types, attrs):
    x, perm = types[0], attrs["perm"]
    if sorted(perm) != list(range(x.rank)):
        raise InferError(f"transpose perm {perm} is not a permutation of {x.rank} axes")
    return TensorType([x.shape[p] for p in perm], x.value_dtype)


@define("concat", ["xs*"], [Attr("axis", "int")])
def _concat(types, attrs):
    if not types:
        raise InferError("concat needs at least one operand")
    _same_dtype(types, "concat")
    r = types[0].rank
    ax = _axis(attrs["axis"], r)
    for t in types:
        if t.rank != r or t.shape[:ax] + t.shape[ax + 1:] != types[0].shape[:ax] + types[0].shape[ax + 1:]:
            raise InferError("concat operand shapes "
                             + ", ".join(str(list(t.shape)) for t in types)
                             + f" differ outside axis {attrs['axis']}")
    shape = list(types[0].shape)
    shape[ax] = sum(t.shape[ax] for t in types)
    return TensorType(shape, types[0].value_dtype)


@define("split", ["x"], [Attr("axis", "int"), Attr("sizes", "ints")])
def _split(types, attrs):
    """Several results, of `sizes` along `axis`."""
    x = types[0]
    ax = _axis(attrs["axis"], x.rank)
    if sum(attrs["sizes"]) != x.shape[ax] or min(attrs["sizes"], default=-1) < 0:
        raise InferError(f"split sizes {attrs['sizes']} do not add up to {x.shape[ax]}")
    return [TensorType(x.shape[:ax] + (s,) + x.shape[ax + 1:], x.value_dtype) for s in attrs["sizes"]]


def slice_ranges(attrs, shape) -> list:
    """(axis, range of the kept indices) for each axis a slice's attributes
    name, Python's rules applied (clamping, negative indices, steps)."""
    steps = attrs.get("steps") or [1] * len(attrs["axes"])
    return [(a % len(shape), range(shape[a % len(shape)])[slice(s, e, st)])
            for a, s, e, st in zip(attrs["axes"], attrs["starts"], attrs["ends"], steps)]


@define("slice", ["x"], [Attr("axes", "ints"), Attr("starts", "ints"), Attr("ends", "ints"),
                         Attr("steps", "ints", None)])
def _slice(types, attrs):
    """Python-style slicing (clamped, negative indices) on the given axes."""
    x = types[0]
    steps = attrs.get("steps") or [1] * len(attrs["axes"])
    if not len(attrs["axes"]) == len(attrs["starts"]) == len(attrs["ends"]) == len(steps):
        raise InferError("slice axes, starts, ends and steps must have the same length")
    if 0 in steps:
        raise InferError("slice step must not be 0")
    for a in attrs["axes"]:
        _axis(a, x.rank)
    shape = list(x.shape)
    for ax, kept in slice_ranges(attrs, x.shape):
        shape[ax] = len(kept)
    return TensorType(shape, x.value_dtype)


@define("gather", ["x", "indices"], [Attr("axis", "int", 0)])
def _gather(types, attrs):
    x, idx = types
    if not idx.dtype.is_int:
        raise InferError(f"gather indices must be integers, got {idx.dtype}")
    _rank1(x, "gather")
    ax = _axis(attrs["axis"], x.rank)
    return TensorType(x.shape[:ax] + idx.shape + x.shape[ax + 1:], x.value_dtype)


@define("gather_elements", ["x", "indices"], [Attr("axis", "int", 0)])
def _gather_elements(types, attrs):
    """x's element at `indices` along `axis`, at the same position elsewhere
    (`np.take_along_axis`); the result has the shape of indices."""
    x, idx = types
    if not idx.dtype.is_int:
        raise InferError(f"gather_elements indices must be integers, got {idx.dtype}")
    _rank1(x, "gather_elements")
    if idx.rank != x.rank:
        raise InferError(f"gather_elements indices {list(idx.shape)} must have the rank of "
                         f"x {list(x.shape)}")
    ax = _axis(attrs["axis"], x.rank)
    if any(i != ax and n > d for i, (n, d) in enumerate(zip(idx.shape, x.shape))):
        raise InferError(f"gather_elements indices {list(idx.shape)} are larger than "
                         f"x {list(x.shape)} outside axis {attrs['axis']}")
    return TensorType(idx.shape, x.value_dtype)


_PAD_MODES = ("constant", "reflect", "edge", "wrap")


@define("pad", ["x"], [Attr("pads", "ints"), Attr("mode", "str", "constant"),
                       Attr("value", "float", 0.0)])
def _pad(types, attrs):
    """pads: every axis's begin, then every axis's end (ONNX order); negative
    pads crop, before the padding is made."""
    x, pads, mode = types[0], attrs["pads"], attrs["mode"]
    if mode not in _PAD_MODES:
        raise InferError(f"pad mode must be one of {', '.join(map(repr, _PAD_MODES))}, "
                         f"got {mode!r}")
    if len(pads) != 2 * x.rank:
        raise InferError(f"pad needs {2 * x.rank} pads (all begins, then all ends) for "
                         f"{list(x.shape)}, got {pads}")
    if mode == "constant" and not x.value_dtype.is_float and not np.isfinite(attrs["value"]):
        raise InferError(f"pad value {attrs['value']} does not fit {x.value_dtype}")
    shape = []
    for i, d in enumerate(x.shape):
        b, e = pads[i], pads[i + x.rank]
        if d + b + e < 0:
            raise InferError(f"pads {b}, {e} crop more than the {d} elements of axis {i}")
        kept = d - max(-b, 0) - max(-e, 0)  # what cropping leaves to pad from
        if mode != "constant" and max(b, e) > 0:
            if kept <= 0:
                raise InferError(f"pad mode {mode!r} has nothing to copy on axis {i} "
                                 f"({d} elements, pads {b}, {e})")
            if mode == "reflect" and max(b, e) >= kept:
                raise InferError(f"reflect pads must be smaller than the axis: axis {i} has {kept} "
                                 f"elements (after cropping), pads {b}, {e}")
        shape.append(d + b + e)
    return TensorType(shape, x.value_dtype)


@define("embedding", ["ids", "table"])
def _embedding(types, attrs):
    """table[ids]: ids of any shape, table [vocab, dim]."""
    ids, table = types
    if not ids.dtype.is_int or table.rank != 2:
        raise InferError(f"embedding needs integer ids and a 2-D table, got {ids.dtype} ids "
                         f"and table {list(table.shape)}")
    return TensorType(ids.shape + table.shape[1:], table.value_dtype)


# -- reductions and pooling ----------------------------------------------------------

def _reduced_shape(x, axes, keepdims):
    if keepdims:
        return [1 if i in axes else d for i, d in enumerate(x.shape)]
    return [d for i, d in enumerate(x.shape) if i not in axes]


def _reduce(kind):
    def infer(types, attrs):
        x = types[0]
        axes = {_axis(a, x.rank) for a in attrs["axes"]} or set(range(x.rank))
        if attrs["axes"] and len(axes) != len(attrs["axes"]):
            raise InferError(f"{kind} axes {attrs['axes']} name an axis twice")
        return TensorType(_reduced_shape(x, axes, attrs["keepdims"]), x.value_dtype)
    return infer


for _k in ("reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod"):
    define(_k, ["x"], [Attr("axes", "ints", ()), Attr("keepdims", "bool", False)],
           doc="Reduce over `axes` (all axes when empty); an empty set gives the identity.")(
        _reduce(_k))


def _arg_reduce(kind):
    def infer(types, attrs):
        """Index (i64) of the first extreme along `axis`, or of the last with
        select_last_index."""
        x = types[0]
        _kinds(x, _FLOAT + _INT, kind)
        _rank1(x, kind)
        ax = _axis(attrs["axis"], x.rank)
        if x.shape[ax] == 0:
            raise InferError(f"{kind} over axis {attrs['axis']} of {list(x.shape)}: "
                             f"the axis is empty")
        return TensorType(_reduced_shape(x, {ax}, attrs["keepdims"]), dtypes.i64)
    return infer


for _k in ("argmax", "argmin"):
    define(_k, ["x"], [Attr("axis", "int", 0), Attr("keepdims", "bool", True),
                       Attr("select_last_index", "bool", False)])(_arg_reduce(_k))


@define("topk", ["x"], [Attr("k", "int"), Attr("axis", "int", -1), Attr("largest", "bool", True),
                        Attr("sorted", "bool", True)])
def _topk(types, attrs):
    """Two results: the k largest (smallest with largest=false) elements along
    `axis`, in descending (ascending) order, and their i64 indices. Ties go to
    the lower index first (ONNX TopK, a stable sort); NaN counts as larger than
    every number (PyTorch's rule): first with largest, last without. Order is
    the same with sorted=false (which only allows any order)."""
    x = types[0]
    _kinds(x, _FLOAT + _INT, "topk")
    _rank1(x, "topk")
    ax = _axis(attrs["axis"], x.rank)
    k, n = attrs["k"], x.shape[ax]
    if not 0 <= k <= n:
        raise InferError(f"topk k={k} is out of range [0, {n}] for axis {attrs['axis']} of "
                         f"{list(x.shape)}")
    shape = x.shape[:ax] + (k,) + x.shape[ax + 1:]
    return [TensorType(shape, x.value_dtype), TensorType(shape, dtypes.i64)]


@define("cumsum", ["x"], [Attr("axis", "int"), Attr("exclusive", "bool", False),
                          Attr("reverse", "bool", False)])
def _cumsum(types, attrs):
    """Running sums along `axis`; exclusive leaves each element out of its own
    sum, reverse sums from the end."""
    x = types[0]
    _kinds(x, _FLOAT + _INT, "cumsum")
    _rank1(x, "cumsum")
    _axis(attrs["axis"], x.rank)
    return x.plain()


_POOL_ATTRS = [Attr("kernel", "ints"), Attr("stride", "ints", None),
               Attr("padding", "ints", (0, 0, 0, 0)), Attr("ceil_mode", "bool", False)]


def _pool(types, attrs, who):
    x = types[0]
    if x.rank != 4:
        raise InferError(f"{who} needs a 4-D NCHW input, got {list(x.shape)}")
    t, l, b, r = _pads(attrs, who, x)
    (kh, kw), (sh, sw) = _pairs(attrs, who, "kernel", "stride")
    dh, dw = _pairs(attrs, who, "dilation")[0] if "dilation" in attrs else (1, 1)
    oh = pool_out(x.shape[2], kh, sh, t, b, dh, attrs["ceil_mode"])
    ow = pool_out(x.shape[3], kw, sw, l, r, dw, attrs["ceil_mode"])
    return TensorType((x.shape[0], x.shape[1], oh, ow), x.value_dtype)


@define("max_pool2d", ["x"], _POOL_ATTRS + [Attr("dilation", "ints", (1, 1))])
def _max_pool2d(types, attrs):
    """Stride defaults to the kernel; padding is [top, left, bottom, right]."""
    return _pool(types, attrs, "max_pool2d")


@define("avg_pool2d", ["x"], _POOL_ATTRS + [Attr("count_include_pad", "bool", True)])
def _avg_pool2d(types, attrs):
    return _pool(types, attrs, "avg_pool2d")


@define("global_avg_pool", ["x"])
def _global_avg_pool(types, attrs):
    x = types[0]
    if x.rank < 3:
        raise InferError(f"global_avg_pool needs N, C and spatial dims, got {list(x.shape)}")
    return TensorType(x.shape[:2] + (1,) * (x.rank - 2), x.value_dtype)


# -- regions -------------------------------------------------------------------------

@define("fused", ["xs*"], [Attr("pattern", "str", "")])
def _fused(types, attrs, body):
    """Ops with a body graph; one kernel per fused op in every backend."""
    if body is None:
        raise InferError("fused needs a body graph")
    if len(types) != len(body.inputs):
        raise InferError(f"fused has {len(types)} operands but its body takes {len(body.inputs)}")
    for i, (t, v) in enumerate(zip(types, body.inputs)):
        if t != v.type:
            raise InferError(f"fused operand {i} is {t} but body input %{v.name} is {v.type}")
    return [v.type for v in body.outputs]
