"""Storage precision of the weights the compression passes left in f32.

A target that computes in a narrower float (an NPU in f16) stores them so;
doing it in the IR, rather than quietly in the backend, keeps the reference
interpreter computing exactly what the target computes.
"""

from dataclasses import dataclass

import ml_dtypes
import numpy as np

from hetc.core.errors import UsageError
from hetc.ir import dtypes
from hetc.ir.graph import Op, Value
from hetc.ir.ops import get_op
from hetc.ir.types import TensorType
from hetc.passes.pipeline import Pass, register_pass


@register_pass
@dataclass(frozen=True)
class StoreFloats(Pass):
    """Store every f32 weight in the store of at least `min_elements` as
    `dtype`: a layer's weight and bias operands directly, other uses through a
    cast back to f32."""

    name = "store-floats"
    dtype: str = "f16"
    # smaller constants (biases, norm scales, interpolation tables) stay f32:
    # they weigh nothing, and some are exact tables
    min_elements: int = 1024

    def run(self, graph, ctx):
        try:
            narrow = dtypes.get(self.dtype)
        except KeyError:
            narrow = None
        if narrow is None or not narrow.is_float or narrow.bits >= 32:
            raise UsageError(f"store-floats: dtype must be a float narrower than f32, "
                             f"got {self.dtype!r}")
        users = graph.users()
        largest = float(ml_dtypes.finfo(narrow.storage).max)
        ops, kept = [], []
        for op in graph.ops:
            ops.append(op)
            if not _plain_f32_weight(op) or op.output.type.numel < self.min_elements:
                continue
            data = graph.weights[op.attrs["name"]]
            if np.abs(data[np.isfinite(data)]).max(initial=0) > largest:
                kept.append(op.attrs["name"])  # e.g. a -3.4e38 "minus infinity" mask value
                continue
            v = op.output
            graph.weights[op.attrs["name"]] = graph.weights[op.attrs["name"]].astype(narrow.storage)
            v.type = TensorType(v.type.shape, narrow, v.type.encodings)
            others = [u for u in users.get(v, ()) if not _weight_use(u, v)]
            if others or v in graph.outputs:
                wide = Value(graph.fresh_name(f"{v.name}_f32"), TensorType(v.type.shape, dtypes.f32))
                ops.append(Op("cast", [v], [wide], {"dtype": dtypes.f32}))
                for u in others:
                    u.inputs = [wide if x is v else x for x in u.inputs]
                graph.outputs = [wide if x is v else x for x in graph.outputs]
        graph.ops = ops
        if kept:
            ctx.notes.append(f"store-floats: kept {', '.join(kept)} in f32 (values beyond "
                             f"{self.dtype}'s range)")


def _plain_f32_weight(op) -> bool:
    t = op.outputs[0].type if op.kind == "const" else None
    return (t is not None and "name" in op.attrs and t.dtype == dtypes.f32
            and t.quant is None)


def _weight_use(user, v) -> bool:
    at = get_op(user.kind).stored_floats
    return any(i in at for i, x in enumerate(user.inputs) if x is v) and \
        all(i in at for i, x in enumerate(user.inputs) if x is v)
