"""Retrieval documents: each copies from earlier in itself, fits its window, uses training prose only.

The corpus tests build (once, then read from the cache) the default corpus and the same corpus
without retrieval documents, and check that the tokenizer and the validation streams are equal
and that the training stream is the old one with the documents put in.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from minimistral.data.corpus import MIXTURE, RETRIEVAL, RETRIEVAL_BLOCK, build_corpus, windows
from minimistral.data.retrieval import (
    KINDS,
    MAKERS,
    NEEDLE,
    QUESTION,
    ProsePool,
    filler_sentences,
    place_in_blocks,
    retrieval_documents,
)
from minimistral.data.sources import PROSE_FILES
from minimistral.data.tokenizer import BOS_ID, EOS_ID
from minimistral.longctx.passkey import passkey_examples

# ----------------------------------------------------------------------------- placement (no corpus)


def _random_docs(rng, n, block):
    return [rng.integers(10, 100, size=rng.integers(3, block + 1)).astype(np.int32) for _ in range(n)]


@pytest.mark.parametrize("seed", range(5))
def test_placed_documents_start_blocks_and_come_out_again(seed):
    rng = np.random.default_rng(seed)
    block = 16
    stream = rng.integers(100, 200, size=int(rng.integers(200, 400))).astype(np.int32)
    docs = _random_docs(rng, int(rng.integers(1, 10)), block)
    out, starts = place_in_blocks(stream, docs, block, seed)
    assert len(out) == len(stream) + sum(map(len, docs)) and (starts % block == 0).all()
    keep = np.ones(len(out), bool)
    for doc, start in zip(docs, starts, strict=True):
        assert np.array_equal(out[start : start + len(doc)], doc)
        keep[start : start + len(doc)] = False
    assert np.array_equal(out[keep], stream)  # the ordinary stream is intact, in order
    for seq_len in (block, 2 * block):  # any window that is a multiple of the block holds each doc whole
        w = windows(out, seq_len).numpy()
        for doc, start in zip(docs, starts, strict=True):
            i, offset = divmod(int(start), seq_len)
            if i < len(w):  # the last block may fall in the tail a longer window drops
                assert np.array_equal(w[i, offset : offset + len(doc)], doc)
    assert starts.max() // block < len(windows(out, block))  # never in the dropped tail at block length


def test_placement_refuses_what_cannot_fit():
    stream = np.arange(100, dtype=np.int32)
    with pytest.raises(ValueError, match="longer than the block"):
        place_in_blocks(stream, [np.zeros(17, np.int32)], 16, 0)
    with pytest.raises(ValueError, match="at most one per block"):
        place_in_blocks(stream[:10], [np.zeros(3, np.int32)] * 10, 16, 0)  # 40 tokens: 2 blocks for 10 docs


# ----------------------------------------------------------------------------- the corpora (cached)


@pytest.fixture(scope="module")
def corpus():
    return build_corpus()


@pytest.fixture(scope="module")
def plain():
    return build_corpus(retrieval={})


def _prose(corpus, split: str) -> list[str]:
    docs = corpus.docs[split]
    return [t for t, s in zip(docs["text"], docs["source"], strict=True) if s in PROSE_FILES]


@pytest.fixture(scope="module")
def pool(corpus):
    return ProsePool(corpus.tokenizer, _prose(corpus, "train"), BOS_ID, EOS_ID)


def _sentences(texts):
    return {s for t in texts for s in filler_sentences(t)}


@pytest.mark.parametrize("length", [64, 256, 1024])
@pytest.mark.parametrize("kind", KINDS)
def test_documents_copy_from_earlier_in_themselves(pool, kind, length):
    rng = np.random.default_rng(length)
    for _ in range(20):
        doc = MAKERS[kind](pool, rng, length)
        ids = doc.ids
        assert len(ids) <= length and ids[0] == BOS_ID and ids[-1] == EOS_ID
        assert not np.isin(ids[1:-1], [BOS_ID, EOS_ID]).any()
        assert doc.source > 0 and doc.source + doc.size <= doc.answer and doc.answer + doc.size == len(ids) - 1
        assert np.array_equal(ids[doc.source : doc.source + doc.size], ids[doc.answer : doc.answer + doc.size])
        text = pool.tokenizer.decode(ids.tolist())
        if kind == "passkey":
            key = text.rsplit(" ", 1)[1]
            assert re.fullmatch(r"\d{5}", key) and NEEDLE.format(key=key) in text
            assert text.endswith(f"{QUESTION} {key}")
        if kind == "kv":
            asked = re.fullmatch(r".*What is the number of (\w+)\? The number of \1 is (\d{5})", text, re.S)
            assert asked and f"The number of {asked[1]} is {asked[2]}." in text


def test_documents_reach_their_length_range(pool):
    docs = retrieval_documents(pool, {"passkey": 20_000, "kv": 5_000, "repeat": 5_000}, 0, 1024, 512)
    lengths = np.array([len(d.ids) for d in docs])
    assert lengths.max() <= 1024 and lengths.min() > 400  # short of the drawn length by a sentence at most
    made = {k: sum(len(d.ids) for d in docs if d.kind == k) for k in KINDS}
    assert 20_000 <= made["passkey"] < 21_024 and 5_000 <= made["kv"] < 6_024


def test_every_retrieval_document_lies_inside_one_training_window(corpus):
    assert corpus.retrieval
    w = windows(corpus.train, RETRIEVAL_BLOCK).numpy()
    for p in corpus.retrieval:
        i, offset = divmod(p["start"], RETRIEVAL_BLOCK)
        assert offset == 0 and p["length"] <= RETRIEVAL_BLOCK and i < len(w)
        doc = w[i, : p["length"]]
        assert doc[0] == BOS_ID and doc[-1] == EOS_ID
        assert np.array_equal(doc[p["source"] : p["source"] + p["size"]], doc[p["answer"] : p["answer"] + p["size"]])
        assert p["source"] + p["size"] <= p["answer"]


def test_retrieval_share_is_what_was_asked(corpus):
    total = len(corpus.train)
    for kind, share in RETRIEVAL.items():
        tokens = sum(p["length"] for p in corpus.retrieval if p["kind"] == kind)
        assert abs(tokens / total - share) < 0.001, kind
        row = next(r for r in corpus.report if r["source"] == f"retrieval/{kind}")
        assert row["tokens"] == tokens and row["weight"] == share and abs(row["fraction"] - share) < 0.001
    assert sum(RETRIEVAL.values()) <= 0.10
    rest = 1 - sum(RETRIEVAL.values())
    for source, weight in MIXTURE.items():  # the ordinary sources share the rest in their proportions
        row = next(r for r in corpus.report if r["source"] == source)
        assert row["weight"] == pytest.approx(weight * rest) and abs(row["fraction"] - weight * rest) < 0.02


def test_tokenizer_and_validation_streams_do_not_depend_on_retrieval(corpus, plain):
    assert plain.retrieval == [] and not any(r["source"].startswith("retrieval") for r in plain.report)
    assert corpus.tokenizer.to_str() == plain.tokenizer.to_str()
    assert corpus.val.keys() == plain.val.keys() and corpus.val_bytes == plain.val_bytes
    assert all(np.array_equal(corpus.val[s], plain.val[s]) for s in plain.val)
    keep = np.ones(len(corpus.train), bool)
    for p in corpus.retrieval:
        keep[p["start"] : p["start"] + p["length"]] = False
    assert np.array_equal(corpus.train[keep], plain.train)  # the training stream is the old one, plus documents


def test_no_validation_prose_in_retrieval_documents(corpus):
    train_prose, val_prose = _prose(corpus, "train"), _prose(corpus, "validation")
    train_sentences = _sentences(train_prose)
    val_only = {s for s in _sentences(val_prose) - train_sentences if len(s) > 30}
    assert len(val_only) > 1000
    template = re.compile(r"pass key|Remember it\.|The number of \w+ is|What is the number")
    found = checked = 0
    for p in corpus.retrieval:
        if p["kind"] == "kv":
            continue
        ids = corpus.train[p["start"] + 1 : p["start"] + p["answer"]]  # the document before its answer
        for sentence in filler_sentences(corpus.tokenizer.decode(ids.tolist())):
            if template.search(sentence):
                continue
            assert sentence not in val_only, sentence
            checked += 1
            found += sentence in train_sentences
    assert checked > 1000 and found / checked > 0.99  # the rest: a document's last sentence, run into the needle
    words = {w for t in train_prose for w in t.split()}
    for p in (p for p in corpus.retrieval if p["kind"] == "kv"):
        text = corpus.tokenizer.decode(corpus.train[p["start"] : p["start"] + p["length"]].tolist())
        assert set(re.findall(r"The number of (\w+) is", text)) <= words


def test_training_keys_rarely_are_evaluation_keys(corpus):
    keys = set()
    for p in corpus.retrieval:
        if p["kind"] == "passkey":
            ids = corpus.train[p["start"] + p["answer"] : p["start"] + p["answer"] + p["size"]]
            keys.add(corpus.tokenizer.decode(ids.tolist()).strip())
    assert len(keys) > 0.95 * sum(p["kind"] == "passkey" for p in corpus.retrieval)  # 5-digit keys, few repeats
    evaluation = {e.key for e in passkey_examples(corpus.tokenizer, 256, 0.5, 20, seed=0)}
    assert len(evaluation & keys) <= 2  # ~0.7% of 90,000 keys are drawn: ~0.15 of 20 expected


def test_parse_shares():
    from minimistral.data.retrieval import parse_shares

    assert parse_shares("passkey=0.04,shuffle=0.05") == {"passkey": 0.04, "shuffle": 0.05}
    assert parse_shares("none") == {}
    with pytest.raises(ValueError, match="unknown kinds"):
        parse_shares("copy=0.1")
    with pytest.raises(ValueError, match="expected kind=share"):
        parse_shares("passkey")
