"""Figures of ``notebooks/02_pretraining.ipynb`` (paper §3, docs/paper.md §2): the parent's data, tokenizer,
training curve and held-out scores. Each function takes numbers the library computed and returns a Figure;
the notebook saves it with ``style.save``. ``copy_marked`` shows a retrieval document as text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise

SOURCE_COLOURS = {"shakespeare": "tab:red", "milton": "tab:purple", "math": "tab:green"}
RETRIEVAL_COLOUR = "tab:orange"  # every retrieval/<kind> row of the mixture
MODEL_COLOURS = {"bigram": "tab:grey", "unigram": "lightgrey"}  # the parent is drawn in tab:blue
MARKS = ("⟦", "⟧")  # around the span a retrieval document copies, at both its occurrences


def copy_marked(tokenizer, ids: Sequence[int], source: int, answer: int, size: int) -> str:
    """The text of a retrieval document with ``MARKS`` around the copied span and around its copy.

    ``ids[answer : answer + size]`` repeats ``ids[source : source + size]`` (``data.retrieval.RetrievalDocument``);
    ``tokenizer`` is the corpus's ``tokenizers.Tokenizer`` (special tokens are dropped when decoding).
    """
    if not (source >= 0 and source + size <= answer and answer + size <= len(ids)):
        raise ValueError(f"need source + size <= answer and answer + size <= {len(ids)}: {source}, {answer}, {size}")
    ids = [int(i) for i in ids]
    cuts = (0, source, source + size, answer, answer + size, len(ids))
    parts = [tokenizer.decode(ids[a:b]) for a, b in pairwise(cuts)]
    left, right = MARKS
    return f"{parts[0]}{left}{parts[1]}{right}{parts[2]}{left}{parts[3]}{right}{parts[4]}"


def _colour(source: str) -> str:
    return SOURCE_COLOURS.get(source, RETRIEVAL_COLOUR)


def mixture_figure(rows: Sequence[Mapping]):
    """Horizontal bars: each source's actual share of the training tokens, its target as a black tick.

    ``rows`` are ``Corpus.report`` rows (``source``, ``documents``, ``tokens``, ``epochs``, ``weight``, ``fraction``);
    each bar is labelled with its share, tokens and documents.
    """
    import matplotlib.pyplot as plt

    rows = list(rows)[::-1]  # first row on top
    y = range(len(rows))
    total = sum(r["tokens"] * r["epochs"] for r in rows)
    fig, ax = plt.subplots(figsize=(8.5, 0.45 * len(rows) + 1.3))
    ax.barh(y, [r["fraction"] for r in rows], color=[_colour(r["source"]) for r in rows], height=0.62)
    ax.scatter([r["weight"] for r in rows], y, marker="|", s=420, color="black", linewidths=2, zorder=3)
    for i, r in enumerate(rows):
        label = f"{r['fraction']:.1%}: {r['tokens'] * r['epochs']:,} tokens, {r['documents']:,} docs"
        ax.text(max(r["fraction"], r["weight"]) + 0.008, i, label, va="center", fontsize=8)
    ax.set_yticks(list(y), [r["source"] for r in rows])
    ax.set_xlim(0, max(r["fraction"] for r in rows) * 1.55)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.set_xlabel("share of the training tokens (bar: actual; black tick: target)")
    ax.set_title(f"The training mixture: {total:,} tokens")
    fig.tight_layout()
    return fig


def bytes_per_token_figure(bpt: Mapping[str, Mapping[str, float]]):
    """Grouped bars: UTF-8 bytes per token of each tokenizer (inner keys) on each source (outer keys)."""
    import matplotlib.pyplot as plt
    import numpy as np

    sources = list(bpt)
    labels = list(next(iter(bpt.values())))
    x, width = np.arange(len(sources)), 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for j, (label, colour) in enumerate(zip(labels, ["tab:blue", "tab:orange"], strict=False)):
        vals = [bpt[s][label] for s in sources]
        at = x + (j - (len(labels) - 1) / 2) * width
        ax.bar(at, vals, width=width, color=colour, label=label)
        for xi, v in zip(at, vals, strict=True):
            ax.text(xi, v + 0.04, f"{v:.2f}", ha="center", fontsize=8)
    ax.set_xticks(x, sources)
    ax.set_ylabel("UTF-8 bytes per token")
    ax.set_ylim(0, max(max(v.values()) for v in bpt.values()) * 1.15)
    ax.set_title("Compression on the held-out documents (higher: more text per token)")
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def training_curve_figure(
    train: Sequence[tuple[int, float]],
    val: Sequence[tuple[int, float]],
    baselines: Mapping[str, float],
    final: tuple[int, float],
    title: str,
):
    """Loss against tokens seen: training (thin), periodic validation (dots), the final evaluation (star),
    and each baseline's held-out loss as a labelled horizontal line. Lines are labelled directly.

    ``train`` and ``val`` are ``(tokens, loss)`` pairs; ``final`` is ``(tokens, loss)`` of the last evaluation.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    tx, ty = zip(*train, strict=True)
    ax.plot([t / 1e6 for t in tx], ty, color="tab:blue", lw=1, alpha=0.55)
    ax.text(tx[0] / 1e6, ty[0], "  training loss", color="tab:blue", fontsize=8, va="center")
    if val:
        vx, vy = zip(*val, strict=True)
        ax.plot([t / 1e6 for t in vx], vy, "o-", color="tab:red", lw=1.8, ms=4)
        ax.annotate(
            "held-out loss", (vx[0] / 1e6, vy[0]), xytext=(4, -8), textcoords="offset points", color="tab:red",
            fontsize=8, va="top",
        )  # fmt: skip
    ax.plot([final[0] / 1e6], [final[1]], "*", color="black", ms=12, zorder=4)
    ax.annotate(
        f"final evaluation: {final[1]:.2f}", (final[0] / 1e6, final[1]), xytext=(-10, 14), textcoords="offset points",
        ha="right", va="bottom", fontsize=8, arrowprops={"arrowstyle": "-", "color": "grey"},
    )  # fmt: skip
    for (name, loss), ls in zip(baselines.items(), (":", "--", "-."), strict=False):
        ax.axhline(loss, color="dimgrey", ls=ls, lw=1.2)
        ax.text(tx[-1] / 1e6, loss + 0.04, f"{name}: {loss:.2f}", ha="right", va="bottom", fontsize=8, color="dimgrey")
    ax.set_xlim(0, tx[-1] / 1e6 * 1.02)
    ax.set_xlabel("tokens seen (millions)")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def bits_per_byte_figure(bpb: Mapping[str, Mapping[str, float]], parent: str, title: str):
    """Grouped bars: held-out bits per byte per source for the parent and each baseline, values on the bars.

    ``bpb`` is model -> source -> bits per byte (``pretrain_eval.csv``); the parent comes first, in blue.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    models = [parent, *(m for m in bpb if m != parent)]
    colours = [MODEL_COLOURS.get(m, "tab:blue") for m in models]
    sources = list(bpb[parent])
    x, width = np.arange(len(sources)), 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(8.5, 3.8))
    for j, (model, colour) in enumerate(zip(models, colours, strict=True)):
        vals = [bpb[model][s] for s in sources]
        at = x + (j - (len(models) - 1) / 2) * width
        ax.bar(at, vals, width=width, color=colour, label=model, edgecolor="dimgrey", lw=0.5)
        for xi, v in zip(at, vals, strict=True):
            ax.text(xi, v + 0.03, f"{v:.2f}", ha="center", fontsize=7)
    ax.set_xticks(x, sources)
    ax.set_ylabel("bits per byte (lower is better)")
    ax.set_ylim(0, max(bpb[m][s] for m in models for s in sources) * 1.12)
    ax.set_title(title)
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig
