"""Target cuda on tensor cores: the simulation of mma.sync, mma.sp and
cp.async checked against numpy and against the expected output of LLVM's
sparse-mma-2-4-f16.mlir integration test (data written for an sm_80 GPU),
the 2:4 packing, and f16/bf16 linear layers with every weight format the
tensor-core kernel takes, against the interpreter."""

import ctypes
import os

import numpy as np
import pytest
import torch

import hetc
from hetc.backends.c.build import build
from hetc.backends.c.emitter import read_headers, shared_headers
from hetc.backends.cuda import HEADER_FILES, HERE, SIM_FLAGS, toolchain
from hetc.backends.cuda.tensor_core import compress_2_4, metadata_words
from hetc.runtime.convert import to_numpy

NVRTC = toolchain.available()
# make gpu-check runs these tests on a GPU: the same checks, no simulation
ON_GPU = os.environ.get("HETC_TEST_CUDA_ON_GPU") == "1"
EMULATE = not ON_GPU

TC_TEST = r'''
#ifdef HETC_SIM
#include "hetc_status.h"
#endif
#include "device.cuh"

/* y[16][8] = A[16][16] B, B given as bt[8][16]; 16-bit floats as bits */
extern "C" __global__ void mma_dense(float *y, const uint16_t *a, const uint16_t *bt, int bf16) {
    int lane = threadIdx.x, g = lane / 4, t = lane % 4;
    uint32_t ar[4], br[2];
    for (int r = 0; r < 4; r++) {
        const uint16_t *p = a + (g + 8 * (r & 1)) * 16 + 2 * t + 8 * (r >> 1);
        ar[r] = p[0] | (uint32_t)p[1] << 16;
    }
    for (int r = 0; r < 2; r++) {
        const uint16_t *p = bt + g * 16 + 2 * t + 8 * r;
        br[r] = p[0] | (uint32_t)p[1] << 16;
    }
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    if (bf16) hetc_mma_bf16(acc, ar, br);
    else hetc_mma_f16(acc, ar, br);
    for (int i = 0; i < 4; i++) y[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = acc[i];
}

/* y[16][8] = A B with A 16x32 2:4: its kept values ac[16][16] and, as LLVM's
 * test gives them, metadata m[16][2] (16 bits per row and half of k), bt[8][32] */
extern "C" __global__ void mma_sparse(float *y, const uint16_t *ac, const uint16_t *m,
                                      const uint16_t *bt) {
    int lane = threadIdx.x, g = lane / 4, t = lane % 4;
    uint32_t ar[4], br[4];
    for (int r = 0; r < 4; r++) {
        const uint16_t *p = ac + (g + 8 * (r & 1)) * 16 + 2 * t + 8 * (r >> 1);
        ar[r] = p[0] | (uint32_t)p[1] << 16;
        const uint16_t *q = bt + g * 32 + 2 * t + 8 * r;
        br[r] = q[0] | (uint32_t)q[1] << 16;
    }
    uint32_t e = t < 2 ? m[g * 2 + t] | (uint32_t)m[(g + 8) * 2 + t] << 16 : 0u;
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    hetc_mma_sp_f16(acc, ar, br, e);
    for (int i = 0; i < 4; i++) y[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = acc[i];
}

/* 32 threads copy 128 floats through shared memory by cp.async; `wait` 0
 * forgets cp.async.wait_group */
extern "C" __global__ void staged(float *y, const float *x, int wait) {
    __shared__ __align__(16) float s[128];
    int t = threadIdx.x;
    for (int i = 0; i < 4; i++) s[4 * t + i] = -1.f;
    __syncthreads();
    hetc_cp_async16(&s[4 * t], x + 4 * t);
    hetc_cp_async_commit();
    if (wait) hetc_cp_async_wait<0>();
    __syncthreads();
    for (int i = 0; i < 4; i++) y[4 * t + i] = s[(4 * t + 64 + i) % 128];
}

/* lop3: (a & b) | c, the int4 dequantization's first step */
extern "C" __global__ void lop3(uint32_t *y, const uint32_t *x) {
    y[threadIdx.x] = hetc_lop3<0xea>(x[3 * threadIdx.x], x[3 * threadIdx.x + 1],
                                     x[3 * threadIdx.x + 2]);
}

/* y[16][8] = A[16][32] B (int8, exact), B given as bt[8][32] */
extern "C" __global__ void mma_s8(int *y, const int8_t *a, const int8_t *bt) {
    int lane = threadIdx.x, g = lane / 4, t = lane % 4;
    uint32_t ar[4], br[2];
    for (int r = 0; r < 4; r++) {
        const int8_t *p = a + (g + 8 * (r & 1)) * 32 + 4 * t + 16 * (r >> 1);
        ar[r] = (uint8_t)p[0] | (uint8_t)p[1] << 8 | (uint8_t)p[2] << 16 | (uint32_t)(uint8_t)p[3] << 24;
        if (r < 2) {
            const int8_t *q = bt + g * 32 + 4 * t + 16 * r;
            br[r] = (uint8_t)q[0] | (uint8_t)q[1] << 8 | (uint8_t)q[2] << 16 | (uint32_t)(uint8_t)q[3] << 24;
        }
    }
    int acc[4] = {0, 0, 0, 0};
    hetc_mma_s8(acc, ar, br);
    for (int i = 0; i < 4; i++) y[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = acc[i];
}

/* every e4m3 byte's value */
extern "C" __global__ void e4m3(float *y) {
    uint32_t b = blockIdx.x * 32 + threadIdx.x;
    y[b] = hetc_from_e4m3(b);
}

#ifdef HETC_SIM
extern "C" int run(int which, void *y, const void *a, const void *b, const void *c, int flag,
                   char *err) {
    hetc_status st;
    memset(&st, 0, sizeof st);
    hetc_status_now = &st;
    if (which == 0) HETC_LAUNCH(mma_dense, dim3(1), dim3(32),
                                ((float *)y, (const uint16_t *)a, (const uint16_t *)b, flag));
    if (which == 1) HETC_LAUNCH(mma_sparse, dim3(1), dim3(32),
                                ((float *)y, (const uint16_t *)a, (const uint16_t *)b,
                                 (const uint16_t *)c));
    if (which == 2) HETC_LAUNCH(staged, dim3(1), dim3(32), ((float *)y, (const float *)a, flag));
    if (which == 3) HETC_LAUNCH(lop3, dim3(1), dim3(32), ((uint32_t *)y, (const uint32_t *)a));
    if (which == 4) HETC_LAUNCH(e4m3, dim3(8), dim3(32), ((float *)y));
    if (which == 5) HETC_LAUNCH(mma_s8, dim3(1), dim3(32),
                                ((int *)y, (const int8_t *)a, (const int8_t *)b));
    strcpy(err, st.text);
    return st.failed;
}
#endif
'''


