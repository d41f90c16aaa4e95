"""How many steps does the parent's architecture need before it copies at all? Pure synthetic copying.

The passkey study (README, *A parent that can copy*) found no copying after 250-600 steps whatever the
share of retrieval documents. This isolates the question from the data mixture: ``tiny-24b`` (the
parent's shape), the parent's optimiser and schedule, trained on windows in which every span of
``--span`` random token ids (drawn from ``--pool`` ordinary ids of the vocabulary) is followed by the
same span again. Half of all targets can be predicted only by copying from ``--span`` tokens back;
the other half are uniform (``ln pool`` nats). A model that copies drives the repeated half towards
0, so the mean loss falls from ``ln pool`` towards half of it; one that does not stays at ``ln pool``.

Prints the logged loss every 10 steps and, at the end, the mean loss on first and repeated spans
of 64 fresh windows. Example (the README's run; about 25 minutes on 2 CPU cores)::

    python benchmarks/copy_onset.py --out runs/copy-onset --steps 600

``--probe CHECKPOINT`` trains nothing and prints the two losses of any checkpoint of the parent's
vocabulary (does a copier trained on a pool of 100 ids copy others? ``--pool 1000``)::

    python benchmarks/copy_onset.py --probe runs/copy-100/checkpoint --pool 1000

``--init CHECKPOINT`` starts from a copier of another pool (a curriculum of growing pools; README).

``--span-max`` and ``--gap`` vary the span's length and put other ids between a span and its repeat,
so that position alone no longer predicts a copy (``copy_windows``). The fixed layout's copiers fail
there: they learnt to look ``--span`` tokens back, not to retrieve by content (README)::

    python benchmarks/copy_onset.py --probe runs/copy-3996b/checkpoint --pool 3996 --span 8 --span-max 24
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch

from minimistral.arch.config import TINY_CONFIGS, TINY_WINDOW
from minimistral.arch.hub import from_pretrained, load_weights
from minimistral.arch.model import Ministral3
from minimistral.cli import guarded
from minimistral.evaluate.loss import token_losses
from minimistral.train import TrainConfig, Trainer, Windows

FIRST_ID = 100  # past the control tokens


def copy_windows(
    n: int, span: int, pool: int, seed: int, width: int = TINY_WINDOW + 1, span_max: int | None = None, gap: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n, width]`` windows of ids uniform in the pool, and ``[n, width]`` true where a token is a copy.

    By default spans ``s, s, t, t, ...`` of ``span`` ids each: a head that looks ``span`` tokens back
    predicts every repeat, so that layout can be solved by position alone. ``span_max`` draws each span's
    length uniform in ``span..span_max`` and ``gap`` puts ``0..gap`` other ids between a span and its
    repeat: the offset of a copy then varies and only content (which token came after this one last
    time: an induction head) predicts it, as in a passkey document. The first token of a repeat is
    marked too, though in the varied layout nothing in the window predicts it."""
    g = torch.Generator().manual_seed(seed)

    def draw(k: int) -> torch.Tensor:
        return torch.randint(FIRST_ID, FIRST_ID + pool, (k,), generator=g)

    def uniform(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (1,), generator=g))

    rows, marks = [], []
    for _ in range(n):
        ids, copied, length = [], [], 0
        while length < width:
            s = draw(span if span_max is None else uniform(span, span_max))
            filler = draw(uniform(0, gap)) if gap else s[:0]
            ids += [s, filler, s]
            length += 2 * len(s) + len(filler)
            copied += [torch.zeros(len(s) + len(filler), dtype=torch.bool), torch.ones(len(s), dtype=torch.bool)]
        rows.append(torch.cat(ids)[:width])
        marks.append(torch.cat(copied)[:width])
    return torch.stack(rows), torch.stack(marks)


def repeat_windows(
    n: int, pool: int, generator: torch.Generator, lo: int = 16, hi: int = 64, width: int = TINY_WINDOW + 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n, width]`` windows each made of one sequence of ``lo..hi`` distinct ids of the pool, repeated until
    the window is full, and ``[n, width]`` true from the first repeat on. The sequence's length, hence the
    offset of every copy, changes from window to window: only content (an induction head) predicts a
    repeat, and since the ids of a sequence are distinct, the earlier occurrence is never ambiguous."""
    rows, marks = [], []
    for _ in range(n):
        length = int(torch.randint(lo, hi + 1, (1,), generator=generator))
        seq = FIRST_ID + torch.randperm(pool, generator=generator)[:length]  # [length], distinct ids
        rows.append(seq.repeat(-(-width // length))[:width])
        marks.append(torch.arange(width) >= length)
    return torch.stack(rows), torch.stack(marks)


def shape(layers: int | None = None, hidden: int | None = None):
    """The parent's config (tiny-24b), with another depth and/or width; a new width brings an FFN of 4x it."""
    config = TINY_CONFIGS["tiny-24b"]
    if hidden:
        config = config.replace(hidden_size=hidden, intermediate_size=4 * hidden)
    return config.replace(num_hidden_layers=layers) if layers else config


