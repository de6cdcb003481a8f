"""Linear layers on AMX tiles (amx.h); everything else as on x86.

int8 weights with int8 activations per token (one scale per output row, the
activations' group a multiple of 64; N:M zeros stored in the rows) run
TDPBSSD; bf16 weights run TDPBF16PS with the activations rounded to bf16
(the one place the result differs from the interpreter beyond f32 rounding:
see docs/amx.md). int4 weights, whose scales come per group of 32-128
values, keep the x86 VNNI kernels: scaling a tile's sums per group cost more
than its products (a 4096 x 4096 int4 layer at 128 tokens: 13.3 ms on tiles
against 5.8 ms on x86; 2:4 + int4 30 against 5.1). Other linear layers keep
the x86 AVX-512 kernels too; the artifact's `kernels` counts say which way
each layer went.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from hetc.backends.x86 import emit as x86

HEADERS = ("amx.h",)


def _bf16_weight(w):
    t = w.type
    return (w.producer is not None and w.producer.kind == "const" and t.dtype.name == "bf16"
            and t.quant is None and t.rank == 2 and t.shape[1] % 32 == 0)


def amx_linear(e, op):
    o = x86.linear_operands(e, op)
    x, w, b, m, n, k, act, q = o.x, o.w, o.bias, o.m, o.n, o.k, o.act, o.q
    if act and q is not None and q[1] == 8 and act == q[2] == k and act % 64 == 0:
        codes = e.blob.add(x86.integer_codes(e, q[0]).view(np.uint8))
        scales = e.blob.add(x86.weight_scales(e, q[0], n, 1))
        what = x86.stored_bits(w, 8)
        scratch = e.scratch(x86.token_scratch_bytes(m, k, act) + x86.round_up(m * k))
        e.count(f"linear amx tdpbssd int8 act x {what} g{act}")
        e.emit(f"k_amx_linear_q({e.ptr[op.output]}, {e.val(x)}, (const int8_t *)(W + {codes}), "
               f"(const float *)(W + {scales}), {b}, {m}, {n}, {k}, A + {scratch}, "
               f"{e.threads});")
        return
    if _bf16_weight(w):
        data = np.asarray(e.stored(w.producer.attrs["name"])).astype(ml_dtypes.bfloat16)
        off = e.blob.add(np.ascontiguousarray(data).view(np.uint16))
        scratch = e.scratch(2 * x86.round_up(2 * m * k))
        e.count("linear amx tdpbf16ps bf16")
        e.emit(f"k_amx_linear_bf16({e.ptr[op.output]}, {e.val(x)}, (const uint16_t *)(W + {off}), "
               f"{b}, {m}, {n}, {k}, A + {scratch}, {e.threads});")
        return
    x86.LOWER["linear"](e, op)


class AmxEmitter(x86.X86Emitter):
    """The x86 renderer with linear layers on AMX tiles (amx.h)."""

    target = "amx"
    lowerings = {**x86.LOWER, "linear": amx_linear}
    headers = x86.X86Emitter.headers + HEADERS
    prepare = "hetc_isa = hetc_configure(); return hetc_prepare_amx();"
