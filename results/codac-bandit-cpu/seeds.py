import sys
from ramac.config import build_configs
from ramac.train import train
from ramac.envs import bandit
for algo in ("cql", "codac"):
    for seed in (0, 1, 2):
        a, c = build_configs("bandit", algo, cpu_sized=True, train_overrides={"steps": 1500, "eval_every": 500, "device": "cpu", "seed": seed})
        m = train(a, c, f"/tmp/gs/{algo}-{seed}", progress=False).final_eval
        print(algo, seed, bandit.summary_line(m), flush=True)
