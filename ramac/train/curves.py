"""The learning curves of a run (curves.png in its directory): the losses over steps, and the
evaluations' mean and CVaR_0.1 (bandit: reward per draw and the share of actions in the best-tail
mode and outside; MuJoCo: episode return and the risky-step rate)."""

from __future__ import annotations

from ..utils import figure_png

# (metrics key, label) per panel; a panel is drawn when the rows have its keys
LOSSES = (("critic/loss1", "critic 1 loss"), ("critic/loss2", "critic 2 loss"), ("actor/bc", "BC loss"),
          ("actor/loss", "actor loss"))
EVAL_BANDIT = (("reward/mean", "reward mean"), ("reward/cvar_0.1", "reward CVaR_0.1"))
EVAL_MUJOCO = (("return/mean", "return mean"), ("return/cvar_0.1", "return CVaR_0.1"))
SHARES = (("share/best_tail", "% in the best-tail mode"), ("share/outside", "% outside the data"),
          ("risky_rate", "% risky steps"))


def curves_png(rows: list[dict], title: str = "") -> bytes | None:
    """PNG bytes of the curves of these metrics rows, or None when there is nothing to draw."""
    train = [r for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for key, label in LOSSES:
        points = [(r["step"], r[key]) for r in train if key in r]
        if points:
            axes[0].plot(*zip(*points), label=label)
    axes[0].set_yscale("symlog", linthresh=1e-2)
    for key, label in EVAL_BANDIT + EVAL_MUJOCO:
        points = [(r["step"], r[key]) for r in evals if key in r]
        if points:
            axes[1].plot(*zip(*points), "o-", label=label)
    for key, label in SHARES:
        points = [(r["step"], 100 * r[key]) for r in evals if key in r]
        if points:
            axes[2].plot(*zip(*points), "o-", label=label)
    for ax, name in zip(axes, ("losses (train rows)", "evaluation", "evaluation shares")):
        ax.set_xlabel("step")
        ax.set_title(name, fontsize=10)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    data = figure_png(fig, dpi=100)
    plt.close(fig)
    return data
