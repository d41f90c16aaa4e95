"""Unigram and bigram baselines fitted on the training split: what a held-out score must beat (paper §4)."""

from __future__ import annotations

import numpy as np
import torch

from minimistral.evaluate.loss import Score


class NGram:
    r"""Unigram and bigram baselines fitted by counting on the training stream.

    Unigram with add-one smoothing: $p(b) = \frac{c(b) + 1}{N + V}$.
    Bigram with Dirichlet smoothing towards the unigram: $p(b \mid a) = \frac{c(a, b) + \beta\, p(b)}{c(a) + \beta}$.
    """

    def __init__(self, train: np.ndarray, vocab_size: int):
        self.vocab_size = vocab_size
        t = train.astype(np.int64)
        self.unigram = (np.bincount(t, minlength=vocab_size) + 1.0) / (len(t) + vocab_size)  # [V]
        pairs = t[:-1] * vocab_size + t[1:]  # one code per (a, b)
        self.pair_codes, self.pair_counts = np.unique(pairs, return_counts=True)  # sorted
        self.context_counts = np.bincount(t[:-1], minlength=vocab_size)  # c(a)

    def bigram_counts(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        code = a * self.vocab_size + b
        pos = np.searchsorted(self.pair_codes, code).clip(max=len(self.pair_codes) - 1)
        return np.where(self.pair_codes[pos] == code, self.pair_counts[pos], 0)

    def unigram_score(self, windows: torch.Tensor, nbytes: np.ndarray) -> Score:
        targets = windows[:, 1:].numpy()
        return Score(float(-np.log(self.unigram[targets]).sum()), targets.size, int(nbytes[targets].sum()))

    def bigram_score(self, windows: torch.Tensor, nbytes: np.ndarray, beta: float) -> Score:
        a, b = windows[:, :-1].numpy().ravel(), windows[:, 1:].numpy().ravel()
        p = (self.bigram_counts(a, b) + beta * self.unigram[b]) / (self.context_counts[a] + beta)
        return Score(float(-np.log(p).sum()), b.size, int(nbytes[b].sum()))


BIGRAM_BETAS = (0.1, 0.3, 1, 3, 10, 30, 100, 300, 1000)


def baseline_scores(ngram: NGram, windows: dict[str, torch.Tensor], nbytes: np.ndarray) -> dict[str, dict]:
    """Unigram and bigram scores per source. The bigram's smoothing beta is the best of a grid on the
    validation windows themselves: an advantage the transformer does not get, so the comparison is conservative."""
    best_beta = min(
        BIGRAM_BETAS, key=lambda beta: sum(ngram.bigram_score(w, nbytes, beta).nats for w in windows.values())
    )
    return {
        "unigram": {s: ngram.unigram_score(w, nbytes) for s, w in windows.items()},
        "bigram": {s: ngram.bigram_score(w, nbytes, best_beta) for s, w in windows.items()},
        "bigram_beta": best_beta,
    }
