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
from einops import repeat

from minimistral.arch.config import ModelConfig
from minimistral.arch.hub import from_pretrained
from minimistral.arch.params import GROUPS, count_parameters, parameter_breakdown
from minimistral.arch.rope import inverse_frequencies, query_temperature, rope_frequencies, yarn_ramp

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
