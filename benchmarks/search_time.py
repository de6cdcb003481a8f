"""How long the per-layer search takes on SmolLM2-135M: `hetc.compile`
with `precision="auto:int8|mx4|mx3"` and a bits budget of 4.05 (the
configuration docs/compression.md evaluates), 8 calibration windows of 512
tokens from gensim's Lee corpus (2 held out), target x86; once with
round-to-nearest rounding and once with GPTQ on the chosen formats.

    .venv/bin/python benchmarks/search_time.py [--gptq | --no-gptq] [--interpreter]

The calibration runs on an x86 build of the model (the report's notes say
so); `--interpreter` times the same compile with the calibration in the
numpy interpreter too, as every search ran before (about 15 minutes).
Times are whole compile() calls: import, search, compression, the accuracy
check in the interpreter, lowering and the C build (build cache empty but for
x86's kernel library, built once per machine: its time is printed apart).
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))
sys.path.insert(0, HERE)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gptq", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the search with GPTQ rounding (default: yes)")
    ap.add_argument("--interpreter", action="store_true",
                    help="also time it with the calibration in the interpreter")
    args = ap.parse_args()

    import hetc
    from compression_accuracy import corpus
    from families import Logits, smollm2
    from hetc.driver import compression_options
    from timing import empty_build_cache

    model, tok = smollm2()
    ids = tok(corpus(), return_tensors="pt").input_ids[0]
    calib = [(ids[-(k + 1) * 512:len(ids) - k * 512].unsqueeze(0),) for k in range(8)]
    wrapped = Logits(model)
    search = {"precision": "auto:int8|mx4|mx3", "bits_budget": 4.05}
    runs = [("x86 build", "round to nearest", {})]
    if args.gptq:
        runs.append(("x86 build", "GPTQ", {"rounding": "gptq"}))
    if args.interpreter:
        runs.append(("interpreter", "round to nearest", {}))
    print("SmolLM2-135M, per-layer search among int8, mx4 and mx3 at 4.05 bits per weight, "
          "8 x 512 tokens of calibration, target x86")
    print(f"{'calibration on':16s} {'rounding':18s} {'seconds':>8s} {'bits/w':>7s} "
          f"{'output error':>13s}")
    for where, rounding, extra in runs:
        if where == "interpreter":
            compression_options.BUILD_FROM = float("inf")
        with empty_build_cache() as library:
            start = time.perf_counter()
            module = hetc.compile(wrapped, "x86", (calib[0][0],), calibration=calib,
                                  **search, **extra)
            seconds = time.perf_counter() - start
        c = module.report.compression
        ran = [n for n in module.report.notes if n.startswith("calibration samples ran on")]
        assert ran and where.split()[0] in ran[0], ran  # the evaluator this row names ran
        print(f"{where:16s} {rounding:18s} {seconds:8.1f} {c['bits_per_weight']:7.2f} "
              f"{c['error']:13.4f}", flush=True)
    print(f"(x86 kernel library, built once per machine before each row: {library:.1f} s)")


if __name__ == "__main__":
    main()
