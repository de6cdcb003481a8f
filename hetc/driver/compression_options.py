"""The compression options of hetc.compile: sparsity, precision, calibration
and the accuracy budget, turned into compression passes and an accuracy check.

    sparsity="2:4" | "none" | "auto" | "auto:2:4|1:4" | {"layer regex": "2:4", ...}
    precision="int8" | "int4" | ... | "auto" | "auto:int8|mx4|mx3" | {"layer regex": "int4", ...}

A dict lists per-layer choices, first match winning; they become one
`sparsify`/`quantize` pass each, so the IR dumps show exactly what ran and
`hetc opt -p` can replay it. "auto" becomes one `autocompress` pass, the
per-layer search under the accuracy budget.
"""

from __future__ import annotations

from hetc.backends.ref import BACKEND as ref
from hetc.core.errors import TargetError, UsageError
from hetc.core.targets import get_target
from hetc.passes.accuracy import output_error
from hetc.passes.layers import multiply_adds
from hetc.passes.pipeline import PassContext, PassManager
from hetc.runtime.convert import to_numpy
from hetc.runtime.evaluator import interpreted
from hetc.runtime.module import Module

DEFAULT_BUDGET = 0.01  # largest relative L2 output error allowed against the uncompressed model


def _quote(text):
    return '"' + text.replace('"', '\\"') + '"'


def _choices(option, what):
    if option is None or option == "none":
        return []
    if isinstance(option, str):
        return [("", option)]
    if isinstance(option, dict):
        if "auto" in option.values():
            raise UsageError(f"{what}: 'auto' applies to the whole model, not to a layer regex")
        return [(str(k), str(v)) for k, v in option.items()]
    raise UsageError(f"{what} must be a string or a dict of layer regex -> choice, "
                     f"got {type(option).__name__}")


def _passes(name, key, choices, extra=()):
    """One pass per choice; each excludes what the choices before it matched,
    so the first matching choice wins and "none" reserves its layers."""
    out, taken = [], []
    for layers, choice in choices:
        if choice != "none":
            opts = [f"{key}={choice}", *extra]
            if layers:
                opts.append(f"layers={_quote(layers)}")
            if taken:
                opts.append(f"exclude={_quote('|'.join(f'(?:{t})' for t in taken))}")
            out.append(name + "{" + ",".join(opts) + "}")
        if not layers:
            break  # a catch-all choice: later ones can never match
        taken.append(layers)
    return out


ROUNDING = {"nearest": "rtn", "gptq": "gptq"}


def is_auto(option) -> bool:
    return isinstance(option, str) and (option == "auto" or option.startswith("auto:"))


def _candidates(option):
    """An option as the search's candidate list: "auto" (the target's),
    "a|b" (these), "" (none)."""
    if option is None or option == "none":
        return ""
    if is_auto(option):
        return option[5:] or "auto"
    return option


ACTIVATIONS = {None: "", "none": "", "int8": "quantize-activations"}


def passes_for(sparsity=None, precision=None, criterion=None, rounding="nearest",
               budget=DEFAULT_BUDGET, bits_budget=None, activations=None) -> str:
    """The compression part of a pipeline ("" if none): the weight passes,
    then `quantize-activations` for activations="int8"."""
    if activations not in ACTIVATIONS:
        raise UsageError(f"activations {activations!r} is not one of none, int8")
    weights = _weight_passes(sparsity, precision, criterion, rounding, budget, bits_budget)
    if ACTIVATIONS[activations] and not weights:
        raise UsageError("activations='int8' applies to integer weights: give precision= too")
    return ",".join(p for p in (weights, ACTIVATIONS[activations]) if p)


def _weight_passes(sparsity, precision, criterion, rounding, budget, bits_budget) -> str:
    """The weight-compression passes for these options ("" if none).

    "auto" for either option runs the per-layer search (passes/autocompress.py):
    its candidates are the target's patterns and int8/int4 ("auto:a|b":
    these), or the one explicit choice given for the other option; the
    criterion and rounding apply to the chosen configuration.
    """
    if rounding not in ROUNDING:
        raise UsageError(f"rounding {rounding!r} is not one of {', '.join(ROUNDING)}")
    if is_auto(sparsity) or is_auto(precision):
        for option, what in ((sparsity, "sparsity"), (precision, "precision")):
            if isinstance(option, dict):
                raise UsageError(f"with 'auto', {what} must be 'auto', one choice or none")
        opts = [f"patterns={_candidates(sparsity)}", f"formats={_candidates(precision)}",
                f"budget={budget}"]
        if bits_budget is not None:
            opts.append(f"bits={float(bits_budget)}")
        if criterion is not None:
            opts.append(f"criterion={criterion}")
        if rounding != "nearest":
            opts.append(f"method={ROUNDING[rounding]}")
        return "autocompress{" + ",".join(opts) + "}"
    if bits_budget is not None:
        raise UsageError("bits_budget applies to the per-layer search: give sparsity='auto' "
                         "or precision='auto'")
    method = [] if rounding == "nearest" else [f"method={ROUNDING[rounding]}"]
    return ",".join(_passes("sparsify", "pattern", _choices(sparsity, "sparsity"),
                            [f"criterion={criterion or 'magnitude'}"]) +
                    _passes("quantize", "format", _choices(precision, "precision"), method))


