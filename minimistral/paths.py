"""Where things live: the checkout, runs, results, figures and the data cache (one place for every path).

- ``runs/`` (git-ignored): every checkpoint the pipeline trains, under the scale's name;
- ``data/results/`` (committed): the tables of the default run; other scales write theirs under ``runs/``;
- ``figures/`` (committed): the figures of the default run; other scales (CI) write under ``runs/``,
  so running the tests never rewrites a tracked file;
- ``data/cache/`` (git-ignored, ``MINIMISTRAL_CACHE`` moves it): fetched data and built corpora.
"""

from __future__ import annotations

import os
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
DEFAULT = "default"  # the scale whose results and figures are committed


def project_root() -> Path:
    """The checkout when the package runs from one (an editable install), else the working directory."""
    return CHECKOUT if (CHECKOUT / "pyproject.toml").is_file() else Path.cwd()


def runs_dir() -> Path:
    return project_root() / "runs"


def parent_dir(scale: str) -> Path:
    """The parent's pretraining run: ``runs/parent-<scale>``."""
    return runs_dir() / f"parent-{scale}"


def cascade_dir(scale: str) -> Path:
    """The cascade's stages, claims and ablations: ``runs/cascade-<scale>``."""
    return runs_dir() / f"cascade-{scale}"


def results_dir(scale: str) -> Path:
    """Tables: ``data/results`` for the default scale (committed), ``runs/results-<scale>`` otherwise."""
    return project_root() / "data" / "results" if scale == DEFAULT else runs_dir() / f"results-{scale}"


def figures_dir(scale: str) -> Path:
    """Figures: ``figures/`` for the default scale (committed), ``runs/figures-<scale>`` otherwise."""
    return project_root() / "figures" if scale == DEFAULT else runs_dir() / f"figures-{scale}"


def paper_dir() -> Path:
    """The paper's own tables as CSV (``data/paper``), each row with its source."""
    return project_root() / "data" / "paper"


def cache_root() -> Path:
    """``$MINIMISTRAL_CACHE``, else ``<checkout>/data/cache`` (git-ignored), else ``~/.cache/minimistral``."""
    if os.environ.get("MINIMISTRAL_CACHE"):
        return Path(os.environ["MINIMISTRAL_CACHE"]).expanduser()
    if (CHECKOUT / "pyproject.toml").is_file():
        return CHECKOUT / "data" / "cache"
    return Path.home() / ".cache" / "minimistral"
