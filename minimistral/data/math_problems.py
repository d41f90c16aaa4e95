"""Procedural math with worked solutions from reasoning-gym: the pretraining mixture's math source (paper §3).

Each problem is ``MATH_TEMPLATE`` (question, worked solution, answer). Training and validation
problems come from different seeds and their questions are disjoint.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

# ----------------------------------------------------------------------------- math

# Problems per cycle of the math stream, from easy to hard. The training stream is shuffled,
# so this is a fixed mix of difficulties (half of the problems are GSM8K-style), not an ordering.
MATH_CURRICULUM: dict[str, int] = {
    "chain_sum": 1,
    "basic_arithmetic": 1,
    "simple_equations": 1,
    "leg_counting": 1,
    "gsm_symbolic": 4,
}
# One math document. The model is later prompted with ``math_prompt(question)`` and graded on
# the first ``Answer:`` line it writes (``math_answer``).
MATH_TEMPLATE = "Question: {question}\nSolution: {solution}\nAnswer: {answer}"
MAX_PROBLEMS_PER_TASK = 100_000  # per split; reasoning-gym seeds item i with Random(seed + i)
_SPLIT_SEEDS = {"train": 0, "validation": 50_000_000}


def format_math(question: str, solution: str, answer: str) -> str:
    return MATH_TEMPLATE.format(question=question.strip(), solution=solution.strip(), answer=answer.strip())


def math_prompt(question: str) -> str:
    """What the model sees when asked a question: the document up to and including ``Solution:``."""
    return MATH_TEMPLATE.split("{solution}")[0].format(question=question.strip()).rstrip()


def math_answer(text: str) -> str | None:
    """The answer in a math document or a model's continuation: the first ``Answer:`` line, stripped."""
    match = re.search(r"^Answer:(.*)$", text, re.M)
    return match.group(1).strip() if match else None


def math_seed(seed: int, split: str, task: str) -> int:
    """Disjoint seed ranges: item i of (split, task) uses Random(math_seed + i), i < MAX_PROBLEMS_PER_TASK."""
    task_index = list(MATH_CURRICULUM).index(task)
    return seed * 100_000_000 + _SPLIT_SEEDS[split] + task_index * 1_000_000


def _chain_sum_steps(expression: str) -> str:
    """``8 - 3 + 4`` -> ``8 - 3 = 5`` / ``5 + 4 = 9``: left to right, one operation per line."""
    first, *rest = expression.split()
    total, lines = int(first), []
    for op, term in zip(rest[::2], rest[1::2], strict=True):
        new = total + int(term) if op == "+" else total - int(term)
        lines.append(f"{total} {op} {term} = {new}")
        total = new
    return "\n".join(lines) if lines else f"{total}"


def _equation_steps(equation: str, variable: str) -> str | None:
    """``2*x + 3 = 9`` -> ``2*x = 6`` / ``x = 6 / 2 = 3``; None unless the equation is linear in the variable."""
    import sympy

    x = sympy.Symbol(variable)
    lhs, rhs = (sympy.sympify(side, locals={variable: x}) for side in equation.split("="))
    poly = sympy.Poly(lhs - rhs, x)
    if poly.degree() != 1:  # reasoning-gym occasionally emits '0 = 0'
        return None
    a, b = (int(c) for c in poly.all_coeffs())  # a*x + b = 0
    if a == 1:
        return f"{equation}\n{variable} = {-b}"
    return f"{equation}\n{a}*{variable} = {-b}\n{variable} = {-b} / {a} = {sympy.Rational(-b, a)}"


def _leg_steps(animals: Mapping[str, int]) -> str:
    from reasoning_gym.arithmetic.leg_counting import ANIMALS

    lines = [f"{name}: {n} * {ANIMALS[name]} = {n * ANIMALS[name]}" for name, n in animals.items()]
    total = " + ".join(str(n * ANIMALS[name]) for name, n in animals.items())
    return "\n".join([*lines, f"{total} = {sum(n * ANIMALS[name] for name, n in animals.items())}"])


def math_solution(task: str, item: Mapping) -> str | None:
    """A worked solution for one reasoning-gym item (None: skip the item, it is degenerate)."""
    meta = item["metadata"]
    if task == "gsm_symbolic":  # the dataset's own worked solution, without its final '#### n' line
        return re.sub(r"\n?#### .*$", "", meta["answer_cot"].strip())
    if task == "chain_sum":
        return _chain_sum_steps(meta["expression"])
    if task == "basic_arithmetic":
        return f"{meta['expression'].strip()} = {item['answer']}"
    if task == "simple_equations":
        return _equation_steps(meta["equation"], meta["variable"])
    if task == "leg_counting":
        return _leg_steps(meta["animals"])
    raise ValueError(f"no worked solution for task {task!r}")


def _task_problems(task: str, split: str, seed: int) -> Iterator[dict[str, str]]:
    """The problems of one task in a fixed order (index i depends only on task, split, seed and i)."""
    import reasoning_gym

    dataset = reasoning_gym.create_dataset(task, size=MAX_PROBLEMS_PER_TASK, seed=math_seed(seed, split, task))
    for i in range(MAX_PROBLEMS_PER_TASK):
        item = dataset[i]
        solution = math_solution(task, item)
        if solution is None:
            continue
        yield {
            "source": "math",
            "doc_id": f"math/{split}/{task}/{i}",
            "text": format_math(item["question"], solution, item["answer"]),
            "task": task,
            "question": item["question"].strip(),
            "answer": str(item["answer"]).strip(),
        }


def iter_math(split: str, seed: int = 0) -> Iterator[dict[str, str]]:
    """The math stream of a split: the tasks interleaved in cycles of ``MATH_CURRICULUM``."""
    streams = {task: _task_problems(task, split, seed) for task in MATH_CURRICULUM}
    cycle = [task for task, count in MATH_CURRICULUM.items() for _ in range(count)]
    while True:
        for task in cycle:
            yield next(streams[task])


def math_validation(n: int, seed: int, train_questions: set[str]) -> list[dict[str, str]]:
    """``n`` validation problems: another seed, and no question that occurs in training (or twice)."""
    seen, out = set(train_questions), []
    for problem in iter_math("validation", seed):
        if len(out) == n:
            break
        if problem["question"] not in seen:
            seen.add(problem["question"])
            out.append(problem)
    return out
