"""Autoregressive generation with the KV cache: greedy, temperature and nucleus (top-p) sampling."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import torch

from minimistral.arch.model import Ministral3
from minimistral.errors import ImageError


def sample_next(logits: torch.Tensor, temperature: float, top_p: float, generator=None) -> torch.Tensor:
    r"""Pick the next token from ``logits [batch, vocab]``.

    Greedy (argmax) when ``temperature == 0``; otherwise sample from
    $p = \mathrm{softmax}(z / T)$ restricted to the smallest set of tokens whose
    probability mass reaches ``top_p`` (nucleus sampling, Holtzman et al. 2020), by inverting
    the cumulative distribution: with $u \sim U[0, 1)$ and $F_k = \sum_{j \le k} p_j$, the token is the first
    $k$ with $F_k > u F_V$ (a token of probability 0 is never drawn). ``generator``: one ``torch.Generator``
    for the batch, or a list of one per row (each row then draws from its own stream, whatever rows share
    its batch).
    """
    if temperature == 0.0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # [batch, vocab]
    if top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        mass_before = sorted_p.cumsum(-1) - sorted_p  # mass of strictly more likely tokens
        sorted_p = sorted_p.masked_fill(mass_before >= top_p, 0.0)  # the top token always stays
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    if isinstance(generator, list):  # row i's draw depends on row i's stream alone
        u = torch.stack([torch.rand((), generator=g, device=probs.device) for g in generator])  # [batch]
    else:
        u = torch.rand(probs.shape[0], generator=generator, device=probs.device)  # [batch]
    cdf = probs.cumsum(-1)  # [batch, vocab]: F
    return torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0]  # first k with F_k > u F_V


def pad_left(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of different lengths as one batch for :func:`generate`: ``input_ids`` and ``attention_mask``
    ``[batch, longest]``, each prompt at the right end of its row, ``pad_id`` and 0 before it."""
    longest = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (longest - len(p)) + list(p) for p in prompts])  # [b, longest]
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts])  # [b, longest]
    return ids, mask


def left_padding(attention_mask: torch.Tensor | None, shape: torch.Size) -> torch.Tensor | None:
    """The number of padding tokens left of each row's prompt ``[batch]``, or None when no row is padded."""
    if attention_mask is None:
        return None
    if attention_mask.shape != shape:
        raise ValueError(f"attention_mask: shape {tuple(attention_mask.shape)}, input_ids {tuple(shape)}")
    pad = (attention_mask == 0).sum(-1)  # [batch]
    if not torch.equal(attention_mask != 0, torch.arange(shape[1], device=pad.device)[None, :] >= pad[:, None]):
        raise ValueError("attention_mask: only left padding is supported (each row: 0s, then 1s to its end)")
    if (pad == shape[1]).any():
        raise ValueError("attention_mask: a row has no token")
    return pad if pad.any() else None


@torch.inference_mode()
def generate(
    model: Ministral3,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | Sequence[int] | None = None,
    eos_token_id: int | None = None,
    stop: Callable[[list[int]], bool] | None = None,
    pixel_values: torch.Tensor | None = None,
    image_sizes: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    num_return_sequences: int = 1,
) -> torch.Tensor:
    """Continue ``input_ids [batch, seq]`` by up to ``max_new_tokens``; returns ``[batch, seq + new]``.

    The prompt is encoded once (prefill); each new token then costs one forward pass
    of length 1 against the cache. With ``eos_token_id``, a finished row is padded
    with it and generation stops when every row has finished (as transformers does).
    ``stop(new tokens of a row)`` finishes a row too, after the token that made it hold
    (a stop string, say); later tokens of that row are EOS if ``eos_token_id`` is given.
    ``seed``: one seed for the batch's draws, or one per row, so that a row's tokens depend only on its
    prompt and its seed, not on the rows that share its batch (or on which process decodes it).
    ``pixel_values`` / ``image_sizes``: the images of the prompt's ``[IMG]`` tokens (a vision-language
    model, ``vision.model``); they are read once, in the prefill.
    ``attention_mask [batch, seq]`` (1 token, 0 padding): prompts of different lengths, left-padded, in one
    batch; each row continues as it would alone (as transformers' ``generate`` with an attention mask).
    ``num_return_sequences`` = n: each prompt is continued n times (rows ``[batch * n, seq + new]``, a prompt's n
    consecutive); its prefill is computed once and its KV cache copied n times (``seed``: one per output row).
    """
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
    device = model.lm_head.weight.device
    input_ids = input_ids.to(device)
    prompts, n = input_ids.shape[0], num_return_sequences
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"num_return_sequences must be a positive integer, got {n!r}")
    batch = prompts * n  # output rows
    generator = None
    if isinstance(seed, numbers.Integral):
        generator = torch.Generator(device=device).manual_seed(seed)
    elif seed is not None:
        if len(seed) != batch:
            raise ValueError(f"seed: one per row, got {len(seed)} for a batch of {batch}")
        generator = [torch.Generator(device=device).manual_seed(int(s)) for s in seed]
    pad = left_padding(attention_mask, input_ids.shape)
    cache = model.new_cache(prompts, input_ids.shape[1] + max_new_tokens, pad)
    images = {}
    if pixel_values is not None:
        if not hasattr(model, "vision_tower"):
            raise ImageError("images given to a text-only model (its checkpoint has no vision encoder)")
        images = dict(pixel_values=pixel_values.to(device), image_sizes=image_sizes)
    logits = model(input_ids, cache, last_only=True, **images)[:, -1]  # prefill, once per prompt: [prompts, vocab]
    if n > 1:  # every prompt's state copied to its n rows
        cache.repeat_rows(n)
        logits, input_ids = logits.repeat_interleave(n, 0), input_ids.repeat_interleave(n, 0)  # [batch, .]
    out = [input_ids]
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        token = sample_next(logits, temperature, top_p, generator)  # [batch]
        if eos_token_id is not None:
            token = token.masked_fill(finished, eos_token_id)
            finished |= token == eos_token_id
        out.append(token[:, None])
        if stop is not None:
            new = torch.cat(out[1:], dim=1).tolist()  # [batch][step + 1]
            finished |= torch.tensor(
                [not done and stop(row) for row, done in zip(new, finished.tolist(), strict=True)], device=device
            )
        if step == max_new_tokens - 1 or finished.all():
            break
        logits = model(token[:, None], cache, last_only=True)[:, -1]
    return torch.cat(out, dim=1)
