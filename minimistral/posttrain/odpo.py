r"""Online DPO's loss (paper §4): two responses to a prompt, a soft verdict on which is better.

ODPO samples two responses $a$ and $b$ per prompt from the current policy; a pairwise reward model
gives $p$, the probability that $a$ is the better one. The DPO loss is taken in both orders, each
weighted by its probability instead of a hard label (docs/paper.md §5, the project's reading):

.. math::

    \Delta = \big(\log\pi_\theta(a) - \log\pi_{ref}(a)\big) - \big(\log\pi_\theta(b) - \log\pi_{ref}(b)\big)

    \mathcal{L} = -\,p\,\log\sigma(\beta\Delta) - (1 - p)\,\log\sigma(-\beta\Delta)

with sequence log-probabilities (summed over the response's tokens) and a frozen reference. With
$p = 1$ it is the standard DPO loss. Its gradient,
$\partial\mathcal{L}/\partial\Delta = \beta\,(\sigma(\beta\Delta) - p)$, vanishes when the policy's
implicit preference $\sigma(\beta\Delta)$ equals the judge's $p$.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def odpo_loss(
    policy_logp_a: torch.Tensor,
    policy_logp_b: torch.Tensor,
    ref_logp_a: torch.Tensor,
    ref_logp_b: torch.Tensor,
    prob_a: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """The two-sided DPO loss above, averaged over the ``[n]`` pairs; a scalar to minimise.

    ``policy_logp_*`` / ``ref_logp_*``: sequence log-probabilities ``[n]`` of responses a and b under the
    policy and the frozen reference (no gradient flows into the reference, nor into ``prob_a``);
    ``prob_a`` ``[n]`` in [0, 1]: the calibrated probability that a is better; ``beta`` > 0.
    """
    shapes = [tuple(t.shape) for t in (policy_logp_a, policy_logp_b, ref_logp_a, ref_logp_b, prob_a)]
    if len(set(shapes)) != 1 or len(shapes[0]) != 1:
        raise ValueError(f"shapes: policy a, b, reference a, b and prob_a must all be [n], got {shapes}")
    if not beta > 0:
        raise ValueError(f"beta: must be > 0, got {beta}")
    if ((prob_a < 0) | (prob_a > 1)).any():
        raise ValueError("prob_a: probabilities must lie in [0, 1]")
    delta = (policy_logp_a - ref_logp_a.detach()) - (policy_logp_b - ref_logp_b.detach())  # [n]
    p = prob_a.detach().to(delta.dtype)  # [n]
    return (-p * F.logsigmoid(beta * delta) - (1 - p) * F.logsigmoid(-beta * delta)).mean()
