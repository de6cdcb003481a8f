"""Per-layer choice of N:M pattern and precision under an accuracy or a
bits-per-weight budget.

For every compressible layer and every candidate (pattern, format) the pass
measures the layer's sensitivity on calibration activations (the relative
error of its output, X W^T, when only its weight is compressed), scaled by
how much the rest of the model amplifies that layer's errors (measured once
per layer, end to end, with its most aggressive candidate: a small local
error in an early feed-forward layer can dominate the output), and predicts
its time with the target's cost model (a roofline, or a spatial
accelerator's own cycles: target fpga). A trade-off weight lam then
picks, per layer, the candidate minimizing cost + lam * sensitivity^2 (both
normalized). Under an accuracy budget the cost is predicted time and the
pass searches lam for the most compression whose end-to-end error on
held-out calibration samples (measured with the interpreter) stays within
the budget; under a bits budget the cost is stored bytes and lam is the
least compression (lowest predicted error) that fits the bits. The chosen
configuration is then applied with the requested criterion and rounding.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from hetc.core.errors import UsageError
from hetc.ir.interpret import load_const
from hetc.ir.types import NM, Quant, TensorType
from hetc.passes.pipeline import Pass, register_pass

from . import formats, prune, reconstruct
from .accuracy import relative_error
from .compress import _remember, changes_result_type, prune_layer, quantize_layer
from .layers import activations, channel_squares, find_layers, probing

MAX_ROWS = 2048  # activation rows per layer used for sensitivities
KEEP_PROBES = 1 << 30  # bytes of candidate weights kept from _candidates for _amplify
KEEP_CODES = 1 << 30  # bytes of candidates' quantized codes kept for apply (a refit took 7 s
#                       of SmolLM2-135M's search)


def _statistics(layers, samples, evaluator):
    """One walk over the calibration samples: per layer, input-channel norms
    (for wanda) and up to MAX_ROWS activation rows [rows, in] (linear/matmul)."""
    sums, rows = {}, {}
    for ly, array in activations(None, layers, samples, evaluator):
        sums[ly.name] = sums.get(ly.name, 0) + channel_squares(ly, array)
        have = sum(len(r) for r in rows.get(ly.name, []))
        if ly.op.kind != "conv2d" and have < MAX_ROWS:
            rows.setdefault(ly.name, []).append(np.array(
                np.asarray(array, np.float32).reshape(-1, array.shape[-1])[:MAX_ROWS - have]))
    return ({name: np.sqrt(s) for name, s in sums.items()},
            {name: np.concatenate(r) for name, r in rows.items()})


def _compressed(w, ly, nm, fmt, norms):
    """The weight's logical values under a candidate (pattern, format)."""
    if nm is not None:
        keep = prune.nm_mask(prune.scores(w, "wanda" if norms is not None else "magnitude",
                                          ly.axis, norms), *nm, ly.axis)
        w = w * keep
    if fmt is not None:
        w = formats.quantize(w, fmt, ly.axis).values()
    return w


def _energy(w, h, ly):
    """||X w^T||^2 (linear; X w for matmul) through X's Gram matrix h = X^T X."""
    rows = w if ly.op.kind == "linear" else w.T
    return max(float(np.sum((rows @ h) * rows, dtype=np.float64)), 0.0)


def _sensitivity(w, wc, ly, h, scale):
    """Relative error of the layer's output on the calibration rows whose
    Gram matrix is h (weight-space for convolutions, h None); `scale` is
    the norm of its exact output."""
    if h is None:
        return float(np.linalg.norm(wc - w) / max(np.linalg.norm(w), 1e-30))
    return _energy(wc - w, h, ly) ** 0.5 / scale


def _weight_type(ly, nm, fmt):
    """The weight's IR type when stored as the candidate says."""
    t = ly.weight.type
    enc = []
    if nm is not None:
        enc.append(NM(*nm, -1 if ly.axis % t.rank == t.rank - 1 else ly.axis))
    if fmt is not None and fmt.scale is not None:
        length = t.shape[ly.axis]
        enc.append(Quant(formats.group_size(fmt, length), fmt.scale, fmt.symmetric, ly.axis,
                         fmt.codebook))
    return TensorType(t.shape, fmt.dtype if fmt is not None else t.value_dtype, enc)


