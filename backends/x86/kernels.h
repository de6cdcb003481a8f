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
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <immintrin.h>
#include <omp.h>

#define HETC_CLONES __attribute__((target_clones("arch=x86-64-v4", "default")))

/* ---- run-time failures ------------------------------------------------- *
 * A kernel that meets bad data (an index out of range, an emulated fault)
 * records the first failure; hetc_run returns nonzero and hetc_error() gives
 * the text. */
#include <stdarg.h>
#include <stdio.h>
static char hetc_error_text[256];
static volatile int hetc_failed;

static void hetc_fail(const char *fmt, ...) {
    if (!__sync_bool_compare_and_swap(&hetc_failed, 0, 1)) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(hetc_error_text, sizeof hetc_error_text, fmt, ap);
    va_end(ap);
}

/* Nonzero when a kernel failed since the last call; clears the flag. */
static int hetc_take_failure(void) { return __sync_lock_test_and_set(&hetc_failed, 0); }

/* ---- elementwise ------------------------------------------------------- */

enum { U_RELU, U_GELU, U_GELU_TANH, U_SILU, U_SIGMOID, U_TANH, U_EXP, U_NEG, U_SQRT, U_RSQRT,
       U_ABS, U_LOG, U_ERF, U_FLOOR, U_CEIL, U_ROUND, U_RECIPROCAL, U_SIGN, U_SIN, U_COS, U_TAN,
       U_ASIN, U_ACOS, U_ATAN, U_SINH, U_COSH, U_ASINH, U_ACOSH, U_ATANH };

