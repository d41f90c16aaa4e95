"""Retrieval and copying documents made of real training prose, placed so that each lies inside one window.

Why: a tiny parent pretrained on plays, poems and math problems almost never has to copy a
token from far back in its window, so it never learns to: every model of the cascade scored
chance on passkey retrieval (``longctx.passkey_accuracy``). A small share of documents that
can only be predicted by looking back (synthetic data for in-context retrieval, in the spirit
of the passkey test of Mohtashami & Jaggi 2023 and of induction-head studies) teaches it.

Four kinds of document (``KINDS``; the default mixture uses the first three), each ``<s> ... </s>``
and at most ``length`` tokens:

- ``passkey``: contiguous sentences of a training play or poem with ``NEEDLE`` (a
  random 5-digit key) between two sentences at a random depth, then ``QUESTION`` and
  the key. The same text as the evaluation, but other keys (another generator) and other prose
  (training documents only; the evaluation's real-prose filler comes from held-out documents).
- ``kv``: key-value recall. Sentences ``The number of <word> is <n>.`` for distinct words taken
  from the prose, then the question for one of them and its number: retrieval that has to pick
  the right key among many, not just find the only number in the document.
- ``repeat``: a passage of prose, then a span of it (from a sentence start, up to half the
  document) again at the end: plain copying, the induction-head pattern. Long spans matter:
  with spans of 8-64 tokens (1.5% of tokens) the parent still had not learnt to copy after 150
  steps (benchmarks/retrieval_experiment.py); a long copy is many tokens whose loss only copying lowers.
- ``shuffle``: as ``repeat``, but the passage's tokens in a random order: real tokens of the
  prose with no language left in them, so nothing but copying predicts the span at the end (in
  real-prose ``repeat`` documents a model lowers the copy's loss by language modelling alone
  and feels little pull towards copying).

Every document records where its answer copies from: ``ids[answer : answer + size] ==
ids[source : source + size]`` with ``source < answer``.

Placement (``place_in_blocks``): training windows are cut from the packed stream at fixed
multiples of the window (``data.windows``), so a document that straddles a boundary loses
either its needle or its question. Each retrieval document is therefore inserted into the
packed stream exactly at a multiple of ``block`` (the window), at most one per block, and the
ordinary stream carries on right after it and fills the rest of that block. A document of at
most ``block`` tokens then lies inside one window for any window length that is a multiple of
``block``; no token is padding, and deleting the inserted documents gives the ordinary stream
back exactly. ``retrieval_documents`` makes documents of any length (e.g. 1,024 tokens for the
children's long-context windows): the same placement with ``block=1024`` keeps them whole there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise

import numpy as np

# The passkey test's text (Mohtashami & Jaggi 2023): the training documents and the evaluation
# (``longctx.passkey``) use the same needle and question, with different keys and prose.
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "What is the pass key? The pass key is"

KINDS = ("passkey", "kv", "repeat", "shuffle")
KV_FACT = "The number of {word} is {value}."
KV_QUESTION = "What is the number of {word}? The number of {word} is"
MIN_LENGTH = 64  # shortest document asked for; lengths are uniform in [MIN_LENGTH, max_length]
MIN_SPAN = 8  # tokens copied by a ``repeat`` document: uniform in [MIN_SPAN, (length - 2) // 2]
_WORD = re.compile(r"^[a-z]{4,12}$")  # kv keys: plain lower-case words of the prose


def parse_shares(text: str) -> dict[str, float]:
    """``passkey=0.04,kv=0.015`` -> ``{"passkey": 0.04, "kv": 0.015}``; ``none`` -> {} (no retrieval documents)."""
    if text == "none":
        return {}
    try:
        shares = {k: float(v) for k, v in (item.split("=") for item in text.split(","))}
    except ValueError:
        raise ValueError(f"retrieval shares: expected kind=share,... or none, got {text!r}") from None
    if unknown := set(shares) - set(KINDS):
        raise ValueError(f"retrieval shares: unknown kinds {sorted(unknown)}; choose from {KINDS}")
    return shares


def filler_sentences(text: str) -> list[str]:
    """Prose as filler: ``text`` split into sentences, whitespace collapsed (verse lines run together)."""
    sentences = [" ".join(s.split()) for s in re.split(r"(?<=[.!?;])\s+", text)]
    return [s for s in sentences if s]


@dataclass(frozen=True)
class RetrievalDocument:
    """One document: ``ids[answer : answer + size]`` repeats ``ids[source : source + size]``."""

    ids: np.ndarray  # [n] int32: <s> ... </s>
    kind: str
    source: int  # first token of the earlier occurrence (the needle's key, the fact's number, the span)
    answer: int  # first token of the copy at the end, source + size <= answer
    size: int  # tokens copied

    def meta(self) -> dict:
        """JSON-friendly description without the ids (``data`` stores it next to the stream)."""
        return {k: v for k, v in asdict(self).items() if k != "ids"} | {"length": len(self.ids)}


class ProsePool:
    """Training prose cut into sentences and tokenised, to draw passages and words from.

    ``texts`` must be training documents only: nothing here may come from held-out text.
    Sentences are ``filler_sentences`` (the evaluation's own splitting), each encoded
    after a space, so joining them gives the ids of the joined text exactly.
    """

    def __init__(self, tokenizer, texts: Sequence[str], bos_id: int, eos_id: int):
        self.tokenizer = tokenizer
        self.encode: Callable[[str], list[int]] = lambda s: tokenizer.encode(s, add_special_tokens=False).ids
        self.bos_id, self.eos_id = bos_id, eos_id
        per_doc = [filler_sentences(t) for t in texts]
        flat = tokenizer.encode_batch([" " + s for doc in per_doc for s in doc], add_special_tokens=False)
        ids = [np.asarray(e.ids, np.int32) for e in flat]
        bounds = np.cumsum([0] + [len(doc) for doc in per_doc])  # [n_docs + 1]
        self.docs = [ids[a:b] for a, b in pairwise(bounds) if b > a]
        self.weights = np.array([len(d) for d in self.docs], float) / sum(len(d) for d in self.docs)
        words = {w for doc in per_doc for s in doc for w in s.split() if _WORD.match(w)}
        self.words = sorted(words)

    def passage(self, rng: np.random.Generator, budget: int) -> list[np.ndarray]:
        """Consecutive sentences of one random document, as many as fit in ``budget`` tokens.

        Starts at a random sentence; sentences longer than ``budget`` at the start are skipped.
        """
        doc = self.docs[rng.choice(len(self.docs), p=self.weights)]
        out: list[np.ndarray] = []
        for sentence in doc[rng.integers(len(doc)) :]:
            if len(sentence) <= budget:
                out.append(sentence)
                budget -= len(sentence)
            elif out:
                break
        return out


def _join(pieces: Sequence[Sequence[int]]) -> list[int]:
    return [int(t) for p in pieces for t in p]


def _find(ids: Sequence[int], pattern: Sequence[int]) -> int:
    """First index where ``pattern`` occurs in ``ids``."""
    for i in range(len(ids) - len(pattern) + 1):
        if list(ids[i : i + len(pattern)]) == list(pattern):
            return i
    raise ValueError("pattern not found")


def _document(pool: ProsePool, kind: str, body: list[int], source: int, answer: int, size: int) -> RetrievalDocument:
    """``<s> body </s>``; ``source`` and ``answer`` index ``body``."""
    ids = np.asarray([pool.bos_id, *body, pool.eos_id], np.int32)
    return RetrievalDocument(ids, kind, source + 1, answer + 1, size)


def _key(rng: np.random.Generator) -> str:
    return str(rng.integers(10_000, 100_000))  # 5 digits, as longctx.passkey_examples


def passkey_document(pool: ProsePool, rng: np.random.Generator, length: int) -> RetrievalDocument:
    """Prose, ``NEEDLE`` at a random sentence boundary, more prose, ``QUESTION`` and the key; <= ``length``."""
    key = _key(rng)
    needle, question = pool.encode(" " + NEEDLE.format(key=key)), pool.encode(" " + QUESTION)
    answer = pool.encode(" " + key)  # [6]: " " then one token per digit
    budget = length - 2 - len(needle) - len(question) - len(answer)
    sentences = pool.passage(rng, max(budget, 0))
    k = rng.integers(len(sentences) + 1)  # depth: 0 = needle first, len = needle last
    before, after = _join(sentences[:k]), _join(sentences[k:])
    body = [*before, *needle, *after, *question, *answer]
    source = _find(needle, answer) + len(before)
    return _document(pool, "passkey", body, source, len(body) - len(answer), len(answer))


def kv_document(pool: ProsePool, rng: np.random.Generator, length: int) -> RetrievalDocument:
    """``The number of <word> is <n>.`` for distinct words while they fit, then one is asked; <= ``length``."""
    facts: list[tuple[list[int], list[int], list[int]]] = []  # (fact, question, answer) ids
    used, longest_question = 2, 0  # <s> and </s>
    for w in rng.choice(len(pool.words), size=min(64, len(pool.words)), replace=False):
        word, value = pool.words[w], _key(rng)
        fact = pool.encode(" " + KV_FACT.format(word=word, value=value))
        question, answer = pool.encode(" " + KV_QUESTION.format(word=word)), pool.encode(" " + value)
        longest = max(longest_question, len(question) + len(answer))
        if facts and used + len(fact) + longest > length:
            break
        facts.append((fact, question, answer))
        used, longest_question = used + len(fact), longest
    i = rng.integers(len(facts))
    _, question, answer = facts[i]
    body = [*_join(f for f, _, _ in facts), *question, *answer]
    source = _find(facts[i][0], answer) + sum(len(f) for f, _, _ in facts[:i])
    return _document(pool, "kv", body, source, len(body) - len(answer), len(answer))


def repeat_document(pool: ProsePool, rng: np.random.Generator, length: int) -> RetrievalDocument:
    """A prose passage, then ``size`` of its tokens (from a sentence start) again at the end; <= ``length``."""
    size = int(rng.integers(MIN_SPAN, (length - 2) // 2 + 1))
    text: list[int] = []
    while not text:  # nearly always the first passage
        sentences = pool.passage(rng, length - 2 - size)
        text = _join(sentences)
    size = min(size, len(text))  # the passage may fall short of its budget by a sentence
    starts = np.cumsum([0] + [len(s) for s in sentences])[:-1]  # [n] token offset of each sentence
    candidates = [int(s) for s in starts if s + size <= len(text)]  # never empty: starts[0] = 0
    source = candidates[rng.integers(len(candidates))]
    return _document(pool, "repeat", text + text[source : source + size], source, len(text), size)


def shuffle_document(pool: ProsePool, rng: np.random.Generator, length: int) -> RetrievalDocument:
    """A prose passage with its tokens permuted, then ``size`` consecutive tokens of it again; <= ``length``."""
    size = int(rng.integers(MIN_SPAN, (length - 2) // 2 + 1))
    text: list[int] = []
    while not text:
        text = _join(pool.passage(rng, length - 2 - size))
    text = [text[i] for i in rng.permutation(len(text))]
    size = min(size, len(text))
    source = int(rng.integers(len(text) - size + 1))
    return _document(pool, "shuffle", text + text[source : source + size], source, len(text), size)


MAKERS: dict[str, Callable[[ProsePool, np.random.Generator, int], RetrievalDocument]] = {
    "passkey": passkey_document,
    "kv": kv_document,
    "repeat": repeat_document,
    "shuffle": shuffle_document,
}


def retrieval_documents(
    pool: ProsePool,
    tokens: Mapping[str, int],
    seed: int,
    max_length: int,
    min_length: int = MIN_LENGTH,
) -> list[RetrievalDocument]:
    """Documents of each kind until it has ``tokens[kind]`` tokens, shuffled; lengths uniform in the range.

    Each document has at most its drawn length (it falls short by less than one sentence or
    fact). ``seed`` feeds one numpy generator, independent of the evaluation's ``random.Random``.
    """
    if not MIN_SPAN * 3 + 2 <= min_length <= max_length:
        raise ValueError(f"need {MIN_SPAN * 3 + 2} <= min_length <= max_length, got {min_length}, {max_length}")
    if unknown := set(tokens) - set(KINDS):
        raise ValueError(f"unknown kinds {sorted(unknown)}; choose from {KINDS}")
    rng = np.random.default_rng(seed)
    docs = []
    for kind, target in tokens.items():
        made = 0
        while made < target:
            docs.append(MAKERS[kind](pool, rng, int(rng.integers(min_length, max_length + 1))))
            made += len(docs[-1].ids)
    return [docs[i] for i in rng.permutation(len(docs))]


def place_in_blocks(
    stream: np.ndarray, docs: Sequence[np.ndarray], block: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``stream`` with every doc inserted at a multiple of ``block``; returns (new stream, doc starts).

    Blocks ``k`` of the result (``[k * block, (k + 1) * block)``) are drawn without replacement
    among those ``windows(result, block)`` keeps; a document starts its block and the ordinary
    stream fills the rest. Needs every doc <= ``block`` tokens and at most one per block.
    Removing the documents from the result gives ``stream`` back.
    """
    if any(len(d) > block for d in docs):
        raise ValueError(f"a document is longer than the block of {block} tokens")
    total = len(stream) + sum(len(d) for d in docs)
    n_blocks = (total - 1) // block  # the blocks data.windows(result, block) keeps
    if len(docs) > n_blocks:
        raise ValueError(f"{len(docs)} documents for {n_blocks} blocks: at most one per block")
    slots = np.sort(np.random.default_rng(seed).choice(n_blocks, size=len(docs), replace=False))
    parts, taken, out_len = [], 0, 0  # taken: tokens of `stream` used so far
    for slot, doc in zip(slots, docs, strict=True):
        gap = slot * block - out_len  # ordinary tokens up to the block boundary (>= 0: docs <= block)
        parts += [stream[taken : taken + gap], np.asarray(doc, np.int32)]
        taken, out_len = taken + gap, out_len + gap + len(doc)
    parts.append(stream[taken:])
    return np.concatenate(parts).astype(np.int32), slots * block