def _seconds(target, ly, nm, fmt):
    """Predicted time of the layer with its weight stored as the candidate
    says: the target's own layer model when it has one (a spatial
    accelerator's cycles), else its roofline."""
    t = _weight_type(ly, nm, fmt)
    if hasattr(target.cost, "layer_seconds") and ly.op.kind in ("linear", "conv2d"):
        return target.cost.layer_seconds(t, ly.axis, ly.activation.type, ly.op.output.type)
    rows = max(1, ly.activation.type.numel // max(ly.activation.type.shape[-1], 1))
    act_bytes = 4 * rows * (t.shape[ly.axis] + t.numel // t.shape[ly.axis])
    ops = 2.0 * rows * t.numel
    if nm is not None:
        ops /= target.cost.sparse_speedup.get(f"{nm[0]}:{nm[1]}", 1.0)
    peak = t.dtype.name if t.dtype.name in target.cost.peak_gops else "f32"
    return target.cost.seconds(t.packed_bytes() + act_bytes, ops, peak)


@dataclass(frozen=True)
class Option:
    choice: tuple  # (N:M pattern or None, format or None)
    sensitivity: float
    seconds: float
    bytes: int


@register_pass
@dataclass(frozen=True)
class AutoCompress(Pass):
    """Search per-layer N:M patterns and formats under the accuracy or bits budget."""

    name = "autocompress"
    patterns: str = "auto"  # "|"-separated N:M patterns, "auto" (the target's) or "" (dense)
    formats: str = "auto"  # "|"-separated formats, "auto" (int8|int4) or "" (keep)
    budget: float = 0.01  # the accuracy budget (see passes/accuracy.py)
    bits: float = 0.0  # a bits-per-weight budget over the compressible layers (0: none)
    criterion: str = "wanda"  # how the chosen patterns are pruned (wanda, magnitude, sparsegpt)
    method: str = "rtn"  # how the chosen formats are rounded (rtn, gptq)

    def run(self, graph, ctx):
        target = ctx.target
        if target is None or not ctx.calibration:
            raise UsageError("autocompress needs a target and calibration inputs")
        if self.criterion not in prune.CRITERIA or self.method not in ("rtn", "gptq"):
            raise UsageError(f"autocompress: criterion must be one of {', '.join(prune.CRITERIA)} "
                             f"and method rtn or gptq")
        held = ctx.held_out or ctx.calibration
        try:
            patterns = [prune.parse_pattern(p) for p in self._list(
                self.patterns, [f"{n}:{m}" for n, m in target.nm_patterns if (n, m) in
                                ((2, 4), (1, 4))])]
            fmts = [formats.get_format(f) for f in self._list(self.formats, ["int8", "int4"])]
        except (ValueError, KeyError) as e:
            raise UsageError(f"autocompress: {e.args[0]}") from None
        patterns = [p for p in patterns if target.supports_nm(*p)]
        fmts = [f for f in fmts if f.dtype.name in target.weight_dtypes]
        layers = find_layers(graph)
        progress = ctx.progress or (lambda done, total, what: None)
        runs = len(ctx.calibration) + len(layers) + 1 + (0 if self.bits > 0 else 11 * len(held))
        evaluator = probing(ctx, graph, layers, runs)
        try:
            norms, acts = _statistics(layers, ctx.calibration, evaluator)
            table, codes = _candidates(graph, target, layers, patterns, fmts, norms, acts,
                                       ctx.calibration[0], progress, evaluator)
            if self.bits > 0:
                choice, why = _fit_bits(table, self.bits)
            else:
                error = _trial_error(graph, table, norms, ctx, evaluator, held)
                choice, err = _bisect(table, error, self.budget, progress)
                why = (f"the most compression whose end-to-end error ({err:.3g}, measured "
                       f"with round-to-nearest candidates) fits the budget {self.budget:g}")
            hessians = {}
            if self.criterion == "sparsegpt" or self.method == "gptq":
                second = [ly for ly in layers if ly.op.kind != "conv2d" and
                          choice[ly.name].choice != (None, None)]
                hessians = reconstruct.hessians(graph, second, ctx.calibration, evaluator)
        finally:
            evaluator.close()
        for ly in layers:
            opt = choice[ly.name]
            nm, fmt = opt.choice
            entry = _remember(ctx, ly)
            entry["sensitivity"] = opt.sensitivity
            entry["speedup"] = table[ly.name][2] / opt.seconds
            label = " + ".join(x for x in (f"{nm[0]}:{nm[1]}" if nm else "",
                                            fmt.name if fmt else "") if x) or "kept as is"
            entry["why"].append(f"auto: {label}")
        dense = sum(d for _, _, d in table.values())
        ctx.notes.append(f"autocompress: {why}; predicted "
                         f"{dense / sum(c.seconds for c in choice.values()):.2f}x "
                         f"on {target.name} ({target.cost.reference_part})")
        apply(graph, layers, choice, norms, self.criterion, self.method, hessians, codes)

    @staticmethod
    def _list(text, auto):
        if text == "auto":
            return auto
        return [t for t in text.split("|") if t]


def _amplify(table, norms, sample, progress, evaluator, probes):
    """Scale each layer's local sensitivities by the end-to-end error its most
    aggressive candidate causes, per unit of its local error (`probes`: those
    candidates' values where _candidates kept them)."""
    refs = evaluator.remember(sample)
    for i, (name, (ly, options, dense_t)) in enumerate(list(table.items())):
        progress(i + 1, len(table), "autocompress: measuring layer sensitivities")
        probe = max(options, key=lambda o: o.sensitivity)
        if probe.sensitivity <= 0:
            continue
        values = probes.pop(name, None)
        if values is None:
            values = _compressed(_logical(ly, evaluator.graph), ly, *probe.choice,
                                 norms.get(name))
        with evaluator.replaced({ly.weight_name: values}):
            e2e = relative_error(evaluator.again([ly.weight_name]), refs)
        scale = e2e / probe.sensitivity
        table[name] = (ly, [replace(o, sensitivity=o.sensitivity * scale) for o in options],
                       dense_t)


def _logical(ly, graph):
    return np.asarray(load_const(ly.weight.producer, graph), np.float32)


def _candidates(graph, target, layers, patterns, fmts, norms, acts, sample, progress,
                evaluator):
    """(layer -> (layer, [Option], dense seconds), codes); the layers are
    weighed on as many threads as there are cores (numpy works outside the
    GIL). `codes`: (layer, format name) -> the Quantized weight of an
    unpruned candidate, up to KEEP_CODES bytes, for apply to store as
    weighed (find_layers lists a shared weight once, so applying one layer
    never changes another's)."""

    def gram(x):  # once per activation: q, k and v read the same one
        return np.asarray(x.T @ x, np.float32)

    def weigh(ly):
        w, h = _logical(ly, graph), grams.get(ly.activation)
        scale = None if h is None else max(_energy(w, h, ly) ** 0.5, 1e-30)
        dense_t = _seconds(target, ly, None, None)
        options = [Option((None, None), 0.0, dense_t, ly.weight.type.packed_bytes())]
        length = ly.weight.type.shape[ly.axis]
        usable = [f for f in fmts if f.scale is None or not changes_result_type(graph, ly)]
        worst = None  # the most sensitive candidate's values: _amplify's probe
        found = {}  # format name -> its Quantized weight (unpruned)
        for nm in [None] + [p for p in patterns if length % p[1] == 0]:
            for fmt in [None] + usable:
                if nm is None and fmt is None:
                    continue
                if nm is None and fmt is not None:
                    q = formats.quantize(w, fmt, ly.axis)
                    found[fmt.name] = q
                    wc = q.values()
                else:
                    wc = _compressed(w, ly, nm, fmt, norms.get(ly.name))
                options.append(Option((nm, fmt), _sensitivity(w, wc, ly, h, scale),
                                      _seconds(target, ly, nm, fmt),
                                      _weight_type(ly, nm, fmt).packed_bytes()))
                if worst is None or options[-1].sensitivity > worst[0]:
                    worst = (options[-1].sensitivity, wc)
        return (ly, options, dense_t), worst, found

    table, probes, kept, codes, held = {}, {}, 0, {}, 0
    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        firsts = {ly.activation: acts[ly.name] for ly in layers if ly.name in acts}
        grams = dict(zip(firsts, pool.map(gram, firsts.values())))
        for i, (entry, worst, found) in enumerate(pool.map(weigh, layers)):
            progress(i + 1, len(layers), "autocompress: weighing candidates")
            table[entry[0].name] = entry
            for name, q in found.items():
                size = sum(a.nbytes for a in (q.data, *q.params().values()) if a is not None)
                if held + size <= KEEP_CODES:
                    codes[(entry[0].name, name)] = q
                    held += size
            if worst is not None and kept + worst[1].nbytes <= KEEP_PROBES:
                probes[entry[0].name] = worst[1]
                kept += worst[1].nbytes
    _amplify(table, norms, sample, progress, evaluator, probes)
    return table, codes


def _chooser(table, cost):
    """lam -> {layer: the option minimizing normalized cost + lam * sensitivity^2}."""
    total = sum(min(cost(o) for o in opts) for _, opts, _ in table.values()) or 1.0

    def choose(lam):
        return {name: min(opts, key=lambda o: cost(o) / total + lam * o.sensitivity ** 2)
                for name, (ly, opts, _) in table.items()}
    return choose


def _fit_bits(table, bits, steps=40):
    """The least predicted error whose stored bits per weight (over the
    compressible layers) fit `bits`."""
    choose = _chooser(table, lambda o: o.bytes)
    weights = sum(ly.weight.type.numel for ly, _, _ in table.values())

    def avg_bits(choice):
        return 8.0 * sum(o.bytes for o in choice.values()) / max(weights, 1)

    lo, hi = -8.0, 8.0  # log10 of lam; larger: less compression
    best = choose(10.0 ** lo)
    if avg_bits(best) > bits:
        return best, (f"no candidate mix fits {bits:g} bits per weight; the most compressed "
                      f"one stores {avg_bits(best):.2f}")
    for _ in range(steps):
        mid = (lo + hi) / 2
        choice = choose(10.0 ** mid)
        if avg_bits(choice) <= bits:
            best, lo = choice, mid
        else:
            hi = mid
    best = _fill(table, best, bits * max(weights, 1) / 8.0)
    return best, (f"the lowest predicted error within {bits:g} bits per weight "
                  f"({avg_bits(best):.2f} stored)")


def _fill(table, choice, capacity):
    """Spend the bytes the trade-off left unused: the trade-off only reaches
    mixes on the convex hull of (bytes, error), so upgrade layers greedily,
    best error reduction per byte first, while they fit."""
    choice = dict(choice)
    used = sum(o.bytes for o in choice.values())
    while True:
        best, gain = None, 0.0
        for name, (_, opts, _) in table.items():
            now = choice[name]
            for o in opts:
                extra = o.bytes - now.bytes
                drop = now.sensitivity ** 2 - o.sensitivity ** 2
                if drop > 0 and used + extra <= capacity:
                    rate = drop / max(extra, 1)
                    if rate > gain:
                        best, gain = (name, o), rate
        if best is None:
            return choice
        used += best[1].bytes - choice[best[0]].bytes
        choice[best[0]] = best[1]


def _trial_error(graph, table, norms, ctx, evaluator, held):
    """choice -> the end-to-end error of the graph compressed as it says:
    the user's metric on a compressed copy, else the relative output error
    on the held-out samples, from the evaluator with the chosen layers'
    round-to-nearest values in place."""
    if ctx.metric:
        def metric(choice):
            trial = graph.copy()
            apply(trial, find_layers(trial), choice, norms)
            return ctx.measure(trial)
        return metric
    refs = [out for sample in held for out in evaluator(sample)[0]]
    cache = {}

    def values(ly, option):
        key = (ly.name, option.choice)
        if key not in cache:
            cache[key] = _compressed(_logical(ly, graph), ly, *option.choice,
                                     norms.get(ly.name))
        return cache[key]

    def error(choice):
        weights = {ly.weight_name: values(ly, choice[name])
                   for name, (ly, _, _) in table.items() if choice[name].choice != (None, None)}
        with evaluator.replaced(weights):
            outs = [out for sample in held for out in evaluator(sample)[0]]
        return relative_error(outs, refs)
    return error


def _bisect(table, error, budget, progress, steps=10):
    """The choice at the smallest trade-off weight (most compression) whose
    end-to-end error (`error(choice)`) fits the budget, and that error."""
    choose = _chooser(table, lambda o: o.seconds)
    best = (choose(1e9), 0.0)  # keeps every layer: always within any budget
    lo, hi = -6.0, 6.0  # log10 of the weight; larger: less compression, lower error
    for step in range(steps):
        progress(step + 1, steps, "autocompress: searching the trade-off")
        mid = (lo + hi) / 2
        choice = choose(10.0 ** mid)
        err = error(choice)
        if err <= budget:
            best, hi = (choice, err), mid
        else:
            lo = mid
    return best


def apply(graph, layers, choice, norms, criterion="wanda", method="rtn", hessians=None,
          codes=None):
    """Compress each layer as its chosen (pattern, format) says: pruned by
    `criterion` (wanda falls back to magnitude without norms), rounded by
    `method`; the second-order ones use `hessians` where a layer has one.
    `codes` (from _candidates): unpruned layers rounded to nearest as weighed."""
    hessians, codes = hessians or {}, codes or {}
    for ly in layers:
        nm, fmt = choice[ly.name].choice
        h = hessians.get(ly.name)
        if nm is not None:
            how = criterion if criterion != "wanda" or ly.name in norms else "magnitude"
            prune_layer(graph, ly, *nm, how, norms.get(ly.name),
                        h if criterion == "sparsegpt" else None)
        if fmt is not None:
            second = h if method == "gptq" and fmt.scale is not None else None
            known = codes.get((ly.name, fmt.name)) if nm is None and second is None else None
            quantize_layer(graph, ly, fmt, second, known)