static inline float hetc_unary1(int op, float x) {
    switch (op) {
    case U_RELU: return x > 0.f ? x : 0.f;
    case U_GELU: return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
    case U_GELU_TANH: return 0.5f * x * (1.f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case U_SILU: return x / (1.f + expf(-x));
    case U_SIGMOID: return 1.f / (1.f + expf(-x));
    case U_TANH: return tanhf(x);
    case U_EXP: return expf(x);
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

HETC_CLONES
static void k_unary(int op, float *restrict y, const float *restrict x, long n) {
    for (long i = 0; i < n; i++) y[i] = hetc_unary1(op, x[i]);
}

enum { B_ADD, B_SUB, B_MUL, B_DIV, B_MAX, B_MIN, B_POW };

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

/* y = a op b, both broadcast to shape[ndim] with element strides (0 where broadcast). */
HETC_CLONES
static void k_binary(int op, float *restrict y, const float *a, const float *b, int ndim,
                     const long *shape, const long *as, const long *bs) {
    long inner = shape[ndim - 1], sa = as[ndim - 1], sb = bs[ndim - 1], outer = 1;
    for (int d = 0; d < ndim - 1; d++) outer *= shape[d];
    for (long o = 0; o < outer; o++) {
        long rem = o, ia = 0, ib = 0;
        for (int d = ndim - 2; d >= 0; d--) {
            long i = rem % shape[d];
            rem /= shape[d];
            ia += i * as[d];
            ib += i * bs[d];
        }
        const float *pa = a + ia, *pb = b + ib;
        float *py = y + o * inner;
        if (sa == 1 && sb == 1)
            for (long i = 0; i < inner; i++) py[i] = hetc_binary1(op, pa[i], pb[i]);
        else if (sa == 1 && sb == 0)
            for (long i = 0; i < inner; i++) py[i] = hetc_binary1(op, pa[i], pb[0]);
        else if (sa == 0 && sb == 1)
            for (long i = 0; i < inner; i++) py[i] = hetc_binary1(op, pa[0], pb[i]);
        else
            for (long i = 0; i < inner; i++) py[i] = hetc_binary1(op, pa[i * sa], pb[i * sb]);
    }
}

/* ---- layout ------------------------------------------------------------ */

/* y = x permuted, sliced or broadcast: y's index (i0..) reads x at
 * sum(i_d * xs[d]) (x's strides along y's axes, in elements: negative for
 * reversed slices, 0 for broadcast axes). Any element size of 1, 2, 4 or 8. */
#define HETC_STRIDED(T)                                                                    \
    static void hetc_strided_##T(T *restrict y, const T *restrict x, int ndim,             \
                                 const long *shape, const long *xs) {                      \
        long inner = ndim ? shape[ndim - 1] : 1, sx = ndim ? xs[ndim - 1] : 0, outer = 1;  \
        for (int d = 0; d < ndim - 1; d++) outer *= shape[d];                              \
        for (long o = 0; o < outer; o++) {                                                 \
            long rem = o, ix = 0;                                                          \
            for (int d = ndim - 2; d >= 0; d--) {                                          \
                ix += (rem % shape[d]) * xs[d];                                            \
                rem /= shape[d];                                                           \
            }                                                                              \
            for (long i = 0; i < inner; i++) y[o * inner + i] = x[ix + i * sx];            \
        }                                                                                  \
    }
HETC_STRIDED(uint8_t)
HETC_STRIDED(uint16_t)
HETC_STRIDED(uint32_t)
HETC_STRIDED(uint64_t)

static void k_strided(void *y, const void *x, int ndim, const long *shape, const long *xs,
                      int esize) {
    switch (esize) {
    case 1: hetc_strided_uint8_t(y, x, ndim, shape, xs); break;
    case 2: hetc_strided_uint16_t(y, x, ndim, shape, xs); break;
    case 4: hetc_strided_uint32_t(y, x, ndim, shape, xs); break;
    default: hetc_strided_uint64_t(y, x, ndim, shape, xs); break;
    }
}

/* Copies a [outer, rows, inner] block into y at row offset (concat/split along
 * an axis); inner counts bytes. */
static void k_copy_block(void *y, long y_rows, long y_off, const void *x, long x_rows,
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
static void k_gather(void *y, const void *x, const void *idx, int wide, long n_idx, long outer,
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

enum { T_F32, T_I64, T_I32, T_BOOL };

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
static void k_cast(void *y, int yt, const void *x, int xt, long n) {
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

enum { C_EQ, C_LT, C_GT, C_LE, C_GE };

/* Comparisons of any two numeric operands (compared as doubles: exact for
 * f32, i32 and i64 up to 2^53), broadcasting, into bool. */
static void k_compare(int op, uint8_t *y, const void *a, int at, const void *b, int bt, int ndim,
                      const long *shape, const long *sa, const long *sb) {
    long n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    for (long i = 0; i < n; i++) {
        double p = hetc_load_as_double(a, at, hetc_bcast(i, ndim, shape, sa)),
               q = hetc_load_as_double(b, bt, hetc_bcast(i, ndim, shape, sb));
        y[i] = (uint8_t)(op == C_EQ ? p == q : op == C_LT ? p < q : op == C_GT ? p > q
                         : op == C_LE ? p <= q : p >= q);
    }
}

/* y = c ? a : b, broadcasting all three, elements of esize bytes. */
static void k_where(void *y, const uint8_t *c, const void *a, const void *b, int ndim,
                    const long *shape, const long *sc, const long *sa, const long *sb, int esize) {
    long n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    for (long i = 0; i < n; i++) {
        const char *src = c[hetc_bcast(i, ndim, shape, sc)]
                              ? (const char *)a + hetc_bcast(i, ndim, shape, sa) * esize
                              : (const char *)b + hetc_bcast(i, ndim, shape, sb) * esize;
        memcpy((char *)y + i * esize, src, esize);
    }
}

enum { L_AND, L_OR, L_XOR };

/* Logical ops on bool (one byte, 0 or 1), broadcasting as k_binary does. */
static void k_logical(int op, uint8_t *y, const uint8_t *a, const uint8_t *b, int ndim,
                      const long *shape, const long *sa, const long *sb) {
    long n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    for (long i = 0; i < n; i++) {
        int p = a[hetc_bcast(i, ndim, shape, sa)] != 0, q = b[hetc_bcast(i, ndim, shape, sb)] != 0;
        y[i] = (uint8_t)(op == L_AND ? p && q : op == L_OR ? p || q : p != q);
    }
}

static void k_logical_not(uint8_t *y, const uint8_t *x, long n) {
    for (long i = 0; i < n; i++) y[i] = !x[i];
}

/* isnan (pos = neg = -1) or isinf with the signs asked for, into bool. */
static void k_float_test(uint8_t *y, const float *x, long n, int pos, int neg) {
    for (long i = 0; i < n; i++)
        y[i] = (uint8_t)(pos < 0 ? isnan(x[i]) : (isinf(x[i]) && (x[i] > 0 ? pos : neg)));
}

/* Index (i64) of the first (or, with last, the last) maximum (or minimum) along
 * the middle axis of [outer, n, inner]; nan counts as the extreme. */
static void k_arg_reduce(int64_t *y, const float *x, long outer, long n, long inner, int max,
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

/* cumsum along the middle axis of [outer, n, inner] (f32 sums, in order). */
static void k_cumsum(float *y, const float *x, long outer, long n, long inner, int exclusive,
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
static void k_gather_elements(void *y, const void *x, const void *idx, int wide, int ndim,
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

enum { P_CONSTANT, P_REFLECT, P_EDGE, P_WRAP };

/* pad: output coordinate i of an axis reads cropped coordinate i - grow[d]
 * (the axis cropped by crop[d] in front to n[d] cells), mapped back inside by
 * the mode, or is `value` (esize bytes) in constant mode. */
static void k_pad(void *y, const void *x, int ndim, const long *yshape, const long *xs,
                  const long *grow, const long *crop, const long *n, int mode, const void *value,
                  int esize) {
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
static void k_mask_additive(float *y, const uint8_t *m, long n) {
    for (long i = 0; i < n; i++) y[i] = m[i] ? 0.f : -INFINITY;
}

enum { R_SUM, R_MEAN, R_MAX, R_MIN, R_PROD };

/* y[o] = reduce over r of x[base(o) + off(r)]: kept axes (shape ks, x strides
 * kx) index the output, reduced axes (shape rs, strides rx) are folded.
 * Accumulates in double; an empty reduction gives the identity (mean: nan). */
static void k_reduce(int op, float *y, const float *x, int nk, const long *ks, const long *kx,
                     int nr, const long *rs, const long *rx) {
    long no = 1, nred = 1;
    for (int d = 0; d < nk; d++) no *= ks[d];
    for (int d = 0; d < nr; d++) nred *= rs[d];
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

/* softmax (or log_softmax) over the middle axis of [outer, n, inner]; a row
 * whose max is not finite subtracts nothing (as the interpreter does). */
HETC_CLONES
static void k_softmax(float *y, const float *x, long outer, long n, long inner, int log) {
    for (long o = 0; o < outer; o++)
        for (long j = 0; j < inner; j++) {
            const float *px = x + o * n * inner + j;
            float *py = y + o * n * inner + j, m = -INFINITY, s = 0.f;
            for (long i = 0; i < n; i++) m = px[i * inner] > m ? px[i * inner] : m;
            if (log ? m == -INFINITY : !isfinite(m)) m = 0.f;
            if (log) {
                for (long i = 0; i < n; i++) s += expf(px[i * inner] - m);
                float ls = logf(s);
                for (long i = 0; i < n; i++) py[i * inner] = px[i * inner] - m - ls;
                continue;
            }
            for (long i = 0; i < n; i++) { py[i * inner] = expf(px[i * inner] - m); s += py[i * inner]; }
            for (long i = 0; i < n; i++) py[i * inner] /= s;
        }
}

/* layer_norm (rms = 0) or rms_norm (rms = 1) over the last n values of each row. */
HETC_CLONES
static void k_norm(float *y, const float *x, const float *w, const float *b, long rows, long n,
                   float eps, int rms) {
    for (long r = 0; r < rows; r++) {
        const float *px = x + r * n;
        float *py = y + r * n;
        double mean = 0.0, var = 0.0;
        if (!rms) {
            for (long i = 0; i < n; i++) mean += px[i];
            mean /= n;
        }
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
static void k_channel_affine(float *y, const float *x, const float *k, const float *d, long n,
                             long c, long spatial) {
    for (long i = 0; i < n; i++)
        for (long j = 0; j < c; j++) {
            const float *px = x + (i * c + j) * spatial;
            float *py = y + (i * c + j) * spatial;
            for (long s = 0; s < spatial; s++) py[s] = px[s] * k[j] + d[j];
        }
}

/* ---- matrix products --------------------------------------------------- */

/* y[M,N] = x[M,K] . w[N,K]^T (+ b), f32 weights. */
HETC_CLONES
static void k_linear_f32(float *restrict y, const float *restrict x, const float *restrict w,
                         const float *b, long M, long N, long K) {
    #pragma omp parallel for schedule(static) if (N * K > 65536)
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

/* Quantized weights, group-wise symmetric: w[n,k] = code[n,k] * scale[n, k / G].
 * bits 8: one int8 code per byte; bits 4: two per byte, low nibble first. */
HETC_CLONES
static void k_linear_q(float *restrict y, const float *restrict x, const uint8_t *restrict codes,
                       const float *restrict scale, const float *b, long M, long N, long K,
                       long G, int bits) {
    long groups = K / G, row_bytes = bits == 8 ? K : K / 2;
    #pragma omp parallel for schedule(static) if (N * K > 65536)
    for (long n = 0; n < N; n++) {
        const uint8_t *pc = codes + n * row_bytes;
        float wrow[G];
        for (long m0 = 0; m0 < M; m0++) y[m0 * N + n] = b ? b[n] : 0.f;
        for (long g = 0; g < groups; g++) {
            float s = scale[n * groups + g];
            if (bits == 8)
                for (long i = 0; i < G; i++) wrow[i] = (float)(int8_t)pc[g * G + i] * s;
            else
                for (long i = 0; i < G; i += 2) {
                    uint8_t byte = pc[(g * G + i) / 2];
                    wrow[i] = (float)((int8_t)(byte << 4) >> 4) * s;
                    wrow[i + 1] = (float)((int8_t)byte >> 4) * s;
                }
            for (long m = 0; m < M; m++) {
                const float *px = x + m * K + g * G;
                float acc = 0.f;
                #pragma omp simd reduction(+:acc)
                for (long i = 0; i < G; i++) acc += px[i] * wrow[i];
                y[m * N + n] += acc;
            }
        }
    }
}

/* y[B,M,N] = a[B,M,K] . b[B,K,N] with batch strides (0: broadcast). */
HETC_CLONES
static void k_matmul(float *restrict y, const float *a, const float *b, long B, long M, long N,
                     long K, long as, long bs) {
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

/* Attention on [B,H,L,D] q and [B,H,S,D] k, v: softmax(q k^T * scale [+ mask]) v;
 * causal masks keys beyond position l + offset; mask: additive f32 with key
 * axis whole, broadcast over b, h, l through strides mb, mh, ml (0 when
 * broadcast). */
HETC_CLONES
/* softmax(q k^T * scale [causal] [+ mask]) v over [B, H, L, D] queries.
 * Keys and values are read where they lie: as up to two segments along the
 * sequence (k0/v0: S0 rows, then k1/v1: S1 rows; a decoder's cache and its
 * new tokens, never concatenated) of [B, H / group, S_i, D] tensors, query
 * head h reading key head h / group (grouped-query attention, never expanded). */
static void k_attention(float *y, const float *q, const float *k0, const float *v0, long S0,
                        const float *k1, const float *v1, long S1, long group,
                        const float *mask, long mb, long mh, long ml, long B, long H, long L,
                        long D, long Dv, float scale, int causal, long offset) {
    long S = S0 + S1, Hk = H / group;
    #pragma omp parallel for collapse(2) schedule(static) if (B * H * L * S * D > 65536)
    for (long b = 0; b < B; b++)
        for (long h = 0; h < H; h++) {
            float *p = malloc(sizeof(float) * S);
            long kv = b * Hk + h / group;
            const float *qb = q + (b * H + h) * L * D;
            const float *kb0 = k0 + kv * S0 * D, *vb0 = v0 + kv * S0 * Dv;
            const float *kb1 = S1 ? k1 + kv * S1 * D : 0, *vb1 = S1 ? v1 + kv * S1 * Dv : 0;
            const float *mk = mask ? mask + b * mb + h * mh : 0;
            for (long l = 0; l < L; l++) {
                float m = -INFINITY;
                for (long s = 0; s < S; s++) {
                    const float *kr = s < S0 ? kb0 + s * D : kb1 + (s - S0) * D;
                    float acc = 0.f;
                    #pragma omp simd reduction(+:acc)
                    for (long d = 0; d < D; d++) acc += qb[l * D + d] * kr[d];
                    acc *= scale;
                    if (causal && s > l + offset) acc = -INFINITY;
                    if (mk) acc += mk[l * ml + s];
                    p[s] = acc;
                    m = acc > m ? acc : m;
                }
                float *out = y + ((b * H + h) * L + l) * Dv, sum = 0.f;
                for (long d = 0; d < Dv; d++) out[d] = 0.f;
                if (m == -INFINITY) continue; /* every key masked: zeros */
                for (long s = 0; s < S; s++) { p[s] = expf(p[s] - m); sum += p[s]; }
                for (long s = 0; s < S; s++) {
                    const float *vr = s < S0 ? vb0 + s * Dv : vb1 + (s - S0) * Dv;
                    float w = p[s] / sum;
                    #pragma omp simd
                    for (long d = 0; d < Dv; d++) out[d] += w * vr[d];
                }
            }
            free(p);
        }
}

/* ---- convolution and pooling (NCHW) ------------------------------------ */

HETC_CLONES
static void k_conv2d(float *restrict y, const float *restrict x, const float *restrict w,
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

static void k_max_pool2d(float *y, const float *x, long NC, long H, long W, long KH, long KW,
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
                            m = v > m ? v : m;
                        }
                    }
                y[(c * OH + oh) * OW + ow] = m;
            }
}

/* avg_pool2d: the divisor counts input cells, plus the explicit padding
 * (pt, pl, pb, pr) when include_pad, never the ceil-mode overhang. */
static void k_avg_pool2d(float *y, const float *x, long NC, long H, long W, long KH, long KW,
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

static void k_mean_rows(float *y, const float *x, long rows, long n) {
    for (long r = 0; r < rows; r++) {
        double s = 0.0;
        for (long i = 0; i < n; i++) s += x[r * n + i];
        y[r] = (float)(s / n);
    }
}

/* ---- int8 dynamic activations x integer weights (act_group) ------------ *
 * x is quantized per token and group of G features: s = max|x| / 127,
 * q = rint(x / s) (as the interpreter does). Weight codes are unsigned so
 * vpdpbusd (u8 x s8 -> s32) applies:
 *   int4: each 64-weight block is 32 bytes, byte j = (c[j] + 8) | (c[j + 32] + 8) << 4,
 *         and sum (c + 8) q = sum c q + 8 sum q (sum q kept per token and group);
 *   int8: codes are s8 and the activations are shifted instead, q + 128 as u8,
 *         sum (q + 128) c = sum q c + 128 sum c (sum c packed per row and group).
 * Every partial sum is an exact integer; y = sum_g s_w[n,g] s_x[m,g] dot_g. */

/* A token group's int8 scale, max |x| / 127 (0 for an all-zero group). */
static inline float hetc_group_scale(const float *px, long G) {
    float mx = 0.f;
    for (long i = 0; i < G; i++) mx = fabsf(px[i]) > mx ? fabsf(px[i]) : mx;
    return mx / 127.f;
}

static void hetc_quantize_rows(const float *x, long M, long K, long G, int8_t *q, float *s,
                               int32_t *qsum) {
    long groups = K / G;
    for (long m = 0; m < M; m++)
        for (long g = 0; g < groups; g++) {
            const float *px = x + m * K + g * G;
            float sc = hetc_group_scale(px, G), div = sc == 0.f ? 1.f : sc;
            int32_t sum = 0;
            for (long i = 0; i < G; i++) {
                int v = (int)nearbyintf(px[i] / div);
                q[m * K + g * G + i] = (int8_t)v;
                sum += v;
            }
            s[m * groups + g] = sc;
            qsum[m * groups + g] = sum;
        }
}

/* The dot product of one row's group with one token's group, in integers. */
static inline int32_t hetc_dot_group_scalar(const uint8_t *w, const int8_t *q, long G, int bits) {
    int32_t acc = 0;
    if (bits == 4)
        for (long b = 0; b < G; b += 64)
            for (long j = 0; j < 32; j++) {
                uint8_t byte = w[b / 2 + j];
                acc += (int32_t)(byte & 15) * q[b + j] + (int32_t)(byte >> 4) * q[b + 32 + j];
            }
    else
        for (long i = 0; i < G; i++) acc += (int32_t)(int8_t)w[i] * q[i];
    return acc;
}

/* One register tile of the VNNI kernel: R output rows x T tokens (R <= 2,
 * T <= 4, constants after inlining), so each decoded weight block serves T
 * tokens and each activation load R rows. */
__attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline))
static inline void hetc_qa_tile(float *restrict y, const int8_t *restrict q,
                                const float *restrict sx, const int32_t *restrict corr,
                                const uint8_t *restrict codes, const float *restrict sw,
                                const float *b, long n0, long m0, const int R, const int T,
                                long N, long K, long G, int bits) {
    long groups = K / G, row_bytes = bits == 4 ? K / 2 : K;
    const __m512i low = _mm512_set1_epi8(15), flip = _mm512_set1_epi8((char)0x80);
    __m512 facc[2][4];
    float fix[2][4];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) { facc[r][t] = _mm512_setzero_ps(); fix[r][t] = 0.f; }
    for (long g = 0; g < groups; g++) {
        __m512i acc[2][4];
        for (int r = 0; r < R; r++)
            for (int t = 0; t < T; t++) acc[r][t] = _mm512_setzero_si512();
        for (long k = g * G; k < (g + 1) * G; k += 64) {
            __m512i w[2];
            for (int r = 0; r < R; r++) {
                const uint8_t *pw = codes + (n0 + r) * row_bytes;
                if (bits == 4) {
                    __m256i v = _mm256_loadu_si256((const __m256i *)(pw + k / 2));
                    w[r] = _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(v),
                                                               _mm256_srli_epi16(v, 4), 1), low);
                } else {
                    w[r] = _mm512_loadu_si512(pw + k);
                }
            }
            for (int t = 0; t < T; t++) {
                __m512i x = _mm512_loadu_si512(q + (m0 + t) * K + k);
                if (bits == 4) { /* u4 + 8 codes x s8 tokens */
                    for (int r = 0; r < R; r++) acc[r][t] = _mm512_dpbusd_epi32(acc[r][t], w[r], x);
                } else {        /* tokens + 128 as u8 x s8 codes */
                    x = _mm512_xor_si512(x, flip);
                    for (int r = 0; r < R; r++) acc[r][t] = _mm512_dpbusd_epi32(acc[r][t], x, w[r]);
                }
            }
        }
        for (int r = 0; r < R; r++)
            for (int t = 0; t < T; t++) {
                float sc = sw[(n0 + r) * groups + g] * sx[(m0 + t) * groups + g];
                facc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][t]), _mm512_set1_ps(sc),
                                             facc[r][t]);
                fix[r][t] += sc * (float)(bits == 4 ? 8 * corr[(m0 + t) * groups + g]
                                                    : 128 * corr[(n0 + r) * groups + g]);
            }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            y[(m0 + t) * N + n0 + r] = _mm512_reduce_add_ps(facc[r][t]) - fix[r][t] +
                                       (b ? b[n0 + r] : 0.f);
}

#define HETC_QA_TILE(R, T) \
    hetc_qa_tile(y, q, sx, corr, codes, sw, b, n0, m0, R, T, N, K, G, bits)

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void hetc_linear_qa_vnni(float *restrict y, const int8_t *restrict q,
                                const float *restrict sx, const int32_t *restrict corr,
                                const uint8_t *restrict codes, const float *restrict sw,
                                const float *b, long M, long N, long K, long G, int bits) {
    if (M < 4) { /* decode: one row at a time keeps the loop lean */
        #pragma omp parallel for schedule(static)
        for (long n0 = 0; n0 < N; n0++) {
            long m0 = 0;
            switch (M) {
            case 3: HETC_QA_TILE(1, 3); break;
            case 2: HETC_QA_TILE(1, 2); break;
            default: HETC_QA_TILE(1, 1); break;
            }
        }
        return;
    }
    #pragma omp parallel for schedule(static)
    for (long pair = 0; pair < (N + 1) / 2; pair++) {
        long n0 = 2 * pair, m0 = 0;
        int two = n0 + 1 < N;
        for (; m0 + 4 <= M; m0 += 4) {
            if (two) HETC_QA_TILE(2, 4); else HETC_QA_TILE(1, 4);
        }
        switch (M - m0) {
        case 3: if (two) HETC_QA_TILE(2, 3); else HETC_QA_TILE(1, 3); break;
        case 2: if (two) HETC_QA_TILE(2, 2); else HETC_QA_TILE(1, 2); break;
        case 1: if (two) HETC_QA_TILE(2, 1); else HETC_QA_TILE(1, 1); break;
        }
    }
}

static void hetc_linear_qa_portable(float *restrict y, const int8_t *restrict q,
                                    const float *restrict sx, const int32_t *restrict corr,
                                    const uint8_t *restrict codes, const float *restrict sw,
                                    const float *b, long M, long N, long K, long G, int bits) {
    long groups = K / G, row_bytes = bits == 4 ? K / 2 : K;
    #pragma omp parallel for schedule(static)
    for (long n = 0; n < N; n++)
        for (long m = 0; m < M; m++) {
            float acc = 0.f;
            for (long g = 0; g < groups; g++) {
                const uint8_t *pw = codes + n * row_bytes + (bits == 4 ? g * G / 2 : g * G);
                int32_t dot = hetc_dot_group_scalar(pw, q + m * K + g * G, G, bits);
                if (bits == 4) dot -= 8 * corr[m * groups + g];
                acc += sw[n * groups + g] * sx[m * groups + g] * (float)dot;
            }
            y[m * N + n] = acc + (b ? b[n] : 0.f);
        }
}

/* ---- N:M sparse integer weights x int8 activations ---------------------- *
 * Only the kept values are stored. Each row is a run of chunks of 64 kept
 * values (K N / M is a multiple of 64); a chunk is the codes (int4: 32 bytes,
 * byte j = (c[j] + 8) | (c[j + 32] + 8) << 4; int8: 64 s8 bytes), then each
 * kept value's position inside its M-group as a PB-bit field, PB = 2 for
 * M <= 4 else 4, packed from bit 0 up (8 PB bytes). Kept value j of chunk c
 * multiplies activation c D + M (j / N) + pos[j], D = 64 M / N (D is 128,
 * 192 or 256). A quantization group holds KG = G N / M kept values: a chunk
 * lies inside one group or holds 64 / KG whole groups.
 * The AVX-512 kernel gathers the chunk's activations with vpermi2b from the
 * positions decoded by vpmultishiftqb, then vpdpbusd with unsigned weight
 * codes (int4: c + 8, minus 8 sum q) or unsigned activations (int8: q + 128,
 * minus 128 sum c); the corrections are a second vpdpbusd, so nothing but the
 * codes, positions and scales is read per row. */

static inline long hetc_nm_chunk_bytes(int bits, int mm) {
    return (bits == 4 ? 32 : 64) + 8 * (mm <= 4 ? 2 : 4);
}

/* Kept value j of a chunk: its code, and its position in its M-group in *pos. */
static inline int hetc_nm_get(const uint8_t *pc, long j, int bits, int mm, int *pos) {
    int pb = mm <= 4 ? 2 : 4;
    long bit = pb * j, code_bytes = bits == 4 ? 32 : 64;
    *pos = (pc[code_bytes + bit / 8] >> (bit % 8)) & ((1 << pb) - 1);
    return bits == 4 ? ((j < 32 ? pc[j] : pc[j - 32] >> 4) & 15) - 8 : (int8_t)pc[j];
}

/* Per-call constants of the N:M kernel (see hetc_nm_setup). */
typedef struct {
    __m512i base, ctrl, qs, lg, pmask, low, fixk, flip;
    long chunks, groups, KG, D, cb, code_bytes;
    int pb, ngr;
    __mmask16 gm;
} hetc_nm_consts;

__attribute__((target("avx512f,avx512bw,avx512vnni,avx512vbmi")))
static void hetc_nm_setup(hetc_nm_consts *c, long K, long G, int bits, int nn, int mm) {
    c->chunks = K / mm * nn / 64; c->groups = K / G; c->KG = G / mm * nn; c->D = 64 * mm / nn;
    c->cb = hetc_nm_chunk_bytes(bits, mm); c->code_bytes = bits == 4 ? 32 : 64;
    c->pb = mm <= 4 ? 2 : 4; c->ngr = c->KG >= 64 ? 1 : (int)(64 / c->KG);
    uint8_t base_b[64], ctrl_b[64];
    int64_t qsel[8];
    int32_t lane_g[16];
    for (int j = 0; j < 64; j++) base_b[j] = (uint8_t)(mm * (j / nn));
    for (int i = 0; i < 8; i++) {
        qsel[i] = c->pb == 2 ? i / 4 : i / 2;
        for (int j = 0; j < 8; j++)
            ctrl_b[8 * i + j] = (uint8_t)((c->pb == 2 ? 16 * (i % 4) : 32 * (i % 2)) + c->pb * j);
    }
    for (int l = 0; l < 16; l++) lane_g[l] = c->ngr == 1 ? 0 : l / (16 / c->ngr);
    c->base = _mm512_loadu_si512(base_b); c->ctrl = _mm512_loadu_si512(ctrl_b);
    c->qs = _mm512_loadu_si512(qsel); c->lg = _mm512_loadu_si512(lane_g);
    c->pmask = _mm512_set1_epi8(c->pb == 2 ? 3 : 15); c->low = _mm512_set1_epi8(15);
    c->fixk = _mm512_set1_epi8(bits == 4 ? 8 : (char)0x80); c->flip = _mm512_set1_epi8((char)0x80);
    c->gm = (__mmask16)((1u << c->ngr) - 1);
}

/* One row and T tokens (a constant after inlining): each chunk's codes and
 * positions are decoded once for the T tokens. */
__attribute__((target("avx512f,avx512bw,avx512vnni,avx512vbmi"), always_inline))
static inline void hetc_nm_tile(float *restrict y, const int8_t *restrict q,
                                const float *restrict sx, const uint8_t *restrict packed,
                                const float *restrict sw, const float *b, long n, long m0,
                                const int T, long N, long K, int bits,
                                const hetc_nm_consts *c) {
    const uint8_t *row = packed + n * c->chunks * c->cb;
    const float *swn = sw + n * c->groups;
    __m512 facc[4];
    for (int t = 0; t < T; t++) facc[t] = _mm512_setzero_ps();
    for (long ch = 0; ch < c->chunks; ch++) {
        const uint8_t *pc = row + ch * c->cb;
        __m512i w, pos, fixw = _mm512_setzero_si512();
        if (bits == 4) {
            __m256i v = _mm256_loadu_si256((const __m256i *)pc);
            w = _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(v),
                                                    _mm256_srli_epi16(v, 4), 1), c->low);
        } else {
            w = _mm512_loadu_si512(pc);
            fixw = _mm512_dpbusd_epi32(_mm512_setzero_si512(), c->fixk, w); /* 128 sum c */
        }
        if (c->pb == 2)
            pos = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(pc + c->code_bytes)));
        else
            pos = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(pc + c->code_bytes)));
        __m512i idx = _mm512_add_epi8(_mm512_and_si512(
            _mm512_multishift_epi64_epi8(c->ctrl, _mm512_permutexvar_epi64(c->qs, pos)), c->pmask),
            c->base);
        __mmask64 high = _mm512_movepi8_mask(idx);
        long g0 = ch * 64 / c->KG;
        __m512 swv = c->ngr == 1 ? _mm512_set1_ps(swn[g0]) : _mm512_maskz_loadu_ps(c->gm, swn + g0);
        for (int t = 0; t < T; t++) {
            const int8_t *xw = q + (m0 + t) * K + ch * c->D;
            __m512i g = _mm512_permutex2var_epi8(_mm512_loadu_si512(xw), idx,
                                                 _mm512_loadu_si512(xw + 64));
            if (c->D > 128) {
                __m512i hi = c->D > 192 ? _mm512_loadu_si512(xw + 192) : _mm512_setzero_si512();
                g = _mm512_mask_blend_epi8(high, g, _mm512_permutex2var_epi8(
                                                        _mm512_loadu_si512(xw + 128), idx, hi));
            }
            __m512i acc;
            if (bits == 4) /* (c + 8) q - 8 q */
                acc = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), w, g),
                                       _mm512_dpbusd_epi32(_mm512_setzero_si512(), c->fixk, g));
            else           /* (q + 128) c - 128 c */
                acc = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(),
                                                           _mm512_xor_si512(g, c->flip), w), fixw);
            const float *sxm = sx + (m0 + t) * c->groups;
            __m512 sc = c->ngr == 1 ? _mm512_mul_ps(swv, _mm512_set1_ps(sxm[g0]))
                                    : _mm512_permutexvar_ps(c->lg, _mm512_mul_ps(
                                          swv, _mm512_maskz_loadu_ps(c->gm, sxm + g0)));
            facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), sc, facc[t]);
        }
    }
    for (int t = 0; t < T; t++)
        y[(m0 + t) * N + n] = _mm512_reduce_add_ps(facc[t]) + (b ? b[n] : 0.f);
}

