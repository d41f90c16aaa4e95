"""Reasoning tasks with verifiable answers, for SFT on chains of thought and for STEM RL (paper §4).

The paper's STEM RL rewards math, code and visual reasoning with checkers. Ours are procedural
tasks from reasoning-gym (PyPI ``reasoning-gym``, Apache-2.0): each item has a question, an answer
and the task's own checker (``score_answer``); the worked solution (the chain of thought SFT
teaches) is written by ``data.math_problems.math_solution``. The configurations are small enough
that a tiny model can learn them (RL needs some reward to start from), not so small that it
starts at 100%. With two digits and two kinds of animals, the tiny parent after 60 SFT steps
solved 4% of held-out problems and tiny-3b 2%, and 80-96% of GRPO's groups had no correct
rollout (no signal): measured, so the sizes below are smaller:

====================  ========================================  ===================================
task                  question (configuration)                  chain of thought
====================  ========================================  ===================================
``chain_sum``         ``6 + 0 - 1 =`` (2-3 terms, 1 digit)      one operation per line
``leg_counting``      legs of 1-2 of 1-2 kinds of animals       legs per kind, then the sum
``simple_equations``  ``8*t - 9 = 23`` (values up to 9)         isolate the term, then divide
====================  ========================================  ===================================

Held out by seed and by question: the held-out items come from their own seeds, and no held-out
question occurs among the training items or in the pretraining corpus.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from functools import cache

from minimistral.data.math_problems import math_solution

STEM_TASKS: dict[str, dict] = {  # reasoning-gym task -> its configuration
    "chain_sum": dict(min_terms=2, max_terms=3, min_digits=1, max_digits=1),
    "leg_counting": dict(min_animals=1, max_animals=2, min_instances=1, max_instances=2),
    "simple_equations": dict(min_terms=2, max_terms=2, min_value=1, max_value=9),
}
_SEEDS = {"train": 900_000_000, "test": 950_000_000}  # + task index * 1e6; pretraining uses seeds < 1e8
_MAX_ITEMS = 1_000_000  # items per (task, split) seed range


@dataclass(frozen=True)
class Problem:
    task: str
    question: str
    answer: str
    solution: str  # the worked solution: the chain of thought
    entry: dict = field(compare=False, repr=False)  # the reasoning-gym item its checker reads

    def chat(self, thinking: bool = True) -> list[dict[str, str]]:
        """The problem as a conversation: the question, then the solution as thinking (if asked) and the answer."""
        reply = {"role": "assistant", "content": self.answer}
        return [{"role": "user", "content": self.question}, reply | ({"thinking": self.solution} if thinking else {})]


@cache
def _dataset(task: str, split: str):
    import reasoning_gym

    seed = _SEEDS[split] + list(STEM_TASKS).index(task) * _MAX_ITEMS
    return reasoning_gym.create_dataset(task, size=_MAX_ITEMS, seed=seed, **STEM_TASKS[task])


def reward(problem: Problem, answer: str) -> float:
    """1.0 when the task's own checker (reasoning-gym's ``score_answer``) gives full credit, else 0.0.

    The checkers give partial credit to an answer that merely contains the reference (``71`` for ``7``
    earns 0.5): a policy could collect it by writing many numbers, so only full credit counts.
    """
    return float(_dataset(problem.task, "train").score_answer(answer.strip(), problem.entry) == 1.0)


def problems(task: str, split: str, n: int, exclude: Collection[str] = ()) -> list[Problem]:
    """The first ``n`` items of ``task``'s ``split`` with a worked solution, distinct, none in ``exclude``."""
    if task not in STEM_TASKS:
        raise ValueError(f"task {task!r}: choose from {', '.join(STEM_TASKS)}")
    data, seen, out = _dataset(task, split), set(exclude), []
    for i in range(_MAX_ITEMS):
        if len(out) == n:
            return out
        item = data[i]
        question, solution = item["question"].strip(), math_solution(task, item)
        if solution is None or question in seen:
            continue
        seen.add(question)
        out.append(Problem(task, question, str(item["answer"]).strip(), solution, item))
    raise ValueError(f"task {task!r}: only {len(out)} distinct {split} items, asked for {n}")


def stem_split(n_train: int, n_test: int, pretraining_questions: Collection[str] = ()) -> dict[str, list[Problem]]:
    """``n_train`` training and ``n_test`` held-out problems per task; held out from training and pretraining."""
    test = [p for t in STEM_TASKS for p in problems(t, "test", n_test, exclude=pretraining_questions)]
    held = {p.question for p in test}
    train = [p for t in STEM_TASKS for p in problems(t, "train", n_train, exclude=held)]
    return {"train": train, "test": test}
