"""The whole reproduction, top to bottom: ``minimistral reproduce [--scale ci|default] [--from STEP] [--until STEP]``.

Each step takes and returns checkpoint directories and returns at once when its output exists, so
running this again continues from what is done, and a notebook can call any step cheaply::

    parent = pretrain_parent(scale)                    # §3    our Mistral Small 3.1: runs/parent-<scale>
    prune_study(parent, scale)                         # §3.1  every pruning heuristic on the parent
    seeing = see_parent(parent, root, scale)           # §2    a new ViT + projector: the parent reads images
    source = parent
    for child in tiny-14b, tiny-8b, tiny-3b:           # §3.1  Algorithm 1, Cascade Distillation
        init = cascade.prune(source, child)            #       Algorithm 2          -> "<child> Init"
        short = cascade.distil_short(init, child)      #       KD, 256 tokens       -> "<child> Short"
        base = cascade.extend_long(short, child)       #       YaRN + KD, 1,024     -> "<child> Base"
        see_child(base, seeing, child)                 # §2    frozen copied ViT, new projector, KD
        source = short                                 #       the next child starts from Short
    run_claims(cascade)                                # §3.1  the paper's claims at equal tokens
    run_longctx_study(cascade, scale)                  # §2    the long stage's position variants
    run_vision_study(root, scale)                      # §2    image questions: family, baselines, ablations
    tables = report(cascade, scale, ...)               # §3.1  Base models scored: Table 3 analogue, passkey
    teacher = teach(seeing, scale)                     # §4    the stronger teacher: the parent, SFT
    for child in tiny-14b, tiny-8b, tiny-3b:           # §4    the Reasoning recipe
        sft = sft_child(vision, teacher, child)        #       reasoning SFT, KL from the teacher
        stem = rl_stage(sft, "stem")                   #       GRPO, verifiable rewards
        rl_stage(stem, "general")                      #       GRPO, rubric rewards, longer limit
    run_posttrain_study(root, scale)                   # §4    held-out pass@k, gains, Table 5 analogue
    for child in tiny-14b, tiny-8b, tiny-3b:           # §4    the Instruct recipe's SFT
        instruct_sft(vision, teacher, child)           #       answer at once, KL from the teacher's answer
    judge = reward_model(policies, teacher)            # §4    the pairwise reward model, calibrated
    for child in tiny-14b, tiny-8b, tiny-3b:           # §4    ODPO, the last stage of both recipes
        odpo_stage(instruct_sft, judge)                #       -> "<child> Instruct"
        odpo_stage(general_rl, judge, thinking)        #       thinking stripped -> "<child> Reasoning"
    run_odpo_study(root, scale)                        # §4    PWRM quality, Figure 6, Table 4 analogues

``--from STEP`` deletes that step's outputs and every later step's, then runs; ``--until STEP`` stops
after that step (notebooks 04-06 and 08's Table 3 run up to ``score``, not the post-training after
it); the wall time of every step that ran is kept in ``<results>/reproduce_times.csv``.
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import suppress
from pathlib import Path

from minimistral.cascade.claims import run_claims
from minimistral.cascade.pipeline import CHILDREN, KINDS, Cascade
from minimistral.cascade.report import report
from minimistral.evaluate.cache import checkpoint_key
from minimistral.files import format_table, read_csv, write_csv, write_json
from minimistral.longctx.study import run_longctx_study
from minimistral.paths import cascade_dir, parent_dir, results_dir, runs_dir
from minimistral.posttrain.odpo_study import run_odpo_study
from minimistral.posttrain.pipeline import instruct_sft, odpo_stage, reward_model, rl_stage, sft_child, teach
from minimistral.posttrain.study import run_posttrain_study
from minimistral.pretrain import evaluate_parent, pretrain
from minimistral.prune.study import run_study
from minimistral.scales import get_scale
from minimistral.train import CHECKPOINT
from minimistral.vision.study import run_vision_study, see_child, see_parent

CHILD_STEPS = tuple(f"{child}-{kind}" for child in CHILDREN for kind in (*KINDS, "vision"))  # each child's, in order
POST_STEPS = tuple(f"{c}-{kind}" for c in CHILDREN for kind in ("sft", "stem-rl", "general-rl"))
ODPO_STEPS = tuple(f"{c}-{kind}" for c in CHILDREN for kind in ("instruct-odpo", "reasoning-odpo"))
INSTRUCT_STEPS = tuple(f"{c}-instruct-sft" for c in CHILDREN)
STEPS = (
    "pretrain", "prune-study", "vision-parent", *CHILD_STEPS, "claims", "longctx", "vision-study", "score",
    "teacher-sft", *POST_STEPS, "posttrain-study", *INSTRUCT_STEPS, "pwrm", *ODPO_STEPS, "odpo-study",
)  # fmt: skip


def reproduce(
    scale: str = "default", from_step: str | None = None, device=None, until: str | None = None
) -> dict[str, list[dict]] | None:
    """Run (or continue) every step at ``scale``, up to and including ``until`` (default: every step);
    returns the tables ``score`` wrote, or None when ``until`` comes before ``score``."""
    get_scale(scale)  # an unknown scale fails before anything runs
    for flag, step in (("--from", from_step), ("--until", until)):
        if step is not None:
            check_step(flag, step)
    if from_step:
        forget(scale, from_step)
    clock = StepClock(scale, until)  # clock.run(step, its outputs, function, *args) = function(*args), timed
    with suppress(StepClock.Reached):  # raised once `until` is done
        run_steps(scale, clock, device)
    return clock.outputs.get("score")


def run_steps(scale: str, clock: StepClock, device=None) -> None:
    """The paper's flow, step by step (the module's docstring is its outline)."""
    root, scores = cascade_dir(scale), runs_dir() / "scores"
    parent = clock.run("pretrain", [parent_dir(scale)], pretrain_parent, scale, device)
    clock.run("prune-study", [parent_dir(scale) / "prune-study.json"], prune_study, parent, scale, device)
    seeing = clock.run("vision-parent", [root / "vision-parent"], see_parent, parent, root, scale, device)
    cascade = Cascade(parent, root, scale, device=device)
    source = parent
    for child in CHILDREN:
        init = clock.run(f"{child}-init", [root / f"{child}-init"], cascade.prune, source, child)
        short = clock.run(f"{child}-short", [root / f"{child}-short"], cascade.distil_short, init, child)
        base = clock.run(f"{child}-long", [root / f"{child}-long"], cascade.extend_long, short, child)
        out = root / f"{child}-vision"
        clock.run(f"{child}-vision", [out], see_child, base, seeing, out, scale, 0, device)
        source = short
    clock.run("claims", [root / "claims"], run_claims, cascade)
    longctx = clock.run("longctx", [root / "longctx", scores], run_longctx_study, cascade, scale)
    clock.run("vision-study", [root / "vision-study", results_dir(scale)], run_vision_study, root, scale, device)
    clock.run("score", [scores], report, cascade, scale, longctx)
    teacher = clock.run("teacher-sft", [root / "teacher-sft"], teach, seeing, root / "teacher-sft", scale, device)
    policies = []  # (checkpoint, thinking): the models whose answers the PWRM learns to rank
    for child in CHILDREN:
        base, sft, stem, general = (root / f"{child}-{kind}" for kind in ("vision", "sft", "stem-rl", "general-rl"))
        sft_ck = clock.run(f"{child}-sft", [sft], sft_child, base / CHECKPOINT, teacher, sft, scale, 0.0, 0, device)
        stem_ck = clock.run(f"{child}-stem-rl", [stem], rl_stage, sft_ck, stem, scale, "stem", 0, device)
        policies.append((clock.run(f"{child}-general-rl", [general], rl_stage, stem_ck, general, scale, "general", 0,
                                   device), True))  # fmt: skip
    study = [root / "posttrain-study", results_dir(scale)]
    clock.run("posttrain-study", study, run_posttrain_study, root, scale, device)
    for child in CHILDREN:
        base, out = root / f"{child}-vision" / CHECKPOINT, root / f"{child}-instruct-sft"
        policies.append((clock.run(f"{child}-instruct-sft", [out], instruct_sft, base, teacher, out, scale, 0, device),
                         False))  # fmt: skip
    judge = clock.run("pwrm", [root / "pwrm"], reward_model, policies, teacher, root / "pwrm", scale, device)
    for child in CHILDREN:
        for kind, start, thinking in (("instruct", "instruct-sft", False), ("reasoning", "general-rl", True)):
            out = root / f"{child}-{kind}-odpo"
            clock.run(f"{child}-{kind}-odpo", [out], odpo_stage, root / f"{child}-{start}" / CHECKPOINT, judge, out,
                      scale, thinking, 0, True, device)  # fmt: skip
    clock.run("odpo-study", [root / "odpo-study", results_dir(scale)], run_odpo_study, root, scale, device)


def pretrain_parent(scale: str, device=None) -> Path:
    """The parent's checkpoint, pretrained (or resumed) at ``scale``, and its held-out evaluation."""
    checkpoint = pretrain(scale, device=device)
    once(parent_dir(scale) / "evaluated.json", checkpoint, lambda: evaluate_parent(checkpoint, scale, device=device))
    return checkpoint


