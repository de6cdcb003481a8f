"""hetc IR -> openvino.Model, op by op, with the opset API.

Every op is built from OpenVINO's standard opset (opset16 names); ops
OpenVINO lacks are spelled with the ones it has (rms_norm, attention with its
causal offset and fully masked rows, dynamic int8 activations, C-style integer
division). Fused regions are expanded into their bodies. Shapes are static:
they come from the IR, which fixed them at import.

openvino is imported inside the functions that use it: `import hetc` must not
load heavy optional packages.
"""

from __future__ import annotations

import math

import numpy as np

from hetc.backends.c.text import identifier
from hetc.core.errors import TargetError
from hetc.core.registry import Registry
from hetc.ir.interpret import SEMANTICS

from .weights import OV_TYPES, constant, ov_type, weight

LOWER = Registry("OpenVINO lowerings")
# dtypes of computed values (and graph inputs and outputs): those OpenVINO
# computes and exchanges exactly. Narrower floats, 4-bit integers and f64 stand
# only for constants (f64 is computed in f32 by the CPU plugin; bf16, f8 and
# 4-bit values do not cross its Python API as such).
VALUE_TYPES = ("f32", "f16", "i64", "i32", "i16", "i8", "u64", "u32", "u16", "u8", "bool")
lowers = LOWER.register


def _o():
    import openvino.opset16 as o

    return o


def _i64(values):
    return np.array(values, np.int64)


# -- elementwise ------------------------------------------------------------------

_UNARY = {"abs": "absolute", "neg": "negative", "relu": "relu", "sqrt": "sqrt", "exp": "exp",
          "log": "log", "tanh": "tanh", "sigmoid": "sigmoid", "erf": "erf", "floor": "floor",
          "ceil": "ceiling", "sign": "sign", "sin": "sin", "cos": "cos", "tan": "tan",
          "asin": "asin", "acos": "acos", "atan": "atan", "sinh": "sinh", "cosh": "cosh",
          "asinh": "asinh", "acosh": "acosh", "atanh": "atanh", "isnan": "is_nan",
          "logical_not": "logical_not", "bitwise_not": "bitwise_not"}


# OpenVINO's CPU plugin turns a nan into a number in these (relu(nan) = 0,
# exp(nan) = inf); the IR, PyTorch and ONNX keep the nan
_NAN_DROPPING = ("relu", "exp")


@lowers(*_UNARY)
def _unary(op, x):
    y = getattr(_o(), _UNARY[op.kind])(x)
    return _keep_nan(op.inputs[0], x, y) if op.kind in _NAN_DROPPING else y


def _keep_nan(v, x, y):
    """y, but x where x (the node of IR value v) is nan, unless v cannot hold one."""
    if not v.type.dtype.is_float or _nan_free_constant(x):
        return y
    return _o().select(_o().is_nan(x), x, y)


def _nan_free_constant(x) -> bool:
    node = x.get_node() if hasattr(x, "get_node") else x
    return node.get_type_name() == "Constant" and not np.isnan(
        np.asarray(node.get_data(), np.float64)).any()


def _nan_anywhere(x, axes, keepdims=True):
    """Whether a nan lies anywhere along `axes`."""
    return _o().reduce_logical_or(_o().is_nan(x), _i64(axes), keepdims)


def _like(x, value):
    """`value` as a scalar constant of x's element type."""
    return _o().convert_like(_o().constant(np.float32(value)), x)


@lowers("rsqrt", "reciprocal")
def _reciprocal(op, x):
    o = _o()
    return o.divide(_like(x, 1), o.sqrt(x) if op.kind == "rsqrt" else x)


@lowers("silu")
def _silu(op, x):
    return _o().multiply(x, _o().sigmoid(x))


@lowers("round")
def _round(op, x):
    return _o().round(x, "half_to_even")


@lowers("gelu")
def _gelu(op, x):
    return _o().gelu(x, "tanh" if op.attrs["approximate"] == "tanh" else "erf")


@lowers("isinf")
def _isinf(op, x):
    return _o().is_inf(x, {"detect_positive": op.attrs["detect_positive"],
                           "detect_negative": op.attrs["detect_negative"]})


