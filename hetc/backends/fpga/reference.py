"""The fpga datapath's arithmetic in numpy, operation for operation as
hetc_fpga.h and the generated functions compute it (float32 operations in
the same order, sums in the same sequence, integer sums exact): the C
simulation of a generated project and this model agree bit for bit, which
tests/test_fpga.py checks. It differs from the interpreter (which
dequantizes the activations before an f32 product, sums pairwise and uses
libm's exp and erf) by float32 rounding and the polynomials' error only.
"""

from __future__ import annotations

import numpy as np

from hetc.backends.c.quant import integer_weight, stored_scales
from hetc.core.registry import Registry
from hetc.ir.interpret import SEMANTICS as IR_SEMANTICS
from hetc.ir.interpret import load_const

F32 = np.float32
SEMANTICS = Registry("fpga reference semantics")
semantics = SEMANTICS.register


def _f(*values):
    return [F32(v) for v in values]


def run(graph, *inputs) -> list | np.ndarray:
    """The outputs of `graph` (as the fpga backend lowers it) for `inputs`:
    one array for a graph of one output, else a list."""
    values = {v: np.asarray(x, F32).reshape(v.type.shape) for v, x in zip(graph.inputs, inputs)}
    for op in graph.ops:
        if op.kind == "const":
            values[op.output] = np.asarray(load_const(op, graph))
            continue
        args = [values[v] for v in op.inputs]
        with np.errstate(all="ignore"):
            y = SEMANTICS[op.kind](graph, op, *args)
        for out, r in zip(op.outputs, y if len(op.outputs) > 1 else [y]):
            values[out] = np.asarray(r, F32).reshape(out.type.shape)
    outs = [values[v] for v in graph.outputs]
    return outs[0] if len(outs) == 1 else outs


def seq_sum(x, axis=-1):
    """The sum along `axis` in order, in float32 (numpy's sums are pairwise)."""
    return np.cumsum(np.asarray(x, F32), axis=axis, dtype=F32).take(-1, axis=axis)


# -- the float32 functions of hetc_fpga.h -----------------------------------------------

def exp_(x):
    x = np.asarray(x, F32)
    log2e, hi, lo = _f(1.44269504, 0.693145751953125, 1.42860677e-06)
    c = _f(1, 1, 0.5, 0.166666672, 0.0416666679, 0.00833333377, 0.00138888892)
    xc = np.clip(x, F32(-87.33), F32(88.72))
    n = np.rint(xc * log2e)
    r = (xc - n * hi) - n * lo
    p = c[6]
    for k in range(5, -1, -1):
        p = c[k] + r * p
    y = np.ldexp(p, n.astype(np.int32)).astype(F32)
    y = np.where(x < F32(-87.33), F32(0), np.where(x > F32(88.72), F32(np.inf), y))
    return np.where(np.isnan(x), x, y)


def erf_(x):
    x = np.asarray(x, F32)
    a = np.abs(x)
    t = F32(1) / (F32(1) + F32(0.3275911) * a)
    k = _f(0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
    poly = t * (k[0] + t * (k[1] + t * (k[2] + t * (k[3] + t * k[4]))))
    y = F32(1) - poly * exp_(-(a * a))
    return np.where(x < 0, -y, y)


def tanh_(x):
    x = np.asarray(x, F32)
    e = exp_(F32(2) * x)
    y = (e - F32(1)) / (e + F32(1))
    return np.where(np.abs(x) > F32(9), np.where(x > 0, F32(1), F32(-1)), y)


def sigmoid_(x):
    return F32(1) / (F32(1) + exp_(-np.asarray(x, F32)))


def gelu_(x):
    return F32(0.5) * x * (F32(1) + erf_(x * F32(0.707106781)))


def gelu_tanh_(x):
    return F32(0.5) * x * (F32(1) + tanh_(F32(0.797884561) * (x + F32(0.044715) *
                                                              (x * x * x))))


def max_(a, b):
    return np.where(np.isnan(a) | (a > b), a, np.where(np.isnan(b) | (a < b), b, a))


def min_(a, b):
    return np.where(np.isnan(a) | (a < b), a, np.where(np.isnan(b) | (a > b), b, a))


UNARY = {"relu": lambda x: np.where(x < 0, F32(0), x), "neg": np.negative, "abs": np.abs,
         "exp": exp_, "erf": erf_, "tanh": tanh_, "sigmoid": sigmoid_,
         "silu": lambda x: x * sigmoid_(x), "sqrt": np.sqrt,
         "rsqrt": lambda x: F32(1) / np.sqrt(x)}
BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
          "maximum": max_, "minimum": min_}


