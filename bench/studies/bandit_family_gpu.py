"""The bandit study behind results/bandit-study/ in one GPU process: the default bandit x 3
seeds to 42k steps (read at 7k, 14k, ... 42k) and every other family member x 3 seeds to
14k, optionally the published risk term (plain BC, unnormalised eta = 0.2) on some
variants for comparison, all side by side on one GPU (one CUDA stream per run).

    python -m bench.studies.bandit_family_gpu --out results/bandit-study [--runs /tmp/runs]
        [--part family|long|all] [--set KEY=VALUE ...]

--part splits the study over device calls of at most ten minutes: `family` trains every
variant (the default bandit too) to --family-steps, `long` the default bandit to --long-steps.
Rerunning resumes: finished runs are skipped, others continue from their checkpoints.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ramac.study import finish_report, plan_runs, train_runs
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
    p.add_argument("--part", choices=("family", "long", "all"), default="all")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="agent setting over the bandit preset (a candidate; the committed study uses none)")
    args = p.parse_args(argv)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    runs = args.runs or args.out / "runs"
    lengths = sorted({args.eval_every * k for k in range(1, args.family_steps // args.eval_every + 1)})
    long = plan_runs(["bandit"], "radac", args.seeds, args.long_steps, args.eval_every, overrides,
                     runs / "long", args.device)
    family = plan_runs(list(FAMILY), "radac", args.seeds, args.family_steps, args.eval_every, overrides,
                       runs / "family", args.device)
    published = plan_runs(args.published, "radac", args.seeds[:1], args.family_steps, args.eval_every, PUBLISHED,
                          runs / "published", args.device)
    todo = {"family": family + published, "long": long, "all": family + long + published}[args.part]
    t0 = time.perf_counter()
    train_runs(todo, args.device, concurrent=len(todo), plots="none" if args.no_plots else "final")
    print(f"{len(todo)} runs trained in {time.perf_counter() - t0:.0f} s")
    names = []
    if args.part != "long":
        finish_report(family, lengths, "radac", overrides, args.out / "family")
        names.append("family")
    if args.part != "family":
        finish_report(long, list(range(args.eval_every, args.long_steps + 1, args.eval_every)), "radac", overrides,
                      args.out / "bandit-long")
        names.append("bandit-long")
    if published and args.part != "long":
        finish_report(published, lengths, "radac", PUBLISHED, args.out / "published")
        names.append("published")
    for name in names:
        print((args.out / name / "study.md").read_text())


if __name__ == "__main__":
    main()
