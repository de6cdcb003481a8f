"""The x86 renderer: what the C of backends/c computes with, on x86 CPUs.

The lowerings call the kernels of kernels.h (AVX-512 with AVX2 fallbacks)
and pack weights into their layouts (row blocks for integer weights, float
panels); attention reads keys and values where they lie (a cache and new
tokens as two segments, grouped-query heads without the expand copy). What
every C-family generator shares (the blob, the arena planner, views, the
source template, the one way names reach the file) is in backends/c.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from hetc.backends.c.emitter import Emitter, Lowered
from hetc.backends.c.kv_view import KVView, attention_views
from hetc.backends.c.plan import slice_reads
from hetc.backends.c.quant import integer_codes, integer_weight, stored_scales, weight_scales
from hetc.backends.c.shapes import index_problem, mask_problem, matmul_problem
from hetc.backends.c.text import float_literal, string_literal
from hetc.backends.c.values import (
    CTYPE,
    broadcast_strides,
    carray,
    cpointer,
    itemsize,
    round_up,
    strides,
)
from hetc.core.registry import Registry
from hetc.core.targets import PANEL_POSITIONS

UNARY = {"relu": "U_RELU", "silu": "U_SILU", "sigmoid": "U_SIGMOID", "tanh": "U_TANH",
         "exp": "U_EXP", "neg": "U_NEG", "sqrt": "U_SQRT", "rsqrt": "U_RSQRT", "abs": "U_ABS",
         "log": "U_LOG", "erf": "U_ERF", "floor": "U_FLOOR", "ceil": "U_CEIL", "round": "U_ROUND",
         "reciprocal": "U_RECIPROCAL", "sign": "U_SIGN", "sin": "U_SIN", "cos": "U_COS",
         "tan": "U_TAN", "asin": "U_ASIN", "acos": "U_ACOS", "atan": "U_ATAN", "sinh": "U_SINH",
         "cosh": "U_COSH", "asinh": "U_ASINH", "acosh": "U_ACOSH", "atanh": "U_ATANH"}
BINARY = {"add": "B_ADD", "sub": "B_SUB", "mul": "B_MUL", "div": "B_DIV", "maximum": "B_MAX",
          "minimum": "B_MIN", "pow": "B_POW"}

#: the kernels.h tag of each dtype the generated code holds (backends/c CTYPE)
TAGS = {"f32": "T_F32", "i64": "T_I64", "i32": "T_I32", "bool": "T_BOOL"}
LOGICAL = {"logical_and": "L_AND", "logical_or": "L_OR", "logical_xor": "L_XOR"}
COMPARE = {"equal": "C_EQ", "less": "C_LT", "greater": "C_GT", "less_equal": "C_LE",
           "greater_equal": "C_GE"}
REDUCE = {"reduce_sum": "R_SUM", "reduce_mean": "R_MEAN", "reduce_max": "R_MAX",
          "reduce_min": "R_MIN", "reduce_prod": "R_PROD"}
#: ops that move elements of any supported dtype; the others compute on f32
#: (embedding/gather indices and attention masks are checked by their lowering;
#: a fused region's ops are checked themselves)
ANY_DTYPE = {"fused", "reshape", "transpose", "concat", "split", "slice", "expand", "gather", "cast",
             "embedding", "logical_not", "attention", "where", "pad", "gather_elements",
             "isnan", "isinf", "argmax", "argmin", "topk", *LOGICAL, *COMPARE}
PAD_MODES = {"constant": "P_CONSTANT", "reflect": "P_REFLECT", "edge": "P_EDGE", "wrap": "P_WRAP"}
#: ops with integer kernels too (kernels.h HETC_INT_BINARY), for these dtypes
INT_OPS = {"add", "sub", "mul", "div", "maximum", "minimum", "cumsum", "neg", "abs", "relu",
           "sign"}
INT_KERNEL = {"i64": "int64_t", "i32": "int32_t"}
#: marks a kernel label whose layers run a plain loop (the report says so)
GENERIC = "generic loop"


def _all_dtype(values, name, what):
    bad = next((v for v in values if v.type.dtype.name != name), None)
    return None if bad is None else f"{bad.type.dtype} {what} (needs {name})"


def _attention_problem(op):
    q, k, v = (x.type for x in op.inputs[:3])
    if op.attrs.get("softcap"):
        return "a softcap (not lowered yet)"
    if q.rank != 4 or k.shape[:2] != q.shape[:2] or v.shape[:3] != k.shape[:3]:
        return f"q {q}, k {k} (needs [B,H,L,D] q, k, v with equal heads)"
    if len(op.inputs) > 3:
        mt = op.inputs[3].type
        full = [1] * (4 - mt.rank) + list(mt.shape)
        if mt.rank > 4 or full[3] != k.shape[2] or \
                any(d not in (1, n) for d, n in zip(full[:3], q.shape[:3])):
            return (f"mask {mt} does not broadcast to [{', '.join(map(str, q.shape[:3]))}, "
                    f"{k.shape[2]}] with its key axis whole")
    return _all_dtype(list(op.inputs[:3]) + [op.output], "f32",
                      "query, key, value or result") or mask_problem(op)


def _batch_norm_problem(op):
    if any(v.producer is None or v.producer.kind != "const" for v in op.inputs[1:]):
        return "statistics that are not constants"
    return None


#: what lowerings need of their operands beyond CTYPE (dtypes, shapes,
#: constants): op -> None or the problem; checked for every op before any
#: is lowered
RULES = {
    **{k: (lambda op: _all_dtype(list(op.inputs) + [op.output], "bool", "operand"))
       for k in (*LOGICAL, "logical_not")},
    **{k: (lambda op: _all_dtype(op.inputs[:1], "f32", "input"))
       for k in ("argmax", "argmin", "isnan", "isinf")},
    "where": lambda op: _all_dtype(op.inputs[:1], "bool", "condition"),
    "gather": lambda op: index_problem(op.inputs[1]),
    "gather_elements": lambda op: index_problem(op.inputs[1]),
    "embedding": lambda op: index_problem(op.inputs[0]),
    "attention": _attention_problem,
    "matmul": matmul_problem,
    "batch_norm": _batch_norm_problem,
}


def why_not(op):
    """Why the x86 renderer cannot lower `op` (which it has a lowering for), or None."""
    for v in list(op.inputs) + list(op.outputs):
        if v.producer is not None and v.producer.kind == "const":
            continue
        name = v.type.dtype.name
        integer = op.kind in INT_OPS and name in INT_KERNEL
        if name not in CTYPE or (name != "f32" and op.kind not in ANY_DTYPE and not integer):
            return f"{v.type.dtype} value %{v.name}"
    return RULES.get(op.kind, lambda op: None)(op)


#: the IR ops the x86 renderer does not lower, and why
REFUSED = {
    **{k: "no integer bitwise kernel in kernels.h yet" for k in (
        "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not", "shift_left", "shift_right")},
    **{k: "no remainder kernel in kernels.h yet" for k in ("mod", "fmod")},
}


# -- per-op lowering ----------------------------------------------------------------

LOWER = Registry("x86 lowerings")
lowers = LOWER.register


def _kernel(name, op):
    """The f32 kernel `name`, or its integer form for op's i64/i32 values."""
    t = INT_KERNEL.get(op.output.type.dtype.name)
    return f"{name}_{t}" if t else name


