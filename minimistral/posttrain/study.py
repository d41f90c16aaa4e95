"""What post-training is measured by: held-out pass@k, response length, repetition, endings (paper §4, Table 5).

A response is graded on its answer: the text after ``[/THINK]`` (reasoning) or the whole response
(instruct), checked by the task's own checker (``tasks.reward``). A response that never writes
``</s>`` within the length limit scores 0.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

from minimistral.arch.hub import from_pretrained
from minimistral.data.tokenizer import Tokenizer, load_tokenizer
from minimistral.evaluate.cache import cached
from minimistral.files import read_csv, write_csv, write_json
from minimistral.paths import results_dir
from minimistral.posttrain.chat import encode_prompt, split_response
from minimistral.posttrain.rollouts import SAMPLING_VERSION, Rollout, pass_at_k, repetition, sample
from minimistral.posttrain.rubrics import RubricPrompt, rubric_score
from minimistral.posttrain.tasks import Problem, reward
from minimistral.scales import Scale, get_scale
from minimistral.train import CHECKPOINT, read_metrics


def grade(tokenizer: Tokenizer, item: Problem | RubricPrompt, rollout: Rollout, thinking: bool = True) -> float:
    """The reward of one response: a problem's checker on its answer, or the fraction of a rubric prompt's
    items the answer meets; 0 if the response never ended."""
    parts = split_response(tokenizer, rollout.ids, thinking)
    if not parts["ended"]:
        return 0.0
    return reward(item, parts["answer"]) if isinstance(item, Problem) else rubric_score(item.items, parts["answer"])


def held_out_scores(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    problems: Sequence[Problem | RubricPrompt],
    samples: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    thinking: bool = True,
    seed: int = 0,
    desc: str | None = None,
) -> list[dict]:
    """Per item: ``task`` (``rubric`` for a rubric prompt), mean ``reward``, ``correct`` (full reward) of ``samples``,
    mean ``length`` (tokens), share ``ended``, ``repetition``, and the ``rewards`` of every sample."""
    prompts = [encode_prompt(tokenizer, p.chat()[:1], think=thinking) for p in problems]
    rollouts = sample(model, prompts, samples, max_new_tokens, temperature, seed, desc=desc)
    rows = []
    for i, problem in enumerate(problems):
        mine = rollouts[i * samples : (i + 1) * samples]
        rewards = [grade(tokenizer, problem, r, thinking) for r in mine]
        rows.append({
            "task": problem.task if isinstance(problem, Problem) else "rubric",
            "reward": statistics.fmean(rewards),
            "correct": sum(r == 1.0 for r in rewards),
            "samples": samples,
            "length": statistics.fmean(len(r.ids) for r in mine),
            "ended": statistics.fmean(r.ended for r in mine),
            "repetition": statistics.fmean(repetition(r.ids) for r in mine),
            "rewards": rewards,
        })  # fmt: skip
    return rows


def summarize(rows: Sequence[dict], k: int) -> list[dict]:
    """Per task and over the STEM tasks: mean reward, pass@1 (mean over samples), pass@k, length, ended, repetition."""
    out = []
    for task in [*dict.fromkeys(r["task"] for r in rows), "stem"]:
        mine = [r for r in rows if r["task"] == task or (task == "stem" and r["task"] != "rubric")]
        if not mine:
            continue
        out.append({
            "task": task,
            "reward": round(statistics.fmean(r["reward"] for r in mine), 4),
            "pass@1": round(statistics.fmean(r["correct"] / r["samples"] for r in mine), 4),
            f"pass@{k}": round(statistics.fmean(pass_at_k(r["samples"], r["correct"], k) for r in mine), 4),
            "length": round(statistics.fmean(r["length"] for r in mine), 1),
            "ended": round(statistics.fmean(r["ended"] for r in mine), 4),
            "repetition": round(statistics.fmean(r["repetition"] for r in mine), 4),
        })  # fmt: skip
    return out


def bootstrap_ci(
    before: Sequence[float], after: Sequence[float], n: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """The mean paired gain ``after - before`` over prompts and its percentile bootstrap interval (prompts resampled).

    A gain counts as larger than its noise when the interval excludes 0.
    """
    if len(before) != len(after) or not before:
        raise ValueError(f"need two equally long, non-empty score lists, got {len(before)} and {len(after)}")
    return bootstrap_mean([b - a for a, b in zip(before, after, strict=True)], n, seed, level)


def bootstrap_mean(values: Sequence[float], n: int = 2000, seed: int = 0, level: float = 0.95):
    """The mean of per-prompt ``values`` and its percentile bootstrap interval (prompts resampled ``n`` times)."""
    if not values:
        raise ValueError("bootstrap_mean: no values")
    x = torch.tensor(values, dtype=torch.float64)  # [prompts]
    g = torch.Generator().manual_seed(seed)
    means = x[torch.randint(len(x), (n, len(x)), generator=g)].mean(-1)  # [n]
    lo, hi = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)).tolist()
    return x.mean().item(), lo, hi


# ----------------------------------------------------------------------------- the study of the driver's run
CHILD_MODELS = ("tiny-14b", "tiny-8b", "tiny-3b")
STAGES = {"base": "vision", "sft": "sft", "stem-rl": "stem-rl", "general-rl": "general-rl"}  # stage -> directory
ABLATION_CHILD = "tiny-3b"


def stage_checkpoint(root: Path, model: str, stage: str) -> Path:
    """Where the driver keeps ``model``'s checkpoint after ``stage`` (the teacher: ``teacher-sft``)."""
    name = "teacher-sft" if model == "tiny-24b" else f"{model}-{STAGES[stage]}"
    return root / name / CHECKPOINT


