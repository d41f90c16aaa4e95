"""What the PWRM and ODPO are measured by (paper §4: Figure 6, Table 4, and the Figure 5 analogue's Instruct models).

* The PWRM on held-out pairs (prompts it never trained on, ranked by the rubric judge): agreement with the
  judge, position bias, and calibration (expected calibration error with the raw logit and with the fitted
  temperature; the reliability diagram's bins).
* The Figure 6 analogue: each child's Reasoning model before and after ODPO, and its Instruct model after
  SFT and after ODPO, on the held-out rubric prompts, as a win rate judged by the programmatic judge (the
  rubric's fraction met; a response that never ends scores 0), never by the PWRM: every sample after
  against every sample before, per prompt, then the mean over prompts with a bootstrap interval.
* beta rescaling: ODPO on one Reasoning model with the loss divided by beta (the default) and without.
* The Table 4 analogue: each child's Instruct model on the held-out rubric prompts (Arena Hard / WildBench's
  stand-in), STEM problems answered at once (MATH maj@1's: the mean over samples is the expected maj@1),
  and image questions (MM MTBench's), after Instruct SFT and after ODPO.

-> ``data/results/odpo_pwrm.csv``, ``odpo_reliability.csv``, ``odpo_wins.csv``, ``odpo_scores.csv``,
``odpo_table4.csv``.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from minimistral.arch.hub import from_pretrained
from minimistral.files import read_csv, write_csv, write_json
from minimistral.paths import results_dir
from minimistral.posttrain.pwrm import (
    PairwiseRewardModel,
    expected_calibration_error,
    load_pairs,
    position_bias,
    reliability,
    symmetric_prob,
)
from minimistral.posttrain.study import CHILD_MODELS, bootstrap_mean, checkpoint_scores, summarize
from minimistral.scales import Scale, get_scale
from minimistral.train import CHECKPOINT, read_metrics

# model kind -> (stage before ODPO, stage after), directories of the driver's root; "thinking": a Reasoning model
RECIPES = {
    "Reasoning": ("general-rl", "reasoning-odpo", True),
    "Instruct": ("instruct-sft", "instruct-odpo", False),
}
BETA_CHILD = "tiny-8b"  # where ODPO runs again with a fixed beta


def odpo_curves(root: Path) -> dict[str, dict[str, list[dict]]]:
    """Per child and kind (``Instruct``, ``Reasoning``), the ODPO iterations the driver logged."""
    return {child: {kind: [r for r in read_metrics(root / f"{child}-{after}") if "confidence" in r]
                    for kind, (_, after, _) in RECIPES.items()} for child in CHILD_MODELS}  # fmt: skip


def pwrm_quality(judge: Path) -> tuple[dict, list[dict]]:
    """The PWRM ``judge`` (a checkpoint) on its held-out test pairs: agreement with the judge, position bias,
    ECE with T = 1 and with the fitted T, and the reliability bins with the fitted T (both orders of each pair)."""
    pairs = load_pairs(judge.parent / "pairs-test.jsonl")
    pwrm = PairwiseRewardModel(judge)
    temperature = pwrm.temperature
    z_ab, z_ba = pwrm.logits(pairs)  # [n] each: as shown, swapped
    labels = torch.tensor([p.label for p in pairs])  # [n], 1: a is better
    both_z, both_y = torch.cat([z_ab, z_ba]), torch.cat([labels, 1 - labels])  # [2n]
    p_ab, p_ba = torch.sigmoid(z_ab / temperature), torch.sigmoid(z_ba / temperature)
    symmetric = symmetric_prob(z_ab, z_ba, temperature)  # what ODPO reads
    summary = {
        "pairs": len(pairs),
        "temperature": round(temperature, 3),
        "agreement": round(float(((symmetric > 0.5) == (labels > 0.5)).float().mean()), 4),
        "agreement_one_order": round(float(((torch.sigmoid(both_z) > 0.5) == (both_y > 0.5)).float().mean()), 4),
        "position_bias": round(position_bias(p_ab, p_ba), 4),
        "ece_raw": round(expected_calibration_error(torch.sigmoid(both_z), both_y), 4),
        "ece_calibrated": round(expected_calibration_error(torch.sigmoid(both_z / temperature), both_y), 4),
    }
    bins = [{"temperature": t} | r for t, T in (("raw", 1.0), ("calibrated", temperature))
            for r in reliability(torch.sigmoid(both_z / T), both_y)]  # fmt: skip
    return summary, bins


def win_rate(before: list[float], after: list[float]) -> float:
    """P(a sample after beats a sample before) + 1/2 P(tie), over every pair of one prompt's samples."""
    wins = [(a > b) + 0.5 * (a == b) for a in after for b in before]
    return statistics.fmean(wins)