@pytest.fixture(scope="module")
def tc():
    if ON_GPU:
        pytest.skip("checks the CPU simulation itself")
    srcs = {"t.cu": TC_TEST, **read_headers(HERE, HEADER_FILES), **shared_headers()}
    lib = ctypes.CDLL(build(srcs, SIM_FLAGS, "tctest", main="t.cu"))
    lib.run.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 4 + [ctypes.c_int, ctypes.c_char_p]

    def run(which, y, a, b=None, c=None, flag=0):
        err = ctypes.create_string_buffer(256)
        ptr = [None if v is None else v.ctypes.data for v in (a, b, c)]
        status = lib.run(which, y.ctypes.data, *ptr, flag, err)
        return status, err.value.decode()
    return run


def _bf16(a):
    """f32 -> (bf16 bits, the values they hold) by truncation: exact inputs."""
    bits = (a.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    return bits, (bits.astype(np.uint32) << 16).view(np.float32)


@pytest.mark.parametrize("bf16", [0, 1], ids=["f16", "bf16"])
def test_mma_follows_the_fragment_layout(tc, bf16):
    rng = np.random.default_rng(bf16)
    a, bt = rng.standard_normal((16, 16)), rng.standard_normal((8, 16))
    if bf16:
        (abits, a), (bbits, bt) = _bf16(a), _bf16(bt)
    else:
        a, bt = a.astype(np.float16), bt.astype(np.float16)
        abits, bbits = a.view(np.uint16), bt.view(np.uint16)
    y = np.zeros((16, 8), np.float32)
    assert tc(0, y, abits, bbits, flag=bf16) == (0, "")
    np.testing.assert_allclose(y, a.astype(np.float32) @ bt.astype(np.float32).T,
                               rtol=1e-5, atol=1e-5)


def test_int8_mma_follows_the_fragment_layout(tc):
    rng = np.random.default_rng(3)
    a = rng.integers(-128, 128, (16, 32)).astype(np.int8)
    bt = rng.integers(-128, 128, (8, 32)).astype(np.int8)
    y = np.zeros((16, 8), np.int32)
    assert tc(5, y, a, bt) == (0, "")
    np.testing.assert_array_equal(y, a.astype(np.int32) @ bt.astype(np.int32).T)


def test_sparse_mma_matches_llvms_expected_output(tc):
    """LLVM's mlir/test/Integration/Dialect/SparseTensor/GPU/CUDA/
    sparse-mma-2-4-f16.mlir: kept values a[i][j] = i + j + 1, every metadata
    half 0x8888 (values at positions 0 and 2 of each group of four),
    b[n][k] = n - k; its CHECK lines give C row by row."""
    ac = (np.arange(16)[:, None] + np.arange(16)[None, :] + 1).astype(np.float16)
    meta = np.full((16, 2), 0x8888, np.uint16)
    bt = (np.arange(8)[:, None] - np.arange(32)[None, :]).astype(np.float16)
    y = np.zeros((16, 8), np.float32)
    assert tc(1, y, ac.view(np.uint16), meta, bt.view(np.uint16)) == (0, "")
    first = [-2720, -2584, -2448, -2312, -2176, -2040, -1904, -1768]  # CHECK, row 0
    last = [-6320, -5944, -5568, -5192, -4816, -4440, -4064, -3688]   # CHECK, row 15
    np.testing.assert_array_equal(y[0], first)
    np.testing.assert_array_equal(y[15], last)
    # every row: the closed form of the CHECK lines, C[i][n] = n (16 i + 136) - 240 i - 2720
    i, n = np.arange(16)[:, None], np.arange(8)[None, :]
    np.testing.assert_array_equal(y, n * (16 * i + 136) - 240 * i - 2720)


def test_sparse_mma_with_random_metadata_matches_numpy(tc):
    """Positions that differ per row and group: the metadata's lane and bit
    layout (LLVM's test has one value everywhere), through the packer's
    compress_2_4 and metadata_words as the kernels get them."""
    rng = np.random.default_rng(5)
    dense = rng.standard_normal((16, 32)).astype(np.float16)
    groups = dense.reshape(16, 8, 4)
    drop = np.argsort(rng.random((16, 8, 4)), -1)[..., :2]
    np.put_along_axis(groups, drop, 0, -1)
    dense = groups.reshape(16, 32)
    kept, nibbles = compress_2_4(dense, dense != 0)
    words = metadata_words(nibbles, 32)[0, 0]  # word 2g + t
    meta = np.zeros((16, 2), np.uint16)  # as the kernel reads it: m[row][t]
    for g in range(8):
        for t in range(2):
            meta[g, t] = words[2 * g + t] & 0xFFFF
            meta[g + 8, t] = words[2 * g + t] >> 16
    bt = rng.standard_normal((8, 32)).astype(np.float16)
    y = np.zeros((16, 8), np.float32)
    assert tc(1, y, np.ascontiguousarray(kept).view(np.uint16), meta, bt.view(np.uint16)) == (0, "")
    np.testing.assert_allclose(y, dense.astype(np.float32) @ bt.astype(np.float32).T,
                               rtol=1e-5, atol=1e-4)


def test_metadata_that_does_not_ascend_fails_the_call(tc):
    ac = np.ones((16, 16), np.float16)
    meta = np.full((16, 2), 0x2222, np.uint16)  # positions 2 then 0
    y = np.zeros((16, 8), np.float32)
    status, err = tc(1, y, ac.view(np.uint16), meta, np.ones((8, 32), np.float16).view(np.uint16))
    assert status and "ordered_metadata" in err


def test_a_missing_cp_async_wait_shows(tc):
    x = np.arange(128, dtype=np.float32)
    y = np.zeros(128, np.float32)
    assert tc(2, y, x, flag=1) == (0, "")
    np.testing.assert_array_equal(y, np.roll(x, -64))
    assert tc(2, y, x, flag=0) == (0, "")
    assert (y == -1).all()  # the copies never landed: stale shared memory


def test_lop3_computes_its_truth_table(tc):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 2**32, 96, dtype=np.uint64).astype(np.uint32)
    y = np.zeros(32, np.uint32)
    assert tc(3, y, x) == (0, "")
    a, b, c = x[0::3], x[1::3], x[2::3]
    np.testing.assert_array_equal(y, (a & b) | c)


