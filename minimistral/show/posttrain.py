"""The figures and printouts of notebook 07 (post-training): the chat format, GRPO's clipped objective, the RL
curves, scores per stage, and the Figure 5 analogue (accuracy against output length).

Each function returns a matplotlib Figure (the notebook saves it with ``style.save``) or a string.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from minimistral.data.tokenizer import Tokenizer
from minimistral.posttrain.chat import token_names
from minimistral.show.style import CHILD_COLOURS


def rendered_chat(tokenizer: Tokenizer, ids: Sequence[int], learned: Sequence[bool], width: int = 100) -> str:
    """A conversation token by token, ``|`` between tokens: control tokens by name, the learned ones (the
    response the loss reads) in ``«»``, wrapped at ``width`` characters."""
    pieces, line, lines = token_names(tokenizer, ids), "", []
    for piece, learn in zip(pieces, learned, strict=True):
        cell = (f"«{piece}»" if learn else piece).replace("\n", "\\n") + "|"
        if len(line) + len(cell) > width:
            lines.append(line)
            line = ""
        line += cell
    return "\n".join([*lines, line])


def plot_clipped_objective(eps: float = 0.2):
    r"""GRPO's per-token objective $\min(\rho A, \mathrm{clip}(\rho, 1-\epsilon, 1+\epsilon) A)$ against the ratio
    $\rho$, for a better-than-average rollout ($A = 1$) and a worse one ($A = -1$): flat where the update stops."""
    import matplotlib.pyplot as plt

    rho = torch.linspace(0.5, 1.5, 201)
    fig, axes = plt.subplots(1, 2, figsize=(8, 2.8), sharey=True, layout="constrained")
    for ax, a in zip(axes, (1.0, -1.0), strict=True):
        objective = torch.minimum(rho * a, rho.clamp(1 - eps, 1 + eps) * a)
        ax.plot(rho, rho * a, ls=":", color="grey", label=r"$\rho A$ (unclipped)")
        ax.plot(rho, objective, color="tab:blue", lw=2, label="clipped objective")
        for x in (1 - eps, 1 + eps):
            ax.axvline(x, color="tab:orange", lw=0.8)
        ax.set(xlabel=r"ratio $\rho = \pi_\theta / \pi_{old}$", title=f"A = {a:+.0f}")
    axes[0].set_ylabel("objective (maximised)")
    axes[0].legend(frameon=False, fontsize=8)
    return fig


def plot_rl_curves(curves: Mapping[str, Mapping[str, list[dict]]], keys=("reward", "no_signal", "length")):
    """Per child (colour) and RL stage (solid: STEM, dashed: General), each logged quantity over GRPO iterations,
    the General stage drawn after the STEM one."""
    import matplotlib.pyplot as plt

    titles = {"reward": "mean reward of the rollouts", "no_signal": "groups with all-equal rewards",
              "length": "mean rollout length (tokens)", "truncated": "rollouts cut at the limit"}  # fmt: skip
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3), layout="constrained")
    for child, stages in curves.items():
        offset = 0
        for stage, rows in stages.items():
            steps = [offset + r["step"] for r in rows]
            for ax, key in zip(axes, keys, strict=True):
                ax.plot(steps, [r[key] for r in rows], color=CHILD_COLOURS.get(child, "grey"),
                        ls="-" if stage == "stem" else "--", label=f"{child} {stage}")  # fmt: skip
            offset = steps[-1] if steps else offset
    for ax, key in zip(axes, keys, strict=True):
        ax.set(xlabel="GRPO iteration (STEM, then General)", title=titles.get(key, key))
    axes[0].legend(frameon=False, fontsize=7)
    return fig


def plot_stage_scores(rows: Sequence[dict], stages: Sequence[str], columns=(("stem", "pass@1"), ("rubric", "pass@1"))):
    """Per child, the held-out score after each stage: one panel per (items, column) of ``posttrain_scores``."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3), layout="constrained")
    children = list(dict.fromkeys(r["model"] for r in rows if r["stage"] in stages))
    for ax, (task, column) in zip(axes, columns, strict=True):
        for child in children:
            ys = [next(float(r[column]) for r in rows if (r["model"], r["stage"], r["task"]) == (child, st, task))
                  for st in stages]  # fmt: skip
            ax.plot(range(len(stages)), [100 * y for y in ys], marker="o", color=CHILD_COLOURS.get(child), label=child)
        ax.set_xticks(range(len(stages)), stages)
        ax.set(ylabel=f"{column} (%)", title=f"held-out {'STEM problems' if task == 'stem' else 'rubric prompts'}")
    axes[0].legend(frameon=False, fontsize=8)
    return fig


