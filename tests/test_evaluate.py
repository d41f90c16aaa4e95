"""Held-out scoring: bits per byte bookkeeping, n-gram baselines, model scores against a direct computation."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import minimistral
from minimistral.data.corpus import windows
from minimistral.data.tokenizer import train_tokenizer
from minimistral.evaluate.loss import Score, model_score, token_bytes, with_total
from minimistral.evaluate.ngram import NGram, baseline_scores

TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer. " * 20


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer([TEXT, "Question: 2 + 3 =\nAnswer: 5\n", "héllo wörld ✓ 你好"], vocab_size=400)


def test_token_bytes_add_up_to_the_utf8_length(tok):
    nbytes = token_bytes(tok, tok.get_vocab_size())
    for text in (TEXT, "héllo wörld ✓ 你好 🙂"):
        ids = tok.encode(text).ids
        assert nbytes[ids].sum() == len(text.encode("utf-8"))
    assert nbytes[:32].sum() == 0  # special tokens spell no bytes


def test_score_arithmetic():
    s = Score(nats=2 * math.log(2) * 10, tokens=4, bytes=10) + Score(0.0, 0, 10)
    assert s.bits_per_byte == pytest.approx(1.0) and s.loss == pytest.approx(20 * math.log(2) / 4)
    total = with_total({"a": Score(1.0, 1, 1), "b": Score(3.0, 1, 3)})["overall"]
    assert (total.nats, total.tokens, total.bytes) == (4.0, 2, 4)


def test_ngram_probabilities_are_normalised():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 50, 5000)
    ng = NGram(train, 50)
    assert ng.unigram.sum() == pytest.approx(1.0)
    for a in (0, 7, 49):
        ctx = np.full(50, a)
        p = (ng.bigram_counts(ctx, np.arange(50)) + 3.0 * ng.unigram) / (ng.context_counts[a] + 3.0)
        assert p.sum() == pytest.approx(1.0)


def test_bigram_beats_unigram_on_a_markov_stream():
    rng = np.random.default_rng(0)
    stream = [0]
    for _ in range(20000):  # each token strongly predicts the next
        stream.append((stream[-1] * 7 + 3) % 64 if rng.random() < 0.9 else int(rng.integers(64)))
    stream = np.array(stream)
    ng = NGram(stream[:15000], 64)
    w = {"s": windows(stream[15000:], 32)}
    nbytes = np.ones(64, dtype=np.int64)
    scores = baseline_scores(ng, w, nbytes)
    assert scores["bigram"]["s"].loss < 0.5 * scores["unigram"]["s"].loss


def test_model_score_equals_direct_cross_entropy():
    cfg = minimistral.ModelConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, yarn_factor=None, llama_4_scaling_beta=None,
        original_max_position_embeddings=None,
    )  # fmt: skip
    torch.manual_seed(0)
    model = minimistral.Ministral3(cfg).eval()
    w = torch.randint(0, 64, (5, 17))
    nbytes = np.arange(64) % 3
    got = model_score(model, w, nbytes, batch_size=2)
    with torch.no_grad():
        want = F.cross_entropy(model(w[:, :-1]).flatten(0, 1), w[:, 1:].flatten(), reduction="sum").item()
    assert got.nats == pytest.approx(want, rel=1e-5)
    assert got.tokens == 5 * 16 and got.bytes == int(nbytes[w[:, 1:].numpy()].sum())
