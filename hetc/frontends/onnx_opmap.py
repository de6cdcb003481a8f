"""The op table of the ONNX frontend: one handler per (domain, op type).

A handler gets the importer `cx` (the current node's inputs through
`cx.input(i)` / `cx.static_input(i)` / `static_ints` / `static_scalar`,
`cx.opset`, `cx.error(...)`, `cx.room(...)` before building a constant from
shapes) and the node's attributes as a dict, and returns the node's outputs:
IR Values, or numpy arrays for values known at compile time (Shape, Range,
...). The importer has checked the node against its ONNX schema first.
Anything a handler cannot translate exactly raises `cx.error(...)` naming
what is missing.
"""

from __future__ import annotations

from math import prod

import numpy as np

from hetc.core.registry import Registry
from hetc.ir import dtypes

from . import resize as rz
from .onnx_tensors import MAX_STATIC_ELEMENTS, onnx_dtype, to_array

_TABLE = Registry("ONNX op handlers")


def onnx_op(*op_types, domain="ai.onnx"):
    return _TABLE.register(*((domain, t) for t in op_types))


def lookup(domain, op_type):
    return _TABLE.get((domain, op_type))


def supported_ops():
    return sorted(f"{d}::{t}" if d != "ai.onnx" else t for d, t in _TABLE)


def _op_type(cx):
    return cx.node.op_type


def _axes(axes, rank):
    return sorted(a % rank for a in axes) if rank else []


def _scalar(cx, value, like):
    return cx.const(np.asarray(value, like.type.dtype.storage))


# -- constants and shapes ---------------------------------------------------------------

@onnx_op("Constant")
def _constant(cx, a):
    if "value" in a:
        return to_array(a["value"])
    for key, dt in (("value_float", np.float32), ("value_floats", np.float32),
                    ("value_int", np.int64), ("value_ints", np.int64)):
        if key in a:
            return np.asarray(a[key], dt)
    raise cx.error(f"Constant with {', '.join(a) or 'no value'} is not supported "
                   f"(sparse and string constants are not)")


@onnx_op("Shape")
def _shape(cx, a):
    shape = np.array(cx.input(0).type.shape, np.int64)
    start, end = a.get("start", 0), a.get("end", None)
    return shape[slice(start, end)]


@onnx_op("Size")
def _size(cx, a):
    return np.array(cx.input(0).type.numel, np.int64)


@onnx_op("ConstantOfShape")
def _constant_of_shape(cx, a):
    shape = cx.static_ints(0, "the shape")
    if min(shape, default=0) < 0:
        raise cx.error(f"shape {shape} has a negative dimension")
    value = to_array(a["value"]).reshape(-1) if "value" in a else np.zeros(1, np.float32)
    if value.size != 1:
        raise cx.error(f"value must hold one element, it holds {value.size}")
    if prod(shape) > MAX_STATIC_ELEMENTS:  # large: filled when the model runs, not now
        return cx.add("expand", [cx.const(value.reshape(()))], {"shape": shape})
    return np.full(shape, value[0], value.dtype)


@onnx_op("Range")
def _range(cx, a):
    start, limit, delta = (cx.static_scalar(i, "Range bounds set the output size")
                           for i in range(3))
    if delta == 0:
        raise cx.error("Range with delta 0")
    count = max(int(np.ceil((float(limit) - float(start)) / float(delta))), 0)
    if count > MAX_STATIC_ELEMENTS:
        raise cx.error(f"Range of {count} elements: hetc computes Range at compile time, up to "
                       f"{MAX_STATIC_ELEMENTS}")
    return np.arange(start, limit, delta).astype(start.dtype)


@onnx_op("EyeLike")
def _eye_like(cx, a):
    x = cx.input(0)
    if x.type.rank != 2:
        raise cx.error("EyeLike needs a 2-D input")
    dt = onnx_dtype(a["dtype"], "EyeLike dtype") if "dtype" in a else x.type.dtype
    cx.room("EyeLike's matrix", x.type.numel)
    return np.eye(*x.type.shape, k=a.get("k", 0)).astype(dt.storage)


@onnx_op("Identity")
def _identity(cx, a):
    return cx.input(0)


@onnx_op("Dropout")
def _dropout(cx, a):
    if cx.has_input(2) and bool(cx.static_scalar(2, "training_mode", "iub")):
        raise cx.error("Dropout in training mode is not supported (inference only)")
    a.get("seed")  # only matters in training mode

    x = cx.input(0)
    if x.type.numel > MAX_STATIC_ELEMENTS:  # large: made when the model runs
        return [x, cx.add("expand", [cx.const(np.ones((), np.bool_))],
                          {"shape": list(x.type.shape)})]
    return [x, np.ones(x.type.shape, np.bool_)]


# -- casts ----------------------------------------------------------------------------------

_SATURATING = {"f8e4m3", "f8e4m3fnuz", "f8e5m2", "f8e5m2fnuz"}


def _cast_to(cx, x, dt, saturate):
    if dt.name == "f8e8m0":
        raise cx.error("casts to float8e8m0 (with its rounding modes) are not supported")
    if saturate and dt.name in _SATURATING and x.type.dtype.is_float:
        # saturate: out-of-range values (and infinities) clamp to the largest finite value
        import ml_dtypes

        hi = float(ml_dtypes.finfo(dt.storage).max)
        x = cx.add("minimum", [x, _scalar(cx, hi, x)])
        x = cx.add("maximum", [x, _scalar(cx, -hi, x)])
    return cx.cast(x, dt)


@onnx_op("Cast")
def _cast(cx, a):
    dt = onnx_dtype(a["to"], "Cast target")
    return _cast_to(cx, cx.input(0), dt, a.get("saturate", 1))


@onnx_op("CastLike")
def _cast_like(cx, a):
    return _cast_to(cx, cx.input(0), cx.input(1).type.dtype, a.get("saturate", 1))


# -- elementwise --------------------------------------------------------------------------

_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Equal": "equal",
           "Less": "less", "Greater": "greater", "LessOrEqual": "less_equal",
           "GreaterOrEqual": "greater_equal", "And": "logical_and", "Or": "logical_or",
           "Xor": "logical_xor", "BitwiseAnd": "bitwise_and", "BitwiseOr": "bitwise_or",
           "BitwiseXor": "bitwise_xor"}