__attribute__((target("avx512f,avx512bw,avx512vnni,avx512vbmi")))
static void hetc_linear_nm_vnni(float *restrict y, const int8_t *restrict q,
                                const float *restrict sx, const uint8_t *restrict packed,
                                const float *restrict sw, const float *b, long M, long N,
                                long K, long G, int bits, int nn, int mm) {
    hetc_nm_consts c;
    hetc_nm_setup(&c, K, G, bits, nn, mm);
    #pragma omp parallel for schedule(static)
    for (long n = 0; n < N; n++) {
        long m0 = 0;
        for (; m0 + 4 <= M; m0 += 4) hetc_nm_tile(y, q, sx, packed, sw, b, n, m0, 4, N, K, bits, &c);
        switch (M - m0) {
        case 3: hetc_nm_tile(y, q, sx, packed, sw, b, n, m0, 3, N, K, bits, &c); break;
        case 2: hetc_nm_tile(y, q, sx, packed, sw, b, n, m0, 2, N, K, bits, &c); break;
        case 1: hetc_nm_tile(y, q, sx, packed, sw, b, n, m0, 1, N, K, bits, &c); break;
        }
    }
}

static void hetc_linear_nm_portable(float *restrict y, const int8_t *restrict q,
                                    const float *restrict sx, const uint8_t *restrict packed,
                                    const float *restrict sw, const float *b, long M, long N,
                                    long K, long G, int bits, int nn, int mm) {
    long chunks = K / mm * nn / 64, groups = K / G, KG = G / mm * nn, D = 64 * mm / nn;
    long cb = hetc_nm_chunk_bytes(bits, mm);
    #pragma omp parallel for schedule(static)
    for (long n = 0; n < N; n++)
        for (long m = 0; m < M; m++) {
            float acc = 0.f;
            int32_t dot = 0; /* exact within a quantization group */
            for (long k = 0; k < chunks * 64; k++) {
                long c = k / 64, j = k % 64;
                int pos, code = hetc_nm_get(packed + (n * chunks + c) * cb, j, bits, mm, &pos);
                dot += code * q[m * K + c * D + mm * (j / nn) + pos];
                if ((k + 1) % KG == 0) {
                    long gi = k / KG;
                    acc += sw[n * groups + gi] * sx[m * groups + gi] * (float)dot;
                    dot = 0;
                }
            }
            y[m * N + n] = acc + (b ? b[n] : 0.f);
        }
}