def test_e4m3_bytes_decode_exactly(tc):
    import ml_dtypes

    y = np.zeros(256, np.float32)
    assert tc(4, y, None) == (0, "")
    want = np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    finite = ~np.isnan(want)  # 0x7f and 0xff: NaN, which weights never hold
    np.testing.assert_array_equal(y[finite], want[finite])


@pytest.mark.skipif(NVRTC is not None, reason=str(NVRTC))
def test_the_tensor_core_primitives_compile_for_the_gpus():
    sizes = toolchain.compile_check({"t.cu": TC_TEST, **read_headers(HERE, HEADER_FILES)},
                                    main="t.cu")
    kernels = {"mma_dense", "mma_sparse", "staged", "lop3", "e4m3", "mma_s8"}
    assert sizes.pop(toolchain.PTX)["ptx_bytes"]
    assert all(set(c["kernels"]) == kernels for c in sizes.values())


# -- linear layers on tensor cores ---------------------------------------------------

def _mlp(dtype, k=192, hidden=200, out=40):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(k, hidden), torch.nn.GELU(),
                               torch.nn.Linear(hidden, out)).to(dtype)


@pytest.mark.parametrize("tokens", [1, 19])
@pytest.mark.parametrize("options, kernel", [
    ({}, "(mma.sync), {dt} weights"),
    ({"precision": "int4"}, "(mma.sync), int4 weights (lop3 dequant)"),
    ({"precision": "int4-g32"}, "(mma.sync), int4 weights (lop3 dequant) g32"),
    ({"precision": "int8"}, "(mma.sync), int8 weights"),
    ({"sparsity": "2:4"}, "(mma.sp 2:4), {dt} weights"),
    ({"sparsity": "2:4", "precision": "int4-g32"}, "(mma.sp 2:4), int4 weights (lop3 dequant) g32"),
    ({"sparsity": "1:4", "precision": "int8"}, "(mma.sp 2:4), int8 weights"),
    ({"sparsity": "4:8"}, "(mma.sync), {dt} weights (4:8 zeros stored: more than 2 of 4)"),
    ({"precision": "fp8"}, "(mma.sync), fp8 e4m3 weights"),
    ({"sparsity": "2:4", "precision": "fp8"}, "(mma.sp 2:4), fp8 e4m3 weights"),
])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_half_precision_linear_layers_run_on_tensor_cores(dtype, options, kernel, tokens):
    """Codes enter the mma exactly and the f32 sums are scaled per row and
    group: within one rounding of the result type of the interpreter (which
    sums in another order)."""
    dt = "f16" if dtype == torch.float16 else "bf16"
    model, x = _mlp(dtype), torch.randn(tokens, 192).to(dtype)
    module = hetc.compile(model, target="cuda", example_inputs=(x,), emulate=EMULATE, **options)
    kernels = module.artifact.extra["kernels"]
    assert sum(n for k, n in kernels.items() if "tensor cores" in k) == 2, kernels
    assert any(kernel.format(dt=dt) in k for k in kernels), kernels
    want = hetc.interpret(module.graph, [to_numpy(x)])[0].astype(np.float32)
    got = to_numpy(module(x)).astype(np.float32)
    ulp = 2.0 ** (-10 if dt == "f16" else -7)
    np.testing.assert_allclose(got, want, rtol=ulp, atol=ulp * float(np.abs(want).max()))
    cubins = module.artifact.extra["cubins"].values()
    assert not any(r["spill_bytes"] for c in cubins for r in c.get("kernels", {}).values())


