"""hetc's graphs as TVM Relax modules (hetc/ir/relax.py), compiled by TVM
for llvm and run on this CPU, against the interpreter: TVM runs the graph
hetc runs, op for op."""

import importlib.util
import warnings

import numpy as np
import pytest
import torch

import hetc
from families import bert_layer, gpt2_block
from hetc.core.errors import TargetError
from hetc.ir import relax as relax_export

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tvm") is None,
                                reason="apache-tvm is not installed")


def _check(module, *inputs):
    arrays = [np.asarray(x, np.float32) for x in inputs]
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        mod = module.to_relax()
    got = relax_export.run(mod, arrays)
    want = hetc.interpret(module.graph, arrays)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5 * max(1.0, float(np.abs(w).max())))
    # hetc's own warnings only: the record is process-wide, and other libraries'
    # threads (left by earlier tests in this worker) may warn meanwhile
    return [str(w.message) for w in said if "hetc" in w.filename.replace("\\", "/").split("/")]


def test_a_compressed_mlp_runs_in_tvm_with_its_weights_decoded():
    torch.manual_seed(0)
    nn = torch.nn
    mlp = nn.Sequential(nn.Linear(32, 48), nn.GELU(), nn.Linear(48, 8), nn.Softmax(-1))
    x = torch.randn(4, 32)
    assert _check(hetc.compile(mlp, target="ref", example_inputs=(x,)), x) == []
    module = hetc.compile(mlp, target="ref", example_inputs=(x,), sparsity="2:4",
                          precision="int8", activations="int8")
    said = _check(module, x)
    assert any("2 compressed weight(s) decoded to float32" in s for s in said)


def test_model_families_run_in_tvm():
    """The examples' ResNet-style CNN (also as target fpga compiles it, with
    int8 activations per pixel), a BERT layer and a GPT2Block."""
    from models import examples
    _, cnn, (x,) = examples()[1]
    _check(hetc.compile(cnn, target="ref", example_inputs=(x,)), x)
    _check(hetc.compile(cnn, target="fpga", example_inputs=(x,)), x)
    h = torch.randn(1, 16, 384, generator=torch.Generator().manual_seed(2))
    _check(hetc.compile(bert_layer(), target="ref", example_inputs=(h,)), h)
    g = torch.randn(1, 12, 128, generator=torch.Generator().manual_seed(3))
    _check(hetc.compile(gpt2_block(), target="ref", example_inputs=(g,)), g)


class _CumSum(torch.nn.Module):
    def forward(self, x):
        return x.cumsum(-1)


def test_what_is_not_exported_is_refused_by_name():
    module = hetc.compile(_CumSum(), target="ref", example_inputs=(torch.randn(2, 8),))
    with pytest.raises(TargetError, match=r"to_relax: op #\d+ cumsum \(%cumsum\) is not "
                                          r"exported yet"):
        module.to_relax()