@semantics(*UNARY)
def _unary(graph, op, x):
    return UNARY[op.kind](x)


@semantics(*BINARY)
def _binary(graph, op, a, b):
    return BINARY[op.kind](a.astype(F32), b.astype(F32))


@semantics("pow")
def _pow(graph, op, x, b):
    y = x
    for _ in range(int(np.asarray(b).reshape(-1)[0]) - 1):
        y = y * x
    return y


@semantics("gelu")
def _gelu(graph, op, x):
    return gelu_tanh_(x) if op.attrs.get("approximate") == "tanh" else gelu_(x)


def bn_terms(stats, op):
    """(mean, scale / sqrt(var + eps), bias) of a batch norm from its
    (scale, bias, mean, var), float32: computed once, at compile time, as
    the generated code's constants."""
    scale, bias, mean, var = (np.asarray(c, F32).reshape(-1) for c in stats)
    return mean, scale / np.sqrt(var + F32(op.attrs["eps"])), bias


@semantics("batch_norm")
def _batch_norm(graph, op, x, *stats):
    mean, inv, bias = bn_terms(stats, op)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean.reshape(shape)) * inv.reshape(shape) + bias.reshape(shape)


@semantics("reshape")
def _reshape(graph, op, x):
    return x


@semantics("expand", "slice", "split", "concat")
def _moves(graph, op, *xs):
    """Copies: the interpreter's own (exact)."""
    return IR_SEMANTICS[op.kind](op, *xs)


@semantics("transpose")
def _transpose(graph, op, x):
    return np.transpose(x, op.attrs["perm"])


def _rows(op, x):
    n = int(np.prod(x.shape[op.attrs["axis"] % x.ndim:]))
    return x.reshape(-1, n), F32(n)


@semantics("layer_norm")
def _layer_norm(graph, op, x, w=None, b=None):
    r, n = _rows(op, x)
    mean = seq_sum(r)[:, None] / n
    d = r - mean
    inv = F32(1) / np.sqrt(seq_sum(d * d)[:, None] / n + F32(op.attrs["eps"]))
    o = (r - mean) * inv
    o = o if w is None else o * w.astype(F32).reshape(-1)
    return o if b is None else o + b.astype(F32).reshape(-1)


@semantics("rms_norm")
def _rms_norm(graph, op, x, w=None):
    r, n = _rows(op, x)
    inv = F32(1) / np.sqrt(seq_sum(r * r)[:, None] / n + F32(op.attrs["eps"]))
    o = r * inv
    return o if w is None else o * w.astype(F32).reshape(-1)


@semantics("softmax")
def _softmax(graph, op, x):
    r = x.reshape(-1, x.shape[-1])
    m = np.max(r, axis=-1, keepdims=True, initial=-np.inf)
    e = exp_(r - np.where(m == -np.inf, F32(0), m))
    return e * (F32(1) / seq_sum(e)[:, None])


@semantics("matmul")
def _matmul(graph, op, a, b):
    return seq_sum(a[..., :, None, :] * np.swapaxes(b, -1, -2)[..., None, :, :])


@semantics("attention")
def _attention(graph, op, q, k, v, mask=None):
    E = q.shape[-1]
    scale = F32(op.attrs["scale"] or 1 / np.sqrt(E))
    s = seq_sum(q[..., :, None, :] * k[..., None, :, :]) * scale
    if op.attrs["softcap"]:
        cap = F32(op.attrs["softcap"])
        s = cap * tanh_(s / cap)
    L, S = q.shape[-2], k.shape[-2]
    if op.attrs["causal"]:
        s = np.where(np.tril(np.ones((L, S), bool), op.attrs["causal_offset"]), s, -np.inf)
    if mask is not None:
        s = s + mask.astype(F32)
    m = np.max(s, axis=-1, keepdims=True, initial=-np.inf)
    e = exp_(s - np.where(m == -np.inf, F32(0), m))
    inv = np.where(m == -np.inf, F32(0), F32(1) / seq_sum(e)[..., None])
    return seq_sum((e * inv)[..., :, :, None] * v[..., None, :, :], axis=-2)


