"""Logits of minimistral equal transformers' (fp32, max abs diff <= 1e-4) on small random configs."""

import pytest
import torch
from conftest import hf_model

import minimistral
from minimistral import ModelConfig
from minimistral.arch.model import Ministral3

TOL = 1e-4


def ours_from(hf) -> Ministral3:
    cfg = ModelConfig.from_hf_dict(hf.config.to_dict())
    model = Ministral3(cfg).eval()
    model.load_state_dict(hf.state_dict(), strict=not cfg.tie_word_embeddings)
    return model


CASES = {
    "yarn+temp untied G4": dict(kind="ministral3"),
    "yarn+temp tied": dict(kind="ministral3", tie_word_embeddings=True),
    "temp without yarn": dict(kind="ministral3", yarn=False),
    "G1 (MHA)": dict(kind="ministral3", num_key_value_heads=8),
    "G2": dict(kind="ministral3", num_key_value_heads=4),
    "head_dim 16 > hidden/heads": dict(kind="ministral3", head_dim=16, num_attention_heads=4, num_key_value_heads=1),
    "mistral plain rope": dict(kind="mistral", yarn=False),
    "mistral plain rope tied": dict(kind="mistral", yarn=False, tie_word_embeddings=True),
    "mistral yarn no temp": dict(kind="mistral", yarn=True),
    "mistral sliding window 24": dict(kind="mistral", yarn=False, sliding_window=24),
    "theta 1e9": dict(kind="ministral3", rope_theta=1e9),
}


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers(case):
    kw = dict(CASES[case])
    hf = hf_model(kw.pop("kind"), **kw)
    ours = ours_from(hf)
    # original window 16, seq 72: positions cross it 4 times -> temperature takes 5 values
    ids = torch.randint(0, hf.config.vocab_size, (3, 72), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = hf(ids).logits
        got = ours(ids)
    assert got.shape == (3, 72, hf.config.vocab_size)
    assert want.abs().max() > 1.0  # the comparison is not between near-zero tensors
    assert (got - want).abs().max().item() <= TOL


def test_temperature_takes_several_values_in_parity_sequences():
    from minimistral.arch.rope import query_temperature

    temps = query_temperature(torch.arange(72).float(), 0.1, 16).unique()
    assert len(temps) >= 3


def test_switching_off_yarn_or_temperature_changes_logits():
    """The parity cases above would be vacuous if these knobs did nothing."""
    hf = hf_model("ministral3")
    ours = ours_from(hf)
    ids = torch.randint(0, 256, (1, 72))
    with torch.no_grad():
        base = ours(ids)
        for change in (dict(yarn_factor=None), dict(llama_4_scaling_beta=None)):
            other = Ministral3(ours.config.replace(**change))
            other.load_state_dict(ours.state_dict())
            assert (other(ids) - base).abs().max() > 1e-3


def test_gradients_match_transformers():
    hf = hf_model("ministral3")
    ours = ours_from(hf)
    ids = torch.randint(0, 256, (2, 40))
    for m, logits in ((hf, lambda x: hf(x).logits), (ours, ours)):
        m.zero_grad()
        logits(ids).logsumexp(-1).mean().backward()
    g_hf = hf.model.layers[0].self_attn.q_proj.weight.grad
    g_ours = ours.model.layers[0].self_attn.q_proj.weight.grad
    assert torch.allclose(g_hf, g_ours, atol=1e-5, rtol=1e-4)


def test_bf16_error_no_worse_than_transformers(hf_dir):
    """In bf16 both implementations round; ours must stay as close to the fp32 logits as theirs."""
    hf, path = hf_dir()
    ids = torch.randint(0, 256, (2, 40))
    with torch.no_grad():
        exact = hf(ids).logits
        theirs = hf.to(torch.bfloat16)(ids).logits.float()
        ours = minimistral.from_pretrained(path, dtype=torch.bfloat16)
        assert ours.lm_head.weight.dtype == torch.bfloat16
        mine = ours(ids).float()
    err_theirs = (theirs - exact).abs().mean().item()
    err_ours = (mine - exact).abs().mean().item()
    assert err_ours <= 1.5 * err_theirs + 1e-3
