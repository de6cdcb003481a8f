/* hetc x86 kernels: included by every generated model.c.
 *
 * Plain C that gcc vectorizes, built for AVX2+FMA with AVX-512 clones chosen
 * at load time from CPUID (target_clones), plus hand-written AVX-512 VNNI
 * kernels for quantized weights, dispatched with __builtin_cpu_supports.
 * Threads: OpenMP over output features (the generated code sets the count).
 * Float dot products are vectorized (omp simd reductions), so their summation
 * order differs from a sequential loop: results match the interpreter to
 * rounding, not bit for bit.
 */
#include "kernels_api.h"
#ifndef HETC_PREBUILT_KERNELS /* else the model links hetc's kernel library */
#include <math.h>
#include <immintrin.h>

#define HETC_CLONES __attribute__((target_clones("arch=x86-64-v4", "default")))

/* Whether the AVX-512 kernels may run, decided by hetc_configure when a
 * model is loaded, not per call: hetc_avx512 (F and BW) for the float
 * panels, hetc_simd (also DQ, VNNI and VBMI: Ice Lake, Sapphire Rapids, Zen 4 and
 * newer) for the integer row blocks. HETC_X86_PORTABLE forces the portable C kernels,
 * so they are tested on AVX-512 hosts too. */
static int hetc_simd, hetc_avx512;

/* ---- elementwise ------------------------------------------------------- */

/* e^x without a libm call, so that loops over it vectorize: 2^n p(r) with
 * n = rint(x log2 e), r = x - n ln 2 (two-part ln 2), p the degree-6 Taylor
 * polynomial (|r| <= 0.347: within 2 ulp of expf); 2^n applied as two
 * normal powers so that results near overflow and in the subnormal range
 * come out right; inf, -inf and NaN as expf gives them. */
static inline float hetc_expf(float x) {
    float xc = x < -104.f ? -104.f : x > 89.f ? 89.f : x;
    float n = __builtin_rintf(xc * 1.44269504088896341f);
    float r = __builtin_fmaf(n, -0.693145751953125f, xc);
    r = __builtin_fmaf(n, -1.428606765330187e-06f, r);
    float p = 1.f / 720.f;
    p = __builtin_fmaf(p, r, 1.f / 120.f);
    p = __builtin_fmaf(p, r, 1.f / 24.f);
    p = __builtin_fmaf(p, r, 1.f / 6.f);
    p = __builtin_fmaf(p, r, 0.5f);
    p = __builtin_fmaf(p, r, 1.f);
    p = __builtin_fmaf(p, r, 1.f);
    int ni = (int)n, n1 = ni >> 1, n2 = ni - n1;
    union { int i; float f; } s1 = {(n1 + 127) << 23}, s2 = {(n2 + 127) << 23};
    float e = p * s1.f * s2.f;
    return x != x ? x : x > 88.72283935546875f ? INFINITY : x < -103.972084045410156f ? 0.f : e;
}

/* erf(x) for GELU, vectorizable: Abramowitz and Stegun 7.1.26 (absolute
 * error below 1.5e-7, which GELU's 0.5 x (1 + erf) carries as an error
 * below 1e-7 |x|); U_ERF itself stays libm's erff. */
static inline float hetc_erf_gelu(float x) {
    float a = x < 0.f ? -x : x;
    float t = 1.f / __builtin_fmaf(0.3275911f, a, 1.f);
    float p = __builtin_fmaf(1.061405429f, t, -1.453152027f);
    p = __builtin_fmaf(p, t, 1.421413741f);
    p = __builtin_fmaf(p, t, -0.284496736f);
    p = __builtin_fmaf(p, t, 0.254829592f);
    float v = 1.f - p * t * hetc_expf(-a * a);
    return x < 0.f ? -v : v;
}

/* ---- elementwise on 16 lanes ---------------------------------------------- */

/* The lanes of a 16-row block that hold rows: `left` rows remain from its first. */
static inline __mmask16 hetc_rows16(long left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

/* The indices of the even lanes of two vectors (vpermt2ps): 16 floats of
 * stride 2 from two loads. */
__attribute__((target("avx512f"), always_inline))
static inline __m512i hetc_evens16(void) {
    return _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
}

/* n floats for a kernel's own buffer, on a cache line (free() releases
 * them), zeroed if asked: from malloc's 16-byte alignment every 64-byte
 * vector load of blocked data spanned two lines (the depthwise kernel in
 * blocks of 16 channels ran 25-35% slower so, hot and alone). */
static float *hetc_floats(size_t n, int zero) {
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    float *p = aligned_alloc(64, bytes ? bytes : 64);
    if (p && zero) memset(p, 0, bytes);
    return p;
}

/* hetc_expf on 16 lanes, the same operations lane by lane (so the same
 * results): a vector loop where the scalar one ran ~20 cycles an element. */
__attribute__((target("avx512f"), always_inline))
static inline __m512 hetc_exp512(__m512 x) {
    __m512 xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.f)), _mm512_set1_ps(89.f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693145751953125f), xc);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(-1.428606765330187e-06f), r);
    __m512 p = _mm512_set1_ps(1.f / 720.f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
    __m512i ni = _mm512_cvttps_epi32(n), n1 = _mm512_srai_epi32(ni, 1);
    __m512i n2 = _mm512_sub_epi32(ni, n1), bias = _mm512_set1_epi32(127);
    __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, bias), 23));
    __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, bias), 23));
    __m512 e = _mm512_mul_ps(_mm512_mul_ps(p, s1), s2);
    e = _mm512_mask_mov_ps(e, _mm512_cmp_ps_mask(x, _mm512_set1_ps(88.72283935546875f),
                                                 _CMP_GT_OQ), _mm512_set1_ps(INFINITY));
    e = _mm512_mask_mov_ps(e, _mm512_cmp_ps_mask(x, _mm512_set1_ps(-103.972084045410156f),
                                                 _CMP_LT_OQ), _mm512_setzero_ps());
    return _mm512_mask_mov_ps(e, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x);
}

/* hetc_erf_gelu on 16 lanes, its operations lane by lane. */
__attribute__((target("avx512f"), always_inline))
static inline __m512 hetc_erf_gelu512(__m512 x) {
    const __m512 one = _mm512_set1_ps(1.f);
    __m512 a = _mm512_abs_ps(x);
    __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(0.3275911f), a, one));
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.061405429f), t, _mm512_set1_ps(-1.453152027f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
    __m512 e = hetc_exp512(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), a), a));
    __m512 v = _mm512_fnmadd_ps(_mm512_mul_ps(p, t), e, one);
    return _mm512_mask_sub_ps(v, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ),
                              _mm512_setzero_ps(), v);
}

/* tanh(u) on 16 lanes, where the scalar loop calls tanhf: from |u| = 0.4
 * on 1 - 2 / (e^2|u| + 1) with u's sign, below it tanh's series to u^13
 * (the next term is under 1e-8 of u there; the quotient's cancellation
 * would lose the relative precision of small values): within 4 ulp of
 * tanhf from -12 to 12 and on 1e-40 .. 1; NaN stays NaN, -0 stays -0. */
__attribute__((target("avx512f"), always_inline))
static inline __m512 hetc_tanh512(__m512 u) {
    const __m512 one = _mm512_set1_ps(1.f);
    __m512 a = _mm512_abs_ps(u);
    __m512 e = hetc_exp512(_mm512_add_ps(a, a));
    __m512 th = _mm512_sub_ps(one, _mm512_div_ps(_mm512_set1_ps(2.f), _mm512_add_ps(e, one)));
    th = _mm512_mask_sub_ps(th, _mm512_cmp_ps_mask(u, _mm512_setzero_ps(), _CMP_LT_OQ),
                            _mm512_setzero_ps(), th);
    __m512 u2 = _mm512_mul_ps(u, u);
    __m512 p = _mm512_fmadd_ps(u2, _mm512_set1_ps(0.0035921280f), _mm512_set1_ps(-0.0088632355f));
    p = _mm512_fmadd_ps(p, u2, _mm512_set1_ps(0.021869489f));
    p = _mm512_fmadd_ps(p, u2, _mm512_set1_ps(-0.053968254f));
    p = _mm512_fmadd_ps(p, u2, _mm512_set1_ps(0.13333334f));
    p = _mm512_fmadd_ps(p, u2, _mm512_set1_ps(-0.33333334f));
    __m512 series = _mm512_mul_ps(u, _mm512_fmadd_ps(p, u2, one));
    th = _mm512_mask_mov_ps(th, _mm512_cmp_ps_mask(a, _mm512_set1_ps(0.4f), _CMP_LT_OQ), series);
    return _mm512_mask_mov_ps(th, _mm512_cmp_ps_mask(u, u, _CMP_UNORD_Q), u);
}

/* The unary ops whose scalar loops do not vectorize (exp's integer steps,
 * libm calls), 16 lanes at a time: GELU's erf, SiLU and sigmoid with
 * hetc_unary1's operations; tanh and the tanh GELU's tanh by hetc_tanh512.
 * A GELU epilogue over 128 x 1536 values took 0.20 ms in the scalar loop,
 * 0.12 ms here; BLOOM's GELU, written out around a tanh, 2.4 ms per layer
 * with tanhf. Returns 0, doing nothing, for other ops. */
__attribute__((target("avx512f")))
static int hetc_unary_avx512(int op, float *y, const float *x, long n) {
    if (op != U_GELU && op != U_GELU_TANH && op != U_SILU && op != U_SIGMOID && op != U_TANH)
        return 0;
    const __m512 one = _mm512_set1_ps(1.f), half = _mm512_set1_ps(0.5f);
    for (long i = 0; i < n; i += 16) {
        __mmask16 m = hetc_rows16(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i), r;
        if (op == U_GELU) {
            __m512 hv = _mm512_mul_ps(half, v);
            r = _mm512_fmadd_ps(
                hv, hetc_erf_gelu512(_mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752f))), hv);
        } else if (op == U_GELU_TANH) {
            __m512 cube = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.044715f), v),
                                        _mm512_mul_ps(v, v));
            __m512 u = _mm512_mul_ps(_mm512_set1_ps(0.7978845608028654f), _mm512_add_ps(v, cube));
            r = _mm512_mul_ps(_mm512_mul_ps(half, v), _mm512_add_ps(one, hetc_tanh512(u)));
        } else if (op == U_TANH) {
            r = hetc_tanh512(v);
        } else {
            __m512 s = _mm512_add_ps(one, hetc_exp512(_mm512_sub_ps(_mm512_setzero_ps(), v)));
            r = _mm512_div_ps(op == U_SILU ? v : one, s);
        }
        _mm512_mask_storeu_ps(y + i, m, r);
    }
    return 1;
}

static inline float hetc_unary1(int op, float x) {
    switch (op) {
    case U_RELU: return x < 0.f ? 0.f : x; /* keeps nan */
    case U_GELU: return 0.5f * x * (1.f + hetc_erf_gelu(x * 0.70710678118654752f));
    case U_GELU_TANH: return 0.5f * x * (1.f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case U_SILU: return x / (1.f + hetc_expf(-x));
    case U_SIGMOID: return 1.f / (1.f + hetc_expf(-x));
    case U_TANH: return tanhf(x);
    case U_EXP: return hetc_expf(x);
    case U_NEG: return -x;
    case U_SQRT: return sqrtf(x);
    case U_RSQRT: return 1.f / sqrtf(x);
    case U_ABS: return fabsf(x);
    case U_LOG: return logf(x);
    case U_ERF: return erff(x);
    case U_FLOOR: return floorf(x);
    case U_CEIL: return ceilf(x);
    case U_ROUND: return nearbyintf(x); /* half to even */
    case U_RECIPROCAL: return 1.f / x;
    case U_SIGN: return x > 0.f ? 1.f : x < 0.f ? -1.f : x; /* keeps 0, -0 and nan */
    case U_SIN: return sinf(x);
    case U_COS: return cosf(x);
    case U_TAN: return tanf(x);
    case U_ASIN: return asinf(x);
    case U_ACOS: return acosf(x);
    case U_ATAN: return atanf(x);
    case U_SINH: return sinhf(x);
    case U_COSH: return coshf(x);
    case U_ASINH: return asinhf(x);
    case U_ACOSH: return acoshf(x);
    case U_ATANH: return atanhf(x);
    }
    return x;
}

/* y[0, n) = op(x), one loop per simple op with the op a constant in it (a
 * switch per element kept the loop scalar: SmolLM2's rotary negation of
 * 9 x 512 x 32 values took 0.14 ms) */
#define HETC_UNARY_LOOP(U) case U: for (long i = 0; i < n; i++) y[i] = hetc_unary1(U, x[i]); break;
static inline void hetc_unary_run(int op, float *restrict y, const float *restrict x, long n) {
    switch (op) {
        HETC_UNARY_LOOP(U_RELU) HETC_UNARY_LOOP(U_NEG) HETC_UNARY_LOOP(U_ABS)
        HETC_UNARY_LOOP(U_SQRT) HETC_UNARY_LOOP(U_RSQRT) HETC_UNARY_LOOP(U_RECIPROCAL)
        HETC_UNARY_LOOP(U_EXP)
        default: for (long i = 0; i < n; i++) y[i] = hetc_unary1(op, x[i]);
    }
}
#undef HETC_UNARY_LOOP

/* Runs of 16384 values split among threads above 64K values. */
HETC_CLONES
HETC_KERNEL void k_unary(int op, float *restrict y, const float *restrict x, long n) {
    #pragma omp parallel for schedule(static) if (n > 65536)
    for (long i = 0; i < n; i += 16384) {
        long len = n - i < 16384 ? n - i : 16384;
        if (!(hetc_avx512 && hetc_unary_avx512(op, y + i, x + i, len)))
            hetc_unary_run(op, y + i, x + i, len);
    }
}

static inline float hetc_binary1(int op, float a, float b) {
    switch (op) {
    case B_ADD: return a + b;
    case B_SUB: return a - b;
    case B_MUL: return a * b;
    case B_DIV: return a / b;
    case B_MAX: return a > b || isnan(a) ? a : b;
    case B_MIN: return a < b || isnan(a) ? a : b;
    case B_POW: return powf(a, b);
    }
    return a;
}

/* The flat index of element i of `shape` in an operand with strides st
 * (broadcast operands have 0 strides; reductions use it for both index sets). */
static inline long hetc_bcast(long i, int ndim, const long *shape, const long *st) {
    long off = 0;
    for (int d = ndim - 1; d >= 0; d--) {
        off += (i % shape[d]) * st[d];
        i /= shape[d];
    }
    return off;
}

/* Broadcast and strided kernels walk rows (the last axis): the rows and
 * their length, the offset of row o along strides st (one division per
 * axis, once a row, not per element: in the kernel library, where shapes
 * are not constants, a division per axis and element made an attention
 * mask's AND take 0.37 ms), and the last axis's stride. */
#define HETC_ROWS(ndim, shape)                                                             \
    long inner_ = (ndim) ? (shape)[(ndim) - 1] : 1, outer_ = inner_ ? 1 : 0;               \
    for (int d_ = 0; d_ < (ndim) - 1; d_++) outer_ *= (shape)[d_];
#define HETC_ROW(o, ndim, shape, st) ((ndim) > 1 ? hetc_bcast(o, (ndim) - 1, shape, st) : 0)
#define HETC_STEP(ndim, st) ((ndim) ? (st)[(ndim) - 1] : 0)

/* ---- epilogues ------------------------------------------------------------ *
 * The elementwise ops of a fused region after its first (a convolution, a
 * linear layer, or an elementwise op), run in place on runs of the result
 * while they are in cache. A step is y = y op v (v op y when `left`), or
 * y = op(y) for a unary op, v one value (E_SCALAR), the element at the same
 * place of a tensor shaped as the result (E_TENSOR), or one value per
 * channel (E_CHANNEL): a run either lies in one channel (cstride 0: a
 * convolution's plane) or walks the channels one per element (cstride 1:
 * a row of a linear layer's features). */

/* One loop per op with the op a constant, so that hetc_unary1/hetc_binary1
 * fold to the op's expression and the loop vectorizes. */
#define HETC_EPI_U(U) case U: for (long i = 0; i < n; i++) y[i] = hetc_unary1(U, y[i]); break;
#define HETC_EPI_B(B, A, V) case B: for (long i = 0; i < n; i++) y[i] = hetc_binary1(B, A, V); break;
#define HETC_EPI_BINARY(A, V)                                                               \
    switch (op) {                                                                          \
        HETC_EPI_B(B_ADD, A, V) HETC_EPI_B(B_SUB, A, V) HETC_EPI_B(B_MUL, A, V)            \
        HETC_EPI_B(B_DIV, A, V) HETC_EPI_B(B_MAX, A, V) HETC_EPI_B(B_MIN, A, V)            \
        default: for (long i = 0; i < n; i++) y[i] = hetc_binary1(op, A, V);               \
    }

/* y[0, n) = a op b along one row, a's and b's elements sa and sb apart (0: one
 * value), one loop per op and stride case with the op a constant in it */
static inline void hetc_binary_row(int op, float *restrict y, const float *a, long sa,
                                   const float *b, long sb, long n) {
    float a0 = a[0], b0 = b[0];
    if (sa == 1 && sb == 1) HETC_EPI_BINARY(a[i], b[i])
    else if (sa == 1 && sb == 0) HETC_EPI_BINARY(a[i], b0)
    else if (sa == 0 && sb == 1) HETC_EPI_BINARY(a0, b[i])
    else HETC_EPI_BINARY(a[i * sa], b[i * sb])
}

/* y = a op b, both broadcast to shape[ndim] with element strides (0 where
 * broadcast): rows of the last axis, split among threads above 64K
 * elements. A switch on the op per element had kept the loops scalar
 * (SmolLM2's rotary products, 9 x 512 x 64 by a broadcast table: 0.25 ms). */
HETC_CLONES
HETC_KERNEL void k_binary(int op, float *restrict y, const float *a, const float *b, int ndim,
                          const long *shape, const long *as, const long *bs) {
    HETC_ROWS(ndim, shape)
    long inner = inner_, outer = outer_, sa = HETC_STEP(ndim, as), sb = HETC_STEP(ndim, bs);
    #pragma omp parallel for schedule(static) if (outer * inner > 65536 && outer > 1)
    for (long o = 0; o < outer; o++)
        hetc_binary_row(op, y + o * inner, a + HETC_ROW(o, ndim, shape, as), sa,
                        b + HETC_ROW(o, ndim, shape, bs), sb, inner);
}

/* The steps on y[0, n): elements flat .. flat + n - 1 of the result, at
 * channel chan (+ i * cstride). */
HETC_CLONES
static void hetc_epilogue_run(const hetc_step *ep, int nep, float *restrict y, long n, long flat,
                              long chan, long cstride) {
    for (int s = 0; s < nep; s++) {
        const hetc_step *st = ep + s;
        int op = st->op;
        if (st->kind == E_UNARY) {
            if (hetc_avx512 && hetc_unary_avx512(op, y, y, n)) continue;
            switch (op) {
                HETC_EPI_U(U_RELU) HETC_EPI_U(U_NEG) HETC_EPI_U(U_ABS) HETC_EPI_U(U_SQRT)
                HETC_EPI_U(U_RSQRT) HETC_EPI_U(U_SILU) HETC_EPI_U(U_SIGMOID)
                HETC_EPI_U(U_GELU) HETC_EPI_U(U_GELU_TANH)
                default: for (long i = 0; i < n; i++) y[i] = hetc_unary1(op, y[i]);
            }
            continue;
        }
        const float *restrict v = st->kind == E_TENSOR ? st->arg + flat
                                  : st->kind == E_CHANNEL ? st->arg + chan : st->arg;
        int each = st->kind == E_TENSOR || (st->kind == E_CHANNEL && cstride);
        float c = v[0];
        if (!each && st->left) HETC_EPI_BINARY(c, y[i])
        else if (!each) HETC_EPI_BINARY(y[i], c)
        else if (st->left) HETC_EPI_BINARY(v[i], y[i])
        else HETC_EPI_BINARY(y[i], v[i])
    }
}

/* The steps over a whole result of n elements in runs of `run` (the last
 * one shorter when run does not divide n): run = the elements sharing one
 * channel (cstride 0, channel = run index % channels) or one row of
 * `channels` features (cstride 1). */
HETC_KERNEL void k_epilogue(float *y, long n, long runs, long run, long channels, long cstride,
                            const hetc_step *ep, int nep) {
    #pragma omp parallel for schedule(static) if (n > 65536)
    for (long r = 0; r < runs; r++) {
        long len = n - r * run < run ? n - r * run : run;
        hetc_epilogue_run(ep, nep, y + r * run, len, r * run, cstride ? 0 : r % channels,
                          cstride);
    }
}

/* Integer a op b as the IR defines it: wrapping add, sub and mul (computed
 * unsigned: C leaves signed overflow undefined), division truncating toward
 * zero with x / 0 = 0 (and MIN / -1 wrapping to MIN), max and min; neg, abs
 * (wrapping at MIN), relu and sign; running sums. */
#define HETC_INT_BINARY(T, U)                                                              \
    static inline T hetc_binary_##T(int op, T a, T b) {                                    \
        switch (op) {                                                                      \
        case B_ADD: return (T)((U)a + (U)b);                                               \
        case B_SUB: return (T)((U)a - (U)b);                                               \
        case B_MUL: return (T)((U)a * (U)b);                                               \
        case B_DIV: return b == 0 ? 0 : b == -1 ? (T)(0 - (U)a) : a / b;                   \
        case B_MAX: return a > b ? a : b;                                                  \
        case B_MIN: return a < b ? a : b;                                                  \
        }                                                                                  \
        return a;                                                                          \
    }                                                                                      \
    HETC_KERNEL void k_binary_##T(int op, T *restrict y, const T *a, const T *b, int ndim,  \
                                  const long *shape, const long *as, const long *bs) {     \
        HETC_ROWS(ndim, shape)                                                             \
        long sa = HETC_STEP(ndim, as), sb = HETC_STEP(ndim, bs);                           \
        for (long o = 0; o < outer_; o++) {                                                \
            long ia = HETC_ROW(o, ndim, shape, as), ib = HETC_ROW(o, ndim, shape, bs);     \
            for (long i = 0; i < inner_; i++)                                              \
                y[o * inner_ + i] = hetc_binary_##T(op, a[ia + i * sa], b[ib + i * sb]);   \
        }                                                                                  \
    }                                                                                      \
    HETC_KERNEL void k_unary_##T(int op, T *restrict y, const T *restrict x, long n) {     \
        for (long i = 0; i < n; i++) {                                                     \
            T v = x[i];                                                                    \
            y[i] = op == U_NEG ? (T)(0 - (U)v) : op == U_ABS ? (v < 0 ? (T)(0 - (U)v) : v)  \
                 : op == U_RELU ? (v > 0 ? v : 0) : op == U_SIGN ? (T)((v > 0) - (v < 0))  \
                 : v;                                                                      \
        }                                                                                  \
    }                                                                                      \
    /* cumsum along the middle axis of [outer, n, inner], wrapping as add does */          \
    HETC_KERNEL void k_cumsum_##T(T *y, const T *x, long outer, long n, long inner,        \
                                  int exclusive, int reverse) {                            \
        for (long o = 0; o < outer; o++)                                                   \
            for (long j = 0; j < inner; j++) {                                             \
                U acc = 0;                                                                 \
                for (long t = 0; t < n; t++) {                                             \
                    long i = reverse ? n - 1 - t : t, at = (o * n + i) * inner + j;        \
                    U v = (U)x[at];                                                        \
                    if (exclusive) { y[at] = (T)acc; acc += v; }                           \
                    else { acc += v; y[at] = (T)acc; }                                     \
                }                                                                          \
            }                                                                              \
    }
HETC_INT_BINARY(int64_t, uint64_t)
HETC_INT_BINARY(int32_t, uint32_t)

/* ---- layout ------------------------------------------------------------ */

#define HETC_MAX_RANK 32 /* as hetc/ir/verify.py's MAX_RANK */

/* y = x permuted, sliced or broadcast: y's index (i0..) reads x at
 * sum(i_d * xs[d]) (x's strides along y's axes, in elements: negative for
 * reversed slices, 0 for broadcast axes). Any element size of 1, 2, 4 or 8.
 * Threads take runs of rows; each finds its first row's place with
 * divisions, then steps through the rows' indices (a division per row and
 * one thread cost a transpose of MiniLM's heads, 128 x 12 rows of 32
 * floats, 0.025 ms). */
#define HETC_STRIDED(T)                                                                   \
    static void hetc_strided_##T(T *restrict y, const T *restrict x, int ndim,            \
                                 const long *shape, const long *xs) {                     \
        HETC_ROWS(ndim, shape)                                                            \
        long sx = HETC_STEP(ndim, xs), big = outer_ * inner_ * (long)sizeof(T) >= 65536;  \
        _Pragma("omp parallel if (big)")                                                  \
        {                                                                                 \
            long nt = omp_get_num_threads(), th = omp_get_thread_num();                   \
            long o0 = outer_ * th / nt, o1 = outer_ * (th + 1) / nt;                      \
            long at[HETC_MAX_RANK], ix = 0, rest = o0;                                    \
            for (int d = ndim - 2; d >= 0 && o1 > o0; d--) { /* not for an empty axis */  \
                at[d] = rest % shape[d];                                                  \
                rest /= shape[d];                                                         \
                ix += at[d] * xs[d];                                                      \
            }                                                                             \
            for (long o = o0; o < o1; o++) {                                              \
                if (sx == 1) /* contiguous rows (a transpose of heads): a copy each */    \
                    memcpy(y + o * inner_, x + ix, sizeof(T) * inner_);                   \
                else                                                                      \
                    for (long i = 0; i < inner_; i++) y[o * inner_ + i] = x[ix + i * sx]; \
                for (int d = ndim - 2; d >= 0; d--) { /* the next row's index */          \
                    ix += xs[d];                                                          \
                    if (++at[d] < shape[d]) break;                                        \
                    ix -= shape[d] * xs[d];                                               \
                    at[d] = 0;                                                            \
                }                                                                         \
            }                                                                             \
        }                                                                                 \
    }
HETC_STRIDED(uint8_t)
HETC_STRIDED(uint16_t)
HETC_STRIDED(uint32_t)
HETC_STRIDED(uint64_t)

/* Axes of one element dropped and axes that x walks as one merged into
 * the next (y is row-major): CvT's einsums copied 3136 x 784 values as rows
 * of one element (shape [3136, 784, 1, 1, 1]), 5.2 ms for what one copy
 * does. */
HETC_KERNEL void k_strided(void *y, const void *x, int ndim, const long *shape, const long *xs,
                           int esize) {
    long sh[HETC_MAX_RANK], st[HETC_MAX_RANK];
    int nd = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 1) continue;
        if (nd && st[nd - 1] == shape[d] * xs[d]) { /* the previous axis steps over this one */
            sh[nd - 1] *= shape[d];
            st[nd - 1] = xs[d];
            continue;
        }
        sh[nd] = shape[d];
        st[nd++] = xs[d];
    }
    for (int d = 0; d < ndim; d++)
        if (shape[d] == 0) nd = ndim; /* an empty axis: as it was (nothing to copy) */
    if (nd < ndim) {
        shape = sh;
        xs = st;
        ndim = nd;
    }
    switch (esize) {
    case 1: hetc_strided_uint8_t(y, x, ndim, shape, xs); break;
    case 2: hetc_strided_uint16_t(y, x, ndim, shape, xs); break;
    case 4: hetc_strided_uint32_t(y, x, ndim, shape, xs); break;
    default: hetc_strided_uint64_t(y, x, ndim, shape, xs); break;
    }
}

/* Copies a [outer, rows, inner] block into y at row offset (concat/split along
 * an axis); inner counts bytes. */
HETC_KERNEL void k_copy_block(void *y, long y_rows, long y_off, const void *x, long x_rows,
                              long x_off, long rows, long outer, long inner) {
    for (long o = 0; o < outer; o++)
        memcpy((char *)y + (o * y_rows + y_off) * inner, (const char *)x + (o * x_rows + x_off) * inner,
               rows * inner);
}

/* Index i of an axis of `size` (negative counts from the end), or -1 with a
 * failure recorded when it is out of range. */
static inline long hetc_index(long i, long size, const char *op) {
    if (i < -size || i >= size) {
        hetc_fail("%s: index %ld out of range [%ld, %ld)", op, i, -size, size);
        return -1;
    }
    return i < 0 ? i + size : i;
}

/* y[o, i, :] = x[o, idx[i], :] (gather along an axis; inner in bytes; idx is
 * i64 when wide, else i32). embedding is the case outer = 1. */
HETC_KERNEL void k_gather(void *y, const void *x, const void *idx, int wide, long n_idx, long outer,
                          long size, long inner, const char *op) {
    for (long i = 0; i < n_idx; i++) {
        long j = hetc_index(wide ? (long)((const int64_t *)idx)[i] : (long)((const int32_t *)idx)[i],
                            size, op);
        if (j < 0) return;
        for (long o = 0; o < outer; o++)
            memcpy((char *)y + (o * n_idx + i) * inner, (const char *)x + (o * size + j) * inner,
                   inner);
    }
}

