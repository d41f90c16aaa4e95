"""Measuring the pruning heuristics on the real tiny parent (paper section 3.1; notebook 03).

Everything here is *immediately after pruning*, before any distillation: the held-out
loss of the pruned model, for every heuristic and its baselines under the same budget.

* ``per_step_table``: each step of Algorithm 2 alone (layers, hidden, FFN) cut to the
  size it has in each target (tiny-14b, tiny-8b, tiny-3b), one row per method;
* ``full_table``: the whole Algorithm 2 to each target, the paper's choices against
  the baselines;
* ``ratio_curves``: loss against pruning ratio, one curve per method and dimension.

Calibration batches come from the *training* split, losses from the held-out split.
Layer scores do not depend on how many layers are kept (``counterfactual_iterative``'s
greedy order is the same prefix whatever the target), so each layer criterion is scored
once on the parent (``layer_rankings``) and every layer cut of a table reuses it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from minimistral.arch.config import TINY_CONFIGS
from minimistral.arch.model import Ministral3
from minimistral.evaluate.loss import mean_loss
from minimistral.files import write_csv
from minimistral.paths import results_dir
from minimistral.prune.heuristics import (
    FFN_SCORES,
    HIDDEN_METHODS,
    LAYER_SCORES,
    LOSS_SCORES,
    keep_top,
    layer_scores,
    prune_ffn,
    prune_hidden,
    select_layers,
)
from minimistral.scales import PruneStudyScale, get_scale

TARGETS = ("tiny-14b", "tiny-8b", "tiny-3b")
STEPS = {"layers": LAYER_SCORES, "hidden": HIDDEN_METHODS, "ffn": FFN_SCORES}
PAPER = {"layers": "out/in", "hidden": "pca", "ffn": "activation"}  # the paper's pseudo-code


@dataclass(frozen=True)
class StudyData:
    """Calibration windows (training split) and evaluation windows (held-out split), ``[n, T + 1]``."""

    calib: list[torch.Tensor]  # batches of windows
    val: list[torch.Tensor]


def layer_rankings(parent: Ministral3, data: StudyData, methods=LAYER_SCORES) -> dict[str, torch.Tensor]:
    """Every layer criterion's scores on ``parent``, ``{method: [num_layers]}`` (loss scores read whole windows)."""
    calib = [w[:, :-1] for w in data.calib]
    return {m: layer_scores(parent, data.calib if m in LOSS_SCORES else calib, m) for m in methods}


def apply_step(
    model: Ministral3,
    data: StudyData,
    step: str,
    size: int,
    method: str,
    tie: bool | None = None,
    rankings: dict[str, torch.Tensor] | None = None,
) -> Ministral3:
    """One step of Algorithm 2 with the given method; calibration on the inputs only (``[:, :-1]``).

    ``tie``: the hidden step's ``tie_word_embeddings``. ``rankings``: layer scores of
    ``model`` already computed (``layer_rankings``), else the layer step scores it here.
    """
    calib = [w[:, :-1] for w in data.calib]
    if step == "layers":
        scores = (rankings or layer_rankings(model, data, (method,)))[method]
        return select_layers(model, keep_top(scores, size))
    if step == "hidden":
        return prune_hidden(model, calib, size, method=method, tie_word_embeddings=tie)
    return prune_ffn(model, calib, size, score=method)


def target_sizes(parent: Ministral3, target: str) -> dict[str, int | None]:
    """What each step cuts to for ``target`` (None: unchanged, as the FFN-only 24b -> 14b step)."""
    t, p = TINY_CONFIGS[target], parent.config
    return {
        "layers": t.num_hidden_layers if t.num_hidden_layers != p.num_hidden_layers else None,
        "hidden": t.hidden_size if t.hidden_size != p.hidden_size else None,
        "ffn": t.intermediate_size if t.intermediate_size != p.intermediate_size else None,
    }


def per_step_table(parent: Ministral3, data: StudyData, targets=TARGETS, rankings=None) -> list[dict]:
    """Loss after each single step at each target's size, for every method of that step.

    ``rankings``: ``layer_rankings(parent, data)`` when already computed (every table needs them).
    """
    rows, rankings = [], rankings or layer_rankings(parent, data)
    jobs = [(t, s, size, m) for t in targets for s, size in target_sizes(parent, t).items() if size for m in STEPS[s]]
    for target, step, size, method in tqdm(jobs, desc="per-step pruning"):
        pruned = apply_step(parent, data, step, size, method, rankings=rankings)
        rows.append(_row(target, step, size, method, pruned, parent, data))
    return rows