/* Which integer kernels may run, decided by hetc_configure when a model is
 * loaded (not per call): bit 0, AVX-512 VNNI; bit 1, also VBMI. Zero when
 * the CPU lacks them or HETC_X86_PORTABLE is set (it forces the portable C
 * kernels, so they are tested on AVX-512 hosts too). */
static int hetc_simd;

static void hetc_configure(void) {
    const char *portable = getenv("HETC_X86_PORTABLE");
    int vnni = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw");
    hetc_simd = portable && *portable && *portable != '0'
                    ? 0 : vnni | (vnni && __builtin_cpu_supports("avx512vbmi")) << 1;
}

static int hetc_int8_simd(int vbmi) { return (hetc_simd >> (vbmi ? 1 : 0)) & 1; }

/* The int8 tokens of x in the scratch (from the arena, 64-byte aligned): the
 * codes (M*K bytes), then their scales and their sums (M*K/G 4-byte values
 * each), each part rounded up to 64 bytes. */
static void hetc_quantize_into(const float *x, long M, long K, long G, unsigned char *scratch,
                               int8_t **q, float **sx, int32_t **qsum) {
    long side = (M * (K / G) * 4 + 63) / 64 * 64;
    *q = (int8_t *)scratch;
    *sx = (float *)(scratch + (M * K + 63) / 64 * 64);
    *qsum = (int32_t *)((unsigned char *)*sx + side);
    hetc_quantize_rows(x, M, K, G, *q, *sx, *qsum);
}

