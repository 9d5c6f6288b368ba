"""What the critics believe against what the policy gets, over training, from a sweep's run folders:
the actor's risk term (the critics' CVaR of the actor's own action, `actor/risk`, in the critics'
discounted units), the critics' mean quantile at data actions (`critic/z_mean`), and the 10-episode
evaluations' CVaR_0.1 and mean of the (undiscounted) return. One panel column per (task, method),
one line per seed; a table of the first and last values goes to stdout and OUT.md.

    python -m bench.studies.critic_vs_realised --runs results/mujoco-reduced/runs \\
        --out results/mujoco-reduced/critic-vs-realised

Rising beliefs with falling outcomes is the signature of critics that extrapolate optimistically
where the actor has left the data (the offline-RL failure behaviour regularisation is meant to
prevent); the OOD rates of the sweep's second evaluation say whether the actor has left it.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from ramac.utils import save_figure

PANELS = (("actor/risk", "critics' CVaR of the actor's action"), ("critic/z_mean", "critics' mean at data actions"),
          ("return/cvar_0.1", "evaluation CVaR_0.1 of the return"), ("return/mean", "evaluation mean return"))


def read(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = json.loads((run_dir / "config.json").read_text())["train"]
    series = defaultdict(list)
    for r in rows:
        for key, _ in PANELS:
            if key in r and ((r["kind"] == "train") == key.startswith(("actor/", "critic/"))):
                series[key].append((r["step"], r[key]))
    return {"task": train["task"], "algo": train["algo"], "seed": train["seed"], "series": series}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, required=True, help="folder of run directories (a sweep's runs/)")
    p.add_argument("--out", type=Path, required=True, help="output path without suffix (.png and .md)")
    a = p.parse_args(argv)
    runs = [read(d) for d in sorted(a.runs.iterdir())
            if d.is_dir() and (d / "eval.json").exists() and (d / "metrics.jsonl").exists()
            and not d.name.endswith(".no-checkpoint")]
    if not runs:
        raise SystemExit(f"critic_vs_realised: no finished run directories in {a.runs}")
    groups = defaultdict(list)
    for r in runs:
        if r["series"].get("critic/z_mean"):  # methods with critics (BC has none to compare)
            groups[(r["task"], r["algo"])].append(r)
    lines = ["| task | method | seeds | " + " | ".join(f"{k} first -> last" for k, _ in PANELS) + " |",
             "|---|---|---|" + "---|" * len(PANELS)]
    for (task, algo), members in sorted(groups.items()):
        cells = []
        for key, _ in PANELS:
            firsts = [m["series"][key][0][1] for m in members if m["series"].get(key)]
            lasts = [m["series"][key][-1][1] for m in members if m["series"].get(key)]
            cells.append(f"{sum(firsts) / len(firsts):.0f} -> {sum(lasts) / len(lasts):.0f}" if firsts else "")
        lines.append(f"| {task} | {algo} | {len(members)} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + ("\n\nMeans over seeds of each series' first and last logged value "
                               "(actor/risk: first step of the risk term).\n")
    print(text)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".md").write_text(text)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = sorted(groups)
    fig, axes = plt.subplots(len(PANELS), len(cols), figsize=(4.2 * len(cols), 2.6 * len(PANELS)),
                             sharex=True, squeeze=False)
    for j, (task, algo) in enumerate(cols):
        for i, (key, label) in enumerate(PANELS):
            ax = axes[i][j]
            for m in sorted(groups[(task, algo)], key=lambda m: m["seed"]):
                if m["series"].get(key):
                    steps, values = zip(*m["series"][key])
                    ax.plot(steps, values, lw=1.2, label=f"seed {m['seed']}")
            if i == 0:
                ax.set_title(f"{task}\n{algo}", fontsize=9)
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
            ax.grid(alpha=0.3)
        axes[-1][j].set_xlabel("update")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, a.out.with_suffix(".png"), dpi=110)
    print(f"wrote {a.out.with_suffix('.md')} and {a.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
