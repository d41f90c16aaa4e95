"""What the cascade produced, measured: every checkpoint's held-out scores, the Table 3 analogue,
the claims at equal tokens, and the Figure 2 curve (paper 3.1 and section 4, Table 3, Figure 2).

All scores are on held-out windows of the short window (256 tokens), per data source, as
bits per byte and next-token loss (``minimistral.evaluate``); task metrics come from
``minimistral.tasks``. Tables are written as CSV next to the pretraining results.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import torch

from minimistral.cascade import (
    CHILDREN,
    PARENT,
    STAGES,
    Cascade,
    Stage,
    cascade_dir,
    stage_named,
    training_curve,
)
from minimistral.claims import RUNS, budget_tokens, run_dir, tokens_to_match, validation_curve
from minimistral.evaluate import model_score, token_bytes, with_total
from minimistral.hub import _atomic_write, from_pretrained
from minimistral.model import Ministral3
from minimistral.pretrain import validation_windows
from minimistral.train import CHECKPOINT


def results_dir(cascade: Cascade) -> Path:
    """``data/results`` (committed) for the default scale, ``<root>/results`` otherwise."""
    from minimistral.pretrain import results_dir as pretrain_results

    return pretrain_results("default") if cascade.scale_name == "default" else cascade.root / "results"


def write_csv(rows: list[dict], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, buf.getvalue().encode())


def read_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class Evaluator:
    """Held-out scores per source of any model, on fixed validation windows (``per_source`` of each source)."""

    def __init__(self, cascade: Cascade, per_source: int = 32):
        self.corpus = cascade.corpus
        self.device = cascade.device
        self.windows = validation_windows(self.corpus, 256, per_source)
        self.nbytes = token_bytes(self.corpus.tokenizer, self.corpus.vocab_size)

    def scores(self, model: Ministral3) -> dict:
        model = model.to(self.device).eval()
        per = {src: model_score(model, w.to(self.device), self.nbytes) for src, w in self.windows.items()}
        return with_total(per)

    def row(self, name: str, model: Ministral3, **extra) -> dict:
        row = {"model": name, **extra, "params": model.num_parameters()}
        for src, sc in self.scores(model).items():
            row[f"{src}_loss"] = round(sc.loss, 4)
            row[f"{src}_bpb"] = round(sc.bits_per_byte, 4)
        return row


def stage_table(cascade: Cascade, evaluator: Evaluator) -> list[dict]:
    """Every checkpoint of Figure 1 (parent, then Init/Short/Base of each child) on held-out data."""
    rows = [evaluator.row(PARENT, cascade.parent, stage="parent", paper="Mistral Small 3.1 (parent)")]
    for stage in STAGES:
        model = from_pretrained(cascade.checkpoint(stage), device=cascade.device)
        rows.append(evaluator.row(stage.name, model, stage=stage.kind, paper=stage.paper_name))
    return rows


def claims_table(cascade: Cascade, evaluator: Evaluator) -> list[dict]:
    """Each claim run's held-out loss at its budget, beside the cascade's tiny-3b Short."""
    budget = budget_tokens(cascade)
    short = cascade.checkpoint(Stage("tiny-3b", "short"))
    rows = [evaluator.row("cascade", from_pretrained(short), tokens=budget)]
    for name in RUNS:
        model = from_pretrained(run_dir(cascade, name) / CHECKPOINT)
        tokens = budget * (4 if name == "scratch_4x" else 1)
        rows.append(evaluator.row(name, model, tokens=tokens))
    target = [c for c in validation_curve(cascade.stage_dir(Stage("tiny-3b", "short")))][-1][1]
    match = tokens_to_match(validation_curve(run_dir(cascade, "scratch_4x")), target)
    for row in rows:
        row["scratch_tokens_to_match"] = "" if match is None else round(match)
    return rows


def table3(cascade: Cascade, per_source: int, n_math: int, n_cloze: int) -> list[dict]:
    """Table 3's layout: one row per evaluation, one column per model (parent and the three Base children)."""
    from minimistral.tasks import task_table

    models = {PARENT: cascade.parent}
    models |= {c: from_pretrained(cascade.checkpoint(Stage(c, "long")), device=cascade.device) for c in CHILDREN}
    rows = task_table(models, cascade.corpus, n_math=n_math, n_cloze=n_cloze, eval_windows=per_source)
    return [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in rows]


