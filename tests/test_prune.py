"""Pruning: full-rank rotation keeps logits, each heuristic matches its definition, transformers loads the result."""

import pytest
import torch
import torch.nn.functional as F

import minimistral
from minimistral import ModelConfig
from minimistral.prune import (
    block_io_scores,
    ffn_activation_importance,
    keep_top,
    prune,
    prune_ffn,
    prune_hidden,
    prune_layers,
    select_layers,
)

CFG = ModelConfig(
    vocab_size=128, hidden_size=48, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, yarn_factor=4.0, original_max_position_embeddings=16,
    llama_4_scaling_beta=0.1, max_position_embeddings=64,
)  # fmt: skip


def model(dtype=torch.float32, seed=0, **changes):
    torch.manual_seed(seed)
    m = minimistral.Ministral3(CFG.replace(**changes)).to(dtype).eval()
    with torch.no_grad():  # trained-looking weights: non-uniform gains, larger matrices
        for name, p in m.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0, 0.1)
    return m


def batches(n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 128, (2, 40), generator=g) for _ in range(n)]


def logits(m, ids):
    with torch.no_grad():
        return m(ids)


IDS = torch.randint(0, 128, (2, 40), generator=torch.Generator().manual_seed(9))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-8), (torch.float32, 1e-4)])
@pytest.mark.parametrize("tied", [False, True])
def test_full_rank_rotation_leaves_logits_unchanged(dtype, tol, tied):
    m = model(dtype, tie_word_embeddings=tied)
    # a tied model is untied by folding the final gain into the head: exact
    rotated = prune_hidden(m, batches(), hidden_size=48, tie_word_embeddings=False)
    assert not rotated.config.tie_word_embeddings
    assert (logits(rotated, IDS) - logits(m, IDS)).abs().max().item() <= tol
    # the rotation really changed the weights: the test is not vacuous
    assert (rotated.model.embed_tokens.weight - m.model.embed_tokens.weight).abs().max() > 0.01


def test_keeping_a_head_tied_is_exact_only_for_a_uniform_final_gain():
    m = model(torch.float64, tie_word_embeddings=True)
    with torch.no_grad():
        m.model.norm.weight.fill_(1.3)
    kept = prune_hidden(m, batches(), hidden_size=48)  # None keeps it tied
    assert kept.config.tie_word_embeddings and kept.lm_head.weight is kept.model.embed_tokens.weight
    assert (logits(kept, IDS) - logits(m, IDS)).abs().max().item() < 1e-8
    with torch.no_grad():
        m.model.norm.weight.uniform_(0.5, 1.5)
    approx = prune_hidden(m, batches(), hidden_size=48)
    assert (logits(approx, IDS) - logits(m, IDS)).abs().max().item() > 1e-3  # the price of staying tied


def test_pca_keeps_more_than_slicing_the_first_channels():
    """A residual stream that lives in a 12-dim subspace (as trained ones mostly do): PCA finds it."""
    m = model()
    with torch.no_grad():
        basis = torch.linalg.qr(torch.randn(48, 12))[0]  # [48, 12] orthonormal, not aligned with channels
        m.model.embed_tokens.weight.copy_(torch.randn(128, 12) @ basis.T)
        for b in m.model.layers:  # writers add only inside the subspace
            b.self_attn.o_proj.weight.copy_(basis @ basis.T @ b.self_attn.o_proj.weight)
            b.mlp.down_proj.weight.copy_(basis @ basis.T @ b.mlp.down_proj.weight)
    errors = {}
    for method in ("pca", "first", "magnitude"):
        p = prune_hidden(m, batches(6), hidden_size=16, method=method)
        assert p.config.hidden_size == 16 and p.model.embed_tokens.weight.shape == (128, 16)
        errors[method] = (logits(p, IDS) - logits(m, IDS)).abs().max().item()
    assert errors["pca"] < 1e-3  # the subspace is kept whole (fp32 rounding only)
    assert errors["first"] > 0.1 and errors["magnitude"] > 0.1


def test_layer_scores_match_their_definition():
    m = model()
    b = batches(2)
    scores = block_io_scores(m, b)
    # recompute layer 2's out/in and block influence by hand
    captured = []
    h = m.model.layers[2].register_forward_hook(lambda mod, a, out: captured.append((a[0], out)))
    with torch.no_grad():
        for ids in b:
            m(ids)
    h.remove()
    x = torch.cat([c[0].flatten(0, 1) for c in captured])
    y = torch.cat([c[1].flatten(0, 1) for c in captured])
    assert scores["out/in"][2].item() == pytest.approx((y.norm(dim=-1) / x.norm(dim=-1)).mean().item(), rel=1e-5)
    assert scores["in/out"][2].item() == pytest.approx((x.norm(dim=-1) / y.norm(dim=-1)).mean().item(), rel=1e-5)
    bi = (1 - F.cosine_similarity(x, y, dim=-1)).mean().item()
    assert scores["block_influence"][2].item() == pytest.approx(bi, rel=1e-5)
    assert not m.model.layers[2]._forward_hooks  # calibration left no hook behind


