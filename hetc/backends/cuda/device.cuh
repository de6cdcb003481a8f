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

struct Thread {
    ucontext_t ctx;
    dim3 idx;
    State state;
    int lane, warp;
    float give, got;  // a shuffle's value, and what the lane reads after it
    int partner;      // the lane it reads
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

/* Release the warps whose every lane waits at a shuffle; true if any. */
inline bool release_warps(int n) {
    bool any = false;
    for (int w = 0; w * 32 < n; w++) {
        int lo = w * 32, hi = std::min(n, lo + 32);
        bool all = true;
        for (int i = lo; i < hi; i++) all &= sim.threads[i].state == AT_WARP;
        if (!all) continue;
        if (hi - lo != 32) {
            sim.error = "a warp shuffle in a partial warp (blockDim is not a multiple of 32)";
            return false;
        }
        for (int i = lo; i < hi; i++) {
            Thread &t = sim.threads[i];
            t.got = sim.threads[lo + t.partner].give;
        }
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

inline float shfl(float v, int lane_of) {
    Thread *t = sim.cur;
    t->give = v;
    t->partner = lane_of;
    yield_to_scheduler(AT_WARP);
    return t->got;
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

#endif
