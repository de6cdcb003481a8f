"""Whole vision and encoder models on this CPU: hetc x86 against PyTorch
eager, ONNX Runtime and OpenVINO, side by side in one process.

    .venv/bin/python benchmarks/models.py [--models efficientnet minilm]
        [--repeat 20] [--markdown FILE]

- EfficientNet-Lite0 with its ImageNet weights, batch 1, 224x224 (a crop of
  one of scikit-image's photos); agreement: top-1 class equal to PyTorch's on
  every shipped photo (families.photos, centre crops).
- all-MiniLM-L6-v2 with its pretrained weights, batch 1, 128 tokens of real
  text; agreement: cosine of the mean-pooled embedding with PyTorch's.

Every runner gets 2 threads and keeps its runtime's default thread waiting
(as a user's loop of calls would). ONNX Runtime runs the TorchScript export
(the exporter with the faster graph for these models here) with every graph
optimization; OpenVINO compiles the same ONNX file with
INFERENCE_PRECISION_HINT=f32 (its CPU plugin otherwise computes in bf16 on
this CPU). hetc rows: f32, int8 weights, and int8 weights with int8
activations where x86 uses them (linear layers, and the 1x1 convolutions
its rule takes: on at most 256 positions, to more channels, or to at
least 32 channels (64 on planes of over 4096 positions); the others keep
f32 activations, docs/x86.md). Each
runner makes `repeat` calls back to back, the runners take turns for three
rounds; the table shows medians and ratios to OpenVINO f32 and to hetc f32.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HETC_THREADS", "2")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

import hetc  # noqa: E402
from families import crop, efficientnet_lite0, minilm, photos  # noqa: E402
from timing import measure  # noqa: E402

THREADS = 2
TEXT = ("hetc compiles PyTorch and ONNX models for four kinds of hardware. Passes choose, layer by "
        "layer, an N:M sparsity pattern and a precision that the target can exploit, under an "
        "accuracy budget, and fuse operators. Backends emit real code: x86 C with AVX-512, CUDA "
        "C++ with sparse tensor cores, OpenVINO models for NPUs and HLS C++ for FPGAs. ") * 4


def efficientnet():
    images = photos()
    batch = {name: crop(image) for name, image in images.items()}
    x = batch["astronaut"]
    return efficientnet_lite0(), (x,), list(batch.values())


def minilm_128():
    model, inputs = minilm(sentences=(TEXT,))
    return model, tuple(t[:, :128].contiguous() for t in inputs), None


MODELS = {"efficientnet": ("EfficientNet-Lite0, 224x224", efficientnet),
          "minilm": ("all-MiniLM-L6-v2, 128 tokens", minilm_128)}
HETC = {
    "efficientnet": [("hetc f32", {}), ("hetc int8 weights", {"precision": "int8"}),
                     ("hetc int8 weights + int8 act", {"precision": "int8", "activations": "int8"})],
    "minilm": [("hetc f32", {}),
               ("hetc int8 weights + int8 act", {"precision": "int8", "activations": "int8"})],
}


def first(out):
    out = out[0] if isinstance(out, (tuple, list)) else out
    out = getattr(out, "last_hidden_state", out)
    return np.asarray(out.detach() if torch.is_tensor(out) else out, np.float32)


def torch_runner(model, inputs):
    def run(*xs):
        with torch.no_grad():
            return first(model(*xs))
    return run


def onnx_file(model, inputs, folder):
    path = os.path.join(folder, "model.onnx")
    names = [f"in{i}" for i in range(len(inputs))]
    torch.onnx.export(model, inputs, path, dynamo=False, input_names=names, opset_version=17)
    return path, names


def ort_runner(path, names):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return lambda *xs: session.run(None, {n: x.numpy() for n, x in zip(names, xs)})[0]


def openvino_runner(path):
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": THREADS,
                                                "PERFORMANCE_HINT": "LATENCY",
                                                "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    return lambda *xs: np.array(request.infer([x.numpy() for x in xs])[0])


def hetc_runner(model, inputs, options):
    t = time.perf_counter()
    module = hetc.compile(model, "x86", inputs, **options)
    module(*inputs)  # the native build
    seconds = time.perf_counter() - t
    return (lambda *xs: first(module(*xs))), seconds, module


def agreement(key, run, want_run, inputs, extra):
    """EfficientNet: top-1 equal to PyTorch's on every photo; MiniLM: cosine
    of the mean-pooled embeddings."""
    if key == "efficientnet":
        same = sum(int(np.argmax(run(x)) == np.argmax(want_run(x))) for x in extra)
        return f"top-1 {same}/{len(extra)}"
    a, b = run(*inputs).mean(axis=1).ravel(), want_run(*inputs).mean(axis=1).ravel()
    return f"cosine {float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)):.5f}"


def bench(key, repeat):
    title, make = MODELS[key]
    model, inputs, extra = make()
    model.eval()  # the TorchScript export restores the mode it found
    torch.set_num_threads(THREADS)
    runners = {"PyTorch eager": torch_runner(model, inputs)}
    build = {}
    with tempfile.TemporaryDirectory() as folder:
        path, names = onnx_file(model, inputs, folder)
        runners["ONNX Runtime"] = ort_runner(path, names)
        runners["OpenVINO f32"] = openvino_runner(path)
        for name, options in HETC[key]:
            runners[name], build[name], module = hetc_runner(model, inputs, options)
            if name == "hetc f32":
                kernels = module.artifact.extra["kernels"]
        times = measure(runners, repeat, args=inputs)
        agree = {name: agreement(key, run, runners["PyTorch eager"], inputs, extra)
                 for name, run in runners.items()}
    ov, own = times["OpenVINO f32"], times["hetc f32"]
    rows = [f"### {title}", "",
            "| runner | median ms | OpenVINO f32 / runner | hetc f32 / runner | agreement with "
            "PyTorch | compile + build s |", "| --- | --- | --- | --- | --- | --- |"]
    for name, t in times.items():
        rows.append(f"| {name} | {t * 1e3:.2f} | {ov / t:.2f}x | {own / t:.2f}x | {agree[name]} | "
                    f"{build[name]:.1f} |" if name in build else
                    f"| {name} | {t * 1e3:.2f} | {ov / t:.2f}x | {own / t:.2f}x | {agree[name]} | |")
    rows += ["", "hetc f32 kernels: " + ", ".join(f"{k} x{v}" for k, v in kernels.items()), ""]
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--markdown", metavar="FILE", help="also write the tables here")
    args = ap.parse_args()
    lines = []
    for key in args.models:
        rows = bench(key, args.repeat)
        print("\n".join(rows), flush=True)
        lines += rows
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