static inline double hetc_load_as_double(const void *x, int t, long i) {
    switch (t) {
    case T_F32: return ((const float *)x)[i];
    case T_I64: return (double)((const int64_t *)x)[i];
    case T_I32: return ((const int32_t *)x)[i];
    default: return ((const uint8_t *)x)[i] != 0;
    }
}

/* Conversions as numpy's astype: floats to integers truncate, anything to
 * bool is != 0; integers convert exactly (i64 -> i32 wraps). */
HETC_KERNEL void k_cast(void *y, int yt, const void *x, int xt, long n) {
    for (long i = 0; i < n; i++) {
        if (xt == T_I64 && yt == T_I32) { ((int32_t *)y)[i] = (int32_t)((const int64_t *)x)[i]; continue; }
        if (xt == T_I64 && yt == T_F32) { ((float *)y)[i] = (float)((const int64_t *)x)[i]; continue; }
        double v = hetc_load_as_double(x, xt, i);
        switch (yt) {
        case T_F32: ((float *)y)[i] = (float)v; break;
        case T_I64: ((int64_t *)y)[i] = xt == T_I64 ? ((const int64_t *)x)[i] : (int64_t)v; break;
        case T_I32: ((int32_t *)y)[i] = (int32_t)v; break;
        default: ((uint8_t *)y)[i] = v != 0; break;
        }
    }
}

/* Comparisons of any two numeric operands (compared as doubles: exact for
 * f32, i32 and i64 up to 2^53), broadcasting, into bool. */
HETC_KERNEL void k_compare(int op, uint8_t *y, const void *a, int at, const void *b, int bt, int ndim,
                           const long *shape, const long *sa, const long *sb) {
    HETC_ROWS(ndim, shape)
    long xa = HETC_STEP(ndim, sa), xb = HETC_STEP(ndim, sb);
    for (long o = 0; o < outer_; o++) {
        long ia = HETC_ROW(o, ndim, shape, sa), ib = HETC_ROW(o, ndim, shape, sb);
        for (long i = 0; i < inner_; i++) {
            double p = hetc_load_as_double(a, at, ia + i * xa),
                   q = hetc_load_as_double(b, bt, ib + i * xb);
            y[o * inner_ + i] = (uint8_t)(op == C_EQ ? p == q : op == C_LT ? p < q
                                          : op == C_GT ? p > q : op == C_LE ? p <= q : p >= q);
        }
    }
}

/* y = c ? a : b, broadcasting all three, elements of esize bytes. */
HETC_KERNEL void k_where(void *y, const uint8_t *c, const void *a, const void *b, int ndim,
                         const long *shape, const long *sc, const long *sa, const long *sb, int esize) {
    HETC_ROWS(ndim, shape)
    long xc = HETC_STEP(ndim, sc), xa = HETC_STEP(ndim, sa), xb = HETC_STEP(ndim, sb);
    for (long o = 0; o < outer_; o++) {
        long ic = HETC_ROW(o, ndim, shape, sc), ia = HETC_ROW(o, ndim, shape, sa),
             ib = HETC_ROW(o, ndim, shape, sb);
        for (long i = 0; i < inner_; i++) {
            const char *src = c[ic + i * xc] ? (const char *)a + (ia + i * xa) * esize
                                             : (const char *)b + (ib + i * xb) * esize;
            memcpy((char *)y + (o * inner_ + i) * esize, src, esize);
        }
    }
}

/* Logical ops on bool (one byte, 0 or 1), broadcasting as k_binary does. */
HETC_KERNEL void k_logical(int op, uint8_t *y, const uint8_t *a, const uint8_t *b, int ndim,
                           const long *shape, const long *sa, const long *sb) {
    HETC_ROWS(ndim, shape)
    long xa = HETC_STEP(ndim, sa), xb = HETC_STEP(ndim, sb);
    for (long o = 0; o < outer_; o++) {
        const uint8_t *pa = a + HETC_ROW(o, ndim, shape, sa), *pb = b + HETC_ROW(o, ndim, shape, sb);
        uint8_t *py = y + o * inner_;
        for (long i = 0; i < inner_; i++) {
            int p = pa[i * xa] != 0, q = pb[i * xb] != 0;
            py[i] = (uint8_t)(op == L_AND ? p && q : op == L_OR ? p || q : p != q);
        }
    }
}

HETC_KERNEL void k_logical_not(uint8_t *y, const uint8_t *x, long n) {
    for (long i = 0; i < n; i++) y[i] = !x[i];
}

/* isnan (pos = neg = -1) or isinf with the signs asked for, into bool. */
HETC_KERNEL void k_float_test(uint8_t *y, const float *x, long n, int pos, int neg) {
    for (long i = 0; i < n; i++)
        y[i] = (uint8_t)(pos < 0 ? isnan(x[i]) : (isinf(x[i]) && (x[i] > 0 ? pos : neg)));
}

/* Index (i64) of the first (or, with last, the last) maximum (or minimum) along
 * the middle axis of [outer, n, inner]; nan counts as the extreme. */
HETC_KERNEL void k_arg_reduce(int64_t *y, const float *x, long outer, long n, long inner, int max,
                              int last) {
    for (long o = 0; o < outer; o++)
        for (long j = 0; j < inner; j++) {
            const float *px = x + o * n * inner + j;
            long best = -1, nan_at = -1;
            for (long i = 0; i < n; i++) {
                float v = px[i * inner];
                if (isnan(v)) {
                    if (nan_at < 0 || last) nan_at = i;
                } else if (best < 0 || (max ? v > px[best * inner] : v < px[best * inner]) ||
                           (last && v == px[best * inner])) {
                    best = i;
                }
            }
            if (nan_at >= 0) best = nan_at;
            y[o * inner + j] = best;
        }
}

/* topk along the middle axis of [outer, n, inner]: the k largest (smallest
 * unless `largest`) of each line with their i64 indices, in order, ties to the
 * lower index, NaN above every number. Each line's elements are inserted in
 * index order into its sorted k outputs: a later element passes only those it
 * is strictly better than, so equal ones keep index order (O(n * k), for the
 * small k of routers and samplers). */
#define HETC_BETTER_FLOAT(a, b, largest)                                                  \
    ((largest) ? ((a) > (b) || (isnan(a) && !isnan(b)))                                   \
               : ((a) < (b) || (isnan(b) && !isnan(a))))
#define HETC_BETTER_INT(a, b, largest) ((largest) ? (a) > (b) : (a) < (b))
#define HETC_TOPK(NAME, T, BETTER)                                                         \
    HETC_KERNEL void NAME(T *y, int64_t *iy, const T *x, long outer, long n, long inner,   \
                          long k, int largest) {                                           \
        for (long o = 0; o < outer; o++)                                                   \
            for (long j = 0; j < inner; j++) {                                             \
                const T *px = x + o * n * inner + j;                                       \
                T *py = y + o * k * inner + j;                                             \
                int64_t *pi = iy + o * k * inner + j;                                      \
                long held = 0;                                                             \
                for (long i = 0; i < n && k > 0; i++) {                                    \
                    T v = px[i * inner];                                                   \
                    if (held == k && !BETTER(v, py[(k - 1) * inner], largest)) continue;   \
                    long p = held < k ? held++ : k - 1;                                    \
                    for (; p > 0 && BETTER(v, py[(p - 1) * inner], largest); p--) {        \
                        py[p * inner] = py[(p - 1) * inner];                               \
                        pi[p * inner] = pi[(p - 1) * inner];                               \
                    }                                                                      \
                    py[p * inner] = v;                                                     \
                    pi[p * inner] = i;                                                     \
                }                                                                          \
            }                                                                              \
    }
HETC_TOPK(k_topk, float, HETC_BETTER_FLOAT)
HETC_TOPK(k_topk_int64_t, int64_t, HETC_BETTER_INT)
HETC_TOPK(k_topk_int32_t, int32_t, HETC_BETTER_INT)

/* cumsum along the middle axis of [outer, n, inner] (f32 sums, in order). */
HETC_KERNEL void k_cumsum(float *y, const float *x, long outer, long n, long inner, int exclusive,
                          int reverse) {
    for (long o = 0; o < outer; o++)
        for (long j = 0; j < inner; j++) {
            float acc = 0.f;
            for (long t = 0; t < n; t++) {
                long i = reverse ? n - 1 - t : t, at = (o * n + i) * inner + j;
                float v = x[at];
                if (exclusive) { y[at] = acc; acc += v; }
                else { acc += v; y[at] = acc; }
            }
        }
}

/* y[i] = x at i's coordinates with the axis one replaced by idx[i] (gather_elements;
 * idx has y's shape, x's strides are xs, any element size). */
HETC_KERNEL void k_gather_elements(void *y, const void *x, const void *idx, int wide, int ndim,
                                   const long *shape, const long *xs, int axis, long size, int esize) {
    long n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    for (long i = 0; i < n; i++) {
        long rem = i, off = 0;
        for (int d = ndim - 1; d >= 0; d--) {
            long c = rem % shape[d];
            rem /= shape[d];
            if (d != axis) off += c * xs[d];
        }
        long j = hetc_index(wide ? (long)((const int64_t *)idx)[i] : (long)((const int32_t *)idx)[i],
                            size, "gather_elements");
        if (j < 0) return;
        memcpy((char *)y + i * esize, (const char *)x + (off + j * xs[axis]) * esize, esize);
    }
}

/* Constant padding whose last axis is contiguous in x: a row at a time,
 * the value either side of one copy (an index computation per element cost
 * 12 ns an element). */
static void hetc_pad_rows(char *y, const char *x, int ndim, const long *yshape, const long *xs,
                          const long *grow, const long *crop, const long *n, const void *value,
                          int esize) {
    long L = yshape[ndim - 1], rows = 1, g = grow[ndim - 1], c = crop[ndim - 1];
    long keep = n[ndim - 1] < L - g ? n[ndim - 1] : L - g; /* x's columns the row holds */
    for (int d = 0; d < ndim - 1; d++) rows *= yshape[d];
    #pragma omp parallel for schedule(static) if (rows * L > 65536)
    for (long r = 0; r < rows; r++) {
        char *row = y + r * L * esize;
        long rem = r, off = 0;
        int outside = 0;
        for (int d = ndim - 2; d >= 0; d--) {
            long j = rem % yshape[d] - grow[d];
            rem /= yshape[d];
            if (j < 0 || j >= n[d]) outside = 1;
            off += (j + crop[d]) * xs[d];
        }
        long lo = outside ? L : g < L ? g : L, hi = outside ? L : lo + (keep > 0 ? keep : 0);
        for (long i = 0; i < lo; i++) memcpy(row + i * esize, value, esize);
        if (hi > lo) memcpy(row + lo * esize, x + (off + c) * esize, (hi - lo) * esize);
        for (long i = hi; i < L; i++) memcpy(row + i * esize, value, esize);
    }
}

/* pad: output coordinate i of an axis reads cropped coordinate i - grow[d]
 * (the axis cropped by crop[d] in front to n[d] cells), mapped back inside by
 * the mode, or is `value` (esize bytes) in constant mode. */
HETC_KERNEL void k_pad(void *y, const void *x, int ndim, const long *yshape, const long *xs,
                       const long *grow, const long *crop, const long *n, int mode, const void *value,
                       int esize) {
    if (mode == P_CONSTANT && ndim >= 1 && xs[ndim - 1] == 1) {
        hetc_pad_rows(y, x, ndim, yshape, xs, grow, crop, n, value, esize);
        return;
    }
    long total = 1;
    for (int d = 0; d < ndim; d++) total *= yshape[d];
    for (long i = 0; i < total; i++) {
        long rem = i, off = 0;
        int outside = 0;
        for (int d = ndim - 1; d >= 0; d--) {
            long j = rem % yshape[d] - grow[d];
            rem /= yshape[d];
            if (j < 0 || j >= n[d]) {
                if (mode == P_CONSTANT) { outside = 1; break; }
                if (mode == P_EDGE) j = j < 0 ? 0 : n[d] - 1;
                else if (mode == P_WRAP) j = ((j % n[d]) + n[d]) % n[d];
                else if (n[d] == 1) j = 0;
                else while (j < 0 || j >= n[d]) j = j < 0 ? -j : 2 * (n[d] - 1) - j;
            }
            off += (j + crop[d]) * xs[d];
        }
        memcpy((char *)y + i * esize, outside ? value : (const char *)x + off * esize, esize);
    }
}

/* A bool mask as an additive one: 0 where true, -inf where false. */
HETC_KERNEL void k_mask_additive(float *y, const uint8_t *m, long n) {
    for (long i = 0; i < n; i++) y[i] = m[i] ? 0.f : -INFINITY;
}

/* k_reduce where the last kept axis is contiguous in x (a reduction over
 * the leading axes: ConvNeXt V2's global response norm sums 56 x 56
 * positions for each of 384 channels): blocks of 64 outputs along it, the
 * reduced positions outer and one contiguous run of 64 inputs inner, so
 * the loop over the block vectorizes. Each output still sums its inputs in
 * the same order in double (the same numbers as the one-output loop); the
 * one-output loop, its inputs 384 floats apart, took 4.1 ms there. */
#define HETC_REDUCE_BLOCK 64
HETC_CLONES
static void hetc_reduce_rows(int op, float *y, const float *x, int nk, const long *ks,
                             const long *kx, int nr, const long *rs, const long *rx, long nred) {
    long L = ks[nk - 1], groups = 1, blocks = (L + HETC_REDUCE_BLOCK - 1) / HETC_REDUCE_BLOCK;
    for (int d = 0; d < nk - 1; d++) groups *= ks[d];
    double init = op == R_PROD ? 1.0 : op == R_MAX ? -INFINITY : op == R_MIN ? INFINITY : 0.0;
    #pragma omp parallel for collapse(2) schedule(static) if (groups * L * nred > 65536)
    for (long g = 0; g < groups; g++)
        for (long bk = 0; bk < blocks; bk++) {
            long c0 = bk * HETC_REDUCE_BLOCK, n = L - c0 < HETC_REDUCE_BLOCK ? L - c0
                                                                             : HETC_REDUCE_BLOCK;
            const float *xg = x + hetc_bcast(g, nk - 1, ks, kx) + c0;
            double acc[HETC_REDUCE_BLOCK];
            for (long c = 0; c < n; c++) acc[c] = init;
            for (long r = 0; r < nred; r++) {
                const float *p = xg + hetc_bcast(r, nr, rs, rx);
                if (op == R_SUM || op == R_MEAN) {
                    #pragma omp simd
                    for (long c = 0; c < n; c++) acc[c] += p[c];
                } else if (op == R_PROD) {
                    #pragma omp simd
                    for (long c = 0; c < n; c++) acc[c] *= p[c];
                } else if (op == R_MAX) {
                    #pragma omp simd
                    for (long c = 0; c < n; c++) {
                        double v = p[c];
                        acc[c] = v > acc[c] || v != v ? v : acc[c];
                    }
                } else {
                    #pragma omp simd
                    for (long c = 0; c < n; c++) {
                        double v = p[c];
                        acc[c] = v < acc[c] || v != v ? v : acc[c];
                    }
                }
            }
            float *yg = y + g * L + c0;
            for (long c = 0; c < n; c++)
                yg[c] = (float)(op == R_MEAN ? (nred ? acc[c] / nred : NAN) : acc[c]);
        }
}

/* y[o] = reduce over r of x[base(o) + off(r)]: kept axes (shape ks, x strides
 * kx) index the output, reduced axes (shape rs, strides rx) are folded.
 * Accumulates in double; an empty reduction gives the identity (mean: nan). */
HETC_KERNEL void k_reduce(int op, float *y, const float *x, int nk, const long *ks, const long *kx,
                          int nr, const long *rs, const long *rx) {
    long no = 1, nred = 1;
    for (int d = 0; d < nk; d++) no *= ks[d];
    for (int d = 0; d < nr; d++) nred *= rs[d];
    if (nk >= 1 && kx[nk - 1] == 1 && ks[nk - 1] >= 16 && nred >= 2) {
        hetc_reduce_rows(op, y, x, nk, ks, kx, nr, rs, rx, nred);
        return;
    }
    #pragma omp parallel for schedule(static) if (no * nred > 65536)
    for (long o = 0; o < no; o++) {
        long base = hetc_bcast(o, nk, ks, kx);
        double acc = op == R_PROD ? 1.0 : op == R_MAX ? -INFINITY : op == R_MIN ? INFINITY : 0.0;
        for (long r = 0; r < nred; r++) {
            double v = x[base + hetc_bcast(r, nr, rs, rx)];
            if (op == R_SUM || op == R_MEAN) acc += v;
            else if (op == R_PROD) acc *= v;
            else if (op == R_MAX) acc = v > acc || isnan(v) ? v : acc;
            else acc = v < acc || isnan(v) ? v : acc;
        }
        y[o] = (float)(op == R_MEAN ? (nred ? acc / nred : NAN) : acc);
    }
}

/* ---- normalization ----------------------------------------------------- */

/* softmax (log: log-softmax) of one contiguous row of n values, 16 lanes at
 * a time: hetc_exp512 gives hetc_expf's values; the sum is taken in 16
 * lanes, then across them. */
__attribute__((target("avx512f")))
static void hetc_softmax_row_avx512(float *py, const float *px, long n, int log) {
    __m512 mv = _mm512_set1_ps(-INFINITY);
    for (long i = 0; i < n; i += 16) /* NaN skipped, as the scalar loop's compare does */
        mv = _mm512_max_ps(_mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), hetc_rows16(n - i),
                                                px + i), mv);
    float m = _mm512_reduce_max_ps(mv);
    if (m == -INFINITY) m = 0.f;
    const __m512 mm = _mm512_set1_ps(m);
    __m512 sv = _mm512_setzero_ps();
    for (long i = 0; i < n; i += 16) {
        __mmask16 k = hetc_rows16(n - i);
        __m512 e = hetc_exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, px + i), mm));
        sv = _mm512_mask_add_ps(sv, k, sv, e);
        if (!log) _mm512_mask_storeu_ps(py + i, k, e);
    }
    float s = _mm512_reduce_add_ps(sv);
    const __m512 ss = _mm512_set1_ps(log ? logf(s) : s);
    for (long i = 0; i < n; i += 16) {
        __mmask16 k = hetc_rows16(n - i);
        if (log)
            _mm512_mask_storeu_ps(py + i, k, _mm512_sub_ps(_mm512_sub_ps(
                                                 _mm512_maskz_loadu_ps(k, px + i), mm), ss));
        else
            _mm512_mask_storeu_ps(py + i, k, _mm512_div_ps(_mm512_maskz_loadu_ps(k, py + i), ss));
    }
}

/* softmax (or log_softmax) over the middle axis of [outer, n, inner]; a row
 * whose max is -inf subtracts nothing (as the interpreter does); a nan or
 * +inf makes its row nan. Rows on both threads from 64K values (CvT's
 * written-out attention: 3136 rows of 784 scores took 8.4 ms in the scalar
 * loop, on one thread). */
HETC_CLONES
HETC_KERNEL void k_softmax(float *y, const float *x, long outer, long n, long inner, int log) {
    #pragma omp parallel for collapse(2) schedule(static) if (outer * n * inner > 65536)
    for (long o = 0; o < outer; o++)
        for (long j = 0; j < inner; j++) {
            if (inner == 1 && hetc_avx512) {
                hetc_softmax_row_avx512(y + o * n, x + o * n, n, log);
                continue;
            }
            const float *px = x + o * n * inner + j;
            float *py = y + o * n * inner + j, m = -INFINITY, s = 0.f;
            for (long i = 0; i < n; i++) m = px[i * inner] > m ? px[i * inner] : m;
            if (m == -INFINITY) m = 0.f;
            if (log) {
                for (long i = 0; i < n; i++) s += hetc_expf(px[i * inner] - m);
                float ls = logf(s);
                for (long i = 0; i < n; i++) py[i * inner] = px[i * inner] - m - ls;
                continue;
            }
            for (long i = 0; i < n; i++) { py[i * inner] = hetc_expf(px[i * inner] - m); s += py[i * inner]; }
            for (long i = 0; i < n; i++) py[i * inner] /= s;
        }
}

/* layer_norm (rms = 0) or rms_norm (rms = 1) over the last n values of each row. */
HETC_CLONES
HETC_KERNEL void k_norm(float *y, const float *x, const float *w, const float *b, long rows, long n,
                        float eps, int rms) {
    /* sums in double, vectorized (omp simd: their order is free) */
    #pragma omp parallel for schedule(static) if (rows * n > 32768)
    for (long r = 0; r < rows; r++) {
        const float *px = x + r * n;
        float *py = y + r * n;
        double mean = 0.0, var = 0.0;
        if (!rms) {
            #pragma omp simd reduction(+:mean)
            for (long i = 0; i < n; i++) mean += px[i];
            mean /= n;
        }
        #pragma omp simd reduction(+:var)
        for (long i = 0; i < n; i++) { double d = px[i] - mean; var += d * d; }
        float inv = 1.f / sqrtf((float)(var / n) + eps), mu = (float)mean;
        for (long i = 0; i < n; i++) {
            float v = (px[i] - mu) * inv;
            if (w) v *= w[i];
            if (b) v += b[i];
            py[i] = v;
        }
    }
}

/* batch_norm in inference form on NC(spatial) data: y = x * k[c] + d[c]. */
HETC_KERNEL void k_channel_affine(float *y, const float *x, const float *k, const float *d, long n,
                                  long c, long spatial) {
    for (long i = 0; i < n; i++)
        for (long j = 0; j < c; j++) {
            const float *px = x + (i * c + j) * spatial;
            float *py = y + (i * c + j) * spatial;
            for (long s = 0; s < spatial; s++) py[s] = px[s] * k[j] + d[j];
        }
}

/* ---- matrix products --------------------------------------------------- */

/* Whether a linear layer of M tokens is worth both threads: a large weight
 * (the rule at batch 1), or much work (ConvNeXt's 3136 x 96 -> 384 layers
 * ran on one thread by the weight alone). */
static inline int hetc_linear_threads(long M, long N, long K) {
    return N * K > 65536 || M * N * K > (1L << 22);
}

/* y[M,N] = x[M,K] . w[N,K]^T (+ b), f32 weights. */
HETC_CLONES
HETC_KERNEL void k_linear_f32(float *restrict y, const float *restrict x, const float *restrict w,
                              const float *b, long M, long N, long K) {
    #pragma omp parallel for schedule(static) if (hetc_linear_threads(M, N, K))
    for (long n = 0; n < N; n++) {
        const float *pw = w + n * K;
        for (long m = 0; m < M; m++) {
            const float *px = x + m * K;
            float acc = 0.f;
            #pragma omp simd reduction(+:acc)
            for (long k = 0; k < K; k++) acc += px[k] * pw[k];
            y[m * N + n] = acc + (b ? b[n] : 0.f);
        }
    }
}

/* ---- integer weights x float activations (weight-only) ------------------ *
 * Group-wise symmetric codes, w[n,k] = c[n,k] * scale[n, k / G], in blocks of
 * 16 rows (zero rows pad the last), k-major like the float panels: int8 block
 * step k is 16 bytes, byte l = c[16b + l, k]; int4 step j holds k = 2j and
 * 2j + 1, byte l = (c[16b + l, 2j] + 8) | (c[16b + l, 2j + 1] + 8) << 4. Scales:
 * per block and group, 16 f32 lanes. So one 16-byte load gives a 16-row
 * vector of weights for one k (two for int4), multiplied by the broadcast
 * activation of each token: no horizontal sums, each code decoded once per
 * pass of 8 tokens. */
static void hetc_linear_q_portable(float *restrict y, const float *restrict x,
                                   const uint8_t *restrict codes, const float *restrict scale,
                                   const float *b, long M, long N, long K, long G, int bits) {
    long groups = K / G, blocks = (N + 15) / 16, step_bytes = bits == 8 ? 16 : 8;
    #pragma omp parallel for schedule(static) if (hetc_linear_threads(M, N, K))
    for (long blk = 0; blk < blocks; blk++) {
        const uint8_t *pc = codes + blk * K * step_bytes;
        for (long m = 0; m < M; m++) {
            float acc[16] = {0};
            for (long g = 0; g < groups; g++) {
                float gacc[16] = {0};
                for (long k = g * G; k < (g + 1) * G; k++) {
                    float xv = x[m * K + k];
                    for (int l = 0; l < 16; l++) {
                        int c = bits == 8 ? (int8_t)pc[k * 16 + l]
                                          : ((pc[k / 2 * 16 + l] >> (4 * (k % 2))) & 15) - 8;
                        gacc[l] += xv * (float)c;
                    }
                }
                const float *sv = scale + (blk * groups + g) * 16;
                for (int l = 0; l < 16; l++) acc[l] += gacc[l] * sv[l];
            }
            for (int l = 0; l < 16 && blk * 16 + l < N; l++)
                y[m * N + blk * 16 + l] = acc[l] + (b ? b[blk * 16 + l] : 0.f);
        }
    }
}

/* Every token of one tiled kernel: passes of 8 tokens, then 4, 2 and 1, so
 * T is a constant in each call and the register tile fixed after inlining.
 * TILE is called as TILE(args..., m0, T). */
#define HETC_TOKEN_PASSES(M, TILE, ...)                                                   \
    do {                                                                                 \
        long m0_ = 0;                                                                    \
        for (; m0_ + 8 <= (M); m0_ += 8) TILE(__VA_ARGS__, m0_, 8);                      \
        if ((M) - m0_ >= 4) { TILE(__VA_ARGS__, m0_, 4); m0_ += 4; }                     \
        if ((M) - m0_ >= 2) { TILE(__VA_ARGS__, m0_, 2); m0_ += 2; }                     \
        if ((M) - m0_ >= 1) TILE(__VA_ARGS__, m0_, 1);                                   \
    } while (0)

/* The int4 codes' values, which vpermps picks by a nibble (an index's low 4 bits). */
#define HETC_INT4_VALUES _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7)

/* Codes are prefetched this many steps ahead: the hardware prefetcher left
 * the decoding waiting on memory (4096x11008 batch 1, one process: int4
 * 0.84 -> 0.74 ms, int8 1.41 -> 0.91; 32 to 4096 steps ahead measured). */
#define HETC_Q_AHEAD 512

/* T tokens (a constant after inlining) of one 16-row block. int8: a step's
 * 16 codes widened to floats. int4: a 16-byte load widened to 16 lanes
 * indexes, with vpermps (which reads only an index's low 4 bits), the values
 * -8..7 by its low nibbles (k) and, shifted, by its high ones (k + 1): 32
 * weights in 4 instructions. Sums per group, scaled by the rows' scales. */
__attribute__((target("avx512f,avx512bw"), always_inline))
static inline void hetc_q_block_tile(float *restrict y, const float *restrict x,
                                     const uint8_t *blkc, const float *sblk, const float *b,
                                     long n0, long N, long K, long G, const int bits, long m0,
                                     const int T) {
    const __m512 codes4 = HETC_INT4_VALUES;
    const float *xt = x + m0 * K;
    __m512 acc[8];
    for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    for (long g0 = 0; g0 < K; g0 += G) {
        /* CH independent sums per token (few tokens: one sum would wait on
         * the FMA latency at every step), added up at the group's end */
        const int CH = T <= 2 ? 4 : T <= 4 ? 2 : 1;
        __m512 ch[4][8], gacc[8];
        for (int c = 0; c < CH; c++)
            for (int t = 0; t < T; t++) ch[c][t] = _mm512_setzero_ps();
        long k = g0;
        if (bits == 4) {
            for (; k < g0 + G; k += 2 * CH) /* chain c takes k + 2c and k + 2c + 1 */
                for (int c = 0; c < CH; c++) {
                    long kk = k + 2 * c;
                    if (kk >= g0 + G) break;
                    if ((kk & 7) == 0) /* a line of codes per 8 steps */
                        _mm_prefetch((const char *)(blkc + (kk + HETC_Q_AHEAD) * 8), _MM_HINT_T0);
                    __m512i idx = _mm512_cvtepu8_epi32(
                        _mm_loadu_si128((const __m128i *)(blkc + kk * 8)));
                    __m512 w0 = _mm512_permutexvar_ps(idx, codes4);
                    __m512 w1 = _mm512_permutexvar_ps(_mm512_srli_epi32(idx, 4), codes4);
                    for (int t = 0; t < T; t++) {
                        ch[c][t] = _mm512_fmadd_ps(_mm512_set1_ps(xt[t * K + kk]), w0, ch[c][t]);
                        ch[c][t] = _mm512_fmadd_ps(_mm512_set1_ps(xt[t * K + kk + 1]), w1,
                                                   ch[c][t]);
                    }
                }
        } else {
            for (; k < g0 + G; k += CH)
                for (int c = 0; c < CH; c++) {
                    long kk = k + c;
                    if (kk >= g0 + G) break;
                    if ((kk & 3) == 0) /* a line of codes per 4 steps */
                        _mm_prefetch((const char *)(blkc + (kk + HETC_Q_AHEAD) * 16), _MM_HINT_T0);
                    __m512 w = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
                        _mm_loadu_si128((const __m128i *)(blkc + kk * 16))));
                    for (int t = 0; t < T; t++)
                        ch[c][t] = _mm512_fmadd_ps(_mm512_set1_ps(xt[t * K + kk]), w, ch[c][t]);
                }
        }
        for (int t = 0; t < T; t++) {
            gacc[t] = ch[0][t];
            for (int c = 1; c < CH; c++) gacc[t] = _mm512_add_ps(gacc[t], ch[c][t]);
        }
        __m512 sv = _mm512_loadu_ps(sblk + g0 / G * 16);
        for (int t = 0; t < T; t++) acc[t] = _mm512_fmadd_ps(gacc[t], sv, acc[t]);
    }
    __mmask16 keep = hetc_rows16(N - n0);
    __m512 bias = b ? _mm512_maskz_loadu_ps(keep, b + n0) : _mm512_setzero_ps();
    for (int t = 0; t < T; t++)
        _mm512_mask_storeu_ps(y + (m0 + t) * N + n0, keep, _mm512_add_ps(acc[t], bias));
}

