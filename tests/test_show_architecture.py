"""Notebook 01's non-plot logic: head rules on attention maps, the paper's parameter counts, token labels."""

from __future__ import annotations

import pytest
import torch

import minimistral
from minimistral.arch.attention_maps import attention_probabilities
from minimistral.arch.params import count_parameters
from minimistral.data.tokenizer import Tokenizer
from minimistral.show import explain
from minimistral.show.architecture import token_labels

IDS = torch.tensor([1, 5, 6, 7, 5, 6, 8])  # <s> a b c a b d: "a b" repeats


def test_rule_targets_point_where_each_rule_says():
    assert set(explain.rule_targets(IDS)) == set(explain.HEAD_RULES) - {"start of the line"}
    line_ends = torch.tensor([0, 0, 0, 1, 0, 0, 0]).bool()  # "c" ends the first line: "a b" starts line two
    t = explain.rule_targets(IDS, line_ends)
    assert set(t) == set(explain.HEAD_RULES)
    cells = {rule: sorted(map(tuple, m.nonzero().tolist())) for rule, m in t.items()}
    assert cells["previous token"] == [(i, i - 1) for i in range(2, 7)]
    assert cells["first token"] == [(i, 0) for i in range(2, 7)]
    assert cells["start of the line"] == [(2, 1), (3, 1), (4, 4), (5, 4), (6, 4)]
    assert cells["earlier copy"] == [(4, 1), (5, 2)]  # the second a sees the first, the second b the first
    # induction: at the second "a" (4) look at what followed the first "a" (key 2); at the second "b" (5),
    # what followed the first b (key 3)
    assert cells["after an earlier copy"] == [(4, 2), (5, 3)]


def test_scores_of_a_head_that_follows_one_rule():
    seq = IDS.shape[0]
    previous = torch.zeros(seq, seq)
    previous[0, 0] = 1
    previous[torch.arange(1, seq), torch.arange(seq - 1)] = 1  # every row on the token before
    s = explain.head_rule_scores(previous, IDS)
    assert s["previous token"].item() == 1
    assert s["first token"].item() == 0
    # the uniform yardstick: row i puts 1/(i+1) on each key, so one target cell gets 1/(i+1)
    u = explain.head_rule_scores(explain.uniform_attention(seq), IDS)
    assert u["previous token"].item() == pytest.approx(sum(1 / (i + 1) for i in range(2, seq)) / (seq - 2))
    assert u["after an earlier copy"].item() == pytest.approx((1 / 5 + 1 / 6) / 2)


def test_strongest_heads_on_a_real_model():
    torch.manual_seed(0)
    cfg = explain.demo_config(llama_4_scaling_beta=None, yarn_factor=None, original_max_position_embeddings=None)
    model = minimistral.Ministral3(cfg).eval()
    model.init_weights(std=0.2)
    ids = IDS[None]
    probs = torch.stack([attention_probabilities(model, ids, layer)[0] for layer in range(cfg.num_hidden_layers)])
    scores = explain.head_rule_scores(probs, IDS)
    assert scores["first token"].shape == (cfg.num_hidden_layers, cfg.num_attention_heads)
    best = explain.strongest_heads(scores)
    for rule, (layer, head, score) in best.items():
        assert score == scores[rule].max().item() == scores[rule][layer, head].item()


def test_uniform_attention_is_causal_and_normalised():
    u = explain.uniform_attention(5)
    assert torch.allclose(u.sum(-1), torch.ones(5))
    assert u.triu(1).eq(0).all()
    assert u[3, 0].item() == pytest.approx(1 / 4)


def test_paper_parameter_counts_equal_ours():
    counts = explain.paper_parameter_counts()
    assert counts == {
        "ministral-3-3b": 3_429_006_336,
        "ministral-3-8b": 8_489_553_920,
        "ministral-3-14b": 13_506_073_600,
        "mistral-small-3.1-24b": 23_572_403_200,
    }  # docs/paper.md §1
    for name, n in counts.items():
        assert count_parameters(minimistral.CONFIGS[name]) == n


def test_token_labels_show_bos_spaces_and_newlines():
    vocab = {"<s>": 1, "To": 2, " be": 3, ",\n": 4}
    inverse = {i: s for s, i in vocab.items()}

    def encode(s):  # greedy longest match over this toy vocabulary
        out = []
        while s:
            piece = max((p for p in vocab if p != "<s>" and s.startswith(p)), key=len)
            out.append(vocab[piece])
            s = s[len(piece) :]
        return out

    tok = Tokenizer(encode, lambda ids: "".join(inverse[i] for i in ids if i != 1), 1, None, source=None)
    assert token_labels(tok, "To be,\n be") == ["<s>", "To", "·be", ",↵", "·be"]
