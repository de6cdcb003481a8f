"""The GPU check of target cuda (make gpu-check), for a machine with an
NVIDIA GPU (sm_80 or newer), its driver, and a CUDA build of PyTorch:

    .venv/bin/python benchmarks/cuda_gpu.py [--skip-tests] [--layers 2] [--repeats 50]

1. the cuda numerics tests (tests/test_cuda*.py and the cuda op cases of
   tests/test_ops_on_targets.py) on the GPU instead of the simulation
   (HETC_TEST_CUDA_ON_GPU=1);
2. linear layers, batch 1 and 16, 4096x4096 and 4096x11008: hetc f16,
   int4 (g128) and 2:4 + int4 against PyTorch f16 (cuBLAS) and PyTorch's
   2:4 semi-structured sparse f16 (cuSPARSELt or CUTLASS); batch-1 rows
   also as % of the GPU's memory bandwidth (the bytes of the weights as
   stored over the kernel time);
3. one decode step of a Llama-7B-shaped stack of --layers layers (f16,
   hetc with int4 weights) against PyTorch f16 eager with its KV cache.

Times are the GPU's own (CUDA events), kernels only: hetc's launch table
replayed as one CUDA graph with the inputs and the KV cache left on the GPU
(as generate() keeps it).
Everything prints as one table. Without a GPU it says what is missing and
exits with status 2. Nothing here has run yet: this machine has no GPU.
"""

import argparse
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import hetc  # noqa: E402
from hetc.core.errors import TargetError  # noqa: E402

SHAPES = [(4096, 4096), (4096, 11008)]  # (in, out) features
FORMATS = [("f16", {}), ("int4 g128", {"precision": "int4"}),
           ("2:4 + int4", {"sparsity": "2:4", "precision": "int4"})]


def gpu_or_exit():
    """(driver, device) of GPU 0, or exit 2 saying what is missing."""
    from hetc.backends.cuda import gpu

    try:
        d = gpu.driver()
    except TargetError as e:
        print(f"gpu-check: {e}\n(nothing to check on this machine: it needs an NVIDIA GPU)",
              file=sys.stderr)
        sys.exit(2)
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: this PyTorch has no CUDA (install a CUDA build of torch for the "
              "peers: https://pytorch.org)", file=sys.stderr)
        sys.exit(2)
    return d, gpu._ok(d, d.cuDeviceGet(0), "cuDeviceGet")


def bandwidth_gbs(d, dev):
    """Peak memory bandwidth from the device's memory clock and bus width."""
    from hetc.backends.cuda.gpu import _ok

    attr = d.CUdevice_attribute
    khz = _ok(d, d.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE, dev), "clock")
    bits = _ok(d, d.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH, dev),
               "bus width")
    return 2 * khz * 1e3 * bits / 8 / 1e9


def torch_seconds(fn, repeats):
    import torch

    fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / repeats


def hetc_seconds(module, inputs, repeats):
    return module._executor().kernel_seconds(inputs, repeats)


