"""The main job: compile real models with hetc, run them, check them against
PyTorch and ONNX Runtime (and models on targets npu, cuda and fpga against the
interpreter), generate text with the pretrained SmolLM2-135M through a
static-KV-cache step and check the tokens against PyTorch's, save and reload
a compiled module, print the report.

    make demo        (or: .venv/bin/python examples/demo.py [--target x86] [--out DIR])

The default target is x86 (generated C, built with the system compiler); a
model whose ops that backend does not lower yet runs on target ref instead,
and the demo says so.
"""

import argparse
import copy
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


def line(name, seconds, shape, err, against, tolerance=TOLERANCE):
    ok = err < tolerance
    print(f"{name:34s} compiled in {seconds:5.2f}s  output {str(list(shape)):14s} "
          f"relative error vs {against} {err:.1e}  {'OK' if ok else 'MISMATCH'}")
    return ok


def compile_timed(*args, target, **kw):
    """Compile for `target`, or for ref when that backend cannot lower the model yet."""
    start = time.perf_counter()
    try:
        module = hetc.compile(*args, target=target, **kw)
    except hetc.core.errors.TargetError as e:
        if target == "ref":
            raise
        print(f"  (target {target}: {str(e).split(' (the ')[0]}; running on target ref)")
        module = hetc.compile(*args, target="ref", **kw)
    return module, time.perf_counter() - start


def generate_smollm2(target, new_tokens=24):
    """SmolLM2-135M (pretrained) greedy tokens from hetc against PyTorch's."""
    from families import smollm2

    model, tok = smollm2()
    ids = tok("The three primary colors are", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        want = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                              max_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0)
    # chunk 1: the prompt goes in token by token, each call one real token
    lm, s = compile_timed(model, target=target, decoder={"max_context": 64, "chunk": 1})
    lm.generate(ids[:, :1], max_new_tokens=1)  # builds and loads the native code
    start = time.perf_counter()
    got = lm.generate(ids, max_new_tokens=new_tokens, eos_token_id=-1)
    ms = 1e3 * (time.perf_counter() - start) / (new_tokens + ids.shape[1] - 1)
    same = torch.equal(got, want)
    print(f"SmolLM2-135M f32 [{lm.target}] compiled in {s:5.2f}s, {ms:.1f} ms per call "
          f"(one token each): {tok.decode(got[0])!r}\n"
          f"  greedy tokens {'equal' if same else 'DIFFER FROM'} PyTorch's")
    return same


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="x86")
    ap.add_argument("--out", default=None, help="where to save the compiled BERT encoder")
    args = ap.parse_args()
    import transformers

    transformers.logging.disable_progress_bar()
    tmp = tempfile.mkdtemp(prefix="hetc-demo-")
    results = []

    print(f"PyTorch models (torch.export -> hetc IR -> target {args.target}):")
    for name, model, inputs in examples():
        module, s = compile_timed(model, target=args.target, example_inputs=inputs)
        with torch.no_grad():
            expected = model(*inputs)
        got = module(*inputs)
        results.append(line(f"{name} [{module.target}]", s, got.shape, rel_err(got, expected),
                            "PyTorch"))

    name, mlp, inputs = examples()[0]
    small, s = compile_timed(mlp, target=args.target, example_inputs=inputs, precision="int4",
                             activations="int8")
    ref = hetc.compile(mlp, target="ref", example_inputs=inputs, precision="int4",
                       activations="int8")
    results.append(line(f"{name} int4 + int8 act [{small.target}]", s, inputs[0].shape[:1] + (10,),
                        rel_err(small(*inputs), ref(*inputs)), "hetc interpreter"))

    bert, bert_inputs = minilm()
    module, s = compile_timed(bert, target=args.target, example_inputs=bert_inputs)
    with torch.no_grad():
        expected = bert(*bert_inputs)
    got = module(*bert_inputs)
    results.append(line(f"all-MiniLM-L6-v2 [{module.target}]", s, got.shape,
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
    results.append(line(f"cnn.onnx [{onnx_module.target}]", s, got.shape,
                        rel_err(got, expected_ort), "ONNX Runtime"))

    print("\nTarget npu (an OpenVINO model; on OpenVINO's CPU plugin here, no NPU):")
    from hetc.ir.interpret import interpret

    npu, s = compile_timed(cnn, target="npu", example_inputs=inputs, precision="int8")
    results.append(line("cnn int8 [npu]", s, npu(x).shape,
                        rel_err(npu(x), interpret(npu.graph, [x])[0]), "hetc interpreter"))

    print("\nTarget cuda (generated CUDA, compiled by NVRTC for sm_80..sm_90a; no GPU here, "
          "so the same source runs through hetc's CPU simulation):")
    gpu, s = compile_timed(cnn, target="cuda", example_inputs=inputs, emulate=True)
    results.append(line("cnn [cuda, emulated]", s, gpu(x).shape,
                        rel_err(gpu(x), interpret(gpu.graph, [x])[0]), "hetc interpreter"))
    half = copy.deepcopy(mlp).half()
    xh = examples()[0][2][0].half()
    tc, s = compile_timed(half, target="cuda", example_inputs=(xh,), emulate=True,
                          sparsity="2:4", precision="int4")
    want = interpret(tc.graph, [xh.numpy()])[0].astype(np.float32)
    results.append(line("mlp f16 2:4 int4 [cuda, emulated]", s, want.shape,
                        rel_err(tc(xh).float(), want), "hetc interpreter",
                        tolerance=2.0 ** -10))  # f16: sums in another order round apart

    print("\nTarget fpga (a Vitis-HLS project; no Vitis here, so it runs as C simulation):")
    xm = examples()[0][2][0].numpy()
    torch.manual_seed(0)
    chain = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.ReLU(), torch.nn.Linear(48, 10))
    fpga, s = compile_timed(chain, target="fpga", example_inputs=(xm,), sparsity="1:3")
    results.append(line("mlp int8 1:3 [fpga, C simulation]", s, fpga(xm).shape,
                        rel_err(fpga(xm), interpret(fpga.graph, [xm])[0]), "hetc interpreter"))
    fpga, s = compile_timed(cnn, target="fpga", example_inputs=inputs, sparsity="2:4")
    results.append(line("cnn int8 2:4 [fpga, C simulation]", s, fpga(x).shape,
                        rel_err(fpga(x), interpret(fpga.graph, [x])[0]),
                        "hetc interpreter"))

    print(f"\nLLM generation (decoder=: one step with a static KV cache, target {args.target}):")
    results.append(generate_smollm2(args.target))

    out = args.out or os.path.join(tmp, "minilm")
    module.save(out)
    reloaded = hetc.load(out)
    err = rel_err(reloaded(*bert_inputs), expected)
    results.append(err < TOLERANCE)
    print(f"\nsaved the compiled BERT encoder to {out} and loaded it back: "
          f"relative error {err:.1e}\n")
    module.report.render()
    print(f"\nthe int4 MLP with int8 activations on target {small.target}:")
    small.report.render()
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