def split_losses(model, windows: torch.Tensor, copied: torch.Tensor) -> tuple[float, float]:
    """Mean loss (nats/token) on the tokens that are not copies and on those that are (the window's
    first token, which no context predicts, is left out)."""
    lp = token_losses(model, windows)  # [n, T]: lp[:, t] is the loss of token t + 1
    repeat = copied[:, 1:]
    return lp[~repeat].mean().item(), lp[repeat].mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", help="run directory (resumes)")
    p.add_argument("--probe", metavar="CHECKPOINT", help="train nothing: the first/repeat losses of this checkpoint")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--span", type=int, default=16, help="length of each copied span (the shortest with --span-max)")
    p.add_argument("--span-max", type=int, default=None, help="span lengths uniform in --span..--span-max")
    p.add_argument("--gap", type=int, default=0, help="0..GAP other ids between a span and its repeat")
    p.add_argument("--pool", type=int, default=1000)
    p.add_argument("--layers", type=int, default=None, help="another depth than the parent's 8 (a smaller probe)")
    p.add_argument("--hidden", type=int, default=None, help="another width than the parent's 320 (FFN 4x)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (the parent's: 3e-3)")
    p.add_argument("--init", metavar="CHECKPOINT", help="start from these weights (a copier of another pool)")
    p.add_argument("--min-lr", type=float, default=3e-4, help="end of the cosine (the parent's: 3e-4)")
    args = p.parse_args()
    if not 0 < args.pool <= TINY_CONFIGS["tiny-24b"].vocab_size - FIRST_ID:
        p.error(f"--pool must be between 1 and {TINY_CONFIGS['tiny-24b'].vocab_size - FIRST_ID} (ids from {FIRST_ID})")
    if args.span_max is not None and args.span_max < args.span:
        p.error("--span-max must be at least --span")

    def layout(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return copy_windows(n, args.span, args.pool, seed, span_max=args.span_max, gap=args.gap)

    if args.probe:
        first, repeat = split_losses(from_pretrained(args.probe).eval(), *layout(64, seed=1))
        print(
            f"{args.probe}: loss {first:.3f} on first spans, {repeat:.3f} on repeats "
            f"(ids {FIRST_ID}..{FIRST_ID + args.pool - 1})"
        )
        return
    if not args.out:
        p.error("--out is required (or --probe CHECKPOINT)")

    data = Windows(layout(4000, seed=0)[0])
    torch.manual_seed(0)
    config = shape(args.layers, args.hidden)
    model = Ministral3(config)
    if args.init:
        load_weights(model, args.init)
    cfg = TrainConfig(steps=args.steps, batch_size=16, lr=args.lr, min_lr=args.min_lr, warmup_steps=20,
                      eval_every=10**6, ckpt_every=100, log_every=10)  # fmt: skip
    start = time.time()
    trainer = Trainer(model, cfg, data, args.out, device="cpu")
    trainer.fit()
    for row in trainer.metrics():
        if "loss" in row:
            print(f"step {row['step']:4d}  loss {row['loss']:.3f}")
    first, repeat = split_losses(trainer.model, *layout(64, seed=1))
    result = {"steps": args.steps, "span": args.span, "span_max": args.span_max, "gap": args.gap, "pool": args.pool,
              "uniform": math.log(args.pool),
              "init": args.init, "layers": config.num_hidden_layers, "hidden": config.hidden_size, "lr": args.lr,
              "first": first, "repeat": repeat, "seconds_this_call": time.time() - start}  # fmt: skip
    (trainer.out / "copy_onset.json").write_text(json.dumps(result, indent=1))
    print(f"after {args.steps} steps: loss {first:.3f} on first spans, {repeat:.3f} on repeats "
          f"(uniform: ln {args.pool} = {math.log(args.pool):.3f})")  # fmt: skip


if __name__ == "__main__":
    sys.exit(guarded(main))  # a bad checkpoint or argument: one line, exit 2
