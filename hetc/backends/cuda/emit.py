"""The CUDA renderer: the graph as one .cu translation unit of generated
kernels (one `extern "C" __global__` function per launch, its shapes baked
in) over device.cuh, and the launch table a host plays (launch.py): each
kernel's grid, block and buffer arguments, in order. Under -DHETC_SIM the
file also has hetc_launch, which runs one table entry through device.cuh's
simulation, so `emulate=True` executes exactly the kernels NVRTC compiles
for the GPU, launched as the GPU would launch them.

The first kernels compute in f32 (integers and bools exactly where an op
takes them): elementwise ops (broadcasting), linear and matmul as
shared-memory tiled GEMMs, direct convolution, pooling, batch norm,
reductions, arg-reductions and running sums, softmax, the norms and
attention with warp shuffles, embedding and gathers, padding, and data
movement (transpose, slice, concat, expand, split, reshape views).
Symmetric int8/int4 weights stay codes dequantized in the GEMM (f32 math);
other encodings are decoded to f32. Linear layers with f16/bf16
activations run on tensor cores (tensor_core.py). What is not lowered is
refused with the reason.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from hetc.backends.c.emitter import Emitter, Lowered
from hetc.backends.c.kv_view import attention_views
from hetc.backends.c.plan import slice_reads
from hetc.backends.c.quant import integer_codes, integer_weight, weight_scales
from hetc.backends.c.shapes import (CONV_INT8_ACTIVATIONS, index_problem, mask_problem,
                                    matmul_problem)
from hetc.backends.c.text import comment, float_literal
from hetc.backends.c.values import CTYPE, broadcast_strides, itemsize, nbytes, round_up, strides
from hetc.backends.packing import pack_nibbles
from hetc.core.registry import Registry
from hetc.ir import dtypes
from hetc.ir.ops import OPS
from hetc.ir.types import TensorType

from . import tensor_core

LOWER = Registry("cuda lowerings")
TILE = 16  # the GEMM tile: TILE x TILE threads, each one output

UNARY = {
    "relu": "x < 0.f ? 0.f : x", "neg": "-x", "abs": "fabsf(x)", "exp": "expf(x)",
    "log": "logf(x)", "sqrt": "sqrtf(x)", "rsqrt": "1.f / sqrtf(x)", "reciprocal": "1.f / x",
    "sigmoid": "1.f / (1.f + expf(-x))", "silu": "x / (1.f + expf(-x))", "tanh": "tanhf(x)",
    "erf": "erff(x)", "floor": "floorf(x)", "ceil": "ceilf(x)", "round": "rintf(x)",
    "sign": "x > 0.f ? 1.f : (x < 0.f ? -1.f : x)",
    "sin": "sinf(x)", "cos": "cosf(x)", "tan": "tanf(x)", "asin": "asinf(x)",
    "acos": "acosf(x)", "atan": "atanf(x)", "sinh": "sinhf(x)", "cosh": "coshf(x)",
    "asinh": "asinhf(x)", "acosh": "acoshf(x)", "atanh": "atanhf(x)",
}
GELU = {"none": "0.5f * x * (1.f + erff(x * 0.70710678118654752f))",
        "tanh": "0.5f * x * (1.f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)))"}
BINARY = {
    "add": "a + b", "sub": "a - b", "mul": "a * b", "div": "a / b", "pow": "powf(a, b)",
    # NaN wins, as in numpy (fmaxf would drop it)
    "maximum": "a != a ? a : (b != b ? b : (a > b ? a : b))",
    "minimum": "a != a ? a : (b != b ? b : (a < b ? a : b))",
}
COMPARE = {"equal": "a == b", "less": "a < b", "greater": "a > b", "less_equal": "a <= b",
           "greater_equal": "a >= b"}
# i32/i64: exact, wrapping as numpy does (unsigned arithmetic: no C overflow)
INTEGER = {"add": "(T)((U)a + (U)b)", "sub": "(T)((U)a - (U)b)", "mul": "(T)((U)a * (U)b)",
           "maximum": "a > b ? a : b", "minimum": "a < b ? a : b", "neg": "(T)(0u - (U)x)",
           "abs": "x < 0 ? (T)(0u - (U)x) : x", "relu": "x < 0 ? 0 : x",
           "sign": "(T)((x > 0) - (x < 0))"}
UNSIGNED = {"i32": "uint32_t", "i64": "uint64_t"}
LOGICAL = {"logical_and": "a && b", "logical_or": "a || b", "logical_xor": "(a != 0) != (b != 0)",
           "logical_not": "!x"}
BITWISE = {"bitwise_and": "a & b", "bitwise_or": "a | b", "bitwise_xor": "a ^ b",
           "bitwise_not": "(T)~(U)x",
           # a count outside [0, bits) shifts everything out, as the IR defines
           # (C leaves it undefined); right shifts of signed values are arithmetic
           "shift_left": "(b < 0 || b >= BITS) ? (T)0 : (T)((U)a << b)",
           "shift_right": "(b < 0 || b >= BITS) ? (T)(a < 0 ? -1 : 0) : (T)(a >> b)"}
# mod takes the divisor's sign (Python %), fmod the dividend's (C fmod); an
# integer divisor of 0 (and -1: INT_MIN % -1 is undefined in C) gives 0
REMAINDER = {
    ("mod", "f32"): "hetc_mod(a, b)", ("fmod", "f32"): "fmodf(a, b)",
    ("mod", "int"): "(b == 0 || b == -1) ? 0 : ((a % b != 0 && ((a % b < 0) != (b < 0))) "
                    "? a % b + b : a % b)",
    ("fmod", "int"): "(b == 0 || b == -1) ? 0 : a % b",
}
# bf16/f16 values: held as their bits, loaded to f32, results rounded back
NARROW = {"bf16": "hetc_%s_bf16", "f16": "hetc_%s_f16"}
CUDA_CTYPE = {**CTYPE, "bf16": "uint16_t", "f16": "uint16_t"}
FLOATS = ("f32", *NARROW)
#: the kinds whose kernels load and store bf16/f16 values through NARROW
NARROW_OK = {*UNARY, *BINARY, *COMPARE, "gelu", "where", "linear", "matmul", "softmax",
             "log_softmax", "layer_norm", "rms_norm", "cast", "attention", "conv2d",
             "max_pool2d", "avg_pool2d", "global_avg_pool", "reduce_sum", "reduce_mean",
             "reduce_max", "reduce_min", "reduce_prod", "batch_norm", "embedding"}
MOVES = ("reshape", "transpose", "slice", "concat", "expand", "split", "gather",
         "gather_elements")

REFUSED_WHY = "not lowered for cuda yet (docs/cuda.md lists what is)"


def lowers(*kinds):
    return LOWER.register(*kinds)


# -- what the renderer can take ------------------------------------------------

def _is_const(v):
    return v.producer is not None and v.producer.kind == "const"


def _f32_const(v):
    """Whether v is a constant Emitter.const packs as f32 (floats, and
    quantized or narrow integers, decoded)."""
    return _is_const(v) and (v.type.dtype.is_float or v.type.dtype.name not in CTYPE)


def load(v, expr):
    """`expr` (an element of value v as held) as the f32 or integer computed
    on; constants are held in f32 already (Emitter.const decodes them)."""
    name = v.type.dtype.name
    return f"{NARROW[name] % 'from'}({expr})" if name in NARROW and not _is_const(v) else expr


def store(v, expr):
    """`expr` (f32) rounded to value v's dtype as held."""
    name = v.type.dtype.name
    return f"{NARROW[name] % 'to'}({expr})" if name in NARROW else expr


def _same_kind(values, allowed):
    """The first value whose dtype is not in `allowed`, as a problem, or None."""
    return next((f"{v.type.dtype} value %{v.name}" for v in values
                 if v.type.dtype.name not in allowed), None)


