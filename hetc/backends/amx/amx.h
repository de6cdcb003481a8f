/* hetc AMX kernels: included after kernels.h by models built for target amx.
 *
 * Linear layers run on the tile unit; every other op uses the x86 kernels.
 * Weights are the A operand (16 output rows x 64 bytes per tile, straight
 * from a row-major s8 or bf16 matrix), activations the B operand in AMX's
 * VNNI layout (per K-quad or K-pair, the tokens side by side), built once per
 * call. int4 and N:M weights are decoded into s8 rows per 16-row block just
 * before their tiles load (kernels.h's row blocks). With HETC_AMX_EMULATE the
 * same code runs through hetc's software model of the instructions
 * (amx_emu.h); otherwise the real intrinsics, and the process asks the kernel
 * for tile state once (arch_prctl ARCH_REQ_XCOMP_PERM, XTILEDATA).
 */
#include <errno.h>
#ifdef HETC_AMX_EMULATE
#include "amx_emu.h"
static int hetc_prepare_amx(void) { return 0; }
#else
#include <sys/syscall.h>
#include <unistd.h>
/* 0 when the OS grants this process the AMX tile state, else errno. */
static int hetc_prepare_amx(void) {
    static int done = -1;
    if (done < 0) done = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */,
                                 18 /* XFEATURE_XTILEDATA */) == 0 ? 0 : errno;
    return done;
}
#endif

/* The tile configuration (LDTILECFG's 64-byte layout): tile 0 is C (nt rows
 * x mt dwords), 1 is A (nt rows x 64 bytes), 2 is B (16 rows x mt dwords). */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((packed, aligned(64))) hetc_tilecfg;

static void hetc_amx_configure(int nt, int mt) {
    hetc_tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    cfg.rows[0] = (uint8_t)nt; cfg.colsb[0] = (uint16_t)(4 * mt);
    cfg.rows[1] = (uint8_t)nt; cfg.colsb[1] = 64;
    cfg.rows[2] = 16;          cfg.colsb[2] = (uint16_t)(4 * mt);
    _tile_loadconfig(&cfg);
}

/* Tokens [m0, m0 + mt) of `src` (M x K elements of `size` bytes) in the B
 * layout: row r of a 64-byte K slice holds, per token, the 4 bytes at byte
 * offset 4 r of that slice. dst: K * size * mt bytes, K slices in order. */
static void hetc_amx_pack_b(uint8_t *dst, const uint8_t *src, long m0, long mt, long K, int size) {
    long row_bytes = K * size, quads = row_bytes / 4;
    for (long r = 0; r < quads; r++)
        for (long t = 0; t < mt; t++)
            memcpy(dst + (r * mt + t) * 4, src + (m0 + t) * row_bytes + 4 * r, 4);
}

/* Rows [n0, n0 + nt) of a layer's integer weights as s8 rows of K bytes:
 * int8 codes are read in place; int4 (two per byte, low nibble first) and
 * N:M row blocks (kernels.h) are decoded into `dense`. */
static const int8_t *hetc_amx_rows(int8_t *dense, const uint8_t *codes, long n0, long nt, long K,
                                   long G, int bits, int nn, int mm) {
    if (!nn && bits == 8) return (const int8_t *)codes + n0 * K;
    hetc_rb_shape shape = hetc_rb(K, G, bits, nn, mm);
    for (long r = 0; r < nt; r++) {
        int8_t *row = dense + r * K;
        if (nn) {
            hetc_rb_row(row, codes, &shape, n0 + r);
            continue;
        }
        const uint8_t *p = codes + (n0 + r) * (K / 2);
        for (long k = 0; k < K / 2; k++) {
            row[2 * k] = (int8_t)(uint8_t)(p[k] << 4) >> 4;
            row[2 * k + 1] = (int8_t)p[k] >> 4;
        }
    }
    return dense;
}

/* y = x W^T (+ b) with W integer (int8, int4 or N:M, group G % 64 == 0) and
 * x quantized to int8 per token and group: TDPBSSD over each group's 64-wide
 * K slices, then the group's int32 tile is scaled into f32.
 * scratch: the int8 tokens (kernels.h's hetc_quantize_into layout), then the
 * B-packed tokens (M K bytes), then `threads` decode buffers of 16 K bytes. */
