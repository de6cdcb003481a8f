/* hetc AMX kernels: included after kernels.h by models built for target amx.
 *
 * int8 and bf16 linear layers run on the tile unit (lowering.py says which);
 * every other op uses the x86 kernels. Weights are the A operand (16 output
 * rows x 64 bytes per tile, straight from a row-major s8 or bf16 matrix,
 * N:M zeros included), activations the B operand in AMX's VNNI layout (per
 * K-quad or K-pair, the tokens side by side), built once per call. Blocks
 * of 32 rows x 32 tokens use four C tiles. With HETC_AMX_EMULATE the
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

/* The tile configuration (LDTILECFG's 64-byte layout) for a block of up to
 * 32 output rows (nt0 + nt1) x 32 tokens (mt0 + mt1): tiles 0-3 are C
 * (rows i of tokens j at 2 i + j: nt_i rows x mt_j dwords), 4-5 A (nt_i
 * rows x 64 bytes), 6-7 B (16 rows x mt_j dwords); a tile with no rows or
 * tokens stays unconfigured. Each A and B tile load serves two products
 * (a 4096 x 4096 int8 layer at 128 tokens: 3.27 -> 3.05 ms, bf16 4.23 ->
 * 3.79 ms, one process, with the changes below). */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((packed, aligned(64))) hetc_tilecfg;

static void hetc_amx_tile(hetc_tilecfg *cfg, int t, int rows, int colsb) {
    cfg->rows[t] = (uint8_t)(colsb ? rows : 0);
    cfg->colsb[t] = (uint16_t)(rows ? colsb : 0);
}

static void hetc_amx_configure(int nt0, int nt1, int mt0, int mt1) {
    hetc_tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    hetc_amx_tile(&cfg, 0, nt0, 4 * mt0);
    hetc_amx_tile(&cfg, 1, nt0, 4 * mt1);
    hetc_amx_tile(&cfg, 2, nt1, 4 * mt0);
    hetc_amx_tile(&cfg, 3, nt1, 4 * mt1);
    hetc_amx_tile(&cfg, 4, nt0, 64);
    hetc_amx_tile(&cfg, 5, nt1, 64);
    hetc_amx_tile(&cfg, 6, 16, 4 * mt0);
    hetc_amx_tile(&cfg, 7, 16, 4 * mt1);
    _tile_loadconfig(&cfg);
}

/* Configures the tiles for a block unless *shape (its four sizes, or -1)
 * says they already are: LDTILECFG per block cost more than a block's
 * products at small K. */
static void hetc_amx_shape(int *shape, int nt0, int nt1, int mt0, int mt1) {
    int key = nt0 << 24 | nt1 << 16 | mt0 << 8 | mt1;
    if (*shape == key) return;
    hetc_amx_configure(nt0, nt1, mt0, mt1);
    *shape = key;
}

/* The sizes of a block's two halves: rows (or tokens) from i0 of n. */
static void hetc_amx_halves(long n, long i0, int *h0, int *h1) {
    long left = n - i0;
    *h0 = left < 16 ? (int)left : 16;
    *h1 = left <= 16 ? 0 : left < 32 ? (int)(left - 16) : 16;
}

/* A block's C tiles that hold sums (nt rows x mt tokens per half): zeroed,
 * and stored into c[2 i + j] (16 x 64 bytes each). */
static void hetc_amx_zero(const int nt[2], const int mt[2]) {
    _tile_zero(0);
    if (mt[1]) _tile_zero(1);
    if (nt[1]) _tile_zero(2);
    if (nt[1] && mt[1]) _tile_zero(3);
}

static void hetc_amx_store(void *c, const int nt[2], const int mt[2]) {
    _tile_stored(0, (char *)c, 64);
    if (mt[1]) _tile_stored(1, (char *)c + 1024, 64);
    if (nt[1]) _tile_stored(2, (char *)c + 2048, 64);
    if (nt[1] && mt[1]) _tile_stored(3, (char *)c + 3072, 64);
}

/* A block's results (rows n0 + 16 i + r, tokens m0 + 16 j + t of
 * c[2 i + j][r][t]) plus the bias into y [M x N]. */
static void hetc_amx_write(float *y, const float c[4][16][16], const float *b, long N, long n0,
                           long m0, const int nt[2], const int mt[2]) {
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            for (int r = 0; r < nt[i]; r++)
                for (int t = 0; t < mt[j]; t++)
                    y[(m0 + 16 * j + t) * N + n0 + 16 * i + r] =
                        c[2 * i + j][r][t] + (b ? b[n0 + 16 * i + r] : 0.f);
}

/* All M tokens of `src` (M x K elements of `size` bytes) in the B layout, a
 * block of up to 16 tokens at a time (dst + m0 K size): row r of a 64-byte
 * K slice holds, per token of the block, the 4 bytes at byte offset 4 r of
 * that slice; threads share the slices. */
static void hetc_amx_pack_b(uint8_t *dst, const uint8_t *src, long M, long K, int size) {
    long row_bytes = K * size, quads = row_bytes / 4;
    #pragma omp parallel for collapse(2) schedule(static) if (M * K > 16384)
    for (long m0 = 0; m0 < (M + 15) / 16 * 16; m0 += 16)
        for (long r = 0; r < quads; r++) {
            long mt = M - m0 < 16 ? M - m0 : 16;
            uint32_t *d = (uint32_t *)(dst + m0 * row_bytes) + r * mt;
            for (long t = 0; t < mt; t++)
                memcpy(d + t, src + (m0 + t) * row_bytes + 4 * r, 4);
        }
}