def checkpoint_scores(
    checkpoint: Path, items, samples: int, max_new_tokens: int, device=None, thinking: bool = True
) -> list[dict]:
    """:func:`held_out_scores` of a checkpoint, cached by its content (``thinking=False``: an Instruct model)."""
    spec = {"items": [x.chat()[0]["content"] for x in items], "samples": samples, "tokens": max_new_tokens}
    spec |= {"sampling": SAMPLING_VERSION} | ({} if thinking else {"thinking": False})

    def compute():
        model = from_pretrained(checkpoint, device=device)
        return held_out_scores(model, load_tokenizer(checkpoint), items, samples, max_new_tokens, thinking=thinking,
                               desc=f"scoring {Path(checkpoint).parent.name}")  # fmt: skip

    return cached(checkpoint, "posttrain", spec, compute)


def rl_curves(root: Path) -> dict[str, dict[str, list[dict]]]:
    """Per child and RL stage (``stem``, ``general``), the GRPO iterations the driver logged (reward, groups with
    no signal, length, truncation), read from the stage's ``metrics.jsonl``."""
    curves = {}
    for child in CHILD_MODELS:
        for stage in ("stem", "general"):
            rows = read_metrics(stage_checkpoint(root, child, f"{stage}-rl").parent)
            curves.setdefault(child, {})[stage] = [r for r in rows if "reward" in r]
    return curves


# (from stage, to stage, items): each RL stage on the items it trains for, and the whole of GRPO on both
GAINS = (("sft", "stem-rl", "stem"), ("stem-rl", "general-rl", "rubric"), ("sft", "general-rl", "stem"),
         ("sft", "general-rl", "rubric"))  # fmt: skip


def gain(scores: dict, model: str, before: str, after: str, items: str) -> dict:
    """``model``'s paired gain from stage ``before`` to ``after`` on the held-out ``items`` ("stem" or "rubric"),
    with its bootstrap interval over prompts (:func:`bootstrap_ci`)."""
    a, b = ([r["reward"] for r in scores[(model, st)] if (r["task"] == "rubric") == (items == "rubric")]
            for st in (before, after))  # fmt: skip
    mean, lo, hi = bootstrap_ci(a, b)
    return {"model": model, "items": items, "from": before, "to": after, "before": round(statistics.fmean(a), 4),
            "after": round(statistics.fmean(b), 4), "gain": round(mean, 4), "ci_low": round(lo, 4),
            "ci_high": round(hi, 4)}  # fmt: skip


def table5(scores: Sequence[dict], k: str, stage: str = "general-rl") -> list[dict]:
    """The Table 5 analogue from ``posttrain_scores`` rows: per STEM task (and over all), column ``k`` (``"pass@16"``)
    of each child's model after ``stage`` (the Reasoning model), in percent, largest child first."""
    mine = [r for r in scores if r["stage"] == stage and r["task"] != "rubric"]
    return [{"task": task} | {r["model"]: f"{100 * float(r[k]):.1f}" for r in mine if r["task"] == task}
            for task in dict.fromkeys(r["task"] for r in mine)]  # fmt: skip


def run_posttrain_study(root: Path, scale: str | Scale, device=None) -> dict[str, list[dict]]:
    """Every Reasoning stage of every child on the held-out items, GRPO's gains with their intervals, the
    generation-limit raise, and tiny-3b's SFT with and without the teacher; CSVs in ``results_dir``."""
    from minimistral.posttrain.pipeline import posttrain_data, sft_child

    s = get_scale(scale)
    p = s.posttrain
    done, names = root / "posttrain-study" / "done.json", ("posttrain_scores", "posttrain_gains", "posttrain_limits")
    files = {n: results_dir(s.name) / f"{n}.csv" for n in names}
    if done.is_file() and all(f.is_file() for f in files.values()):  # --from an earlier step deletes `done`
        return {n: read_csv(f) for n, f in files.items()}
    teacher = stage_checkpoint(root, "tiny-24b", "sft")
    data = posttrain_data(str(teacher), s.name)
    items = data.stem["test"] + data.rubrics["test"]
    runs = [("tiny-24b", "teacher SFT", teacher)]
    runs += [(c, stage, stage_checkpoint(root, c, stage)) for c in CHILD_MODELS for stage in STAGES]
    plain = sft_child(stage_checkpoint(root, ABLATION_CHILD, "base"), teacher, root / "posttrain-study" / "sft-ntp",
                      s, ntp_weight=1.0, device=device)  # fmt: skip
    runs.append((ABLATION_CHILD, "sft, next-token loss", plain))
    scores = {(m, st): checkpoint_scores(ck, items, p.samples, p.general_tokens, device) for m, st, ck in runs}
    table = [{"model": m, "stage": st} | r for (m, st), rows in scores.items() for r in summarize(rows, p.samples)]
    gains = [gain(scores, child, before, after, kind) for child in CHILD_MODELS for before, after, kind in GAINS]
    limits = []
    for child in CHILD_MODELS:
        ck = stage_checkpoint(root, child, "stem-rl")
        for tokens in (p.stem_tokens, p.general_tokens):
            rows = summarize(checkpoint_scores(ck, data.stem["test"], p.samples, tokens, device), p.samples)[-1]
            limits.append({"model": child, "limit": tokens, "pass@1": rows["pass@1"], "ended": rows["ended"],
                           "length": rows["length"]})  # fmt: skip
    tables = {"posttrain_scores": table, "posttrain_gains": gains, "posttrain_limits": limits}
    for name, rows in tables.items():
        write_csv(rows, files[name])
    write_json({"tables": [f.name for f in files.values()]}, done)
    return tables
