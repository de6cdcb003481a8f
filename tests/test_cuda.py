"""Target cuda: generated CUDA checked by NVRTC and run here through
device.cuh's CPU simulation (emulate=True) against the interpreter; on a
GPU (make gpu-check: HETC_TEST_CUDA_ON_GPU=1) the same checks run there.

The op cases run on cuda in test_ops_on_targets.py; here are whole models,
the refusals, and the simulation's own guarantees (barriers, shuffles, a
missing barrier showing up)."""

import copy
import ctypes
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import hetc
from hetc.backends.c.build import build
from hetc.backends.c.emitter import read_headers, shared_headers
from hetc.backends.cuda import HEADER_FILES, HERE, SIM_FLAGS, toolchain
from hetc.core.errors import TargetError, UsageError
from hetc.ir import Graph, TensorType, dtypes
from hetc.passes.pipeline import PassManager

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
from families import Logits, gpt2_tiny, llama_tiny  # noqa: E402
from models import examples  # noqa: E402

NVRTC = toolchain.available()
# make gpu-check runs these tests on a GPU: the same checks, no simulation
ON_GPU = os.environ.get("HETC_TEST_CUDA_ON_GPU") == "1"
EMULATE = not ON_GPU
SIMULATION_ONLY = pytest.mark.skipif(ON_GPU, reason="checks the CPU simulation itself")

MODELS = list(examples()) + [
    ("llama", Logits(llama_tiny()), (torch.randint(0, 256, (1, 6)),)),
    ("gpt2", Logits(gpt2_tiny()), (torch.randint(0, 256, (1, 6)),)),
]


@pytest.mark.parametrize("name, model, inputs", MODELS, ids=[m[0] for m in MODELS])
def test_models_run_on_the_simulation_as_the_interpreter_computes(name, model, inputs):
    module = hetc.compile(model, target="cuda", example_inputs=inputs, emulate=EMULATE)
    want = hetc.compile(model, example_inputs=inputs)(*inputs)
    torch.testing.assert_close(module(*inputs), want, rtol=1e-5, atol=2e-6)
    if NVRTC is None:  # the same source compiled for the GPUs, no kernel spilling
        cubins = dict(module.artifact.extra["cubins"])
        assert cubins.pop(toolchain.PTX)["ptx_bytes"] and set(cubins) == set(toolchain.ARCHS)
        for arch, c in cubins.items():
            assert c["cubin_bytes"] and len(c["kernels"]) == module.artifact.sources[
                "model.cu"].count('extern "C" __global__')
            spilling = {k: r for k, r in c["kernels"].items() if r["spill_bytes"]}
            assert not spilling, (arch, spilling)
    assert ("cuda runs through hetc's CPU simulation" in str(module.report)) == EMULATE


def test_saved_and_loaded(tmp_path):
    name, model, inputs = MODELS[0]
    module = hetc.compile(model, target="cuda", example_inputs=inputs, emulate=EMULATE)
    module.save(tmp_path / "m")
    saved = tmp_path / "m" / "sources"
    assert (saved / "model.cu").exists() and (saved / "device.cuh").exists()
    torch.testing.assert_close(hetc.load(tmp_path / "m")(*inputs), module(*inputs))


def test_what_is_not_built_is_refused_with_the_reason():
    name, model, inputs = MODELS[0]
    fused = PassManager.from_text("fuse").run(hetc.compile(model, example_inputs=inputs).graph)
    with pytest.raises(TargetError, match=r"target cuda cannot lower graph '\w+': op #\d+ fused "
                                          r"\(%\w+\): not lowered for cuda yet"):
        hetc.compile(fused, target="cuda")
    g = Graph("narrow")
    x = g.add_input("x", TensorType((4,), dtypes.get("i16")))
    g.outputs = [g.add("add", [x, x])]
    with pytest.raises(TargetError, match=r"op #0 add \(%\w+\): i16 value %x"):
        hetc.compile(g, target="cuda")


@pytest.mark.parametrize("name, options, kernel", [
    ("mlp", {"precision": "int8"}, "linear int8 g"),
    ("mlp", {"precision": "int4-g32"}, "linear int4 g32"),
    ("mlp", {"sparsity": "2:4", "precision": "int4"}, "(2:4 zeros stored)"),
    ("mlp", {"precision": "fp8"}, "weights decoded to f32"),
    ("mlp", {"precision": "int8", "activations": "int8"}, "linear int8 activations tensor cores"),
    ("cnn", {"precision": "int4"}, "conv2d direct")])  # int4 convolution weights, decoded
