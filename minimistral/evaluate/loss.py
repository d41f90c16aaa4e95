r"""The one next-token loss and the one teacher-forced scorer; held-out loss, perplexity, bits per byte (paper §4).

Every stage measures a model the same way: :func:`next_token_nll` is
$\ell_t = -\ln p_\theta(x_{t+1} \mid x_{\le t})$ per position, in fp32; training (``train.lm_loss``),
pruning's loss scores, the long-context per-position loss and every held-out score are its sums
and means. :func:`continuation_logprobs` scores a given continuation after a context (tasks, passkey).

Bits per byte make models with different tokenizers comparable: the summed negative
log-likelihood of the held-out text in bits, divided by its UTF-8 length,
$\mathrm{bpb} = \frac{\sum_t -\ln p(x_t \mid x_{<t})}{\ln 2 \cdot \sum_t \mathrm{bytes}(x_t)}$,
where both sums run over the same predicted tokens (special tokens have 0 bytes).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from minimistral.arch.model import Ministral3
from minimistral.data.corpus import windows


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


def next_token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    r"""$\ell_t = -\ln \mathrm{softmax}(z_t)[x_{t+1}]$ in fp32.

    logits ``[b, T, vocab]`` (position t predicts token t + 1), targets ``[b, T]`` -> ``[b, T]``.
    """
    return F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")


@torch.no_grad()
def token_losses(model: Ministral3, windows: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    r"""$\ell_t$ for every window and position: windows ``[n, T + 1]`` -> ``[n, T]`` (fp32, cpu).

    Inputs are ``windows[:, :-1]``, targets ``windows[:, 1:]``.
    """
    if windows.ndim != 2 or windows.shape[1] < 2:
        raise ValueError(f"windows must be [n, T + 1] with T >= 1, got shape {tuple(windows.shape)}")
    model.eval()
    device = model.lm_head.weight.device
    out = []
    for w in windows.split(batch_size):
        w = w.to(device)
        out.append(next_token_nll(model(w[:, :-1]), w[:, 1:]).cpu())  # [b, T]
    return torch.cat(out)


def mean_loss(model: Ministral3, batches: Iterable[torch.Tensor]) -> float:
    """Token-averaged next-token loss over window batches ``[b, T + 1]`` (what pruning's loss scores read)."""
    losses = [token_losses(model, w, batch_size=len(w)) for w in batches]
    return torch.cat([x.flatten() for x in losses]).mean().item()


def model_score(model: Ministral3, windows: torch.Tensor, nbytes: np.ndarray, batch_size: int = 16) -> Score:
    r"""Score a model on windows ``[n, T + 1]``: summed $\ell_t$ over every target token, with their bytes."""
    nats = token_losses(model, windows, batch_size).double().sum().item()
    targets = windows[:, 1:].cpu().numpy()
    return Score(nats, targets.size, int(nbytes[targets].sum()))


def validation_windows(corpus, seq_len: int, per_source: int | None = None) -> dict[str, torch.Tensor]:
    """Held-out windows ``[n, seq_len + 1]`` per source; with ``per_source``, that many evenly spaced ones each."""
    out = {}
    for source, stream in corpus.val.items():
        w = windows(stream, seq_len)
        if per_source is not None and w.shape[0] > per_source:
            w = w[torch.linspace(0, w.shape[0] - 1, per_source).long()]
        out[source] = w
    return out


def with_total(scores: dict[str, Score]) -> dict[str, Score]:
    """Add an ``overall`` entry: token-weighted loss and byte-weighted bits per byte across sources."""
    total = Score(0.0, 0, 0)
    for s in scores.values():
        total = total + s
    return scores | {"overall": total}


@torch.no_grad()
def continuation_logprobs(
    model: Ministral3, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], batch_size: int = 32
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    r"""Teacher-forced scores of each continuation $y$ after its context $x$, one pair ``(x, y)`` of id lists each.

    Returns, per pair, $\log p(y_j \mid x, y_{<j})$ ``[|y|]`` and whether
    $y_j = \arg\max_v p(v \mid x, y_{<j})$ ``[|y|]`` (bool). Pairs are batched by length and
    right-padded: under causal attention no real token sees the padding after it, so a batch
    gives the numbers of one pair at a time.
    """
    if any(len(x) == 0 or len(y) == 0 for x, y in pairs):
        raise ValueError("pairs: every context and continuation needs at least one token")
    model.eval()
    device = model.lm_head.weight.device
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    out: list = [None] * len(pairs)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        seqs = [[*pairs[i][0], *pairs[i][1]] for i in idx]
        width = max(map(len, seqs))
        ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs], device=device)  # [b, T]
        logits = model(ids[:, :-1]).float()  # [b, T-1, vocab]: position t predicts ids[:, t+1]
        targets = ids[:, 1:]  # [b, T-1]
        logp = logits.gather(-1, targets[..., None])[..., 0] - logits.logsumexp(-1)  # [b, T-1]
        hit = logits.argmax(-1) == targets  # [b, T-1]
        for row, i in enumerate(idx):
            c, k = len(pairs[i][0]), len(pairs[i][1])
            span = slice(c - 1, c - 1 + k)  # y_j = ids[c + j] is predicted at position c + j - 1
            out[i] = (logp[row, span].cpu(), hit[row, span].cpu())
    return out