@lowers(*UNARY)
def _unary(e, op):
    e.emit(f"{_kernel('k_unary', op)}({UNARY[op.kind]}, {e.ptr[op.output]}, "
           f"{e.val(op.inputs[0])}, {op.output.type.numel});")


@lowers("gelu")
def _gelu(e, op):
    kind = "U_GELU_TANH" if op.attrs.get("approximate") == "tanh" else "U_GELU"
    e.emit(f"k_unary({kind}, {e.ptr[op.output]}, {e.val(op.inputs[0])}, {op.output.type.numel});")


def _broadcast_args(op, *operands):
    """C arguments `ndim, shape, strides of each operand` broadcasting the
    operands to op's output shape."""
    shape = list(op.output.type.shape) or [1]
    return ", ".join([str(len(shape)), carray(shape)] +
                     [carray(broadcast_strides(v.type, shape) or [1]) for v in operands])


@lowers(*BINARY)
def _binary(e, op):
    a, b = op.inputs
    e.emit(f"{_kernel('k_binary', op)}({BINARY[op.kind]}, {e.ptr[op.output]}, {e.val(a)}, "
           f"{e.val(b)}, {_broadcast_args(op, a, b)});")


@lowers("reshape")
def _reshape(e, op):
    e.alias(op)


def _strided(e, op, x, xs, offset=0):
    """op's output as elements of x read at `xs` strides (along the output's
    axes) from element `offset`: transposes, slices and broadcasts."""
    t = op.output.type
    src = f"{e.val(x)} + {offset}" if offset else e.val(x)
    e.emit(f"k_strided({e.ptr[op.output]}, {src}, {t.rank}, {carray(t.shape or [1])}, "
           f"{carray(xs or [0])}, {itemsize(t)});")


@lowers("transpose")
def _transpose(e, op):
    x = op.inputs[0]
    xs = strides(x.type.shape)
    _strided(e, op, x, [xs[p] for p in op.attrs["perm"]])


@lowers("slice")
def _slice(e, op):
    x = op.inputs[0]
    if not e.alias(op):  # a contiguous block is a view, no copy
        _strided(e, op, x, *slice_reads(op))


@lowers("expand")
def _expand(e, op):
    x = op.inputs[0]
    _strided(e, op, x, broadcast_strides(x.type, list(op.output.type.shape)))


def _axis_split(t, axis):
    """(outer, n, inner): the element counts before, along and after `axis` of t."""
    axis %= t.rank
    return math.prod(t.shape[:axis]), t.shape[axis], math.prod(t.shape[axis + 1:])


@lowers("concat")
def _concat(e, op):
    t = op.output.type
    axis = op.attrs["axis"] % t.rank
    outer, total, inner = _axis_split(t, axis)
    off = 0
    for x in op.inputs:
        rows = x.type.shape[axis]
        e.emit(f"k_copy_block({e.ptr[op.output]}, {total}, {off}, {e.val(x)}, {rows}, 0, "
               f"{rows}, {outer}, {inner * itemsize(t)});")
        off += rows


@lowers("split")
def _split(e, op):
    x = op.inputs[0]
    outer, total, inner = _axis_split(x.type, op.attrs["axis"])
    off = 0
    for v, rows in zip(op.outputs, op.attrs["sizes"]):
        e.emit(f"k_copy_block({e.ptr[v]}, {rows}, 0, {e.val(x)}, {total}, {off}, "
               f"{rows}, {outer}, {inner * itemsize(v.type)});")
        off += rows


def _wide(idx):
    """1 for i64 indices, 0 for i32 (RULES admits only these)."""
    return int(idx.type.dtype.name == "i64")


@lowers("gather_elements")
def _gather_elements(e, op):
    x, idx = op.inputs
    axis = op.attrs["axis"] % x.type.rank
    e.emit(f"k_gather_elements({e.ptr[op.output]}, {e.val(x)}, {e.val(idx)}, "
           f"{_wide(idx)}, {x.type.rank}, {carray(idx.type.shape)}, "
           f"{carray(strides(x.type.shape))}, {axis}, {x.type.shape[axis]}, {itemsize(op.output.type)});")


def _take(e, op, x, idx, axis):
    """x's slices along `axis` picked by idx (gather; embedding is axis 0)."""
    outer, size, inner = _axis_split(x.type, axis)
    e.emit(f"k_gather({e.ptr[op.output]}, {e.val(x)}, {e.val(idx)}, {_wide(idx)}, "
           f"{idx.type.numel}, {outer}, {size}, {inner * itemsize(op.output.type)}, "
           f"{string_literal(op.kind)});")


@lowers("gather")
def _gather(e, op):
    x, idx = op.inputs
    _take(e, op, x, idx, op.attrs["axis"] % x.type.rank)


@lowers("embedding")
def _embedding(e, op):
    ids, table = op.inputs
    e.count("embedding")
    _take(e, op, table, ids, 0)


@lowers("cast")
def _cast(e, op):
    e.emit(f"k_cast({e.ptr[op.output]}, {_tag(op.output)}, {e.val(op.inputs[0])}, "
           f"{_tag(op.inputs[0])}, {op.output.type.numel});")


@lowers(*LOGICAL)
def _logical(e, op):
    a, b = op.inputs
    e.emit(f"k_logical({LOGICAL[op.kind]}, {e.ptr[op.output]}, {e.val(a)}, {e.val(b)}, "
           f"{_broadcast_args(op, a, b)});")


def _tag(v):
    return TAGS["f32" if v.type.dtype.is_float else v.type.dtype.name]


@lowers(*COMPARE)
def _compare(e, op):
    a, b = op.inputs
    e.emit(f"k_compare({COMPARE[op.kind]}, {e.ptr[op.output]}, {e.val(a)}, {_tag(a)}, {e.val(b)}, "
           f"{_tag(b)}, {_broadcast_args(op, a, b)});")