def why_not(op):
    """Why this renderer cannot lower `op` (of a kind it has a lowering for), or None."""
    ins = [v for v in op.inputs if v.producer is None or v.producer.kind != "const"]
    if op.kind in ("gather", "gather_elements") and index_problem(op.inputs[1]):
        return index_problem(op.inputs[1])
    if op.kind in MOVES:
        return _same_kind(ins + op.outputs, CUDA_CTYPE)
    if op.kind == "cast":
        src, dst = op.inputs[0].type.dtype.name, op.output.type.dtype.name
        if src in FLOATS and dst in UNSIGNED:
            return "floats to integers (NaN and out-of-range values differ between C and numpy)"
        return _same_kind(op.inputs + op.outputs, CUDA_CTYPE)
    if op.kind in LOGICAL:
        return _same_kind(ins + op.outputs, ("bool",))
    if op.kind in BITWISE:
        return _same_kind(ins + op.outputs, ("bool", *UNSIGNED) if op.kind.startswith("bitwise")
                          else tuple(UNSIGNED))
    if op.kind in ("mod", "fmod", "cumsum", "pad"):
        return _same_kind(ins + op.outputs, ("f32", *UNSIGNED))
    if op.kind in ("argmax", "argmin"):
        return _same_kind(ins, ("f32",))
    if op.kind == "topk":
        return _same_kind(ins + op.outputs, ("f32", *UNSIGNED))
    if op.kind in ("isnan", "isinf"):
        return _same_kind(ins, ("f32",))
    if op.kind in COMPARE:
        return _same_kind(ins, (*FLOATS, *UNSIGNED))
    if op.kind in INTEGER and op.output.type.dtype.name in UNSIGNED:
        return None  # the IR keeps operands and result of one integer dtype
    if op.kind == "embedding":
        ins = ins[1:] if op.inputs[0] in ins else ins
    if op.kind == "attention":
        ins = [v for v in ins if v not in op.inputs[3:]]
    if op.kind == "where":
        if op.inputs[0].type.dtype.name != "bool":
            return "a condition that is not bool"
        return _same_kind(op.outputs, CUDA_CTYPE)
    problem = _same_kind(ins + op.outputs, FLOATS if op.kind in NARROW_OK else ("f32",))
    if problem:
        return problem
    if op.kind == "matmul":
        return matmul_problem(op)
    if op.kind == "embedding":
        return index_problem(op.inputs[0])
    if op.kind == "attention":
        return mask_problem(op)
    if op.kind in ("softmax", "log_softmax"):
        if op.attrs["axis"] % op.inputs[0].type.rank != op.inputs[0].type.rank - 1:
            return "an axis other than the last (not lowered yet)"
    if op.kind == "conv2d" and op.attrs.get("act_group"):
        return CONV_INT8_ACTIVATIONS
    return None


# -- kernels -------------------------------------------------------------------

def _ctype(v, const=False):
    """The C pointer type a kernel takes value v by (f32 for float constants)."""
    name = v.type.dtype.name
    held = "float" if _f32_const(v) else CUDA_CTYPE[name]
    return f"{'const ' if const else ''}{held} *__restrict__"


