"""hetc's graphs as upstream MLIR (hetc/ir/mlir.py), parsed, verified,
compiled and run by MLIR itself (torch-mlir's bindings: the sparsifier
pipeline and the ExecutionEngine), against the interpreter: dense, N:M
(sparse_tensor structured levels through MLIR's sparsifier), quantized
(codes dequantized by a generic) and int8 activations."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import hetc
from families import bert_layer, gpt2_block, sdpa_shared_keys
from hetc.core.errors import TargetError, UsageError
from hetc.driver import mlir_run
from hetc.ir.mlir import LOWER, to_mlir

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch_mlir") is None,
                                reason="torch-mlir's MLIR bindings are not installed "
                                       "(pip install --no-deps torch-mlir)")
ROOT = os.path.join(os.path.dirname(__file__), "..")


def _mlp():
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(nn.Linear(32, 48), nn.GELU(), nn.Linear(48, 16), nn.ReLU(),
                         nn.Linear(16, 8), nn.Softmax(-1))


def _check(module, *inputs, tol=1e-5):
    text = module.to_mlir()
    arrays = [np.asarray(x, np.float32) for x in inputs]
    got = mlir_run.run(text, arrays, [v.type.shape for v in module.graph.outputs])
    want = hetc.interpret(module.graph, arrays)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=tol * max(1.0, float(np.abs(w).max())))
    return text


@pytest.mark.parametrize("options", [
    {}, {"sparsity": "2:4"}, {"sparsity": "1:4"}, {"sparsity": "1:3", "precision": "int8"},
    {"sparsity": "2:8"}, {"sparsity": "4:8", "precision": "int4"}, {"precision": "int8"},
    {"precision": "int4"}, {"precision": "int4-asym"}, {"precision": "mx4"},
    {"precision": "int8", "activations": "int8"}],
    ids=lambda o: "+".join(f"{v}" for v in o.values()) or "dense")
def test_an_mlp_compiled_by_mlir_matches_the_interpreter(options):
    """The MLP dense, with every N:M pattern (MLIR's structured[n, m]
    levels, compiled by its sparsifier), quantized weights (codes times
    scales in a generic; codebook formats decoded) and int8 activations."""
    x = torch.randn(6, 32, generator=torch.Generator().manual_seed(1))
    module = hetc.compile(_mlp(), target="ref", example_inputs=(x,), **options)
    text = _check(module, x)
    nm = options.get("sparsity")
    if nm:
        n, m = nm.split(":")
        assert f"structured[{n}, {m}]" in text and "sparse_tensor.convert" in text
    if options.get("precision") in ("int8", "int4", "int4-asym") and not nm:
        assert "arith.sitofp" in text or "arith.uitofp" in text  # dequantized in MLIR
    assert "hetc.layers = {" in text


@pytest.mark.parametrize("precision", ["int8", "int4", "int4-asym"])
def test_quant_uniform_weights_compiled_by_mlir_match(precision):
    """quant="uniform": codes cast to `!quant.uniform` types (per axis, and
    sub-channel for int4's groups of 128 inputs, zero points for the
    asymmetric form) dequantized by MLIR's own lower-quant-ops: an
    independent check of hetc's quantization arithmetic."""
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Linear(256, 48), nn.GELU(), nn.Linear(48, 16))
    x = torch.randn(6, 256, generator=torch.Generator().manual_seed(1))
    module = hetc.compile(model, target="ref", example_inputs=(x,), precision=precision)
    text = module.to_mlir(quant="uniform")
    assert text.count("quant.dcast") == 2 and "arith.sitofp" not in text
    if precision != "int8":
        assert "!quant.uniform<" + ("u4" if precision == "int4-asym" else "i4") + \
            ":f32:{0:1, 1:128}" in text  # sub-channel: a scale per row and 128 inputs
    got = mlir_run.run(text, [x.numpy()], [v.type.shape for v in module.graph.outputs])
    np.testing.assert_allclose(got[0], hetc.interpret(module.graph, [x.numpy()])[0],
                               atol=1e-5)


