"""Linear layers on this CPU: hetc x86 against PyTorch, ONNX Runtime, OpenVINO
and TVM, side by side in one process, and the measured memory-read ceiling.

    .venv/bin/python benchmarks/linear_kernels.py [--shapes 4096x11008] [--batch 1 16]
        [--repeat 30] [--markdown FILE]

Every runner gets 2 threads. TVM (untuned) runs alone in a child process
after the others (see tvm_seconds). Each configuration keeps several copies of the
layer (at least 128 MB of stored weights in all) and cycles through them, so weights come from
memory, not cache, as in LLM decoding. Runners alternate call by call and the
table shows medians, the speed ratio to PyTorch f32, and for hetc the
fraction of the read ceiling its weight bytes imply.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HETC_THREADS", "2")
os.environ.setdefault("TVM_NUM_THREADS", "2")
# Runners alternate call by call: a thread pool left spinning after its call
# would steal the 2 cores from the next runner, so no runner spins (OpenMP
# pools of PyTorch and hetc sleep when idle; ONNX Runtime's spinning is off).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import hetc  # noqa: E402

THREADS = 2
COPIES_BYTES = 128 << 20  # 4x this machine's 32 MB L3
SHAPES = [(768, 3072), (4096, 4096), (4096, 11008)]
CONFIGS = [  # name, hetc.compile options, stored bytes per weight (for the copy count)
    ("f32", {}, 4.0),
    ("bf16", {"precision": "bf16"}, 2.0),
    ("int8", {"precision": "int8", "activations": "int8"}, 1.0),
    ("int4 g128", {"precision": "int4", "activations": "int8"}, 0.53),
    ("2:4 + int4 g128", {"sparsity": "2:4", "precision": "int4", "activations": "int8"}, 0.41),
    ("1:4 + int4 g128", {"sparsity": "1:4", "precision": "int4", "activations": "int8"}, 0.22),
    # weight-only: the codes decoded in registers, activations stay f32
    ("int8 weight-only", {"precision": "int8"}, 1.0),
    ("int4 g128 weight-only", {"precision": "int4"}, 0.53),
    ("2:4 + int4 g128 weight-only", {"sparsity": "2:4", "precision": "int4"}, 0.41),
    ("1:4 + int4 g128 weight-only", {"sparsity": "1:4", "precision": "int4"}, 0.22),
]

READ_C = r"""
#include <immintrin.h>
#include <omp.h>
/* Streams x once with 2 threads, every lane summed (so no load can be dropped). */
double hetc_read(const float *x, long n) {
    double total = 0.0;
    #pragma omp parallel num_threads(2) reduction(+:total)
    {
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        #pragma omp for schedule(static)
        for (long i = 0; i < n; i += 32) {
            s0 = _mm256_add_ps(s0, _mm256_loadu_ps(x + i));
            s1 = _mm256_add_ps(s1, _mm256_loadu_ps(x + i + 8));
            s2 = _mm256_add_ps(s2, _mm256_loadu_ps(x + i + 16));
            s3 = _mm256_add_ps(s3, _mm256_loadu_ps(x + i + 24));
        }
        float t[8];
        _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
        for (int j = 0; j < 8; j++) total += t[j];
    }
    return total;
}
"""


def read_ceiling_gbs(mb=1024, repeat=5):
    """Measured read bandwidth (GB/s), 2 threads streaming a large buffer."""
    import ctypes

    from hetc.backends.c.build import build
    from hetc.backends.x86 import FLAGS

    lib = ctypes.CDLL(build({"model.c": READ_C}, FLAGS, what="read"))
    lib.hetc_read.argtypes, lib.hetc_read.restype = [ctypes.c_void_p, ctypes.c_long], ctypes.c_double
    x = np.ones((mb << 20) // 4, np.float32)
    lib.hetc_read(x.ctypes.data, x.size)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        lib.hetc_read(x.ctypes.data, x.size)
        times.append(time.perf_counter() - t)
    return x.nbytes / min(times) / 1e9


class Linear(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.fc = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(w))

    def forward(self, x):
        return self.fc(x)


def copies(nbytes):
    return int(max(2, -(-COPIES_BYTES // max(int(nbytes), 1))))


def hetc_runner(weights, x, cfg):
    mods = [hetc.compile(Linear(w), target="x86", example_inputs=(x,), **cfg) for w in weights]
    xn = x.numpy()
    wbytes = mods[0].report.weight_bytes
    state = {"i": 0}

    def run():
        m = mods[state["i"] % len(mods)]
        state["i"] += 1
        return m(xn)
    return run, wbytes


def torch_runner(weights, x, dtype):
    ws = [torch.from_numpy(w).to(dtype) for w in weights]
    xt = x.to(dtype)
    state = {"i": 0}

    def run():
        w = ws[state["i"] % len(ws)]
        state["i"] += 1
        with torch.no_grad():
            return torch.nn.functional.linear(xt, w)
    return run


def ort_runner(weights, x, int4):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    n, k = weights[0].shape
    m = x.shape[0]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = []
    for w in weights:
        if int4:  # MatMulNBits, block 128, symmetric (zero point 8), int8 activations
            codes, scale = int4_groups(w)
            q = (codes + 8).astype(np.uint8)
            packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
            node = helper.make_node("MatMulNBits", ["x", "B", "scales"], ["y"],
                                    domain="com.microsoft", K=k, N=n, bits=4, block_size=128,
                                    accuracy_level=4)
            inits = [onnx.numpy_helper.from_array(packed, "B"),
                     onnx.numpy_helper.from_array(scale.reshape(-1), "scales")]
        else:
            node = helper.make_node("MatMul", ["x", "WT"], ["y"])
            inits = [onnx.numpy_helper.from_array(np.ascontiguousarray(w.T), "WT")]
        graph = helper.make_graph([node], "linear",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
                                  inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                        helper.make_opsetid("com.microsoft", 1)],
                              ir_version=9)
        sessions.append(ort.InferenceSession(model.SerializeToString(), opts,
                                             providers=["CPUExecutionProvider"]))
    xn = x.numpy()
    state = {"i": 0}

    def run():
        s = sessions[state["i"] % len(sessions)]
        state["i"] += 1
        return s.run(None, {"x": xn})
    return run


def int4_groups(w, group=128):
    """Symmetric int4 codes [N, K/group, group] and f32 scales [N, K/group, 1]."""
    n, k = w.shape
    g = w.reshape(n, k // group, group)
    scale = np.abs(g).max(-1, keepdims=True) / 7.0
    scale[scale == 0] = 1
    return np.clip(np.rint(g / scale), -8, 7).astype(np.int8), scale.astype(np.float32)


def openvino_runner(weights, x, int4):
    """OpenVINO CPU plugin: f32 with INFERENCE_PRECISION_HINT=f32, or int4
    group-128 weights (Convert, Multiply decompression) with its defaults."""
    import openvino as ov
    from openvino import opset13 as ops

    n, k = weights[0].shape
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": THREADS, "PERFORMANCE_HINT": "LATENCY"}
    if not int4:
        config["INFERENCE_PRECISION_HINT"] = "f32"
    requests = []
    for w in weights:
        xin = ops.parameter([x.shape[0], k], ov.Type.f32, name="x")
        if int4:
            q, scale = int4_groups(w)
            codes = ov.Tensor(ov.Type.i4, ov.Shape(list(q.shape)))
            u = (q.astype(np.int16) & 0xF).astype(np.uint8).reshape(-1)
            np.copyto(codes.data.reshape(-1), (u[0::2] | (u[1::2] << 4)).view(np.int8))
            wf = ops.multiply(ops.convert(ops.constant(codes), ov.Type.f32), ops.constant(scale))
            wmat = ops.reshape(wf, ops.constant(np.array([n, k], np.int64)), False)
        else:
            wmat = ops.constant(w)
        model = ov.Model([ops.matmul(xin, wmat, False, True)], [xin], "linear")
        requests.append(core.compile_model(model, "CPU", config).create_infer_request())
    xn = x.numpy()
    state = {"i": 0}

    def run():
        r = requests[state["i"] % len(requests)]
        state["i"] += 1
        return r.infer({0: xn})
    return run


def tvm_seconds(k, n, batch, repeat):
    """Median seconds of TVM 0.27 (llvm for this CPU, AVX-512) on the layer's
    graph as hetc imports it, handed to TVM as Relax (hetc.ir.relax.to_relax:
    the same graph hetc compiles), untuned (MetaSchedule takes hours, so this
    is TVM's default code). Measured alone in a child process: TVM's worker
    threads keep spinning after a call and would slow every runner measured
    after it."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_tvm_child, (k, n, batch, repeat))


def _tvm_child(k, n, batch, repeat):
    import tvm
    from tvm import relax

    from hetc.ir.relax import to_relax

    torch.set_num_threads(THREADS)
    w = (np.random.default_rng(0).standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
    x = torch.randn(batch, k)
    target = tvm.target.Target({"kind": "llvm", "mcpu": "znver4", "num-cores": THREADS})
    mod = to_relax(hetc.import_model(Linear(w).eval(), example_inputs=(x,)))
    vm = relax.VirtualMachine(tvm.compile(mod, target=target), tvm.cpu())
    xt = tvm.runtime.tensor(x.numpy())
    vm["main"](xt)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        vm["main"](xt)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(runners, repeat, warmup):
    """Alternate the runners call by call; median seconds each. Every runner
    first makes `warmup` calls, at least one per copy of the layer: a first
    call builds state (hetc's context, the peers' kernel caches) that later
    calls reuse, and must not be timed."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    times = {name: [] for name in runners}
    for _ in range(repeat):
        for name, run in runners.items():
            t = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="*", default=[f"{k}x{n}" for k, n in SHAPES],
                    help="KxN (input x output features)")
    ap.add_argument("--batch", nargs="*", type=int, default=[1, 16])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--markdown", metavar="FILE", help="also write the table here")
    ap.add_argument("--no-tvm", action="store_true", help="leave TVM out (seconds per call here)")
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    # This VM's read bandwidth drifts (31-57 GB/s between runs), so the ceiling
    # is measured again right after each block of rows and shown with it.
    lines = ["Median ms per call; x = speed relative to PyTorch f32; ceiling % = hetc's "
             "weight bytes / time against the read ceiling (2 threads) measured right "
             "after that block of rows, shown in the ceiling rows.", "",
             "| K x N | batch | runner | ms | x PyTorch f32 | ceiling % |",
             "| --- | ---: | --- | ---: | ---: | ---: |"]
    print(lines[0])
    rng = np.random.default_rng(0)
    for shape in args.shapes:
        k, n = (int(v) for v in shape.split("x"))
        count = max(copies(b * n * k) for _, _, b in CONFIGS)
        weights = [(rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
                   for _ in range(count)]
        for batch in args.batch:
            x = torch.randn(batch, k)
            few = weights[:copies(4 * n * k)]
            runners = {"PyTorch f32": torch_runner(few, x, torch.float32),
                       "PyTorch bf16": torch_runner(weights[:copies(2 * n * k)], x,
                                                    torch.bfloat16),
                       "ONNX Runtime f32": ort_runner(few, x, False),
                       "ONNX Runtime int4 (MatMulNBits)": ort_runner(weights[:copies(0.53 * n * k)],
                                                                      x, True),
                       "OpenVINO f32": openvino_runner(few, x, False),
                       "OpenVINO int4 g128": openvino_runner(weights[:copies(0.53 * n * k)], x,
                                                             True)}
            wbytes = {}
            for name, cfg, per_weight in CONFIGS:
                print(f"  compiling hetc {name} for {k}x{n} batch {batch}", file=sys.stderr)
                run, wbytes[f"hetc x86 {name}"] = hetc_runner(
                    weights[:copies(per_weight * n * k)], x, cfg)
                runners[f"hetc x86 {name}"] = run
            t = measure(runners, args.repeat, warmup=count + 1)
            ceiling = read_ceiling_gbs()
            if not args.no_tvm:
                t["TVM f32 (untuned, alone)"] = tvm_seconds(k, n, batch, max(3, args.repeat // 5))
            base = t["PyTorch f32"]
            rows = [(name, f"{1e3 * sec:.3f}", f"{base / sec:.2f}",
                     f"{100 * wbytes[name] / sec / 1e9 / ceiling:.0f}%" if name in wbytes else "")
                    for name, sec in t.items()] + [("read ceiling", f"{ceiling:.1f} GB/s", "", "")]
            for row in rows:
                line = f"| {k} x {n} | {batch} | " + " | ".join(row) + " |"
                lines.append(line)
                print(line, flush=True)
    if args.markdown:
        from hetc.core.fsutil import atomic_write_text

        atomic_write_text(args.markdown, "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
