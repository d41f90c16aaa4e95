"""Pruning: full-rank rotation keeps logits, each heuristic matches its definition, transformers loads the result."""

import pytest
import torch
import torch.nn.functional as F

import minimistral
from minimistral import ModelConfig
from minimistral.evaluate.loss import mean_loss
from minimistral.prune.baselines import counterfactual_scores
from minimistral.prune.heuristics import (
    LAYER_SCORES,
    block_io_scores,
    ffn_activation_importance,
    keep_top,
    layer_scores,
    norm_gains,
    pca_rotation,
    prune,
    prune_ffn,
    prune_hidden,
    prune_layers,
    residual_second_moment,
    select_layers,
    site_energy,
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


def test_tying_an_untied_model_keeps_its_folded_head():
    """Untied -> tied: the shared matrix is the head (logits exact given the final hidden state), the embedding goes."""
    m = model(torch.float64)
    untied = prune_hidden(m, batches(), hidden_size=48, tie_word_embeddings=False)  # exact
    tied = prune_hidden(m, batches(), hidden_size=48, tie_word_embeddings=True)
    assert tied.config.tie_word_embeddings and tied.lm_head.weight is tied.model.embed_tokens.weight
    assert torch.allclose(tied.lm_head.weight, untied.lm_head.weight, atol=1e-12)
    assert torch.equal(tied.model.norm.weight, untied.model.norm.weight)  # all ones: the gain is in the head
    assert tied.num_parameters() == untied.num_parameters() - 128 * 48


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


@pytest.mark.parametrize("score", LAYER_SCORES)
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


def test_iterative_counterfactual_rescores_on_the_pruned_model():
    m, windows = model(), batches(2)
    single = counterfactual_scores(m, windows)
    scores = layer_scores(m, windows, "counterfactual_iterative")  # full ranking: 0 = removed first
    assert sorted(scores.tolist()) == [0, 1, 2, 3]
    first = int(scores.argmin())
    assert first == int(single.argmin())  # step 1 is the single-shot choice
    # step 2 removes the layer whose removal hurts least *given the first is gone*
    rest = [i for i in range(4) if i != first]
    losses = {i: mean_loss(select_layers(m, [j for j in rest if j != i]), windows) for i in rest}
    assert int((scores == 1).nonzero()) == min(losses, key=losses.get)
    # stopping early keeps the same layers
    for k in (1, 2, 3):
        stopped = layer_scores(m, windows, "counterfactual_iterative", num_layers=k)
        assert keep_top(stopped, k) == keep_top(scores, k)


def test_per_site_gain_is_each_site_kept_energy():
    m, b = model(torch.float64), batches(4)
    C, _ = residual_second_moment(m, b)
    Q, eigenvalues = pca_rotation(C)
    energy = site_energy(m, b, Q)  # [2L + 1, D]
    assert torch.allclose(energy[:-1].sum(0), eigenvalues, rtol=1e-9)  # the block sites make up C
    pooled, per_site = norm_gains(4, 16, eigenvalues), norm_gains(4, 16, eigenvalues, energy)
    assert len(set(pooled.values())) == 1 and len(set(per_site.values())) == 9
    # site 3 (layer 1's FFN norm) by hand: share of its input energy along the top 16 components
    x = []
    h = m.model.layers[1].post_attention_layernorm.register_forward_pre_hook(lambda mod, a: x.append(a[0]))
    with torch.no_grad():
        for ids in b:
            m(ids)
    h.remove()
    xq = torch.cat([t.flatten(0, 1) for t in x]) @ Q  # [tokens, D]
    kept = (xq[:, :16] ** 2).sum() / (xq**2).sum()
    assert per_site["model.layers.1.post_attention_layernorm.weight"] == pytest.approx((kept * 48 / 16).sqrt().item())
    p = prune_hidden(m, b, 16, per_site_gain=True)
    q = prune_hidden(m, b, 16, per_site_gain=False)
    ratio = p.model.layers[1].post_attention_layernorm.weight / q.model.layers[1].post_attention_layernorm.weight
    want = per_site["model.layers.1.post_attention_layernorm.weight"] / pooled["model.norm.weight"]
    assert torch.allclose(ratio, torch.full_like(ratio, want), rtol=1e-9)
    # at full rank every factor is 1 and the logits do not move
    full = prune_hidden(m, b, 48, per_site_gain=True)
    assert (logits(full, IDS) - logits(m, IDS)).abs().max().item() < 1e-8


def test_pca_basis_has_a_canonical_sign():
    C = residual_second_moment(model(torch.float64), batches())[0]
    Q, _ = pca_rotation(C)
    assert (Q.gather(0, Q.abs().argmax(0, keepdim=True)) > 0).all()
    # the same statistics in another channel order give the same basis (eigh alone may flip axes)
    perm = torch.randperm(48, generator=torch.Generator().manual_seed(0))
    Qp, _ = pca_rotation(C[perm][:, perm])
    assert torch.allclose(Qp, Q[perm], atol=1e-8)


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


def hf_checkpoint(tmp_path):
    """A transformers Mistral directory with its own tokenizer.json, and a calibration text file."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

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
    return src, calib


def test_prune_cli_on_a_transformers_checkpoint(tmp_path, capsys):
    """The whole command on a Hugging Face Mistral-family directory with its own tokenizer."""
    transformers = pytest.importorskip("transformers")
    from minimistral.cli import main

    src, calib = hf_checkpoint(tmp_path)
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


def test_prune_cli_tie_and_low_memory(tmp_path, capsys):
    """--tie gives a tied child; --low-memory gives the in-memory path's weights, one layer at a time."""
    from minimistral.arch.params import count_parameters
    from minimistral.cli import main

    src, calib = hf_checkpoint(tmp_path)
    argv = ["prune", "--checkpoint", str(src), "--layers", "3", "--hidden", "32", "--ffn", "64", "--tie",
            "--layer-score", "counterfactual_iterative", "--calib", str(calib), "--calib-tokens", "1024",
            "--seq-len", "64"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "a"), "--no-low-memory"]) == 0
    assert "(in memory)" in capsys.readouterr().out
    assert main([*argv, "--out", str(tmp_path / "b"), "--low-memory"]) == 0
    assert "(one layer at a time)" in capsys.readouterr().out
    a, b = (minimistral.from_pretrained(tmp_path / d) for d in "ab")
    assert a.config == b.config and a.config.tie_word_embeddings
    assert (
        a.num_parameters() == count_parameters(a.config) < count_parameters(a.config.replace(tie_word_embeddings=False))
    )
    assert all(torch.allclose(v, b.state_dict()[k], rtol=1e-5, atol=1e-6) for k, v in a.state_dict().items())
    assert (tmp_path / "b" / "tokenizer.json").exists()
    assert main([*argv, "--out", str(tmp_path / "c"), "--layer-score", "entropy"]) == 2
    assert "unknown layer score 'entropy'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the study
