"""Every op in the op table against PyTorch on random inputs.

Each case builds a one-op Graph, runs the reference interpreter and compares
with the same computation written with torch (torch.nn.functional where it has
the op). `const` and `fused` are covered by other tests; every other kind in
OPS must have at least one case here (test_every_op_kind_is_covered).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hetc.core.errors import HetcError
from hetc.ir.interpret import interpret
from hetc.ir import Graph, OPS, TensorType, dtypes, verify
from hetc.ir.ops import InferError
from hetc.runtime.convert import to_numpy, to_torch

# Tolerances by the IR dtype of the result; integer and bool results, and
# every `cast`, must match exactly.
TOL = {
    # f32: transcendental ops differ by a few ulp (rtol); conv/matmul/attention
    # reassociate sums of up to ~50 unit-scale terms, seen up to ~1e-6 absolute near zero.
    "f32": dict(rtol=1e-5, atol=5e-6),
    # bf16 (8 significant bits): both sides compute in f32 and round once, so a tiny f32
    # difference may flip the rounding by one bf16 ulp (2^-7 relative); allow 2 ulp,
    # and the f32 reassociation error of a dot product for results rounding near zero.
    "bf16": dict(rtol=1.6e-2, atol=1e-4),
}

SKIP_KINDS = {"const", "fused"}  # tested elsewhere

RNG = np.random.default_rng(20240607)


# -- input makers (all drawn from one seeded generator at collection) -------------

def randn(*shape, dtype=np.float32, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(dtype)


def positive(*shape, lo=0.1, hi=4.0):
    return RNG.uniform(lo, hi, shape).astype(np.float32)


def ints(*shape, lo=-9, hi=10, dtype=np.int32):
    return RNG.integers(lo, hi, shape).astype(dtype)


def nonzero_ints(*shape, lo=-9, hi=10, dtype=np.int32):
    a = ints(*shape, lo=lo, hi=hi, dtype=dtype)
    a[a == 0] = 1
    return a


def bools(*shape, p=0.5):
    return RNG.random(shape) < p


def bf16(a):
    return np.asarray(a, np.float32).astype(ml_dtypes.bfloat16)


class W:
    """An operand passed as a named weight (const op) instead of a graph input."""

    def __init__(self, array):
        self.array = np.asarray(array)


def _array(a):
    return a.array if isinstance(a, W) else a


# -- cases ------------------------------------------------------------------------------

@dataclass
class Case:
    kind: str
    id: str
    inputs: list
    attrs: dict
    ref: Callable  # torch tensors (same order as inputs) -> tensor or list of tensors
    exact: bool = False


CASES: list[Case] = []


def case(kind, id, inputs, attrs, ref, exact=False):
    CASES.append(Case(kind, f"{kind}-{id}", list(inputs), dict(attrs), ref, exact))


# elementwise unary ---------------------------------------------------------------------

for kind, make, ref in [
    ("sqrt", lambda: positive(3, 4, 5), torch.sqrt),
    ("rsqrt", lambda: positive(3, 4, 5), torch.rsqrt),
    ("exp", lambda: randn(3, 4, 5, scale=3), torch.exp),
    ("log", lambda: positive(3, 4, 5, lo=1e-3, hi=50), torch.log),
    ("tanh", lambda: randn(3, 4, 5, scale=3), torch.tanh),
    ("sigmoid", lambda: randn(3, 4, 5, scale=6), torch.sigmoid),
    ("silu", lambda: randn(3, 4, 5, scale=6), F.silu),
    ("erf", lambda: randn(3, 4, 5, scale=2), torch.erf),
    ("neg", lambda: randn(3, 4, 5), torch.neg),
    ("relu", lambda: randn(3, 4, 5), F.relu),
    ("abs", lambda: randn(3, 4, 5), torch.abs),
]:
    case(kind, "f32", [make()], {}, ref)

for kind, ref in [("neg", torch.neg), ("relu", torch.relu), ("abs", torch.abs)]:
    case(kind, "i32", [ints(4, 5)], {}, ref)

_specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan], np.float32)
_halves = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, -0.49999997, 1e7 + 1, -3.5],
                   np.float32)
_to_int = np.concatenate([randn(40, scale=5), _halves, _specials])
for kind, ref in [("floor", torch.floor), ("ceil", torch.ceil), ("round", torch.round)]:
    case(kind, "f32", [_to_int], {}, ref, exact=True)  # round: half to even in both
    case(kind, "bf16", [bf16(_to_int)], {}, ref, exact=True)
case("reciprocal", "f32", [np.concatenate([randn(40, scale=5), _specials])], {}, torch.reciprocal)
case("reciprocal", "bf16", [bf16(randn(4, 8, scale=3))], {}, torch.reciprocal)

_unit = lambda *shape: RNG.uniform(-0.999, 0.999, shape).astype(np.float32)  # noqa: E731
_outside = np.array([1.0, -1.0, 1.5, -2.0, 10.0], np.float32)
for kind, ref, x in [
    ("sin", torch.sin, randn(3, 4, 5, scale=4)),
    ("cos", torch.cos, randn(3, 4, 5, scale=4)),
    ("tan", torch.tan, randn(3, 4, 5, scale=1.2)),
    ("asin", torch.asin, _unit(3, 4, 5)),
    ("acos", torch.acos, _unit(3, 4, 5)),
    ("atan", torch.atan, randn(3, 4, 5, scale=5)),
    ("sinh", torch.sinh, randn(3, 4, 5, scale=3)),
    ("cosh", torch.cosh, randn(3, 4, 5, scale=3)),
    ("asinh", torch.asinh, randn(3, 4, 5, scale=5)),
    ("acosh", torch.acosh, positive(3, 4, 5, lo=1.0, hi=20.0)),
    ("atanh", torch.atanh, _unit(3, 4, 5)),
]:
    case(kind, "f32", [x], {}, ref)
    # the domain edges, values outside it (nan), infinities, overflow (sinh/cosh of 100)
    case(kind, "specials", [np.concatenate([_outside, _specials, [100.0, -100.0, 0.5]])
                            .astype(np.float32)], {}, ref)
case("sin", "bf16", [bf16(randn(4, 8, scale=3))], {}, torch.sin)

case("sign", "f32", [np.concatenate([randn(20), [0.0, -0.0, np.inf, -np.inf]]).astype(np.float32)],
     {}, torch.sign, exact=True)
# torch.sign(nan) is 0; hetc keeps nan (numpy's and IEEE's convention): torch for the rest
case("sign", "nan", [np.array([np.nan, 1.0, -2.0], np.float32)], {},
     lambda x: torch.where(torch.isnan(x), x, torch.sign(x)), exact=True)
case("sign", "i32", [ints(4, 5)], {}, torch.sign)
case("sign", "u8", [ints(10, lo=0, hi=3, dtype=np.uint8)], {}, torch.sign)

_nan_inf = np.concatenate([randn(10), _specials, [3.4e38, -3.4e38]]).astype(np.float32)
case("isnan", "f32", [_nan_inf], {}, torch.isnan)
case("isnan", "bf16", [bf16(_nan_inf)], {}, torch.isnan)
case("isinf", "f32", [_nan_inf], {}, torch.isinf)
case("isinf", "bf16", [bf16(_nan_inf)], {}, torch.isinf)
case("isinf", "positive-only", [_nan_inf], {"detect_negative": False}, torch.isposinf)
case("isinf", "negative-only", [_nan_inf], {"detect_positive": False}, torch.isneginf)
case("isinf", "neither", [_nan_inf], {"detect_positive": False, "detect_negative": False},
     lambda x: torch.zeros_like(x, dtype=torch.bool))

case("logical_not", "bool", [bools(3, 4)], {}, torch.logical_not)
for dt in (np.int32, np.int8, np.uint8, np.int64):
    case("bitwise_not", np.dtype(dt).name, [ints(3, 4, lo=np.iinfo(dt).min // 2 + 1,
                                                 hi=np.iinfo(dt).max // 2, dtype=dt)],
         {}, torch.bitwise_not)

case("gelu", "none-default", [randn(3, 4, 5, scale=3)], {}, F.gelu)
case("gelu", "none", [randn(3, 4, 5, scale=3)], {"approximate": "none"},
     lambda x: F.gelu(x, approximate="none"))
case("gelu", "tanh", [randn(3, 4, 5, scale=3)], {"approximate": "tanh"},
     lambda x: F.gelu(x, approximate="tanh"))

# elementwise binary (with broadcasting) ---------------------------------------------------

for kind, ref in [("add", torch.add), ("sub", torch.sub), ("mul", torch.mul),
                  ("div", torch.div), ("maximum", torch.maximum), ("minimum", torch.minimum)]:
    case(kind, "f32-broadcast", [randn(3, 1, 5), randn(4, 1)], {}, ref)
    case(kind, "f32-scalar", [randn(2, 3), randn()], {}, ref)

for kind, ref in [("add", torch.add), ("sub", torch.sub), ("mul", torch.mul),
                  ("maximum", torch.maximum), ("minimum", torch.minimum)]:
    case(kind, "i32-broadcast", [ints(3, 1, 5), ints(4, 1)], {}, ref)

_nan_a, _nan_b = randn(2, 4), randn(2, 4)
_nan_a[0, 1] = _nan_b[1, 2] = np.nan
case("maximum", "nan", [_nan_a, _nan_b], {}, torch.maximum)
case("minimum", "nan", [_nan_a, _nan_b], {}, torch.minimum)

# Integer division truncates toward zero (C, ONNX, torch rounding_mode="trunc").
_trunc = lambda a, b: torch.div(a, b, rounding_mode="trunc")  # noqa: E731
case("div", "i32-trunc", [ints(4, 6, lo=-50, hi=50), nonzero_ints(4, 6)], {}, _trunc)
case("div", "i32-trunc-broadcast", [ints(3, 1, 5, lo=-50, hi=50), nonzero_ints(4, 1)], {}, _trunc)
# an integer divisor of 0 gives 0 (torch raises): torch on the other elements, 0 written in
case("div", "i32-by-zero", [ints(4, 6, lo=-50, hi=50), ints(4, 6, lo=-2, hi=3)], {},
     lambda a, b: torch.where(b == 0, 0, _trunc(a, torch.where(b == 0, 1, b))))
case("div", "i32-extremes",
     [np.array([2**31 - 1, -2**31, -2**31 + 1, 7, -7, 7, -7], np.int32),
      np.array([2, 3, -2**31, 2, 2, -2, -2], np.int32)], {}, _trunc)
case("div", "i64-large",  # beyond 2^53: exact only with integer arithmetic
     [np.array([2**53 + 1, -(2**62) + 3, 2**63 - 1, -(2**63) + 1, 9, -9], np.int64),
      np.array([1, 7, 3, -5, 4, 4], np.int64)], {}, _trunc)

# mod: sign of the divisor (torch.remainder); fmod: sign of the dividend (torch.fmod)
for kind, ref in [("mod", torch.remainder), ("fmod", torch.fmod)]:
    case(kind, "f32-broadcast", [randn(3, 1, 5, scale=10), randn(4, 1, scale=3)], {}, ref)
    case(kind, "f32-specials",  # x % 0 and inf % x are nan; x % inf is x (mod: or inf)
         [np.array([5.0, -5.0, np.inf, 5.0, -5.0, 0.0, -7.5, 7.5], np.float32),
          np.array([0.0, 0.0, 2.0, np.inf, np.inf, 3.0, 2.0, -2.0], np.float32)], {}, ref)
    case(kind, "i32", [ints(4, 6, lo=-50, hi=50), nonzero_ints(4, 6)], {}, ref)
    case(kind, "i32-broadcast", [ints(3, 1, 5, lo=-50, hi=50), nonzero_ints(4, 1)], {}, ref)
    case(kind, "i32-extremes",
         [np.array([-2**31, -2**31, 2**31 - 1, -2**31, 7, -7], np.int32),
          np.array([-1, 2**31 - 1, -2**31, -2**31, -2**31, 2**31 - 1], np.int32)], {}, ref)
    case(kind, "u8", [ints(20, lo=0, hi=256, dtype=np.uint8),
                      ints(20, lo=1, hi=256, dtype=np.uint8)], {}, ref)
    case(kind, "bf16", [bf16(randn(4, 8, scale=10)), bf16(randn(8, scale=3))], {}, ref)
    # torch raises ZeroDivisionError for an integer divisor of 0; hetc gives 0 there (as
    # numpy does): torch on the other elements, 0 written in
    case(kind, "i32-by-zero", [ints(4, 6, lo=-50, hi=50), ints(4, 6, lo=-2, hi=3)], {},
         lambda a, b, ref=ref: torch.where(b == 0, 0, ref(a, torch.where(b == 0, 1, b))))

for kind, ref in [("logical_and", torch.logical_and), ("logical_or", torch.logical_or),
                  ("logical_xor", torch.logical_xor)]:
    case(kind, "broadcast", [bools(3, 1, 5), bools(4, 1)], {}, ref)
for kind, ref in [("bitwise_and", torch.bitwise_and), ("bitwise_or", torch.bitwise_or),
                  ("bitwise_xor", torch.bitwise_xor)]:
    case(kind, "i32-broadcast", [ints(3, 1, 5, lo=-2**31, hi=2**31),
                                 ints(4, 1, lo=-2**31, hi=2**31)], {}, ref)
    case(kind, "u8", [ints(20, lo=0, hi=256, dtype=np.uint8),
                      ints(20, lo=0, hi=256, dtype=np.uint8)], {}, ref)
    case(kind, "i64", [ints(20, lo=-2**63, hi=2**63 - 1, dtype=np.int64),
                       ints(20, lo=-2**63, hi=2**63 - 1, dtype=np.int64)], {}, ref)
    case(kind, "bool", [bools(3, 4), bools(4)], {}, ref)

# Shifts: every int8 and uint8 value by every count (negative and >= 8 included: torch
# gives 0, or -1 for a negative value shifted right), wider types on a sample.
_all8 = np.arange(256)
for kind, ref in [("shift_left", torch.bitwise_left_shift),
                  ("shift_right", torch.bitwise_right_shift)]:
    for dt in (np.int8, np.uint8):
        a, b = np.meshgrid(_all8.astype(dt), _all8.astype(dt), indexing="ij")
        case(kind, f"{np.dtype(dt).name}-exhaustive", [a, b], {}, ref)
    for dt, bits in ((np.int16, 16), (np.int32, 32), (np.int64, 64)):
        info = np.iinfo(dt)
        a = np.concatenate([ints(40, lo=info.min, hi=info.max, dtype=dt),
                            np.array([info.min, info.max, -1, 1, 0], dt)])
        case(kind, f"{np.dtype(dt).name}", [a.reshape(-1, 1), np.arange(-3, bits + 4, dtype=dt)],
             {}, ref)

case("pow", "f32", [positive(3, 4), randn(3, 4)], {}, torch.pow)
case("pow", "f32-broadcast", [positive(2, 3, 1), randn(4)], {}, torch.pow)
case("pow", "i32", [ints(3, 4, lo=-5, hi=6), ints(3, 4, lo=0, hi=4)], {}, torch.pow)

_eq_a = RNG.integers(-2, 3, (3, 4)).astype(np.float32)  # small values: many ties
_eq_b = RNG.integers(-2, 3, (4,)).astype(np.float32)
for kind, ref in [("equal", torch.eq), ("less", torch.lt), ("greater", torch.gt),
                  ("less_equal", torch.le), ("greater_equal", torch.ge)]:
    case(kind, "f32", [_eq_a, _eq_b], {}, ref)
    case(kind, "i32", [ints(2, 3, 4, lo=-2, hi=3), ints(3, 1, lo=-2, hi=3)], {}, ref)

case("where", "f32-broadcast", [bools(3, 1, 5), randn(4, 5), randn(3, 4, 1)], {}, torch.where)
case("where", "i32", [bools(3, 4), ints(3, 4), ints(4)], {}, torch.where)

# cast: bit-exact against torch's .to ------------------------------------------------------

_to_round = np.concatenate([
    randn(32, scale=100),
    # halfway between bf16 neighbours: round half to even
    np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 3 * 2**-9 + 2**-17], np.float32),
    np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3.4e38, 1e-40], np.float32),
]).astype(np.float32)
case("cast", "f32-bf16", [_to_round], {"dtype": "bf16"}, lambda x: x.to(torch.bfloat16),
     exact=True)
case("cast", "f32-f16", [randn(40, scale=100)], {"dtype": "f16"}, lambda x: x.to(torch.float16),
     exact=True)
_trunc_src = np.concatenate([randn(40, scale=1000),
                             np.array([2.5, -2.5, 0.999, -0.999, 1e9, -1e9], np.float32)])
case("cast", "f32-i32-trunc", [_trunc_src], {"dtype": "i32"}, lambda x: x.to(torch.int32),
     exact=True)
case("cast", "f32-i64-trunc", [_trunc_src], {"dtype": "i64"}, lambda x: x.to(torch.int64),
     exact=True)
case("cast", "f32-bool", [np.array([0.0, -0.0, 1.5, -2.0, np.nan, 1e-30], np.float32)],
     {"dtype": "bool"}, lambda x: x.to(torch.bool), exact=True)
case("cast", "bf16-f32", [bf16(randn(4, 5, scale=10))], {"dtype": "f32"},
     lambda x: x.to(torch.float32), exact=True)
case("cast", "i32-f32", [ints(4, 5, lo=-2**24, hi=2**24)], {"dtype": "f32"},
     lambda x: x.to(torch.float32), exact=True)
case("cast", "i64-i32", [ints(10, lo=-2**31, hi=2**31, dtype=np.int64)], {"dtype": "i32"},
     lambda x: x.to(torch.int32), exact=True)
case("cast", "bool-f32", [bools(3, 4)], {"dtype": "f32"}, lambda x: x.to(torch.float32),
     exact=True)
case("cast", "f32-f8e4m3", [randn(40, scale=50)], {"dtype": "f8e4m3"},
     lambda x: x.to(torch.float8_e4m3fn), exact=True)
case("cast", "f32-f8e5m2", [randn(40, scale=500)], {"dtype": "f8e5m2"},
     lambda x: x.to(torch.float8_e5m2), exact=True)

# linear algebra --------------------------------------------------------------------------

case("linear", "bias", [randn(2, 3, 16), W(randn(8, 16)), W(randn(8))], {}, F.linear)
case("linear", "no-bias", [randn(2, 3, 16), W(randn(8, 16))], {}, F.linear)
case("linear", "1d-input", [randn(16), randn(8, 16), randn(8)], {}, F.linear)

case("matmul", "2d", [randn(3, 16), randn(16, 5)], {}, torch.matmul)
case("matmul", "1d-2d", [randn(16), randn(16, 5)], {}, torch.matmul)
case("matmul", "2d-1d", [randn(3, 16), randn(16)], {}, torch.matmul)
case("matmul", "1d-1d", [randn(16), randn(16)], {}, torch.matmul)
case("matmul", "batched", [randn(2, 3, 4, 16), randn(2, 3, 16, 5)], {}, torch.matmul)
case("matmul", "batch-broadcast", [randn(2, 1, 4, 16), randn(3, 16, 5)], {}, torch.matmul)
case("matmul", "1d-batched", [randn(16), randn(2, 3, 16, 5)], {}, torch.matmul)
case("matmul", "batched-1d", [randn(2, 3, 4, 16), randn(16)], {}, torch.matmul)
case("matmul", "i32", [ints(2, 3, 4), ints(4, 5)], {}, torch.matmul)


def _conv(stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    t, l, b, r = padding

    def ref(x, w, bias=None):
        # hetc padding is [top, left, bottom, right]; F.pad takes (left, right, top, bottom)
        return F.conv2d(F.pad(x, (l, r, t, b)), w, bias, stride=stride, padding=0,
                        dilation=dilation, groups=groups)

    attrs = {"stride": list(stride), "padding": list(padding), "dilation": list(dilation),
             "groups": groups}
    return attrs, ref


def conv_case(id, cin, cout, kh, kw, hw=(7, 8), bias=True, **conv_attrs):
    attrs, ref = _conv(**conv_attrs)
    g = attrs["groups"]
    inputs = [randn(2, cin, *hw), W(randn(cout, cin // g, kh, kw))]
    if bias:
        inputs.append(W(randn(cout)))
    case("conv2d", id, inputs, attrs, ref)


conv_case("defaults", 3, 4, 3, 3)
conv_case("no-bias", 3, 4, 3, 3, bias=False)
conv_case("stride", 3, 4, 3, 3, stride=(2, 3))
conv_case("pad-symmetric", 3, 4, 3, 3, padding=(1, 2, 1, 2))
conv_case("pad-asymmetric", 3, 4, 3, 3, padding=(0, 1, 2, 3))
conv_case("dilation", 3, 4, 3, 2, dilation=(2, 3))
conv_case("groups", 4, 6, 3, 3, groups=2, bias=False)
conv_case("depthwise", 4, 4, 3, 3, groups=4, padding=(1, 1, 1, 1))
conv_case("1x1", 5, 3, 1, 1, hw=(4, 4))
conv_case("everything", 6, 9, 3, 2, hw=(9, 10), stride=(2, 1), padding=(2, 0, 1, 3),
          dilation=(1, 2), groups=3)
# direct F.conv2d with torch's own (symmetric) padding argument, not via F.pad
case("conv2d", "torch-padding", [randn(1, 2, 6, 6), randn(4, 2, 3, 3), randn(4)],
     {"stride": [2, 2], "padding": [1, 1, 1, 1]},
     lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1))


def _sdpa(causal=False, scale=None):
    def ref(q, k, v, mask=None):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                              scale=scale)
    return ref


def bool_mask(*shape):
    """Random keep-mask where every query row keeps at least one key."""
    m = bools(*shape)
    rows = m.reshape(-1, shape[-1])
    rows[np.arange(rows.shape[0]), RNG.integers(0, shape[-1], rows.shape[0])] = True
    return rows.reshape(shape)


def float_mask(*shape):
    m = randn(*shape, scale=2)
    m[..., 1::3, 0] = -np.inf  # some masked keys, never a whole row
    return m


_q, _k, _v = randn(2, 3, 4, 8), randn(2, 3, 6, 8), randn(2, 3, 6, 5)
case("attention", "plain-L4-S6", [_q, _k, _v], {}, _sdpa())
case("attention", "plain-L6-S4", [randn(2, 3, 6, 8), randn(2, 3, 4, 8), randn(2, 3, 4, 8)], {},
     _sdpa())
case("attention", "causal-L4-S6", [_q, _k, _v], {"causal": True}, _sdpa(causal=True))
case("attention", "causal-L6-S4", [randn(2, 6, 8), randn(2, 4, 8), randn(2, 4, 8)],
     {"causal": True}, _sdpa(causal=True))
case("attention", "causal-square", [randn(1, 2, 5, 8)] * 3, {"causal": True}, _sdpa(causal=True))
# softcap: c * tanh(scores / c) before the mask, written out in torch (F.sdpa has no softcap)
case("attention", "softcap", [_q, _k, _v, bool_mask(4, 6)], {"softcap": 2.0},
     lambda q, k, v, m: torch.softmax(torch.where(
         m, 2.0 * torch.tanh(q @ k.transpose(-1, -2) / 8 ** 0.5 / 2.0), -torch.inf), -1) @ v)
# bottom-right alignment (a KV cache of 3 earlier keys): query i sees keys j <= i + 3
_q2, _kv2 = randn(2, 4, 8), randn(2, 7, 8)
case("attention", "causal-offset", [_q2, _kv2, _kv2], {"causal": True, "causal_offset": 3},
     lambda q, k, v: F.scaled_dot_product_attention(
         q, k, v, attn_mask=torch.ones(4, 7, dtype=torch.bool).tril(3)))
case("attention", "bool-mask", [_q, _k, _v, bool_mask(4, 6)], {}, _sdpa())
case("attention", "bool-mask-batched", [_q, _k, _v, bool_mask(2, 1, 4, 6)], {}, _sdpa())
case("attention", "float-mask", [_q, _k, _v, float_mask(2, 3, 4, 6)], {}, _sdpa())
case("attention", "float-mask-broadcast", [_q, _k, _v, float_mask(1, 6)], {}, _sdpa())
case("attention", "scale", [_q, _k, _v], {"scale": 0.7}, _sdpa(scale=0.7))
case("attention", "scale-float-mask", [_q, _k, _v, float_mask(4, 6)], {"scale": 2.0},
     _sdpa(scale=2.0))
_cm = bool_mask(4, 6)
_cm[:, 0] = True  # key 0 survives causal masking in every row
case("attention", "causal-and-bool-mask", [_q, _k, _v, _cm], {"causal": True},
     # torch refuses attn_mask together with is_causal: fold causality into the mask
     lambda q, k, v, m: F.scaled_dot_product_attention(
         q, k, v, attn_mask=m & torch.ones(4, 6, dtype=torch.bool).tril()))
_all_masked = bool_mask(4, 6)
_all_masked[1] = False  # query row 1 sees no key: zeros, as torch gives
case("attention", "fully-masked-row", [_q, _k, _v, _all_masked], {}, _sdpa())
case("attention", "3d", [randn(3, 4, 8), randn(3, 6, 8), randn(3, 6, 8)], {}, _sdpa())

# normalization ---------------------------------------------------------------------------

for axis in (-1, 0, 1, -2):
    case("softmax", f"axis{axis}", [randn(3, 4, 5, scale=4)], {"axis": axis},
         lambda x, axis=axis: torch.softmax(x, dim=axis))
case("softmax", "default-axis", [randn(2, 7, scale=4)], {}, lambda x: torch.softmax(x, -1))
case("softmax", "with-inf", [np.array([[0.0, -np.inf, 1.0], [2.0, 3.0, -np.inf]], np.float32)],
     {}, lambda x: torch.softmax(x, -1))

for axis in (-1, 0, 1):
    case("log_softmax", f"axis{axis}", [randn(3, 4, 5, scale=4)], {"axis": axis},
         lambda x, axis=axis: torch.log_softmax(x, dim=axis))
case("log_softmax", "default-axis", [randn(2, 7, scale=30)], {}, lambda x: torch.log_softmax(x, -1))
# -inf entries give -inf; a row of -inf, or one holding +inf or nan, gives nan (as in torch)
case("log_softmax", "specials",
     [np.array([[0.0, -np.inf, 1.0], [-np.inf, -np.inf, -np.inf], [np.inf, 0.0, 1.0],
                [np.nan, 0.0, 1.0], [1e30, -1e30, 0.0]], np.float32)],
     {}, lambda x: torch.log_softmax(x, -1))
# hetc computes in f32 and rounds once; torch's bf16 kernel rounds log(sum(exp)) to bf16 before
# subtracting it, which for the largest entry (a result near 0) loses several bf16 ulp
case("log_softmax", "bf16", [bf16(randn(4, 8, scale=4))], {},
     lambda x: torch.log_softmax(x.float(), -1).to(torch.bfloat16))


def _ln(axis, eps=1e-5):
    def ref(x, w=None, b=None):
        return F.layer_norm(x, x.shape[axis % x.ndim:], w, b, eps)
    return ref


_x = randn(2, 3, 8, scale=3) + 1.5
case("layer_norm", "w-b", [_x, W(randn(8)), W(randn(8))], {}, _ln(-1))
case("layer_norm", "plain", [_x], {}, _ln(-1))
case("layer_norm", "w-only", [_x, randn(8)], {}, _ln(-1))
case("layer_norm", "axis-2-w-b", [_x, randn(3, 8), randn(3, 8)], {"axis": -2}, _ln(-2))
case("layer_norm", "axis-2-plain", [_x], {"axis": -2}, _ln(-2))
case("layer_norm", "axis1-eps", [_x, randn(3, 8), randn(3, 8)], {"axis": 1, "eps": 1e-2},
     _ln(1, 1e-2))


def _rms(axis, eps):
    def ref(x, w=None):
        return F.rms_norm(x, x.shape[axis % x.ndim:], w, eps)
    return ref


case("rms_norm", "w-default-eps", [_x, W(randn(8))], {}, _rms(-1, 1e-6))
case("rms_norm", "plain", [_x], {"eps": 1e-5}, _rms(-1, 1e-5))
case("rms_norm", "axis-2-w", [_x, randn(3, 8)], {"axis": -2, "eps": 1e-3}, _rms(-2, 1e-3))
case("rms_norm", "axis-2-plain", [_x], {"axis": -2}, _rms(-2, 1e-6))


def _bn(eps):
    def ref(x, scale, bias, mean, var):
        return F.batch_norm(x, mean, var, scale, bias, training=False, eps=eps)
    return ref


for shape in [(2, 3, 4, 5), (2, 3), (2, 3, 7)]:
    c = shape[1]
    case("batch_norm", f"rank{len(shape)}",
         [randn(*shape, scale=2), W(randn(c)), W(randn(c)), W(randn(c)), W(positive(c))],
         {}, _bn(1e-5))
case("batch_norm", "eps", [randn(2, 3, 4, 4), randn(3), randn(3), randn(3), positive(3, lo=0.0, hi=0.01)],
     {"eps": 1e-2}, _bn(1e-2))

# shape ops -------------------------------------------------------------------------------

for shape in ([-1], [4, -1], [2, -1, 5], [6, 10], [1, 60, 1]):
    case("reshape", "x".join(map(str, shape)), [randn(3, 4, 5)], {"shape": shape},
         lambda x, shape=shape: x.reshape(shape))
case("reshape", "i32", [ints(2, 6)], {"shape": [3, -1]}, lambda x: x.reshape(3, -1))

case("expand", "trailing", [randn(3, 1)], {"shape": [3, 4]}, lambda x: x.expand(3, 4))
case("expand", "new-dims", [randn(4)], {"shape": [2, 3, 4]}, lambda x: x.expand(2, 3, 4))
case("expand", "middle", [ints(2, 1, 4)], {"shape": [2, 5, 4]}, lambda x: x.expand(2, 5, 4))
# hetc expand broadcasts both ways (numpy/ONNX rules), torch's only one way
case("expand", "bidirectional", [randn(3, 1)], {"shape": [1, 4]},
     lambda x: torch.broadcast_to(x, torch.broadcast_shapes(x.shape, (1, 4))))

for perm in ([1, 0, 2], [2, 0, 1], [0, 1, 2], [2, 1, 0]):
    case("transpose", "".join(map(str, perm)), [randn(2, 3, 4)], {"perm": perm},
         lambda x, perm=perm: x.permute(*perm))
case("transpose", "4d-i32", [ints(2, 3, 4, 5)], {"perm": [0, 2, 3, 1]},
     lambda x: x.permute(0, 2, 3, 1))

for axis in (0, 1, -1):
    shapes = [[2, 3, 4], [2, 3, 4], [2, 3, 4]]
    for s, n in zip(shapes, (1, 2, 3)):
        s[axis] = n
    case("concat", f"axis{axis}", [randn(*s) for s in shapes], {"axis": axis},
         lambda *xs, axis=axis: torch.cat(xs, dim=axis))
case("concat", "single", [randn(2, 3)], {"axis": 0}, lambda x: torch.cat([x], 0))
case("concat", "i32", [ints(2, 3), ints(2, 1)], {"axis": 1}, lambda a, b: torch.cat([a, b], 1))

for axis, sizes, shape in [(-1, [1, 2, 3], (2, 3, 6)), (0, [2, 2], (4, 5)),
                           (1, [0, 3, 1], (2, 4, 3)), (1, [4], (2, 4))]:
    case("split", f"axis{axis}-" + "_".join(map(str, sizes)), [randn(*shape)],
         {"axis": axis, "sizes": sizes},
         lambda x, axis=axis, sizes=sizes: list(torch.split(x, sizes, dim=axis)))


def _slice_ref(axes, starts, ends, steps=None):
    steps = steps or [1] * len(axes)

    def ref(x):
        index = [slice(None)] * x.ndim
        for a, s, e, st in zip(axes, starts, ends, steps):
            index[a] = slice(s, e, st)
        return x[tuple(index)]
    return ref


for id, axes, starts, ends, steps in [
    ("basic", [1], [1], [3], None),
    ("negative-start", [2], [-3], [6], None),
    ("negative-end", [0, 2], [0, 1], [-1, -2], None),
    ("end-beyond", [1, 2], [2, 3], [100, 2**31 - 1], None),
    ("start-beyond", [1], [10], [20], None),
    ("start-before", [2], [-100], [3], None),
    ("steps", [1, 2], [0, 1], [7, 6], [2, 3]),
    ("negative-start-steps", [2], [-5], [100], [2]),
    ("negative-axis", [-1, -3], [1, -2], [5, 10], [2, 1]),
    ("empty", [2], [4], [2], None),
]:
    case("slice", id, [randn(3, 7, 6)],
         {"axes": axes, "starts": starts, "ends": ends} | ({"steps": steps} if steps else {}),
         _slice_ref(axes, starts, ends, steps))
# torch slicing has no negative steps: the indices these pick are written out
case("slice", "negative-step", [randn(3, 7, 6)],
     {"axes": [1], "starts": [5], "ends": [0], "steps": [-2]},
     lambda x: x.index_select(1, torch.tensor([5, 3, 1])))
case("slice", "reverse", [randn(3, 7, 6)],
     {"axes": [2], "starts": [-1], "ends": [-100], "steps": [-1]}, lambda x: x.flip(2))


def _gather_ref(axis):
    def ref(x, idx):
        return x[(slice(None),) * (axis % x.ndim) + (idx.long(),)]
    return ref


case("gather", "axis0", [randn(5, 3), np.array([4, 0, 2, 2], np.int64)], {}, _gather_ref(0))
case("gather", "axis1-negative", [randn(2, 5, 3), np.array([-1, 0, -5, 3], np.int32)],
     {"axis": 1}, _gather_ref(1))
case("gather", "axis-1-2d-indices", [randn(2, 3, 6), ints(2, 4, lo=-6, hi=6, dtype=np.int64)],
     {"axis": -1}, _gather_ref(-1))
case("gather", "scalar-index", [randn(4, 3), np.array(-2, np.int32)], {}, _gather_ref(0))
case("gather", "i32-data", [ints(6, 2), np.array([[1, -1], [0, 5]], np.int64)], {},
     _gather_ref(0))


def _gather_elements_ref(axis):
    def ref(x, idx):
        n = x.shape[axis]
        return torch.gather(x, axis, torch.where(idx < 0, idx + n, idx).long())
    return ref


case("gather_elements", "axis0", [randn(4, 3), ints(5, 3, lo=0, hi=4, dtype=np.int64)], {},
     _gather_elements_ref(0))
case("gather_elements", "axis1-negative", [randn(2, 5, 3), ints(2, 7, 3, lo=-5, hi=5)],
     {"axis": 1}, _gather_elements_ref(1))
case("gather_elements", "axis-1-smaller", [randn(3, 4, 6), ints(2, 3, 5, lo=-6, hi=6)],
     {"axis": -1}, _gather_elements_ref(-1))
case("gather_elements", "i32-data", [ints(3, 4), ints(3, 2, lo=-4, hi=4, dtype=np.int64)],
     {"axis": 1}, _gather_elements_ref(1))
case("gather_elements", "u8-indices", [randn(5, 2), ints(3, 2, lo=0, hi=5, dtype=np.uint8)], {},
     _gather_elements_ref(0))
case("gather_elements", "empty-indices", [randn(3, 4), np.zeros((3, 0), np.int64)],
     {"axis": 1}, _gather_elements_ref(1))


_TORCH_PAD_MODE = {"reflect": "reflect", "edge": "replicate", "wrap": "circular"}


def _pad_ref(pads, mode):
    """Crop the negative pads, then pad one axis at a time with F.pad (whose
    reflect/replicate/circular modes pad only the last 1-3 dims)."""
    def ref(x):
        r = x.ndim
        for a in range(r):
            b, e = pads[a], pads[a + r]
            x = x.narrow(a, max(-b, 0), x.shape[a] - max(-b, 0) - max(-e, 0))
            if b > 0 or e > 0:
                y = x.movedim(a, -1)
                shape = y.shape
                y = F.pad(y.reshape(1, -1, shape[-1]), (max(b, 0), max(e, 0)),
                          mode=_TORCH_PAD_MODE[mode])
                x = y.reshape(*shape[:-1], -1).movedim(-1, a)
        return x
    return ref


def _torch_pads(pads):
    """ONNX order (all begins, all ends) to F.pad's (last begin, last end, ...)."""
    r = len(pads) // 2
    return [p for a in reversed(range(r)) for p in (pads[a], pads[a + r])]


