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

from collections.abc import Sequence

import numpy as np
import torch

from minimistral.arch.attention_maps import attention_entropy as row_entropy
from minimistral.arch.attention_maps import attention_probabilities
from minimistral.arch.config import TINY_WINDOW, ModelConfig
from minimistral.arch.model import Ministral3, assemble
from minimistral.arch.rope import inverse_frequencies, rope_frequencies
from minimistral.data.corpus import Corpus, pack, tokenize, windows
from minimistral.data.sources import PROSE_FILES
from minimistral.evaluate.loss import token_losses

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
    new = assemble(cfg, model.state_dict(), clone=not share)
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


# ----------------------------------------------------------------------------- attention entropy
def attention_entropy(model: Ministral3, windows: torch.Tensor, batch_size: int = 4) -> torch.Tensor:
    r"""Mean entropy (nats) of the attention rows of each layer and query position: ``[layers, T]``.

    $\bar H_{l,i} = \frac{1}{n\,h}\sum_{w,h} -\sum_j P^{l,w,h}_{ij} \ln P^{l,w,h}_{ij}$ over windows and
    heads, with $P$ the softmax of the model's own rotated, temperature-scaled queries and keys
    (``arch.attention_maps.attention_probabilities``, which recomputes q/k/v from the layer's input captured
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
