/* The device primitives every generated .cu uses (hetc backend cuda).
 *
 * Under nvcc or NVRTC these are CUDA itself. Under -DHETC_SIM the same source
 * is C++ for g++ and runs on the CPU: every CUDA thread of a block is a fiber
 * (ucontext) with its own stack, blocks run one after another, and
 *   - __syncthreads() parks a thread until every thread of its block is
 *     parked there; threads that exited or wait elsewhere meanwhile make it a
 *     divergent barrier, reported as a run failure;
 *   - __shfl_*_sync() parks a thread until every lane of its warp arrived,
 *     then each lane reads the values the lanes held at that moment;
 *   - threads are resumed in a shuffled order (HETC_SIM_SEED chooses it), so
 *     code that forgets a barrier tends to read stale shared memory;
 *   - __shared__ variables are per simulating OS thread (blocks run in turn).
 * What it cannot catch: races between threads that meet no barrier in
 * between (there is no memory model or race detector), timing, occupancy
 * and shared-memory bank conflicts (docs/cuda.md). */
#ifndef HETC_DEVICE_CUH
#define HETC_DEVICE_CUH

#if defined(__CUDACC_RTC__)
/* NVRTC has no <stdint.h> */
typedef signed char int8_t;
typedef unsigned char uint8_t;
typedef short int16_t;
typedef unsigned short uint16_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;
#define HETC_DEVICE_CODE 1
#elif defined(__CUDACC__)
#include <stdint.h>
#define HETC_DEVICE_CODE 1
#endif

#if defined(HETC_DEVICE_CODE)
#define HETC_FULL_MASK 0xffffffffu
__device__ __forceinline__ float hetc_shfl_xor(float v, int lane_mask) {
    return __shfl_xor_sync(HETC_FULL_MASK, v, lane_mask);
}
#define HETC_INLINE __device__ __forceinline__
#define HETC_INF __int_as_float(0x7f800000)
#define hetc_bits(f) __float_as_uint(f)
#define hetc_float(u) __uint_as_float(u)
#define hetc_syncwarp() __syncwarp()
/* Bad data (an index out of range): the kernel traps, the launch fails. */
#define HETC_FAIL(...) asm volatile("trap;")

#elif defined(HETC_SIM)
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include <algorithm>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static thread_local
#define __align__(n) __attribute__((aligned(n)))
#define HETC_INLINE inline
#define HETC_INF INFINITY

