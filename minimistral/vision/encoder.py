r"""The Pixtral vision encoder: patches, 2D RoPE, and a bidirectional pre-norm transformer.

Paper section 2 (docs/paper.md §1.2). An image of ``H x W`` pixels (both multiples of the patch
size ``P``) becomes an ``H/P x W/P`` grid of patch vectors by one strided convolution without
bias; the grid is flattened row by row and normalised (RMSNorm), and every block is

$h = x + \mathrm{Attn}(\mathrm{Norm}(x))$, $y = h + W_2(\mathrm{act}(W_1 h') \odot W_3 h')$, $h' = \mathrm{Norm}(h)$,

with no causal mask: a patch sees every patch *of its own image* and none of another image in
the same batch (the images of a batch are packed into one sequence with a block-diagonal mask,
or stacked when they all have the same size). Positions enter only through a 2D rotary
embedding (``axial_rope``): half of each head's channel pairs rotate with the patch's row, the
other half with its column, so attention depends on relative offsets in both directions.

Parameter names are those of transformers' ``PixtralVisionModel`` (``patch_conv``, ``ln_pre``,
``transformer.layers.N.attention.q_proj`` ...), so a state dict moves between the two unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from minimistral.arch.model import RMSNorm
from minimistral.arch.rope import apply_rotary, rope_frequencies
from minimistral.vision.config import VisionConfig

ACT = {"silu": F.silu, "gelu": F.gelu}  # F.gelu is the exact (erf) GELU, transformers' "gelu"
NORM_EPS = 1e-5  # Pixtral's norms use 1e-5 whatever the config says


def axial_rope(rows: int, cols: int, head_dim: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Cos and signed sin ``[rows * cols, head_dim]`` of the 2D rotary embedding, patches row by row.

    With the 1D frequencies $\omega_j = \theta^{-2j/d}$ ($j < d/2$), the patch at row $r$, column
    $c$ rotates its channel pairs by the angles
    $(r\,\omega_0, r\,\omega_2, \dots, r\,\omega_{d/2-2},\; c\,\omega_1, c\,\omega_3, \dots, c\,\omega_{d/2-1})$:
    the even frequencies for rows, the odd ones for columns, so both axes get the whole range
    of wavelengths. Pairs are ``(i, i + d/2)``, as in the decoder (``rope.apply_rotary``).
    """
    omega = rope_frequencies(head_dim, theta).to(device)  # [d/2] fp32
    r = torch.arange(rows, device=device, dtype=torch.float32)
    c = torch.arange(cols, device=device, dtype=torch.float32)
    row_angles = torch.outer(r, omega[0::2])  # [rows, d/4]
    col_angles = torch.outer(c, omega[1::2])  # [cols, d/4]
    angles = torch.cat(  # [rows * cols, d/2]: patch (r, c) at index r * cols + c
        [
            rearrange(row_angles, "r f -> r 1 f").expand(rows, cols, -1),
            rearrange(col_angles, "c f -> 1 c f").expand(rows, cols, -1),
        ],
        dim=-1,
    ).flatten(0, 1)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat([cos, cos], -1), torch.cat([-sin, sin], -1)


class VisionAttention(nn.Module):
    r"""Multi-head attention without a causal mask: $\mathrm{softmax}(R q \cdot (R k)^\top / \sqrt{d} + M)\, v$,
    $M$ = 0 within an image, $-\infty$ across images."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.n_heads, d = cfg.num_attention_heads, cfg.hidden_size
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x, cos, sin, mask=None):  # x [b, n, hidden]; cos/sin [n, head_dim]; mask [n, n] bool
        q = rearrange(self.q_proj(x), "b n (h d) -> b h n d", h=self.n_heads)
        k = rearrange(self.k_proj(x), "b n (h d) -> b h n d", h=self.n_heads)
        v = rearrange(self.v_proj(x), "b n (h d) -> b h n d", h=self.n_heads)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [b, h, n, d]
        return self.o_proj(rearrange(out, "b h n d -> b n (h d)"))


class VisionFeedForward(nn.Module):
    r"""Gated feed-forward $W_2(\mathrm{act}(W_1 x) \odot W_3 x)$, act = SiLU in Pixtral."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.act = ACT[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class VisionBlock(nn.Module):
    """Pre-norm block: attention then the gated FFN, each on a residual branch."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.hidden_size, NORM_EPS)
        self.attention = VisionAttention(cfg)
        self.ffn_norm = RMSNorm(cfg.hidden_size, NORM_EPS)
        self.feed_forward = VisionFeedForward(cfg)

    def forward(self, x, cos, sin, mask=None):
        h = x + self.attention(self.attention_norm(x), cos, sin, mask)
        return h + self.feed_forward(self.ffn_norm(h))


class VisionTransformer(nn.Module):
    """The stack of blocks (transformers' ``PixtralTransformer``)."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.layers = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x, cos, sin, mask=None):
        for block in self.layers:
            x = block(x, cos, sin, mask)
        return x


def patch_grids(image_sizes, patch_size: int) -> list[tuple[int, int]]:
    """``(rows, cols)`` of patches per image from ``image_sizes`` ``[n, 2]`` (height, width in pixels)."""
    return [(int(h) // patch_size, int(w) // patch_size) for h, w in image_sizes]


class PixtralEncoder(nn.Module):
    """Images -> one feature vector per patch: ``(pixel_values, image_sizes)`` -> ``[sum of rows*cols, hidden]``."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.config = cfg
        p = cfg.patch_size
        self.patch_conv = nn.Conv2d(cfg.num_channels, cfg.hidden_size, kernel_size=p, stride=p, bias=False)
        self.ln_pre = RMSNorm(cfg.hidden_size, NORM_EPS)
        self.transformer = VisionTransformer(cfg)

    def forward(self, pixel_values: torch.Tensor, image_sizes) -> torch.Tensor:
        """``pixel_values [n, channels, H, W]`` (each image top-left, padded to the batch's largest),
        ``image_sizes [n, 2]`` each image's (height, width) in pixels -> patch features, images in order."""
        cfg = self.config
        grids = patch_grids(image_sizes, cfg.patch_size)
        patches = self.patch_conv(pixel_values.to(self.patch_conv.weight.dtype))  # [n, hidden, H/P, W/P]
        per_image = [rearrange(p[:, :r, :c], "d r c -> (r c) d") for p, (r, c) in zip(patches, grids, strict=True)]
        if len(set(grids)) == 1:  # same size: a batch of images, one rotary table, nothing to mask
            rope = axial_rope(*grids[0], cfg.head_dim, cfg.rope_theta, patches.device)
            cos, sin = (t.to(patches.dtype) for t in rope)
            out = self.transformer(self.ln_pre(torch.stack(per_image)), cos, sin)  # [images, patches, hidden]
            return rearrange(out, "i n d -> (i n) d")
        ropes = [axial_rope(r, c, cfg.head_dim, cfg.rope_theta, patches.device) for r, c in grids]
        cos, sin = (torch.cat(t).to(patches.dtype) for t in zip(*ropes, strict=True))  # [total, head_dim]
        x = self.ln_pre(torch.cat(per_image))[None]  # [1, total patches, hidden]: images packed
        return self.transformer(x, cos, sin, same_image_mask(grids, x.device))[0]


def same_image_mask(grids: list[tuple[int, int]], device=None) -> torch.Tensor:
    """Boolean ``[total, total]``: patch i may attend to patch j iff they belong to the same image."""
    image = torch.repeat_interleave(
        torch.arange(len(grids), device=device), torch.tensor([r * c for r, c in grids], device=device)
    )  # [total]: the image of each patch
    return image[:, None] == image[None, :]