static void k_amx_linear_q(float *restrict y, const float *restrict x, const uint8_t *restrict codes,
                           const float *restrict sw, const float *b, long M, long N, long K, long G,
                           int bits, int nn, int mm, unsigned char *scratch, int threads) {
    uint8_t *q;
    float *sx;
    long groups = K / G;
    hetc_quantize_into(x, M, K, G, 0, scratch, &q, &sx);
    uint8_t *bq = scratch + (M * K + 63) / 64 * 64 + 64 + (M * groups * 4 + 63) / 64 * 64;
    int8_t *decode = (int8_t *)(bq + (M * K + 63) / 64 * 64);
    for (long m0 = 0; m0 < M; m0 += 16)
        hetc_amx_pack_b(bq + m0 * K, (const uint8_t *)q, m0, M - m0 < 16 ? M - m0 : 16, K, 1);
    hetc_status *status = hetc_status_now; /* emulated faults go to this call */
    #pragma omp parallel num_threads(threads)
    {
        hetc_status_now = status;
        int8_t *dense = decode + (long)omp_get_thread_num() * 16 * K;
        int32_t tile[16][16];
        float acc[16][16];
        #pragma omp for schedule(static)
        for (long n0 = 0; n0 < N; n0 += 16) {
            int nt = N - n0 < 16 ? (int)(N - n0) : 16;
            const int8_t *w = hetc_amx_rows(dense, codes, n0, nt, K, G, bits, nn, mm);
            for (long m0 = 0; m0 < M; m0 += 16) {
                int mt = M - m0 < 16 ? (int)(M - m0) : 16;
                const uint8_t *bt = bq + m0 * K;
                hetc_amx_configure(nt, mt);
                memset(acc, 0, sizeof acc);
                for (long g = 0; g < groups; g++) {
                    _tile_zero(0);
                    for (long k = g * G; k < (g + 1) * G; k += 64) {
                        _tile_loadd(1, w + k, K);
                        _tile_loadd(2, bt + k * mt, 4 * mt);
                        _tile_dpbssd(0, 1, 2);
                    }
                    _tile_stored(0, tile, 64);
                    for (int r = 0; r < nt; r++)
                        for (int t = 0; t < mt; t++)
                            acc[r][t] += sw[(n0 + r) * groups + g] * sx[(m0 + t) * groups + g] *
                                         (float)tile[r][t];
                }
                for (int r = 0; r < nt; r++)
                    for (int t = 0; t < mt; t++)
                        y[(m0 + t) * N + n0 + r] = acc[r][t] + (b ? b[n0 + r] : 0.f);
            }
        }
        _tile_release();
    }
}

/* f32 to bf16, round to nearest even (NaN kept quiet). */
static inline uint16_t hetc_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1)) >> 16);
}

/* y = x W^T (+ b) with W bf16 (row-major, K % 32 == 0) and x rounded to bf16:
 * TDPBF16PS over 32-wide K slices, f32 accumulation in the tile.
 * scratch: x in bf16 (M K 2 bytes), then its B packing (the same size). */
static void k_amx_linear_bf16(float *restrict y, const float *restrict x, const uint16_t *restrict w,
                              const float *b, long M, long N, long K, unsigned char *scratch,
                              int threads) {
    uint16_t *xb = (uint16_t *)scratch;
    uint8_t *bp = scratch + (M * K * 2 + 63) / 64 * 64;
    for (long i = 0; i < M * K; i++) xb[i] = hetc_bf16(x[i]);
    for (long m0 = 0; m0 < M; m0 += 16)
        hetc_amx_pack_b(bp + m0 * K * 2, (const uint8_t *)xb, m0, M - m0 < 16 ? M - m0 : 16, K, 2);
    hetc_status *status = hetc_status_now; /* emulated faults go to this call */
    #pragma omp parallel num_threads(threads)
    {
        hetc_status_now = status;
        float tile[16][16];
        #pragma omp for schedule(static)
        for (long n0 = 0; n0 < N; n0 += 16) {
            int nt = N - n0 < 16 ? (int)(N - n0) : 16;
            for (long m0 = 0; m0 < M; m0 += 16) {
                int mt = M - m0 < 16 ? (int)(M - m0) : 16;
                const uint8_t *bt = bp + m0 * K * 2;
                hetc_amx_configure(nt, mt);
                _tile_zero(0);
                for (long k = 0; k < K; k += 32) {
                    _tile_loadd(1, w + n0 * K + k, 2 * K);
                    _tile_loadd(2, bt + k * 2 * mt, 4 * mt);
                    _tile_dpbf16ps(0, 1, 2);
                }
                _tile_stored(0, tile, 64);
                for (int r = 0; r < nt; r++)
                    for (int t = 0; t < mt; t++)
                        y[(m0 + t) * N + n0 + r] = tile[r][t] + (b ? b[n0 + r] : 0.f);
            }
        }
        _tile_release();
    }
}
