"""`ramac report RUN_DIR...`: the evaluations of many runs, grouped by task and method, as one
value per training seed and a bootstrap confidence interval over seeds.

A run's evaluation is the last one it wrote: `eval-again.json` (from `ramac eval`) where present,
else `eval.json` (the end of training). One run is one seed; the interval is a percentile
bootstrap of the mean over seeds (resampling seeds, 10,000 draws from a generator seeded by
--seed), so it says how much the method's result depends on its training seed, not on the
evaluation episodes. The risk-profile figure pools each method's per-episode returns (or, on the
bandit, per-draw rewards) of the same evaluations (`returns.npy` / `returns-again.npy`).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

# the columns of the table per kind of task (every numeric key is in the JSON)
BANDIT_KEYS = ("share/best_tail", "share/outside", "reward/mean", "reward/cvar_0.1")
MUJOCO_KEYS = ("return/mean", "return/cvar_0.1", "score/mean", "score/cvar_0.1", "risky_rate")


class ReportError(ValueError):
    """A run directory cannot be reported (missing files, no evaluation)."""


def read_run(run_dir) -> dict:
    """{task, algo, seed, step, source, metrics} of one run directory."""
    run_dir = Path(run_dir)
    config = run_dir / "config.json"
    if not config.exists():
        raise ReportError(f"{run_dir} has no config.json; is it a ramac run directory?")
    for name in ("eval-again.json", "eval.json"):
        if (run_dir / name).exists():
            source = run_dir / name
            break
    else:
        raise ReportError(f"{run_dir} has no eval.json or eval-again.json: the run has not finished an evaluation")
    try:
        train = json.loads(config.read_text())["train"]
        evaluation = json.loads(source.read_text())
    except (json.JSONDecodeError, KeyError) as e:
        raise ReportError(f"{run_dir}: cannot read {config.name} / {source.name} ({e})") from None
    metrics = {k: float(v) for k, v in evaluation.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "seed")}
    returns = run_dir / ("returns-again.npy" if source.name == "eval-again.json" else "returns.npy")
    return {"run_dir": str(run_dir), "task": train["task"], "algo": train["algo"], "seed": int(train["seed"]),
            "step": int(evaluation.get("step", -1)), "source": source.name, "metrics": metrics,
            "returns": np.load(returns) if returns.exists() else None}


def bootstrap_mean_ci(values, n_boot: int = 10_000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over seeds; (nan, nan) for fewer than two."""
    if len(values) < 2:
        return math.nan, math.nan
    from .risk_measures import bootstrap_ci

    return bootstrap_ci(values, np.mean, n_boot=n_boot, level=level, seed=seed)


def aggregate(runs: list[dict], seed: int = 0) -> list[dict]:
    """One row per (task, method): per-seed values, mean and bootstrap CI of every shared metric."""
    groups = defaultdict(list)
    for run in runs:
        groups[(run["task"], run["algo"])].append(run)
    rows = []
    for (task, algo), members in sorted(groups.items()):
        seeds = [m["seed"] for m in members]
        if len(set(seeds)) != len(seeds):
            dup = sorted({s for s in seeds if seeds.count(s) > 1})
            raise ReportError(f"{task} / {algo}: seed(s) {dup} appear in more than one run directory; "
                              f"report each seed once")
        keys = sorted(set.intersection(*(set(m["metrics"]) for m in members)))
        row = {"task": task, "method": algo, "seeds": sorted(seeds), "steps": sorted({m["step"] for m in members}),
               "runs": [m["run_dir"] for m in members], "metrics": {}}
        for key in keys:
            values = [m["metrics"][key] for m in sorted(members, key=lambda m: m["seed"])]
            lo, hi = bootstrap_mean_ci(values, seed=seed)
            row["metrics"][key] = {"mean": float(np.mean(values)), "ci95": [lo, hi], "per_seed": values}
        rows.append(row)
    return rows


