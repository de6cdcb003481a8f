"""`quantize-activations`: int8 dynamic activations for linear layers (and,
on targets with integer convolutions, conv2d layers) whose weights are
stored as symmetric integers along their input axis (channels).

It sets the layer's `act_group` (see the linear and conv2d ops): the input
is quantized per token (pixel) and group of features at run time, so a backend can use integer
dot products (x86 VNNI `vpdpbusd`, AMX `tdpbssd`) instead of decoding the
weights to floats. The group is the weight's (one scale for both factors of
each partial sum), or `group=` when given; the interpreter computes exactly
this, so the error it adds shows in the accuracy check.
"""

from __future__ import annotations

from dataclasses import dataclass

from hetc.core.errors import UsageError
from hetc.passes.pipeline import Pass, register_pass

from .compress import _record
from .layers import find_layers, select

INTEGER_WEIGHTS = ("i8", "i4")


@register_pass
@dataclass(frozen=True)
class QuantizeActivations(Pass):
    """Quantize the inputs of integer-weight linear layers to int8 per token and group."""

    name = "quantize-activations"
    group: int = 0  # features per activation scale; 0: the weight's group
    layers: str = ""
    exclude: str = ""

    def run(self, graph, ctx):
        if self.group < 0:
            raise UsageError(f"quantize-activations: group must be positive, got {self.group}")
        if ctx.target is not None and "i8" not in ctx.target.activation_dtypes:
            for ly in select(find_layers(graph), self.layers, self.exclude):
                _record(ctx, ly, f"activations kept: target {ctx.target.name} has no int8 "
                                 f"activations")
            return
        for ly in select(find_layers(graph), self.layers, self.exclude):
            t = ly.weight.type
            if ly.op.attrs.get("act_group"):
                continue  # quantized already (asked for before a target's storage passes)
            if ly.op.kind not in ("linear", "conv2d") or t.dtype.name not in INTEGER_WEIGHTS \
                    or t.quant is None or not t.quant.symmetric or \
                    t.quant.axis % t.rank != ly.axis % t.rank:
                _record(ctx, ly, "activations kept: int8 activations need a linear layer (or a "
                                 "convolution the target has an integer kernel for) with "
                                 "symmetric int8/int4 weights")
                continue
            if ly.op.kind == "conv2d" and not (
                    ctx.target is not None and ctx.target.int8_convolutions is not None and
                    ly.op.attrs["groups"] == 1 and ctx.target.int8_convolutions(ly.op)):
                name = ctx.target.name if ctx.target is not None else "none"
                _record(ctx, ly, f"activations kept: target {name} has no integer kernel for "
                                 f"this convolution that beats its float one")
                continue
            k = t.shape[1]
            group = self.group or t.quant.group or k
            if k % group:
                _record(ctx, ly, f"activations kept: group {group} does not divide {k} inputs")
                continue
            ly.op.attrs["act_group"] = group
            _record(ctx, ly, f"activations int8 per token and {group} features")
