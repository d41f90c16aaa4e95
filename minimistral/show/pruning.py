"""Figures of ``notebooks/03_pruning.ipynb`` (paper §3.1, Algorithm 2; docs/paper.md §4): what each pruning
heuristic measures on the parent and what the study measured after pruning. Each function takes numbers the
library computed (``prune.heuristics``, ``prune.baselines``, the ``pruning_*.csv`` tables) and returns a Figure;
the notebook saves it with ``style.save``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from minimistral.show.style import CHILD_COLOURS

# The paper's method of each step in black, its baselines in colours; one marker per method.
METHOD_STYLE = {
    "out/in": ("black", "o"),
    "pca": ("black", "o"),
    "activation": ("black", "o"),
    "in/out": ("tab:red", "s"),
    "block_influence": ("tab:cyan", "D"),
    "counterfactual": ("tab:green", "^"),
    "counterfactual_iterative": ("tab:olive", "v"),
    "magnitude": ("tab:purple", "P"),
    "first": ("tab:grey", "X"),
    "random": ("tab:grey", "X"),
}


def layer_scores_figure(
    scores: Mapping[str, Sequence[float]], dropped: Mapping[str, Mapping[str, Sequence[int]]], title: str
):
    """One row per layer criterion: each layer's rank within the row as colour, the raw score as text, and
    outlines on the layers each target drops (``dropped[criterion][target]``, targets in ``CHILD_COLOURS``).
    """
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch, Rectangle

    names = list(scores)
    raw = np.array([np.asarray(scores[n], dtype=float) for n in names])  # [criteria, layers]
    n_layers = raw.shape[1]
    ranks = raw.argsort(1).argsort(1)  # 0 = lowest score (dropped first)
    targets = list(next(iter(dropped.values())))
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(names) + 2.2))
    im = ax.imshow(ranks, cmap="viridis", aspect="auto", vmin=0, vmax=n_layers - 1)
    for r, name in enumerate(names):
        for i in range(n_layers):
            colour = "white" if ranks[r, i] < 0.6 * (n_layers - 1) else "black"
            ax.text(i, r, f"{raw[r, i]:.3g}", ha="center", va="center", fontsize=8, color=colour)
        for k, target in enumerate(targets):  # nested outlines: the first target's is the outermost
            inset = 0.06 + 0.09 * k
            for i in dropped[name][target]:
                box = Rectangle((i - 0.5 + inset, r - 0.5 + inset), 1 - 2 * inset, 1 - 2 * inset, fill=False)
                box.set(edgecolor=CHILD_COLOURS[target], lw=2.2)
                ax.add_patch(box)
    ax.set_xticks(range(n_layers), [f"layer {i}" for i in range(n_layers)])
    ax.set_yticks(range(len(names)), names)
    ax.set_title(title)
    cbar = fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02)
    cbar.set_label(f"rank within the row\n(0 = dropped first, {n_layers - 1} = kept first)")
    handles = [Patch(facecolor="none", edgecolor=CHILD_COLOURS[t], lw=2.2, label=f"dropped for {t}") for t in targets]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=len(targets), frameon=False)
    fig.tight_layout()
    return fig


def pca_energy_figure(shares: Mapping[str, Sequence[float]], cuts: Mapping[str, int], title: str):
    """Share of the residual stream's energy kept against the hidden size kept, one line per way of choosing
    the kept directions (``shares[label][d - 1]``), with the targets' cuts as dotted lines; legend below.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    styles = [("black", "-", 2.2), ("tab:blue", "--", 1.4), ("tab:purple", "-", 1.2), ("tab:grey", "-", 1.2)]
    D = len(next(iter(shares.values())))
    d = np.arange(1, D + 1)
    sizes = " / ".join(str(c) for c in cuts.values())
    fig, ax = plt.subplots(figsize=(8.5, 5))
    for (label, share), (colour, ls, lw) in zip(shares.items(), styles, strict=False):
        at_cuts = ", ".join(f"{share[c - 1]:.1%}" for c in cuts.values())
        ax.plot(d, share, color=colour, ls=ls, lw=lw, label=f"{label}: {at_cuts} at d = {sizes}")
    for target, cut in cuts.items():
        ax.axvline(cut, color=CHILD_COLOURS[target], ls=":", lw=1.5)
        ax.text(cut, 0.03, f" {target}: d = {cut} ", color=CHILD_COLOURS[target], fontsize=8, rotation=90,
                ha="right", va="bottom")  # fmt: skip
    ax.set_xlim(0, D)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"hidden size kept, d (of {D})")
    ax.set_ylabel("share of the residual stream's energy kept")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def site_energy_figure(kept: Mapping[str, Sequence[float]], pooled: Mapping[str, float], sites: Sequence[str]):
    """Grouped bars: the share of each norm site's own energy that the global basis keeps at each target's cut
    (``kept[target][site]``), with the pooled share of every target as a dashed line of its colour.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(sites))
    width = 0.8 / len(kept)
    fig, ax = plt.subplots(figsize=(11, 4.4))
    for k, (target, share) in enumerate(kept.items()):
        colour = CHILD_COLOURS[target]
        ax.bar(x + (k - (len(kept) - 1) / 2) * width, share, width=width, color=colour, label=f"{target}: each site")
        ax.axhline(pooled[target], color=colour, ls="--", lw=1.2, label=f"{target}: all sites pooled")
    ax.set_xticks(x, sites, rotation=60, fontsize=8)
    ax.set_xlim(-0.6, len(sites) - 0.4)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("share of the site's energy kept")
    ax.set_xlabel("norm site (layer.attention / layer.ffn input)")
    ax.set_title("How much of each norm input the one pooled PCA basis keeps")
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def ffn_importance_figure(importance: Sequence[Sequence[float]], cuts: Mapping[str, int], title: str):
    """One histogram per layer of FFN unit importance relative to the layer's median unit (log x), with a
    dashed line per target at the weakest unit it keeps; each panel's title gives the share the smallest cut keeps.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import NullFormatter

    n_layers = len(importance)
    cols = (n_layers + 1) // 2
    smallest = min(cuts.values())
    fig, axes = plt.subplots(2, cols, figsize=(3.4 * cols, 6), sharey=True, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n_layers:
            ax.axis("off")
            continue
        s = np.sort(np.asarray(importance[i], dtype=float))[::-1]
        rel = s / np.median(s)
        positive = rel[rel > 0]
        ax.hist(positive, bins=np.geomspace(positive.min(), positive.max(), 50), color="lightsteelblue",
                edgecolor="steelblue", lw=0.4)  # fmt: skip
        ax.set_xscale("log")
        wide = positive.max() / positive.min() > 10**3.5  # then one tick per decade, or the labels collide
        steps = (0.001, 0.01, 0.1, 1, 10, 100, 1000) if wide else (0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100)
        ticks = [v for v in steps if positive.min() <= v <= positive.max()]
        ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        for target, k in cuts.items():
            ax.axvline(rel[k - 1], color=CHILD_COLOURS[target], lw=1.5, ls="--")
        ax.set_title(f"layer {i}: top {smallest} hold {s[:smallest].sum() / s.sum():.0%}", fontsize=9)
        if i % cols == 0:
            ax.set_ylabel("units")
        if i >= n_layers - cols:
            ax.set_xlabel("importance / layer median")
    handles = [
        plt.Line2D([], [], color=CHILD_COLOURS[t], ls="--", label=f"{t}: keeps the {k} units right of the line")
        for t, k in cuts.items()
    ]
    fig.legend(handles=handles, loc="lower center", ncols=len(cuts), frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def full_pipeline_figure(
    losses: Mapping[str, Mapping[str, float]], parent_loss: float, paper: str, labels: Mapping[str, str]
):
    """One panel per target: horizontal bars of each recipe's held-out loss increase over the unpruned parent
    (``losses[recipe][target] - parent_loss``, linear, 0 = the parent), the paper's recipe in black, values on the bars.

    Each panel has its own x range, so compare recipes within a target; ``labels[target]`` titles its panel.
    """
    import matplotlib.pyplot as plt

    recipes = list(losses)
    targets = list(labels)
    colours = ["black" if r == paper else "tab:grey" for r in recipes]
    fig, axes = plt.subplots(1, len(targets), figsize=(3.2 * len(targets) + 2.6, 0.42 * len(recipes) + 1.8),
                             sharey=True, squeeze=False)  # fmt: skip
    for ax, target in zip(axes[0], targets, strict=True):
        rise = [losses[r][target] - parent_loss for r in recipes]
        y = range(len(recipes))
        ax.barh(y, rise, color=colours, height=0.65)
        right = max(max(rise), 0) * 1.45 or 1
        for yi, v in zip(y, rise, strict=True):
            ax.text(max(v, 0) + right * 0.02, yi, f"{v:+.3f}", va="center", fontsize=8)
        ax.set_xlim(min(min(rise), 0) * 1.2, right)
        ax.set_title(labels[target], fontsize=9)
        ax.set_xlabel("loss increase (nats)")
        ax.grid(alpha=0.3, axis="x")
    axes[0][0].set_yticks(range(len(recipes)), recipes)
    axes[0][0].invert_yaxis()
    fig.suptitle(
        f"Algorithm 2 from the parent to each target, before distillation: held-out loss minus the unpruned "
        f"parent's {parent_loss:.2f} (0 = the parent)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def loss_vs_ratio_figure(
    curves: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]],
    parent_loss: float,
    marks: Mapping[str, Mapping[str, float]],
    titles: Mapping[str, str],
):
    """One panel per pruning step: held-out loss (log y) against the fraction removed, one line per method
    (``curves[step][method]`` = ``(removed, loss)`` points), starting at the parent; ``marks[step][target]`` is
    the fraction each target removes. Methods are nudged sideways a little so that tied points stay visible.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    fig, axes = plt.subplots(1, len(curves), figsize=(5.2 * len(curves), 5.4), sharey=True, squeeze=False)
    for ax, (step, methods) in zip(axes[0], curves.items(), strict=True):
        nudge = 0.012 * (len(methods) - 1) / 2
        for j, (method, pts) in enumerate(methods.items()):
            colour, marker = METHOD_STYLE.get(method, ("tab:brown", "o"))
            shift = 0.012 * j - nudge
            xs = [0.0] + [x + shift for x, _ in sorted(pts)]
            ys = [parent_loss] + [y for _, y in sorted(pts)]
            lw = 2.2 if colour == "black" else 1.2
            ax.plot(xs, ys, color=colour, marker=marker, ms=5, lw=lw, mfc="white", label=method, zorder=3 + lw)
        for target, x in marks.get(step, {}).items():
            ax.axvline(x, color=CHILD_COLOURS[target], ls=":", lw=1.3)
            ax.text(x, 0.99, f" {target}", color=CHILD_COLOURS[target], fontsize=8, rotation=90, va="top",
                    transform=ax.get_xaxis_transform())  # fmt: skip
        ax.axhline(parent_loss, color="tab:green", ls="--", lw=1)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs="all"))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"fraction of {titles[step]}")
        ax.set_title(f"{step}: one step alone", fontsize=10)
        ax.legend(frameon=False, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel(f"held-out loss (log scale; dashed: parent, {parent_loss:.2f})")
    fig.tight_layout()
    return fig
