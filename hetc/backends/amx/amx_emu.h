/* hetc's software model of the AMX instructions its kernels use, written from
 * the Intel SDM's descriptions (LDTILECFG, TILERELEASE, TILEZERO, TILELOADD,
 * TILESTORED, TDPBF16PS, TDPBSSD/TDPBSUD/TDPBUSD/TDPBUUD, palette 1).
 *
 * Included instead of the real intrinsics when HETC_AMX_EMULATE is defined:
 * the generated kernels keep calling _tile_loadd(...) and friends, and these
 * macros run them on a per-thread tile state (8 tiles of 16 rows x 64
 * bytes). Faults the hardware would raise (#GP on a bad configuration, #UD on
 * an unconfigured tile or mismatched shapes) are recorded instead with
 * hetc_fail (hetc_status.h, which kernels.h includes): hetc_run then returns an
 * error whose text hetc_error() gives.
 */
#ifndef HETC_AMX_EMU_H
#define HETC_AMX_EMU_H
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define HETC_TILES 8
#define HETC_ROWS 16
#define HETC_COLSB 64

typedef struct {
    int configured;
    uint16_t colsb[HETC_TILES];
    uint8_t rows[HETC_TILES];
    uint8_t start_row;
    uint8_t data[HETC_TILES][HETC_ROWS][HETC_COLSB];
} hetc_amx_state;

static __thread hetc_amx_state hetc_amx;
static void hetc_amx_raise(const char *what, const char *detail, int tile) {
    hetc_fail("%s: %s (tile %d)", what, detail, tile);
}

static void hetc_emu_tilerelease(void) { memset(&hetc_amx, 0, sizeof hetc_amx); }

/* LDTILECFG: byte 0 palette, byte 1 start_row, bytes 16..47 colsb[16] (u16),
 * bytes 48..63 rows[16]; palette 0 means the init state. */
static void hetc_emu_ldtilecfg(const void *mem) {
    const uint8_t *cfg = (const uint8_t *)mem;
    if (cfg[0] == 0) { hetc_emu_tilerelease(); return; }
    if (cfg[0] != 1) { hetc_amx_raise("#GP in LDTILECFG", "palette is not 1", -1); return; }
    for (int i = 2; i < 16; i++)
        if (cfg[i]) { hetc_amx_raise("#GP in LDTILECFG", "reserved byte is not zero", -1); return; }
    hetc_amx_state s;
    memset(&s, 0, sizeof s);
    for (int t = 0; t < 16; t++) {
        uint16_t colsb = (uint16_t)(cfg[16 + 2 * t] | cfg[17 + 2 * t] << 8);
        uint8_t rows = cfg[48 + t];
        if (t >= HETC_TILES) {
            if (colsb || rows) { hetc_amx_raise("#GP in LDTILECFG", "tile beyond palette 1", t); return; }
            continue;
        }
        if (rows > HETC_ROWS || colsb > HETC_COLSB || (!rows) != (!colsb)) {
            hetc_amx_raise("#GP in LDTILECFG", "rows > 16, colsb > 64 or only one of them zero", t);
            return;
        }
        s.rows[t] = rows;
        s.colsb[t] = colsb;
    }
    s.configured = 1;
    s.start_row = cfg[1];
    hetc_amx = s;  /* tile data starts zeroed */
}

static int hetc_emu_ready(int t, const char *what) {
    if (!hetc_amx.configured) { hetc_amx_raise(what, "#UD: tiles are not configured", t); return 0; }
    if (t < 0 || t >= HETC_TILES || !hetc_amx.rows[t]) {
        hetc_amx_raise(what, "#UD: tile is not configured", t);
        return 0;
    }
    return 1;
}

/* Rows past the configured shape and bytes past colsb read as zero. */
static void hetc_emu_zero_upper(int t) {
    for (int r = 0; r < HETC_ROWS; r++)
        memset(hetc_amx.data[t][r] + (r < hetc_amx.rows[t] ? hetc_amx.colsb[t] : 0), 0,
               HETC_COLSB - (r < hetc_amx.rows[t] ? hetc_amx.colsb[t] : 0));
}

static void hetc_emu_tilezero(int t) {
    if (!hetc_emu_ready(t, "TILEZERO")) return;
    memset(hetc_amx.data[t], 0, sizeof hetc_amx.data[t]);
}

static void hetc_emu_tileloadd(int t, const void *base, long stride) {
    if (!hetc_emu_ready(t, "TILELOADD")) return;
    for (int r = hetc_amx.start_row; r < hetc_amx.rows[t]; r++)
        memcpy(hetc_amx.data[t][r], (const uint8_t *)base + stride * r, hetc_amx.colsb[t]);
    hetc_emu_zero_upper(t);
    hetc_amx.start_row = 0;
}

static void hetc_emu_tilestored(int t, void *base, long stride) {
    if (!hetc_emu_ready(t, "TILESTORED")) return;
    for (int r = hetc_amx.start_row; r < hetc_amx.rows[t]; r++)
        memcpy((uint8_t *)base + stride * r, hetc_amx.data[t][r], hetc_amx.colsb[t]);
    hetc_amx.start_row = 0;
}

/* The shape rules of the TMUL instructions (#UD otherwise): C is M x N dwords,
 * A is M rows x K dwords, B is K rows x N dwords, three distinct tiles. */
