"""Every op the interpreter knows, exported to MLIR (hetc/ir/mlir.py,
mlir_ops.py): parsed and verified by MLIR, compiled and run by it against
the interpreter (float, integer and bool elements, the interpreter's edge
rules: division by zero, mod's sign, shifts past the width, NaN in
arg-reductions, negative indices, padding modes, ceil-mode average
pooling), and read back by the importer as the same graph."""

import importlib.util

import numpy as np
import pytest

import hetc
from hetc.driver import mlir_run
from hetc.frontends.mlir_import import import_mlir
from hetc.ir import dtypes
from hetc.ir.graph import Graph
from hetc.ir.mlir import to_mlir
from hetc.ir.ops import OPS
from hetc.ir.types import TensorType
from hetc.passes.pipeline import PassManager
from test_mlir_import import structure

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch_mlir") is None,
                                reason="torch-mlir's MLIR bindings are not installed "
                                       "(pip install --no-deps torch-mlir)")
F, I, B = dtypes.f32, dtypes.i64, dtypes.boolean
RNG = np.random.default_rng(0)


def _one(kind, dt=F, shape=(2, 3, 4), attrs=None, extra=(), name=None):
    """A graph of one `kind` op on an input x of `shape` and constants `extra`."""
    g = Graph(name or kind)
    x = g.add_input("x", TensorType(shape, dt))
    y = g.add(kind, [x] + [g.const(e, name="c") for e in extra], attrs or {})
    g.outputs = y if isinstance(y, list) else [y]
    return g


def _graph(name, inputs, build):
    g = Graph(name)
    xs = [g.add_input(n, TensorType(s, d)) for n, s, d in inputs]
    out = build(g, *xs)
    g.outputs = out if isinstance(out, list) else [out]
    return g


