"""`ramac study bandit`: train an agent on members of the bandit family for several seeds and
lengths, then write a table (markdown, CSV, JSON) and one figure per variant.

Each (variant, seed) is an ordinary run directory under OUT/runs/ (or --runs; config,
metrics, checkpoints, bandit.png), so `ramac eval` works on it and an interrupted study
resumes: finished runs are skipped, unfinished ones continue from their last checkpoint
(also to a greater length than before). On a GPU
several runs advance side by side, each replaying its CUDA graph on its own stream (one
update at batch 256 leaves most of an H200 idle). Runs in one process share CUDA's random
generator, so a study repeats its own numbers, while a run inside it is not bit-identical
to the same seed trained alone.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import build_configs
from .envs import bandit
from .envs.bandit_family import FAMILY
from .train import CHECKPOINT, Trainer, read_metrics
from .utils import atomic_write_bytes, atomic_write_json, resolve_device, save_figure

# two-sided 95 % Student-t quantiles by degrees of freedom (CIs over a handful of seeds)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         15: 2.131, 20: 2.086, 30: 2.042}
GOAL_BEST, GOAL_OUTSIDE = 0.90, 0.05


def t_interval(x) -> tuple[float, float]:
    """Mean and half-width of the 95 % t-interval over seeds (half-width nan for one seed)."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return float(x.mean()), float("nan")
    df = len(x) - 1
    t = _T975[max(k for k in _T975 if k <= df)]
    return float(x.mean()), float(t * x.std(ddof=1) / math.sqrt(len(x)))


@dataclass
class StudyRun:
    variant: str
    seed: int
    run_dir: Path
    trainer: Trainer | None = None
    stream: object = None


def plan_runs(variants, algo="radac", seeds=(0, 1, 2), steps=14_000, eval_every=7_000, overrides=None,
              runs_dir="runs", device="cpu", full=False, compile=False) -> list:
    """(variant, seed, run_dir, (agent_cfg, train_cfg)) for every variant and seed."""
    unknown = [v for v in variants if v not in FAMILY]
    if unknown:
        raise ValueError(f"unknown bandit variant(s) {unknown}; known: {', '.join(FAMILY)}")
    device = resolve_device(str(device))
    runs = []
    for variant in variants:
        for seed in seeds:
            run_dir = Path(runs_dir) / f"{variant}-{algo}-seed{seed}"
            runs.append((variant, seed, run_dir, build_configs(
                variant, algo, cpu_sized=device.type == "cpu" and not full, agent_overrides=overrides or {},
                train_overrides={"steps": steps, "eval_every": eval_every, "ckpt_every": eval_every, "seed": seed,
                                 "device": str(device), "compile": compile, "log_every": min(500, eval_every)})))
    return runs


def is_finished(run_dir: Path, steps: int) -> bool:
    """Whether the run in run_dir has written its final evaluation at `steps`."""
    path = run_dir / "eval.json"
    return path.exists() and json.loads(path.read_text()).get("step") == steps


def train_runs(plan, device, concurrent: int = 8, log=print, plots: str = "final") -> None:
    """Train the unfinished runs of a plan, `concurrent` at a time on a GPU (one at a time on a CPU)."""
    device = resolve_device(str(device))
    todo = [r for r in plan if not is_finished(r[2], r[3][1].steps)]
    t0 = time.perf_counter()
    width = concurrent if device.type == "cuda" else 1
    for i in range(0, len(todo), width):
        _train_group(todo[i:i + width], device, log, plots)
        log(f"  {min(i + width, len(todo))}/{len(todo)} runs done ({time.perf_counter() - t0:.0f} s)")


def run_study(variants, algo: str = "radac", seeds=(0, 1, 2), lengths=(14_000, 42_000), eval_every: int | None = None,
              overrides: dict | None = None, out="results/bandit-study", device="auto", full: bool = False,
              concurrent: int = 8, compile: bool = False, runs_dir=None, log=print) -> dict:
    """Train every (variant, seed) to max(lengths), evaluating every eval_every steps; write the
    report and return it."""
    lengths = sorted(set(int(n) for n in lengths))
    eval_every = eval_every or math.gcd(*lengths)
    if any(n % eval_every for n in lengths):
        raise ValueError(f"every length must be a multiple of --eval-every ({eval_every}), got {lengths}")
    out, device = Path(out), resolve_device(str(device))
    runs_dir = Path(runs_dir) if runs_dir else out / "runs"
    plan = plan_runs(variants, algo, seeds, lengths[-1], eval_every, overrides, runs_dir, device, full, compile)
    done = sum(is_finished(r[2], lengths[-1]) for r in plan)
    log(f"bandit study: {len(plan)} runs ({len(variants)} variants x {len(seeds)} seeds, {algo}, "
        f"{lengths[-1]} steps), {done} already finished; {device}"
        f"{f', {concurrent} side by side' if device.type == 'cuda' else ''}")
    train_runs(plan, device, concurrent, log)
    return finish_report(plan, lengths, algo, overrides or {}, out)


