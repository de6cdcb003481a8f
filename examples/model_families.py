"""transformers architectures through hetc, as a new user would pass them:
each built from its config at a small size with random weights, compiled
with `hetc.compile(model, example_inputs=...)` (its forward without a
cache) for each target and compared with PyTorch, and, for causal LMs,
compiled with `decoder=` and asked for greedy tokens against transformers'
`generate`. Writes docs/model-families.md (`make families`).

    .venv/bin/python examples/model_families.py [--targets ref x86 amx npu]
        [--only NAME ...] [--markdown docs/model-families.md]

An architecture is OK on a target when the compiled forward matches
PyTorch (relative L2 error under 1e-4; amx emulated; npu, which runs
OpenVINO's CPU plugin here and keeps weights in f16, under 2e-3) and the
run raised no exception; anything refused says why; a Python exception that
is not hetc's own is a bug and is marked so.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
import warnings

import numpy as np
import torch

import hetc

TEXT = dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=128, max_position_embeddings=128, bos_token_id=0,
            eos_token_id=0, pad_token_id=0)
IMAGE = dict(image_size=32, num_channels=3, hidden_size=64, num_hidden_layers=2,
             num_attention_heads=4, intermediate_size=128)

# name -> (config class, model class, config overrides, kind): text models
# take token ids (and causal ones generate), vision ones pixels
FAMILIES = {
    "BERT": ("BertConfig", "BertModel", {}, "encoder"),
    "RoBERTa": ("RobertaConfig", "RobertaModel", {"pad_token_id": 1}, "encoder"),
    "DistilBERT": ("DistilBertConfig", "DistilBertModel",
                   dict(dim=64, n_layers=2, n_heads=4, hidden_dim=128), "encoder"),
    "ALBERT": ("AlbertConfig", "AlbertModel", dict(embedding_size=32), "encoder"),
    "ELECTRA": ("ElectraConfig", "ElectraModel", dict(embedding_size=32), "encoder"),
    "DeBERTa-v2": ("DebertaV2Config", "DebertaV2Model", {}, "encoder"),
    "MPNet": ("MPNetConfig", "MPNetModel", {"pad_token_id": 1}, "encoder"),
    "XLM-RoBERTa": ("XLMRobertaConfig", "XLMRobertaModel", {"pad_token_id": 1}, "encoder"),
    "GPT-2": ("GPT2Config", "GPT2LMHeadModel", {}, "causal"),
    "GPT-Neo": ("GPTNeoConfig", "GPTNeoForCausalLM",
                dict(attention_types=[[["global", "local"], 1]], window_size=32), "causal"),
    "GPT-NeoX": ("GPTNeoXConfig", "GPTNeoXForCausalLM", dict(rotary_pct=0.25), "causal"),
    "GPT-J": ("GPTJConfig", "GPTJForCausalLM", dict(rotary_dim=8, n_positions=128), "causal"),
    "OPT": ("OPTConfig", "OPTForCausalLM", dict(ffn_dim=128, word_embed_proj_dim=64,
                                                pad_token_id=1), "causal"),
    "Bloom": ("BloomConfig", "BloomForCausalLM", dict(n_layer=2, n_head=4), "causal"),
    "Falcon": ("FalconConfig", "FalconForCausalLM",
               dict(multi_query=True, new_decoder_architecture=False, alibi=False), "causal"),
    "Llama": ("LlamaConfig", "LlamaForCausalLM", dict(num_key_value_heads=2), "causal"),
    "Mistral": ("MistralConfig", "MistralForCausalLM", dict(num_key_value_heads=2,
                                                            sliding_window=None), "causal"),
    "Qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(num_key_value_heads=2), "causal"),
    "Phi": ("PhiConfig", "PhiForCausalLM", dict(partial_rotary_factor=0.5), "causal"),
    "Phi-3": ("Phi3Config", "Phi3ForCausalLM", dict(num_key_value_heads=2,
                                                    pad_token_id=0), "causal"),
    "Gemma": ("GemmaConfig", "GemmaForCausalLM", dict(num_key_value_heads=1, head_dim=16),
              "causal"),
    "Gemma-2": ("Gemma2Config", "Gemma2ForCausalLM", dict(num_key_value_heads=2, head_dim=16,
                                                          sliding_window=128), "causal"),
    "StableLM": ("StableLmConfig", "StableLmForCausalLM", dict(num_key_value_heads=2),
                 "causal"),
    "OLMo": ("OlmoConfig", "OlmoForCausalLM", {}, "causal"),
    "CodeGen": ("CodeGenConfig", "CodeGenForCausalLM", dict(rotary_dim=8, n_ctx=128),
                "causal"),
    "Mixtral (MoE)": ("MixtralConfig", "MixtralForCausalLM",
                      dict(num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                           sliding_window=None), "causal"),
    "Qwen2-MoE": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM",
                  dict(num_key_value_heads=2, num_experts=4, num_experts_per_tok=2,
                       moe_intermediate_size=32, shared_expert_intermediate_size=64), "causal"),
    "OLMoE": ("OlmoeConfig", "OlmoeForCausalLM",
              dict(num_key_value_heads=2, num_experts=4, num_experts_per_tok=2), "causal"),
    "Mamba (SSM)": ("MambaConfig", "MambaForCausalLM", {}, "causal"),
    "T5 encoder": ("T5Config", "T5EncoderModel", dict(d_model=64, d_ff=128, num_layers=2,
                                                      num_heads=4, d_kv=16), "encoder"),
    "ViT": ("ViTConfig", "ViTModel", dict(patch_size=8), "vision"),
    "DeiT": ("DeiTConfig", "DeiTModel", dict(patch_size=8), "vision"),
    "Swin": ("SwinConfig", "SwinModel", dict(patch_size=4, embed_dim=16, depths=[1, 1],
                                             num_heads=[2, 4], window_size=4), "vision"),
    "ConvNeXt": ("ConvNextConfig", "ConvNextModel", dict(hidden_sizes=[16, 32], depths=[1, 1],
                                                         num_stages=2), "vision"),
    "ResNet": ("ResNetConfig", "ResNetModel", dict(hidden_sizes=[16, 32], depths=[1, 1],
                                                   embedding_size=16), "vision"),
    "MobileNetV2": ("MobileNetV2Config", "MobileNetV2Model", dict(depth_multiplier=0.35),
                    "vision"),
}
TARGETS = ["ref", "x86", "amx", "npu"]
REL_TOL = 1e-4
# npu keeps weights in f16 (as NPUs compute): against the f32 model, as tests/test_npu.py
TOL = {"npu": 2e-3}


def build(name):
    import transformers

    config_cls, model_cls, overrides, kind = FAMILIES[name]
    # Swin and the convolutional nets size themselves by their own fields
    base = TEXT if kind != "vision" else IMAGE if config_cls in ("ViTConfig", "DeiTConfig") \
        else dict(image_size=32, num_channels=3)
    torch.manual_seed(0)
    config = getattr(transformers, config_cls)(**{**base, **overrides})
    model = getattr(transformers, model_cls)(config).eval()
    gen = torch.Generator().manual_seed(1)
    if kind == "vision":
        inputs = (torch.randn(1, 3, 32, 32, generator=gen),)
    else:
        inputs = (torch.randint(2, 200, (1, 12), generator=gen),)
    return model, inputs, kind


def _reference(model, inputs):
    """PyTorch's answer to the forward hetc compiles: the same call without a
    cache and the same output (the logits, or the last hidden state)."""
    from hetc.frontends.torch_fx import transformers_forward

    with torch.no_grad():
        return transformers_forward(model)(*inputs).numpy()


def _why(e):
    if isinstance(e, hetc.HetcError):
        return "refused: " + str(e).splitlines()[0][:220]
    tb = traceback.extract_tb(e.__traceback__)
    where = f"{os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else ""
    return f"BUG ({type(e).__name__} at {where}): {str(e).splitlines()[0][:160] if str(e) else ''}"


def forward(name, target):
    """'OK (error)' or why not, for the compiled forward on `target`."""
    try:
        model, inputs, _ = build(name)
        want = _reference(model, inputs)
        kw = {"emulate": True} if target == "amx" else {}
        module = hetc.compile(model, target=target, example_inputs=inputs, **kw)
        got = module(*[x.numpy() for x in inputs])
        got = np.asarray(got[0] if isinstance(got, (list, tuple)) else got, np.float64)
        # relative, with a floor: a random net may give values near 0 (MobileNetV2: 1e-25)
        err = float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-6))
        return ("OK" if err < TOL.get(target, REL_TOL) else "WRONG") + f" ({err:.1e})"
    except Exception as e:  # the table reports whatever happened
        return _why(e)


def generate(name, new=8):
    """Greedy tokens of decoder= (target ref) against transformers' generate."""
    if FAMILIES[name][3] != "causal":
        return "-"
    try:
        model, inputs, _ = build(name)
        ids = inputs[0][:, :6]
        with torch.no_grad():
            want = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                                  do_sample=False, eos_token_id=None, pad_token_id=0)
        module = hetc.compile(model, target="ref", decoder={"max_context": 32, "chunk": 4})
        got = module.generate(ids, max_new_tokens=new, eos_token_id=-1)
        return "OK (same tokens)" if torch.equal(got, want) else "WRONG (other tokens)"
    except Exception as e:
        return _why(e)


