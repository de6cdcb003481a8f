/* The entry points of kernels.h that generated code calls, and the codes it
 * passes them.
 *
 * A model is built either in one unit with its kernels (kernels.h, the
 * kernels static: the amx target, a user's own build of the sources) or,
 * on x86, against hetc's kernel library: kernels.h built once per machine
 * and hetc version with HETC_KERNEL_LIBRARY defined (the kernels exported),
 * the model with HETC_PREBUILT_KERNELS (these declarations only), so that a
 * model's build compiles its own code alone. The library's build declares
 * every kernel here first: a definition that disagrees with its declaration
 * fails that build. */
#ifndef HETC_KERNELS_API_H
#define HETC_KERNELS_API_H
#include "hetc_status.h"
#include <omp.h>

#if defined(HETC_KERNEL_LIBRARY)
#define HETC_KERNEL __attribute__((visibility("default")))
#elif defined(HETC_PREBUILT_KERNELS)
#define HETC_KERNEL extern
#else
#define HETC_KERNEL static
#endif

/* unary ops, binary ops (B_), epilogue step kinds (E_), dtype tags (T_),
 * comparisons (C_), logical ops (L_), pad modes (P_), reductions (R_),
 * which operands of a convolution are in blocks of 16 channels (layout.py) */
enum { U_RELU, U_GELU, U_GELU_TANH, U_SILU, U_SIGMOID, U_TANH, U_EXP, U_NEG, U_SQRT, U_RSQRT,
       U_ABS, U_LOG, U_ERF, U_FLOOR, U_CEIL, U_ROUND, U_RECIPROCAL, U_SIGN, U_SIN, U_COS, U_TAN,
       U_ASIN, U_ACOS, U_ATAN, U_SINH, U_COSH, U_ASINH, U_ACOSH, U_ATANH };
enum { B_ADD, B_SUB, B_MUL, B_DIV, B_MAX, B_MIN, B_POW };
enum { E_UNARY, E_SCALAR, E_TENSOR, E_CHANNEL };
enum { T_F32, T_I64, T_I32, T_BOOL };
enum { C_EQ, C_LT, C_GT, C_LE, C_GE };
enum { L_AND, L_OR, L_XOR };
enum { P_CONSTANT, P_REFLECT, P_EDGE, P_WRAP };
enum { R_SUM, R_MEAN, R_MAX, R_MIN, R_PROD };
enum { HETC_X_BLOCKED = 1, HETC_Y_BLOCKED = 2 };
typedef struct {
    int op, kind, left;
    const float *arg;
} hetc_step;

HETC_KERNEL void k_unary(int op, float *y, const float *x, long n);
HETC_KERNEL void k_binary(int op, float *y, const float *a, const float *b, int ndim,
                          const long *shape, const long *as, const long *bs);
HETC_KERNEL void k_epilogue(float *y, long n, long runs, long run, long channels, long cstride,
                            const hetc_step *ep, int nep);
HETC_KERNEL void k_binary_int64_t(int op, int64_t *y, const int64_t *a, const int64_t *b, int ndim,
                                  const long *shape, const long *as, const long *bs);
HETC_KERNEL void k_unary_int64_t(int op, int64_t *y, const int64_t *x, long n);
HETC_KERNEL void k_cumsum_int64_t(int64_t *y, const int64_t *x, long outer, long n, long inner,
                                  int exclusive, int reverse);
HETC_KERNEL void k_binary_int32_t(int op, int32_t *y, const int32_t *a, const int32_t *b, int ndim,
                                  const long *shape, const long *as, const long *bs);
HETC_KERNEL void k_unary_int32_t(int op, int32_t *y, const int32_t *x, long n);
HETC_KERNEL void k_cumsum_int32_t(int32_t *y, const int32_t *x, long outer, long n, long inner,
                                  int exclusive, int reverse);
HETC_KERNEL void k_strided(void *y, const void *x, int ndim, const long *shape, const long *xs,
                           int esize);