static int hetc_emu_tmul_ok(int c, int a, int b, const char *what) {
    if (!hetc_emu_ready(c, what) || !hetc_emu_ready(a, what) || !hetc_emu_ready(b, what)) return 0;
    if (c == a || c == b || a == b) { hetc_amx_raise(what, "#UD: tiles are not distinct", c); return 0; }
    if (hetc_amx.colsb[a] / 4 != hetc_amx.rows[b] || hetc_amx.colsb[c] != hetc_amx.colsb[b] ||
        hetc_amx.rows[c] != hetc_amx.rows[a] || hetc_amx.colsb[a] % 4 || hetc_amx.colsb[c] % 4) {
        hetc_amx_raise(what, "#UD: A.colsb/4 != B.rows, C.colsb != B.colsb or C.rows != A.rows", c);
        return 0;
    }
    return 1;
}

static inline int32_t hetc_emu_dword_i32(int t, int r, int n) {
    int32_t v;
    memcpy(&v, hetc_amx.data[t][r] + 4 * n, 4);
    return v;
}

/* TDPB[SU][SU]D: C.i32[m][n] += sum over k and i < 4 of A.byte[m][4k+i] *
 * B.byte[k][4n+i], each byte signed or unsigned as named, wrapping mod 2^32. */
static void hetc_emu_tdpb(int c, int a, int b, int a_signed, int b_signed, const char *what) {
    if (!hetc_emu_tmul_ok(c, a, b, what)) return;
    int K = hetc_amx.colsb[a] / 4, N = hetc_amx.colsb[c] / 4;
    for (int m = 0; m < hetc_amx.rows[c]; m++)
        for (int n = 0; n < N; n++) {
            uint32_t acc = (uint32_t)hetc_emu_dword_i32(c, m, n);
            for (int k = 0; k < K; k++)
                for (int i = 0; i < 4; i++) {
                    uint8_t x = hetc_amx.data[a][m][4 * k + i], y = hetc_amx.data[b][k][4 * n + i];
                    int32_t xv = a_signed ? (int8_t)x : x, yv = b_signed ? (int8_t)y : y;
                    acc += (uint32_t)(xv * yv);
                }
            memcpy(hetc_amx.data[c][m] + 4 * n, &acc, 4);
        }
    hetc_emu_zero_upper(c);
}

/* bf16 to f32 with denormals as zero (TDPBF16PS reads inputs with DAZ). */
static inline float hetc_emu_bf16(const uint8_t *p) {
    uint32_t bits = (uint32_t)(p[0] | p[1] << 8) << 16;
    if ((bits & 0x7F800000u) == 0) bits &= 0x80000000u;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* f32 results with denormals flushed to zero (FTZ). */
static inline float hetc_emu_ftz(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7F800000u) == 0) bits &= 0x80000000u;
    memcpy(&f, &bits, 4);
    return f;
}

/* TDPBF16PS: per row m and column n, the even and the odd products of the
 * bf16 pairs accumulate separately over k (f32, round to nearest even, DAZ,
 * FTZ; a bf16 product is exact in f32), then their sum is added to C. */
static void hetc_emu_tdpbf16ps(int c, int a, int b) {
    if (!hetc_emu_tmul_ok(c, a, b, "TDPBF16PS")) return;
    int K = hetc_amx.colsb[a] / 4, N = hetc_amx.colsb[c] / 4;
    for (int m = 0; m < hetc_amx.rows[c]; m++)
        for (int n = 0; n < N; n++) {
            volatile float even = 0.f, odd = 0.f;  /* volatile: no reassociation, one rounding each */
            for (int k = 0; k < K; k++) {
                even = hetc_emu_ftz(even + hetc_emu_bf16(hetc_amx.data[a][m] + 4 * k) *
                                               hetc_emu_bf16(hetc_amx.data[b][k] + 4 * n));
                odd = hetc_emu_ftz(odd + hetc_emu_bf16(hetc_amx.data[a][m] + 4 * k + 2) *
                                             hetc_emu_bf16(hetc_amx.data[b][k] + 4 * n + 2));
            }
            float cur;
            memcpy(&cur, hetc_amx.data[c][m] + 4 * n, 4);
            float sum = hetc_emu_ftz(hetc_emu_ftz(even + odd) + cur);
            memcpy(hetc_amx.data[c][m] + 4 * n, &sum, 4);
        }
    hetc_emu_zero_upper(c);
}

/* immintrin.h may define these as macros over the real builtins */
#undef _tile_loadconfig
#undef _tile_release
#undef _tile_zero
#undef _tile_loadd
#undef _tile_stream_loadd
#undef _tile_stored
#undef _tile_dpbssd
#undef _tile_dpbsud
#undef _tile_dpbusd
#undef _tile_dpbuud
#undef _tile_dpbf16ps
#define _tile_loadconfig(cfg) hetc_emu_ldtilecfg(cfg)
#define _tile_release() hetc_emu_tilerelease()
#define _tile_zero(t) hetc_emu_tilezero(t)
#define _tile_loadd(t, base, stride) hetc_emu_tileloadd((t), (base), (long)(stride))
#define _tile_stream_loadd(t, base, stride) hetc_emu_tileloadd((t), (base), (long)(stride))
#define _tile_stored(t, base, stride) hetc_emu_tilestored((t), (base), (long)(stride))
#define _tile_dpbssd(c, a, b) hetc_emu_tdpb((c), (a), (b), 1, 1, "TDPBSSD")
#define _tile_dpbsud(c, a, b) hetc_emu_tdpb((c), (a), (b), 1, 0, "TDPBSUD")
#define _tile_dpbusd(c, a, b) hetc_emu_tdpb((c), (a), (b), 0, 1, "TDPBUSD")
#define _tile_dpbuud(c, a, b) hetc_emu_tdpb((c), (a), (b), 0, 0, "TDPBUUD")
#define _tile_dpbf16ps(c, a, b) hetc_emu_tdpbf16ps((c), (a), (b))

#endif