@semantics("max_pool2d")
def _max_pool(graph, op, x):
    n, c, h, w = x.shape
    oh, ow = op.output.type.shape[2:]
    (kh, kw), (sh, sw) = op.attrs["kernel"], op.attrs.get("stride") or op.attrs["kernel"]
    (dh, dw), (pt, pl) = op.attrs["dilation"], op.attrs["padding"][:2]
    m = np.full((n, c, oh, ow), -np.inf, F32)
    for r in range(kh):
        for s in range(kw):
            ih = np.arange(oh)[:, None] * sh - pt + r * dh
            iw = np.arange(ow)[None, :] * sw - pl + s * dw
            inside = (ih >= 0) & (ih < h) & (iw >= 0) & (iw < w)
            v = x[:, :, np.clip(ih, 0, h - 1), np.clip(iw, 0, w - 1)]
            m = np.where(inside, max_(m, v), m)
    return m


@semantics("global_avg_pool")
def _global_avg_pool(graph, op, x):
    planes = x.reshape(x.shape[0] * x.shape[1], -1)
    return seq_sum(planes) / F32(planes.shape[1])


# -- the integer layers -------------------------------------------------------------

def _quantize(x, group):
    """Codes (int64) and scales of rows x, per group, as hetc::quantize."""
    xg = x.reshape(x.shape[0], -1, group)
    top = np.abs(xg).max(axis=-1)  # NaN wins, as in the kernel
    finite = np.isfinite(top)
    scale = np.where(finite, top / F32(127), F32(np.nan))  # inf or NaN: codes 0, NaN sums
    d = np.where((scale == 0) | ~finite, F32(1), scale)
    codes = np.where(finite[..., None], np.rint(xg / d[..., None]), 0)
    return codes.astype(np.int64), scale


def _weights(graph, op, axis):
    """(codes int64, f32 scales per group with the codes' shape but the axis
    divided, group) of a layer's weight."""
    w = op.inputs[1]
    name, _, group = integer_weight(w, axis, odd_int4=True)
    codes = np.asarray(graph.weights[name]).astype(np.int64)
    scales = stored_scales(_Graph(graph), name, *w.type.quant.param_shape(w.type.shape))
    return codes, scales.astype(F32), group


@semantics("linear")
def _linear(graph, op, x, w, b=None):
    codes, sw, group = _weights(graph, op, -1)
    n, k = codes.shape
    q, scale = _quantize(x.reshape(-1, k), group)
    acc = np.einsum("tgj,ngj->tng", q, codes.reshape(n, k // group, group))  # exact
    out = np.zeros((q.shape[0], n), F32)
    for g in range(k // group):
        out = out + acc[:, :, g].astype(F32) * (scale[:, g][:, None] * sw[None, :, g])
    return out if b is None else out + b.astype(F32)


@semantics("conv2d")
def _conv2d(graph, op, x, w, b=None):
    codes, sw, group = _weights(graph, op, 1)  # [O, C, KH, KW], [O, C / G, KH, KW]
    batch, c, h, wd = x.shape
    o, _, kh, kw = codes.shape
    oh, ow = op.output.type.shape[2:]
    (sh, sv), (dh, dv), (pt, pl) = (op.attrs["stride"], op.attrs["dilation"],
                                    op.attrs["padding"][:2])
    out = np.zeros((batch, o, oh, ow), F32)
    for n in range(batch):
        q, scale = _quantize(np.moveaxis(x[n], 0, -1).reshape(h * wd, c), group)
        for r in range(kh):
            for s in range(kw):
                ih = np.arange(oh)[:, None] * sh - pt + r * dh
                iw = np.arange(ow)[None, :] * sv - pl + s * dv
                inside = ((ih >= 0) & (ih < h) & (iw >= 0) & (iw < wd))[None]
                pix = (np.clip(ih, 0, h - 1) * wd + np.clip(iw, 0, wd - 1)).reshape(-1)
                for g in range(c // group):
                    acc = q[pix, g] @ codes[:, g * group:(g + 1) * group, r, s].T  # [pixels, O]
                    term = acc.astype(F32) * (scale[pix, g][:, None] * sw[None, :, g, r, s])
                    term = term.T.reshape(o, oh, ow)
                    out[n] = np.where(inside, out[n] + term, out[n])
    return out if b is None else out + b.astype(F32).reshape(1, -1, 1, 1)


class _Graph:
    """What stored_scales reads of an emitter: its graph."""

    def __init__(self, graph):
        self.g = graph
