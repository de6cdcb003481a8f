"""Real model families through hetc.compile(target="ref") against PyTorch:
a ViT encoder, BERT with pretrained weights (all-MiniLM-L6-v2), GPT-2 and
Llama style decoders with a KV cache (prefill and a decode step), and the
pretrained SmolLM2-135M. (The MLP and the ResNet-style CNN are in
test_models.py.)"""

import pytest
import torch

import hetc
from families import KVStep, Logits, gpt2_tiny, llama_tiny, minilm, smollm2, vit

REL_TOL = 1e-4  # relative L2 error against PyTorch in f32


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


def check(model, inputs):
    module = hetc.compile(model, example_inputs=inputs)
    with torch.no_grad():
        expected = model(*inputs)
    got = module(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = got if isinstance(got, tuple) else (got,)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and rel_err(g, e) < REL_TOL
    return module, got


def test_vit_encoder():
    model, inputs = vit()
    module, _ = check(model, inputs)
    assert {"conv2d", "attention", "layer_norm", "gelu"} <= {op.kind for op in module.graph.ops}


def test_bert_with_pretrained_weights():
    model, inputs = minilm()
    module, (hidden,) = check(model, inputs)
    assert hidden.shape[-1] == 384
    layers = {r.name for r in module.report.layers}
    assert "model.encoder.layer.5.attention.self.query" in layers  # all 6 pretrained layers


@pytest.mark.parametrize("make", [gpt2_tiny, llama_tiny], ids=["gpt2", "llama"])
def test_decoder_prefill_and_decode_with_kv_cache(make):
    step = KVStep(make())
    ids = torch.randint(0, 256, (1, 6), generator=torch.Generator().manual_seed(1))
    _, (logits, present) = check(step, (ids, step.empty_cache()))
    assert present.shape[4] == 6
    # the decode step takes the cache the compiled prefill produced
    nxt = logits[:, -1:].argmax(-1)
    _, (logits2, present2) = check(step, (nxt, present))
    assert present2.shape[4] == 7


def test_llama_structure_after_import():
    step = KVStep(llama_tiny())
    module = hetc.compile(step, example_inputs=(torch.zeros(1, 3, dtype=torch.long),
                                                step.empty_cache()))
    ops = list(module.graph.walk())
    kinds = {op.kind for op in ops}
    # GQA repeats kv heads with expand; RMSNorm arrives written out (rsqrt of a mean);
    # the RoPE sin/cos tables and the causal mask depend only on shapes: constants
    assert {"attention", "silu", "expand", "rsqrt", "reduce_mean", "embedding"} <= kinds
    assert not {"sin", "cos"} & kinds
    attention = [op for op in ops if op.kind == "attention"]
    assert len(attention) == 2
    assert all(op.inputs[3].producer.kind == "const" for op in attention)


def test_smollm2_pretrained_greedy_token():
    model, tok = smollm2()
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    module, (logits,) = check(Logits(model), (ids,))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    assert int(logits[0, -1].argmax()) == int(expected[0, -1].argmax())


def test_efficientnet_lite0_pretrained_on_a_real_photo():
    from families import crop, efficientnet_lite0, photos

    model = efficientnet_lite0()
    x = crop(photos()["chelsea"])  # a tabby cat
    module, (logits,) = check(model, (x,))
    assert int(logits.argmax()) in range(281, 286)  # ImageNet's domestic cat classes
    assert {"conv2d", "pad"} <= {op.kind for op in module.graph.ops}