__attribute__((target("avx512f,avx512bw")))
static void hetc_linear_q_avx512(float *restrict y, const float *restrict x,
                                 const uint8_t *restrict codes, const float *restrict scale,
                                 const float *b, long M, long N, long K, long G, int bits) {
    long groups = K / G, blocks = (N + 15) / 16, step_bytes = bits == 8 ? 16 : 8;
    #pragma omp parallel for schedule(static) if (hetc_linear_threads(M, N, K))
    for (long blk = 0; blk < blocks; blk++) {
        const uint8_t *blkc = codes + blk * K * step_bytes;
        const float *sblk = scale + blk * groups * 16;
        if (bits == 8)
            HETC_TOKEN_PASSES(M, hetc_q_block_tile, y, x, blkc, sblk, b, blk * 16, N, K, G, 8);
        else
            HETC_TOKEN_PASSES(M, hetc_q_block_tile, y, x, blkc, sblk, b, blk * 16, N, K, G, 4);
    }
}

/* y[B,M,N] = a[B,M,K] . b[B,K,N] with batch strides (0: broadcast), both
 * operands computed at run time (attention written out, einsum). AVX-512:
 * a tile is T rows of a (8, 4, 2 or 1) x 48 columns in 3 vectors of b's
 * rows, read in place (b's row k holds the tile's 48 weights side by side,
 * the float panels' layout without packing), a's values broadcast, one
 * FMA chain per output over k in order, as the plain loop sums; tasks are
 * (batch, 64 rows, 48 columns) on both threads. CvT's 3136 x 64 x 784
 * attention products took 6.7-7.1 ms in the plain loop, on one thread. */
__attribute__((target("avx512f"), always_inline))
static inline void hetc_mm_tile(float *restrict y, const float *restrict a,
                                const float *restrict b, long N, long K, long n0, long m0,
                                const int T) {
    __m512 acc[8][3];
    __mmask16 mk[3];
    for (int q = 0; q < 3; q++) {
        long left = N - n0 - 16 * q;
        mk[q] = left > 0 ? hetc_rows16(left) : 0;
        for (int t = 0; t < T; t++) acc[t][q] = _mm512_setzero_ps();
    }
    const float *at = a + m0 * K;
    for (long k = 0; k < K; k++) {
        __m512 wv[3];
        for (int q = 0; q < 3; q++) wv[q] = _mm512_maskz_loadu_ps(mk[q], b + k * N + n0 + 16 * q);
        for (int t = 0; t < T; t++) {
            __m512 xb = _mm512_set1_ps(at[t * K + k]);
            for (int q = 0; q < 3; q++) acc[t][q] = _mm512_fmadd_ps(xb, wv[q], acc[t][q]);
        }
    }
    for (int t = 0; t < T; t++)
        for (int q = 0; q < 3; q++)
            _mm512_mask_storeu_ps(y + (m0 + t) * N + n0 + 16 * q, mk[q], acc[t][q]);
}

#define HETC_MM_ROWS 64

__attribute__((target("avx512f")))
static void hetc_matmul_avx512(float *restrict y, const float *a, const float *b, long B, long M,
                               long N, long K, long as, long bs) {
    long chunks = (M + HETC_MM_ROWS - 1) / HETC_MM_ROWS, groups = (N + 47) / 48;
    #pragma omp parallel for collapse(3) schedule(static) if (B * M * N * K > (1L << 22))
    for (long i = 0; i < B; i++)
        for (long c = 0; c < chunks; c++)
            for (long g = 0; g < groups; g++) {
                long m0 = c * HETC_MM_ROWS, rows = M - m0 < HETC_MM_ROWS ? M - m0 : HETC_MM_ROWS;
                float *py = y + i * M * N + m0 * N;
                const float *pa = a + i * as + m0 * K, *pb = b + i * bs;
                HETC_TOKEN_PASSES(rows, hetc_mm_tile, py, pa, pb, N, K, g * 48);
            }
}

HETC_CLONES
static void hetc_matmul_portable(float *restrict y, const float *a, const float *b, long B,
                                 long M, long N, long K, long as, long bs) {
    for (long i = 0; i < B; i++) {
        const float *pa = a + i * as, *pb = b + i * bs;
        float *py = y + i * M * N;
        for (long m = 0; m < M; m++) {
            float *row = py + m * N;
            for (long n = 0; n < N; n++) row[n] = 0.f;
            for (long k = 0; k < K; k++) {
                float v = pa[m * K + k];
                const float *pbk = pb + k * N;
                for (long n = 0; n < N; n++) row[n] += v * pbk[n];
            }
        }
    }
}

HETC_KERNEL void k_matmul(float *restrict y, const float *a, const float *b, long B, long M, long N,
                          long K, long as, long bs) {
    if (hetc_avx512)
        hetc_matmul_avx512(y, a, b, B, M, N, K, as, bs);
    else
        hetc_matmul_portable(y, a, b, B, M, N, K, as, bs);
}

/* Attention's two products for one query on AVX-512: scores p[0, upto) (a
 * multiple of 16, <= Sp) from the keys transposed to [D][Sp] (Sp: S rounded
 * up to 16, zeros after S),
 * 64 keys in registers across the features; and out[0, Dv) = sum_s p[s]
 * v_s over the two segments, Dv <= 64 in registers across the keys. */
__attribute__((target("avx512f")))
static void hetc_scores_avx512(float *p, const float *ql, const float *kt, long Sp, long D,
                               long upto) {
    long s0 = 0;
    for (; s0 + 64 <= upto; s0 += 64) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (long d = 0; d < D; d++) {
            __m512 qd = _mm512_set1_ps(ql[d]);
            const float *kd = kt + d * Sp + s0;
            a0 = _mm512_fmadd_ps(qd, _mm512_loadu_ps(kd), a0);
            a1 = _mm512_fmadd_ps(qd, _mm512_loadu_ps(kd + 16), a1);
            a2 = _mm512_fmadd_ps(qd, _mm512_loadu_ps(kd + 32), a2);
            a3 = _mm512_fmadd_ps(qd, _mm512_loadu_ps(kd + 48), a3);
        }
        _mm512_storeu_ps(p + s0, a0);
        _mm512_storeu_ps(p + s0 + 16, a1);
        _mm512_storeu_ps(p + s0 + 32, a2);
        _mm512_storeu_ps(p + s0 + 48, a3);
    }
    for (; s0 < upto; s0 += 16) {
        __m512 a = _mm512_setzero_ps();
        for (long d = 0; d < D; d++)
            a = _mm512_fmadd_ps(_mm512_set1_ps(ql[d]), _mm512_loadu_ps(kt + d * Sp + s0), a);
        _mm512_storeu_ps(p + s0, a);
    }
}

/* A query's softmax numerators in place on AVX-512: scores scaled, keys from
 * `visible` on masked (causal), the additive mask row added; returns their
 * sum and the max in *m (-inf: every key masked). NaN scores are skipped
 * by the max, as the portable loop does (vmaxps gives its second operand). */
__attribute__((target("avx512f")))
static float hetc_softmax_avx512(float *p, long S, float scale, long visible, const float *mrow,
                                 float *m_out) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    __m512 vm = ninf;
    for (long s0 = 0; s0 < S; s0 += 16) {
        __mmask16 in = hetc_rows16(S - s0);
        __mmask16 vis = visible > s0 ? hetc_rows16(visible - s0) : 0;
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(in, p + s0), _mm512_set1_ps(scale));
        v = _mm512_mask_mov_ps(ninf, vis, v);
        if (mrow) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(in, mrow + s0));
        _mm512_mask_storeu_ps(p + s0, in, v);
        vm = _mm512_mask_max_ps(vm, in, v, vm);
    }
    float m = _mm512_reduce_max_ps(vm);
    *m_out = m;
    if (m == -INFINITY) return 0.f;
    __m512 acc = _mm512_setzero_ps(), vmax = _mm512_set1_ps(m), low = _mm512_set1_ps(-87.f);
    for (long s0 = 0; s0 < S; s0 += 16) {
        __mmask16 in = hetc_rows16(S - s0);
        /* below e^-87 a numerator is 0, not a subnormal: each subnormal
         * result took a microcode assist (over half of a 512-token causal
         * softmax's time), and beside the maximum's 1 it adds nothing to
         * the sum or the output in f32 (NaN kept: vmaxps gives d) */
        __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(in, p + s0), vmax);
        __m512 e = hetc_exp512(_mm512_max_ps(low, d));
        e = _mm512_mask_mov_ps(e, _mm512_cmp_ps_mask(d, low, _CMP_LT_OQ), _mm512_setzero_ps());
        _mm512_mask_storeu_ps(p + s0, in, e);
        acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(in, e));
    }
    return _mm512_reduce_add_ps(acc);
}

__attribute__((target("avx512f"), always_inline))
static inline void hetc_weighted_nv(float *out, const float *p, const float *vb0, long S0,
                                    const float *vb1, long S1, long Dv, float inv, const int nv) {
    __m512 a[4];
    __mmask16 m[4];
    for (int j = 0; j < nv; j++) {
        a[j] = _mm512_setzero_ps();
        m[j] = Dv > 16 * j ? hetc_rows16(Dv - 16 * j) : 0;
    }
    for (int seg = 0; seg < 2; seg++) {
        const float *vb = seg ? vb1 : vb0, *ps = seg ? p + S0 : p;
        long n = seg ? S1 : S0;
        for (long s = 0; s < n; s++) {
            __m512 w = _mm512_set1_ps(ps[s]);
            const float *vr = vb + s * Dv;
            for (int j = 0; j < nv; j++)
                a[j] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(m[j], vr + 16 * j), a[j]);
        }
    }
    for (int j = 0; j < nv; j++)
        _mm512_mask_storeu_ps(out + 16 * j, m[j], _mm512_mul_ps(a[j], _mm512_set1_ps(inv)));
}

/* (value vectors: a constant count after inlining, so the accumulators stay
 * in registers) */
__attribute__((target("avx512f")))
static void hetc_weighted_avx512(float *out, const float *p, const float *vb0, long S0,
                                 const float *vb1, long S1, long Dv, float inv) {
    if (Dv <= 16) hetc_weighted_nv(out, p, vb0, S0, vb1, S1, Dv, inv, 1);
    else if (Dv <= 32) hetc_weighted_nv(out, p, vb0, S0, vb1, S1, Dv, inv, 2);
    else hetc_weighted_nv(out, p, vb0, S0, vb1, S1, Dv, inv, 4);
}

/* Four queries at once (their FMA chains interleave: one query's score and
 * weighted-sum loops waited on the FMA latency at every key). Scores for
 * keys up to the last query's visible count, 32 keys x 4 queries per pass;
 * each query's softmax masks its own; the weighted sums run the keys all
 * four see together and each query's further keys alone, in key order, so
 * every output is summed as the one-query loop sums it. */
#define HETC_ATT_Q 4

__attribute__((target("avx512f")))
static void hetc_scores4_avx512(float *p, long Sp, const float *q, long D, const float *kt,
                                long upto) {
    long s0 = 0;
    for (; s0 + 32 <= upto; s0 += 32) {
        __m512 a[HETC_ATT_Q][2];
        for (int j = 0; j < HETC_ATT_Q; j++) a[j][0] = a[j][1] = _mm512_setzero_ps();
        for (long d = 0; d < D; d++) {
            const float *kd = kt + d * Sp + s0;
            __m512 k0 = _mm512_loadu_ps(kd), k1 = _mm512_loadu_ps(kd + 16);
            for (int j = 0; j < HETC_ATT_Q; j++) {
                __m512 qd = _mm512_set1_ps(q[j * D + d]);
                a[j][0] = _mm512_fmadd_ps(qd, k0, a[j][0]);
                a[j][1] = _mm512_fmadd_ps(qd, k1, a[j][1]);
            }
        }
        for (int j = 0; j < HETC_ATT_Q; j++) {
            _mm512_storeu_ps(p + j * Sp + s0, a[j][0]);
            _mm512_storeu_ps(p + j * Sp + s0 + 16, a[j][1]);
        }
    }
    for (; s0 < upto; s0 += 16) {
        __m512 a[HETC_ATT_Q];
        for (int j = 0; j < HETC_ATT_Q; j++) a[j] = _mm512_setzero_ps();
        for (long d = 0; d < D; d++) {
            __m512 k0 = _mm512_loadu_ps(kt + d * Sp + s0);
            for (int j = 0; j < HETC_ATT_Q; j++)
                a[j] = _mm512_fmadd_ps(_mm512_set1_ps(q[j * D + d]), k0, a[j]);
        }
        for (int j = 0; j < HETC_ATT_Q; j++) _mm512_storeu_ps(p + j * Sp + s0, a[j]);
    }
}

/* The four queries' outputs (rows Dv apart) when each sees a key: keys all
 * four see together, then each query's further keys (causal), scaled by
 * inv[j]. NV value vectors, a constant after inlining. */
__attribute__((target("avx512f"), always_inline))
static inline void hetc_weighted4_nv(float *out, const float *p, long Sp, const float *vb0,
                                     long S0, const float *vb1, long Dv, long fewest,
                                     const long *visible, const float *inv, const int NV) {
    __mmask16 m[4];
    __m512 acc[HETC_ATT_Q][4];
    for (int i = 0; i < NV; i++) m[i] = Dv > 16 * i ? hetc_rows16(Dv - 16 * i) : 0;
    for (int j = 0; j < HETC_ATT_Q; j++)
        for (int i = 0; i < NV; i++) acc[j][i] = _mm512_setzero_ps();
    for (long s = 0; s < fewest; s++) {
        const float *vr = s < S0 ? vb0 + s * Dv : vb1 + (s - S0) * Dv;
        __m512 v[4];
        for (int i = 0; i < NV; i++) v[i] = _mm512_maskz_loadu_ps(m[i], vr + 16 * i);
        for (int j = 0; j < HETC_ATT_Q; j++) {
            __m512 w = _mm512_set1_ps(p[j * Sp + s]);
            for (int i = 0; i < NV; i++) acc[j][i] = _mm512_fmadd_ps(w, v[i], acc[j][i]);
        }
    }
    #pragma GCC unroll 4 /* acc's indices constant: kept in registers (not spilled per key) */
    for (int j = 0; j < HETC_ATT_Q; j++) {
        for (long s = fewest; s < visible[j]; s++) {
            const float *vr = s < S0 ? vb0 + s * Dv : vb1 + (s - S0) * Dv;
            __m512 w = _mm512_set1_ps(p[j * Sp + s]);
            for (int i = 0; i < NV; i++)
                acc[j][i] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(m[i], vr + 16 * i),
                                            acc[j][i]);
        }
        for (int i = 0; i < NV; i++)
            _mm512_mask_storeu_ps(out + j * Dv + 16 * i, m[i],
                                  _mm512_mul_ps(acc[j][i], _mm512_set1_ps(inv[j])));
    }
}

/* Queries l .. l + 3 of one head: outputs out (rows Dv apart). */
__attribute__((target("avx512f"), always_inline))
static inline void hetc_attention4_nv(float *out, float *p, long Sp, const float *q, long D,
                                      const float *kt, const float *vb0, long S0,
                                      const float *vb1, long Dv, const long *visible,
                                      float scale, const float *mrow, long ml, const int NV) {
    long most = 0, fewest = visible[0];
    for (int j = 0; j < HETC_ATT_Q; j++) {
        most = visible[j] > most ? visible[j] : most;
        fewest = visible[j] < fewest ? visible[j] : fewest;
    }
    hetc_scores4_avx512(p, Sp, q, D, kt, (most + 15) / 16 * 16);
    float inv[HETC_ATT_Q];
    int seen = 0; /* queries with a key unmasked */
    for (int j = 0; j < HETC_ATT_Q; j++) {
        float m, sum = hetc_softmax_avx512(p + j * Sp, visible[j], scale, visible[j],
                                           mrow ? mrow + j * ml : 0, &m);
        inv[j] = m == -INFINITY ? 0.f : 1.f / sum;
        seen |= (m != -INFINITY) << j;
    }
    if (seen == (1 << HETC_ATT_Q) - 1) {
        hetc_weighted4_nv(out, p, Sp, vb0, S0, vb1, Dv, fewest, visible, inv, NV);
        return;
    }
    for (int j = 0; j < HETC_ATT_Q; j++) { /* a query sees no key (zeros): each alone */
        float *o = out + j * Dv;
        if (!(seen >> j & 1)) {
            for (long d = 0; d < Dv; d++) o[d] = 0.f;
            continue;
        }
        long n0 = visible[j] < S0 ? visible[j] : S0;
        hetc_weighted_avx512(o, p + j * Sp, vb0, n0, vb1, visible[j] - n0, Dv, inv[j]);
    }
}

__attribute__((target("avx512f")))
static void hetc_attention4_avx512(float *out, float *p, long Sp, const float *q, long D,
                                   const float *kt, const float *vb0, long S0, const float *vb1,
                                   long Dv, const long *visible, float scale, const float *mrow,
                                   long ml) {
    if (Dv <= 16)
        hetc_attention4_nv(out, p, Sp, q, D, kt, vb0, S0, vb1, Dv, visible, scale, mrow, ml, 1);
    else if (Dv <= 32)
        hetc_attention4_nv(out, p, Sp, q, D, kt, vb0, S0, vb1, Dv, visible, scale, mrow, ml, 2);
    else
        hetc_attention4_nv(out, p, Sp, q, D, kt, vb0, S0, vb1, Dv, visible, scale, mrow, ml, 4);
}

/* A head's keys (rows of D floats: S0 of them at k0, then up to S at k1)
 * transposed to kt [D][Sp], zero columns from S to Sp: 16 keys x 16
 * features at a time through registers (unpack, shuffle, lane shuffles),
 * where a scalar loop storing a plane apart per value took 12 ms of
 * SmolLM2's 512-token prefill. */
__attribute__((target("avx512f")))
static void hetc_transpose_keys_avx512(float *kt, long Sp, const float *k0, long S0,
                                       const float *k1, long S, long D) {
    for (long s0 = 0; s0 < Sp; s0 += 16)
        for (long d0 = 0; d0 < D; d0 += 16) {
            __mmask16 m = hetc_rows16(D - d0);
            __m512 r[16], t[16], u[16];
            for (int i = 0; i < 16; i++) {
                long s = s0 + i;
                const float *kr = s < S0 ? k0 + s * D : s < S ? k1 + (s - S0) * D : 0;
                r[i] = kr ? _mm512_maskz_loadu_ps(m, kr + d0) : _mm512_setzero_ps();
            }
            for (int i = 0; i < 16; i += 2) { /* lane k: rows i, i + 1 at 4k .. 4k + 3 */
                t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
                t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
            }
            for (int i = 0; i < 16; i += 4) { /* u[i + j], lane k: rows i .. i + 3 at 4k + j */
                u[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
                u[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
                u[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
                u[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
            }
            for (int j = 0; j < 4; j++) { /* features 4k + j from the four row groups' lane k */
                __m512 a = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88),
                       c = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xDD),
                       e = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88),
                       g = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xDD);
                __m512 f[4] = {_mm512_shuffle_f32x4(a, e, 0x88), _mm512_shuffle_f32x4(c, g, 0x88),
                               _mm512_shuffle_f32x4(a, e, 0xDD), _mm512_shuffle_f32x4(c, g, 0xDD)};
                for (int k = 0; k < 4; k++)
                    if (d0 + 4 * k + j < D) _mm512_storeu_ps(kt + (d0 + 4 * k + j) * Sp + s0, f[k]);
            }
        }
}

/* Bytes of scratch k_attention needs per thread: score rows for a block
 * of queries and the head's transposed keys (64-byte aligned). */
HETC_KERNEL long hetc_attention_scratch(long S, long D) {
    long Sp = (S + 15) / 16 * 16;
    return (long)sizeof(float) * Sp * (D + HETC_ATT_Q) / 64 * 64 + 64;
}

/* softmax(q k^T * scale [causal] [+ mask]) v over [B, H, L, D] queries.
 * Keys and values are read where they lie: as up to two segments along the
 * sequence (k0/v0: S0 rows, then k1/v1: S1 rows; a decoder's cache and its
 * new tokens, never concatenated) of [B, H / group, S_i, D] tensors, query
 * head h reading key head h / group (grouped-query attention, never expanded).
 * causal masks keys beyond position l + offset; mask: additive f32 with the
 * key axis whole, broadcast over b, h, l through strides mb, mh, ml (0 when
 * broadcast). */
HETC_CLONES
HETC_KERNEL void k_attention(float *y, const float *q, const float *k0, const float *v0, long S0,
                             const float *k1, const float *v1, long S1, long group,
                             const float *mask, long mb, long mh, long ml, long B, long H, long L,
                             long D, long Dv, float scale, int causal, long offset,
                             unsigned char *scratch) {
    long S = S0 + S1, Hk = H / group;
    /* several queries: the head's keys transposed once ([D][S]), so that each
     * query's scores are a loop over contiguous keys per feature */
    int transposed = L >= 4;
    long Sp = (S + 15) / 16 * 16;
    int simd = hetc_avx512 && transposed && Dv <= 64;
    /* blocks of 4 queries; when the heads do not share out evenly among the
     * threads (SmolLM2's 9 on 2), each head's blocks in `parts` interleaved
     * parts of equal causal work, each part a task (9 heads on 2 threads
     * had left one thread idle a tenth of the time) */
    long blocks = simd ? L / HETC_ATT_Q : 0, parts = 1, threads = omp_get_max_threads();
    if ((B * H) % threads && blocks >= threads) parts = threads;
    #pragma omp parallel for collapse(3) schedule(static) if (B * H * L * S * D > 65536)
    for (long b = 0; b < B; b++)
        for (long h = 0; h < H; h++)
            for (long part = 0; part < parts; part++) {
            long rows = simd ? HETC_ATT_Q : 1; /* score rows: one per query of a block */
            /* each thread's part of the arena's scratch (hetc_attention_scratch):
             * a malloc per head of over 128 KB was an mmap, its pages zeroed
             * by the kernel on every call */
            float *p = (float *)(scratch + omp_get_thread_num() *
                                               hetc_attention_scratch(S, D)),
                  *kt = p + rows * Sp;
            long kv = b * Hk + h / group;
            const float *qb = q + (b * H + h) * L * D;
            const float *kb0 = k0 + kv * S0 * D, *vb0 = v0 + kv * S0 * Dv;
            const float *kb1 = S1 ? k1 + kv * S1 * D : 0, *vb1 = S1 ? v1 + kv * S1 * Dv : 0;
            const float *mk = mask ? mask + b * mb + h * mh : 0;
            if (transposed && hetc_avx512)
                hetc_transpose_keys_avx512(kt, Sp, kb0, S0, kb1, S, D);
            else if (transposed)
                for (long s = 0; s < Sp; s++) {
                    const float *kr = s < S0 ? kb0 + s * D : s < S ? kb1 + (s - S0) * D : 0;
                    for (long d = 0; d < D; d++) kt[d * Sp + s] = kr ? kr[d] : 0.f;
                }
            long l = 0;
            for (long j = part; j < blocks; j += parts) {
                long vis[HETC_ATT_Q];
                l = j * HETC_ATT_Q;
                for (int j = 0; j < HETC_ATT_Q; j++) {
                    long v = causal ? l + j + offset + 1 : S;
                    vis[j] = v > S ? S : v < 0 ? 0 : v;
                }
                hetc_attention4_avx512(y + ((b * H + h) * L + l) * Dv, p, Sp, qb + l * D, D, kt,
                                       vb0, S0, vb1, Dv, vis, scale, mk ? mk + l * ml : 0, ml);
            }
            /* the queries after the blocks, one at a time, in the last part */
            for (l = part == parts - 1 ? blocks * HETC_ATT_Q : L; l < L; l++) {
                const float *ql = qb + l * D;
                long visible = causal ? l + offset + 1 : S; /* keys past it are masked */
                visible = visible > S ? S : visible < 0 ? 0 : visible;
                if (simd) { /* only the keys a causal query sees */
                    float *out = y + ((b * H + h) * L + l) * Dv, m;
                    hetc_scores_avx512(p, ql, kt, Sp, D, (visible + 15) / 16 * 16);
                    float sum = hetc_softmax_avx512(p, visible, scale, visible,
                                                    mk ? mk + l * ml : 0, &m);
                    if (m == -INFINITY) { /* every key masked: zeros */
                        for (long d = 0; d < Dv; d++) out[d] = 0.f;
                        continue;
                    }
                    long n0 = visible < S0 ? visible : S0;
                    hetc_weighted_avx512(out, p, vb0, n0, vb1, visible - n0, Dv, 1.f / sum);
                    continue;
                }
                if (transposed) {
                    for (long s = 0; s < S; s++) p[s] = 0.f;
                    for (long d = 0; d < D; d++) {
                        float qd = ql[d];
                        const float *kd = kt + d * Sp;
                        for (long s = 0; s < S; s++) p[s] += qd * kd[s];
                    }
                } else {
                    for (long s = 0; s < S; s++) {
                        const float *kr = s < S0 ? kb0 + s * D : kb1 + (s - S0) * D;
                        float acc = 0.f;
                        #pragma omp simd reduction(+:acc)
                        for (long d = 0; d < D; d++) acc += ql[d] * kr[d];
                        p[s] = acc;
                    }
                }
                float m = -INFINITY;
                for (long s = 0; s < S; s++) {
                    float v = s < visible ? p[s] * scale : -INFINITY;
                    if (mk) v += mk[l * ml + s];
                    p[s] = v;
                    m = v > m ? v : m;
                }
                float *out = y + ((b * H + h) * L + l) * Dv, sum = 0.f;
                for (long d = 0; d < Dv; d++) out[d] = 0.f;
                if (m == -INFINITY) continue; /* every key masked: zeros */
                for (long s = 0; s < S; s++) {
                    p[s] = hetc_expf(p[s] - m);
                    sum += p[s];
                }
                for (long s = 0; s < S0; s++) {
                    float w = p[s];
                    const float *vr = vb0 + s * Dv;
                    for (long d = 0; d < Dv; d++) out[d] += w * vr[d];
                }
                for (long s = 0; s < S1; s++) {
                    float w = p[S0 + s];
                    const float *vr = vb1 + s * Dv;
                    for (long d = 0; d < Dv; d++) out[d] += w * vr[d];
                }
                float inv = 1.f / sum;
                for (long d = 0; d < Dv; d++) out[d] *= inv;
            }
        }
}

/* ---- convolution and pooling (NCHW) ------------------------------------ */

HETC_CLONES
HETC_KERNEL void k_conv2d(float *restrict y, const float *restrict x, const float *restrict w,
                          const float *b, long N, long C, long H, long W, long O, long KH, long KW,
                          long OH, long OW, long sh, long sw, long pt, long pl, long dh, long dw,
                          long groups) {
    long cg = C / groups, og = O / groups;
    #pragma omp parallel for collapse(2) schedule(static)
    for (long n = 0; n < N; n++)
        for (long o = 0; o < O; o++) {
            long g = o / og;
            float *py = y + (n * O + o) * OH * OW;
            for (long i = 0; i < OH * OW; i++) py[i] = b ? b[o] : 0.f;
            for (long c = 0; c < cg; c++) {
                const float *px = x + (n * C + g * cg + c) * H * W;
                for (long ki = 0; ki < KH; ki++)
                    for (long kj = 0; kj < KW; kj++) {
                        float wv = w[((o * cg + c) * KH + ki) * KW + kj];
                        for (long oh = 0; oh < OH; oh++) {
                            long ih = oh * sh - pt + ki * dh;
                            if (ih < 0 || ih >= H) continue;
                            for (long ow = 0; ow < OW; ow++) {
                                long iw = ow * sw - pl + kj * dw;
                                if (iw >= 0 && iw < W) py[oh * OW + ow] += wv * px[ih * W + iw];
                            }
                        }
                    }
            }
        }
}

