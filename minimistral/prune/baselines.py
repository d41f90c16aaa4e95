"""Baselines the paper's pruning heuristics are measured against (paper §3.1): not part of Ministral 3's recipe.

- layers: the counterfactual score (the loss with one layer removed, Minitron-style) and its
  iterative variant, mean weight magnitude, and random scores (ShortGPT's Block Influence and
  the prose's in/out ratio come from the same probe as the paper's out/in, in ``heuristics``);
- hidden size: the channels with the largest total weight magnitude (``first`` needs no code);
- FFN: weight magnitude and random unit scores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager

import torch
from torch import nn

from minimistral.arch.model import Ministral3
from minimistral.evaluate.loss import mean_loss


@contextmanager
def without_layers(model: Ministral3, removed: set[int]):
    """``model`` with the blocks ``removed`` skipped, restored on exit."""
    layers = model.model.layers
    model.model.layers = nn.ModuleList(b for j, b in enumerate(layers) if j not in removed)
    try:
        yield model
    finally:
        model.model.layers = layers


def _loss_without(model: Ministral3, windows: list[torch.Tensor]) -> Callable[[set[int]], float]:
    def loss(removed: set[int]) -> float:
        with without_layers(model, removed):
            return mean_loss(model, windows)

    return loss


def single_removal_losses(loss_without: Callable[[set[int]], float], num_layers: int) -> torch.Tensor:
    r"""$s_i = \mathcal{L}(\text{model without layer } i)$ for every layer, ``[num_layers]`` (higher = more needed)."""
    return torch.tensor([loss_without({i}) for i in range(num_layers)])


def greedy_removal_order(loss_without: Callable[[set[int]], float], num_layers: int, keep: int = 1) -> list[int]:
    r"""Remove the least harmful layer, rescore the rest on the pruned model, repeat until ``keep`` remain.

    With $R$ the layers removed so far, step $k$ removes
    $i_k = \arg\min_{i \notin R} \mathcal{L}(\text{model without } R \cup \{i\})$. Step 1 is
    the single-shot counterfactual's choice; later steps see the layers already gone.
    Costs $\sum_k (L - k)$ loss evaluations. Returns the removed layers in order.
    """
    removed: list[int] = []
    while num_layers - len(removed) > keep:
        alive = [i for i in range(num_layers) if i not in removed]
        losses = [loss_without({*removed, i}) for i in alive]
        removed.append(alive[min(range(len(alive)), key=losses.__getitem__)])
    return removed


def removal_order_scores(order: list[int], num_layers: int) -> torch.Tensor:
    """Scores from a removal order, ``[num_layers]``: step s scores s, layers never removed ``len(order)``."""
    scores = torch.full((num_layers,), float(len(order)))
    for step, i in enumerate(order):
        scores[i] = step
    return scores


@torch.no_grad()
def counterfactual_scores(model: Ministral3, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """Mean next-token loss on ``batches`` with each single layer removed, ``[num_layers]`` (higher = more needed)."""
    return single_removal_losses(_loss_without(model, list(batches)), len(model.model.layers))


def counterfactual_iterative_scores(
    model: Ministral3, batches: Iterable[torch.Tensor], num_layers: int | None = None
) -> torch.Tensor:
    """Scores from :func:`greedy_removal_order`, stopping at ``num_layers`` kept (default: rank every layer)."""
    n = len(model.model.layers)
    return removal_order_scores(greedy_removal_order(_loss_without(model, list(batches)), n, num_layers or 1), n)


@torch.no_grad()
def magnitude(module: nn.Module) -> float:
    """Mean absolute weight over a module's matrices (the weight-magnitude baseline)."""
    mats = [p for p in module.parameters() if p.ndim == 2]
    return float(sum(p.abs().sum() for p in mats) / sum(p.numel() for p in mats))


def random_layer_scores(num_layers: int, seed: int = 0) -> torch.Tensor:
    """The random baseline: i.i.d. uniform scores from a seeded generator, ``[num_layers]``."""
    return torch.rand(num_layers, generator=torch.Generator().manual_seed(seed))


def channel_magnitude(model: Ministral3) -> torch.Tensor:
    """Per residual channel, the summed |weight| of every matrix that reads or writes it, ``[D]``."""
    total = model.model.embed_tokens.weight.abs().sum(0) + model.lm_head.weight.abs().sum(0)
    for block in model.model.layers:
        a, m = block.self_attn, block.mlp
        for lin in (a.q_proj, a.k_proj, a.v_proj, m.gate_proj, m.up_proj):
            total = total + lin.weight.abs().sum(0)
        for lin in (a.o_proj, m.down_proj):
            total = total + lin.weight.abs().sum(1)
    return total.detach()