@lowers("where")
def _where(e, op):
    c, a, b = op.inputs
    e.emit(f"k_where({e.ptr[op.output]}, {e.val(c)}, {e.val(a)}, {e.val(b)}, "
           f"{_broadcast_args(op, c, a, b)}, {itemsize(op.output.type)});")


@lowers("logical_not")
def _logical_not(e, op):
    e.emit(f"k_logical_not({e.ptr[op.output]}, {e.val(op.inputs[0])}, {op.output.type.numel});")


@lowers(*REDUCE)
def _reduce(e, op):
    x = op.inputs[0].type
    xs = strides(x.shape)
    axes = {a % x.rank for a in op.attrs["axes"]} or set(range(x.rank))
    keep = [d for d in range(x.rank) if d not in axes]
    red = sorted(axes)
    e.emit(f"k_reduce({REDUCE[op.kind]}, {e.ptr[op.output]}, {e.val(op.inputs[0])}, "
           f"{len(keep)}, {carray([x.shape[d] for d in keep] or [1])}, "
           f"{carray([xs[d] for d in keep] or [0])}, {len(red)}, "
           f"{carray([x.shape[d] for d in red] or [1])}, {carray([xs[d] for d in red] or [0])});")


@lowers("softmax", "log_softmax")
def _softmax(e, op):
    outer, n, inner = _axis_split(op.output.type, op.attrs["axis"])
    e.emit(f"k_softmax({e.ptr[op.output]}, {e.val(op.inputs[0])}, {outer}, {n}, {inner}, "
           f"{int(op.kind == 'log_softmax')});")


@lowers("argmax", "argmin")
def _arg_reduce(e, op):
    outer, n, inner = _axis_split(op.inputs[0].type, op.attrs["axis"])
    e.emit(f"k_arg_reduce({e.ptr[op.output]}, {e.val(op.inputs[0])}, {outer}, {n}, {inner}, "
           f"{int(op.kind == 'argmax')}, {int(op.attrs['select_last_index'])});")


@lowers("topk")
def _topk(e, op):
    """kernels.h k_topk per line, on f32, i64 or i32 values (why_not refuses
    the others: the IR's topk takes no bool)."""
    x = op.inputs[0]
    values, indices = op.outputs
    outer, n, inner = _axis_split(x.type, op.attrs["axis"])
    if values.type.numel == 0:
        return
    kernel = f"k_topk_{INT_KERNEL[x.type.dtype.name]}" if x.type.dtype.name in INT_KERNEL \
        else "k_topk"
    e.emit(f"{kernel}({e.ptr[values]}, {e.ptr[indices]}, {e.val(x)}, {outer}, {n}, {inner}, "
           f"{op.attrs['k']}, {int(op.attrs['largest'])});")


@lowers("cumsum")
def _cumsum(e, op):
    outer, n, inner = _axis_split(op.output.type, op.attrs["axis"])
    e.emit(f"{_kernel('k_cumsum', op)}({e.ptr[op.output]}, {e.val(op.inputs[0])}, {outer}, "
           f"{n}, {inner}, {int(op.attrs['exclusive'])}, {int(op.attrs['reverse'])});")


@lowers("isnan", "isinf")
def _float_test(e, op):
    flags = ("-1, -1" if op.kind == "isnan" else
             f"{int(op.attrs['detect_positive'])}, {int(op.attrs['detect_negative'])}")
    e.emit(f"k_float_test({e.ptr[op.output]}, {e.val(op.inputs[0])}, {op.output.type.numel}, "
           f"{flags});")


@lowers("pad")
def _pad(e, op):
    x, t = op.inputs[0].type, op.output.type
    r, pads = x.rank, op.attrs["pads"]
    begins, ends = pads[:r], pads[r:]
    crop = [max(-b, 0) for b in begins]
    kept = [n - c - max(-en, 0) for n, c, en in zip(x.shape, crop, ends)]
    value = np.asarray(op.attrs["value"]).astype(t.dtype.storage).reshape(1)
    e.emit(f"k_pad({e.ptr[op.output]}, {e.val(op.inputs[0])}, {r}, {carray(t.shape or [1])}, "
           f"{carray(strides(x.shape) or [1])}, {carray([max(b, 0) for b in begins] or [0])}, "
           f"{carray(crop or [0])}, {carray(kept or [1])}, {PAD_MODES[op.attrs['mode']]}, "
           f"{cpointer(t, 'W + ' + str(e.blob.add(value)), const=True)}, {itemsize(t)});")


@lowers("layer_norm", "rms_norm")
def _norm(e, op):
    t = op.output.type
    axis = op.attrs.get("axis", -1) % t.rank
    n = math.prod(t.shape[axis:])
    ins = [e.val(v) for v in op.inputs[1:]] + ["0"] * (3 - len(op.inputs))
    eps = op.attrs.get("eps", 1e-5 if op.kind == "layer_norm" else 1e-6)
    e.emit(f"k_norm({e.ptr[op.output]}, {e.val(op.inputs[0])}, {ins[0]}, {ins[1]}, "
           f"{math.prod(t.shape[:axis])}, {n}, {float_literal(eps)}, "
           f"{int(op.kind == 'rms_norm')});")


@lowers("batch_norm")
def _batch_norm(e, op):
    x, scale, bias, mean, var = op.inputs
    s, b, m, va = (e.values(v).astype(np.float32) for v in (scale, bias, mean, var))
    k = s / np.sqrt(va + np.float32(op.attrs.get("eps", 1e-5)))
    d = b - m * k
    t = x.type
    koff, doff = e.blob.add(k.astype(np.float32)), e.blob.add(d.astype(np.float32))
    e.emit(f"k_channel_affine({e.ptr[op.output]}, {e.val(x)}, (const float *)(W + {koff}), "
           f"(const float *)(W + {doff}), {t.shape[0]}, {t.shape[1]}, "
           f"{math.prod(t.shape[2:])});")


@lowers("avg_pool2d")
def _avg_pool(e, op):
    x, y = op.inputs[0].type, op.output.type
    kh, kw = op.attrs["kernel"]
    sh, sw = op.attrs.get("stride") or (kh, kw)
    pt, pl, pb, pr = op.attrs.get("padding", (0, 0, 0, 0))
    e.emit(f"k_avg_pool2d({e.ptr[op.output]}, {e.val(op.inputs[0])}, {x.shape[0] * x.shape[1]}, "
           f"{x.shape[2]}, {x.shape[3]}, {kh}, {kw}, {y.shape[2]}, {y.shape[3]}, {sh}, {sw}, "
           f"{pt}, {pl}, {pb}, {pr}, {int(op.attrs['count_include_pad'])});")


