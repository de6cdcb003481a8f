"""The main job: compile the example models with hetc, run them, check them
against PyTorch, save and reload the compiled module, and print the report.

    make demo        (or: .venv/bin/python examples/demo.py [--target ref] [--out DIR])
"""

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hetc  # noqa: E402
from models import examples  # noqa: E402

TOLERANCE = 1e-5  # relative L2 error allowed against PyTorch in f32


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="ref")
    ap.add_argument("--out", default=None, help="where to save the compiled transformer block")
    args = ap.parse_args()

    failures = 0
    for name, model, inputs in examples():
        start = time.perf_counter()
        module = hetc.compile(model, target=args.target, example_inputs=inputs)
        compile_s = time.perf_counter() - start
        with torch.no_grad():
            expected = model(*inputs)
        got = module(*inputs)
        err = rel_err(got, expected)
        ok = err < TOLERANCE
        failures += not ok
        print(f"{name:18s} compiled in {compile_s:5.2f}s  output {list(got.shape)}  "
              f"relative error vs PyTorch {err:.2e}  {'OK' if ok else 'MISMATCH'}")
        last = (name, model, inputs, module, expected)

    name, model, inputs, module, expected = last
    out = args.out or os.path.join(tempfile.mkdtemp(prefix="hetc-demo-"), name)
    module.save(out)
    reloaded = hetc.load(out)
    err = rel_err(reloaded(*inputs), expected)
    failures += not err < TOLERANCE
    print(f"\nsaved {name} to {out} and loaded it back: relative error {err:.2e}\n")
    module.report.render()
    print("\nIR of the compiled transformer block (first lines):")
    print("\n".join(module.ir.splitlines()[:12]) + "\n  ...")
    if failures:
        print(f"\n{failures} check(s) failed", file=sys.stderr)
        return 1
    print("\nall outputs match PyTorch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
