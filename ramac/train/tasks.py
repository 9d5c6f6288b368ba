"""Tasks: a data set plus how to evaluate a policy on it and what to report.

A task is a member of the bandit family, a Stochastic MuJoCo preset (its Minari data set and risky
env), or any data set given as a source (`FILE.npz`, `FILE.h5`, `minari:ID`) evaluated in a
Gymnasium env (`env`, else the env a Minari data set records, else no evaluation).
"""

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
    env_dims: tuple | None = None  # (obs dim, action dim, env name) the data must fit; None: nothing to check


def make_task(name: str, device: torch.device, eval_samples: int = 2_000, eval_episodes: int = 10,
              dataset: str = "", env: str = "") -> Task:
    """The task `name`, or with `dataset` a data set of the user's (then `name` only names the
    preset whose settings the run uses) evaluated in `env`."""
    if dataset:
        return _dataset_task(dataset, env, device, eval_episodes)
    if name in BANDITS:
        spec = BANDITS[name]
        data = bandit.make_dataset(spec=spec)

        def evaluate(agent, seed):
            return bandit.evaluate(agent, n_actions=eval_samples, seed=seed, device=device, spec=spec)

        def report(metrics, run_dir, title=""):
            bandit.plot({"policy": metrics["_actions"]}, data.action.numpy(), Path(run_dir) / "bandit.png", title,
                        spec=spec)

        return Task(name, data, evaluate, report, bandit.summary_line,
                    (bandit.STATE_DIM, bandit.ACTION_DIM, f"the {name} bandit"))
    from ..data import stochastic_mujoco as datasets
    from .. import evaluation  # MuJoCo tasks only: a bandit run never imports gymnasium
    from ..envs.mujoco import HAZARDS, make_risky_env

    if name in HAZARDS:
        data = datasets.load(name)  # names the `ramac data make` command when missing

        def evaluate(agent, seed):
            return evaluation.evaluate_preset(agent, name, episodes=eval_episodes, seed=seed, device=device)

        return Task(name, data, evaluate, _risk_profile_report, evaluation.summary_line,
                    _dims_of(lambda: make_risky_env(name), f"{HAZARDS[name].base_env} ({name})"))
    raise ValueError(f"unknown task {name!r}; available: {', '.join(BANDITS)}, {', '.join(HAZARDS)}")


def _risk_profile_report(metrics, run_dir, title=""):
    """An episodic task's figure: the risk profile of the evaluation's returns."""
    from ..evaluation import plot_risk_profile

    plot_risk_profile({"policy": metrics["_returns"]}, Path(run_dir) / "risk_profile.png", title)


def _dims_of(make_env, name: str) -> tuple:
    env = make_env()
    try:
        return env.observation_space.shape[0], env.action_space.shape[0], name
    finally:
        env.close()


def load_source(source: str):
    """(OfflineDataset, the env spec a Minari data set records or None) of FILE.npz | FILE.h5 | minari:ID."""
    if source.startswith("minari:"):
        import minari

        dataset_id = source.removeprefix("minari:")
        try:
            ds = minari.load_dataset(dataset_id)
        except Exception as e:  # noqa: BLE001 - Minari reports a missing id with several types
            raise FileNotFoundError(f"cannot load the Minari data set {dataset_id!r} ({str(e).splitlines()[0]}); "
                                    f"`minari list local` shows what is here") from None
        return OfflineDataset.from_minari(ds), ds.spec.env_spec
    return OfflineDataset.load(source), None


def env_evaluation(env: str | None, device, episodes: int, spec=None):
    """(evaluate, report, dims) of a policy in a Gymnasium env given by id (or by a recorded spec):
    `episodes` full episodes side by side, return mean / CVaR_0.1 / risky-step rate."""
    import gymnasium as gym

    from .. import evaluation

    target = env or spec

    def make_env():
        return gym.make(target)

    try:
        dims = _dims_of(make_env, env or spec.id)
    except gym.error.Error as e:
        raise ValueError(f"cannot make the evaluation env {env or spec.id!r}: {e}") from None

    def evaluate(agent, seed):
        generator = torch.Generator(torch.device(device)).manual_seed(seed)
        roll = evaluation.run_episodes(evaluation.agent_policy(agent, device, generator), make_env, episodes, None, seed)
        out = evaluation.episode_metrics(roll["returns"], roll["lengths"], roll["risky"])
        out["_returns"] = roll["returns"]
        return out

    return evaluate, _risk_profile_report, dims


def _dataset_task(source: str, env: str, device, episodes: int) -> Task:
    data, recorded = load_source(source)
    if not env and recorded is None:
        def evaluate(agent, seed):
            return {}

        return Task(source, data, evaluate, lambda metrics, run_dir, title="": None,
                    lambda m: "no evaluation: the data set records no env and no --env was given")
    from .. import evaluation

    evaluate, report, dims = env_evaluation(env or None, device, episodes, spec=recorded)
    return Task(source, data, evaluate, report, evaluation.summary_line, dims)