for id, pads in [("all-axes", [1, 0, 2, 2, 1, 0]), ("crop", [0, -1, 2, -1, 1, -2]),
                 ("crop-last-begin", [1, 0, -2, 0, 1, 3]), ("zero", [0, 0, 0, 0, 0, 0])]:
    # F.pad pads (and crops, for negative pads) every axis at once in constant mode
    case("pad", f"constant-{id}", [randn(3, 4, 6)], {"pads": pads},
         lambda x, pads=pads: F.pad(x, _torch_pads(pads)))
    case("pad", f"constant-value-{id}", [randn(3, 4, 6)], {"pads": pads, "value": -1.5},
         lambda x, pads=pads: F.pad(x, _torch_pads(pads), value=-1.5))
    for mode in ("reflect", "edge", "wrap"):
        case("pad", f"{mode}-{id}", [randn(3, 4, 6)], {"pads": pads, "mode": mode},
             _pad_ref(pads, mode))
for mode in ("reflect", "edge", "wrap"):
    # crop one side and pad the other: cropping comes first (as ONNX's reference does)
    case("pad", f"{mode}-crop-then-pad", [randn(4, 7)], {"pads": [-1, 2, 2, -3], "mode": mode},
         _pad_ref([-1, 2, 2, -3], mode))
    case("pad", f"{mode}-bf16", [bf16(randn(3, 5))], {"pads": [1, 2, 2, 1], "mode": mode},
         _pad_ref([1, 2, 2, 1], mode))
