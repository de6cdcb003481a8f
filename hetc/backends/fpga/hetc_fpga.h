/* The processing elements every generated fpga project uses (hetc backend
 * fpga), Vitis-HLS C++ over the Xilinx arbitrary-precision types.
 *
 * Integer layers (linear, conv2d): activations are quantized per token (a
 * convolution: per pixel) and group to int8 as the IR defines (scale =
 * max|x| / 127, round half to even); each output is the integer dot
 * product of a group (exact, in an ap_int accumulator wide enough for it)
 * times the activation's and the weight's scale, summed over groups in
 * f32.
 *
 * The layers' loops are flattened into one pipeline per token (output
 * pixel): groups outermost, outputs, then the cycles of a group, so that
 * an output's float sum is updated once per N * reuse cycles (the
 * DEPENDENCE pragma says so when that covers a float adder's latency).
 *
 * The dot product follows the systolic sparse tensor slices (SST) idea: a
 * dense unit multiplies P weights per cycle; an N:M unit keeps n of every m
 * weights with an index each, and each of its P multipliers takes its
 * activation through an m:1 multiplexer driven by that index, so 2:4 / 1:4
 * / 1:3 weights need 1/2, 1/4, 1/3 of the multipliers at the same
 * throughput.
 *
 * Everything between the integer layers (norms, softmax, GELU, residual
 * adds, attention's products) runs in float32 on floating-point operators,
 * one element per cycle; exp and erf are polynomials written here (not a
 * library's), so that the numbers are the same wherever this compiles.
 *
 * The same arithmetic, operation for operation, is in reference.py: C
 * simulation and that model agree bit for bit. */
#ifndef HETC_FPGA_H
#define HETC_FPGA_H

#include <math.h>

#include "ap_int.h"
#include "hls_stream.h"

/* The arrays between the top function's functions: local arrays (dataflow
 * channels) for synthesis; static in C simulation, where whole tensors
 * would overflow a thread's stack. */
#ifdef __SYNTHESIS__
#define HETC_BUFFER
#else
#define HETC_BUFFER static
#endif

namespace hetc {

/* K values x[0], x[S], x[2S], ... as int8 codes q and one scale per group of
 * G (S: 1 for a token's features, H*W for a pixel's channels) */
template <int K, int G, int S>
void quantize(const float *x, ap_int<8> q[K], float scale[K / G]) {
#pragma HLS INLINE
    for (int g = 0; g < K / G; g++) {
        float top = 0.f;  // max |x|, NaN winning as in numpy
        for (int j = 0; j < G; j++) {
#pragma HLS PIPELINE II=1
            float v = fabsf(x[(g * G + j) * S]);
            top = (v != v || v > top) ? v : top;
        }
        // a group holding inf or NaN: codes 0 and a NaN scale, so that its
        // sums are NaN, as the IR's quantization makes them
        bool finite = top - top == 0.f;
        float s = finite ? top / 127.f : NAN, d = s == 0.f || !finite ? 1.f : s;
        scale[g] = s;
        for (int j = 0; j < G; j++) {
#pragma HLS PIPELINE II=1
            q[g * G + j] = finite ? (ap_int<8>)rintf(x[(g * G + j) * S] / d) : (ap_int<8>)0;
        }
    }
}

/* Weight j of a row held as bytes: int8 codes one per byte, int4 codes two
 * per byte (low nibble first), as BITS-bit integers. */
template <int BITS>
ap_int<BITS> code(const unsigned char *row, int j) {
#pragma HLS INLINE
    return BITS == 4 ? (ap_int<BITS>)(row[j >> 1] >> (4 * (j & 1))) : (ap_int<BITS>)row[j];
}

/* Bytes per row of KW weights of BITS bits. */
constexpr int row_bytes(int kw, int bits) { return bits == 4 ? (kw + 1) / 2 : kw; }

/* Position j of a row of N:M positions, four 2-bit positions per byte
 * (lowest bits first). */
inline ap_uint<2> position(const unsigned char *row, int j) {
#pragma HLS INLINE
    return (ap_uint<2>)(row[j >> 2] >> (2 * (j & 3)));
}

/* One cycle of a unit: the exact sum of P products, the kept weights
 * j0 + c*P .. j0 + c*P + P-1 of row w (kept weight j0 the first of a
 * quantization group whose inputs start at q) times their inputs: for N:M
 * weights (M <= 4), each multiplier's input through an M:1 multiplexer
 * driven by its position (idx); dense weights are 1:1 (idx not read). */
template <int NN, int M, int P, int ACC, int BITS>
ap_int<ACC> cycle_dot(const ap_int<8> *q, const unsigned char *w, const unsigned char *idx,
                      int j0, int c) {
#pragma HLS INLINE
    ap_int<ACC> sum = 0;
    for (int p = 0; p < P; p++) {
#pragma HLS UNROLL
        int j = c * P + p;  // the kept weight in the group
        int k = M == 1 ? j : j / NN * M + (int)position(idx, j0 + j);
        sum += q[k] * code<BITS>(w, j0 + j);
    }
    return sum;
}

/* -- float32 functions: the same operations, in the same order, as
 * reference.py (compiled without contraction into fused multiply-adds) */

/* e^x: 2^n times a degree-6 polynomial on |r| <= ln2 / 2 (relative error
 * about 2e-7); 0 below -87.33 (subnormal results flushed), inf above 88.72 */
inline float exp_(float x) {
    if (x != x) return x;
    if (x < -87.33f) return 0.f;
    if (x > 88.72f) return INFINITY;
    float n = rintf(x * 1.44269504f);
    float r = (x - n * 0.693145751953125f) - n * 1.42860677e-06f;
    float p = 1.f + r * (1.f + r * (0.5f + r * (0.166666672f + r * (0.0416666679f +
              r * (0.00833333377f + r * 0.00138888892f)))));
    return ldexpf(p, (int)n);
}

/* erf(x) (Abramowitz and Stegun 7.1.26: absolute error below 1.5e-7 plus
 * float32 rounding) */
inline float erf_(float x) {
    float a = fabsf(x);
    float t = 1.f / (1.f + 0.3275911f * a);
    float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f +
                 t * (-1.453152027f + t * 1.061405429f))));
    float y = 1.f - poly * exp_(-(a * a));
    return x < 0.f ? -y : y;
}

