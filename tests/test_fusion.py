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
    assert "fused" in kinds
    if name == "llama":  # the hand-written RMSNorm is an rms_norm again
        assert kinds.count("rms_norm") == 5 and "rsqrt" not in kinds
    if name == "gpt2":  # Conv1D's matmuls are linear layers again
        assert "matmul" not in kinds and kinds.count("linear") >= 9


def test_fusion_then_compression_sees_layers_inside_the_text_form():
    name, model, inputs = examples()[0]
    module = hetc.compile(model, example_inputs=inputs, pipeline="canonicalize,raise-patterns,fuse")
    text = module.ir
    assert "fused(" in text and "graph @linear_gelu(" in text
    assert hetc.ir.parse(text, weights=module.graph.weights) == module.graph