def _elements(n):
    """(grid, block) for one thread per element, grid-stride loops."""
    block = min(256, max(32, -(-n // 32) * 32))
    return str(min(max(1, -(-n // block)), 4096)), str(block)


def _offset(shape, operand_strides, var, index="i"):
    """C statements: `var` = the element offset, in an operand read with
    `operand_strides`, of output element `index` (of `shape`)."""
    if list(operand_strides) == strides(shape):
        return f"long {var} = {index};"
    lines = [f"long {var} = 0, r_{var} = {index};"]
    for d, s in zip(reversed(shape), reversed(operand_strides)):
        if s:
            lines.append(f"{var} += (r_{var} % {d}) * {s};")
        lines.append(f"r_{var} /= {d};")
    return " ".join(lines)


def _grid_loop(n, body):
    return (f"    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < {n}; "
            f"i += (long)gridDim.x * blockDim.x) {{\n{body}\n    }}")


def _elementwise(e, op, expr):
    """y[i] = expr over the operands a, b, c (broadcast), named x for one;
    T and U in `expr` are the result's C type and its unsigned twin."""
    t = op.output.type
    if t.dtype.name in UNSIGNED:
        expr = expr.replace("(U)", f"({UNSIGNED[t.dtype.name]})").replace(
            "(T)", f"({CTYPE[t.dtype.name]})").replace("BITS", str(8 * itemsize(t)))
    shape = list(t.shape) or [1]
    names = ["x"] if len(op.inputs) == 1 else ["a", "b", "c"][:len(op.inputs)]
    lines, params, args = [], [f"{_ctype(op.output)} y"], [e.ptr[op.output]]
    for name, v in zip(names, op.inputs):
        params.append(f"{_ctype(v, True)} p_{name}")
        args.append(e.val(v))
        reads = broadcast_strides(v.type, shape) or [0]
        lines.append(f"        {_offset(shape, reads, 'o_' + name)}")
        held = "float" if v.type.dtype.name in NARROW or _f32_const(v) else \
            CTYPE[v.type.dtype.name]
        lines.append(f"        {held} {name} = {load(v, f'p_{name}[o_{name}]')};")
    value = f"({CTYPE.get(t.dtype.name, 'float')})({expr})"
    lines.append(f"        y[i] = {store(op.output, value)};")
    e.launch(params, _grid_loop(t.numel, "\n".join(lines)), *_elements(t.numel), args,
             f"elementwise {op.kind}")


def _integer(op):
    return op.output.type.dtype.name in UNSIGNED and op.kind in INTEGER


TABLES = (UNARY, BINARY, COMPARE, LOGICAL, BITWISE)


@lowers(*(kind for table in TABLES for kind in table))
def _by_table(e, op):
    """The elementwise ops whose result is one C expression of the operands."""
    if _integer(op):
        expr = INTEGER[op.kind]
    else:
        expr = next(table[op.kind] for table in TABLES if op.kind in table)
    _elementwise(e, op, expr)


@lowers("mod", "fmod")
def _remainder(e, op):
    kind = "f32" if op.output.type.dtype.name == "f32" else "int"
    _elementwise(e, op, REMAINDER[op.kind, kind])


@lowers("isnan")
def _isnan(e, op):
    _elementwise(e, op, "x != x")


@lowers("isinf")
def _isinf(e, op):
    sides = [s for s, on in (("x == HETC_INF", op.attrs["detect_positive"]),
                             ("x == -HETC_INF", op.attrs["detect_negative"])) if on]
    _elementwise(e, op, " || ".join(sides) or "false")


@lowers("cast")
def _cast(e, op):
    src, dst = op.inputs[0].type.dtype.name, op.output.type.dtype.name
    _elementwise(e, op, "x != 0" if dst == "bool" and src != "bool" else "x")


@lowers("gelu")
def _gelu(e, op):
    # as the interpreter: tanh, else the exact (erf) form
    _elementwise(e, op, GELU["tanh" if op.attrs.get("approximate") == "tanh" else "none"])


@lowers("where")
def _where(e, op):
    _elementwise(e, op, "a ? b : c")


class _Scratch:
    """An arena scratch buffer of f32 standing in for a value as a GEMM operand."""

    producer = None

    def __init__(self, ptr, shape):
        self.ptr, self.type = ptr, TensorType(shape, dtypes.f32)


def _float_expr(op):
    """The C expression (of x, or a and b) of a float elementwise op an
    epilogue can run, or None."""
    if op.kind == "gelu":
        return GELU["tanh" if op.attrs.get("approximate") == "tanh" else "none"]
    return UNARY.get(op.kind) or BINARY.get(op.kind)


def epilogue_chain(graph, users, op, claimed):
    """The elementwise ops to run on `op`'s results before they are stored:
    each the one user of the one before, of the same shape and float dtype,
    its other operand (if any) read with broadcasting; none a graph output
    except the last, none in another chain (`claimed`: in a gated MLP both
    layers end at one multiply, which only the first takes)."""
    chain, cur = [], op.output
    while cur not in graph.outputs and len(users.get(cur, ())) == 1:
        nxt = users[cur][0]
        if nxt in claimed or not OPS[nxt.kind].epilogue or _float_expr(nxt) is None \
                or len(nxt.outputs) != 1 \
                or nxt.output.type.shape != cur.type.shape \
                or nxt.output.type.dtype != cur.type.dtype \
                or any(v.type.dtype.name not in FLOATS for v in nxt.inputs):
            break
        chain.append(nxt)
        cur = nxt.output
    return chain


class Epilogue:
    """A GEMM's stored value: its f32 sum, then each op of `chain` (rounded
    to the dtype after every op, as the IR defines), into `out`."""

    def __init__(self, e, op, chain):
        self.chain, self.out = chain, (chain[-1] if chain else op).output
        self.shape = list(op.output.type.shape)
        self.params, self.args, self.operands = [], [], []
        prev = op.output
        for i, step in enumerate(chain):
            other = next((v for v in step.inputs if v is not prev), None) \
                if len(step.inputs) == 2 else None
            if other is not None:
                self.params.append(f"{_ctype(other, True)} e{i}")
                self.args.append(e.val(other))
            self.operands.append(other)
            prev = step.output

    def store(self, value, index):
        """C statements storing `value` (f32) as element `index` of the
        result, through the chain (y the result pointer)."""
        lines = [f"float v = {value};"]
        narrow = self.out.type.dtype.name in NARROW
        for i, (step, other) in enumerate(zip(self.chain, self.operands)):
            if narrow:
                lines.append(f"v = {load(self.out, store(self.out, 'v'))};")
            expr = _float_expr(step)
            if other is None and len(step.inputs) == 1:
                lines.append(f"{{ float x = v; v = {expr}; }}")
                continue
            if other is None:  # both operands the chain's value (x * x)
                lines.append(f"{{ float a = v, b = v; v = {expr}; }}")
                continue
            reads = broadcast_strides(other.type, self.shape) or [0]
            lines.append(_offset(self.shape, reads, f"o{i}", index))
            got = load(other, f"e{i}[o{i}]")
            first = step.inputs[0] is other
            lines.append(f"{{ float a = {got if first else 'v'}, b = {'v' if first else got}; "
                         f"v = {expr}; }}")
        lines.append(f"y[{index}] = {store(self.out, 'v')};")
        return "{ " + " ".join(lines) + " }"

    def what(self):
        return (" + " + ", ".join(s.kind for s in self.chain)) if self.chain else ""


def _gemm(e, op, a, b_params, b_args, bias, m, n, k, a_batch, b_at, what, epi=None):
    """y[z][row][col] = sum_k a[z][row][k] * B(k, col) (+ bias[col]), tiled
    TILE x TILE through shared memory; `b_at(k, col)` reads B from the
    `b_params` (in batch z of a batched matmul); stored through `epi`."""
    t = op.output.type
    epi = epi or Epilogue(e, op, [])
    batch = math.prod(t.shape[:-2]) if op.kind == "matmul" else 1
    params = [f"{_ctype(epi.out)} y", f"{_ctype(a, True)} ap", *b_params]
    args = [e.ptr[epi.out], a.ptr if isinstance(a, _Scratch) else e.val(a), *b_args]
    if bias is not None:
        params.append(f"{_ctype(bias, True)} bias")
        args.append(e.val(bias))
    result = "acc" + (f" + {load(bias, 'bias[col]')}" if bias is not None else "")
    body = f"""    __shared__ float As[{TILE}][{TILE + 1}];
    __shared__ float Bs[{TILE}][{TILE + 1}];
    int tx = threadIdx.x, ty = threadIdx.y;
    long row = blockIdx.y * {TILE} + ty, col = blockIdx.x * {TILE} + tx, z = blockIdx.z;
    const auto *a = ap + z * {a_batch};
    float acc = 0.f;
    for (long k0 = 0; k0 < {k}; k0 += {TILE}) {{
        As[ty][tx] = (row < {m} && k0 + tx < {k}) ? {load(a, f"a[row * {k} + k0 + tx]")} : 0.f;
        Bs[ty][tx] = (k0 + ty < {k} && col < {n}) ? {b_at('(k0 + ty)', 'col')} : 0.f;
        __syncthreads();
        for (int kk = 0; kk < {TILE}; kk++) acc += As[ty][kk] * Bs[kk][tx];
        __syncthreads();
    }}
    if (row < {m} && col < {n})
        {epi.store(result, f"z * {m * n} + row * {n} + col")}"""
    grid = f"{-(-n // TILE)}, {-(-m // TILE)}, {batch}"
    e.launch(params + epi.params, body, grid, f"{TILE}, {TILE}", args + epi.args,
             what + epi.what())


@lowers("linear")
def _linear(e, op, chain=()):
    """Symmetric int8/int4 weights stay integer codes (int4 two per byte, low
    nibble first) with f32 scales per row and group, dequantized as the tile
    is loaded, so the math is the interpreter's f32; other encodings are
    decoded to f32 when packed."""
    x, w = op.inputs[:2]
    bias = op.inputs[2] if len(op.inputs) > 2 else None
    n, k = w.type.shape
    m = op.output.type.numel // n
    epi = Epilogue(e, op, list(chain))
    tc = tensor_core.plan(e, op, buffer_ref(e.val(x))[2])
    if tc is not None:
        wq, meta, scales = tensor_core.pack(e, op, tc)
        xp, xparam, x_scales = e.val(x), f"{_ctype(x, True)} x", []
        if tc.act == "s8":  # the activations as int8 codes and scales, in scratch
            xp, scale_ptr = _activation_codes(e, op, x, m, k, op.attrs["act_group"])
            xparam, x_scales = "const uint8_t *__restrict__ x", [scale_ptr]
        args = [e.ptr[epi.out], xp, f"((const uint32_t *)(W + {wq}))"]
        args += [f"((const uint32_t *)(W + {meta}))"] if meta is not None else []
        args += [f"((const float *)(W + {scales}))"] if scales is not None else []
        args += x_scales
        params = [f"{_ctype(epi.out)} y", xparam, *tensor_core.params(tc)]
        if bias is not None:
            params.append(f"{_ctype(bias, True)} bias")
            args.append(e.val(bias))
        body, grid, block = tensor_core.kernel(
            tc, m, n, k, epi.store,
            f" + {load(bias, 'bias[row]')}" if bias is not None else "")
        e.launch(params + epi.params, body, grid, block, args + epi.args,
                 tc.describe() + epi.what())
        e.tensor_core_ops[op] = tc.sparse
        return
    if op.attrs.get("act_group"):
        x = _quantized_activations(e, op, x, m, k, op.attrs["act_group"])
    q = integer_weight(w)
    if q is None:
        what = "linear f32 tiled" + (" (weights decoded to f32)" if w.type.encodings else "")
        _gemm(e, op, x, [f"{_ctype(w, True)} bp"], [e.val(w)], bias, m, n, k, 0,
              lambda kk, c: load(w, f"bp[{c} * {k} + {kk}]"), what, epi)
        return
    name, bits, group = q
    codes = integer_codes(e, name)
    data = pack_nibbles(codes).reshape(n, k // 2) if bits == 4 else codes
    wq = e.blob.add(np.ascontiguousarray(data))
    ws = e.blob.add(weight_scales(e, name, n, k // group))
    params = [f"const {'uint8_t' if bits == 4 else 'int8_t'} *__restrict__ wq",
              "const float *__restrict__ ws"]
    args = [f"((const {'uint8_t' if bits == 4 else 'int8_t'} *)(W + {wq}))",
            f"((const float *)(W + {ws}))"]

    def code(kk, c):
        if bits == 8:
            return f"(float)wq[{c} * {k} + {kk}]"
        # the nibble of byte kk / 2, sign-extended
        return f"(float)((((wq[{c} * {k // 2} + {kk} / 2] >> (4 * ({kk} & 1))) & 15) ^ 8) - 8)"
    nm = w.type.nm
    _gemm(e, op, x, params, args, bias, m, n, k, 0,
          lambda kk, c: f"{code(kk, c)} * ws[{c} * {k // group} + {kk} / {group}]",
          f"linear int{bits} g{group} weights{f' ({nm.n}:{nm.m} zeros stored)' if nm else ''}"
          f", f32 math", epi)


def _quantized_activations(e, op, x, m, k, group):
    """x as int8 dynamic quantization sees it (one warp per token and group:
    scale = max |x| / 127, values rounded half to even, dequantized), into
    an arena scratch buffer the GEMM then reads: the interpreter's f32
    arithmetic, step for step."""
    ptr = f"((float *)(A + {e.scratch(4 * m * k)}))"
    _quantize_rows(e, x, m, k, group, ["float *__restrict__ y"], [ptr],
                   "y[token * {k} + g * {group} + j] = rintf(v / d) * scale;",
                   f"int8 activations g{group} warp per token group")
    return _Scratch(ptr, x.type.shape)


def _activation_codes(e, op, x, m, k, group):
    """(codes, scales): x quantized as above, kept as int8 codes [m, k] and
    f32 scales [m, k / group] in scratch, for the int8 tensor cores."""
    base = e.scratch(round_up(m * k) + 4 * m * (k // group))
    codes, scales = f"((int8_t *)(A + {base}))", f"((float *)(A + {base + round_up(m * k)}))"
    _quantize_rows(e, x, m, k, group, ["int8_t *__restrict__ y", "float *__restrict__ ys"],
                   [codes, scales],
                   "y[token * {k} + g * {group} + j] = (int8_t)rintf(v / d); "
                   "if (j == 0) ys[token * {groups} + g] = scale;",
                   f"int8 activation codes g{group} warp per token group")
    return f"((const uint8_t *)(A + {base}))", f"((const float *)(A + {base + round_up(m * k)}))"


def _quantize_rows(e, x, m, k, group, params, args, write, what):
    """One warp per token and group: scale = max |x| / 127 (NaN winning),
    d = scale or 1, then `write` for every element v = x[j] (with token, g,
    j, scale, d; {k}, {group}, {groups} filled in)."""
    write = write.replace("{k}", str(k)).replace("{groups}", str(k // group)) \
        .replace("{group}", str(group))
    body = f"""    long token = row / {k // group}, g = row % {k // group};
    const auto *xr = x + (live ? token * {k} + g * {group} : 0);
    float top = 0.f;  /* max |x|, NaN winning as in numpy */
    for (long j = lane; j < {group}; j += 32)
        if (live) {{ float v = fabsf({load(x, "xr[j]")}); top = (v != v || v > top) ? v : top; }}
    for (int s = 16; s > 0; s >>= 1) {{
        float o = hetc_shfl_xor(top, s);
        top = (o != o || o > top) ? o : top;
    }}
    float scale = top / 127.f, d = scale == 0.f ? 1.f : scale;
    for (long j = lane; j < {group}; j += 32)
        if (live) {{ float v = {load(x, "xr[j]")}; {write} }}"""
    _rows(e, m * (k // group), [*params, f"{_ctype(x, True)} x"], [*args, e.val(x)], body, what)


@lowers("matmul")
def _matmul(e, op):
    a, b = op.inputs
    m, k, n = a.type.shape[-2], a.type.shape[-1], b.type.shape[-1]
    a_batch = 0 if math.prod(a.type.shape[:-2]) == 1 else m * k
    b_batch = 0 if math.prod(b.type.shape[:-2]) == 1 else k * n
    _gemm(e, op, a, [f"{_ctype(b, True)} bp"], [e.val(b)], None, m, n, k, a_batch,
          lambda kk, c: load(b, f"bp[z * {b_batch} + {kk} * {n} + {c}]"), "matmul f32 tiled")


ROWS = 4  # rows per block in the row kernels: one warp each


def _rows(e, rows, params, args, body, what):
    """A kernel with one warp per row: `body` runs with `row`, `lane`,
    `live` (every lane takes part in the shuffles, only live ones write)."""
    head = (f"    long row = blockIdx.x * {ROWS} + threadIdx.y;\n"
            f"    int lane = threadIdx.x;\n"
            f"    bool live = row < {rows};\n")
    e.launch(params, head + body, str(max(1, -(-rows // ROWS))), f"32, {ROWS}", args, what)


@lowers("softmax", "log_softmax")
def _softmax(e, op):
    x = op.inputs[0]
    c = x.type.shape[-1]
    out = store(op.output, "expf(v - m) / s" if op.kind == "softmax" else "v - m - logf(s)")
    xj = load(x, "xr[j]")
    body = f"""    const auto *xr = x + (live ? row : 0) * {c};
    float m = -HETC_INF;
    for (long j = lane; j < {c}; j += 32) if (live) m = fmaxf(m, {xj});
    m = hetc_warp_max(m);
    float s = 0.f;
    for (long j = lane; j < {c}; j += 32) if (live) s += expf({xj} - m);
    s = hetc_warp_sum(s);
    for (long j = lane; j < {c}; j += 32)
        if (live) {{ float v = {xj}; y[row * {c} + j] = {out}; }}"""
    _rows(e, x.type.numel // max(c, 1), [f"{_ctype(op.output)} y", f"{_ctype(x, True)} x"],
          [e.ptr[op.output], e.val(x)], body, f"{op.kind} warp per row")


@lowers("layer_norm", "rms_norm")
def _norm(e, op):
    x = op.inputs[0]
    axis = op.attrs["axis"] % x.type.rank
    c = math.prod(x.type.shape[axis:])
    eps = float_literal(op.attrs["eps"])
    params, args = [f"{_ctype(op.output)} y", f"{_ctype(x, True)} x"], [e.ptr[op.output], e.val(x)]
    scale = bias = ""
    if len(op.inputs) > 1:
        w = op.inputs[1]
        params.append(f"{_ctype(w, True)} w")
        args.append(e.val(w))
        scale = f" * {load(w, f'w[{_offset_expr(w, x.type.shape[axis:])}]')}"
    if len(op.inputs) > 2:
        b = op.inputs[2]
        params.append(f"{_ctype(b, True)} bb")
        args.append(e.val(b))
        bias = f" + {load(b, f'bb[{_offset_expr(b, x.type.shape[axis:])}]')}"
    xj = load(x, "xr[j]")
    if op.kind == "layer_norm":
        stats = f"""    float mean = 0.f;
    for (long j = lane; j < {c}; j += 32) if (live) mean += {xj};
    mean = hetc_warp_sum(mean) / {c};
    float var = 0.f;
    for (long j = lane; j < {c}; j += 32) if (live) {{ float d = {xj} - mean; var += d * d; }}
    float inv = 1.f / sqrtf(hetc_warp_sum(var) / {c} + {eps});"""
        value = f"({xj} - mean) * inv"
    else:
        stats = f"""    float ss = 0.f;
    for (long j = lane; j < {c}; j += 32) if (live) ss += {xj} * {xj};
    float inv = 1.f / sqrtf(hetc_warp_sum(ss) / {c} + {eps});"""
        value = f"{xj} * inv"
    body = (f"    const auto *xr = x + (live ? row : 0) * {c};\n"
            f"{stats}\n"
            f"    for (long j = lane; j < {c}; j += 32) if (live) "
            f"y[row * {c} + j] = {store(op.output, value + scale + bias)};")
    _rows(e, x.type.numel // max(c, 1), params, args, body, f"{op.kind} warp per row")


def _offset_expr(v, shape):
    """The offset in v (broadcast to `shape`, flattened) of element j."""
    s = broadcast_strides(v.type, list(shape))
    if s == strides(shape):
        return "j"
    parts, div = [], 1
    for d, st in zip(reversed(shape), reversed(s)):
        if st:
            parts.append(f"((j / {div}) % {d}) * {st}")
        div *= d
    return " + ".join(parts) or "0"


def _keys_and_values(e, op, batch_strides):
    """(params, args, head lines, key_at(j, c), value_at(j, d)): how the
    attention kernel reads element c of key j and d of value j for its
    query row's batch index z. Through a KVView (a decoder's cache and new
    tokens, grouped-query heads) it reads the segments where they lie."""
    k, v = op.inputs[1:3]
    view = e.views.get(op)
    if view is None:
        params = [f"{_ctype(k, True)} kp", f"{_ctype(v, True)} vp"]
        batch = list(op.output.type.shape[:-2]) or [1]
        head = [_offset(batch, batch_strides(k) or [0], "ko", "z"),
                _offset(batch, batch_strides(v) or [0], "vo", "z")]
        E, Ev = k.type.shape[-1], v.type.shape[-1]
        return (params, [e.val(k), e.val(v)], head,
                lambda j, c: load(k, f"kp[ko + {j} * {E} + {c}]"),
                lambda j, d: load(v, f"vp[vo + {j} * {Ev} + {d}]"))
    B, H = op.inputs[0].type.shape[:2]
    params, args = [], []
    head = [f"long kh = (z % {H}) / {view.group}, kb = z / {H};"]
    for name, segments in (("k", view.keys), ("v", view.values)):
        for i, seg in enumerate(segments):
            Hk, S, D = seg.type.shape[1:]
            params.append(f"{_ctype(seg, True)} {name}p{i}")
            args.append(e.val(seg))
            head.append(f"long {name}o{i} = (kb * {Hk} + kh) * {S * D};")

    def reader(name, segments):
        def at(j, c):
            first, D = segments[0].type.shape[2:]
            one = load(segments[0], f"{name}p0[{name}o0 + {j} * {D} + {c}]")
            if len(segments) == 1:
                return one
            two = load(segments[1], f"{name}p1[{name}o1 + ({j} - {first}) * {D} + {c}]")
            return f"({j} < {first} ? {one} : {two})"
        return at
    return params, args, head, reader("k", view.keys), reader("v", view.values)


SPLIT_KEYS = 128  # keys per block of split-K attention (flash-decoding)


@lowers("attention")
def _attention(e, op):
    """Few query rows over many keys (decoding): split-K, each block one
    query row and SPLIT_KEYS keys, then a warp per row combines the parts
    (flash-decoding). Many query rows (prefill): flash-style tiles with an
    online softmax. Otherwise one warp per query row: scores into an arena
    scratch row, the softmax with warp reductions, then each lane a slice
    of the head dim."""
    q, k, v = op.inputs[:3]
    mask = op.inputs[3] if len(op.inputs) > 3 else None
    t = op.output.type
    batch = list(t.shape[:-2])
    L, E, S, Ev = q.type.shape[-2], q.type.shape[-1], k.type.shape[-2], v.type.shape[-1]
    rows = math.prod(batch) * L
    nb = len(batch)

    def batch_strides(x):
        return broadcast_strides(x.type, batch + list(x.type.shape[-2:]))[:nb]
    scale = float_literal(op.attrs["scale"] or 1 / math.sqrt(E))
    params, args, head, key_at, value_at = _keys_and_values(e, op, batch_strides)
    params, args = [f"{_ctype(q, True)} qp", *params], [e.val(q), *args]
    score = [f"s *= {scale};"]
    if op.attrs["softcap"]:
        cap = float_literal(op.attrs["softcap"])
        score.append(f"s = {cap} * tanhf(s / {cap});")
    if op.attrs["causal"]:
        score.append(f"if (j > i + {op.attrs['causal_offset']}) s = -HETC_INF;")
    head = [f"long z = r / {L}, i = r % {L};",
            _offset(batch or [1], batch_strides(q) or [0], "qo", "z"), *head]
    if mask is not None:
        ms = broadcast_strides(mask.type, batch + [L, S])
        params.append(f"{_ctype(mask, True)} mp")
        args.append(e.val(mask))
        head.append(_offset(batch or [1], ms[:nb] or [0], "mo", "z"))
        at = f"mp[mo + i * {ms[-2]} + j * {ms[-1]}]"
        score.append(f"if (!{at}) s = -HETC_INF;" if mask.type.dtype.name == "bool"
                     else f"s += {at};")
    scores = f"""    const auto *qr = qp + qo + i * {E};
    float m = -HETC_INF;
    for (long j = j0 + lane; j < j1; j += 32) {{
        float s = 0.f;
        for (long c = 0; c < {E}; c++) s += {load(q, "qr[c]")} * {key_at("j", "c")};
        {' '.join(score)}
        pr[j - j0] = s;
        m = fmaxf(m, s);
    }}
    m = hetc_warp_max(m);
    bool none = m == -HETC_INF;  /* every key masked */
    float sum = 0.f;
    for (long j = j0 + lane; j < j1; j += 32) {{
        float w = none ? 0.f : expf(pr[j - j0] - m);
        pr[j - j0] = w;
        sum += w;
    }}
    sum = hetc_warp_sum(sum);
    hetc_syncwarp();  /* every lane reads the weights the others wrote */"""
    splits = -(-S // SPLIT_KEYS)
    if splits > 1 and rows < 256:
        _split_attention(e, op, params, args, head, scores, rows, Ev, splits, value_at)
        return
    if L >= FLASH_ROWS and max(E, Ev) <= FLASH_DIM:
        _flash_attention(e, op, params, args, head, score, key_at, value_at)
        return
    body = f"""    long r = live ? row : 0;  /* lanes past the last row shuffle, never write */
    {' '.join(head)}
    float *pr = p + r * {S};
    long j0 = 0, j1 = live ? {S} : 0;
{scores}
    if (live)
        for (long d = lane; d < {Ev}; d += 32) {{
            float acc = 0.f;
            for (long j = 0; j < {S}; j++) acc += pr[j] * {value_at("j", "d")};
            y[row * {Ev} + d] = {store(op.output, "none ? 0.f : acc / sum")};
        }}"""
    _rows(e, rows, [f"{_ctype(op.output)} y", *params, "float *__restrict__ p"],
          [e.ptr[op.output], *args, f"((float *)(A + {e.scratch(4 * rows * S)}))"], body,
          "attention warp per query row")


FLASH_ROWS, FLASH_KEYS, FLASH_DIM = 16, 32, 128  # query rows and keys per tile; head dims


def _flash_attention(e, op, params, args, head, score, key_at, value_at):
    """Flash-style prefill: a block per 16 query rows of one batch index,
    the keys and values staged through shared memory 32 at a time, each
    warp's 4 rows keeping a running max, sum and output (online softmax):
    no scores are stored, whatever the sequence length."""
    q = op.inputs[0]
    L, E, S, Ev = q.type.shape[-2], q.type.shape[-1], op.inputs[1].type.shape[-2], \
        op.inputs[2].type.shape[-1]
    batch = math.prod(op.output.type.shape[:-2])
    per_warp, nv = FLASH_ROWS // 4, -(-Ev // 32)
    body = f"""    __shared__ float ks[{FLASH_KEYS}][{E + 1}], vs[{FLASH_KEYS}][{Ev + 1}];
    __shared__ float ps[4][32];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    long i0 = blockIdx.x * {FLASH_ROWS}, r = blockIdx.y * {L} + i0;
    {' '.join(head)}
    float m_[{per_warp}], l_[{per_warp}], acc_[{per_warp}][{nv}];
    for (int u = 0; u < {per_warp}; u++) {{
        m_[u] = -HETC_INF;
        l_[u] = 0.f;
        for (int dd = 0; dd < {nv}; dd++) acc_[u][dd] = 0.f;
    }}
    for (long j0 = 0; j0 < {S}; j0 += {FLASH_KEYS}) {{
        for (int x = threadIdx.x; x < {FLASH_KEYS * max(E, Ev)}; x += 128) {{
            long j = j0 + x / {max(E, Ev)}, c = x % {max(E, Ev)};
            if (c < {E}) ks[x / {max(E, Ev)}][c] = j < {S} ? {key_at("j", "c")} : 0.f;
            if (c < {Ev}) vs[x / {max(E, Ev)}][c] = j < {S} ? {value_at("j", "c")} : 0.f;
        }}
        __syncthreads();
        for (int u = 0; u < {per_warp}; u++) {{
            long i = i0 + warp * {per_warp} + u, j = j0 + lane;
            float s = -HETC_INF;
            if (i < {L} && j < {S}) {{
                const auto *qr = qp + qo + i * {E};
                s = 0.f;
                for (long c = 0; c < {E}; c++) s += {load(q, "qr[c]")} * ks[lane][c];
                {' '.join(score)}
            }}
            float mn = fmaxf(m_[u], hetc_warp_max(s));
            float p = mn == -HETC_INF ? 0.f : expf(s - mn);
            float corr = m_[u] == -HETC_INF ? 0.f : expf(m_[u] - mn);
            l_[u] = l_[u] * corr + hetc_warp_sum(p);
            m_[u] = mn;
            ps[warp][lane] = p;
            hetc_syncwarp();  /* every lane reads the weights the others wrote */
            for (int dd = 0; dd < {nv}; dd++) {{
                long d = lane + 32 * dd;
                float a = acc_[u][dd] * corr;
                if (d < {Ev})
                    for (int jj = 0; jj < {FLASH_KEYS}; jj++) a += ps[warp][jj] * vs[jj][d];
                acc_[u][dd] = a;
            }}
            hetc_syncwarp();  /* before the next row's weights */
        }}
        __syncthreads();  /* before the next tile is staged */
    }}
    for (int u = 0; u < {per_warp}; u++) {{
        long i = i0 + warp * {per_warp} + u;
        if (i >= {L}) continue;
        for (int dd = 0; dd < {nv}; dd++) {{
            long d = lane + 32 * dd;
            if (d < {Ev})
                y[(blockIdx.y * {L} + i) * {Ev} + d] =
                    {store(op.output, "m_[u] == -HETC_INF ? 0.f : acc_[u][dd] / l_[u]")};
        }}
    }}"""
    e.launch([f"{_ctype(op.output)} y", *params], body,
             f"{-(-L // FLASH_ROWS)}, {batch}", "128", [e.ptr[op.output], *args],
             "attention flash-style tiles (online softmax)")


def _split_attention(e, op, params, args, head, scores, rows, Ev, splits, value_at):
    """Split-K: block (c, r) takes keys [c, c + 1) * SPLIT_KEYS of query
    row r and writes its max m, its sum of exp(s - m) and its unnormalized
    output; a warp per row then rescales the parts to their common max."""
    keys = op.inputs[1].type.shape[-2]
    width = 2 + Ev  # one part: m, sum, output
    part = f"((float *)(A + {e.scratch(4 * rows * splits * width)}))"
    body = f"""    __shared__ float pr[{SPLIT_KEYS}];
    long r = blockIdx.y, c = blockIdx.x;
    int lane = threadIdx.x;
    {' '.join(head)}
    long j0 = c * {SPLIT_KEYS}, j1 = j0 + {SPLIT_KEYS} < {keys} ? j0 + {SPLIT_KEYS} : {keys};
{scores}
    float *out = part + (r * {splits} + c) * {width};
    if (lane == 0) {{
        out[0] = m;
        out[1] = sum;
    }}
    for (long d = lane; d < {Ev}; d += 32) {{
        float acc = 0.f;
        for (long j = j0; j < j1; j++) acc += pr[j - j0] * {value_at("j", "d")};
        out[2 + d] = acc;
    }}"""
    e.launch([*params, "float *__restrict__ part"], body, f"{splits}, {rows}", "32",
             [*args, part], "attention split-K over keys (flash-decoding)")
    combine = f"""    const float *pr = part + (live ? row : 0) * {splits * width};
    float m = -HETC_INF, sum = 0.f;
    for (int c = 0; c < {splits}; c++) m = fmaxf(m, pr[c * {width}]);
    for (int c = 0; c < {splits}; c++)
        if (pr[c * {width}] != -HETC_INF) sum += pr[c * {width} + 1] * expf(pr[c * {width}] - m);
    if (live)
        for (long d = lane; d < {Ev}; d += 32) {{
            float acc = 0.f;
            for (int c = 0; c < {splits}; c++)
                if (pr[c * {width}] != -HETC_INF)
                    acc += pr[c * {width} + 2 + d] * expf(pr[c * {width}] - m);
            y[row * {Ev} + d] = {store(op.output, "m == -HETC_INF ? 0.f : acc / sum")};
        }}"""
    _rows(e, rows, [f"{_ctype(op.output)} y", "const float *__restrict__ part"],
          [e.ptr[op.output], part], combine, "attention split-K combine")


@lowers("embedding")
def _embedding(e, op):
    ids, table = op.inputs
    vocab, dim = table.type.shape
    row = load(table, f"table[id * {dim} + c]")
    n = op.output.type.numel
    body = f"""        long r = i / {dim}, c = i % {dim};
        long id = (long)ids[r];
{_index(vocab, "embedding")}        y[i] = {store(op.output, row)};"""
    e.launch([f"{_ctype(op.output)} y", f"{_ctype(ids, True)} ids",
              f"{_ctype(table, True)} table"],
             _grid_loop(n, body), *_elements(n), [e.ptr[op.output], e.val(ids), e.val(table)],
             "embedding gather")


# -- convolution, pooling, normalization by channel, reductions --------------------

def _nchw_loop(op, body):
    """A grid-stride loop over op's NCHW output with n, o, oh, ow set."""
    n_, c_, h_, w_ = op.output.type.shape
    return _grid_loop(op.output.type.numel,
                      f"        long ow = i % {w_}, oh = (i / {w_}) % {h_}, "
                      f"o = (i / {w_ * h_}) % {c_}, n = i / {w_ * h_ * c_};\n{body}")


def _window(op, h, wd, inner, pad):
    """C loops over the input cells (ih, iw) of output (oh, ow)'s window
    that lie inside the input, running `inner`; `pad` indents them."""
    kh, kw = op.attrs["kernel"] if op.kind != "conv2d" else op.inputs[1].type.shape[2:]
    sh, sw = op.attrs.get("stride") or op.attrs["kernel"]
    dh, dw = op.attrs.get("dilation", [1, 1])
    top, left = op.attrs["padding"][:2]
    return "\n".join(pad + line for line in f"""for (long a = 0; a < {kh}; a++) {{
    long ih = oh * {sh} - {top} + a * {dh};
    if (ih < 0 || ih >= {h}) continue;
    for (long b = 0; b < {kw}; b++) {{
        long iw = ow * {sw} - {left} + b * {dw};
        if (iw < 0 || iw >= {wd}) continue;
        {inner}
    }}
}}""".splitlines())


@lowers("conv2d")
def _conv2d(e, op, chain=()):
    """f16/bf16 convolutions without groups on tensor cores as an implicit
    GEMM (tensor_core.py); the others direct, one thread per output
    element. Both store through the epilogue `chain`."""
    x, w = op.inputs[:2]
    bias = op.inputs[2] if len(op.inputs) > 2 else None
    epi = Epilogue(e, op, list(chain))
    tc = tensor_core.conv_plan(e, op)
    if tc is not None:
        n_, c, h, wd = x.type.shape
        cout, kk = w.type.shape[0], math.prod(w.type.shape[1:])
        pixels = n_ * math.prod(op.output.type.shape[2:])
        wq, _, _ = tensor_core.pack(e, op, tc)
        params = [f"{_ctype(epi.out)} y", f"{_ctype(x, True)} x", *tensor_core.params(tc)]
        args = [e.ptr[epi.out], e.val(x), f"((const uint32_t *)(W + {wq}))"]
        if bias is not None:
            params.append(f"{_ctype(bias, True)} bias")
            args.append(e.val(bias))
        gather, out_index = tensor_core.conv_gather(op)
        body, grid, block = tensor_core.kernel(
            tc, pixels, cout, kk, epi.store,
            f" + {load(bias, 'bias[row]')}" if bias is not None else "", gather, out_index)
        e.launch(params + epi.params, body, grid, block, args + epi.args,
                 f"conv2d {tc.act} tensor cores (implicit GEMM, mma.sync){epi.what()}")
        e.tensor_core_ops[op] = False
        return
    _, c, h, wd = x.type.shape
    o_, cg, kh, kw = w.type.shape
    og = o_ // op.attrs["groups"]
    params = [f"{_ctype(epi.out)} y", f"{_ctype(x, True)} x", f"{_ctype(w, True)} w"]
    args = [e.ptr[epi.out], e.val(x), e.val(w)]
    if bias is not None:
        params.append(f"{_ctype(bias, True)} bias")
        args.append(e.val(bias))
    xin = load(x, f"x[((n * {c} + g * {cg} + ci) * {h} + ih) * {wd} + iw]")
    inner = f"acc += {xin} * {load(w, f'w[((o * {cg} + ci) * {kh} + a) * {kw} + b]')};"
    body = f"""        long g = o / {og};
        float acc = {load(bias, 'bias[o]') if bias is not None else '0.f'};
        for (long ci = 0; ci < {cg}; ci++) {{
{_window(op, h, wd, inner, "            ")}
        }}
        {epi.store("acc", "i")}"""
    e.launch(params + epi.params, _nchw_loop(op, body), *_elements(op.output.type.numel),
             args + epi.args, "conv2d direct" + epi.what())


@lowers("max_pool2d", "avg_pool2d")
def _pool(e, op):
    x = op.inputs[0]
    _, c, h, wd = x.type.shape
    kh, kw = op.attrs["kernel"]
    sh, sw = op.attrs.get("stride") or op.attrs["kernel"]
    dh, dw = op.attrs.get("dilation", [1, 1])
    top, left, bottom, right = op.attrs["padding"]
    if op.kind == "max_pool2d":  # NaN wins, as in numpy; padding never does
        init, step, done = "-HETC_INF", "if (v != v || v > acc) acc = v;", "acc"
    else:  # the divisor counts input cells, and explicit padding when asked
        init, step = "0.f", "acc += v;"
        done = "acc / count" if op.attrs["count_include_pad"] else "acc / inside"
    count = ""
    if op.kind == "avg_pool2d" and op.attrs["count_include_pad"]:
        # window cells inside the padded input (never the ceil-mode overhang)
        count = (f"long ch = 0, cw = 0;\n"
                 f"        for (long a = 0; a < {kh}; a++) {{\n"
                 f"            long r = oh * {sh} - {top} + a * {dh};\n"
                 f"            ch += r >= -{top} && r < {h + bottom};\n"
                 f"        }}\n"
                 f"        for (long b = 0; b < {kw}; b++) {{\n"
                 f"            long s = ow * {sw} - {left} + b * {dw};\n"
                 f"            cw += s >= -{left} && s < {wd + right};\n"
                 f"        }}\n"
                 f"        float count = (float)(ch * cw);")
    xin = load(x, f"x[((n * {c} + o) * {h} + ih) * {wd} + iw]")
    inner = f"float v = {xin}; {step} inside++;"
    body = f"""        float acc = {init};
        long inside = 0;
        {count}
{_window(op, h, wd, inner, "        ")}
        (void)inside;
        y[i] = {store(op.output, done)};"""
    e.launch([f"{_ctype(op.output)} y", f"{_ctype(x, True)} x"], _nchw_loop(op, body),
             *_elements(op.output.type.numel), [e.ptr[op.output], e.val(x)], f"{op.kind} direct")


@lowers("global_avg_pool")
def _global_avg_pool(e, op):
    x = op.inputs[0]
    c = math.prod(x.type.shape[2:])
    body = f"""    const auto *xr = x + (live ? row : 0) * {c};
    float s = 0.f;
    for (long j = lane; j < {c}; j += 32) if (live) s += {load(x, "xr[j]")};
    s = hetc_warp_sum(s);
    if (live && lane == 0) y[row] = {store(op.output, f"s / {c}")};"""
    _rows(e, x.type.numel // max(c, 1), [f"{_ctype(op.output)} y", f"{_ctype(x, True)} x"],
          [e.ptr[op.output], e.val(x)], body, "global_avg_pool warp per channel")


@lowers("batch_norm")
def _batch_norm(e, op):
    x = op.inputs[0]
    c = x.type.shape[1]
    inner = math.prod(x.type.shape[2:])
    eps = float_literal(op.attrs["eps"])
    names = ("scale", "bias", "mean", "var")
    stats = dict(zip(names, op.inputs[1:]))
    params = [f"{_ctype(op.output)} y", f"{_ctype(x, True)} x"] + \
        [f"{_ctype(v, True)} {n}" for n, v in stats.items()]
    args = [e.ptr[op.output], e.val(x)] + [e.val(v) for v in op.inputs[1:]]
    s = {n: load(v, f"{n}[c]") for n, v in stats.items()}
    value = f"({load(x, 'x[i]')} - {s['mean']}) * inv + {s['bias']}"
    body = (f"        long c = (i / {inner}) % {c};\n"
            f"        float inv = {s['scale']} / sqrtf({s['var']} + {eps});\n"
            f"        y[i] = {store(op.output, value)};")
    e.launch(params, _grid_loop(x.type.numel, body), *_elements(x.type.numel), args,
             "batch_norm elementwise")


REDUCE = {"reduce_sum": ("0.f", "acc += v;", "acc"), "reduce_prod": ("1.f", "acc *= v;", "acc"),
          "reduce_max": ("-HETC_INF", "if (v != v || v > acc) acc = v;", "acc"),
          "reduce_min": ("HETC_INF", "if (v != v || v < acc) acc = v;", "acc")}


@lowers("reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod")
def _reduce(e, op):
    """One thread per output element, looping over the reduced ones."""
    x = op.inputs[0]
    shape = list(x.type.shape)
    axes = sorted({a % len(shape) for a in op.attrs["axes"]} or range(len(shape)))
    kept = [a for a in range(len(shape)) if a not in axes]
    xs = strides(shape)
    count = math.prod(shape[a] for a in axes)
    init, step, done = REDUCE["reduce_sum" if op.kind == "reduce_mean" else op.kind]
    if op.kind == "reduce_mean":
        done = f"acc / {count}"  # 0 / 0 over nothing: NaN, as numpy
    base = _offset([shape[a] for a in kept] or [1], [xs[a] for a in kept] or [0], "o")
    inner = _offset([shape[a] for a in axes] or [1], [xs[a] for a in axes] or [0], "q", "r")
    body = f"""        {base}
        float acc = {init};
        for (long r = 0; r < {count}; r++) {{
            {inner}
            float v = {load(x, "x[o + q]")};
            {step}
        }}
        y[i] = {store(op.output, done)};"""
    e.launch([f"{_ctype(op.output)} y", f"{_ctype(x, True)} x"],
             _grid_loop(op.output.type.numel, body), *_elements(op.output.type.numel),
             [e.ptr[op.output], e.val(x)], f"{op.kind} thread per output")


# -- data movement -----------------------------------------------------------------

def _strided(e, op, out, x, xs, offset=0):
    """out[i] = x[offset + sum(coord_d(i) * xs[d])]: transposes, slices, broadcasts."""
    shape = list(out.type.shape) or [1]
    ct = CUDA_CTYPE[out.type.dtype.name]
    body = f"        {_offset(shape, xs or [0], 'o')}\n        y[i] = x[{offset} + o];"
    e.launch([f"{ct} *__restrict__ y", f"const {ct} *__restrict__ x"],
             _grid_loop(out.type.numel, body), *_elements(out.type.numel),
             [e.ptr[out], e.val(x)], f"{op.kind} copy")


@lowers("reshape")
def _reshape(e, op):
    e.alias(op)


@lowers("transpose")
def _transpose(e, op):
    x = op.inputs[0]
    xs = strides(x.type.shape)
    _strided(e, op, op.output, x, [xs[p] for p in op.attrs["perm"]])


@lowers("slice")
def _slice(e, op):
    x = op.inputs[0]
    if not e.alias(op):  # a contiguous block is a view, no copy
        _strided(e, op, op.output, x, *slice_reads(op))


@lowers("expand")
def _expand(e, op):
    x = op.inputs[0]
    _strided(e, op, op.output, x, broadcast_strides(x.type, list(op.output.type.shape)))


@lowers("split")
def _split(e, op):
    x = op.inputs[0]
    axis = op.attrs["axis"] % x.type.rank
    xs = strides(x.type.shape)
    start = 0
    for out, size in zip(op.outputs, op.attrs["sizes"]):
        if out.type.numel:
            _strided(e, op, out, x, xs, start * xs[axis])
        start += size


@lowers("concat")
def _concat(e, op):
    t = op.output.type
    axis = op.attrs["axis"] % t.rank
    ys = strides(t.shape)
    ct = CUDA_CTYPE[t.dtype.name]
    start = 0
    for x in op.inputs:
        shape = list(x.type.shape)
        if x.type.numel:
            # operand element i goes to its coordinates in the output, shifted along the axis
            body = (f"        {_offset(shape, ys, 'o')}\n"
                    f"        y[{start * ys[axis]} + o] = x[i];")
            e.launch([f"{ct} *__restrict__ y", f"const {ct} *__restrict__ x"],
                     _grid_loop(x.type.numel, body), *_elements(x.type.numel),
                     [e.ptr[op.output], e.val(x)], "concat copy")
        start += x.type.shape[axis]


def _index(size, what):
    """C statements: `id` checked against [-size, size) and wrapped."""
    return (f"        if (id < -{size} || id >= {size}) {{\n"
            f"            HETC_FAIL(\"{what}: index %ld out of range [-{size}, {size})\", id);\n"
            f"            return;\n"
            f"        }}\n"
            f"        if (id < 0) id += {size};\n")


@lowers("gather")
def _gather(e, op):
    """y[outer, idx..., inner] = x[outer, indices[idx...], inner]."""
    x, idx = op.inputs
    axis = op.attrs["axis"] % x.type.rank
    size, inner = x.type.shape[axis], math.prod(x.type.shape[axis + 1:])
    count = idx.type.numel
    ct = CUDA_CTYPE[x.type.dtype.name]
    body = (f"        long c = i % {inner}, k = (i / {inner}) % {count}, "
            f"p = i / {inner * count};\n"
            f"        long id = (long)ids[k];\n" + _index(size, "gather") +
            f"        y[i] = x[(p * {size} + id) * {inner} + c];")
    e.launch([f"{ct} *__restrict__ y", f"const {ct} *__restrict__ x",
              f"{_ctype(idx, True)} ids"], _grid_loop(op.output.type.numel, body),
             *_elements(op.output.type.numel), [e.ptr[op.output], e.val(x), e.val(idx)],
             "gather")


@lowers("gather_elements")
def _gather_elements(e, op):
    """y[c] = x[c with its axis coordinate replaced by indices[c]]."""
    x, idx = op.inputs
    axis = op.attrs["axis"] % x.type.rank
    shape = list(idx.type.shape)
    xs = strides(x.type.shape)
    ct = CUDA_CTYPE[x.type.dtype.name]
    others = [s if a != axis else 0 for a, s in enumerate(xs)]
    body = (f"        {_offset(shape, others, 'o')}\n"
            f"        long id = (long)ids[i];\n" + _index(x.type.shape[axis], "gather_elements") +
            f"        y[i] = x[o + id * {xs[axis]}];")
    e.launch([f"{ct} *__restrict__ y", f"const {ct} *__restrict__ x",
              f"{_ctype(idx, True)} ids"], _grid_loop(op.output.type.numel, body),
             *_elements(op.output.type.numel), [e.ptr[op.output], e.val(x), e.val(idx)],
             "gather_elements")


def _lines(x, axis):
    """(count, size, inner): x as `count` lines of `size` elements along
    `axis`, `inner` apart."""
    shape = x.type.shape
    size, inner = shape[axis], math.prod(shape[axis + 1:])
    return x.type.numel // max(size, 1), size, inner


def _line_start(size, inner):
    return f"long base = (i / {inner}) * {size * inner} + i % {inner};"


@lowers("argmax", "argmin")
def _arg_reduce(e, op):
    """One thread per line: the first extreme (the last with
    select_last_index); NaN is the most extreme, as in numpy."""
    x = op.inputs[0]
    count, size, inner = _lines(x, op.attrs["axis"] % x.type.rank)
    better = "v > best" if op.kind == "argmax" else "v < best"
    tie = " || v == best" if op.attrs["select_last_index"] else ""
    body = f"""        {_line_start(size, inner)}
        float best = x[base];
        long at = 0;
        for (long k = 1; k < {size}; k++) {{
            float v = x[base + k * {inner}];
            if (best != best) break;  /* a NaN is never beaten */
            if (v != v || {better}{tie}) {{ best = v; at = k; }}
        }}
        y[i] = at;"""
    e.launch([f"{_ctype(op.output)} y", f"{_ctype(x, True)} x"], _grid_loop(count, body),
             *_elements(count), [e.ptr[op.output], e.val(x)], f"{op.kind} thread per line")


@lowers("topk")
def _topk(e, op):
    """One thread per line: each element, in index order, inserted into the
    line's sorted k outputs past those it is strictly better than (so ties
    keep index order); NaN above every number. O(n * k): k is small."""
    x = op.inputs[0]
    values, indices = op.outputs
    count, size, inner = _lines(x, op.attrs["axis"] % x.type.rank)
    k = op.attrs["k"]
    if values.type.numel == 0:
        return
    ct = CTYPE[x.type.dtype.name]
    if x.type.dtype.is_float:
        better = ("({a} > {b} || ({a} != {a} && {b} == {b}))" if op.attrs["largest"] else
                  "({a} < {b} || ({b} != {b} && {a} == {a}))")
    else:
        better = "{a} > {b}" if op.attrs["largest"] else "{a} < {b}"
    last = better.format(a="v", b=f"y[out + {k - 1} * {inner}]")
    prev = better.format(a="v", b=f"y[out + (p - 1) * {inner}]")
    body = f"""        {_line_start(size, inner)}
        long out = (i / {inner}) * {k * inner} + i % {inner}, held = 0;
        for (long t = 0; t < {size}; t++) {{
            {ct} v = x[base + t * {inner}];
            if (held == {k} && !({last})) continue;
            long p = held < {k} ? held++ : {k - 1};
            for (; p > 0 && {prev}; p--) {{
                y[out + p * {inner}] = y[out + (p - 1) * {inner}];
                iy[out + p * {inner}] = iy[out + (p - 1) * {inner}];
            }}
            y[out + p * {inner}] = v;
            iy[out + p * {inner}] = t;
        }}"""
    e.launch([f"{ct} *__restrict__ y", f"{_ctype(indices)} iy", f"const {ct} *__restrict__ x"],
             _grid_loop(count, body), *_elements(count),
             [e.ptr[values], e.ptr[indices], e.val(x)], "topk thread per line")


@lowers("cumsum")
def _cumsum(e, op):
    """One thread per line, summing in order (as numpy does)."""
    x = op.inputs[0]
    count, size, inner = _lines(x, op.attrs["axis"] % x.type.rank)
    ct = CTYPE[x.type.dtype.name]
    first, step = (f"{size - 1}", "k--") if op.attrs["reverse"] else ("0", "k++")
    add = "(T)((U)acc + (U)v)" if ct != "float" else "acc + v"
    add = add.replace("(U)", f"({UNSIGNED.get(x.type.dtype.name, '')})").replace("(T)", f"({ct})")
    keep = ("y[base + k * {inner}] = acc; acc = {add};" if op.attrs["exclusive"]
            else "acc = {add}; y[base + k * {inner}] = acc;").format(inner=inner, add=add)
    body = f"""        {_line_start(size, inner)}
        {ct} acc = 0;
        for (long k = {first}, n = 0; n < {size}; n++, {step}) {{
            {ct} v = x[base + k * {inner}];
            {keep}
        }}"""
    e.launch([f"{ct} *__restrict__ y", f"const {ct} *__restrict__ x"], _grid_loop(count, body),
             *_elements(count), [e.ptr[op.output], e.val(x)], "cumsum thread per line")


@lowers("pad")
def _pad(e, op):
    """One thread per output element: its source coordinate per axis.
    constant pads around x (a negative pad crops, reaching into the padding
    as padding first would); reflect, edge and wrap pad what cropping left."""
    x = op.inputs[0]
    t = op.output.type
    r, pads, mode = x.type.rank, op.attrs["pads"], op.attrs["mode"]
    ct = CTYPE[t.dtype.name]
    xs = strides(x.type.shape)
    lines = ["long rest = i, src = 0, outside = 0;"]
    for a in reversed(range(r)):
        n, b, end = x.type.shape[a], pads[a], pads[r + a]
        lines.append(f"long c{a} = rest % {t.shape[a]}; rest /= {t.shape[a]};")
        if mode == "constant":
            lines.append(f"long s{a} = c{a} - {b}; outside |= s{a} < 0 || s{a} >= {n};")
        else:
            lo, m = max(-b, 0), n - max(-b, 0) - max(-end, 0)
            lines.append(f"long s{a} = c{a} - {max(b, 0)};")  # in the cropped axis
            if mode == "edge":
                lines.append(f"s{a} = s{a} < 0 ? 0 : (s{a} >= {m} ? {m - 1} : s{a});")
            elif mode == "wrap":
                lines.append(f"s{a} = ((s{a} % {m}) + {m}) % {m};")
            else:  # reflect, repeatedly for pads longer than the axis
                period = max(2 * (m - 1), 1)
                lines.append(f"s{a} = ((s{a} % {period}) + {period}) % {period};")
                lines.append(f"if (s{a} >= {m}) s{a} = {period} - s{a};")
            lines.append(f"s{a} += {lo};")
        lines.append(f"if (!outside) src += s{a} * {xs[a]};")
    value = f"({ct}){float_literal(op.attrs['value'])}" if mode == "constant" else "0"
    body = "        " + "\n        ".join(lines) + f"\n        y[i] = outside ? {value} : x[src];"
    e.launch([f"{ct} *__restrict__ y", f"const {ct} *__restrict__ x"],
             _grid_loop(t.numel, body), *_elements(t.numel), [e.ptr[op.output], e.val(x)],
             f"pad {mode}")


# -- the file --------------------------------------------------------------------

#: every IR op this renderer has no lowering for, and why
REFUSED = {k: REFUSED_WHY for k in OPS if k not in LOWER and k != "const"}


@dataclass
class CudaLowered(Lowered):
    """Lowered, plus the launch table: what a host does per call, in order
    (launch.py runs it on the GPU and in the simulation alike)."""

    steps: list = field(default_factory=list)
    tensor_core_ops: dict = field(default_factory=dict)  # op -> on mma.sp
    kernel_names: list = field(default_factory=list)  # each generated kernel once, in order


#: bytes per element of the C types kernels take pointers to
_CSIZE = {"float": 4, "uint16_t": 2, "int64_t": 8, "int32_t": 4, "uint8_t": 1, "int8_t": 1}
_BASE = re.compile(r"\(\((?:const )?(\w+) \*\)\((?:(A|W) \+ (\d+)|(in|out)\[(\d+)\])\)\)")
_VIEW = re.compile(r"\((.+) \+ (\d+)\)")


def buffer_ref(expr):
    """[space, index, byte offset] of a pointer expression of backends/c
    (`((T *)(A + n))`, `((T *)(in[i]))`, views `(p + elements)`): where a
    kernel argument points, for the host to turn into an address."""
    m = _BASE.fullmatch(expr)
    if m:
        _, space, offset, io, index = m.groups()
        return [space, 0, int(offset)] if space else [io, int(index), 0]
    m = _VIEW.fullmatch(expr)
    if m:
        space, index, offset = buffer_ref(m.group(1))
        return [space, index, offset + int(m.group(2)) * _element_bytes(m.group(1))]
    raise AssertionError(f"cuda: a kernel argument that is not a buffer: {expr}")


def _element_bytes(expr):
    """Bytes per element of the pointer expression `expr` points with."""
    m = re.search(r"\(\((?:const )?(\w+) \*\)", expr)
    return _CSIZE[m.group(1)]


def _dims(text):
    """[x, y, z] of a grid or block written "x, y"."""
    dims = [int(d) for d in text.split(",")]
    return dims + [1] * (3 - len(dims))


class CudaEmitter(Emitter):
    """The graph as generated CUDA kernels and the table of their launches
    (and of the copies that produce outputs that are inputs, constants or
    views); under -DHETC_SIM, hetc_launch runs one table entry on the CPU."""

    target = "cuda"
    ctypes = CUDA_CTYPE
    lowerings = LOWER
    refused = REFUSED
    why_not = staticmethod(why_not)
    what = (f"it holds {', '.join(CUDA_CTYPE)} values and computes on f32 (bf16 and f16 "
            f"rounded after each op), integers exactly")

    def __init__(self, graph, threads=1):
        super().__init__(graph, threads)
        self.device = []  # the generated kernels, in launch order
        self.params = []  # each kernel's parameter types, for the simulation's dispatch
        self.names = {}  # (parameters, body) -> kernel name
        self.steps = []   # the launch table
        self.tensor_core_ops = {}

    def emit(self, text):
        self.op = text  # the op being lowered, as its comment: named in the table

    def skipped(self):
        """Attention reads a decoder's cache and new keys in place (the ops
        that would join them are skipped: kv_view.py); elementwise ops after
        a linear layer run in its kernel's epilogue: the layer and all but
        the last op of the chain emit nothing, the last one the fused
        kernel."""
        users = self.g.users()
        self.views, skipped = attention_views(self.g)
        self.fused = {}
        for op in self.g.ops:
            if op.kind in ("linear", "conv2d"):
                chain = epilogue_chain(self.g, users, op, skipped | set(self.fused))
                if chain:
                    self.fused[chain[-1]] = (op, chain)
                    skipped |= {op, *chain[:-1]}
        return skipped

    def reads(self, op):
        """A fused kernel reads its layer's operands and the chain's;
        attention through a view the segments."""
        view = self.views.get(op)
        if view is not None:
            return [*op.inputs, *view.keys, *view.values]
        if op not in self.fused:
            return op.inputs
        layer, chain = self.fused[op]
        return [*layer.inputs, *(v for step in chain for v in step.inputs)]

    def lower(self, op):
        if op in self.fused:
            layer, chain = self.fused[op]
            self.lowerings[layer.kind](self, layer, chain)
        else:
            super().lower(op)

    def launch(self, params, body, grid, block, args, what):
        """A launch of the kernel `params` / `body`; identical kernels (the
        layers of a transformer, say) are generated once."""
        key = (tuple(params), body)
        name = self.names.get(key)
        if name is None:
            name = self.names[key] = f"k{len(self.device)}"
            self.device.append(f'extern "C" __global__ void {name}({", ".join(params)}) {{\n'
                               f'{body}\n}}\n')
            self.params.append([p.rsplit(" ", 1)[0].replace("__restrict__", "").strip()
                                for p in params])
        self.steps.append({"kernel": name, "op": self.op.strip("/* "), "grid": _dims(grid),
                           "block": _dims(block), "args": [buffer_ref(a) for a in args]})
        self.count(what)

    def copy_output(self, j, v):
        self.steps.append({"copy": {"dst": ["out", j, 0], "src": buffer_ref(self.val(v)),
                                    "bytes": nbytes(v.type)}})

    def run(self):
        lowered = super().run()
        return CudaLowered(**vars(lowered), steps=self.steps,
                           tensor_core_ops=self.tensor_core_ops,
                           kernel_names=[f"k{i}" for i in range(len(self.device))])

    def source(self, body, arena_bytes, steps) -> str:
        cases = "".join(
            f"    case {i}: HETC_LAUNCH({name}, grid, block, "
            f"({', '.join(f'({t})a[{j}]' for j, t in enumerate(types))})); break;\n"
            for i, (name, types) in enumerate(zip((f"k{i}" for i in range(len(self.device))),
                                                  self.params)))
        return (comment("generated by hetc: do not edit") + "\n" +
                comment(f"graph @{self.g.name}") + "\n"
                "#ifdef HETC_SIM\n#include \"hetc_status.h\"\n#endif\n"
                "#include \"device.cuh\"\n\n" +
                "\n".join(self.device) +
                "\n#ifdef HETC_SIM\n"
                "/* The simulation's entry: entry k of the launch table (launches.json) with\n"
                " * its grid and block d[0..5] and buffer addresses a, run on the CPU; nonzero\n"
                " * when it fails, hetc_error() saying why. */\n"
                "static thread_local hetc_status hetc_call_status;\n\n"
                "extern \"C\" {\n"
                "const char *hetc_error(void) { return hetc_call_status.text; }\n\n"
                "int hetc_launch(int k, const unsigned *d, void **a) {\n"
                "    hetc_call_status.failed = 0;\n"
                "    hetc_call_status.text[0] = 0;\n"
                "    hetc_status_now = &hetc_call_status;\n"
                "    dim3 grid(d[0], d[1], d[2]), block(d[3], d[4], d[5]);\n"
                "    switch (k) {\n"
                f"{cases}"
                "    default: hetc_fail(\"no kernel %d\", k);\n"
                "    }\n"
                "    hetc_status_now = 0;\n"
                "    return hetc_call_status.failed;\n}\n"
                "}\n#endif\n")


def lower_graph(graph):
    return CudaEmitter(graph).run()