inline float tanh_(float x) {
    if (fabsf(x) > 9.f) return x > 0.f ? 1.f : -1.f;
    float e = exp_(2.f * x);
    return (e - 1.f) / (e + 1.f);
}

inline float sigmoid_(float x) { return 1.f / (1.f + exp_(-x)); }

inline float gelu_(float x) { return 0.5f * x * (1.f + erf_(x * 0.707106781f)); }

inline float gelu_tanh_(float x) {
    return 0.5f * x * (1.f + tanh_(0.797884561f * (x + 0.044715f * (x * x * x))));
}

/* numpy's maximum and minimum: NaN wins */
inline float max_(float a, float b) { return (a != a || a > b) ? a : (b != b ? b : (a < b ? b : a)); }
inline float min_(float a, float b) { return (a != a || a < b) ? a : (b != b ? b : (a > b ? b : a)); }

/* T rows of N: (x - mean) / sqrt(var + eps) as a product with the
 * reciprocal, times w, plus b (each when given); sums in row order */
template <int T, int N, bool W, bool B>
void layer_norm(const float *x, const float *w, const float *b, float eps, float *y) {
    for (int t = 0; t < T; t++) {
        const float *r = x + t * N;
        float s = 0.f, v = 0.f;
        for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II=1
            s += r[i];
        }
        float mean = s / (float)N;
        for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II=1
            float d = r[i] - mean;
            v += d * d;
        }
        float inv = 1.f / sqrtf(v / (float)N + eps);
        for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II=1
            float o = (r[i] - mean) * inv;
            if (W) o = o * w[i];
            if (B) o = o + b[i];
            y[t * N + i] = o;
        }
    }
}

/* T rows of N: x / sqrt(mean(x^2) + eps) (as a product), times w when given */
template <int T, int N, bool W>
void rms_norm(const float *x, const float *w, float eps, float *y) {
    for (int t = 0; t < T; t++) {
        const float *r = x + t * N;
        float s = 0.f;
        for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II=1
            s += r[i] * r[i];
        }
        float inv = 1.f / sqrtf(s / (float)N + eps);
        for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II=1
            float o = r[i] * inv;
            y[t * N + i] = W ? o * w[i] : o;
        }
    }
}

/* T rows of N: e^(x - max) times the reciprocal of their sum (a row of
 * -inf has no max to subtract, and gives NaN, as the IR defines) */
template <int T, int N>
void softmax(const float *x, float *y) {
    for (int t = 0; t < T; t++) {
        const float *r = x + t * N;
        float m = -INFINITY, s = 0.f;
        for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II=1
            m = max_(m, r[i]);
        }
        float shift = m == -INFINITY ? 0.f : m;
        for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II=1
            float e = exp_(r[i] - shift);
            y[t * N + i] = e;
            s += e;
        }
        float inv = 1.f / s;
        for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II=1
            y[t * N + i] = y[t * N + i] * inv;
        }
    }
}

/* BATCH products of [L, E] and [E, S] matrices (row-major, the batches
 * contiguous; a batch stride of 0 repeats one matrix), each sum in order
 * of E */
template <int BATCH, int L, int E, int S, int SA, int SB>
void matmul(const float *a, const float *b, float *y) {
    for (int n = 0; n < BATCH; n++)
        for (int l = 0; l < L; l++)
            for (int o = 0; o < S; o++) {
                float acc = 0.f;
                for (int e = 0; e < E; e++) {
#pragma HLS PIPELINE II=1
                    acc += a[n * SA + l * E + e] * b[n * SB + e * S + o];
                }
                y[(n * L + l) * S + o] = acc;
            }
}

/* NC planes of H x W: the max of each window (KH x KW, strides, dilations,
 * top and left padding; cells outside the plane are skipped) */
template <int NC, int H, int W, int OH, int OW, int KH, int KW, int SH, int SW, int DH, int DW,
          int PT, int PL>
void max_pool(const float *x, float *y) {
    for (int c = 0; c < NC; c++)
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                float m = -INFINITY;
                for (int r = 0; r < KH; r++)
                    for (int s = 0; s < KW; s++) {
#pragma HLS PIPELINE II=1
                        int ih = oh * SH - PT + r * DH, iw = ow * SW - PL + s * DW;
                        if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                            m = max_(m, x[(c * H + ih) * W + iw]);
                    }
                y[(c * OH + oh) * OW + ow] = m;
            }
}

/* NC planes of HW values: each plane's mean (its sum in order, divided) */
template <int NC, int HW>
void mean_planes(const float *x, float *y) {
    for (int n = 0; n < NC; n++) {
        float s = 0.f;
        for (int i = 0; i < HW; i++) {
#pragma HLS PIPELINE II=1
            s += x[n * HW + i];
        }
        y[n] = s / (float)HW;
    }
}

}  // namespace hetc

#endif