def test_compressed_weights_compute_as_the_interpreter(name, options, kernel):
    """int8/int4 weights stay codes in the weights blob, dequantized as the
    GEMM loads its tile; other encodings (and convolution weights) are
    decoded to f32 when packed; int8 activations are quantized per token
    group first."""
    name, model, inputs = next(m for m in MODELS if m[0] == name)
    module = hetc.compile(model, target="cuda", example_inputs=inputs, emulate=EMULATE, **options)
    x = inputs[0].numpy()
    np.testing.assert_allclose(module(x), hetc.interpret(module.graph, [x])[0],
                               rtol=1e-5, atol=1e-6)
    assert any(kernel in k for k in module.artifact.extra["kernels"])
    if "linear int4" in kernel:  # packed: half a byte per weight plus scales, not 4 bytes
        f32_bytes = 4 * sum(w.size for w in module.graph.weights.values() if w.ndim == 2)
        assert module.artifact.extra["weights_bytes"] < 0.2 * f32_bytes


def test_the_launch_table_is_what_runs():
    """Outputs that are an input, a view and a kernel's result: the table
    (played by the same launch.py as on a GPU) launches every generated
    kernel once and copies the rest."""
    class Views(torch.nn.Module):
        def forward(self, x):
            y = x * 2
            return y.reshape(4, 6)[1:3], x, y[:, 2:]

    model, x = Views(), torch.randn(2, 12)
    module = hetc.compile(model, target="cuda", example_inputs=(x,), emulate=EMULATE)
    for got, want in zip(module(x), model(x)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    steps = json.loads(module.artifact.sources["launches.json"])
    kernels = [s["kernel"] for s in steps if "kernel" in s]
    source = module.artifact.sources["model.cu"]
    assert kernels == [f"k{i}" for i in range(source.count('extern "C" __global__'))]
    copies = [s["copy"] for s in steps if "copy" in s]
    assert {"dst": ["out", 1, 0], "src": ["in", 0, 0], "bytes": 96} in copies
    assert {"dst": ["out", 0, 0], "src": ["A", 0, 24], "bytes": 48} in copies  # a view: row 1


@SIMULATION_ONLY
def test_without_a_gpu_running_says_what_to_do():
    name, model, inputs = MODELS[0]
    module = hetc.compile(model, target="cuda", example_inputs=inputs, emulate=False)
    with pytest.raises(TargetError, match="emulate=True"):
        module(*inputs)


def test_bad_indices_fail_the_call():
    class Embed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.e = torch.nn.Embedding(10, 4)

        def forward(self, ids):
            return self.e(ids)

    model, ids = Embed(), torch.tensor([[1, 2, 3]])
    module = hetc.compile(model, target="cuda", example_inputs=(ids,), emulate=EMULATE)
    torch.testing.assert_close(module(ids), model(ids).detach())
    with pytest.raises(TargetError, match=r"embedding: index 12 out of range \[-10, 10\)"):
        module(torch.tensor([[1, 12, 3]]))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc here")
def test_nvcc_compiles_the_generated_source_too(tmp_path):
    """The f32 kernels, and the tensor-core ones (mma.sp, lop3, cp.async)."""
    name, model, inputs = MODELS[0]
    half = copy.deepcopy(model).half()
    for model, inputs, options in [(model, inputs, {}),
                                   (half, (inputs[0].half(),), {"sparsity": "2:4",
                                                                "precision": "int4"})]:
        module = hetc.compile(model, target="cuda", example_inputs=inputs, **options)
        for file, text in module.artifact.sources.items():
            (tmp_path / file).write_text(text)
        for arch in ("sm_80", "sm_90a"):
            p = subprocess.run(["nvcc", f"-arch={arch}", "-c", str(tmp_path / "model.cu"), "-o",
                                str(tmp_path / "model.o")], capture_output=True, text=True)
            assert p.returncode == 0, p.stderr[-2000:]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc here")
def test_nvcc_builds_the_cubins_when_asked():
    name, model, inputs = MODELS[0]
    module = hetc.compile(model, target="cuda", example_inputs=inputs, compiler="nvcc")
    cubins = module.artifact.extra["cubins"]
    assert module.artifact.build["compiler"] == "nvcc"
    assert all(c["kernels"] for arch, c in cubins.items() if arch != toolchain.PTX)
    assert "cuda (nvcc)" in str(module.report)


@pytest.mark.skipif(NVRTC is not None, reason=str(NVRTC))
def test_cubins_are_cached_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("HETC_CACHE", str(tmp_path))
    srcs = {"t.cu": SIM_TEST, **read_headers(HERE, HEADER_FILES)}
    cubin, log = toolchain.build(srcs, "sm_80", main="t.cu")
    files = sorted(p.name for p in (tmp_path / "cuda").iterdir())
    assert len(files) == 2 and cubin[:4] == b"\x7fELF"  # the cubin and ptxas's report
    assert toolchain.build(srcs, "sm_80", main="t.cu") == (cubin, log)
    assert sorted(p.name for p in (tmp_path / "cuda").iterdir()) == files


def test_a_bad_compiler_name_is_refused():
    name, model, inputs = MODELS[0]
    with pytest.raises(UsageError, match="compiler must be one of nvrtc, nvcc"):
        hetc.compile(model, target="cuda", example_inputs=inputs, compiler="clang")


# -- the simulation itself ------------------------------------------------------------

SIM_TEST = r'''
#ifdef HETC_SIM
#include "hetc_status.h"
#endif
#include "device.cuh"

/* each block reverses its 64 values through shared memory */
extern "C" __global__ void reverse(float *y, const float *x, int sync) {
    __shared__ float s[64];
    int t = threadIdx.x;
    s[t] = x[blockIdx.x * 64 + t];
    if (sync) __syncthreads();
    y[blockIdx.x * 64 + t] = s[63 - t];
}

extern "C" __global__ void divergent(float *y) {
    if (threadIdx.x < 16) __syncthreads();
    y[threadIdx.x] = 1.f;
}

extern "C" __global__ void warp_sums(float *y, const float *x) {
    y[threadIdx.x] = hetc_warp_sum(x[threadIdx.x]);
}

#ifdef HETC_SIM
extern "C" int run(int which, float *y, const float *x, int sync, char *err) {
    hetc_status st;
    memset(&st, 0, sizeof st);
    hetc_status_now = &st;
    if (which == 0) HETC_LAUNCH(reverse, dim3(2), dim3(64), (y, x, sync));
    if (which == 1) HETC_LAUNCH(divergent, dim3(1), dim3(32), (y));
    if (which == 2) HETC_LAUNCH(warp_sums, dim3(1), dim3(64), (y, x));
    strcpy(err, st.text);
    return st.failed;
}
#endif
'''


@pytest.fixture(scope="module")
def sim():
    if ON_GPU:
        pytest.skip("checks the CPU simulation itself")
    srcs = {"t.cu": SIM_TEST, **read_headers(HERE, HEADER_FILES), **shared_headers()}
    lib = ctypes.CDLL(build(srcs, SIM_FLAGS, "simtest", main="t.cu"))
    lib.run.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                        ctypes.c_char_p]

    def run(which, x, sync=1, seed=1):
        os.environ["HETC_SIM_SEED"] = str(seed)
        try:
            y = np.zeros(max(x.size, 64), np.float32)
            err = ctypes.create_string_buffer(256)
            status = lib.run(which, y.ctypes.data, x.ctypes.data, sync, err)
            return y, status, err.value.decode()
        finally:
            del os.environ["HETC_SIM_SEED"]
    return run


