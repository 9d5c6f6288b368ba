"""`ramac study agents`: every agent of the registry on a bandit, side by side (SPEC 2.5).

Each chosen agent trains on each chosen bandit variant for each seed with its own preset settings;
the runs are ordinary run directories planned, trained and resumed by ramac.study (finished runs are
skipped, unfinished ones continue from their checkpoint). The report compares the agents' final
evaluations: reward mean and CVaR_0.1, the share of actions in each mode and outside, and whether
each agent did what SPEC 2.5 expects of its kind, which is read from its settings: no risk measure
(BC, no critic): cover every mode; risk "neutral": the best-mean mode; any other distortion: the
best-tail mode; a perturbation actor (ORAAC) also leaves the support more often than RADAC.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import fields
from pathlib import Path

import numpy as np

from .agents.registry import ALGOS
from .config import agent_shares, build_configs, to_dict
from .envs import bandit
from .envs.bandit_family import FAMILY
from .study import draw_map, final_actions, is_finished, plan_runs, t_interval, train_runs
from .train import read_metrics
from .utils import atomic_write_bytes, atomic_write_json, provenance, resolve_device, save_figure

COVER_SHARE = 0.5  # "covers every mode": each mode holds at least this fraction of its share of the data
SEED_COLOURS = ("tab:blue", "tab:purple", "black", "tab:cyan", "tab:pink", "tab:brown", "tab:olive", "navy")


def _resolve(names, known, what: str) -> list[str]:
    """The named ones (every known one for "all"), each once, in order; unknown or none is an error."""
    names = list(dict.fromkeys(known if list(names) == ["all"] else names))
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"unknown {what}(s) {unknown}; known: {', '.join(known)} (or all)")
    return names


def resolve_algos(algos) -> list[str]:
    return _resolve(algos, ALGOS, "agent")


def resolve_variants(variants) -> list[str]:
    return _resolve(variants, list(FAMILY), "bandit variant")


def split_overrides(overrides: dict, algos) -> dict[str, dict]:
    """Each agent's share of the --set overrides; a key no chosen agent has is an error."""
    shares, orphans = agent_shares(overrides, algos)
    if orphans:
        raise ValueError(f"--set {', '.join(orphans)}: no chosen agent has this setting "
                         f"(`ramac presets --settings --algo NAME` lists an agent's settings)")
    return shares


def default_eval_every(steps: int) -> int:
    return next((k for k in (2_000, 1_000, 500) if steps % k == 0 and k < steps), steps)


def expectation(cfg, spec) -> dict:
    """What SPEC 2.5 expects of an agent with these settings on this bandit."""
    names = {f.name for f in fields(cfg)}
    if "risk" not in names:  # BC: no critic, no risk measure
        out = {"kind": "imitation", "modes": [m.name for m in spec.modes], "text": "covers every mode"}
    elif cfg.risk == "neutral":
        modes = spec.best_modes("mean")
        out = {"kind": "risk-neutral", "modes": modes, "text": f"best-mean mode {'+'.join(modes)}"}
    else:  # CVaR at its own alpha; another distortion judged by the CVaR_0.1 choice
        modes = spec.best_modes("cvar", cfg.risk_param if cfg.risk == "cvar" else 0.1)
        out = {"kind": "risk-averse", "modes": modes, "text": f"best-tail mode {'+'.join(modes)}"}
    out["more_outside_than"] = "radac" if getattr(cfg, "perturbation", 0) > 0 and "risk" in names else None
    if out["more_outside_than"]:  # SPEC 2.5: a prior-anchored perturbation actor drifts off the support
        out["modes"] = out["modes"] + ["outside"]
        out["text"] = f"off the support more than radac, else {out['text']}"
    return out


def _seed_matches(expect: dict, shares: dict, spec) -> bool:
    if expect["kind"] == "imitation":
        weights = np.array([m.weight for m in spec.modes])
        return all(shares[m.name] >= COVER_SHARE * w / weights.sum() for m, w in zip(spec.modes, weights))
    return max(spec.regions, key=lambda r: shares[r]) in expect["modes"]


