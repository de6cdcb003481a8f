"""Mixture-of-experts layers of transformers models, traced as hetc compiles them.

transformers dispatches its experts modules (`@use_experts_implementation`:
Mixtral, Qwen-MoE, OLMoE, ...) through a registry of implementations; the
default one loops over the experts a batch hits, with data-dependent shapes
that torch.export cannot trace statically. While hetc traces a model, its
experts run the implementation registered here instead: every expert is
computed densely on every token, as plain `linear` layers on its own slice of
the expert weights (so compression decides per expert, with names such as
`model.layers.0.mlp.experts.down_proj.3`), and the results are summed with
the router's weights (zero for experts a token did not pick).

What it costs: num_experts / top_k times the expert compute of a sparse
dispatch (4x for Mixtral's 2 of 8), in exchange for static shapes; the
router's top-k and its weights are exact.

torch is imported inside the functions that use it: `import hetc` must not
load heavy optional packages.
"""

from __future__ import annotations

from contextlib import contextmanager

IMPLEMENTATION = "hetc_dense"


def _linear(x, weight, bias, transposed):
    import torch.nn.functional as F

    return F.linear(x, weight.t() if transposed else weight, bias)


def dense_experts_forward(self, hidden_states, top_k_index, top_k_weights):
    """Every expert on every token, weighted by the router (0 where unpicked)."""
    import torch

    experts = torch.arange(self.num_experts, device=hidden_states.device)
    picked = (top_k_index.unsqueeze(-1) == experts).to(top_k_weights.dtype)  # [T, K, E]
    route = (picked * top_k_weights.unsqueeze(-1)).sum(dim=1)  # [T, E]
    up_name = "gate_up_proj" if self.has_gate else "up_proj"
    up_weights, down_weights = getattr(self, up_name), self.down_proj
    out = None
    for e in range(self.num_experts):
        up_bias = getattr(self, f"{up_name}_bias")[e] if self.has_bias else None
        y = _linear(hidden_states, up_weights[e], up_bias, self.is_transposed)
        y = self._apply_gate(y) if self.has_gate else self.act_fn(y)
        down_bias = self.down_proj_bias[e] if self.has_bias else None
        y = _linear(y, down_weights[e], down_bias, self.is_transposed)
        if self.has_post_expert_norm:
            y = self.post_expert_norm(y)
        y = y * route[:, e:e + 1].to(y.dtype)
        out = y if out is None else out + y
    return out.to(hidden_states.dtype)


def _experts_configs(module):
    """The configs of a module's transformers experts modules."""
    configs = []
    for m in module.modules():
        config = getattr(m, "config", None)
        if hasattr(m, "has_gate") and hasattr(m, "_apply_gate") and \
                hasattr(config, "_experts_implementation") and \
                all(c is not config for c in configs):
            configs.append(config)
    return configs


@contextmanager
def dense_experts(module):
    """Within the block, the transformers experts modules in `module` run
    `dense_experts_forward`; their configs are given back afterwards."""
    configs = _experts_configs(module)
    if not configs:
        yield
        return
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    ALL_EXPERTS_FUNCTIONS[IMPLEMENTATION] = dense_experts_forward
    saved = [c._experts_implementation for c in configs]
    for c in configs:
        c._experts_implementation = IMPLEMENTATION
    try:
        yield
    finally:
        for c, value in zip(configs, saved):
            c._experts_implementation = value