def plot_accuracy_vs_tokens(rows: Sequence[dict], stages: Sequence[str], task: str = "stem", column: str = "pass@1"):
    """The Figure 5 analogue: held-out accuracy against mean output tokens, one path per child through ``stages``
    (open marker: the first stage; small dots: the middle ones; large: the last, the Reasoning model)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.6), layout="constrained")
    for child in dict.fromkeys(r["model"] for r in rows if r["stage"] in stages):
        points = [next((float(r["length"]), 100 * float(r[column])) for r in rows
                       if (r["model"], r["stage"], r["task"]) == (child, st, task)) for st in stages]  # fmt: skip
        colour = CHILD_COLOURS.get(child)
        ax.plot(*zip(*points, strict=True), color=colour, lw=1, alpha=0.7, marker=".", ms=5)
        ax.scatter(*points[0], s=50, facecolor="white", edgecolor=colour, zorder=3)
        ax.scatter(*points[-1], s=80, color=colour, label=child, zorder=3)
    ax.set(xlabel="mean output tokens per response", ylabel=f"held-out {task} {column} (%)",
           title=f"{stages[0]} (open) -> {' -> '.join(stages[1:])} (filled)")  # fmt: skip
    ax.set_ylim(bottom=0)
    ax.legend(frameon=False, fontsize=8)
    return fig


# ----------------------------------------------------------------------------- post-training II: the PWRM and ODPO
def plot_odpo_loss(beta: float = 0.1, probs=(1.0, 0.8, 0.5)):
    r"""ODPO's loss against the implicit reward margin $\Delta$ for a few judge probabilities $p$: each curve's
    minimum sits where $\sigma(\beta\Delta) = p$ (a hard label, $p = 1$, has none: it pulls forever)."""
    import matplotlib.pyplot as plt

    from minimistral.posttrain.odpo import odpo_loss

    delta = torch.linspace(-40, 40, 401, dtype=torch.float64)
    zeros = torch.zeros_like(delta)
    fig, ax = plt.subplots(figsize=(5, 3), layout="constrained")
    for p in probs:
        loss = [odpo_loss(d[None], zeros[:1], zeros[:1], zeros[:1], torch.tensor([p], dtype=torch.float64), beta)
                for d in delta]  # fmt: skip
        ax.plot(delta, torch.stack(loss), label=f"p = {p}")
        if 0 < p < 1:
            best = torch.logit(torch.tensor(p, dtype=torch.float64)) / beta
            ax.axvline(best, color=ax.lines[-1].get_color(), ls=":", lw=1)
    ax.set(xlabel=r"implicit reward margin $\Delta$ (nats)", ylabel="loss", title=f"ODPO loss, beta = {beta}")
    ax.legend(frameon=False, fontsize=8)
    return fig


def plot_reliability(bins: Sequence[dict]):
    """The PWRM's reliability diagram: observed share of wins against predicted probability per bin, with the raw
    logit and with the fitted temperature (the diagonal is perfect calibration; marker area ~ pairs in the bin)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4), layout="constrained")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    for kind, colour in (("raw", "tab:orange"), ("calibrated", "tab:blue")):
        mine = [b for b in bins if b["temperature"] == kind and int(b["count"])]
        xs, ys = [float(b["predicted"]) for b in mine], [float(b["observed"]) for b in mine]
        ax.plot(xs, ys, color=colour, lw=1)
        ax.scatter(xs, ys, s=[4 + int(b["count"]) / 2 for b in mine], color=colour, label=kind, zorder=3)
    ax.set(xlabel="PWRM's P(A wins)", ylabel="share of pairs A wins", xlim=(0, 1), ylim=(0, 1))
    ax.legend(frameon=False, fontsize=8)
    return fig


def plot_win_rates(rows: Sequence[dict]):
    """The Figure 6 analogue: per child, the win rate of the model after ODPO over before it on held-out rubric
    prompts (programmatic judge), with its 95% interval; 50% = no change."""
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    fig, ax = plt.subplots(figsize=(6, 3), layout="constrained")
    width = 0.8 / len(kinds)
    children = list(dict.fromkeys(r["model"] for r in rows))
    for k, kind in enumerate(kinds):
        for c, child in enumerate(children):
            r = next((r for r in rows if (r["model"], r["kind"]) == (child, kind)), None)
            if r is None:
                continue
            x, y = c + (k - (len(kinds) - 1) / 2) * width, 100 * float(r["win_rate"])
            err = [[y - 100 * float(r["ci_low"])], [100 * float(r["ci_high"]) - y]]
            ax.bar(x, y - 50, width * 0.9, bottom=50, color=f"C{k}", label=kind if c == 0 else None)
            ax.errorbar(x, y, yerr=err, color="black", lw=1, capsize=3)
    ax.axhline(50, color="grey", lw=0.8)
    ax.set_xticks(range(len(children)), children)
    ax.set(ylabel="win rate after ODPO (%)", title="ODPO: after vs before, held-out rubric prompts")
    ax.legend(frameon=False, fontsize=8)
    return fig


def plot_odpo_curves(curves: Mapping[str, Mapping[str, list[dict]]], keys=("confidence", "agree", "length")):
    """Per child (colour) and model (solid: Instruct, dashed: Reasoning), each logged quantity over ODPO iterations."""
    import matplotlib.pyplot as plt

    titles = {"confidence": "judge's confidence |p - 1/2|", "agree": "implicit reward agrees with the judge",
              "length": "mean response length (tokens)", "loops": "looping responses",
              "margin": "implicit reward margin"}  # fmt: skip
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3), layout="constrained")
    for child, kinds in curves.items():
        for kind, rows in kinds.items():
            for ax, key in zip(axes, keys, strict=True):
                ax.plot([r["step"] for r in rows], [r[key] for r in rows], color=CHILD_COLOURS.get(child, "grey"),
                        ls="-" if kind == "Instruct" else "--", label=f"{child} {kind}")  # fmt: skip
    for ax, key in zip(axes, keys, strict=True):
        ax.set(xlabel="ODPO iteration", title=titles.get(key, key))
    axes[0].legend(frameon=False, fontsize=7)
    return fig
