"""Rotary position embeddings, YaRN, and the position-based softmax temperature.

Paper section 2 ("RoPE position embeddings ... To support long contexts, YaRN and
position-based softmax temperature scaling"). The numbers follow transformers'
``modeling_rope_utils._compute_yarn_parameters`` and ``ministral3.get_llama_4_attn_scale``
exactly, because those define what the released checkpoints compute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from minimistral.arch.config import ModelConfig


def rope_frequencies(head_dim: int, theta: float) -> torch.Tensor:
    r"""Plain RoPE inverse frequencies, one per pair of channels.

    $\omega_i = \theta^{-2i/d}$ for $i = 0 .. d/2-1$.  Shape ``[head_dim/2]``.
    """
    return 1.0 / (theta ** (_channel_pairs(head_dim) / head_dim))


def _channel_pairs(head_dim: int) -> torch.Tensor:
    """0, 2, 4, .. head_dim-2 as float32 on the CPU (also inside a ``torch.device('meta')`` block)."""
    return torch.arange(0, head_dim, 2, dtype=torch.float, device="cpu")


@dataclass(frozen=True)
class YarnRamp:
    """Where YaRN interpolates: ``low``/``high`` bound the blend, ``ramp`` is 0 (extrapolate) .. 1 (interpolate)."""

    low: float
    high: float
    ramp: torch.Tensor  # [head_dim/2]: 0 keeps the original frequency, 1 divides it by the factor


def yarn_correction_dim(num_rotations: float, head_dim: int, theta: float, original_max: int) -> float:
    r"""Channel-pair index whose wavelength fits ``num_rotations`` times in the original window.

    $d(r) = \frac{d \, \ln(L / (2\pi r))}{2 \ln \theta}$ (YaRN, Peng et al. 2023, eq. 17).
    """
    return head_dim * math.log(original_max / (num_rotations * 2 * math.pi)) / (2 * math.log(theta))


def yarn_ramp(cfg: ModelConfig) -> YarnRamp:
    """The YaRN correction range and linear ramp over channel pairs (beta_fast -> low, beta_slow -> high)."""
    d, theta, L = cfg.head_dim, cfg.rope_theta, cfg.original_max_position_embeddings
    low = yarn_correction_dim(cfg.beta_fast, d, theta, L)
    high = yarn_correction_dim(cfg.beta_slow, d, theta, L)
    if cfg.yarn_truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, d - 1)  # d - 1 (not d/2 - 1): transformers' bound, kept for parity
    span = (high - low) or 0.001  # transformers' guard against a zero-width ramp
    ramp = ((torch.arange(d // 2, dtype=torch.float32, device="cpu") - low) / span).clamp(0, 1)
    return YarnRamp(low, high, ramp)


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    r"""YaRN's magnitude correction $0.1\, m \ln s + 1$ (1 when $s \le 1$)."""
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def yarn_attention_factor(cfg: ModelConfig) -> float:
    """The factor YaRN multiplies cos/sin by; exactly 1 for Ministral 3 (mscale = mscale_all_dim = 1)."""
    if cfg.attention_factor is not None:
        return cfg.attention_factor
    if cfg.mscale and cfg.mscale_all_dim:
        return yarn_mscale(cfg.yarn_factor, cfg.mscale) / yarn_mscale(cfg.yarn_factor, cfg.mscale_all_dim)
    return yarn_mscale(cfg.yarn_factor)


def inverse_frequencies(cfg: ModelConfig) -> tuple[torch.Tensor, float]:
    r"""RoPE (or YaRN, or linear interpolation) inverse frequencies ``[head_dim/2]`` and the cos/sin scale.

    YaRN blends, per channel pair, the original frequency (extrapolation, fast
    channels) with the frequency divided by the factor $s$ (interpolation, slow
    channels): $\omega'_i = \omega_i / s \cdot r_i + \omega_i (1 - r_i)$ with the ramp $r$.
    Linear position interpolation (Chen et al. 2023, the baseline YaRN improves on) divides
    every channel: $\omega'_i = \omega_i / s$, i.e. position $p$ is read as $p / s$; scale 1.
    """
    omega = rope_frequencies(cfg.head_dim, cfg.rope_theta)
    if cfg.uses_linear:
        return omega / cfg.linear_factor, 1.0  # transformers' `inv_freq /= factor`, same rounding
    if not cfg.uses_yarn:
        return omega, 1.0
    # written as transformers writes it, so the float32 rounding is identical
    wavelength_scale = cfg.rope_theta ** (_channel_pairs(cfg.head_dim) / cfg.head_dim)
    extrapolated = 1.0 / wavelength_scale  # omega_i
    interpolated = 1.0 / (cfg.yarn_factor * wavelength_scale)  # omega_i / s
    keep = 1 - yarn_ramp(cfg).ramp  # 1 - r_i: weight of the original frequency
    omega = interpolated * (1 - keep) + extrapolated * keep
    return omega, yarn_attention_factor(cfg)


