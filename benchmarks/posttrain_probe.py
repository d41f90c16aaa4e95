"""A quick probe of the Reasoning recipe on the default run's checkpoints: is there a signal for GRPO?

Runs the teacher's SFT (the vision parent, next-token loss), tiny-3b's SFT (KL from that teacher) and a
short STEM GRPO stage on tiny-3b, at the default data sizes but with the step counts given here, and
prints held-out scores after each (a subset: every second STEM problem and 30 rubric prompts, 4
samples each at temperature 1). It is how the task sizes in ``posttrain/tasks.py`` were chosen: GRPO
learns only from groups in which some rollouts are right and some wrong.

    python benchmarks/posttrain_probe.py --teacher-steps 80 --sft-steps 80 --rl-steps 15 [--rl-lr 3e-4]

The GRPO stage's metrics (reward, groups with no signal, length, truncation per iteration) are in
``<out>/3b-stem-lr<lr>-<steps>-kl<kl>-t<temperature>/metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from minimistral.arch.hub import from_pretrained
from minimistral.cli import guarded
from minimistral.data.tokenizer import load_tokenizer
from minimistral.paths import cascade_dir
from minimistral.posttrain.pipeline import posttrain_data, rl_stage, sft_child, teach
from minimistral.posttrain.study import held_out_scores, summarize
from minimistral.scales import get_scale
from minimistral.train import CHECKPOINT


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher-steps", type=int, default=80)
    p.add_argument("--sft-steps", type=int, default=80)
    p.add_argument("--rl-steps", type=int, default=15)
    p.add_argument("--rl-lr", type=float, default=None, help="GRPO's learning rate (default: the default scale's)")
    p.add_argument("--kl", type=float, default=0.0, help="weight of GRPO's KL term to the SFT model")
    p.add_argument("--temperature", type=float, default=1.0, help="of the rollouts")
    p.add_argument("--out", type=Path, default=Path("runs/posttrain-probe"))
    args = p.parse_args(argv)
    s = get_scale("default")
    rl_lr = args.rl_lr if args.rl_lr is not None else s.posttrain.rl_lr
    s = dataclasses.replace(s, posttrain=dataclasses.replace(
        s.posttrain, teacher_steps=args.teacher_steps, sft_steps=args.sft_steps, stem_steps=args.rl_steps,
        rl_lr=rl_lr, kl_coef=args.kl, temperature=args.temperature))  # fmt: skip
    root = cascade_dir("default")
    parent = root / "vision-parent" / "questions" / CHECKPOINT
    data = posttrain_data(str(parent), "default")
    items = data.stem["test"][::2] + data.rubrics["test"][:30]

    def timed(name, fn, *a):
        start = time.time()
        out = fn(*a)
        print(f"{name}: {time.time() - start:.1f} s", flush=True)
        return out

    def evaluate(name, checkpoint):
        rows = held_out_scores(from_pretrained(checkpoint), load_tokenizer(checkpoint), items, 4, 96)
        for r in summarize(rows, 4):
            print(name, r, flush=True)

    teacher = timed("teacher sft", teach, parent, args.out / "teacher", s)
    evaluate("teacher", teacher)
    sft = timed("tiny-3b sft", sft_child, root / "tiny-3b-vision" / CHECKPOINT, teacher, args.out / "3b-sft", s)
    evaluate("tiny-3b sft", sft)
    if args.rl_steps:
        stem = timed(
            "tiny-3b stem rl",
            rl_stage,
            sft,
            args.out / f"3b-stem-lr{rl_lr:g}-{args.rl_steps}-kl{args.kl:g}-t{args.temperature:g}",
            s,
            "stem",
        )
        evaluate("tiny-3b stem rl", stem)


if __name__ == "__main__":
    sys.exit(guarded(main))  # a bad checkpoint or argument: one line, exit 2
