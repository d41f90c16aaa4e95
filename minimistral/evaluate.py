r"""Held-out evaluation: loss, perplexity and bits per byte per source, n-gram baselines, samples.

Bits per byte make models with different tokenizers comparable: the summed negative
log-likelihood of the held-out text in bits, divided by its UTF-8 length,
$\mathrm{bpb} = \frac{\sum_t -\ln p(x_t \mid x_{<t})}{\ln 2 \cdot \sum_t \mathrm{bytes}(x_t)}$,
where both sums run over the same predicted tokens (special tokens have 0 bytes).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from minimistral.model import Ministral3


@dataclass
class Score:
    """Summed negative log-likelihood (nats) over ``tokens`` predicted tokens that spell ``bytes`` bytes."""

    nats: float
    tokens: int
    bytes: int

    @property
    def loss(self) -> float:  # mean nats per token
        return self.nats / max(self.tokens, 1)

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    @property
    def bits_per_byte(self) -> float:
        return self.nats / (math.log(2) * max(self.bytes, 1))

    def __add__(self, other: Score) -> Score:
        return Score(self.nats + other.nats, self.tokens + other.tokens, self.bytes + other.bytes)

    def as_dict(self) -> dict:
        return asdict(self) | {"loss": self.loss, "perplexity": self.perplexity, "bits_per_byte": self.bits_per_byte}


def token_bytes(tokenizer, vocab_size: int) -> np.ndarray:
    """Length in bytes of every token id ``[vocab]``; 0 for special tokens.

    In a byte-level BPE every character of a piece stands for exactly one byte
    (GPT-2's byte-to-unicode alphabet), so a piece's byte length is its length.
    """
    special = {t.content for t in tokenizer.get_added_tokens_decoder().values()}
    lengths = np.zeros(vocab_size, dtype=np.int64)
    for piece, i in tokenizer.get_vocab().items():
        if i < vocab_size and piece not in special:
            lengths[i] = len(piece)
    return lengths


@torch.no_grad()
def model_score(model: Ministral3, windows: torch.Tensor, nbytes: np.ndarray, batch_size: int = 16) -> Score:
    """Score a model on windows ``[n, T + 1]``: sum of -log p(target) over every target token."""
    model.eval()
    device = model.lm_head.weight.device
    total = Score(0.0, 0, 0)
    for start in range(0, windows.shape[0], batch_size):
        w = windows[start : start + batch_size].to(device)
        logits = model(w[:, :-1]).float()  # [b, T, vocab]
        nats = F.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten(), reduction="sum").item()
        targets = w[:, 1:].cpu().numpy()
        total = total + Score(nats, targets.size, int(nbytes[targets].sum()))
    return total


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


def with_total(scores: dict[str, Score]) -> dict[str, Score]:
    """Add an ``overall`` entry: token-weighted loss and byte-weighted bits per byte across sources."""
    total = Score(0.0, 0, 0)
    for s in scores.values():
        total = total + s
    return scores | {"overall": total}