HETC_KERNEL void k_max_pool2d(float *y, const float *x, long NC, long H, long W, long KH, long KW,
                              long OH, long OW, long sh, long sw, long pt, long pl, long dh, long dw) {
    for (long c = 0; c < NC; c++)
        for (long oh = 0; oh < OH; oh++)
            for (long ow = 0; ow < OW; ow++) {
                float m = -INFINITY;
                for (long ki = 0; ki < KH; ki++)
                    for (long kj = 0; kj < KW; kj++) {
                        long ih = oh * sh - pt + ki * dh, iw = ow * sw - pl + kj * dw;
                        if (ih >= 0 && ih < H && iw >= 0 && iw < W) {
                            float v = x[(c * H + ih) * W + iw];
                            m = v > m || isnan(v) ? v : m; /* a nan stays */
                        }
                    }
                y[(c * OH + oh) * OW + ow] = m;
            }
}

/* avg_pool2d: the divisor counts input cells, plus the explicit padding
 * (pt, pl, pb, pr) when include_pad, never the ceil-mode overhang. */
HETC_KERNEL void k_avg_pool2d(float *y, const float *x, long NC, long H, long W, long KH, long KW,
                              long OH, long OW, long sh, long sw, long pt, long pl, long pb, long pr,
                              int include_pad) {
    for (long c = 0; c < NC; c++)
        for (long oh = 0; oh < OH; oh++)
            for (long ow = 0; ow < OW; ow++) {
                float sum = 0.f;
                long count = 0;
                for (long ki = 0; ki < KH; ki++)
                    for (long kj = 0; kj < KW; kj++) {
                        long ih = oh * sh - pt + ki, iw = ow * sw - pl + kj;
                        int inside = ih >= 0 && ih < H && iw >= 0 && iw < W;
                        if (inside) sum += x[(c * H + ih) * W + iw];
                        if (inside || (include_pad && ih >= -pt && ih < H + pb && iw >= -pl &&
                                       iw < W + pr))
                            count++;
                    }
                y[(c * OH + oh) * OW + ow] = sum / (float)count;
            }
}

/* The sum of n floats in doubles: 8 lanes at a time on AVX-512, else 4
 * running sums (one serial sum waits on each add: a 1280 x 49 pooling took
 * 0.05 ms). */
__attribute__((target("avx512f")))
static double hetc_sum_avx512(const float *x, long n) {
    __m512d a = _mm512_setzero_pd(), b = _mm512_setzero_pd();
    for (long i = 0; i < n; i += 16) {
        __m512 v = _mm512_maskz_loadu_ps(hetc_rows16(n - i), x + i);
        a = _mm512_add_pd(a, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
        b = _mm512_add_pd(b, _mm512_cvtps_pd(_mm256_castpd_ps(
                                 _mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(a, b));
}

static double hetc_sum(const float *x, long n) {
    if (hetc_avx512) return hetc_sum_avx512(x, n);
    double s[4] = {0.0, 0.0, 0.0, 0.0};
    long i = 0;
    for (; i + 4 <= n; i += 4)
        for (int l = 0; l < 4; l++) s[l] += x[i + l];
    for (; i < n; i++) s[0] += x[i];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

HETC_KERNEL void k_mean_rows(float *y, const float *x, long rows, long n) {
    #pragma omp parallel for schedule(static) if (rows * n >= 32768)
    for (long r = 0; r < rows; r++) y[r] = (float)(hetc_sum(x + r * n, n) / n);
}

/* ---- float weights in panels ---------------------------------------------- *
 * A constant float weight [N, K] is packed in panels of 16 output rows,
 * k-major: panel p holds w[16p + l, k] at [p][k][l] (zero rows pad the
 * last), as f32 or bf16 (kind 0 or 1: the weight's own dtype; bf16 reads
 * half the bytes and is widened exactly in registers). For each k the kernel broadcasts x[m, k] and adds it times a
 * whole 16-row vector: no horizontal sums, one pass over two panels serves 8
 * tokens from registers (GEMM at batch 16, GEMV at batch 1). */
__attribute__((target("avx512f,avx512bw"), always_inline))
static inline __m512 hetc_panel_load(const void *w, long i, const int kind) {
    if (kind == 1)
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(
            _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i))), 16));
    return _mm512_loadu_ps((const float *)w + i);
}

/* P panels (1 to 3) of output from panel p0 x T tokens (T, P, kind
 * constants after inlining), their weights from panel wp of w: p0 when w is
 * the layer's weight, else a group decoded into a buffer (wp 0). Sums over
 * k0 .. k0 + kn of K: from k0 = 0 stored with the bias, later blocks of K
 * added to what y holds. */
__attribute__((target("avx512f,avx512bw"), always_inline))
static inline void hetc_panel_tile(float *restrict y, const float *restrict x, const void *w,
                                   const float *b, long p0, long wp, const int P, long N, long K,
                                   const int kind, long k0, long kn, long m0, const int T) {
    __m512 acc[8][3];
    for (int t = 0; t < T; t++)
        for (int q = 0; q < P; q++) acc[t][q] = _mm512_setzero_ps();
    const float *xt = x + m0 * K + k0;
    /* the next group's weights into L2, K lines per pass of 8 tokens, so
     * that its first pass does not wait on memory (MiniLM 4% faster in one
     * process; its weights, 42 MB, come from memory every run) */
    long esize = kind ? 2 : 4, panels = (N + 15) / 16, pn = panels - p0 - P;
    long lines = (pn < 3 ? pn : 3) * K * 16 * esize / 64, first = m0 / 8 * K;
    const char *pf = T == 8 && first < lines && wp == p0 && kn == K
        ? (const char *)w + ((p0 + P) * K * 16 * esize) + first * 64 : 0;
    long pfn = lines - first < K ? lines - first : K;
    for (long k = 0; k < kn; k++) {
        __m512 wv[3];
        if (pf && k < pfn) _mm_prefetch(pf + k * 64, _MM_HINT_T1);
        for (int q = 0; q < P; q++)
            wv[q] = hetc_panel_load(w, ((wp + q) * K + k0 + k) * 16, kind);
        for (int t = 0; t < T; t++) {
            __m512 xb = _mm512_set1_ps(xt[t * K + k]);
            for (int q = 0; q < P; q++) acc[t][q] = _mm512_fmadd_ps(xb, wv[q], acc[t][q]);
        }
    }
    for (int q = 0; q < P; q++) {
        long n0 = (p0 + q) * 16;
        __mmask16 keep = hetc_rows16(N - n0);
        __m512 bias = b && !k0 ? _mm512_maskz_loadu_ps(keep, b + n0) : _mm512_setzero_ps();
        for (int t = 0; t < T; t++) {
            float *at = y + (m0 + t) * N + n0;
            __m512 from = k0 ? _mm512_maskz_loadu_ps(keep, at) : bias;
            _mm512_mask_storeu_ps(at, keep, _mm512_add_ps(acc[t][q], from));
        }
    }
}

/* A fused region's steps on the features n0 .. n0 + width of tokens m0 ..
 * m1, just written and still in cache (per-feature operands: cstride 1). */
static void hetc_linear_epilogue(float *y, long m0, long m1, long N, long n0, long width,
                                 const hetc_step *ep, int nep) {
    width = N - n0 < width ? N - n0 : width;
    for (long m = m0; nep && m < m1; m++)
        hetc_epilogue_run(ep, nep, y + m * N + n0, width, m * N + n0, n0, 1);
}

/* Tokens per task of the panel kernel: from 512 tokens on, even chunks of
 * at most 256 (a multiple of 8), so that a chunk's inputs and results stay
 * in cache while the groups of panels pass over them (a group over all 3136
 * tokens of a ConvNeXt layer wrote 4.8 MB of results before its GELU read
 * them back); uneven chunks left a thread with the short one (784 tokens:
 * 18% slower). */
#define HETC_PANEL_CHUNK 256
#define HETC_PANEL_KBLOCK 512 /* inputs per block of K, where the inputs exceed 4 MB */
static inline long hetc_panel_chunk(long M) {
    if (M < 2 * HETC_PANEL_CHUNK) return M;
    long chunks = (M + HETC_PANEL_CHUNK - 1) / HETC_PANEL_CHUNK;
    return ((M + chunks - 1) / chunks + 7) / 8 * 8;
}

/* Output panels p0 .. p0 + left (at most 3; weights from panel wp of w) for
 * M tokens, summing k0 .. k0 + kn of K. */
__attribute__((target("avx512f,avx512bw")))
static void hetc_panel_group(float *y, const float *x, const void *w, int kind, const float *b,
                             long p0, long wp, long left, long N, long K, long k0, long kn,
                             long M) {
#define HETC_PANEL_GROUP(P_, KIND_) \
    HETC_TOKEN_PASSES(M, hetc_panel_tile, y, x, w, b, p0, wp, P_, N, K, KIND_, k0, kn)
    if (kind) {
        if (left == 3) HETC_PANEL_GROUP(3, 1);
        else if (left == 2) HETC_PANEL_GROUP(2, 1);
        else HETC_PANEL_GROUP(1, 1);
    } else {
        if (left == 3) HETC_PANEL_GROUP(3, 0);
        else if (left == 2) HETC_PANEL_GROUP(2, 0);
        else HETC_PANEL_GROUP(1, 0);
    }
#undef HETC_PANEL_GROUP
}

__attribute__((target("avx512f,avx512bw")))
static void hetc_linear_panel_avx512(float *restrict y, const float *restrict x, const void *w,
                                     int kind, const float *b, long M, long N, long K,
                                     const hetc_step *ep, int nep) {
    long panels = (N + 15) / 16;
    /* several passes of 8 tokens: three panels per pass (24 accumulators,
     * 3 weight loads and 8 broadcasts per 24 FMAs); few tokens: two, so
     * that more threads share a small layer's weights */
    int width = M >= 16 ? 3 : 2;
    long groups = (panels + width - 1) / width;
    long chunk = hetc_panel_chunk(M), chunks = (M + chunk - 1) / chunk;
    if (M >= 64 && M * K * (long)sizeof(float) > (4L << 20)) {
        /* inputs over 4 MB: blocks of K, each over all groups, so that the
         * tokens' inputs in the block stay in L2 while a thread's groups
         * pass over them (each group over all of K read the whole input
         * again: ALBERT-xxlarge's 128 x 16384 -> 4096, 8 MB of inputs, 108
         * -> 68 ms alone; with 3 MB of inputs even, with 16 tokens slower: the
         * next group's weights are no longer prefetched). A thread keeps its
         * groups in every block (static schedules of one trip count), so it
         * needs no barrier between blocks. */
        #pragma omp parallel if (hetc_linear_threads(M, N, K))
        {
            for (long k0 = 0; k0 < K; k0 += HETC_PANEL_KBLOCK) {
                long kn = K - k0 < HETC_PANEL_KBLOCK ? K - k0 : HETC_PANEL_KBLOCK;
                #pragma omp for schedule(static) nowait
                for (long gi = 0; gi < groups; gi++) {
                    long p0 = gi * width, left = panels - p0 < width ? panels - p0 : width;
                    hetc_panel_group(y, x, w, kind, b, p0, p0, left, N, K, k0, kn, M);
                }
            }
            #pragma omp for schedule(static) nowait
            for (long gi = 0; gi < groups; gi++)
                hetc_linear_epilogue(y, 0, M, N, gi * width * 16, width * 16, ep, nep);
        }
        return;
    }
    #pragma omp parallel for collapse(2) schedule(static) if (hetc_linear_threads(M, N, K))
    for (long ci = 0; ci < chunks; ci++)
        for (long gi = 0; gi < groups; gi++) {
            long p0 = gi * width, m0 = ci * chunk, mc = M - m0 < chunk ? M - m0 : chunk;
            long left = panels - p0 < width ? panels - p0 : width;
            hetc_panel_group(y + m0 * N, x + m0 * K, w, kind, b, p0, p0, left, N, K, 0, K, mc);
            hetc_linear_epilogue(y, m0, m0 + mc, N, p0 * 16, width * 16, ep, nep);
        }
}

/* The same sums in portable C (the 16-lane loop vectorizes for AVX2). */
static void hetc_linear_panel_portable(float *restrict y, const float *restrict x, const void *w,
                                       int kind, const float *b, long M, long N, long K,
                                       const hetc_step *ep, int nep) {
    long panels = (N + 15) / 16;
    #pragma omp parallel for schedule(static) if (hetc_linear_threads(M, N, K))
    for (long p = 0; p < panels; p++) {
        for (long m = 0; m < M; m++) {
            float acc[16] = {0};
            for (long k = 0; k < K; k++) {
                float xv = x[m * K + k];
                long at = (p * K + k) * 16;
                for (int l = 0; l < 16; l++) {
                    float wl;
                    if (kind) {
                        uint32_t u = (uint32_t)((const uint16_t *)w)[at + l] << 16;
                        memcpy(&wl, &u, 4);
                    } else {
                        wl = ((const float *)w)[at + l];
                    }
                    acc[l] += xv * wl;
                }
            }
            for (int l = 0; l < 16 && p * 16 + l < N; l++)
                y[m * N + p * 16 + l] = acc[l] + (b ? b[p * 16 + l] : 0.f);
        }
        hetc_linear_epilogue(y, 0, M, N, p * 16, 16, ep, nep); /* in the thread that wrote it */
    }
}

/* ---- integer weights x int8 activations (act_group) --------------------- *
 * x is quantized per token and group of G features: s = max|x| / 127,
 * q = rint(x / s) (as the interpreter does), kept as the byte q + 128 so that
 * vpdpbusd (u8 x s8 -> s32) takes the weight codes as they are:
 *   sum (q + 128) c = sum q c + 128 sum c, the second term summed from the
 *   codes as they stream by (one more vpdpbusd per vector, shared by the
 *   tokens: cheaper at batch 1 than reading it from memory).
 * Every partial sum is an exact integer; y = sum_g s_w[n,g] s_x[m,g] dot_g.
 *
 * Weights ("row blocks"): rows in blocks of 16, zero rows padding the last.
 * A block is a run of 64-byte vectors, byte 4r + j = slot j of row r at one
 * step, so one vpdpbusd adds 4 products into each of the 16 rows' int32
 * lanes and no horizontal sum is ever needed. Dense: slot j of step s
 * multiplies activation 4s + j. N:M (N = 1, 2 or 4): a step covers
 * W = 4M/N <= 16 activations (4/N M-groups of each row) and slot j multiplies
 * activation sW + f, f = M (j / N) + pos from a PB-bit field per slot: for M
 * a power of two f = base | pos (PB = 2 for M <= 4, else 4, base = M (j / N)
 * stored once), else the field holds f itself (PB = 4). So only the kept
 * values and their positions are read. A unit is the codes of one step
 * (int8: s8 bytes) or of two (int4: byte i = (c_s + 8) | (c_s+1 + 8) << 4),
 * followed for N:M by each of its steps' 8 PB bytes of fields: the field of
 * byte i = 8o + j of the vector sits in qword o % PB at bit PB (8 (o / PB) + j),
 * so that a broadcast of the step's qwords and one vpmultishiftqb put every
 * field in the low bits of its byte. Per block and group: 16 scales in lane
 * order, f16 or f32 as the weight stores them (half). A step lies inside one
 * quantization group (G % W == 0; int4 units too: G % 2W == 0).
 * The AVX-512 kernel broadcasts a step's activations (dense: 4 bytes; N:M:
 * 16), picks each lane's with vpshufb (N:M), then vpdpbusd; one pass over a
 * block serves 8 tokens. */

/* A token group's int8 scale, max |x| / 127 (0 for an all-zero group). */
static inline float hetc_group_scale(const float *px, long G) {
    float mx = 0.f;
    #pragma omp simd reduction(max:mx)
    for (long i = 0; i < G; i++) mx = fabsf(px[i]) > mx ? fabsf(px[i]) : mx;
    return mx / 127.f;
}

/* q = rint(x / s) per token and group, stored as q + shift (0, or 128 for
 * the row-block kernels' unsigned bytes); s per token and group in `s`. */
HETC_CLONES
static void hetc_quantize_rows(const float *x, long M, long K, long G, uint8_t *q, float *s,
                               int shift) {
    long groups = K / G;
    #pragma omp parallel for schedule(static) if (M * K > 32768)
    for (long m = 0; m < M; m++)
        for (long g = 0; g < groups; g++) {
            const float *px = x + m * K + g * G;
            float sc = hetc_group_scale(px, G), div = sc == 0.f ? 1.f : sc;
            for (long i = 0; i < G; i++)
                q[m * K + g * G + i] = (uint8_t)((int)nearbyintf(px[i] / div) + shift);
            s[m * groups + g] = sc;
        }
}

/* The row-block layout of one layer (see above). */
typedef struct {
    long K, W, groups, gsteps, units, unit_bytes, block_bytes;
    int bits, nn, mm, pb, us, pow2, half;
} hetc_rb_shape;

static hetc_rb_shape hetc_rb(long K, long G, int bits, int nn, int mm) {
    hetc_rb_shape c;
    c.K = K; c.bits = bits; c.nn = nn; c.mm = mm; c.half = 0;
    c.pow2 = (mm & (mm - 1)) == 0;
    c.pb = nn == mm ? 0 : (mm <= 4 && c.pow2 ? 2 : 4);
    c.us = bits == 4 ? 2 : 1;
    c.W = nn == mm ? 4 : 4 * mm / nn;
    c.groups = K / G; c.gsteps = G / c.W; c.units = K / c.W / c.us;
    c.unit_bytes = 64 + c.us * 8 * c.pb;
    c.block_bytes = c.units * c.unit_bytes;
    return c;
}

/* Row n's codes as K s8 values (zeros where N:M dropped them). */
static void hetc_rb_row(int8_t *row, const uint8_t *packed, const hetc_rb_shape *c, long n) {
    const uint8_t *p = packed + (n / 16) * c->block_bytes;
    long r = n % 16;
    memset(row, 0, c->K);
    for (long u = 0; u < c->units; u++, p += c->unit_bytes)
        for (int su = 0; su < c->us; su++)
            for (int j = 0; j < 4; j++) {
                uint8_t byte = p[4 * r + j];
                int code = c->bits == 4 ? ((byte >> (4 * su)) & 15) - 8 : (int8_t)byte;
                long s = u * c->us + su, k = 4 * s + j;
                if (c->pb) {
                    long i = 4 * r + j, o = i / 8, bit = c->pb * (8 * (o / c->pb) + i % 8);
                    const uint8_t *q = p + 64 + su * 8 * c->pb + 8 * (o % c->pb);
                    int f = (q[bit / 8] >> (bit % 8)) & ((1 << c->pb) - 1);
                    k = s * c->W + (c->pow2 ? c->mm * (j / c->nn) : 0) + f;
                }
                row[k] = (int8_t)code;
            }
}

/* The N:M kernel's constants: fields to vpshufb indices. */
typedef struct {
    __m512i base, ctrl, pmask;
} hetc_rb_simd;

__attribute__((target("avx512f,avx512bw,avx512vnni,avx512vbmi")))
static void hetc_rb_simd_setup(hetc_rb_simd *v, const hetc_rb_shape *c) {
    uint8_t base[64] = {0}, ctrl[64] = {0};
    for (int i = 0; i < 64 && c->pb && c->pow2; i++) base[i] = (uint8_t)(c->mm * ((i % 4) / c->nn));
    for (int i = 0; i < 64 && c->pb; i++) ctrl[i] = (uint8_t)(c->pb * (8 * ((i / 8) / c->pb) + i % 8));
    v->base = _mm512_loadu_si512(base); v->ctrl = _mm512_loadu_si512(ctrl);
    v->pmask = _mm512_set1_epi8((char)((1 << c->pb) - 1));
}

/* The vpshufb indices of one step from its PB * 8 bytes of fields. */
__attribute__((target("avx512f,avx512bw,avx512vnni,avx512vbmi"), always_inline))
static inline __m512i hetc_rb_index(const uint8_t *fields, const int pb, const hetc_rb_simd *v) {
    __m512i f = pb == 2 ? _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)fields))
                        : _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)fields));
    /* (field & mask) | base in one vpternlogd */
    return _mm512_ternarylogic_epi32(_mm512_multishift_epi64_epi8(v->ctrl, f), v->pmask, v->base,
                                     0xEA);
}

/* How far ahead the kernel asks for weights: the hardware prefetcher alone
 * left the batch-1 kernel at about 60% of the read bandwidth. */
#define HETC_RB_PREFETCH 1024

/* One block of 16 rows x T tokens (T, bits and pb constants after inlining). */
__attribute__((target("avx512f,avx512bw,avx512vnni,avx512vbmi"), always_inline))
static inline void hetc_rb_tile(float *restrict y, const uint8_t *restrict xu,
                                const float *restrict sx, const uint8_t *restrict packed,
                                const void *restrict sw, const float *b, long blk, long N,
                                const int bits, const int pb, const hetc_rb_shape *c,
                                const hetc_rb_simd *v, long m0, const int T) {
    const uint8_t *p = packed + blk * c->block_bytes;
    const long K = c->K, W = c->W, ub = c->unit_bytes, gsteps = c->gsteps;
    const __m512i low = _mm512_set1_epi8(15), eight = _mm512_set1_epi8(8),
                  k128 = _mm512_set1_epi8((char)0x80);
    /* int4 with one or two tokens: a second accumulator per token for the
     * unit's second step, or vpdpbusd's latency would bound the loop */
    const int two = bits == 4 && T <= 2;
    __m512 facc[8];
    for (int t = 0; t < T; t++) facc[t] = _mm512_setzero_ps();
    for (long g = 0; g < c->groups; g++) {
        __m512i acc[8], acc2[2], sum128 = _mm512_setzero_si512(); /* 128 sum c per row */
        for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_si512();
        for (int t = 0; t < T && two; t++) acc2[t] = _mm512_setzero_si512();
        const uint8_t *xs = xu + m0 * K + g * gsteps * W;
        for (long s = 0; s < gsteps; s += bits == 4 ? 2 : 1, xs += (bits == 4 ? 2 : 1) * W) {
            __m512i raw = _mm512_loadu_si512(p), w0 = raw, w1 = raw, i0 = raw, i1 = raw;
            if (bits == 4) {
                w0 = _mm512_sub_epi8(_mm512_and_si512(raw, low), eight);
                w1 = _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(raw, 4), low), eight);
                sum128 = _mm512_dpbusd_epi32(sum128, k128, w1);
            }
            sum128 = _mm512_dpbusd_epi32(sum128, k128, w0);
            if (pb) {
                i0 = hetc_rb_index(p + 64, pb, v);
                if (bits == 4) i1 = hetc_rb_index(p + 64 + 8 * pb, pb, v);
            }
            _mm_prefetch((const char *)p + HETC_RB_PREFETCH, _MM_HINT_T0);
            _mm_prefetch((const char *)p + HETC_RB_PREFETCH + ub - 1, _MM_HINT_T0);
            p += ub;
            for (int t = 0; t < T; t++) {
                const uint8_t *xt = xs + t * K;
                __m512i x0, x1 = raw;
                if (pb) { /* 16 bytes from xt: the scratch has slack after the tokens */
                    x0 = _mm512_shuffle_epi8(_mm512_broadcast_i32x4(
                        _mm_loadu_si128((const __m128i *)xt)), i0);
                    if (bits == 4)
                        x1 = _mm512_shuffle_epi8(_mm512_broadcast_i32x4(
                            _mm_loadu_si128((const __m128i *)(xt + W))), i1);
                } else {
                    int32_t d0, d1;
                    memcpy(&d0, xt, 4);
                    memcpy(&d1, xt + 4, 4);
                    x0 = _mm512_set1_epi32(d0);
                    x1 = _mm512_set1_epi32(d1);
                }
                acc[t] = _mm512_dpbusd_epi32(acc[t], x0, w0);
                if (two) acc2[t] = _mm512_dpbusd_epi32(acc2[t], x1, w1);
                else if (bits == 4) acc[t] = _mm512_dpbusd_epi32(acc[t], x1, w1);
            }
        }
        for (int t = 0; t < T && two; t++) acc[t] = _mm512_add_epi32(acc[t], acc2[t]);
        long at = (blk * c->groups + g) * 16;
        __m512 swv = c->half ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(
                                   (const uint16_t *)sw + at)))
                             : _mm512_loadu_ps((const float *)sw + at);
        for (int t = 0; t < T; t++)
            facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[t], sum128)), _mm512_mul_ps(
                swv, _mm512_set1_ps(sx[(m0 + t) * c->groups + g])), facc[t]);
    }
    long n0 = blk * 16;
    __mmask16 keep = hetc_rows16(N - n0);
    __m512 bias = b ? _mm512_maskz_loadu_ps(keep, b + n0) : _mm512_setzero_ps();
    for (int t = 0; t < T; t++)
        _mm512_mask_storeu_ps(y + (m0 + t) * N + n0, keep, _mm512_add_ps(facc[t], bias));
}

/* One block's tokens with BITS and PB as constants. */
#define HETC_RB_PASSES(BITS, PB) \
    HETC_TOKEN_PASSES(M, hetc_rb_tile, y, xu, sx, packed, sw, b, blk, N, BITS, PB, &c, &v)

__attribute__((target("avx512f,avx512bw,avx512vnni,avx512vbmi")))
static void hetc_linear_rb_vnni(float *restrict y, const uint8_t *restrict xu,
                                const float *restrict sx, const uint8_t *restrict packed,
                                const void *restrict sw, const float *b, long M, long N,
                                hetc_rb_shape c) {
    hetc_rb_simd v;
    hetc_rb_simd_setup(&v, &c);
    #pragma omp parallel for schedule(static)
    for (long blk = 0; blk < (N + 15) / 16; blk++) {
        if (c.bits == 4)
            switch (c.pb) {
            case 0: HETC_RB_PASSES(4, 0); break;
            case 2: HETC_RB_PASSES(4, 2); break;
            default: HETC_RB_PASSES(4, 4); break;
            }
        else
            switch (c.pb) {
            case 0: HETC_RB_PASSES(8, 0); break;
            case 2: HETC_RB_PASSES(8, 2); break;
            default: HETC_RB_PASSES(8, 4); break;
            }
    }
}
#undef HETC_RB_PASSES

/* ---- N:M weights with float activations ------------------------------------ *
 * The same row blocks (only the kept values' codes and positions) with f32
 * activations, k_linear_rbf: in lane r, slot j of a step holds row r's
 * code and (through hetc_rb_index) the index of its activation in the
 * step's window of W; vpermps picks each lane's activation from the
 * window's W floats by those indices, and the codes widened to floats
 * multiply them. Sums per group, scaled by the rows' scales. Dense codes
 * with zeros read every weight: 2:4 + int4 reads 3 bits and positions per
 * kept pair instead of 4 bits per weight, 1:4 half that. */

/* One block of 16 rows x T tokens (T, bits and pb constants after inlining);
 * CH independent sums per token for few tokens, as hetc_q_block_tile. */
__attribute__((target("avx512f,avx512bw,avx512vnni,avx512vbmi"), always_inline))
static inline void hetc_rbf_tile(float *restrict y, const float *restrict x,
                                 const uint8_t *restrict packed, const void *restrict sw,
                                 const float *b, long blk, long N, const int bits, const int pb,
                                 const hetc_rb_shape *c, const hetc_rb_simd *v, long m0,
                                 const int T) {
    const uint8_t *p = packed + blk * c->block_bytes;
    const long K = c->K, W = c->W, ub = c->unit_bytes, gsteps = c->gsteps;
    const int CH = T <= 2 ? 4 : T <= 4 ? 2 : 1, U = bits == 4 ? 2 : 1;
    const __mmask16 win = hetc_rows16(W); /* the window's activations, not past the row */
    const __m512 codes4 = HETC_INT4_VALUES;
    __m512 facc[8];
    for (int t = 0; t < T; t++) facc[t] = _mm512_setzero_ps();
    for (long g = 0; g < c->groups; g++) {
        __m512 ch[4][8];
        for (int q = 0; q < CH; q++)
            for (int t = 0; t < T; t++) ch[q][t] = _mm512_setzero_ps();
        const float *xs = x + m0 * K + g * gsteps * W;
        for (long s = 0; s < gsteps; s += U, xs += U * W) {
            __m512i raw = _mm512_loadu_si512(p), idx[2];
            idx[0] = hetc_rb_index(p + 64, pb, v);
            if (bits == 4) idx[1] = hetc_rb_index(p + 64 + 8 * pb, pb, v);
            _mm_prefetch((const char *)p + HETC_RB_PREFETCH, _MM_HINT_T0);
            _mm_prefetch((const char *)p + HETC_RB_PREFETCH + ub - 1, _MM_HINT_T0);
            p += ub;
            for (int u = 0; u < U; u++)
                for (int j = 0; j < 4; j++) {
                    /* int4: step s + u's codes in the nibbles of byte j, the
                     * values -8..7 picked by vpermps (low 4 bits); a shift,
                     * mask, subtract and convert took 2:4 at batch 1 1.15
                     * ms against 0.73 (4096 x 11008) */
                    __m512 w = bits == 4 ? _mm512_permutexvar_ps(
                                               _mm512_srli_epi32(raw, 8 * j + 4 * u), codes4)
                                         : _mm512_cvtepi32_ps(_mm512_srai_epi32(
                                               _mm512_slli_epi32(raw, 24 - 8 * j), 24));
                    __m512i ix = _mm512_srli_epi32(idx[u], 8 * j); /* vpermps: low 4 bits */
                    for (int t = 0; t < T; t++)
                        ch[j % CH][t] = _mm512_fmadd_ps(
                            w, _mm512_permutexvar_ps(ix, _mm512_maskz_loadu_ps(
                                                            win, xs + t * K + u * W)),
                            ch[j % CH][t]);
                }
        }
        long at = (blk * c->groups + g) * 16;
        __m512 swv = c->half ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(
                                   (const uint16_t *)sw + at)))
                             : _mm512_loadu_ps((const float *)sw + at);
        for (int t = 0; t < T; t++) {
            __m512 sum = ch[0][t];
            for (int q = 1; q < CH; q++) sum = _mm512_add_ps(sum, ch[q][t]);
            facc[t] = _mm512_fmadd_ps(sum, swv, facc[t]);
        }
    }
    long n0 = blk * 16;
    __mmask16 keep = hetc_rows16(N - n0);
    __m512 bias = b ? _mm512_maskz_loadu_ps(keep, b + n0) : _mm512_setzero_ps();
    for (int t = 0; t < T; t++)
        _mm512_mask_storeu_ps(y + (m0 + t) * N + n0, keep, _mm512_add_ps(facc[t], bias));
}

