r"""The Mistral 3 projector: patch features of the frozen ViT -> embeddings of the decoder, one per 2x2 patches.

Paper section 2 (docs/paper.md §1.2): each Ministral 3 model trains its own projector,

$z = W_2\, \mathrm{GELU}(W_1\, M(\mathrm{Norm}(v)))$,

where $v$ are the ViT's patch features (width $d_v$ = 1024), $\mathrm{Norm}$ is RMSNorm and $M$
the patch merger: every 2x2 block of neighbouring patches is concatenated into one vector of
$4 d_v$ and mapped back to $d_v$ by one linear layer, so an image costs a quarter of its patches
in decoder tokens. $W_1$: $d_v \to d$, $W_2$: $d \to d$ with $d$ the decoder's hidden size;
no biases in the released models. Names follow transformers' ``Mistral3MultiModalProjector``.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from minimistral.arch.model import RMSNorm
from minimistral.vision.config import VisionConfig
from minimistral.vision.encoder import ACT, patch_grids


class PatchMerger(nn.Module):
    r"""$M$: each $s \times s$ block of patches (s = ``spatial_merge_size``) -> one vector, by one linear layer."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.s, self.patch_size = cfg.spatial_merge_size, cfg.patch_size
        self.merging_layer = nn.Linear(cfg.hidden_size * self.s**2, cfg.hidden_size, bias=False)

    def forward(self, features: torch.Tensor, image_sizes) -> torch.Tensor:
        """``[sum of rows*cols, d_v]`` patch features, images in order -> ``[sum of rows*cols / s^2, d_v]``.

        Within a block the concatenation runs over channels first, then the block's rows and
        columns (``(d kr kc)``: the order of ``torch.nn.functional.unfold``, which transformers uses).
        Blocks are read row by row, as the image tokens are laid out (``images.image_token_ids``).
        """
        grids = patch_grids(image_sizes, self.patch_size)
        merged = []
        for image, (r, c) in zip(features.split([r * c for r, c in grids]), grids, strict=True):
            grid = rearrange(image, "(r c) d -> r c d", r=r)[: r - r % self.s, : c - c % self.s]
            merged.append(rearrange(grid, "(r kr) (c kc) d -> (r c) (d kr kc)", kr=self.s, kc=self.s))
        return self.merging_layer(torch.cat(merged))


class Projector(nn.Module):
    r"""$z = W_2\, \mathrm{GELU}(W_1\, M(\mathrm{Norm}(v)))$: patch features -> decoder embeddings."""

    def __init__(self, cfg: VisionConfig, text_hidden: int, text_eps: float):
        super().__init__()
        self.norm = RMSNorm(cfg.hidden_size, text_eps)  # transformers takes the decoder's eps here
        self.patch_merger = PatchMerger(cfg)
        self.linear_1 = nn.Linear(cfg.hidden_size, text_hidden, bias=cfg.multimodal_projector_bias)  # W1
        self.linear_2 = nn.Linear(text_hidden, text_hidden, bias=cfg.multimodal_projector_bias)  # W2
        self.act = ACT[cfg.projector_hidden_act]

    def forward(self, features: torch.Tensor, image_sizes) -> torch.Tensor:  # [patches, d_v] -> [tokens, d]
        return self.linear_2(self.act(self.linear_1(self.patch_merger(self.norm(features), image_sizes))))
