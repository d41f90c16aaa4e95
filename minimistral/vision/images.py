"""Images in, tensors and tokens out: reading a file, Pixtral's preprocessing, and the image-token layout.

Preprocessing (transformers' ``PixtralImageProcessor``, PIL backend), per image:

1. RGB (transparency composited onto white);
2. resize, bicubic, so that the longest edge fits ``image_size`` (never enlarged past it) and
   both sides are whole multiples of ``patch_size * spatial_merge_size`` (28 pixels for Pixtral:
   a side is rounded *up* to the next multiple);
3. rescale to [0, 1] and normalise per channel with CLIP's mean and standard deviation;
4. a batch is padded with zeros at the bottom and right to its largest image; ``image_sizes``
   keeps each image's own (height, width).

Layout in the token sequence (paper section 2; Tekken's ids): an image of ``rows x cols`` merged
patches is ``rows`` lines of ``cols`` ``[IMG]`` tokens, each line closed by ``[IMG_BREAK]``
except the last, closed by ``[IMG_END]``. The decoder's embeddings at the ``[IMG]`` positions are
replaced by the projector's outputs, in the same order (``model.VisionLanguageModel``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from minimistral.errors import ImageError
from minimistral.vision.config import VisionConfig

IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's per-channel statistics, as Pixtral uses
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
IMG, IMG_BREAK, IMG_END = 10, 12, 13  # Tekken's ids (data.tokenizer)
MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX")  # 8-bit modes PIL converts to RGB faithfully


def load_image(path: str | os.PathLike) -> Image.Image:
    """Read an image file fully (so a truncated file fails here, not later); one-line :class:`ImageError`."""
    try:
        with Image.open(path) as image:
            image.load()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from None
    if image.mode not in MODES:
        raise ImageError(f"{path}: unsupported image mode {image.mode!r} (supported: {', '.join(MODES)})")
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited onto a white background."""
    if image.mode not in MODES:
        raise ImageError(f"unsupported image mode {image.mode!r} (supported: {', '.join(MODES)})")
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def resized_size(height: int, width: int, longest_edge: int, unit: int) -> tuple[int, int]:
    """(height, width) after step 2: shrunk to fit ``longest_edge`` if needed, sides up to a multiple of ``unit``."""
    ratio = max(height / longest_edge, width / longest_edge)
    if ratio > 1:
        height, width = int(height / ratio), int(width / ratio)
    return ((height - 1) // unit + 1) * unit, ((width - 1) // unit + 1) * unit


def pixels(image: Image.Image, cfg: VisionConfig) -> np.ndarray:
    """One image -> ``[3, H, W]`` float32, resized, rescaled and normalised (steps 1-3)."""
    rgb = to_rgb(image)
    h, w = resized_size(rgb.height, rgb.width, cfg.image_size, cfg.merged_patch)
    x = np.asarray(rgb.resize((w, h), Image.Resampling.BICUBIC))  # [H, W, 3] uint8
    x = (x.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.array(IMAGE_MEAN, np.float32)) / np.array(IMAGE_STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess(images: Sequence[Image.Image], cfg: VisionConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Images -> ``pixel_values [n, 3, H_max, W_max]`` (zero-padded) and ``image_sizes [n, 2]`` (h, w)."""
    if not images:
        raise ImageError("no images to preprocess")
    arrays = [pixels(im, cfg) for im in images]
    sizes = torch.tensor([a.shape[1:] for a in arrays], dtype=torch.long)  # [n, 2]
    batch = torch.zeros(len(arrays), 3, *sizes.max(0).values.tolist())
    for i, a in enumerate(arrays):
        batch[i, :, : a.shape[1], : a.shape[2]] = torch.from_numpy(a)
    return batch, sizes


def image_token_ids(image_size: Sequence[int], cfg: VisionConfig) -> list[int]:
    """The tokens that stand for one image of ``(height, width)`` pixels: rows of ``[IMG]``, breaks, the end."""
    rows, cols = int(image_size[0]) // cfg.merged_patch, int(image_size[1]) // cfg.merged_patch
    if rows < 1 or cols < 1:
        raise ImageError(f"image of {tuple(int(s) for s in image_size)} pixels is smaller than one token")
    ids = ([cfg.image_token_id] * cols + [IMG_BREAK]) * rows
    ids[-1] = IMG_END
    return ids


def image_prompt(prompt_ids: Sequence[int], image_sizes: torch.Tensor, cfg: VisionConfig, bos_id: int | None):
    """``<s>``, every image's tokens in order, then ``prompt_ids`` (the prompt without its ``<s>``)."""
    ids = [] if bos_id is None else [bos_id]
    for size in image_sizes.tolist():
        ids += image_token_ids(size, cfg)
    return ids + list(prompt_ids)


def read_images(paths: Sequence[str | os.PathLike], cfg: VisionConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Files -> ``(pixel_values, image_sizes)``; the first unreadable file is a one-line error."""
    return preprocess([load_image(Path(p)) for p in paths], cfg)