def tiny_parent():
    """A random model of the tiny parent's shape (tiny-24b)."""
    from minimistral.arch.config import TINY_CONFIGS

    torch.manual_seed(0)
    return minimistral.Ministral3(TINY_CONFIGS["tiny-24b"]).eval()


def test_study_prunes_each_target_to_its_exact_parameter_count():
    """tiny-3b is tied: Algorithm 2 in the study ties the pruned model's head, whatever the recipe."""
    from minimistral.arch.config import TINY_CONFIGS
    from minimistral.arch.params import count_parameters
    from minimistral.prune.study import StudyData, full_table

    g = torch.Generator().manual_seed(0)
    windows = torch.randint(0, 4096, (2, 33), generator=g)
    rows = full_table(tiny_parent(), StudyData([windows], [windows]), targets=("tiny-3b",))
    assert count_parameters(TINY_CONFIGS["tiny-3b"]) == 3_061_824
    tied = [r for r in rows if r["target"] == "tiny-3b"]
    untied = [r for r in rows if r["target"] == "tiny-3b (untied head)"]
    assert len(tied) == len(untied) == 5 and all(r["params"] == 3_061_824 for r in tied)
    head = TINY_CONFIGS["tiny-3b"].vocab_size * TINY_CONFIGS["tiny-3b"].hidden_size
    assert all(r["params"] == 3_061_824 + head for r in untied)  # the reference row keeps its own head


def test_study_writes_each_table_when_it_is_done(tmp_path):
    from minimistral.files import read_csv
    from minimistral.prune.study import write_tables

    def interrupted():
        raise KeyboardInterrupt

    tables = {"first": lambda: [{"method": "a", "val_loss": 1.0}], "second": interrupted}
    with pytest.raises(KeyboardInterrupt):
        write_tables(tables, tmp_path)
    assert read_csv(tmp_path / "first.csv") == [{"method": "a", "val_loss": "1"}]
    assert not (tmp_path / "second.csv").exists()
