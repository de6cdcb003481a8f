"""Greedy generation with a static KV cache, for step graphs made with
`hetc.compile(..., decoder=...)` (see hetc.frontends.decoder for the step's
signature). The cache lives here, on the host: each call passes it in and
gets back the keys and values of its tokens, written into their slots.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from hetc.core.errors import HetcError, UsageError


@dataclass(frozen=True)
class DecoderSpec:
    """The shapes of a step graph, saved in the artifact for `generate`."""

    max_context: int  # cache slots: prompt + new tokens must fit
    chunk: int  # tokens per call
    layers: int
    kv_heads: int
    head_dim: int
    eos_token_id: list = field(default_factory=list)  # generation stops at any of these

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        """The spec saved in an artifact; HetcError when it is not one."""
        fields = ("max_context", "chunk", "layers", "kv_heads", "head_dim")
        ok = isinstance(d, dict) and set(d) == set(fields) | {"eos_token_id"} and all(
            type(d[k]) is int and 0 < d[k] < 1 << 31 for k in fields) and \
            isinstance(d["eos_token_id"], list) and all(type(t) is int for t in d["eos_token_id"])
        if not ok:
            raise HetcError("the artifact's decoder description is damaged (it needs positive "
                            "integers " + ", ".join(fields) + " and a list eos_token_id)")
        return cls(**d)


def step_inputs(pos, n, chunk, max_context):
    """positions [1, C] and mask [1, 1, C, MAX + C] for n real tokens at
    slots pos..pos+n-1. Rows n..C-1 pad the chunk: they repeat the last real
    position and attend causally, so no row is fully masked; nothing reads them."""
    p = np.minimum(pos + np.arange(chunk), pos + n - 1)
    cached = np.broadcast_to(np.arange(max_context) < pos, (chunk, max_context))
    causal = np.tril(np.ones((chunk, chunk), bool))
    mask = np.concatenate([cached, causal], axis=1)[None, None]
    return p[None].astype(np.int64), np.ascontiguousarray(mask)


def generate(step, spec, input_ids, max_new_tokens, eos_token_id=None, progress=None,
             cache_dtype=np.float32):
    """Greedy tokens after `input_ids` ([T] or [1, T]): prefill in chunks of
    spec.chunk tokens, then one token per call. `step(*arrays)` runs the step
    graph on numpy arrays; the cache holds `cache_dtype` (the step's). Stops at `max_new_tokens` or an end-of-sequence
    token (an id or a list of ids; default: the model's). Returns the new
    token ids as a list."""
    ids = np.asarray(input_ids)
    if ids.ndim > 2 or (ids.ndim == 2 and ids.shape[0] != 1):
        raise UsageError(f"generate takes one sequence ([T] or [1, T] token ids), got shape "
                         f"{list(ids.shape)}")
    prompt = [int(t) for t in ids.reshape(-1)]
    if not prompt or max_new_tokens < 1:
        raise UsageError("generate needs at least one prompt token and max_new_tokens >= 1")
    need = len(prompt) + max_new_tokens - 1
    if need > spec.max_context:
        raise UsageError(f"{len(prompt)} prompt tokens + {max_new_tokens} new ones need {need} "
                         f"cache slots; this model was compiled with max_context="
                         f"{spec.max_context} (compile with a larger decoder max_context)")
    if eos_token_id is None:
        eos = set(spec.eos_token_id)
    else:
        eos = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id)
    cache = [np.zeros((2, 1, spec.kv_heads, spec.max_context, spec.head_dim), cache_dtype)
             for _ in range(spec.layers)]
    pos, out, pending = 0, [], prompt
    while True:
        for start in range(0, len(pending), spec.chunk):
            toks = pending[start:start + spec.chunk]
            n = len(toks)
            ids = np.array([toks + [toks[-1]] * (spec.chunk - n)], np.int64)
            positions, mask = step_inputs(pos, n, spec.chunk, spec.max_context)
            logits, *new = step(ids, positions, mask, *cache)
            for layer, kv in zip(cache, new):
                layer[:, :, :, pos:pos + n] = kv[:, :, :, :n]
            pos += n
        token = int(np.asarray(logits)[0, n - 1].argmax())
        out.append(token)
        done = len(out) == max_new_tokens or token in eos
        if progress is not None:  # an end-of-sequence token ends the count early
            progress(len(out), len(out) if done else max_new_tokens, "generated tokens")
        if done:
            return out
        pending = [token]
