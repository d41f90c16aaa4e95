r"""The long-context stage: position scaling variants, long documents, and how to tell they work.

Paper section 2 and 3.1: every child is distilled twice, first on the short window
(16,384 tokens), then on long documents with RoPE extended by YaRN (factor 16, to 262,144)
and the position-based query temperature $\tau(p) = 1 + \beta \ln(1 + \lfloor p / L \rfloor)$,
always with the parent (trained on the short window only) as the teacher. Tiny scale: the
window is ``TINY_WINDOW`` = 256 tokens and YaRN x4 extends it to 1,024.

This module holds what the stage and its notebook need:

- the variants compared (``with_position_scaling``, ``rescaled``): no scaling (RoPE
  extrapolated), linear position interpolation (Chen et al. 2023), YaRN (Peng et al. 2023),
  each with or without the temperature, and a sliding window that keeps every relative
  position inside the trained range;
- ``long_documents``: whole books cut into long windows, one split at a time;
- two measurements: the loss per position bucket and passkey retrieval
  (Mohtashami & Jaggi 2023), plus the attention entropy per query position;
- ``long_context_teacher``: which variant of the parent teaches the long stage.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer as HFTokenizer

from minimistral.config import TINY_WINDOW, ModelConfig
from minimistral.data import PROSE_FILES, Corpus, pack, tokenize, windows
from minimistral.explain import attention_entropy as row_entropy
from minimistral.explain import attention_probabilities
from minimistral.model import Ministral3
from minimistral.rope import inverse_frequencies, rope_frequencies
from minimistral.tokenizer import Tokenizer

METHODS = ("none", "linear", "yarn", "window")
TEMPERATURE_BETA = 0.1  # llama_4_scaling_beta of every Ministral 3 model (paper section 2)


# ----------------------------------------------------------------------------- variants
def with_position_scaling(
    config: ModelConfig,
    method: str = "yarn",
    factor: float = 4.0,
    temperature: bool = True,
    original: int = TINY_WINDOW,
) -> ModelConfig:
    r"""``config`` extended from a window of ``original`` tokens to ``factor`` times as many.

    ``method`` sets the rotary frequencies $\omega_i = \theta^{-2i/d}$ (paper section 2):

    - ``"none"``: unchanged; positions past the window give angles never seen in training.
    - ``"linear"``: position interpolation, $\omega'_i = \omega_i / s$ in every channel.
    - ``"yarn"``: $\omega'_i = (1 - r_i)\,\omega_i + r_i\,\omega_i / s$ with YaRN's ramp $r$
      (``rope.yarn_ramp``): fast channels keep their frequency, slow ones are interpolated.
    - ``"window"``: frequencies unchanged, sliding-window attention of ``original`` tokens,
      so every query-key distance stays below the trained window.

    ``temperature`` multiplies queries by $\tau(p) = 1 + 0.1 \ln(1 + \lfloor p / L \rfloor)$
    with $L$ = ``original`` (the children's ``llama_4_scaling_beta``).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not factor >= 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    if original < 1:
        raise ValueError(f"original must be a positive window length, got {original}")
    needs_window = method == "yarn" or temperature
    return config.replace(
        yarn_factor=float(factor) if method == "yarn" else None,
        linear_factor=float(factor) if method == "linear" else None,
        sliding_window=original if method == "window" else None,
        llama_4_scaling_beta=TEMPERATURE_BETA if temperature else None,
        original_max_position_embeddings=original if needs_window else config.original_max_position_embeddings,
        max_position_embeddings=round(factor * original),
    )


def rescaled(model: Ministral3, share: bool = False, **scaling) -> Ministral3:
    """``model`` under ``with_position_scaling(model.config, **scaling)``: same weights, new rope tables.

    Only the rotary frequencies, the temperature and the attention mask change, so the
    weights carry over unchanged. With ``share`` the new model reads the very same tensors
    (no copy: a frozen teacher); otherwise it gets its own copy (a student to train).
    """
    cfg = with_position_scaling(model.config, **scaling)
    w = model.lm_head.weight
    with torch.device("meta"):
        new = Ministral3(cfg)
    state = {k: v if share else v.detach().clone() for k, v in model.state_dict().items()}
    new.load_state_dict(state, assign=True)
    if cfg.tie_word_embeddings:
        new.lm_head.weight = new.model.embed_tokens.weight  # one matrix, as Ministral3 ties it
    return new.to(device=w.device, dtype=w.dtype).train(model.training)


def frequency_ratios(config: ModelConfig, factor: float = 4.0, original: int = TINY_WINDOW) -> dict[str, torch.Tensor]:
    r"""$\omega'_i / \omega_i$ per channel pair ``[head_dim/2]`` for each method (for the ramp plot).

    1 for ``"none"`` and ``"window"``, $1/s$ for ``"linear"``, and $1 - r_i + r_i / s$ for ``"yarn"``
    (paper section 2). The ramp itself is ``rope.yarn_ramp``; wavelengths are ``explain.yarn_regions``.
    """
    omega = rope_frequencies(config.head_dim, config.rope_theta)  # [head_dim/2]
    out = {}
    for method in METHODS:
        cfg = with_position_scaling(config, method, factor, temperature=False, original=original)
        out[method] = inverse_frequencies(cfg)[0] / omega
    return out


# ----------------------------------------------------------------------------- data
def long_documents(corpus: Corpus, split: str, seq_len: int) -> torch.Tensor:
    """Windows ``[n, seq_len + 1]`` cut from the prose books of one split, concatenated whole.

    Only Shakespeare and Milton (a math problem is a few hundred tokens: it teaches nothing
    about long range). Every book's tokens stay contiguous, books are joined as
    ``<s> book </s>`` in the split's fixed order (``data.pack``), and the stream is cut
    like pretraining windows (``data.windows``: inputs ``[:, :-1]``, targets ``[:, 1:]``).
    The split's documents only: validation books never reach a training window.
    """
    if split not in corpus.docs:
        raise ValueError(f"split must be one of {list(corpus.docs)}, got {split!r}")
    if seq_len < 1:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    books = corpus.docs[split].filter(lambda d: d["source"] in PROSE_FILES)
    ids = tokenize(corpus.tokenizer, books["text"], f"tokenizing {split} books")
    stream = pack(ids, corpus.bos_id, corpus.eos_id)  # [n_tokens] int32, books in order
    if len(stream) <= seq_len:
        raise ValueError(f"seq_len {seq_len}: the {split} books hold only {len(stream)} tokens")
    return windows(stream, seq_len)


def spread(windows: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` of the windows, evenly spaced over the stream (every book represented), for cheap measurements."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    return windows[np.linspace(0, len(windows) - 1, min(n, len(windows))).round().astype(int)]


# ----------------------------------------------------------------------------- loss by position
@torch.no_grad()
def token_losses(model: Ministral3, windows: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    r"""$-\ln p(x_{t+1} \mid x_{\le t})$ for every window and position: ``[n, T + 1]`` -> ``[n, T]`` (fp32, cpu)."""
    if windows.ndim != 2 or windows.shape[1] < 2:
        raise ValueError(f"windows must be [n, T + 1] with T >= 1, got shape {tuple(windows.shape)}")
    model.eval()
    device = model.lm_head.weight.device
    out = []
    for w in windows.split(batch_size):
        w = w.to(device)
        logits = model(w[:, :-1]).float()  # [b, T, vocab]
        out.append(F.cross_entropy(logits.transpose(1, 2), w[:, 1:], reduction="none").cpu())  # [b, T]
    return torch.cat(out)


def position_bucket_loss(
    model: Ministral3, windows: torch.Tensor, bucket: int = 128, batch_size: int = 8
) -> torch.Tensor:
    r"""Mean next-token loss per bucket of ``bucket`` positions: ``[ceil(T / bucket)]``.

    $\bar\ell_b = \frac{1}{n |B_b|} \sum_{w} \sum_{t \in B_b} -\ln p(x^w_{t+1} \mid x^w_{\le t})$,
    $B_b = [b \cdot \text{bucket}, (b+1) \cdot \text{bucket})$. A model that uses its context
    has a loss falling with position; one whose positions broke past the trained window
    has it rising there. The last bucket is shorter when ``bucket`` does not divide T.
    """
    if bucket < 1:
        raise ValueError(f"bucket must be positive, got {bucket}")
    per_position = token_losses(model, windows, batch_size).mean(0)  # [T]
    return torch.stack([b.mean() for b in per_position.split(bucket)])  # [num_buckets]


# ----------------------------------------------------------------------------- the teacher
# Which parent teaches the long stage. Measured on the default parent (runs/parent-default,
# 48 held-out 1,024-token windows, mean loss in the first / last 128-position bucket):
#   plain 4.75 / 5.41, plain+temp 4.75 / 5.42, linear 5.23 / 5.24, linear+temp 5.23 / 5.25,
#   yarn 4.85 / 4.97, yarn+temp 4.85 / 4.97, window 4.75 / 4.71.
# Only the sliding window keeps the parent's in-window loss at every position (the parent's loss
# is flat in position: it uses little context beyond its window anyway), so it is the default.
TEACHER_VARIANTS: dict[str, dict] = {
    "plain": dict(method="none", temperature=False),  # RoPE extrapolated
    "plain+temp": dict(method="none", temperature=True),
    "linear": dict(method="linear", temperature=False),
    "linear+temp": dict(method="linear", temperature=True),
    "yarn": dict(method="yarn", temperature=False),
    "yarn+temp": dict(method="yarn", temperature=True),  # the children's own setting
    "window": dict(method="window", temperature=False),  # sliding window of 256
}
DEFAULT_TEACHER = "window"


def long_context_teacher(
    parent: Ministral3, method: str = DEFAULT_TEACHER, factor: float = 4.0, original: int = TINY_WINDOW
) -> Ministral3:
    """The parent as teacher for 1,024-token windows (paper section 3.1: the teacher is always the parent).

    The parent never saw a position past ``original``; ``method`` names one of
    ``TEACHER_VARIANTS``. Weights are shared with ``parent`` and frozen (eval mode, no grad).
    """
    if method not in TEACHER_VARIANTS:
        raise ValueError(f"method must be one of {list(TEACHER_VARIANTS)}, got {method!r}")
    teacher = rescaled(parent, share=True, factor=factor, original=original, **TEACHER_VARIANTS[method])
    return teacher.eval().requires_grad_(False)


def compare_variants(
    parent: Ministral3, windows: torch.Tensor, variants: Sequence[str] = tuple(TEACHER_VARIANTS), bucket: int = 128
) -> dict[str, torch.Tensor]:
    """``position_bucket_loss`` of each teacher variant of ``parent`` on the same windows."""
    return {name: position_bucket_loss(long_context_teacher(parent, name), windows, bucket) for name in variants}


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
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "What is the pass key? The pass key is"


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


def filler_sentences(text: str) -> list[str]:
    """Prose as filler: ``text`` split into sentences, whitespace collapsed (verse lines run together)."""
    sentences = [" ".join(s.split()) for s in re.split(r"(?<=[.!?;])\s+", text)]
    return [s for s in sentences if s]


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


def _answer_logprobs(model: Ministral3, sequences: Sequence[torch.Tensor], answer_len: int) -> torch.Tensor:
    """Log-probabilities before each of the last ``answer_len`` tokens: ``[n, answer_len, vocab]`` (fp32, cpu)."""
    device = model.lm_head.weight.device
    # right padding is harmless: causal attention never lets a position see later ones
    ids = torch.nn.utils.rnn.pad_sequence(list(sequences), batch_first=True).to(device)  # [n, T]
    ends = torch.tensor([len(s) for s in sequences], device=device)  # [n]
    rows = ends[:, None] - answer_len - 1 + torch.arange(answer_len, device=device)  # [n, a]
    h = model.model(ids)  # [n, T, hidden]
    h = h.gather(1, rows[..., None].expand(-1, -1, h.shape[-1]))  # [n, a, hidden]
    return model.lm_head(h).float().log_softmax(-1).cpu()  # [n, a, vocab]


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
    model.eval()
    answer_len = len(examples[0].ids) - examples[0].answer_start
    if any(len(e.ids) - e.answer_start != answer_len for e in examples):
        raise ValueError("examples: answers of different token lengths cannot be scored together")
    targets = torch.stack([e.ids[e.answer_start :] for e in examples])  # [n, a]: " " then the digits
    digit = examples[0].key_start - examples[0].answer_start  # first digit among the answer tokens
    logp = _answer_logprobs(model, [e.ids for e in examples], answer_len)  # [n, a, vocab]
    decoy = _answer_logprobs(model, [e.decoy_ids for e in examples], answer_len)  # [n, a, vocab]
    hit = logp.argmax(-1) == targets  # [n, a]
    true_lp = logp.gather(-1, targets[..., None])[..., 0]  # [n, a]
    decoy_lp = decoy.gather(-1, targets[..., None])[..., 0]  # [n, a]
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
    long-context benchmark (FACTS.md section 5); this is the standard synthetic one."""
    grid = {k: torch.zeros(len(lengths), len(depths)) for k in PASSKEY_METRICS}
    for i, length in enumerate(lengths):
        for j, depth in enumerate(depths):
            scores = passkey_scores(model, passkey_examples(tokenizer, length, depth, n, seed, filler))
            for k, v in scores.items():
                grid[k][i, j] = v.mean()
    return grid


# ----------------------------------------------------------------------------- attention entropy
def attention_entropy(model: Ministral3, windows: torch.Tensor, batch_size: int = 4) -> torch.Tensor:
    r"""Mean entropy (nats) of the attention rows of each layer and query position: ``[layers, T]``.

    $\bar H_{l,i} = \frac{1}{n\,h}\sum_{w,h} -\sum_j P^{l,w,h}_{ij} \ln P^{l,w,h}_{ij}$ over windows and
    heads, with $P$ the softmax of the model's own rotated, temperature-scaled queries and keys
    (``explain.attention_probabilities``, which recomputes q/k/v from the layer's input captured
    by a hook, and is checked there against the model's own attention output). A uniform row over
    the causal prefix gives $\ln(i+1)$; entropy growing past the trained window is the attention
    dilution the query temperature (paper section 2) counters. ``windows`` ``[n, T + 1]``: the
    inputs ``[:, :-1]`` are read, as in ``position_bucket_loss``.
    """
    inputs = windows[:, :-1].to(model.lm_head.weight.device)  # [n, T]
    layers = model.config.num_hidden_layers
    total = torch.zeros(layers, inputs.shape[1])
    for ids in inputs.split(batch_size):
        for layer in range(layers):
            probs = attention_probabilities(model, ids, layer)  # [b, heads, T, T]
            total[layer] += row_entropy(probs).sum(dim=(0, 1)).cpu()  # [T]
    return total / (inputs.shape[0] * model.config.num_attention_heads)
