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

/* ---- elementwise ------------------------------------------------------- */

enum { U_RELU, U_GELU, U_GELU_TANH, U_SILU, U_SIGMOID, U_TANH, U_EXP, U_NEG, U_SQRT, U_RSQRT,
       U_ABS, U_LOG, U_ERF };

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

/* y = x permuted: y's index (i0..) reads x at sum(i_d * xs[d]) (strides of x along y's axes). */
static void k_permute(float *restrict y, const float *restrict x, int ndim, const long *shape,
                      const long *xs) {
    long inner = shape[ndim - 1], sx = xs[ndim - 1], outer = 1;
    for (int d = 0; d < ndim - 1; d++) outer *= shape[d];
    for (long o = 0; o < outer; o++) {
        long rem = o, ix = 0;
        for (int d = ndim - 2; d >= 0; d--) {
            ix += (rem % shape[d]) * xs[d];
            rem /= shape[d];
        }
        for (long i = 0; i < inner; i++) y[o * inner + i] = x[ix + i * sx];
    }
}

/* Copies a [outer, rows, inner] block into y at column offset (concat/split along an axis). */
static void k_copy_block(float *y, long y_rows, long y_off, const float *x, long x_rows,
                         long x_off, long rows, long outer, long inner) {
    for (long o = 0; o < outer; o++)
        memcpy(y + (o * y_rows + y_off) * inner, x + (o * x_rows + x_off) * inner,
               sizeof(float) * rows * inner);
}

/* ---- normalization ----------------------------------------------------- */