def samples(calibration, example_inputs, graph):
    """Calibration samples as lists of numpy arrays in graph input order.

    `calibration` is a list of samples (each a tuple of inputs in order, a
    dict by input name, or one input); without it the example inputs are the
    only sample.
    """
    raw = calibration if calibration is not None else (
        [example_inputs] if example_inputs is not None else [])
    out = []
    names = [v.name for v in graph.inputs]
    for i, sample in enumerate(raw):
        if isinstance(sample, dict):
            missing = [n for n in names if n not in sample]
            if missing:
                raise UsageError(f"calibration sample {i} has no input(s) {', '.join(missing)}")
            sample = [sample[n] for n in names]
        items = list(sample) if isinstance(sample, (list, tuple)) else [sample]
        if len(items) != len(graph.inputs):
            raise UsageError(f"calibration sample {i} has {len(items)} inputs, the model takes "
                             f"{len(graph.inputs)}")
        try:
            out.append([v.type.coerce(to_numpy(x), f"calibration sample {i} input '{v.name}'")
                        for v, x in zip(graph.inputs, items)])
        except ValueError as e:
            raise UsageError(str(e)) from None
    return out


def split(samples_):
    """(samples for statistics, held-out samples for the accuracy check)."""
    if len(samples_) < 2:
        return samples_, samples_
    held = max(1, len(samples_) // 4)
    return samples_[:-held], samples_[-held:]


def measure(reference, held_out, metric=None):
    """graph -> the error the accuracy budget bounds, and a description.

    Without a metric: the relative L2 output error against `reference` on
    the held-out samples. With `metric` (a callable scoring a runnable
    model; lower is better): metric(compressed) / metric(reference) - 1,
    the reference's score computed once.
    """
    if metric is None:
        return (lambda graph: output_error(reference, graph, held_out)), "output error"

    def score(graph):
        value = metric(Module(ref.lower(graph, get_target("ref"), None), None, ref.load))
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UsageError(f"accuracy_metric must return a number, got "
                             f"{type(value).__name__}") from None

    base = score(reference)
    if not base > 0:
        raise UsageError(f"accuracy_metric scored the uncompressed model {base!r}: a relative "
                         f"increase needs a positive score (lower is better, e.g. perplexity)")
    return (lambda graph: score(graph) / base - 1.0), f"metric increase (uncompressed {base:.6g})"


def _for_speed(graph):
    """The rewrites of x86's pipeline that keep every weight as it is stored:
    RMSNorm raised, elementwise chains and epilogues fused."""
    return PassManager.from_text("raise-patterns{linear=false},fuse").run(graph, PassContext())


#: multiply-adds (per run times runs) from which calibration runs on an x86
#: build rather than in the interpreter: about 10 s of numpy, more than a
#: build of the generated C takes
BUILD_FROM = 5e10


class Evaluators:
    """The evaluators compression passes run calibration samples on
    (PassContext.evaluator): an x86 build of the graph when this host can
    build one, x86 lowers the graph and the work is large enough to pay for
    the build; else the interpreter. Either way the interpreter measures the
    compiled model's accuracy for the report. `used` says which ran."""

    def __init__(self):
        self.used = []

    def __call__(self, graph, probes=(), runs=1):
        made = self._make(graph, probes, runs)
        if made.what not in self.used:
            self.used.append(made.what)
        return made

    @staticmethod
    def _make(graph, probes, runs):
        if multiply_adds(graph) * runs < BUILD_FROM:
            return interpreted(graph, probes)
        need, free = 4 * sum(a.size for a in graph.weights.values()), _available_memory()
        if free is not None and need > free // 2:
            return _interpreter(graph, probes, f"an x86 build would hold {need / 2**30:.1f} GiB "
                                f"of f32 weights; {free / 2**30:.1f} GiB of memory are free")
        try:
            from hetc.backends.x86.evaluator import X86Evaluator

            return X86Evaluator(graph, probes, _for_speed)
        except TargetError as e:
            return _interpreter(graph, probes, f"no x86 build: {e}")


def _interpreter(graph, probes, why):
    made = interpreted(graph, probes)
    made.what += f" ({why})"
    return made


def _available_memory():
    """Bytes of memory available for new allocations (Linux's MemAvailable,
    page cache included), else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
