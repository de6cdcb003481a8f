"""Fusion: raised patterns and fused regions compute the same numbers."""

import numpy as np
import pytest
import torch

import hetc
from families import Logits, gpt2_tiny, llama_tiny
from hetc.passes.pipeline import PassManager
from models import examples

MODELS = [(n, m, x) for n, m, x in examples()] + [
    ("llama", Logits(llama_tiny()), (torch.randint(0, 256, (1, 6)),)),
    ("gpt2", Logits(gpt2_tiny()), (torch.randint(0, 256, (1, 6)),)),
]


@pytest.mark.parametrize("name, model, inputs", MODELS, ids=[m[0] for m in MODELS])
def test_fused_graphs_compute_the_same(name, model, inputs):
    graph = hetc.compile(model, example_inputs=inputs).graph
    arrays = [x.numpy() for x in inputs]
    before = hetc.interpret(graph, arrays)
    fused = PassManager.from_text("raise-patterns,fuse,dce").run(graph.copy())
    after = hetc.interpret(fused, arrays)
    for a, b in zip(after, before):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    kinds = [op.kind for op in fused.ops]
    # GPT-2's one elementwise chain, its gelu_new, is a single gelu now
    assert "fused" in kinds or (name == "gpt2" and kinds.count("gelu") == 2)
    if name == "llama":  # the hand-written RMSNorm is an rms_norm again
        assert kinds.count("rms_norm") == 5 and "rsqrt" not in kinds
    if name == "gpt2":  # Conv1D's matmuls are linear layers again, gelu_new a gelu
        assert "matmul" not in kinds and kinds.count("linear") >= 9
        assert "pow" not in kinds and "tanh" not in kinds


class _TanhGelu(torch.nn.Module):
    """GELU's tanh form written out: x^3 as pow (GPT-2's gelu_new) or as
    products, operands in either order; `c` in place of 0.044715 (a
    different function) must stay as it is."""

    def __init__(self, cube, c=0.044715):
        super().__init__()
        self.cube, self.c = cube, c

    def forward(self, x):
        x3 = torch.pow(x, 3.0) if self.cube == "pow" else x * x * x
        inner = (x + self.c * x3) if self.cube == "pow" else (x3 * self.c + x)
        t = torch.tanh(0.7978845608028654 * inner)
        return 0.5 * x * (1.0 + t) if self.cube == "pow" else (t + 1.0) * (x * 0.5)


@pytest.mark.parametrize("cube, c, raised", [("pow", 0.044715, True), ("mul", 0.044715, True),
                                             ("pow", 0.05, False)])
def test_gelu_written_out_is_raised_to_gelu(cube, c, raised):
    model, x = _TanhGelu(cube, c).eval(), torch.randn(4, 64) * 3
    module = hetc.compile(model, target="x86", example_inputs=(x,))
    kinds = [op.kind for op in module.graph.ops] + [
        o.kind for op in module.graph.ops if op.kind == "fused" for o in op.body.ops]
    assert ("gelu" in kinds and "tanh" not in kinds) == raised, kinds
    with torch.no_grad():
        np.testing.assert_allclose(module(x.numpy()), model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_fusion_then_compression_sees_layers_inside_the_text_form():
    name, model, inputs = examples()[0]
    module = hetc.compile(model, example_inputs=inputs, pipeline="canonicalize,raise-patterns,fuse")
    text = module.ir
    assert "fused(" in text and "graph @linear_gelu(" in text
    assert hetc.ir.parse(text, weights=module.graph.weights) == module.graph
