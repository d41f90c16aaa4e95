"""The long-context stage: scaling variants, long documents, loss by position, passkey prompts, attention entropy."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import DatasetDict

from minimistral.arch.config import TINY_CONFIGS, TINY_WINDOW, ModelConfig
from minimistral.arch.generate import generate
from minimistral.arch.model import Ministral3
from minimistral.arch.rope import inverse_frequencies, rope_frequencies
from minimistral.data.corpus import Corpus, pack, to_dataset, tokenize
from minimistral.data.retrieval import NEEDLE, QUESTION, filler_sentences
from minimistral.data.tokenizer import BOS_ID, EOS_ID, Tokenizer, load_tokenizer, read_tokenizer_json, train_tokenizer
from minimistral.evaluate.loss import model_score
from minimistral.longctx.passkey import (
    FILLER,
    passkey_accuracy,
    passkey_examples,
    passkey_scores,
)
from minimistral.longctx.positions import attention_entropy as mean_attention_entropy
from minimistral.longctx.positions import (
    frequency_ratios,
    long_context_teacher,
    long_documents,
    position_bucket_loss,
    rescaled,
    with_position_scaling,
)

PARENT = TINY_CONFIGS["tiny-24b"]  # plain RoPE, window 256
PROSE_TRAIN = "Shall I compare thee to a summer's day? Thou art more lovely and more temperate. " * 30
PROSE_VAL = "Our revels now are ended. These our actors were all spirits, and are melted into air. " * 30
MATH = "Question: What is 12 + 30?\nSolution: 12 + 30 = 42\nAnswer: 42"


def tiny(**changes) -> ModelConfig:
    """A small plain-RoPE model with a 16-token 'trained window' for the variants to extend."""
    base = dict(
        vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, rope_theta=100.0, yarn_factor=None, llama_4_scaling_beta=None,
        original_max_position_embeddings=None, max_position_embeddings=16,
    )  # fmt: skip
    return ModelConfig(**(base | changes))


def random_model(seed: int = 0, std: float = 0.02, **changes) -> Ministral3:
    torch.manual_seed(seed)
    model = Ministral3(tiny(**changes)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, std)
    return model


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Tokenizer:
    texts = [PROSE_TRAIN, PROSE_VAL, MATH, " ".join(FILLER), NEEDLE.format(key="0123456789"), QUESTION]
    path = tmp_path_factory.mktemp("tok")
    train_tokenizer(texts * 5, vocab_size=400).save(str(path / "tokenizer.json"))
    return load_tokenizer(path)


# ----------------------------------------------------------------------------- variants
def test_variants_set_the_frequencies():
    omega = rope_frequencies(PARENT.head_dim, PARENT.rope_theta)
    none = with_position_scaling(PARENT, "none", temperature=False)
    assert torch.equal(inverse_frequencies(none)[0], omega)  # identity
    assert none == PARENT.replace(max_position_embeddings=4 * TINY_WINDOW)
    linear = with_position_scaling(PARENT, "linear", factor=4.0)
    assert torch.equal(inverse_frequencies(linear)[0], omega / 4) and inverse_frequencies(linear)[1] == 1.0
    # YaRN x4 with the temperature is exactly the children's RoPE (tiny-14b, 8b, 3b)
    yarn = with_position_scaling(PARENT, "yarn")
    child = TINY_CONFIGS["tiny-14b"]
    rope_fields = ("yarn_factor", "original_max_position_embeddings", "llama_4_scaling_beta", "max_position_embeddings")
    assert all(getattr(yarn, f) == getattr(child, f) for f in rope_fields)
    assert torch.equal(inverse_frequencies(yarn)[0], inverse_frequencies(child)[0])
    window = with_position_scaling(PARENT, "window", temperature=False)
    assert window.sliding_window == TINY_WINDOW and torch.equal(inverse_frequencies(window)[0], omega)


def test_frequency_ratios():
    r = frequency_ratios(PARENT)
    assert torch.allclose(r["none"], torch.ones(16)) and torch.allclose(r["window"], torch.ones(16))
    assert torch.allclose(r["linear"], torch.full((16,), 0.25))
    yarn = r["yarn"]  # fast channels kept, slow ones divided by 4, monotone in between
    assert yarn[0] == pytest.approx(1.0) and yarn[-1] == pytest.approx(0.25)
    assert (yarn[1:] <= yarn[:-1] + 1e-7).all() and ((yarn > 0.26) & (yarn < 0.99)).any()


def test_bad_variant_arguments_are_named():
    with pytest.raises(ValueError, match="method"):
        with_position_scaling(PARENT, "ntk")
    with pytest.raises(ValueError, match="factor"):
        with_position_scaling(PARENT, "yarn", factor=0.5)
    with pytest.raises(ValueError, match="method"):
        long_context_teacher(random_model(), "ntk")


@pytest.mark.parametrize("tied", [False, True])
def test_rescaled_shares_or_copies_the_weights(tied):
    model = random_model(tie_word_embeddings=tied)
    ids = torch.randint(0, 400, (2, 48))
    shared = rescaled(model, share=True, method="linear", original=16)
    copied = rescaled(model, method="linear", original=16)
    for name, p in model.named_parameters():
        assert shared.get_parameter(name).data_ptr() == p.data_ptr()
        assert copied.get_parameter(name).data_ptr() != p.data_ptr()
        assert torch.equal(copied.get_parameter(name), p)
    assert (copied.lm_head.weight is copied.model.embed_tokens.weight) == tied
    # a fresh model of the new config with the same weights computes the same logits
    fresh = Ministral3(shared.config).eval()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(shared(ids), fresh(ids))
        assert (shared(ids) - model(ids)).abs().max() > 1e-4  # the new tables matter
        same = rescaled(model, method="none", temperature=False, original=16)
        assert torch.equal(same(ids), model(ids))


def test_window_variant_matches_the_parent_inside_the_window():
    model = random_model(std=0.2)
    teacher = long_context_teacher(model, "window", original=16)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    ids = torch.randint(0, 400, (2, 40))
    with torch.no_grad():
        assert torch.allclose(teacher(ids[:, :16]), model(ids[:, :16]), atol=1e-6)
        assert (teacher(ids) - model(ids))[:, 16:].abs().max() > 1e-4  # past the window it forgets


# ----------------------------------------------------------------------------- data
def tiny_corpus(tokenizer: Tokenizer) -> Corpus:
    rows = {
        "train": [
            {"text": PROSE_TRAIN, "source": "shakespeare", "doc_id": "shakespeare/sonnets"},
            {"text": MATH, "source": "math", "doc_id": "math/0"},
            {"text": PROSE_TRAIN.upper(), "source": "milton", "doc_id": "milton/comus"},
        ],
        "validation": [
            {"text": PROSE_VAL, "source": "shakespeare", "doc_id": "shakespeare/tempest"},
            {"text": MATH.replace("12", "13"), "source": "math", "doc_id": "math/1"},
            {"text": PROSE_VAL.lower(), "source": "milton", "doc_id": "milton/paradise_regained"},
        ],
    }
    return Corpus(
        tokenizer=read_tokenizer_json(tokenizer.source),
        tokenizer_path=tokenizer.source,
        train=np.zeros(0, np.int32),
        val={},
        val_bytes={},
        docs=DatasetDict({split: to_dataset(r) for split, r in rows.items()}),
        report=[],
        tokenizer_stats={},
    )


@pytest.mark.parametrize("split", ["train", "validation"])
def test_long_documents_are_the_books_of_one_split(tokenizer, split):
    corpus = tiny_corpus(tokenizer)
    w = long_documents(corpus, split, 64)
    assert w.shape[1] == 65 and len(w) >= 4
    prose = [d["text"] for d in corpus.docs[split] if d["source"] != "math"]
    want = pack(tokenize(corpus.tokenizer, prose), BOS_ID, EOS_ID)  # books whole, in order, no math
    got = torch.cat([w[0], w[1:, 1:].flatten()]).numpy()  # windows share one boundary token
    assert np.array_equal(got, want[: len(got)]) and len(want) - len(got) < 64
    other = "validation" if split == "train" else "train"
    other_text = " ".join(d["text"] for d in corpus.docs[other])
    assert corpus.tokenizer.decode(w[0].tolist()).split()[0] not in other_text.split()


def test_long_documents_errors(tokenizer):
    corpus = tiny_corpus(tokenizer)
    with pytest.raises(ValueError, match="split"):
        long_documents(corpus, "test", 64)
    with pytest.raises(ValueError, match="seq_len"):
        long_documents(corpus, "validation", 100_000)


# ----------------------------------------------------------------------------- loss by position
def test_bucket_means_average_to_the_overall_loss():
    model = random_model(std=0.1)
    windows = torch.randint(0, 400, (5, 65))
    with torch.no_grad():
        logits = model(windows[:, :-1])
    overall = F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten())
    equal = position_bucket_loss(model, windows, bucket=16, batch_size=2)
    assert equal.shape == (4,) and equal.mean().item() == pytest.approx(overall.item(), rel=1e-5)
    ragged = position_bucket_loss(model, windows, bucket=20)  # 20, 20, 20, 4 positions
    weighted = (ragged * torch.tensor([20, 20, 20, 4])).sum() / 64
    assert ragged.shape == (4,) and weighted.item() == pytest.approx(overall.item(), rel=1e-5)
    one = position_bucket_loss(model, windows, bucket=64)
    assert one.item() == pytest.approx(model_score(model, windows, np.zeros(400, np.int64)).loss, rel=1e-5)
    assert equal.std() > 0  # buckets are not all the same number


# ----------------------------------------------------------------------------- passkey
@pytest.mark.parametrize("length", [64, 128])
@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_passkey_prompt_layout(tokenizer, length, depth):
    longest = max(len(tokenizer.encode(" " + s, bos=False)) for s in FILLER)
    for e in passkey_examples(tokenizer, length, depth, n=3, seed=1):
        ids = e.ids.tolist()
        assert length - longest <= len(ids) <= length
        text = tokenizer.decode(ids)
        prompt, answer = text.rsplit(QUESTION, 1)
        assert answer == " " + e.key and len(e.key) == 5
        assert prompt.count(NEEDLE.format(key=e.key)) == 1 and prompt.count(e.key) == 2  # twice, in the needle
        assert tokenizer.decode(ids[e.needle_start : e.question_start]).startswith(" " + NEEDLE.format(key=e.key))
        assert tokenizer.encode(text) == ids  # the pieces tokenize as the whole text
        # the needle sits after `depth` of the filler, to within one filler sentence
        assert abs((e.needle_start - 1) - depth * e.filler_tokens) <= longest
        assert ids[e.key_start :] == tokenizer.encode(e.key, bos=False)
        decoy = tokenizer.decode(e.decoy_ids.tolist())
        assert decoy == text.replace(e.key, e.decoy_key, 2) and decoy.endswith(" " + e.key)


def test_passkey_prose_filler_and_errors(tokenizer):
    prose = filler_sentences(PROSE_VAL)
    assert prose[0] == "Our revels now are ended." and len(prose) == 60
    (e,) = passkey_examples(tokenizer, 96, 0.5, n=1, filler=prose)
    assert "actors" in tokenizer.decode(e.ids.tolist()) and len(e.ids) <= 96
    with pytest.raises(ValueError, match="depth"):
        passkey_examples(tokenizer, 64, 1.5, n=1)
    with pytest.raises(ValueError, match="length 20"):
        passkey_examples(tokenizer, 20, 0.5, n=1)


def test_passkey_gain_is_zero_when_the_needle_is_out_of_sight(tokenizer):
    """The decoy control isolates the needle: a model that cannot attend to it gains exactly nothing."""
    model = random_model(std=0.3)
    examples = passkey_examples(tokenizer, 96, 0.0, n=4)  # needle first, > 40 tokens before the answer
    sees = passkey_scores(model, examples)
    blind = passkey_scores(long_context_teacher(model, "window", original=8), examples)
    assert sees["gain"].abs().max() > 1e-3
    assert blind["gain"].abs().max() < 1e-5
    # greedy exact match <= first digit correct; every metric has one value per example
    assert all(v.shape == (4,) for v in sees.values()) and (sees["exact"] <= sees["first"]).all()
    grid = passkey_accuracy(model, tokenizer, [64, 96], [0.0, 1.0], n=2)
    assert grid["digits"].shape == (2, 2) and (grid["logprob"] < 0).all()
    assert ((grid["digits"] >= 0) & (grid["digits"] <= 1)).all()


def test_exact_match_is_greedy_decoding(tokenizer):
    """Teacher-forced 'all answer tokens are the argmax' equals greedy decoding writing the key."""
    model = random_model(std=0.3)
    (e,) = passkey_examples(tokenizer, 64, 0.5, n=1)
    answer = e.ids[e.answer_start :]
    # make the greedy continuation the answer: copy the model's own greedy output into the example
    out = generate(model, e.ids[None, : e.answer_start], max_new_tokens=len(answer))[0, e.answer_start :]
    forced = torch.cat([e.ids[: e.answer_start], out])
    hit = dataclasses.replace(e, ids=forced, decoy_ids=forced)
    assert passkey_scores(model, [hit])["exact"].item() == 1.0
    if not torch.equal(out, answer):
        assert passkey_scores(model, [e])["exact"].item() == 0.0


# ----------------------------------------------------------------------------- attention entropy
@pytest.mark.parametrize("variant", ["none", "yarn", "window"])
def test_uniform_attention_has_entropy_log_n(variant):
    model = random_model(std=0.2)
    with torch.no_grad():
        for block in model.model.layers:
            block.self_attn.q_proj.weight.zero_()  # all scores 0: uniform over the visible keys
    model = rescaled(model, method=variant, original=16)
    windows = torch.randint(0, 400, (3, 41))
    H = mean_attention_entropy(model, windows, batch_size=2)  # [layers, 40]
    visible = torch.arange(1, 41).float()
    if variant == "window":
        visible = visible.clamp(max=16)
    assert H.shape == (2, 40)
    assert torch.allclose(H, visible.log().expand(2, -1), atol=1e-5)


def test_temperature_lowers_entropy_past_the_window():
    model = random_model(std=0.3)
    windows = torch.randint(0, 400, (2, 49))
    plain = mean_attention_entropy(rescaled(model, method="none", temperature=False, original=16), windows)
    temp = mean_attention_entropy(rescaled(model, method="none", temperature=True, original=16), windows)
    # layer 0 sees the same inputs; a sharper softmax (tau > 1 from position 16 on) has lower entropy
    assert torch.allclose(plain[0, :16], temp[0, :16], atol=1e-6)
    assert (temp[0, 16:] < plain[0, 16:]).all()
    assert (plain[:, 1:] < math.log(48) + 1e-6).all()
