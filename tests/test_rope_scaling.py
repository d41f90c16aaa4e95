"""Linear position interpolation (Chen et al. 2023): frequencies, config round trip and logits vs transformers."""

from __future__ import annotations

import pytest
import torch
from conftest import hf_config
from transformers import Ministral3Config, Ministral3ForCausalLM, MistralConfig, MistralForCausalLM
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from minimistral import ModelConfig
from minimistral.arch.config import CONFIGS, TINY_CONFIGS
from minimistral.arch.model import Ministral3
from minimistral.arch.rope import inverse_frequencies, rope_frequencies
from minimistral.errors import CheckpointError

TOL = 1e-4
FACTOR = 4.0


def linear_hf_model(kind: str, seed: int = 0, **kw):
    """A random transformers model whose rope_parameters are ``{"rope_type": "linear", "factor": 4}``."""
    cfg = hf_config(kind, yarn=False, **kw)  # original window 16 for the temperature (ministral3)
    cfg.rope_parameters = {**cfg.rope_parameters, "rope_type": "linear", "factor": FACTOR}
    torch.manual_seed(seed)
    model = (Ministral3ForCausalLM if kind == "ministral3" else MistralForCausalLM)(cfg).eval()
    with torch.no_grad():  # larger weights than the 0.02 init make differences visible
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.15)
    return model


def ours_from(hf) -> Ministral3:
    cfg = ModelConfig.from_hf_dict(hf.config.to_dict())
    model = Ministral3(cfg).eval()
    model.load_state_dict(hf.state_dict())
    return model


CASES = {
    "ministral3 linear + temperature": dict(kind="ministral3"),
    "mistral linear": dict(kind="mistral"),
    "mistral linear, sliding window 24": dict(kind="mistral", sliding_window=24),
    "mistral linear, theta 1e6": dict(kind="mistral", rope_theta=1e6),
}


@pytest.mark.parametrize("case", list(CASES))
def test_linear_logits_match_transformers(case):
    kw = dict(CASES[case])
    hf = linear_hf_model(kw.pop("kind"), **kw)
    ours = ours_from(hf)
    assert ours.config.linear_factor == FACTOR and not ours.config.uses_yarn
    # 72 positions, 4.5 times the original window of 16 (and beyond 4 x 16 = 64)
    ids = torch.randint(0, hf.config.vocab_size, (3, 72), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = hf(ids).logits
        got = ours(ids)
    assert want.abs().max() > 1.0  # the comparison is not between near-zero tensors
    assert (got - want).abs().max().item() <= TOL


def test_linear_interpolation_changes_logits():
    """The parity above would be vacuous if the factor did nothing."""
    ours = ours_from(linear_hf_model("mistral"))
    plain = Ministral3(ours.config.replace(linear_factor=None)).eval()
    plain.load_state_dict(ours.state_dict())
    ids = torch.randint(0, 256, (1, 72))
    with torch.no_grad():
        assert (plain(ids) - ours(ids)).abs().max() > 1e-3


@pytest.mark.parametrize("theta", [1e4, 1e6, 1e9])
def test_linear_frequencies_equal_transformers_bit_for_bit(theta):
    cfg = ModelConfig(head_dim=128, rope_theta=theta, yarn_factor=None, linear_factor=FACTOR)
    d = cfg.to_hf_dict()
    hf = (Ministral3Config if d["model_type"] == "ministral3" else MistralConfig)(**d)
    want, want_scale = ROPE_INIT_FUNCTIONS["linear"](hf)
    got, scale = inverse_frequencies(cfg)
    assert torch.equal(got, want) and scale == want_scale == 1.0
    assert torch.equal(got, rope_frequencies(128, theta) / FACTOR)  # omega_i / s in every channel


@pytest.mark.parametrize("beta", [0.1, None])
def test_linear_round_trips_through_config_json(beta):
    window = 16384 if beta else None  # only the temperature needs (and exports) the original window
    cfg = ModelConfig(
        yarn_factor=None, linear_factor=FACTOR, llama_4_scaling_beta=beta, original_max_position_embeddings=window
    )
    d = cfg.to_hf_dict()
    assert d["rope_parameters"]["rope_type"] == "linear" and d["rope_parameters"]["factor"] == FACTOR
    assert d["model_type"] == ("ministral3" if beta else "mistral")
    assert ModelConfig.from_hf_dict(d) == cfg


def test_linear_and_yarn_are_exclusive_and_factor_is_checked():
    with pytest.raises(ValueError, match="linear_factor and yarn_factor"):
        ModelConfig(linear_factor=2.0)  # the default config has yarn_factor 16
    with pytest.raises(ValueError, match="linear_factor must be > 0"):
        ModelConfig(yarn_factor=None, linear_factor=0.0)
    d = ModelConfig(yarn_factor=None, linear_factor=2.0).to_hf_dict()
    del d["rope_parameters"]["factor"]
    with pytest.raises(CheckpointError, match="factor"):
        ModelConfig.from_hf_dict(d)


def test_defaults_unchanged():
    """Adding the field changed no existing config: every default and named config has no linear scaling."""
    assert all(c.linear_factor is None for c in [ModelConfig(), *CONFIGS.values(), *TINY_CONFIGS.values()])
    assert ModelConfig().to_hf_dict()["rope_parameters"]["rope_type"] == "yarn"
