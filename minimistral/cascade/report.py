"""What the cascade produced, measured: every checkpoint's held-out scores, the Table 3 analogue,
the claims at equal tokens, and the Figure 2 curve (paper §3.1 and §4, Table 3, Figure 2).

All scores are on held-out windows of the short window (256 tokens), per data source, as
bits per byte and next-token loss (``evaluate.loss``); task metrics come from ``evaluate.tasks``.
Every score is cached by checkpoint content (``evaluate.cache``), so writing the tables again
re-scores nothing that was scored before. Tables go to ``paths.results_dir(scale)`` as CSV.

Reading the tables back (notebook 04): ``stage_ema`` and ``prune_jumps`` (Figure 2), ``stage_tokens``
and ``upstream_tokens`` (what equal tokens leaves out), ``seed_gap`` (a small gap against the spread
over seeds), ``table3_noise`` and ``compare_models`` (ties within the noise).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import torch

from minimistral.arch.config import TINY_WINDOW
from minimistral.arch.hub import from_pretrained, load_config
from minimistral.arch.params import count_parameters
from minimistral.cascade.claims import (
    CHILD,
    RUNS,
    SEEDED,
    budget_tokens,
    run_dir,
    seeded_runs,
    tokens_to_match,
    validation_curve,
)
from minimistral.cascade.pipeline import CHILDREN, PARENT, STAGES, Cascade, Stage, train_config, training_curve
from minimistral.evaluate.cache import cached
from minimistral.evaluate.loss import Score, model_score, token_bytes, validation_windows, with_total
from minimistral.files import format_table, write_csv
from minimistral.paths import results_dir
from minimistral.scales import LONG_FACTOR, CascadeScale, ReportScale, get_scale
from minimistral.train import CHECKPOINT
from minimistral.vision.study import IMAGE_ROW, table3_image_row


class Evaluator:
    """Held-out scores per source of any checkpoint, on fixed validation windows (``per_source`` of each source)."""

    def __init__(self, cascade: Cascade, per_source: int = 32):
        self.corpus = cascade.corpus
        self.device = cascade.device
        self.per_source = per_source

    def scores(self, checkpoint: Path) -> dict[str, Score]:
        def compute() -> dict:
            model = from_pretrained(checkpoint, device=self.device).eval()
            nbytes = token_bytes(self.corpus.tokenizer, self.corpus.vocab_size)
            windows = validation_windows(self.corpus, 256, self.per_source)
            return {src: vars(model_score(model, w.to(self.device), nbytes)) for src, w in windows.items()}

        spec = {"per_source": self.per_source, "corpus": self.corpus.key}
        return with_total({src: Score(**s) for src, s in cached(checkpoint, "heldout", spec, compute).items()})

    def row(self, name: str, checkpoint: Path, **extra) -> dict:
        row = {"model": name, **extra, "params": count_parameters(load_config(checkpoint))}
        for src, sc in self.scores(checkpoint).items():
            row[f"{src}_loss"] = round(sc.loss, 4)
            row[f"{src}_bpb"] = round(sc.bits_per_byte, 4)
        return row


def stage_table(cascade: Cascade, evaluator: Evaluator) -> list[dict]:
    """Every checkpoint of Figure 1 (parent, then Init/Short/Base of each child) on held-out data."""
    rows = [evaluator.row(PARENT, cascade.parent_checkpoint, stage="parent", paper="Mistral Small 3.1 (parent)")]
    for stage in STAGES:
        rows.append(evaluator.row(stage.name, cascade.checkpoint(stage), stage=stage.kind, paper=stage.paper_name))
    return rows


def claims_table(cascade: Cascade, evaluator: Evaluator) -> list[dict]:
    """Each claim run's held-out loss at its budget, beside the cascade's tiny-3b Short (and the seeded repeats)."""
    budget = budget_tokens(cascade)
    short = cascade.checkpoint(Stage(CHILD, "short"))
    rows = [evaluator.row("cascade", short, tokens=budget)]
    for name in (*RUNS, *seeded_runs(cascade)):
        ckpt = run_dir(cascade, name) / CHECKPOINT
        rows.append(evaluator.row(name, ckpt, tokens=budget * (4 if name == "scratch_4x" else 1)))
    target = validation_curve(cascade.stage_dir(Stage(CHILD, "short")))[-1][1]
    match = tokens_to_match(validation_curve(run_dir(cascade, "scratch_4x")), target)
    for row in rows:
        row["scratch_tokens_to_match"] = "" if match is None else round(match)
    return rows


def seed_summary(claims: list[dict]) -> list[dict]:
    """Mean and spread (sample standard deviation, min, max) over seeds of each run in ``claims.SEEDED``."""
    out = []
    for name in SEEDED:
        losses = [
            float(r["overall_loss"]) for r in claims if r["model"] == name or r["model"].startswith(name + "_seed")
        ]
        out.append(
            {
                "run": name,
                "seeds": len(losses),
                "mean_loss": round(statistics.fmean(losses), 4),
                "std_loss": round(statistics.stdev(losses), 4) if len(losses) > 1 else "",
                "min_loss": min(losses),
                "max_loss": max(losses),
            }
        )
    return out


def table3(cascade: Cascade, r: ReportScale) -> list[dict]:
    """Table 3's layout: one row per evaluation, one column per model (parent and the three Base children)."""
    from minimistral.evaluate.tasks import task_table

    models = {PARENT: cascade.parent_checkpoint}
    models |= {c: cascade.checkpoint(Stage(c, "long")) for c in CHILDREN}
    rows = task_table(models, cascade.corpus, n_math=r.n_math, n_cloze=r.n_cloze, eval_windows=r.per_source)
    return [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in rows]


def curve_rows(cascade: Cascade) -> list[dict]:
    """Figure 2's data: every logged training step of the cascade (see ``pipeline.training_curve``)."""
    keys = ("stage", "paper", "kind", "step", "tokens", "loss", "ntp", "teacher_ce")
    return [{k: r.get(k, "") for k in keys} for r in training_curve(cascade.root)]


def ema(values: list[float], alpha: float = 0.05) -> list[float]:
    r"""Exponential moving average $m_t = (1 - \alpha) m_{t-1} + \alpha x_t$, started at $x_0$ (Figure 2 plots one)."""
    out, m = [], None
    for x in values:
        m = x if m is None else (1 - alpha) * m + alpha * x
        out.append(m)
    return out


def stage_ema(curve: list[dict], key: str = "ntp", alpha: float = 0.05) -> dict[str, list[float]]:
    """Stage name -> the ``ema`` of column ``key`` over that stage's steps, restarted at its first step.

    Figure 2 smooths each stage on its own: a prune (or the switch to 1,024-token windows) must
    show as a jump, not be smeared into the previous stage's average. ``curve`` rows may hold
    strings (``files.read_csv``) or numbers (``curve_rows``).
    """
    values: dict[str, list[float]] = {}
    for r in curve:
        values.setdefault(r["stage"], []).append(float(r[key]))
    return {stage: ema(v, alpha) for stage, v in values.items()}


def prune_jumps(curve: list[dict]) -> list[dict]:
    """Figure 2's jump at each prune: a child's first Short step against the last step before the prune.

    Per child: ``before``, the student's training cross-entropy at the last step of the previous
    child's Short stage (for the first child, the parent itself: its cross-entropy is the
    teacher's); ``first``, the child's at its first Short step (the pruned model, before any
    update); ``jump = first - before``. Consecutive steps read different batches, so each is
    also taken against the teacher on its own batch: ``gap_before``, ``gap_first`` (student
    minus teacher) and ``jump_vs_teacher = gap_first - gap_before``, which removes the batches'
    difficulty.
    """

    def steps(stage: str) -> list[dict]:
        return [r for r in curve if r["stage"] == stage]

    rows = []
    previous = None  # the last step of the previous Short stage
    for child in CHILDREN:
        short = steps(f"{child}-short")
        if not short:
            break
        first = short[0]
        ntp, teacher = float(first["ntp"]), float(first["teacher_ce"])
        if previous is None:
            before, gap_before = teacher, 0.0
        else:
            before, gap_before = float(previous["ntp"]), float(previous["ntp"]) - float(previous["teacher_ce"])
        rows.append(
            {
                "child": child,
                "before": before,
                "first": ntp,
                "jump": ntp - before,
                "teacher_first": teacher,
                "gap_before": gap_before,
                "gap_first": ntp - teacher,
                "jump_vs_teacher": ntp - teacher - gap_before,
            }
        )
        previous = short[-1]
    return rows


