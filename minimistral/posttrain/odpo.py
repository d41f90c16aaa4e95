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

import statistics
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from minimistral.posttrain.chat import judged_answer
from minimistral.posttrain.grpo import online_rollouts, token_logprobs
from minimistral.posttrain.pwrm import Pair
from minimistral.posttrain.rollouts import Rollout
from minimistral.train import TrainConfig, Trainer


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


# ----------------------------------------------------------------------------- the online loop
@dataclass(frozen=True)
class ODPOConfig:
    """An ODPO stage's sampling and objective (the optimiser's settings are the engine's ``TrainConfig``, whose
    ``batch_size`` is the number of prompts per iteration, two responses each)."""

    beta: float = 0.1
    rescale: bool = True  # the loss divided by beta (our reading of the paper's "beta rescaling")
    temperature: float = 0.7  # the paper's sampling temperature
    max_new_tokens: int = 96
    thinking: bool = False  # a Reasoning policy: prompts open [THINK], and the thinking is stripped before judging


def looping(rollout: Rollout, n: int = 4, times: int = 3) -> bool:
    """A response that loops: it never wrote ``</s>`` within the limit, or one ``n``-gram occurs ``times`` times."""
    grams = Counter(tuple(rollout.ids[i : i + n]) for i in range(len(rollout.ids) - n + 1))
    return not rollout.ended or max(grams.values(), default=0) >= times


def pair_probability(loops_a: bool, loops_b: bool, judged: float) -> float:
    """P(a wins): a looping response loses whatever the judge says; two looping responses tie."""
    if loops_a or loops_b:
        return 0.5 if loops_a and loops_b else float(loops_b)
    return judged


def sequence_logprobs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    r"""$\log \pi(y \mid x) = \sum_t \log \pi(y_t \mid x, y_{<t})$ over each row's response tokens: ``[b]``."""
    return (token_logprobs(model, batch) * batch["mask"]).sum(-1)


class ODPOTrainer(Trainer):
    """Online DPO on the one engine: each engine step is one iteration, and a checkpoint always falls between two.

    An iteration takes ``cfg.batch_size`` prompts, samples two responses to each from the current policy
    (batched, KV cache, seeded by the step), asks ``judge`` (a :class:`~minimistral.posttrain.pwrm.
    PairwiseRewardModel`) for P(a wins) on the answers (thinking stripped), makes a looping response lose,
    and takes one optimizer step on :func:`odpo_loss` against the frozen ``reference`` (divided by beta when
    ``odpo.rescale``). Logged: the loss, the judge's mean confidence |p - 1/2|, the share of looping
    responses, length, the implicit reward margin and how often its sign agrees with the judge. With
    ``score(prompt index, rollout)`` (the programmatic judge; logged only, never in the loss) also the share of
    pairs it scores equal (``program_ties``) and the share it separates the way P(a wins) leans
    (``program_followed``): how much of what ODPO learns the programmatic judge would back.
    """

    SETTINGS = ("odpo_config", "ODPO config")

    def __init__(self, model, cfg: TrainConfig, odpo: ODPOConfig, prompts, texts, judge, tokenizer, out_dir,
                 reference, score=None, **kw):  # fmt: skip
        super().__init__(model, cfg, prompts, out_dir, **kw)
        self.score = score
        if len(texts) != len(prompts):
            raise ValueError(f"texts: one user message per prompt, got {len(texts)} for {len(prompts)} prompts")
        self.odpo = self.settings = odpo
        self.texts, self.tokenizer = list(texts), tokenizer
        self.judge = judge.to(self.device)
        self.reference = reference.to(self.device).eval().requires_grad_(False)

    def train_step(self) -> tuple[dict[str, float], int]:
        batch, stats = self.pairs()
        with torch.no_grad(), self.autocast():  # (bf16 autocast on a GPU that has it, as every stage)
            ref = sequence_logprobs(self.reference, batch)  # [2n]: a, b, a, b, ...
        self.apply_lr()
        self.train_model.train()
        with self.uninterruptible():  # Ctrl-C or SIGTERM lands after the iteration: no checkpoint splits one
            with self.autocast():
                logp = sequence_logprobs(self.train_model, batch)  # [2n]
            o = self.odpo
            loss = odpo_loss(logp[0::2], logp[1::2], ref[0::2], ref[1::2], batch["prob_a"], o.beta)
            weight = self.token_weight(len(batch["prob_a"]))[0]  # this rank's share of the pairs (1.0: one process)
            ((loss / o.beta if o.rescale else loss) * weight).backward()
            self.update()
        margin = (logp - ref).detach()[0::2] - (logp - ref).detach()[1::2]  # [n]: delta, the implicit reward margin
        decided = batch["prob_a"] != 0.5
        agree = (
            ((margin > 0) == (batch["prob_a"] > 0.5))[decided].float().mean() if decided.any() else margin.new_zeros(())
        )
        tokens = self.token_weight(int(batch["mask"].sum()))[1]
        self.step += 1
        self.tokens += tokens
        scalars = stats | {"loss": loss.detach(), "margin": margin.mean(), "agree": agree}
        return self.sum_scalars({k: float(v) * weight for k, v in scalars.items()}), tokens

    @torch.no_grad()
    def pairs(self) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """This iteration's prompts, two responses each, and P(a wins) per pair, as one padded batch."""
        o = self.odpo
        indices, rolls, batch = online_rollouts(self, 2, o.max_new_tokens, o.temperature)
        answers = [judged_answer(self.tokenizer, r.ids, o.thinking) for r in rolls]
        loops = [looping(r) for r in rolls]
        judged = self.judge.prob([Pair(self.texts[i], answers[2 * k], answers[2 * k + 1], 0.0, 0.0)
                                  for k, i in enumerate(indices)]).tolist()  # fmt: skip
        prob_a = [pair_probability(loops[2 * k], loops[2 * k + 1], p) for k, p in enumerate(judged)]
        batch["prob_a"] = torch.tensor(prob_a)
        stats = {
            "confidence": statistics.fmean(abs(p - 0.5) for p in prob_a),
            "loops": statistics.fmean(loops),
            "length": statistics.fmean(len(r.ids) for r in rolls),
        }
        if self.score is not None:
            program = [self.score(indices[r.prompt], r) for r in rolls]  # [2n]: a, b, a, b, ...
            pairs = list(zip(program[0::2], program[1::2], prob_a, strict=True))
            stats["program_ties"] = statistics.fmean(a == b for a, b, _ in pairs)
            followed = [a != b and p != 0.5 and (a > b) == (p > 0.5) for a, b, p in pairs]
            stats["program_followed"] = statistics.fmean(followed)
        return {k: v.to(self.device) for k, v in batch.items()}, stats
