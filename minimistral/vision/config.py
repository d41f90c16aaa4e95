"""Configuration of the vision side: the Pixtral encoder and the Mistral 3 projector that feeds the decoder.

Paper section 2 (docs/paper.md §1.2): every Ministral 3 model reads images through the Pixtral
vision encoder of Mistral Small 3.1 (a ViT of 403,305,472 parameters: hidden 1024, 24 layers,
16 heads, gated SiLU FFN of 4096, patches of 14 pixels, 2D RoPE), copied and frozen, and a new
projector per model: RMSNorm, a 2x2 patch merger, Linear -> GELU -> Linear into the decoder's width.

One flat dataclass holds both, as transformers' ``PixtralVisionConfig`` (the encoder) and the
vision fields of ``Mistral3Config`` (merger, projector, image token) do. ``from_hf_dict`` /
``to_hf_dict`` translate to and from a ``mistral3`` ``config.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

from minimistral.errors import CheckpointError

ACTIVATIONS = ("silu", "gelu")  # transformers' ACT2FN names: SiLU, exact (erf) GELU


@dataclass(frozen=True)
class VisionConfig:
    """The Pixtral ViT's shape and the Mistral 3 projector's settings."""

    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16  # head_dim = hidden_size / num_attention_heads (64)
    num_channels: int = 3
    patch_size: int = 14
    image_size: int = 1540  # longest edge an image is resized to fit (in pixels)
    rope_theta: float = 10000.0
    hidden_act: str = "silu"  # the gated FFN's activation (Pixtral: SiLU)
    # --- the Mistral 3 projector and the image tokens -------------------------------------
    spatial_merge_size: int = 2  # 2x2 neighbouring patches -> one token
    projector_hidden_act: str = "gelu"
    multimodal_projector_bias: bool = False
    image_token_id: int = 10  # [IMG]; [IMG_BREAK] = 12 and [IMG_END] = 13 are the tokenizer's

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of {self.num_attention_heads} heads")
        if self.head_dim % 4:
            raise ValueError(f"head_dim {self.head_dim} must be a multiple of 4 (2D RoPE: rows and columns)")
        for name in ("hidden_act", "projector_hidden_act"):
            if getattr(self, name) not in ACTIVATIONS:
                raise ValueError(f"{name} must be one of {ACTIVATIONS}, got {getattr(self, name)!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def merged_patch(self) -> int:
        """Pixels per image token along each side: ``patch_size * spatial_merge_size`` (28 for Pixtral)."""
        return self.patch_size * self.spatial_merge_size

    def replace(self, **changes) -> VisionConfig:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ HF config.json
    def to_hf_dict(self) -> dict:
        """The ``vision_config`` of a ``mistral3`` ``config.json`` (a ``PixtralVisionConfig``)."""
        return {
            "model_type": "pixtral",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "head_dim": self.head_dim,
            "num_channels": self.num_channels,
            "patch_size": self.patch_size,
            "image_size": self.image_size,
            "hidden_act": self.hidden_act,
            "rope_parameters": {"rope_type": "axial", "rope_theta": float(self.rope_theta)},
        }

    def wrapper_hf_dict(self) -> dict:
        """The top-level vision keys of a ``mistral3`` ``config.json``."""
        return {
            "image_token_index": self.image_token_id,
            "spatial_merge_size": self.spatial_merge_size,
            "projector_hidden_act": self.projector_hidden_act,
            "multimodal_projector_bias": self.multimodal_projector_bias,
            "vision_feature_layer": -1,
        }

    @classmethod
    def from_hf_dict(cls, cfg: dict, source: str = "config.json") -> VisionConfig:
        """Read a ``mistral3`` ``config.json`` dict (its ``vision_config`` and top-level keys).

        Only the last layer's features feed the projector (``vision_feature_layer`` -1, as in
        every released model); other values are rejected, naming the key.
        """
        vision = cfg.get("vision_config")
        if not isinstance(vision, dict):
            raise CheckpointError(f"{source}: mistral3 config has no 'vision_config' object")
        if vision.get("model_type", "pixtral") != "pixtral":
            raise CheckpointError(f"{source}: vision_config.model_type must be 'pixtral', got {vision['model_type']!r}")
        layer = cfg.get("vision_feature_layer", -1)
        if layer != -1:
            raise CheckpointError(f"{source}: key 'vision_feature_layer' must be -1 (the last layer), got {layer!r}")
        rope = vision.get("rope_parameters") or {}
        values = {
            "hidden_size": vision.get("hidden_size", 1024),
            "intermediate_size": vision.get("intermediate_size", 4096),
            "num_hidden_layers": vision.get("num_hidden_layers", 24),
            "num_attention_heads": vision.get("num_attention_heads", 16),
            "num_channels": vision.get("num_channels", 3),
            "patch_size": vision.get("patch_size", 16),  # PixtralVisionConfig's defaults for absent keys
            "image_size": vision.get("image_size", 1024),
            "rope_theta": float(rope.get("rope_theta", vision.get("rope_theta", 10000.0))),
            "hidden_act": vision.get("hidden_act", "gelu"),
            "spatial_merge_size": cfg.get("spatial_merge_size", 2),
            "projector_hidden_act": cfg.get("projector_hidden_act", "gelu"),
            "multimodal_projector_bias": cfg.get("multimodal_projector_bias", False),
            "image_token_id": cfg.get("image_token_index", cfg.get("image_token_id", 10)),
        }
        for f in fields(cls):
            want = {"int": int, "float": (int, float), "str": str, "bool": bool}[f.type]
            value = values[f.name]
            if not isinstance(value, want) or (isinstance(value, bool) and f.type != "bool"):
                raise CheckpointError(f"{source}: vision key {f.name!r} must be {f.type}, got {value!r}")
        try:
            return cls(**values)
        except ValueError as exc:
            raise CheckpointError(f"{source}: {exc}") from None


PIXTRAL = VisionConfig()  # the encoder of Mistral Small 3.1, shared by every Ministral 3 model
# The tiny parent's encoder: Pixtral's shape scaled to 28-pixel digits. Patches of 7 pixels (a
# digit is 4x4 patches, 2x2 image tokens after the merger), head_dim 16 and FFN 4x hidden as
# in Pixtral, 4 layers; about 1.4% of the tiny parent's parameters (Pixtral: 1.7% of Mistral Small 3.1).
TINY_VISION = VisionConfig(
    hidden_size=64, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4, patch_size=7, image_size=112
)