def collect(plan, steps: int) -> list[dict]:
    """One row per (variant, agent): each metric's mean and 95 % t-interval over the seeds whose
    evaluation at `steps` is in their metrics, the per-seed values, the top region per seed and the
    expectation check."""
    rows = []
    for variant in dict.fromkeys(v for v, _, _, _ in plan):
        spec = FAMILY[variant]
        metrics = [("reward_mean", "reward/mean"), ("reward_cvar", "reward/cvar_0.1"),
                   ("outside", "share/outside")] + [(f"share_{m.name}", f"share/{m.name}") for m in spec.modes]
        for algo in dict.fromkeys(cfgs[1].algo for v, _, _, cfgs in plan if v == variant):
            runs = [(s, d, cfgs[0]) for v, s, d, cfgs in plan if v == variant and cfgs[1].algo == algo]
            final = {s: next((r for r in read_metrics(d) if r["kind"] == "eval" and r["step"] == steps), None)
                     for s, d, _ in runs}
            final = {s: r for s, r in final.items() if r is not None}
            cfg = runs[0][2]
            expect = expectation(cfg, spec)
            row = {"variant": variant, "agent": algo, "risk": _risk_label(cfg), "steps": steps,
                   "seeds": sorted(final), "expected": expect["text"], "kind": expect["kind"],
                   "expected_modes": expect["modes"]}
            for name, key in metrics:
                vals = [final[s][key] for s in row["seeds"]]
                row[name], row[name + "_ci"] = t_interval(vals) if vals else (float("nan"), float("nan"))
                row[name + "_per_seed"] = vals
            shares = [{r: final[s][f"share/{r}"] for r in spec.regions} for s in row["seeds"]]
            row["top_mode_per_seed"] = [max(spec.regions, key=lambda r: sh[r]) for sh in shares]
            row["matched_seeds"] = sum(_seed_matches(expect, sh, spec) for sh in shares)
            row["_expect"] = expect
            rows.append(row)
    for row in rows:  # comparisons between agents (ORAAC's outside share against RADAC's)
        other, held = row.pop("_expect")["more_outside_than"], None
        ref = next((r for r in rows if r["variant"] == row["variant"] and r["agent"] == other), None)
        if ref is not None and ref["seeds"] and row["seeds"]:
            held = bool(row["outside"] > ref["outside"])
        row["comparison"] = None if other is None else {"more_outside_than": other, "held": held}
        n, k = len(row["seeds"]), row["matched_seeds"]
        row["matched"] = ("n/a" if n == 0 else "yes" if k == n and held is not False else "no" if k == 0 else
                          f"partly ({k}/{n} seeds{'; outside not above ' + other if held is False else ''})")
    return rows


def _risk_label(cfg) -> str:
    if not hasattr(cfg, "risk"):
        return "no critic"
    return "neutral" if cfg.risk == "neutral" else f"{cfg.risk} {cfg.risk_param:g}"


def run_agents_study(algos=("all",), variants=("bandit",), seeds=(0, 1, 2), steps: int | None = None,
                     eval_every: int | None = None, overrides: dict | None = None, out="results/bandit-agents",
                     runs_dir=None, device="auto", full: bool = False, concurrent: int = 8, compile: bool = False,
                     command: str | None = None, log=print) -> dict:
    """Train every (variant, agent, seed) that is not finished, then write OUT/agents.{md,csv,json}
    and the figure(s); returns the report. `command`: what to record as the command that made the
    study (default: the `ramac study agents` line with every setting resolved)."""
    algos, variants = resolve_algos(algos), resolve_variants(variants)
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    if not seeds or min(seeds) < 0:
        raise ValueError(f"--seeds must name at least one seed, each >= 0, got {seeds}")
    device = resolve_device(str(device))
    cpu_sized = device.type == "cpu" and not full
    steps = steps or build_configs("bandit", algos[0], cpu_sized)[1].steps  # the preset's length
    eval_every = eval_every or default_eval_every(steps)
    if steps < 1 or eval_every < 1:
        raise ValueError(f"--steps and --eval-every must be at least 1, got {steps} and {eval_every}")
    out = Path(out)
    runs_dir = Path(runs_dir) if runs_dir else out / "runs"
    per_agent = split_overrides(overrides or {}, algos)
    plan = [r for algo in algos for r in plan_runs(variants, algo, seeds, steps, eval_every, per_agent[algo],
                                                    runs_dir, device, full, compile)]
    done = sum(is_finished(r[2], steps) for r in plan)
    log(f"agents study: {len(plan)} runs ({len(algos)} agents x {len(variants)} variant(s) x {len(seeds)} seeds, "
        f"{steps} steps, {'CPU-sized' if cpu_sized else 'full'} presets), {done} already finished; {device}"
        f"{f', {concurrent} side by side' if device.type == 'cuda' else ''}")
    train_runs(plan, device, concurrent, log)
    command = command or shlex.join(
        ["ramac", "study", "agents", "--algos", *algos, "--variants", *variants, "--seeds", *map(str, seeds),
         "--steps", str(steps), "--eval-every", str(eval_every), "--out", str(out), "--runs", str(runs_dir),
         "--device", str(device), "--concurrent", str(concurrent)] + ["--full"] * full + ["--compile"] * compile
        + [a for k, v in (overrides or {}).items() for a in ("--set", f"{k}={v}")])
    report = {
        "command": command, "agents": algos, "variants": variants,
        "seeds": seeds, "steps": steps, "eval_every": eval_every, "full": not cpu_sized,
        "overrides": overrides or {}, "overrides_per_agent": per_agent, "rows": collect(plan, steps),
        "runs": [{"variant": v, "agent": c[1].algo, "seed": s, "run_dir": str(d)} for v, s, d, c in plan],
        "agent_configs": {c[1].algo: to_dict(c[0]) for v, _, _, c in plan if v == variants[0]},
        "provenance": provenance(device), "run_commits": _run_commits(plan),
    }
    write_report(out, report)
    return report