HETC_KERNEL void k_copy_block(void *y, long y_rows, long y_off, const void *x, long x_rows,
                              long x_off, long rows, long outer, long inner);
HETC_KERNEL void k_gather(void *y, const void *x, const void *idx, int wide, long n_idx,
                          long outer, long size, long inner, const char *op);
HETC_KERNEL void k_cast(void *y, int yt, const void *x, int xt, long n);
HETC_KERNEL void k_compare(int op, uint8_t *y, const void *a, int at, const void *b, int bt,
                           int ndim, const long *shape, const long *sa, const long *sb);
HETC_KERNEL void k_where(void *y, const uint8_t *c, const void *a, const void *b, int ndim,
                         const long *shape, const long *sc, const long *sa, const long *sb,
                         int esize);
HETC_KERNEL void k_logical(int op, uint8_t *y, const uint8_t *a, const uint8_t *b, int ndim,
                           const long *shape, const long *sa, const long *sb);
HETC_KERNEL void k_logical_not(uint8_t *y, const uint8_t *x, long n);
HETC_KERNEL void k_float_test(uint8_t *y, const float *x, long n, int pos, int neg);
HETC_KERNEL void k_arg_reduce(int64_t *y, const float *x, long outer, long n, long inner, int max,
                              int last);
HETC_KERNEL void k_topk(float *y, int64_t *iy, const float *x, long outer, long n, long inner,
                        long k, int largest);
HETC_KERNEL void k_topk_int64_t(int64_t *y, int64_t *iy, const int64_t *x, long outer, long n,
                                long inner, long k, int largest);
HETC_KERNEL void k_topk_int32_t(int32_t *y, int64_t *iy, const int32_t *x, long outer, long n,
                                long inner, long k, int largest);
HETC_KERNEL void k_cumsum(float *y, const float *x, long outer, long n, long inner, int exclusive,
                          int reverse);
HETC_KERNEL void k_gather_elements(void *y, const void *x, const void *idx, int wide, int ndim,
                                   const long *shape, const long *xs, int axis, long size,
                                   int esize);
HETC_KERNEL void k_pad(void *y, const void *x, int ndim, const long *yshape, const long *xs,
                       const long *grow, const long *crop, const long *n, int mode,
                       const void *value, int esize);
HETC_KERNEL void k_mask_additive(float *y, const uint8_t *m, long n);
HETC_KERNEL void k_reduce(int op, float *y, const float *x, int nk, const long *ks, const long *kx,
                          int nr, const long *rs, const long *rx);
HETC_KERNEL void k_softmax(float *y, const float *x, long outer, long n, long inner, int log);
HETC_KERNEL void k_norm(float *y, const float *x, const float *w, const float *b, long rows,
                        long n, float eps, int rms);
HETC_KERNEL void k_channel_affine(float *y, const float *x, const float *k, const float *d, long n,
                                  long c, long spatial);
HETC_KERNEL void k_linear_f32(float *y, const float *x, const float *w, const float *b, long M,
                              long N, long K);
HETC_KERNEL void k_matmul(float *y, const float *a, const float *b, long B, long M, long N, long K,
                          long as, long bs);
HETC_KERNEL long hetc_attention_scratch(long S, long D);
HETC_KERNEL void k_attention(float *y, const float *q, const float *k0, const float *v0, long S0,
                             const float *k1, const float *v1, long S1, long group,
                             const float *mask, long mb, long mh, long ml, long B, long H, long L,
                             long D, long Dv, float scale, int causal, long offset,
                             unsigned char *scratch);
HETC_KERNEL void k_conv2d(float *y, const float *x, const float *w, const float *b, long N, long C,
                          long H, long W, long O, long KH, long KW, long OH, long OW, long sh,
                          long sw, long pt, long pl, long dh, long dw, long groups);
HETC_KERNEL void k_max_pool2d(float *y, const float *x, long NC, long H, long W, long KH, long KW,
                              long OH, long OW, long sh, long sw, long pt, long pl, long dh,
                              long dw);
