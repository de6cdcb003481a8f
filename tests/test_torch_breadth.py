"""torch.nn modules and ATen ops the PyTorch importer takes beyond the model
families: multi-head attention and the Transformer layers (unflatten),
1-D convolutions (and Core ATen's `convolution`), group norm, hardswish and
hardsigmoid, softplus, repeat_interleave, adaptive_avg_pool1d, roll, baddbmm,
reshape_as, view_as and expand_as, vector norms,
where with a scalar, any and all, and upsampling (nearest,
nearest-exact, bilinear, bicubic, linear; align_corners both ways), each
against PyTorch on ref, and the larger ones on x86 too."""

import numpy as np
import pytest
import torch

import hetc

nn = torch.nn
F = torch.nn.functional


class _Mha(nn.Module):
    def __init__(self):
        super().__init__()
        self.m = nn.MultiheadAttention(32, 4, batch_first=True)

    def forward(self, x):
        return self.m(x, x, x, need_weights=False)[0]


class _Fn(nn.Module):
    """A module of one function of its inputs."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


CASES = {
    "multihead_attention": (_Mha, (_x(2, 6, 32),)),
    "transformer_encoder_layer": (lambda: nn.TransformerEncoderLayer(32, 4, 64, batch_first=True),
                                  (_x(2, 6, 32),)),
    "transformer_decoder_layer": (lambda: nn.TransformerDecoderLayer(32, 4, 64, batch_first=True),
                                  (_x(2, 6, 32), _x(2, 5, 32, seed=1))),
    "conv1d": (lambda: nn.Sequential(nn.Conv1d(4, 8, 3, padding=1), nn.ReLU(),
                                     nn.Conv1d(8, 8, 3, stride=2, groups=2, dilation=2),
                                     nn.Conv1d(8, 6, 5, padding="same")), (_x(2, 4, 16),)),
    "convolution_core_aten": (lambda: _Fn(lambda x, w: torch.ops.aten.convolution(
        x, w, None, [1], [1], [1], False, [0], 1)), (_x(2, 4, 9), _x(6, 4, 3, seed=1))),
    "group_norm": (lambda: nn.Sequential(nn.Conv2d(4, 8, 3), nn.GroupNorm(2, 8)),
                   (_x(2, 4, 8, 8),)),
    "hardswish_hardsigmoid": (lambda: nn.Sequential(nn.Linear(8, 8), nn.Hardswish(),
                                                    nn.Linear(8, 8), nn.Hardsigmoid()),
                              (_x(3, 8) * 4,)),
    "roll": (lambda: _Fn(lambda x: torch.roll(x, (2, -1), (1, 2)) + torch.roll(x, 5)),
             (_x(2, 4, 3),)),
    "baddbmm": (lambda: _Fn(lambda a, b, c: torch.baddbmm(a, b, c, beta=0.5, alpha=2.0)),
                (_x(2, 3, 5), _x(2, 3, 4, seed=1), _x(2, 4, 5, seed=2))),
    "where_scalar": (lambda: _Fn(lambda x: torch.where(x > 0, x, 0.5) +
                                 torch.where(x < 1, -2.0, x)), (_x(3, 4),)),
    "any_all": (lambda: _Fn(lambda x: (x > 0).any(dim=1).float() + (x > -1).all().float() +
                            x.any(dim=(0, 1), keepdim=True).float()), (_x(3, 4),)),
    "softplus": (lambda: _Fn(lambda x: F.softplus(x) + F.softplus(x, beta=2.0, threshold=3.0)),
                 (_x(3, 8) * 6,)),
    "repeat_interleave": (lambda: _Fn(lambda x: x.repeat_interleave(2, dim=-1) +
                                      x.repeat_interleave(2).reshape(3, 8)), (_x(3, 4),)),
    "adaptive_avg_pool1d": (lambda: nn.AdaptiveAvgPool1d(2), (_x(2, 3, 8),)),
    # ConvNeXt V2's global response norm; torch.norm; every order
    "vector_norm": (lambda: _Fn(lambda x: torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True) +
                                torch.linalg.vector_norm(x, ord=float("inf")) +
                                torch.linalg.vector_norm(x, ord=-float("inf"), dim=2).sum() +
                                torch.linalg.vector_norm(x, ord=0) +
                                torch.linalg.vector_norm(x, ord=1, dim=0).sum() +
                                torch.norm(x, p=3, dim=1).sum() + torch.norm(x)),
                    (_x(2, 5, 7),)),
    # LeViT's batch norm over flattened tokens: reshape_as; view_as, expand_as
    "reshape_as_view_as_expand_as": (lambda: _Fn(lambda x, y: x.flatten(0, 1).reshape_as(x) +
                                                 y.view_as(x) + x[:, :1].expand_as(x)),
                                     (_x(2, 3, 4), _x(6, 4, seed=1))),
    "upsample_bilinear": (lambda: _Fn(lambda x: F.interpolate(x, scale_factor=2,
                                                              mode="bilinear")), (_x(1, 2, 5, 7),)),
    "upsample_bilinear_align": (lambda: _Fn(lambda x: F.interpolate(
        x, size=(4, 13), mode="bilinear", align_corners=True)), (_x(1, 2, 5, 7),)),
    "upsample_bicubic": (lambda: _Fn(lambda x: F.interpolate(x, scale_factor=2, mode="bicubic")),
                         (_x(1, 2, 5, 7),)),
    "upsample_nearest": (lambda: _Fn(lambda x: F.interpolate(x, size=(8, 9)) +
                                     F.interpolate(x, size=(8, 9), mode="nearest-exact")),
                         (_x(1, 2, 5, 7),)),
    "upsample_linear_1d": (lambda: _Fn(lambda x: F.interpolate(x, scale_factor=2, mode="linear")),
                           (_x(1, 2, 7),)),
    # ceil_mode windows past the (padded) input, one per axis: Hugging Face
    # EfficientNet's AvgPool2d(1280, ceil_mode=True) on 3x3; padded ones
    # with and without the padding counted (PyTorch refuses such max pools)
    "avg_pool_ceil_mode_wide": (lambda: _Fn(lambda x: F.avg_pool2d(x, 8, ceil_mode=True) +
                                            F.avg_pool2d(x, 6, 5, padding=1, ceil_mode=True) +
                                            F.avg_pool2d(x, (6, 3), 5, padding=1, ceil_mode=True,
                                                         count_include_pad=False)),
                                (_x(2, 3, 3, 4),)),
}
ON_X86 = ["multihead_attention", "transformer_encoder_layer", "conv1d", "group_norm",
          "upsample_bilinear", "any_all", "avg_pool_ceil_mode_wide"]


def _check(name, target):
    build, inputs = CASES[name]
    torch.manual_seed(0)
    model = build().eval()
    module = hetc.compile(model, target=target, example_inputs=inputs)
    got = module(*[x.numpy() for x in inputs])
    got = got[0] if isinstance(got, (list, tuple)) else got
    with torch.no_grad():
        want = model(*inputs).numpy()
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_module_matches_pytorch_on_ref(name):
    _check(name, "ref")


@pytest.mark.parametrize("name", ON_X86)
def test_module_matches_pytorch_on_x86(name):
    _check(name, "x86")


def test_a_transposed_convolution_is_refused_by_name():
    model = nn.ConvTranspose1d(4, 4, 3).eval()
    with pytest.raises(hetc.HetcError, match=r"conv_transpose1d.*not supported"):
        hetc.compile(model, target="ref", example_inputs=(_x(1, 4, 8),))


def test_transformers_models_compile_as_users_pass_them():
    """A transformers causal LM with (ids,) compiles its forward without a
    cache and returns the logits (the report says so and points to decoder=
    for generation); a BertModel with keyword inputs (ids and a padding
    mask) returns its last hidden state, on x86; the graph is named after
    the model's class."""
    from families import gpt2_tiny
    from transformers import BertConfig, BertModel

    lm = gpt2_tiny()
    ids = torch.randint(0, 256, (1, 10), generator=torch.Generator().manual_seed(0))
    module = hetc.compile(lm, example_inputs=(ids,))
    assert module.graph.name == "GPT2LMHeadModel"
    assert any("use_cache=False" in n for n in module.report.notes)
    assert any("decoder=" in n for n in module.report.notes)
    with torch.no_grad():
        want = lm(ids, use_cache=False).logits.numpy()
    np.testing.assert_allclose(module(ids.numpy()), want, rtol=1e-4, atol=1e-5)

    torch.manual_seed(0)
    bert = BertModel(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=128, vocab_size=200)).eval()
    ids = torch.randint(0, 200, (2, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    module = hetc.compile(bert, target="x86", example_inputs=dict(input_ids=ids,
                                                                  attention_mask=mask))
    assert [v.name for v in module.graph.inputs] == ["input_ids", "attention_mask"]
    with torch.no_grad():
        want = bert(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    got = module(input_ids=ids.numpy(), attention_mask=mask.numpy())
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=2e-5)


def _greedy(model, ids, new):
    with torch.no_grad():
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                              do_sample=False, eos_token_id=None, pad_token_id=0)


def test_decoder_reads_the_cache_layout_from_the_model():
    """decoder= sizes the static cache from the cache the model builds, not
    from config names: Falcon with multi-query attention (one KV head, which
    its config does not call num_key_value_heads) generates transformers'
    greedy tokens, and so does Bloom, whose positions are ALiBi biases (built
    by the model from a 2-D mask of the cache slots in use); state-space
    models other than Mamba (FalconMamba) and encoder-decoders are refused
    up front, naming the model."""
    import transformers as tf

    torch.manual_seed(0)
    falcon = tf.FalconForCausalLM(tf.FalconConfig(
        vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        multi_query=True, new_decoder_architecture=False, alibi=False, bos_token_id=0,
        eos_token_id=0)).eval()
    ids = torch.randint(2, 256, (1, 6), generator=torch.Generator().manual_seed(0))
    module = hetc.compile(falcon, target="ref", decoder={"max_context": 32, "chunk": 4})
    assert module.artifact.extra["decoder"]["kv_heads"] == 1
    assert torch.equal(module.generate(ids, max_new_tokens=10, eos_token_id=-1),
                       _greedy(falcon, ids, 10))
    bloom = tf.BloomForCausalLM(tf.BloomConfig(vocab_size=256, hidden_size=64, n_layer=2,
                                               n_head=4)).eval()
    module = hetc.compile(bloom, target="ref", decoder={"max_context": 32, "chunk": 4})
    assert torch.equal(module.generate(ids, max_new_tokens=10, eos_token_id=-1),
                       _greedy(bloom, ids, 10))
    refused = {
        "state-space": tf.FalconMambaForCausalLM(tf.FalconMambaConfig(
            vocab_size=256, hidden_size=64, num_hidden_layers=2)),
        "encoder-decoder": tf.T5ForConditionalGeneration(tf.T5Config(
            vocab_size=256, d_model=64, d_ff=128, num_layers=2, num_heads=4, d_kv=16)),
    }
    for why, model in refused.items():
        with pytest.raises(hetc.HetcError, match=f"decoder=: {type(model).__name__} .*{why}"):
            hetc.compile(model.eval(), target="ref", decoder={"max_context": 32, "chunk": 4})


def test_integer_position_ids_run_on_x86():
    """RoBERTa's position ids (a cumsum of the padding mask, torch.gather of
    token types) and OPT's generation step (integer positions) compute in
    integers on x86: RoBERTa matches PyTorch, OPT generates transformers'
    greedy tokens."""
    import transformers as tf

    torch.manual_seed(0)
    roberta = tf.RobertaModel(tf.RobertaConfig(vocab_size=200, hidden_size=64,
                                               num_hidden_layers=2, num_attention_heads=4,
                                               intermediate_size=128)).eval()
    ids = torch.randint(3, 200, (2, 9), generator=torch.Generator().manual_seed(2))
    module = hetc.compile(roberta, target="x86", example_inputs=(ids,))
    with torch.no_grad():
        want = roberta(ids).last_hidden_state.numpy()
    np.testing.assert_allclose(np.asarray(module(ids.numpy())), want, rtol=1e-4, atol=2e-5)
    opt = tf.OPTForCausalLM(tf.OPTConfig(vocab_size=256, hidden_size=64, ffn_dim=128,
                                         num_hidden_layers=2, num_attention_heads=4,
                                         word_embed_proj_dim=64, bos_token_id=0,
                                         eos_token_id=0, pad_token_id=1)).eval()
    ids = torch.randint(2, 256, (1, 6), generator=torch.Generator().manual_seed(3))
    module = hetc.compile(opt, target="x86", decoder={"max_context": 32, "chunk": 4})
    assert torch.equal(module.generate(ids, max_new_tokens=10, eos_token_id=-1),
                       _greedy(opt, ids, 10))


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("family", list(__import__("model_families").FAMILIES))
def test_every_transformers_family_imports_or_is_refused_by_hetc(family):
    """Each architecture of `make families` (docs/model-families.md) imports
    as users pass it, or is refused with hetc's own error naming what is
    missing; decoder= sizes its cache or refuses the family up front. Never
    another exception (the full table, every target, is `make families`)."""
    from model_families import FAMILIES, build

    from hetc.frontends.decoder import decoder_spec

    model, inputs, kind = build(family)
    try:
        graph = hetc.import_model(model, example_inputs=inputs)
        assert graph.ops
    except hetc.HetcError as e:
        assert "not supported" in str(e) or "refused" in str(e), e
    if FAMILIES[family][3] == "causal":
        try:
            spec = decoder_spec(model, {"max_context": 32, "chunk": 4})
            assert spec.layers == 2 and (spec.kv_heads >= 1 or spec.states)
        except hetc.HetcError as e:
            assert f"decoder=: {type(model).__name__}" in str(e) or "sliding window" in str(e), e


def test_mixture_of_experts_runs_every_expert_as_a_named_layer_compressed_per_expert():
    """Mixtral's router (softmax, topk, renormalized weights) and its experts
    import: each expert is a `linear` layer named after its slice of the
    stacked expert weights, computed on every token and weighted by the
    router (zero where unpicked); compression decides per expert; the
    compiled model matches PyTorch on x86, and an int8 expert layer is
    reported as such."""
    from model_families import build

    model, inputs, _ = build("Mixtral (MoE)")
    with torch.no_grad():
        want = model(*inputs, use_cache=False).logits.numpy()
    module = hetc.compile(model, target="x86", example_inputs=inputs)
    np.testing.assert_allclose(module(inputs[0].numpy()), want, rtol=1e-4, atol=1e-4)
    assert sum(o.kind == "topk" for o in module.graph.ops) == 2  # one router per layer
    names = {r.name for r in module.report.layers}
    experts = {f"model.layers.{i}.mlp.experts.{w}.{e}" for i in range(2) for e in range(4)
               for w in ("gate_up_proj", "down_proj")}
    assert experts <= names

    module = hetc.compile(model, target="ref", example_inputs=inputs,
                          precision={"experts.down_proj.3": "int8", ".": "none"})
    rows = {r.name: r.precision for r in module.report.layers}
    assert rows["model.layers.1.mlp.experts.down_proj.3"] == "i8"
    assert rows["model.layers.1.mlp.experts.down_proj.2"] != "i8"


def test_mamba_steps_carry_its_recurrent_state_across_chunks_and_padding():
    """decoder= on a Mamba LM: the step takes and gives back each layer's
    convolution and SSM states. Fed 9 tokens as a chunk of 4, a chunk of 3
    real tokens and a padding row, then one token per call, its logits at
    every position equal transformers' forward over the whole sequence (ref
    and x86); int8 on x86 and npu generates transformers' greedy tokens."""
    import transformers as tf

    from hetc.runtime.generate import DecoderSpec, StateCache, step_inputs

    torch.manual_seed(0)
    model = tf.MambaForCausalLM(tf.MambaConfig(vocab_size=256, hidden_size=64,
                                               num_hidden_layers=2, state_size=8)).eval()
    ids = torch.randint(2, 256, (1, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(ids).logits[0].numpy()
    for target in ("ref", "x86"):
        module = hetc.compile(model, target=target, decoder={"max_context": 32, "chunk": 4})
        spec = DecoderSpec.from_dict(module.artifact.extra["decoder"])
        assert spec.states == [[1, 128, 3], [1, 128, 8]] * 2
        cache, pos, got = StateCache(lambda *a: module(*a), spec), 0, []
        for n in (4, 3, 1, 1):
            toks = ids[0, pos:pos + n].tolist()
            chunk = np.array([toks + [toks[-1]] * (4 - n)], np.int64)
            logits = cache.step(chunk, *step_inputs(pos, n, 4, 32))
            cache.append(pos, n)
            got.append(np.asarray(logits)[0, :n])
            pos += n
        np.testing.assert_allclose(np.concatenate(got), want, rtol=1e-4, atol=1e-4)
    prompt = ids[:, :6]
    for target in ("x86", "npu"):
        module = hetc.compile(model, target=target, precision="int8",
                              decoder={"max_context": 32, "chunk": 4})
        assert torch.equal(module.generate(prompt, max_new_tokens=8, eos_token_id=-1),
                           _greedy(model, prompt, 8))
