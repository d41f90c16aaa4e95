"""One figure style for every notebook, and one way to save a figure where the scale's figures go."""

from __future__ import annotations

from pathlib import Path

from minimistral.paths import figures_dir

RC = {"figure.dpi": 110, "savefig.dpi": 130, "font.size": 10, "axes.spines.top": False, "axes.spines.right": False}
CHILD_COLOURS = {"tiny-24b": "black", "tiny-14b": "#1f77b4", "tiny-8b": "#2ca02c", "tiny-3b": "#d62728"}


def use_style() -> None:
    """Apply ``RC`` to matplotlib (every notebook calls this once)."""
    import matplotlib.pyplot as plt

    plt.rcParams.update(RC)


def save(fig, name: str, scale: str) -> Path:
    """Save ``fig`` as ``<figures_dir(scale)>/<name>.png`` (``figures/`` at the default scale only); returns it."""
    d = figures_dir(scale)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}.png"
    fig.savefig(path, bbox_inches="tight")
    return path