inline uint32_t hetc_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
inline float hetc_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace hetc_sim {

enum State { READY, AT_BARRIER, AT_WARP, DONE };

struct Thread;
/* A warp-wide operation: when all 32 lanes arrived, it reads every lane's
 * `in` words and writes every lane's `out` words at once. */
typedef void (*Collective)(Thread *lanes);

struct Thread {
    ucontext_t ctx;
    dim3 idx;
    State state;
    int lane, warp;
    uint32_t in[16], out[4];  // what a lane gives a warp-wide operation, and gets
    Collective collective;
    /* cp.async copies not yet done: each completes at the cp.async.wait_group
     * that covers its group (so a missing wait reads stale shared memory) */
    std::vector<std::vector<char>> pending_data;
    std::vector<void *> pending_dst;
    std::vector<int> pending_group;
    int groups = 0;  // commit groups closed so far
};

struct Sim {
    ucontext_t sched;
    std::vector<Thread> threads;
    std::vector<char> stacks;
    dim3 block_idx, block_dim, grid_dim;
    Thread *cur = nullptr;
    void (*body)(void *) = nullptr;
    void *arg = nullptr;
    uint64_t rng = 0;
    const char *error = nullptr;
};

static thread_local Sim sim;
static const size_t STACK = 64 * 1024;

inline uint64_t next_random() {  // splitmix64: a resume order per round
    uint64_t z = (sim.rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

inline void yield_to_scheduler(State s) {
    Thread *t = sim.cur;
    t->state = s;
    swapcontext(&t->ctx, &sim.sched);
}

inline void trampoline() {
    sim.body(sim.arg);
    sim.cur->state = DONE;  // returning goes to uc_link: the scheduler
}

/* Release the warps whose every lane waits at a warp-wide operation; true
 * if any. */
inline bool release_warps(int n) {
    bool any = false;
    for (int w = 0; w * 32 < n; w++) {
        int lo = w * 32, hi = std::min(n, lo + 32);
        bool all = true;
        for (int i = lo; i < hi; i++) all &= sim.threads[i].state == AT_WARP;
        if (!all) continue;
        if (hi - lo != 32) {
            sim.error = "a warp-wide operation in a partial warp (blockDim is not a multiple "
                        "of 32)";
            return false;
        }
        for (int i = lo; i < hi; i++)
            if (sim.threads[i].collective != sim.threads[lo].collective) {
                sim.error = "lanes of one warp at different warp-wide operations";
                return false;
            }
        sim.threads[lo].collective(&sim.threads[lo]);
        if (sim.error) return false;
        for (int i = lo; i < hi; i++) sim.threads[i].state = READY;
        any = true;
    }
    return any;
}

/* Runs `body(arg)` as every thread of every block; false (and sim.error) on
 * a divergent barrier or shuffle. */
inline bool launch(dim3 grid, dim3 block, void (*body)(void *), void *arg) {
    int n = block.x * block.y * block.z;
    if (n <= 0 || n > 1024) {
        sim.error = "a block of more than 1024 threads";
        return false;
    }
    sim.threads.assign(n, Thread());
    if (sim.stacks.size() < (size_t)n * STACK) sim.stacks.resize((size_t)n * STACK);
    sim.body = body;
    sim.arg = arg;
    sim.block_dim = block;
    sim.grid_dim = grid;
    sim.error = nullptr;
    const char *seed = getenv("HETC_SIM_SEED");
    sim.rng = seed ? strtoull(seed, nullptr, 10) : 1;
    std::vector<int> order(n);
    for (unsigned bz = 0; bz < grid.z; bz++)
    for (unsigned by = 0; by < grid.y; by++)
    for (unsigned bx = 0; bx < grid.x; bx++) {
        sim.block_idx = dim3(bx, by, bz);
        for (int i = 0; i < n; i++) {
            Thread &t = sim.threads[i];
            t.idx = dim3(i % block.x, (i / block.x) % block.y, i / (block.x * block.y));
            t.state = READY;
            t.lane = i % 32;
            t.warp = i / 32;
            t.pending_data.clear();  // a block's copies it never waited for are dropped
            t.pending_dst.clear();
            t.pending_group.clear();
            t.groups = 0;
            getcontext(&t.ctx);
            t.ctx.uc_stack.ss_sp = &sim.stacks[(size_t)i * STACK];
            t.ctx.uc_stack.ss_size = STACK;
            t.ctx.uc_link = &sim.sched;
            makecontext(&t.ctx, trampoline, 0);
            order[i] = i;
        }
        for (;;) {
            for (int i = n - 1; i > 0; i--) std::swap(order[i], order[next_random() % (i + 1)]);
            for (int i : order) {
                Thread &t = sim.threads[i];
                if (t.state != READY) continue;
                sim.cur = &t;
                swapcontext(&sim.sched, &t.ctx);
                sim.cur = nullptr;
            }
            if (sim.error) return false;
            int done = 0, barrier = 0;
            for (Thread &t : sim.threads) {
                done += t.state == DONE;
                barrier += t.state == AT_BARRIER;
            }
            if (done == n) break;
            if (release_warps(n)) continue;
            if (sim.error) return false;
            if (barrier == n) {
                for (Thread &t : sim.threads) t.state = READY;
                continue;
            }
            sim.error = done ? "__syncthreads or a shuffle that not every thread of the block "
                               "reaches (some threads exited)"
                             : "threads of a block wait at different barriers or shuffles";
            return false;
        }
    }
    return true;
}

/* Park the lane at warp-wide operation `op` (its inputs in sim.cur->in). */
inline void warp_op(Collective op) {
    sim.cur->collective = op;
    yield_to_scheduler(AT_WARP);
}

inline void shuffle(Thread *lanes) {  // in: value, source lane
    for (int i = 0; i < 32; i++) lanes[i].out[0] = lanes[lanes[i].in[1] & 31].in[0];
}

inline float shfl(float v, int lane_of) {
    Thread *t = sim.cur;
    t->in[0] = hetc_bits(v);
    t->in[1] = lane_of;
    warp_op(shuffle);
    return hetc_float(t->out[0]);
}

}  // namespace hetc_sim

#define threadIdx (hetc_sim::sim.cur->idx)
#define blockIdx (hetc_sim::sim.block_idx)
#define blockDim (hetc_sim::sim.block_dim)
#define gridDim (hetc_sim::sim.grid_dim)
#define __syncthreads() hetc_sim::yield_to_scheduler(hetc_sim::AT_BARRIER)

inline float hetc_shfl_xor(float v, int lane_mask) {
    return hetc_sim::shfl(v, (hetc_sim::sim.cur->lane ^ lane_mask) & 31);
}

/* every lane of the warp waits for the others, as __syncwarp() */
#define hetc_syncwarp() ((void)hetc_sim::shfl(0.f, hetc_sim::sim.cur->lane))
/* Bad data: the call fails with this text, as the GPU launch would. */
#define HETC_FAIL(...) hetc_fail(__VA_ARGS__)

/* The launch of a generated kernel `name` with its argument list `args`
 * (in parentheses): a lambda run as every thread. */
#define HETC_LAUNCH(name, grid, block, args)                                       \
    do {                                                                           \
        if (!hetc_status_now->failed) {                                            \
            auto body_ = [&]() { name args; };                                     \
            auto call_ = [](void *p) { (*(decltype(body_) *)p)(); };               \
            if (!hetc_sim::launch(grid, block, call_, &body_))                     \
                hetc_fail("kernel %s: %s", #name, hetc_sim::sim.error);            \
        }                                                                          \
    } while (0)

#else
#error "device.cuh: compile with nvcc or NVRTC, or with -DHETC_SIM for the CPU simulation"
#endif

/* -- what kernels share --------------------------------------------------- */

/* bf16 and f16 values are held as their 16 bits and computed in f32, each
 * result rounded to nearest even (NaN stays NaN), as the IR defines. */
HETC_INLINE float hetc_from_bf16(uint16_t h) { return hetc_float((uint32_t)h << 16); }

HETC_INLINE uint16_t hetc_to_bf16(float f) {
    uint32_t u = hetc_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  /* NaN */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

HETC_INLINE float hetc_from_f16(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 31, m = h & 1023;
    if (e == 31) return hetc_float(sign | 0x7f800000u | (m << 13));  /* inf, NaN */
    if (e == 0) {  /* zero or subnormal: m * 2^-24 */
        float v = (float)m * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return hetc_float(sign | ((e + 112) << 23) | (m << 13));
}

HETC_INLINE uint16_t hetc_to_f16(float f) {
    uint32_t u = hetc_bits(f), sign = (u >> 16) & 0x8000, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00);  /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);  /* rounds past 65504: inf */
    if (a < 0x38800000u) {  /* below 2^-14: a subnormal (or zero), rounded to nearest even */
        float v = hetc_float(a) * 16777216.f;  /* in units of 2^-24, exact */
        uint32_t q = (uint32_t)v;
        float rest = v - (float)q;
        if (rest > 0.5f || (rest == 0.5f && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1);  /* round the 13 dropped bits to even */
    return (uint16_t)(sign | (((r >> 23) - 112) << 10) | ((r >> 13) & 1023));
}

/* an fp8 e4m3 byte's value (bias 7, subnormals m * 2^-9; e4m3 has no
 * infinities and its NaN, 0x7f/0xff, is not decoded: weights hold none) */
HETC_INLINE float hetc_from_e4m3(uint32_t b) {
    uint32_t e = (b >> 3) & 15, m = b & 7;
    float v = e ? hetc_float((e + 120) << 23 | m << 20) : (float)m * 0.001953125f;
    return b & 0x80 ? -v : v;
}

/* a mod b with the divisor's sign (Python %); a finite a by an infinite b is
 * a, or b when their signs differ, as numpy gives */
HETC_INLINE float hetc_mod(float a, float b) {
    float r = fmodf(a, b);
    if (r != 0.f && ((r < 0.f) != (b < 0.f))) r += b;
    return r == 0.f ? copysignf(0.f, b) : r;
}

/* The sum over a warp's 32 lanes, in every lane. */
HETC_INLINE float hetc_warp_sum(float v) {
    for (int m = 16; m > 0; m >>= 1) v += hetc_shfl_xor(v, m);
    return v;
}

HETC_INLINE float hetc_warp_max(float v) {
    for (int m = 16; m > 0; m >>= 1) v = fmaxf(v, hetc_shfl_xor(v, m));
    return v;
}

/* -- tensor cores ----------------------------------------------------------
 * The PTX the tensor-core kernels use, as inline asm on the GPU and, under
 * HETC_SIM, as a per-warp emulation that follows the PTX ISA's fragment
 * layouts (lane = 4 * group + t, group = lane / 4, t = lane % 4):
 *   mma m16n8k16, A 16x16 row-major: reg r holds rows group + 8 * (r & 1),
 *     columns 2t + 8 * (r >> 1) and the next (low half first);
 *   B 16x8 column-major: reg r holds rows 2t + 8 * r and the next, column group;
 *   C/D 16x8 f32: element i is row group + 8 * (i >> 1), column 2t + (i & 1).
 * Accumulation is in f32; the simulation sums in k order. */

/* D = A * B + C on 16-bit float fragments, A 16x16 (4 regs), B 16x8
 * (2 regs), acc 4 f32 (C in, D out). */
#if defined(HETC_DEVICE_CODE)
/* one definition per 16-bit float type T (f16, bf16) */
#define HETC_MMA(T)                                                                       \
    HETC_INLINE void hetc_mma_##T(float acc[4], const uint32_t a[4], const uint32_t b[2]) { \
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." #T "." #T ".f32 "           \
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"              \
                     : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])             \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));  \
    }
