"""The paper's result tables (``data/paper``, docs/paper.md §6) as one kind of record, with parameter counts.

Tables 2 and 4 have one row per model and one column per benchmark; Tables 3 and 5 the other way
round. :func:`paper_scores` reads any of them into records ``{benchmark, model, family, params, exact,
score}`` (a blank cell, such as Qwen3 14B's MM MTBench in Table 4, gives no record). A model's
parameters are the exact language-model count for Ministral 3 and Mistral Small 3.1 (``CONFIGS`` and
``count_parameters``, docs/paper.md §1), and the nominal size in its name for every other family.

:func:`fraction_of_teacher` turns a Table-3 layout (one row per evaluation, one column per model) into
each child's score relative to its teacher's, so the paper's children and our tiny ones read on one axis;
:func:`size_table` sets our cascade's sizes and held-out scores beside the real family's sizes.
The ``*_table``/``table_text`` functions return plain text for the notebooks to print.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from itertools import pairwise

from minimistral.arch.config import CONFIGS, TINY_OF_REAL
from minimistral.arch.params import count_parameters
from minimistral.files import format_table, read_csv
from minimistral.paths import paper_dir

TABLES = {  # paper table -> file in data/paper
    "table2": "table2_base_vs_peers.csv",
    "table3": "table3_base_vs_teacher.csv",
    "table4": "table4_instruct.csv",
    "table5": "table5_reasoning.csv",
}
READOFFS = "figures_approx_readoffs.csv"  # numbers read off the paper's figures, approximate
FAMILIES = (  # (family, how the paper spells it), the first match wins: Qwen3-VL before Qwen 3
    ("Ministral 3", r"^Ministral 3\b"),
    ("Mistral Small 3.1", r"^Mistral Small 3\.1\b"),
    ("Qwen3-VL", r"^Qwen3-VL\b"),
    ("Qwen 3", r"^Qwen ?3\b"),
    ("Gemma 3", r"^Gemma ?3\b"),
)
EXACT = {"Ministral 3": "ministral-3-{size}b", "Mistral Small 3.1": "mistral-small-3.1-{size}b"}  # CONFIGS names


@dataclass(frozen=True)
class PaperModel:
    """A model as a paper table names it, with its family and parameter count."""

    name: str
    family: str
    params: int  # the exact language-model count if ``exact``, else the nominal size from the name
    exact: bool


@cache
def paper_model(name: str) -> PaperModel:
    """Family and parameters of a model named as in the paper's tables (``"Gemma3-12B-Instruct"``)."""
    family = next((f for f, pattern in FAMILIES if re.match(pattern, name)), None)
    size = re.search(r"(\d+(?:\.\d+)?)\s?B\b", name)
    if family is None or size is None:
        raise ValueError(f"{name!r}: no known family or no size like '8B' in the name")
    if family in EXACT:
        config = EXACT[family].format(size=size.group(1))
        return PaperModel(name, family, count_parameters(CONFIGS[config]), exact=True)
    return PaperModel(name, family, round(float(size.group(1)) * 1e9), exact=False)


def read_paper_table(table: str) -> list[dict]:
    """The rows of one of the paper's tables (``"table2"`` ... ``"table5"``) as printed, strings."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; known: {', '.join(TABLES)}")
    return read_csv(paper_dir() / TABLES[table])


def paper_scores(table: str) -> list[dict]:
    """One record per (benchmark, model) of a paper table, in the table's order; blank cells are left out."""
    rows = read_paper_table(table)
    key = next(iter(rows[0]))  # "model" (a row per model) or "evaluation" / "benchmark" (a row per benchmark)
    out = []
    for row in rows:
        for col, value in list(row.items())[1:]:
            benchmark, model = (col, row[key]) if key == "model" else (row[key], col)
            if value.strip():
                m = paper_model(model)
                out.append(dict(benchmark=benchmark, model=model, family=m.family, params=m.params, exact=m.exact))
                out[-1]["score"] = float(value)
    return out


def read_offs(figure: str) -> list[dict]:
    """The rows of one figure in ``figures_approx_readoffs.csv`` (``"fig5_gpqa_vs_tokens"``), numbers as floats.

    Every number there was read off a plot by eye: approximate, never printed in the paper.
    """
    rows = [r for r in read_csv(paper_dir() / READOFFS) if r["figure"] == figure]
    if not rows:
        raise ValueError(f"no read-offs for figure {figure!r}")
    return [{k: _number(v) if k in ("x", "y") else v for k, v in r.items()} for r in rows]


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def lower_is_better(evaluation: str, teacher: float) -> bool:
    """Whether a smaller value is better: losses ("lower is better" in the name), and negative log-probabilities,
    read as the loss $-\\log p$ they are the negative of."""
    return "lower is better" in evaluation.lower() or teacher < 0


