"""Passkey retrieval (Mohtashami & Jaggi 2023): can a model copy a 5-digit key it read earlier in its context?

The paper reports no long-context benchmark (docs/paper.md); this is the standard synthetic one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer as HFTokenizer

from minimistral.arch.model import Ministral3
from minimistral.data.retrieval import NEEDLE, QUESTION
from minimistral.data.tokenizer import Tokenizer
from minimistral.evaluate.loss import continuation_logprobs

# ----------------------------------------------------------------------------- passkey retrieval
# The classic filler of the passkey test (Mohtashami & Jaggi 2023): predictable, key-free, and
# with no content that could answer the question.
FILLER = (
    "The grass is green.",
    "The sky is blue.",
    "The sun is yellow.",
    "Here we go.",
    "There and back again.",
)


@dataclass(frozen=True)
class PasskeyExample:
    """One prompt and its answer: ``ids[:answer_start]`` is the prompt, the rest is `` {key}``.

    ``decoy_ids`` is the same sequence with another key in the needle (every digit shifted
    by 5) but the same answer: the control that tells retrieval from a lucky guess.
    """

    ids: torch.Tensor  # [T] long: <s> filler, needle, filler, question, " " + key digits
    decoy_ids: torch.Tensor  # [T'] long: the same with `decoy_key` in the needle
    key: str
    decoy_key: str
    needle_start: int  # token index of the needle's first token
    question_start: int
    answer_start: int
    key_start: int  # first digit (after the space token)
    filler_tokens: int  # tokens of filler on both sides of the needle


def _encode(tokenizer: Tokenizer | HFTokenizer, text: str) -> list[int]:
    """Token ids without BOS from either tokenizer type (``load_tokenizer`` or ``Corpus.tokenizer``)."""
    if isinstance(tokenizer, Tokenizer):
        return tokenizer.encode(text, bos=False)
    return tokenizer.encode(text, add_special_tokens=False).ids


def _fill(units: list[list[int]], budget: int, start: int) -> list[list[int]]:
    """As many filler sentences as fit in ``budget`` tokens, cycling from sentence ``start``."""
    chosen: list[list[int]] = []
    cap = budget + 1  # bounds the loop even for sentences that encode to nothing
    while len(chosen) < cap:
        unit = units[(start + len(chosen)) % len(units)]
        if len(unit) > budget:
            break
        budget -= len(unit)
        chosen.append(unit)
    return chosen


def passkey_examples(
    tokenizer: Tokenizer | HFTokenizer,
    length: int,
    depth: float,
    n: int,
    seed: int = 0,
    filler: Sequence[str] = FILLER,
) -> list[PasskeyExample]:
    """``n`` prompts of at most ``length`` tokens (answer included) with the key at relative ``depth``.

    Each is ``<s>`` + filler sentences, ``NEEDLE`` (a random 5-digit key) after a fraction
    ``depth`` (0 = first, 1 = last) of them, more filler, ``QUESTION``, then `` {key}``. The
    filler cycles through ``filler`` (example i starts at a seeded random sentence), and as
    many sentences are used as fit: the total is ``length`` minus less than one sentence.
    Pieces are encoded separately and joined at spaces, where the pre-tokenizer splits anyway,
    so the ids are those of the whole text and every index above is exact.
    """
    if not 0 <= depth <= 1:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    if n < 1 or not filler:
        raise ValueError(f"need n >= 1 and a non-empty filler, got n={n}, {len(filler)} sentences")
    bos = tokenizer.bos_id if isinstance(tokenizer, Tokenizer) else tokenizer.token_to_id("<s>")
    rng = random.Random(seed)
    question = _encode(tokenizer, " " + QUESTION)
    units = [_encode(tokenizer, " " + s) for s in filler]  # every sentence after a space
    examples = []
    for _ in range(n):
        key = str(rng.randrange(10_000, 100_000))
        decoy = "".join(str((int(c) + 5) % 10) for c in key)  # differs from the key in every digit
        needle, answer = _encode(tokenizer, " " + NEEDLE.format(key=key)), _encode(tokenizer, " " + key)
        budget = length - 1 - len(needle) - len(question) - len(answer)
        if budget < 0:
            raise ValueError(f"length {length} is too short for the needle, question and answer")
        chosen = _fill(units, budget, rng.randrange(len(units)))
        k = round(depth * len(chosen))
        before, after = [t for u in chosen[:k] for t in u], [t for u in chosen[k:] for t in u]
        prompt = [bos, *before, *needle, *after, *question]
        decoy_needle = _encode(tokenizer, " " + NEEDLE.format(key=decoy))
        examples.append(
            PasskeyExample(
                ids=torch.tensor(prompt + answer),
                decoy_ids=torch.tensor([bos, *before, *decoy_needle, *after, *question, *answer]),
                key=key,
                decoy_key=decoy,
                needle_start=1 + len(before),
                question_start=len(prompt) - len(question),
                answer_start=len(prompt),
                key_start=len(prompt) + len(answer) - len(_encode(tokenizer, key)),
                filler_tokens=len(before) + len(after),
            )
        )
    return examples


PASSKEY_METRICS = ("exact", "digits", "first", "logprob", "gain")


@torch.no_grad()
def passkey_scores(model: Ministral3, examples: Sequence[PasskeyExample]) -> dict[str, torch.Tensor]:
    r"""Per example ``[n]``: each of ``PASSKEY_METRICS``, from teacher-forced passes.

    - ``exact``: greedy decoding writes the key iff every answer token is the argmax given
      the correct ones before it, so this is greedy exact match (each digit is its own token,
      so no other token string spells the key).
    - ``digits``: fraction of key digits that are the argmax (chance ~1/10); ``first``: the
      first digit alone (retrieval proper: later digits can be copied once it is given).
    - ``logprob``: $\frac{1}{5}\sum_j \ln p(k_j \mid \text{prompt}, k_{<j})$.
    - ``gain``: the same minus its value on ``decoy_ids`` (needle holding another key, same
      answer): how many nats per digit the needle contributes. 0 for a model that ignores
      the needle whatever its prior over digits; positive once it copies from it.
    """
    answer_len = len(examples[0].ids) - examples[0].answer_start
    if any(len(e.ids) - e.answer_start != answer_len for e in examples):
        raise ValueError("examples: answers of different token lengths cannot be scored together")
    digit = examples[0].key_start - examples[0].answer_start  # first digit among the answer tokens

    def split(ids: torch.Tensor) -> tuple[list[int], list[int]]:  # (prompt, answer)
        return ids[:-answer_len].tolist(), ids[-answer_len:].tolist()

    true = continuation_logprobs(model, [split(e.ids) for e in examples])  # per example: ([a], [a])
    decoy = continuation_logprobs(model, [split(e.decoy_ids) for e in examples])
    hit = torch.stack([h for _, h in true])  # [n, a]: the answer token is the argmax
    true_lp = torch.stack([lp for lp, _ in true])  # [n, a]
    decoy_lp = torch.stack([lp for lp, _ in decoy])  # [n, a]
    return {
        "exact": hit.all(-1).float(),
        "digits": hit[:, digit:].float().mean(-1),
        "first": hit[:, digit].float(),
        "logprob": true_lp[:, digit:].mean(-1),
        "gain": (true_lp - decoy_lp)[:, digit:].mean(-1),
    }


def passkey_accuracy(
    model: Ministral3,
    tokenizer: Tokenizer | HFTokenizer,
    lengths: Sequence[int],
    depths: Sequence[float],
    n: int = 20,
    seed: int = 0,
    filler: Sequence[str] = FILLER,
) -> dict[str, torch.Tensor]:
    """Passkey retrieval (Mohtashami & Jaggi 2023) over a grid: each of ``PASSKEY_METRICS``
    averaged over ``n`` examples, as a ``[len(lengths), len(depths)]`` table. The paper reports no
    long-context benchmark (docs/paper.md §6); this is the standard synthetic one."""
    grid = {k: torch.zeros(len(lengths), len(depths)) for k in PASSKEY_METRICS}
    for i, length in enumerate(lengths):
        for j, depth in enumerate(depths):
            scores = passkey_scores(model, passkey_examples(tokenizer, length, depth, n, seed, filler))
            for k, v in scores.items():
                grid[k][i, j] = v.mean()
    return grid
