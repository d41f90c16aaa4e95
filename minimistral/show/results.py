"""The figures of notebook 08: the paper's Tables 2-5 and figure read-offs, and our tiny analogues beside them.

Every function takes records (``evaluate.paper_tables`` or our result CSVs) and returns a Figure;
the notebook saves it with ``style.save``.
"""

from __future__ import annotations

import math

from minimistral.evaluate.paper_tables import base_rows
from minimistral.show.style import CHILD_COLOURS

FAMILY_STYLE = {  # family -> (colour, line style); Qwen 3 and Qwen3-VL share a hue
    "Ministral 3": ("#ff7000", "-"),
    "Qwen 3": ("#7b3294", "-"),
    "Qwen3-VL": ("#7b3294", "--"),
    "Gemma 3": ("#1b7837", "-"),
}
SOURCE_COLOURS = ("tab:purple", "tab:brown", "tab:olive", "tab:cyan", "tab:pink", "tab:gray")
PAPER_CHILD = {"Ministral 3 14B": "tiny-14b", "Ministral 3 8B": "tiny-8b", "Ministral 3 3B": "tiny-3b"}


def _billions(x, _pos=None) -> str:
    return f"{x / 1e9:g}B"


def plot_peers(records: list[dict], title: str, ncols: int = 3):
    """Small multiples: one panel per benchmark, score against parameters (log x), one line per family.

    ``records`` are ``paper_tables.paper_scores`` records. Filled markers are exact parameter counts,
    open ones the nominal size in the model's name; the legend sits in a spare panel or below the panels.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    benchmarks = list(dict.fromkeys(r["benchmark"] for r in records))
    families = [f for f in FAMILY_STYLE if any(r["family"] == f for r in records)]
    ncols = min(ncols, len(benchmarks))
    nrows = math.ceil(len(benchmarks) / ncols)
    size = (3.3 * ncols, 2.7 * nrows + 0.8)
    fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False, layout="constrained")
    for ax, bench in zip(axes.flat, benchmarks, strict=False):
        for fam in families:
            cell = [r for r in records if r["benchmark"] == bench and r["family"] == fam]
            pts = sorted((r["params"], r["score"], r["exact"]) for r in cell)
            if not pts:
                continue
            colour, ls = FAMILY_STYLE[fam]
            main = fam == "Ministral 3"  # the paper's family: drawn thicker and on top
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                color=colour,
                ls=ls,
                lw=2.2 if main else 1.3,
                zorder=3 if main else 2,
            )
            for xi, yi, ex in pts:
                ax.plot(xi, yi, "o", ms=5, color=colour, mfc=colour if ex else "white", zorder=4)
        ax.set_xscale("log")
        ax.set_xlim(1.6e9, 2e10)
        ax.xaxis.set_major_locator(FixedLocator([2e9, 4e9, 8e9, 16e9]))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(_billions))
        ax.set_title(bench, fontsize=9)
        ax.grid(alpha=0.3)
    spare = axes.flat[len(benchmarks) :]
    for ax in spare:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("score")
    for ax in axes.flat[max(0, len(benchmarks) - ncols) : len(benchmarks)]:  # the lowest panel of each column
        ax.set_xlabel("parameters")
    handles = [Line2D([], [], color=FAMILY_STYLE[f][0], ls=FAMILY_STYLE[f][1], lw=2, label=f) for f in families]
    handles += [
        Line2D([], [], ls="", marker="o", color="grey", label="exact LM count"),
        Line2D([], [], ls="", marker="o", color="grey", mfc="white", label="nominal size (from the name)"),
    ]
    if len(spare):  # an empty panel holds the legend
        spare[0].legend(handles=handles, loc="center", frameon=False)
    else:
        ncol = len(handles) if ncols >= 3 else 3  # one row under wide figures, two under narrow ones
        fig.legend(handles=handles, loc="outside lower center", ncol=ncol, frameon=False)
    fig.suptitle(title)
    return fig


def plot_fraction_of_teacher(paper: list[dict], ours: list[dict]):
    """Each child's score as a fraction of its teacher's, per evaluation: the paper's Table 3 above, ours below.

    ``paper`` and ours are ``paper_tables.fraction_of_teacher`` records; the paper's children take the
    colours of their tiny analogues. The x axis is shared; 1 (dotted) is the teacher's level.
    """
    import matplotlib.pyplot as plt

    panels = [
        ("paper Table 3: Ministral 3 Base / Mistral Small 3.1 24B", paper),
        ("ours: tiny Base children / tiny-24b (held-out data)", ours),
    ]
    heights = [len({r["evaluation"] for r in recs}) for _, recs in panels]
    fig, axes = plt.subplots(2, 1, figsize=(8.5, 0.3 * sum(heights) + 2.2), sharex=True,
                             gridspec_kw={"height_ratios": heights})  # fmt: skip
    for ax, (title, recs) in zip(axes, panels, strict=True):
        evals = list(dict.fromkeys(r["evaluation"] for r in recs))
        models = list(dict.fromkeys(r["model"] for r in recs))
        for k, model in enumerate(models):  # children side by side within a row, so none hides another
            colour = CHILD_COLOURS[PAPER_CHILD.get(model, model)]
            offset = (k - (len(models) - 1) / 2) * 0.22
            pts = [(r["fraction"], evals.index(r["evaluation"]) + offset) for r in recs if r["model"] == model]
            label = f"{model.removeprefix('Ministral 3 ')} / {PAPER_CHILD.get(model, model)}"
            ax.plot(*zip(*pts, strict=True), "o", ms=6, color=colour, label=label if ax is axes[0] else None)
        ax.axvline(1.0, color="black", lw=1, ls=":", zorder=1)  # under the dots
        ax.set_yticks(range(len(evals)), evals, fontsize=8)
        ax.set_ylim(len(evals) - 0.5, -0.5)
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(title, fontsize=9, loc="left")
    axes[-1].set_xlabel("child / teacher (for losses teacher / child): 1 = the teacher's level, below 1 = worse")
    fig.legend(loc="lower center", bbox_to_anchor=(0.55, 1.0), ncol=3, frameon=False)
    fig.tight_layout()
    return fig


def plot_score_vs_params(stages: list[dict]):
    """Our held-out bits per byte against parameters (log x), one line per source, for the parent and the
    three Base children (``cascade_stages.csv`` rows); each line is labelled at its right end."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    rows = sorted(base_rows(stages), key=lambda r: float(r["params"]))
    x = [float(r["params"]) for r in rows]
    sources = [k.removesuffix("_bpb") for k in rows[0] if k.endswith("_bpb")]
    colours = iter(SOURCE_COLOURS)  # not the children's colours: the lines here are sources
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for src in sources:
        y = [float(r[f"{src}_bpb"]) for r in rows]
        bold = src == "overall"
        colour = "black" if bold else next(colours)
        ax.plot(x, y, "o-", color=colour, lw=2.4 if bold else 1.3, ms=5)
        ax.annotate(src, (x[-1], y[-1]), xytext=(7, 0), textcoords="offset points", va="center", color=colour)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(x))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{r['model'].removesuffix('-long')}\n{float(r['params']) / 1e6:.1f}M" for r in rows])
    ax.set_xlim(x[0] / 1.25, x[-1] * 1.6)  # room for the labels at the right end
    ax.set_xlabel("parameters (the parent, and each child after its long-context stage: Base)")
    ax.set_ylabel("held-out bits per byte (lower is better)")
    ax.grid(alpha=0.3)
    ax.set_title("Our cascade: held-out bits per byte against parameters, per source")
    fig.tight_layout()
    return fig