def stage_tokens(kind: str, scale: CascadeScale) -> int:
    """Training tokens of one ``short`` (256-token windows) or ``long`` (1,024) stage of one child at ``scale``."""
    cfg = train_config(kind, scale)
    return cfg.steps * cfg.batch_size * TINY_WINDOW * (1 if kind == "short" else LONG_FACTOR)


def upstream_tokens(scale: CascadeScale, parent_tokens: int) -> list[dict]:
    """What "equal tokens" leaves out: every training stage upstream of the cascade's tiny-3b Init.

    The claims give every tiny-3b run the same budget ``B``, but the cascade's tiny-3b (and
    ``pruned_ntp`` and ``kd_ntp``, which start from its Init) inherits the parent's pretraining
    and the Short stages of tiny-14b and tiny-8b (each child is pruned from the previous Short);
    ``direct`` inherits the pretraining only, ``scratch`` nothing. The Base stages of tiny-14b and
    tiny-8b are listed with ``ancestor=False``: they are not on tiny-3b's path. Keys: stage,
    tokens, ancestor.
    """
    rows = [{"stage": f"{PARENT} pretraining", "tokens": int(parent_tokens), "ancestor": True}]
    for child in CHILDREN[:-1]:
        rows.append({"stage": f"{child} Short", "tokens": stage_tokens("short", scale), "ancestor": True})
        rows.append({"stage": f"{child} Base", "tokens": stage_tokens("long", scale), "ancestor": False})
    return rows


def seed_gap(claims: list[dict], a: str = "kd_ntp", b: str = "cascade") -> dict:
    """``a`` minus ``b`` in held-out loss over the seeds both were run with (the same data order per seed).

    Keys: seeds, diffs (per seed, seed 0 first), mean, std (sample, None with one seed), and
    ``separated``: whether every seed of ``a`` is worse than every seed of ``b`` (the ranges over
    seeds do not overlap; None with one seed, when there is no spread to compare against).
    """

    def losses(name: str) -> dict[int, float]:
        out = {}
        for r in claims:
            base, _, seed = r["model"].partition("_seed")
            if base == name and (seed == "" or seed.isdigit()):
                out[int(seed or 0)] = float(r["overall_loss"])
        return out

    la, lb = losses(a), losses(b)
    seeds = sorted(set(la) & set(lb))
    diffs = [la[s] - lb[s] for s in seeds]
    n = len(diffs)
    separated = None if n < 2 else min(la[s] for s in seeds) > max(lb[s] for s in seeds)
    return {
        "seeds": n,
        "diffs": diffs,
        "mean": statistics.fmean(diffs),
        "std": statistics.stdev(diffs) if n > 1 else None,
        "separated": separated,
    }