case("pad", "reflect-largest", [randn(2, 3)], {"pads": [1, 2, 1, 2], "mode": "reflect"},
     _pad_ref([1, 2, 1, 2], "reflect"))
case("pad", "edge-one-element", [randn(1, 3)], {"pads": [3, 0, 2, 1], "mode": "edge"},
     _pad_ref([3, 0, 2, 1], "edge"))
# wrap repeats x periodically, beyond one period too; torch's circular pad stops at one
# period, so the periodic indices are written out
case("pad", "wrap-beyond-period", [randn(2, 3)], {"pads": [0, 7, 0, 4], "mode": "wrap"},
     lambda x: x.index_select(1, torch.arange(-7, 3 + 4) % 3))
case("pad", "i32-value", [ints(2, 3)], {"pads": [1, 1, 0, 2], "value": 7.0},
     lambda x: F.pad(x, _torch_pads([1, 1, 0, 2]), value=7))
case("pad", "i32-value-truncates", [ints(2, 3)], {"pads": [1, 0, 0, 0], "value": -2.7},
     lambda x: F.pad(x, _torch_pads([1, 0, 0, 0]), value=-2))
case("pad", "i32-edge", [ints(2, 3)], {"pads": [1, 1, 1, 1], "mode": "edge"},
     _pad_ref([1, 1, 1, 1], "edge"))