def prune_study(parent: Path, scale: str, device=None) -> None:
    """Every pruning heuristic and baseline measured on ``parent`` (``data/results/pruning_*.csv``)."""
    once(parent_dir(scale) / "prune-study.json", parent, lambda: run_study(parent, scale, device=device))


def once(stamp: Path, checkpoint: Path, work) -> None:
    """``work()`` unless ``stamp`` says it already ran on exactly this checkpoint's content."""
    key = checkpoint_key(checkpoint)
    if stamp.is_file() and read_stamp(stamp) == key:
        return
    work()
    write_json({"checkpoint_key": key}, stamp)


def read_stamp(stamp: Path) -> str:
    return json.loads(stamp.read_text()).get("checkpoint_key", "")


def check_step(flag: str, step: str) -> None:
    """A one-line error naming ``flag`` and every step, unless ``step`` is one of ``STEPS``."""
    if step not in STEPS:
        raise ValueError(f"{flag} {step!r}: not a step; steps: {', '.join(STEPS)}")


def forget(scale: str, step: str) -> None:
    """Delete the outputs of ``step`` and of every later step (scores stay: they are keyed by content)."""
    check_step("--from", step)
    later = STEPS[STEPS.index(step) :]
    root, parent = cascade_dir(scale), parent_dir(scale)
    if "pretrain" in later:
        shutil.rmtree(parent, ignore_errors=True)
    if "prune-study" in later:
        (parent / "prune-study.json").unlink(missing_ok=True)
    root_dirs = [*CHILD_STEPS, "vision-parent", "claims", "longctx", "vision-study", "teacher-sft", *POST_STEPS,
                 "posttrain-study", *INSTRUCT_STEPS]  # fmt: skip
    for name in [*root_dirs, "pwrm", *ODPO_STEPS, "odpo-study"]:  # directories of the root
        if name in later:
            shutil.rmtree(root / name, ignore_errors=True)


