"""The figures and printouts of notebook 06 (vision): patches, 2D RoPE, the merger, token layout, shares, accuracy.

Each function returns a matplotlib Figure (the notebook saves it with ``style.save``) or a string.
"""

from __future__ import annotations

import numpy as np
import torch

from minimistral.show.style import CHILD_COLOURS
from minimistral.vision.config import VisionConfig
from minimistral.vision.encoder import axial_rope
from minimistral.vision.images import IMG_BREAK, IMG_END

TOKEN_NAMES = {IMG_BREAK: "[IMG_BREAK]", IMG_END: "[IMG_END]"}


def plot_patches(image: np.ndarray, cfg: VisionConfig):
    """The image with its patch grid (thin) and its merged-token grid (thick): 4 patches become 1 token."""
    import matplotlib.pyplot as plt

    h, w = image.shape[:2]
    fig, ax = plt.subplots(figsize=(1.6 + w / 22, 0.6 + h / 22), layout="constrained")
    ax.imshow(image, cmap="gray")
    for step, lw, colour in ((cfg.patch_size, 0.6, "tab:orange"), (cfg.merged_patch, 2.0, "tab:red")):
        for x in range(0, w + 1, step):
            ax.axvline(x - 0.5, color=colour, lw=lw)
        for y in range(0, h + 1, step):
            ax.axhline(y - 0.5, color=colour, lw=lw)
    ax.set(xticks=[], yticks=[], title=f"{h // cfg.patch_size}x{w // cfg.patch_size} patches of {cfg.patch_size} px "
           f"-> {h // cfg.merged_patch}x{w // cfg.merged_patch} image tokens")  # fmt: skip
    return fig


def plot_axial_rope(rows: int, cols: int, cfg: VisionConfig, pairs: tuple[int, ...] = (0, 1, 4, 5)):
    """cos of the rotation angle of a few channel pairs over the patch grid: even pairs turn with the row,
    odd pairs with the column; higher pairs turn more slowly."""
    import matplotlib.pyplot as plt

    cos, _ = axial_rope(rows, cols, cfg.head_dim, cfg.rope_theta)  # [rows * cols, head_dim]
    quarter = cfg.head_dim // 4
    fig, axes = plt.subplots(1, len(pairs), figsize=(2.4 * len(pairs), 2.2), layout="constrained")
    for ax, j in zip(axes, pairs, strict=True):
        channel = j // 2 + (quarter if j % 2 else 0)  # pair j: row frequency j (even) or column frequency j (odd)
        ax.imshow(cos[:, channel].reshape(rows, cols), cmap="RdBu", vmin=-1, vmax=1)
        ax.set(title=f"pair {j}: {'row' if j % 2 == 0 else 'column'}", xticks=[], yticks=[])
    return fig


def merger_example(d: int = 2) -> str:
    """A 2x2 block of patches with ``d`` features each, and the one vector the merger's linear layer reads."""
    grid = torch.arange(4 * d).reshape(2, 2, d)  # [rows, cols, d]: patch (r, c) holds r*2d + c*d + i
    from einops import rearrange

    merged = rearrange(grid, "(r kr) (c kc) d -> (r c) (d kr kc)", kr=2, kc=2)[0]
    lines = [f"patch (row {r}, col {c}): {grid[r, c].tolist()}" for r in range(2) for c in range(2)]
    return "\n".join([*lines, f"merged input (channel-major, then row, column): {merged.tolist()}"])


def token_layout(ids: list[int], image_token_id: int = 10) -> str:
    """The image's tokens as lines: ``[IMG]`` per merged patch, each row closed by a break or the end."""
    out, line = [], []
    for t in ids:
        line.append("[IMG]" if t == image_token_id else TOKEN_NAMES.get(t, str(t)))
        if t in TOKEN_NAMES:
            out.append(" ".join(line))
            line = []
    return "\n".join(out + ([" ".join(line)] if line else []))


def plot_parameter_shares(splits: dict[str, dict[str, int]]):
    """Horizontal stacked bars: the language model, the Pixtral encoder and the projector, share of each model."""
    import matplotlib.pyplot as plt

    parts = ("language model", "vision encoder", "projector")
    colours = ("#bbbbbb", "tab:orange", "tab:red")
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.5 * len(splits)), layout="constrained")
    for i, split in enumerate(splits.values()):
        total, left = sum(split.values()), 0.0
        for part, colour in zip(parts, colours, strict=True):
            share = split[part] / total
            ax.barh(i, share, left=left, color=colour, label=part if i == 0 else None)
            if part != "language model":
                ax.text(left + share + 0.004, i, f"{100 * share:.1f}%", va="center", fontsize=8)
            left += share
    ax.set(yticks=range(len(splits)), yticklabels=list(splits), xlim=(0.85, 1.0), xlabel="share of parameters")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return fig


def plot_accuracy(rows: list[dict], kinds: tuple[str, ...]):
    """Held-out accuracy per question kind: one bar group per model; chance, majority and text only as lines."""
    import matplotlib.pyplot as plt

    models = [r for r in rows if r["recipe"] in ("parent: new ViT + projector", "paper")]
    baselines = {r["model"] if r["model"] != "tiny-24b" else "text only": r for r in rows if r not in models}
    fig, axes = plt.subplots(1, len(kinds), figsize=(2.6 * len(kinds), 2.8), layout="constrained", sharey=True)
    for ax, kind in zip(axes, kinds, strict=True):
        names = [r["model"] for r in models]
        ax.bar(names, [100 * float(r[kind]) for r in models], color=[CHILD_COLOURS[n] for n in names])
        for (label, r), ls in zip(baselines.items(), (":", "--", "-."), strict=False):
            ax.axhline(100 * float(r[kind]), color="grey", ls=ls, lw=1, label=label)
        ax.set_title(kind)
        ax.tick_params(axis="x", rotation=45)
    axes[0].set_ylabel("exact match (%)")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return fig


def plot_answer_attention(image: np.ndarray, grid: np.ndarray, title: str):
    """The image beside the attention an answer token pays to each image token, on the token grid."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(7, 1.6), layout="constrained")
    a.imshow(image, cmap="gray")
    a.set(xticks=[], yticks=[], title="image")
    shown = b.imshow(grid, cmap="viridis")
    b.set(xticks=[], yticks=[], title=title)
    fig.colorbar(shown, ax=b, shrink=0.8)
    return fig