def wins(scores_before: list[dict], scores_after: list[dict], **row) -> dict:
    """The mean per-prompt win rate of ``after`` over ``before`` (rows of ``held_out_scores``), with its interval."""
    rates = [win_rate(b["rewards"], a["rewards"]) for b, a in zip(scores_before, scores_after, strict=True)]
    mean, lo, hi = bootstrap_mean(rates)
    before, after = (statistics.fmean(r["reward"] for r in s) for s in (scores_before, scores_after))
    return row | {"prompts": len(rates), "score_before": round(before, 4), "score_after": round(after, 4),
                  "win_rate": round(mean, 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4)}  # fmt: skip


def table4_row(child: str, stage: str, summary: list[dict], model, images) -> dict:
    """One Instruct model's row of the Table 4 analogue, in percent (image questions: exact match, greedy;
    empty for a model without a vision encoder)."""
    from minimistral.vision.train import answer_accuracy

    task = {r["task"]: r for r in summary}
    seeing = images is not None and hasattr(model, "vision_tower")
    accuracy = round(100 * statistics.fmean(answer_accuracy(model, images).values()), 1) if seeing else ""
    return {"model": child, "stage": stage, "rubric score": round(100 * task["rubric"]["reward"], 1),
            "STEM pass@1": round(100 * task["stem"]["pass@1"], 1), "image questions": accuracy}  # fmt: skip


def run_odpo_study(root: Path, scale: str | Scale, device=None) -> dict[str, list[dict]]:
    """The PWRM's quality, ODPO's win rates (and beta rescaling's), the Instruct models' scores (Table 4 analogue)."""
    from minimistral.posttrain.pipeline import odpo_stage, posttrain_data
    from minimistral.vision.study import vision_data

    s = get_scale(scale)
    p = s.posttrain
    names = ("odpo_pwrm", "odpo_reliability", "odpo_wins", "odpo_scores", "odpo_table4")
    done, files = root / "odpo-study" / "done.json", {n: results_dir(s.name) / f"{n}.csv" for n in names}
    if done.is_file() and all(f.is_file() for f in files.values()):  # --from an earlier step deletes `done`
        return {n: read_csv(f) for n, f in files.items()}
    judge = root / "pwrm" / CHECKPOINT
    summary, bins = pwrm_quality(judge)
    data = posttrain_data(str(judge), s.name)
    rubric, stem = data.rubrics["test"], data.stem["test"]

    def scores(checkpoint: Path, thinking: bool, items) -> list[dict]:
        return checkpoint_scores(checkpoint, items, p.odpo_samples, p.general_tokens, device, thinking=thinking)

    def ck(child: str, stage: str) -> Path:
        return root / f"{child}-{stage}" / CHECKPOINT

    win_rows = []
    for child in CHILD_MODELS:
        for kind, (before, after, thinking) in RECIPES.items():
            row = {"model": child, "kind": kind, "from": before, "to": after}
            win_rows.append(wins(*(scores(ck(child, st), thinking, rubric) for st in (before, after)), **row))
    fixed = odpo_stage(ck(BETA_CHILD, "general-rl"), judge, root / "odpo-study" / f"{BETA_CHILD}-fixed-beta", s,
                       thinking=True, rescale=False, device=device)  # fmt: skip
    row = {"model": BETA_CHILD, "kind": "Reasoning, fixed beta", "from": "general-rl", "to": "odpo, loss not / beta"}
    win_rows.append(wins(scores(ck(BETA_CHILD, "general-rl"), True, rubric), scores(fixed, True, rubric), **row))

    vision = root / "vision-parent" / "questions" / CHECKPOINT
    images = vision_data(str(vision), s.name).test if vision.is_dir() else None
    score_rows, table4 = [], []
    for child in CHILD_MODELS:
        for stage, thinking in (("instruct-sft", False), ("instruct-odpo", False), ("reasoning-odpo", True)):
            got = summarize(scores(ck(child, stage), thinking, stem) + scores(ck(child, stage), thinking, rubric),
                            p.odpo_samples)  # fmt: skip
            score_rows += [{"model": child, "stage": stage} | r for r in got]
            if not thinking:
                table4.append(table4_row(child, stage, got, from_pretrained(ck(child, stage), device=device), images))
    tables = {"odpo_pwrm": [summary], "odpo_reliability": bins, "odpo_wins": win_rows, "odpo_scores": score_rows,
              "odpo_table4": table4}  # fmt: skip
    for name, table in tables.items():
        write_csv(table, files[name])
    write_json({"tables": [f.name for f in files.values()]}, done)
    return tables