@lowers("global_avg_pool")
def _gap(e, op):
    t = op.inputs[0].type
    rows = t.shape[0] * t.shape[1]
    e.emit(f"k_mean_rows({e.ptr[op.output]}, {e.val(op.inputs[0])}, {rows}, {t.numel // rows});")


@lowers("max_pool2d")
def _max_pool(e, op):
    x, y = op.inputs[0].type, op.output.type
    kh, kw = op.attrs["kernel"]
    sh, sw = op.attrs.get("stride") or (kh, kw)
    pt, pl = op.attrs.get("padding", (0, 0, 0, 0))[:2]
    dh, dw = op.attrs.get("dilation", (1, 1))
    e.emit(f"k_max_pool2d({e.ptr[op.output]}, {e.val(op.inputs[0])}, {x.shape[0] * x.shape[1]}, "
           f"{x.shape[2]}, {x.shape[3]}, {kh}, {kw}, {y.shape[2]}, {y.shape[3]}, {sh}, {sw}, "
           f"{pt}, {pl}, {dh}, {dw});")


def direct_1x1(conv) -> bool:
    """A 1x1, stride-1, unpadded, ungrouped convolution on its input's plane."""
    return conv.inputs[1].type.shape[2:] == (1, 1) and conv.attrs.get("groups", 1) == 1 and \
        tuple(conv.attrs.get("stride", (1, 1))) == (1, 1) and \
        not any(conv.attrs.get("padding", (0, 0, 0, 0))) and \
        conv.output.type.shape[2:] == conv.inputs[0].type.shape[2:]


def stored_bits(w, bits) -> str:
    """How a kernels entry names integer weights stored densely: "int8", or
    "2:4 as zeros, int8" for N:M weights whose zeros are stored too."""
    nm = w.type.nm
    return f"{nm.n}:{nm.m} as zeros, int{bits}" if nm is not None else f"int{bits}"


def conv_kernel(op) -> str:
    """The float kernel a conv2d op runs on x86 (with int8 activations, when
    no integer kernel takes it, after their fake quantization): "computed
    weight" (a generic loop), "depthwise", "1x1 panels" (1x1 on few
    positions, output channels in lanes) or "gemm" (row tiles, implicit
    GEMM)."""
    w, y = op.inputs[1].type, op.output.type
    groups = op.attrs.get("groups", 1)
    if op.inputs[1].producer is None or op.inputs[1].producer.kind != "const":
        return "computed weight"
    if groups > 1 and w.shape[1] == 1:
        return "depthwise"
    return "1x1 panels" if direct_1x1(op) and y.shape[2] * y.shape[3] <= PANEL_POSITIONS \
        else "gemm"


@lowers("conv2d")
def _conv2d(e, op, epilogue=None):
    """Returns whether the kernel ran `epilogue`'s steps (fusion.Epilogue)."""
    x, w = op.inputs[0].type, op.inputs[1].type
    y = op.output.type
    b = e.val(op.inputs[2]) if len(op.inputs) > 2 else "0"
    sh, sw = op.attrs.get("stride", (1, 1))
    pt, pl = op.attrs.get("padding", (0, 0, 0, 0))[:2]
    dh, dw = op.attrs.get("dilation", (1, 1))
    groups = op.attrs.get("groups", 1)
    act = op.attrs.get("act_group", 0)
    shape = (f"{x.shape[0]}, {x.shape[1]}, {x.shape[2]}, {x.shape[3]}, {w.shape[0]}, "
             f"{w.shape[2]}, {w.shape[3]}, {y.shape[2]}, {y.shape[3]}, {sh}, {sw}, {pt}, {pl}, "
             f"{dh}, {dw}")
    # the steps run per output channel plane: operands per channel or per element
    ran = epilogue is not None and epilogue.axis in (None, 1)
    steps = epilogue.args(e) if ran else "0, 0"
    wv = op.inputs[1]
    if act and _conv1x1_int8(e, op, b, steps):
        return ran
    if op.output in e.after_1x1:  # a depthwise convolution: layout.into_depthwise
        _conv1x1_depthwise(e, op, b, steps)
        return ran
    xin = e.val(op.inputs[0])
    if act:  # no integer kernel for this convolution: the same numbers in floats
        xin = f"((float *)(A + {e.scratch(4 * x.numel)}))"
        e.emit(f"k_fake_quant_pixels({xin}, {e.val(op.inputs[0])}, {x.shape[0]}, {x.shape[1]}, "
               f"{x.shape[2] * x.shape[3]}, {act});")
    emulated = " (act emulated)" if act else ""
    kernel = conv_kernel(op)
    if kernel == "computed weight":
        e.count(f"conv2d f32, computed weight ({GENERIC})")
        e.emit(f"k_conv2d({e.ptr[op.output]}, {xin}, {e.val(wv)}, {b}, {shape}, {groups});")
        return False
    if kernel == "depthwise" and op.output in e.blocked:  # its input too (layout.py)
        e.count("conv2d f32 depthwise, 16-channel blocks")
        off = e.packed(wv, lambda d: in_blocks_of_16(d.astype(np.float32).reshape(w.shape[0], -1)))
        e.emit(f"k_conv2d_depthwise_b16({e.ptr[op.output]}, {xin}, (const float *)(W + {off}), "
               f"{b}, {x.shape[0]}, {x.shape[1]}, {x.shape[2]}, {x.shape[3]}, {w.shape[2]}, "
               f"{w.shape[3]}, {y.shape[2]}, {y.shape[3]}, {sh}, {sw}, {pt}, {pl}, {dh}, {dw}, "
               f"{steps});")
        return ran
    if kernel == "depthwise":
        e.count("conv2d f32 depthwise" + emulated)
        off = e.packed(wv, lambda d: d.astype(np.float32).reshape(w.shape[0], -1))
        e.emit(f"k_conv2d_depthwise({e.ptr[op.output]}, {xin}, (const float *)(W + {off}), "
               f"{b}, {shape}, {steps});")
        return ran
    if kernel == "1x1 panels":
        layout = panel_layout(e, op)
        e.count("conv2d f32 1x1 few positions" + emulated)
        off = e.packed(wv, lambda d: panels_of_16(d.astype(np.float32).reshape(w.shape[0], -1)))
        e.emit(f"k_conv1x1_panels({e.ptr[op.output]}, {xin}, (const float *)(W + {off}), {b}, "
               f"{x.shape[0]}, {x.shape[1]}, {y.shape[2] * y.shape[3]}, {w.shape[0]}, {layout}, "
               f"{steps});")
        return ran
    e.count(("conv2d f32 1x1" if w.shape[2:] == (1, 1) else "conv2d f32") + emulated)
    off = e.packed(wv, lambda d: conv_blocks(d.astype(np.float32), groups))
    e.emit(f"k_conv2d_gemm({e.ptr[op.output]}, {xin}, (const float *)(W + {off}), {b}, {shape}, "
           f"{groups}, {steps});")
    return ran


