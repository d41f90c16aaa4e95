r"""The vision-language model: the Ministral 3 decoder reading images through the Pixtral encoder and a projector.

Paper section 2: ``input_ids`` hold one ``[IMG]`` token per merged 2x2 patch of every image
(``images.image_token_ids``); the decoder's input embedding at each of them is replaced, in
order, by the projector's output for that patch,

$e_t = \mathrm{Embed}(x_t)$ if $x_t \ne$ ``[IMG]``, else $e_t = z_{k(t)}$,
$z = \mathrm{Projector}(\mathrm{ViT}(\text{images}))$,

and the decoder runs unchanged on $e$. transformers' ``Mistral3ForConditionalGeneration``.

:class:`VisionLanguageModel` *is* a :class:`~minimistral.arch.model.Ministral3` with two more
modules, ``vision_tower`` and ``multi_modal_projector``: everything written for the text model
(generation, training, distillation, scoring) runs on it, and ``model(input_ids, pixel_values=...,
image_sizes=...)`` takes the tensors transformers' model takes.
"""

from __future__ import annotations

import torch
from torch import nn

from minimistral.arch.config import ModelConfig
from minimistral.arch.model import KVCache, Ministral3, RMSNorm
from minimistral.errors import ImageError
from minimistral.vision.config import VisionConfig
from minimistral.vision.encoder import PixtralEncoder
from minimistral.vision.projector import Projector


class VisionLanguageModel(Ministral3):
    """``(input_ids [b, t], pixel_values [n, 3, H, W], image_sizes [n, 2])`` -> logits ``[b, t, vocab]``."""

    def __init__(self, cfg: ModelConfig, vision: VisionConfig):
        super().__init__(cfg)
        self.vision_config = vision
        self.vision_tower = PixtralEncoder(vision)
        self.multi_modal_projector = Projector(vision, cfg.hidden_size, cfg.rms_norm_eps)
        if self.lm_head.weight.device.type != "meta":
            self.init_vision_weights()

    def init_vision_weights(self, std: float = 0.02) -> None:
        """N(0, std) for every matrix and the patch convolution, ones for norm gains (transformers' init)."""
        for m in [*self.vision_tower.modules(), *self.multi_modal_projector.modules()]:
            if isinstance(m, nn.Linear | nn.Conv2d):
                nn.init.normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)

    def image_features(self, pixel_values: torch.Tensor, image_sizes=None) -> torch.Tensor:
        """Images -> decoder embeddings ``[image tokens, hidden]``, images in order, tokens row by row."""
        image_sizes = check_image_inputs(pixel_values, image_sizes, self.vision_config)
        return self.multi_modal_projector(self.vision_tower(pixel_values, image_sizes), image_sizes)

    def embed(self, input_ids: torch.Tensor, pixel_values=None, image_sizes=None) -> torch.Tensor:
        """Token embeddings ``[b, t, hidden]`` with the image features at the ``[IMG]`` positions."""
        embeds = self.model.embed_tokens(input_ids)
        if pixel_values is None:
            return embeds
        features = self.image_features(pixel_values, image_sizes)
        slots = input_ids == self.vision_config.image_token_id  # [b, t]
        if int(slots.sum()) != features.shape[0]:
            raise ImageError(
                f"input_ids hold {int(slots.sum())} [IMG] tokens but the images give {features.shape[0]} "
                "features (one per merged patch): each image needs exactly its image_token_ids"
            )
        return embeds.masked_scatter(slots[..., None], features.to(embeds.dtype))  # row-major, as transformers

    def forward(
        self,
        input_ids: torch.Tensor,
        cache: KVCache | None = None,
        last_only: bool = False,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``[batch, seq, vocab]`` (``[batch, 1, vocab]`` with ``last_only``); images only in the prefill."""
        h = self.model(input_ids, cache, embeds=self.embed(input_ids, pixel_values, image_sizes))
        return self.lm_head(h[:, -1:] if last_only else h)

    def parameter_split(self) -> dict[str, int]:
        """Distinct parameters of the vision encoder, the projector and the language model (tied head once)."""
        vit = sum(p.numel() for p in self.vision_tower.parameters())
        projector = sum(p.numel() for p in self.multi_modal_projector.parameters())
        text = self.num_parameters() - vit - projector
        return {"vision encoder": vit, "projector": projector, "language model": text}


def check_image_inputs(pixel_values: torch.Tensor, image_sizes, cfg: VisionConfig) -> list[tuple[int, int]]:
    """``image_sizes`` as a list of (height, width), checked against ``pixel_values`` (else :class:`ImageError`)."""
    if pixel_values.ndim != 4 or pixel_values.shape[1] != cfg.num_channels:
        raise ImageError(
            f"pixel_values must be [images, {cfg.num_channels}, height, width], got {tuple(pixel_values.shape)}"
        )
    n, _, height, width = pixel_values.shape
    if image_sizes is None:
        return [(height, width)] * n
    sizes = [tuple(int(v) for v in s) for s in torch.as_tensor(image_sizes).tolist()]
    if len(sizes) != n or any(len(s) != 2 for s in sizes):
        raise ImageError(f"image_sizes must be [{n}, 2] (one (height, width) per image), got {sizes}")
    for i, (h, w) in enumerate(sizes):
        if not (cfg.merged_patch <= h <= height and cfg.merged_patch <= w <= width):
            raise ImageError(
                f"image_sizes[{i}] = {(h, w)} does not fit pixel_values of {height}x{width} "
                f"(or is under one token of {cfg.merged_patch} pixels)"
            )
    return sizes