#define HETC_RBF_PASSES(BITS, PB) \
    HETC_TOKEN_PASSES(M, hetc_rbf_tile, y, x, packed, sw, b, blk, N, BITS, PB, &c, &v)

__attribute__((target("avx512f,avx512bw,avx512vnni,avx512vbmi")))
static void hetc_linear_rbf_vnni(float *restrict y, const float *restrict x,
                                 const uint8_t *restrict packed, const void *restrict sw,
                                 const float *b, long M, long N, hetc_rb_shape c) {
    hetc_rb_simd v;
    hetc_rb_simd_setup(&v, &c);
    #pragma omp parallel for schedule(static)
    for (long blk = 0; blk < (N + 15) / 16; blk++) {
        if (c.bits == 4) {
            if (c.pb == 2) HETC_RBF_PASSES(4, 2);
            else HETC_RBF_PASSES(4, 4);
        } else {
            if (c.pb == 2) HETC_RBF_PASSES(8, 2);
            else HETC_RBF_PASSES(8, 4);
        }
    }
}
#undef HETC_RBF_PASSES

/* Both in portable C: each row decoded, then group dot products with the
 * int8 tokens (xu, sx) or, when xf is given, the float ones. */
static void hetc_linear_rb_portable(float *restrict y, const uint8_t *restrict xu,
                                    const float *restrict sx, const float *restrict xf,
                                    const uint8_t *restrict packed, const void *restrict sw,
                                    const float *b, long M, long N, hetc_rb_shape c) {
    long K = c.K, G = K / c.groups;
    #pragma omp parallel for schedule(static)
    for (long n = 0; n < N; n++) {
        int8_t row[K];
        hetc_rb_row(row, packed, &c, n);
        long lane = (n / 16) * c.groups * 16 + n % 16;
        for (long m = 0; m < M; m++) {
            float acc = 0.f;
            for (long g = 0; g < c.groups; g++) {
                float dot = 0.f;
                if (xf) {
                    for (long i = g * G; i < (g + 1) * G; i++) dot += xf[m * K + i] * row[i];
                } else {
                    int32_t d = 0;
                    for (long i = g * G; i < (g + 1) * G; i++)
                        d += ((int32_t)xu[m * K + i] - 128) * row[i];
                    dot = sx[m * c.groups + g] * (float)d;
                }
                float s = c.half ? _cvtsh_ss(((const uint16_t *)sw)[lane + 16 * g])
                                 : ((const float *)sw)[lane + 16 * g];
                acc += s * dot;
            }
            y[m * N + n] = acc + (b ? b[n] : 0.f);
        }
    }
}

HETC_KERNEL int hetc_configure(void) {
    const char *portable = getenv("HETC_X86_PORTABLE");
    int allowed = !(portable && *portable && *portable != '0');
    hetc_avx512 = allowed && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    hetc_simd = hetc_avx512 && __builtin_cpu_supports("avx512vnni") &&
                __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512dq");
    return hetc_avx512 | hetc_simd << 1;
}

/* A model's run takes back the choice hetc_configure made when it was
 * loaded (models share the kernel library, and so these flags). Two models
 * loaded with different choices (HETC_X86_PORTABLE, a testing switch) and
 * run at the same moment may each take the other's path: the paths compute
 * the same numbers, to rounding. */
HETC_KERNEL void hetc_use_isa(int isa) {
    hetc_avx512 = isa & 1;
    hetc_simd = (isa >> 1) & 1;
}

/* The int8 tokens of x in the scratch (from the arena, 64-byte aligned): the
 * codes (M*K bytes, then 64 bytes of slack for 16-byte loads near the end),
 * then their scales (M*K/G floats). */
static void hetc_quantize_into(const float *x, long M, long K, long G, int shift,
                               unsigned char *scratch, uint8_t **q, float **sx) {
    *q = scratch;
    *sx = (float *)(scratch + (M * K + 63) / 64 * 64 + 64);
    hetc_quantize_rows(x, M, K, G, *q, *sx, shift);
}

/* y = x W^T (+ b) with W integer in row blocks (layout above); scales f16
 * when half, else f32. */
HETC_KERNEL void k_linear_rb(float *restrict y, const float *restrict x, const uint8_t *restrict packed,
                             const void *restrict sw, int half, const float *b, long M, long N, long K,
                             long G, int bits, int nn, int mm, unsigned char *scratch) {
    uint8_t *q;
    float *sx;
    hetc_quantize_into(x, M, K, G, 128, scratch, &q, &sx);
    hetc_rb_shape c = hetc_rb(K, G, bits, nn, mm);
    c.half = half;
    if (hetc_simd)
        hetc_linear_rb_vnni(y, q, sx, packed, sw, b, M, N, c);
    else
        hetc_linear_rb_portable(y, q, sx, 0, packed, sw, b, M, N, c);
}

/* y = x W^T (+ b) with N:M integer weights in row blocks and float
 * activations (above). */
HETC_KERNEL void k_linear_rbf(float *restrict y, const float *restrict x,
                              const uint8_t *restrict packed, const void *restrict sw, int half,
                              const float *b, long M, long N, long K, long G, int bits, int nn,
                              int mm) {
    hetc_rb_shape c = hetc_rb(K, G, bits, nn, mm);
    c.half = half;
    if (hetc_simd && c.pb)
        hetc_linear_rbf_vnni(y, x, packed, sw, b, M, N, c);
    else
        hetc_linear_rb_portable(y, 0, 0, x, packed, sw, b, M, N, c);
}

/* Codes with f32 activations on many tokens: decoding per pass of 8 tokens
 * cost more than the products there (Swin-T's 3136-token layers in int4
 * ran slower than in f32), so from HETC_Q_PANEL_M tokens each task decodes
 * its 3 blocks once (w = code x scale, one rounding) into float panels and
 * runs the float panel kernel on a chunk of tokens. Alone on 2 threads,
 * int4 g128: 3136 x 96 -> 384 1017 -> 802 us, 512 x 768 -> 3072 9.6 -> 7.4
 * ms, 128 x 768 -> 768 576 -> 506 us; with 32 or 64 tokens slower (the
 * decoded panels, 147 KB for K = 768, read back from L2), hence 128. */
#define HETC_Q_PANEL_M 128

__attribute__((target("avx512f,avx512bw")))
static void hetc_q_decode_block(float *restrict buf, const uint8_t *restrict blkc,
                                const float *restrict sblk, long K, long G, int bits) {
    const __m512 codes4 = HETC_INT4_VALUES;
    if (bits == 8) {
        for (long k = 0; k < K; k++) {
            __m512 w = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
                _mm_loadu_si128((const __m128i *)(blkc + k * 16))));
            _mm512_store_ps(buf + k * 16, _mm512_mul_ps(w, _mm512_loadu_ps(sblk + k / G * 16)));
        }
        return;
    }
    for (long k = 0; k < K; k += 2) { /* k and k + 1 share a byte and a group (G even) */
        __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(blkc + k * 8)));
        __m512 sv = _mm512_loadu_ps(sblk + k / G * 16);
        _mm512_store_ps(buf + k * 16, _mm512_mul_ps(_mm512_permutexvar_ps(idx, codes4), sv));
        _mm512_store_ps(buf + (k + 1) * 16,
                        _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(idx, 4), codes4),
                                      sv));
    }
}

__attribute__((target("avx512f,avx512bw")))
static void hetc_linear_q_panels(float *restrict y, const float *restrict x,
                                 const uint8_t *restrict codes, const float *restrict scale,
                                 const float *b, long M, long N, long K, long G, int bits) {
    long groups = K / G, blocks = (N + 15) / 16, step_bytes = bits == 8 ? 16 : 8;
    long sets = (blocks + 2) / 3, chunk = hetc_panel_chunk(M), chunks = (M + chunk - 1) / chunk;
    #pragma omp parallel if (hetc_linear_threads(M, N, K))
    {
        float *buf = hetc_floats(3 * K * 16, 0);
        #pragma omp for collapse(2) schedule(static)
        for (long ci = 0; ci < chunks; ci++)
            for (long si = 0; si < sets; si++) {
                long p0 = si * 3, left = blocks - p0 < 3 ? blocks - p0 : 3;
                long m0 = ci * chunk, mc = M - m0 < chunk ? M - m0 : chunk;
                for (long q = 0; q < left; q++)
                    hetc_q_decode_block(buf + q * K * 16, codes + (p0 + q) * K * step_bytes,
                                        scale + (p0 + q) * groups * 16, K, G, bits);
                hetc_panel_group(y + m0 * N, x + m0 * K, buf, 0, b, p0, 0, left, N, K, 0, K, mc);
            }
        free(buf);
    }
}

/* y = x W^T (+ b) with integer weights and float activations (layout above). */
HETC_KERNEL void k_linear_q(float *restrict y, const float *restrict x, const uint8_t *restrict codes,
                            const float *restrict scale, const float *b, long M, long N, long K,
                            long G, int bits) {
    if (hetc_avx512 && M >= HETC_Q_PANEL_M)
        hetc_linear_q_panels(y, x, codes, scale, b, M, N, K, G, bits);
    else if (hetc_avx512)
        hetc_linear_q_avx512(y, x, codes, scale, b, M, N, K, G, bits);
    else
        hetc_linear_q_portable(y, x, codes, scale, b, M, N, K, G, bits);
}

/* y = x W^T (+ b) with a constant float weight in panels (layout above),
 * then a fused region's steps (ep, nep) on each group of panels while it is
 * in cache (MiniLM's GELU layers: 0.76 -> 0.71 ms in a model run, with the
 * vector GELU). */
HETC_KERNEL void k_linear_panel(float *restrict y, const float *restrict x, const void *w, int kind,
                                const float *b, long M, long N, long K, const hetc_step *ep,
                                int nep) {
    if (hetc_avx512)
        hetc_linear_panel_avx512(y, x, w, kind, b, M, N, K, ep, nep);
    else
        hetc_linear_panel_portable(y, x, w, kind, b, M, N, K, ep, nep);
}

/* x quantized and dequantized per token and group, for layers whose weight
 * layout has no integer kernel: the same numbers, computed in floats. */
HETC_KERNEL void k_fake_quant_rows(float *y, const float *x, long M, long K, long G) {
    long groups = K / G;
    for (long m = 0; m < M; m++)
        for (long g = 0; g < groups; g++) {
            const float *px = x + m * K + g * G;
            float sc = hetc_group_scale(px, G), div = sc == 0.f ? 1.f : sc;
            for (long i = 0; i < G; i++) y[m * K + g * G + i] = nearbyintf(px[i] / div) * sc;
        }
}

/* ---- convolution as a GEMM over output positions ------------------------ *
 * Dense and grouped convolutions with constant weights compute, per image
 * and group, y[o, p] = b[o] + sum_k w[o, k] col[k, p] with k = (c, ki, kj)
 * of the group and p = (oh, ow). Weights are packed per group in blocks of 8
 * output channels, k-major ([block][k][8], zero rows padding each group's
 * last block), so a tile of 8 channels x 32 positions keeps 16 accumulators
 * in registers and each k costs two vector loads and 8 broadcasts. col is x
 * itself for a 1x1, stride-1, unpadded convolution (rows P apart); else each
 * thread gathers 32-position tiles of it (implicit GEMM: the whole im2col
 * matrix never exists). */
#define HETC_CONV_TILE 32

/* The portable tile: rows (<= 8) channels x np (<= 32) positions, y's rows P
 * apart, the result's (flat: its first element's index there) fs apart. */
static inline void hetc_conv_tile_portable(float *restrict y, long P, long fs,
                                           const float *restrict col,
                                           long cs, const float *restrict wb, long K,
                                           const float *b, int rows, long np, long flat,
                                           long o0, const hetc_step *ep, int nep) {
    float acc[8][HETC_CONV_TILE] = {{0}};
    for (long k = 0; k < K; k++)
        for (int r = 0; r < 8; r++) {
            float wv = wb[k * 8 + r];
            for (int j = 0; j < HETC_CONV_TILE; j++) acc[r][j] += wv * (j < np ? col[k * cs + j] : 0.f);
        }
    for (int r = 0; r < rows; r++) {
        for (long j = 0; j < np; j++) y[r * P + j] = acc[r][j] + (b ? b[r] : 0.f);
        if (nep) hetc_epilogue_run(ep, nep, y + r * P, np, flat + r * fs, o0 + r, 0);
    }
}

/* min(max(v, lo), hi), v when NaN (as vmaxps/vminps with v second). */
static inline float hetc_clamp(float v, float lo, float hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

/* Whether the steps are a clamp (ReLU, ReLU6, max/min with constants): then
 * y -> min(max(y, *lo), *hi), a composition folded step by step (after
 * max(c): lo = max(lo, c), hi = max(hi, c); after min(c): hi = min(hi, c),
 * lo = min(lo, hi)); vmaxps/vminps keep y's NaN as hetc_binary1 does. */
static int hetc_epilogue_clamp(const hetc_step *ep, int nep, float *lo, float *hi) {
    float a = -INFINITY, b = INFINITY;
    for (int s = 0; s < nep; s++) {
        const hetc_step *st = ep + s;
        float c;
        int op;
        if (st->kind == E_UNARY && st->op == U_RELU) {
            c = 0.f;
            op = B_MAX;
        } else if (st->kind == E_SCALAR && (st->op == B_MAX || st->op == B_MIN)) {
            c = st->arg[0];
            op = st->op;
        } else {
            return 0;
        }
        if (c != c) return 0;
        if (op == B_MAX) {
            a = a > c ? a : c;
            b = b > c ? b : c;
        } else {
            b = b < c ? b : c;
            a = a < b ? a : b;
        }
    }
    *lo = a;
    *hi = b;
    return 1;
}

/* Whether every step has an AVX-512 form (hetc_epilogue_vec). */
static int hetc_epilogue_in_registers(const hetc_step *ep, int nep) {
    for (int s = 0; s < nep; s++) {
        int op = ep[s].op;
        if (ep[s].kind == E_UNARY ? !(op == U_RELU || op == U_NEG || op == U_ABS)
                                  : op == B_POW)
            return 0;
    }
    return 1;
}

/* How a conv tile takes its epilogue: a clamp in registers (lo, hi; *nep
 * becomes 0), else whether the steps run on each stored row in registers
 * (the return value) or one by one. */
static int hetc_tile_epilogue(const hetc_step *ep, int *nep, float *lo, float *hi) {
    *lo = -INFINITY;
    *hi = INFINITY;
    if (*nep && hetc_epilogue_clamp(ep, *nep, lo, hi)) *nep = 0;
    return hetc_epilogue_in_registers(ep, *nep);
}

/* The steps on 16 results in a register (lanes m of flat .. flat + 15, one
 * channel), as hetc_unary1 and hetc_binary1 define them (NaN included). */
__attribute__((target("avx512f"), always_inline))
static inline __m512 hetc_epilogue_vec(const hetc_step *ep, int nep, __m512 y, long flat,
                                       long chan, __mmask16 m) {
    const __m512 zero = _mm512_setzero_ps();
    for (int s = 0; s < nep; s++) {
        const hetc_step *st = ep + s;
        if (st->kind == E_UNARY) {
            if (st->op == U_RELU) y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(y, zero, _CMP_LT_OQ), zero);
            else if (st->op == U_NEG) y = _mm512_sub_ps(zero, y);
            else y = _mm512_abs_ps(y);
            continue;
        }
        if (st->kind != E_TENSOR && (st->op == B_MAX || st->op == B_MIN)) {
            /* vmaxps/vminps give their second operand when either is NaN:
             * y's NaN stays, as hetc_binary1 keeps it; a NaN bound (rare)
             * takes the general form below */
            float c = st->arg[st->kind == E_CHANNEL ? chan : 0];
            if (c == c) {
                y = st->op == B_MAX ? _mm512_max_ps(_mm512_set1_ps(c), y)
                                    : _mm512_min_ps(_mm512_set1_ps(c), y);
                continue;
            }
        }
        __m512 v = st->kind == E_TENSOR ? _mm512_maskz_loadu_ps(m, st->arg + flat)
                   : _mm512_set1_ps(st->arg[st->kind == E_CHANNEL ? chan : 0]);
        __m512 a = st->left ? v : y, b = st->left ? y : v;
        switch (st->op) {
        case B_ADD: y = _mm512_add_ps(a, b); break;
        case B_SUB: y = _mm512_sub_ps(a, b); break;
        case B_MUL: y = _mm512_mul_ps(a, b); break;
        case B_DIV: y = _mm512_div_ps(a, b); break;
        default: { /* max, min: a when it wins or is NaN, else b */
            __mmask16 wins = st->op == B_MAX ? _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ)
                                             : _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ);
            __mmask16 keep = wins | _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
            y = _mm512_mask_mov_ps(b, keep, a);
        }
        }
    }
    return y;
}

/* A tile's sums (rows of 8 output channels, two vectors: n0 and n1 <= 16
 * positions, the second at1 floats after the first) with the bias into rows
 * P apart at y, then its epilogue as
 * hetc_tile_epilogue chose: a small loop of constant trip count keeps acc in
 * registers (a clamp epilogue, lo/hi, costs two instructions there); other
 * epilogues then run on the stored rows, still in L1. */
__attribute__((target("avx512f"), always_inline))
static inline void hetc_tile_store(float *restrict y, long P, long fs, __m512 acc[8][2],
                                   const float *b, int rows, long n0, long n1, long at1,
                                   long flat, long o0, const hetc_step *ep, int nep, int vec,
                                   __m512 lo, __m512 hi) {
    __mmask16 m0 = hetc_rows16(n0), m1 = n1 > 0 ? hetc_rows16(n1) : 0;
    for (int r = 0; r < 8; r++)
        if (r < rows) {
            __m512 bias = _mm512_set1_ps(b ? b[r] : 0.f);
            __m512 v0 = _mm512_add_ps(acc[r][0], bias), v1 = _mm512_add_ps(acc[r][1], bias);
            v0 = _mm512_min_ps(hi, _mm512_max_ps(lo, v0));
            v1 = _mm512_min_ps(hi, _mm512_max_ps(lo, v1));
            _mm512_mask_storeu_ps(y + r * P, m0, v0);
            _mm512_mask_storeu_ps(y + r * P + at1, m1, v1);
        }
    for (int r = 0; nep && r < rows; r++) {
        float *row = y + r * P;
        if (!vec) {
            hetc_epilogue_run(ep, nep, row, n0, flat + r * fs, o0 + r, 0);
            if (n1 > 0) hetc_epilogue_run(ep, nep, row + at1, n1, flat + r * fs + at1, o0 + r, 0);
            continue;
        }
        _mm512_mask_storeu_ps(row, m0, hetc_epilogue_vec(ep, nep, _mm512_maskz_loadu_ps(m0, row),
                                                         flat + r * fs, o0 + r, m0));
        _mm512_mask_storeu_ps(row + at1, m1,
                              hetc_epilogue_vec(ep, nep, _mm512_maskz_loadu_ps(m1, row + at1),
                                                flat + r * fs + at1, o0 + r, m1));
    }
}

/* A tile of np <= 32 consecutive positions: hetc_tile_store's two vectors
 * side by side. */
__attribute__((target("avx512f"), always_inline))
static inline void hetc_tile_finish(float *restrict y, long P, long fs, __m512 acc[8][2],
                                    const float *b, int rows, long np, long flat, long o0,
                                    const hetc_step *ep, int nep, int vec, __m512 lo,
                                    __m512 hi) {
    hetc_tile_store(y, P, fs, acc, b, rows, np < 16 ? np : 16, np - 16, 16, flat, o0, ep, nep,
                    vec, lo, hi);
}