def _conv1x1_depthwise(e, op, b, steps):
    """Depthwise `op` and the 1x1 convolution (and its epilogue) whose
    result it alone reads, as one kernel (layout.into_depthwise)."""
    first, ep = e.after_1x1[op.output]
    x, w = first.inputs[0].type, op.inputs[1].type
    y = op.output.type
    b1 = e.val(first.inputs[2]) if len(first.inputs) > 2 else "0"
    if first.attrs.get("act_group"):  # q8_takes(first): layout.into_depthwise
        q = integer_weight(first.inputs[1], axis=1, odd_int4=True)
        wq, start, scale = q8_weights(e, first.inputs[1], q, 8)
        w1 = "0"
        integer = (f"(const uint32_t *)(W + {wq}), (const int32_t *)(W + {start}), "
                   f"(const float *)(W + {scale}), A + {e.scratch(q8_scratch(first.inputs[0]))}")
        label = f"conv2d 1x1 int8 act x {stored_bits(first.inputs[1], q[1])} + depthwise f32, " \
            "one kernel"
    else:
        w1 = f"(const float *)(W + {e.packed(first.inputs[1], lambda d: conv_blocks(d.astype(np.float32), 1))})"
        integer = "0, 0, 0, 0"
        label = "conv2d f32 1x1 + depthwise, one kernel"
    off = e.packed(op.inputs[1], lambda d: d.astype(np.float32).reshape(w.shape[0], -1))
    if ep is not None:
        e.fused_ops += len(ep.steps)
    sh, sw = op.attrs.get("stride", (1, 1))
    pt, pl = op.attrs.get("padding", (0, 0, 0, 0))[:2]
    dh, dw = op.attrs.get("dilation", (1, 1))
    e.count(label)
    e.emit(f"k_conv1x1_depthwise({e.ptr[op.output]}, {e.val(first.inputs[0])}, {w1}, {b1}, "
           f"{x.shape[0]}, {x.shape[1]}, {w.shape[0]}, "
           f"{ep.args(e) if ep is not None else '0, 0'}, (const float *)(W + {off}), {b}, "
           f"{x.shape[2]}, {x.shape[3]}, {w.shape[2]}, {w.shape[3]}, {y.shape[2]}, "
           f"{y.shape[3]}, {sh}, {sw}, {pt}, {pl}, {dh}, {dw}, {steps}, {integer});")


def _conv1x1_int8(e, op, b, steps):
    """A 1x1, stride-1, unpadded convolution with int8 activations and
    integer weights in row blocks (N:M along the channels included): the
    integer linear kernel over pixels (k_conv1x1_rb), or the channel-lane
    kernel when it takes the layer (q8_takes). False when it is neither."""
    if q8_takes(op):
        _conv1x1_q8(e, op, integer_weight(op.inputs[1], axis=1, odd_int4=True), b, steps)
        return True
    x, w = op.inputs[:2]
    n, c, h, wd = x.type.shape
    o = w.type.shape[0]
    q = integer_weight(w, axis=1)
    if not direct_1x1(op) or q is None or op.attrs["act_group"] != q[2]:
        return False
    blocks = row_blocks(w, q, axis=1)
    if blocks is None:
        return False
    _, bits, group = q
    nn, mm = blocks
    packed, scales, half = packed_row_blocks(e, w, q, blocks)
    p = h * wd
    need = 4 * round_up(n * p * c) + 4 * round_up(n * p * o) + token_scratch_bytes(n * p, c, group)
    e.count("conv2d 1x1 " + row_block_label(q, blocks))
    e.emit(f"k_conv1x1_rb({e.ptr[op.output]}, {e.val(x)}, W + {packed}, W + {scales}, {half}, "
           f"{b}, {n}, {c}, {p}, {o}, {group}, {bits}, {nn}, {mm}, A + {e.scratch(need)}, "
           f"{steps});")
    return True


def q8_takes(op) -> bool:
    """Whether k_conv1x1_q8 runs conv2d `op` (int8 activations): 1x1, stride
    1, unpadded, ungrouped, integer weights with one scale per output channel,
    so one per pixel for the activations (act_group = C). N:M weights are
    stored densely, zeros included: the row-block kernel would skip them,
    but its two transposes per layer made EfficientNet-Lite0 at 2:4 + int8
    8.5 ms against 4.3 in floats (k_conv1x1_rb keeps scales per group of
    channels)."""
    x, w = op.inputs[:2]
    q = integer_weight(w, axis=1, odd_int4=True)
    return bool(op.attrs.get("act_group")) and q is not None and direct_1x1(op) and \
        op.attrs["act_group"] == q[2] == x.type.shape[1]


def _conv1x1_q8(e, op, q, b, steps):
    """A 1x1 convolution with int8 activations per pixel (act_group = C) and
    dense integer weights: k_conv1x1_q8 on channel lanes (in
    k_conv1x1_panels's layouts) or, on larger planes, k_conv1x1_q8_rows."""
    x, w = op.inputs[:2]
    n, c, h, wd = x.type.shape
    o = w.type.shape[0]
    p = h * wd
    wp, start, scale = q8_weights(e, w, q, 16 if p <= PANEL_POSITIONS else 8)
    bits = stored_bits(w, q[1])
    if p <= PANEL_POSITIONS:
        e.count(f"conv2d 1x1 int8 act x {bits}, channel lanes")
        e.emit(f"k_conv1x1_q8({e.ptr[op.output]}, {e.val(x)}, (const int8_t *)(W + {wp}), "
               f"(const int32_t *)(W + {start}), (const float *)(W + {scale}), {b}, {n}, {c}, "
               f"{p}, {o}, {panel_layout(e, op)}, A + {e.scratch(q8_scratch(x))}, {steps});")
        return
    e.count(f"conv2d 1x1 int8 act x {bits}")
    e.emit(f"k_conv1x1_q8_rows({e.ptr[op.output]}, {e.val(x)}, (const uint32_t *)(W + {wp}), "
           f"(const int32_t *)(W + {start}), (const float *)(W + {scale}), {b}, {n}, {c}, {p}, "
           f"{o}, A + {e.scratch(q8_scratch(x))}, {steps});")


