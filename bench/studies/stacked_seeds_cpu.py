"""Seeds stacked vs side by side on the CPU (eager updates): seed-updates/s for K seeds.

    python -m bench.studies.stacked_seeds_cpu --out bench/results/stacked-seeds-cpu.json

On the CPU the updates run eagerly, one operator call at a time, so K seeds side by side make K
times the calls of one seed, and stacked ones (ramac.train.stacked) about one seed's, each K times
wider: where the calls dominate (small networks) stacking pays in proportion to K. The GPU
figures (one CUDA graph either way) come from `ramac bench train --seeds K` on the GPU machine.
Synthetic data of HalfCheetah's shape (S = 17, A = 6); risk term on from step one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from ramac.agents import make_agent
from ramac.config import agent_fields, build_configs, risk_from_step_one
from ramac.data.container import synthetic_dataset
from ramac.train.updaters import make_seeds_updater

SHAPES = {  # name: agent overrides, batch size
    "small": (dict(actor_hidden=32, critic_hidden=32, embedding_dim=16, n_quantiles=8, n_risk_quantiles=8), 64),
    "halfcheetah": ({}, 256),
}


def seed_updates_per_s(algo, shape, K, layout, steps, warmup=3) -> float:
    over, batch = SHAPES[shape]
    known = agent_fields(algo)
    agent_cfg, _ = build_configs("halfcheetah-medium-expert", algo, agent_overrides={
        **risk_from_step_one(algo), **{k: v for k, v in over.items() if k in known}})
    data = synthetic_dataset()
    agents = []
    for k in range(K):
        torch.manual_seed(k)
        agent = make_agent(algo, data.state_dim, data.action_dim, agent_cfg)
        agent.fit_data(data)
        agent.seed_noise(k)
        agents.append(agent)
    os.environ["RAMAC_STACK_SEEDS"] = "1" if layout == "stacked" else "0"
    group = make_seeds_updater(agents, data, batch, graph=False, compile=False)
    for _ in range(warmup):
        group.step()
    t0 = time.perf_counter()
    for _ in range(steps):
        group.step()
    return K * steps / (time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--algos", nargs="+", default=["radac", "bc"])
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for algo in args.algos:
        for shape in args.shapes:
            side = {}
            for K in args.seeds:
                for layout in ("side", "stacked") if K > 1 else ("side",):
                    rate = seed_updates_per_s(algo, shape, K, layout, args.steps)
                    row = dict(algo=algo, shape=shape, batch=SHAPES[shape][1], seeds=K, layout=layout,
                               seed_updates_per_s=rate)
                    if layout == "side":
                        side[K] = rate
                    else:
                        row["vs_side_by_side"] = rate / side[K]
                    rows.append(row)
                    print({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    meta = dict(command="python -m bench.studies.stacked_seeds_cpu " + " ".join(argv or []), torch=torch.__version__,
                cpu=platform.processor() or platform.machine(), threads=args.threads, steps=args.steps,
                data="synthetic S=17 A=6", path="eager (CPU)")
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
