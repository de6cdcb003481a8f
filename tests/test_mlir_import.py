"""MLIR import (hetc/frontends/mlir_import.py): hetc -> MLIR -> hetc gives
back the same graph (ops, attributes, types, weights and names), on the
model families and on random graphs; modules written by torch-mlir (a
producer hetc did not write) import and match PyTorch, and compile for
hetc's targets; bad modules are refused with the op and line."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import hetc
from families import bert_layer, gpt2_block, sdpa_shared_keys
from hetc.core.errors import FrontendError
from hetc.frontends.mlir_import import import_mlir
from hetc.ir import dtypes
from hetc.ir.graph import Graph
from hetc.ir.interpret import load_const
from hetc.ir.types import TensorType

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch_mlir") is None,
                                reason="torch-mlir's MLIR bindings are not installed "
                                       "(pip install --no-deps torch-mlir)")


def structure(g):
    """The graph from its outputs back: each op's kind, inputs, attributes,
    result names and types, each constant's bytes and each fused region's
    body (an order-free form: MLIR writes constants where they are first
    used)."""
    index, ops = {}, []

    def visit(v):
        if v not in index:
            op = v.producer
            if op is None:
                index[v] = ("input", g.inputs.index(v), v.name, str(v.type))
                return index[v]
            ins = tuple(visit(x) for x in op.inputs)
            attrs = sorted((k, repr(a)) for k, a in op.attrs.items() if k not in ("name", "value"))
            data = None
            if op.kind == "const":
                raw = g.weights[op.attrs["name"]] if "name" in op.attrs else op.attrs["value"]
                data = (np.asarray(raw).dtype.str, np.asarray(raw).tobytes(),
                        np.asarray(load_const(op, g)).tobytes())
            body = None if op.body is None else str(op.body)
            ops.append((op.kind, ins, attrs, [(o.name, str(o.type)) for o in op.outputs], data,
                        body))
            for i, o in enumerate(op.outputs):
                index[o] = ("op", len(ops) - 1, i)
        return index[v]
    return [visit(v) for v in g.outputs], ops, g.name


def _round_trip(module, *inputs, quant="dequantize"):
    g = import_mlir(module.to_mlir(quant=quant))
    assert structure(g) == structure(module.graph)
    arrays = [np.asarray(x, np.float32) for x in inputs]
    for a, b in zip(hetc.interpret(g, arrays), hetc.interpret(module.graph, arrays)):
        np.testing.assert_array_equal(a, b)
    return g


def _mlp():
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(nn.Linear(32, 48), nn.GELU(), nn.Linear(48, 16), nn.SiLU(),
                         nn.Linear(16, 8), nn.Softmax(-1))


@pytest.mark.parametrize("options", [
    {}, {"sparsity": "2:4"}, {"sparsity": "1:3", "precision": "int8"}, {"precision": "int4"},
    {"precision": "int4-asym"}, {"precision": "int8", "activations": "int8"},
    {"sparsity": "2:4", "precision": "int8"}],
    ids=lambda o: "+".join(f"{v}" for v in o.values()) or "dense")
def test_an_mlp_round_trips(options):
    x = torch.randn(6, 32, generator=torch.Generator().manual_seed(1))
    _round_trip(hetc.compile(_mlp(), target="ref", example_inputs=(x,), **options), x)


@pytest.mark.parametrize("precision", ["int8", "int4", "int4-asym"])
def test_quant_uniform_weights_round_trip(precision):
    """Weights written as quant.uniform types (per axis, sub-channel, with
    zero points) come back with their codes, scales and zero points."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 48), torch.nn.ReLU(),
                                torch.nn.Linear(48, 8))
    x = torch.randn(6, 256)
    module = hetc.compile(model, target="ref", example_inputs=(x,), precision=precision)
    _round_trip(module, x, quant="uniform")