class StepClock:
    """Times every step that does work (writes under its outputs) and keeps the latest time of each step
    in ``reproduce_times.csv``; a step that found its outputs ready keeps the time it took when it ran.
    A step interrupted (Ctrl-C, SIGTERM) is kept as ``interrupted`` with the time it had run, and the run
    that finishes it adds its own: the time of a step is its whole work, however many runs it took.
    After the step ``until`` it raises ``Reached``, so the driver stops there."""

    class Reached(Exception):
        """The step ``until`` is done."""

    def __init__(self, scale: str, until: str | None = None):
        self.file = results_dir(scale) / "reproduce_times.csv"
        self.times = {r["step"]: r for r in read_csv(self.file)} if self.file.is_file() else {}
        self.until = until
        self.outputs = {}  # what each step returned in this run

    def run(self, step: str, outputs: list[Path], work, *args):
        start = time.time()
        try:
            out = work(*args)
        except KeyboardInterrupt:
            self.record(step, start, "interrupted")
            raise
        if newest_write(outputs) >= start:
            self.record(step, start, time.strftime("%Y-%m-%d %H:%M"))
        self.outputs[step] = out
        if step == self.until:
            raise self.Reached(step)
        return out

    def record(self, step: str, start: float, finished: str) -> None:
        before = self.times.get(step, {})
        carried = float(before["seconds"]) if before.get("finished") == "interrupted" else 0.0
        seconds = round(carried + time.time() - start, 1)
        self.times[step] = {"step": step, "seconds": seconds, "finished": finished}
        write_csv([self.times[s] for s in STEPS if s in self.times], self.file)


def times_table(scale: str) -> str:
    """The wall time of every step recorded in ``reproduce_times.csv``, in driver order, with the total."""
    file = results_dir(scale) / "reproduce_times.csv"
    if not file.is_file():
        return f"no step times yet ({file} is written as steps finish)"
    rows = sorted(read_csv(file), key=lambda r: STEPS.index(r["step"]) if r["step"] in STEPS else len(STEPS))
    total = sum(float(r["seconds"]) for r in rows)
    table = [("step", "seconds", "minutes", "finished")]
    table += [
        (r["step"], f"{float(r['seconds']):,.1f}", f"{float(r['seconds']) / 60:.1f}", r["finished"]) for r in rows
    ]
    table.append(("total", f"{total:,.1f}", f"{total / 60:.1f}", ""))
    return format_table(table)


def newest_write(paths: list[Path]) -> float:
    """The latest modification time of any file under ``paths`` (0 if none exists)."""
    files = [f for p in paths for f in ([p] if p.is_file() else p.rglob("*") if p.is_dir() else [])]
    return max((f.stat().st_mtime for f in files), default=0.0)
