"""Per-layer choice of N:M pattern and precision under an accuracy budget.

For every compressible layer and every candidate (pattern, format) the pass
measures the layer's sensitivity on calibration activations (the relative
error of its output, X W^T, when only its weight is compressed), scaled by
how much the rest of the model amplifies that layer's errors (measured once
per layer, end to end, with its most aggressive candidate: a small local
error in an early feed-forward layer can dominate the output), and predicts
its time with the target's roofline cost model. A trade-off weight lam then
picks, per layer, the candidate minimizing predicted time + lam * sensitivity
(both normalized); the pass searches lam for the most compression whose
end-to-end output error on held-out calibration samples (measured with the
interpreter) stays within the budget, and applies that choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hetc.errors import UsageError
from hetc.interpret import load_const
from hetc.ir.types import NM, TensorType
from hetc.pipeline import Pass, register_pass

from . import formats, prune
from .compress import _remember, prune_layer, quantize_layer
from .layers import activations, channel_squares, find_layers

MAX_ROWS = 2048  # activation rows per layer used for sensitivities


def _statistics(graph, layers, samples):
    """One walk over the calibration samples: per layer, input-channel norms
    (for wanda) and up to MAX_ROWS activation rows [rows, in] (linear/matmul)."""
    sums, rows = {}, {}
    for ly, array in activations(graph, layers, samples):
        sums[ly.name] = sums.get(ly.name, 0) + channel_squares(ly, array)
        have = sum(len(r) for r in rows.get(ly.name, []))
        if ly.op.kind != "conv2d" and have < MAX_ROWS:
            rows.setdefault(ly.name, []).append(
                np.asarray(array, np.float32).reshape(-1, array.shape[-1])[:MAX_ROWS - have])
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


def _sensitivity(w, wc, ly, x):
    if x is None:  # conv: weight-space error
        return float(np.linalg.norm(wc - w) / max(np.linalg.norm(w), 1e-30))
    y = x @ (w.T if ly.op.kind == "linear" else w)
    yc = x @ (wc.T if ly.op.kind == "linear" else wc)
    return float(np.linalg.norm(yc - y) / max(np.linalg.norm(y), 1e-30))


def _seconds(target, ly, nm, fmt):
    """Roofline time of the layer with its weight stored as the candidate says."""
    t = ly.weight.type
    dtype = fmt.dtype if fmt is not None else t.value_dtype
    enc = []
    if nm is not None:
        enc.append(NM(*nm, -1 if ly.axis % t.rank == t.rank - 1 else ly.axis))
    if fmt is not None and fmt.scale is not None:
        from hetc.ir.types import Quant

        length = t.shape[ly.axis]
        enc.append(Quant(formats.group_size(fmt, length), fmt.scale, fmt.symmetric, ly.axis,
                         fmt.codebook))
    weight_bytes = TensorType(t.shape, dtype, enc).packed_bytes()
    rows = max(1, ly.activation.type.numel // max(ly.activation.type.shape[-1], 1))
    act_bytes = 4 * rows * (t.shape[ly.axis] + t.numel // t.shape[ly.axis])
    ops = 2.0 * rows * t.numel
    if nm is not None:
        ops /= target.cost.sparse_speedup.get(f"{nm[0]}:{nm[1]}", 1.0)
    peak = dtype.name if dtype.name in target.cost.peak_gops else "f32"
    return target.cost.seconds(weight_bytes + act_bytes, ops, peak)


@register_pass
@dataclass(frozen=True)
class AutoCompress(Pass):
    """Search per-layer N:M patterns and formats under the accuracy budget."""

    name = "autocompress"
    patterns: str = "auto"  # "|"-separated N:M patterns, "auto" (the target's) or "" (dense)
    formats: str = "auto"  # "|"-separated formats, "auto" (int8|int4) or "" (keep)
    budget: float = 0.01

    def run(self, graph, ctx):
        target = ctx.target
        if target is None or not ctx.calibration:
            raise UsageError("autocompress needs a target and calibration inputs")
        held = ctx.held_out or ctx.calibration
        patterns = [prune.parse_pattern(p) for p in self._list(
            self.patterns, [f"{n}:{m}" for n, m in target.nm_patterns if (n, m) in
                            ((2, 4), (1, 4))])]
        fmts = [f for f in (formats.get_format(f) for f in self._list(self.formats, ["int8", "int4"]))
                if f.dtype.name in target.weight_dtypes]
        layers = find_layers(graph)
        norms, acts = _statistics(graph, layers, ctx.calibration)
        progress = ctx.progress or (lambda done, total, what: None)
        table = _candidates(graph, target, layers, patterns, fmts, norms, acts,
                            ctx.calibration[0], progress)
        choice, err = _bisect(graph, table, norms, held, self.budget, progress)
        for ly in layers:
            (nm, fmt), sens, secs = choice[ly.name]
            entry = _remember(ctx, ly)
            entry["sensitivity"] = sens
            entry["speedup"] = table[ly.name][2] / secs
            label = " + ".join(x for x in (f"{nm[0]}:{nm[1]}" if nm else "",
                                            fmt.name if fmt else "") if x) or "kept as is"
            entry["why"].append(f"auto: {label}")
        dense = sum(d for _, _, d in table.values())
        ctx.notes.append(f"autocompress: the most compression whose end-to-end error ({err:.3g} "
                         f"on {len(held)} held-out sample(s)) fits the budget {self.budget:g}; "
                         f"predicted {dense / sum(c[2] for c in choice.values()):.2f}x "
                         f"on {target.name} ({target.cost.reference_part})")
        apply(graph, layers, choice, norms)

    @staticmethod
    def _list(text, auto):
        if text == "auto":
            return auto
        return [t for t in text.split("|") if t]


def _amplify(graph, table, norms, sample, progress):
    """Scale each layer's local sensitivities by the end-to-end error its most
    aggressive candidate causes, per unit of its local error."""
    from hetc.compression import relative_error
    from hetc.interpret import interpret

    refs = interpret(graph, list(sample))
    for i, (name, (ly, options, dense_t)) in enumerate(list(table.items())):
        progress(i + 1, len(table), "autocompress: measuring layer sensitivities")
        probe = max(options, key=lambda o: o[1])
        if probe[1] <= 0:
            continue
        key = ly.weight_name
        original = graph.weights[key]
        (nm, fmt), local, _ = probe
        graph.weights[key] = _compressed(np.asarray(original, np.float32), ly, nm, fmt,
                                         norms.get(name)).astype(original.dtype)
        try:
            e2e = relative_error(interpret(graph, list(sample)), refs)
        finally:
            graph.weights[key] = original
        table[name] = (ly, [(c, s * e2e / local, t) for c, s, t in options], dense_t)


def _candidates(graph, target, layers, patterns, fmts, norms, acts, sample, progress):
    """layer -> (layer, [((pattern, format), sensitivity, seconds)], dense seconds)."""
    table = {}
    for ly in layers:
        w = np.asarray(load_const(ly.weight.producer, graph), np.float32)
        dense_t = _seconds(target, ly, None, None)
        options = [((None, None), 0.0, dense_t)]
        length = ly.weight.type.shape[ly.axis]
        for nm in [None] + [p for p in patterns if length % p[1] == 0]:
            for fmt in [None] + fmts:
                if nm is None and fmt is None:
                    continue
                wc = _compressed(w, ly, nm, fmt, norms.get(ly.name))
                options.append(((nm, fmt), _sensitivity(w, wc, ly, acts.get(ly.name)),
                                _seconds(target, ly, nm, fmt)))
        table[ly.name] = (ly, options, dense_t)
    _amplify(graph, table, norms, sample, progress)
    return table


def _bisect(graph, table, norms, held, budget, progress, steps=10):
    """The choice at the smallest trade-off weight (most compression) whose
    end-to-end error on the held-out samples fits the budget, and that error."""
    from hetc.compression import output_error

    total = sum(d for _, _, d in table.values())

    def choose(lam):
        return {name: min(opts, key=lambda o: o[2] / total + lam * o[1] ** 2)
                for name, (ly, opts, _) in table.items()}

    best = (choose(1e9), 0.0)  # keeps every layer: always within any budget
    lo, hi = -6.0, 6.0  # log10 of the weight; larger: less compression, lower error
    for step in range(steps):
        progress(step + 1, steps, "autocompress: searching the trade-off")
        mid = (lo + hi) / 2
        choice = choose(10.0 ** mid)
        trial = graph.copy()
        apply(trial, find_layers(trial), choice, norms)
        err = output_error(graph, trial, held)
        if err <= budget:
            best, hi = (choice, err), mid
        else:
            lo = mid
    return best


def apply(graph, layers, choice, norms):
    """Compress each layer as its chosen (pattern, format) says."""
    for ly in layers:
        (nm, fmt), _, _ = choice[ly.name]
        if nm is not None:
            prune_layer(graph, ly, *nm, "wanda" if ly.name in norms else "magnitude",
                        norms.get(ly.name))
        if fmt is not None:
            quantize_layer(graph, ly, fmt)