def _run_commits(plan) -> list:
    """The source revisions the runs were trained at (from their config.json)."""
    commits = set()
    for _, _, run_dir, _ in plan:
        path = Path(run_dir) / "config.json"
        if path.exists():
            commits.add(json.loads(path.read_text()).get("provenance", {}).get("git_commit"))
    return sorted(str(c) for c in commits)


def _pm(x, ci, scale=1.0, digits=1) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{scale * x:.{digits}f}" + (f" +- {scale * ci:.{digits}f}" if math.isfinite(ci) else "")


def markdown(report: dict) -> str:
    p, over = report["provenance"], report["overrides"]
    lines = [f"# Bandit study across agents ({report['steps']} steps, seeds "
             f"{' '.join(map(str, report['seeds']))})", "",
             f"Each agent with its own {'full' if report['full'] else 'CPU-sized'} preset settings"
             f"{f', overrides {over}' if over else ''}; the final "
             f"evaluation of each seed. Mean +- 95 % t-interval over seeds; shares in % of the policy's actions. "
             f"Expected per SPEC 2.5, from each agent's risk setting.", ""]
    for variant in report["variants"]:
        spec = FAMILY[variant]
        modes = [m.name for m in spec.modes]
        stats = spec.region_stats()
        lines += [f"## {variant} ({spec.note}; best tail {spec.best_mode('cvar')}, best mean "
                  f"{spec.best_mode('mean')})", "",
                  "Mode laws: " + ", ".join(f"{m.name} {m.law} (mean {stats[m.name][0]:.2f}, CVaR "
                                            f"{stats[m.name][1]:.2f})" for m in spec.modes)
                  + f", outside {spec.ood_reward:g}.", "",
                  "| agent | risk | seeds | reward mean | reward CVaR_0.1 | outside % | "
                  + " | ".join(f"{m} %" for m in modes) + " | most actions, per seed | expected | matched |",
                  "|" + "---|" * (9 + len(modes))]
        for r in (r for r in report["rows"] if r["variant"] == variant):
            lines.append(
                f"| {r['agent']} | {r['risk']} | {len(r['seeds'])} | "
                f"{_pm(r['reward_mean'], r['reward_mean_ci'], digits=2)} | "
                f"{_pm(r['reward_cvar'], r['reward_cvar_ci'], digits=2)} | {_pm(r['outside'], r['outside_ci'], 100)} | "
                + " | ".join(_pm(r[f"share_{m}"], r[f"share_{m}_ci"], 100) for m in modes)
                + f" | {' '.join(r['top_mode_per_seed']) or '-'} | {r['expected']} | {r['matched']} |")
        lines.append("")
    lines += [f"Command: `{report['command']}`  ", f"Evaluations every {report['eval_every']} steps; runs in "
              f"{Path(report['runs'][0]['run_dir']).parent if report['runs'] else '-'}.  ",
              f"Versions: ramac {p['ramac']}, torch {p['torch']}, numpy {p['numpy']}, python {p['python']}, "
              f"triton {p['triton']}; {p['device']} ({p['device_name']}); report at git {p['git_commit']}, runs "
              f"trained at {', '.join(report['run_commits']) or '-'}.", ""]
    return "\n".join(lines)


def write_report(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "agents.json", report)
    atomic_write_bytes(out / "agents.md", markdown(report).encode())
    rows = [{**r, "comparison": _comparison_text(r["comparison"])} for r in report["rows"]]
    keys = list(dict.fromkeys(k for r in rows for k in r if not k.endswith("_per_seed") or k.startswith("top_")))
    csv = ",".join(keys) + "\n" + "".join(",".join(_cell(r.get(k)) for k in keys) + "\n" for r in rows)
    atomic_write_bytes(out / "agents.csv", csv.encode())
    for variant in report["variants"]:
        name = "agents.png" if len(report["variants"]) == 1 else f"agents-{variant}.png"
        plot_agents(out / name, report, variant)


