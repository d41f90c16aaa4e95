"""Sampling responses from a policy, batched with the KV cache, and scoring them (paper §4).

The same path serves evaluation (pass@k) and GRPO's rollouts: prompts sorted by length are cut into
batches, each left-padded (:func:`~minimistral.arch.generate.pad_left`) and read once, then continued
``n`` times from a copy of its KV cache; :func:`~minimistral.arch.generate.generate` decodes all rows at
once, each as it would alone. Each rollout draws from its own seeded stream
(:func:`row_seeds`), so a rollout is the same whatever the batch size, the other prompts, or the
process that samples it: N processes sample exactly the rollouts of one.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from minimistral.arch.generate import generate, pad_left
from minimistral.data.tokenizer import EOS_ID

SAMPLING_VERSION = 2  # in the key of cached sampled scores; 2: every rollout seeded on its own (row_seeds)


def row_seeds(seed: int, rows: Sequence[int]) -> list[int]:
    """The seed of each rollout: a function of the run's ``seed`` and the rollout's global row number alone."""
    return [seed * 1_000_003 + r for r in rows]


@dataclass
class Rollout:
    prompt: int  # index of its prompt
    ids: list[int]  # the response's ids, up to and including </s> if it wrote one

    @property
    def ended(self) -> bool:
        return EOS_ID in self.ids


def sample(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    n: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 64,
    desc: str | None = None,
    first_row: int = 0,
) -> list[Rollout]:
    """``n`` responses to each prompt (``temperature`` 0: greedy), in order: prompt 0's ``n``, then prompt 1's, ...

    Response ``r`` (of ``len(prompts) * n``) is drawn with seed ``row_seeds(seed, [first_row + r])``:
    a process that samples rows ``first_row ...`` of a larger batch draws what one process would.
    ``batch_size``: rows per batch (a prompt's ``n`` rows share one, so at least ``n``).
    ``desc``: show a progress bar over the batches under that name."""
    model.eval()
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # alike lengths share a batch
    per_batch = max(1, batch_size // n)  # prompts per batch, each continued n times
    chunks = [order[start : start + per_batch] for start in range(0, len(order), per_batch)]
    out: list[Rollout | None] = [None] * (len(prompts) * n)
    for chunk in tqdm(chunks, desc=desc, unit="batch", leave=False, disable=desc is None or None):
        ids, mask = pad_left([prompts[i] for i in chunk], EOS_ID)  # [b, longest prompt], left-padded
        rows = [i * n + j for i in chunk for j in range(n)]  # [b * n]: each prompt's n rows, in order
        seeds = row_seeds(seed, [first_row + r for r in rows])
        new = generate(model, ids, max_new_tokens, temperature, seed=seeds, eos_token_id=EOS_ID, attention_mask=mask,
                       num_return_sequences=n)[:, ids.shape[1] :]  # fmt: skip
        for r, row in zip(rows, new.tolist(), strict=True):
            out[r] = Rollout(r // n, row[: row.index(EOS_ID) + 1] if EOS_ID in row else row)
    return out


def pass_at_k(n: int, correct: int, k: int) -> float:
    r"""Unbiased pass@k from ``n`` samples of which ``correct`` are right: $1 - \binom{n-c}{k} / \binom{n}{k}$."""
    if not 0 <= correct <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= correct <= n and 1 <= k <= n, got n={n}, correct={correct}, k={k}")
    return 1.0 - math.comb(n - correct, k) / math.comb(n, k)


def repetition(ids: Sequence[int], n: int = 4) -> float:
    """Share of a response's ``n``-grams that repeat an earlier one (0 for a response shorter than ``n + 1``)."""
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    if len(grams) < 2:
        return 0.0
    return sum(c - 1 for c in Counter(grams).values()) / len(grams)
