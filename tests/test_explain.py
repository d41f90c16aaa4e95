"""show.explain and arch.attention_maps: the views notebook 01 plots agree with the model (paper section 2)."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

import minimistral
from minimistral.arch import attention_maps
from minimistral.arch.rope import inverse_frequencies, query_temperature, yarn_ramp
from minimistral.show import explain

REAL_3B = minimistral.CONFIGS["ministral-3-3b"]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = explain.demo_config()
    model = minimistral.Ministral3(cfg).eval()
    model.init_weights(std=0.2)  # larger than the default so the softmax is far from uniform
    ids = torch.randint(0, cfg.vocab_size, (2, 80), generator=torch.Generator().manual_seed(1))
    return model, ids


# ----------------------------------------------------------------------------- YaRN regions
@pytest.mark.parametrize("name", [n for n, c in minimistral.CONFIGS.items() if c.uses_yarn])
def test_regions_consistent_with_ramp(name):
    cfg = minimistral.CONFIGS[name]
    r = explain.yarn_regions(cfg)
    ramp = yarn_ramp(cfg).ramp
    assert torch.equal(r["ramp"], ramp)
    assert len(r["label"]) == cfg.head_dim // 2
    for x, label in zip(ramp.tolist(), r["label"], strict=True):
        assert label == ("extrapolated" if x == 0 else "interpolated" if x == 1 else "blended")
    torch.testing.assert_close(r["yarn_frequency"], inverse_frequencies(cfg)[0], rtol=0, atol=0)
    torch.testing.assert_close(r["wavelength"], 2 * torch.pi / r["original_frequency"])
    torch.testing.assert_close(r["rotations"], cfg.original_max_position_embeddings / r["wavelength"])
    ext = torch.tensor([lab == "extrapolated" for lab in r["label"]])
    itp = torch.tensor([lab == "interpolated" for lab in r["label"]])
    # extrapolated pairs keep their frequency, interpolated ones are divided by the factor
    torch.testing.assert_close(r["yarn_frequency"][ext], r["original_frequency"][ext])
    torch.testing.assert_close(r["yarn_frequency"][itp], r["original_frequency"][itp] / cfg.yarn_factor)
    # YaRN's rule: >= beta_fast turns in the window -> kept, <= beta_slow turns -> interpolated
    assert (r["rotations"][ext] >= cfg.beta_fast).all()
    assert (r["rotations"][itp] <= cfg.beta_slow).all()
    # regions are contiguous: fast pairs first, slow pairs last
    order = [explain.REGIONS.index(lab) for lab in r["label"]]
    assert order == sorted(order)


def test_regions_real_3b():
    r = explain.yarn_regions(REAL_3B)
    counts = {k: r["label"].count(k) for k in explain.REGIONS}
    assert counts == {"extrapolated": 21, "blended": 16, "interpolated": 27}
    assert (r["low"], r["high"]) == (20, 37)
    assert r["factor"] == 16.0 and r["original_max"] == 16384
    assert r["wavelength"][0].item() == pytest.approx(2 * torch.pi)


def test_regions_without_yarn():
    r = explain.yarn_regions(minimistral.CONFIGS["mistral-small-3.1-24b"])
    assert set(r["label"]) == {"extrapolated"}
    torch.testing.assert_close(r["yarn_frequency"], r["original_frequency"])


# ----------------------------------------------------------------------------- temperature
def test_temperature_schedule_real_3b():
    s = explain.temperature_schedule(REAL_3B)
    assert s["edges"][0] == 0 and s["edges"][-1] == 262144 and len(s["edges"]) == len(s["tau"]) + 1 == 17
    tau = dict(zip(s["edges"][:-1].long().tolist(), s["tau"].tolist(), strict=True))
    assert tau[0] == 1.0
    assert tau[16384] == pytest.approx(1.0693, abs=5e-5)  # docs/paper.md §1
    assert tau[32768] == pytest.approx(1.1099, abs=5e-5)
    assert tau[131072] == pytest.approx(1.2197, abs=5e-5)
    assert s["tau"][-1].item() == pytest.approx(query_temperature(torch.tensor(262143.0), 0.1, 16384).item())
    with pytest.raises(ValueError):
        explain.temperature_schedule(minimistral.CONFIGS["mistral-small-3.1-24b"])


# ----------------------------------------------------------------------------- GQA
def test_kv_head_of_query_head():
    m = explain.kv_head_of_query_head(REAL_3B)
    assert m == [h // 4 for h in range(32)]
    assert explain.kv_head_of_query_head(explain.demo_config()) == [0, 0, 0, 0, 1, 1, 1, 1]


# ----------------------------------------------------------------------------- attention
@pytest.mark.parametrize("layer", [0, 1])
def test_attention_probabilities_rows_and_causality(tiny, layer):
    model, ids = tiny
    p = attention_maps.attention_probabilities(model, ids, layer)
    cfg = model.config
    assert p.shape == (2, cfg.num_attention_heads, ids.shape[1], ids.shape[1])
    torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]))
    assert p.triu(1).abs().max().item() == 0.0  # a token never attends to the future
    assert (p.diagonal(dim1=-2, dim2=-1) > 0).all()
    assert p[..., 0, 0].eq(1).all()  # the first token can only see itself


@pytest.mark.parametrize("layer", [0, 1])
def test_attention_probabilities_reproduce_model(tiny, layer):
    model, ids = tiny
    p = attention_maps.attention_probabilities(model, ids, layer)
    v = attention_maps.attention_inputs(model, ids, layer)["v"]  # [b, heads, t, d]
    want = attention_maps.attention_heads_output(model, ids, layer)  # the model's SDPA result
    torch.testing.assert_close(p @ v, want, rtol=0, atol=1e-5)
    # and o_proj of it is the layer's attention contribution to the residual stream
    attn = model.model.layers[layer].self_attn
    with torch.no_grad():
        out = attn.o_proj(rearrange(p @ v, "b h t d -> b t (h d)"))
    assert out.shape == (2, ids.shape[1], model.config.hidden_size)


def test_attention_probabilities_temperature_matters(tiny):
    """Past the window the temperature sharpens the softmax; without it the rows differ."""
    model, ids = tiny
    qkv = attention_maps.attention_inputs(model, ids, 0)
    window = model.config.original_max_position_embeddings
    tau = qkv["temperature"]
    assert tau[:window].eq(1).all() and tau[window:].gt(1).all()
    plain = minimistral.Ministral3(model.config.replace(llama_4_scaling_beta=None)).eval()
    plain.load_state_dict(model.state_dict())
    p, p_plain = (attention_maps.attention_probabilities(m, ids, 0) for m in (model, plain))
    torch.testing.assert_close(p[:, :, :window], p_plain[:, :, :window])
    assert (p[:, :, window:] - p_plain[:, :, window:]).abs().max() > 1e-4


def test_attention_probabilities_sliding_window():
    torch.manual_seed(0)
    cfg = explain.demo_config(sliding_window=8, num_hidden_layers=1)
    model = minimistral.Ministral3(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, 40))
    p = attention_maps.attention_probabilities(model, ids, 0)
    assert p.tril(-8).abs().max().item() == 0.0
    v = attention_maps.attention_inputs(model, ids, 0)["v"]
    torch.testing.assert_close(p @ v, attention_maps.attention_heads_output(model, ids, 0), rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- parameters, round trip
def test_parameter_shares_add_up():
    shares = explain.parameter_shares(minimistral.CONFIGS)
    totals = {n: sum(s.values()) for n, s in shares.items()}
    assert totals == {
        "ministral-3-3b": 3_429_006_336,
        "ministral-3-8b": 8_489_553_920,
        "ministral-3-14b": 13_506_073_600,
        "mistral-small-3.1-24b": 23_572_403_200,
    }
    assert shares["ministral-3-3b"]["embeddings"] == 131072 * 3072  # tied: counted once


def test_transformers_round_trip():
    pytest.importorskip("transformers")
    cfg = explain.demo_config(num_hidden_layers=1)
    out = explain.transformers_round_trip(cfg, seq_len=96)
    assert out["config"] == cfg
    assert out["logits_shape"] == (1, 96, cfg.vocab_size)
    assert out["max_abs_diff"] < 1e-4


def test_attention_entropy():
    t = 6
    uniform = torch.tril(torch.ones(t, t))
    uniform = uniform / uniform.sum(-1, keepdim=True)  # row i uniform over i + 1 keys
    torch.testing.assert_close(attention_maps.attention_entropy(uniform), torch.log(torch.arange(1, t + 1).float()))
    one_hot = torch.eye(t)[None]  # [1, t, t]
    assert attention_maps.attention_entropy(one_hot).abs().max().item() == 0.0


def test_temperature_lowers_entropy_past_window(tiny):
    model, ids = tiny
    plain = minimistral.Ministral3(model.config.replace(llama_4_scaling_beta=None)).eval()
    plain.load_state_dict(model.state_dict())
    probs = (attention_maps.attention_probabilities(m, ids, 0) for m in (model, plain))
    h, h_plain = (attention_maps.attention_entropy(p) for p in probs)
    window = model.config.original_max_position_embeddings
    torch.testing.assert_close(h[..., :window], h_plain[..., :window])
    assert (h_plain - h)[..., window:].mean() > 0
