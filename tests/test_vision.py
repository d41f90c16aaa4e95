"""Vision: the Pixtral encoder, the projector and the vision-language model equal transformers (fp32, 1e-4);
preprocessing equals PixtralImageProcessorPil; checkpoints round-trip; bad input is a one-line error."""

import numpy as np
import pytest
import torch
from conftest import hf_vision_model, transformers
from PIL import Image

import minimistral
from minimistral.arch.model import Ministral3
from minimistral.errors import ImageError
from minimistral.vision.config import PIXTRAL, VisionConfig
from minimistral.vision.encoder import axial_rope
from minimistral.vision.images import IMG_BREAK, IMG_END, image_token_ids, load_image, preprocess
from minimistral.vision.model import VisionLanguageModel

TOL = 1e-4
SIZES = torch.tensor([[16, 24], [8, 16], [24, 8]])  # (height, width) in pixels: 2x3, 1x2, 3x1 tokens


def vision_config(hf) -> VisionConfig:
    return VisionConfig.from_hf_dict(hf.config.to_dict())


def ours_from(hf) -> VisionLanguageModel:
    text = minimistral.ModelConfig.from_hf_dict(hf.config.to_dict())
    model = VisionLanguageModel(text, vision_config(hf)).eval()
    from minimistral.arch.hub import our_name

    model.load_state_dict({our_name(k): v for k, v in hf.state_dict().items()})
    return model


def batch_inputs(cfg: VisionConfig, seed: int = 0):
    """Two sequences: image 0 then text; text, images 1 and 2 between text. Pixels random, padded with zeros."""
    g = torch.Generator().manual_seed(seed)
    text = lambda n: torch.randint(14, 256, (n,), generator=g).tolist()  # never an image id
    row0 = [1, *image_token_ids(SIZES[0], cfg), *text(9)]
    row1 = [1, *text(3), *image_token_ids(SIZES[1], cfg), *text(2), *image_token_ids(SIZES[2], cfg), *text(2)]
    row0 += text(len(row1) - len(row0)) if len(row1) > len(row0) else []
    row1 += text(len(row0) - len(row1))
    pixels = torch.zeros(3, 3, 24, 24)
    for i, (h, w) in enumerate(SIZES.tolist()):
        pixels[i, :, :h, :w] = torch.randn(3, h, w, generator=g)
    return torch.tensor([row0, row1]), pixels


@pytest.mark.parametrize("tied,kind", [(False, "ministral3"), (True, "ministral3"), (False, "mistral")])
def test_logits_match_transformers_with_images_of_several_sizes(tied, kind):
    hf = hf_vision_model(tied=tied, kind=kind)
    ours = ours_from(hf)
    ids, pixels = batch_inputs(ours.vision_config)
    with torch.no_grad():
        want = hf(input_ids=ids, pixel_values=pixels, image_sizes=SIZES).logits
        got = ours(ids, pixel_values=pixels, image_sizes=SIZES)
        text_only = ours(ids)
    assert got.shape == (2, ids.shape[1], 256)
    assert want.abs().max() > 1.0 and (got - text_only).abs().max() > 0.1  # the images change the logits
    assert (got - want).abs().max().item() <= TOL


def test_images_of_one_size_batched_equal_packed():
    """Same-size images run as a batch without a mask; one of another size forces the packed path."""
    hf = hf_vision_model()
    ours = ours_from(hf)
    g = torch.Generator().manual_seed(3)
    pixels, sizes = torch.randn(2, 3, 16, 24, generator=g), torch.tensor([[16, 24], [16, 24]])
    with torch.no_grad():
        batched = ours.vision_tower(pixels, sizes.tolist())
        packed = ours.vision_tower(torch.cat([pixels, torch.zeros(1, 3, 16, 24)]), [[16, 24], [16, 24], [8, 8]])
        want = hf.model.vision_tower(pixels, image_sizes=sizes).last_hidden_state[0]
    assert (batched - packed[: len(batched)]).abs().max() < 1e-5
    assert (batched - want).abs().max() < TOL