_BINARY = {"add": "add", "sub": "subtract", "mul": "multiply", "pow": "power",
           "equal": "equal", "less": "less", "greater": "greater", "less_equal": "less_equal",
           "greater_equal": "greater_equal", "logical_and": "logical_and",
           "logical_or": "logical_or", "logical_xor": "logical_xor",
           "bitwise_and": "bitwise_and", "bitwise_or": "bitwise_or", "bitwise_xor": "bitwise_xor"}


@lowers(*_BINARY)
def _binary(op, a, b):
    return getattr(_o(), _BINARY[op.kind])(a, b)


@lowers("maximum", "minimum")
def _extreme(op, a, b):
    """OpenVINO's Maximum and Minimum pick a number over a nan; the IR's
    pick the nan (so do clamp, relu6 and hardtanh, built from them)."""
    y = getattr(_o(), op.kind)(a, b)
    return _keep_nan(op.inputs[0], a, _keep_nan(op.inputs[1], b, y))


@lowers("div")
def _div(op, a, b):
    o = _o()
    if not op.output.type.dtype.is_int:
        return o.divide(a, b)
    # Divide floors integers by default (m_pythondiv); the IR truncates toward
    # zero, as C does. x / 0 is 0 in the IR, and never divided here.
    return _by_nonzero(o, a, b, lambda a, b: _truncating(o.divide(a, b)))


def _truncating(node):
    node.set_attribute("m_pythondiv", False)
    return node


def _by_nonzero(o, a, b, fn):
    """fn(a, b) where b != 0, else 0: integer division and remainders by zero
    give 0 in the IR."""
    zero = _like(a, 0)
    by_zero = o.equal(b, zero)
    r = fn(a, o.select(by_zero, _like(b, 1), b))
    return o.select(by_zero, o.broadcast(zero, o.shape_of(r)), r)


@lowers("mod", "fmod")
def _mod(op, a, b):
    o = _o()
    fn = o.floor_mod if op.kind == "mod" else o.mod  # divisor's sign; dividend's sign
    if not op.output.type.dtype.is_int:
        # OpenVINO gives nan for a finite value by an infinite one; the IR (numpy)
        # gives the value, or for mod the divisor when their signs differ
        keep = a
        if op.kind == "mod":
            same = o.logical_or(o.equal(a, _like(a, 0)),
                                o.equal(o.less(a, _like(a, 0)), o.less(b, _like(b, 0))))
            keep = o.select(same, a, b)
        special = o.logical_and(o.is_inf(b), o.is_finite(a))
        return o.select(special, keep, fn(a, b))
    return _by_nonzero(o, a, b, fn)


@lowers("shift_left", "shift_right")
def _shift(op, a, b):
    """Counts below 0 or of at least the bit width shift everything out (0,
    or -1 for a negative value shifted right), as the IR defines."""
    o = _o()
    bits = 8 * op.output.type.dtype.storage.itemsize
    ok = o.logical_and(o.greater_equal(b, _like(b, 0)), o.less(b, _like(b, bits)))
    count = o.select(ok, b, _like(b, 0))
    zero = _like(a, 0)
    if op.kind == "shift_left":
        out, spilled = o.bitwise_left_shift(a, count), o.broadcast(zero, o.shape_of(a))
    else:
        out = o.bitwise_right_shift(a, count)
        spilled = o.select(o.less(a, zero), _like(a, -1), zero)
    return o.select(ok, out, spilled)


@lowers("where")
def _where(op, c, a, b):
    return _o().select(c, a, b)


@lowers("cast")
def _cast(op, x):
    if op.attrs["dtype"].name == "bool" and op.inputs[0].type.dtype.is_float:
        return _o().not_equal(x, _like(x, 0))  # NaN is true, as in C; Convert makes it false
    return _o().convert(x, ov_type(op.attrs["dtype"], f"cast %{op.output.name}"))


# -- linear algebra ------------------------------------------------------------------

