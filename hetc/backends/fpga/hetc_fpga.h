/* The processing elements every generated fpga project uses (hetc backend
 * fpga), Vitis-HLS C++ over the Xilinx arbitrary-precision types.
 *
 * Activations are quantized per token and group to int8 as the IR defines
 * (scale = max|x| / 127, round half to even); each output is the integer
 * dot product of a group (exact, in an ap_int accumulator wide enough for
 * it) times the activation's and the weight's scale, summed over groups in
 * f32. The same arithmetic, step for step, is in reference.py: C
 * simulation and that model agree bit for bit.
 *
 * The matrix-vector units follow the systolic sparse tensor slices (SST)
 * idea: a dense unit multiplies P weights per cycle; an N:M unit keeps n
 * of every m weights with an index each, and each of its P multipliers
 * takes its activation through an m:1 multiplexer driven by that index,
 * so 2:4 / 1:4 / 1:3 weights need 1/2, 1/4, 1/3 of the multipliers at the
 * same throughput. */
#ifndef HETC_FPGA_H
#define HETC_FPGA_H

#include <math.h>

#include "ap_int.h"
#include "hls_stream.h"

namespace hetc {

/* x (K values) as int8 codes q and one scale per group of G */
template <int K, int G>
void quantize(const float x[K], ap_int<8> q[K], float scale[K / G]) {
    for (int g = 0; g < K / G; g++) {
        float top = 0.f;  // max |x|, NaN winning as in numpy
        for (int j = 0; j < G; j++) {
#pragma HLS PIPELINE II=1
            float v = fabsf(x[g * G + j]);
            top = (v != v || v > top) ? v : top;
        }
        float s = top / 127.f, d = s == 0.f ? 1.f : s;
        scale[g] = s;
        for (int j = 0; j < G; j++) {
#pragma HLS PIPELINE II=1
            q[g * G + j] = (ap_int<8>)rintf(x[g * G + j] / d);
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

/* y[n] = sum over groups g of (sum_{k in g} q[k] w[n][k]) * (sx[g] sw[n][g])
 * (+ bias[n]): dense weights (BITS-bit codes, held as bytes: code()), P
 * multiply-accumulates per cycle (P divides G); ACC bits hold a group's sum
 * without overflow. */
template <int K, int N, int G, int P, int ACC, int BITS>
void dense_mv(const ap_int<8> q[K], const float sx[K / G],
              const unsigned char w[N][row_bytes(K, BITS)],
              const float sw[N][K / G], const float bias[N], bool has_bias, float y[N]) {
    for (int n = 0; n < N; n++) {
        float out = 0.f;
        for (int g = 0; g < K / G; g++) {
            ap_int<ACC> acc = 0;
            for (int c = 0; c < G / P; c++) {
#pragma HLS PIPELINE II=1
                for (int p = 0; p < P; p++) {
#pragma HLS UNROLL
                    int k = g * G + c * P + p;
                    acc += q[k] * code<BITS>(w[n], k);
                }
            }
            out += (float)acc * (sx[g] * sw[n][g]);
        }
        y[n] = has_bias ? out + bias[n] : out;
    }
}

/* The same for N:M weights: of every M inputs (M <= 4), NN weights kept
 * (values v, positions idx in the group of M: position()); K * NN / M kept
 * per row, P of them per cycle, each through an M:1 multiplexer (P divides
 * G * NN / M). */
template <int K, int N, int NN, int M, int G, int P, int ACC, int BITS>
void nm_mv(const ap_int<8> q[K], const float sx[K / G],
           const unsigned char v[N][row_bytes(K * NN / M, BITS)],
           const unsigned char idx[N][(K * NN / M + 3) / 4], const float sw[N][K / G],
           const float bias[N],
           bool has_bias, float y[N]) {
    const int GK = G * NN / M;  // kept weights per quantization group
    for (int n = 0; n < N; n++) {
        float out = 0.f;
        for (int g = 0; g < K / G; g++) {
            ap_int<ACC> acc = 0;
            for (int c = 0; c < GK / P; c++) {
#pragma HLS PIPELINE II=1
                for (int p = 0; p < P; p++) {
#pragma HLS UNROLL
                    int j = g * GK + c * P + p;  // the kept weight
                    int base = j / NN * M;       // its group of M inputs
                    acc += q[base + position(idx[n], j)] * code<BITS>(v[n], j);
                }
            }
            out += (float)acc * (sx[g] * sw[n][g]);
        }
        y[n] = has_bias ? out + bias[n] : out;
    }
}

template <int N>
void relu(const float x[N], float y[N]) {
    for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II=1
        y[i] = x[i] < 0.f ? 0.f : x[i];
    }
}

}  // namespace hetc

#endif
