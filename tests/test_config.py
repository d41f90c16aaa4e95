"""Configs, exact parameter counts, RoPE/YaRN frequencies and the temperature against transformers."""

import pytest
import torch
from transformers import Ministral3Config, MistralConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from minimistral import CONFIGS, ModelConfig, get_config
from minimistral.arch.params import count_parameters, parameter_breakdown
from minimistral.arch.rope import inverse_frequencies, query_temperature, yarn_attention_factor

PAPER_PARAMS = {  # docs/paper.md §1
    "ministral-3-3b": 3_429_006_336,
    "ministral-3-8b": 8_489_553_920,
    "ministral-3-14b": 13_506_073_600,
    "mistral-small-3.1-24b": 23_572_403_200,
}


@pytest.mark.parametrize("name", list(PAPER_PARAMS))
def test_exact_parameter_counts(name):
    assert count_parameters(CONFIGS[name]) == PAPER_PARAMS[name]
    assert sum(parameter_breakdown(CONFIGS[name]).values()) == PAPER_PARAMS[name]


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


def test_tiny_family_keeps_the_real_shape():
    from minimistral.arch.config import TINY_CONFIGS, TINY_OF_REAL

    t, r = TINY_CONFIGS, CONFIGS
    assert [c.num_hidden_layers for c in t.values()] == [8, 8, 7, 5]  # 40:40:34:26 rounded
    for tiny_name, real_name in TINY_OF_REAL.items():
        a, b = t[tiny_name], r[real_name]
        assert a.hidden_size / t["tiny-24b"].hidden_size == b.hidden_size / r["mistral-small-3.1-24b"].hidden_size
        assert a.intermediate_size / a.hidden_size == b.intermediate_size / b.hidden_size
        assert a.num_attention_heads // a.num_key_value_heads == 4 and a.head_dim == 32
        assert a.tie_word_embeddings == b.tie_word_embeddings and a.uses_yarn == b.uses_yarn
        assert a.uses_temperature == b.uses_temperature
    q_width = t["tiny-3b"].num_attention_heads * t["tiny-3b"].head_dim
    assert t["tiny-3b"].hidden_size < q_width < t["tiny-14b"].hidden_size


def test_params_cli_tiny_family(capsys):
    from minimistral.cli import main

    assert main(["params", "--family", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "tiny-3b" in out and "FFN/hidden" in out and "6.40 vs 6.40" in out