def _comparison_text(comparison) -> str | None:
    if comparison is None:
        return None
    held = {True: "yes", False: "no", None: "n/a"}[comparison["held"]]
    return f"outside above {comparison['more_outside_than']}: {held}"


def _cell(v) -> str:
    """A CSV cell: lists space-separated, text with commas quoted, None empty."""
    text = "" if v is None else " ".join(map(str, v)) if isinstance(v, list) else str(v)
    return f'"{text}"' if "," in text else text


def _short_expectation(row) -> str:
    text = "all modes" if row["kind"] == "imitation" else "+".join(row["expected_modes"])
    return text + (f", out > {row['comparison']['more_outside_than']}" if row["comparison"] else "")


def plot_agents(path: Path, report: dict, variant: str) -> None:
    """A panel per agent (data grey, each seed's final actions in its colour, over the CVaR_0.1
    map; the mean shares in the title), and a bar chart of the shares per agent below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = FAMILY[variant]
    rows = [r for r in report["rows"] if r["variant"] == variant]
    _, cvar_map = bandit.region_maps(spec, 201)
    data = bandit.make_dataset(2000, spec=spec).action.numpy()
    ncol = min(3, len(rows))
    nrow = math.ceil(len(rows) / ncol)
    fig = plt.figure(figsize=(4.2 * ncol, 4.9 * nrow + 3.6))
    grid = fig.add_gridspec(nrow + 1, ncol, height_ratios=[4.9] * nrow + [3.2])
    for i, row in enumerate(rows):
        ax = fig.add_subplot(grid[i // ncol, i % ncol])
        draw_map(ax, spec, cvar_map, data)
        for k, seed in enumerate(report["seeds"]):
            run = next(r for r in report["runs"]
                       if (r["variant"], r["agent"], r["seed"]) == (variant, row["agent"], seed))
            actions = final_actions(Path(run["run_dir"]))
            if actions is not None:
                actions = actions[:: max(1, len(actions) // 500)]
                ax.scatter(actions[:, 0], actions[:, 1], s=3, alpha=0.5, c=SEED_COLOURS[k % len(SEED_COLOURS)],
                           label=f"seed {seed}")
        shares = " ".join(f"{m.name} {100 * row[f'share_{m.name}']:.0f}" for m in spec.modes)
        ax.set_title(f"{row['agent']} ({row['risk']})\nexpected {_short_expectation(row)}: {row['matched']}\n"
                     f"{shares} out {100 * row['outside']:.0f} (% of actions)", fontsize=9)
        if i == 0:
            ax.legend(loc="lower center", fontsize=7, markerscale=3, ncol=len(report["seeds"]), handletextpad=0.1)
    ax = fig.add_subplot(grid[nrow, :])
    regions, width = [m.name for m in spec.modes] + ["outside"], 0.8 / (len(spec.modes) + 1)
    colours = plt.get_cmap("tab10")
    for j, region in enumerate(regions):
        key = "outside" if region == "outside" else f"share_{region}"
        x = np.arange(len(rows)) + (j - (len(regions) - 1) / 2) * width
        means = [100 * r[key] for r in rows]
        cis = [100 * r[key + "_ci"] if math.isfinite(r[key + "_ci"]) else 0 for r in rows]
        ax.bar(x, means, width, yerr=cis, capsize=2, label=region, color="0.5" if region == "outside" else colours(j))
        for xi, r in zip(x, rows):
            ax.scatter([xi] * len(r[key + "_per_seed"]), 100 * np.array(r[key + "_per_seed"]), s=6, c="k", zorder=3)
    ax.set_xticks(np.arange(len(rows)), [f"{r['agent']}\nexpected {_short_expectation(r)}" for r in rows], fontsize=8)
    ax.set_ylabel("% of actions (mean, 95 % CI, seeds)"), ax.set_ylim(0, 119)
    ax.legend(fontsize=8, ncol=len(regions), loc="upper center")
    fig.suptitle(f"{variant} ({spec.note}): final actions over the CVaR$_{{0.1}}$ map, {report['steps']} steps, "
                 f"seeds {' '.join(map(str, report['seeds']))}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    save_figure(fig, path, dpi=90)
    plt.close(fig)
