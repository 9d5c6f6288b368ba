"""Does bf16 autocast change what RADAC learns on the risky bandit? fp32 vs bf16, several seeds.

    python -m bench.studies.bf16_bandit --seeds 0 1 2 --out bench/results/bf16-bandit-cpu.json [--device cuda]

Runs `ramac train --task bandit` (the device's default preset) with and without --bf16 for each
seed, two runs at a time, and tabulates the final mode shares, reward statistics and critic-1
quantiles at R: the bf16 - fp32 differences against the spread between seeds.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

KEYS = ("share/R", "share/S", "share/outside", "reward/mean", "reward/cvar_0.1",
        "quantile/R/critic1/0.05", "quantile/R/critic1/0.5")


def run(seed, bf16, device, root):
    run_dir = Path(root) / f"{'bf16' if bf16 else 'fp32'}-seed{seed}"
    cmd = [sys.executable, "-m", "ramac.cli", "train", "--task", "bandit", "--seed", str(seed), "--device", device,
           "--run-dir", str(run_dir), "--no-progress", "--eval-every", "0", "--threads", "1"] + (["--bf16"] * bf16)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    final = json.loads((run_dir / "eval.json").read_text())
    return {k: final[k] for k in KEYS}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out")
    args = ap.parse_args()
    jobs = [(s, b) for s in args.seeds for b in (False, True)]
    with tempfile.TemporaryDirectory() as root, ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda j: run(*j, args.device, root), jobs))
    runs = {f"{'bf16' if b else 'fp32'}-seed{s}": r for (s, b), r in zip(jobs, results)}
    summary = {}
    for k in KEYS:
        fp32 = [runs[f"fp32-seed{s}"][k] for s in args.seeds]
        diffs = [runs[f"bf16-seed{s}"][k] - runs[f"fp32-seed{s}"][k] for s in args.seeds]
        summary[k] = {"fp32_mean": statistics.mean(fp32), "fp32_seed_sd": statistics.stdev(fp32),
                      "bf16_minus_fp32_mean": statistics.mean(diffs), "bf16_minus_fp32_max_abs": max(map(abs, diffs))}
    report = {"device": args.device, "seeds": args.seeds, "runs": runs, "summary": summary}
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