case("pad", "empty-axis", [randn(2, 0)], {"pads": [0, 1, 1, 2], "value": 3.0},
     lambda x: F.pad(x, _torch_pads([0, 1, 1, 2]), value=3.0))
# a crop reaching past x into the other side's padding leaves padding only; torch refuses
# such crops, so the (constant) result is written out
case("pad", "constant-overcrop", [randn(2, 3)], {"pads": [0, -5, 0, 4], "value": 2.0},
     lambda x: torch.full((2, 2), 2.0))

case("embedding", "i64", [ints(2, 5, lo=0, hi=10, dtype=np.int64), W(randn(10, 4))], {},
     lambda ids, t: F.embedding(ids, t))
case("embedding", "i32", [ints(3, lo=0, hi=10), randn(10, 4)], {},
     lambda ids, t: F.embedding(ids.long(), t))
case("embedding", "scalar-id", [np.array(7, np.int64), randn(10, 4)], {},
     lambda ids, t: F.embedding(ids, t))

# reductions and pooling ---------------------------------------------------------------------

_REDUCERS = {"reduce_sum": torch.sum, "reduce_mean": torch.mean, "reduce_max": torch.amax,
             "reduce_min": torch.amin, "reduce_prod": torch.prod}


def _reduce_ref(kind, axes, keepdims):
    def ref(x):
        dims = tuple(axes) if axes else tuple(range(x.ndim))  # [] means every axis
        if kind == "reduce_sum":  # torch.sum widens ints to i64; hetc keeps the dtype
            return torch.sum(x, dim=dims, keepdim=keepdims, dtype=x.dtype)
        if kind == "reduce_prod":  # torch.prod takes one dim at a time, and widens ints too
            for d in sorted((d % x.ndim for d in dims), reverse=True):
                x = torch.prod(x, dim=d, keepdim=keepdims, dtype=x.dtype)
            return x
        return _REDUCERS[kind](x, dim=dims, keepdim=keepdims)
    return ref


