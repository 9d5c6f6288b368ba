"""Evaluate a run's checkpoint again (`ramac eval`, and `ramac sweep`'s final evaluation): the
run's own task, a user's data set, or any Gymnasium env whose spaces fit; on Stochastic MuJoCo
optionally the OOD-action rate of each detector. Writes RUN_DIR/eval-again.json (which `ramac
report` prefers to eval.json), returns-again.npy and figures beside the training run's."""

from __future__ import annotations

from pathlib import Path

import torch

from ..envs.bandit_family import FAMILY as BANDITS
from ..utils import atomic_write_json
from .loop import load_agent
from .rundir import save_returns, write_figures
from .tasks import make_task


def reevaluate(run_dir, device, episodes: int = 100, samples: int = 10_000, seed: int = 0, ood: bool = False,
               full_horizon: bool = False, env: str | None = None, ood_cache: dict | None = None):
    """(checkpoint step, metrics, names of the figures written). ood_cache: a dict in which the
    data-set detectors of each task are kept for the next run of the same task (a sweep's)."""
    agent, train_cfg, step = load_agent(run_dir, device)
    if env:  # any Gymnasium env whose spaces fit the policy
        from ..evaluation import summary_line
        from .tasks import Task, env_evaluation

        evaluate, report, dims = env_evaluation(env, device, episodes)
        if (agent.state_dim, agent.action_dim) != dims[:2]:
            raise ValueError(f"the policy of {run_dir} takes obs dim {agent.state_dim} and gives action dim "
                             f"{agent.action_dim}, but {env} has obs dim {dims[0]} and action dim {dims[1]}")
        task = Task(env, None, evaluate, report, summary_line, dims)
        metrics = task.evaluate(agent, seed=seed)
    elif train_cfg.dataset or train_cfg.task in BANDITS:
        task = make_task(train_cfg.task, device, samples, episodes, train_cfg.dataset, train_cfg.env)
        metrics = task.evaluate(agent, seed=seed)
    else:
        task = make_task(train_cfg.task, device, samples, episodes)
        from ..evaluation import evaluate_preset

        metrics = evaluate_preset(agent, task.name, episodes, full_horizon, seed, device, record=ood)
        if ood:
            from ..ood import build_detectors, detector_report, fit_data_detectors

            critics = agent if hasattr(agent, "critic_quantiles") else None  # BC has no critic ensemble
            cache = {} if ood_cache is None else ood_cache
            if task.name not in cache:
                cache[task.name] = fit_data_detectors(task.dataset.to(device))
            detectors = build_detectors(task.dataset, critics, fitted=cache[task.name])
            obs = torch.as_tensor(metrics["_obs"], dtype=torch.float32, device=device)
            act = torch.as_tensor(metrics["_actions"], dtype=torch.float32, device=device)
            metrics.update(detector_report(detectors, obs, act))
            metrics["ood/thresholds"] = {d.name: d.threshold for d in detectors}
    figures = write_figures(task, metrics, run_dir, suffix="-eval",  # beside the training run's figures
                            title=f"{train_cfg.task} / {train_cfg.algo}, step {step} (re-evaluated)")
    out = {"step": step, "seed": seed, **{k: v for k, v in metrics.items() if k[0] != "_"}}
    atomic_write_json(Path(run_dir) / "eval-again.json", out)
    save_returns(Path(run_dir) / "returns-again.npy", metrics)
    return step, metrics, figures