def table(rows, targets, seconds):
    head = ["architecture", *[f"forward on {t}" for t in targets], "generate (decoder=, ref)"]
    lines = ["# transformers architectures through hetc", "",
             "Generated by `make families` (examples/model_families.py): each "
             "architecture built from its config at a small size (2 layers, width 64, random "
             "weights), compiled as a user passes it (`hetc.compile(model, "
             "example_inputs=(ids,))`: its forward without a cache) and compared with "
             f"PyTorch (relative L2 error under {REL_TOL:g}; amx emulated; npu, on OpenVINO's CPU "
             f"plugin here, keeps weights in f16: under {TOL['npu']:g}); causal LMs also compiled with `decoder=` and asked for 8 greedy "
             "tokens against transformers' `generate`. \"refused\" quotes hetc's message; "
             "\"BUG\" marks an exception that is not hetc's own.", "",
             f"Run time here: {seconds:.0f} s.", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, cells in rows:
        lines.append("| " + " | ".join([name, *[c.replace("|", "/") for c in cells]]) + " |")
    ok = sum(all(c.startswith("OK") or c == "-" for c in cells) for _, cells in rows)
    lines += ["", f"**{ok} of {len(rows)} architectures OK on every column.**", ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", nargs="+", default=TARGETS)
    ap.add_argument("--only", nargs="+", default=None)
    ap.add_argument("--markdown", default=None, help="write the table here")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    start = time.time()
    rows = []
    for name in args.only or FAMILIES:
        cells = [forward(name, t) for t in args.targets] + [generate(name)]
        rows.append((name, cells))
        print(f"{name:16s} " + " | ".join(c[:60] for c in cells), flush=True)
    text = table(rows, args.targets, time.time() - start)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
        print(f"wrote {args.markdown}")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
