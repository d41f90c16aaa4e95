"""Figures of ``notebooks/01_architecture.ipynb`` (paper section 2, docs/paper.md §1): each takes data computed by
the library (``minimistral.show.explain``, ``minimistral.arch.attention_maps``) and returns a matplotlib Figure.
"""

from __future__ import annotations

from collections.abc import Sequence

from minimistral.arch.config import ModelConfig
from minimistral.data.tokenizer import Tokenizer
from minimistral.show.tokens import SHOW, token_pieces

REGION_COLOURS = {"extrapolated": "tab:blue", "blended": "tab:orange", "interpolated": "tab:red"}
GROUP_COLOURS = {"embeddings": "tab:green", "attention": "tab:blue", "ffn": "tab:orange", "norms": "tab:gray"}


def yarn_regions_figure(regions: dict, cfg: ModelConfig, name: str):
    """Per RoPE channel pair: YaRN ramp, wavelength against the window, and frequency before/after YaRN.

    ``regions`` is ``explain.yarn_regions(cfg)``; colour marks the region (kept, blended, divided by the factor).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    pair = regions["pair"].numpy()
    colour = [REGION_COLOURS[lab] for lab in regions["label"]]
    window, factor = regions["original_max"], regions["factor"]
    fig, axes = plt.subplots(3, 1, figsize=(8, 8.5), sharex=True)

    ax = axes[0]
    ax.bar(pair, regions["ramp"].numpy(), color=colour, width=0.85)
    ax.scatter(pair, regions["ramp"].numpy(), c=colour, s=10, zorder=3)  # ramp-0 pairs stay visible
    ax.set_ylabel("YaRN ramp r")
    ax.set_ylim(-0.05, 1.1)
    ax.set_title(f"{name}: RoPE channel pairs under YaRN (factor {factor:g}, window {window:,})")
    handles = [Patch(color=c, label=f"{k} ({regions['label'].count(k)} pairs)") for k, c in REGION_COLOURS.items()]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, frameon=False)

    ax = axes[1]
    ax.scatter(pair, regions["wavelength"].numpy(), c=colour, s=14, zorder=3)
    ax.set_yscale("log")
    for turns, ls in ((cfg.beta_fast, ":"), (cfg.beta_slow, "--")):
        ax.axhline(window / turns, color="grey", ls=ls, lw=1)
        what = f"{turns:g} turn{'s' if turns != 1 else ''} in the window"
        ax.text(
            pair[-1],
            window / turns / 2.2,
            f"L / {turns:g} = {window / turns:,.0f} tokens: {what}",
            fontsize=8,
            ha="right",
        )
    ax.set_ylabel("wavelength 2π/ω (tokens)")

    ax = axes[2]
    original = regions["original_frequency"].numpy()
    ax.plot(pair, original, color="black", lw=1.2)
    ax.plot(pair, original / factor, color="grey", lw=1, ls="--")
    ax.scatter(pair, regions["yarn_frequency"].numpy(), c=colour, s=14, zorder=3)
    at = len(pair) // 8  # label both lines on the left, where only the blue dots (on the black line) are
    ax.text(pair[at], original[at] * 4, "original ω = θ^(-2i/d)", ha="left", va="bottom", fontsize=8)
    ax.text(
        pair[at], original[at] / factor / 30, f"original ω / {factor:g}", ha="left", va="top", fontsize=8, color="grey"
    )
    ax.set_yscale("log")
    ax.set_ylabel("frequency ω (rad / token)")
    ax.set_xlabel("channel pair i (channels i and i + d/2); dots: YaRN's ω'")
    fig.tight_layout()
    return fig


def query_temperature_figure(schedule: dict, marks: dict[int, tuple[float, float]], name: str, beta: float):
    """The temperature τ(p) as stairs over a log position axis; ``marks`` is ``{position: (ours, paper)}``.

    ``schedule`` is ``explain.temperature_schedule(cfg)``.
    """
    import matplotlib.pyplot as plt

    edges = schedule["edges"].numpy().copy()
    window = int(edges[1])
    edges[0] = 1  # log axis: draw the first window from position 1
    tau = schedule["tau"].numpy()
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.stairs(tau, edges, color="tab:purple", lw=2, baseline=None)
    ax.set_xscale("log")
    ax.set_xlim(1, edges[-1] * 1.3)
    ax.set_ylim(0.98, 1.32)
    ax.set_xlabel("position p (log scale)")
    ax.set_ylabel("query temperature τ(p)")
    ax.set_title(f"Position-based softmax temperature, {name} (β = {beta:g}, window {window:,})")
    ax.axvline(window, color="grey", ls=":", lw=1)
    ax.text(window * 0.9, 1.005, f"end of the {window:,}-token\ntraining window", fontsize=8, color="grey", ha="right")
    for p, (ours, paper) in marks.items():
        ax.plot([p], [ours], "o", color="black", ms=4)
        ax.annotate(
            f"τ({p:,}) = {ours:.4f}\n(paper notes: {paper:.4f})",
            (p, ours),
            xytext=(-120, 14),
            textcoords="offset points",
            fontsize=8,
            arrowprops={"arrowstyle": "-", "color": "grey"},
        )
    last = int(edges[-1]) - 1
    ax.annotate(
        f"τ({last:,}) = {tau[-1]:.4f}",
        (edges[-1], tau[-1]),
        xytext=(10, 14),
        ha="right",
        textcoords="offset points",
        fontsize=8,
        arrowprops={"arrowstyle": "-", "color": "grey"},
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def gqa_heads_figure(kv_of: Sequence[int]):
    """Query heads (circles, top) joined to the KV head they read (squares, bottom); ``kv_of[h]`` is h's KV head."""
    import matplotlib.pyplot as plt
    import numpy as np

    n_q, n_kv = len(kv_of), max(kv_of) + 1
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(10, 3.6))
    q_x = np.arange(n_q)
    kv_x = (np.arange(n_kv) + 0.5) * n_q / n_kv - 0.5  # centre each KV head under its group
    for h, g in enumerate(kv_of):
        ax.plot([q_x[h], kv_x[g]], [1, 0], color=cmap(g % 10), lw=1.2, alpha=0.8)
    ax.scatter(q_x, np.ones(n_q), s=120, c=[cmap(g % 10) for g in kv_of], edgecolors="black", zorder=3)
    ax.scatter(
        kv_x, np.zeros(n_kv), s=500, c=[cmap(g % 10) for g in range(n_kv)], marker="s", edgecolors="black", zorder=3
    )
    for h in range(n_q):
        ax.text(q_x[h], 1.12, str(h), ha="center", fontsize=7)
    for g in range(n_kv):
        ax.text(kv_x[g], 0, str(g), ha="center", va="center", fontsize=9, color="white", weight="bold")
    ax.text(-2.5, 1, "query\nheads", ha="right", va="center")
    ax.text(-2.5, 0, "KV\nheads", ha="right", va="center")
    ax.set_xlim(-5, n_q)
    ax.set_ylim(-0.35, 1.35)
    ax.axis("off")
    ax.set_title(f"Grouped-query attention: {n_q} query heads read {n_kv} KV heads, in groups of {n_q // n_kv}")
    fig.tight_layout()
    return fig


