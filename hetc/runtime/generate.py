"""Greedy generation with a static KV cache, for step graphs made with
`hetc.compile(..., decoder=...)` (see hetc.frontends.decoder for the step's
signature). The cache is a HostCache (host memory: each call passes it in
and gets back the keys and values of its tokens, written into their
slots), or an executor's own with the same methods (cuda keeps it on the
device). State-space models (hetc.frontends.ssm) carry recurrent states
instead: a StateCache passes them in and keeps the ones each call gives back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from hetc.core.errors import HetcError, UsageError

from .buffers import aligned_zeros


@dataclass(frozen=True)
class DecoderSpec:
    """The shapes of a step graph, saved in the artifact for `generate`."""

    max_context: int  # cache slots: prompt + new tokens must fit
    chunk: int  # tokens per call
    layers: int
    kv_heads: int
    head_dim: int
    eos_token_id: list = field(default_factory=list)  # generation stops at any of these
    # a state-space model's recurrent state shapes (step-input order); no KV cache then
    states: list = field(default_factory=list)

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        """The spec saved in an artifact; HetcError when it is not one."""
        fields = ("max_context", "chunk", "layers", "kv_heads", "head_dim")
        ok = isinstance(d, dict) and set(fields) | {"eos_token_id"} <= set(d) <= \
            set(fields) | {"eos_token_id", "states"} and all(
            type(d[k]) is int and 0 <= d[k] < 1 << 31 for k in fields) and \
            isinstance(d["eos_token_id"], list) and all(type(t) is int for t in d["eos_token_id"])
        states = d.get("states", []) if ok else []
        ok = ok and isinstance(states, list) and all(
            isinstance(s, list) and s and all(type(n) is int and 0 < n < 1 << 31 for n in s)
            for s in states) and (bool(states) or min(d[k] for k in fields) > 0)
        if not ok:
            raise HetcError("the artifact's decoder description is damaged (it needs positive "
                            "integers " + ", ".join(fields) + ", a list eos_token_id and "
                            "optionally a list of state shapes)")
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


class HostCache:
    """The static KV cache in host memory: each step passes it to `step`
    (a callable on numpy arrays) and gets back the keys and values of its
    tokens, written into their slots by `append`. Executors that keep the
    cache where their kernels run offer the same two methods
    (`decoder_cache`)."""

    def __init__(self, step, spec, dtype=np.float32):
        self.run, self.new = step, []
        self.layers = [aligned_zeros((2, 1, spec.kv_heads, spec.max_context, spec.head_dim), dtype)
                       for _ in range(spec.layers)]

    def step(self, ids, positions, mask):
        """The logits of one call; its new keys and values wait for append."""
        logits, *self.new = self.run(ids, positions, mask, *self.layers)
        return logits

    def append(self, pos, n):
        """The last step's first n new tokens into slots pos..pos+n-1."""
        for layer, kv in zip(self.layers, self.new):
            layer[:, :, :, pos:pos + n] = kv[:, :, :, :n]

    def close(self):
        pass


class StateCache:
    """A state-space model's recurrent states in host memory: each step
    passes them to `step` and keeps the ones it gives back (the step itself
    leaves out the rows that pad a chunk)."""

    def __init__(self, step, spec, dtype=np.float32):
        self.run, self.new = step, []
        self.states = [aligned_zeros(shape, dtype) for shape in spec.states]

    def step(self, ids, positions, mask):
        logits, *self.new = self.run(ids, positions, mask, *self.states)
        return logits

    def append(self, pos, n):
        self.states = [np.asarray(s) for s in self.new]

    def close(self):
        pass


def generate(cache, spec, input_ids, max_new_tokens, eos_token_id=None, progress=None):
    """Greedy tokens after `input_ids` ([T] or [1, T]): prefill in chunks of
    spec.chunk tokens, then one token per call, through `cache` (a
    HostCache, or an executor's own). Stops at `max_new_tokens` or an
    end-of-sequence token (an id or a list of ids; default: the model's).
    Returns the new token ids as a list."""
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
    pos, out, pending = 0, [], prompt
    try:
        while True:
            for start in range(0, len(pending), spec.chunk):
                toks = pending[start:start + spec.chunk]
                n = len(toks)
                ids = np.array([toks + [toks[-1]] * (spec.chunk - n)], np.int64)
                logits = cache.step(ids, *step_inputs(pos, n, spec.chunk, spec.max_context))
                cache.append(pos, n)
                pos += n
            token = int(np.asarray(logits)[0, n - 1].argmax())
            out.append(token)
            done = len(out) == max_new_tokens or token in eos
            if progress is not None:  # an end-of-sequence token ends the count early
                progress(len(out), len(out) if done else max_new_tokens, "generated tokens")
            if done:
                return out
            pending = [token]
    finally:
        cache.close()