def test_the_model_families_round_trip():
    """BERT at 2:4 with int8 weights, the residual CNN (dense, int8 and as
    fpga compiles it), GPT2Block prefill, attention with a mask and shared
    keys: each comes back as the same graph."""
    from models import examples
    x = torch.randn(1, 16, 384, generator=torch.Generator().manual_seed(2))
    _round_trip(hetc.compile(bert_layer(), target="ref", example_inputs=(x,), sparsity="2:4",
                             precision="int8"), x)
    _, cnn, (xc,) = examples()[1]
    _round_trip(hetc.compile(cnn, target="ref", example_inputs=(xc,)), xc)
    _round_trip(hetc.compile(cnn, target="ref", example_inputs=(xc,), precision="int8"), xc)
    _round_trip(hetc.compile(cnn, target="ref", example_inputs=(xc,), precision="int4"), xc,
                quant="uniform")
    _round_trip(hetc.compile(cnn, target="fpga", example_inputs=(xc,)), xc)
    xg = torch.randn(1, 12, 128, generator=torch.Generator().manual_seed(3))
    _round_trip(hetc.compile(gpt2_block(), target="ref", example_inputs=(xg,)), xg)
    sdpa, inputs = sdpa_shared_keys()
    _round_trip(hetc.compile(sdpa, target="ref", example_inputs=inputs), *inputs)


def test_decoded_weights_come_back_as_f32_and_say_so():
    """A codebook format (mx4) is written decoded to f32: the same values
    come back, as f32 weights, with a note for the report."""
    x = torch.randn(6, 32, generator=torch.Generator().manual_seed(1))
    module = hetc.compile(_mlp(), target="ref", example_inputs=(x,), precision="mx4")
    g = import_mlir(module.to_mlir())
    assert any("decoded to f32" in n for n in g.notes)
    np.testing.assert_array_equal(hetc.interpret(g, [x.numpy()])[0],
                                  hetc.interpret(module.graph, [x.numpy()])[0])


F32 = dtypes.f32
UNARY = ["neg", "abs", "exp", "tanh", "relu", "sigmoid", "silu", "erf"]
BINARY = ["add", "sub", "mul", "div", "maximum", "minimum"]


def random_graph(seed):
    """A random graph of the op kinds the exporter writes: elementwise ops
    (broadcasting), linear layers, products, norms, softmax, transposes,
    reshapes, slices, concatenations, splits."""
    rng = np.random.default_rng(seed)
    g = Graph(f"random{seed}")
    vals = [g.add_input("x", TensorType((2, 3, 8), F32))]

    def const(shape):
        return g.const(rng.standard_normal(shape).astype(np.float32), name="c",
                       inline=bool(rng.integers(2)))
    for _ in range(int(rng.integers(3, 10))):
        a = vals[int(rng.integers(len(vals)))]
        shape = a.type.shape
        pick = int(rng.integers(11))
        if pick == 0:
            out = g.add(UNARY[int(rng.integers(len(UNARY)))], [a])
        elif pick == 1:
            out = g.add("gelu", [a], {"approximate": ["none", "tanh"][int(rng.integers(2))]})
        elif pick == 2:
            other = [v for v in vals if v.type.shape == shape]
            b = other[int(rng.integers(len(other)))] if rng.integers(2) else \
                const(shape[-int(rng.integers(0, len(shape) + 1)):])
            out = g.add(BINARY[int(rng.integers(len(BINARY)))], [a, b])
        elif pick == 3:
            n = int(rng.choice([4, 8, 12]))
            ins = [a, const((n, shape[-1]))] + ([const((n,))] if rng.integers(2) else [])
            out = g.add("linear", ins)
        elif pick == 4 and len(shape) >= 2:
            perm = list(range(len(shape)))
            perm[-1], perm[-2] = perm[-2], perm[-1]
            out = g.add("matmul", [a, g.add("transpose", [a], {"perm": perm})])
        elif pick == 5:
            out = g.add("softmax", [a], {"axis": -1})
        elif pick == 6:
            kind = ["layer_norm", "rms_norm"][int(rng.integers(2))]
            out = g.add(kind, [a, const(shape[-1:])] + ([const(shape[-1:])]
                                                        if kind == "layer_norm" else []),
                        {"eps": float(rng.choice([1e-5, 1e-6]))})
        elif pick == 7 and len(shape) >= 2:
            out = g.add("transpose", [a], {"perm": list(rng.permutation(len(shape)))})
        elif pick == 8 and len(shape) >= 2:
            out = g.add("reshape", [a], {"shape": list(shape[:-2]) + [shape[-2] * shape[-1]]})
        elif pick == 9 and shape[-1] >= 2:
            out = g.add("slice", [a], {"axes": [len(shape) - 1], "starts": [1],
                                       "ends": [shape[-1]], "steps": [1]})
        elif pick == 10:
            out = g.add("concat", [a, a], {"axis": int(rng.integers(len(shape)))})
        else:
            out = g.add("split", [a], {"axis": 0, "sizes": [1, shape[0] - 1]})[0] \
                if shape[0] >= 2 else g.add("relu", [a])
        vals.append(out)
    g.outputs = [vals[-1]] + ([vals[int(rng.integers(1, len(vals)))]] if rng.integers(2) else [])
    return g