@pytest.mark.parametrize("options, kernel", [
    ({"precision": "int8"}, "int8 weights g192"),
    ({"precision": "int4-g32"}, "int4 weights (sign-extended to int8) g32"),
    ({"precision": "int4", "sparsity": "2:4"}, "(2:4 zeros stored: no sparse int8 kernel)")])
def test_int8_activations_run_on_the_int8_tensor_cores(options, kernel):
    """f32 models with activations="int8": the activations quantized to
    codes and scales per token and group, the integer sums of each group
    exact (mma s8, int32) and scaled by both scales: the interpreter's
    results up to f32 rounding. The second layer (k = 200, not a multiple
    of 16) keeps the f32 path."""
    model, x = _mlp(torch.float32), torch.randn(19, 192)
    module = hetc.compile(model, target="cuda", example_inputs=(x,), emulate=EMULATE,
                          activations="int8", **options)
    kernels = module.artifact.extra["kernels"]
    assert any(k.startswith("linear int8 activations tensor cores") and kernel in k
               for k in kernels), kernels
    want = hetc.interpret(module.graph, [x.numpy()])[0]
    np.testing.assert_allclose(module(x).numpy(), want, rtol=1e-5, atol=1e-6)


def test_f32_models_keep_the_f32_kernels():
    module = hetc.compile(_mlp(torch.float32), target="cuda",
                          example_inputs=(torch.randn(2, 192),), emulate=EMULATE, precision="int4")
    assert not any("tensor cores" in k for k in module.artifact.extra["kernels"])