@onnx_op(*_BINARY)
def _binary(cx, a):
    return cx.add(_BINARY[_op_type(cx)], [cx.input(0), cx.input(1)])


@onnx_op("Pow")
def _pow(cx, a):
    x, y = cx.input(0), cx.input(1)
    return cx.add("pow", [x, cx.cast(y, x.type.dtype)])


@onnx_op("Mod")
def _mod(cx, a):
    x, y = cx.input(0), cx.input(1)
    fmod = a.get("fmod", 0)
    if not fmod and x.type.dtype.is_float:
        raise cx.error("Mod with fmod=0 on floats is invalid ONNX (fmod=1 is required)")
    return cx.add("fmod" if fmod else "mod", [x, y])


@onnx_op("BitShift")
def _bitshift(cx, a):
    kind = {"LEFT": "shift_left", "RIGHT": "shift_right"}.get(a.get("direction"))
    if kind is None:
        raise cx.error(f"BitShift direction must be LEFT or RIGHT, got {a.get('direction')!r}")
    return cx.add(kind, [cx.input(0), cx.input(1)])


_UNARY = {"Abs": "abs", "Neg": "neg", "Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh",
          "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Reciprocal": "reciprocal",
          "Floor": "floor", "Ceil": "ceil", "Round": "round", "Sign": "sign", "Sin": "sin",
          "Cos": "cos", "Tan": "tan", "Asin": "asin", "Acos": "acos", "Atan": "atan",
          "Sinh": "sinh", "Cosh": "cosh", "Asinh": "asinh", "Acosh": "acosh", "Atanh": "atanh",
          "Erf": "erf", "Not": "logical_not", "IsNaN": "isnan", "BitwiseNot": "bitwise_not"}


@onnx_op(*_UNARY)
def _unary(cx, a):
    return cx.add(_UNARY[_op_type(cx)], [cx.input(0)])


@onnx_op("IsInf")
def _isinf(cx, a):
    return cx.add("isinf", [cx.input(0)], {"detect_positive": bool(a.get("detect_positive", 1)),
                                           "detect_negative": bool(a.get("detect_negative", 1))})


@onnx_op("Gelu")
def _gelu(cx, a):
    return cx.add("gelu", [cx.input(0)], {"approximate": a.get("approximate", "none")})


@onnx_op("Where")
def _where(cx, a):
    return cx.add("where", [cx.input(0), cx.input(1), cx.input(2)])


class _Ew:
    """Small expression helper for activation decompositions."""

    def __init__(self, cx, like):
        self.cx, self.like = cx, like

    def c(self, v):
        return _scalar(self.cx, v, self.like)

    def __getattr__(self, kind):
        return lambda *xs: self.cx.add(kind, [x if not isinstance(x, (int, float)) else self.c(x)
                                              for x in xs])


def _float_math(fn):
    """A decomposition over float input 0: `fn(cx, attrs, x, e)` with e an
    expression helper. Narrow floats (bf16, f16) compute in f32 and round
    once at the end, as one fused kernel would, not after every step."""
    import functools

    @functools.wraps(fn)
    def handler(cx, a):
        x = cx.input(0)
        if not x.type.dtype.is_float:
            raise cx.error(f"{_op_type(cx)} needs a float input, got {x.type.dtype}")
        wide = cx.cast(x, dtypes.f32) if x.type.dtype.bits < 32 else x
        return cx.cast(fn(cx, a, wide, _Ew(cx, wide)), x.type.dtype)
    return handler


@onnx_op("LeakyRelu")
@_float_math
def _leaky_relu(cx, a, x, e):
    return e.where(e.less(x, 0), e.mul(x, a.get("alpha", 0.01)), x)


@onnx_op("Elu")
@_float_math
def _elu(cx, a, x, e):
    return e.where(e.less(x, 0), e.mul(e.sub(e.exp(x), 1), a.get("alpha", 1.0)), x)


@onnx_op("Selu")
@_float_math
def _selu(cx, a, x, e):
    alpha, gamma = a.get("alpha", 1.67326319217681884765625), a.get("gamma", 1.05070102214813232421875)
    neg = e.sub(e.mul(e.exp(x), alpha), alpha)
    return e.mul(e.where(e.greater(x, 0), x, neg), gamma)


@onnx_op("Celu")
@_float_math
def _celu(cx, a, x, e):
    alpha = a.get("alpha", 1.0)
    neg = e.mul(e.sub(e.exp(e.div(x, alpha)), 1), alpha)
    return e.add(e.maximum(x, 0), e.minimum(neg, 0))


@onnx_op("ThresholdedRelu")
@_float_math
def _thresholded_relu(cx, a, x, e):
    return e.where(e.greater(x, a.get("alpha", 1.0)), x, 0)


@onnx_op("HardSigmoid")
@_float_math
def _hard_sigmoid(cx, a, x, e):
    y = e.add(e.mul(x, a.get("alpha", 0.2)), a.get("beta", 0.5))
    return e.maximum(e.minimum(y, 1), 0)


@onnx_op("HardSwish")
@_float_math
def _hard_swish(cx, a, x, e):
    return e.mul(x, e.maximum(e.minimum(e.add(e.mul(x, 1 / 6), 0.5), 1), 0))


@onnx_op("Softplus")
@_float_math
def _softplus(cx, a, x, e):
    return e.log(e.add(e.exp(x), 1))


@onnx_op("Softsign")
@_float_math
def _softsign(cx, a, x, e):
    return e.div(x, e.add(e.abs(x), 1))


@onnx_op("Mish")
@_float_math
def _mish(cx, a, x, e):
    return e.mul(x, e.tanh(e.log(e.add(e.exp(x), 1))))


@onnx_op("Swish")
@_float_math
def _swish(cx, a, x, e):
    return e.mul(x, e.sigmoid(e.mul(x, a.get("alpha", 1.0))))


@onnx_op("PRelu")
@_float_math
def _prelu(cx, a, x, e):
    return e.where(e.less(x, 0), e.mul(x, cx.cast(cx.input(1), x.type.dtype)), x)


@onnx_op("Shrink")
@_float_math
def _shrink(cx, a, x, e):
    bias, lambd = a.get("bias", 0.0), a.get("lambd", 0.5)
    return e.where(e.less(x, -lambd), e.add(x, bias),
                   e.where(e.greater(x, lambd), e.sub(x, bias), 0))