__attribute__((target("avx512f,prfchw"), always_inline))
static inline void hetc_conv_tile_avx512(float *restrict y, long P, long fs,
                                         const float *restrict col,
                                         long cs, const float *restrict wb, long K,
                                         const float *b, int rows, long np, long flat, long o0,
                                         const hetc_step *ep, int nep, int vec, __m512 lo,
                                         __m512 hi, const float *pf) {
    __m512 acc[8][2];
    for (int r = 0; r < 8; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    __mmask16 m0 = hetc_rows16(np), m1 = np > 16 ? hetc_rows16(np - 16) : 0;
    /* the next tile's output lines, owned before its stores: a 16 -> 96
     * channel layer on 112x112 writes 96 rows at once, more lines than a
     * core keeps in flight (0.38 -> 0.33 ms in a model run) */
    for (int r = 0; P != HETC_CONV_TILE && r < rows; r++) { /* not into a tile buffer */
        __builtin_prefetch(y + r * P + HETC_CONV_TILE, 1, 3);
        __builtin_prefetch(y + r * P + HETC_CONV_TILE + 16, 1, 3);
    }
    for (long k = 0; k < K; k++) {
        __m512 x0 = _mm512_maskz_loadu_ps(m0, col + k * cs);
        __m512 x1 = _mm512_maskz_loadu_ps(m1, col + k * cs + 16);
        if (pf) { /* the next tile's columns: its K rows lie a plane apart, a
                   * stride the hardware prefetcher does not follow (a
                   * 144 -> 24 layer on 56x56: 0.17 -> 0.13 ms in a run) */
            _mm_prefetch((const char *)(pf + k * cs), _MM_HINT_T0);
            _mm_prefetch((const char *)(pf + k * cs + 16), _MM_HINT_T0);
        }
        for (int r = 0; r < 8; r++) {
            __m512 wv = _mm512_set1_ps(wb[k * 8 + r]);
            acc[r][0] = _mm512_fmadd_ps(wv, x0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(wv, x1, acc[r][1]);
        }
    }
    hetc_tile_finish(y, P, fs, acc, b, rows, np, flat, o0, ep, nep, vec, lo, hi);
}

__attribute__((target("avx512f,prfchw")))
static void hetc_conv_tiles_avx512(float *y, long P, long fs, const float *col, long cs,
                                   const float *wp,
                                   long K, const float *b, long og, long b0, long b1, long np,
                                   long flat, long o0, const hetc_step *ep, int nep) {
    float lo, hi;
    int vec = hetc_tile_epilogue(ep, &nep, &lo, &hi);
    for (long blk = b0; blk < b1; blk++) {
        long rows = og - blk * 8 < 8 ? og - blk * 8 : 8;
        hetc_conv_tile_avx512(y + blk * 8 * P, P, fs, col, cs, wp + blk * K * 8, K,
                              b ? b + blk * 8 : 0, (int)rows, np, flat + blk * 8 * fs, o0 + blk * 8,
                              ep, nep, vec, _mm512_set1_ps(lo), _mm512_set1_ps(hi),
                              cs != HETC_CONV_TILE && blk == b0 ? col + HETC_CONV_TILE : 0);
    }
}

static void hetc_conv_tiles_portable(float *y, long P, long fs, const float *col, long cs,
                                     const float *wp, long K, const float *b, long og, long b0,
                                     long b1, long np, long flat, long o0, const hetc_step *ep,
                                     int nep) {
    for (long blk = b0; blk < b1; blk++) {
        long rows = og - blk * 8 < 8 ? og - blk * 8 : 8;
        hetc_conv_tile_portable(y + blk * 8 * P, P, fs, col, cs, wp + blk * K * 8, K,
                              b ? b + blk * 8 : 0, (int)rows, np, flat + blk * 8 * fs, o0 + blk * 8,
                              ep, nep);
    }
}

/* Blocks b0..b1 of image n and group g on the tile of np positions from p0,
 * its columns in col (rows cs apart). */
static void hetc_conv_task(float *y, const float *col, long cs, const float *wp, const float *b,
                           long O, long P, long K, long og, long blocks, long n, long g, long p0,
                           long np, long b0, long b1, const hetc_step *ep, int nep) {
    long flat = (n * O + g * og) * P + p0;
    const float *pw = wp + g * blocks * 8 * K, *pb = b ? b + g * og : 0;
    if (hetc_avx512)
        hetc_conv_tiles_avx512(y + flat, P, P, col, cs, pw, K, pb, og, b0, b1, np, flat, g * og, ep,
                               nep);
    else
        hetc_conv_tiles_portable(y + flat, P, P, col, cs, pw, K, pb, og, b0, b1, np, flat, g * og,
                                 ep, nep);
}

/* r[i] = x[2 * i] for i in lo .. hi: 16 at a time from two loads and one
 * vpermt2ps (the loop gcc makes of it takes 8, with a permute and a blend),
 * reading no element past x[2 * (hi - 1)]. */
__attribute__((target("avx512f")))
static void hetc_evens_avx512(float *restrict r, const float *restrict x, long lo, long hi) {
    const __m512i evens = hetc_evens16();
    for (long i = lo; i < hi; i += 16) {
        long n = hi - i < 16 ? hi - i : 16, reach = 2 * n - 1; /* elements read from 2 i */
        __m512 a = _mm512_maskz_loadu_ps(hetc_rows16(reach), x + 2 * i);
        __m512 b = _mm512_maskz_loadu_ps(hetc_rows16(reach > 16 ? reach - 16 : 0), x + 2 * i + 16);
        _mm512_mask_storeu_ps(r + i, hetc_rows16(n), _mm512_permutex2var_ps(a, evens, b));
    }
}

/* rows of n floats (rows ds and ss apart) in vectors, the tail masked:
 * gcc makes a plain loop a memcpy call per row, which cost more than a 7x7
 * plane's sums */
__attribute__((target("avx512f")))
static void hetc_copy_rows_avx512(float *restrict dst, long ds, const float *restrict src, long ss,
                                  long rows, long n) {
    __mmask16 tail = hetc_rows16(n % 16);
    for (long r = 0; r < rows; r++) {
        float *d = dst + r * ds;
        const float *s = src + r * ss;
        long i = 0;
        for (; i + 16 <= n; i += 16) _mm512_storeu_ps(d + i, _mm512_loadu_ps(s + i));
        if (tail) _mm512_mask_storeu_ps(d + i, tail, _mm512_maskz_loadu_ps(tail, s + i));
    }
}

/* ---- convolutions from padded rows, without im2col ------------------------- *
 * With few output channels (a 3-channel stem's 32) each im2col column feeds
 * few sums, and building the columns cost about half of what the sums did.
 * Here a task is a strip of HETC_ROWS_STRIP output rows: the input rows it
 * reads go once per input channel into a per-thread buffer, zero-padded,
 * with stride 2 each row's even and odd columns apart, so that every window
 * tap (c, ki, kj) is a run of consecutive floats at a fixed offset from a
 * tile's start. A tile is 8 output channels x 2 output rows x 16 columns,
 * on k_conv2d_gemm's packed weights, with its epilogue. */
#define HETC_ROWS_STRIP 8

typedef struct {
    long C, H, W, KH, KW, OH, OW, sh, sw, pt, pl, dh, dw;
    long Wr;   /* floats per buffer row and stride parity */
    long rows; /* input rows a strip reads */
} hetc_rows_shape;

static hetc_rows_shape hetc_rows_setup(long C, long H, long W, long KH, long KW, long OH, long OW,
                                       long sh, long sw, long pt, long pl, long dh, long dw) {
    hetc_rows_shape s = {C, H, W, KH, KW, OH, OW, sh, sw, pt, pl, dh, dw};
    /* output columns rounded up to 16, plus the farthest tap */
    s.Wr = ((OW + 15) / 16 * 16 + (KW - 1) * dw / sw + 15) / 16 * 16;
    s.rows = (HETC_ROWS_STRIP - 1) * sh + (KH - 1) * dh + 1;
    return s;
}

static long hetc_rows_buffer(const hetc_rows_shape *s) { return s->C * s->rows * s->sw * s->Wr; }

/* Whether k_conv2d_gemm runs from rows: AVX-512, one group, column stride 1
 * or 2, at most 64 output channels and 256 taps, a buffer of at most 256 KB
 * per thread. Alone on 2 threads against im2col: 3 -> 32 3x3 stride 2 on
 * 224x224 147 -> 102 us, 3 -> 64 7x7 stride 2 1143 -> 813, 16 -> 24 3x3 on
 * 56x56 130 -> 102; with more (32 -> 64, 3x3 stride 2 on 56x56) even, and
 * 64 -> 64 or 16 -> 128 3x3 on 56x56 1-6% slower. */
static int hetc_rows_take(const hetc_rows_shape *s, long O, long groups) {
    return hetc_avx512 && groups == 1 && (s->sw == 1 || s->sw == 2) && O <= 64 &&
           s->C * s->KH * s->KW <= 256 && hetc_rows_buffer(s) * (long)sizeof(float) <= 262144;
}

/* Image x's input rows for the strip of output rows from s0 into buf
 * ([C][rows][sw][Wr]); columns outside j0 .. j1 of each parity are never
 * written, so they keep the buffer's zeros. */
__attribute__((target("avx512f")))
static void hetc_rows_fill(float *buf, const hetc_rows_shape *s, const float *x, long s0) {
    for (long c = 0; c < s->C; c++)
        for (long i = 0; i < s->rows; i++) {
            long ih = s0 * s->sh + i - s->pt;
            for (long p = 0; p < s->sw; p++) {
                float *d = buf + ((c * s->rows + i) * s->sw + p) * s->Wr;
                long q = p - s->pl; /* d[j] = input column j sw + q */
                long j0 = q >= 0 ? 0 : (-q + s->sw - 1) / s->sw;
                long j1 = s->W - 1 - q < 0 ? 0 : (s->W - 1 - q) / s->sw + 1;
                j1 = j1 < s->Wr ? j1 : s->Wr;
                if (j1 <= j0) continue;
                const float *row = x + (c * s->H + ih) * s->W + q;
                if (ih < 0 || ih >= s->H)
                    memset(d + j0, 0, sizeof(float) * (j1 - j0));
                else if (s->sw == 1)
                    hetc_copy_rows_avx512(d + j0, 0, row + j0, 0, 1, j1 - j0);
                else
                    hetc_evens_avx512(d, row, j0, j1);
            }
        }
}

__attribute__((target("avx512f,prfchw")))
static void hetc_rows_strip(float *y, const float *buf, const hetc_rows_shape *s,
                            const long *offs, const float *wp, const float *b, long O, long n,
                            long s0, const hetc_step *ep, int nep) {
    long K = s->C * s->KH * s->KW, P = s->OH * s->OW, OW = s->OW, blocks = (O + 7) / 8;
    long s1 = s0 + HETC_ROWS_STRIP < s->OH ? s0 + HETC_ROWS_STRIP : s->OH;
    long below = s->sh * s->sw * s->Wr; /* from an output row's taps to the next row's */
    float lo_, hi_;
    int vec = hetc_tile_epilogue(ep, &nep, &lo_, &hi_);
    const __m512 lo = _mm512_set1_ps(lo_), hi = _mm512_set1_ps(hi_);
    for (long oh = s0; oh < s1; oh += 2)
        for (long ow = 0; ow < OW; ow += 16) {
            const float *base = buf + (oh - s0) * below + ow;
            long n0 = OW - ow < 16 ? OW - ow : 16, n1 = oh + 1 < s1 ? n0 : 0;
            for (long blk = 0; blk < blocks; blk++) {
                const float *wb = wp + blk * K * 8;
                __m512 acc[8][2];
                for (int r = 0; r < 8; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
                for (long k = 0; k < K; k++) {
                    const float *at = base + offs[k];
                    __m512 x0 = _mm512_loadu_ps(at), x1 = _mm512_loadu_ps(at + below);
                    for (int r = 0; r < 8; r++) {
                        __m512 wv = _mm512_set1_ps(wb[k * 8 + r]);
                        acc[r][0] = _mm512_fmadd_ps(wv, x0, acc[r][0]);
                        acc[r][1] = _mm512_fmadd_ps(wv, x1, acc[r][1]);
                    }
                }
                long rows = O - blk * 8 < 8 ? O - blk * 8 : 8;
                long flat = (n * O + blk * 8) * P + oh * OW + ow;
                hetc_tile_store(y + flat, P, P, acc, b ? b + blk * 8 : 0, (int)rows, n0, n1, OW,
                                flat, blk * 8, ep, nep, vec, lo, hi);
            }
        }
}

static void hetc_conv_rows(float *y, const float *x, const float *wp, const float *b, long N,
                           long O, const hetc_rows_shape *s, const hetc_step *ep, int nep) {
    long strips = (s->OH + HETC_ROWS_STRIP - 1) / HETC_ROWS_STRIP;
    long offs[256]; /* tap k = (c, ki, kj): its floats from a tile's start */
    for (long c = 0; c < s->C; c++)
        for (long ki = 0; ki < s->KH; ki++)
            for (long kj = 0; kj < s->KW; kj++)
                offs[(c * s->KH + ki) * s->KW + kj] =
                    ((c * s->rows + ki * s->dh) * s->sw + kj * s->dw % s->sw) * s->Wr +
                    kj * s->dw / s->sw;
    #pragma omp parallel
    {
        float *buf = hetc_floats(hetc_rows_buffer(s), 1);
        #pragma omp for collapse(2) schedule(static)
        for (long n = 0; n < N; n++)
            for (long t = 0; t < strips; t++) {
                hetc_rows_fill(buf, s, x + n * s->C * s->H * s->W, t * HETC_ROWS_STRIP);
                hetc_rows_strip(y, buf, s, offs, wp, b, O, n, t * HETC_ROWS_STRIP, ep, nep);
            }
        free(buf);
    }
}

/* y = conv(x, w) (+ b), NCHW, w packed as above (wp). */
HETC_KERNEL void k_conv2d_gemm(float *restrict y, const float *restrict x, const float *restrict wp,
                               const float *b, long N, long C, long H, long W, long O, long KH,
                               long KW, long OH, long OW, long sh, long sw, long pt, long pl, long dh,
                               long dw, long groups, const hetc_step *ep, int nep) {
    long cg = C / groups, og = O / groups, K = cg * KH * KW, P = OH * OW;
    long blocks = (og + 7) / 8, tiles = (P + HETC_CONV_TILE - 1) / HETC_CONV_TILE;
    int direct = KH == 1 && KW == 1 && sh == 1 && sw == 1 && pt == 0 && pl == 0 && OH == H &&
                 OW == W;
    if (direct) {
        if (tiles <= 4) {
            /* few positions (up to 128: 7x7 planes): the tasks are blocks of
             * channels and each runs every tile, so its weights are read
             * from memory once, then from cache */
            #pragma omp parallel for collapse(3) schedule(static)
            for (long n = 0; n < N; n++)
                for (long g = 0; g < groups; g++)
                    for (long blk = 0; blk < blocks; blk++)
                        for (long t = 0; t < tiles; t++) {
                            long p0 = t * HETC_CONV_TILE;
                            long np = P - p0 < HETC_CONV_TILE ? P - p0 : HETC_CONV_TILE;
                            hetc_conv_task(y, x + (n * C + g * cg) * P + p0, P, wp, b, O, P, K,
                                           og, blocks, n, g, p0, np, blk, blk + 1, ep, nep);
                        }
            return;
        }
        /* tasks: (image, group, span of tiles, run of blocks): the span's
         * columns (at most 32 KB) stay in cache while the blocks of the run
         * pass over them, each block over the whole span, so that it writes
         * long runs of a few rows (16 -> 96 channels on 112x112: 0.33 ->
         * 0.28 ms in a model run; a tile at a time wrote 96 rows at once);
         * runs split the blocks when there are too few spans to share out
         * evenly */
        long span = 32768 / (K * HETC_CONV_TILE * (long)sizeof(float));
        span = span < 1 ? 1 : span > tiles ? tiles : span;
        long spans = (tiles + span - 1) / span;
        long runs = (8 * omp_get_max_threads() + spans - 1) / spans;
        runs = runs < 1 ? 1 : runs > blocks ? blocks : runs;
        #pragma omp parallel for collapse(4) schedule(static)
        for (long n = 0; n < N; n++)
            for (long g = 0; g < groups; g++)
                for (long sp = 0; sp < spans; sp++)
                    for (long r = 0; r < runs; r++)
                        for (long blk = r * blocks / runs; blk < (r + 1) * blocks / runs; blk++)
                            for (long t = sp * span; t < (sp + 1) * span && t < tiles; t++) {
                                long p0 = t * HETC_CONV_TILE;
                                long np = P - p0 < HETC_CONV_TILE ? P - p0 : HETC_CONV_TILE;
                                hetc_conv_task(y, x + (n * C + g * cg) * P + p0, P, wp, b, O, P,
                                               K, og, blocks, n, g, p0, np, blk, blk + 1, ep,
                                               nep);
                            }
        return;
    }
    hetc_rows_shape rs = hetc_rows_setup(C, H, W, KH, KW, OH, OW, sh, sw, pt, pl, dh, dw);
    if (hetc_rows_take(&rs, O, groups)) {
        hetc_conv_rows(y, x, wp, b, N, O, &rs, ep, nep);
        return;
    }
    #pragma omp parallel
    {
        float *col = hetc_floats(K * HETC_CONV_TILE, 0);
        #pragma omp for collapse(3) schedule(static)
        for (long n = 0; n < N; n++)
            for (long g = 0; g < groups; g++)
                for (long t = 0; t < tiles; t++) {
                    long p0 = t * HETC_CONV_TILE, np = P - p0 < HETC_CONV_TILE ? P - p0
                                                                           : HETC_CONV_TILE;
                    const float *px = x + (n * C + g * cg) * H * W;
                    /* the tile's positions as runs along output rows: each
                     * (c, ki, kj) row of col is, per run, zeros, a strided
                     * copy of one input row, zeros. The runs and their
                     * bounds found once per tile and (ki, kj), not per
                     * channel: their divisions had cost about what a
                     * 3-channel stem's sums did. */
                    long at[HETC_CONV_TILE], oh_[HETC_CONV_TILE], ow_[HETC_CONV_TILE],
                        len[HETC_CONV_TILE], runs = 0;
                    for (long j = 0; j < np; runs++) {
                        at[runs] = j;
                        oh_[runs] = (p0 + j) / OW;
                        ow_[runs] = (p0 + j) % OW;
                        len[runs] = OW - ow_[runs] < np - j ? OW - ow_[runs] : np - j;
                        j += len[runs];
                    }
                    for (long ki = 0; ki < KH; ki++)
                        for (long kj = 0; kj < KW; kj++)
                            for (long u = 0; u < runs; u++) {
                                long run = len[u];
                                long ih = oh_[u] * sh - pt + ki * dh, iw0 = ow_[u] * sw - pl + kj * dw;
                                long lo = 0, hi = 0; /* run indices inside the row */
                                if (ih >= 0 && ih < H) {
                                    lo = iw0 >= 0 ? 0 : (-iw0 + sw - 1) / sw;
                                    hi = iw0 >= W ? 0 : (W - iw0 + sw - 1) / sw;
                                    lo = lo < run ? lo : run;
                                    hi = hi < run ? hi : run;
                                    hi = hi > lo ? hi : lo;
                                }
                                for (long c = 0; c < cg; c++) {
                                    float *r = col + ((c * KH + ki) * KW + kj) * HETC_CONV_TILE +
                                               at[u];
                                    const float *xr = lo < hi ? px + (c * H + ih) * W + iw0 : px;
                                    for (long i = 0; i < lo; i++) r[i] = 0.f;
                                    /* strides 1 and 2 as constants: loops that
                                     * vectorize (the copy was over half of a
                                     * 3-channel stem's time) */
                                    if (sw == 1)
                                        for (long i = lo; i < hi; i++) r[i] = xr[i];
                                    else if (sw == 2 && hetc_avx512)
                                        hetc_evens_avx512(r, xr, lo, hi);
                                    else if (sw == 2)
                                        for (long i = lo; i < hi; i++) r[i] = xr[2 * i];
                                    else
                                        for (long i = lo; i < hi; i++) r[i] = xr[i * sw];
                                    for (long i = hi; i < run; i++) r[i] = 0.f;
                                }
                            }
                    hetc_conv_task(y, col, HETC_CONV_TILE, wp, b, O, P, K, og, blocks, n, g, p0,
                                   np, 0, blocks, ep, nep);
                }
        free(col);
    }
}

/* ---- 1x1 convolutions on few positions ------------------------------------ *
 * With few positions per image (7x7 or 14x14 planes, P up to 256) and many
 * channels, the row tiles above (8 output channels x 32 positions) run
 * half-empty vectors and short tiles. Here output channels are the lanes:
 * w in float panels (16 output channels per panel, k-major: [O/16][C][16],
 * zero rows padding the last, as k_linear_panel's), 3 panels x T positions
 * of accumulators, each position's x[k] broadcast (3 weight loads and T
 * broadcasts per 3T FMAs). A tile is stored transposed, position-major
 * into the NCHW rows; the bias and a clamp in registers, other epilogue
 * steps on the stored rows. */
#define HETC_PW_PANELS 3
#define HETC_PW_POSITIONS 8

/* acc[t][q] += x[k] of position t (at xk[t * ts]) times panel q0 + q's
 * weights at k; the next group's weights (pf) into L2 */
__attribute__((target("avx512f"), always_inline))
static inline void hetc_pw_step(__m512 acc[HETC_PW_POSITIONS][HETC_PW_PANELS],
                                const float *restrict wp, long K, long k, long q0, const int Q,
                                const int T, const float *xk, const long ts, const char *pf) {
    __m512 wv[HETC_PW_PANELS];
    for (int q = 0; q < Q; q++) wv[q] = _mm512_loadu_ps(wp + ((q0 + q) * K + k) * 16);
    if (pf) _mm_prefetch(pf + k * 64, _MM_HINT_T1);
    for (int t = 0; t < T; t++) {
        __m512 xv = _mm512_set1_ps(xk[t * ts]);
        for (int q = 0; q < Q; q++) acc[t][q] = _mm512_fmadd_ps(xv, wv[q], acc[t][q]);
    }
}

__attribute__((target("avx512f"), always_inline))
static inline void hetc_pw_tile_avx512(float *restrict y, const float *restrict x,
                                       const float *restrict wp, const float *b, long P, long K,
                                       long O, long p0, long q0, const int Q, const int T,
                                       __m512 lo, __m512 hi, const char *pf, int layout) {
    __m512 acc[HETC_PW_POSITIONS][HETC_PW_PANELS];
    for (int t = 0; t < T; t++)
        for (int q = 0; q < Q; q++) acc[t][q] = _mm512_setzero_ps();
    if (!(layout & HETC_X_BLOCKED))
        for (long k = 0; k < K; k++) {
            /* x's rows 16 ahead: the first broadcast of each row waited on
             * its line (112 -> 672 on 14x14: 0.19 -> 0.17 ms in a model run) */
            _mm_prefetch((const char *)(x + (k + 16) * P + p0), _MM_HINT_T0);
            hetc_pw_step(acc, wp, K, k, q0, Q, T, x + k * P + p0, 1, pf);
        }
    else /* blocks of 16 channels: x[k] of position t at xk[t * 16 + k % 16] */
        for (long kb = 0; kb < K; kb += 16) {
            const float *xk = x + kb * P + p0 * 16;
            for (int t = 0; t < T; t++) /* the next block's lines, one per position */
                _mm_prefetch((const char *)(xk + 16 * P + t * 16), _MM_HINT_T0);
            for (long k = kb; k < kb + 16; k++)
                hetc_pw_step(acc, wp, K, k, q0, Q, T, xk + (k - kb), 16, pf);
        }
    for (int q = 0; q < Q; q++) {
        long o0 = (q0 + q) * 16, rows = O - o0 < 16 ? O - o0 : 16;
        __m512 bias = b ? _mm512_maskz_loadu_ps(hetc_rows16(rows), b + o0) : _mm512_setzero_ps();
        if (layout & HETC_Y_BLOCKED) { /* a whole block of 16 channels per position */
            for (int t = 0; t < T; t++)
                _mm512_storeu_ps(y + (o0 * P + (p0 + t) * 16), _mm512_min_ps(hi, _mm512_max_ps(
                                     lo, _mm512_add_ps(acc[t][q], bias))));
            continue;
        }
        float tile[HETC_PW_POSITIONS][16];
        for (int t = 0; t < T; t++)
            _mm512_storeu_ps(tile[t],
                             _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_add_ps(acc[t][q], bias))));
        for (long l = 0; l < rows; l++)
            for (int t = 0; t < T; t++) y[(o0 + l) * P + p0 + t] = tile[t][l];
    }
}

/* T (1 to 8) a constant in each call, so acc stays in registers. */
#define HETC_PW_CASE(T_)                                                                  \
    case T_:                                                                              \
        if (Q == 3)                                                                       \
            hetc_pw_tile_avx512(y, x, wp, b, P, K, O, p0, q0, 3, T_, lo, hi, pf, layout); \
        else if (Q == 2)                                                                  \
            hetc_pw_tile_avx512(y, x, wp, b, P, K, O, p0, q0, 2, T_, lo, hi, pf, layout); \
        else                                                                              \
            hetc_pw_tile_avx512(y, x, wp, b, P, K, O, p0, q0, 1, T_, lo, hi, pf, layout); \
        break;

__attribute__((target("avx512f")))
static void hetc_pw_task_avx512(float *restrict y, const float *restrict x,
                                const float *restrict wp, const float *b, long P, long K, long O,
                                long p0, long T, long q0, long Q, float lo_, float hi_,
                                const char *pf, int layout) {
    __m512 lo = _mm512_set1_ps(lo_), hi = _mm512_set1_ps(hi_);
    switch (T) {
        HETC_PW_CASE(8) HETC_PW_CASE(7) HETC_PW_CASE(6) HETC_PW_CASE(5)
        HETC_PW_CASE(4) HETC_PW_CASE(3) HETC_PW_CASE(2) default: HETC_PW_CASE(1)
    }
}

static void hetc_pw_task_portable(float *restrict y, const float *restrict x,
                                  const float *restrict wp, const float *b, long P, long K,
                                  long O, long p0, long T, long q0, long Q, float lo, float hi,
                                  int layout) {
    for (long q = q0; q < q0 + Q; q++)
        for (long t = 0; t < T; t++) {
            float acc[16] = {0};
            for (long k = 0; k < K; k++) {
                float xv = layout & HETC_X_BLOCKED ? x[((k >> 4) * P + p0 + t) * 16 + (k & 15)]
                                                   : x[k * P + p0 + t];
                for (int l = 0; l < 16; l++) acc[l] += xv * wp[(q * K + k) * 16 + l];
            }
            for (long l = 0; l < 16 && q * 16 + l < O; l++) {
                float v = hetc_clamp(acc[l] + (b ? b[q * 16 + l] : 0.f), lo, hi);
                if (layout & HETC_Y_BLOCKED) y[(q * P + p0 + t) * 16 + l] = v;
                else y[(q * 16 + l) * P + p0 + t] = v;
            }
        }
}

/* How the channel-lane 1x1 kernels share a layer among threads: they split
 * the positions (each reads every weight, half the activations) when the
 * weights are the smaller of the two, else the panels; a thread's panels go
 * in groups of 2 or 3 of even sizes (320 channels: 10 panels a thread,
 * 3 + 2 + 3 + 2, where groups of 3 from the first panel on gave one thread
 * 12 panels, the other 8). A task (run r, chunk c, group g) covers tiles
 * [t0, t1) of panels [q0, q0 + Q). */
typedef struct {
    long panels, tiles, runs, chunks, groups;
} hetc_pw_split;

static hetc_pw_split hetc_pw_split_of(long P, long O) {
    hetc_pw_split s;
    s.panels = (O + 15) / 16;
    s.tiles = (P + HETC_PW_POSITIONS - 1) / HETC_PW_POSITIONS;
    long threads = omp_get_max_threads();
    long runs = O <= P ? threads : 1, chunks = O <= P ? 1 : threads;
    s.runs = runs < 1 ? 1 : runs > s.tiles ? s.tiles : runs;
    s.chunks = chunks < 1 ? 1 : chunks > s.panels ? s.panels : chunks;
    long most = (s.panels + s.chunks - 1) / s.chunks;
    s.groups = (most + HETC_PW_PANELS - 1) / HETC_PW_PANELS; /* per chunk, at most */
    return s;
}

/* Task (r, c, g)'s panels and tiles; 0 when chunk c has fewer groups. */
static inline int hetc_pw_task_of(const hetc_pw_split *s, long r, long c, long g, long *q0,
                                  long *Q, long *t0, long *t1) {
    long a = c * s->panels / s->chunks, m = (c + 1) * s->panels / s->chunks - a;
    long gs = (m + HETC_PW_PANELS - 1) / HETC_PW_PANELS; /* this chunk's groups */
    if (g >= gs) return 0;
    *q0 = a + g * m / gs;
    *Q = a + (g + 1) * m / gs - *q0;
    *t0 = r * s->tiles / s->runs;
    *t1 = (r + 1) * s->tiles / s->runs;
    return 1;
}

/* A task's epilogue steps not in registers, once per channel row of its
 * run of positions, while the rows are in cache. */
static void hetc_pw_task_epilogue(float *yn, long n, long P, long O, long q0, long Q, long t0,
                                  long t1, const hetc_step *ep, int nep) {
    long p0 = t0 * HETC_PW_POSITIONS, p1 = t1 * HETC_PW_POSITIONS;
    p1 = p1 < P ? p1 : P;
    for (long o = q0 * 16; nep && p1 > p0 && o < (q0 + Q) * 16 && o < O; o++)
        hetc_epilogue_run(ep, nep, yn + o * P + p0, p1 - p0, (n * O + o) * P + p0, o, 0);
}

/* Runs a channel-lane 1x1 kernel's tiles as hetc_pw_split shares them:
 * tile(ctx, n, t, t0, q0, Q) computes tile t of image n (its task's tiles
 * begin at t0) for panels [q0, q0 + Q); then each task's epilogue steps. */
typedef void (*hetc_pw_tile_fn)(const void *ctx, long n, long t, long t0, long q0, long Q);

static void hetc_pw_tasks(float *y, long N, long P, long O, hetc_pw_tile_fn tile,
                          const void *ctx, const hetc_step *ep, int nep) {
    hetc_pw_split s = hetc_pw_split_of(P, O);
    #pragma omp parallel for collapse(4) schedule(static)
    for (long n = 0; n < N; n++)
        for (long r = 0; r < s.runs; r++)
            for (long c = 0; c < s.chunks; c++)
                for (long g = 0; g < s.groups; g++) {
                    long q0, Q, t0, t1;
                    if (!hetc_pw_task_of(&s, r, c, g, &q0, &Q, &t0, &t1)) continue;
                    for (long t = t0; t < t1; t++) tile(ctx, n, t, t0, q0, Q);
                    hetc_pw_task_epilogue(y + n * O * P, n, P, O, q0, Q, t0, t1, ep, nep);
                }
}

/* y = conv1x1(x, w) (+ b), stride 1, no padding, one group; x and y NCHW
 * or, as `layout` says, in blocks of 16 channels (HETC_X_BLOCKED,
 * HETC_Y_BLOCKED: [N][C/16][P][16], C and O multiples of 16; a blocked y
 * takes a clamp as its only epilogue). A task is a run of positions (all of
 * them, or one run per thread) for a group of panels: epilogue steps not in
 * registers run once per channel row of the run rather than per tile. In
 * one model run, 672->112 on 14x14 took 0.19 ms split by positions against
 * 0.33 ms split by channels in short runs. */
typedef struct {
    float *y;
    const float *x, *wp, *b;
    long P, C, O, panels;
    float lo, hi;
    int layout;
} hetc_pw_args;

static void hetc_pw_tile(const void *ctx, long n, long t, long t0, long q0, long Q) {
    const hetc_pw_args *a = ctx;
    long P = a->P, C = a->C, O = a->O, p0 = t * HETC_PW_POSITIONS;
    long T = P - p0 < HETC_PW_POSITIONS ? P - p0 : HETC_PW_POSITIONS;
    /* the next panels' weights (up to 3 * C lines), C lines per tile, into
     * L2 while this group's tiles compute: the first tile of a group
     * otherwise waits on memory (3-5% on the 7x7 layers in a model run) */
    long Qn = a->panels - q0 - Q < HETC_PW_PANELS ? a->panels - q0 - Q : HETC_PW_PANELS;
    const char *pf = t - t0 < Qn ? (const char *)(a->wp + (q0 + Q) * C * 16) + (t - t0) * C * 64
                                 : 0;
    if (hetc_avx512)
        hetc_pw_task_avx512(a->y + n * O * P, a->x + n * C * P, a->wp, a->b, P, C, O, p0, T, q0,
                            Q, a->lo, a->hi, pf, a->layout);
    else
        hetc_pw_task_portable(a->y + n * O * P, a->x + n * C * P, a->wp, a->b, P, C, O, p0, T,
                              q0, Q, a->lo, a->hi, a->layout);
}

HETC_KERNEL void k_conv1x1_panels(float *restrict y, const float *restrict x, const float *restrict wp,
                                  const float *b, long N, long C, long P, long O, int layout,
                                  const hetc_step *ep, int nep) {
    float lo = -INFINITY, hi = INFINITY;
    if (nep && (hetc_avx512 || layout & HETC_Y_BLOCKED) && hetc_epilogue_clamp(ep, nep, &lo, &hi))
        nep = 0; /* in registers */
    if (nep && layout & HETC_Y_BLOCKED) {
        hetc_fail("k_conv1x1_panels: a blocked result takes a clamp as its only epilogue");
        return;
    }
    hetc_pw_args a = {y, x, wp, b, P, C, O, (O + 15) / 16, lo, hi, layout};
    hetc_pw_tasks(y, N, P, O, hetc_pw_tile, &a, ep, nep);
}

/* ---- 1x1 convolutions with int8 activations, output channels in lanes --- *
 * The integer twin of k_conv1x1_panels, for act_group = C (one scale per
 * pixel, as per-channel weights give), in the same layouts (NCHW or blocks
 * of 16 channels) and tasks. x is quantized per pixel as the row-block
 * kernels do (code + 128, so vpdpbusd takes u8 activations against s8
 * weights) into dwords, dword (k, p) holding channels 4k..4k+3 of pixel p
 * (code 128, a zero, past C): at k * P + p for NCHW x, so the quantizer
 * writes whole vectors of positions, at p * C4 + k for blocked x, a
 * position's channels side by side as it reads them. A position's 4
 * channels are one broadcast. Weights: panels of 16 output channels of s8
 * codes (int4 widened), [O/16][C4][16][4], one vpdpbusd adding 4 products
 * into each channel's lane; per output channel (16 per panel, zeros padding
 * the last) the accumulator's start, -128 times its codes' sum (the shift's
 * share), and its scale. Every sum is an exact integer and
 * y = acc * s_x[p] * s_w[o] + b[o]. Against the float panels on
 * EfficientNet-Lite0's 14x14 and 7x7 layers: see docs/x86.md. */

/* Where channel c of position p lies in one image's P positions: NCHW, or
 * blocks of 16 channels (HETC_X_BLOCKED). */
static inline long hetc_channel_at(long c, long p, long P, int layout) {
    return layout & HETC_X_BLOCKED ? ((c >> 4) * P + p) * 16 + (c & 15) : c * P + p;
}

/* The quantizer's output in the scratch: dwords, then the pixels' scales. */
static inline float *hetc_q8_scales(uint32_t *xq, long N, long C4, long P) {
    return (float *)(xq + (N * C4 * P + 15) / 16 * 16);
}

/* rint(v[j] / div) for four vectors, as the interpreter rounds (its
 * division exact, then half to even), from v * r, r within 2 ulp of
 * 1 / div: a vdivps per vector made quantizing most of an integer 1x1
 * convolution's time on large planes. The product lies within 1e-4 of the
 * exact quotient for |v / div| <= 127, so where it is more than 0.001 from
 * a half-integer both round alike; the rest (rare, and NaN or infinite
 * products) take the division, NaN giving code 0. */
__attribute__((target("avx512f,avx512bw,avx512dq"), always_inline))
static inline void hetc_q8_codes4(const __m512 v[4], __m512 div, __m512 r, __m512i q[4]) {
    const int near = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    __mmask16 sure[4];
    for (int j = 0; j < 4; j++) {
        __m512 t = _mm512_mul_ps(v[j], r);
        q[j] = _mm512_cvt_roundps_epi32(t, near);
        /* t - rint(t), one vreduceps */
        sure[j] = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_reduce_ps(t, _MM_FROUND_NO_EXC)),
                                     _mm512_set1_ps(0.499f), _CMP_LT_OQ);
    }
    if ((sure[0] & sure[1] & sure[2] & sure[3]) == 0xFFFF) return;
    for (int j = 0; j < 4; j++)
        if (sure[j] != 0xFFFF) {
            __mmask16 redo = (__mmask16)~sure[j];
            __m512 e = _mm512_div_ps(v[j], div);
            q[j] = _mm512_mask_cvt_roundps_epi32(q[j], redo, e, near);
            q[j] = _mm512_mask_mov_epi32(q[j], _mm512_cmp_ps_mask(e, e, _CMP_UNORD_Q),
                                         _mm512_setzero_si512());
        }
}