def query_temperature(positions: torch.Tensor, beta: float, original_max: int) -> torch.Tensor:
    r"""Position-based softmax temperature applied to queries (paper section 2).

    $\tau(p) = 1 + \beta \ln\!\left(1 + \lfloor p / L_{orig} \rfloor\right)$; 1 inside the
    original window, growing in steps of one window. Same shape as ``positions``.
    """
    return 1 + beta * torch.log(1 + torch.floor(positions / original_max))


class RotaryEmbedding(nn.Module):
    """Returns cos, signed sin and the query temperature for absolute positions.

    The fp32 frequencies are a plain attribute, not a buffer: ``model.to(bfloat16)``
    must not round them (a rounded frequency is off by whole turns at long positions),
    and a model built on the meta device still gets real values. Tables are computed
    for a whole range of positions at once and sliced, so decoding one token costs
    a slice instead of a dozen small ops; each entry is computed exactly as for a
    single position, so the values do not depend on the table.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.inv_freq, self.attention_factor = inverse_frequencies(cfg)  # [head_dim/2] fp32, cpu
        self.beta = cfg.llama_4_scaling_beta
        self.original_max = cfg.original_max_position_embeddings
        self._table: tuple | None = None  # (device, dtype, cos, sin, temp) for positions [0, len)

    def table(self, length: int, device: torch.device, dtype: torch.dtype):
        """cos, signed sin ``[length, head_dim]`` and temperature ``[length, 1]`` (or None) for 0..length-1."""
        t = self._table
        if t is None or t[0] != device or t[1] != dtype or t[2].shape[0] < length:
            length = max(length, 2 * t[2].shape[0] if t is not None and t[0] == device else 0)
            cos, sin, temp = self._build(length, device, dtype)
            self._table = t = (device, dtype, cos, sin, temp)
        return t[2:]

    @torch.no_grad()
    @torch.inference_mode(False)  # a table first built while generating must serve training later
    def _build(self, length: int, device: torch.device, dtype: torch.dtype):
        positions = torch.arange(length, device=device)
        # angle[p, i] = p * omega_i, in fp32 like transformers
        angles = positions[:, None].float() * self.inv_freq.to(device)[None, :]  # [len, head_dim/2]
        cos, sin = angles.cos(), angles.sin()
        if self.attention_factor != 1.0:
            cos, sin = cos * self.attention_factor, sin * self.attention_factor
        cos = torch.cat((cos, cos), dim=-1).to(dtype)  # [len, head_dim]: half-split layout
        sin = torch.cat((-sin, sin), dim=-1).to(dtype)  # the sign of rotate_half folded in
        temp = None
        if self.beta is not None:
            temp = query_temperature(positions.float(), self.beta, self.original_max)[:, None].to(dtype)
        return cos, sin, temp

    def forward(self, start: int, length: int, device: torch.device, dtype: torch.dtype, left_pad=None):
        """Positions ``start .. start+length-1`` -> cos, signed sin ``[length, head_dim]``, temperature or None.

        ``left_pad [batch]``: row b's positions are shifted back by its padding (padding itself at 0), and the
        tables are ``[batch, 1, length, .]``, one per row, broadcasting over heads."""
        cos, sin, temp = self.table(start + length, device, dtype)
        end = start + length
        if left_pad is None:
            return cos[start:end], sin[start:end], None if temp is None else temp[start:end]
        positions = (torch.arange(start, end, device=device)[None, :] - left_pad[:, None]).clamp_min(0)  # [b, t]
        per_row = (rearrange(table[positions], "b t d -> b 1 t d") if table is not None else None
                   for table in (cos, sin, temp))  # fmt: skip
        return tuple(per_row)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    r"""Rotate each channel pair $(x_i, x_{i+d/2})$ by the angle $p\,\omega_i$.

    $x' = x \cos + \mathrm{rot}(x) \sin$ with $\mathrm{rot}(x_1, x_2) = (-x_2, x_1)$. The sign is
    already in ``signed_sin = (-sin, sin)``, so $\mathrm{rot}$ is a roll by half the head.
    x ``[batch, heads, seq, head_dim]``; cos/signed_sin ``[seq, head_dim]`` (or ``[batch, 1, seq, head_dim]``).
    """
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * signed_sin