def plot_teacher_choice(fig3: list[dict], fig4: list[dict]):
    """The student's score with one teacher minus with the other, per benchmark, in points (read-offs of the
    paper's Figures 3 and 4, ``paper_tables.read_offs``): two panels of horizontal bars on one x scale."""
    import matplotlib.pyplot as plt

    panels = [
        (fig3, "MS3.1 teacher", "MM3 teacher", "Figure 3, 14B student:\nSmall 3.1 teacher minus (larger) Medium 3"),
        (fig4, "MS3.1 Instruct teacher", "MS3.1 Base teacher", "Figure 4, 3B student:\nInstruct teacher minus Base"),
    ]
    n = [len({r["x"] for r in rows}) for rows, *_ in panels]
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 0.45 * max(n) + 1.8), sharex=True)
    for ax, (rows, a, b, title) in zip(axes, panels, strict=True):
        score = {(r["series"], r["x"]): r["y"] for r in rows}
        benches = list(dict.fromkeys(r["x"] for r in rows))
        diff = [100 * (score[a, bench] - score[b, bench]) for bench in benches]
        bars = ax.barh(range(len(benches)), diff, color="#ff7000", height=0.6)
        ax.bar_label(bars, labels=[f"{d:+.1f}" for d in diff], padding=3, fontsize=8)
        ax.set_yticks(range(len(benches)), benches, fontsize=8)
        ax.set_ylim(len(benches) - 0.5, -0.5)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_xlabel("difference in the student's score (points)")
    axes[0].set_xlim(min(0, *axes[0].get_xlim()), axes[0].get_xlim()[1] * 1.15)  # room for the bar labels
    fig.suptitle("Which teacher: read off the paper's figures, approximate", y=1.0)
    fig.tight_layout()
    return fig


