"""Does bf16 autocast change training beyond seed noise? (HalfCheetah-shaped synthetic data)

    python -m bench.studies.bf16_check --steps 1500 --out FILE.json [--compile]

Trains the halfcheetah-medium-expert networks (risk term on) with the graphed fast path,
fp32 and bf16, two seeds each, and compares the late-training means of the losses: the
bf16 - fp32 gap against the seed-to-seed gap.
"""

import argparse
import json

import torch

from ramac.agents.radac import RADAC
from ramac.data.container import synthetic_dataset
from ramac.config import build_configs
from ramac.train.updaters import FastUpdater


def run(seed, bf16, steps, data, compile=False):
    cfg, _ = build_configs("halfcheetah-medium-expert", agent_overrides={"eta_warmup_steps": 0})
    torch.manual_seed(seed)
    agent = RADAC(data.state_dim, data.action_dim, cfg).cuda()
    upd = FastUpdater(agent, data, 256, graph=True, bf16=bf16, compile=compile)
    for _ in range(steps - steps // 3):
        upd.step()
    upd.metrics.read()
    for _ in range(steps // 3):  # average over the last third
        upd.step()
    means, first_bad = upd.metrics.read()
    return {k: means[k] for k in ("critic/loss1", "critic/z_mean", "actor/bc", "actor/risk")} | {"finite": first_bad < 0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--out")
    ap.add_argument("--compile", action="store_true", help="both precisions with the losses through torch.compile")
    args = ap.parse_args()
    data = synthetic_dataset(device="cuda")
    res = {f"{p}-seed{s}": run(s, p == "bf16", args.steps, data, args.compile) for p in ("fp32", "bf16") for s in (0, 1)}
    report = {"device": torch.cuda.get_device_name(), "steps": args.steps, "compile": args.compile, "runs": res,
              "gaps": {}}
    for k in ("critic/loss1", "critic/z_mean", "actor/bc", "actor/risk"):
        seed_gap = abs(res["fp32-seed0"][k] - res["fp32-seed1"][k])
        bf16_gap = max(abs(res[f"bf16-seed{s}"][k] - res[f"fp32-seed{s}"][k]) for s in (0, 1))
        report["gaps"][k] = {"fp32_seed_to_seed": seed_gap, "bf16_vs_fp32_same_seed": bf16_gap}
    print(json.dumps(report, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