def quantize_activations(x, shape, group):
    """Dynamic symmetric int8 per token and group, dequantized (as the IR's
    linear act_group defines it)."""
    o = _o()
    k = shape[-1]
    g = o.reshape(x, _i64(list(shape[:-1]) + [k // group, group]), False)
    scale = o.divide(o.reduce_max(o.absolute(g), _i64([-1]), True), np.float32(127))
    safe = o.select(o.equal(scale, np.float32(0)), np.float32(1), scale)
    q = o.round(o.divide(g, safe), "half_to_even")
    return o.reshape(o.multiply(q, scale), _i64(shape), False)


@lowers("linear")
def _linear(op, x, w, b=None):
    o = _o()
    if op.attrs.get("act_group"):
        x = quantize_activations(x, op.inputs[0].type.shape, op.attrs["act_group"])
    y = o.matmul(x, o.convert_like(w, x), False, True)
    return y if b is None else o.add(y, o.convert_like(b, x))


@lowers("matmul")
def _matmul(op, a, b):
    return _o().matmul(a, b, False, False)


@lowers("conv2d")
def _conv2d(op, x, w, b=None):
    o = _o()
    t, l, bo, r = op.attrs["padding"]
    groups, wshape = op.attrs["groups"], op.inputs[1].type.shape
    if op.attrs.get("act_group"):  # per pixel: the channels as the last axis
        n, c, h, wd = op.inputs[0].type.shape
        x = o.transpose(quantize_activations(o.transpose(x, _i64([0, 2, 3, 1])), [n, h, wd, c],
                                             op.attrs["act_group"]), _i64([0, 3, 1, 2]))
    w = o.convert_like(w, x)
    args = (op.attrs["stride"], [t, l], [bo, r], op.attrs["dilation"])
    if groups == 1:
        y = o.convolution(x, w, *args)
    else:
        w = o.reshape(w, _i64([groups, wshape[0] // groups] + list(wshape[1:])), False)
        y = o.group_convolution(x, w, *args)
    if b is None:
        return y
    return o.add(y, o.reshape(o.convert_like(b, x), _i64([1, wshape[0], 1, 1]), False))


@lowers("attention")
def _attention(op, q, k, v, mask=None):
    """softmax(q k^T * scale [softcap] [causal] [+mask]) v; fully masked rows give 0."""
    o = _o()
    qt, kt = op.inputs[0].type, op.inputs[1].type
    scale = op.attrs["scale"] or 1 / math.sqrt(qt.shape[-1])
    s = o.multiply(o.matmul(q, k, False, True), _like(q, scale))
    if op.attrs["softcap"]:
        cap = _like(q, op.attrs["softcap"])
        s = o.multiply(cap, o.tanh(o.divide(s, cap)))
    minus_inf = _like(q, -np.inf)
    L, S = qt.shape[-2], kt.shape[-2]
    if op.attrs["causal"]:
        keep = np.tril(np.ones((L, S), bool), op.attrs["causal_offset"])
        s = o.select(o.constant(keep), s, minus_inf)
    if mask is not None:
        if op.inputs[3].type.dtype.name == "bool":
            s = o.select(mask, s, minus_inf)
        else:
            s = o.add(s, o.convert_like(mask, s))
    p = o.softmax(s, -1)
    dead = o.reduce_logical_and(o.is_inf(s, {"detect_positive": False}), _i64([-1]), True)
    p = o.select(dead, _like(q, 0), p)
    return o.matmul(p, v, False, False)


# -- normalization --------------------------------------------------------------------

@lowers("softmax", "log_softmax")
def _softmax(op, x):
    """A row holding a nan or +inf is nan throughout in the IR (as in PyTorch
    and ONNX); OpenVINO gives nan there and zeros elsewhere."""
    o = _o()
    y = getattr(o, op.kind)(x, op.attrs["axis"])
    odd = o.logical_or(o.is_nan(x), o.is_inf(x, {"detect_negative": False}))
    return o.select(o.reduce_logical_or(odd, _i64([op.attrs["axis"]]), True), _like(x, np.nan), y)


def _tail_axes(op):
    rank = op.inputs[0].type.rank
    return _i64(range(op.attrs["axis"] % rank, rank))


def _affine(x, w=None, b=None):
    o = _o()
    y = x if w is None else o.multiply(x, o.convert_like(w, x))
    return y if b is None else o.add(y, o.convert_like(b, x))


@lowers("layer_norm")
def _layer_norm(op, x, w=None, b=None):
    y = _o().mvn(x, _o().constant(_tail_axes(op)), True, op.attrs["eps"], "inside_sqrt")
    return _affine(y, w, b)


@lowers("rms_norm")
def _rms_norm(op, x, w=None):
    o = _o()
    ms = o.reduce_mean(o.multiply(x, x), _tail_axes(op), True)
    return _affine(o.divide(x, o.sqrt(o.add(ms, _like(x, op.attrs["eps"])))), w)


@lowers("batch_norm")
def _batch_norm(op, x, scale, bias, mean, var):
    o = _o()
    shape = _i64([1, -1] + [1] * (op.inputs[0].type.rank - 2))
    inv = o.divide(scale, o.sqrt(o.add(var, _like(var, op.attrs["eps"]))))
    return o.add(o.multiply(o.subtract(x, o.reshape(mean, shape, False)),
                            o.reshape(inv, shape, False)), o.reshape(bias, shape, False))


# -- shape ops ----------------------------------------------------------------------------

@lowers("reshape")
def _reshape(op, x):
    return _o().reshape(x, _i64(op.output.type.shape), False)


@lowers("expand")
def _expand(op, x):
    return _o().broadcast(x, _i64(op.output.type.shape))


@lowers("transpose")
def _transpose(op, x):
    return _o().transpose(x, _i64(op.attrs["perm"]))


@lowers("concat")
def _concat(op, *xs):
    kept = [x for x, v in zip(xs, op.inputs) if v.type.numel]  # OpenVINO rejects empty parts
    return kept[0] if len(kept) == 1 else _o().concat(kept, op.attrs["axis"])


@lowers("split")
def _split(op, x):
    return _o().variadic_split(x, np.int64(op.attrs["axis"]), _i64(op.attrs["sizes"])).outputs()


@lowers("slice")
def _slice(op, x):
    steps = op.attrs.get("steps") or [1] * len(op.attrs["axes"])
    return _o().slice(x, _i64(op.attrs["starts"]), _i64(op.attrs["ends"]), _i64(steps),
                      _i64(op.attrs["axes"]))


def _wrapped(o, idx, size):
    """Negative indices counted from the end, as the IR allows; i64 unless
    they are i32 (OpenVINO takes no other index type)."""
    if str(idx.get_element_type()) not in ("i32", "i64"):
        idx = o.convert(idx, "i64").output(0)
    return o.select(o.less(idx, _like(idx, 0)), o.add(idx, _like(idx, size)), idx)


@lowers("gather")
def _gather(op, x, idx):
    return _o().gather(x, idx, np.int64(op.attrs["axis"]))


@lowers("embedding")
def _embedding(op, ids, table):
    return _o().gather(table, ids, np.int64(0))


@lowers("gather_elements")
def _gather_elements(op, x, idx):
    o = _o()
    shape, want = op.inputs[0].type.shape, op.inputs[1].type.shape
    ax = op.attrs["axis"] % len(shape)
    # OpenVINO needs the data's shape off the axis to equal the indices'; the
    # IR lets the indices cover a leading block of it, so take that block
    cut = [a for a in range(len(shape)) if a != ax and want[a] != shape[a]]
    for a in cut:  # gathers, not a Slice: the CPU plugin rejected Slice -> GatherElements
        x = o.gather(x, _i64(range(want[a])), np.int64(a))
    return o.gather_elements(x, _wrapped(o, idx, shape[ax]), ax)


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge"}


def _wrap(o, x, shape, begins, ends):
    """Circular padding (OpenVINO has none): per axis, copies of x side by
    side, sliced to the padded window. Negative pads crop first, as the IR says."""
    for a, (b, e) in enumerate(zip(begins, ends)):
        n = shape[a]
        lo, hi = max(-b, 0), n - max(-e, 0)
        if lo or hi != n:
            x = o.slice(x, _i64([lo]), _i64([hi]), _i64([1]), _i64([a]))
            n = hi - lo
        b, e = max(b, 0), max(e, 0)
        if (b or e) and n:
            before, after = -(-b // n), -(-e // n)
            x = o.concat([x] * (before + 1 + after), a)
            start = before * n - b
            x = o.slice(x, _i64([start]), _i64([start + b + n + e]), _i64([1]), _i64([a]))
    return x


@lowers("pad")
def _pad(op, x):
    o = _o()
    r, pads = op.inputs[0].type.rank, op.attrs["pads"]
    if op.attrs["mode"] == "wrap":
        return _wrap(o, x, op.inputs[0].type.shape, pads[:r], pads[r:])
    value = None
    if op.attrs["mode"] == "constant":
        shape = op.inputs[0].type.shape
        if any(max(-b, 0) + max(-e, 0) >= n for b, e, n in zip(pads[:r], pads[r:], shape)):
            # a crop that removes a whole axis leaves padding only (OpenVINO's
            # CPU plugin hangs on such a Pad)
            t = op.output.type
            return constant(np.full(t.shape, op.attrs["value"], t.dtype.storage), t.dtype)
        value = o.convert_like(o.constant(np.float32(op.attrs["value"])), x)
    return o.pad(x, _i64(pads[:r]), _i64(pads[r:]), _PAD_MODES[op.attrs["mode"]], value)


# -- reductions and pooling ---------------------------------------------------------------

@lowers("reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod")
def _reduce(op, x):
    if op.inputs[0].type.numel == 0:  # over nothing: a constant, the interpreter's identity
        t = op.output.type
        empty = np.zeros(op.inputs[0].type.shape, op.inputs[0].type.dtype.storage)
        return constant(np.asarray(SEMANTICS[op.kind](op, empty), t.dtype.storage), t.dtype)
    o = _o()
    axes = _i64(list(op.attrs["axes"] or range(op.inputs[0].type.rank)))
    if op.inputs[0].type.dtype.name == "bool" and op.kind in ("reduce_max", "reduce_min"):
        logical = o.reduce_logical_or if op.kind == "reduce_max" else o.reduce_logical_and
        return logical(x, axes, op.attrs["keepdims"])
    r = getattr(o, op.kind)(x, axes, op.attrs["keepdims"])
    if op.kind in ("reduce_max", "reduce_min") and op.output.type.dtype.is_float:
        # the CPU plugin gives the lowest (highest) finite value for a max (min)
        # over infinities only; the IR gives the infinity
        low = op.kind == "reduce_max"
        inf = o.is_inf(x, {"detect_positive": not low, "detect_negative": low})
        only = o.reduce_logical_and(inf, axes, op.attrs["keepdims"])
        r = o.select(only, _like(x, -np.inf if low else np.inf), r)
        # and it skips a nan, which the IR's max and min return
        r = o.select(_nan_anywhere(x, axes, op.attrs["keepdims"]), _like(x, np.nan), r)
    return r


@lowers("argmax", "argmin")
def _arg_reduce(op, x):
    o = _o()
    t = op.inputs[0].type
    ax = op.attrs["axis"] % t.rank
    if op.attrs["select_last_index"]:
        x = o.slice(x, _i64([-1]), _i64([np.iinfo(np.int64).min]), _i64([-1]), _i64([ax]))
    mode = "max" if op.kind == "argmax" else "min"
    idx = o.topk(x, np.int64(1), ax, mode, "value", "i64", True).output(1)  # stable: first of ties
    if t.dtype.is_float:  # the IR's (numpy's) argmax and argmin give the first nan
        first_nan = o.topk(o.convert_like(o.is_nan(x), x), np.int64(1), ax, "max", "value", "i64",
                           True).output(1)
        idx = o.select(_nan_anywhere(x, [ax]), first_nan, idx)
    if op.attrs["select_last_index"]:
        idx = o.subtract(np.int64(t.shape[ax] - 1), idx)
    return idx if op.attrs["keepdims"] else o.squeeze(idx, _i64([ax]))


#: dtypes the CPU plugin's TopK sorts in 32 bits (values and order wrong beyond them)
TOPK_32_BITS = ("i64", "u64", "u32")


def op_problem(op):
    """Why `op` (of a lowered kind) cannot be lowered exactly, or None."""
    name = op.inputs[0].type.dtype.name if op.inputs else ""
    # argmax and argmin are lowered through TopK too: argmax of [5, 2**40, 7] gave 2
    if op.kind in ("topk", "argmax", "argmin") and name in TOPK_32_BITS:
        return f"{name} values: OpenVINO's CPU plugin computes TopK on them in 32 bits"
    return None


@lowers("topk")
def _topk(op, x):
    """OpenVINO's TopK with stable=true keeps ties in index order, as the IR
    does, but it mis-sorts a row holding a NaN (the CPU plugin puts NaNs and
    numbers around them out of order, stable or not), where the IR puts NaN
    above every number. So float rows are sorted twice, the second stably by
    the primary key: first every element by value with NaN read as 0, then
    that order by whether the element is NaN (NaN first for largest, last
    otherwise), keeping k. sorted=false is sorted too (any order allowed)."""
    o = _o()
    t = op.inputs[0].type
    ax, k = op.attrs["axis"] % t.rank, np.int64(op.attrs["k"])
    mode = "max" if op.attrs["largest"] else "min"
    if not t.dtype.is_float:
        top = o.topk(x, k, ax, mode, "value", "i64", True)
        return [top.output(0), top.output(1)]
    nan = o.is_nan(x)
    order = o.topk(o.select(nan, _like(x, 0), x), np.int64(t.shape[ax]), ax, mode, "value",
                   "i64", True).output(1)
    nan_in_order = o.gather_elements(o.convert_like(nan, x), order, ax)
    idx = o.gather_elements(order, o.topk(nan_in_order, k, ax, mode, "value", "i64",
                                          True).output(1), ax)
    return [o.gather_elements(x, idx, ax).output(0), idx.output(0)]


@lowers("cumsum")
def _cumsum(op, x):
    return _o().cumsum(x, np.int64(op.attrs["axis"]), op.attrs["exclusive"], op.attrs["reverse"])


def _window(op):
    t, l, b, r = op.attrs["padding"]
    return dict(strides=op.attrs.get("stride") or op.attrs["kernel"], pads_begin=[t, l],
                pads_end=[b, r], kernel_shape=op.attrs["kernel"],
                # PyTorch's rule: a last window starting in the right padding is dropped
                rounding_type="ceil_torch" if op.attrs["ceil_mode"] else "floor")


@lowers("max_pool2d")
def _max_pool2d(op, x):
    """OpenVINO's MaxPool skips a nan; the IR's gives it: windows holding one
    are found by pooling the nan mask the same way."""
    o = _o()
    y = o.max_pool(x, dilations=op.attrs["dilation"], **_window(op)).output(0)
    if not op.inputs[0].type.dtype.is_float:
        return y
    nans = o.max_pool(o.convert_like(o.is_nan(x), x), dilations=op.attrs["dilation"],
                      **_window(op)).output(0)
    return o.select(o.greater(nans, _like(x, 0)), _like(x, np.nan), y)


@lowers("avg_pool2d")
def _avg_pool2d(op, x):
    o = _o()
    include = op.attrs["count_include_pad"]
    if include and op.attrs["ceil_mode"]:
        # OpenVINO counts the ceil-mode overhang past the padding; the IR never
        # does: pool over the input cells only, then rescale by the two counts
        inside, padded = _pool_counts(op)
        y = o.avg_pool(x, exclude_pad=True, dilations=[1, 1], **_window(op))
        scale = np.where(inside > 0, inside / np.maximum(padded, 1), 0).astype(np.float32)
        return o.multiply(o.select(o.constant(inside > 0), y, _like(y, 0)),
                          o.convert_like(o.constant(scale), y))
    # dilations given: AvgPool-16 built without them crashes OpenVINO 2026.4's CPU plugin
    return o.avg_pool(x, exclude_pad=not include, dilations=[1, 1], **_window(op))


def _pool_counts(op):
    """[1, 1, OH, OW] counts of each window's cells inside the input, and
    inside the input with its explicit padding."""
    _, _, h, w = op.inputs[0].type.shape
    oh, ow = op.output.type.shape[2:]
    (kh, kw), (t, l, b, r) = op.attrs["kernel"], op.attrs["padding"]
    sh, sw = op.attrs.get("stride") or op.attrs["kernel"]

    def along(n_out, k, s, pad_lo, pad_hi, n):
        starts = np.arange(n_out)[:, None] * s - pad_lo + np.arange(k)[None, :]
        return (((starts >= 0) & (starts < n)).sum(1),
                ((starts >= -pad_lo) & (starts < n + pad_hi)).sum(1))
    (ih, ph), (iw, pw) = along(oh, kh, sh, t, b, h), along(ow, kw, sw, l, r, w)
    return (np.outer(ih, iw)[None, None].astype(np.float32),
            np.outer(ph, pw)[None, None].astype(np.float32))


@lowers("global_avg_pool")
def _global_avg_pool(op, x):
    return _o().reduce_mean(x, _i64(range(2, op.inputs[0].type.rank)), True)


# -- whole graphs -------------------------------------------------------------------------

@LOWER.register("fused")
def _fused(op, *xs):
    """The body's ops, in line: OpenVINO's compiler does its own fusion."""
    inner = dict(zip(op.body.inputs, xs))
    lower_body(op.body, inner)
    return [inner[v] for v in op.body.outputs]


def value_problems(graph) -> list:
    """One message per value of `graph` whose dtype OpenVINO cannot take."""
    out = []
    for g in graph.graphs():
        for op in g.ops:
            for v in op.outputs if op.kind != "const" else ():
                if v.type.dtype.name not in VALUE_TYPES:
                    out.append(f"%{v.name}: {v.type.dtype} values")
            if op.kind == "const" and op.output.type.dtype.name not in OV_TYPES:
                out.append(f"constant %{op.output.name}: {op.output.type.dtype}")
    for v in graph.inputs + graph.outputs:
        if v.type.dtype.name not in VALUE_TYPES:
            out.append(f"%{v.name}: {v.type.dtype} values")
    return out


SUMMARY = (f"computed values must be {', '.join(VALUE_TYPES)}; ops OpenVINO's opset has no "
           f"form for here are named")


def _zeros(t):
    """An empty result: OpenVINO computes nothing for it."""
    return constant(np.zeros(t.shape, t.dtype.storage), t.dtype)


def lower_body(graph, env):
    """Add `graph`'s ops to the model being built; `env` maps its inputs (and
    gets every result) to OpenVINO outputs."""
    for op in graph.ops:
        if op.kind == "const":
            outs = [weight(graph, op)]
        elif all(v.type.numel == 0 for v in op.outputs):
            outs = [_zeros(v.type) for v in op.outputs]
        else:
            try:
                res = LOWER[op.kind](op, *(env[v] for v in op.inputs))
            except RuntimeError as e:  # OpenVINO's node validation: name the IR op
                detail = " ".join(str(e).split())
                raise TargetError(f"target npu: OpenVINO rejected {op.kind} "
                                  f"%{op.outputs[0].name} of graph '{graph.name}': "
                                  f"{detail[:400]}") from None
            outs = res if isinstance(res, (list, tuple)) else [res]
        for v, node in zip(op.outputs, outs):
            env[v] = node if hasattr(node, "get_node") else node.output(0)


def to_model(graph):
    """The openvino.Model computing `graph` (which `problems` found nothing in);
    inputs and outputs keep the IR names."""
    import openvino as ov
    import openvino.opset16 as o

    env = {}
    params = []
    for v in graph.inputs:
        p = o.parameter(list(v.type.shape), ov_type(v.type.dtype, f"input %{v.name}"), name=v.name)
        p.output(0).get_tensor().set_names({v.name})
        params.append(p)
        env[v] = p.output(0)
    lower_body(graph, env)
    results, named = [], set(graph.inputs)
    for v in graph.outputs:
        out = env[v]
        if v in named:  # an input or a repeated output: its own tensor, for its own name
            out = o.identity(out).output(0)
        named.add(v)
        r = o.result(out)
        r.set_friendly_name(f"{v.name}/result")
        results.append(r)
    model = ov.Model(results, params, identifier(graph.name, prefix=""))  # any name, as an id
    for v, out in zip(graph.outputs, model.outputs):
        out.get_tensor().set_names({v.name})
    for i, node in enumerate(model.get_ordered_ops()):  # OpenVINO numbers unnamed nodes
        if node.get_type_name() not in ("Parameter", "Result"):  # process-wide: name them here
            node.set_friendly_name(f"{node.get_type_name()}_{i}")
    return model
