"""Tasks: a data set plus how to evaluate a policy on it and what to report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..data import OfflineDataset
from ..envs import bandit
from ..envs.bandit_family import FAMILY as BANDITS


@dataclass
class Task:
    name: str
    dataset: OfflineDataset
    evaluate: Callable[..., dict]  # (agent, seed) -> metrics; keys starting with "_" are not logged
    report: Callable[..., None]  # (metrics, run_dir) -> writes plots
    summary: Callable[[dict], str]  # one line for the console


def make_task(name: str, device: torch.device, eval_samples: int = 2_000, eval_episodes: int = 10) -> Task:
    if name in BANDITS:
        spec = BANDITS[name]
        data = bandit.make_dataset(spec=spec)

        def evaluate(agent, seed):
            return bandit.evaluate(agent, n_actions=eval_samples, seed=seed, device=device, spec=spec)

        def report(metrics, run_dir, title=""):
            bandit.plot({"policy": metrics["_actions"]}, data.action.numpy(), Path(run_dir) / "bandit.png", title,
                        spec=spec)

        return Task(name, data, evaluate, report, bandit.summary_line)
    from ..data import stochastic_mujoco as datasets
    from .. import evaluation  # MuJoCo tasks only: a bandit run never imports gymnasium
    from ..envs.mujoco import HAZARDS

    if name in HAZARDS:
        data = datasets.load(name)  # names the `ramac data make` command when missing

        def evaluate(agent, seed):
            return evaluation.evaluate_preset(agent, name, episodes=eval_episodes, seed=seed, device=device)

        def report(metrics, run_dir, title=""):
            evaluation.plot_risk_profile({"policy": metrics["_returns"]}, Path(run_dir) / "risk_profile.png", title)

        return Task(name, data, evaluate, report, evaluation.summary_line)
    raise ValueError(f"unknown task {name!r}; available: {', '.join(BANDITS)}, {', '.join(HAZARDS)}")
