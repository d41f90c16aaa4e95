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

from dataclasses import asdict
from pathlib import Path

import torch

from minimistral.arch.hub import from_pretrained
from minimistral.arch.model import Ministral3
from minimistral.cascade.pipeline import CHILDREN, PARENT, Cascade, Stage
from minimistral.evaluate.cache import cached
from minimistral.longctx.passkey import passkey_accuracy
from minimistral.longctx.positions import position_bucket_loss, rescaled, spread
from minimistral.scales import LongScale, get_scale
from minimistral.train import CHECKPOINT

ABLATION_CHILD = "tiny-3b"
# name -> with_position_scaling arguments; "yarn+temp" is the cascade's own long stage
VARIANTS: dict[str, dict] = {
    "yarn+temp": dict(method="yarn", temperature=True),
    "yarn": dict(method="yarn", temperature=False),
    "linear+temp": dict(method="linear", temperature=True),
    "none": dict(method="none", temperature=False),
}


def variant_dir(cascade: Cascade, name: str) -> Path:
    """The ablation's run directory; ``yarn+temp`` is the cascade's own tiny-3b long stage."""
    if name == "yarn+temp":
        return cascade.stage_dir(Stage(ABLATION_CHILD, "long"))
    return cascade.root / "longctx" / name.replace("+", "_")


def run_variant(cascade: Cascade, name: str) -> Path:
    """tiny-3b's long stage under variant ``name``: same Short checkpoint, windows, teacher and schedule."""
    short = cascade.checkpoint(Stage(ABLATION_CHILD, "short"))
    if name == "yarn+temp":
        return cascade.extend_long(short, ABLATION_CHILD)
    desc = f"long-context ablation {name} ({cascade.scale_name})"

    def student() -> Ministral3:
        return rescaled(from_pretrained(short, device=cascade.device), **VARIANTS[name])

    return cascade.distill_stage(Stage(ABLATION_CHILD, "long"), student, variant_dir(cascade, name), desc)


def _measure(checkpoint: Path, scaling: dict | None, cascade: Cascade, s: LongScale, **labels) -> tuple[list, list]:
    """Bucket-loss rows and passkey rows of one checkpoint (rescaled training-free by ``scaling`` if given)."""

    def compute() -> dict:
        model = from_pretrained(checkpoint, device=cascade.device).eval()
        model = rescaled(model, **scaling) if scaling else model
        windows = spread(cascade.data.val_long, s.windows).to(cascade.device)
        grid = passkey_accuracy(model, cascade.corpus.tokenizer, s.lengths, s.depths, n=s.passkeys)
        return {
            "buckets": position_bucket_loss(model, windows, s.bucket).tolist(),
            "passkey": {k: v.tolist() for k, v in grid.items()},
        }

    spec = {"variant": scaling, "scale": asdict(s), "corpus": cascade.corpus.key}
    m = cached(checkpoint, "longctx", spec, compute)
    buckets = [labels | {"start": i * s.bucket, "loss": round(v, 4)} for i, v in enumerate(m["buckets"])]
    passkey = []
    for i, length in enumerate(s.lengths):
        for j, depth in enumerate(s.depths):
            cell = {k: round(v[i][j], 4) for k, v in m["passkey"].items()}
            passkey.append(labels | {"length": length, "depth": depth} | cell)
    return buckets, passkey


@torch.no_grad()
def measure(cascade: Cascade, scale: str) -> dict[str, list[dict]]:
    """The before/after measurements of every child and the tiny-3b ablation (trained and training-free)."""
    s = get_scale(scale).longctx
    buckets, passkey = [], []

    def add(checkpoint: Path, scaling: dict | None = None, **labels) -> None:
        b, p = _measure(checkpoint, scaling, cascade, s, **labels)
        buckets.extend(b)
        passkey.extend(p)

    add(cascade.parent_checkpoint, child=PARENT, variant="as trained (plain RoPE)", stage="parent")
    for child in CHILDREN:
        add(cascade.checkpoint(Stage(child, "short")), child=child, variant="as trained (plain RoPE)", stage="before")
        add(cascade.checkpoint(Stage(child, "long")), child=child, variant="yarn+temp", stage="after")
    short = cascade.checkpoint(Stage(ABLATION_CHILD, "short"))
    for name, args in VARIANTS.items():
        add(short, args, child=ABLATION_CHILD, variant=name, stage="before (training-free)")
        if name != "yarn+temp":
            add(variant_dir(cascade, name) / CHECKPOINT, child=ABLATION_CHILD, variant=name, stage="after")
    return {"longctx_buckets": buckets, "longctx_passkey": passkey}


def run_longctx_study(cascade: Cascade, scale: str) -> dict[str, list[dict]]:
    """Train the ablation runs (resumable), then measure; returns the tables."""
    for name in VARIANTS:
        run_variant(cascade, name)
    return measure(cascade, scale)
