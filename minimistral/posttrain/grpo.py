r"""Group Relative Policy Optimization, the objective of the paper's reinforcement-learning stages (§4).

GRPO samples a *group* of $G$ responses per prompt from the policy that is being trained, scores
each with a reward, and asks every token of a response to move in the direction of that response's
advantage over its own group. No value network: the group is the baseline.

.. math::

    A_i = \frac{r_i - \operatorname{mean}(r_{1..G})}{\operatorname{std}(r_{1..G}) + 10^{-4}}

    \mathcal{L}(\theta) = \frac{1}{\sum_{i,t} m_{i,t}} \sum_{i,t} m_{i,t}\Big[
        -\min\big(\rho_{i,t} A_i,\ \operatorname{clip}(\rho_{i,t}, 1-\epsilon, 1+\epsilon) A_i\big)
        + \beta\,\big(e^{\,q_{i,t} - \ell_{i,t}} - (q_{i,t} - \ell_{i,t}) - 1\big)\Big]

with $\ell_{i,t} = \log \pi_\theta(y_{i,t} \mid x, y_{i,<t})$, $\rho_{i,t} = e^{\ell_{i,t} - \ell^{old}_{i,t}}$ the
ratio to the policy that sampled the rollouts, $q_{i,t}$ the frozen reference's log-probability,
and the last term the non-negative "k3" estimate of $\mathrm{KL}(\pi_\theta \| \pi_{ref})$. The sum over
tokens is divided by the number of response tokens in the batch (token-level normalisation), so a
long response weighs as many tokens as it has.
"""

from __future__ import annotations

import torch
from einops import rearrange


def group_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    r"""$A_i = (r_i - \bar r_g) / (s_g + 10^{-4})$ per group $g$ of ``group_size`` consecutive rollouts.

    ``rewards`` ``[n_prompts * G]``; $s_g$ is the unbiased standard deviation (``torch.std``). A group
    whose rewards are all equal gets advantage 0 for every rollout: it carries no learning signal.
    """
    if group_size < 2:
        raise ValueError(f"group_size must be at least 2 (an unbiased std needs two rollouts), got {group_size}")
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards must be 1-D with a multiple of group_size={group_size} entries, got {tuple(rewards.shape)}"
        )
    groups = rearrange(rewards, "(n g) -> n g", g=group_size)  # [n_prompts, G]
    advantages = (groups - groups.mean(-1, keepdim=True)) / (groups.std(-1, keepdim=True) + 1e-4)
    return rearrange(advantages, "n g -> (n g)")


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    ref_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> torch.Tensor:
    """The clipped GRPO objective above, a scalar to minimise.

    ``logp``, ``old_logp``, ``ref_logp``: per-token log-probabilities ``[n, t]`` of the sampled tokens
    under the policy being trained, the policy that sampled them, and the frozen reference;
    ``advantages`` ``[n]`` (one per rollout); ``mask`` ``[n, t]``: 1 on response tokens.
    """
    if not (logp.shape == old_logp.shape == mask.shape and advantages.shape == logp.shape[:1]):
        raise ValueError(
            f"shapes: logp {tuple(logp.shape)}, old_logp {tuple(old_logp.shape)}, mask {tuple(mask.shape)} "
            f"must be equal [n, t] and advantages {tuple(advantages.shape)} [n]"
        )
    if kl_coef and ref_logp is None:
        raise ValueError("kl_coef > 0 needs ref_logp")
    mask = mask.to(logp.dtype)
    ratio = torch.exp(logp - old_logp.detach())  # [n, t]
    a = advantages.detach()[:, None]  # [n, 1]
    per_token = -torch.minimum(ratio * a, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * a)  # [n, t]
    if kl_coef:
        log_ratio = ref_logp.detach() - logp  # [n, t]
        per_token = per_token + kl_coef * (torch.exp(log_ratio) - log_ratio - 1)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)
