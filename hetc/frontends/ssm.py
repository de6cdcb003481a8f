"""A transformers Mamba causal LM as one generation step over its recurrent state.

A state-space model carries no KV cache: each layer keeps a convolution
state (the last conv_kernel - 1 inputs of its causal depthwise convolution)
and an SSM state ([intermediate, state_size]) that every token updates. The
step graph takes them and gives them back after its tokens:

    step(ids [1, C] i64, positions [1, C] i64, mask [1, 1, C, MAX + C] bool,
         state_0 .. state_{2L-1})
      -> (logits [1, C, vocab], new state_0 .. new state_{2L-1})

with states (conv, ssm) per layer: conv [1, intermediate, conv_kernel - 1],
ssm [1, intermediate, state_size]. positions and mask are those of the KV
step (hetc.runtime.generate.step_inputs); only positions is read: the rows
that pad a chunk repeat the last real position, so the real tokens are the
first row and each row whose position moves on. A padding row's time step is
0, which leaves the SSM state as it is, and the new convolution state is
read at the last real inputs; the padding rows' logits are not used.

The mixer is written here after transformers' reference path (causal conv1d,
selective scan with softplus time steps, D skip, SiLU gate), since
transformers' own forward starts every multi-token call from a zero state.

torch is imported inside the functions that use it: `import hetc` must not
load heavy optional packages.
"""

from __future__ import annotations


def is_mamba(model) -> bool:
    """A transformers Mamba (1) LM: its mixers are exactly MambaMixer (Mamba-2
    and FalconMamba mixers compute differently and are refused)."""
    backbone = getattr(model, "backbone", None)
    layers = getattr(backbone, "layers", None)
    return bool(layers) and hasattr(model, "lm_head") and all(
        type(getattr(b, "mixer", None)).__name__ == "MambaMixer" for b in layers)


def state_shapes(model) -> list:
    """[conv, ssm] shapes of each layer's state, in step-input order."""
    shapes = []
    for block in model.backbone.layers:
        m = block.mixer
        shapes += [[1, m.intermediate_size, m.conv_kernel_size - 1],
                   [1, m.intermediate_size, m.ssm_state_size]]
    return shapes


def _mixer(m, h, valid, conv_state, ssm_state):
    """One mixer over C tokens from the given states: (output, conv, ssm)."""
    import torch
    import torch.nn.functional as F

    c = h.shape[1]
    x, z = m.in_proj(h).transpose(1, 2).chunk(2, dim=1)  # [1, D, C] each
    k = m.conv_kernel_size
    xc = torch.cat([conv_state.to(x.dtype), x], dim=2)  # [1, D, K-1+C]
    y = F.conv1d(xc, m.conv1d.weight, m.conv1d.bias, groups=m.intermediate_size)
    x = m.act(y)  # [1, D, C]
    # the new conv state: the K-1 inputs ending at the last real token (counts
    # in f32, exact at these sizes, which every target computes on)
    n = valid.sum()
    pick = torch.arange(k - 1 + c, dtype=valid.dtype).unsqueeze(1) == \
        (n + torch.arange(k - 1, dtype=valid.dtype)).unsqueeze(0)
    new_conv = xc @ pick.to(xc.dtype)  # [1, D, K-1]
    dt, b, cc = torch.split(m.x_proj(x.transpose(1, 2)),
                            [m.time_step_rank, m.ssm_state_size, m.ssm_state_size], dim=-1)
    dt = F.softplus(m.dt_proj(dt)).transpose(1, 2) * valid  # [1, D, C]
    a = -torch.exp(m.A_log.float())  # [D, N]
    da = torch.exp(a[None, :, None, :] * dt[:, :, :, None])  # [1, D, C, N]
    dbx = dt[:, :, :, None] * b[:, None, :, :] * x[:, :, :, None]
    state, outs = ssm_state, []
    for t in range(c):
        state = da[:, :, t] * state + dbx[:, :, t]
        outs.append(state @ cc[:, t, :, None])  # [1, D, 1]
    y = torch.cat(outs, dim=2) + x * m.D[None, :, None]
    y = y * m.act(z)
    return m.out_proj(y.transpose(1, 2)), new_conv, state


def step(model, ids, positions, mask, *states):
    """One call of a Mamba LM on C new tokens from its recurrent states."""
    import torch

    p = positions[0]
    valid = torch.cat([torch.ones(1, dtype=torch.bool), p[1:] > p[:-1]]).float()
    bb = model.backbone
    h = bb.embeddings(ids)
    new = []
    for i, block in enumerate(bb.layers):
        residual = h
        out, conv, ssm = _mixer(block.mixer, block.norm(h), valid,
                                states[2 * i], states[2 * i + 1])
        h = residual + out
        new += [conv, ssm]
    logits = model.lm_head(bb.norm_f(h))
    return (logits, *new)
