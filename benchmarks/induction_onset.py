"""When does a model learn to copy by content (an induction head)? Ours against a textbook reference.

A passkey needs an induction head: find the earlier place where the current token occurred and copy
the token that followed it. ``copy_onset.py`` found the parent's shape learning only a positional
shortcut. This asks the cleaner question on the cleanest task: windows made of one sequence of 16..64
distinct random ids, repeated until the window is full (``copy_onset.repeat_windows``). Every
repeated token is predictable from content alone; the offset changes from window to window, so no
fixed look-back solves it. A copier drives the repeats' loss from ``ln pool`` towards 0.

Two models go through the same plain loop (AdamW, betas 0.9 and ``--beta2``, 0.95 as in the engine;
constant learning rate, no weight decay, no clipping; fresh windows every step, batch 16 x 256), so
that only the model differs:

* ``--model ministral``: ``Ministral3`` (RoPE, RMSNorm, grouped-query attention, SwiGLU) at
  ``--layers`` x ``--hidden``, initialised N(0, ``--init-std``) as ``init_weights`` does (0.02, the
  value of transformers' ``initializer_range``, by default);
* ``--model reference``: the smallest textbook copier, attention-only blocks with LayerNorm and
  learned absolute positions and PyTorch's default initialisation; ``--rope`` swaps its positions for
  RoPE, ``--init-std`` its initialisation for N(0, std): the ladder from it to ours (README).

Prints the held-out loss on first passes and on repeats every 100 steps (64 windows of seed 1) and
writes them with ``--json``. Examples (README, *A parent that can copy*)::

    python benchmarks/induction_onset.py --model reference --steps 600
    python benchmarks/induction_onset.py --model ministral --steps 2000 --init-std 0.05
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from copy_onset import FIRST_ID, repeat_windows, shape, split_losses  # benchmarks/, beside this script
from einops import rearrange
from torch import nn

from minimistral.arch.config import TINY_CONFIGS, TINY_WINDOW
from minimistral.arch.model import Ministral3
from minimistral.arch.rope import RotaryEmbedding, apply_rotary
from minimistral.cli import guarded


class ReferenceBlock(nn.Module):
    r"""Attention only, pre-norm: $x + W_O\,\mathrm{softmax}(QK^\top/\sqrt{d})\,V$ of $\mathrm{LN}(x)$."""

    def __init__(self, hidden: int, heads: int, rope: bool):
        super().__init__()
        self.heads = heads
        self.rotary = RotaryEmbedding(TINY_CONFIGS["tiny-24b"].replace(head_dim=hidden // heads)) if rope else None
        self.norm = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=False)
        self.out = nn.Linear(hidden, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [b, t, hidden]
        q, k, v = rearrange(self.qkv(self.norm(x)), "b t (three h d) -> three b h t d", three=3, h=self.heads)
        if self.rotary is not None:
            cos, sin, _ = self.rotary(0, q.shape[-2], q.device, q.dtype)  # [t, d] each
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [b, h, t, d]
        return x + self.out(rearrange(a, "b h t d -> b t (h d)"))


class Reference(nn.Module):
    """Embeddings (+ learned positions unless RoPE), attention-only blocks, LayerNorm, unembedding."""

    def __init__(self, vocab: int, hidden: int, layers: int, heads: int = 8, rope: bool = False):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.positions = None if rope else nn.Embedding(TINY_WINDOW, hidden)
        self.blocks = nn.ModuleList(ReferenceBlock(hidden, heads, rope) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)  # the name evaluate.loss.token_losses reads

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # [b, t] -> logits [b, t, vocab]
        x = self.embed(ids)
        if self.positions is not None:
            x = x + self.positions(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.norm(x))


def build(args) -> nn.Module:
    torch.manual_seed(args.seed)  # the initialisation; the windows are the same for every seed
    if args.model == "reference":
        model = Reference(FIRST_ID + args.pool, args.hidden, args.layers, rope=args.rope)
        if args.init_std is not None:
            for p in model.parameters():
                if p.dim() == 2:  # every matrix and embedding; norms keep their ones and zeros
                    nn.init.normal_(p, std=args.init_std)
        return model
    model = Ministral3(shape(args.layers, args.hidden))  # initialised at 0.02, then drawn again (as the README's
    model.init_weights(0.02 if args.init_std is None else args.init_std)  # runs were): every --init-std alike
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("ministral", "reference"), default="ministral")
    p.add_argument("--rope", action="store_true", help="the reference with RoPE instead of learned positions")
    p.add_argument("--init-std", type=float, default=None, help="N(0, std) matrices (default: the model's own)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--pool", type=int, default=100, help="the ids a sequence draws from (distinct within one)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0, help="of the initial weights (the windows do not change)")
    p.add_argument("--beta2", type=float, default=0.95, help="AdamW's second-moment decay (the engine's 0.95)")
    p.add_argument("--json", type=Path, help="write the curve here")
    args = p.parse_args()
    if args.rope and args.model != "reference":
        p.error("--rope is for --model reference (Ministral3 always uses RoPE)")
    if not 64 <= args.pool <= TINY_CONFIGS["tiny-24b"].vocab_size - FIRST_ID:
        p.error("--pool must hold a whole sequence (64 ids) and fit the vocabulary")

    model = build(args)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, args.beta2), weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    held_out = repeat_windows(64, args.pool, torch.Generator().manual_seed(1))  # [64, 257] x 2
    curve, start = [], time.time()
    for step in range(1, args.steps + 1):
        w, _ = repeat_windows(16, args.pool, g)  # [16, 257]: fresh windows every step
        logits = model(w[:, :-1])  # [16, 256, vocab]
        # the batch mean as one cross_entropy call (train.lm_loss's mean of per-token losses differs in the
        # last bits, and these curves sit on a knife's edge: kept as the README's runs were made)
        loss = F.cross_entropy(rearrange(logits, "b t v -> (b t) v"), w[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            first, repeat = split_losses(model, *held_out)  # evaluate.loss.token_losses; sets eval mode
            model.train()
            curve.append({"step": step, "first": first, "repeat": repeat})
            print(f"step {step:5d}  first {first:.3f}  repeats {repeat:.3f}  ({time.time() - start:.0f} s)", flush=True)
    print(f"uniform: ln {args.pool} = {math.log(args.pool):.3f}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "curve": curve}, indent=1))


if __name__ == "__main__":
    sys.exit(guarded(main))  # a bad checkpoint or argument: one line, exit 2
