"""Which teacher should the cascade distil from? The teacher ablations of paper §3.1 (Figures 3 and 4).

The paper: on the 14B, Mistral Medium 3, bigger than the parent, taught no better than the parent Mistral Small
3.1 on any of six benchmarks (Figure 3; the "capacity gap"); on the 3B, a post-trained Small 3.1 taught better
than the base one, by a lot on MATH and not on knowledge (Figure 4).

Ours, on one child: the cascade's tiny-3b Short stage (the same Init, windows, steps and data order), each run
distilled from another teacher::

    parent        the base parent tiny-24b: the cascade's own tiny-3b Short (not trained again)
    post-trained  the parent after the Reasoning SFT (the driver's ``teacher-sft``, §4's stronger teacher)
    bigger        a bigger tiny teacher (``BIGGER``), pretrained like the parent on the same data and steps

Each student is scored like Table 3 (``evaluate.tasks.task_table``): bits per byte per held-out source, math
exact match, the reference solution's log-probability per token and token accuracy, cloze accuracy.
``minimistral teachers --scale default [--bigger]`` runs it (``--bigger`` pretrains the bigger teacher first,
about twice the parent's pretraining) and writes ``<results>/teacher_ablation.csv``.
"""

from __future__ import annotations

from pathlib import Path

from minimistral.arch.config import TINY_CONFIGS
from minimistral.arch.hub import from_pretrained, load_config
from minimistral.arch.params import count_parameters
from minimistral.cascade.pipeline import Cascade, Stage
from minimistral.evaluate.tasks import task_table
from minimistral.files import write_csv
from minimistral.paths import cascade_dir, parent_dir, results_dir, runs_dir
from minimistral.pretrain import pretrain
from minimistral.scales import get_scale
from minimistral.train import CHECKPOINT

CHILD = "tiny-3b"
# The bigger teacher: the parent's shape with 12 layers (not 8) and a 384-wide residual stream: 1.7x its parameters
BIGGER = TINY_CONFIGS["tiny-24b"].replace(num_hidden_layers=12, hidden_size=384)


def bigger_teacher_dir(scale: str) -> Path:
    return runs_dir() / f"teacher-bigger-{scale}"


def taught(cascade: Cascade, name: str, teacher: Path) -> Path:
    """The cascade's tiny-3b Short stage again, distilled from ``teacher``, under ``<root>/teachers/<name>``."""
    init = cascade.checkpoint(Stage(CHILD, "init"))
    return cascade.distill_stage(
        Stage(CHILD, "short"), lambda: from_pretrained(init, device=cascade.device),
        out=cascade.root / "teachers" / name, desc=f"{CHILD} Short from the {name} teacher", teacher=teacher,
    )  # fmt: skip


def run_teacher_ablation(cascade: Cascade, teachers: dict[str, Path], scale: str) -> list[dict]:
    """Distil tiny-3b Short from each of ``teachers`` (name -> checkpoint; ``parent`` reuses the cascade's own
    run) and score every student like Table 3; returns the rows, one per evaluation, one column per teacher."""
    for name, checkpoint in teachers.items():
        if not (Path(checkpoint) / "config.json").is_file():
            raise ValueError(f"teacher {name!r}: no checkpoint at {checkpoint} (run `minimistral reproduce` first)")
    students = {"parent": cascade.checkpoint(Stage(CHILD, "short"))}
    students |= {name: taught(cascade, name, ck) for name, ck in teachers.items() if name != "parent"}
    r = get_scale(scale).report
    rows = task_table(students, cascade.corpus, n_math=r.n_math, n_cloze=r.n_cloze, eval_windows=r.per_source,
                      device=cascade.device)  # fmt: skip
    sizes = {"parent": count_parameters(load_config(cascade.parent_checkpoint))}
    sizes |= {name: count_parameters(load_config(ck)) for name, ck in teachers.items()}
    params = {"evaluation": "teacher parameters"} | {name: sizes[name] for name in students}
    return [params, *({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in rows)]


def teacher_ablation(scale: str, bigger: bool = False, device=None) -> list[dict]:
    """The ablation on the driver's run at ``scale`` (its cascade and ``teacher-sft``), written to
    ``<results>/teacher_ablation.csv``; ``bigger``: pretrain the bigger teacher too (or resume it) and add it."""
    root = cascade_dir(scale)
    teachers = {"post-trained": root / "teacher-sft" / CHECKPOINT}
    if bigger:
        teachers["bigger"] = pretrain(scale, out=bigger_teacher_dir(scale), device=device, model_config=BIGGER)
    cascade = Cascade(parent_dir(scale) / CHECKPOINT, root, scale, device=device)
    rows = run_teacher_ablation(cascade, teachers, scale)
    write_csv(rows, results_dir(scale) / "teacher_ablation.csv")
    return rows
