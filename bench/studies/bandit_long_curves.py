"""Curves of long bandit runs over steps: the evaluations' mode shares and the actor's training
signals (gradient norm before clipping, share of the batch BC keeps, risk value), one line per run.

    python -m bench.studies.bandit_long_curves results/bandit-study/runs/long/* \
        --out results/bandit-study/bandit-long/over-steps.png
    python -m bench.studies.bandit_long_curves --group better_mean=DIR --group top=DIR2 --out F.png

With --group LABEL=DIR (repeated; DIR holds run directories) one row of panels per group,
on shared axes, to compare settings.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ramac.utils import save_figure


def read(run_dir: Path):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r["kind"] == "train"], [r for r in rows if r["kind"] == "eval"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, nargs="*", help="run directories (metrics.jsonl)")
    p.add_argument("--group", action="append", default=[], metavar="LABEL=DIR",
                   help="a row of panels for the runs in DIR (repeatable)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401 - the step formatter

    groups = [("", list(args.runs))] if args.runs else []
    for g in args.group:
        label, _, folder = g.rpartition("=")
        groups.append((label, sorted(d for d in Path(folder).iterdir() if (d / "metrics.jsonl").exists())))
    if not groups or not all(runs for _, runs in groups):
        p.error("give run directories, or --group LABEL=DIR with DIR holding run directories")
    fig, grid = plt.subplots(len(groups), 4, figsize=(17, 3.6 * len(groups)), sharex=True, sharey="col", squeeze=False)
    for (label, runs), axes in zip(groups, grid):
        draw(axes, runs, label)
    for ax in grid[-1]:
        ax.set_xlabel("step")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:g}k"))
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, args.out, dpi=110)
    print(f"wrote {args.out}")


def draw(axes, runs, title=""):
    for run in runs:
        train, evals = read(run)
        label = run.name
        steps = [e["step"] for e in evals]
        line, = axes[0].plot(steps, [100 * e["share/best_tail"] for e in evals], "o-", label=label)
        axes[0].plot(steps, [100 * e["share/outside"] for e in evals], "x--", color=line.get_color())
        t = [r["step"] for r in train if "actor/bc_kept" in r]
        axes[1].plot(t, [r["actor/grad_norm"] for r in train if "actor/bc_kept" in r], color=line.get_color())
        axes[2].plot(t, [100 * r["actor/bc_kept"] for r in train if "actor/bc_kept" in r], color=line.get_color())
        axes[3].plot(t, [r["actor/risk"] for r in train if "actor/bc_kept" in r], color=line.get_color())
    axes[0].set_ylabel("% of actions: best-tail mode (o), outside (x)")
    axes[1].set_ylabel("actor gradient norm (before the clip at 5)")
    axes[2].set_ylabel("% of the batch BC keeps")
    axes[3].set_ylabel("risk value of the actor's actions (critic units)")
    axes[0].axhline(90, color="0.6", ls=":")
    axes[0].axhline(5, color="0.6", ls=":")
    axes[1].axhline(5, color="0.6", ls=":")
    axes[0].legend(fontsize=7)
    if title:
        axes[0].set_title(title, loc="left", fontsize=10)


if __name__ == "__main__":
    main()
