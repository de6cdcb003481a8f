"""Linear layers on tensor cores, for f16 and bf16 activations: weights as
the A operand of `mma.sync` m16n8k16 (dense) or `mma.sp` m16n8k32 (2:4),
tokens as B, in the MARLIN / Sparse-MARLIN orientation that suits few
tokens (batch-1 decode fills 8-token tiles).

Weights are reshuffled at compile time into fragment order: for each 16-row
tile of output features and each k step, the 32 lanes' A registers lie one
after another, so a lane reads its own with one load (16 bytes for 16-bit
values, 4 for int4, 8 for int8). The 2:4 layout keeps the two values of
every group of four along k (compressed 16 x 16 tiles, the same fragment
order) and their positions as mma.sp metadata words: for lane 4g + t with
t < 2 (sparsity selector 0), bits 4q..4q+3 of the low half hold the two
2-bit positions (first in bits 0-1, ascending, as `ordered_metadata`
requires) of row g's group 4t + q of the 32-wide k step, and the high half
row g + 8's.

int4 codes are stored as code + 8 in nibbles: pair j of a lane's u32 is
bits 4j and 16 + 4j, and one lop3 turns it into two 16-bit floats of value
1024 + nibble (f16) or 128 + nibble (bf16), a fused multiply-add into the
code (exact in both). int8 codes are converted through f32 (also exact).
Codes go into the mma as they are and the f32 sums are scaled per row and
quantization group, so the result is the interpreter's f32 arithmetic up
to the order of the sums. The activations of a k chunk are staged in
shared memory by cp.async, double buffered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hetc.backends.c.quant import integer_codes, integer_weight, weight_scales
from hetc.ir.interpret import load_const

KC = 64  # k per staged chunk of activations (halves)
WARPS = 4  # per block, 16 output features each
VALID_NIBBLE = 0b0100  # positions 0 and 1: metadata for groups of padding

# lane l = 4g + t, A register r, half h: (row, column) in a 16 x 16 tile
_L = np.arange(32)[:, None, None]
_R = np.arange(4)[None, :, None]
_H = np.arange(2)[None, None, :]
ROWS = (_L // 4 + 8 * (_R & 1)) + 0 * _H
COLS = 2 * (_L % 4) + 8 * (_R >> 1) + _H


@dataclass(frozen=True)
class Plan:
    act: str       # "f16" / "bf16", or "s8": int8 activation codes (f32 results)
    values: str    # "f16" / "bf16" (the weights' own), "int4", "int8"
    sparse: bool   # 2:4 on mma.sp
    group: int     # k per scale (0: no scales)
    zeros: str = ""  # an N:M pattern whose data do not fit 2:4: run densely

    @property
    def kstep(self):
        return 32 if self.sparse or self.act == "s8" else 16

    def describe(self):
        mma = "mma.sp 2:4" if self.sparse else "mma.sync"
        vals = {"int4": "int4 weights (sign-extended to int8)" if self.act == "s8" else
                "int4 weights (lop3 dequant)", "int8": "int8 weights",
                "fp8": "fp8 e4m3 weights"}.get(
            self.values, f"{self.values} weights")
        group = f" g{self.group}" if self.group else ""
        why = "more than 2 of 4" if self.act != "s8" else "no sparse int8 kernel"
        zeros = f" ({self.zeros} zeros stored: {why})" if self.zeros else ""
        act = "int8 activations" if self.act == "s8" else self.act
        return f"linear {act} tensor cores ({mma}), {vals}{group}{zeros}"


def plan(e, op, x_offset) -> Plan | None:
    """How `linear` op runs on tensor cores, or None when it does not (f32
    activations, int8 activations, other weight encodings, shapes the
    kernel does not take): the tiled f32 GEMM runs it then. N:M weights
    run on mma.sp when every group of four along k keeps at most two
    values (2:4, 1:4, 1:2; 2:8 or 4:8 when their data allow), densely
    otherwise."""
    x, w = op.inputs[:2]
    act = x.type.dtype.name
    n, k = w.type.shape
    if op.attrs.get("act_group"):
        return _int8_plan(op)
    if act not in ("f16", "bf16") or op.output.type.dtype.name != act or k % 8 \
            or x_offset % 16:
        return None
    if w.producer is None or w.producer.kind != "const":
        return None
    q = integer_weight(w)
    if q is not None:
        _, bits, group = q
        values = f"int{bits}"
    elif _fp8_weight(w):
        values, group = "fp8", w.type.quant.group or k
    elif w.type.dtype.name == act and not w.type.quant:
        values, group = act, 0
    else:
        return None
    sparse = w.type.nm is not None and fits_2_4(_values(e, w, act)[1])
    step = 32 if sparse else 16
    if group and group != k and group % step:
        return None
    nm = w.type.nm
    zeros = f"{nm.n}:{nm.m}" if nm is not None and not sparse else ""
    return Plan(act, values, sparse, group, zeros)


def _int8_plan(op) -> Plan | None:
    """int8 activations (f32 results) with int8/int4 weights on the int8
    tensor cores: the activations' groups must be the weights' (each
    group's integer sum then takes both scales); k a multiple of 16 (the
    codes' rows are copied 16 bytes at a time). N:M weights run densely."""
    w = op.inputs[1]
    q = integer_weight(w)
    k = w.type.shape[1]
    if q is None or op.output.type.dtype.name != "f32" or op.attrs["act_group"] != q[2] \
            or k % 16 or (q[2] != k and q[2] % 32):
        return None
    nm = w.type.nm
    return Plan("s8", f"int{q[1]}", False, q[2], f"{nm.n}:{nm.m}" if nm else "")


def conv_plan(e, op) -> Plan | None:
    """How `conv2d` op runs on tensor cores as an implicit GEMM (weights
    [Cout, Cin * kh * kw] as A, the input's windows gathered as B, one
    column per output pixel), or None (f32 activations, groups, weights
    that are not the activations' own dtype: the direct kernel runs it)."""
    x, w = op.inputs[:2]
    act = x.type.dtype.name
    if act not in ("f16", "bf16") or op.output.type.dtype.name != act \
            or op.attrs["groups"] != 1 or w.producer is None or w.producer.kind != "const" \
            or w.type.dtype.name != act or w.type.encodings:
        return None
    return Plan(act, act, False, 0)


def conv_gather(op):
    """(gather, out_index): C of the input element (its 16 bits, 0 outside
    the image) at GEMM row `kk` of output pixel column `mm`, and the NCHW
    output index of (pixel mm, channel row)."""
    _, c, h, wd = op.inputs[0].type.shape
    kh, kw = op.inputs[1].type.shape[2:]
    cout, oh_, ow_ = op.output.type.shape[1:]
    sh, sw = op.attrs.get("stride") or (1, 1)
    dh, dw = op.attrs.get("dilation") or (1, 1)
    top, left = op.attrs["padding"][:2]
    pix = oh_ * ow_

    def gather(mm, kk):
        return (f"[&]() -> uint16_t {{ long m_ = {mm}, k_ = {kk}, p_ = m_ % {pix}, "
                f"n_ = m_ / {pix}, ci = k_ / {kh * kw}, a = k_ / {kw} % {kh}, b = k_ % {kw}; "
                f"long ih = p_ / {ow_} * {sh} - {top} + a * {dh}, "
                f"iw = p_ % {ow_} * {sw} - {left} + b * {dw}; "
                f"return (ih < 0 || ih >= {h} || iw < 0 || iw >= {wd}) ? (uint16_t)0 : "
                f"x[((n_ * {c} + ci) * {h} + ih) * {wd} + iw]; }}()")
    return gather, lambda mm, row: f"({mm}) / {pix} * {cout * pix} + ({row}) * {pix} + ({mm}) % {pix}"


# -- packing -----------------------------------------------------------------------

def _tiles(a, kstep, kpad, fill=0):
    """[N, K] padded to [N rounded up to 16, kpad] with `fill`, as
    [NT, KT, 16, kstep]."""
    n, k = a.shape
    npad = -(-n // 16) * 16
    full = np.full((npad, kpad), fill, a.dtype)
    full[:n, :k] = a
    return full.reshape(npad // 16, 16, kpad // kstep, kstep).transpose(0, 2, 1, 3)


def _fragments(tiles):
    """[NT, KT, 16, 16] -> [NT, KT, 32 lanes, 4 registers, 2 halves]."""
    return tiles[:, :, ROWS, COLS]


# the int8 A fragment of m16n8k32: lane l, register r, byte q
_Q = np.arange(4)[None, None, :]
ROWS8 = (_L // 4 + 8 * (_R & 1)) + 0 * _Q
COLS8 = 4 * (_L % 4) + 16 * (_R >> 1) + _Q


def _s8_fragments(codes, kpad):
    """int8 codes [N, K] -> [NT, KT, 32 lanes, 4 registers, 4 bytes]: the
    A fragments of the m16n8k32 int8 mma, per 16 x 32 tile."""
    return _tiles(codes, 32, kpad)[:, :, ROWS8, COLS8].astype(np.int32)


def s8_words(codes, bits, kpad):
    """The s8 kernel's words per tile and lane. int8: 4 words, register r
    = word r, byte q in bits 8q. int4: 2 words, word w holding registers 2w
    (low nibbles) and 2w + 1 (high), byte q's nibble at bit 8q (+ 4)."""
    frags = _s8_fragments(codes, kpad)
    shift = (8 * np.arange(4)).astype(np.uint32)
    if bits == 8:
        return ((frags & 255).astype(np.uint32) << shift).sum(-1, dtype=np.uint32)
    nib = ((frags & 15).astype(np.uint32) << shift).sum(-1, dtype=np.uint32)
    return nib[..., 0::2] | nib[..., 1::2] << 4


def fits_2_4(nonzero) -> bool:
    """Whether every group of four along k has at most two nonzeros."""
    n, k = nonzero.shape
    return bool((nonzero.reshape(n, k // 4, 4).sum(-1) <= 2).all())


def compress_2_4(values, nonzero):
    """(kept values [N, K/2], metadata nibbles [N, K/4]) of a matrix whose
    every group of four along k has at most two nonzeros (None otherwise):
    the nonzero positions first, padded with zero positions, ascending."""
    n, k = values.shape
    mask = nonzero.reshape(n, k // 4, 4)
    if not fits_2_4(nonzero):
        return None
    keep = np.sort(np.argsort(~mask, axis=-1, kind="stable")[..., :2], axis=-1)
    kept = np.take_along_axis(values.reshape(n, k // 4, 4), keep, -1).reshape(n, k // 2)
    return kept, (keep[..., 0] | keep[..., 1] << 2).astype(np.uint32)


def metadata_words(nibbles, kpad):
    """[N, K/4] nibbles -> [NT, KT, 16] words (k padded to kpad): word
    2g + t holds row g's groups 4t..4t+3 of the 32-wide k step in bits 0-15
    and row g + 8's in bits 16-31 (nibble q at bit 4q)."""
    tiles = _tiles(nibbles, 8, kpad // 4, VALID_NIBBLE)  # [NT, KT, 16 rows, 8 groups]
    shift = (4 * np.arange(4)).astype(np.uint32)
    nt, kt = tiles.shape[:2]
    t4 = tiles.reshape(nt, kt, 2, 8, 2, 4)  # [.., row half, g, t, q]
    halves = (t4 << shift).sum(-1, dtype=np.uint32)  # [.., row half, g, t]
    return (halves[:, :, 0] | halves[:, :, 1] << 16).reshape(nt, kt, 16)


def pack(e, op, p: Plan):
    """The weights in fragment order (and 2:4 metadata, scales) added to the
    blob: (weights offset, metadata offset or None, scales offset or None)."""
    w = op.inputs[1]
    data, nonzero = _values(e, w, p.act)
    n, k = data.shape
    kpad, meta = -(-k // KC) * KC, None
    if p.sparse:
        data, nibbles = compress_2_4(data, nonzero)
        meta = e.blob.add(np.ascontiguousarray(metadata_words(nibbles, kpad)))
        kpad //= 2
    words = _a_words(p, data, kpad)
    wq = e.blob.add(np.ascontiguousarray(words))
    scales = None
    if p.group:
        s = weight_scales(e, w.producer.attrs["name"], n, k // p.group)
        scales = e.blob.add(np.ascontiguousarray(np.pad(s, ((0, -n % 16), (0, 0)))))
    return wq, meta, scales


def _a_words(p, data, kpad):
    """The A fragments of `data` ([N, K] codes or bits, k padded to kpad)
    as the kernel's words per tile and lane."""
    if p.act == "s8":
        return s8_words(data, 8 if p.values == "int8" else 4, kpad)
    frags = _fragments(_tiles(data, 16, kpad))
    if p.values == "int4":
        nib = (frags.astype(np.int32) + 8).astype(np.uint32)
        shift = (4 * np.arange(4)[:, None] + 16 * np.arange(2)[None, :]).astype(np.uint32)
        return (nib << shift).sum((-1, -2), dtype=np.uint32)  # [NT, KT, 32]
    if p.values in ("int8", "fp8"):
        b = (frags.astype(np.int32) & 255).astype(np.uint32)  # reg j half h: word j // 2
        return (b[..., 0::2, 0] | b[..., 0::2, 1] << 16 | b[..., 1::2, 0] << 8
                | b[..., 1::2, 1] << 24)  # [.., 32, 2]: bytes (0, 2) reg 2i, (1, 3) reg 2i + 1
    return frags[..., 0].astype(np.uint32) | frags[..., 1].astype(np.uint32) << 16


def _fp8_weight(w) -> bool:
    """e4m3 values with a symmetric scale per row and group along k."""
    q = w.type.quant
    return w.type.dtype.name == "f8e4m3" and q is not None and q.symmetric \
        and not q.codebook and q.axis % w.type.rank == w.type.rank - 1


def _values(e, w, act):
    """(the weight as packed: int8 codes, e4m3 bits or 16-bit float bits,
    its nonzeros)."""
    q = integer_weight(w)
    if q is not None:
        codes = integer_codes(e, q[0])
        return codes, codes != 0
    if _fp8_weight(w):
        bits = np.asarray(e.g.weights[w.producer.attrs["name"]]).view(np.uint8)
        return bits, (bits & 0x7F) != 0
    data = np.asarray(load_const(w.producer, e.g)).astype(np.float32)
    data = data.reshape(data.shape[0], -1)  # a convolution's [Cout, Cin * kh * kw]
    bits = data.astype(np.float16).view(np.uint16) if act == "f16" else _bf16_bits(data)
    return bits, data != 0


def _bf16_bits(f32):
    """f32 -> bf16 bits, rounded to nearest even (NaN kept)."""
    u = f32.astype(np.float32).view(np.uint32)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(f32), (u >> 16).astype(np.uint16) | 0x40, r)


# -- the kernel ----------------------------------------------------------------------

def kernel(p: Plan, m, n, k, store, bias_expr, gather=None, out_index=None):
    """(body, grid, block) of the kernel: y[m][n] = sum_k x[m][k] W[n][k]
    (+ bias), parameters y, x, wq[, meta][, ws][, bias]; `store(value,
    index)` gives the statements storing an f32 result (its epilogue).
    x is read row by row (cp.async), or through `gather(mm, kk)` (a
    convolution's windows), and y[mm][row] stored at `out_index(mm, row)`."""
    out_index = out_index or (lambda mm, row: f"{mm} * {n} + {row}")
    step = p.kstep
    kpad = -(-k // KC) * KC
    kt_all, npad = kpad // step, -(-n // 16) * 16
    subs = min(4, -(-m // 8))  # 8-token column tiles per warp
    tok = 8 * subs
    mma = "hetc_mma_sp_" if p.sparse else "hetc_mma_"
    s8 = p.act == "s8"
    eb = 1 if s8 else 2  # bytes per activation element
    per_copy = 16 // eb  # elements per 16-byte copy
    if s8 and p.values == "int4":  # nibbles sign-extended to bytes, no carries
        load_a = ("        const uint32_t *q = wq + (tile * 32 + lane) * 2;\n"
                  "        for (int j = 0; j < 4; j++) {\n"
                  "            uint32_t v = (q[j >> 1] >> (4 * (j & 1))) & 0x0f0f0f0fu;\n"
                  "            a[j] = ((v ^ 0x08080808u) + 0x78787878u) ^ 0x80808080u;\n"
                  "        }\n")
    elif s8:
        load_a = ("        const uint32_t *q = wq + (tile * 32 + lane) * 4;\n"
                  "        for (int j = 0; j < 4; j++) a[j] = q[j];\n")
    elif p.values == "int4":
        magic, one, neg = (("0x64006400u", "0x3c003c00u", "0xe408e408u") if p.act == "f16"
                           else ("0x43004300u", "0x3f803f80u", "0xc308c308u"))
        load_a = (f"        uint32_t q = wq[tile * 32 + lane];\n"
                  f"        for (int j = 0; j < 4; j++)  /* 16-bit (nibble + magic) - (8 + magic) */\n"
                  f"            a[j] = hetc_fma2_{p.act}(hetc_lop3<0xea>(q >> (4 * j), 0x000f000fu, "
                  f"{magic}), {one}, {neg});\n")
    elif p.values in ("int8", "fp8"):
        value = "(float)(int8_t)({})" if p.values == "int8" else "hetc_from_e4m3({})"
        load_a = (f"        const uint32_t *q = wq + (tile * 32 + lane) * 2;\n"
                  f"        for (int j = 0; j < 4; j++) {{\n"
                  f"            uint32_t v = q[j >> 1] >> (8 * (j & 1));\n"
                  f"            a[j] = (uint32_t)hetc_to_{p.act}({value.format('v & 255u')}) |\n"
                  f"                   (uint32_t)hetc_to_{p.act}({value.format('v >> 16 & 255u')})"
                  f" << 16;\n"
                  f"        }}\n")
    else:
        load_a = ("        const uint32_t *q = wq + (tile * 32 + lane) * 4;\n"
                  "        for (int j = 0; j < 4; j++) a[j] = q[j];\n")
    meta = ("        uint32_t meta_word = t < 2 ? meta[tile * 16 + 2 * g + t] : 0u;\n"
            if p.sparse else "")
    sp_arg = ", meta_word" if p.sparse else ""
    target = "part" if p.group else "acc"
    fold = ""
    if p.group:
        groups = k // p.group
        # int8 activations: the group's integer sum times both scales
        x_scale = (f" * (mm < {m} ? xsc[mm * {groups} + grp] : 0.f)" if s8 else "")
        fold = (f"        if (((kt + 1) * {step}) % {p.group} == 0 || kt == {kt_all - 1}) {{\n"
                f"            long grp = kt * {step} / {p.group};\n"
                f"            if (grp > {groups - 1}) grp = {groups - 1};  /* k padding */\n"
                f"            float s0 = ws[(row0) * {groups} + grp], "
                f"s1 = ws[(row0 + 8) * {groups} + grp];\n"
                f"            for (int j = 0; j < {subs}; j++)\n"
                f"                for (int i = 0; i < 4; i++) {{\n"
                f"                    long mm = m0 + 8 * j + 2 * t + (i & 1);\n"
                f"                    acc[j][i] += (float)part[j][i] * (i < 2 ? s0 : s1){x_scale};\n"
                f"                    part[j][i] = 0;\n"
                f"                }}\n"
                f"        }}\n")
    if gather is None:
        stage = (f"                if (mm < {m} && kk < {k}) hetc_cp_async16(to, x + mm * {k} + kk);\n"
                 f"                else for (int h = 0; h < {per_copy}; h++) to[h] = 0;")
    else:  # gathered by plain loads: ready at the barrier
        stage = (f"                for (int h = 0; h < {per_copy}; h++)\n"
                 f"                    to[h] = mm < {m} && kk + h < {k} ? {gather('mm', 'kk + h')} : 0;")
    elem = "uint8_t" if s8 else "uint16_t"
    part = (f"\n    {'int' if s8 else 'float'} part[{subs}][4] = {{}};  /* one group's sums */"
            if p.group else "")
    body = f"""    __shared__ __align__(16) {elem} xs[2][{tok}][{KC + per_copy}];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    long nt = blockIdx.x * {WARPS} + warp, m0 = blockIdx.y * {tok}, row0 = nt * 16 + g;
    bool live = nt < {npad // 16};  /* warps past the last row tile meet the barriers only */
    float acc[{subs}][4] = {{}};{part}
    for (long c = -1; c < {kpad // KC}; c++) {{
        if (c + 1 < {kpad // KC}) {{  /* stage chunk c + 1 while chunk c is used */
            for (int i = threadIdx.x; i < {tok * KC // per_copy}; i += {WARPS * 32}) {{
                int r = i / {KC // per_copy}, j = i % {KC // per_copy} * {per_copy};
                long mm = m0 + r, kk = (c + 1) * {KC} + j;
                {elem} *to = &xs[(c + 1) & 1][r][j];
{stage}
            }}
        }}
        hetc_cp_async_commit();
        hetc_cp_async_wait<1>();
        __syncthreads();
        if (c >= 0 && live)
            for (int s = 0; s < {KC // step}; s++) {{
        long kt = c * {KC // step} + s, tile = nt * {kt_all} + kt;
        uint32_t a[4];
{load_a}{meta}        for (int j = 0; j < {subs}; j++) {{
            /* B register r: bytes 4t + 16r.. of this lane's column (token 8j + g) */
            uint32_t b[{step * eb // 16}];
            const uint8_t *col = (const uint8_t *)&xs[c & 1][8 * j + g][s * {step}];
            for (int r = 0; r < {step * eb // 16}; r++)
                b[r] = *(const uint32_t *)(col + 4 * t + 16 * r);
            {mma}{p.act}({target}[j], a, b{sp_arg});
        }}
{fold}            }}
        __syncthreads();
    }}
    if (!live) return;
    for (int j = 0; j < {subs}; j++)
        for (int i = 0; i < 4; i++) {{
            long row = row0 + 8 * (i >> 1), mm = m0 + 8 * j + 2 * t + (i & 1);
            if (row < {n} && mm < {m})
                {store(f"acc[j][i]{bias_expr}", out_index("mm", "row"))}
        }}"""
    grid = f"{-(-npad // (16 * WARPS))}, {-(-m // tok)}"
    return body, grid, str(WARPS * 32)


def params(p: Plan):
    """The kernel's weight parameters (after y and x) and, with int8
    activations, their scales (per token and group), as C declarations."""
    out = ["const uint32_t *__restrict__ wq"]
    if p.sparse:
        out.append("const uint32_t *__restrict__ meta")
    if p.group:
        out.append("const float *__restrict__ ws")
    if p.act == "s8":
        out.append("const float *__restrict__ xsc")
    return out