def full_table(parent: Ministral3, data: StudyData, targets=TARGETS, rankings=None) -> list[dict]:
    """Algorithm 2 to each target: the paper's methods against weight magnitude and naive/random choices.

    The hidden step ties the embeddings where the target's config does (tiny-3b), so every
    pruned model has exactly its target's parameter count. Tying a model trained untied is
    costly on its own (the head and the embedding are unrelated matrices), so a tied target
    is also pruned with its head kept untied (``"<target> (untied head)"`` rows): that isolates
    the heuristics from the cost of tying.
    """
    recipes = {
        "paper (out/in, pca, activation)": PAPER,
        "paper, prose direction (in/out)": PAPER | {"layers": "in/out"},
        "block influence + pca + activation": PAPER | {"layers": "block_influence"},
        "weight magnitude everywhere": {"layers": "magnitude", "hidden": "magnitude", "ffn": "magnitude"},
        "random / first channels / random": {"layers": "random", "hidden": "first", "ffn": "random"},
    }
    rows = []
    rankings = rankings or layer_rankings(parent, data, tuple(dict.fromkeys(r["layers"] for r in recipes.values())))
    runs = [(t, t, TINY_CONFIGS[t].tie_word_embeddings) for t in targets]
    runs += [(t, f"{t} (untied head)", False) for t in targets if TINY_CONFIGS[t].tie_word_embeddings]
    for target, label, tie in tqdm(runs, desc="Algorithm 2"):
        for name, recipe in recipes.items():
            model = parent
            for step, size in target_sizes(parent, target).items():  # layers, hidden, FFN: the paper's order
                if size:  # layers come first, so their scores are the parent's
                    model = apply_step(model, data, step, size, recipe[step], tie, rankings)
            rows.append(_row(label, "all", None, name, model, parent, data))
    return rows


def ratio_grid(parent: Ministral3, points: int) -> dict[str, list[int]]:
    """Sizes to sweep per dimension, from light to heavy pruning."""
    c = parent.config
    layers = list(range(c.num_hidden_layers - 1, 0, -1))
    hidden = [round(c.hidden_size * (1 - f)) for f in torch.linspace(0.1, 0.7, points).tolist()]
    ffn = [round(c.intermediate_size * (1 - f)) for f in torch.linspace(0.25, 0.94, points).tolist()]
    return {"layers": layers[:points] if points < len(layers) else layers, "hidden": hidden, "ffn": ffn}


def ratio_curves(parent: Ministral3, data: StudyData, points: int = 6, rankings=None) -> list[dict]:
    """Held-out loss against the fraction of a dimension removed, per method."""
    grid = ratio_grid(parent, points)
    jobs = [(s, size, m) for s, sizes in grid.items() for size in sizes for m in STEPS[s]]
    rows, rankings = [], rankings or layer_rankings(parent, data)
    for step, size, method in tqdm(jobs, desc="loss vs ratio"):
        pruned = apply_step(parent, data, step, size, method, rankings=rankings)
        rows.append(_row("sweep", step, size, method, pruned, parent, data))
    return rows


def _row(target, step, size, method, pruned: Ministral3, parent: Ministral3, data: StudyData) -> dict:
    full = {"layers": parent.config.num_hidden_layers, "hidden": parent.config.hidden_size}
    full["ffn"] = parent.config.intermediate_size
    return {
        "target": target,
        "step": step,
        "size": size,
        "removed": None if size is None else 1 - size / full[step],
        "method": method,
        "params": pruned.num_parameters(),
        "val_loss": mean_loss(pruned, data.val),
    }


# ----------------------------------------------------------------------------- the study
def study_data(corpus, scale: PruneStudyScale, seq_len: int = 256) -> StudyData:
    """Calibration from evenly spaced *training* windows; evaluation from held-out windows of every source."""
    from minimistral.data.corpus import windows
    from minimistral.evaluate.loss import validation_windows

    train = windows(corpus.train, seq_len)
    calib = train[torch.linspace(0, train.shape[0] - 1, scale.calib_windows).long()]
    val = torch.cat(list(validation_windows(corpus, seq_len, scale.val_per_source).values()))
    b = scale.batch_size
    return StudyData(
        [calib[i : i + b] for i in range(0, len(calib), b)], [val[i : i + b] for i in range(0, len(val), b)]
    )


def run_study(checkpoint: str | Path, scale: str = "default", out_dir: Path | None = None, device=None) -> dict:
    """All three tables for the parent at ``checkpoint``, written as CSV to ``out_dir``; returns the rows."""
    from minimistral.arch.hub import from_pretrained
    from minimistral.data.corpus import build_corpus

    s = get_scale(scale).prune_study
    out_dir = Path(out_dir) if out_dir else results_dir(scale)
    parent = from_pretrained(checkpoint, device=device)
    data = study_data(build_corpus(), s)
    baseline = {"target": "parent", "step": "none", "size": None, "removed": 0.0, "method": "unpruned"}
    baseline |= {"params": parent.num_parameters(), "val_loss": mean_loss(parent, data.val)}
    rankings = layer_rankings(parent, data)  # every layer criterion scored once, for all three tables
    tables = {
        "pruning_per_step": lambda: [baseline, *per_step_table(parent, data, rankings=rankings)],
        "pruning_full": lambda: [baseline, *full_table(parent, data, rankings=rankings)],
        "pruning_vs_ratio": lambda: [baseline, *ratio_curves(parent, data, s.points, rankings)],
    }
    return write_tables(tables, out_dir)


def write_tables(tables: dict[str, Callable[[], list[dict]]], out_dir: Path) -> dict[str, list[dict]]:
    """Build each table in turn and write ``out_dir/<name>.csv`` as soon as it is done.

    An interrupted study keeps the tables it finished. Returns the rows of every table.
    """
    done = {}
    for name, build in tables.items():
        done[name] = build()
        write_csv(done[name], Path(out_dir) / f"{name}.csv", digits=5)
    return done