/* Four vectors of codes (each within -127..127) as bytes code + 128:
 * byte 4i + j of each 128-bit lane holds lane i's code of q[j] when
 * `positions` (dwords of 4 channels, position-major), else q[0]'s 16 codes,
 * then q[1]'s, q[2]'s and q[3]'s. Packs and one shuffle where shifting
 * and or-ing each vector in took twice the instructions. */
__attribute__((target("avx512f,avx512bw,avx512vbmi"), always_inline))
static inline __m512i hetc_q8_pack4(const __m512i q[4], int positions) {
    __m512i c = _mm512_packs_epi16(_mm512_packs_epi32(q[0], q[1]), _mm512_packs_epi32(q[2], q[3]));
    /* in lane L, bytes 4j + i: q[j]'s code i of the lane */
    __m512i order = positions
        ? _mm512_set4_epi32(0x0F0B0703, 0x0E0A0602, 0x0D090501, 0x0C080400)
        : _mm512_set_epi32(0x3F3E3D3C, 0x2F2E2D2C, 0x1F1E1D1C, 0x0F0E0D0C, 0x3B3A3938,
                           0x2B2A2928, 0x1B1A1918, 0x0B0A0908, 0x37363534, 0x27262524,
                           0x17161514, 0x07060504, 0x33323130, 0x23222120, 0x13121110,
                           0x03020100);
    c = positions ? _mm512_shuffle_epi8(c, order) : _mm512_permutexvar_epi8(order, c);
    return _mm512_xor_si512(c, _mm512_set1_epi8((char)0x80));
}

/* max |v| lane by lane over the n vectors v at x, x + s, ..., (lanes m):
 * four chains of vmaxps, where one (4 cycles a step) had bounded the pass */
__attribute__((target("avx512f"), always_inline))
static inline __m512 hetc_absmax(const float *x, long s, long n, __mmask16 m) {
    __m512 a = _mm512_setzero_ps(), b = a, c = a, d = a;
    long i = 0;
    for (; i + 4 <= n; i += 4) {
        a = _mm512_max_ps(a, _mm512_abs_ps(_mm512_maskz_loadu_ps(m, x + i * s)));
        b = _mm512_max_ps(b, _mm512_abs_ps(_mm512_maskz_loadu_ps(m, x + (i + 1) * s)));
        c = _mm512_max_ps(c, _mm512_abs_ps(_mm512_maskz_loadu_ps(m, x + (i + 2) * s)));
        d = _mm512_max_ps(d, _mm512_abs_ps(_mm512_maskz_loadu_ps(m, x + (i + 3) * s)));
    }
    for (; i < n; i++) a = _mm512_max_ps(a, _mm512_abs_ps(_mm512_maskz_loadu_ps(m, x + i * s)));
    return _mm512_max_ps(_mm512_max_ps(a, b), _mm512_max_ps(c, d));
}

/* x quantized per pixel (hetc_q8_prepare) on AVX-512 with VBMI. */
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vbmi")))
static void hetc_q8_quantize_avx512(uint32_t *restrict xq, float *restrict sx,
                                    const float *restrict x, long N, long C, long P, int layout) {
    long C4 = (C + 3) / 4, blocks = (P + 15) / 16;
    if (layout & HETC_X_BLOCKED) { /* one position's 16 channels per vector */
        /* both passes along the blocks' rows of positions, a run of up to
         * 64 positions at a time: position by position, the first read of
         * each of a position's C / 16 lines (far apart) waited on memory
         * (672 channels on 14x14 alone, one thread: 35 -> 21 us; in a
         * model run 26-29 -> 21 us) */
        long CB = C / 16, runs = (P + 63) / 64, threads = omp_get_max_threads();
        runs = runs > threads ? runs : threads < P ? threads : P;
        #pragma omp parallel for collapse(2) schedule(static) if (N * C * P > 32768)
        for (long n = 0; n < N; n++)
            for (long run = 0; run < runs; run++) {
                long p0 = run * P / runs, np = (run + 1) * P / runs - p0;
                const float *xn = x + n * C * P + p0 * 16;
                __m512 mx[64];
                float div[64], rec[64];
                for (long j = 0; j < np; j++) mx[j] = _mm512_setzero_ps();
                for (long cb = 0; cb < CB; cb++)
                    for (long j = 0; j < np; j++)
                        mx[j] = _mm512_max_ps(mx[j], _mm512_abs_ps(_mm512_loadu_ps(
                                                         xn + (cb * P + j) * 16)));
                for (long j = 0; j < np; j++) {
                    float sc = _mm512_reduce_max_ps(mx[j]) / 127.f;
                    div[j] = sc == 0.f ? 1.f : sc;
                    rec[j] = 1.f / div[j];
                    sx[n * P + p0 + j] = sc;
                }
                for (long cb = 0; cb < CB; cb += 4) { /* the last group padded with zeros */
                    long n16 = CB - cb < 4 ? CB - cb : 4;
                    for (long j = 0; j < np; j++) {
                        __m512 v[4];
                        __m512i q[4];
                        for (int i = 0; i < 4; i++)
                            v[i] = i < n16 ? _mm512_loadu_ps(xn + ((cb + i) * P + j) * 16)
                                           : _mm512_setzero_ps();
                        hetc_q8_codes4(v, _mm512_set1_ps(div[j]), _mm512_set1_ps(rec[j]), q);
                        uint8_t *qp = (uint8_t *)(xq + (n * P + p0 + j) * C4);
                        _mm512_mask_storeu_epi32(qp + cb * 16, hetc_rows16(4 * n16),
                                                 hetc_q8_pack4(q, 0));
                    }
                }
            }
        return;
    }
    /* threads from 128 positions on, each then reading what the layer
     * before wrote on its core (80 -> 480 on 14x14: 8 -> 5.5 us in a model
     * run); on 7x7 one thread was faster */
    #pragma omp parallel for collapse(2) schedule(static) if (N * P >= 128 && N * C * P > 4096)
    for (long n = 0; n < N; n++)
        for (long pb = 0; pb < blocks; pb++) {
            long p0 = pb * 16;
            __mmask16 m = hetc_rows16(P - p0);
            const float *xn = x + n * C * P + p0;
            __m512 sc = _mm512_div_ps(hetc_absmax(xn, P, C, m), _mm512_set1_ps(127.f));
            __m512 div = _mm512_mask_blend_ps(_mm512_cmpeq_ps_mask(sc, _mm512_setzero_ps()), sc,
                                              _mm512_set1_ps(1.f));
            _mm512_mask_storeu_ps(sx + n * P + p0, m, sc);
            /* 1 / div from vrcp14ps and a Newton step (within 2 ulp): the
             * products only need to lie near the quotients (hetc_q8_codes4),
             * and a second division per 16 positions weighed on 16-40
             * channels */
            __m512 r = _mm512_rcp14_ps(div);
            r = _mm512_mul_ps(r, _mm512_fnmadd_ps(div, r, _mm512_set1_ps(2.f)));
            for (long k = 0; k < C4; k++) { /* the column's lines, still in L1 */
                __m512 v[4];
                __m512i q[4];
                for (int j = 0; j < 4; j++) /* channels past C: zeros, code 0 */
                    v[j] = 4 * k + j < C ? _mm512_maskz_loadu_ps(m, xn + (4 * k + j) * P)
                                         : _mm512_setzero_ps();
                hetc_q8_codes4(v, div, r, q);
                _mm512_mask_storeu_epi32(xq + (n * C4 + k) * P + p0, m, hetc_q8_pack4(q, 1));
            }
        }
}

static void hetc_q8_quantize_portable(uint32_t *restrict xq, float *restrict sx,
                                      const float *restrict x, long N, long C, long P,
                                      int layout) {
    long C4 = (C + 3) / 4;
    #pragma omp parallel for collapse(2) schedule(static) if (N * C * P > 32768)
    for (long n = 0; n < N; n++)
        for (long p = 0; p < P; p++) {
            const float *xn = x + n * C * P;
            float mx = 0.f;
            for (long c = 0; c < C; c++) {
                float a = fabsf(xn[hetc_channel_at(c, p, P, layout)]);
                mx = a > mx ? a : mx;
            }
            float sc = mx / 127.f, div = sc == 0.f ? 1.f : sc;
            sx[n * P + p] = sc;
            for (long k = 0; k < C4; k++) {
                uint32_t d = 0;
                for (int j = 0; j < 4; j++) {
                    long c = 4 * k + j;
                    int q = c < C ? (int)nearbyintf(xn[hetc_channel_at(c, p, P, layout)] / div) : 0;
                    d |= (uint32_t)(q + 128) << (8 * j);
                }
                xq[n * C4 * P + (layout & HETC_X_BLOCKED ? p * C4 + k : k * P + p)] = d;
            }
        }
}

/* x (NCHW, or in blocks of 16 channels as `layout` says) quantized for an
 * integer 1x1 convolution into the scratch: dwords, then the pixels'
 * scales (hetc_q8_scales). */
static void hetc_q8_prepare(const float *x, long N, long C, long P, int layout,
                            unsigned char *scratch) {
    uint32_t *xq = (uint32_t *)scratch;
    float *sx = hetc_q8_scales(xq, N, (C + 3) / 4, P);
    if (hetc_simd)
        hetc_q8_quantize_avx512(xq, sx, x, N, C, P, layout);
    else
        hetc_q8_quantize_portable(xq, sx, x, N, C, P, layout);
}

/* acc[t][q] (T positions, Q panels) over all C4 steps, dword (k, p0 + t)
 * at xq[k * ks + t * ts]; then scaled, the bias and a clamp in registers,
 * stored as the float panels store. */
__attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline))
static inline void hetc_q8_tile_vnni(float *restrict y, const uint32_t *restrict xq, long ks,
                                     long ts, const float *restrict sx, const int8_t *restrict wp,
                                     const int32_t *restrict start, const float *restrict sw,
                                     const float *b, long P, long C4, long O, long p0, long q0,
                                     const int Q, const int T, __m512 lo, __m512 hi, int layout) {
    __m512i acc[HETC_PW_POSITIONS][HETC_PW_PANELS];
    for (int q = 0; q < Q; q++) {
        __m512i a = _mm512_loadu_si512(start + (q0 + q) * 16);
        for (int t = 0; t < T; t++) acc[t][q] = a;
    }
    for (long k = 0; k < C4; k++) {
        __m512i wv[HETC_PW_PANELS];
        for (int q = 0; q < Q; q++) wv[q] = _mm512_loadu_si512(wp + ((q0 + q) * C4 + k) * 64);
        const uint32_t *xk = xq + k * ks;
        for (int t = 0; t < T; t++) {
            __m512i xv = _mm512_set1_epi32((int)xk[t * ts]);
            for (int q = 0; q < Q; q++) acc[t][q] = _mm512_dpbusd_epi32(acc[t][q], xv, wv[q]);
        }
    }
    for (int q = 0; q < Q; q++) {
        long o0 = (q0 + q) * 16, rows = O - o0 < 16 ? O - o0 : 16;
        __m512 s = _mm512_loadu_ps(sw + o0);
        __m512 bias = b ? _mm512_maskz_loadu_ps(hetc_rows16(rows), b + o0) : _mm512_setzero_ps();
        float tile[HETC_PW_POSITIONS][16];
        for (int t = 0; t < T; t++) {
            __m512 f = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[t][q]),
                                                   _mm512_set1_ps(sx[p0 + t])), s);
            f = _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_add_ps(f, bias)));
            if (layout & HETC_Y_BLOCKED)
                _mm512_storeu_ps(y + (o0 * P + (p0 + t) * 16), f);
            else
                _mm512_storeu_ps(tile[t], f);
        }
        for (long l = 0; !(layout & HETC_Y_BLOCKED) && l < rows; l++)
            for (int t = 0; t < T; t++) y[(o0 + l) * P + p0 + t] = tile[t][l];
    }
}

#define HETC_Q8_CASE(T_)                                                                    \
    case T_:                                                                                \
        if (Q == 3)                                                                         \
            hetc_q8_tile_vnni(y, xq, ks, ts, sx, wp, start, sw, b, P, C4, O, p0, q0, 3, T_, \
                              lo, hi, layout);                                              \
        else if (Q == 2)                                                                    \
            hetc_q8_tile_vnni(y, xq, ks, ts, sx, wp, start, sw, b, P, C4, O, p0, q0, 2, T_, \
                              lo, hi, layout);                                              \
        else                                                                                \
            hetc_q8_tile_vnni(y, xq, ks, ts, sx, wp, start, sw, b, P, C4, O, p0, q0, 1, T_, \
                              lo, hi, layout);                                              \
        break;

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void hetc_q8_task_vnni(float *restrict y, const uint32_t *restrict xq, long ks, long ts,
                              const float *restrict sx, const int8_t *restrict wp,
                              const int32_t *restrict start, const float *restrict sw,
                              const float *b, long P, long C4, long O, long p0, long T, long q0,
                              long Q, float lo_, float hi_, int layout) {
    __m512 lo = _mm512_set1_ps(lo_), hi = _mm512_set1_ps(hi_);
    switch (T) {
        HETC_Q8_CASE(8) HETC_Q8_CASE(7) HETC_Q8_CASE(6) HETC_Q8_CASE(5)
        HETC_Q8_CASE(4) HETC_Q8_CASE(3) HETC_Q8_CASE(2) default: HETC_Q8_CASE(1)
    }
}

static void hetc_q8_task_portable(float *restrict y, const uint32_t *restrict xq, long ks, long ts,
                                  const float *restrict sx, const int8_t *restrict wp,
                                  const int32_t *restrict start, const float *restrict sw,
                                  const float *b, long P, long C4, long O, long p0, long T,
                                  long q0, long Q, float lo, float hi, int layout) {
    for (long q = q0; q < q0 + Q; q++)
        for (long t = 0; t < T; t++)
            for (long l = 0; l < 16 && q * 16 + l < O; l++) {
                int32_t acc = start[q * 16 + l];
                for (long k = 0; k < C4; k++) {
                    uint32_t d = xq[k * ks + t * ts];
                    for (int j = 0; j < 4; j++)
                        acc += (int32_t)((d >> (8 * j)) & 255) *
                               wp[((q * C4 + k) * 16 + l) * 4 + j];
                }
                float f = (float)acc * sx[p0 + t] * sw[q * 16 + l];
                f = hetc_clamp(f + (b ? b[q * 16 + l] : 0.f), lo, hi);
                if (layout & HETC_Y_BLOCKED) y[(q * P + p0 + t) * 16 + l] = f;
                else y[(q * 16 + l) * P + p0 + t] = f;
            }
}

typedef struct {
    float *y;
    const uint32_t *xq;
    const float *sx, *sw, *b;
    const int8_t *wp;
    const int32_t *start;
    long P, C4, O, ks, ts;
    float lo, hi;
    int layout;
} hetc_q8_args;

static void hetc_q8_tile(const void *ctx, long n, long t, long t0, long q0, long Q) {
    const hetc_q8_args *a = ctx;
    long P = a->P, p0 = t * HETC_PW_POSITIONS;
    long T = P - p0 < HETC_PW_POSITIONS ? P - p0 : HETC_PW_POSITIONS;
    float *yn = a->y + n * a->O * P;
    const uint32_t *xt = a->xq + n * a->C4 * P + p0 * a->ts;
    (void)t0;
    if (hetc_simd)
        hetc_q8_task_vnni(yn, xt, a->ks, a->ts, a->sx + n * P, a->wp, a->start, a->sw, a->b, P,
                          a->C4, a->O, p0, T, q0, Q, a->lo, a->hi, a->layout);
    else
        hetc_q8_task_portable(yn, xt, a->ks, a->ts, a->sx + n * P, a->wp, a->start, a->sw, a->b,
                              P, a->C4, a->O, p0, T, q0, Q, a->lo, a->hi, a->layout);
}

/* y = conv1x1(x, w) (+ b) with int8 activations per pixel and integer
 * weights in s8 panels (above), in k_conv1x1_panels's layouts (a blocked y
 * takes a clamp as its only epilogue) and tasks; the scratch holds the
 * quantized x (hetc_q8_scales). */
HETC_KERNEL void k_conv1x1_q8(float *restrict y, const float *restrict x, const int8_t *restrict wp,
                              const int32_t *restrict start, const float *restrict sw,
                              const float *b, long N, long C, long P, long O, int layout,
                              unsigned char *scratch, const hetc_step *ep, int nep) {
    long C4 = (C + 3) / 4;
    uint32_t *xq = (uint32_t *)scratch;
    float *sx = hetc_q8_scales(xq, N, C4, P);
    hetc_q8_prepare(x, N, C, P, layout, scratch);
    float lo = -INFINITY, hi = INFINITY;
    if (nep && hetc_epilogue_clamp(ep, nep, &lo, &hi)) nep = 0; /* in registers */
    if (nep && layout & HETC_Y_BLOCKED) {
        hetc_fail("k_conv1x1_q8: a blocked result takes a clamp as its only epilogue");
        return;
    }
    int blocked = layout & HETC_X_BLOCKED;
    hetc_q8_args a = {y, xq, sx, sw, b, wp, start, P, C4, O, blocked ? 1 : P, blocked ? C4 : 1,
                      lo, hi, layout};
    hetc_pw_tasks(y, N, P, O, hetc_q8_tile, &a, ep, nep);
}

/* On planes too large for channel lanes (the NCHW stores of a tile are
 * scalar there), the integer kernel takes k_conv2d_gemm's row tiles: 8
 * output channels x 32 positions, each step's dwords of 16 positions one
 * load and each channel's 4 codes one broadcast, the weights in blocks of 8
 * channels, [O/8][C4][8] dwords. The quantized x is the NCHW layout above
 * (dword (k, p) at k * cs + p). */
__attribute__((target("avx512f,avx512bw,avx512vnni,prfchw"), always_inline))
static inline void hetc_q8_conv_tile_vnni(float *restrict y, long P, long fs,
                                          const uint32_t *restrict xq, long cs,
                                          const uint32_t *restrict wb, long C4,
                                          const int32_t *restrict start, const float *restrict sx,
                                          const float *restrict sw, const float *b, int rows,
                                          long np, long flat, long o0, const hetc_step *ep,
                                          int nep, int vec, __m512 lo, __m512 hi,
                                          const uint32_t *pf) {
    __m512i acc[8][2];
    for (int r = 0; r < 8; r++) acc[r][0] = acc[r][1] = _mm512_set1_epi32(start[r]);
    __mmask16 m0 = hetc_rows16(np), m1 = np > 16 ? hetc_rows16(np - 16) : 0;
    for (long k = 0; k < C4; k++) {
        __m512i x0 = _mm512_maskz_loadu_epi32(m0, xq + k * cs);
        __m512i x1 = _mm512_maskz_loadu_epi32(m1, xq + k * cs + 16);
        if (pf) { /* the next tile's dwords, a plane apart per step (as the float tile) */
            _mm_prefetch((const char *)(pf + k * cs), _MM_HINT_T0);
            _mm_prefetch((const char *)(pf + k * cs + 16), _MM_HINT_T0);
        }
        for (int r = 0; r < 8; r++) {
            __m512i w = _mm512_set1_epi32((int)wb[k * 8 + r]);
            acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], x0, w);
            acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], x1, w);
        }
    }
    __m512 s0 = _mm512_maskz_loadu_ps(m0, sx), s1 = _mm512_maskz_loadu_ps(m1, sx + 16);
    __m512 f[8][2];
    for (int r = 0; r < 8; r++) {
        __m512 sr = _mm512_set1_ps(sw[r]);
        f[r][0] = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[r][0]), s0), sr);
        f[r][1] = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[r][1]), s1), sr);
    }
    hetc_tile_finish(y, P, fs, f, b, rows, np, flat, o0, ep, nep, vec, lo, hi);
}

static void hetc_q8_conv_tile_portable(float *restrict y, long P, long fs,
                                       const uint32_t *restrict xq, long cs,
                                       const uint32_t *restrict wb, long C4,
                                       const int32_t *restrict start, const float *restrict sx,
                                       const float *restrict sw, const float *b, int rows,
                                       long np, long flat, long o0, const hetc_step *ep,
                                       int nep) {
    for (int r = 0; r < rows; r++) {
        for (long j = 0; j < np; j++) {
            int32_t acc = start[r];
            for (long k = 0; k < C4; k++) {
                uint32_t d = xq[k * cs + j], w = wb[k * 8 + r];
                for (int i = 0; i < 4; i++)
                    acc += (int32_t)((d >> (8 * i)) & 255) * (int8_t)(w >> (8 * i));
            }
            y[r * P + j] = (float)acc * sx[j] * sw[r] + (b ? b[r] : 0.f);
        }
        if (nep) hetc_epilogue_run(ep, nep, y + r * P, np, flat + r * fs, o0 + r, 0);
    }
}

/* The integer 1x1 convolution's operands: the quantized x of one image
 * (hetc_q8_scales), one block's weights, starts and scales. */
typedef struct {
    const uint32_t *xq, *wb;
    const float *sx, *sw;
    const int32_t *start;
    long C4;
} hetc_q8_in;

/* The 1x1 tile (rows <= 8 channels, np <= 32 positions from p0) into y
 * (rows P apart; flat: its first element's index), in floats or, with q,
 * in integers; for the float tile x at px (rows cs apart) and weights wb. */
__attribute__((target("avx512f,avx512bw,avx512vnni,prfchw"), always_inline))
static inline void hetc_1x1_tile(float *restrict y, long P, long fs, const float *px, long cs,
                                 const float *wb, long C, const hetc_q8_in *q, long p0,
                                 const float *b, int rows, long np, long flat, long o0,
                                 const hetc_step *ep, int nep, int vec, __m512 lo, __m512 hi,
                                 int next) {
    if (q)
        hetc_q8_conv_tile_vnni(y, P, fs, q->xq + p0, cs, q->wb, q->C4, q->start, q->sx + p0,
                               q->sw, b, rows, np, flat, o0, ep, nep, vec, lo, hi,
                               next ? q->xq + p0 + HETC_CONV_TILE : 0);
    else
        hetc_conv_tile_avx512(y, P, fs, px + p0, cs, wb, C, b, rows, np, flat, o0, ep, nep, vec,
                              lo, hi, next ? px + p0 + HETC_CONV_TILE : 0);
}

static void hetc_1x1_tile_portable(float *restrict y, long P, long fs, const float *px, long cs,
                                   const float *wb, long C, const hetc_q8_in *q, long p0,
                                   const float *b, int rows, long np, long flat, long o0,
                                   const hetc_step *ep, int nep) {
    if (q)
        hetc_q8_conv_tile_portable(y, P, fs, q->xq + p0, cs, q->wb, q->C4, q->start, q->sx + p0,
                                   q->sw, b, rows, np, flat, o0, ep, nep);
    else
        hetc_conv_tile_portable(y, P, fs, px + p0, cs, wb, C, b, rows, np, flat, o0, ep, nep);
}

/* Image n's operands for weights wb (blocks of 8 channels), starts and
 * scales, its x quantized (NCHW) in the scratch by hetc_q8_prepare. */
static hetc_q8_in hetc_q8_image(const unsigned char *scratch, long N, long C, long P, long n,
                                const uint32_t *wb, const int32_t *start, const float *sw) {
    long C4 = (C + 3) / 4;
    const uint32_t *xq = (const uint32_t *)scratch;
    hetc_q8_in q = {xq + n * C4 * P, wb, hetc_q8_scales((uint32_t *)xq, N, C4, P) + n * P, sw,
                    start, C4};
    return q;
}

/* Every block of 8 channels of image n on the tile of np positions from
 * p0 (the next tile's dwords prefetched with the first block). */
__attribute__((target("avx512f,avx512bw,avx512vnni,prfchw")))
static void hetc_q8_rows_vnni(float *restrict y, const unsigned char *scratch,
                              const uint32_t *wb, const int32_t *start, const float *sw,
                              const float *b, long N, long C, long P, long O, long n, long p0,
                              long np, const hetc_step *ep, int nep, int vec, float lo, float hi) {
    long C4 = (C + 3) / 4;
    for (long blk = 0; blk < (O + 7) / 8; blk++) {
        long rows = O - blk * 8 < 8 ? O - blk * 8 : 8, flat = (n * O + blk * 8) * P + p0;
        hetc_q8_in q = hetc_q8_image(scratch, N, C, P, n, wb + blk * C4 * 8, start + blk * 8,
                                     sw + blk * 8);
        hetc_1x1_tile(y + flat, P, P, 0, P, 0, C, &q, p0, b ? b + blk * 8 : 0, (int)rows, np,
                      flat, blk * 8, ep, nep, vec, _mm512_set1_ps(lo), _mm512_set1_ps(hi),
                      blk == 0 && p0 + HETC_CONV_TILE < P);
    }
}

static void hetc_q8_rows_portable(float *restrict y, const unsigned char *scratch,
                                  const uint32_t *wb, const int32_t *start, const float *sw,
                                  const float *b, long N, long C, long P, long O, long n,
                                  long p0, long np, const hetc_step *ep, int nep) {
    long C4 = (C + 3) / 4;
    for (long blk = 0; blk < (O + 7) / 8; blk++) {
        long rows = O - blk * 8 < 8 ? O - blk * 8 : 8, flat = (n * O + blk * 8) * P + p0;
        hetc_q8_in q = hetc_q8_image(scratch, N, C, P, n, wb + blk * C4 * 8, start + blk * 8,
                                     sw + blk * 8);
        hetc_1x1_tile_portable(y + flat, P, P, 0, P, 0, C, &q, p0, b ? b + blk * 8 : 0,
                               (int)rows, np, flat, blk * 8, ep, nep);
    }
}

/* y = conv1x1(x, w) (+ b) with int8 activations per pixel on a large plane:
 * row tiles (above), threads splitting the positions (each reads every
 * weight: a 1x1's integer weights are small), a tile's blocks in turn. */
HETC_KERNEL void k_conv1x1_q8_rows(float *restrict y, const float *restrict x,
                                   const uint32_t *restrict wb, const int32_t *restrict start,
                                   const float *restrict sw, const float *b, long N, long C,
                                   long P, long O, unsigned char *scratch, const hetc_step *ep,
                                   int nep) {
    long tiles = (P + HETC_CONV_TILE - 1) / HETC_CONV_TILE;
    hetc_q8_prepare(x, N, C, P, 0, scratch);
    float lo, hi;
    int steps = nep, vec = hetc_tile_epilogue(ep, &steps, &lo, &hi);
    #pragma omp parallel for collapse(2) schedule(static)
    for (long n = 0; n < N; n++)
        for (long t = 0; t < tiles; t++) {
            long p0 = t * HETC_CONV_TILE, np = P - p0 < HETC_CONV_TILE ? P - p0 : HETC_CONV_TILE;
            if (hetc_simd)
                hetc_q8_rows_vnni(y, scratch, wb, start, sw, b, N, C, P, O, n, p0, np, ep, steps,
                                  vec, lo, hi);
            else
                hetc_q8_rows_portable(y, scratch, wb, start, sw, b, N, C, P, O, n, p0, np, ep,
                                      nep);
        }
}

/* ---- depthwise convolution ------------------------------------------------ *
 * One input channel per group (O = mult * C): each output plane from a
 * zero-padded copy of its input plane (per thread), so the inner loops have
 * no bounds tests; AVX-512 computes 16 output columns per vector for
 * strides 1 and 2 (stride 2: the even lanes of two loads), the portable loop
 * any stride. w is [O, KH * KW]. */
__attribute__((target("avx512f"), always_inline))
static inline __m512 hetc_dw_load(const float *at, long sw, __m512i evens) {
    return sw == 1 ? _mm512_loadu_ps(at)
                   : _mm512_permutex2var_ps(_mm512_loadu_ps(at), evens, _mm512_loadu_ps(at + 16));
}

/* R output rows at a time (independent accumulators: one vector's FMA
 * chain would wait on its latency), 16 columns per vector; the last block
 * reads rows past OH from the buffer's spare rows and does not store them
 * (a row at a time, the tail of a 7x7 plane took most of its time). With
 * KH_ rows and row stride SH_ known (not 0) and no row dilation, each
 * input row is loaded once per column tap and feeds every output row of
 * the block it reaches (stride 1, 3 rows: 10 loads for 24 sums in place of
 * 24), the tap's KH_ weights broadcast once: 15-35% faster alone, 7x7 to
 * 112x112 planes. */
