"""The reference interpreter: numpy semantics of every op, the ground truth
every backend is checked against.

Values are numpy arrays of their IR dtype's storage type. Float types narrower
than f32 (bf16, f16, fp8) are computed in f32 and rounded to their type after
each op, as hardware does. Quantized constants evaluate to their logical
(dequantized, f32) values.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import scipy.special

from hetc.core.errors import HetcError
from hetc.core.registry import Registry
from hetc.ir import dtypes
from hetc.ir.graph import Graph, Op
from hetc.ir.weights import aux_key

SEMANTICS = Registry("interpreter semantics")
semantics = SEMANTICS.register


def _wide(a):
    """Narrow float types (bf16, f16, fp8, ...) are computed in f32."""
    dt = dtypes.from_numpy(a.dtype)
    return a.astype(np.float32) if dt.is_float and dt.bits < 32 else a


# -- constants -------------------------------------------------------------------

def load_const(op: Op, graph: Graph) -> np.ndarray:
    """The logical value of a const op: quantized data is dequantized."""
    if "value" in op.attrs:
        return op.attrs["value"]
    name, t = op.attrs["name"], op.output.type
    data = graph.weights[name]
    q = t.quant
    if q is None:
        return data
    return q.dequantize(data, graph.weights[aux_key(name, "scale")],
                        graph.weights.get(aux_key(name, "zero")),
                        graph.weights.get(aux_key(name, "variant")))


# -- elementwise -----------------------------------------------------------------

_UNARY = {
    "neg": np.negative, "abs": np.abs, "sqrt": np.sqrt, "exp": np.exp, "log": np.log,
    "tanh": np.tanh, "relu": lambda x: np.maximum(x, 0).astype(x.dtype),
    "rsqrt": lambda x: 1 / np.sqrt(x),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "erf": lambda x: _erf(x),
    "floor": np.floor, "ceil": np.ceil,
    "round": np.rint,  # half to even
    "reciprocal": np.reciprocal, "sign": np.sign,  # sign(nan) is nan
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos,
    "atan": np.arctan, "sinh": np.sinh, "cosh": np.cosh, "asinh": np.arcsinh,
    "acosh": np.arccosh, "atanh": np.arctanh,
    "isnan": np.isnan, "logical_not": np.logical_not, "bitwise_not": np.invert,
}


def _erf(x):
    return scipy.special.erf(x).astype(x.dtype, copy=False)


@semantics(*_UNARY)
def _unary(op, x):
    return _UNARY[op.kind](x)


@semantics("isinf")
def _isinf(op, x):
    return ((np.isposinf(x) & op.attrs["detect_positive"])
            | (np.isneginf(x) & op.attrs["detect_negative"]))


@semantics("gelu")
def _gelu(op, x):
    if op.attrs["approximate"] == "tanh":
        c = np.sqrt(2 / np.pi).astype(x.dtype)
        return 0.5 * x * (1 + np.tanh(c * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + _erf(x / np.sqrt(2).astype(x.dtype)))


_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply,
           "maximum": np.maximum, "minimum": np.minimum, "equal": np.equal,
           "less": np.less, "greater": np.greater, "less_equal": np.less_equal,
           "greater_equal": np.greater_equal,
           # mod: the sign of the divisor (Python %), fmod: of the dividend (C fmod);
           # an integer divisor of 0 gives 0 (numpy's result), a float one nan
           "mod": np.mod, "fmod": np.fmod,
           "logical_and": np.logical_and, "logical_or": np.logical_or,
           "logical_xor": np.logical_xor, "bitwise_and": np.bitwise_and,
           "bitwise_or": np.bitwise_or, "bitwise_xor": np.bitwise_xor}


@semantics(*_BINARY)
def _binary(op, a, b):
    return _BINARY[op.kind](a, b)


def _is_int(a) -> bool:
    """An integer array, 4-bit and 2-bit ones (numpy kind 'V') included."""
    return dtypes.from_numpy(a.dtype).is_int


@semantics("pow")
def _pow(op, a, b):
    if not _is_int(a):
        return np.power(a, b)
    # integers (wrapping as they overflow); a negative exponent truncates
    # 1 / a**-b toward zero: 1 for a = 1, +-1 for a = -1, else 0 (0 for a = 0
    # too, as x / 0 is)
    neg = b < 0
    out = np.power(a, np.where(neg, 0, b).astype(b.dtype))
    small = np.where(a == -1, np.where(b % 2 == 0, 1, -1), np.where(a == 1, 1, 0))
    return np.where(neg, small, out).astype(out.dtype)


@semantics("div")
def _div(op, a, b):
    if _is_int(a):  # integer division truncates toward zero, as in C and ONNX
        # in integers: going through f64 loses digits of i64 values beyond 2^53
        q = np.floor_divide(a, b)
        q = q + ((q * b != a) & ((a < 0) != (b < 0))).astype(q.dtype)
        return np.where(b == 0, 0, q).astype(q.dtype)  # x / 0 is 0 for integers, as with mod
    return np.divide(a, b)


@semantics("shift_left", "shift_right")
def _shift(op, a, b):
    """Bits shifted out are lost; right shifts of signed types are arithmetic.
    A count below 0 or >= the bit width shifts everything out: 0, or -1 for a
    negative value shifted right (as in PyTorch). Spelled out rather than left to
    numpy, as C leaves such counts undefined."""
    dt = dtypes.from_numpy(a.dtype)
    if dt.bits < 8 * a.dtype.itemsize:  # i4, u4, ...: shifted in 8 bits, wrapped back after
        a = a.astype(np.int8 if dt.kind == "int" else np.uint8)
        b = b.astype(a.dtype)
    bits = 8 * a.dtype.itemsize
    ok = (b >= 0) & (b < bits)
    count = np.where(ok, b, 0).astype(a.dtype)
    if op.kind == "shift_left":
        out, spilled = np.left_shift(a, count), 0
    else:
        out, spilled = np.right_shift(a, count), np.where(a < 0, -1, 0).astype(a.dtype)
    return np.where(ok, out, spilled)


@semantics("where")
def _where(op, c, a, b):
    return np.where(c, a, b)


@semantics("cast")
def _cast(op, x):
    to = op.attrs["dtype"].storage
    try:
        return x.astype(to)
    except TypeError:  # ml_dtypes casts 4-bit to 4-bit through a numpy type only
        wide = np.int64 if not dtypes.from_numpy(x.dtype).is_float and \
            dtypes.from_numpy(to).is_int else np.float32
        return x.astype(wide).astype(to)


# -- linear algebra ---------------------------------------------------------------

def quantize_activations(x, group):
    """x as int8 dynamic quantization sees it: symmetric, one scale per token
    and group of `group` features (round half to even), dequantized."""
    g = x.reshape(*x.shape[:-1], x.shape[-1] // group, group).astype(np.float32)
    scale = np.abs(g).max(axis=-1, keepdims=True) / np.float32(127)
    q = np.rint(g / np.where(scale == 0, np.float32(1), scale))
    return (q * scale).reshape(x.shape).astype(x.dtype)


@semantics("linear")
def _linear(op, x, w, b=None):
    if op.attrs.get("act_group"):
        x = quantize_activations(x, op.attrs["act_group"])
    y = x @ w.astype(x.dtype).T
    return y if b is None else y + b.astype(x.dtype)


@semantics("matmul")
def _matmul(op, a, b):
    return np.matmul(a, b)


def _windows(x, kh, kw, sh, sw, dh, dw):
    """[N, C, OH, OW, kh, kw] views of a padded NCHW array."""
    v = np.lib.stride_tricks.sliding_window_view(x, (dh * (kh - 1) + 1, dw * (kw - 1) + 1),
                                                 axis=(2, 3))
    return v[:, :, ::sh, ::sw, ::dh, ::dw]


@semantics("conv2d")
def _conv2d(op, x, w, b=None):
    if op.attrs.get("act_group"):  # per pixel: the channels as the last axis
        x = np.moveaxis(quantize_activations(np.moveaxis(x, 1, -1), op.attrs["act_group"]), -1, 1)
    t, l, bo, r = op.attrs["padding"]
    g = op.attrs["groups"]
    xp = np.pad(x, ((0, 0), (0, 0), (t, bo), (l, r)))
    win = _windows(xp, w.shape[2], w.shape[3], *op.attrs["stride"], *op.attrs["dilation"])
    n, c, oh, ow = win.shape[:4]
    win = win.reshape(n, g, c // g, oh, ow, w.shape[2], w.shape[3])
    wg = w.astype(x.dtype).reshape(g, w.shape[0] // g, *w.shape[1:])
    y = np.einsum("ngchwij,gocij->ngohw", win, wg, optimize=True).reshape(n, w.shape[0], oh, ow)
    return y if b is None else y + b.astype(x.dtype).reshape(1, -1, 1, 1)


@semantics("attention")
def _attention(op, q, k, v, mask=None):
    scale = op.attrs["scale"] or 1 / math.sqrt(q.shape[-1])
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * np.asarray(scale, q.dtype)
    if op.attrs["softcap"]:
        cap = np.asarray(op.attrs["softcap"], q.dtype)
        s = cap * np.tanh(s / cap)
    L, S = q.shape[-2], k.shape[-2]
    if op.attrs["causal"]:
        s = np.where(np.tril(np.ones((L, S), bool), op.attrs["causal_offset"]), s, -np.inf)
    if mask is not None:
        s = np.where(mask, s, -np.inf) if mask.dtype == np.bool_ else s + mask.astype(s.dtype)
    p = _softmax_axis(s, -1)
    # a row with every key masked attends to nothing: zeros, as PyTorch gives
    p = np.where(np.isneginf(s).all(axis=-1, keepdims=True), 0, p).astype(p.dtype)
    return np.matmul(p, v)


# -- normalization -----------------------------------------------------------------

def _softmax_axis(x, axis):
    m = np.max(x, axis=axis, keepdims=True, initial=-np.inf)
    # as PyTorch and ONNX: a row holding nan or +inf gives nan throughout; a
    # row of -inf has no max to subtract (and gives nan too)
    e = np.exp(x - np.where(np.isneginf(m), 0, m))
    return e / np.sum(e, axis=axis, keepdims=True)


@semantics("softmax")
def _softmax(op, x):
    return _softmax_axis(x, op.attrs["axis"])


@semantics("log_softmax")
def _log_softmax(op, x):
    ax = op.attrs["axis"]
    m = np.max(x, axis=ax, keepdims=True, initial=-np.inf)
    # x - max - log(sum(exp(x - max))); a row of -inf has no max to subtract (and gives nan)
    s = x - np.where(np.isneginf(m), 0, m)
    return s - np.log(np.sum(np.exp(s), axis=ax, keepdims=True))


def _norm_axes(x, axis):
    return tuple(range(axis % x.ndim, x.ndim))


@semantics("layer_norm")
def _layer_norm(op, x, w=None, b=None):
    axes = _norm_axes(x, op.attrs["axis"])
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + np.asarray(op.attrs["eps"], x.dtype))
    y = y if w is None else y * w
    return y if b is None else y + b


@semantics("rms_norm")
def _rms_norm(op, x, w=None):
    axes = _norm_axes(x, op.attrs["axis"])
    ms = (x * x).mean(axis=axes, keepdims=True)
    y = x / np.sqrt(ms + np.asarray(op.attrs["eps"], x.dtype))
    return y if w is None else y * w


@semantics("batch_norm")
def _batch_norm(op, x, scale, bias, mean, var):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    inv = scale / np.sqrt(var + np.asarray(op.attrs["eps"], var.dtype))
    return (x - mean.reshape(shape)) * inv.reshape(shape) + bias.reshape(shape)


# -- shape ops --------------------------------------------------------------------

@semantics("reshape")
def _reshape(op, x):
    return x.reshape(op.attrs["shape"])


@semantics("expand")
def _expand(op, x):
    return np.broadcast_to(x, op.output.type.shape).copy()


@semantics("transpose")
def _transpose(op, x):
    return np.transpose(x, op.attrs["perm"])


@semantics("concat")
def _concat(op, *xs):
    return np.concatenate(xs, axis=op.attrs["axis"])


@semantics("split")
def _split(op, x):
    cuts = np.cumsum(op.attrs["sizes"])[:-1]
    return np.split(x, cuts, axis=op.attrs["axis"])


@semantics("slice")
def _slice(op, x):
    index = [slice(None)] * x.ndim
    steps = op.attrs.get("steps") or [1] * len(op.attrs["axes"])
    for a, s, e, st in zip(op.attrs["axes"], op.attrs["starts"], op.attrs["ends"], steps):
        index[a] = slice(s, e, st)
    return x[tuple(index)]


def _check_indices(op, idx, size):
    if idx.size and (idx.min() < -size or idx.max() >= size):
        raise HetcError(f"{op.kind}: index out of range [{-size}, {size}) "
                        f"(got {idx.min()}..{idx.max()})")


@semantics("gather")
def _gather(op, x, idx):
    ax = op.attrs["axis"]
    _check_indices(op, idx, x.shape[ax])
    return np.take(x, idx, axis=ax)


@semantics("gather_elements")
def _gather_elements(op, x, idx):
    ax = op.attrs["axis"] % x.ndim
    _check_indices(op, idx, x.shape[ax])
    idx = idx.astype(np.int64)
    index = list(np.indices(idx.shape, sparse=True))  # every other axis: its own position
    index[ax] = np.where(idx < 0, idx + x.shape[ax], idx)
    return x[tuple(index)]


@semantics("pad")
def _pad(op, x):
    r, pads, mode = x.ndim, op.attrs["pads"], op.attrs["mode"]
    if r == 0:
        return x.copy()
    begins, ends = pads[:r], pads[r:]
    grow = [(max(b, 0), max(e, 0)) for b, e in zip(begins, ends)]

    def crop(a):
        return a[tuple(slice(max(-b, 0), n - max(-e, 0)) for n, b, e in zip(a.shape, begins, ends))]

    if mode == "constant":
        # converted as `cast` converts (float to int truncates); padding before cropping
        # gives the same as after, and stays right when a crop reaches into the padding
        value = np.asarray(op.attrs["value"]).astype(x.dtype)
        return crop(np.pad(x, grow, constant_values=value))
    return np.pad(crop(x), grow, mode=mode)  # reflect, edge and wrap copy what cropping left


@semantics("embedding")
def _embedding(op, ids, table):
    _check_indices(op, ids, table.shape[0])
    return table[ids]


# -- reductions and pooling -------------------------------------------------------

def _extreme(dtype, high):
    """The highest (high) or lowest value of `dtype`: -inf does not convert to integers."""
    if dtype.kind == "f":
        return np.inf if high else -np.inf
    if dtype == np.bool_:
        return high
    info = ml_dtypes.iinfo(dtype)
    return info.max if high else info.min


_REDUCE = {"reduce_sum": np.sum, "reduce_mean": np.mean, "reduce_max": np.max,
           "reduce_min": np.min, "reduce_prod": np.prod}


@semantics(*_REDUCE)
def _reduce(op, x):
    """Over an empty set (a reduced axis of size 0) each gives its identity: sum 0,
    prod 1, max the lowest value (-inf), min the highest (+inf); mean nan (integers: 0)."""
    axes = tuple(op.attrs["axes"]) or None
    kw = dict(axis=axes, keepdims=op.attrs["keepdims"])
    if op.kind in ("reduce_max", "reduce_min"):
        kw["initial"] = _extreme(x.dtype, high=op.kind == "reduce_min")
    elif op.kind == "reduce_mean" and 0 in (x.shape[a] for a in axes or range(x.ndim)):
        return np.full(op.output.type.shape, np.nan if x.dtype.kind == "f" else 0, x.dtype)
    return np.asarray(_REDUCE[op.kind](x, **kw), x.dtype)


@semantics("argmax", "argmin")
def _arg_reduce(op, x):
    ax, keep = op.attrs["axis"], op.attrs["keepdims"]
    find = np.argmax if op.kind == "argmax" else np.argmin  # the first of ties; nan is extreme
    if op.attrs["select_last_index"]:
        return (x.shape[ax] - 1 - find(np.flip(x, ax), axis=ax, keepdims=keep)).astype(np.int64)
    return find(x, axis=ax, keepdims=keep).astype(np.int64)


def topk_order(x, axis, largest):
    """The positions of x along `axis` in topk's order: descending (ascending
    when not largest), ties in index order, NaN above every number. A stable
    sort whose last key is the primary one: NaN first (largest) or last, then
    the value, negated for descending (bitwise not for integers: no overflow,
    still order-reversing), then the index (stability)."""
    if x.dtype.kind == "f":
        nan = np.isnan(x)
        key = -x if largest else x
        return np.lexsort((key, ~nan if largest else nan), axis=axis)
    return np.argsort(~x if largest else x, axis=axis, kind="stable")


@semantics("topk")
def _topk(op, x):
    ax = op.attrs["axis"] % x.ndim
    order = topk_order(x, ax, op.attrs["largest"])
    idx = np.take(order, np.arange(op.attrs["k"]), axis=ax)
    return [np.take_along_axis(x, idx, axis=ax), idx.astype(np.int64)]


@semantics("cumsum")
def _cumsum(op, x):
    ax = op.attrs["axis"] % x.ndim
    y = np.flip(x, ax) if op.attrs["reverse"] else x
    y = np.cumsum(y, axis=ax, dtype=y.dtype)
    if op.attrs["exclusive"]:  # shift by one along the axis: each sum leaves its element out
        y = np.pad(y, [(1, 0) if i == ax else (0, 0) for i in range(x.ndim)])
        y = y[(slice(None),) * ax + (slice(0, -1),)]
    return np.flip(y, ax) if op.attrs["reverse"] else y


def _pool_windows(op, x, pad_value, overhang_value):
    """Pooling windows [N, C, OH, OW, kh, kw] over x, padded with `pad_value`
    (explicit padding) and then `overhang_value` (the extra cells ceil_mode
    reads past the padding)."""
    (kh, kw), (t, l, b, r) = op.attrs["kernel"], op.attrs["padding"]
    sh, sw = op.attrs.get("stride") or op.attrs["kernel"]
    dh, dw = op.attrs.get("dilation", [1, 1])
    oh, ow = op.output.type.shape[2:]
    extra_h = max(0, (oh - 1) * sh + dh * (kh - 1) + 1 - (x.shape[2] + t + b))
    extra_w = max(0, (ow - 1) * sw + dw * (kw - 1) + 1 - (x.shape[3] + l + r))
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=pad_value)
    xp = np.pad(xp, ((0, 0), (0, 0), (0, extra_h), (0, extra_w)), constant_values=overhang_value)
    return _windows(xp, kh, kw, sh, sw, dh, dw)[:, :, :oh, :ow]


@semantics("max_pool2d")
def _max_pool2d(op, x):
    low = _extreme(x.dtype, high=False)  # pads with the lowest value of x's type
    return _pool_windows(op, x, low, low).max(axis=(-2, -1))


@semantics("avg_pool2d")
def _avg_pool2d(op, x):
    total = _pool_windows(op, x, 0, 0).sum(axis=(-2, -1))
    # The divisor counts input cells, plus explicit padding when asked, never
    # the ceil-mode overhang (PyTorch and ONNX agree on this).
    ones = np.ones((1, 1) + x.shape[2:], x.dtype)
    count = _pool_windows(op, ones, 1 if op.attrs["count_include_pad"] else 0, 0)
    return total / count.sum(axis=(-2, -1))


@semantics("global_avg_pool")
def _global_avg_pool(op, x):
    return x.mean(axis=tuple(range(2, x.ndim)), keepdims=True)


# -- the interpreter loop ----------------------------------------------------------

@semantics("fused")
def _fused(op, *xs):
    return run_graph(op.body, list(xs))


def _round_to(value, t):
    """Cast a computed result to its declared IR dtype."""
    want = t.value_dtype.storage
    arr = np.asarray(value)
    return arr if arr.dtype == want else arr.astype(want)


def run_graph(graph: Graph, inputs: list[np.ndarray], trace=None) -> list[np.ndarray]:
    env = {}
    for v, a in zip(graph.inputs, inputs):
        env[v] = a
    for op in graph.ops:
        if op.kind == "const":
            results = [load_const(op, graph)]
        else:
            args = [_wide(env[v]) for v in op.inputs]
            try:
                with np.errstate(all="ignore"):
                    out = SEMANTICS[op.kind](op, *args)
            except MemoryError:  # the machine's limit, not a bug: say where it was met
                raise HetcError(f"@{graph.name}: not enough memory to run {op.kind} -> "
                                f"%{op.outputs[0].name} {op.outputs[0].type.text()} in the "
                                f"interpreter") from None
            results = out if isinstance(out, (list, tuple)) else [out]
        for v, r in zip(op.outputs, results):
            env[v] = _round_to(r, v.type)
            if trace is not None:
                trace(op, v, env[v])
    return [env[v] for v in graph.outputs]


def interpret(graph: Graph, inputs, trace=None) -> list[np.ndarray]:
    """Run `graph` on `inputs` (a list in input order, or a dict by name).

    Inputs are checked against the graph's input types; `trace(op, value,
    array)` is called for every result, e.g. to collect calibration data.
    """
    if isinstance(inputs, dict):
        missing = [v.name for v in graph.inputs if v.name not in inputs]
        if missing:
            raise HetcError(f"missing inputs: {', '.join(missing)}")
        inputs = [inputs[v.name] for v in graph.inputs]
    inputs = list(inputs)
    if len(inputs) != len(graph.inputs):
        raise HetcError(f"graph @{graph.name} takes {len(graph.inputs)} inputs, got {len(inputs)}")
    try:
        arrays = [v.type.coerce(a, f"input %{v.name}") for v, a in zip(graph.inputs, inputs)]
    except ValueError as e:
        raise HetcError(str(e)) from None
    return run_graph(graph, arrays, trace)