/* y = x W^T (+ b) with W int8 (row-major, one scale per row) and x
 * quantized to int8 per token (K % 64 == 0): TDPBSSD over 64-wide K slices,
 * then each block's int32 sums scaled into f32.
 * scratch: the int8 tokens (kernels.h's hetc_quantize_into layout), then the
 * B-packed tokens (M K bytes). */
static void k_amx_linear_q(float *restrict y, const float *restrict x, const int8_t *restrict wq,
                           const float *restrict sw, const float *b, long M, long N, long K,
                           unsigned char *scratch, int threads) {
    uint8_t *q;
    float *sx;
    hetc_quantize_into(x, M, K, K, 0, scratch, &q, &sx);
    uint8_t *bq = scratch + (M * K + 63) / 64 * 64 + 64 + (M * 4 + 63) / 64 * 64;
    hetc_amx_pack_b(bq, (const uint8_t *)q, M, K, 1);
    hetc_status *status = hetc_status_now; /* emulated faults go to this call */
    #pragma omp parallel num_threads(threads)
    {
        hetc_status_now = status;
        int32_t tile[4][16][16];
        float acc[4][16][16], sxg[2][16];
        int shape = -1;
        #pragma omp for schedule(static)
        for (long n0 = 0; n0 < N; n0 += 32) {
            int nt[2], mt[2];
            hetc_amx_halves(N, n0, &nt[0], &nt[1]);
            const int8_t *w = wq + n0 * K;
            for (long m0 = 0; m0 < M; m0 += 32) {
                hetc_amx_halves(M, m0, &mt[0], &mt[1]);
                const uint8_t *b0 = bq + m0 * K, *b1 = bq + (m0 + 16) * K;
                hetc_amx_shape(&shape, nt[0], nt[1], mt[0], mt[1]);
                hetc_amx_zero(nt, mt);
                for (long k = 0; k < K; k += 64) {
                    _tile_loadd(4, w + k, K);
                    _tile_loadd(6, b0 + k * mt[0], 4 * mt[0]);
                    _tile_dpbssd(0, 4, 6);
                    if (mt[1]) {
                        _tile_loadd(7, b1 + k * mt[1], 4 * mt[1]);
                        _tile_dpbssd(1, 4, 7);
                    }
                    if (nt[1]) {
                        _tile_loadd(5, w + 16 * K + k, K);
                        _tile_dpbssd(2, 5, 6);
                        if (mt[1]) _tile_dpbssd(3, 5, 7);
                    }
                }
                hetc_amx_store(tile, nt, mt);
                /* the sums scaled; the tokens' scales side by side: loops over
                 * tokens that vectorize (a strided read per product cost more
                 * than the products) */
                for (int j = 0; j < 2; j++)
                    for (int t = 0; t < 16; t++) sxg[j][t] = t < mt[j] ? sx[m0 + 16 * j + t] : 0.f;
                for (int i = 0; i < 2; i++)
                    for (int j = 0; j < 2; j++)
                        for (int r = 0; mt[j] && r < nt[i]; r++) {
                            float s = sw[n0 + 16 * i + r];
                            for (int t = 0; t < 16; t++)
                                acc[2 * i + j][r][t] = s * sxg[j][t] * (float)tile[2 * i + j][r][t];
                        }
                hetc_amx_write(y, acc, b, N, n0, m0, nt, mt);
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
    hetc_amx_pack_b(bp, (const uint8_t *)xb, M, K, 2);
    hetc_status *status = hetc_status_now; /* emulated faults go to this call */
    #pragma omp parallel num_threads(threads)
    {
        hetc_status_now = status;
        float tile[4][16][16];
        int shape = -1;
        #pragma omp for schedule(static)
        for (long n0 = 0; n0 < N; n0 += 32) {
            int nt[2], mt[2];
            hetc_amx_halves(N, n0, &nt[0], &nt[1]);
            const uint16_t *w0 = w + n0 * K, *w1 = w + (n0 + 16) * K;
            for (long m0 = 0; m0 < M; m0 += 32) {
                hetc_amx_halves(M, m0, &mt[0], &mt[1]);
                const uint8_t *b0 = bp + m0 * K * 2, *b1 = bp + (m0 + 16) * K * 2;
                hetc_amx_shape(&shape, nt[0], nt[1], mt[0], mt[1]);
                hetc_amx_zero(nt, mt);
                for (long k = 0; k < K; k += 32) {
                    _tile_loadd(4, w0 + k, 2 * K);
                    _tile_loadd(6, b0 + k * 2 * mt[0], 4 * mt[0]);
                    _tile_dpbf16ps(0, 4, 6);
                    if (mt[1]) {
                        _tile_loadd(7, b1 + k * 2 * mt[1], 4 * mt[1]);
                        _tile_dpbf16ps(1, 4, 7);
                    }
                    if (nt[1]) {
                        _tile_loadd(5, w1 + k, 2 * K);
                        _tile_dpbf16ps(2, 5, 6);
                        if (mt[1]) _tile_dpbf16ps(3, 5, 7);
                    }
                }
                hetc_amx_store(tile, nt, mt);
                hetc_amx_write(y, tile, b, N, n0, m0, nt, mt);
            }
        }
        _tile_release();
    }
}
