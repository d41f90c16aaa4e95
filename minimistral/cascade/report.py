"""What the cascade produced, measured: every checkpoint's held-out scores, the Table 3 analogue,
the claims at equal tokens, and the Figure 2 curve (paper §3.1 and §4, Table 3, Figure 2).

All scores are on held-out windows of the short window (256 tokens), per data source, as
bits per byte and next-token loss (``evaluate.loss``); task metrics come from ``evaluate.tasks``.
Every score is cached by checkpoint content (``evaluate.cache``), so writing the tables again
re-scores nothing that was scored before. Tables go to ``paths.results_dir(scale)`` as CSV.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

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
from minimistral.cascade.pipeline import CHILDREN, PARENT, STAGES, Cascade, Stage, training_curve
from minimistral.evaluate.cache import cached
from minimistral.evaluate.loss import Score, model_score, token_bytes, validation_windows, with_total
from minimistral.files import format_table, write_csv
from minimistral.paths import results_dir
from minimistral.scales import ReportScale, get_scale
from minimistral.train import CHECKPOINT


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


@torch.no_grad()
def report(cascade: Cascade, scale: str, longctx: dict | None = None) -> dict[str, list[dict]]:
    """All cascade tables (plus the long-context ones if given), written as CSV to ``results_dir(scale)``."""
    r = get_scale(scale).report
    ev = Evaluator(cascade, r.per_source)
    tables = {
        "cascade_curve": curve_rows(cascade),
        "cascade_stages": stage_table(cascade, ev),
        "cascade_table3": table3(cascade, r),
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
