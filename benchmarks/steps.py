"""Where a compiled x86 model's time goes: each step of its generated code
(one per op, `hetc_run_range`'s steps) timed inside whole runs, so that a
step pays what it pays in a real run (cold weights, inputs another thread
wrote), not what it pays repeated alone.

    .venv/bin/python benchmarks/steps.py [--model efficientnet|minilm]
        [--precision int8] [--activations int8] [--runs 50] [--top 25]

The model is compiled as `hetc.compile(target="x86")` compiles it; its
model.c is then built once more with a timestamp at the start of every step
(omp_get_wtime), so the whole run takes a little longer than the module's
own. Prints the whole run, each step's share (the slowest first) with the
kernels it calls, and the time per kernel.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))
sys.path.insert(0, HERE)
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HETC_THREADS", "2")

import numpy as np  # noqa: E402

STAMPS = ("static double hetc_step_seconds[{n}], hetc_step_last;\n"
          "double *hetc_steps(void) {{ return hetc_step_seconds; }}\n"
          "static void hetc_stamp(int i) {{\n"
          "    double now = omp_get_wtime();\n"
          "    if (i > 0) hetc_step_seconds[i - 1] += now - hetc_step_last;\n"
          "    hetc_step_last = now;\n}}\n\n")
CASE = re.compile(r"case (\d+):; if \(to <= \d+\) break;")


def model_and_inputs(name):
    if name == "efficientnet":
        from families import crop, efficientnet_lite0, photos
        return efficientnet_lite0(), (crop(photos()["astronaut"]),)
    from models import minilm_128
    model, inputs, _ = minilm_128()
    return model, inputs


def stamped(source, steps):
    """model.c with hetc_stamp(i) at the start of step i (and after the last)."""
    found = CASE.findall(source)
    if len(found) != steps:
        sys.exit(f"steps.py: found {len(found)} steps in model.c, the build has {steps}: "
                 f"the generated code's step markers changed, update CASE")
    source = source.replace("int hetc_run_range(", STAMPS.format(n=steps) + "int hetc_run_range(",
                            1)
    return CASE.sub(lambda m: m.group(0) + f" hetc_stamp({m.group(1)});", source)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["efficientnet", "minilm"], default="efficientnet")
    ap.add_argument("--precision")
    ap.add_argument("--activations")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()

    import hetc
    from hetc.backends.c.library import Library
    from hetc.backends.x86 import build_model

    model, inputs = model_and_inputs(args.model)
    options = {k: v for k, v in (("precision", args.precision),
                                 ("activations", args.activations)) if v}
    module = hetc.compile(model, "x86", inputs, **options)
    lowered = module.artifact.lowered
    sources = dict(module.sources)
    sources["model.c"] = stamped(sources["model.c"], lowered.run_steps)
    lib = Library(module.artifact.graph, lowered, build_model(sources))
    lib.lib.hetc_steps.restype = ctypes.POINTER(ctypes.c_double)
    arrays = [v.type.coerce(np.asarray(a), f"input {v.name}")
              for v, a in zip(module.graph.inputs, inputs)]
    outs = [np.empty(s, d) for s, d in lib.out_types]
    for _ in range(10):
        lib(arrays, outs)
    seconds = lib.lib.hetc_steps()
    for i in range(lowered.run_steps):
        seconds[i] = 0.0
    start = time.perf_counter()
    for _ in range(args.runs):
        lib(arrays, outs)
    whole = (time.perf_counter() - start) / args.runs
    per = np.array([seconds[i] for i in range(lowered.run_steps)]) / args.runs

    kernels = {}  # step -> (its kernels joined by +, its first kernel call)
    step = None
    for line in sources["model.c"].splitlines():
        m = CASE.search(line)
        if m:
            step = int(m.group(1))
            continue
        call = re.search(r"\b(k_\w+)\(", line)
        if step is not None and call:
            names, first = kernels.get(step, ("", line.strip()))
            kernels[step] = (f"{names}+{call.group(1)}" if names else call.group(1), first)
    print(f"{args.model} {options or 'f32'}: a whole run {whole * 1e3:.2f} ms, "
          f"the steps {per.sum() * 1e3:.2f} ms ({args.runs} runs, "
          f"{os.environ['HETC_THREADS']} threads)")
    print(f"{'step':>4} {'ms':>7} {'share':>6}  kernels: first call")
    for i in np.argsort(-per)[:args.top]:
        names, first = kernels.get(i, ("(copies)", ""))
        print(f"{i:4d} {per[i] * 1e3:7.3f} {per[i] / per.sum():6.1%}  {names}: {first[:90]}")
    totals = {}
    for i, t in enumerate(per):
        name = kernels.get(i, ("(copies)", ""))[0]
        totals[name] = totals.get(name, 0.0) + t
    print("per kernel (a step of several under all of them, joined by +):")
    for name, t in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {name:24s} {t * 1e3:7.3f} ms {t / per.sum():6.1%}")


if __name__ == "__main__":
    main()