__attribute__((target("avx512f"), always_inline))
static inline void hetc_dw_rows_avx512(float *py, const float *buf, long Wp, const float *w,
                                       float bias, long KH, long KW, long OH, long OW, long sh,
                                       long sw, long dh, long dw, __m512 lo, __m512 hi,
                                       const int R, const int KH_, const int SH_) {
    const __m512i evens = hetc_evens16();
    for (long oh = 0; oh < OH; oh += R)
        for (long ow = 0; ow < OW; ow += 16) {
            __m512 acc[8];
            for (int r = 0; r < R; r++) acc[r] = _mm512_set1_ps(bias);
            for (long kj = 0; KH_ && kj < KW; kj++) {
                const float *at = buf + oh * SH_ * Wp + ow * sw + kj * dw;
                __m512 wk[5];
                for (int ki = 0; ki < KH_; ki++) wk[ki] = _mm512_set1_ps(w[ki * KW + kj]);
                #pragma GCC unroll 24
                for (int j = 0; j < (R - 1) * SH_ + KH_; j++) { /* input row j of the block */
                    __m512 v = hetc_dw_load(at + j * Wp, sw, evens);
                    #pragma GCC unroll 8
                    for (int ki = 0; ki < KH_; ki++) /* output row (j - ki) / SH_ */
                        if (j >= ki && (j - ki) % SH_ == 0 && (j - ki) / SH_ < R)
                            acc[(j - ki) / SH_] = _mm512_fmadd_ps(wk[ki], v, acc[(j - ki) / SH_]);
                }
            }
            for (long ki = 0; !KH_ && ki < KH; ki++) {
                const float *row = buf + (oh * sh + ki * dh) * Wp + ow * sw;
                long step = sh * Wp;
                for (long kj = 0; kj < KW; kj++) {
                    __m512 wv = _mm512_set1_ps(w[ki * KW + kj]);
                    const float *at = row + kj * dw;
                    for (int r = 0; r < R; r++)
                        acc[r] = _mm512_fmadd_ps(wv, hetc_dw_load(at + r * step, sw, evens), acc[r]);
                }
            }
            __mmask16 m = hetc_rows16(OW - ow);
            for (int r = 0; r < R; r++)
                if (oh + r < OH)
                    _mm512_mask_storeu_ps(py + (oh + r) * OW + ow, m,
                                          _mm512_min_ps(hi, _mm512_max_ps(lo, acc[r])));
        }
}

/* Rows per block: 8 unless 4 leaves fewer rows unused. */
static inline int hetc_dw_block(long OH) {
    return (OH + 7) / 8 * 8 <= (OH + 3) / 4 * 4 ? 8 : 4;
}

/* One call per (R, rows, row stride) the reuse covers, else the loop over
 * any window. */
#define HETC_DW_ROWS(R_, KH_, SH_)                                                            \
    if (R == R_ && (KH_ == 0 || (KH == KH_ && sh == SH_ && dh == 1))) {                         \
        hetc_dw_rows_avx512(py, buf, Wp, w, bias, KH, KW, OH, OW, sh, sw, dh, dw, lo, hi, R_, \
                            KH_, SH_);                                                        \
        return;                                                                               \
    }

/* The bias and a clamp (lo_, hi_) in registers. */
__attribute__((target("avx512f")))
static void hetc_dw_plane_avx512(float *py, const float *buf, long Wp, const float *w, float bias,
                                 long KH, long KW, long OH, long OW, long sh, long sw, long dh,
                                 long dw, float lo_, float hi_) {
    const __m512 lo = _mm512_set1_ps(lo_), hi = _mm512_set1_ps(hi_);
    int R = hetc_dw_block(OH);
    HETC_DW_ROWS(8, 3, 1) HETC_DW_ROWS(4, 3, 1) HETC_DW_ROWS(8, 5, 1) HETC_DW_ROWS(4, 5, 1)
    HETC_DW_ROWS(8, 3, 2) HETC_DW_ROWS(4, 3, 2) HETC_DW_ROWS(8, 5, 2) HETC_DW_ROWS(4, 5, 2)
    HETC_DW_ROWS(8, 0, 0) HETC_DW_ROWS(4, 0, 0)
}

static void hetc_dw_plane_portable(float *py, const float *buf, long Wp, const float *w,
                                   float bias, long KH, long KW, long OH, long OW, long sh,
                                   long sw, long dh, long dw) {
    for (long oh = 0; oh < OH; oh++) {
        float *out = py + oh * OW;
        for (long ow = 0; ow < OW; ow++) out[ow] = bias;
        for (long ki = 0; ki < KH; ki++)
            for (long kj = 0; kj < KW; kj++) {
                const float *row = buf + (oh * sh + ki * dh) * Wp + kj * dw;
                float wv = w[ki * KW + kj];
                for (long ow = 0; ow < OW; ow++) out[ow] += wv * row[ow * sw];
            }
    }
}

/* A depthwise convolution's shape and the zero-padded buffer (Hp + 7 sh
 * rows of Wp floats per thread) its input planes are copied into. */
typedef struct {
    long H, W, KH, KW, OH, OW, sh, sw, pt, pl, dh, dw;
    long Hp, Wp, lead, copy, r1; /* buffer rows pt .. r1 hold input rows */
    long strip;                  /* output rows per strip (hetc_dw_channel) */
    int simd, clamp;             /* clamp: the epilogue is one, lo .. hi, in registers */
    float lo, hi;
} hetc_dw_shape;

static hetc_dw_shape hetc_dw_setup(long H, long W, long KH, long KW, long OH, long OW, long sh,
                                   long sw, long pt, long pl, long dh, long dw,
                                   const hetc_step *ep, int nep) {
    hetc_dw_shape s = {H, W, KH, KW, OH, OW, sh, sw, pt, pl, dh, dw};
    /* rows and columns the windows reach, output columns rounded up to 16
     * (and 16 more for stride 2's second load) */
    s.Hp = (OH - 1) * sh + (KH - 1) * dh + 1;
    s.Wp = ((OW + 15) / 16 * 16) * sw + (KW - 1) * dw + 16;
    s.Wp = (s.Wp + 15) / 16 * 16; /* rows on cache lines, as the buffer (hetc_floats) */
    s.lead = pl < s.Wp ? pl : s.Wp;
    s.copy = W < s.Wp - s.lead ? W : s.Wp - s.lead;
    s.r1 = pt + H < s.Hp ? pt + H : s.Hp;
    s.simd = hetc_avx512 && (sw == 1 || sw == 2);
    s.lo = -INFINITY;
    s.hi = INFINITY;
    s.clamp = s.simd && nep && hetc_epilogue_clamp(ep, nep, &s.lo, &s.hi);
    /* 8 output rows per strip where a whole plane's buffer (Hp + 7 sh rows)
     * would not stay in L1 (over 32 KB), else one strip */
    s.strip = (s.Hp + 7 * sh) * s.Wp * (long)sizeof(float) > 32768 ? 8 : OH;
    return s;
}

/* Floats of a thread's buffer for a whole plane (+ the last block's spare
 * rows). */
static long hetc_dw_buffer(const hetc_dw_shape *s) { return (s->Hp + 7 * s->sh) * s->Wp; }

/* Buffer rows a strip reads (+ the last block's spare rows). */
static long hetc_dw_strip_rows(const hetc_dw_shape *s) {
    return (s->strip + 6) * s->sh + (s->KH - 1) * s->dh + 1;
}

/* The output rows oh0 .. oh1 of one channel's plane py (flat: its index in
 * the result, o: its channel) from the buffer rows they read, the first of
 * them (oh0 * sh) at from. */
static void hetc_dw_sums(const hetc_dw_shape *s, const float *from, float *py, const float *w,
                         float bias, long oh0, long oh1, const hetc_step *ep, int nep, long flat,
                         long o) {
    long Wp = s->Wp, OW = s->OW;
    py += oh0 * OW;
    if (s->simd)
        hetc_dw_plane_avx512(py, from, Wp, w, bias, s->KH, s->KW, oh1 - oh0, OW, s->sh, s->sw,
                             s->dh, s->dw, s->lo, s->hi);
    else
        hetc_dw_plane_portable(py, from, Wp, w, bias, s->KH, s->KW, oh1 - oh0, OW, s->sh, s->sw,
                               s->dh, s->dw);
    if (nep && !s->clamp) hetc_epilogue_run(ep, nep, py, (oh1 - oh0) * OW, flat + oh0 * OW, o, 0);
}

/* hetc_dw_sums on input plane px, a strip of output rows at a time
 * (s->strip): the rows a strip reads copied into buf (zeroed once: the
 * copies write only columns lead .. lead + copy), its rows of padding zeroed
 * when strips reuse buf. A whole 112x112 plane's buffer (70 KB) left L1
 * before its rows were read back: EfficientNet-Lite0's first depthwise
 * layer, 32 channels hot and alone on 2 threads, 78 -> 59 us in strips;
 * planes whose buffer fits (56x56 and less) gained nothing so. */
static void hetc_dw_channel(const hetc_dw_shape *s, float *buf, float *py, const float *px,
                            const float *w, float bias, long oh0, long oh1, const hetc_step *ep,
                            int nep, long flat, long o) {
    long Wp = s->Wp, W = s->W, sr = s->strip;
    for (long s0 = oh0; s0 < oh1; s0 += sr) {
        long s1 = s0 + sr < oh1 ? s0 + sr : oh1;
        /* buffer rows c0 .. c0 + rows from c0; input in c0 .. c1 */
        long c0 = s0 * s->sh, c1 = (s1 - 1) * s->sh + (s->KH - 1) * s->dh + 1;
        long in0 = c0 > s->pt ? c0 : s->pt, in1 = c1 < s->r1 ? c1 : s->r1;
        if (sr < s->OH) /* rows past c1 feed only outputs that are not stored */
            for (long c = c0; c < c1; c++)
                if (c < in0 || c >= in1) memset(buf + (c - c0) * Wp + s->lead, 0,
                                                sizeof(float) * s->copy);
        const float *from = px + (in0 - s->pt) * W;
        float *to = buf + (in0 - c0) * Wp + s->lead;
        if (s->simd && in1 > in0)
            hetc_copy_rows_avx512(to, Wp, from, W, in1 - in0, s->copy);
        else if (!s->simd)
            for (long r = 0; r < in1 - in0; r++)
                memcpy(to + r * Wp, from + r * W, sizeof(float) * s->copy);
        hetc_dw_sums(s, buf, py, w, bias, s0, s1, ep, nep, flat, o);
    }
}

HETC_KERNEL void k_conv2d_depthwise(float *restrict y, const float *restrict x, const float *restrict w,
                                    const float *b, long N, long C, long H, long W, long O, long KH,
                                    long KW, long OH, long OW, long sh, long sw, long pt, long pl,
                                    long dh, long dw, const hetc_step *ep, int nep) {
    long mult = O / C;
    hetc_dw_shape s = hetc_dw_setup(H, W, KH, KW, OH, OW, sh, sw, pt, pl, dh, dw, ep, nep);
    /* input planes of more than 4096 positions in bands of rows, one per
     * thread: the convolutions either side split positions the same way, so
     * a thread reads the rows its own cache holds (EfficientNet-Lite0's
     * 112x112 layers 5-10% faster in a model run; its 56x56 and 28x28 ones
     * were slower so) */
    int threads = omp_get_max_threads();
    long bands = H * W > 4096 && OH >= 8 * threads ? threads : 1;
    #pragma omp parallel
    {
        float *buf = hetc_floats(hetc_dw_strip_rows(&s) * s.Wp, 1);
        #pragma omp for collapse(3) schedule(static)
        for (long band = 0; band < bands; band++)
            for (long n = 0; n < N; n++)
                for (long o = 0; o < O; o++)
                    hetc_dw_channel(&s, buf, y + (n * O + o) * OH * OW,
                                    x + (n * C + o / mult) * H * W, w + o * KH * KW,
                                    b ? b[o] : 0.f, band * OH / bands, (band + 1) * OH / bands, ep,
                                    nep, (n * O + o) * OH * OW, o);
        free(buf);
    }
}

/* ---- a 1x1 convolution into a depthwise one --------------------------------- *
 * y = depthwise(conv1x1(x) and its epilogue) without storing the 1x1 result
 * (E channels): a task is a block of 8 of its channels over the whole plane,
 * k_conv2d_gemm's row tiles (its weights packed the same way) each stored
 * from L1 straight into the 8 channels' zero-padded depthwise buffers of the
 * thread, whose sums then read them from cache. Unfused, the 16 -> 96 layer
 * on EfficientNet-Lite0's 112x112 plane wrote 4.8 MB that its depthwise
 * layer read back from memory, and the depthwise kernel copied each plane
 * into its buffer. */

/* Zero what of a depthwise buffer input never overwrites: the padding. */
static void hetc_dw_pad(const hetc_dw_shape *s, float *buf) {
    long rows = hetc_dw_buffer(s) / s->Wp, tail = s->Wp - s->lead - s->copy;
    for (long r = 0; r < rows; r++) {
        float *row = buf + r * s->Wp;
        if (r < s->pt || r >= s->r1) {
            memset(row, 0, sizeof(float) * s->Wp);
        } else {
            memset(row, 0, sizeof(float) * s->lead);
            memset(row + s->lead + s->copy, 0, sizeof(float) * tail);
        }
    }
}

/* Values t[0 .. n) of positions q .. q + n of a plane into its depthwise
 * buffer (rows W wide there, Wp apart, from column lead of row pt); the
 * rows and columns no window reads are left out, as hetc_dw_channel does. */
static inline void hetc_tile_row_portable(float *buf, const hetc_dw_shape *s, const float *t,
                                          long q, long n) {
    for (long j = 0; j < n; j++) {
        long h = (q + j) / s->W, c = (q + j) % s->W;
        if (s->pt + h < s->r1 && c < s->copy) buf[(s->pt + h) * s->Wp + s->lead + c] = t[j];
    }
}

/* Where 16 values of positions q .. q + n (n <= 16) go in a depthwise
 * buffer: a masked store per image row they reach (at most 16), each at
 * at[i] with mask m[i]; the number of stores. */
static inline int hetc_tile_rows(const hetc_dw_shape *s, long q, int n, long at[16],
                                 unsigned m[16]) {
    long h = q / s->W, c = q % s->W;
    int k = 0;
    for (int j = 0; j < n && s->pt + h < s->r1; h++, c = 0) {
        long run = s->W - c < n - j ? s->W - c : n - j;
        long keep = s->copy - c < run ? s->copy - c : run;
        if (keep > 0) {
            at[k] = (s->pt + h) * s->Wp + s->lead + c - j;
            m[k++] = ((1u << keep) - 1) << j;
        }
        j += (int)run;
    }
    return k;
}

/* One block of the 1x1 convolution (rows <= 8 channels of it, weights wb,
 * bias bb, its first element's index flat and channel o0; with q, its
 * integer operands) on the plane px into the block's buffers (bf floats
 * apart), a tile at a time through t. */
__attribute__((target("avx512f,avx512bw,avx512vnni,prfchw")))
static void hetc_1x1_buffers_avx512(float *buf, long bf, const hetc_dw_shape *s, const float *px,
                                    const float *wb, long C, const hetc_q8_in *q, const float *bb,
                                    long rows, long flat, long o0, const hetc_step *ep, int nep) {
    float t[8 * HETC_CONV_TILE] __attribute__((aligned(64)));
    long P = s->H * s->W, at[16];
    unsigned m[16];
    float lo, hi;
    int vec = hetc_tile_epilogue(ep, &nep, &lo, &hi); /* read once, not per tile */
    for (long p0 = 0; p0 < P; p0 += HETC_CONV_TILE) {
        long np = P - p0 < HETC_CONV_TILE ? P - p0 : HETC_CONV_TILE;
        hetc_1x1_tile(t, HETC_CONV_TILE, P, px, P, wb, C, q, p0, bb, (int)rows, np, flat + p0, o0,
                      ep, nep, vec, _mm512_set1_ps(lo), _mm512_set1_ps(hi), 1);
        for (long j = 0; j < np; j += 16) {
            int k = hetc_tile_rows(s, p0 + j, np - j < 16 ? (int)(np - j) : 16, at, m);
            for (long r = 0; r < rows; r++) {
                __m512 v = _mm512_load_ps(t + r * HETC_CONV_TILE + j);
                float *to = buf + r * bf;
                for (int i = 0; i < k; i++) _mm512_mask_storeu_ps(to + at[i], (__mmask16)m[i], v);
            }
        }
    }
}

static void hetc_1x1_buffers_portable(float *buf, long bf, const hetc_dw_shape *s,
                                      const float *px, const float *wb, long C,
                                      const hetc_q8_in *q, const float *bb, long rows, long flat,
                                      long o0, const hetc_step *ep, int nep) {
    float t[8 * HETC_CONV_TILE];
    long P = s->H * s->W;
    for (long p0 = 0; p0 < P; p0 += HETC_CONV_TILE) {
        long np = P - p0 < HETC_CONV_TILE ? P - p0 : HETC_CONV_TILE;
        hetc_1x1_tile_portable(t, HETC_CONV_TILE, P, px, P, wb, C, q, p0, bb, (int)rows, np,
                               flat + p0, o0, ep, nep);
        for (long r = 0; r < rows; r++)
            hetc_tile_row_portable(buf + r * bf, s, t + r * HETC_CONV_TILE, p0, np);
    }
}

/* y = depthwise(conv1x1(x)); with wq (not 0) the 1x1 takes int8
 * activations per pixel (act_group = C) and integer weights, wq in blocks
 * of 8 channels with their starts and scales (k_conv1x1_q8_rows's), x
 * quantized into the scratch first; else wp in floats. */
HETC_KERNEL void k_conv1x1_depthwise(float *restrict y, const float *restrict x,
                                     const float *restrict wp, const float *b, long N, long C,
                                     long E, const hetc_step *ep, int nep,
                                     const float *restrict wd, const float *bd, long H, long W,
                                     long KH, long KW, long OH, long OW, long sh, long sw, long pt,
                                     long pl, long dh, long dw, const hetc_step *epd, int nepd,
                                     const uint32_t *wq, const int32_t *start, const float *swq,
                                     unsigned char *scratch) {
    long P = H * W, blocks = (E + 7) / 8, C4 = (C + 3) / 4;
    hetc_dw_shape s = hetc_dw_setup(H, W, KH, KW, OH, OW, sh, sw, pt, pl, dh, dw, epd, nepd);
    long bf = hetc_dw_buffer(&s);
    if (wq) hetc_q8_prepare(x, N, C, P, 0, scratch);
    int simd = hetc_avx512 && (!wq || hetc_simd);
    #pragma omp parallel
    {
        float *buf = hetc_floats(8 * bf, 0);
        for (int r = 0; r < 8; r++) hetc_dw_pad(&s, buf + r * bf);
        #pragma omp for collapse(2) schedule(static)
        for (long n = 0; n < N; n++)
            for (long blk = 0; blk < blocks; blk++) {
                long rows = E - blk * 8 < 8 ? E - blk * 8 : 8;
                const float *pw = wp ? wp + blk * C * 8 : 0, *pb = b ? b + blk * 8 : 0;
                hetc_q8_in q = wq ? hetc_q8_image(scratch, N, C, P, n, wq + blk * C4 * 8,
                                                  start + blk * 8, swq + blk * 8)
                                  : (hetc_q8_in){0};
                if (simd)
                    hetc_1x1_buffers_avx512(buf, bf, &s, x + n * C * P, pw, C, wq ? &q : 0, pb,
                                            rows, (n * E + blk * 8) * P, blk * 8, ep, nep);
                else
                    hetc_1x1_buffers_portable(buf, bf, &s, x + n * C * P, pw, C, wq ? &q : 0, pb,
                                              rows, (n * E + blk * 8) * P, blk * 8, ep, nep);
                for (long r = 0; r < rows; r++) {
                    long o = blk * 8 + r;
                    hetc_dw_sums(&s, buf + r * bf, y + (n * E + o) * OH * OW, wd + o * KH * KW,
                                 bd ? bd[o] : 0.f, 0, OH, epd, nepd, (n * E + o) * OH * OW, o);
                }
            }
        free(buf);
    }
}

/* ---- depthwise convolution in blocks of 16 channels ------------------------ *
 * x [N][C/16][H][W][16] to y [N][C/16][OH][OW][16] (C a multiple of 16, one
 * output channel per input channel), w [C/16][KH * KW][16]: each vector is
 * one position's 16 channels, so every lane works on any plane size (NCHW
 * rows of 7 or 14 columns leave lanes idle and pay per-plane costs). A
 * block's plane goes into a zero-padded buffer per thread first, so the
 * sums have no bounds tests; R output columns at a time share each weight
 * load. The epilogue is a clamp (lo, hi) at most. */
__attribute__((target("avx512f"), always_inline))
static inline void hetc_dwb_row_avx512(float *py, const float *buf, long Wp, const float *w,
                                       __m512 bias, long KH, long KW, long ow0, long sw, long dh,
                                       long dw, long ih0, __m512 lo, __m512 hi, const int R) {
    __m512 acc[8];
    for (int r = 0; r < R; r++) acc[r] = bias;
    for (long ki = 0; ki < KH; ki++) {
        const float *row = buf + ((ih0 + ki * dh) * Wp + ow0 * sw) * 16;
        for (long kj = 0; kj < KW; kj++) {
            __m512 wv = _mm512_loadu_ps(w + (ki * KW + kj) * 16);
            for (int r = 0; r < R; r++)
                acc[r] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(row + (r * sw + kj * dw) * 16),
                                         acc[r]);
        }
    }
    for (int r = 0; r < R; r++)
        _mm512_storeu_ps(py + (ow0 + r) * 16, _mm512_min_ps(hi, _mm512_max_ps(lo, acc[r])));
}

#define HETC_DWB_CASE(R_)                                                                  \
    case R_:                                                                               \
        hetc_dwb_row_avx512(py, buf, Wp, w, bias, KH, KW, ow, sw, dh, dw, oh * sh, lo, hi, \
                            R_);                                                           \
        break;

__attribute__((target("avx512f")))
static void hetc_dwb_plane_avx512(float *py, const float *buf, long Wp, const float *w,
                                  const float *b16, long KH, long KW, long OH, long OW, long sh,
                                  long sw, long dh, long dw, float lo_, float hi_) {
    const __m512 lo = _mm512_set1_ps(lo_), hi = _mm512_set1_ps(hi_);
    const __m512 bias = b16 ? _mm512_loadu_ps(b16) : _mm512_setzero_ps();
    for (long oh = 0; oh < OH; oh++, py += OW * 16)
        for (long ow = 0; ow < OW; ow += 8) {
            switch (OW - ow < 8 ? OW - ow : 8) {
                HETC_DWB_CASE(8) HETC_DWB_CASE(7) HETC_DWB_CASE(6) HETC_DWB_CASE(5)
                HETC_DWB_CASE(4) HETC_DWB_CASE(3) HETC_DWB_CASE(2) default: HETC_DWB_CASE(1)
            }
        }
}

static void hetc_dwb_plane_portable(float *py, const float *buf, long Wp, const float *w,
                                    const float *b16, long KH, long KW, long OH, long OW, long sh,
                                    long sw, long dh, long dw, float lo, float hi) {
    for (long oh = 0; oh < OH; oh++)
        for (long ow = 0; ow < OW; ow++)
            for (int l = 0; l < 16; l++) {
                float acc = b16 ? b16[l] : 0.f;
                for (long ki = 0; ki < KH; ki++)
                    for (long kj = 0; kj < KW; kj++)
                        acc += w[(ki * KW + kj) * 16 + l] *
                               buf[((oh * sh + ki * dh) * Wp + ow * sw + kj * dw) * 16 + l];
                py[(oh * OW + ow) * 16 + l] = hetc_clamp(acc, lo, hi);
            }
}

HETC_KERNEL void k_conv2d_depthwise_b16(float *restrict y, const float *restrict x,
                                        const float *restrict w, const float *b, long N, long C,
                                        long H, long W, long KH, long KW, long OH, long OW,
                                        long sh, long sw, long pt, long pl, long dh, long dw,
                                        const hetc_step *ep, int nep) {
    float lo = -INFINITY, hi = INFINITY;
    if (nep && !hetc_epilogue_clamp(ep, nep, &lo, &hi)) {
        hetc_fail("k_conv2d_depthwise_b16: a blocked result takes a clamp as its only epilogue");
        return;
    }
    long Hp = (OH - 1) * sh + (KH - 1) * dh + 1, Wp = (OW - 1) * sw + (KW - 1) * dw + 1;
    long blocks = C / 16;
    /* buffer rows pt .. r1 and columns pl .. pl + cols hold input */
    long r1 = pt + H < Hp ? pt + H : Hp, cols = W < Wp - pl ? W : Wp - pl;
    #pragma omp parallel
    {
        float *buf = hetc_floats(Hp * Wp * 16, 1); /* zeroed once: the padding */
        #pragma omp for collapse(2) schedule(static)
        for (long n = 0; n < N; n++)
            for (long cb = 0; cb < blocks; cb++) {
                const float *plane = x + (n * blocks + cb) * H * W * 16;
                for (long r = pt; r < r1 && cols > 0; r++)
                    memcpy(buf + (r * Wp + pl) * 16, plane + (r - pt) * W * 16,
                           sizeof(float) * 16 * cols);
                float *py = y + (n * blocks + cb) * OH * OW * 16;
                const float *wb = w + cb * KH * KW * 16, *bb = b ? b + cb * 16 : 0;
                if (hetc_avx512)
                    hetc_dwb_plane_avx512(py, buf, Wp, wb, bb, KH, KW, OH, OW, sh, sw, dh, dw, lo,
                                          hi);
                else
                    hetc_dwb_plane_portable(py, buf, Wp, wb, bb, KH, KW, OH, OW, sh, sw, dh, dw,
                                            lo, hi);
            }
        free(buf);
    }
}

/* ---- 1x1 convolutions with int8 activations --------------------------------- *
 * A 1x1, stride-1, unpadded convolution is a linear layer over pixels: x
 * [N, C, P] is transposed to P-major rows (one token per pixel), the integer
 * row-block kernel (k_linear_rb, int8 per pixel and channel group, as the
 * conv2d op's act_group defines) gives [N * P, O], transposed back to NCHW
 * with the epilogue steps on each output plane. Scratch: the two transposed
 * copies, then what k_linear_rb needs. */
static void hetc_transpose(float *restrict dst, const float *restrict src, long rows, long cols) {
    /* dst[c][r] = src[r][c], in 32 x 32 blocks */
    #pragma omp parallel for collapse(2) schedule(static) if (rows * cols > 65536)
    for (long r0 = 0; r0 < rows; r0 += 32)
        for (long c0 = 0; c0 < cols; c0 += 32)
            for (long r = r0; r < r0 + 32 && r < rows; r++)
                for (long c = c0; c < c0 + 32 && c < cols; c++) dst[c * rows + r] = src[r * cols + c];
}

HETC_KERNEL void k_conv1x1_rb(float *restrict y, const float *restrict x,
                              const uint8_t *restrict packed, const void *restrict sw, int half,
                              const float *b, long N, long C, long P, long O, long G, int bits,
                              int nn, int mm, unsigned char *scratch, const hetc_step *ep, int nep) {
    float *xt = (float *)scratch, *yt = xt + (N * P * C + 15) / 16 * 16;
    unsigned char *rest = (unsigned char *)(yt + (N * P * O + 15) / 16 * 16);
    for (long n = 0; n < N; n++) hetc_transpose(xt + n * P * C, x + n * C * P, C, P);
    k_linear_rb(yt, xt, packed, sw, half, b, N * P, O, C, G, bits, nn, mm, rest);
    for (long n = 0; n < N; n++) hetc_transpose(y + n * O * P, yt + n * P * O, P, O);
    if (nep) {
        #pragma omp parallel for schedule(static) if (N * O * P > 65536)
        for (long i = 0; i < N * O; i++)
            hetc_epilogue_run(ep, nep, y + i * P, P, i * P, i % O, 0);
    }
}

/* x quantized and dequantized per pixel and group of G channels (NCHW), for
 * convolutions with int8 activations that no integer kernel takes: the
 * same numbers, computed in floats. */
HETC_KERNEL void k_fake_quant_pixels(float *restrict y, const float *restrict x, long N, long C,
                                     long P, long G) {
    #pragma omp parallel for collapse(2) schedule(static) if (N * C * P > 65536)
    for (long n = 0; n < N; n++)
        for (long p = 0; p < P; p++)
            for (long g = 0; g < C / G; g++) {
                const float *px = x + (n * C + g * G) * P + p;
                float m = 0.f;
                for (long c = 0; c < G; c++) {
                    float a = fabsf(px[c * P]);
                    m = a > m ? a : m;
                }
                float sc = m / 127.f, div = sc == 0.f ? 1.f : sc;
                float *py = y + (n * C + g * G) * P + p;
                for (long c = 0; c < G; c++) py[c * P] = nearbyintf(px[c * P] / div) * sc;
            }
}

#endif /* HETC_PREBUILT_KERNELS */
