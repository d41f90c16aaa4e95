"""Small, inspectable views of the architecture, for ``notebooks/01_architecture.ipynb``.

Paper section 2 (architecture): a dense decoder with grouped-query attention (32 query
heads share 8 KV heads), RoPE extended to 256k tokens with YaRN (factor 16 over a
16,384-token window) and a position-based softmax temperature on the queries. Every
function here reads the library's own modules (``minimistral.rope``, ``minimistral.model``,
``minimistral.params``), so what the notebook plots is what the model computes.
"""

from __future__ import annotations

import math
import tempfile

import torch
from einops import einsum, rearrange, repeat

from minimistral.config import ModelConfig
from minimistral.hub import from_pretrained
from minimistral.model import Ministral3, attention_mask
from minimistral.params import GROUPS, count_parameters, parameter_breakdown
from minimistral.rope import apply_rotary, inverse_frequencies, query_temperature, rope_frequencies, yarn_ramp

REGIONS = ("extrapolated", "blended", "interpolated")


# ----------------------------------------------------------------------------- RoPE / YaRN
def yarn_regions(cfg: ModelConfig) -> dict:
    r"""Per RoPE channel pair: frequency, wavelength, YaRN ramp and region (paper section 2).

    YaRN (the paper's long-context RoPE) treats channel pairs by how many full turns
    they make inside the original window $L$ (16,384 tokens for Ministral 3):

    - ``'extrapolated'`` (ramp 0): fast pairs, at least ``beta_fast`` turns in the window.
      Their frequency is kept; they encode local order and see no new angles at long range.
    - ``'interpolated'`` (ramp 1): slow pairs, at most ``beta_slow`` turns. Their frequency is
      divided by the factor $s$, so 16x longer positions map onto angles seen in training.
    - ``'blended'`` (0 < ramp < 1): a linear mix in between.

    Returns a dict of ``[head_dim/2]`` tensors ``pair``, ``original_frequency``,
    ``yarn_frequency``, ``wavelength`` and ``yarn_wavelength`` (tokens per turn,
    $2\pi/\omega$), ``rotations`` (turns in the original window, $L/\lambda$), ``ramp``;
    ``label`` (list of region names); and scalars ``low``, ``high`` (the ramp's pair
    range), ``factor`` and ``original_max``. A config without YaRN has ramp 0 everywhere.
    """
    half = cfg.head_dim // 2
    original = rope_frequencies(cfg.head_dim, cfg.rope_theta)  # [half]
    yarn, _ = inverse_frequencies(cfg)  # [half]; equals `original` without YaRN
    window = cfg.original_max_position_embeddings or cfg.max_position_embeddings
    if cfg.uses_yarn:
        r = yarn_ramp(cfg)
        ramp, low, high, factor = r.ramp, r.low, r.high, cfg.yarn_factor
    else:
        ramp, low, high, factor = torch.zeros(half), float(half), float(half), 1.0
    wavelength = 2 * math.pi / original  # [half], tokens per full turn
    labels = ["extrapolated" if x == 0 else "interpolated" if x == 1 else "blended" for x in ramp.tolist()]
    return {
        "pair": torch.arange(half),
        "original_frequency": original,
        "yarn_frequency": yarn,
        "wavelength": wavelength,
        "yarn_wavelength": 2 * math.pi / yarn,
        "rotations": window / wavelength,
        "ramp": ramp,
        "label": labels,
        "low": low,
        "high": high,
        "factor": factor,
        "original_max": window,
    }


def temperature_schedule(cfg: ModelConfig, max_position: int | None = None) -> dict[str, torch.Tensor]:
    r"""The query temperature $\tau(p) = 1 + \beta \ln(1 + \lfloor p/L \rfloor)$, window by window (paper section 2).

    Positions ``0 .. max_position - 1`` fall into windows of $L$ tokens (16,384 for
    Ministral 3); $\tau$ is constant inside each. Returns ``edges`` ``[n + 1]`` (0, L, 2L,
    .., ``max_position``) and ``tau`` ``[n]`` (the value on ``[edges[i], edges[i+1])``),
    the arguments of ``matplotlib.pyplot.stairs``. ``max_position`` defaults to the
    config's context length (262,144 for Ministral 3, whose last position is 262,143).
    """
    if not cfg.uses_temperature:
        raise ValueError("this config has no position-based temperature (llama_4_scaling_beta is None)")
    window = cfg.original_max_position_embeddings
    end = cfg.max_position_embeddings if max_position is None else max_position
    starts = torch.arange(0, end, window, dtype=torch.float64)  # [n] first position of each window
    edges = torch.cat([starts, torch.tensor([float(end)], dtype=torch.float64)])  # [n + 1]
    return {"edges": edges, "tau": query_temperature(starts, cfg.llama_4_scaling_beta, window)}