def test_barriers_order_shared_memory(sim):
    x = np.arange(1, 129, dtype=np.float32)
    want = x.reshape(2, 64)[:, ::-1].reshape(-1)
    for seed in range(1, 6):
        y, status, _ = sim(0, x, sync=1, seed=seed)
        assert status == 0
        np.testing.assert_array_equal(y, want)


def test_a_missing_barrier_shows(sim):
    # resumed in a shuffled order, threads read slots not yet written
    x = np.arange(1, 129, dtype=np.float32)
    want = x.reshape(2, 64)[:, ::-1].reshape(-1)
    wrong = [not np.array_equal(sim(0, x, sync=0, seed=s)[0], want) for s in range(1, 6)]
    assert any(wrong)


def test_a_divergent_barrier_fails_the_call(sim):
    y, status, err = sim(1, np.zeros(32, np.float32))
    assert status and "kernel divergent" in err and "exited" in err


def test_warp_shuffles_reduce_each_warp(sim):
    x = np.random.default_rng(0).standard_normal(64).astype(np.float32)
    y, status, _ = sim(2, x)
    assert status == 0
    np.testing.assert_allclose(y[:32], x[:32].sum(), rtol=1e-5)
    np.testing.assert_allclose(y[32:], x[32:].sum(), rtol=1e-5)


