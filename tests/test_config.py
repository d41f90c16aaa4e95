"""Configs, exact parameter counts, RoPE/YaRN frequencies and the temperature against transformers."""

import pytest
import torch
from transformers import Ministral3Config, MistralConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from minimistral import CONFIGS, ModelConfig, get_config
from minimistral.params import count_parameters, parameter_breakdown
from minimistral.rope import inverse_frequencies, query_temperature, yarn_attention_factor

FACTS_PARAMS = {  # FACTS.md section 1
    "ministral-3-3b": 3_429_006_336,
    "ministral-3-8b": 8_489_553_920,
    "ministral-3-14b": 13_506_073_600,
    "mistral-small-3.1-24b": 23_572_403_200,
}


@pytest.mark.parametrize("name", list(FACTS_PARAMS))
def test_exact_parameter_counts(name):
    assert count_parameters(CONFIGS[name]) == FACTS_PARAMS[name]
    assert sum(parameter_breakdown(CONFIGS[name]).values()) == FACTS_PARAMS[name]


def test_tied_head_counted_once():
    b3 = parameter_breakdown(CONFIGS["ministral-3-3b"])
    b8 = parameter_breakdown(CONFIGS["ministral-3-8b"])
    assert b3["embeddings"] == 131072 * 3072 and b8["embeddings"] == 2 * 131072 * 4096


def _hf(cfg: ModelConfig):
    d = cfg.to_hf_dict()
    return (Ministral3Config if d["model_type"] == "ministral3" else MistralConfig)(**d)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_frequencies_equal_transformers_bit_for_bit(name):
    cfg = CONFIGS[name]
    hf = _hf(cfg)
    rope_type = hf.rope_parameters["rope_type"]
    if rope_type == "default":
        want = 1.0 / (cfg.rope_theta ** (torch.arange(0, 128, 2, dtype=torch.float) / 128))
        factor = 1.0
    else:
        want, factor = ROPE_INIT_FUNCTIONS[rope_type](hf)
    got, got_factor = inverse_frequencies(cfg)
    assert torch.equal(got, want) and got_factor == factor


def test_yarn_attention_factor_is_one_for_ministral3():
    assert yarn_attention_factor(CONFIGS["ministral-3-8b"]) == 1.0
    assert yarn_attention_factor(CONFIGS["ministral-3-8b"].replace(mscale_all_dim=None, mscale=None)) > 1.0


def test_temperature_values_from_facts():
    pos = torch.tensor([0, 16383, 16384, 32767, 32768, 131072]).float()
    t = query_temperature(pos, 0.1, 16384)
    assert torch.allclose(t, torch.tensor([1.0, 1.0, 1.0693, 1.0693, 1.1099, 1.2197]), atol=1e-4)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_hf_dict_round_trip(name):
    cfg = CONFIGS[name]
    assert ModelConfig.from_hf_dict(cfg.to_hf_dict()) == cfg
    assert ModelConfig.from_hf_dict(_hf(cfg).to_dict()) == cfg  # what transformers writes back


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="multiple"):
        ModelConfig(num_attention_heads=6, num_key_value_heads=4)
    with pytest.raises(TypeError, match="hidden_size must be int"):
        ModelConfig(hidden_size=64.0)
    with pytest.raises(KeyError, match="known"):
        get_config("ministral-3-2b")