def test_a_transformer_encoder_layer_compiled_by_mlir_matches():
    """A MiniLM-sized BERT layer (reshapes, transposes, batched products,
    softmax, layer norms, GELU) at 2:4 with int8 weights."""
    x = torch.randn(1, 16, 384, generator=torch.Generator().manual_seed(2))
    module = hetc.compile(bert_layer(), target="ref", example_inputs=(x,), sparsity="2:4",
                          precision="int8")
    _check(module, x, tol=1e-5)


@pytest.mark.parametrize("options", [{}, {"sparsity": "2:4", "precision": "int8"}, "fpga"],
                         ids=["dense", "2:4+int8", "fpga's int8 activations"])
def test_a_residual_cnn_compiled_by_mlir_matches(options):
    """The examples' ResNet-style CNN (strided 3x3 convolutions as generics
    over tensor.pad, batch norms, residual adds, global average pooling, a
    classifier); its fpga graph quantizes each pixel's channels
    (conv2d act_group) in MLIR too."""
    from models import examples
    _, cnn, (x,) = examples()[1]
    if options == "fpga":
        module = hetc.compile(cnn, target="fpga", example_inputs=(x,))
        assert any(op.attrs.get("act_group") for op in module.graph.ops if op.kind == "conv2d")
    else:
        module = hetc.compile(cnn, target="ref", example_inputs=(x,), **options)
    _check(module, x)


def test_grouped_and_depthwise_convolutions_compiled_by_mlir_match():
    """linalg's named convolutions: conv_2d_nchw_fchw, and per group
    conv_2d_ngchw_gfchw (a grouped and a depthwise, strided and dilated one)."""
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=2), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, stride=2, padding=(1, 2), groups=8, dilation=2),
                          nn.Conv2d(8, 6, 1))
    x = torch.randn(2, 4, 9, 9, generator=torch.Generator().manual_seed(5))
    text = _check(hetc.compile(model, target="ref", example_inputs=(x,)), x)
    assert text.count("linalg.conv_2d_ngchw_gfchw") == 2 and "linalg.conv_2d_nchw_fchw" in text


def test_a_gpt2_block_and_attention_compiled_by_mlir_match():
    """transformers' GPT2Block on a sequence (prefill: causal attention, the
    fused q/k/v split, GELU with pow), and the attention op with a float
    mask and keys and values broadcast over heads."""
    x = torch.randn(1, 12, 128, generator=torch.Generator().manual_seed(3))
    module = hetc.compile(gpt2_block(), target="ref", example_inputs=(x,))
    assert {"attention", "split", "pow"} <= {op.kind for op in module.graph.ops}
    _check(module, x)
    sdpa, inputs = sdpa_shared_keys()
    _check(hetc.compile(sdpa, target="ref", example_inputs=inputs), *inputs)


@pytest.mark.parametrize("family", ["minilm", "gpt2", "llama"])
def test_whole_models_from_token_ids_compiled_by_mlir_match(family):
    """Whole models as users run them, from token ids: pretrained
    all-MiniLM-L6-v2 (ids, attention mask and token types: embeddings, a
    bool attention mask), GPT-2 and Llama language models (tied embedding
    and head, causal attention, RoPE's slices and concatenations), compiled
    by MLIR and checked against the interpreter; read back as the same graph."""
    from families import Logits, gpt2_tiny, llama_tiny, minilm
    from test_mlir_import import structure
    from hetc.frontends.mlir_import import import_mlir
    if family == "minilm":
        model, inputs = minilm()
    else:
        model = Logits(gpt2_tiny() if family == "gpt2" else llama_tiny())
        inputs = (torch.randint(0, 256, (1, 12), generator=torch.Generator().manual_seed(6)),)
    module = hetc.compile(model, target="ref", example_inputs=inputs)
    assert any(op.kind == "embedding" for op in module.graph.ops)
    text = module.to_mlir()
    arrays = [np.asarray(x) for x in inputs]
    got = mlir_run.run(text, arrays, [v.type.shape for v in module.graph.outputs])
    want = hetc.interpret(module.graph, arrays)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5 * max(1.0, float(np.abs(w).max())))
    assert structure(import_mlir(text)) == structure(module.graph)


