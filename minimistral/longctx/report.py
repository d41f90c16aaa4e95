"""The long-context study's tables read back: loss curves, passkey grids and the passkey targets (notebook 05).

``longctx.study`` writes two tables, one row per measurement labelled by ``child`` (``tiny-24b`` is
the parent), ``variant`` and ``stage`` (``parent``; ``before``: a child's Short checkpoint as
trained, plain RoPE; ``after``: its Base checkpoint, YaRN x4 + temperature, or an ablation run;
``before (training-free)``: an ablation variant applied to tiny-3b Short without training):

- ``longctx_buckets``: ``start``, ``loss`` (next-token loss per position bucket);
- ``longctx_passkey``: ``length``, ``depth`` and each of ``passkey.PASSKEY_METRICS``.

Rows may hold strings (``files.read_csv``) or numbers (the tables ``study.measure`` returns).
"""

from __future__ import annotations

from statistics import fmean

from minimistral.arch.config import TINY_WINDOW
from minimistral.cascade.pipeline import CHILDREN, PARENT

AS_TRAINED, CHILD_AFTER = "as trained (plain RoPE)", "yarn+temp"  # the variants of the before/after rows
PARENT_TARGET = 0.9  # passkey exact match of the parent at every cell inside its window
CHILD_TARGET = 0.8  # of each child after the long stage, at the longest length, at every depth


def select(rows: list[dict], child: str, variant: str, stage: str) -> list[dict]:
    """The rows of one model: ``child`` under ``variant`` at ``stage``."""
    return [r for r in rows if (r["child"], r["variant"], r["stage"]) == (child, variant, stage)]


def bucket_curve(rows: list[dict], child: str, variant: str, stage: str) -> tuple[list[int], list[float]]:
    """``(bucket starts, losses)`` of one model from ``longctx_buckets`` rows, in position order."""
    pts = sorted((int(r["start"]), float(r["loss"])) for r in select(rows, child, variant, stage))
    return [p for p, _ in pts], [v for _, v in pts]


def window_means(rows: list[dict], child: str, variant: str, stage: str, window: int = TINY_WINDOW) -> dict:
    """Mean bucket loss inside the short window (buckets starting before ``window``) and past it (NaN if none)."""
    starts, losses = bucket_curve(rows, child, variant, stage)
    inside = [v for p, v in zip(starts, losses, strict=True) if p < window]
    past = [v for p, v in zip(starts, losses, strict=True) if p >= window]
    return {"inside": fmean(inside) if inside else float("nan"), "past": fmean(past) if past else float("nan")}


def passkey_grid(
    rows: list[dict], child: str, variant: str, stage: str, metric: str = "exact"
) -> tuple[list[int], list[float], list[list[float]]]:
    """``(lengths, depths, grid)`` of one model from ``longctx_passkey`` rows: ``grid[i][j]`` is ``metric`` at
    ``lengths[i]`` and ``depths[j]`` (NaN where a cell was not measured)."""
    mine = select(rows, child, variant, stage)
    lengths = sorted({int(r["length"]) for r in rows})
    depths = sorted({float(r["depth"]) for r in rows})
    grid = [[float("nan")] * len(depths) for _ in lengths]
    for r in mine:
        grid[lengths.index(int(r["length"]))][depths.index(float(r["depth"]))] = float(r[metric])
    return lengths, depths, grid


def passkey_targets(
    rows: list[dict], window: int = TINY_WINDOW, long: int | None = None, metric: str = "exact"
) -> list[dict]:
    """The passkey targets against what was measured, one row per model.

    - the parent: ``metric`` >= ``PARENT_TARGET`` at every measured cell with length <= ``window``;
    - each child after the long stage (Base, YaRN + temperature): >= ``CHILD_TARGET`` at length
      ``long`` (default: the longest measured) at every depth;
    - each child before it (Short, plain RoPE) at ``long``, for comparison (no target).

    Keys: model, stage, cells (where), n (cells), worst, mean, target (None without one), met
    (``worst >= target``; None without a target; False when no cell was measured).
    """
    long = long or max(int(r["length"]) for r in rows)

    def row(model: str, stage: str, variant: str, where: str, keep, target: float | None) -> dict:
        values = [float(r[metric]) for r in select(rows, model, variant, stage) if keep(int(r["length"]))]
        worst = min(values) if values else None
        met = None if target is None else worst is not None and worst >= target
        mean = fmean(values) if values else None
        return {
            "model": model,
            "stage": stage,
            "cells": where,
            "n": len(values),
            "worst": worst,
            "mean": mean,
            "target": target,
            "met": met,
        }

    out = [row(PARENT, "parent", AS_TRAINED, f"length <= {window:,}", lambda n: n <= window, PARENT_TARGET)]
    for child in CHILDREN:
        out.append(row(child, "before", AS_TRAINED, f"length {long:,}", lambda n: n == long, None))
        out.append(row(child, "after", CHILD_AFTER, f"length {long:,}", lambda n: n == long, CHILD_TARGET))
    return out
