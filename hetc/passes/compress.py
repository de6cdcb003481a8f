"""The compression passes: `sparsify` (N:M pruning) and `quantize` (weight
precision), applied to the compressible layers (passes/layers.py) whose names
match a regular expression.

Each pass rewrites the weight in the store (new arrays: the caller's
tensors are never touched) and puts the encoding on the constant's type, so
what is stored is exactly what the type says. A layer a pass cannot serve
(the target cannot exploit the pattern, the axis does not divide) stays as it
is, and the reason is recorded for the report. Passes apply only to layers
not yet carrying their encoding, so per-layer choices are a sequence of
passes, each excluding the layers earlier choices matched (the first match
wins; a "none" choice is a pattern no later pass may touch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hetc.core.errors import UsageError
from hetc.ir import codebooks, dtypes
from hetc.ir.ops import InferError, get_op
from hetc.ir.interpret import load_const
from hetc.ir.types import NM, Quant, TensorType
from hetc.ir.weights import aux_key
from hetc.passes.pipeline import Pass, register_pass

from . import formats, prune, reconstruct
from .layers import find_layers, input_channel_norms, probing, select


def _as_rows(w, layer):
    """The weight as [out, in] (a matmul's [in, out] is transposed) and back."""
    if layer.op.kind == "matmul":
        return w.T, lambda r: np.ascontiguousarray(r.T)
    return w, lambda r: r


def _second_order(ctx, graph, chosen, what):
    """Hessians for the linear/matmul layers among `chosen`; conv layers fall
    back (noted) since their Hessian needs unfolded patches."""
    if not ctx.calibration:
        raise UsageError(f"{what} needs calibration inputs")
    linear = [ly for ly in chosen if ly.op.kind != "conv2d"]
    return reconstruct.hessians(graph, linear, ctx.calibration, probing(ctx, graph, linear))


def _remember(ctx, layer):
    """The layer's decision entry, holding its bytes before any compression
    (call before rewriting the weight)."""
    return ctx.decisions.setdefault(layer.name, {"bytes_before": layer.weight.type.packed_bytes(),
                                                 "why": []})


def _record(ctx, layer, text):
    """A decision for the report: why the layer got (or did not get) a choice."""
    _remember(ctx, layer)["why"].append(text)


def _rewrite(graph, layer, data, encodings, dtype=None, params=None):
    """Store new data for a layer's weight and give its const the encodings."""
    name = layer.weight_name
    graph.weights[name] = data
    for kind, arr in (params or {}).items():
        if arr is None:
            graph.weights.pop(aux_key(name, kind), None)
        else:
            graph.weights[aux_key(name, kind)] = arr
    t = layer.weight.type
    layer.weight.type = TensorType(t.shape, dtype or t.dtype, tuple(encodings))


@register_pass
@dataclass(frozen=True)
class Sparsify(Pass):
    """Prune matching layers to an N:M pattern along their reduction axis."""

    name = "sparsify"
    pattern: str = "2:4"
    criterion: str = "magnitude"
    layers: str = ""
    exclude: str = ""

    def run(self, graph, ctx):
        try:
            n, m = prune.parse_pattern(self.pattern)
        except ValueError as e:
            raise UsageError(f"sparsify: {e}") from None
        if self.criterion not in prune.CRITERIA:
            raise UsageError(f"sparsify: unknown criterion {self.criterion!r} "
                             f"(known: {', '.join(prune.CRITERIA)})")
        chosen = [ly for ly in select(find_layers(graph), self.layers, self.exclude)
                  if ly.weight.type.nm is None and ly.weight.type.quant is None]
        unexploited = ""
        if ctx.target is not None and not ctx.target.supports_nm(n, m):
            if not ctx.target.nm_as_zeros:
                raise UsageError(f"sparsity {n}:{m}: target {ctx.target.name} cannot exploit it "
                                 f"(it can: {_patterns(ctx.target)}); choose one of those, or "
                                 f"target='ref' to study {n}:{m} on the interpreter")
            unexploited = (f"; stored dense with its zeros: target {ctx.target.name} has no "
                           f"N:M fast path, so no speedup there")
        norms, hess = {}, {}
        if self.criterion == "wanda":
            if not ctx.calibration:
                raise UsageError("sparsify: the wanda criterion needs calibration inputs")
            norms = input_channel_norms(graph, chosen, ctx.calibration,
                                        probing(ctx, graph, chosen))
        elif self.criterion == "sparsegpt":
            hess = _second_order(ctx, graph, chosen, "sparsify: the sparsegpt criterion")
        for ly in chosen:
            length = ly.weight.type.shape[ly.axis]
            if length % m:
                _record(ctx, ly, f"kept dense: {length} inputs along the reduction axis are "
                                 f"not a multiple of {m}")
                continue
            _remember(ctx, ly)
            how = prune_layer(graph, ly, n, m, self.criterion, norms.get(ly.name), hess.get(ly.name))
            _record(ctx, ly, f"{n}:{m} by {how}: requested" +
                    (f" for layers ~ /{self.layers}/" if self.layers else "") + unexploited)


def prune_layer(graph, ly, n, m, criterion, norms=None, hessian=None) -> str:
    """Prune one layer's weight to n:m (second order when a Hessian is given);
    returns how it was done."""
    w = load_const(ly.weight.producer, graph)
    if hessian is not None:
        rows, back = _as_rows(w, ly)
        pruned, _ = reconstruct.reconstruct(rows, hessian, nm=(n, m))
        pruned, how = back(pruned.astype(w.dtype)), "sparsegpt"
    else:
        how = criterion
        if criterion == "sparsegpt":
            criterion, how = "magnitude", "magnitude (sparsegpt needs a linear layer)"
        keep = prune.nm_mask(prune.scores(w, criterion, ly.axis, norms), n, m, ly.axis)
        pruned = (w * keep).astype(w.dtype)
    axis = -1 if ly.axis % w.ndim == w.ndim - 1 else ly.axis
    _rewrite(graph, ly, pruned, [NM(n, m, axis)])
    return how


@register_pass
@dataclass(frozen=True)
class Quantize(Pass):
    """Store matching layers' weights in a precision format (kept N:M zeros stay zero)."""

    name = "quantize"
    format: str = "int8"
    method: str = "rtn"  # rtn: round to nearest; gptq: second-order, with error feedback
    layers: str = ""
    exclude: str = ""

    def run(self, graph, ctx):
        try:
            fmt = formats.get_format(self.format)
        except KeyError as e:
            raise UsageError(f"quantize: {e.args[0]}") from None
        if self.method not in ("rtn", "gptq"):
            raise UsageError(f"quantize: unknown method {self.method!r} (known: rtn, gptq)")
        chosen = select(find_layers(graph), self.layers, self.exclude)
        hess = {}
        if self.method == "gptq" and fmt.scale is not None:
            hess = _second_order(ctx, graph, [ly for ly in chosen if ly.weight.type.quant is None],
                                 "quantize: the gptq method")
        for ly in chosen:
            t = ly.weight.type
            if t.quant is not None or t.dtype != t.value_dtype or t.dtype == fmt.dtype:
                continue  # already stored in a chosen precision
            if ctx.target is not None and fmt.dtype.name not in ctx.target.weight_dtypes:
                _record(ctx, ly, f"kept {t.dtype}: target {ctx.target.name} has no "
                                 f"{fmt.dtype} weights")
                continue
            if fmt.scale is not None and changes_result_type(graph, ly):
                _record(ctx, ly, f"kept {t.dtype}: the quantized weight's values would be f32 "
                                 f"(the IR's quantized values are) where an op needs {t.dtype}")
                continue
            _remember(ctx, ly)
            how, enc = quantize_layer(graph, ly, fmt, hess.get(ly.name))
            if self.method == "gptq" and fmt.scale is not None and ly.name not in hess:
                how += " (gptq needs a linear layer)"
            note = ""
            if enc is not None and fmt.group and enc.group != fmt.group:
                note = f" (group {fmt.group} does not divide {t.shape[ly.axis]}: per channel)"
            _record(ctx, ly, f"{fmt.name} by {how}: requested" +
                    (f" for layers ~ /{self.layers}/" if self.layers else "") + note)


def changes_result_type(graph, ly) -> bool:
    """Whether quantizing the layer's weight would change the type of an
    op's result: quantized values are f32 in the IR, so an op whose result
    takes the weight's dtype (an f16 or bf16 embedding table, also when it
    is tied to the output layer) would turn f32."""
    t = ly.weight.type
    if t.value_dtype == dtypes.f32:
        return False
    for op in graph.ops:
        if ly.weight not in op.inputs:
            continue
        types = [TensorType(t.shape, dtypes.f32) if v is ly.weight else v.type for v in op.inputs]
        try:
            if get_op(op.kind).infer(types, op.attrs)[0].dtype != op.outputs[0].type.dtype:
                return True
        except InferError:  # operands of one dtype required
            return True
    return False


def quantize_layer(graph, ly, fmt, hessian=None, known=None):
    """Store one layer's weight in `fmt` (GPTQ when a Hessian is given; kept
    N:M zeros stay zero; `known`: the weight's round-to-nearest Quantized
    already made); returns (how, the Quant encoding or None)."""
    t = ly.weight.type
    w = load_const(ly.weight.producer, graph)
    if hessian is not None:
        result, how = _gptq(w, ly, fmt, hessian), "gptq"
    else:
        result = known if known is not None else formats.quantize(w, fmt, ly.axis)
        how = "round to nearest" if not fmt.codebook else f"best {fmt.codebook} variant per group"
    encodings = [e for e in t.encodings if isinstance(e, NM)] + ([result.enc] if result.enc else [])
    _rewrite(graph, ly, result.data, encodings, fmt.dtype, result.params())
    return how, result.enc


def _gptq(w, layer, fmt, h):
    """GPTQ: quantize column groups of the [out, in] weight with error feedback."""
    rows, back = _as_rows(w, layer)
    group = formats.group_size(fmt, rows.shape[1])

    def quantizer(cols):
        if fmt.codebook:  # the group's best variant, then its grid for every column
            _, scale, variant = formats.fit_codebook(cols[:, None, :], fmt)
            scale, variant = scale[:, 0], variant[:, 0]
            grids = codebooks.get(fmt.codebook).table[variant] * scale.astype(np.float32)[:, None]

            def rnd(col):
                idx = formats.encode_codebook(col[:, None, None], scale[:, None], variant[:, None],
                                              fmt)[:, 0, 0].astype(np.int64)
                return grids[np.arange(len(col)), idx]
            return rnd, (scale, variant)
        scale, zero = formats.fit(cols[:, None, :], fmt)
        scale, zero = scale[:, 0], None if zero is None else zero[:, 0]

        def rnd(col):
            return formats.decode(formats.encode(col[:, None], scale, zero, fmt), scale, zero)[:, 0]
        return rnd, (scale, zero)

    mask = rows != 0 if layer.weight.type.nm is not None else None
    values, params = reconstruct.reconstruct(rows, h, quantizer=quantizer, group=group, mask=mask)
    r = formats.from_columns(values, params, fmt, group)
    if layer.op.kind == "matmul":  # codes and parameters back to [in, out]
        return formats.Quantized(
            back(r.data), Quant(r.enc.group, r.enc.scale, r.enc.symmetric, 0, r.enc.codebook),
            back(r.scale), None if r.zero is None else back(r.zero),
            None if r.variant is None else back(r.variant))
    return r


def _patterns(target):
    return ", ".join(f"{n}:{m}" for n, m in target.nm_patterns) or "dense only"
