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

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from einops import rearrange

from minimistral.data.tokenizer import EOS_ID
from minimistral.distributed import gathered
from minimistral.posttrain.rollouts import sample
from minimistral.train import TrainConfig, Trainer, pad_right


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


# ----------------------------------------------------------------------------- the loop
@dataclass(frozen=True)
class RLConfig:
    """A GRPO stage's sampling and objective (the optimiser's settings are the engine's ``TrainConfig``,
    whose ``batch_size`` is the number of prompts per iteration)."""

    group_size: int = 8  # G rollouts per prompt
    max_new_tokens: int = 128  # the generation-length limit (the paper raises it between its stages)
    temperature: float = 1.0
    clip_eps: float = 0.2
    kl_coef: float = 0.0
    inner_steps: int = 2  # optimisation steps on each batch of rollouts


class Prompts:
    """The prompts (token ids) a stage samples from; ``batch(indices)`` hands the indices on: rollouts are online."""

    def __init__(self, prompts: Sequence[Sequence[int]]):
        self.prompts = [list(p) for p in prompts]

    def __len__(self) -> int:
        return len(self.prompts)

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        return indices


def token_logprobs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    r"""$\log \pi(x_{t+1} \mid x_{\le t})$ at every position of a ``pad_right`` batch: ``[b, T]``."""
    logits = model(batch["input_ids"]).float()  # [b, T, vocab]
    return logits.gather(-1, batch["targets"][..., None])[..., 0] - logits.logsumexp(-1)


def online_rollouts(trainer: Trainer, n: int, max_new_tokens: int, temperature: float):
    """The rollouts of an online stage's iteration (GRPO, ODPO): this rank's prompts of the engine's seeded
    sampler at ``trainer.step``, ``n`` responses to each from the current policy. Each rollout is seeded by the
    step and its row in the iteration's global batch, so a resumed run samples the same and N processes
    sample exactly the rollouts of one. Returns (dataset index of each prompt, the rollouts, the
    ``pad_right`` batch of prompt + response with the response's tokens in ``mask``)."""
    indices = trainer.train_data.batch(trainer.sampler.indices(trainer.step)).tolist()
    prompts = [trainer.train_data.prompts[i] for i in indices]
    seed = trainer.cfg.seed * 1_000_003 + trainer.step
    first_row = trainer.rank * len(prompts) * n  # every rank holds as many prompts (the Sampler's equal shares)
    with gathered(trainer.train_model):  # under FSDP2: each rank decodes alone, for as many steps as it needs
        rolls = sample(trainer.train_model, prompts, n, max_new_tokens, temperature, seed=seed, first_row=first_row)
    rows = [(prompts[r.prompt] + r.ids, [False] * len(prompts[r.prompt]) + [True] * len(r.ids)) for r in rolls]
    return indices, rolls, pad_right(rows, EOS_ID)


class GRPOTrainer(Trainer):
    """GRPO on the one engine: each engine step is one iteration, and a checkpoint always falls between two.

    An iteration takes ``cfg.batch_size`` prompts (the engine's seeded sampler), samples ``G`` responses
    to each from the current policy (batched, KV cache; seeded by the step, so a resumed run samples
    the same), scores them with ``reward(prompt index, rollout)``, and takes ``rl.inner_steps``
    optimizer steps on :func:`grpo_loss` against the sampling policy's log-probabilities (and the
    frozen ``reference``'s, when ``rl.kl_coef > 0``). Logged per iteration: mean reward, the share of
    groups whose rewards are all equal (no signal), response length, the share truncated, clipping.
    """

    SETTINGS = ("rl_config", "RL config")

    def __init__(self, model, cfg: TrainConfig, rl: RLConfig, prompts: Prompts, reward, out_dir, reference=None, **kw):
        if rl.kl_coef and reference is None:
            raise ValueError("kl_coef > 0 needs a reference model")
        super().__init__(model, cfg, prompts, out_dir, **kw)
        self.rl = self.settings = rl
        self.reward = reward
        self.reference = reference.to(self.device).eval().requires_grad_(False) if reference is not None else None

    def train_step(self) -> tuple[dict[str, float], int]:
        batch, stats = self.rollouts()
        with torch.no_grad(), self.autocast():  # (bf16 autocast on a GPU that has it, as every stage)
            ref = token_logprobs(self.reference, batch) if self.reference is not None else None
        self.apply_lr()
        self.train_model.train()
        mask = batch["mask"]
        weight, tokens = self.token_weight(int(mask.sum()))  # (this rank's share, over all ranks)
        with self.uninterruptible():  # Ctrl-C or SIGTERM lands after the iteration: no checkpoint splits one
            loss, logp, old = self.optimise(batch, ref, mask, weight)
        ratio = torch.exp(logp.detach() - old)[mask]
        clipped = ((ratio - 1).abs() > self.rl.clip_eps).float().mean()
        self.step += 1
        self.tokens += tokens
        # means over tokens weigh by this rank's token share; means over rollouts by its share of the rollouts
        # (the Sampler gives every rank as many prompts), so the sums over ranks are the one-process means
        scalars = {k: float(v) / self.world for k, v in stats.items()}
        scalars |= {k: float(v) * weight for k, v in {"loss": loss.detach(), "clipped": clipped}.items()}
        return self.sum_scalars(scalars), tokens

    def optimise(self, batch, ref, mask, weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``rl.inner_steps`` optimizer steps of :func:`grpo_loss` on one batch of rollouts; returns the last loss,
        the last log-probabilities and those of the policy that sampled (the first pass's, as no step has run)."""
        old = None  # ``weight``: this rank's share of the tokens (1.0: one process)
        for _ in range(self.rl.inner_steps):
            with self.autocast():
                logp = token_logprobs(self.train_model, batch)  # [n, T]
            old = logp.detach() if old is None else old
            loss = grpo_loss(logp, old, batch["advantages"], mask, self.rl.clip_eps, ref, self.rl.kl_coef)
            (loss * weight).backward()
            self.update()
        return loss, logp, old

    @torch.no_grad()
    def rollouts(self) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """This iteration's prompts, ``G`` rollouts each, their rewards and advantages, as one padded batch."""
        rl = self.rl
        indices, rolls, batch = online_rollouts(self, rl.group_size, rl.max_new_tokens, rl.temperature)
        rewards = torch.tensor([self.reward(indices[r.prompt], r) for r in rolls])  # [n * G]
        batch["advantages"] = group_advantages(rewards, rl.group_size)
        groups = rearrange(rewards, "(n g) -> n g", g=rl.group_size)
        stats = {
            "reward": rewards.mean(),
            "no_signal": (groups.max(-1).values == groups.min(-1).values).float().mean(),
            "length": statistics.fmean(len(r.ids) for r in rolls),
            "truncated": statistics.fmean(not r.ended for r in rolls),
        }
        return {k: v.to(self.device) for k, v in batch.items()}, stats