def q8_weights(e, w, q, rows):
    """Blob offsets of an integer 1x1 weight as k_conv1x1_q8 (rows=16:
    panels) or the row tiles (rows=8: blocks) read it: its codes, each output
    channel's accumulator start (-128 times its codes' sum) and scale, zeros
    padding the channels and the last block."""
    o, c = w.type.shape[:2]
    codes = integer_codes(e, q[0]).reshape(o, c).astype(np.int32)
    pad = -o % rows
    padded = np.zeros((o + pad, -(-c // 4) * 4), np.int8)
    padded[:o, :c] = codes
    blocks = padded.reshape(-1, rows, padded.shape[1] // 4, 4).transpose(0, 2, 1, 3)
    start = np.concatenate([-128 * codes.sum(axis=1), np.zeros(pad, np.int64)])
    scale = np.concatenate([stored_scales(e, q[0], o, 1, 1, 1).reshape(o).astype(np.float32),
                            np.zeros(pad, np.float32)])
    return (e.blob.add(np.ascontiguousarray(blocks)), e.blob.add(start.astype(np.int32)),
            e.blob.add(scale))


def q8_scratch(x):
    """Bytes of a quantized input (kernels.h, hetc_q8_scales: dwords of 4
    channels per position, then a scale per position)."""
    n, c, h, w = x.type.shape
    return 4 * round_up(n * -(-c // 4) * h * w) + 4 * n * h * w


def panel_layout(e, op):
    """The layout flags of a channel-lane 1x1 convolution's input and output."""
    return " | ".join([flag for v, flag in ((op.inputs[0], "HETC_X_BLOCKED"),
                                            (op.output, "HETC_Y_BLOCKED"))
                       if v in e.blocked]) or "0"


def conv_blocks(w, groups):
    """Conv weights [O, C/groups, KH, KW] as k_conv2d_gemm reads them
    (kernels.h): per group, blocks of 8 output channels, k-major
    ([block][k][8], k = (c, ki, kj)), zero rows padding each group's last."""
    o = w.shape[0]
    og, k = o // groups, math.prod(w.shape[1:])
    blocks = -(-og // 8)
    a = np.zeros((groups, blocks * 8, k), np.float32)
    a[:, :og] = w.reshape(groups, og, k)
    return np.ascontiguousarray(a.reshape(groups, blocks, 8, k).transpose(0, 1, 3, 2))


@lowers("matmul")
def _matmul(e, op):
    a, b = op.inputs
    y = op.output.type
    m, k, n = a.type.shape[-2], a.type.shape[-1], b.type.shape[-1]
    batch = math.prod(y.shape[:-2])
    ab = 0 if math.prod(a.type.shape[:-2]) == 1 else m * k
    bb = 0 if math.prod(b.type.shape[:-2]) == 1 else k * n
    e.count("matmul f32")
    e.emit(f"k_matmul({e.ptr[op.output]}, {e.val(a)}, {e.val(b)}, {batch}, {m}, {n}, {k}, "
           f"{ab}, {bb});")


@lowers("attention")
def _attention(e, op):
    q, k, v = op.inputs[:3]
    view = e.views.get(op) or KVView([k], [v], 1, [])
    B, H, L, D = q.type.shape
    S = k.type.shape[2]
    # scratch: the kernel's per-thread part, then an additive mask made per call
    work = e.threads * attention_scratch_bytes(S, D)
    mask, mask_strides = "0", [0, 0, 0]
    if len(op.inputs) > 3:
        mv = op.inputs[3]
        mt = mv.type
        full = [1] * (4 - mt.rank) + list(mt.shape)
        if mv.producer is not None and mv.producer.kind == "const":
            # a constant bool mask becomes an additive f32 one at pack time
            data = e.values(mv)
            if data.dtype == np.bool_:
                data = np.where(data, np.float32(0), np.float32(-np.inf))
            off = e.blob.add(np.ascontiguousarray(data.astype(np.float32)))
            mask = f"((const float *)(W + {off}))"
        elif mt.dtype.name == "bool":  # computed: made additive per call, in scratch
            mask = f"((float *)(A + {e.scratch(work + 4 * mt.numel) + work}))"
            e.emit(f"k_mask_additive({mask}, {e.val(mv)}, {mt.numel});")
        else:  # f32 (RULES)
            mask = e.val(mv)
        fs = strides(full)
        mask_strides = [0 if full[d] == 1 else fs[d] for d in range(3)]
    scale = op.attrs.get("scale") or 1 / math.sqrt(D)
    e.count("attention f32")
    ks, vs = view.keys, view.values
    if len(ks) == 1:
        segments = f"{e.val(ks[0])}, {e.val(vs[0])}, {S}, 0, 0, 0"
    else:
        segments = (f"{e.val(ks[0])}, {e.val(vs[0])}, {ks[0].type.shape[2]}, "
                    f"{e.val(ks[1])}, {e.val(vs[1])}, {ks[1].type.shape[2]}")
    scratch = e.scratch(work)
    e.emit(f"k_attention({e.ptr[op.output]}, {e.val(q)}, {segments}, {view.group}, {mask}, "
           f"{', '.join(map(str, mask_strides))}, {B}, {H}, {L}, {D}, {v.type.shape[-1]}, "
           f"{float_literal(scale)}, "
           f"{int(bool(op.attrs.get('causal')))}, "
           f"{op.attrs.get('causal_offset', 0)}, A + {scratch});")


def attention_scratch_bytes(s, d):
    """Scratch k_attention takes per thread (kernels.h's hetc_attention_scratch,
    which it uses to find each thread's part): score rows for 4 queries and
    the head's transposed keys."""
    sp = -(-s // 16) * 16
    return 4 * sp * (d + 4) // 64 * 64 + 64


@dataclass
class LinearOperands:
    x: object  # the input value
    w: object  # the weight value
    bias: str  # C pointer expression, "0" without a bias
    m: int  # tokens
    n: int  # output features
    k: int  # input features
    act: int  # act_group: int8 activation group, 0 for f32 activations
    q: tuple | None  # integer_weight(w)


def linear_operands(e, op) -> LinearOperands:
    x, w = op.inputs[:2]
    n, k = w.type.shape
    return LinearOperands(x, w, e.val(op.inputs[2]) if len(op.inputs) > 2 else "0",
                          x.type.numel // k, n, k, op.attrs.get("act_group", 0),
                          integer_weight(w))


@lowers("linear")
def _linear(e, op, epilogue=None):
    """Returns whether the kernel ran `epilogue`'s steps (fusion.Epilogue):
    the float panels run steps whose operands vary along the features at
    most."""
    rank = op.output.type.rank
    ran = epilogue is not None and epilogue.axis in (None, rank - 1)
    o = linear_operands(e, op)
    x, w, b, m, n, k, act, q = o.x, o.w, o.bias, o.m, o.n, o.k, o.act, o.q
    blocks = row_blocks(w, q) if act and q is not None and act == q[2] else None
    if blocks is not None:
        bits, (nn, mm) = q[1], blocks
        packed, scales, half = packed_row_blocks(e, w, q, blocks)
        e.count("linear " + row_block_label(q, blocks))
        e.emit(f"k_linear_rb({e.ptr[op.output]}, {e.val(x)}, W + {packed}, W + {scales}, {half}, "
               f"{b}, {m}, {n}, {k}, {act}, {bits}, {nn}, {mm}, "
               f"A + {e.scratch(token_scratch_bytes(m, k, act))});")
        return False
    sparse = row_blocks(w, q) if not act and q is not None else None
    if sparse is not None and sparse[0] != sparse[1]:  # N:M: only kept values are read
        (_, bits, group), (nn, mm) = q, sparse
        packed, scales, half = packed_row_blocks(e, w, q, sparse)
        e.count(f"linear {nn}:{mm} int{bits} g{group}")
        e.emit(f"k_linear_rbf({e.ptr[op.output]}, {e.val(x)}, W + {packed}, W + {scales}, "
               f"{half}, {b}, {m}, {n}, {k}, {group}, {bits}, {nn}, {mm});")
        return False
    xin = e.val(x)
    if act:  # no integer kernel for this layout: the same numbers in floats
        xin = f"((float *)(A + {e.scratch(4 * x.type.numel)}))"
        e.emit(f"k_fake_quant_rows({xin}, {e.val(x)}, {m}, {k}, {act});")
    if q is not None:
        codes, scales = pack_weight_only(e, w, *q)
        e.count(f"linear int{q[1]} g{q[2]}" + (" (act emulated)" if act else ""))
        e.emit(f"k_linear_q({e.ptr[op.output]}, {xin}, W + {codes}, "
               f"(const float *)(W + {scales}), {b}, {m}, {n}, {k}, {q[2]}, {q[1]});")
        return False
    if w.producer is not None and w.producer.kind == "const":
        off, kind = float_panels(e, w)
        e.count(f"linear {('f32', 'bf16')[kind]} weights" +
                (f" (decoded from {w.type})" if kind == 0 and (w.type.encodings
                                                               or w.type.dtype.name != "f32")
                 else ""))
        steps = epilogue.args(e) if ran else "0, 0"
        e.emit(f"k_linear_panel({e.ptr[op.output]}, {xin}, W + {off}, {kind}, {b}, "
               f"{m}, {n}, {k}, {steps});")
        return ran
    e.count("linear f32, computed weight")
    e.emit(f"k_linear_f32({e.ptr[op.output]}, {xin}, {e.val(w)}, {b}, {m}, {n}, {k});")
    return False


#: lowerings that run a fused region's epilogue steps inside their kernel:
#: fn(emitter, op, fusion.Epilogue) -> whether they did
EPILOGUE_KERNELS = {"conv2d": _conv2d, "linear": _linear}


# PANEL_POSITIONS (hetc.core.targets): 1x1 convolutions with up to that many
# positions per image take the channel-lane kernel (k_conv1x1_panels): 1.3-1.45x
# the row tiles' speed on 7x7 and 14x14 planes here, slower from 28x28 on


def panels_of_16(w):
    """A float weight [n, k] as panels of 16 rows, k-major ([n/16][k][16]),
    zero rows padding the last (kernels.h's float panels)."""
    return rows_of_16(w).reshape(-1, 16, w.shape[1]).transpose(0, 2, 1)


def in_blocks_of_16(w):
    """A depthwise weight [C, taps] (C a multiple of 16) as
    k_conv2d_depthwise_b16 reads it: [C/16][taps][16]."""
    return w.reshape(-1, 16, w.shape[1]).transpose(0, 2, 1)


def float_panels(e, w):
    """Blob offset of a constant float weight [n, k] in the panel layout
    kernels.h describes for k_linear_panel (16 rows per panel, k-major, zero
    rows padding the last), and its kind: 1 for bf16 (kept 16-bit), else 0: f32, decoded
    encodings included."""
    kind = int(w.type.dtype.name == "bf16" and not w.type.encodings)

    def pack(data):
        return panels_of_16(data.astype(ml_dtypes.bfloat16).view(np.uint16) if kind
                            else data.astype(np.float32))
    return e.packed(w, pack), kind


def token_scratch_bytes(m, k, group):
    """Scratch for m tokens of k features quantized to int8 per group
    (kernels.h, hetc_quantize_into: codes and 64 bytes of slack, scales)."""
    return round_up(m * k) + 64 + round_up(4 * m * (k // group))


def row_blocks(w, q, axis=-1):
    """(N, M) for the row-block integer kernel (kernels.h, k_linear_rb): the
    weight's N:M pattern along its input axis (`axis`) when the kernel can
    skip the dropped values, else (4, 4), dense, zeros stored. None when the
    groups do not fit the kernel's steps (those layers run in floats)."""
    _, bits, group = q
    nm = w.type.nm
    rank = w.type.rank
    for nn, mm in ([(nm.n, nm.m)] if nm is not None and nm.axis % rank == axis % rank
                   else []) + [(4, 4)]:
        width = 4 * mm // nn
        if 4 % nn == 0 and mm <= 16 and width <= 16 and group % (width * (2 if bits == 4
                                                                            else 1)) == 0:
            return nn, mm
    return None


def packed_row_blocks(e, w, q, blocks):
    """Blob offsets of integer weight w's codes in row blocks (its rows by
    the rest of its axes) and of its scales in lanes, and whether those are
    f16: what k_linear_rb reads."""
    name, bits, group = q
    rows, k, *window = w.type.shape  # a 1x1 convolution's window: [1, 1]
    codes = integer_codes(e, name).reshape(rows, -1)
    scales = stored_scales(e, name, rows, k // group, *window).reshape(rows, -1)
    return (e.blob.add(pack_row_blocks(codes, bits, *blocks)), e.blob.add(in_lanes(scales)),
            int(scales.dtype == np.float16))


def row_block_label(q, blocks):
    """The kernels entry of a row-block layer (after its op kind)."""
    (_, bits, group), (nn, mm) = q, blocks
    return f"int8 act x {f'{nn}:{mm} ' if nn != mm else ''}int{bits} g{group}"


def rows_of_16(a):
    """a [rows, ...] with zero rows appended up to a multiple of 16, the row
    blocks and panels of the linear kernels."""
    pad = -len(a) % 16
    return np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)]) if pad else a


def in_lanes(a):
    """[rows, groups] per-row values as the row-block kernel reads them: per
    block of 16 rows (zero rows pad the last) and group, 16 lanes."""
    a = rows_of_16(a)
    return np.ascontiguousarray(a.reshape(-1, 16, a.shape[1]).transpose(0, 2, 1))


def pack_row_blocks(codes, bits, nn, mm):
    """Integer codes [rows, k] in the row-block layout kernels.h describes
    (16-row blocks of 64-byte vectors, slot j of row r at byte 4r + j; for
    N:M only N values per M-group with their positions). Groups with fewer
    than N nonzero codes keep some zeros to fill N."""
    codes = rows_of_16(codes)
    rows, k = codes.shape
    blocks = rows // 16
    if nn != mm:
        grouped = codes.reshape(rows, k // mm, mm)
        # N positions per M-group: the nonzeros first, then zeros, each in order
        pos = np.sort(np.argsort(grouped == 0, axis=-1, kind="stable")[..., :nn], axis=-1)
        values = np.take_along_axis(grouped, pos, axis=-1)
    else:
        values, pos = codes, None
    steps = k * nn // mm // 4

    def vectors(a):  # [rows, steps * 4] -> [blocks, steps, 64], byte 4r + j
        return a.reshape(blocks, 16, steps, 4).transpose(0, 2, 1, 3).reshape(blocks, steps, 64)

    v = vectors(values)
    if bits == 4:
        u = (v.astype(np.int16) + 8).astype(np.uint8).reshape(blocks, steps // 2, 2, 64)
        parts = [u[:, :, 0] | (u[:, :, 1] << 4)]
    else:
        parts = [v.view(np.uint8)]
    if pos is not None:
        parts.append(position_fields(vectors(pos), nn, mm).reshape(blocks, parts[0].shape[1], -1))
    return np.ascontiguousarray(np.concatenate(parts, axis=-1))


def position_fields(pos, nn, mm):
    """Each step's positions [blocks, steps, 64] as the N:M kernel reads them
    (kernels.h): byte i = 8o + j's field in qword o % PB at bit
    PB (8 (o / PB) + j); for M not a power of two the field is the offset in
    the step's window, M (j / N) + pos."""
    pow2 = (mm & (mm - 1)) == 0
    width = 2 if mm <= 4 and pow2 else 4
    f = pos.astype(np.uint64)
    if not pow2:
        f = f + (mm * (np.arange(64) % 4 // nn)).astype(np.uint64)
    blocks, steps = f.shape[:2]
    f = f.reshape(blocks, steps, 8 // width, width, 8)  # o = a * width + b, then j
    shift = (width * (8 * np.arange(8 // width)[:, None, None] + np.arange(8)[None, None, :]))
    qwords = (f << shift.astype(np.uint64)).sum(axis=(2, 4), dtype=np.uint64)
    return qwords.astype("<u8").view(np.uint8).reshape(blocks, steps, 8 * width)


def pack_weight_only(e, w, name, bits, group):
    """Blob offsets of (codes, scales) for k_linear_q (kernels.h): 16-row
    blocks, k-major; int8 16 bytes per k, int4 16 bytes per two k (low
    nibbles k, high nibbles k + 1, codes offset by 8); f32 scales per block
    and group in 16 lanes."""
    n, k = w.type.shape
    codes = rows_of_16(integer_codes(e, name).astype(np.int16))  # [blocks * 16, k]
    blocks = codes.shape[0] // 16
    c = codes.reshape(blocks, 16, k).transpose(0, 2, 1)  # [blocks, k, 16 rows]
    if bits == 8:
        data = c.astype(np.int8).view(np.uint8)
    else:
        u = (c + 8).astype(np.uint8)
        data = u[:, 0::2] | (u[:, 1::2] << 4)
    scales = in_lanes(weight_scales(e, name, n, k // group)).astype(np.float32)
    return e.blob.add(np.ascontiguousarray(data)), e.blob.add(scales)


class X86Emitter(Emitter):
    """The graph on x86 kernels (kernels.h), OpenMP threads set per call."""

    target = "x86"
    lowerings = LOWER
    refused = REFUSED
    why_not = staticmethod(why_not)
    what = (f"it handles {', '.join(CTYPE)} values, computes on f32 (and on i64 and i32: "
            f"{', '.join(sorted(INT_OPS))})")
    headers = ("kernels.h",)
    prepare = "hetc_isa = hetc_configure(); return 0;"

    def __init__(self, graph, threads=1):
        super().__init__(graph, threads)
        # layout.py reads fusion.py, which imports this module
        from .fusion import epilogue
        from .layout import blocked_values, conv_of, into_depthwise
        self.blocked = blocked_values(graph)
        self.into_depthwise = into_depthwise(graph, self.blocked, threads)
        #: a depthwise result -> (the 1x1 conv before it, that op's epilogue or None)
        self.after_1x1 = {dw.output: (conv_of(op)[0], epilogue(op) if op.kind == "fused" else None)
                          for dw, op in self.into_depthwise.items()}

    def skipped(self):
        self.views, skipped = attention_views(self.g)
        return skipped | set(self.into_depthwise.values())  # those run in the depthwise kernel

    def reads(self, op):
        view = self.views.get(op)  # attention reads these segments in place of its k and v
        reads = list(op.inputs) + (view.keys + view.values if view else [])
        before = self.into_depthwise.get(op)  # it reads what the 1x1 convolution read
        if before is not None:
            reads = [v for v in reads if v is not before.output] + self.reads(before)
        return reads

    def prologue(self):
        return [f"omp_set_num_threads({self.threads});", "hetc_use_isa(hetc_isa);"]

    def notes(self):
        notes = []
        if self.fused_ops:
            notes.append(f"fused: {self.fused_ops} elementwise ops run as epilogues of the "
                         f"kernel before them (passes/fuse.py)")
        slow = {k: n for k, n in self.kernels.items() if GENERIC in k}
        if slow:
            notes.append(f"{sum(slow.values())} layer(s) run a generic loop, not a vector "
                         f"kernel: " + ", ".join(f"{k} x{n}" for k, n in slow.items()))
        return notes


def lower_graph(graph, threads=2, emitter=X86Emitter) -> Lowered:
    return emitter(graph, threads).run()