/* D = A * B + C with A 16x32 2:4 sparse: its kept values as a 16x16
 * fragment (4 regs), their positions in metadata word e (sparsity selector
 * 0: lanes 4g and 4g + 1 supply them), B 32x8 (4 regs). */
#define HETC_MMA_SP(T)                                                                    \
    HETC_INLINE void hetc_mma_sp_##T(float acc[4], const uint32_t a[4], const uint32_t b[4], \
                                     uint32_t e) {                                        \
        asm volatile("mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32." #T "." #T \
                     ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9,%10,%11}, {%0,%1,%2,%3}, "  \
                     "%12, 0x0;"                                                          \
                     : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])             \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),   \
                       "r"(b[2]), "r"(b[3]), "r"(e));                                     \
    }
/* D = A * B + C on int8 fragments, exact in int32: A 16x32 (4 regs of 4
 * bytes: reg r holds row g + 8 (r & 1), columns 4t + 16 (r >> 1) ..+3), B
 * 32x8 (2 regs: rows 4t + 16 r ..+3, column g), C/D as for f32. */
HETC_INLINE void hetc_mma_s8(int acc[4], const uint32_t a[4], const uint32_t b[2]) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+r"(acc[0]), "+r"(acc[1]), "+r"(acc[2]), "+r"(acc[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
HETC_MMA(f16)
HETC_MMA(bf16)
HETC_MMA_SP(f16)
HETC_MMA_SP(bf16)

/* r = the bitwise function `lut` of a, b, c (lut = f(0xf0, 0xcc, 0xaa)) */
template <int lut>
HETC_INLINE uint32_t hetc_lop3(uint32_t a, uint32_t b, uint32_t c) {
    uint32_t r;
    asm("lop3.b32 %0, %1, %2, %3, %4;" : "=r"(r) : "r"(a), "r"(b), "r"(c), "n"(lut));
    return r;
}

/* a * b + c on two packed 16-bit floats, rounded to nearest even */
HETC_INLINE uint32_t hetc_fma2_f16(uint32_t a, uint32_t b, uint32_t c) {
    uint32_t r;
    asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}
HETC_INLINE uint32_t hetc_fma2_bf16(uint32_t a, uint32_t b, uint32_t c) {
    uint32_t r;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}

/* Copy 16 bytes global -> shared without the registers (cp.async): done
 * only by the cp.async.wait_group that covers its commit group. */
HETC_INLINE void hetc_cp_async16(void *shared, const void *global) {
    unsigned s = (unsigned)__cvta_generic_to_shared(shared);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(global));
}
HETC_INLINE void hetc_cp_async_commit() { asm volatile("cp.async.commit_group;"); }
/* wait until at most `n` of the newest commit groups are still in flight */
template <int n>
HETC_INLINE void hetc_cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(n)); }

