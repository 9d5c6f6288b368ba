"""Tasks: a data set plus how to evaluate a policy on it and what to report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .data import OfflineDataset
from .envs import bandit


@dataclass
class Task:
    name: str
    dataset: OfflineDataset
    evaluate: Callable[..., dict]  # (agent, seed) -> metrics; keys starting with "_" are not logged
    report: Callable[..., None]  # (metrics, run_dir) -> writes plots
    summary: Callable[[dict], str]  # one line for the console


def make_task(name: str, device: torch.device, eval_samples: int = 2_000) -> Task:
    if name == "bandit":
        data = bandit.make_dataset()

        def evaluate(agent, seed):
            return bandit.evaluate(agent, n_actions=eval_samples, seed=seed, device=device)

        def report(metrics, run_dir, title=""):
            bandit.plot({"policy": metrics["_actions"]}, data.action.numpy(), Path(run_dir) / "bandit.png", title)

        return Task(name, data, evaluate, report, bandit.summary_line)
    raise ValueError(
        f"task {name!r} has no data set builder yet; available: bandit "
        "(the Stochastic MuJoCo tasks need `ramac data make`, see the README)"
    )