class _Convs(torch.nn.Module):
    """Padding, stride, dilation, a depthwise layer and a 1x1 one."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 20, 3, padding=1)
        self.b = torch.nn.Conv2d(20, 24, 3, stride=2, padding=(1, 2), dilation=(1, 2))
        self.d = torch.nn.Conv2d(24, 24, 3, groups=24, padding=1)
        self.c = torch.nn.Conv2d(24, 8, 1, bias=False)

    def forward(self, x):
        h = self.b(torch.relu(self.a(x)))
        return self.c(torch.nn.functional.silu(self.d(h))) + 1.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_half_precision_convolutions_are_implicit_gemms_on_tensor_cores(dtype):
    """Each output pixel a B column gathered from its window (zeros outside
    the image), the weights [Cout, Cin * kh * kw] as A; grouped convolutions
    stay direct. Epilogues as for linear layers."""
    model = _Convs().to(dtype)
    x = torch.randn(2, 3, 13, 11, generator=torch.Generator().manual_seed(1)).to(dtype)
    module = hetc.compile(model, target="cuda", example_inputs=(x,), emulate=EMULATE)
    kernels = module.artifact.extra["kernels"]
    dt = "f16" if dtype == torch.float16 else "bf16"
    assert kernels == {f"conv2d {dt} tensor cores (implicit GEMM, mma.sync) + relu": 1,
                       f"conv2d {dt} tensor cores (implicit GEMM, mma.sync)": 1,
                       "conv2d direct + silu": 1,
                       f"conv2d {dt} tensor cores (implicit GEMM, mma.sync) + add": 1}, kernels
    want = hetc.interpret(module.graph, [to_numpy(x)])[0].astype(np.float32)
    got = to_numpy(module(x)).astype(np.float32)
    ulp = 2.0 ** (-10 if dt == "f16" else -7)
    np.testing.assert_allclose(got, want, rtol=ulp, atol=ulp * float(np.abs(want).max()))