/* wsum: per row and group, the sum of the int8 codes (int8 weights only). */
static void k_linear_qa(float *restrict y, const float *restrict x, const uint8_t *restrict codes,
                        const float *restrict sw, const int32_t *wsum, const float *b, long M,
                        long N, long K, long G, int bits, unsigned char *scratch) {
    int vnni = hetc_int8_simd(0);
    int8_t *q;
    float *sx;
    int32_t *qsum;
    hetc_quantize_into(x, M, K, G, scratch, &q, &sx, &qsum);
    const int32_t *corr = bits == 4 ? qsum : wsum;
    if (vnni && G % 64 == 0)
        hetc_linear_qa_vnni(y, q, sx, corr, codes, sw, b, M, N, K, G, bits);
    else
        hetc_linear_qa_portable(y, q, sx, corr, codes, sw, b, M, N, K, G, bits);
}

/* N:M weights (layout above) x int8 activations; same scratch as k_linear_qa. */
static void k_linear_nm(float *restrict y, const float *restrict x, const uint8_t *restrict packed,
                        const float *restrict sw, const float *b, long M, long N, long K, long G,
                        int bits, int nn, int mm, unsigned char *scratch) {
    int fast = hetc_int8_simd(1);
    int8_t *q;
    float *sx;
    int32_t *qsum;
    hetc_quantize_into(x, M, K, G, scratch, &q, &sx, &qsum);
    if (fast)
        hetc_linear_nm_vnni(y, q, sx, packed, sw, b, M, N, K, G, bits, nn, mm);
    else
        hetc_linear_nm_portable(y, q, sx, packed, sw, b, M, N, K, G, bits, nn, mm);
}

/* x quantized and dequantized per token and group, for layers whose weight
 * layout has no integer kernel: the same numbers, computed in floats. */
static void k_fake_quant_rows(float *y, const float *x, long M, long K, long G) {
    long groups = K / G;
    for (long m = 0; m < M; m++)
        for (long g = 0; g < groups; g++) {
            const float *px = x + m * K + g * G;
            float sc = hetc_group_scale(px, G), div = sc == 0.f ? 1.f : sc;
            for (long i = 0; i < G; i++) y[m * K + g * G + i] = nearbyintf(px[i] / div) * sc;
        }
}