def token_labels(tokenizer: Tokenizer, text: str) -> list[str]:
    """One readable label per token of ``tokenizer.encode(text)``: ``<s>`` first, then each token's text with
    a leading space shown as ``·`` and a newline as ``↵`` (``minimistral.show.tokens.SHOW``)."""
    pieces = ["".join(SHOW.get(ch, ch) for ch in piece) for piece in token_pieces(tokenizer, text)]
    return (["<s>"] if tokenizer.bos_id is not None else []) + pieces


def attention_maps_figure(maps: Sequence[tuple], labels: Sequence[str], columns: int = 2):
    """Attention heatmaps over one text, query rows against key columns, every token labelled on both axes.

    ``maps`` is a list of ``(probabilities [seq, seq], title)`` or ``(probabilities, title, targets)`` with
    ``targets`` a bool ``[seq, seq]`` of cells to ring in red (where a rule says the head should look); colour is
    P on a square-root scale so that small weights stay visible. Panels share axes; one colour bar on the right.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import PowerNorm

    n = len(labels)
    rows = -(-len(maps) // columns)
    size = max(5.0, 0.1 * n)  # inches per panel: 0.1 per token keeps every label legible
    fig, axes = plt.subplots(
        rows,
        columns,
        figsize=(size * columns + 1.2, size * rows),
        sharex=True,
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    norm = PowerNorm(0.5, vmin=0, vmax=1)
    for ax, (probs, title, *targets) in zip(axes.flat, maps, strict=False):
        im = ax.imshow(probs, cmap="viridis", norm=norm, interpolation="nearest")
        if targets:
            rows, cols = targets[0].nonzero(as_tuple=True)
            ax.scatter(cols, rows, s=14, marker="o", facecolors="none", edgecolors="red", linewidths=0.6)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(n), labels, rotation=90, fontsize=7, family="monospace")
        ax.set_yticks(range(n), labels, fontsize=7, family="monospace")
        ax.tick_params(length=1.5, pad=1, labelbottom=True, labelleft=True)
    for ax in axes.flat[len(maps) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("key (attended to)")
    for ax in axes[:, 0]:
        ax.set_ylabel("query (attending)")
    fig.colorbar(im, ax=axes, shrink=0.5, label="attention probability (square-root scale)")
    return fig


def parameter_breakdown_figure(shares: dict[str, dict[str, int]]):
    """Stacked bars: parameters (billions) per group for each model, ``shares`` from ``explain.parameter_shares``."""
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(shares)
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    bottom = np.zeros(len(names))
    for group, colour in GROUP_COLOURS.items():
        vals = np.array([shares[n][group] for n in names]) / 1e9
        ax.bar(names, vals, bottom=bottom, color=colour, label=group, width=0.6)
        for i, (v, b) in enumerate(zip(vals, bottom, strict=True)):
            if v > 0.9:  # label the segments tall enough to hold the text
                ax.text(i, b + v / 2, f"{v:.2f}B", ha="center", va="center", fontsize=8, color="white")
        bottom += vals
    for i, total in enumerate(bottom):
        ax.text(i, total + 0.3, f"{total:.2f}B", ha="center", fontsize=9, weight="bold")
    ax.set_ylabel("parameters (billions)")
    ax.set_title("Language-model parameters by component")
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="component (norms < 0.01%)")
    ax.set_ylim(0, bottom.max() * 1.12)
    fig.tight_layout()
    return fig