for kind in _REDUCERS:
    for axes in ([1], [0, 2], [-1], []):
        for keepdims in (False, True):
            case(kind, f"axes{'_'.join(map(str, axes)) or 'all'}-keep{int(keepdims)}",
                 [randn(3, 4, 5)], {"axes": axes, "keepdims": keepdims},
                 _reduce_ref(kind, axes, keepdims))
    case(kind, "defaults", [randn(3, 4)], {}, _reduce_ref(kind, [], False))
case("reduce_sum", "i32", [ints(3, 4, 5)], {"axes": [1, 2], "keepdims": True},
     _reduce_ref("reduce_sum", [1, 2], True))
case("reduce_max", "i32", [ints(3, 4, 5)], {"axes": [0]}, _reduce_ref("reduce_max", [0], False))
case("reduce_min", "i32", [ints(3, 4, 5)], {"axes": [0, 1]},
     _reduce_ref("reduce_min", [0, 1], False))
case("reduce_prod", "i32-wraps", [ints(3, 8, 5, lo=-40, hi=40)], {"axes": [1]},
     _reduce_ref("reduce_prod", [1], False))
case("reduce_prod", "i64", [ints(3, 4, lo=-9, hi=10, dtype=np.int64)], {},
     _reduce_ref("reduce_prod", [], False))