@onnx_op("Clip")
def _clip(cx, a):
    x = cx.input(0)
    lo, hi = cx.input(1), cx.input(2)
    if lo is not None:
        x = cx.add("maximum", [x, lo])
    if hi is not None:
        x = cx.add("minimum", [x, hi])
    return x


_VARIADIC = {"Max": "maximum", "Min": "minimum", "Sum": "add", "Mean": "add"}


@onnx_op(*_VARIADIC)
def _variadic(cx, a):
    xs = [cx.input(i) for i in range(len(cx.node.input))]
    y = xs[0]
    for x in xs[1:]:
        y = cx.add(_VARIADIC[_op_type(cx)], [y, x])
    if _op_type(cx) == "Mean" and len(xs) > 1:
        y = cx.add("div", [y, _scalar(cx, len(xs), y)])
    return y


# -- linear algebra ---------------------------------------------------------------------

@onnx_op("MatMul")
def _matmul(cx, a):
    return cx.add("matmul", [cx.input(0), cx.input(1)])


def _transpose_last2(cx, x):
    perm = list(range(x.type.rank))
    perm[-2:] = perm[-2:][::-1]
    return cx.add("transpose", [x], {"perm": perm})


@onnx_op("Gemm")
def _gemm(cx, a):
    A, B, C = cx.input(0), cx.input(1), cx.input(2)
    alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
    if (a.get("transB", 0) and not a.get("transA", 0) and alpha == beta == 1.0
            and (C is None or C.type.shape == B.type.shape[:1])):
        return cx.add("linear", [A, B] + ([C] if C is not None else []))  # x @ w^T + b
    if a.get("transA", 0):
        A = _transpose_last2(cx, A)
    if a.get("transB", 0):
        B = _transpose_last2(cx, B)
    y = cx.add("matmul", [A, B])
    if alpha != 1.0:
        y = cx.add("mul", [y, _scalar(cx, alpha, y)])
    if C is not None:
        if beta != 1.0:
            C = cx.add("mul", [C, _scalar(cx, beta, C)])
        y = cx.add("add", [y, C])
    return y


# -- attention --------------------------------------------------------------------------------