def table3_noise(table3: list[dict], a: str, b: str, claims: list[dict], r: ReportScale) -> dict[str, float | None]:
    r"""Per Table 3 row, the difference between models ``a`` and ``b`` that is within the noise.

    - percentages of items: two standard errors of a difference of two proportions over the row's
      items (``n_cloze`` per source, ``n_math`` problems): $2 \cdot 100 \sqrt{(p_a(1-p_a) + p_b(1-p_b)) / n}$;
    - bits per byte and the math log-prob: twice the standard deviation over data-order seeds of the
      cascade's tiny-3b Short (``cascade_seed<N>`` rows of ``claims``): its per-source bits per byte,
      and its math loss in nats; None when there is one seed (no spread measured);
    - the math token accuracy: None (a share of tokens, not of independent items: no yardstick here);
      the image row: None (``vision.study`` measures its spread over seeds on tiny-3b).
    """
    seeds = [row for row in claims if row["model"] == "cascade" or row["model"].startswith("cascade_seed")]

    def seed_noise(column: str) -> float | None:
        return 2 * statistics.stdev(float(s[column]) for s in seeds) if len(seeds) > 1 else None

    out: dict[str, float | None] = {}
    for row in table3:
        name = row["evaluation"]
        if "token accuracy" in name or name == IMAGE_ROW:
            out[name] = None  # the image row's spread over seeds is in vision_ablations.csv
        elif name.endswith("(%)"):
            n = r.n_cloze if name.startswith("Cloze") else r.n_math
            pa, pb = float(row[a]) / 100, float(row[b]) / 100
            out[name] = 200 * math.sqrt((pa * (1 - pa) + pb * (1 - pb)) / n)
        elif name.startswith("Bits per byte, "):
            out[name] = seed_noise(name.removeprefix("Bits per byte, ").split(" ")[0] + "_bpb")
        else:
            out[name] = seed_noise("math_loss")
    return out


def compare_models(table3: list[dict], a: str, b: str, noise: dict[str, float | None]) -> list[dict]:
    """Row by row, ``a - b`` and a verdict: ``tie`` when the difference is within ``noise[row]``, else which
    model is ahead (lower is better for bits per byte, higher for the rest); ``?`` when the noise is unknown."""
    rows = []
    for row in table3:
        name = row["evaluation"]
        diff, tol = float(row[a]) - float(row[b]), noise.get(name)
        if tol is None:
            verdict = "?"
        elif abs(diff) <= tol:
            verdict = "tie"
        else:
            lower_better = "lower is better" in name
            verdict = f"{a if (diff < 0) == lower_better else b} ahead"
        rows.append(
            {"evaluation": name, a: float(row[a]), b: float(row[b]), "diff": diff, "noise": tol, "verdict": verdict}
        )
    return rows


@torch.no_grad()
def report(cascade: Cascade, scale: str, longctx: dict | None = None) -> dict[str, list[dict]]:
    """All cascade tables (plus the long-context ones if given), written as CSV to ``results_dir(scale)``."""
    r = get_scale(scale).report
    ev = Evaluator(cascade, r.per_source)
    tables = {
        "cascade_curve": curve_rows(cascade),
        "cascade_stages": stage_table(cascade, ev),
        "cascade_table3": table3(cascade, r) + table3_image_row(scale),
    }
    if all((run_dir(cascade, n) / CHECKPOINT).is_dir() for n in (*RUNS, *seeded_runs(cascade))):
        tables["cascade_claims"] = claims_table(cascade, ev)
        tables["cascade_claims_seeds"] = seed_summary(tables["cascade_claims"])
    tables |= longctx or {}
    for name, rows in tables.items():
        write_csv(rows, results_dir(scale) / f"{name}.csv")
    return tables


def format_summary(tables: dict[str, list[dict]]) -> str:
    """The Table 3 analogue, the claims and every checkpoint's held-out loss, as text."""
    from minimistral.evaluate.tasks import format_task_table

    parts = ["Table 3 analogue (held-out):", format_task_table(tables["cascade_table3"])]
    rows = [("checkpoint", "params", "loss", "bits/byte")]
    rows += [
        (r["paper"], f"{r['params']:,}", f"{r['overall_loss']:.3f}", f"{r['overall_bpb']:.3f}")
        for r in tables["cascade_stages"]
    ]
    parts += ["\nEvery checkpoint of the cascade (held-out, all sources):", format_table(rows)]
    if "cascade_claims" in tables:
        rows = [("tiny-3b run", "tokens", "loss", "bits/byte")]
        rows += [
            (r["model"], f"{r['tokens']:,}", f"{r['overall_loss']:.3f}", f"{r['overall_bpb']:.3f}")
            for r in tables["cascade_claims"]
        ]
        match = tables["cascade_claims"][0]["scratch_tokens_to_match"]
        parts += [
            "\nClaims at equal tokens:",
            format_table(rows),
            f"scratch tokens to match the cascade: {match or 'not within 4x'}",
        ]
    return "\n".join(parts)