@pytest.mark.parametrize("seed", range(40))
def test_random_graphs_round_trip(seed):
    """The property: for random graphs of the exported op kinds, dense and
    compressed (2:4, int8, int4 with zero points; weights as dequantizing
    generics or quant.uniform types), import(export(g)) == g."""
    g = random_graph(seed)
    x = np.random.default_rng(seed).standard_normal((2, 3, 8)).astype(np.float32)
    options = [{}, {"sparsity": "2:4"}, {"precision": "int8"}, {"precision": "int4-asym"}][seed % 4]
    module = hetc.compile(g, target="ref", **options)
    _round_trip(module, x, quant="uniform" if seed % 8 >= 4 else "dequantize")


# -- modules hetc did not write --------------------------------------------------------

def _torch_mlir(model, *inputs, output_type="linalg-on-tensors"):
    from torch_mlir import fx
    return str(fx.export_and_import(model.eval(), *inputs, output_type=output_type))


class _Mha(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.m = torch.nn.MultiheadAttention(32, 4, batch_first=True)

    def forward(self, x):
        return self.m(x, x, x, need_weights=False)[0]


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("dialect", ["linalg-on-tensors", "tosa"])
@pytest.mark.parametrize("name", ["mlp", "conv", "groups", "bert", "gpt2", "mha"])
def test_modules_from_torch_mlir_import_and_match_pytorch(name, dialect, tmp_path):
    """torch-mlir's output, as linalg on tensors (constants as
    dense_resource blobs, named matmuls and convolutions, grouped and
    depthwise too, generics with broadcasts, reductions, linalg.index masks,
    f64 norms) and as TOSA (converted by MLIR's tosa-to-linalg: channels-last
    convolutions and pooling, linalg.reduce, batched products by constants),
    imports, matches PyTorch, and its matrix products by constants are
    linear layers hetc compresses."""
    torch.manual_seed(0)
    nn = torch.nn
    model, x = {
        "mlp": (lambda: (nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4),
                                       nn.Softmax(-1)), torch.randn(3, 8))),
        "conv": (lambda: (nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, stride=2), nn.ReLU(),
                                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32, 5)),
                          torch.randn(2, 3, 8, 8))),
        "groups": (lambda: (nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=2), nn.ReLU(),
                                          nn.Conv2d(8, 8, 3, padding=1, groups=8),
                                          nn.Flatten(), nn.Linear(512, 5)),
                            torch.randn(2, 4, 8, 8))),
        "bert": (lambda: (bert_layer(), torch.randn(1, 16, 384))),
        "gpt2": (lambda: (gpt2_block(), torch.randn(1, 12, 128))),
        "mha": (lambda: (_Mha(), torch.randn(2, 6, 32))),
    }[name]()
    path = tmp_path / f"{name}.mlir"
    path.write_text(_torch_mlir(model, x, output_type=dialect))
    g = import_mlir(str(path))
    want = model(x)
    want = (want[0] if isinstance(want, tuple) else want).detach().numpy()
    np.testing.assert_allclose(hetc.interpret(g, [x.numpy()])[0], want, atol=2e-5, rtol=1e-4)
    assert any(op.kind == "linear" for op in g.ops)
    if name in ("bert", "conv"):  # compressed and lowered for the CPU
        module = hetc.compile(str(path), target="x86", sparsity="2:4", precision="int8")
        assert "2:4" in str(module.report)
        got = module(x.numpy())
        np.testing.assert_allclose(np.asarray(got[0] if isinstance(got, list) else got),
                                   hetc.interpret(module.graph, [x.numpy()])[0],
                                   atol=1e-4, rtol=1e-3)