def test_axial_rope_matches_transformers():
    hf = hf_vision_model()
    rope = hf.model.vision_tower.patch_positional_embedding
    rows, cols = 3, 5
    pos = torch.stack(torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij"), -1).reshape(-1, 2)
    cos_hf, sin_hf = rope(torch.zeros(1), pos)
    cos, signed_sin = axial_rope(rows, cols, 16, 10000.0)
    assert torch.allclose(cos, cos_hf, atol=1e-6)
    half = signed_sin.shape[-1] // 2
    assert torch.allclose(signed_sin[:, half:], sin_hf[:, half:], atol=1e-6)
    assert torch.allclose(signed_sin[:, :half], -sin_hf[:, :half], atol=1e-6)


@pytest.mark.parametrize("tied", [False, True])
def test_checkpoints_round_trip_with_transformers(tmp_path, tied):
    hf = hf_vision_model(tied=tied)
    hf.save_pretrained(tmp_path / "hf")
    ours = minimistral.from_pretrained(tmp_path / "hf")
    assert isinstance(ours, VisionLanguageModel) and isinstance(ours, Ministral3)
    ids, pixels = batch_inputs(ours.vision_config, seed=1)
    with torch.no_grad():
        want = hf(input_ids=ids, pixel_values=pixels, image_sizes=SIZES).logits
        assert (ours(ids, pixel_values=pixels, image_sizes=SIZES) - want).abs().max() <= TOL
    minimistral.save_pretrained(ours, tmp_path / "ours")
    back = transformers.Mistral3ForConditionalGeneration.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        assert (back(input_ids=ids, pixel_values=pixels, image_sizes=SIZES).logits - want).abs().max() <= TOL
    text = minimistral.from_pretrained(tmp_path / "ours", text_only=True)
    assert type(text) is Ministral3


def test_text_only_checkpoint_stays_a_text_model(hf_dir):
    _, path = hf_dir("ministral3")
    assert type(minimistral.from_pretrained(path)) is Ministral3


def test_real_pixtral_and_projector_counts():
    real = minimistral.CONFIGS
    from minimistral.arch.model import skeleton

    split = skeleton(real["ministral-3-3b"], PIXTRAL).parameter_split()
    assert split == {"vision encoder": 403_305_472, "projector": 16_778_240, "language model": 3_429_006_336}
    assert skeleton(real["ministral-3-14b"], PIXTRAL).parameter_split()["projector"] == 35_652_608


# ----------------------------------------------------------------------------- images and tokens
def _images():
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (37, 61, 3), dtype=np.uint8))
    gray = Image.fromarray(rng.integers(0, 256, (90, 20), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 256, (20, 20, 4), dtype=np.uint8), mode="RGBA")
    return [rgb, gray, rgba]


def test_preprocessing_equals_transformers_pil_processor():
    cfg = VisionConfig(hidden_size=32, num_attention_heads=2, patch_size=4, image_size=64)
    proc = transformers.PixtralImageProcessorPil(patch_size=cfg.merged_patch, size={"longest_edge": cfg.image_size})
    want = proc(_images(), return_tensors="pt")
    pixels, sizes = preprocess(_images(), cfg)
    assert torch.equal(sizes, torch.as_tensor(want["image_sizes"]))
    assert sizes.tolist() == [[40, 64], [64, 16], [24, 24]]  # shrunk to fit 64, sides rounded up to 8
    assert pixels.shape == want["pixel_values"].shape
    assert (pixels - want["pixel_values"]).abs().max() < 1e-6


def test_image_token_layout():
    cfg = VisionConfig(hidden_size=32, num_attention_heads=2, patch_size=4)
    ids = image_token_ids((16, 24), cfg)  # 2 rows of 3 tokens
    assert ids == [10, 10, 10, IMG_BREAK, 10, 10, 10, IMG_END]
    assert image_token_ids((8, 8), cfg) == [10, IMG_END]


def test_bad_image_inputs_are_one_line_errors(tmp_path):
    hf = hf_vision_model()
    ours = ours_from(hf)
    ids, pixels = batch_inputs(ours.vision_config)
    with pytest.raises(ImageError, match="image_sizes must be"):
        ours(ids, pixel_values=pixels, image_sizes=SIZES[:2])
    with pytest.raises(ImageError, match=r"image_sizes\[0\]"):
        ours(ids, pixel_values=pixels, image_sizes=torch.tensor([[32, 24], [8, 16], [24, 8]]))
    with pytest.raises(ImageError, match=r"\[IMG\] tokens"):  # more images than [IMG] spans
        ours(ids[:1], pixel_values=pixels, image_sizes=SIZES)
    bad = tmp_path / "truncated.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 7).save(tmp_path / "ok.png")
    bad.write_bytes((tmp_path / "ok.png").read_bytes()[:60])
    with pytest.raises(ImageError, match=r"truncated\.png: not a readable image"):
        load_image(bad)
    Image.new("CMYK", (8, 8)).save(tmp_path / "cmyk.jpg")
    with pytest.raises(ImageError, match="unsupported image mode 'CMYK'"):
        load_image(tmp_path / "cmyk.jpg")
