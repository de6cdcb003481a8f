"""nan, +-inf and -0 through the max/min/clamp-like ops, reductions, pooling,
softmax and the elementwise functions: every target gives what the
interpreter gives, and the interpreter what PyTorch gives (a relu that turns
nan into 0 is a silent wrong answer)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import hetc
from hetc.ir import Graph, TensorType, dtypes

NAN, INF = np.nan, np.inf
# every row holds a special value; row 2 holds +inf and -inf only, row 4 only -inf
X = np.array([[NAN, 1.0, -2.0, 3.0],
              [INF, -INF, 0.5, -0.5],
              [0.0, -0.0, NAN, INF],
              [-INF, 2.0, NAN, -3.0],
              [-INF, -INF, -INF, -INF],
              [1.5, -1.5, 0.25, 4.0]], np.float32)
TARGETS = [("x86", {}), ("amx", {"emulate": True}), ("npu", {})]


def graph(build, x=X):
    g = Graph("special")
    v = g.add_input("x", TensorType(x.shape, dtypes.f32))
    g.outputs = [build(g, v)]
    return g


def flipped(g, v):  # the other operand of a binary op: X with its columns reversed
    return g.const(np.ascontiguousarray(X[:, ::-1]), "flipped", inline=False)


CASES = {
    **{k: (lambda k: lambda g, v: g.add(k, [v]))(k)
       for k in ("relu", "abs", "neg", "exp", "log", "sqrt", "tanh", "sigmoid", "silu", "erf",
                 "floor", "ceil", "round", "sign", "reciprocal", "sin", "cos", "atan")},
    "gelu_tanh": lambda g, v: g.add("gelu", [v], {"approximate": "tanh"}),
    "maximum": lambda g, v: g.add("maximum", [v, g.add("neg", [v])]),
    "minimum": lambda g, v: g.add("minimum", [v, g.add("neg", [v])]),
    "maximum_const": lambda g, v: g.add("maximum", [flipped(g, v), v]),
    "clamp": lambda g, v: g.add("minimum", [g.add("maximum", [v, g.const(np.float32(-0.5))]),
                                            g.const(np.float32(0.5))]),
    **{k: (lambda k: lambda g, v: g.add(k, [v], {"axes": [1]}))(k)
       for k in ("reduce_max", "reduce_min", "reduce_sum", "reduce_mean", "reduce_prod")},
    "reduce_max_all": lambda g, v: g.add("reduce_max", [v]),
    "argmax": lambda g, v: g.add("argmax", [v], {"axis": 1}),
    "argmin": lambda g, v: g.add("argmin", [v], {"axis": 1}),
    "argmax_last": lambda g, v: g.add("argmax", [v], {"axis": 1, "select_last_index": True}),
    "topk": lambda g, v: g.add("topk", [v], {"k": 3})[0],
    "topk_indices": lambda g, v: g.add("topk", [v], {"k": 3})[1],
    "topk_smallest_indices": lambda g, v: g.add("topk", [v], {"k": 3, "largest": False})[1],
    "softmax": lambda g, v: g.add("softmax", [v], {"axis": 1}),
    "log_softmax": lambda g, v: g.add("log_softmax", [v], {"axis": 1}),
    "max_pool": lambda g, v: g.add("max_pool2d", [g.add("reshape", [v], {"shape": [1, 1, 6, 4]})],
                                   {"kernel": [2, 2], "padding": [1, 1, 1, 1]}),
    "avg_pool": lambda g, v: g.add("avg_pool2d", [g.add("reshape", [v], {"shape": [1, 1, 6, 4]})],
                                   {"kernel": [2, 2]}),
    "layer_norm": lambda g, v: g.add("layer_norm", [v]),
}


def same(got, want):
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return False
    if want.dtype.kind != "f":
        return np.array_equal(got, want)
    return np.array_equal(np.isnan(got), np.isnan(want)) and np.allclose(
        np.nan_to_num(got, nan=0), np.nan_to_num(want, nan=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("target, options", TARGETS, ids=[t for t, _ in TARGETS])
def test_targets_give_what_the_interpreter_gives(target, options):
    wrong = []
    with np.errstate(all="ignore"):
        for name, build in CASES.items():
            g = graph(build)
            want = hetc.compile(g)(X)
            got = hetc.compile(g, target=target, **options)(X)
            if not same(got, want):
                wrong.append(f"{name}: {np.asarray(got).ravel()[:12]} vs {want.ravel()[:12]}")
    assert not wrong, "\n".join(wrong)


# what PyTorch computes for the ops above; sign and gelu differ on purpose:
# PyTorch's sign(nan) is 0 and its gelu(inf) nan, the interpreter follows
# numpy and ONNX (nan and inf)
TORCH = {
    "relu": torch.relu, "exp": torch.exp, "abs": torch.abs, "sqrt": torch.sqrt,
    "maximum": lambda x: torch.maximum(x, -x), "minimum": lambda x: torch.minimum(x, -x),
    "clamp": lambda x: x.clamp(-0.5, 0.5),
    "reduce_max": lambda x: x.amax(1), "reduce_min": lambda x: x.amin(1),
    "reduce_sum": lambda x: x.sum(1), "reduce_prod": lambda x: x.prod(1),
    "reduce_max_all": lambda x: x.amax(), "argmax": lambda x: x.argmax(1, keepdim=True),
    "argmin": lambda x: x.argmin(1, keepdim=True), "softmax": lambda x: x.softmax(1),
    "log_softmax": lambda x: x.log_softmax(1),
    # topk orders as a stable sort does: NaN above every number, ties in index order
    "topk": lambda x: x.sort(dim=1, descending=True, stable=True)[0][:, :3],
    "topk_indices": lambda x: x.sort(dim=1, descending=True, stable=True)[1][:, :3],
    "topk_smallest_indices": lambda x: x.sort(dim=1, stable=True)[1][:, :3],
    "max_pool": lambda x: F.max_pool2d(x.reshape(1, 1, 6, 4), 2, padding=1),
}


def test_the_interpreter_gives_what_pytorch_gives():
    wrong = []
    with np.errstate(all="ignore"):
        for name, fn in TORCH.items():
            want = fn(torch.from_numpy(X)).numpy()
            got = hetc.compile(graph(CASES[name]))(X)
            if not same(got, want):
                wrong.append(f"{name}: {got.ravel()[:12]} vs {want.ravel()[:12]}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("target, options", [("ref", {})] + TARGETS,
                         ids=["ref"] + [t for t, _ in TARGETS])
def test_clamp_like_modules_keep_nan(target, options):
    """relu6, hardtanh and clamp from PyTorch modules, imported and compiled."""
    class Clamps(torch.nn.Module):
        def forward(self, x):
            return torch.cat([F.relu6(x), F.hardtanh(x), x.clamp(min=0.1), torch.relu(x)])

    x = torch.from_numpy(X)
    module = hetc.compile(Clamps(), target=target, example_inputs=(x,), **options)
    assert same(module(x).numpy(), Clamps()(x).numpy())
