"""The paper's claims about Cascade Distillation, tested at equal tokens (paper §3.1; docs/paper.md §3).

The paper: pruning plus logit distillation from the parent gives strong small models
with far less compute and data than training them from scratch; forward KL on logits
alone beats mixing in the next-token loss. We test each claim on ``tiny-3b`` (the last
child, the one the cascade helps most), every run seeing exactly the tokens of the
cascade's tiny-3b Short stage (its budget ``B``) unless said otherwise:

=============  ====================================================================
``cascade``    the cascade's tiny-3b Short: pruned from tiny-8b Short, forward KL
``scratch``    tiny-3b from random initialisation, next-token loss, ``B`` tokens
``scratch_4x`` the same for ``4 B`` tokens: how many tokens scratch needs to catch up
``pruned_ntp`` the cascade's tiny-3b Init, next-token loss only (the teacher's value)
``kd_ntp``     the cascade's tiny-3b Init, half forward KL + half next-token loss
``direct``     the parent pruned straight to tiny-3b, then forward KL (no cascade)
=============  ====================================================================

The gap between ``cascade`` and ``kd_ntp`` is a few hundredths of a nat, so both are repeated
with ``CascadeScale.claim_seeds`` data orders (``cascade_seed1``: the same tiny-3b Init distilled
exactly as the cascade's Short stage, data order seed 1; ``kd_ntp_seed1`` likewise).

Every run trains on the tiny-3b Short slice of the stream (``scratch_4x`` on the whole
stream from its start, which repeats nothing until 4B exceeds it), validates with the
next-token loss on the same held-out windows, and is a resumable engine run under
``<cascade root>/claims/<name>``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from minimistral.arch.config import TINY_CONFIGS
from minimistral.arch.hub import from_pretrained
from minimistral.arch.model import Ministral3
from minimistral.cascade.pipeline import Cascade, Stage, calibration, child_slice, prune_to, train_config
from minimistral.distill import DistillLoss, distill
from minimistral.train import CHECKPOINT, Trainer, Windows, finished, lm_loss, read_metrics

CHILD = "tiny-3b"
RUNS = ("scratch", "scratch_4x", "pruned_ntp", "kd_ntp", "direct")
SCRATCH_MULTIPLE = 4
KD_NTP_WEIGHT = 0.5


SEEDED = ("cascade", "kd_ntp")  # the comparison whose gap is under 0.05 nats, repeated over seeds


def run_dir(cascade: Cascade, name: str) -> Path:
    return cascade.root / "claims" / name


def seeded_runs(cascade: Cascade) -> list[str]:
    """The extra runs of ``SEEDED`` with data order seeds 1 .. claim_seeds - 1 (seed 0 is the run itself)."""
    return [f"{name}_seed{s}" for s in range(1, cascade.scale.claim_seeds) for name in SEEDED]


def budget_tokens(cascade: Cascade) -> int:
    """``B``: the tokens of the cascade's tiny-3b Short stage."""
    cfg = train_config("short", cascade.scale)
    return cfg.steps * cfg.batch_size * (cascade.data.short.shape[1] - 1)


def scratch_model(seed: int = 0) -> Ministral3:
    """tiny-3b from random weights, with the short-context positions the cascade's Short stage has."""
    parent_rope = {k: getattr(TINY_CONFIGS["tiny-24b"], k) for k in _ROPE}
    torch.manual_seed(seed)
    return Ministral3(TINY_CONFIGS[CHILD].replace(**parent_rope))


_ROPE = ("yarn_factor", "original_max_position_embeddings", "llama_4_scaling_beta", "max_position_embeddings")


def run_claim(cascade: Cascade, name: str) -> Path:
    """Train claim run ``name`` (resuming if interrupted); returns its checkpoint directory."""
    base, _, seed = name.partition("_seed")
    if name not in RUNS and not (base in SEEDED and seed.isdigit()):
        raise ValueError(f"unknown claim run {name!r}; choose from {', '.join(RUNS)} or <{'|'.join(SEEDED)}>_seed<N>")
    cfg = dataclasses.replace(train_config("short", cascade.scale), seed=int(seed or 0))
    data = Windows(child_slice(CHILD, "short", cascade.scale, cascade.data))
    out = run_dir(cascade, name)
    if finished(out, cfg.steps * (SCRATCH_MULTIPLE if name == "scratch_4x" else 1)):
        return out / CHECKPOINT
    common = dict(
        val_data=Windows(cascade.data.val),
        extra_files={"tokenizer.json": cascade.corpus.tokenizer_path},
        device=cascade.device,
    )
    desc = f"claim {name} ({cascade.scale_name})"
    init = cascade.checkpoint(Stage(CHILD, "init"))
    if name in ("scratch", "scratch_4x", "pruned_ntp"):
        if name == "scratch_4x":
            steps = SCRATCH_MULTIPLE * cfg.steps
            stream = cascade.data.short
            reps = -(-steps * cfg.batch_size // stream.shape[0])  # the stream repeats only past its end
            data = Windows(stream.repeat(reps, 1)[: steps * cfg.batch_size])
            cfg = dataclasses.replace(cfg, steps=steps, eval_every=max(1, steps // 16))
        model = from_pretrained(init) if name == "pruned_ntp" else scratch_model()
        Trainer(model, cfg, data, out, loss_fn=lm_loss, desc=desc, **common).fit()
        return out / CHECKPOINT
    if base == "cascade":  # the cascade's own Short stage, with another data order
        return cascade.distill_stage(Stage(CHILD, "short"), lambda: from_pretrained(init), out, desc, seed=cfg.seed)
    if base == "kd_ntp":
        student = from_pretrained(init)
        loss = DistillLoss(cascade.parent, ntp_weight=KD_NTP_WEIGHT, temperature=cascade.scale.kd_temperature)
    else:  # direct: the parent pruned straight to tiny-3b with the same calibration windows
        calib = [b.to(cascade.device) for b in calibration(CHILD, cascade.scale, cascade.data)]
        student = prune_to(from_pretrained(cascade.parent_checkpoint, device=cascade.device), CHILD, calib)
        loss = DistillLoss(cascade.parent, temperature=cascade.scale.kd_temperature)
    return distill(student, cascade.parent, data, out, cfg, loss=loss, val_loss_fn=lm_loss, desc=desc, **common)


def run_claims(cascade: Cascade) -> dict[str, Path]:
    """Every claim run, the seeded repeats included; needs the cascade's tiny-3b Init."""
    if not cascade.is_done(Stage(CHILD, "short")):
        raise FileNotFoundError(f"{cascade.checkpoint(Stage(CHILD, 'short'))}: run the cascade first")
    return {name: run_claim(cascade, name) for name in (*RUNS, *seeded_runs(cascade))}


def validation_curve(out: Path) -> list[tuple[int, float]]:
    """``(tokens, held-out next-token loss)`` at every validation of a run, from its metrics log."""
    records = read_metrics(out)
    tokens_at = {r["step"]: r["tokens"] for r in records if "tokens" in r}
    return [(tokens_at.get(r["step"], 0), r["val_loss"]) for r in records if "val_loss" in r]


def tokens_to_match(curve: list[tuple[int, float]], target: float) -> float | None:
    """The first token count at which ``curve`` reaches ``target`` (linear between validations), else None."""
    previous = None
    for tokens, loss in curve:
        if loss <= target:
            if previous is None:
                return float(tokens)
            (t0, l0) = previous
            return t0 + (tokens - t0) * (l0 - target) / (l0 - loss)
        previous = (tokens, loss)
    return None