def linear_rows(peak, repeats):
    import torch
    import torch.nn.functional as F

    rows = []
    for k, n in SHAPES:
        torch.manual_seed(0)
        layer = torch.nn.Linear(k, n, bias=False).half()
        for batch in (1, 16):
            x = torch.randn(batch, k).half()
            w, xc = layer.weight.detach().cuda(), x.cuda()
            ref = torch_seconds(lambda: F.linear(xc, w), repeats)
            rows.append((f"{k}x{n} b{batch}", "PyTorch f16 (cuBLAS)", ref, 2 * k * n, peak, ref))
            try:
                from torch.sparse import to_sparse_semi_structured

                mask = torch.zeros_like(w).view(n, k // 4, 4)
                mask[..., :2] = 1
                ws = to_sparse_semi_structured(w * mask.view(n, k))
                t = torch_seconds(lambda: F.linear(xc, ws), repeats)
                rows.append((f"{k}x{n} b{batch}", "PyTorch 2:4 f16 (semi-structured)", t,
                             k * n, peak, ref))
            except Exception as e:  # shapes or builds it does not take
                rows.append((f"{k}x{n} b{batch}", f"PyTorch 2:4 f16: {type(e).__name__}",
                             None, 0, peak, ref))
            for name, options in FORMATS:
                module = hetc.compile(layer, target="cuda", example_inputs=(x,), **options)
                t = hetc_seconds(module, [x.numpy()], repeats)
                stored = module.artifact.extra["weights_bytes"]
                kernel = next(iter(module.artifact.extra["kernels"]))
                rows.append((f"{k}x{n} b{batch}", f"hetc {name} [{kernel}]", t, stored, peak,
                             ref))
    return rows


def decode_rows(layers, repeats):
    """One generated token: hetc's step graph vs PyTorch eager with a cache."""
    import torch
    import transformers

    cfg = transformers.LlamaConfig(hidden_size=4096, intermediate_size=11008,
                                   num_attention_heads=32, num_key_value_heads=32,
                                   num_hidden_layers=layers, vocab_size=32000,
                                   max_position_embeddings=1024)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval().half()
    t0 = time.time()
    module = hetc.compile(model, target="cuda", decoder={"max_context": 512, "chunk": 1},
                          precision="int4")
    compile_s = time.time() - t0
    spec = module.artifact.extra["decoder"]
    from hetc.runtime.generate import step_inputs

    positions, mask = step_inputs(128, 1, 1, spec["max_context"])
    cache = [np.zeros((2, 1, spec["kv_heads"], spec["max_context"], spec["head_dim"]),
                      module.graph.inputs[3].type.dtype.storage) for _ in range(spec["layers"])]
    ids = np.array([[7]], np.int64)
    t_hetc = hetc_seconds(module, [ids, positions, mask, *cache], repeats)
    gpu_model = model.cuda()
    prompt = torch.randint(0, 32000, (1, 128), device="cuda")
    with torch.no_grad():
        past = gpu_model(prompt, use_cache=True).past_key_values
        token = torch.tensor([[7]], device="cuda")

        def step():
            gpu_model(token, past_key_values=past, use_cache=True)
        t_torch = torch_seconds(step, max(5, repeats // 5))
    label = f"decode step, Llama-7B shape x {layers} layers"
    return [(label, "PyTorch f16 eager (KV cache)", t_torch, 0, 0, t_torch),
            (label, f"hetc int4 (compiled in {compile_s:.0f} s)", t_hetc, 0, 0, t_torch)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    d, dev = gpu_or_exit()
    if not args.skip_tests:
        env = dict(os.environ, HETC_TEST_CUDA_ON_GPU="1")
        tests = ["tests/test_cuda.py", "tests/test_cuda_tensor_cores.py",
                 "tests/test_ops_on_targets.py", "-k", "cuda or tensor or linear or mma"]
        if subprocess.call([sys.executable, "-m", "pytest", "-q", *tests], cwd=ROOT, env=env):
            sys.exit("gpu-check: the cuda numerics tests failed on the GPU")
    peak = bandwidth_gbs(d, dev)
    rows = linear_rows(peak, args.repeats) + decode_rows(args.layers, args.repeats)
    print(f"\n| workload | implementation | GPU time | vs PyTorch f16 | % of {peak:.0f} GB/s |")
    print("| --- | --- | --- | --- | --- |")
    for what, impl, t, nbytes, bw, ref in rows:
        if t is None:
            print(f"| {what} | {impl} | - | - | - |")
            continue
        share = f"{100 * nbytes / t / (bw * 1e9):.0f}%" if nbytes and "b1" in what else ""
        print(f"| {what} | {impl} | {t * 1e6:.1f} us | {ref / t:.2f}x | {share} |")


if __name__ == "__main__":
    main()
