"""What post-training is measured by: held-out pass@k, response length, repetition, endings (paper §4, Table 5).

A response is graded on its answer: the text after ``[/THINK]`` (reasoning) or the whole response
(instruct), checked by the task's own checker (``tasks.reward``). A response that never writes
``</s>`` within the length limit scores 0.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch

from minimistral.data.tokenizer import Tokenizer
from minimistral.posttrain.chat import THINK, encode_prompt, split_response
from minimistral.posttrain.rollouts import Rollout, pass_at_k, repetition, sample
from minimistral.posttrain.tasks import Problem, reward


def grade(tokenizer: Tokenizer, problem: Problem, rollout: Rollout, thinking: bool = True) -> float:
    """The reward of one response: the checker on its answer, 0 if it never ended."""
    parts = split_response(tokenizer, ([THINK] if thinking else []) + rollout.ids)
    return reward(problem, parts["answer"]) if parts["ended"] else 0.0


def stem_scores(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    problems: Sequence[Problem],
    samples: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    thinking: bool = True,
    seed: int = 0,
) -> list[dict]:
    """Per problem: ``task``, ``correct`` of ``samples``, mean ``length`` (tokens), ``ended``, ``repetition``."""
    prompts = [encode_prompt(tokenizer, p.chat()[:1], think=thinking) for p in problems]
    rollouts = sample(model, prompts, samples, max_new_tokens, temperature, seed)
    rows = []
    for i, problem in enumerate(problems):
        mine = rollouts[i * samples : (i + 1) * samples]
        rows.append({
            "task": problem.task,
            "correct": sum(grade(tokenizer, problem, r, thinking) == 1.0 for r in mine),
            "samples": samples,
            "length": statistics.fmean(len(r.ids) for r in mine),
            "ended": statistics.fmean(r.ended for r in mine),
            "repetition": statistics.fmean(repetition(r.ids) for r in mine),
        })  # fmt: skip
    return rows


def summarize(rows: Sequence[dict], k: int) -> list[dict]:
    """Per task and overall: pass@1 (mean over samples), pass@k, mean length, share ended, repetition."""
    out = []
    for task in [*dict.fromkeys(r["task"] for r in rows), "all"]:
        mine = [r for r in rows if task in ("all", r["task"])]
        out.append({
            "task": task,
            "pass@1": round(statistics.fmean(r["correct"] / r["samples"] for r in mine), 4),
            f"pass@{k}": round(statistics.fmean(pass_at_k(r["samples"], r["correct"], k) for r in mine), 4),
            "length": round(statistics.fmean(r["length"] for r in mine), 1),
            "ended": round(statistics.fmean(r["ended"] for r in mine), 4),
            "repetition": round(statistics.fmean(r["repetition"] for r in mine), 4),
        })  # fmt: skip
    return out