def test_every_exported_op_kind_verifies():
    """Each op kind the exporter takes, in a small graph, parses and
    verifies in MLIR (and runs: the interpreter agrees)."""
    class Ops(torch.nn.Module):
        def forward(self, x, y):
            a = torch.relu(x) - torch.tanh(y) * torch.sigmoid(x) / (1 + torch.exp(-y.abs()))
            b = torch.nn.functional.silu(a) + torch.sqrt(x * x + 1) + torch.rsqrt(y * y + 1)
            c = torch.maximum(a, b) + torch.minimum(a, -b) + torch.erf(a)
            d = torch.nn.functional.layer_norm(c, (8,)) @ c.transpose(-1, -2)
            e = torch.nn.functional.rms_norm(c, (8,), eps=1e-6)
            f = torch.nn.functional.gelu(e, approximate="tanh").reshape(2, 3, 8)
            g = torch.cat([f[:, 1:3] ** 3, f[:, :1].expand(2, 2, 8), *f.split([1, 2], 1)], 1)
            p = torch.nn.functional.max_pool2d(g[:, None], 3, stride=2, padding=1, ceil_mode=True)
            return d.softmax(-1), g, p
    x, y = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    module = hetc.compile(Ops(), target="ref", example_inputs=(x, y))
    kinds = {op.kind for op in module.graph.ops} - {"const"}
    assert kinds <= set(LOWER)
    text = _check(module, x, y)
    mlir_run.verify(text)


INT_POW = ("graph @g(%x: tensor<2x3xi64>) -> (tensor<2x3xi64>) {\n"
           "  %y = pow(%x, %x) : tensor<2x3xi64>\n  return %y\n}\n")


def test_what_is_not_exported_is_refused_by_name():
    from hetc.ir.parser import parse
    graph = parse(INT_POW)
    with pytest.raises(TargetError, match=r"to_mlir: pow %y: i64 operands \(not exported\)"):
        to_mlir(graph)
    unsigned = parse(INT_POW.replace("i64", "u8"))
    with pytest.raises(TargetError, match=r"value %x is u8 \(exported: f32, "):
        to_mlir(unsigned)
    with pytest.raises(UsageError, match="quant must be one of dequantize, uniform, decode"):
        to_mlir(graph, quant="fancy")


def test_the_cli_emits_mlir(tmp_path):
    hir = os.path.join(ROOT, "tests", "lit", "fold.hir")
    out = tmp_path / "fold.mlir"
    p = subprocess.run([sys.executable, "-m", "hetc", "opt", hir, "-p", "fold,dce", "--emit",
                        "mlir", "-o", str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    mlir_run.verify(out.read_text())
    # compile writes the artifact and the compiled graph as MLIR; a graph it cannot
    # export is refused before anything is written
    p = subprocess.run([sys.executable, "-m", "hetc", "compile", hir, "-o", str(tmp_path / "a"),
                        "--mlir", str(tmp_path / "a.mlir"), "-q"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    mlir_run.verify((tmp_path / "a.mlir").read_text())
    p = subprocess.run([sys.executable, "-m", "hetc", "compile", hir, "-o", str(tmp_path / "q"),
                        "--precision", "int8", "--mlir", str(tmp_path / "q.mlir"),
                        "--mlir-quant", "uniform", "-q"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    mlir_run.verify((tmp_path / "q.mlir").read_text())
    cumsum = tmp_path / "pow.hir"
    cumsum.write_text(INT_POW)
    p = subprocess.run([sys.executable, "-m", "hetc", "compile", str(cumsum), "-o",
                        str(tmp_path / "b"),
                        "--mlir", str(tmp_path / "b.mlir")], capture_output=True, text=True)
    assert p.returncode == 1 and "(not exported)" in p.stderr, p.stderr
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.mlir").exists()
