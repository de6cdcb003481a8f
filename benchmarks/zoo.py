"""Architectures a new user brings, on this CPU: transformers models built
from their configs (random weights: nothing is downloaded), batch 1, hetc
x86 against PyTorch eager in one process.

    .venv/bin/python benchmarks/zoo.py [--models vit gpt2 ...] [--repeat 10]
        [--markdown FILE]

Rows: hetc f32 (agreement: relative error of the output against PyTorch's),
int8 weights with int8 activations, and int4 weights alone (f32
activations), each as a ratio to PyTorch eager f32 (above 1: hetc faster).
Both get 2 threads; the runners take turns (timing.measure). Some configs
left out on purpose: at random initialization Hugging Face's EfficientNet,
MobileNetV1 and MobileViT shrink their activations into subnormal floats
within a few layers, so every runtime would be timing subnormal arithmetic.
Layer counts are cut (4 transformer layers) to keep the run to minutes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HETC_THREADS", "2")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from timing import measure  # noqa: E402


class _Call(torch.nn.Module):
    """The model called with its input as keyword `key`, giving output `out`
    (transformers models take pixel_values, input_ids or input_values)."""

    def __init__(self, model, key, out):
        super().__init__()
        self.model, self.key, self.out = model, key, out

    def forward(self, x):
        return getattr(self.model(**{self.key: x}), self.out)


def _image(size=224):
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))


def _tokens(n=128):
    return torch.randint(0, 1000, (1, n), generator=torch.Generator().manual_seed(0))


def zoo():
    """{name: (build the model, its input)}"""
    import transformers as T

    def image(cls, cfg):
        return lambda: _Call(cls(cfg), "pixel_values", "logits")

    def text(cls, cfg):
        return lambda: _Call(cls(cfg), "input_ids", "last_hidden_state")

    return {
        "vit": (image(T.ViTForImageClassification, T.ViTConfig(num_hidden_layers=4)), _image),
        "deit": (image(T.DeiTForImageClassification, T.DeiTConfig(num_hidden_layers=4)), _image),
        "beit": (image(T.BeitForImageClassification,
                       T.BeitConfig(num_hidden_layers=4, use_relative_position_bias=True)), _image),
        "dinov2": (image(T.Dinov2ForImageClassification, T.Dinov2Config(num_hidden_layers=4)),
                   _image),
        "convnext": (image(T.ConvNextForImageClassification, T.ConvNextConfig()), _image),
        "convnext-v2": (image(T.ConvNextV2ForImageClassification, T.ConvNextV2Config()), _image),
        "cvt": (image(T.CvtForImageClassification, T.CvtConfig()), _image),
        "swin": (image(T.SwinForImageClassification, T.SwinConfig()), _image),
        "levit": (image(T.LevitForImageClassification, T.LevitConfig()), _image),
        "segformer": (image(T.SegformerForImageClassification, T.SegformerConfig()), _image),
        "regnet": (image(T.RegNetForImageClassification, T.RegNetConfig()), _image),
        "resnet50": (image(T.ResNetForImageClassification, T.ResNetConfig(
            layer_type="bottleneck", depths=[3, 4, 6, 3],
            hidden_sizes=[256, 512, 1024, 2048])), _image),
        "bert": (text(T.BertModel, T.BertConfig(num_hidden_layers=4)), _tokens),
        "distilbert": (text(T.DistilBertModel, T.DistilBertConfig()), _tokens),
        "gpt2": (text(T.GPT2Model, T.GPT2Config(n_layer=4)), _tokens),
        "bloom": (text(T.BloomModel, T.BloomConfig(n_layer=4, hidden_size=512, n_head=8)),
                  _tokens),
        "t5-encoder": (text(T.T5EncoderModel, T.T5Config(num_layers=4)), _tokens),
        "llama": (text(T.LlamaModel, T.LlamaConfig(
            hidden_size=512, intermediate_size=1376, num_hidden_layers=4,
            num_attention_heads=8, num_key_value_heads=4)), lambda: _tokens(256)),
        "wav2vec2": (lambda: _Call(T.Wav2Vec2Model(T.Wav2Vec2Config(num_hidden_layers=2)),
                                   "input_values", "last_hidden_state"),
                     lambda: torch.randn(1, 16000, generator=torch.Generator().manual_seed(0))),
    }


VARIANTS = {"f32": {}, "int8 + int8 act": dict(precision="int8", activations="int8"),
            "int4 weights": dict(precision="int4")}


def run(name, build, make_input, repeat):
    import hetc

    torch.manual_seed(0)
    model = build().eval()
    x = make_input()
    with torch.no_grad():
        want = model(x).numpy()
    xn = x.numpy()
    runners, row = {}, {"model": name}
    with torch.no_grad():
        runners["torch"] = lambda: model(x)
    for label, options in VARIANTS.items():
        start = time.perf_counter()
        module = hetc.compile(model, target="x86", example_inputs=(x,), **options)
        row[f"{label} compile s"] = time.perf_counter() - start
        if label == "f32":
            got = np.asarray(module(xn))
            row["error"] = float(np.linalg.norm(got - want) / np.linalg.norm(want))
        runners[label] = (lambda m: lambda: m(xn))(module)
    with torch.no_grad():
        times = measure(runners, repeat)
    row["torch ms"] = times["torch"] * 1e3
    for label in VARIANTS:
        row[f"{label} ms"] = times[label] * 1e3
    return row


def table(rows):
    head = ["model", "PyTorch ms", "hetc f32 ms", "x PyTorch", "error vs PyTorch",
            "int8 + int8 act ms", "x PyTorch", "int4 weights ms", "x PyTorch"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        t = r["torch ms"]
        lines.append("| " + " | ".join([
            r["model"], f"{t:.2f}", f"{r['f32 ms']:.2f}", f"{t / r['f32 ms']:.2f}x",
            f"{r['error']:.1e}", f"{r['int8 + int8 act ms']:.2f}",
            f"{t / r['int8 + int8 act ms']:.2f}x", f"{r['int4 weights ms']:.2f}",
            f"{t / r['int4 weights ms']:.2f}x"]) + " |")
    return "\n".join(lines)


def main():
    models = zoo()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", choices=sorted(models), default=list(models))
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--markdown")
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    for name in args.models:
        build, make_input = models[name]
        rows.append(run(name, build, make_input, args.repeat))
        print(f"{name}: done", file=sys.stderr, flush=True)
    text = "### Architectures from transformers configs, batch 1\n\n" + table(rows) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