def plot_tokens(fig5: list[dict]):
    """GPQA Diamond against mean output tokens (log x), Instruct models, each point labelled (read-offs of the
    paper's Figure 5, ``paper_tables.read_offs``)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    fig, ax = plt.subplots(figsize=(7.5, 4))
    for r in fig5:
        family = "Ministral 3" if r["series"].startswith("Ministral 3") else "Qwen3-VL"
        ax.plot(r["x"], r["y"], "o", ms=8, color=FAMILY_STYLE[family][0])
        name = r["series"].removesuffix(" Instruct")
        ax.annotate(f"  {name}", (r["x"], r["y"]), va="center", fontsize=9, color=FAMILY_STYLE[family][0])
    ax.set_xscale("log")
    ax.set_xlim(700, 6e4)
    ax.xaxis.set_major_locator(FixedLocator([1e3, 2e3, 5e3, 1e4, 2e4, 5e4]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
    ax.set_xlabel("mean output tokens per answer (log scale)")
    ax.set_ylabel("GPQA Diamond")
    ax.grid(alpha=0.3)
    ax.set_title("Figure 5: GPQA Diamond against output length, Instruct models\n(read off the figure, approximate)")
    fig.tight_layout()
    return fig


def plot_odpo_effect(fig6: list[dict], wins: list[dict]):
    """ODPO's effect by size: the paper's Figure 6 (its Reasoning models, after minus before, in points, per
    benchmark; read-offs) beside ours (the win rate after ODPO minus 50%, with its 95% interval, for the
    Reasoning and the Instruct models)."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.2))
    score = {(r["series"], r["x"]): r["y"] for r in fig6}
    benches = list(dict.fromkeys(r["x"] for r in fig6))
    for b, bench in enumerate(benches):
        sizes = [s for s in ("14B", "8B", "3B") if (f"{s} before ODPO", bench) in score]
        gains = [score[f"{s} after ODPO", bench] - score[f"{s} before ODPO", bench] for s in sizes]
        xs = [("14B", "8B", "3B").index(s) + (b - 0.5) * 0.38 for s in sizes]
        bars = left.bar(xs, gains, 0.36, label=bench, color=f"C{b}")
        left.bar_label(bars, labels=[f"{g:+.1f}" for g in gains], fontsize=8)
    left.set_xticks(range(3), ["14B", "8B", "3B"])
    left.set(ylabel="after minus before (points)", title="paper, Figure 6 (read off, approximate)")
    left.legend(frameon=False, fontsize=8)
    for k, kind in enumerate(("Reasoning", "Instruct")):  # ODPO ends both recipes; the paper's bars are Reasoning
        mine = [r for r in wins if r["kind"] == kind]
        ys = [100 * float(r["win_rate"]) - 50 for r in mine]
        err = [[y + 50 - 100 * float(r["ci_low"]) for y, r in zip(ys, mine, strict=True)],
               [100 * float(r["ci_high"]) - 50 - y for y, r in zip(ys, mine, strict=True)]]  # fmt: skip
        xs = [i + (k - 0.5) * 0.38 for i in range(len(mine))]
        right.bar(xs, ys, 0.36, color=("#d62728", "#2ca02c")[k], label=kind)
        right.errorbar(xs, ys, yerr=err, color="black", lw=1, capsize=3, ls="none")
    right.axhline(0, color="black", lw=0.8)
    right.set_xticks(range(len(mine)), [r["model"] for r in mine])
    right.legend(frameon=False, fontsize=8)
    right.set(ylabel="win rate after ODPO minus 50 (points)", title="ours: held-out rubric prompts")
    fig.tight_layout()
    return fig
