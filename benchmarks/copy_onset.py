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
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from minimistral.arch.config import TINY_CONFIGS, TINY_WINDOW
from minimistral.arch.hub import from_pretrained, load_weights
from minimistral.arch.model import Ministral3
from minimistral.evaluate.loss import token_losses
from minimistral.train import TrainConfig, Trainer, Windows

FIRST_ID = 100  # past the control tokens


def copy_windows(n: int, span: int, pool: int, seed: int, width: int = TINY_WINDOW + 1) -> torch.Tensor:
    """``[n, width]`` windows of spans ``s, s, t, t, ...``, each span ``span`` ids uniform in the pool."""
    g = torch.Generator().manual_seed(seed)
    pairs = width // (2 * span) + 1
    rows = []
    for _ in range(n):
        spans = [torch.randint(FIRST_ID, FIRST_ID + pool, (span,), generator=g) for _ in range(pairs)]
        rows.append(torch.cat([x for s in spans for x in (s, s)])[:width])
    return torch.stack(rows)


def split_losses(model, windows: torch.Tensor, span: int) -> tuple[float, float]:
    """Mean loss (nats/token) on the first occurrence of each span and on its repeat (the first span's
    first token, which no context predicts, is left out)."""
    lp = token_losses(model, windows)  # [n, T]: lp[:, t] is the loss of token t + 1
    position = torch.arange(1, windows.shape[1])  # the target's position in the window
    repeat = (position // span) % 2 == 1
    return lp[:, ~repeat].mean().item(), lp[:, repeat].mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", help="run directory (resumes)")
    p.add_argument("--probe", metavar="CHECKPOINT", help="train nothing: the first/repeat losses of this checkpoint")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--span", type=int, default=16)
    p.add_argument("--pool", type=int, default=1000)
    p.add_argument("--layers", type=int, default=None, help="another depth than the parent's 8 (a smaller probe)")
    p.add_argument("--hidden", type=int, default=None, help="another width than the parent's 320 (FFN 4x)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (the parent's: 3e-3)")
    p.add_argument("--init", metavar="CHECKPOINT", help="start from these weights (a copier of another pool)")
    p.add_argument("--min-lr", type=float, default=3e-4, help="end of the cosine (the parent's: 3e-4)")
    args = p.parse_args()
    if not 0 < args.pool <= TINY_CONFIGS["tiny-24b"].vocab_size - FIRST_ID:
        p.error(f"--pool must be between 1 and {TINY_CONFIGS['tiny-24b'].vocab_size - FIRST_ID} (ids from {FIRST_ID})")
    if args.probe:
        first, repeat = split_losses(
            from_pretrained(args.probe).eval(), copy_windows(64, args.span, args.pool, 1), args.span
        )
        print(
            f"{args.probe}: loss {first:.3f} on first spans, {repeat:.3f} on repeats "
            f"(ids {FIRST_ID}..{FIRST_ID + args.pool - 1})"
        )
        return
    if not args.out:
        p.error("--out is required (or --probe CHECKPOINT)")

    data = Windows(copy_windows(4000, args.span, args.pool, seed=0))
    torch.manual_seed(0)
    config = TINY_CONFIGS["tiny-24b"]
    if args.layers or args.hidden:
        hidden = args.hidden or config.hidden_size
        config = config.replace(num_hidden_layers=args.layers or config.num_hidden_layers, hidden_size=hidden,
                                intermediate_size=4 * hidden if args.hidden else config.intermediate_size)  # fmt: skip
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
    first, repeat = split_losses(trainer.model, copy_windows(64, args.span, args.pool, seed=1), args.span)
    result = {"steps": args.steps, "span": args.span, "pool": args.pool, "uniform": math.log(args.pool),
              "init": args.init, "layers": config.num_hidden_layers, "hidden": config.hidden_size, "lr": args.lr,
              "first": first, "repeat": repeat, "seconds_this_call": time.time() - start}  # fmt: skip
    (trainer.out / "copy_onset.json").write_text(json.dumps(result, indent=1))
    print(f"after {args.steps} steps: loss {first:.3f} on first spans, {repeat:.3f} on repeats "
          f"(uniform: ln {args.pool} = {math.log(args.pool):.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
