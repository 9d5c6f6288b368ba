"""Does the compiled (and graphed) update train like the plain one? Loss trajectories side by side.

    python -m bench.studies.compile_check --steps 1200 --variants plain compile compile-graph

Trains the halfcheetah-medium-expert networks (risk term on) on synthetic HalfCheetah-shaped
data from the same seed with each variant and prints the metric means every --every steps.
"""

import argparse
import json

import torch

from ramac.agents.radac import RADAC
from ramac.data.container import synthetic_dataset
from ramac.config import build_configs
from ramac.train.updaters import FastUpdater

VARIANTS = {  # name: (compile, graph, bf16)
    "plain": (False, False, False), "graph": (False, True, False), "compile": (True, False, False),
    "compile-graph": (True, True, False), "compile-graph-bf16": (True, True, True), "graph-bf16": (False, True, True),
}


def run(variant, seed, steps, every, data, batch):
    compiled, graph, bf16 = VARIANTS[variant]
    cfg, _ = build_configs("halfcheetah-medium-expert", agent_overrides={"eta_warmup_steps": 0})
    torch.manual_seed(seed)
    agent = RADAC(data.state_dim, data.action_dim, cfg).to(data.obs.device)
    upd = FastUpdater(agent, data, batch, graph=graph, bf16=bf16, compile=compiled)
    rows = []
    for step in range(1, steps + 1):
        upd.step()
        if step % every == 0:
            means, first_bad = upd.metrics.read()
            rows.append({"step": step, "first_bad": first_bad} | {k: round(v, 4) for k, v in means.items()
                                                                   if k in ("critic/loss1", "actor/bc", "actor/risk")})
            print(variant, seed, rows[-1], flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--variants", nargs="+", default=["graph", "compile-graph"], choices=tuple(VARIANTS))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out")
    args = ap.parse_args()
    data = synthetic_dataset(device=args.device)
    res = {f"{v}-seed{s}": run(v, s, args.steps, args.every, data, args.batch_size) for v in args.variants for s in args.seeds}
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": str(data.obs.device), "steps": args.steps, "runs": res}, f, indent=1)


if __name__ == "__main__":
    main()