#else
namespace hetc_sim {

/* Every lane's D fragment: A (16 x K) times B (K x 8) plus the lane's C,
 * f32 words in[c..c+3]; summed in k order. */
template <int K>
inline void product(Thread *lanes, const float (*A)[K], const float (*B)[8], int c) {
    for (int l = 0; l < 32; l++)
        for (int i = 0; i < 4; i++) {
            int row = l / 4 + 8 * (i >> 1), col = 2 * (l % 4) + (i & 1);
            float acc = hetc_float(lanes[l].in[c + i]);
            for (int k = 0; k < K; k++) acc += A[row][k] * B[k][col];
            lanes[l].out[i] = hetc_bits(acc);
        }
}

/* acc (in[c..c+3]) = the warp-wide mma `op` on this lane's fragments */
inline void accumulate(float acc[4], int c, Collective op) {
    Thread *t = sim.cur;
    for (int i = 0; i < 4; i++) t->in[c + i] = hetc_bits(acc[i]);
    warp_op(op);
    for (int i = 0; i < 4; i++) acc[i] = hetc_float(t->out[i]);
}

template <float (*from)(uint16_t)>
inline void mma_m16n8k16(Thread *lanes) {  // in: a[4], b[2], c[4] (f32 bits)
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; l++) {
        int g = l / 4, t = l % 4;
        for (int r = 0; r < 4; r++)
            for (int h = 0; h < 2; h++) {
                A[g + 8 * (r & 1)][2 * t + 8 * (r >> 1) + h] = from(lanes[l].in[r] >> (16 * h));
                if (r < 2) B[2 * t + 8 * r + h][g] = from(lanes[l].in[4 + r] >> (16 * h));
            }
    }
    product<16>(lanes, A, B, 6);
}