def _cell(stat: dict | None, percent: bool) -> str:
    if stat is None:
        return "-"
    scale = 100.0 if percent else 1.0
    mean, (lo, hi) = stat["mean"] * scale, stat["ci95"]
    if math.isnan(lo):
        return f"{mean:.2f}"
    return f"{mean:.2f} [{lo * scale:.2f}, {hi * scale:.2f}]"


def _percent(key: str) -> bool:
    return key.startswith(("share/", "ood/")) or key == "risky_rate"


def markdown(rows: list[dict]) -> str:
    """A table per task: mean [95 % bootstrap CI over seeds] of the main metrics per method."""
    out = []
    for task in sorted({r["task"] for r in rows}):
        members = [r for r in rows if r["task"] == task]
        bandit = any("share/best_tail" in r["metrics"] for r in members)
        keys = BANDIT_KEYS if bandit else MUJOCO_KEYS
        keys = keys + tuple(sorted({k for r in members for k in r["metrics"]  # `ramac eval --ood` rates, if any
                                    if k.startswith("ood/") and k != "ood/thresholds"}))
        out.append(f"### {task}\n")
        out.append("| method | seeds | steps | " + " | ".join(
            k + (" %" if _percent(k) else "") for k in keys) + " |")
        out.append("|---|---|---|" + "---|" * len(keys))
        for r in members:
            cells = [_cell(r["metrics"].get(k), _percent(k)) for k in keys]
            steps = ",".join(str(s) for s in r["steps"])
            out.append(f"| {r['method']} | {len(r['seeds'])} | {steps} | " + " | ".join(cells) + " |")
        out.append("")
    out.append("Mean over training seeds [95 % percentile-bootstrap interval of the mean, resampling seeds]; "
               "one seed gives no interval.")
    return "\n".join(out)


def plot(runs: list[dict], path) -> bool:
    """Risk profile (CVaR_alpha over alpha) of each method's pooled returns: one task, the profile
    and the return histograms; several, one profile panel per task, each method in one colour
    throughout. False when no run saved its returns."""
    saved = [run for run in runs if run["returns"] is not None]
    if not saved:
        return False
    pooled = defaultdict(list)
    for run in saved:
        pooled[run["task"], run["algo"]].append(np.asarray(run["returns"], dtype=np.float64).ravel())
    returns = {key: np.concatenate(v) for key, v in sorted(pooled.items())}
    tasks = sorted({task for task, _ in returns})
    if len(tasks) == 1:
        from .evaluation import plot_risk_profile

        plot_risk_profile({algo: r for (_, algo), r in returns.items()}, path,
                          f"{tasks[0]}: risk profile, returns pooled over seeds")
        return True
    _plot_tasks(tasks, returns, path)
    return True


def _plot_tasks(tasks: list[str], returns: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .evaluation import draw_cvar_profiles
    from .utils import save_figure

    methods = sorted({algo for _, algo in returns})
    colours = dict(zip(methods, (plt.cm.tab10.colors if len(methods) <= 10 else plt.cm.tab20.colors)))
    cols = min(3, len(tasks))
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        draw_cvar_profiles(ax, {algo: returns[task, algo] for algo in methods if (task, algo) in returns}, colours)
        ax.set_title(task, fontsize=10)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(tasks):]:
        ax.set_visible(False)
    fig.suptitle("risk profile per task, returns pooled over seeds")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def write_report(run_dirs, out, seed: int = 0) -> dict:
    """Read the runs, aggregate, write OUT.md, OUT.json and OUT.png (when returns were saved)."""
    if not run_dirs:
        raise ReportError("no run directories given")
    runs = [read_run(d) for d in run_dirs]
    rows = aggregate(runs, seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from .utils import atomic_write_bytes, atomic_write_json

    text = markdown(rows)
    atomic_write_bytes(out.with_suffix(".md"), (text + "\n").encode())
    atomic_write_json(out.with_suffix(".json"), {"bootstrap_seed": seed, "rows": rows})
    figure = plot(runs, out.with_suffix(".png"))
    return {"rows": rows, "markdown": text, "figure": str(out.with_suffix(".png")) if figure else None}
