"""Linear layers on AMX tiles (amx.h); everything else as on x86.

int8/int4/N:M weights with int8 activations (act_group a multiple of 64)
run TDPBSSD; bf16 weights run TDPBF16PS with the activations rounded to bf16
(the one place the result differs from the interpreter beyond f32 rounding:
see docs/amx.md). Other linear layers keep the x86 AVX-512 kernels; the
artifact's `kernels` counts say which way each layer went.
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
    if act and q is not None and act == q[2] and act % 64 == 0:
        nm = x86.row_blocks(w, q)  # (4, 4) is dense: the plain int layout serves it
        if nm is not None and nm[0] != nm[1]:
            codes = e.blob.add(x86.pack_row_blocks(x86.integer_codes(e, q[0]), q[1], *nm))
            scales = e.blob.add(x86.weight_scales(e, q[0], n, k // q[2]))
            what = f"{nm[0]}:{nm[1]} int{q[1]}"
        else:
            codes, scales = x86.pack_int(e, w, *q)
            nm, what = None, f"int{q[1]}"
        scratch = e.scratch(x86.token_scratch_bytes(m, k, act) + x86.round_up(m * k)
                            + e.threads * 32 * k)
        e.count(f"linear amx tdpbssd int8 act x {what} g{act}")
        e.emit(f"k_amx_linear_q({e.ptr[op.output]}, {e.val(x)}, W + {codes}, "
               f"(const float *)(W + {scales}), {b}, {m}, {n}, {k}, {act}, {q[1]}, "
               f"{nm[0] if nm else 0}, {nm[1] if nm else 0}, A + {scratch}, {e.threads});")
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
