"""How long importing and compiling GPT-2 small (124M parameters) takes:
torch.export, then hetc's import (translation, verification) and its
default pipeline; then a whole `hetc.compile(target="x86",
precision="int4")` (import, quantization, lowering and the C build, which
compile() runs) and the first call, with an empty build cache but for x86's
kernel library, built once per machine (its time is printed apart).

    .venv/bin/python benchmarks/import_time.py [--layers 12]

Random weights (the time does not depend on their values); sequence of 32 tokens.
"""

import argparse
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))
sys.path.insert(0, HERE)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--tokens", type=int, default=32)
    args = ap.parse_args()

    from transformers import GPT2Config, GPT2LMHeadModel

    import hetc
    from families import Logits
    from hetc.frontends.torch_fx import import_exported
    from hetc.passes.pipeline import PassManager
    from timing import empty_build_cache

    torch.manual_seed(0)
    model = Logits(GPT2LMHeadModel(GPT2Config(n_layer=args.layers)).eval())
    params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, 50257, (1, args.tokens))
    t0 = time.perf_counter()
    with torch.no_grad():
        ep = torch.export.export(model, (ids,))
    t1 = time.perf_counter()
    graph = import_exported(ep, "gpt2")
    t2 = time.perf_counter()
    PassManager.from_text(hetc.get_target("ref").default_pipeline).run(graph)
    t3 = time.perf_counter()
    print(f"GPT-2 ({args.layers} layers, {params / 1e6:.0f}M parameters), {args.tokens} tokens")
    print(f"  torch.export:          {t1 - t0:6.2f} s")
    print(f"  hetc import + verify:  {t2 - t1:6.2f} s  ({len(graph.ops)} ops)")
    print(f"  default pipeline:      {t3 - t2:6.2f} s")
    print(f"  total:                 {t3 - t0:6.2f} s")
    with empty_build_cache() as library:
        t4 = time.perf_counter()
        module = hetc.compile(model, "x86", (ids,), precision="int4")
        t5 = time.perf_counter()
        module(ids)
        t6 = time.perf_counter()
    print(f"  x86 int4 compile():    {t5 - t4:6.2f} s  (C build included)")
    print(f"  first call:            {t6 - t5:6.2f} s")
    print(f"  compile + first call:  {t6 - t4:6.2f} s")
    print(f"  (x86 kernel library, built once per machine before: {library:.2f} s)")


if __name__ == "__main__":
    main()