_nan_rows = randn(3, 4)
_nan_rows[1, 2] = np.nan
for kind in ("reduce_max", "reduce_min", "reduce_sum", "reduce_prod"):
    case(kind, "nan", [_nan_rows], {"axes": [1]}, _reduce_ref(kind, [1], False))

# Over an empty set every reduction gives its identity. torch agrees for sum, prod and mean;
# amax/amin refuse an empty dim, so the identity (-inf/+inf, the int type's min/max) is
# written out.
for axes, keepdims, shape in (([1], False, (3, 0, 4)), ([0, 2], True, (3, 5, 0)),
                              ([], False, (0, 2))):
    id = f"empty-axes{'_'.join(map(str, axes)) or 'all'}-keep{int(keepdims)}"
    for kind in ("reduce_sum", "reduce_prod", "reduce_mean"):
        case(kind, id, [randn(*shape)], {"axes": axes, "keepdims": keepdims},
             _reduce_ref(kind, axes, keepdims))
    for kind in ("reduce_sum", "reduce_prod"):
        case(kind, f"i32-{id}", [ints(*shape)], {"axes": axes, "keepdims": keepdims},
             _reduce_ref(kind, axes, keepdims))
    for kind, fill, info in (("reduce_max", -np.inf, "min"), ("reduce_min", np.inf, "max")):
        def empty_ref(x, axes=axes, keepdims=keepdims, fill=fill, info=info):
            shape = torch.sum(x, dim=tuple(axes) or tuple(range(x.ndim)), keepdim=keepdims).shape
            value = fill if x.dtype.is_floating_point else getattr(torch.iinfo(x.dtype), info)
            return torch.full(shape, value, dtype=x.dtype)
        case(kind, id, [randn(*shape)], {"axes": axes, "keepdims": keepdims}, empty_ref)
        case(kind, f"i32-{id}", [ints(*shape)], {"axes": axes, "keepdims": keepdims}, empty_ref)
        case(kind, f"u8-{id}", [ints(*shape, lo=0, dtype=np.uint8)],
             {"axes": axes, "keepdims": keepdims}, empty_ref)
# torch.mean refuses integers; hetc's integer mean of nothing is 0 (written out)
case("reduce_mean", "i32-empty", [ints(3, 0)], {"axes": [1]},
     lambda x: torch.zeros(3, dtype=torch.int32))
# a zero-size axis that is not reduced: an empty result, no identity needed
case("reduce_max", "empty-kept-axis", [randn(0, 4)], {"axes": [1]},
     _reduce_ref("reduce_max", [1], False))


def _arg_ref(kind, axis=0, keepdims=True, last=False):
    find = torch.argmax if kind == "argmax" else torch.argmin

    def ref(x):
        if last:  # the last of ties: the first in the flipped tensor
            return x.shape[axis] - 1 - find(x.flip(axis), dim=axis, keepdim=keepdims)
        return find(x, dim=axis, keepdim=keepdims)
    return ref


_ties = RNG.integers(-2, 3, (3, 4, 5)).astype(np.float32)  # many ties
for kind in ("argmax", "argmin"):
    case(kind, "defaults", [randn(3, 4, 5)], {}, _arg_ref(kind))
    for axis in (1, -1):
        for keepdims in (False, True):
            case(kind, f"axis{axis}-keep{int(keepdims)}", [randn(3, 4, 5)],
                 {"axis": axis, "keepdims": keepdims}, _arg_ref(kind, axis, keepdims))
    case(kind, "ties-first", [_ties], {"axis": 2}, _arg_ref(kind, 2))
    case(kind, "ties-last", [_ties], {"axis": 2, "select_last_index": True},
         _arg_ref(kind, 2, last=True))
    case(kind, "ties-last-axis0", [_ties], {"select_last_index": True, "keepdims": False},
         _arg_ref(kind, 0, False, last=True))
    case(kind, "i32", [ints(4, 6, lo=-3, hi=3)], {"axis": 1}, _arg_ref(kind, 1))
    case(kind, "nan", [np.array([[1.0, np.nan, 5.0, np.nan], [-1.0, 2.0, -3.0, 0.0]], np.float32)],
         {"axis": 1}, _arg_ref(kind, 1))
    case(kind, "bf16", [bf16(_ties)], {"axis": 1}, _arg_ref(kind, 1))


def _cumsum_ref(axis, exclusive=False, reverse=False):
    def ref(x):
        y = x.flip(axis) if reverse else x
        y = torch.cumsum(y, axis, dtype=x.dtype)  # torch widens ints to i64 unless told
        if exclusive:
            n = y.shape[axis]
            y = torch.cat([torch.zeros_like(y.narrow(axis, 0, min(n, 1))),
                           y.narrow(axis, 0, max(n - 1, 0))], axis)
        return y.flip(axis) if reverse else y
    return ref


for axis in (0, 1, -1):
    for exclusive in (False, True):
        for reverse in (False, True):
            case("cumsum", f"axis{axis}-excl{int(exclusive)}-rev{int(reverse)}", [randn(3, 4, 5)],
                 {"axis": axis, "exclusive": exclusive, "reverse": reverse},
                 _cumsum_ref(axis, exclusive, reverse))
case("cumsum", "i32-wraps", [ints(3, 6, lo=2**29, hi=2**30)], {"axis": 1}, _cumsum_ref(1))
case("cumsum", "i64-exclusive-reverse", [ints(2, 7, dtype=np.int64)],
     {"axis": 1, "exclusive": True, "reverse": True}, _cumsum_ref(1, True, True))
case("cumsum", "1d", [randn(9)], {"axis": 0}, _cumsum_ref(0))
case("cumsum", "empty-axis", [randn(3, 0)], {"axis": 1, "exclusive": True}, _cumsum_ref(1, True))
case("cumsum", "one-element-exclusive", [randn(3, 1)], {"axis": 1, "exclusive": True},
     _cumsum_ref(1, True))


def pool_case(kind, id, x, kernel, stride=None, pad=(0, 0), ceil_mode=False, dilation=None,
              count_include_pad=None):
    """Symmetric padding (ph, pw) only: torch pads both sides alike."""
    attrs = {"kernel": list(kernel), "padding": [pad[0], pad[1], pad[0], pad[1]],
             "ceil_mode": ceil_mode}
    kw = dict(kernel_size=tuple(kernel), padding=tuple(pad), ceil_mode=ceil_mode)
    if stride is not None:
        attrs["stride"] = list(stride)
        kw["stride"] = tuple(stride)
    if dilation is not None:
        attrs["dilation"] = kw["dilation"] = list(dilation)
    if count_include_pad is not None:
        attrs["count_include_pad"] = kw["count_include_pad"] = count_include_pad
    fn = F.max_pool2d if kind == "max_pool2d" else F.avg_pool2d
    case(kind, id, [x], attrs, lambda t: fn(t, **kw))


pool_case("max_pool2d", "k2-default-stride", randn(2, 3, 8, 8), (2, 2))
pool_case("max_pool2d", "k3-s2-p1", randn(2, 3, 9, 8), (3, 3), (2, 2), (1, 1))
pool_case("max_pool2d", "k3x2-s2x1-p1x1", randn(1, 2, 7, 6), (3, 2), (2, 1), (1, 1))
pool_case("max_pool2d", "ceil", randn(1, 2, 7, 8), (3, 3), (2, 2), ceil_mode=True)
pool_case("max_pool2d", "ceil-pad", randn(1, 2, 5, 6), (2, 2), (2, 2), (1, 1), ceil_mode=True)
pool_case("max_pool2d", "ceil-pad-k3", randn(1, 2, 8, 7), (3, 3), (2, 2), (1, 1), ceil_mode=True)
pool_case("max_pool2d", "dilation", randn(1, 2, 9, 9), (3, 2), (1, 2), (1, 1), dilation=(2, 2))
pool_case("max_pool2d", "negative-values", -positive(1, 2, 6, 6), (3, 3), (2, 2), (1, 1))
pool_case("max_pool2d", "i32", ints(1, 2, 6, 6), (2, 2))
pool_case("max_pool2d", "i32-pad-ceil", ints(1, 2, 5, 6), (3, 3), (2, 2), (1, 1), ceil_mode=True)