def fraction_of_teacher(rows: list[dict], teacher: str, key: str = "evaluation") -> list[dict]:
    r"""Each child's score relative to the teacher's, per evaluation of a Table-3 layout (string or float cells).

    The fraction is oriented so that 1 is the teacher's level and below 1 is worse:
    $s_{child} / s_{teacher}$ for scores, $s_{teacher} / s_{child}$ for losses (:func:`lower_is_better`),
    i.e. the ratio of the losses. Evaluations where the teacher scores 0 have no fraction and are left out.
    Records: ``{evaluation, model, score, teacher, fraction}``.
    """
    out = []
    for row in rows:
        t = float(row[teacher])
        if t == 0:
            continue
        for model, value in row.items():
            if model in (key, teacher):
                continue
            s = float(value)
            frac = t / s if lower_is_better(row[key], t) else s / t
            out.append(dict(evaluation=row[key], model=model, score=s, teacher=t, fraction=frac))
    return out


def mean_fraction(records: list[dict]) -> dict[str, float]:
    """The mean of :func:`fraction_of_teacher`'s fractions per model, models in their first-seen order."""
    by_model: dict[str, list[float]] = {}
    for r in records:
        by_model.setdefault(r["model"], []).append(r["fraction"])
    return {m: sum(v) / len(v) for m, v in by_model.items()}


def differences(records: list[dict], model: str, rival: str) -> dict[str, float]:
    """``model``'s score minus ``rival``'s on every benchmark of :func:`paper_scores` records that both have."""
    score = {(r["benchmark"], r["model"]): r["score"] for r in records}
    benchmarks = dict.fromkeys(r["benchmark"] for r in records)
    return {
        b: round(score[b, model] - score[b, rival], 4)
        for b in benchmarks
        if (b, model) in score and (b, rival) in score
    }


def table_text(rows: list[dict], columns: tuple[str, ...] | None = None) -> str:
    """Rows (a paper table, read-offs, or one of our CSVs) as plain text, the header first; numbers that were
    read as floats are written back short (``1000.0`` -> ``1000``, ``0.770`` -> ``0.77``)."""
    cols = list(columns or rows[0])
    cell = lambda v: f"{v:g}" if isinstance(v, float) else str(v)
    return format_table([tuple(cols), *[tuple(cell(r[c]) for c in cols) for r in rows]])


def differences_table(records: list[dict], pairs: list[tuple[str, str]]) -> str:
    """:func:`differences` for each (model, rival) pair, one row per pair, in points (``+`` = model ahead)."""
    benchmarks = list(dict.fromkeys(r["benchmark"] for r in records))
    rows = [("model - rival", *benchmarks)]
    for model, rival in pairs:
        d = differences(records, model, rival)
        rows.append((f"{model} - {rival}", *(f"{d[b]:+.1f}" if b in d else "" for b in benchmarks)))
    return format_table(rows)


def fraction_table(records: list[dict]) -> str:
    """:func:`fraction_of_teacher` records as text: one row per evaluation, one column per child, then the mean."""
    evals = list(dict.fromkeys(r["evaluation"] for r in records))
    models = list(dict.fromkeys(r["model"] for r in records))
    frac = {(r["evaluation"], r["model"]): r["fraction"] for r in records}
    rows = [("child / teacher", *models)]
    rows += [(e, *(f"{frac[e, m]:.3f}" for m in models)) for e in evals]
    means = mean_fraction(records)
    rows.append(("mean", *(f"{means[m]:.3f}" for m in models)))
    return format_table(rows)


def base_rows(stages: list[dict]) -> list[dict]:
    """The parent and each child's Base checkpoint (its long-context stage) from ``cascade_stages.csv`` rows."""
    return [r for r in stages if r["stage"] in ("parent", "long")]


def size_table(stages: list[dict]) -> str:
    """Our parent and Base children: parameters, as a fraction of the parent's beside the real family's
    fraction (``TINY_OF_REAL``, exact counts), and held-out bits per byte (all sources) with the rise over
    the parent's."""
    rows = [("ours", "params", "of parent", "paper model", "of parent", "bits/byte", "vs parent")]
    base = base_rows(stages)
    parent = base[0]
    real_parent = count_parameters(CONFIGS[TINY_OF_REAL[parent["model"]]])
    for r in base:
        tiny = r["model"].removesuffix("-long")
        real = TINY_OF_REAL[tiny]
        rise = float(r["overall_bpb"]) - float(parent["overall_bpb"])
        rows.append(
            (
                tiny,
                f"{int(r['params']):,}",
                f"{int(r['params']) / int(parent['params']):.3f}",
                real,
                f"{count_parameters(CONFIGS[real]) / real_parent:.3f}",
                f"{float(r['overall_bpb']):.4f}",
                f"{rise:+.4f}",
            )
        )
    return format_table(rows)


def size_steps(stages: list[dict]) -> list[tuple[str, str, float]]:
    """``(larger, smaller, rise)`` for each step down our cascade (parent -> tiny-14b -> tiny-8b -> tiny-3b, Base):
    the rise in held-out bits per byte (all sources) from the larger model to the next smaller one."""
    base = [(r["model"].removesuffix("-long"), float(r["overall_bpb"])) for r in base_rows(stages)]
    return [(a, b, round(y - x, 4)) for (a, x), (b, y) in pairwise(base)]


def falls_with_size(rows: list[dict]) -> int:
    """How many rows of a table (a label column, then one column per model from the largest to the smallest)
    score no higher for each smaller model: the order Tables 3 and 5 mostly show."""
    falls = 0
    for row in rows:
        scores = [float(v) for v in list(row.values())[1:]]
        falls += all(a >= b for a, b in pairwise(scores))
    return falls