@pytest.mark.skipif(NVRTC is not None, reason=str(NVRTC))
def test_the_simulated_source_is_real_cuda():
    sizes = toolchain.compile_check({"t.cu": SIM_TEST, **read_headers(HERE, HEADER_FILES)},
                                    main="t.cu")
    assert sizes.pop(toolchain.PTX)["ptx_bytes"] and set(sizes) == set(toolchain.ARCHS)
    assert all(set(c["kernels"]) == {"reverse", "divergent", "warp_sums"} for c in sizes.values())


def test_a_vit_encoder_runs_on_the_simulation():
    from families import vit

    model, inputs = vit()
    module = hetc.compile(model, target="cuda", example_inputs=inputs, emulate=EMULATE)
    want = hetc.compile(model, example_inputs=inputs)(*inputs)
    torch.testing.assert_close(module(*inputs), want, rtol=1e-4, atol=1e-5)


def test_generate_with_a_static_kv_cache_matches_pytorch_greedy():
    """decoder=: the generation step (cache, positions and mask as inputs) on
    the simulated GPU gives transformers' greedy tokens."""
    model = llama_tiny()
    ids = torch.randint(1, 256, (1, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                              do_sample=False, eos_token_id=None, pad_token_id=0)
    module = hetc.compile(model, target="cuda", decoder={"max_context": 32, "chunk": 4},
                          emulate=EMULATE)
    assert torch.equal(module.generate(ids, max_new_tokens=12, eos_token_id=-1), want)


def test_f16_int4_generation_on_tensor_cores_matches_the_interpreter():
    """An f16 Llama with int4 weights (decoder=: its cache f16 too): the
    linear layers on tensor cores, attention over the 160-slot cache split
    over keys, the same greedy tokens as the interpreter; and the kernels
    alone can be timed (what make gpu-check measures)."""
    model = llama_tiny().half()
    model.config.max_position_embeddings = 256  # rotary positions: any length
    ids = torch.randint(1, 256, (1, 7), generator=torch.Generator().manual_seed(3))
    options = {"decoder": {"max_context": 160, "chunk": 4}, "precision": "int4"}
    module = hetc.compile(model, target="cuda", emulate=EMULATE, **options)
    assert module.graph.inputs[-1].type.dtype.name == "f16"
    kernels = module.artifact.extra["kernels"]
    assert any("f16 tensor cores" in k for k in kernels)
    assert "attention split-K over keys (flash-decoding)" in kernels
    # the cache and the new keys read where they lie: no repeat of the kv heads
    assert "expand copy" not in kernels, kernels
    want = hetc.compile(model, **options).generate(ids, max_new_tokens=8, eos_token_id=-1)
    assert torch.equal(module.generate(ids, max_new_tokens=8, eos_token_id=-1), want)
    from hetc.runtime.generate import step_inputs
    spec = module.artifact.extra["decoder"]
    cache = [np.zeros((2, 1, spec["kv_heads"], spec["max_context"], spec["head_dim"]),
                      np.float16)] * spec["layers"]
    step = [np.full((1, 4), 7), *step_inputs(3, 1, 4, spec["max_context"]), *cache]
    assert module._executor().kernel_seconds(step, repeats=2) > 0


class _Epilogues(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = (torch.nn.Linear(i, o) for i, o in ((64, 96), (96, 64), (64, 64)))

    def forward(self, x):
        y = self.b(torch.nn.functional.gelu(self.a(x))) + x  # a residual
        return torch.sigmoid(self.c(y)) * y


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
def test_elementwise_ops_after_a_linear_layer_run_in_its_kernel(dtype):
    """Activation, residual and gating chains are the layers' epilogues (one
    kernel each, the f16 results rounded after every op as the IR says)."""
    model, x = _Epilogues().to(dtype), torch.randn(5, 64).to(dtype)
    module = hetc.compile(model, target="cuda", example_inputs=(x,), emulate=EMULATE)
    kernels = module.artifact.extra["kernels"]
    assert sum(kernels.values()) == 3, kernels
    assert any(k.endswith("+ sigmoid, mul") for k in kernels), kernels
    from hetc.runtime.convert import to_numpy
    want = hetc.interpret(module.graph, [to_numpy(x)])[0].astype(np.float32)
    np.testing.assert_allclose(to_numpy(module(x)).astype(np.float32), want,
                               rtol=1e-5 if dtype == torch.float32 else 1e-3, atol=1e-5)


class _Attention(torch.nn.Module):
    def __init__(self, causal):
        super().__init__()
        self.causal = causal

    def forward(self, q, k, v, mask=None):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                                is_causal=self.causal)


def _attention_inputs(rows, keys, mask, dtype, seed, value_dim=24):
    """q, k, v ([2, 3, rows or keys, 16 / 16 / value_dim]) and the mask
    asked for: None, "bool", "additive" (f32) or "a row fully masked"."""
    g = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(2, 3, n, d, generator=g).to(dtype)
              for n, d in ((rows, 16), (keys, 16), (keys, value_dim))]
    if mask == "additive":
        inputs.append(torch.randn(2, 1, rows, keys, generator=g))
    elif mask is not None:
        m = torch.rand(1, 1, rows, keys, generator=g) > 0.3
        if mask == "a row fully masked":
            m[..., rows // 2, :] = False
        inputs.append(m)
    return inputs


@pytest.mark.parametrize("rows, keys, causal, mask", [
    (1, 300, False, None), (3, 300, False, "bool"), (2, 257, False, "additive"),
    (4, 300, True, None), (2, 129, False, "a row fully masked")])
def test_attention_over_many_keys_splits_them(rows, keys, causal, mask):
    """Few query rows over more than 128 keys: split-K (flash-decoding), the
    parts rescaled to their common max; a fully masked row gives zeros, as
    the IR defines."""
    inputs = _attention_inputs(rows, keys, mask, torch.float32, seed=keys)
    module = hetc.compile(_Attention(causal), target="cuda", example_inputs=tuple(inputs),
                          emulate=EMULATE)
    assert "attention split-K over keys (flash-decoding)" in module.artifact.extra["kernels"]
    want = hetc.interpret(module.graph, [x.numpy() for x in inputs])[0]
    np.testing.assert_allclose(module(*inputs).numpy(), want, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("rows, keys, causal, mask, dtype", [
    (20, 20, True, None, torch.float32), (33, 70, False, "bool", torch.float32),
    (40, 40, False, "additive", torch.float32), (40, 40, True, None, torch.float16),
    (17, 50, False, "a row fully masked", torch.float32)])
def test_attention_over_many_query_rows_runs_in_tiles(rows, keys, causal, mask, dtype):
    """16 or more query rows (prefill, encoders): flash-style tiles with an
    online softmax, no scores stored; the interpreter's results up to f32
    rounding (one rounding of the result in f16)."""
    inputs = _attention_inputs(rows, keys, mask, dtype, seed=rows, value_dim=40)  # 2 per lane
    module = hetc.compile(_Attention(causal), target="cuda", example_inputs=tuple(inputs),
                          emulate=EMULATE)
    assert "attention flash-style tiles (online softmax)" in module.artifact.extra["kernels"]
    from hetc.runtime.convert import to_numpy
    want = hetc.interpret(module.graph, [to_numpy(x) for x in inputs])[0].astype(np.float32)
    got = to_numpy(module(*inputs)).astype(np.float32)
    tol = 1e-5 if dtype == torch.float32 else 2.0 ** -10
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * float(np.abs(want).max()))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("name", ["cnn", "llama"])
def test_half_precision_models_compute_as_the_interpreter(name, dtype):
    """bf16/f16 values are held as their bits, computed in f32 and rounded
    after each op, as the IR defines: within one rounding of the interpreter
    (sums taken in another order may round the other way)."""
    from hetc.runtime.convert import to_numpy

    name, model, inputs = next(m for m in MODELS if m[0] == name)
    model = copy.deepcopy(model).to(dtype)  # the shared model stays f32
    inputs = tuple(x.to(dtype) if x.is_floating_point() else x for x in inputs)
    module = hetc.compile(model, target="cuda", example_inputs=inputs, emulate=EMULATE)
    want = hetc.interpret(module.graph, [to_numpy(x) for x in inputs])[0].astype(np.float32)
    got = to_numpy(module(*inputs)).astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-2 if dtype == torch.bfloat16 else 1e-3,
                               atol=1e-3 * float(np.abs(want).max()))
