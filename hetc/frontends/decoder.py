"""A Hugging Face causal LM as one generation step with a static KV cache.

Static-shape hardware (an NPU) compiles one graph of fixed shapes; generation
is dynamic. The step graph makes everything that depends on where the
sequence is a graph input:

    step(ids [1, C] i64, positions [1, C] i64, mask [1, 1, C, MAX + C] bool,
         past_0 .. past_{L-1} [2, 1, kv heads, MAX, head dim])
      -> (logits [1, C, vocab], new_0 .. new_{L-1} [2, 1, kv heads, C, head dim])

The cache holds MAX slots per layer (keys, then values; empty slots are
zeros); `new` holds the keys (after the rotary embedding) and values of the C
tokens of this call, which the caller writes into the cache
(hetc.runtime.generate). mask[0, 0, i, j] opens key j to query i: keys
0..MAX-1 are the cache slots, MAX..MAX+C-1 this call's tokens. Prefill runs
in chunks of C tokens; decoding runs the same graph with one real token.

torch and transformers are imported inside the functions that use them: `import hetc` must not
load heavy optional packages.
"""

from __future__ import annotations

from hetc.core.errors import UsageError
from hetc.runtime.generate import DecoderSpec, step_inputs

from . import ssm
from .torch_fx import import_module, wrapping


def _kv_step(model, ids, positions, mask, *past):
    """One call of `model` on C new tokens against a MAX-slot cache."""
    import torch
    from transformers import DynamicCache

    # The full static cache seeds the model's cache; its own update then
    # appends the C new keys/values, so attention sees MAX + C keys in the
    # mask's order. A 4-D mask reaches attention as given, and explicit
    # positions drive the rotary (or learned) position embedding.
    cache = DynamicCache(config=model.config)
    for i, kv in enumerate(past):
        cache.update(kv[0], kv[1], i)
    if _alibi(model.config):
        # ALiBi models build their biases (and causal mask) from a 2-D mask
        # of the keys in use; the slots fill in token order, so the keys
        # any query opens are exactly those, at their token positions
        mask = mask.any(dim=2).reshape(1, -1).long()
    elif model.config._attn_implementation != "sdpa":  # eager adds the mask
        dtype = past[0].dtype if past else torch.float32
        mask = torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)
    out = model(input_ids=ids, position_ids=positions, attention_mask=mask,
                past_key_values=cache, use_cache=True)
    c = ids.shape[1]
    new = [torch.stack([layer.keys[:, :, -c:], layer.values[:, :, -c:]])
           for layer in out.past_key_values.layers]
    return (out.logits, *new)


def _alibi(cfg) -> bool:
    """Whether the model's positions are ALiBi biases (Bloom, MPT, Falcon's
    ALiBi variant) rather than embeddings or rotations."""
    return bool(getattr(cfg, "alibi", False)) or getattr(cfg, "model_type", "") in ("bloom", "mpt")


DEFAULTS = {"max_context": 256, "chunk": 8}


def decoder_spec(model, options) -> DecoderSpec:
    """The spec for a transformers causal LM and the user's `decoder=` options."""
    cfg = getattr(model, "config", None)
    if cfg is None or not callable(model):
        raise UsageError(f"decoder= needs a transformers causal LM (a model with a .config), "
                         f"got {type(model).__name__}")
    opts = dict(DEFAULTS)
    if options is not True:
        if not isinstance(options, dict):
            raise UsageError(f"decoder= takes True or a dict of max_context, chunk; got "
                             f"{type(options).__name__}")
        unknown = set(options) - set(DEFAULTS)
        if unknown:
            raise UsageError(f"decoder= has no option(s) {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(DEFAULTS)})")
        opts.update(options)
    for key, value in opts.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UsageError(f"decoder= {key} must be a positive integer, got {value!r}")
    if opts["chunk"] > opts["max_context"]:
        raise UsageError(f"decoder= chunk {opts['chunk']} exceeds max_context {opts['max_context']}")
    limit = getattr(cfg, "max_position_embeddings", None)
    if limit and opts["max_context"] > limit:
        raise UsageError(f"decoder= max_context {opts['max_context']} exceeds the model's "
                         f"{limit} positions (config.max_position_embeddings)")
    window = getattr(cfg, "sliding_window", None) or (  # GPT-Neo's local layers
        getattr(cfg, "window_size", None) if "local" in str(getattr(cfg, "attention_layers", ""))
        else None)
    if window and window < opts["max_context"] + opts["chunk"]:
        raise UsageError(f"decoder=: this model attends to a sliding window of {window} tokens, "
                         f"shorter than max_context + chunk; its cache drops old entries, "
                         f"which a static cache does not model (use max_context <= "
                         f"{window - opts['chunk']})")
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    eos = [eos] if isinstance(eos, int) else [int(t) for t in eos or ()]
    if ssm.is_mamba(model):  # recurrent states, no KV cache
        states = ssm.state_shapes(model)
        return DecoderSpec(opts["max_context"], opts["chunk"], len(states) // 2, 0, 0, eos,
                           states)
    layers, kv_heads, head_dim = probe_cache(model)
    return DecoderSpec(opts["max_context"], opts["chunk"], layers, kv_heads, head_dim, eos)