pool_case("avg_pool2d", "k2-default-stride", randn(2, 3, 8, 8), (2, 2))
pool_case("avg_pool2d", "k3x2-s1x2", randn(1, 2, 7, 6), (3, 2), (1, 2))
for cip in (True, False):
    pool_case("avg_pool2d", f"k3-s2-p1-cip{int(cip)}", randn(2, 3, 9, 8), (3, 3), (2, 2), (1, 1),
              count_include_pad=cip)
    pool_case("avg_pool2d", f"ceil-cip{int(cip)}", randn(1, 2, 7, 8), (3, 3), (2, 2),
              ceil_mode=True, count_include_pad=cip)
    pool_case("avg_pool2d", f"ceil-pad-cip{int(cip)}", randn(1, 2, 5, 6), (2, 2), (2, 2), (1, 1),
              ceil_mode=True, count_include_pad=cip)
    pool_case("avg_pool2d", f"ceil-pad-k3-cip{int(cip)}", randn(1, 2, 8, 7), (3, 3), (2, 2),
              (1, 1), ceil_mode=True, count_include_pad=cip)
pool_case("avg_pool2d", "pad-only-cols", randn(1, 1, 6, 5), (2, 3), (2, 2), (0, 1))

case("global_avg_pool", "4d", [randn(2, 3, 5, 7)], {}, lambda x: F.adaptive_avg_pool2d(x, 1))
case("global_avg_pool", "3d", [randn(2, 3, 9)], {}, lambda x: F.adaptive_avg_pool1d(x, 1))
case("global_avg_pool", "5d", [randn(1, 2, 3, 4, 5)], {}, lambda x: F.adaptive_avg_pool3d(x, 1))

# bf16: computed in f32 and rounded to bf16 after each op, as torch does on CPU ------------------

for kind, ref, make in [
    ("add", torch.add, lambda: [randn(4, 8, scale=4), randn(8, scale=4)]),
    ("mul", torch.mul, lambda: [randn(4, 8, scale=4), randn(4, 8, scale=4)]),
    ("sub", torch.sub, lambda: [randn(4, 8, scale=4), randn(4, 1, scale=4)]),
    ("div", torch.div, lambda: [randn(4, 8, scale=4), positive(4, 8)]),
    ("exp", torch.exp, lambda: [randn(4, 8, scale=3)]),
    ("tanh", torch.tanh, lambda: [randn(4, 8, scale=3)]),
    ("sigmoid", torch.sigmoid, lambda: [randn(4, 8, scale=4)]),
    ("silu", F.silu, lambda: [randn(4, 8, scale=4)]),
    ("relu", F.relu, lambda: [randn(4, 8, scale=4)]),
    ("gelu", F.gelu, lambda: [randn(4, 8, scale=3)]),
]:
    case(kind, "bf16", [bf16(a) for a in make()], {}, ref)
case("gelu", "bf16-tanh", [bf16(randn(4, 8, scale=3))], {"approximate": "tanh"},
     lambda x: F.gelu(x, approximate="tanh"))
case("linear", "bf16-bias", [bf16(randn(2, 3, 32)), W(bf16(randn(16, 32))), W(bf16(randn(16)))],
     {}, F.linear)
case("linear", "bf16-no-bias", [bf16(randn(5, 32)), W(bf16(randn(16, 32)))], {}, F.linear)

# topk: after the other cases, so that their inputs (drawn from RNG) stay as they were --

def _topk_sorted(k, axis=-1, largest=True):
    """topk's definition in torch: a stable sort (ties in index order, NaN
    above every number), its first k."""
    def ref(x):
        v, i = torch.sort(x, dim=axis, descending=largest, stable=True)
        return [v.narrow(axis, 0, k), i.narrow(axis, 0, k)]
    return ref


def _topk_torch(k, axis=-1, largest=True):
    """torch.topk itself: the same answer where no two elements tie."""
    return lambda x: list(torch.topk(x, k, dim=axis, largest=largest, sorted=True))


_distinct = RNG.permutation(4 * 5 * 8).astype(np.float32).reshape(4, 5, 8) / 7 - 20
# NaN above every number; infinities; -0 and 0 tie (index order)
_topk_specials = np.array([[1.0, np.nan, 3.0, np.inf, np.nan, -np.inf, 3.0, 0.0, -0.0, np.inf],
                           [-0.0, 0.0, np.nan, -1.0, -np.inf, np.inf, 2.0, -0.0, np.nan, 5.0]],
                          np.float32)
_topk_wide = np.array([[2**40, -2**40, 2**31, 2**31 - 1, -2**31 - 1, 0, 2**40, -1, 2**63 - 1,
                        -2**63]], np.int64)  # beyond 32 bits
for largest in (True, False):
    tag = "largest" if largest else "smallest"
    # a mixture-of-experts router: 2 of 8 per token, in a batch of rows
    case("topk", f"router-{tag}", [_distinct], {"k": 2, "largest": largest},
         _topk_torch(2, largest=largest), exact=True)
    case("topk", f"axis1-{tag}", [_distinct], {"k": 3, "axis": 1, "largest": largest},
         _topk_torch(3, 1, largest), exact=True)
    case("topk", f"negative-axis-{tag}", [_distinct], {"k": 4, "axis": -3, "largest": largest},
         _topk_sorted(4, -3, largest), exact=True)
    case("topk", f"ties-{tag}", [_ties], {"k": 4, "axis": 2, "largest": largest},
         _topk_sorted(4, 2, largest), exact=True)
    case("topk", f"ties-full-{tag}", [_ties], {"k": 4, "axis": 1, "largest": largest},
         _topk_sorted(4, 1, largest), exact=True)
    case("topk", f"nan-full-{tag}", [_topk_specials], {"k": 10, "largest": largest},
         _topk_sorted(10, largest=largest), exact=True)
    case("topk", f"nan-{tag}", [_topk_specials], {"k": 3, "largest": largest},
         _topk_sorted(3, largest=largest), exact=True)
    case("topk", f"i64-{tag}", [_topk_wide], {"k": 6, "largest": largest},
         _topk_sorted(6, largest=largest))
    case("topk", f"i32-{tag}", [ints(3, 9, lo=-3, hi=3)], {"k": 5, "axis": 1, "largest": largest},
         _topk_sorted(5, 1, largest))
case("topk", "k0", [randn(3, 5)], {"k": 0}, _topk_sorted(0))
case("topk", "empty-axis", [randn(3, 0)], {"k": 0}, _topk_sorted(0))
case("topk", "vector", [randn(7)], {"k": 7, "axis": 0}, _topk_sorted(7, 0), exact=True)
case("topk", "unsorted", [_ties], {"k": 3, "sorted": False}, _topk_sorted(3), exact=True)
case("topk", "bf16", [bf16(_ties)], {"k": 2, "axis": 1}, _topk_sorted(2, 1), exact=True)
case("topk", "u8", [ints(2, 9, lo=0, hi=4, dtype=np.uint8)], {"k": 4, "largest": False},
     _topk_sorted(4, largest=False))


COVERED = {c.kind for c in CASES}


# -- running -------------------------------------------------------------------------------------

def add_case(c: Case, g: Graph, prefix="") -> tuple[list, list]:
    """Case `c` as ops of `g`, names prefixed: (its input arrays, its results)."""
    operands, feeds = [], []
    for i, a in enumerate(c.inputs):
        if isinstance(a, W):
            operands.append(g.const(a.array, name=f"{prefix}w{i}"))
        else:
            a = np.asarray(a)
            operands.append(g.add_input(f"{prefix}x{i}",
                                        TensorType(a.shape, dtypes.from_numpy(a.dtype))))
            feeds.append(a)
    out = g.add(c.kind, operands, c.attrs)
    return feeds, out if isinstance(out, list) else [out]


def run_hetc(c: Case) -> list[np.ndarray]:
    g = Graph(name="one_op")
    feeds, g.outputs = add_case(c, g)
    verify(g)
    results = interpret(g, feeds)
    for v, r in zip(g.outputs, results):
        # the interpreter's values must have the types shape inference declared
        assert r.shape == v.type.shape, f"{v}: interpreter gave shape {list(r.shape)}"
        assert r.dtype == v.type.dtype.storage, f"{v}: interpreter gave dtype {r.dtype}"
    return results


def compare(got, want, exact, what):
    assert got.shape == want.shape, f"{what}: shape {got.shape} != torch {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != torch {want.dtype}"
    dt = dtypes.from_numpy(got.dtype)
    if exact or not dt.is_float:
        if dt.is_float:  # equal values (NaN equals NaN) and the same sign of every zero
            g32, w32 = got.astype(np.float32), want.astype(np.float32)
            np.testing.assert_array_equal(g32, w32, err_msg=what)
            np.testing.assert_array_equal(np.signbit(g32[g32 == 0]), np.signbit(w32[w32 == 0]),
                                          err_msg=what)
        else:
            np.testing.assert_array_equal(got, want, err_msg=what)
        return
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32),
                               err_msg=what, **TOL[dt.name])


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_op_matches_torch(c: Case):
    got = run_hetc(c)
    with torch.no_grad():
        want = c.ref(*[to_torch(_array(a)) for a in c.inputs])
    want = list(want) if isinstance(want, (list, tuple)) else [want]
    assert len(got) == len(want), f"{c.id}: {len(got)} results, torch gave {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        compare(g, to_numpy(w), c.exact, f"{c.id} result {i}")


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


