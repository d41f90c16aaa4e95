"""Attention probabilities recomputed from a layer's captured input: what the notebooks draw and
the long-context stage's entropy measurement reads (paper §2).
"""

from __future__ import annotations

import math

import torch
from einops import einsum, rearrange, repeat

from minimistral.arch.model import Ministral3, attention_mask
from minimistral.arch.rope import apply_rotary


# ----------------------------------------------------------------------------- attention
class _Stop(Exception):
    """Raised by a capture hook to end the forward pass once the wanted tensor is seen."""


def _capture(model: Ministral3, module: torch.nn.Module, input_ids: torch.Tensor, pre: bool, **images) -> torch.Tensor:
    """Run ``model`` on ``input_ids`` (and ``images``: ``pixel_values``, ``image_sizes``) until ``module``
    runs; return its input (``pre``) or output."""
    seen: list[torch.Tensor] = []

    def hook(_module, args, output=None):
        seen.append((args[0] if pre else output).detach())
        raise _Stop

    handle = module.register_forward_pre_hook(hook) if pre else module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(input_ids, **images)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not seen:
        raise RuntimeError("the hooked module did not run")
    return seen[0]


def attention_inputs(model: Ministral3, input_ids: torch.Tensor, layer: int, **images) -> dict[str, torch.Tensor]:
    r"""Queries, keys and values of one layer as its attention sees them (paper section 2).

    The layer's input is captured after its attention RMSNorm (a forward hook on
    ``model.model.layers[layer].input_layernorm``); q/k/v are recomputed with the layer's
    own projections, rotated by RoPE (YaRN frequencies), the queries multiplied by the
    temperature $\tau(p)$, and each KV head repeated for its $G$ query heads.
    Positions start at 0 (a fresh prompt, no cache). Returns ``q``, ``k``, ``v``
    ``[batch, heads, seq, head_dim]`` in float32 and ``temperature`` ``[seq]``.
    """
    block = model.model.layers[layer]
    attn = block.self_attn
    x = _capture(model, block.input_layernorm, input_ids, pre=False, **images)  # [b, t, hidden]
    t = x.shape[1]
    with torch.no_grad():
        cos, sin, temp = model.model.rotary(0, t, x.device, x.dtype)  # [t, d], [t, d], [t, 1]
        q = rearrange(attn.q_proj(x), "b t (h d) -> b h t d", d=attn.head_dim)  # [b, n_heads, t, d]
        k = rearrange(attn.k_proj(x), "b t (h d) -> b h t d", d=attn.head_dim)  # [b, n_kv, t, d]
        v = rearrange(attn.v_proj(x), "b t (h d) -> b h t d", d=attn.head_dim)  # [b, n_kv, t, d]
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if temp is not None:
            q = q * temp  # [b, n_heads, t, d] * [t, 1]: queries only, after RoPE
        g = attn.n_heads // attn.n_kv
        k = repeat(k, "b kv t d -> b (kv g) t d", g=g)  # [b, n_heads, t, d]
        v = repeat(v, "b kv t d -> b (kv g) t d", g=g)  # [b, n_heads, t, d]
    ones = torch.ones(t, device=x.device)
    tau = ones if temp is None else temp[:, 0].float()
    return {"q": q.float(), "k": k.float(), "v": v.float(), "temperature": tau}


def attention_probabilities(model: Ministral3, input_ids: torch.Tensor, layer: int, **images) -> torch.Tensor:
    r"""Softmax attention of one layer, ``[batch, heads, seq, seq]`` (query rows, key columns).

    $P = \mathrm{softmax}\big(\tau(p)\, R_p q \cdot (R_s k)^\top / \sqrt{d} + M\big)$ with the
    causal mask $M$ (and the sliding window, if the config has one), the quantity the
    model's ``scaled_dot_product_attention`` call computes implicitly (paper section 2).
    ``images`` (``pixel_values``, ``image_sizes``) go to a vision-language model with the prompt.
    Computed in float32; ``P @ v`` reproduces the layer's attention output before ``o_proj``.
    """
    qkv = attention_inputs(model, input_ids, layer, **images)
    q, k = qkv["q"], qkv["k"]  # [b, h, t, d]
    t, d = q.shape[2], q.shape[3]
    scores = einsum(q, k, "b h i d, b h j d -> b h i j") / math.sqrt(d)  # [b, h, t, t]
    allowed = attention_mask(t, 0, model.config.sliding_window, q.device)  # [t, t] bool
    scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(dim=-1)  # [b, h, t, t]


def attention_heads_output(model: Ministral3, input_ids: torch.Tensor, layer: int) -> torch.Tensor:
    """What the model's own attention (SDPA) hands to ``o_proj`` in one layer, ``[batch, heads, seq, head_dim]``.

    Captured with a forward pre-hook on ``self_attn.o_proj``; the reference that
    :func:`attention_probabilities` must reproduce (``P @ v``).
    """
    attn = model.model.layers[layer].self_attn
    heads = _capture(model, attn.o_proj, input_ids, pre=True)  # [b, t, n_heads * d]
    return rearrange(heads, "b t (h d) -> b h t d", d=attn.head_dim)


def attention_entropy(probs: torch.Tensor) -> torch.Tensor:
    r"""Entropy (nats) of each attention row: ``[..., seq, seq]`` -> ``[..., seq]``.

    $H_i = -\sum_j P_{ij} \ln P_{ij}$; $\ln(i + 1)$ for a uniform row over the causal
    prefix, 0 for a row on one key. The query temperature (paper section 2) lowers it
    past the original window: a sharper softmax over a longer prefix.
    """
    logs = probs.clamp_min(torch.finfo(probs.dtype).tiny).log()  # masked keys have P = 0: 0 * log(tiny) = 0
    return -einsum(probs, logs, "... i j, ... i j -> ... i")