HETC_KERNEL void k_avg_pool2d(float *y, const float *x, long NC, long H, long W, long KH, long KW,
                              long OH, long OW, long sh, long sw, long pt, long pl, long pb,
                              long pr, int include_pad);
HETC_KERNEL void k_mean_rows(float *y, const float *x, long rows, long n);
/* the kernels' ISA when a model is loaded (HETC_X86_PORTABLE, CPUID), as
 * flags its runs pass hetc_use_isa */
HETC_KERNEL int hetc_configure(void);
HETC_KERNEL void hetc_use_isa(int isa);
static int hetc_isa; /* in a model: its choice */
HETC_KERNEL void k_linear_rb(float *y, const float *x, const uint8_t *packed, const void *sw,
                             int half, const float *b, long M, long N, long K, long G, int bits,
                             int nn, int mm, unsigned char *scratch);
HETC_KERNEL void k_linear_rbf(float *y, const float *x, const uint8_t *packed, const void *sw,
                              int half, const float *b, long M, long N, long K, long G, int bits,
                              int nn, int mm);
HETC_KERNEL void k_linear_q(float *y, const float *x, const uint8_t *codes, const float *scale,
                            const float *b, long M, long N, long K, long G, int bits);
HETC_KERNEL void k_linear_panel(float *y, const float *x, const void *w, int kind, const float *b,
                                long M, long N, long K, const hetc_step *ep, int nep);
HETC_KERNEL void k_fake_quant_rows(float *y, const float *x, long M, long K, long G);
HETC_KERNEL void k_conv2d_gemm(float *y, const float *x, const float *wp, const float *b, long N,
                               long C, long H, long W, long O, long KH, long KW, long OH, long OW,
                               long sh, long sw, long pt, long pl, long dh, long dw, long groups,
                               const hetc_step *ep, int nep);
HETC_KERNEL void k_conv1x1_panels(float *y, const float *x, const float *wp, const float *b,
                                  long N, long C, long P, long O, int layout, const hetc_step *ep,
                                  int nep);
HETC_KERNEL void k_conv2d_depthwise(float *y, const float *x, const float *w, const float *b,
                                    long N, long C, long H, long W, long O, long KH, long KW,
                                    long OH, long OW, long sh, long sw, long pt, long pl, long dh,
                                    long dw, const hetc_step *ep, int nep);
HETC_KERNEL void k_conv1x1_depthwise(float *y, const float *x, const float *wp, const float *b,
                                     long N, long C, long E, const hetc_step *ep, int nep,
                                     const float *wd, const float *bd, long H, long W, long KH,
                                     long KW, long OH, long OW, long sh, long sw, long pt, long pl,
                                     long dh, long dw, const hetc_step *epd, int nepd,
                                     const uint32_t *wq, const int32_t *start, const float *swq,
                                     unsigned char *scratch);
HETC_KERNEL void k_conv2d_depthwise_b16(float *y, const float *x, const float *w, const float *b,
                                        long N, long C, long H, long W, long KH, long KW, long OH,
                                        long OW, long sh, long sw, long pt, long pl, long dh,
                                        long dw, const hetc_step *ep, int nep);
HETC_KERNEL void k_conv1x1_rb(float *y, const float *x, const uint8_t *packed, const void *sw,
                              int half, const float *b, long N, long C, long P, long O, long G,
                              int bits, int nn, int mm, unsigned char *scratch,
                              const hetc_step *ep, int nep);
HETC_KERNEL void k_conv1x1_q8(float *y, const float *x, const int8_t *wp, const int32_t *start,
                              const float *sw, const float *b, long N, long C, long P, long O,
                              int layout, unsigned char *scratch, const hetc_step *ep, int nep);
HETC_KERNEL void k_conv1x1_q8_rows(float *y, const float *x, const uint32_t *wb,
                                   const int32_t *start, const float *sw, const float *b, long N,
                                   long C, long P, long O, unsigned char *scratch,
                                   const hetc_step *ep, int nep);
HETC_KERNEL void k_fake_quant_pixels(float *y, const float *x, long N, long C, long P, long G);

#endif
