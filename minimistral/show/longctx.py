"""Figures of ``notebooks/05_long_context.ipynb`` (paper §2 and §3.1; docs/paper.md §1.1, §2).

Each function takes numbers computed by the library (``longctx.positions``, ``arch.rope``) or read
back from the study's tables (``longctx.report``) and returns a matplotlib Figure; the notebook
saves it with ``style.save``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from minimistral.show.style import CHILD_COLOURS

METHOD_STYLE = {  # frequency scaling -> (colour, line width, alpha, marker): wide pale lines under YaRN's dots
    "none": ("black", 5, 0.25, None),
    "linear": ("tab:blue", 5, 0.35, None),
    "yarn": ("tab:red", 1.2, 1.0, "o"),
}
VARIANT_COLOURS = {
    "plain": "tab:blue",
    "linear": "tab:green",
    "yarn": "tab:red",
    "window": "black",
    "yarn+temp": "tab:red",
    "linear+temp": "tab:green",
    "none": "tab:gray",
}


def _window_line(ax, window: int, label: str = " trained window") -> None:
    ax.axvline(window, color="black", lw=0.8, ls=":")
    ax.text(window, 1.0, label, transform=ax.get_xaxis_transform(), fontsize=8, va="top")


def frequency_ramp_figure(ratios: Mapping, turns, low: float, high: float, beta_fast: float, beta_slow: float):
    r"""Left: $\omega'_i / \omega_i$ per channel pair for no scaling, linear interpolation and YaRN
    (``positions.frequency_ratios``); YaRN's ramp (pairs ``low`` to ``high``) shaded. Right: the turns each
    pair makes inside the trained window, with YaRN's thresholds ``beta_fast`` and ``beta_slow``."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10.5, 3.6))
    pairs = range(len(turns))
    for method, (colour, lw, alpha, marker) in METHOD_STYLE.items():
        a.plot(pairs, ratios[method], color=colour, lw=lw, alpha=alpha, marker=marker, ms=4, label=method)
    a.axvspan(low, high, color="tab:red", alpha=0.08, lw=0, label="YaRN's ramp")
    a.set_xlabel("channel pair i (fast → slow)")
    a.set_ylabel(r"$\omega'_i / \omega_i$")
    a.set_title("scaled frequency / original", fontsize=10)
    a.legend(loc="upper left", bbox_to_anchor=(0.0, -0.2), ncol=4, frameon=False, fontsize=8)
    b.semilogy(pairs, turns, "k.-")
    for level, name in ((beta_fast, "beta_fast"), (beta_slow, "beta_slow")):
        b.axhline(level, color="tab:red", ls=":", lw=1)
        b.text(
            len(turns) - 1,
            level,
            f"{name} = {level:g} turn{'s' if level != 1 else ''}",
            va="bottom",
            ha="right",
            fontsize=8,
        )
    b.set_xlabel("channel pair i")
    b.set_ylabel("turns inside the trained window")
    b.set_title("why the ramp sits where it does", fontsize=10)
    fig.tight_layout()
    return fig


def temperature_figure(panels: Sequence[tuple]):
    r"""The query temperature $\tau(p)$ against position, one panel per ``(positions, tau, title)``, on one y scale."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import StrMethodFormatter

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.2), squeeze=False, sharey=True)
    for ax, (p, tau, title) in zip(axes[0], panels, strict=True):
        ax.plot(p, tau, color="tab:purple")
        ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        ax.set_xlabel("position p")
        ax.set_ylabel(r"$\tau(p)$")
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def attention_entropy_figure(entropy: Mapping, window: int, smooth: int = 16):
    """Attention entropy per query position (``positions.attention_entropy`` averaged over layers), one line per
    variant, ``smooth``-position moving average. A ``+temp`` variant equals its plain one inside the window
    (the temperature is 1 there), so it is drawn from ``window`` on only; lines are labelled at their right end."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8.5, 3.8))
    ends = []
    for name, h in entropy.items():
        y = np.convolve(np.asarray(h, dtype=float), np.ones(smooth) / smooth, mode="valid")
        x = np.arange(len(y)) + smooth // 2
        keep = x >= window if name.endswith("+temp") else x >= 0
        colour = VARIANT_COLOURS[name.removesuffix("+temp")]
        ax.plot(x[keep], y[keep], color=colour, ls="--" if name.endswith("+temp") else "-")
        ends.append((y[-1], x[-1], name, colour))
    low, high = ax.get_ylim()
    previous = -np.inf
    for y, x, name, colour in sorted(ends):  # labels at the lines' right ends, at least 4% of the axis apart
        previous = max(y, previous + 0.04 * (high - low))
        ax.text(x + 8, previous, name, color=colour, va="center", fontsize=8)
    _window_line(ax, window)
    ax.set_xlim(0, len(entropy[next(iter(entropy))]) * 1.13)
    ax.set_xlabel("query position")
    ax.set_ylabel("attention entropy (nats)")
    fig.tight_layout()
    return fig


