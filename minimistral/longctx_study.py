"""Measuring the long-context stage of the cascade (paper 2 and 3.1; notebook 05).

For every child, before the stage (its Short checkpoint, positions as trained: plain RoPE
on 256 tokens) and after it (its Base checkpoint: YaRN x4 and the temperature, distilled on
1,024-token windows of whole books), on held-out books:

* the next-token loss per position bucket up to 1,024 tokens;
* passkey retrieval over a grid of context lengths and depths of the key.

The ablation retrains tiny-3b's long stage from the same Short checkpoint, on the same
windows, under the other position variants: YaRN without the temperature, linear position
interpolation (with the temperature), and no scaling at all (RoPE extrapolated, no
temperature); and, training-free, applies each variant to the Short checkpoint.
Runs live under ``<cascade root>/longctx/<variant>``; tables go to CSV.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from minimistral.cascade import CHILDREN, Cascade, Stage
from minimistral.hub import from_pretrained
from minimistral.longctx import passkey_accuracy, position_bucket_loss, rescaled, spread
from minimistral.model import Ministral3
from minimistral.train import CHECKPOINT

ABLATION_CHILD = "tiny-3b"
# name -> with_position_scaling arguments; "yarn+temp" is the cascade's own long stage
VARIANTS: dict[str, dict] = {
    "yarn+temp": dict(method="yarn", temperature=True),
    "yarn": dict(method="yarn", temperature=False),
    "linear+temp": dict(method="linear", temperature=True),
    "none": dict(method="none", temperature=False),
}


@dataclass(frozen=True)
class LongScale:
    """How much to measure: held-out long windows for the bucket loss, passkey grid and examples per cell."""

    windows: int = 16
    bucket: int = 128
    lengths: tuple[int, ...] = (128, 256, 512, 1024)
    depths: tuple[float, ...] = (0.0, 1 / 3, 2 / 3, 1.0)
    passkeys: int = 8


LONG_SCALES = {
    "ci": LongScale(windows=2, bucket=256, lengths=(128, 512), depths=(0.0, 1.0), passkeys=2),
    "default": LongScale(),
}


def variant_dir(cascade: Cascade, name: str) -> Path:
    """The ablation's run directory; ``yarn+temp`` is the cascade's own tiny-3b long stage."""
    if name == "yarn+temp":
        return cascade.stage_dir(Stage(ABLATION_CHILD, "long"))
    return cascade.root / "longctx" / name.replace("+", "_")


def run_variant(cascade: Cascade, name: str) -> Path:
    """tiny-3b's long stage under variant ``name``: same Short checkpoint, windows, teacher and schedule."""
    if name == "yarn+temp":
        return cascade.run(until=Stage(ABLATION_CHILD, "long").name)[Stage(ABLATION_CHILD, "long").name]
    stage = Stage(ABLATION_CHILD, "long")
    short = from_pretrained(cascade.checkpoint(Stage(ABLATION_CHILD, "short")), device=cascade.device)
    desc = f"long-context ablation {name} ({cascade.scale_name})"
    return cascade.distill_stage(stage, rescaled(short, **VARIANTS[name]), variant_dir(cascade, name), desc)


def _measure(model: Ministral3, cascade: Cascade, s: LongScale, **labels) -> tuple[list[dict], list[dict]]:
    """Bucket-loss rows and passkey rows of one model, tagged with ``labels``."""
    windows = spread(cascade.data.val_long, s.windows).to(cascade.device)
    losses = position_bucket_loss(model, windows, s.bucket)
    buckets = [labels | {"start": i * s.bucket, "loss": round(v.item(), 4)} for i, v in enumerate(losses)]
    grid = passkey_accuracy(model, cascade.corpus.tokenizer, s.lengths, s.depths, n=s.passkeys)
    passkey = []
    for i, length in enumerate(s.lengths):
        for j, depth in enumerate(s.depths):
            cell = {k: round(v[i, j].item(), 4) for k, v in grid.items()}
            passkey.append(labels | {"length": length, "depth": depth} | cell)
    return buckets, passkey


@torch.no_grad()
def measure(cascade: Cascade, scale: str) -> dict[str, list[dict]]:
    """The before/after measurements of every child and the tiny-3b ablation (trained and training-free)."""
    s = LONG_SCALES[scale]
    buckets, passkey = [], []

    def add(model, **labels):
        b, p = _measure(model.eval(), cascade, s, **labels)
        buckets.extend(b)
        passkey.extend(p)

    for child in CHILDREN:
        short = from_pretrained(cascade.checkpoint(Stage(child, "short")), device=cascade.device)
        add(short, child=child, variant="as trained (plain RoPE)", stage="before")
        base = from_pretrained(cascade.checkpoint(Stage(child, "long")), device=cascade.device)
        add(base, child=child, variant="yarn+temp", stage="after")
    short = from_pretrained(cascade.checkpoint(Stage(ABLATION_CHILD, "short")), device=cascade.device)
    for name, args in VARIANTS.items():
        add(rescaled(short, **args), child=ABLATION_CHILD, variant=name, stage="before (training-free)")
        if name != "yarn+temp":
            model = from_pretrained(variant_dir(cascade, name) / CHECKPOINT, device=cascade.device)
            add(model, child=ABLATION_CHILD, variant=name, stage="after")
    return {"longctx_buckets": buckets, "longctx_passkey": passkey}


def run_longctx_study(cascade: Cascade, scale: str) -> dict[str, list[dict]]:
    """Train the ablation runs (resumable), then measure; returns the tables."""
    for name in VARIANTS:
        run_variant(cascade, name)
    return measure(cascade, scale)