template <float (*from)(uint16_t)>
inline void mma_sync(float acc[4], const uint32_t a[4], const uint32_t b[2]) {
    Thread *t = sim.cur;
    for (int i = 0; i < 4; i++) t->in[i] = a[i];
    t->in[4] = b[0];
    t->in[5] = b[1];
    accumulate(acc, 6, mma_m16n8k16<from>);
}

/* mma m16n8k32 s8: in a[4], b[2], c[4] (int32), exact (int32 wraps as
 * the hardware's does not matter: sums of 8-bit products stay far inside) */
inline void mma_s8_m16n8k32(Thread *lanes) {
    int A[16][32], B[32][8];
    for (int l = 0; l < 32; l++) {
        int g = l / 4, t = l % 4;
        for (int r = 0; r < 4; r++)
            for (int q = 0; q < 4; q++) {
                A[g + 8 * (r & 1)][4 * t + 16 * (r >> 1) + q] = (int8_t)(lanes[l].in[r] >> 8 * q);
                if (r < 2) B[4 * t + 16 * r + q][g] = (int8_t)(lanes[l].in[4 + r] >> 8 * q);
            }
    }
    for (int l = 0; l < 32; l++)
        for (int i = 0; i < 4; i++) {
            int row = l / 4 + 8 * (i >> 1), col = 2 * (l % 4) + (i & 1);
            int acc = (int)lanes[l].in[6 + i];
            for (int k = 0; k < 32; k++) acc += A[row][k] * B[k][col];
            lanes[l].out[i] = (uint32_t)acc;
        }
}

/* mma.sp m16n8k32, sparsity selector 0: in a[4] (kept values), b[4],
 * c[4], e. Lane 4g + t (t < 2) holds in e the positions of row g's groups
 * 4t..4t+3 (bits 0-15, nibble q at 4q: first position in bits 0-1) and of
 * row g + 8's (bits 16-31); kept value pair q of a row sits in compressed
 * columns 2q, 2q + 1. Positions must ascend, as ordered_metadata needs. */
template <float (*from)(uint16_t)>
inline void mma_sp_m16n8k32(Thread *lanes) {
    float A[16][32] = {}, B[32][8];
    for (int l = 0; l < 32; l++) {
        int g = l / 4, t = l % 4;
        for (int r = 0; r < 4; r++)
            for (int h = 0; h < 2; h++) {
                int row = g + 8 * (r & 1), col = 2 * t + 8 * (r >> 1) + h;  /* compressed */
                int group = col / 2, owner = 4 * (row % 8) + group / 4;
                uint32_t nib = lanes[owner].in[12] >> (16 * (row / 8) + 4 * (group % 4)) & 15;
                int first = nib & 3, second = nib >> 2;
                if (first >= second) {
                    sim.error = "mma.sp metadata with positions that do not ascend (invalid "
                                "for ordered_metadata)";
                    return;
                }
                A[row][4 * group + (h ? second : first)] = from(lanes[l].in[r] >> (16 * h));
                B[2 * t + 8 * r + h][g] = from(lanes[l].in[4 + r] >> (16 * h));
            }
    }
    product<32>(lanes, A, B, 8);
}

template <float (*from)(uint16_t)>
inline void mma_sp_sync(float acc[4], const uint32_t a[4], const uint32_t b[4], uint32_t e) {
    Thread *t = sim.cur;
    for (int i = 0; i < 4; i++) {
        t->in[i] = a[i];
        t->in[4 + i] = b[i];
    }
    t->in[12] = e;
    accumulate(acc, 8, mma_sp_m16n8k32<from>);
}

}  // namespace hetc_sim