def teacher_variants_figure(losses: Mapping, window: int, bucket: int, shown: Sequence[str] | None = None):
    """The parent's held-out loss per position bucket under each positional variant (``compare_variants``).

    ``shown`` picks the variants drawn (default: all). Markers differ, and the first variant is drawn as
    large open circles, so a variant equal to another in some buckets (the sliding window equals plain RoPE
    inside the window) stays visible; the legend sits right of the axes.
    """
    import matplotlib.pyplot as plt

    markers = ("o", "s", "^", "D", "v", "P", "X")
    fig, ax = plt.subplots(figsize=(8.5, 3.6))
    for k, name in enumerate(shown or list(losses)):
        y = [float(v) for v in losses[name]]
        x = [i * bucket + bucket / 2 for i in range(len(y))]
        big = k == 0
        ax.plot(
            x,
            y,
            color=VARIANT_COLOURS.get(name.removesuffix("+temp"), "tab:olive"),
            marker=markers[k % 7],
            ms=11 if big else 5,
            mfc="none" if big else None,
            lw=1.2,
            label=name,
        )
    _window_line(ax, window)
    ax.set_xlabel("position (bucket centre)")
    ax.set_ylabel("held-out loss (nats)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def before_after_figure(curves: Mapping, window: int, parent: tuple | None = None):
    """Loss per position bucket, one panel per child: before the long stage (Short, plain RoPE; dashed, open
    markers) and after it (Base, YaRN + temperature; solid). ``curves`` maps child -> {"before": (x, y),
    "after": (x, y)} (``report.bucket_curve``); ``parent`` (x, y) is drawn in grey in every panel."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.4), sharey=True, squeeze=False)
    for ax, (child, c) in zip(axes[0], curves.items(), strict=True):
        colour = CHILD_COLOURS[child]
        if parent is not None:
            ax.plot(*parent, color="0.6", lw=1, marker=".", ms=4)
        ax.plot(*c["before"], color=colour, ls="--", marker="o", mfc="white", ms=5)
        ax.plot(*c["after"], color=colour, ls="-", marker="o", ms=3)
        _window_line(ax, window, "")
        ax.set_title(child, fontsize=10, color=colour)
        ax.set_xlabel("position (bucket start)")
    axes[0, 0].set_ylabel("held-out loss (nats)")
    handles = [
        Line2D([], [], color="grey", ls="--", marker="o", mfc="white", label="before: Short, plain RoPE"),
        Line2D([], [], color="grey", ls="-", marker="o", ms=3, label="after: Base, YaRN x4 + temperature"),
        Line2D([], [], color="0.6", lw=1, marker=".", label="the parent (plain RoPE)"),
        Line2D([], [], color="black", lw=0.8, ls=":", label="trained window"),
    ][: 4 if parent is not None else 2]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4, frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def ablation_figure(panels: Mapping, reference: str, window: int):
    """The tiny-3b ablation as differences from ``reference``: one panel per stage, loss of each variant minus
    the reference's, per position bucket (0 = as good as the reference; above = worse).

    ``panels`` maps a panel title -> {variant: (x, y)} (``report.bucket_curve``), each holding ``reference``.
    """
    import matplotlib.pyplot as plt

    markers = ("o", "s", "^", "D")
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.4), sharey=True, squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels.items(), strict=True):
        rx, ry = curves[reference]
        ax.axhline(0, color="black", lw=1, label=f"{reference} (reference)")
        others = [v for v in curves if v != reference]
        for k, variant in enumerate(others):
            x, y = curves[variant]
            if list(x) != list(rx):
                raise ValueError(f"{variant}: its buckets differ from {reference}'s")
            d = [a - b for a, b in zip(y, ry, strict=True)]
            ax.plot(x, d, color=VARIANT_COLOURS[variant], marker=markers[k % 4], ms=5, label=variant)
        _window_line(ax, window, "")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("position (bucket start)")
    axes[0, 0].set_ylabel(f"loss − {reference} (nats)")
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def passkey_heatmaps(
    panels: Sequence,
    lengths: Sequence[int],
    depths: Sequence[float],
    window: int,
    ncols: int = 4,
    label: str = "exact match",
):
    """One heatmap per ``(title, grid, rows)`` (``report.passkey_grid``: lengths down, depths across; values 0-1,
    written in the cells as %); ``rows`` are the row indices the panel's claim is about, outlined in red. A dashed
    line separates the lengths inside ``window`` from those past it; ``None`` leaves a panel for the colour bar."""
    import math

    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Rectangle

    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.1 * ncols, 2.8 * nrows), squeeze=False)
    im, spare = None, []
    past = sum(1 for n in lengths if n <= window) - 0.5  # between the rows inside and past the window
    for ax, panel in zip(axes.flat, [*panels] + [None] * (nrows * ncols - len(panels)), strict=True):
        if panel is None:
            ax.axis("off")
            spare.append(ax)
            continue
        title, grid, rows = panel
        g = 100 * np.asarray(grid, dtype=float)
        im = ax.imshow(g, vmin=0, vmax=100, cmap="viridis", origin="lower", aspect="auto")
        for (i, j), v in np.ndenumerate(g):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8, color="white" if v < 60 else "black")
        ax.axhline(past, color="white", lw=1.5, ls="--")
        for i in rows:
            ax.add_patch(Rectangle((-0.5, i - 0.5), len(depths), 1, fill=False, edgecolor="red", lw=2, clip_on=False))
        ax.set_xticks(range(len(depths)), [f"{d:.2f}" for d in depths], fontsize=8)
        ax.set_yticks(range(len(lengths)), [f"{n:,}" for n in lengths], fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("depth of the key", fontsize=8)
        ax.set_ylabel("context length", fontsize=8)
    fig.tight_layout()
    if im is not None:
        where = dict(ax=spare[0], fraction=0.6, aspect=12) if spare else dict(ax=axes.ravel().tolist())
        fig.colorbar(im, label=f"passkey {label} (%)", **where)
    return fig
