"""Figures of ``notebooks/04_cascade_distillation.ipynb`` (paper §3.1, Figures 1-2, Table 3; docs/paper.md §3).

Each function takes the cascade's tables (``cascade.report``, read back with ``files.read_csv``) or
validation curves (``cascade.claims.validation_curve``) and returns a matplotlib Figure; the
notebook saves it with ``style.save``.
"""

from __future__ import annotations

from minimistral.cascade.pipeline import CHILDREN
from minimistral.cascade.report import stage_ema
from minimistral.show.style import CHILD_COLOURS

KIND_LABEL = {"short": "Short 256", "long": "Base 1,024"}  # stage kind -> its window, as the spans say
KIND_HATCH = {"init": "//", "short": "", "long": ".."}
RUN_COLOURS = {
    "cascade": CHILD_COLOURS["tiny-3b"],
    "scratch": "black",
    "scratch_4x": "tab:gray",
    "pruned_ntp": "tab:purple",
    "kd_ntp": "tab:cyan",
    "direct": "tab:brown",
}


def figure2_curve(curve: list[dict], alpha: float = 0.05):
    """The Figure 2 analogue: the student's training cross-entropy along the cascade against the teacher's.

    ``curve`` is ``cascade_curve`` (one row per step). x: cumulative training tokens. Per stage, the
    student's cross-entropy at every step (faint), its EMA restarted at the stage's first step
    (``report.stage_ema``; the child's colour) and the teacher's EMA on the same batches (black,
    dashed). Base stages (1,024-token windows) are shaded; every span is labelled above the axes.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    student, teacher = stage_ema(curve, "ntp", alpha), stage_ema(curve, "teacher_ce", alpha)
    fig, ax = plt.subplots(figsize=(10, 4.4))
    start = 0.0  # where the stage begins: the previous stage's last token
    for stage in student:
        rows = [r for r in curve if r["stage"] == stage]
        child, kind = stage.rsplit("-", 1)
        x = [float(r["tokens"]) / 1e6 for r in rows]
        colour = CHILD_COLOURS[child]
        ax.plot(x, [float(r["ntp"]) for r in rows], color=colour, lw=0.6, alpha=0.3)
        ax.plot(x, student[stage], color=colour, lw=2)
        ax.plot(x, teacher[stage], color="black", lw=1.1, ls="--")
        if kind == "long":
            ax.axvspan(start, x[-1], color="0.85", lw=0, zorder=0)
        else:
            ax.axvline(start, color=colour, lw=1, ls=":")
        label = f"{child}\n{KIND_LABEL[kind]}" if kind == "short" else KIND_LABEL[kind].replace(" ", "\n")
        ax.text(
            (start + x[-1]) / 2,
            1.01,
            label,
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=8,
            color=colour,
        )
        start = x[-1]
    ax.set_xlim(0, max(float(r["tokens"]) for r in curve) / 1e6)
    ax.set_xlabel("cumulative training tokens of the cascade (millions); dotted lines: prunes; grey: Base stages")
    ax.set_ylabel("training cross-entropy (nats)")
    handles = [
        Line2D([], [], color="grey", lw=0.6, alpha=0.5, label="student, every step"),
        Line2D([], [], color="grey", lw=2, label="student, EMA per stage (colour: child)"),
        Line2D([], [], color="black", lw=1.1, ls="--", label="teacher (the parent) on the same batches, EMA"),
    ]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def checkpoints_figure(stages: list[dict], column: str = "overall_bpb"):
    """Every checkpoint's held-out score (``cascade_stages``): Init, Short, Base bars per child; the parent, a line."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    parent = next(float(r[column]) for r in stages if r["stage"] == "parent")
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.27
    for i, child in enumerate(CHILDREN):
        for j, kind in enumerate(("init", "short", "long")):
            value = next(float(r[column]) for r in stages if r["model"] == f"{child}-{kind}")
            x = i + (j - 1) * width
            ax.bar(
                x,
                value,
                width * 0.92,
                color=CHILD_COLOURS[child],
                alpha=0.85,
                hatch=KIND_HATCH[kind],
                edgecolor="white",
            )
            ax.text(x, value, f"{value:.2f}", ha="center", va="bottom", fontsize=8)
    ax.axhline(parent, color="black", lw=1, ls="--")
    ax.text(len(CHILDREN) - 0.5, parent, f" parent {parent:.2f}", va="center", fontsize=8)
    ax.set_xticks(range(len(CHILDREN)), CHILDREN)
    ax.set_xlim(-0.5, len(CHILDREN) - 0.5)
    ax.set_ylabel("held-out bits per byte (lower is better)")
    handles = [
        Patch(facecolor="grey", hatch=KIND_HATCH[k], edgecolor="white", label=lab)
        for k, lab in (("init", "Init (pruned)"), ("short", "Short (KD, 256)"), ("long", "Base (KD, 1,024)"))
    ]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def claims_figure(curves: dict[str, list[tuple[int, float]]], budget: int, seeds: dict[str, list] | None = None):
    """tiny-3b's held-out loss against training tokens for every claim run (``claims.validation_curve``).

    ``curves`` maps run name -> ``[(tokens, loss)]`` (``cascade`` is the cascade's tiny-3b Short);
    ``seeds`` maps a run name to the curves of its seeded repeats (thin lines of the same colour).
    Left: every run, the budget ``B`` marked. Right: the runs that start from a pruned model (all but
    ``scratch*``), as their loss minus the cascade's at the same token counts, so gaps of a few
    hundredths of a nat stay visible.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import StrMethodFormatter

    fig, (ax, dx) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1.2, 1]})
    reference = dict(curves["cascade"])
    for name, points in curves.items():
        colour, main = RUN_COLOURS.get(name, "tab:olive"), name == "cascade"
        style = dict(color=colour, lw=2.4 if main else 1.3, marker="o" if main else ".", ms=3, zorder=3 if main else 2)
        ax.plot(*zip(*points, strict=True), label=name + (" (tiny-3b Short)" if main else ""), **style)
        for extra in (seeds or {}).get(name, []):
            ax.plot(*zip(*extra, strict=True), color=colour, lw=0.8, alpha=0.6)
        if name.startswith("scratch"):
            continue
        if not main:
            dx.plot([t for t, _ in points], [v - reference[t] for t, v in points], **style)
        for extra in (seeds or {}).get(name, []):
            dx.plot([t for t, _ in extra], [v - reference[t] for t, v in extra], color=colour, lw=0.8, alpha=0.6)
    dx.axhline(0, color=RUN_COLOURS["cascade"], lw=2.4)
    for a in (ax, dx):
        a.axvline(budget, color="black", lw=0.8, ls=":")
        a.text(budget, 1.0, " budget B", transform=a.get_xaxis_transform(), va="top", fontsize=8)
        a.set_xlabel("training tokens")
        a.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.set_ylabel("held-out next-token loss (nats)")
    dx.set_ylabel("loss minus the cascade's (nats)")
    dx.set_title("the runs from a pruned model, minus the cascade", fontsize=9)
    fig.legend(
        *ax.get_legend_handles_labels(),
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=6,
        frameon=False,
        fontsize=8,
        title="thin lines: other seeds" if seeds else None,
        title_fontsize=8,
    )
    fig.tight_layout()
    return fig
