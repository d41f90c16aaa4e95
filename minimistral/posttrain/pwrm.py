r"""The pairwise reward model (PWRM) that judges ODPO's pairs (paper §4).

The paper's PWRM is a language model fine-tuned by SFT on (conversation, candidate A, candidate B)
-> the preferred candidate, whose output is read as a probability. Ours is the post-trained tiny
parent fine-tuned the same way: the user turn shows the prompt and two answers, and the assistant
writes one token, ``A`` or ``B``::

    [INST] {prompt}  Response A: {a}  Response B: {b}  Which response is better, A or B? [/INST] A </s>

Its verdict is read from the logits of those two tokens at the assistant's first position,

.. math::

    z = \operatorname{logit}(\texttt{A}) - \operatorname{logit}(\texttt{B}), \qquad P(a \succ b) = \sigma(z / T),

with a temperature $T$ fitted on held-out pairs (calibration, :func:`fit_temperature`). Every training
pair is shown in both orders, so the position carries no information; what bias remains is measured
(:func:`position_bias`), and ODPO reads the mean of both orders, $\tfrac12\big(\sigma(z_{ab}/T) + 1 -
\sigma(z_{ba}/T)\big)$, which has none. The labels come from the programmatic judges of General RL
(the rubric's fraction met): a pair is kept when the judge prefers one answer.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from minimistral.arch.hub import from_pretrained
from minimistral.data.tokenizer import EOS_ID, Tokenizer, load_tokenizer
from minimistral.files import atomic_write, write_json
from minimistral.posttrain.chat import encode_prompt
from minimistral.posttrain.sft import ChatExamples
from minimistral.train import CHECKPOINT

VERDICTS = ("A", "B")  # the PWRM's answer: one token each in Tekken
CALIBRATION = "calibration.json"  # the fitted temperature, next to the PWRM's weights


@dataclass(frozen=True)
class Pair:
    """Two answers to one prompt and the programmatic judge's score of each."""

    prompt: str  # the user's message
    a: str
    b: str
    score_a: float
    score_b: float

    @property
    def label(self) -> float:
        """1 if the judge prefers a, 0 if b, 0.5 on a tie."""
        return 0.5 if self.score_a == self.score_b else float(self.score_a > self.score_b)

    def swapped(self) -> Pair:
        return Pair(self.prompt, self.b, self.a, self.score_b, self.score_a)


def judge_messages(pair: Pair, with_verdict: bool = False) -> list[dict[str, str]]:
    """The PWRM's conversation for ``pair``; ``with_verdict``: the judge's answer too (a training example)."""
    user = f"{pair.prompt}\n\nResponse A: {pair.a}\n\nResponse B: {pair.b}\n\nWhich response is better, A or B?"
    messages = [{"role": "user", "content": user}]
    if with_verdict:
        if pair.label == 0.5:
            raise ValueError("a tied pair has no verdict to train on")
        messages.append({"role": "assistant", "content": VERDICTS[0] if pair.label == 1.0 else VERDICTS[1]})
    return messages


def verdict_ids(tokenizer: Tokenizer) -> tuple[int, int]:
    """The token ids of ``A`` and ``B`` (each must be one token)."""
    ids = [tokenizer.encode(v, bos=False) for v in VERDICTS]
    if any(len(i) != 1 for i in ids):
        raise ValueError(f"tokenizer: the verdicts {VERDICTS} must be one token each, got {ids}")
    return ids[0][0], ids[1][0]


def ranked_pairs(prompt: str, answers: Sequence[str], scores: Sequence[float], most: int, seed: int = 0) -> list[Pair]:
    """Up to ``most`` pairs of distinct answers to ``prompt`` that the judge ranks differently, drawn at random."""
    distinct = dict(zip(answers, scores, strict=True))  # answer -> score (one answer has one score)
    texts = sorted(distinct)
    pairs = [
        Pair(prompt, a, b, distinct[a], distinct[b])
        for i, a in enumerate(texts)
        for b in texts[i + 1 :]
        if distinct[a] != distinct[b]
    ]
    random.Random(f"{prompt}-{seed}").shuffle(pairs)
    return pairs[:most]


def pair_examples(pairs: Sequence[Pair], tokenizer: Tokenizer, max_len: int) -> ChatExamples:
    """SFT examples of the PWRM: every ranked pair in both orders, the preferred one as the verdict."""
    both = [p for pair in pairs for p in (pair, pair.swapped())]
    return ChatExamples([judge_messages(p, with_verdict=True) for p in both], tokenizer, max_len)