# ----------------------------------------------------------------------------- GQA
def kv_head_of_query_head(cfg: ModelConfig) -> list[int]:
    r"""Which KV head each query head reads (grouped-query attention, paper section 2, Table 1).

    Query head $h$ reads KV head $\lfloor h / G \rfloor$, $G$ = ``num_attention_heads /
    num_key_value_heads`` consecutive query heads per group (32 / 8 = 4 in Ministral 3),
    the layout of ``einops.repeat(k, 'b kv t d -> b (kv g) t d')`` and of SDPA's ``enable_gqa``.
    """
    groups = torch.arange(cfg.num_key_value_heads)  # [n_kv]
    return repeat(groups, "kv -> (kv g)", g=cfg.num_key_value_groups).tolist()  # [n_heads]


# ----------------------------------------------------------------------------- attention
class _Stop(Exception):
    """Raised by a capture hook to end the forward pass once the wanted tensor is seen."""


def _capture(model: Ministral3, module: torch.nn.Module, input_ids: torch.Tensor, pre: bool) -> torch.Tensor:
    """Run ``model`` on ``input_ids`` until ``module`` runs; return its input (``pre``) or output."""
    seen: list[torch.Tensor] = []

    def hook(_module, args, output=None):
        seen.append((args[0] if pre else output).detach())
        raise _Stop

    handle = module.register_forward_pre_hook(hook) if pre else module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(input_ids)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not seen:
        raise RuntimeError("the hooked module did not run")
    return seen[0]


def attention_inputs(model: Ministral3, input_ids: torch.Tensor, layer: int) -> dict[str, torch.Tensor]:
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
    x = _capture(model, block.input_layernorm, input_ids, pre=False)  # [b, t, hidden]
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


def attention_probabilities(model: Ministral3, input_ids: torch.Tensor, layer: int) -> torch.Tensor:
    r"""Softmax attention of one layer, ``[batch, heads, seq, seq]`` (query rows, key columns).

    $P = \mathrm{softmax}\big(\tau(p)\, R_p q \cdot (R_s k)^\top / \sqrt{d} + M\big)$ with the
    causal mask $M$ (and the sliding window, if the config has one), the quantity the
    model's ``scaled_dot_product_attention`` call computes implicitly (paper section 2).
    Computed in float32; ``P @ v`` reproduces the layer's attention output before ``o_proj``.
    """
    qkv = attention_inputs(model, input_ids, layer)
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


# ----------------------------------------------------------------------------- parameters
def parameter_shares(configs: dict[str, ModelConfig]) -> dict[str, dict[str, int]]:
    """Parameters per group (embeddings, attention, FFN, norms) for each config (paper section 2, Table 1).

    Each breakdown is checked to add up to the exact ``count_parameters`` total.
    """
    out = {}
    for name, cfg in configs.items():
        parts = parameter_breakdown(cfg)
        total = count_parameters(cfg)
        if sum(parts.values()) != total:
            raise AssertionError(f"{name}: breakdown {sum(parts.values())} != total {total}")
        out[name] = {g: parts[g] for g in GROUPS}
    return out


# ----------------------------------------------------------------------------- tiny demo model
def demo_config(**changes) -> ModelConfig:
    """A tiny Ministral 3 shape with every paper section 2 feature of the real one, scaled down for a CPU.

    8 query heads share 2 KV heads, head_dim 32, YaRN factor 8 over a 32-token
    window, temperature beta 0.1: a 128-token input crosses the window 3 times, so
    the temperature takes 4 values and all three YaRN regions are present.
    """
    base = dict(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=256,
        rope_theta=1e4,
        yarn_factor=8.0,
        original_max_position_embeddings=32,
        llama_4_scaling_beta=0.1,
    )
    return ModelConfig(**(base | changes))


def transformers_round_trip(cfg: ModelConfig, seq_len: int, seed: int = 0) -> dict:
    """Build a random ``transformers`` model for ``cfg``, save it, load it with :func:`from_pretrained`.

    The reference (``transformers.Ministral3ForCausalLM``, paper section 2's architecture
    as released) is saved with its own ``save_pretrained`` into a temporary directory and
    read back by minimistral; both run the same ``[1, seq_len]`` random tokens in float32.
    Returns ``max_abs_diff`` of the logits, the ``logits_shape``, and the loaded ``config``.
    Needs ``transformers`` (a dev dependency) and a config with the temperature on.
    """
    import transformers

    if not cfg.uses_temperature:
        raise ValueError("transformers' ministral3 always applies the temperature; use a config with it")
    hf_cfg = transformers.Ministral3Config(**cfg.to_hf_dict())
    torch.manual_seed(seed)
    reference = transformers.Ministral3ForCausalLM(hf_cfg).eval()
    input_ids = torch.randint(0, cfg.vocab_size, (1, seq_len), generator=torch.Generator().manual_seed(seed))
    with tempfile.TemporaryDirectory() as d:
        reference.save_pretrained(d)
        ours = from_pretrained(d)
    with torch.no_grad():
        want = reference(input_ids).logits.float()  # [1, seq, vocab]
        got = ours(input_ids).float()  # [1, seq, vocab]
    return {
        "max_abs_diff": (want - got).abs().max().item(),
        "logits_shape": tuple(got.shape),
        "config": ours.config,
    }