def curve_rows(cascade: Cascade) -> list[dict]:
    """Figure 2's data: every logged training step of the cascade (see ``cascade.training_curve``)."""
    keys = ("stage", "paper", "step", "tokens", "loss", "ntp", "teacher_ce")
    return [{k: r.get(k, "") for k in keys} for r in training_curve(cascade.root)]


def ema(values: list[float], alpha: float = 0.05) -> list[float]:
    r"""Exponential moving average $m_t = (1 - \alpha) m_{t-1} + \alpha x_t$, started at $x_0$ (Figure 2 plots one)."""
    out, m = [], None
    for x in values:
        m = x if m is None else (1 - alpha) * m + alpha * x
        out.append(m)
    return out


@torch.no_grad()
def report(
    cascade: Cascade, per_source: int = 32, n_math: int = 100, n_cloze: int = 200, longctx: dict | None = None
) -> dict[str, list[dict]]:
    """All cascade tables (plus the long-context ones if given), written as CSV to ``results_dir``."""
    ev = Evaluator(cascade, per_source)
    tables = {
        "cascade_curve": curve_rows(cascade),
        "cascade_stages": stage_table(cascade, ev),
        "cascade_table3": table3(cascade, per_source, n_math, n_cloze),
    }
    if all((run_dir(cascade, n) / CHECKPOINT).is_dir() for n in RUNS):
        tables["cascade_claims"] = claims_table(cascade, ev)
    tables |= longctx or {}
    for name, rows in tables.items():
        write_csv(rows, results_dir(cascade) / f"{name}.csv")
    return tables


@dataclass(frozen=True)
class ReportScale:
    per_source: int  # held-out windows per source for every score
    n_math: int  # held-out math problems for exact match
    n_cloze: int  # cloze questions


REPORT_SCALES = {"ci": ReportScale(4, 4, 8), "default": ReportScale(32, 50, 100)}


def reproduce(
    scale: str = "default",
    parent: str | Path | None = None,
    root: str | Path | None = None,
    device=None,
    claims: bool = True,
    longctx: bool = True,
    restart_from: str | None = None,
) -> dict[str, list[dict]]:
    """The cascade, the claims at equal tokens and the long-context study at ``scale``, then every table.

    Resumes whatever is finished or half-done; ``restart_from`` first deletes that stage and the later ones.
    """
    from minimistral.claims import run_claims
    from minimistral.longctx_study import run_longctx_study
    from minimistral.pretrain import run_dir as parent_dir

    if restart_from:
        stage_named(restart_from)  # an unknown name fails before anything runs
    parent = Path(parent) if parent else parent_dir(scale) / CHECKPOINT
    if not (parent / "config.json").is_file():
        raise FileNotFoundError(f"no parent checkpoint at {parent}: run `minimistral pretrain --scale {scale}` first")
    cascade = Cascade(parent, root or cascade_dir(scale), scale, device=device)
    if restart_from:
        cascade.restart_from(restart_from)
    cascade.run()
    if claims:
        run_claims(cascade)
    long_tables = run_longctx_study(cascade, scale) if longctx else None
    r = REPORT_SCALES[scale if scale in REPORT_SCALES else "ci"]
    return report(cascade, r.per_source, r.n_math, r.n_cloze, long_tables)


def format_summary(tables: dict[str, list[dict]]) -> str:
    """The Table 3 analogue, the claims and every checkpoint's held-out loss, as text."""
    from minimistral.report import format_table
    from minimistral.tasks import format_task_table

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