inline float hetc_f16_of(uint16_t h) { return hetc_from_f16(h); }
inline float hetc_bf16_of(uint16_t h) { return hetc_from_bf16(h); }
inline void hetc_mma_f16(float acc[4], const uint32_t a[4], const uint32_t b[2]) {
    hetc_sim::mma_sync<hetc_f16_of>(acc, a, b);
}
inline void hetc_mma_bf16(float acc[4], const uint32_t a[4], const uint32_t b[2]) {
    hetc_sim::mma_sync<hetc_bf16_of>(acc, a, b);
}

inline void hetc_mma_s8(int acc[4], const uint32_t a[4], const uint32_t b[2]) {
    hetc_sim::Thread *t = hetc_sim::sim.cur;
    for (int i = 0; i < 4; i++) {
        t->in[i] = a[i];
        t->in[6 + i] = (uint32_t)acc[i];
    }
    t->in[4] = b[0];
    t->in[5] = b[1];
    hetc_sim::warp_op(hetc_sim::mma_s8_m16n8k32);
    for (int i = 0; i < 4; i++) acc[i] = (int)t->out[i];
}
inline void hetc_mma_sp_f16(float acc[4], const uint32_t a[4], const uint32_t b[4], uint32_t e) {
    hetc_sim::mma_sp_sync<hetc_f16_of>(acc, a, b, e);
}
inline void hetc_mma_sp_bf16(float acc[4], const uint32_t a[4], const uint32_t b[4],
                             uint32_t e) {
    hetc_sim::mma_sp_sync<hetc_bf16_of>(acc, a, b, e);
}

template <int lut>
inline uint32_t hetc_lop3(uint32_t a, uint32_t b, uint32_t c) {
    uint32_t r = 0;
    for (int i = 0; i < 8; i++)
        if (lut >> i & 1) r |= (i & 4 ? a : ~a) & (i & 2 ? b : ~b) & (i & 1 ? c : ~c);
    return r;
}

/* the f32 fma rounded once more to 16 bits: the hardware's single rounding
 * wherever the exact result fits f32 (the dequantization's small integers) */
template <float (*from)(uint16_t), uint16_t (*to)(float)>
inline uint32_t hetc_fma2(uint32_t a, uint32_t b, uint32_t c) {
    uint32_t r = 0;
    for (int h = 0; h < 2; h++)
        r |= (uint32_t)to(fmaf(from(a >> 16 * h), from(b >> 16 * h), from(c >> 16 * h))) << 16 * h;
    return r;
}
inline uint32_t hetc_fma2_f16(uint32_t a, uint32_t b, uint32_t c) {
    return hetc_fma2<hetc_f16_of, hetc_to_f16>(a, b, c);
}
inline uint32_t hetc_fma2_bf16(uint32_t a, uint32_t b, uint32_t c) {
    return hetc_fma2<hetc_bf16_of, hetc_to_bf16>(a, b, c);
}

/* The source is read at once (it does not change during a kernel), the
 * shared memory written only at the wait that covers the copy. */
inline void hetc_cp_async16(void *shared, const void *global) {
    hetc_sim::Thread *t = hetc_sim::sim.cur;
    t->pending_data.emplace_back((const char *)global, (const char *)global + 16);
    t->pending_dst.push_back(shared);
    t->pending_group.push_back(-1);  // not committed yet
}
inline void hetc_cp_async_commit() {
    hetc_sim::Thread *t = hetc_sim::sim.cur;
    for (int &g : t->pending_group)
        if (g < 0) g = t->groups;
    t->groups++;
}
template <int n>
inline void hetc_cp_async_wait() {
    hetc_sim::Thread *t = hetc_sim::sim.cur;
    size_t keep = 0;
    for (size_t i = 0; i < t->pending_dst.size(); i++) {
        int g = t->pending_group[i];
        if (g >= 0 && g < t->groups - n) {
            memcpy(t->pending_dst[i], t->pending_data[i].data(), 16);
        } else {
            t->pending_data[keep].swap(t->pending_data[i]);
            t->pending_dst[keep] = t->pending_dst[i];
            t->pending_group[keep] = g;
            keep++;
        }
    }
    t->pending_data.resize(keep);
    t->pending_dst.resize(keep);
    t->pending_group.resize(keep);
}
#endif

#endif