HETC_CLONES
static void k_softmax(float *y, const float *x, long rows, long n) {
    for (long r = 0; r < rows; r++) {
        const float *px = x + r * n;
        float *py = y + r * n, m = -INFINITY, s = 0.f;
        for (long i = 0; i < n; i++) m = px[i] > m ? px[i] : m;
        if (!isfinite(m)) m = 0.f;
        for (long i = 0; i < n; i++) { py[i] = expf(px[i] - m); s += py[i]; }
        for (long i = 0; i < n; i++) py[i] /= s;
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
 * causal masks keys beyond position l + offset; mask: additive, [L,S] broadcast
 * per (b,h) through strides mb, mh (0 when broadcast). */
HETC_CLONES
static void k_attention(float *y, const float *q, const float *k, const float *v, const float *mask,
                        long mb, long mh, long B, long H, long L, long S, long D, float scale,
                        int causal, long offset) {
    #pragma omp parallel for collapse(2) schedule(static) if (B * H * L * S * D > 65536)
    for (long b = 0; b < B; b++)
        for (long h = 0; h < H; h++) {
            float *p = malloc(sizeof(float) * S);
            const float *qb = q + (b * H + h) * L * D, *kb = k + (b * H + h) * S * D,
                        *vb = v + (b * H + h) * S * D;
            const float *mk = mask ? mask + b * mb + h * mh : 0;
            for (long l = 0; l < L; l++) {
                float m = -INFINITY;
                for (long s = 0; s < S; s++) {
                    float acc = 0.f;
                    #pragma omp simd reduction(+:acc)
                    for (long d = 0; d < D; d++) acc += qb[l * D + d] * kb[s * D + d];
                    acc *= scale;
                    if (causal && s > l + offset) acc = -INFINITY;
                    if (mk) acc += mk[l * S + s];
                    p[s] = acc;
                    m = acc > m ? acc : m;
                }
                float *out = y + ((b * H + h) * L + l) * D, sum = 0.f;
                for (long d = 0; d < D; d++) out[d] = 0.f;
                if (m == -INFINITY) continue; /* every key masked: zeros */
                for (long s = 0; s < S; s++) { p[s] = expf(p[s] - m); sum += p[s]; }
                for (long s = 0; s < S; s++) {
                    float w = p[s] / sum;
                    for (long d = 0; d < D; d++) out[d] += w * vb[s * D + d];
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

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void hetc_linear_qa_vnni(float *restrict y, const int8_t *restrict q,
                                const float *restrict sx, const int32_t *restrict corr,
                                const uint8_t *restrict codes, const float *restrict sw,
                                const float *b, long M, long N, long K, long G, int bits) {
    long groups = K / G, row_bytes = bits == 4 ? K / 2 : K;
    const __m512i low = _mm512_set1_epi8(15), flip = _mm512_set1_epi8((char)0x80);
    #pragma omp parallel for schedule(static)
    for (long n = 0; n < N; n++) {
        const uint8_t *pw = codes + n * row_bytes;
        for (long m = 0; m < M; m++) {
            const int8_t *pq = q + m * K;
            __m512 facc = _mm512_setzero_ps();
            float fix = 0.f;
            for (long g = 0; g < groups; g++) {
                __m512i acc = _mm512_setzero_si512();
                for (long k = g * G; k < (g + 1) * G; k += 64) {
                    __m512i w, x = _mm512_loadu_si512(pq + k);
                    if (bits == 4) {
                        __m256i v = _mm256_loadu_si256((const __m256i *)(pw + k / 2));
                        __m512i wide = _mm512_inserti64x4(_mm512_castsi256_si512(v),
                                                          _mm256_srli_epi16(v, 4), 1);
                        w = _mm512_and_si512(wide, low);
                    } else { /* s8 codes as the signed factor; q + 128 as the unsigned one */
                        w = _mm512_loadu_si512(pw + k);
                        __m512i t = w;
                        w = _mm512_xor_si512(x, flip);
                        x = t;
                    }
                    acc = _mm512_dpbusd_epi32(acc, w, x);
                }
                float s = sw[n * groups + g] * sx[m * groups + g];
                facc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(s), facc);
                fix += s * (float)(bits == 4 ? 8 * corr[m * groups + g] : 128 * corr[n * groups + g]);
            }
            y[m * N + n] = _mm512_reduce_add_ps(facc) - fix + (b ? b[n] : 0.f);
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

__attribute__((target("avx512f,avx512bw,avx512vnni,avx512vbmi")))
static void hetc_linear_nm_vnni(float *restrict y, const int8_t *restrict q,
                                const float *restrict sx, const uint8_t *restrict packed,
                                const float *restrict sw, const float *b, long M, long N,
                                long K, long G, int bits, int nn, int mm) {
    long chunks = K / mm * nn / 64, groups = K / G, KG = G / mm * nn, D = 64 * mm / nn;
    long cb = hetc_nm_chunk_bytes(bits, mm), code_bytes = bits == 4 ? 32 : 64;
    int pb = mm <= 4 ? 2 : 4, ngr = KG >= 64 ? 1 : (int)(64 / KG);
    uint8_t base_b[64], ctrl_b[64];
    int64_t qsel[8];
    int32_t lane_g[16];
    for (int j = 0; j < 64; j++) base_b[j] = (uint8_t)(mm * (j / nn));
    for (int i = 0; i < 8; i++) {
        qsel[i] = pb == 2 ? i / 4 : i / 2;
        for (int j = 0; j < 8; j++)
            ctrl_b[8 * i + j] = (uint8_t)((pb == 2 ? 16 * (i % 4) : 32 * (i % 2)) + pb * j);
    }
    for (int l = 0; l < 16; l++) lane_g[l] = ngr == 1 ? 0 : l / (16 / ngr);
    const __m512i base = _mm512_loadu_si512(base_b), ctrl = _mm512_loadu_si512(ctrl_b),
                  qs = _mm512_loadu_si512(qsel), lg = _mm512_loadu_si512(lane_g),
                  pmask = _mm512_set1_epi8(pb == 2 ? 3 : 15), low = _mm512_set1_epi8(15),
                  fixk = _mm512_set1_epi8(bits == 4 ? 8 : (char)0x80),
                  flip = _mm512_set1_epi8((char)0x80);
    const __mmask16 gm = (__mmask16)((1u << ngr) - 1);
    #pragma omp parallel for schedule(static)
    for (long n = 0; n < N; n++) {
        const uint8_t *row = packed + n * chunks * cb;
        const float *swn = sw + n * groups;
        for (long m = 0; m < M; m++) {
            const int8_t *pq = q + m * K;
            const float *sxm = sx + m * groups;
            __m512 facc = _mm512_setzero_ps();
            for (long c = 0; c < chunks; c++) {
                const uint8_t *pc = row + c * cb;
                __m512i w, pos;
                if (bits == 4) {
                    __m256i v = _mm256_loadu_si256((const __m256i *)pc);
                    w = _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(v),
                                                            _mm256_srli_epi16(v, 4), 1), low);
                } else {
                    w = _mm512_loadu_si512(pc);
                }
                if (pb == 2)
                    pos = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(pc + code_bytes)));
                else
                    pos = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(pc + code_bytes)));
                __m512i idx = _mm512_add_epi8(_mm512_and_si512(
                    _mm512_multishift_epi64_epi8(ctrl, _mm512_permutexvar_epi64(qs, pos)), pmask), base);
                const int8_t *xw = pq + c * D;
                __m512i g = _mm512_permutex2var_epi8(_mm512_loadu_si512(xw), idx,
                                                     _mm512_loadu_si512(xw + 64));
                if (D > 128) {
                    __m512i hi = D > 192 ? _mm512_loadu_si512(xw + 192) : _mm512_setzero_si512();
                    __m512i g2 = _mm512_permutex2var_epi8(_mm512_loadu_si512(xw + 128), idx, hi);
                    g = _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx), g, g2);
                }
                __m512i acc, fix;
                if (bits == 4) {
                    acc = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, g);
                    fix = _mm512_dpbusd_epi32(_mm512_setzero_si512(), fixk, g);
                } else {
                    acc = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_xor_si512(g, flip), w);
                    fix = _mm512_dpbusd_epi32(_mm512_setzero_si512(), fixk, w);
                }
                long g0 = c * 64 / KG;
                __m512 s;
                if (ngr == 1)
                    s = _mm512_set1_ps(swn[g0] * sxm[g0]);
                else
                    s = _mm512_permutexvar_ps(lg, _mm512_mul_ps(_mm512_maskz_loadu_ps(gm, swn + g0),
                                                                _mm512_maskz_loadu_ps(gm, sxm + g0)));
                facc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc, fix)), s, facc);
            }
            y[m * N + n] = _mm512_reduce_add_ps(facc) + (b ? b[n] : 0.f);
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

/* Whether the AVX-512 integer kernels may run: the CPU has VNNI (and VBMI
 * when asked) and HETC_X86_PORTABLE is unset (it forces the portable C
 * kernels, so they are tested on AVX-512 hosts too). */
static int hetc_int8_simd(int vbmi) {
    const char *portable = getenv("HETC_X86_PORTABLE");
    if (portable && *portable && *portable != '0') return 0;
    return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") &&
           (!vbmi || __builtin_cpu_supports("avx512vbmi"));
}

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