def finish_report(plan, lengths, algo, overrides, out) -> dict:
    report = collect([(v, s, d) for v, s, d, _ in plan], lengths, algo, overrides)
    write_report(Path(out), report, plan[0][3] if plan else None)
    return report


def _train_group(group, device, log, plots="final") -> None:
    runs = []
    for variant, seed, run_dir, (agent_cfg, train_cfg) in group:
        trainer = Trainer(agent_cfg, train_cfg, run_dir, progress=False, log=log, plots=plots)
        if (run_dir / CHECKPOINT).exists():  # else Trainer.start() starts a run's leftover records over
            trainer.load_checkpoint()
        stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            trainer.start()
        runs.append(StudyRun(variant, seed, run_dir, trainer, stream))
    t_last = time.perf_counter()
    while any(not r.trainer.done for r in runs):
        if time.perf_counter() - t_last > 60:
            t_last = time.perf_counter()
            live = [r.trainer.step for r in runs if not r.trainer.done]
            log(f"  {len(live)} runs training, at steps {min(live)}..{max(live)}")
        for r in runs:
            if r.trainer.done:
                continue
            with torch.cuda.stream(r.stream) if r.stream is not None else contextlib.nullcontext():
                seen = r.trainer.last_eval
                r.trainer.step_once()
                if r.trainer.last_eval is not seen and "_actions" in r.trainer.last_eval:  # the bandit's latest
                    # evaluation's actions, for the figures (a MuJoCo evaluation has none)
                    np.save(r.run_dir / "actions.npy", r.trainer.last_eval["_actions"])
                if r.trainer.done:
                    r.trainer.finish()
                    log(f"  {r.variant} {r.trainer.cfg.algo} seed {r.seed}: "
                        f"{r.trainer.task.summary(r.trainer.last_eval)}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def collect(runs, lengths, algo: str, overrides: dict) -> dict:
    """Per variant and length: best-tail and outside shares, reward mean and CVaR over seeds."""
    rows, curves = [], {}
    for variant in dict.fromkeys(v for v, _, _ in runs):
        spec = FAMILY[variant]
        evals = {s: [r for r in read_metrics(d) if r["kind"] == "eval"] for v, s, d in runs if v == variant}
        curves[variant] = {s: [(r["step"], r["share/best_tail"], r["share/outside"]) for r in e]
                           for s, e in evals.items()}
        for n in lengths:
            at = [next((r for r in e if r["step"] == n), None) for e in evals.values()]
            at = [r for r in at if r is not None]
            if not at:
                continue
            row = {"variant": variant, "steps": n, "seeds": len(at), "best_tail_mode": spec.best_mode("cvar"),
                   "note": spec.note}
            for key, name in (("share/best_tail", "best_tail"), ("share/outside", "outside"),
                              ("share/best_mean", "best_mean"), ("reward/mean", "reward_mean"),
                              ("reward/cvar_0.1", "reward_cvar")):
                vals = [r[key] for r in at]
                row[name], row[name + "_ci"] = t_interval(vals)
                row[name + "_min"], row[name + "_max"] = float(min(vals)), float(max(vals))
                row[name + "_per_seed"] = vals
            row["goal_met"] = bool(row["best_tail_min"] >= GOAL_BEST and row["outside_max"] <= GOAL_OUTSIDE)
            rows.append(row)
    return {"algo": algo, "overrides": overrides, "lengths": list(lengths), "rows": rows, "curves": curves,
            "runs": [{"variant": v, "seed": s, "run_dir": str(d)} for v, s, d in runs]}


def _pct(x, ci=None) -> str:
    return f"{100 * x:.1f}" + (f" +- {100 * ci:.1f}" if ci is not None and math.isfinite(ci) else "")


def markdown(report: dict) -> str:
    lines = [f"Bandit study, {report['algo']} {report['overrides'] or ''}: % of the policy's actions "
             f"(mean +- 95 % t-interval over seeds; [min, max] over seeds). Goal: every seed >= "
             f"{100 * GOAL_BEST:.0f} % in the best-tail mode and <= {100 * GOAL_OUTSIDE:.0f} % outside.", "",
             "| variant | steps | seeds | best-tail mode | in it % | [min, max] | outside % | [min, max] | "
             "best-mean mode % | reward mean | reward CVaR_0.1 | goal |", "|" + "---|" * 12]
    for r in report["rows"]:
        lines.append(
            f"| {r['variant']} | {r['steps']} | {r['seeds']} | {r['best_tail_mode']} | "
            f"{_pct(r['best_tail'], r['best_tail_ci'])} | [{_pct(r['best_tail_min'])}, {_pct(r['best_tail_max'])}] | "
            f"{_pct(r['outside'], r['outside_ci'])} | [{_pct(r['outside_min'])}, {_pct(r['outside_max'])}] | "
            f"{_pct(r['best_mean'])} | {r['reward_mean']:.2f} | {r['reward_cvar']:.2f} | "
            f"{'yes' if r['goal_met'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: dict, example_cfgs=None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if example_cfgs is not None:
        from .config import to_dict

        report = {**report, "agent_config": to_dict(example_cfgs[0])}
    atomic_write_json(out / "study.json", report)
    atomic_write_bytes(out / "study.md", markdown(report).encode())
    keys = [k for k in (report["rows"][0] if report["rows"] else {}) if not k.endswith("_per_seed")]
    csv = ",".join(keys) + "\n" + "".join(",".join(str(r[k]) for k in keys) + "\n" for r in report["rows"])
    atomic_write_bytes(out / "study.csv", csv.encode())
    for variant in report["curves"]:
        plot_variant(out, report, variant)


def plot_variant(out: Path, report: dict, variant: str) -> None:
    """One figure per variant: each seed's final actions over the CVaR_0.1 map, and the
    best-tail / outside shares over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = FAMILY[variant]
    runs = [r for r in report["runs"] if r["variant"] == variant]
    _, cvar_map = bandit.region_maps(spec, 201)
    data = bandit.make_dataset(3000, spec=spec).action.numpy()
    fig, axes = plt.subplots(1, len(runs) + 1, figsize=(3.6 * (len(runs) + 1), 3.8), squeeze=False)
    for ax, run in zip(axes[0], runs):
        draw_map(ax, spec, cvar_map, data)
        actions = final_actions(Path(run["run_dir"]))
        if actions is not None:
            ax.scatter(actions[:, 0], actions[:, 1], s=2, c="tab:blue", alpha=0.5)
        else:
            ax.text(0, 0, "no actions saved", ha="center", fontsize=9)
        ax.set_title(f"seed {run['seed']}", fontsize=9)
    ax = axes[0, -1]
    for seed, pts in report["curves"][variant].items():
        if pts:
            steps, best, outside = zip(*pts)
            line, = ax.plot(steps, 100 * np.array(best), label=f"seed {seed}: best-tail mode")
            ax.plot(steps, 100 * np.array(outside), ls="--", c=line.get_color())
    ax.axhline(100 * GOAL_BEST, c="k", lw=0.5), ax.axhline(100 * GOAL_OUTSIDE, c="k", lw=0.5)
    ax.set_ylim(-2, 102), ax.set_xlabel("step"), ax.set_ylabel("% of actions (dashed: outside)")
    ax.legend(fontsize=7)
    fig.suptitle(f"{variant} ({spec.note}): {report['algo']}, actions over the CVaR$_{{0.1}}$ map", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out / f"{variant}.png", dpi=100)
    plt.close(fig)


def draw_map(ax, spec, cvar_map, data) -> None:
    """The CVaR_0.1 map of a bandit, its data actions (grey) and the mode names."""
    ax.imshow(cvar_map, extent=(-1, 1, -1, 1), origin="lower", cmap="RdYlGn", vmin=cvar_map.min(),
              vmax=cvar_map.max())
    ax.scatter(data[:, 0], data[:, 1], s=1, c="0.35", alpha=0.3)
    for m in spec.modes:  # above the disc, or below it where the box ends first
        y = m.centre[1] + m.radius + 0.03 if m.centre[1] + m.radius < 0.88 else m.centre[1] - m.radius - 0.12
        ax.text(m.centre[0], y, m.name, ha="center", fontsize=8, weight="bold")
    ax.set_xlim(-1, 1), ax.set_ylim(-1, 1)
    ax.set_xticks([]), ax.set_yticks([])


def final_actions(run_dir: Path):
    """The latest evaluation's actions, saved by the study in the run directory."""
    path = run_dir / "actions.npy"
    return np.load(path) if path.exists() else None