def _f(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _cases():
    cases = []
    for k in ["neg", "abs", "exp", "log", "tanh", "sqrt", "rsqrt", "sigmoid", "silu", "erf",
              "relu", "floor", "ceil", "round", "reciprocal", "sign", "sin", "cos", "tan",
              "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "isnan",
              "gelu", "softmax", "log_softmax"]:
        cases.append(_one(k))
    cases.append(_one("isinf", attrs={"detect_negative": False}))
    cases += [_one(k, I, name=f"{k}_i64") for k in ["neg", "abs", "relu", "sign", "bitwise_not"]]
    cases.append(_one("logical_not", B))
    for k in ["add", "sub", "mul", "div", "maximum", "minimum", "pow", "mod", "fmod", "equal",
              "less", "greater", "less_equal", "greater_equal"]:
        cases.append(_one(k, extra=[_f(3, 4)]))
    for k in ["add", "sub", "mul", "div", "maximum", "minimum", "mod", "fmod", "bitwise_and",
              "bitwise_or", "bitwise_xor", "shift_left", "shift_right", "equal", "less"]:
        divisor = RNG.integers(-3, 70 if "shift" in k else 4, (3, 4))  # zeros and big counts
        cases.append(_one(k, I, extra=[divisor], name=f"{k}_i64"))
    cases += [_one(k, B, extra=[RNG.integers(0, 2, (4,)).astype(bool)])
              for k in ["logical_and", "logical_or", "logical_xor"]]
    cases.append(_graph("where", [("c", (3, 4), B), ("x", (2, 3, 4), F)],
                        lambda g, c, x: g.add("where", [c, x, g.const(np.float32(1.5))])))
    cases += [_one("cast", attrs={"dtype": dtypes.get(t)}, name=f"cast_{t}")
              for t in ["i64", "i32", "bool", "f16"]]
    cases += [_one("cast", d, attrs={"dtype": t}, name=f"cast_{d.name}_{t.name}")
              for d, t in [(I, F), (B, F), (I, dtypes.i32)]]
    for k in ["reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod"]:
        cases.append(_one(k, attrs={"axes": [1], "keepdims": True}))
        cases.append(_one(k, attrs={"axes": [0, 2]}, name=f"{k}_2"))
    cases.append(_one("reduce_sum", I, attrs={"axes": [2]}, name="reduce_sum_i64"))
    cases.append(_one("reduce_max", B, attrs={"axes": [2]}, name="reduce_max_bool"))
    for k in ["argmax", "argmin"]:
        cases.append(_one(k, attrs={"axis": 2}))
        cases.append(_one(k, I, attrs={"axis": 1, "keepdims": False, "select_last_index": True},
                          name=f"{k}_last"))
    cases.append(_one("topk", attrs={"k": 2, "axis": 1}))
    cases.append(_one("topk", I, attrs={"k": 4, "largest": False}, name="topk_i64_smallest"))
    # x times 0, NaN and inf: ties (0 and -0), NaN above every number, infinities
    specials = np.array([0, np.nan, 0, np.inf, 1, 0, np.nan, -1], np.float32)
    for largest in (True, False):
        cases.append(_graph(f"topk_nan_{'largest' if largest else 'smallest'}",
                            [("x", (3, 8), F)], lambda g, x, largest=largest: g.add(
                                "topk", [g.add("mul", [x, g.const(specials, name="s")])],
                                {"k": 6, "largest": largest})))
    for exclusive in (False, True):
        for reverse in (False, True):
            cases.append(_one("cumsum", attrs={"axis": 2, "exclusive": exclusive,
                                               "reverse": reverse},
                              name=f"cumsum_{int(exclusive)}{int(reverse)}"))
    cases.append(_one("cumsum", I, attrs={"axis": 1}, name="cumsum_i64"))
    cases.append(_one("gather", extra=[np.array([[0, -1], [2, 1]])], attrs={"axis": 1}))
    cases.append(_one("gather_elements", extra=[RNG.integers(-4, 4, (2, 3, 2))],
                      attrs={"axis": 2}))
    cases.append(_graph("embedding", [("ids", (2, 5), I)],
                        lambda g, ids: g.add("embedding", [ids, g.const(_f(7, 3), name="t")])))
    cases += [_one("pad", attrs={"pads": [0, 1, 2, 0, -1, 1], "mode": m, "value": 0.5},
                   name=f"pad_{m}") for m in ["constant", "edge", "reflect", "wrap"]]
    pool = {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1, 1, 1], "ceil_mode": True}
    cases.append(_one("avg_pool2d", shape=(1, 2, 7, 7), attrs={**pool,
                                                               "count_include_pad": False}))
    cases.append(_one("avg_pool2d", shape=(1, 2, 7, 7), name="avg_pool2d_2",
                      attrs={"kernel": [2, 3], "padding": [1, 0, 1, 0]}))
    cases.append(_one("max_pool2d", shape=(1, 2, 7, 7), attrs=pool))
    cases.append(_one("global_avg_pool", shape=(1, 2, 5, 5)))
    cases.append(_one("conv2d", shape=(1, 4, 6, 6), extra=[_f(6, 2, 3, 3), _f(6)],
                      attrs={"padding": [1, 1, 1, 1], "stride": [2, 1], "groups": 2}))
    cases.append(_one("batch_norm", shape=(1, 3, 2, 2), extra=[_f(3), _f(3), _f(3),
                                                               np.abs(_f(3)) + 0.5]))
    cases.append(_one("linear", extra=[_f(5, 4), _f(5)]))
    cases.append(_one("layer_norm", extra=[_f(4), _f(4)]))
    cases.append(_one("rms_norm", extra=[_f(4)]))
    cases.append(_graph("matmul", [("a", (2, 3, 4), F), ("b", (4, 5), F)],
                        lambda g, a, b: g.add("matmul", [a, b])))
    cases.append(_graph("attention", [("q", (1, 2, 3, 4), F), ("k", (1, 2, 5, 4), F),
                                      ("v", (1, 2, 5, 4), F)],
                        lambda g, q, k, v: g.add("attention", [q, k, v], {"causal": True})))
    cases.append(_graph("shapes", [("x", (2, 3, 4), F)], lambda g, x: [
        g.add("transpose", [g.add("reshape", [x], {"shape": [6, 4]})], {"perm": [1, 0]}),
        g.add("concat", [x, g.add("expand", [g.const(_f(1, 3, 4), name="e")],
                                  {"shape": [2, 3, 4]})], {"axis": 0}),
        *g.add("split", [g.add("slice", [x], {"axes": [2], "starts": [3], "ends": [0],
                                              "steps": [-1]})], {"axis": 1, "sizes": [1, 2]}),
        g.const(np.arange(3, dtype=np.float32), name="k")]))
    fusable = _graph("fused", [("x", (3, 8), F)], lambda g, x: g.add("gelu", [
        g.add("linear", [x, g.const(_f(16, 8), name="w"), g.const(_f(16), name="b")])]))
    cases.append(PassManager.from_text("fuse").run(fusable))
    return cases


CASES = _cases()


def _inputs(g):
    out = []
    for v in g.inputs:
        t = v.type
        if t.dtype == F:
            out.append(RNG.standard_normal(t.shape).astype(np.float32) * 2)
        elif t.dtype == B:
            out.append(RNG.integers(0, 2, t.shape).astype(bool))
        else:  # ids for the embedding, negative ones too
            out.append(RNG.integers(-5, 6, t.shape).astype(t.dtype.storage))
    return out


def test_every_op_the_interpreter_knows_has_a_case():
    assert {op.kind for g in CASES for op in g.walk()} == set(OPS)


@pytest.mark.parametrize("graph", CASES, ids=[g.name for g in CASES])
def test_each_op_compiled_by_mlir_matches_the_interpreter_and_round_trips(graph):
    text = to_mlir(graph)
    mlir_run.verify(text)
    inputs = _inputs(graph)
    want = hetc.interpret(graph, inputs)
    got = mlir_run.run(text, inputs, [v.type.shape for v in graph.outputs],
                       [v.type.value_dtype.storage for v in graph.outputs])
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert structure(import_mlir(text)) == structure(graph)
