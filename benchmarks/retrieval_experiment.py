"""Does a share of retrieval documents (``minimistral.data.retrieval``) teach the tiny parent passkey retrieval?

Pretrains ``tiny-24b`` on a reduced schedule with a given retrieval share (``data.build_corpus
(retrieval=...)``), then measures on the final weights:

* passkey retrieval (``longctx.passkey_accuracy``, n examples per cell, seed 0) at lengths 128
  and 256 inside the trained window, with the classic ``FILLER`` and with held-out prose filler
  (sentences of the validation plays and poem, never in training);
* with ``--long``: lengths 512 and 1,024 with the parent extended training-free, by YaRN x4
  (``rescaled(model, method="yarn", temperature=False)``, the "yarn" teacher variant) and by a
  sliding window of 256 (the "window" variant, ``DEFAULT_TEACHER``);
* held-out loss and bits per byte per source on the whole validation split
  (``pretrain.validation_windows`` + ``evaluate.model_score``).

Everything goes to ``<out>/retrieval_eval.json`` and is printed as tables. Example (the runs of
the report; each trains in ~9-12 minutes on 2 CPU cores, resumes if its checkpoint exists)::

    python benchmarks/retrieval_experiment.py --name r7 --steps 250 \\
        --retrieval passkey=0.04,kv=0.015,repeat=0.015 --long
    python benchmarks/retrieval_experiment.py --name r0 --steps 250 --retrieval none
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import asdict

from copy_onset import copy_windows  # benchmarks/, beside this script

from minimistral.arch.hub import from_pretrained
from minimistral.cli import guarded
from minimistral.data.corpus import build_corpus, windows
from minimistral.data.retrieval import filler_sentences, parse_shares
from minimistral.data.sources import PROSE_FILES
from minimistral.evaluate.loss import model_score, token_bytes, validation_windows, with_total
from minimistral.files import format_table
from minimistral.longctx.passkey import FILLER, PASSKEY_METRICS, passkey_accuracy
from minimistral.longctx.positions import long_context_teacher
from minimistral.paths import runs_dir
from minimistral.pretrain import pretrain
from minimistral.scales import SCALES, PretrainScale

DEPTHS = (0.0, 1 / 3, 2 / 3, 1.0)
SHORT, LONG = (128, 256), (512, 1024)


def heldout_filler(corpus) -> list[str]:
    """Sentences of the validation plays and poem, in order: prose the parent never trained on."""
    val = corpus.val_docs
    return [s for text, src in zip(val["text"], val["source"], strict=True) if src in PROSE_FILES
            for s in filler_sentences(text)]  # fmt: skip


def passkey_rows(model, tokenizer, lengths, sentences, n: int, **labels) -> list[dict]:
    grid = passkey_accuracy(model, tokenizer, lengths, DEPTHS, n=n, filler=sentences)
    return [
        labels | {"length": length, "depth": round(depth, 3)} | {k: float(grid[k][i, j]) for k in PASSKEY_METRICS}
        for i, length in enumerate(lengths)
        for j, depth in enumerate(DEPTHS)
    ]


def print_passkey(rows: list[dict]) -> None:
    """exact match per (teacher, filler, length) and depth, and the mean first-digit accuracy and gain."""
    keys = sorted({(r["variant"], r["filler"], r["length"]) for r in rows}, key=lambda k: (k[2], k[0], k[1]))
    table = [("variant", "filler", "length", *(f"exact@{d:.2f}" for d in DEPTHS), "exact", "first", "gain")]
    for key in keys:
        mine = [r for r in rows if (r["variant"], r["filler"], r["length"]) == key]
        mean = {k: sum(r[k] for r in mine) / len(mine) for k in ("exact", "first", "gain")}
        table.append((*key[:2], str(key[2]), *(f"{r['exact']:.2f}" for r in mine), *(f"{mean[k]:.2f}" for k in mean)))
    print(format_table(table, left=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--name", required=True, help="run name: runs/retrieval-<name>")
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--warmup", type=int, default=40)
    p.add_argument("--lr", type=float, default=3e-3, help="peak lr (the parent's 3e-3); ends at a tenth")
    p.add_argument("--retrieval", default="passkey=0.04,kv=0.015,repeat=0.015", help="kind=share,...; or none")
    p.add_argument("--n", type=int, default=20, help="passkey examples per cell")
    p.add_argument("--long", action="store_true", help="also 512 and 1,024 tokens with the yarn and window teachers")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--init", default=None, help="start from this checkpoint (a copy-first phase), not at random")
    p.add_argument(
        "--copy-share",
        type=float,
        default=0.0,
        help="share of training windows that are copy_onset.py's (spans of 16, no gap), kept in the mixture",
    )
    p.add_argument("--copy-pool", type=int, default=3996, help="the ids those windows copy (copy_onset.py --pool)")
    args = p.parse_args()
    if not 0 <= args.copy_share < 1:
        p.error("--copy-share must be in [0, 1)")

    shares = parse_shares(args.retrieval)
    corpus = build_corpus(retrieval=shares)
    out = runs_dir() / f"retrieval-{args.name}"
    scale = PretrainScale(steps=args.steps, warmup_steps=args.warmup, lr=args.lr, min_lr=args.lr / 10, eval_every=50,
                          ckpt_every=50)  # fmt: skip
    name = f"retrieval-{args.name}"
    SCALES[name] = dataclasses.replace(SCALES["default"], name=name, pretrain=scale)  # pretrain() looks scales up
    t0 = time.perf_counter()
    extra = None
    if args.copy_share:
        n_prose = len(windows(corpus.train, scale.seq_len))  # the corpus's training windows, as pretrain cuts them
        n_copy = round(n_prose * args.copy_share / (1 - args.copy_share))
        extra = copy_windows(n_copy, span=16, pool=args.copy_pool, seed=2, width=scale.seq_len + 1)[0]
        print(f"{n_copy:,} synthetic copy windows beside {n_prose:,} of the corpus ({args.copy_share:.0%})")
    ckpt = pretrain(name, out=out, corpus=corpus, compile=not args.no_compile, init=args.init, extra_windows=extra)
    train_s = time.perf_counter() - t0
    model = from_pretrained(ckpt, device="cpu")

    t0 = time.perf_counter()
    nbytes = token_bytes(corpus.tokenizer, corpus.vocab_size)
    val = validation_windows(corpus, scale.seq_len)
    scores = with_total({src: model_score(model, w, nbytes) for src, w in val.items()})
    fillers = {"classic": list(FILLER), "heldout-prose": heldout_filler(corpus)}
    rows = []
    for fname, filler in fillers.items():
        rows += passkey_rows(model, corpus.tokenizer, SHORT, filler, args.n, variant="parent", filler=fname)
        if args.long:
            for variant in ("yarn", "window"):
                teacher = long_context_teacher(model, variant)
                rows += passkey_rows(teacher, corpus.tokenizer, LONG, filler, args.n, variant=variant, filler=fname)
    eval_s = time.perf_counter() - t0

    state = json.loads((ckpt / "trainer_state.json").read_text())
    report = {
        "name": args.name,
        "retrieval": shares,
        "init": args.init,
        "copy_share": args.copy_share,
        "copy_pool": args.copy_pool,
        "scale": asdict(scale),
        "steps": state["step"],
        "train_tokens": state["tokens"],
        "train_seconds_this_call": train_s,
        "eval_seconds": eval_s,
        "mixture": corpus.report,
        "heldout": {src: sc.as_dict() for src, sc in scores.items()},
        "passkey": rows,
    }
    (out / "retrieval_eval.json").write_text(json.dumps(report, indent=1))
    print(f"\n{args.name}: retrieval {shares or 'none'}, {state['step']} steps, {state['tokens']:,} tokens")
    print(f"training {train_s / 60:.1f} min (this call), evaluation {eval_s / 60:.1f} min")
    print(format_table([("source", "loss", "bits/byte")] + [
        (s, f"{sc.loss:.3f}", f"{sc.bits_per_byte:.3f}") for s, sc in scores.items()], left=1))  # fmt: skip
    print_passkey(rows)


if __name__ == "__main__":
    sys.exit(guarded(main))  # a bad checkpoint or argument: one line, exit 2
