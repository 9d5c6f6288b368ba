"""The bandit study behind results/bandit-study/ in one GPU process: the default bandit x 3
seeds to 42k steps (read at 7k, 14k, ... 42k) and every other family member x 3 seeds to
14k, optionally the published risk term (plain BC, unnormalised eta = 0.2) on some
variants for comparison, all side by side on one GPU (one CUDA stream per run).

    python -m bench.studies.bandit_family_gpu --out results/bandit-study [--runs /tmp/runs]

Rerunning resumes: finished runs are skipped, others continue from their checkpoints.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ramac.bandit_study import finish_report, plan_runs, train_runs
from ramac.envs.bandit_family import FAMILY

PUBLISHED = {"bc_filter": "none", "risk_norm": "none", "eta": 0.2}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("results/bandit-study"))
    p.add_argument("--runs", type=Path, help="run directories (default: OUT/runs)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--family-steps", type=int, default=14_000)
    p.add_argument("--long-steps", type=int, default=42_000)
    p.add_argument("--eval-every", type=int, default=7_000)
    p.add_argument("--published", nargs="*", default=[],
                   help="variants also trained with the published risk term (one seed)")
    p.add_argument("--no-plots", action="store_true", help="no bandit.png per run (saves host time)")
    args = p.parse_args(argv)
    runs = args.runs or args.out / "runs"
    long = plan_runs(["bandit"], "radac", args.seeds, args.long_steps, args.eval_every, None,
                     runs / "family", args.device)
    family = long + plan_runs([v for v in FAMILY if v != "bandit"], "radac", args.seeds, args.family_steps,
                              args.eval_every, None, runs / "family", args.device)
    published = plan_runs(args.published, "radac", args.seeds[:1], args.family_steps, args.eval_every, PUBLISHED,
                          runs / "published", args.device)
    t0 = time.perf_counter()
    everything = family + published
    train_runs(everything, args.device, concurrent=len(everything), plots="none" if args.no_plots else "final")
    print(f"all runs trained in {time.perf_counter() - t0:.0f} s")
    lengths = sorted({args.eval_every * k for k in range(1, args.family_steps // args.eval_every + 1)})
    finish_report(family, lengths, "radac", {}, args.out / "family")
    finish_report(long, list(range(args.eval_every, args.long_steps + 1, args.eval_every)), "radac", {},
                  args.out / "bandit-42k")
    names = ["family", "bandit-42k"]
    if published:
        finish_report(published, lengths, "radac", PUBLISHED, args.out / "published")
        names.append("published")
    for name in names:
        print((args.out / name / "study.md").read_text())


if __name__ == "__main__":
    main()