# -- bad modules ------------------------------------------------------------------------

@pytest.mark.parametrize("text, match", [
    ("func.func @main(%x: tensor<2xf32>) -> tensor<2xf32> {\n  return %y : tensor<2xf32>\n}",
     "not a valid MLIR module"),
    ("this is not MLIR", "not a valid MLIR module"),
    ("func.func @main(%x: tensor<?x4xf32>) -> tensor<?x4xf32> {\n"
     "  return %x : tensor<?x4xf32>\n}", r"argument 0 of type tensor<\?x4xf32>: only static"),
    ("func.func @main(%x: tensor<4xf32>) -> tensor<4xf32> {\n"
     "  %y = math.cbrt %x : tensor<4xf32>\n  return %y : tensor<4xf32>\n}",
     r"<string>:2: math.cbrt: is not imported"),
    ("func.func private @f(%x: tensor<4xf32>) -> tensor<4xf32>\n"
     "func.func @g(%x: tensor<4xf32>) -> tensor<4xf32> {\n"
     "  %y = func.call @f(%x) : (tensor<4xf32>) -> tensor<4xf32>\n  return %y : tensor<4xf32>\n}",
     "calls @f, which has no body"),
], ids=["undefined value", "not mlir", "dynamic shape", "unknown op", "external callee"])
def test_bad_modules_are_refused_with_the_problem_and_line(text, match):
    with pytest.raises(FrontendError, match=match):
        import_mlir(text)


def test_the_cli_compiles_an_mlir_file(tmp_path):
    """`hetc compile model.mlir` (the round trip of a compressed MLP through
    the CLI), and a bad file: exit code 1, the problem named, nothing written."""
    x = torch.randn(6, 32)
    module = hetc.compile(_mlp(), target="ref", example_inputs=(x,), sparsity="2:4")
    src = tmp_path / "mlp.mlir"
    src.write_text(module.to_mlir())
    out = tmp_path / "art"
    p = subprocess.run([sys.executable, "-m", "hetc", "compile", str(src), "-o", str(out),
                        "--target", "x86", "-q"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    loaded = hetc.load(str(out))
    np.testing.assert_allclose(np.asarray(loaded(x.numpy())),
                               hetc.interpret(module.graph, [x.numpy()])[0], atol=1e-5)
    bad = tmp_path / "bad.mlir"
    bad.write_text("func.func @main(%x: tensor<4xf32>) -> tensor<4xf32> {\n"
                   "  %y = math.cbrt %x : tensor<4xf32>\n  return %y : tensor<4xf32>\n}\n")
    p = subprocess.run([sys.executable, "-m", "hetc", "compile", str(bad), "-o",
                        str(tmp_path / "b")], capture_output=True, text=True)
    assert p.returncode == 1 and "bad.mlir:2: math.cbrt: is not imported" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "b").exists()
    assert os.path.exists(out)
