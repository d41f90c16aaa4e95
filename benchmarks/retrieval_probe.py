"""Has a checkpoint learnt to copy from its context? Passkey retrieval and the loss on repeated spans.

Usage: ``python benchmarks/retrieval_probe.py runs/parent-default/checkpoint [--n 10] [--retrieval kind=share,...]``
(``--retrieval``: the mixture the checkpoint trained on, as ``retrieval_experiment.py`` takes it).

- passkey (``longctx.passkey.passkey_accuracy``) at 128 and 256 tokens, key at depth 0, 1/2, 1:
  greedy exact match, digit accuracy, first digit, and ``gain`` (nats per digit the needle adds
  over a decoy needle: 0 for a model that ignores it);
- for the last 24 retrieval documents of each kind in the training stream, the mean loss on the
  span's first occurrence and on its copy: a model that copies has a much lower loss on the copy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from minimistral.arch.hub import from_pretrained
from minimistral.cli import guarded
from minimistral.data.corpus import build_corpus
from minimistral.data.retrieval import parse_shares
from minimistral.evaluate.loss import token_losses
from minimistral.longctx.passkey import passkey_accuracy


def copy_losses(model, corpus, kind: str, n: int = 24) -> tuple[float, float]:
    """Mean loss (nats/token) on the first occurrence and on the copy of the last ``n`` documents of ``kind``."""
    first, copy = [], []
    for p in [p for p in corpus.retrieval if p["kind"] == kind][-n:]:
        ids = torch.from_numpy(corpus.train[p["start"] : p["start"] + p["length"]].astype(np.int64))[None]
        lp = token_losses(model, ids)[0]  # [T - 1]: lp[t] is the loss of token t + 1
        s, a, k = p["source"], p["answer"], p["size"]
        first.append(lp[s - 1 : s - 1 + k].mean().item())
        copy.append(lp[a - 1 : a - 1 + k].mean().item())
    return float(np.mean(first)), float(np.mean(copy))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--n", type=int, default=10, help="passkey examples per cell")
    p.add_argument("--retrieval", default=None, help="kind=share,... of the corpus (default: the project's)")
    args = p.parse_args()
    shares = None if args.retrieval is None else parse_shares(args.retrieval)
    corpus = build_corpus(retrieval=shares)
    model = from_pretrained(args.checkpoint).eval()
    state = json.loads(Path(args.checkpoint, "trainer_state.json").read_text())
    print(f"{args.checkpoint}: step {state['step']}")
    lengths, depths = [128, 256], [0.0, 0.5, 1.0]
    grid = passkey_accuracy(model, corpus.tokenizer, lengths, depths, n=args.n)
    for k in ("exact", "digits", "first", "gain"):
        rows = ", ".join(f"{length}: {grid[k][i].numpy().round(3).tolist()}" for i, length in enumerate(lengths))
        print(f"passkey {k:6s} (depths {depths}) {rows}")
    for kind in dict.fromkeys(p["kind"] for p in corpus.retrieval):
        first, copy = copy_losses(model, corpus, kind)
        print(f"{kind}: loss at the first occurrence {first:.2f}, at the copy {copy:.2f} nats/token")


if __name__ == "__main__":
    sys.exit(guarded(main))  # a bad checkpoint or argument: one line, exit 2