def _heads_first(cx, x, heads, what):
    """[B, S, H*E] -> [B, H, S, E]; 4-D inputs already are."""
    if x.type.rank == 4:
        return x
    if x.type.rank != 3 or not heads:
        raise cx.error(f"Attention {what} must be 4-D, or 3-D with q_num_heads/kv_num_heads set")
    b, s, he = x.type.shape
    y = cx.add("reshape", [x], {"shape": [b, s, heads, he // heads]})
    return cx.add("transpose", [y], {"perm": [0, 2, 1, 3]})


def _repeat_heads(cx, x, groups):
    """[B, Hkv, S, E] -> [B, Hkv*groups, S, E], each kv head serving `groups` query heads."""
    if groups == 1:
        return x
    b, h, s, e = x.type.shape
    y = cx.add("reshape", [x], {"shape": [b, h, 1, s, e]})
    y = cx.add("expand", [y], {"shape": [b, h, groups, s, e]})
    return cx.add("reshape", [y], {"shape": [b, h * groups, s, e]})


def _window_mask(a, L, S, offset):
    """Keys j a query i may see under left/right window sizes (-1: unbounded),
    positions being absolute (query i sits at i + offset)."""
    left, right = a.get("left_window_size", -1), a.get("right_window_size", -1)
    if left < 0 and right < 0:
        return None
    i = np.arange(L)[:, None] + offset
    j = np.arange(S)[None, :]
    keep = np.ones((L, S), bool)
    if left >= 0:
        keep &= j >= i - left
    if right >= 0:
        keep &= j <= i + right
    return keep


@onnx_op("Attention")
def _attention(cx, a):
    if len(cx.node.output) > 3 and cx.node.output[3]:
        raise cx.error("Attention's qk_matmul_output is not supported")
    if cx.has_input(6):
        raise cx.error("Attention with nonpad_kv_seqlen (an external padded cache) is not supported")
    q_in = cx.input(0)
    q = _heads_first(cx, q_in, a.get("q_num_heads"), "Q")
    k = _heads_first(cx, cx.input(1), a.get("kv_num_heads"), "K")
    v = _heads_first(cx, cx.input(2), a.get("kv_num_heads"), "V")
    past_k, past_v = cx.input(4), cx.input(5)
    if (past_k is None) != (past_v is None):
        raise cx.error("Attention needs both past_key and past_value, or neither")
    past = 0
    if past_k is not None:
        past = past_k.type.shape[2]
        k = cx.add("concat", [past_k, k], {"axis": 2})
        v = cx.add("concat", [past_v, v], {"axis": 2})
    hq, hkv = q.type.shape[1], k.type.shape[1]
    if not hkv or hq % hkv:
        raise cx.error(f"Attention query heads {hq} are not a multiple of kv heads {hkv}")
    ins = [q, _repeat_heads(cx, k, hq // hkv), _repeat_heads(cx, v, hq // hkv)]
    mask = cx.input(3)
    if mask is not None and not (mask.type.dtype == dtypes.boolean or mask.type.dtype.is_float):
        raise cx.error(f"Attention's mask must be bool or float, got {mask.type.dtype}")
    cx.room("Attention's window mask", q.type.shape[2] * k.type.shape[2])
    window = _window_mask(a, q.type.shape[2], k.type.shape[2], past)
    if window is not None:
        keep = cx.const(window)
        if mask is None:
            mask = keep
        elif mask.type.dtype == dtypes.boolean:
            mask = cx.add("logical_and", [mask, keep])
        else:
            mask = cx.add("where", [keep, mask, _scalar(cx, -np.inf, mask)])
    if mask is not None:
        ins.append(mask)
    y = cx.add("attention", ins, {"causal": bool(a.get("is_causal", 0)), "causal_offset": past,
                                  "scale": a.get("scale", 0.0), "softcap": a.get("softcap", 0.0)})
    if q_in.type.rank == 3:
        b, h, s, e = y.type.shape
        y = cx.add("transpose", [y], {"perm": [0, 2, 1, 3]})
        y = cx.add("reshape", [y], {"shape": [b, s, h * e]})
    return [y, k, v]


# -- softmax family ------------------------------------------------------------------------

def _softmax_axis(cx, a, x):
    if cx.opset < 13:
        raise cx.error("Softmax before opset 13 flattens to 2-D; not supported")
    return a.get("axis", -1)


@onnx_op("Softmax")
def _softmax(cx, a):
    x = cx.input(0)
    return cx.add("softmax", [x], {"axis": _softmax_axis(cx, a, x)})


@onnx_op("LogSoftmax")
def _log_softmax(cx, a):
    x = cx.input(0)
    return cx.add("log_softmax", [x], {"axis": _softmax_axis(cx, a, x)})


@onnx_op("Hardmax")
def _hardmax(cx, a):
    x = cx.input(0)
    axis = _softmax_axis(cx, a, x)
    if not -x.type.rank <= axis < x.type.rank:
        raise cx.error(f"axis {axis} is out of range for rank {x.type.rank}")
    axis %= x.type.rank
    cx.room("Hardmax's index range", x.type.shape[axis])
    idx = cx.add("argmax", [x], {"axis": axis, "keepdims": True})
    iota = np.arange(x.type.shape[axis], dtype=np.int64).reshape(
        [-1 if i == axis else 1 for i in range(x.type.rank)])
    hit = cx.add("equal", [idx, cx.const(iota)])
    return cx.cast(hit, x.type.dtype)


# -- shape ops --------------------------------------------------------------------------------

@onnx_op("Reshape")
def _reshape(cx, a):
    x = cx.input(0)
    shape = cx.static_ints(1, "the target shape")
    if not a.get("allowzero", 0):
        if any(d == 0 and i >= x.type.rank for i, d in enumerate(shape)):
            raise cx.error(f"shape {shape} copies (0) a dimension the {x.type.rank}-D input lacks")
        shape = [x.type.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return cx.add("reshape", [x], {"shape": shape})


@onnx_op("Flatten")
def _flatten(cx, a):
    x = cx.input(0)
    axis = a.get("axis", 1)
    axis = axis + x.type.rank if axis < 0 else axis
    shape = [prod(x.type.shape[:axis]), prod(x.type.shape[axis:])]
    return cx.add("reshape", [x], {"shape": shape})


def _axes_arg(cx, a, index):
    """Axes from input `index` (newer opsets) or the `axes` attribute (older)."""
    if cx.has_input(index):
        return cx.static_ints(index, "axes")
    return list(a["axes"]) if "axes" in a else None


@onnx_op("Squeeze")
def _squeeze(cx, a):
    x = cx.input(0)
    axes = _axes_arg(cx, a, 1)
    if axes is None:
        axes = [i for i, d in enumerate(x.type.shape) if d == 1]
    axes = _axes(axes, x.type.rank)
    if any(x.type.shape[i] != 1 for i in axes):
        raise cx.error(f"Squeeze axes {axes} are not all of size 1 in {list(x.type.shape)}")
    shape = [d for i, d in enumerate(x.type.shape) if i not in axes]
    return cx.add("reshape", [x], {"shape": shape})


@onnx_op("Unsqueeze")
def _unsqueeze(cx, a):
    x = cx.input(0)
    axes = _axes_arg(cx, a, 1)
    rank = x.type.rank + len(axes)
    axes = _axes(axes, rank)
    dims = iter(x.type.shape)
    shape = [1 if i in axes else next(dims) for i in range(rank)]
    return cx.add("reshape", [x], {"shape": shape})


@onnx_op("Transpose")
def _transpose(cx, a):
    x = cx.input(0)
    perm = a.get("perm", list(range(x.type.rank))[::-1])
    return cx.add("transpose", [x], {"perm": [p % max(x.type.rank, 1) for p in perm]})


@onnx_op("Concat")
def _concat(cx, a):
    xs = [cx.input(i) for i in range(len(cx.node.input)) if cx.has_input(i)]
    return cx.add("concat", xs, {"axis": a["axis"]})


@onnx_op("Split")
def _split(cx, a):
    x = cx.input(0)
    axis = a.get("axis", 0)
    if not -x.type.rank <= axis < x.type.rank:
        raise cx.error(f"axis {axis} is out of range for rank {x.type.rank}")
    axis %= x.type.rank
    dim = x.type.shape[axis]
    if cx.has_input(1):
        sizes = cx.static_ints(1, "split sizes")
    elif "split" in a:
        sizes = list(a["split"])
    else:
        n = a.get("num_outputs", len(cx.node.output))
        if n < 1 or n != len(cx.node.output):
            raise cx.error(f"Split into num_outputs={n} parts, but the node has "
                           f"{len(cx.node.output)} outputs")
        chunk = -(-dim // n)
        sizes = [min(chunk, dim - i * chunk) for i in range(n)]
    out = cx.add("split", [x], {"axis": axis, "sizes": sizes})
    return out if isinstance(out, list) else [out]


@onnx_op("Slice")
def _slice(cx, a):
    x = cx.input(0)
    starts = cx.static_ints(1, "starts")
    ends = cx.static_ints(2, "ends")
    axes = cx.static_ints(3, "axes") if cx.has_input(3) else list(range(len(starts)))
    steps = cx.static_ints(4, "steps") if cx.has_input(4) else [1] * len(starts)
    if any(not -x.type.rank <= ax < x.type.rank for ax in axes):
        raise cx.error(f"axes {axes} are out of range for rank {x.type.rank}")
    axes = [ax % x.type.rank for ax in axes]
    return cx.add("slice", [x], {"axes": axes, "starts": starts, "ends": ends, "steps": steps})


@onnx_op("Gather")
def _gather(cx, a):
    return cx.add("gather", [cx.input(0), cx.input(1)], {"axis": a.get("axis", 0)})


@onnx_op("GatherElements")
def _gather_elements(cx, a):
    return cx.add("gather_elements", [cx.input(0), cx.input(1)], {"axis": a.get("axis", 0)})


@onnx_op("GatherND")
def _gather_nd(cx, a):
    """data[idx[..., 0], idx[..., 1], ...]: the index tuples become flat offsets
    into the leading dims, then one gather."""
    if a.get("batch_dims", 0):
        raise cx.error("GatherND with batch_dims > 0 is not supported")
    x, idx = cx.input(0), cx.input(1)
    if idx.type.rank < 1 or not 1 <= idx.type.shape[-1] <= x.type.rank:
        raise cx.error(f"GatherND indices {list(idx.type.shape)} must end in a dim of 1 to "
                       f"{x.type.rank} (the data's rank)")
    k = idx.type.shape[-1]
    lead, rest = list(x.type.shape[:k]), list(x.type.shape[k:])
    strides = np.array([int(np.prod(lead[i + 1:])) for i in range(k)], np.int64)
    idx = cx.cast(idx, dtypes.i64)
    dims = np.array(lead, np.int64)
    idx = cx.add("where", [cx.add("less", [idx, cx.const(np.zeros((), np.int64))]),
                           cx.add("add", [idx, cx.const(dims)]), idx])  # negative indices
    flat = cx.add("reduce_sum", [cx.add("mul", [idx, cx.const(strides)])], {"axes": [-1]})
    table = cx.add("reshape", [x], {"shape": [int(np.prod(lead))] + rest})
    return cx.add("gather", [table, flat], {"axis": 0})


@onnx_op("Expand")
def _expand(cx, a):
    shape = cx.static_ints(1, "the target shape")
    return cx.add("expand", [cx.input(0)], {"shape": shape})


@onnx_op("Tile")
def _tile(cx, a):
    x = cx.input(0)
    reps = cx.static_ints(1, "repeats")
    if len(reps) != x.type.rank:
        raise cx.error(f"Tile repeats {reps} do not match rank {x.type.rank}")
    # [a, b] -> [1, a, 1, b] -> expand [ra, a, rb, b] -> [ra*a, rb*b]
    inter = [d for s in x.type.shape for d in (1, s)]
    y = cx.add("reshape", [x], {"shape": inter})
    y = cx.add("expand", [y], {"shape": [d for r, s in zip(reps, x.type.shape) for d in (r, s)]})
    return cx.add("reshape", [y], {"shape": [r * s for r, s in zip(reps, x.type.shape)]})


@onnx_op("Pad")
def _pad(cx, a):
    x = cx.input(0)
    pads = cx.static_ints(1, "pads") if cx.has_input(1) else [int(p) for p in a["pads"]]
    value = 0.0
    if cx.has_input(2):
        value = float(cx.static_scalar(2, "the pad value", "iufb"))
    if cx.has_input(3):
        axes = _axes(cx.static_ints(3, "axes"), x.type.rank)
        if len(pads) != 2 * len(axes) or len(set(axes)) != len(axes):
            raise cx.error(f"{len(pads)} pads for axes {axes} (needs two per axis, each once)")
        full = [0] * (2 * x.type.rank)
        for i, ax in enumerate(axes):
            full[ax], full[ax + x.type.rank] = pads[i], pads[i + len(axes)]
        pads = full
    return cx.add("pad", [x], {"pads": pads, "mode": a.get("mode", "constant"), "value": value})


@onnx_op("Trilu")
def _trilu(cx, a):
    x = cx.input(0)
    k = cx.static_int(1, "k") if cx.has_input(1) else 0
    if x.type.rank < 2:
        raise cx.error(f"Trilu needs a tensor of rank >= 2, got {list(x.type.shape)}")
    n, m = x.type.shape[-2:]
    cx.room("Trilu's mask", n * m)
    keep = np.triu(np.ones((n, m), bool), k) if a.get("upper", 1) else np.tril(np.ones((n, m), bool), k)
    zero = np.zeros((), x.type.dtype.storage)
    return cx.add("where", [cx.const(keep), x, cx.const(zero)])


@onnx_op("DepthToSpace")
def _depth_to_space(cx, a):
    x = cx.input(0)
    b = a["blocksize"]
    n, c, h, w = x.type.shape
    if a.get("mode", "DCR") == "DCR":
        y = cx.add("reshape", [x], {"shape": [n, b, b, c // (b * b), h, w]})
        y = cx.add("transpose", [y], {"perm": [0, 3, 4, 1, 5, 2]})
    else:
        y = cx.add("reshape", [x], {"shape": [n, c // (b * b), b, b, h, w]})
        y = cx.add("transpose", [y], {"perm": [0, 1, 4, 2, 5, 3]})
    return cx.add("reshape", [y], {"shape": [n, c // (b * b), h * b, w * b]})


@onnx_op("SpaceToDepth")
def _space_to_depth(cx, a):
    x = cx.input(0)
    b = a["blocksize"]
    n, c, h, w = x.type.shape
    y = cx.add("reshape", [x], {"shape": [n, c, h // b, b, w // b, b]})
    crd = a.get("mode", "DCR") == "CRD"
    y = cx.add("transpose", [y], {"perm": [0, 1, 3, 5, 2, 4] if crd else [0, 3, 5, 1, 2, 4]})
    return cx.add("reshape", [y], {"shape": [n, c * b * b, h // b, w // b]})


@onnx_op("CumSum")
def _cumsum(cx, a):
    axis = cx.static_int(1, "axis")
    return cx.add("cumsum", [cx.input(0)], {"axis": axis, "exclusive": bool(a.get("exclusive", 0)),
                                            "reverse": bool(a.get("reverse", 0))})


@onnx_op("ArgMax", "ArgMin")
def _arg(cx, a):
    kind = "argmax" if _op_type(cx) == "ArgMax" else "argmin"
    return cx.add(kind, [cx.input(0)], {"axis": a.get("axis", 0), "keepdims": bool(a.get("keepdims", 1)),
                                        "select_last_index": bool(a.get("select_last_index", 0))})


@onnx_op("TopK")
def _topk(cx, a):
    """K is an attribute before opset 10, a constant input after; ties go to
    the lower index in both. sorted=0 allows any order: hetc's is sorted."""
    k = cx.static_int(1, "K") if cx.has_input(1) else a["k"]
    out = cx.add("topk", [cx.input(0)], {"k": k, "axis": a.get("axis", -1),
                                         "largest": bool(a.get("largest", 1)),
                                         "sorted": bool(a.get("sorted", 1))})
    return list(out)


# -- reductions -------------------------------------------------------------------------------

def _reduce(cx, a, kind, x):
    axes = _axes_arg(cx, a, 1)
    keep = bool(a.get("keepdims", 1))
    noop = a.get("noop_with_empty_axes", 0)
    if not axes:
        if noop:
            return None
        axes = []
    return cx.add(kind, [x], {"axes": axes, "keepdims": keep})


_REDUCE = {"ReduceSum": "reduce_sum", "ReduceMean": "reduce_mean", "ReduceMax": "reduce_max",
           "ReduceMin": "reduce_min", "ReduceProd": "reduce_prod"}


@onnx_op(*_REDUCE)
def _reduce_plain(cx, a):
    x = cx.input(0)
    return _reduce(cx, a, _REDUCE[_op_type(cx)], x) or x


@onnx_op("ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp")
def _reduce_composite(cx, a):
    x = cx.input(0)
    op = _op_type(cx)
    pre = {"ReduceL1": "abs", "ReduceLogSumExp": "exp"}.get(op)
    if op in ("ReduceL2", "ReduceSumSquare"):
        inner = cx.add("mul", [x, x])
    else:
        inner = cx.add(pre, [x]) if pre else x
    y = _reduce(cx, a, "reduce_sum", inner)
    if y is None:
        y = inner
    post = {"ReduceL2": "sqrt", "ReduceLogSum": "log", "ReduceLogSumExp": "log"}.get(op)
    return cx.add(post, [y]) if post else y


# -- resize -----------------------------------------------------------------------------------

@onnx_op("Resize")
def _resize(cx, a):
    x = cx.input(0)
    rank = x.type.rank
    mode = a.get("mode", "nearest")
    coord = a.get("coordinate_transformation_mode", "half_pixel")
    antialias = bool(a.get("antialias", 0))
    axes = [ax % rank for ax in a.get("axes", range(rank))]
    roi, scales, sizes = (cx.static_input(i, what) if cx.has_input(i) else None
                          for i, what in ((1, "roi"), (2, "scales"), (3, "sizes")))
    roi, scales, sizes = (None if v is None or v.size == 0 else v for v in (roi, scales, sizes))
    if (scales is None) == (sizes is None):
        raise cx.error("Resize needs exactly one of scales and sizes")
    given = scales if sizes is None else sizes
    if len(given) != len(axes):
        raise cx.error(f"Resize has {len(given)} {'scales' if sizes is None else 'sizes'} for "
                       f"{len(axes)} axes")
    try:
        out_shape, scale = rz.output_sizes(x.type.shape, axes, scales, sizes,
                                           a.get("keep_aspect_ratio_policy", "stretch"))
    except (ValueError, OverflowError, ZeroDivisionError) as e:
        raise cx.error(f"Resize cannot size its output: {e}") from None
    if min(out_shape) < 0:
        raise cx.error(f"Resize output shape {out_shape} has a negative dimension")
    cx.room("Resize's weights", sum(out_shape[ax] * x.type.shape[ax] for ax in axes))
    if antialias and any(scale[ax] < 1 for ax in axes):
        raise cx.error("Resize with antialias while downscaling is not supported")
    if mode != "nearest" and not x.type.dtype.is_float:
        raise cx.error(f"Resize mode {mode} on {x.type.dtype} is not supported")
    if mode not in ("nearest", "linear", "cubic"):
        raise cx.error(f"Resize mode {mode!r} is not supported")
    nearest_mode = a.get("nearest_mode", "round_prefer_floor")
    cubic_a, exclude = a.get("cubic_coeff_a", -0.75), bool(a.get("exclude_outside", 0))
    fill = a.get("extrapolation_value", 0.0)
    wide = x if mode == "nearest" or x.type.dtype.bits >= 32 else cx.cast(x, dtypes.f32)
    y, outside_any = wide, None
    for ax in axes:
        n_in, n_out = x.type.shape[ax], out_shape[ax]
        if n_in == n_out and scale[ax] == 1.0 and coord != "tf_crop_and_resize":
            continue
        ax_roi = None
        if roi is not None and len(roi) == 2 * rank:
            ax_roi = (float(roi[ax]), float(roi[ax + rank]))
        elif roi is not None:  # roi given for `axes` only
            i = axes.index(ax)
            ax_roi = (float(roi[i]), float(roi[i + len(axes)]))
        try:
            coords, outside = rz.source_coords(coord, n_out, n_in, scale[ax], ax_roi)
            if mode == "nearest":
                idx = rz.nearest_index(coords, n_in, nearest_mode)
                y = cx.add("gather", [y, cx.const(idx)], {"axis": ax})
            else:
                m = rz.weight_matrix(coords, n_in, mode, cubic_a, exclude)
                y = rz.apply_along(cx.add, cx.const, y, ax, m)
        except ValueError as e:
            raise cx.error(str(e)) from None
        if outside is not None and outside.any():
            shape = [1] * rank
            shape[ax] = n_out
            o = outside.reshape(shape)
            outside_any = o if outside_any is None else (outside_any | o)
    if outside_any is not None:
        y = cx.add("where", [cx.const(outside_any), _scalar(cx, fill, y), y])
    return cx.cast(y, x.type.dtype)


# -- convolution and pooling ------------------------------------------------------------------

def _spatial_pads(cx, a, pads, in_sizes, kernel, strides, dilations):
    """[top, left, bottom, right] from `pads` (ONNX order) or auto_pad, for 2-D windows."""
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        if len(pads) != 4:
            raise cx.error(f"pads {list(pads)} must be 4 numbers for a 2-D window")
        return [pads[0], pads[1], pads[2], pads[3]]
    if auto == "VALID":
        return [0, 0, 0, 0]
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise cx.error(f"auto_pad {auto!r} is not supported")
    lo, hi = [], []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
        total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
        small = total // 2
        lo.append(small if auto == "SAME_UPPER" else total - small)
        hi.append(total - lo[-1])
    return [lo[0], lo[1], hi[0], hi[1]]


def _as_2d(cx, x, what):
    """1-D windows run as 2-D ones over a height of 1; 3-D and up are unsupported."""
    if x.type.rank == 3:
        n, c, w = x.type.shape
        return cx.add("reshape", [x], {"shape": [n, c, 1, w]}), True
    if x.type.rank != 4:
        raise cx.error(f"{what} over {x.type.rank - 2} spatial dims is not supported (1-D and 2-D are)")
    return x, False


def _window_attrs(a, rank1d, key="kernel_shape", kernel=None):
    kernel = list(kernel if kernel is not None else a[key])
    strides = list(a.get("strides", [1] * len(kernel)))
    dil = list(a.get("dilations", [1] * len(kernel)))
    pads = list(a.get("pads", [0] * 2 * len(kernel)))
    if rank1d:
        kernel, strides, dil = [1] + kernel, [1] + strides, [1] + dil
        pads = [0, pads[0], 0, pads[1]] if pads else pads
    return kernel, strides, dil, pads


def _back_to_1d(cx, y, was1d):
    if not was1d:
        return y
    n, c, _, w = y.type.shape
    return cx.add("reshape", [y], {"shape": [n, c, w]})


@onnx_op("Conv")
def _conv(cx, a):
    x, w = cx.input(0), cx.input(1)
    x, was1d = _as_2d(cx, x, "Conv")
    if "kernel_shape" in a and list(a["kernel_shape"]) != list(w.type.shape[2:]):
        raise cx.error(f"kernel_shape {a['kernel_shape']} does not match the weight "
                       f"{list(w.type.shape)}")
    kernel, strides, dil, pads = _window_attrs(a, was1d, kernel=w.type.shape[2:])
    if was1d:
        w = cx.add("reshape", [w], {"shape": list(w.type.shape[:2]) + kernel})
    pads = _spatial_pads(cx, a, pads, x.type.shape[2:], kernel, strides, dil)
    ins = [x, w] + ([cx.input(2)] if cx.has_input(2) else [])
    y = cx.add("conv2d", ins, {"stride": strides, "padding": pads, "dilation": dil,
                               "groups": a.get("group", 1)})
    return _back_to_1d(cx, y, was1d)


def _insert_zeros(cx, x, strides):
    """[N, C, H, W] -> [N, C, (H-1)*sh+1, (W-1)*sw+1] with stride-1 zeros between cells."""
    n, c, h, w = x.type.shape
    sh, sw = strides
    if (sh, sw) == (1, 1):
        return x
    y = cx.add("reshape", [x], {"shape": [n, c, h, 1, w, 1]})
    y = cx.add("pad", [y], {"pads": [0, 0, 0, 0, 0, 0, 0, 0, 0, sh - 1, 0, sw - 1]})
    y = cx.add("reshape", [y], {"shape": [n, c, h * sh, w * sw]})
    return cx.add("slice", [y], {"axes": [2, 3], "starts": [0, 0],
                                 "ends": [(h - 1) * sh + 1, (w - 1) * sw + 1]})


@onnx_op("ConvTranspose")
def _conv_transpose(cx, a):
    """A transposed convolution is a convolution of the zero-dilated input
    with the flipped, in/out-swapped kernel, padded by d*(k-1) - pad."""
    x, w = cx.input(0), cx.input(1)
    x, was1d = _as_2d(cx, x, "ConvTranspose")
    g = a.get("group", 1)
    cin, cout_g = w.type.shape[:2]
    kernel, strides, dil, pads = _window_attrs(a, was1d, kernel=w.type.shape[2:])
    if was1d:
        w = cx.add("reshape", [w], {"shape": [cin, cout_g] + kernel})
    if "kernel_shape" in a and list(a["kernel_shape"]) != list(w.type.shape[2 + was1d:]):
        raise cx.error(f"kernel_shape {a['kernel_shape']} does not match the weight")
    out_pad = list(a.get("output_padding", [0] * (2 - was1d)))
    out_pad = [0] + out_pad if was1d else out_pad
    in_sizes = x.type.shape[2:]
    full = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    auto = a.get("auto_pad", "NOTSET")
    target = None
    if "output_shape" in a:
        target = ([1] + list(a["output_shape"]) if was1d else list(a["output_shape"]))[-2:]
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        target = target or [i * st for i, st in zip(in_sizes, strides)]
        lo, hi = [], []
        for i in range(2):
            total = strides[i] * (in_sizes[i] - 1) + out_pad[i] + full[i] - target[i]
            lo.append(total // 2 if auto == "SAME_UPPER" else total - total // 2)
            hi.append(total - lo[-1])
        pads = [lo[0], lo[1], hi[0], hi[1]]
    elif auto in ("NOTSET", "", "VALID"):
        pads = [0, 0, 0, 0] if auto == "VALID" else pads
        if target is not None:  # the explicit output shape extends (or cuts) at the end
            out_pad = [t - (strides[i] * (in_sizes[i] - 1) + full[i] - pads[i] - pads[i + 2])
                       for i, t in enumerate(target)]
    else:
        raise cx.error(f"auto_pad {auto!r} is not supported")
    # kernel [Cin, Cout/g, kh, kw] -> [Cout, Cin/g, kh, kw], flipped in space
    k = cx.add("reshape", [w], {"shape": [g, cin // g, cout_g] + kernel})
    k = cx.add("transpose", [k], {"perm": [0, 2, 1, 3, 4]})
    k = cx.add("reshape", [k], {"shape": [g * cout_g, cin // g] + kernel})
    k = cx.add("slice", [k], {"axes": [2, 3], "starts": [-1, -1], "ends": [-2 ** 63, -2 ** 63],
                              "steps": [-1, -1]})
    y = _insert_zeros(cx, x, strides)
    before = [f - 1 - p for f, p in zip(full, pads[:2])]
    after = [f - 1 - p + o for f, p, o in zip(full, pads[2:], out_pad)]
    # negative amounts crop: pad handles both
    y = cx.add("pad", [y], {"pads": [0, 0, before[0], before[1], 0, 0, after[0], after[1]]})
    ins = [y, k] + ([cx.input(2)] if cx.has_input(2) else [])
    y = cx.add("conv2d", ins, {"dilation": dil, "groups": g})
    return _back_to_1d(cx, y, was1d)


@onnx_op("MaxPool", "AveragePool")
def _pool(cx, a):
    if len(cx.node.output) > 1 and cx.node.output[1]:
        raise cx.error("MaxPool's Indices output is not supported")
    x, was1d = _as_2d(cx, cx.input(0), _op_type(cx))
    kernel, strides, dil, pads = _window_attrs(a, was1d)
    pads = _spatial_pads(cx, a, pads, x.type.shape[2:], kernel, strides, dil)
    attrs = {"kernel": kernel, "stride": strides, "padding": pads,
             "ceil_mode": bool(a.get("ceil_mode", 0))}
    if _op_type(cx) == "MaxPool":
        if a.get("storage_order", 0):
            raise cx.error("MaxPool storage_order=1 is not supported")
        y = cx.add("max_pool2d", [x], {**attrs, "dilation": dil})
    else:
        if any(d != 1 for d in dil):
            raise cx.error("AveragePool with dilations is not supported")
        y = cx.add("avg_pool2d", [x], {**attrs,
                                        "count_include_pad": bool(a.get("count_include_pad", 0))})
    return _back_to_1d(cx, y, was1d)


@onnx_op("GlobalAveragePool")
def _global_avg_pool(cx, a):
    return cx.add("global_avg_pool", [cx.input(0)])


@onnx_op("GlobalMaxPool")
def _global_max_pool(cx, a):
    x = cx.input(0)
    return cx.add("reduce_max", [x], {"axes": list(range(2, x.type.rank)), "keepdims": True})


# -- normalization --------------------------------------------------------------------------

@onnx_op("BatchNormalization")
def _batch_norm(cx, a):
    if a.get("training_mode", 0) or any(o for o in cx.node.output[1:]):
        raise cx.error("BatchNormalization in training mode is not supported (inference only)")
    a.get("momentum")  # only used in training mode
    ins = [cx.input(i) for i in range(5)]
    return cx.add("batch_norm", ins, {"eps": a.get("epsilon", 1e-5)})


def _channel_shaped(cx, v, rank):
    return cx.add("reshape", [v], {"shape": [-1] + [1] * (rank - 2)})


@onnx_op("InstanceNormalization")
@_float_math
def _instance_norm(cx, a, x, e):
    scale, bias = (cx.cast(cx.input(i), x.type.dtype) for i in (1, 2))
    axes = list(range(2, x.type.rank))
    mean = cx.add("reduce_mean", [x], {"axes": axes, "keepdims": True})
    d = e.sub(x, mean)
    var = cx.add("reduce_mean", [e.mul(d, d)], {"axes": axes, "keepdims": True})
    y = e.div(d, e.sqrt(e.add(var, a.get("epsilon", 1e-5))))
    return e.add(e.mul(y, _channel_shaped(cx, scale, x.type.rank)),
                 _channel_shaped(cx, bias, x.type.rank))


@onnx_op("MeanVarianceNormalization")
@_float_math
def _mvn(cx, a, x, e):
    axes = list(a.get("axes", [0, 2, 3]))
    mean = cx.add("reduce_mean", [x], {"axes": axes, "keepdims": True})
    d = e.sub(x, mean)
    var = cx.add("reduce_mean", [e.mul(d, d)], {"axes": axes, "keepdims": True})
    return e.div(d, e.add(e.sqrt(var), 1e-9))


def _affine(cx, y, w, b):
    """Apply a scale and bias that broadcast but do not have the normalized shape."""
    e = _Ew(cx, y)
    if w is not None:
        y = e.mul(y, w)
    if b is not None:
        y = e.add(y, b)
    return y


def _check_stash(cx, a):
    """Statistics are computed in f32 (the default stash type) or wider."""
    if a.get("stash_type", 1) != 1:
        raise cx.error(f"stash_type {a['stash_type']} is not supported (1, float32, is)")


@onnx_op("LayerNormalization")
def _layer_norm(cx, a):
    _check_stash(cx, a)
    x, w, b = cx.input(0), cx.input(1), cx.input(2)
    axis = a.get("axis", -1) % x.type.rank
    eps = a.get("epsilon", 1e-5)
    attrs = {"axis": axis, "eps": eps}
    norm_shape = x.type.shape[axis:]
    if w.type.shape == norm_shape and (b is None or b.type.shape == norm_shape):
        y = cx.add("layer_norm", [x, w] + ([b] if b is not None else []), attrs)
    else:
        y = _affine(cx, cx.add("layer_norm", [x], attrs), w, b)
    stats = [None, None]
    if any(o for o in cx.node.output[1:]):
        stats = _layer_norm_stats(cx, x, axis, eps)
    return [y] + stats


def _layer_norm_stats(cx, x, axis, eps):
    """Mean and 1/stddev over the normalized axes, in f32 (the stash type)."""
    xf = cx.cast(x, dtypes.f32)
    e = _Ew(cx, xf)
    axes = list(range(axis, x.type.rank))
    mean = cx.add("reduce_mean", [xf], {"axes": axes, "keepdims": True})
    d = e.sub(xf, mean)
    var = cx.add("reduce_mean", [e.mul(d, d)], {"axes": axes, "keepdims": True})
    return [mean, e.rsqrt(e.add(var, eps))]


@onnx_op("RMSNormalization")
def _rms_norm(cx, a):
    _check_stash(cx, a)
    x, w = cx.input(0), cx.input(1)
    axis = a.get("axis", -1) % x.type.rank
    attrs = {"axis": axis, "eps": a.get("epsilon", 1e-5)}
    if w.type.shape == x.type.shape[axis:]:
        return cx.add("rms_norm", [x, w], attrs)
    return _affine(cx, cx.add("rms_norm", [x], attrs), w, None)


@onnx_op("LRN")
@_float_math
def _lrn(cx, a, x, e):
    """x / (bias + alpha / size * (sum of x^2 over `size` neighbouring channels))^beta."""
    size = a["size"]
    n, c = x.type.shape[:2]
    rest = list(x.type.shape[2:])
    sq = cx.add("reshape", [e.mul(x, x)], {"shape": [n, 1, c, int(np.prod(rest))]})
    lo = (size - 1) // 2
    window = cx.add("avg_pool2d", [sq], {"kernel": [size, 1], "stride": [1, 1],
                                         "padding": [lo, 0, size - 1 - lo, 0]})
    total = e.mul(cx.add("reshape", [window], {"shape": [n, c] + rest}), float(size))
    base = e.add(e.mul(total, a.get("alpha", 1e-4) / size), a.get("bias", 1.0))
    return e.div(x, e.pow(base, a.get("beta", 0.75)))


@onnx_op("LpNormalization")
@_float_math
def _lp_norm(cx, a, x, e):
    axis, p = a.get("axis", -1), a.get("p", 2)
    if p not in (1, 2):
        raise cx.error(f"LpNormalization p={p} is not supported (1 or 2)")
    mag = e.abs(x) if p == 1 else e.mul(x, x)
    norm = cx.add("reduce_sum", [mag], {"axes": [axis], "keepdims": True})
    norm = norm if p == 1 else e.sqrt(norm)
    return e.div(x, e.where(e.equal(norm, 0), 1, norm))  # an all-zero slice stays zero
