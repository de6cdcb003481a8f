"""The main job: compile real models with hetc, run them, check them against
PyTorch and ONNX Runtime, save and reload a compiled module, print the report.

    make demo        (or: .venv/bin/python examples/demo.py [--target ref] [--out DIR])
"""

import argparse
import contextlib
import io
import logging
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hetc  # noqa: E402
from families import minilm  # noqa: E402
from models import examples  # noqa: E402

TOLERANCE = 1e-5  # relative L2 error allowed against the reference runtime in f32


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def line(name, seconds, shape, err, against):
    ok = err < TOLERANCE
    print(f"{name:34s} compiled in {seconds:5.2f}s  output {str(list(shape)):14s} "
          f"relative error vs {against} {err:.1e}  {'OK' if ok else 'MISMATCH'}")
    return ok


def compile_timed(*args, **kw):
    start = time.perf_counter()
    module = hetc.compile(*args, **kw)
    return module, time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="ref")
    ap.add_argument("--out", default=None, help="where to save the compiled BERT encoder")
    args = ap.parse_args()
    import transformers

    transformers.logging.disable_progress_bar()
    tmp = tempfile.mkdtemp(prefix="hetc-demo-")
    results = []

    print("PyTorch models (torch.export -> hetc IR):")
    for name, model, inputs in examples():
        module, s = compile_timed(model, target=args.target, example_inputs=inputs)
        with torch.no_grad():
            expected = model(*inputs)
        got = module(*inputs)
        results.append(line(name, s, got.shape, rel_err(got, expected), "PyTorch"))

    bert, bert_inputs = minilm()
    module, s = compile_timed(bert, target=args.target, example_inputs=bert_inputs)
    with torch.no_grad():
        expected = bert(*bert_inputs)
    got = module(*bert_inputs)
    results.append(line("all-MiniLM-L6-v2 (pretrained BERT)", s, got.shape,
                        rel_err(got, expected), "PyTorch"))

    print("\nONNX (torch.onnx.export -> .onnx -> hetc IR):")
    import onnxruntime as ort

    name, cnn, inputs = examples()[1]
    path = os.path.join(tmp, "cnn.onnx")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # the exporter's chatter
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(cnn, inputs, path, dynamo=True, verbose=False)
    x = inputs[0].numpy()
    onnx_module, s = compile_timed(path, target=args.target, example_inputs=[x])
    sess = ort.InferenceSession(path)
    (expected_ort,) = sess.run(None, {sess.get_inputs()[0].name: x})
    got = onnx_module(x)
    results.append(line("cnn.onnx", s, got.shape, rel_err(got, expected_ort), "ONNX Runtime"))

    out = args.out or os.path.join(tmp, "minilm")
    module.save(out)
    reloaded = hetc.load(out)
    err = rel_err(reloaded(*bert_inputs), expected)
    results.append(err < TOLERANCE)
    print(f"\nsaved the compiled BERT encoder to {out} and loaded it back: "
          f"relative error {err:.1e}\n")
    module.report.render()
    print("\nIR of the compiled BERT encoder (first lines):")
    print("\n".join(module.ir.splitlines()[:10]) + "\n  ...")
    failures = results.count(False)
    if failures:
        print(f"\n{failures} check(s) failed", file=sys.stderr)
        return 1
    print("\nall outputs match their reference runtimes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