def test_every_op_kind_is_covered():
    missing = set(OPS) - SKIP_KINDS - COVERED
    assert not missing, f"op kinds with no case in {__name__}: {sorted(missing)}"
    unknown = COVERED - set(OPS)
    assert not unknown, f"cases for kinds not in OPS: {sorted(unknown)}"



def test_attention_mask_must_not_widen_the_batch():
    """A mask broadcasting past the scores' shape is rejected, as torch rejects it
    (the interpreter would otherwise return a bigger array than the declared type)."""
    q, k, v, m = randn(3, 4), randn(5, 4), randn(5, 4), bool_mask(2, 3, 5)
    with pytest.raises(RuntimeError):
        F.scaled_dot_product_attention(*map(to_torch, (q, k, v, m)))
    g = Graph()
    operands = [g.add_input(n, TensorType(a.shape, dtypes.from_numpy(a.dtype)))
                for n, a in zip("qkvm", (q, k, v, m))]
    with pytest.raises(InferError, match="does not broadcast to the scores"):
        g.add("attention", operands)


def _t(shape, dtype="f32"):
    return TensorType(shape, dtypes.get(dtype))


@pytest.mark.parametrize("kind, types, attrs, message", [
    ("floor", [_t((2,), "i32")], {}, "floor needs a float tensor, got i32"),
    ("sin", [_t((2,), "bool")], {}, "sin needs a float tensor, got bool"),
    ("sign", [_t((2,), "bool")], {}, "sign needs a float or integer tensor, got bool"),
    ("isnan", [_t((2,), "i32")], {}, "isnan needs a float tensor"),
    ("isinf", [_t((2,))], {"detect_positive": 1},
     "attribute 'detect_positive' of isinf must be bool"),
    ("logical_not", [_t((2,), "i32")], {}, "logical_not needs a bool tensor, got i32"),
    ("bitwise_not", [_t((2,), "bool")], {}, "bitwise_not needs an integer tensor, got bool"),
    ("mod", [_t((2,), "bool"), _t((2,), "bool")], {}, "mod needs a float or integer tensor"),
    ("fmod", [_t((2,), "i32"), _t((2,), "i64")], {}, "fmod operands have different dtypes"),
    ("logical_and", [_t((2,)), _t((2,))], {}, "logical_and needs a bool tensor, got f32"),
    ("bitwise_or", [_t((2,)), _t((2,))], {}, "bitwise_or needs an integer or bool tensor"),
    ("shift_left", [_t((2,), "bool"), _t((2,), "bool")], {}, "shift_left needs an integer tensor"),
    ("shift_right", [_t((2,), "u8"), _t((3,), "u8")], {}, r"shapes \[2\], \[3\] do not broadcast"),
    ("less_equal", [_t((2,)), _t((2,), "bf16")], {}, "less_equal operands have different dtypes"),
    ("pad", [_t((2, 3))], {"pads": [1, 1]}, r"pad needs 4 pads \(all begins, then all ends\)"),
    ("pad", [_t((2, 3))], {"pads": [0, -2, 0, -2]},
     "pads -2, -2 crop more than the 3 elements of axis 1"),
    ("pad", [_t((2, 3))], {"pads": [0, 0, 0, 0], "mode": "symmetric"}, "pad mode must be one of"),
    ("pad", [_t((2, 3))], {"pads": [0, 3, 0, 0], "mode": "reflect"},
     r"reflect pads must be smaller than the axis: axis 1 has 3 elements"),
    ("pad", [_t((2, 4))], {"pads": [0, -2, 0, 2], "mode": "reflect"},
     "axis 1 has 2 elements \\(after cropping\\), pads -2, 2"),
    ("pad", [_t((2, 0))], {"pads": [0, 1, 0, 0], "mode": "edge"},
     "pad mode 'edge' has nothing to copy"),
    ("pad", [_t((2, 3))], {"pads": [0, -4, 0, 2], "mode": "wrap"},
     "pad mode 'wrap' has nothing to copy"),
    ("pad", [_t((2,), "i32")], {"pads": [1, 0], "value": float("nan")},
     "pad value nan does not fit i32"),
    ("cumsum", [_t((2, 3))], {}, "cumsum needs attribute 'axis'"),
    ("cumsum", [_t((2, 3))], {"axis": 2}, "axis 2 is out of range for rank 2"),
    ("cumsum", [_t((2,), "bool")], {"axis": 0}, "cumsum needs a float or integer tensor"),
    ("cumsum", [_t(())], {"axis": 0}, "cumsum needs a tensor of rank >= 1"),
    ("argmax", [_t((2, 0))], {"axis": 1}, r"argmax over axis 1 of \[2, 0\]: the axis is empty"),
    ("argmin", [_t((2, 3))], {"axis": -3}, "axis -3 is out of range for rank 2"),
    ("argmin", [_t((2,), "bool")], {}, "argmin needs a float or integer tensor"),
    ("topk", [_t((2, 3))], {}, "topk needs attribute 'k'"),
    ("topk", [_t((2, 3))], {"k": 4}, r"topk k=4 is out of range \[0, 3\] for axis -1 of \[2, 3\]"),
    ("topk", [_t((2, 3))], {"k": -1, "axis": 0},
     r"topk k=-1 is out of range \[0, 2\] for axis 0 of \[2, 3\]"),
    ("topk", [_t((2, 3))], {"k": 1, "axis": 2}, "axis 2 is out of range for rank 2"),
    ("topk", [_t(())], {"k": 0}, "topk needs a tensor of rank >= 1, got a scalar"),
    ("topk", [_t((2,), "bool")], {"k": 1}, "topk needs a float or integer tensor, got bool"),
    ("topk", [_t((2,))], {"k": 1, "largest": 1}, "attribute 'largest' of topk must be bool"),
    ("reduce_min", [_t((2, 3))], {"axes": [2]}, "axis 2 is out of range for rank 2"),
    ("log_softmax", [_t((2, 3), "i32")], {}, "log_softmax needs a float tensor, got i32"),
    ("gather_elements", [_t((2, 3)), _t((2, 3))], {}, "gather_elements indices must be integers"),
    ("gather_elements", [_t((2, 3)), _t((2,), "i64")], {},
     r"indices \[2\] must have the rank of x \[2, 3\]"),
    ("gather_elements", [_t((2, 3)), _t((5, 4), "i64")], {},
     r"indices \[5, 4\] are larger than x \[2, 3\] outside axis 0"),
])
def test_new_ops_reject_bad_operands(kind, types, attrs, message):
    g = Graph()
    operands = [g.add_input(f"x{i}", t) for i, t in enumerate(types)]
    with pytest.raises(InferError, match=message):
        g.add(kind, operands, attrs)


@pytest.mark.parametrize("indices", [[[0, 3]], [[-4, 0]]])
def test_gather_elements_index_out_of_range(indices):
    g = Graph()
    x = g.add_input("x", TensorType((2, 3), dtypes.f32))
    i = g.add_input("i", TensorType((1, 2), dtypes.i64))
    g.outputs = [g.add("gather_elements", [x, i], {"axis": 1})]
    with pytest.raises(HetcError, match=r"gather_elements: index out of range \[-3, 3\)"):
        interpret(g, [randn(2, 3), np.array(indices, np.int64)])


def test_shifts_of_narrow_integers_wrap_to_their_width():
    """i4 and u4 have no torch type: every value by every count, against Python
    integers wrapped to 4 bits."""
    for dt, lo, hi in ((dtypes.i4, -8, 8), (dtypes.u4, 0, 16)):
        a, b = np.meshgrid(np.arange(lo, hi), np.arange(lo, hi), indexing="ij")
        for kind in ("shift_left", "shift_right"):
            g = Graph()
            xs = [g.add_input(n, TensorType(a.shape, dt)) for n in "ab"]
            g.outputs = [g.add(kind, xs)]
            got = interpret(g, [a.astype(dt.storage), b.astype(dt.storage)])[0].astype(np.int64)

            def want(x, n):
                if not 0 <= n < 4:
                    return -1 if kind == "shift_right" and x < 0 else 0
                y = (x << n) & 15 if kind == "shift_left" else x >> n
                return y - 16 if lo < 0 and y >= 8 else y
            np.testing.assert_array_equal(got, np.vectorize(want)(a, b), err_msg=f"{dt} {kind}")