@torch.no_grad()
def verdict_logits(model: torch.nn.Module, tokenizer: Tokenizer, pairs: Sequence[Pair], batch_size: int = 32):
    """$z = \\operatorname{logit}(A) - \\operatorname{logit}(B)$ at the verdict's position, ``[len(pairs)]``."""
    a_id, b_id = verdict_ids(tokenizer)
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(pairs), batch_size):
        rows = [encode_prompt(tokenizer, judge_messages(p)) for p in pairs[start : start + batch_size]]
        ids = torch.full((len(rows), max(map(len, rows))), EOS_ID, dtype=torch.long)  # right-padded [b, T]
        for r, row in enumerate(rows):
            ids[r, : len(row)] = torch.tensor(row)
        last = torch.tensor([len(row) - 1 for row in rows])  # [b]: the position that writes the verdict
        logits = model(ids.to(device)).float()[torch.arange(len(rows)), last.to(device)]  # [b, vocab]
        out.append((logits[:, a_id] - logits[:, b_id]).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def fit_temperature(z: torch.Tensor, labels: torch.Tensor) -> float:
    r"""The $T$ that minimises the cross-entropy of $\sigma(z/T)$ against ``labels`` (0/1), on a log grid
    from 0.05 to 20 (temperature scaling: one parameter, so the ranking of pairs never changes)."""
    if not len(z):
        raise ValueError("fit_temperature: no pairs to calibrate on")
    grid = torch.logspace(-1.3, 1.3, 261, dtype=torch.float64)  # [g]
    p = torch.sigmoid(z.double()[None, :] / grid[:, None]).clamp(1e-12, 1 - 1e-12)  # [g, n]
    y = labels.double()[None, :]
    nll = -(y * p.log() + (1 - y) * (1 - p).log()).mean(-1)  # [g]
    return float(grid[nll.argmin()])


def reliability(probs: torch.Tensor, labels: torch.Tensor, bins: int = 10) -> list[dict]:
    """Per confidence bin of P(a wins): its range, count, mean predicted probability and observed frequency."""
    edges = torch.linspace(0, 1, bins + 1)
    which = torch.bucketize(probs.clamp(0, 1 - 1e-9), edges[1:-1], right=True)  # [n] bin index
    rows = []
    for b in range(bins):
        inside = which == b
        n = int(inside.sum())
        rows.append({"low": round(float(edges[b]), 2), "high": round(float(edges[b + 1]), 2), "count": n,
                     "predicted": float(probs[inside].mean()) if n else float("nan"),
                     "observed": float(labels[inside].float().mean()) if n else float("nan")})  # fmt: skip
    return rows


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 10) -> float:
    r"""$\mathrm{ECE} = \sum_b \frac{n_b}{n} \lvert \bar p_b - \bar y_b \rvert$ over equal-width bins of P(a wins)."""
    rows = [r for r in reliability(probs, labels, bins) if r["count"]]
    return sum(r["count"] * abs(r["predicted"] - r["observed"]) for r in rows) / max(1, len(probs))


def position_bias(p_ab: torch.Tensor, p_ba: torch.Tensor) -> float:
    """Mean of P(first wins) + P(first wins, swapped) - 1: 0 for a judge that ignores the order, > 0 if it favours A."""
    return float((p_ab + p_ba - 1).mean())


class PairwiseRewardModel:
    """A trained PWRM checkpoint with its calibrated temperature: ``prob(pairs)`` = P(a better than b), both orders."""

    def __init__(self, checkpoint: str | Path, device=None):
        checkpoint = Path(checkpoint)
        self.model = from_pretrained(checkpoint, device=device).eval().requires_grad_(False)
        self.tokenizer = load_tokenizer(checkpoint)
        self.temperature = read_temperature(checkpoint)

    def to(self, device) -> PairwiseRewardModel:
        self.model.to(device)
        return self

    def logits(self, pairs: Sequence[Pair]) -> tuple[torch.Tensor, torch.Tensor]:
        """The verdict logits of every pair as shown, ``z_ab``, and swapped, ``z_ba``: each ``[len(pairs)]``."""
        return (verdict_logits(self.model, self.tokenizer, pairs),
                verdict_logits(self.model, self.tokenizer, [p.swapped() for p in pairs]))  # fmt: skip

    def prob(self, pairs: Sequence[Pair]) -> torch.Tensor:
        """P(a better than b) per pair, both orders averaged, ``[len(pairs)]``."""
        return symmetric_prob(*self.logits(pairs), self.temperature)


def symmetric_prob(z_ab: torch.Tensor, z_ba: torch.Tensor, temperature: float) -> torch.Tensor:
    r"""$\tfrac12\big(\sigma(z_{ab}/T) + 1 - \sigma(z_{ba}/T)\big)$: the verdict read in both orders, so the
    position of an answer carries no weight (paper §4: the PWRM's probability, temperature-calibrated)."""
    return (torch.sigmoid(z_ab / temperature) + 1 - torch.sigmoid(z_ba / temperature)) / 2


def read_temperature(checkpoint: Path) -> float:
    """The calibrated temperature stored with a PWRM (1.0 before calibration); a broken file is a one-line error."""
    file = Path(checkpoint) / CALIBRATION
    if not file.is_file():
        return 1.0
    try:
        temperature = float(json.loads(file.read_text())["temperature"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{file}: not a PWRM calibration ({e}); delete it and calibrate again") from e
    if not temperature > 0:
        raise ValueError(f"{file}: temperature must be > 0, got {temperature}")
    return temperature


def write_temperature(checkpoint: Path, temperature: float, **measured) -> None:
    write_json({"temperature": temperature} | measured, Path(checkpoint) / CALIBRATION)


def save_pairs(pairs: Sequence[Pair], file: Path) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(file, "".join(json.dumps(asdict(p)) + "\n" for p in pairs).encode())


def load_pairs(file: Path) -> list[Pair]:
    """The pairs ``save_pairs`` wrote; a missing or broken file is a one-line error naming it."""
    file = Path(file)
    if not file.is_file():
        raise ValueError(f"{file}: no such pairs file (the pwrm step writes it: minimistral reproduce --from pwrm)")
    try:
        return [Pair(**json.loads(line)) for line in file.read_text().splitlines() if line.strip()]
    except (ValueError, TypeError) as e:
        raise ValueError(f"{file}: not a pairs file ({e})") from e


def pwrm_checkpoint(out: Path) -> Path:
    return Path(out) / CHECKPOINT