def probe_cache(model):
    """(layers, kv heads, head dim) of the model's KV cache, read from the
    cache the model itself builds on one token (not from config field names,
    which families spell differently: multi-query, grouped-query); a model
    whose cache is not keys and values per attention layer (state-space,
    recurrent), or whose positions are ALiBi biases, is refused up front."""
    import torch

    name = type(model).__name__
    cfg = model.config
    if getattr(cfg, "is_encoder_decoder", False):
        raise UsageError(f"decoder=: {name} is an encoder-decoder model; decoder= takes "
                         f"decoder-only causal LMs (encoder-decoder generation is not "
                         f"supported yet)")
    try:
        with torch.no_grad():
            out = model(input_ids=torch.zeros(1, 1, dtype=torch.long), use_cache=True)
    except Exception as e:  # the model's own errors: say which model and what
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UsageError(f"decoder=: {name} did not run on one token with use_cache=True "
                         f"({type(e).__name__}: {first[:200]}); decoder= takes transformers "
                         f"causal LMs") from None
    cache = getattr(out, "past_key_values", None) or getattr(out, "cache_params", None)
    layers = getattr(cache, "layers", None)
    keys = [getattr(layer, "keys", None) for layer in layers or ()]
    if not keys or any(k is None or k.dim() != 4 for k in keys):
        kinds = sorted({type(layer).__name__ for layer in layers or ()})
        held = f" of {', '.join(kinds)} layers" if kinds else ""
        raise UsageError(f"decoder=: {name} keeps a {type(cache).__name__} cache{held}, not "
                         f"keys and values per attention layer (state-space and recurrent "
                         f"models are not supported yet)")
    shapes = {(k.shape[1], k.shape[3]) for k in keys}
    if len(shapes) != 1:
        raise UsageError(f"decoder=: {name}'s layers keep caches of different shapes "
                         f"{sorted(shapes)}, which one static cache layout does not hold")
    kv_heads, head_dim = shapes.pop()
    return len(keys), int(kv_heads), int(head_dim)


def example_step_inputs(spec: DecoderSpec, vocab: int, seed=0, dtype=None):
    """Step inputs of the right shapes and dtypes: a prefill chunk of random
    token ids (seeded) against an empty cache of `dtype` (the model's float
    type; f32 by default). Tracing needs the shapes; the compression passes
    use it as their one calibration sample."""
    import torch

    positions, mask = step_inputs(0, spec.chunk, spec.chunk, spec.max_context)
    past = [torch.zeros(2, 1, spec.kv_heads, spec.max_context, spec.head_dim, dtype=dtype)
            for _ in range(spec.layers)] if not spec.states else \
        [torch.zeros(shape, dtype=dtype) for shape in spec.states]
    ids = torch.randint(0, vocab, (1, spec.chunk), generator=torch.Generator().manual_seed(seed))
    return (ids, torch.from_numpy(positions), torch.from_numpy(mask), *past)


CALIBRATION_NOTE = ("decoder=: compression calibrated and checked on one prefill chunk of "
                    "random token ids (no text was given)")


def import_decoder(model, options):
    """(Graph of the step, DecoderSpec, example step inputs) for a transformers
    causal LM."""

    spec = decoder_spec(model, options)
    # import_module traces it in inference mode
    step = wrapping(model, ssm.step if spec.states else _kv_step)
    floats = [p.dtype for p in model.parameters() if p.is_floating_point()]
    inputs = example_step_inputs(spec, model.config.vocab_size,
                                 dtype=floats[0] if floats else None)
    graph = import_module(step, inputs, name=type(model).__name__)
    return graph, spec, inputs