@pytest.mark.parametrize("score", ["out/in", "in/out", "block_influence", "counterfactual", "magnitude", "random"])
def test_prune_layers_keeps_the_chosen_blocks(score):
    m = model()
    p = prune_layers(m, batches(2), 2, score=score)
    assert p.config.num_hidden_layers == 2 and len(p.model.layers) == 2
    kept = [
        i
        for i in range(4)
        if any(
            torch.equal(p.model.layers[j].mlp.up_proj.weight, m.model.layers[i].mlp.up_proj.weight) for j in range(2)
        )
    ]
    assert len(kept) == 2


def test_selecting_every_layer_changes_nothing():
    m = model()
    assert torch.equal(logits(select_layers(m, [0, 1, 2, 3]), IDS), logits(m, IDS))


def test_ffn_importance_is_the_mean_abs_of_the_gated_product():
    m = model()
    b = batches(2)
    imp = ffn_activation_importance(m, b)
    acts = []
    h = m.model.layers[1].post_attention_layernorm.register_forward_hook(lambda mod, a, out: acts.append(out))
    with torch.no_grad():
        for ids in b:
            m(ids)
    h.remove()
    x = torch.cat([a.flatten(0, 1) for a in acts])
    mlp = m.model.layers[1].mlp
    want = (F.silu(mlp.gate_proj(x)) * mlp.up_proj(x)).abs().mean(0)
    assert torch.allclose(imp[1], want, rtol=1e-4, atol=1e-6)


def test_prune_ffn_full_width_is_identity_and_smaller_width_keeps_top_units():
    m = model()
    assert torch.equal(logits(prune_ffn(m, batches(), 96), IDS), logits(m, IDS))
    p = prune_ffn(m, batches(), 40)
    imp = ffn_activation_importance(m, batches())
    keep = keep_top(imp[0], 40)
    assert torch.equal(p.model.layers[0].mlp.gate_proj.weight, m.model.layers[0].mlp.gate_proj.weight[keep])
    assert torch.equal(p.model.layers[0].mlp.down_proj.weight, m.model.layers[0].mlp.down_proj.weight[:, keep])


def test_prune_all_three_then_transformers_loads_it(tmp_path):
    transformers = pytest.importorskip("transformers")
    m = model()
    p = prune(m, batches(), num_layers=3, hidden_size=32, intermediate_size=64)
    c = p.config
    assert (c.num_hidden_layers, c.hidden_size, c.intermediate_size) == (3, 32, 64)
    assert p.num_parameters() < m.num_parameters()
    minimistral.save_pretrained(p, tmp_path / "pruned")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "pruned").eval()
    with torch.no_grad():
        assert (hf(IDS).logits - logits(p, IDS)).abs().max() < 1e-4
    assert not any(m_._forward_hooks or m_._forward_pre_hooks for m_ in m.modules())  # caller's model untouched


def test_bad_arguments():
    m = model()
    with pytest.raises(ValueError, match=r"hidden_size must be in 1\.\.48"):
        prune_hidden(m, batches(), 64)
    with pytest.raises(ValueError, match="unknown layer score"):
        prune_layers(m, batches(), 2, score="entropy")
    with pytest.raises(ValueError, match="cannot keep 5 of 4"):
        prune_layers(m, batches(), 5)
    with pytest.raises(ValueError, match="no calibration batches"):
        prune_ffn(m, [], 10)


def test_prune_cli_on_a_transformers_checkpoint(tmp_path, capsys):
    """The whole command on a Hugging Face Mistral-family directory with its own tokenizer."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    from minimistral.cli import main

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {chr(32 + i): 3 + i for i in range(95)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    src = tmp_path / "hf"
    torch.manual_seed(0)
    hf_cfg = transformers.MistralConfig(
        vocab_size=98, hidden_size=48, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, sliding_window=None,
    )  # fmt: skip
    transformers.MistralForCausalLM(hf_cfg).save_pretrained(src)
    tok.save(str(src / "tokenizer.json"))
    calib = tmp_path / "calib.txt"
    calib.write_text("It was the best of times, it was the worst of times. " * 40)
    argv = ["prune", "--checkpoint", str(src), "--out", str(tmp_path / "out"), "--layers", "3", "--hidden", "32",
            "--ffn", "64", "--calib", str(calib), "--calib-tokens", "1024", "--seq-len", "64"]  # fmt: skip
    assert main(argv) == 0
    assert "pruned to 3 layers, hidden 32, FFN 64" in capsys.readouterr().out
    out = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert out.config.num_hidden_layers == 3 and out.config.hidden_size == 32
    assert (tmp_path / "out" / "tokenizer.json").exists()
    bad = ["prune", "--checkpoint", str(src), "--out", str(tmp_path / "o2"), "--calib", "poetry"]
    assert main(bad) == 2
    assert "--calib 'poetry': not a file" in capsys.readouterr().err
