"""Shared fixtures: small random transformers models (the oracle) saved as HF directories."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


def hf_config(kind: str = "ministral3", **kw):
    """A tiny transformers config; ``kind`` 'ministral3' (YaRN + temperature) or 'mistral' (plain RoPE)."""
    base = dict(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=24,  # != hidden / heads = 8
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    yarn = kw.pop("yarn", kind == "ministral3")
    theta = kw.pop("rope_theta", 10000.0)
    base.update(kw)
    if kind == "ministral3":
        rope = {"rope_type": "default", "rope_theta": theta}
        if yarn:
            rope.update(rope_type="yarn", factor=4.0, beta_fast=32.0, beta_slow=1.0, mscale=1.0, mscale_all_dim=1.0)
        rope.update(original_max_position_embeddings=16, llama_4_scaling_beta=0.1)
        return transformers.Ministral3Config(**base, rope_parameters=rope)
    base.setdefault("sliding_window", None)
    rope = {"rope_type": "default", "rope_theta": theta}
    if yarn:
        rope.update(rope_type="yarn", factor=4.0, original_max_position_embeddings=16)
    return transformers.MistralConfig(**base, rope_parameters=rope)


def hf_model(kind: str = "ministral3", seed: int = 0, **kw):
    torch.manual_seed(seed)
    cls = transformers.Ministral3ForCausalLM if kind == "ministral3" else transformers.MistralForCausalLM
    model = cls(hf_config(kind, **kw)).eval()
    with torch.no_grad():  # larger weights than the 0.02 init make differences visible
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.15)
    return model


@pytest.fixture
def hf_dir(tmp_path):
    """Factory: save a random transformers model to a directory; returns (model, path)."""

    def make(kind: str = "ministral3", name: str = "ckpt", **kw):
        model = hf_model(kind, **kw)
        path = tmp_path / name
        model.save_pretrained(path)
        return model, path

    return make


def hf_vision_model(tied: bool = False, kind: str = "ministral3", seed: int = 0, std: float = 0.15, **text_kw):
    """A tiny random ``Mistral3ForConditionalGeneration``: the text config above, a 2-layer Pixtral of
    patch 4 (8-pixel merged tokens), SiLU FFN; weights N(0, std) so differences are visible."""
    vision = transformers.PixtralVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=4,
        hidden_act="silu",
    )
    text = hf_config(kind, tie_word_embeddings=tied, **text_kw)
    cfg = transformers.Mistral3Config(
        text_config=text.to_dict(), vision_config=vision.to_dict(), tie_word_embeddings=tied
    )
    torch.manual_seed(seed)
    model = transformers.Mistral3ForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0, std)
    return model


def tiny_checkpoints(root, **layers):
    """Random tiny-3b-shaped checkpoints (seed 0) with the project's tokenizer: ``name=layers`` -> ``{name: dir}``."""
    from minimistral.arch.config import TINY_CONFIGS
    from minimistral.arch.hub import save_pretrained
    from minimistral.arch.model import Ministral3
    from minimistral.data.corpus import build_corpus

    dirs = {}
    for name, n in layers.items():
        torch.manual_seed(0)
        dirs[name] = save_pretrained(Ministral3(TINY_CONFIGS["tiny-3b"].replace(num_hidden_layers=n)), root / name)
        (dirs[name] / "tokenizer.json").write_bytes(build_corpus().tokenizer_path.read_bytes())
    return dirs
