"""Vectorised evaluation on the risky MuJoCo tasks, with risk metrics (SPEC 4).

N episodes run side by side (one environment each, in worker processes when the
machine has the cores for it); every step, the actions of all live episodes come
from one batched policy call on the agent's device.
"""

from __future__ import annotations

import math
import os

import gymnasium as gym
import numpy as np
import torch

from .envs.mujoco import EVAL_HORIZON, HAZARDS, make_risky_env, normalized_score
from .risk_measures import bootstrap_ci, empirical_cvar
from .utils import seeded


def episode_metrics(returns, lengths, risky_steps, base_env: str | None = None) -> dict:
    """Mean / std / CVaR_0.1 of returns (with bootstrap CIs), risky-step rate, length, normalised score."""
    returns = np.asarray(returns, dtype=np.float64)
    if returns.size == 0:
        raise ValueError("no episodes to summarise")
    cvar = lambda x: empirical_cvar(x, 0.1)  # noqa: E731
    out = {
        "episodes": int(returns.size),
        "return/mean": float(returns.mean()), "return/std": float(returns.std()),
        "return/cvar_0.1": cvar(returns),
        "return/mean_ci95": bootstrap_ci(returns, np.mean), "return/cvar_0.1_ci95": bootstrap_ci(returns, cvar),
        "risky_rate": float(np.sum(risky_steps) / max(np.sum(lengths), 1)),
        "length/mean": float(np.mean(lengths)),
    }
    if base_env is not None:
        out["score/mean"] = float(normalized_score(base_env, returns).mean())
        out["score/cvar_0.1"] = float(normalized_score(base_env, out["return/cvar_0.1"]))
    return out


def run_episodes(policy, make_env, episodes: int, horizon: int | None, seed: int, asynchronous: bool | None = None,
                 record: bool = False) -> dict:
    """Roll out `episodes` episodes in parallel; policy maps an (n, obs_dim) array to actions.

    Returns per-episode returns, lengths and risky-step counts (and, with record=True,
    the visited (obs, action) pairs of live episodes).
    """
    if asynchronous is None:
        asynchronous = (os.cpu_count() or 1) >= 8 and episodes > 1
    vec = gym.vector.AsyncVectorEnv if asynchronous else gym.vector.SyncVectorEnv
    envs = vec([make_env for _ in range(episodes)])
    try:
        obs, _ = envs.reset(seed=seed)
        returns, lengths, risky = np.zeros(episodes), np.zeros(episodes, int), np.zeros(episodes, int)
        alive = np.ones(episodes, bool)
        pairs_obs, pairs_act = [], []
        t = 0
        while alive.any() and (horizon is None or t < horizon):
            act = np.asarray(policy(obs), dtype=np.float32)
            if record:
                pairs_obs.append(obs[alive])
                pairs_act.append(act[alive])
            obs, r, term, trunc, info = envs.step(act)
            step_risky = np.asarray(info.get("risky", np.zeros(episodes, bool)), dtype=bool)
            returns += r * alive
            lengths += alive
            risky += step_risky & alive
            alive &= ~(term | trunc)  # finished episodes stop counting (autoreset steps are ignored)
            t += 1
    finally:
        envs.close()
    out = {"returns": returns, "lengths": lengths, "risky": risky}
    if record:
        out["obs"], out["actions"] = np.concatenate(pairs_obs), np.concatenate(pairs_act)
    return out


def agent_policy(agent, device, generator: torch.Generator | None = None):
    """obs (numpy) -> actions (numpy) from agent.act, its noise drawn from `generator`."""
    @torch.no_grad()
    def policy(obs):
        obs = torch.as_tensor(obs, dtype=torch.float32, device=device)
        return agent.act(obs, generator=generator).float().cpu().numpy()

    return policy


def evaluate_preset(agent, preset: str, episodes: int = 100, full_horizon: bool = False, seed: int = 0,
                    device="cpu", record: bool = False) -> dict:
    """Risk metrics of an agent on a Stochastic MuJoCo preset (horizon as published, or 1000)."""
    base = HAZARDS[preset].base_env
    horizon = None if full_horizon else EVAL_HORIZON[base]
    # the policy's noise from a generator of the same seed, not only the env resets: same seed, same numbers
    generator = torch.Generator(torch.device(device)).manual_seed(seed)
    with seeded(seed, torch.device(device)):  # and anything an agent draws outside its generator
        roll = run_episodes(agent_policy(agent, device, generator), lambda: make_risky_env(preset), episodes, horizon,
                            seed, record=record)
    out = episode_metrics(roll["returns"], roll["lengths"], roll["risky"], base)
    out["horizon"] = horizon or 1000
    out["_returns"] = roll["returns"]
    if record:
        out["_obs"], out["_actions"] = roll["obs"], roll["actions"]
    return out


def summary_line(m: dict) -> str:
    return (f"return {m['return/mean']:.1f} +- {m['return/std']:.1f}, CVaR0.1 {m['return/cvar_0.1']:.1f}, "
            f"score {m.get('score/mean', math.nan):.1f}, risky {100 * m['risky_rate']:.1f}%, "
            f"length {m['length/mean']:.0f} ({m['episodes']} episodes)")


def draw_cvar_profiles(ax, returns_by_method: dict, colours: dict | None = None) -> None:
    """On ax: each method's CVaR_alpha curve of its returns (alpha 0.01 .. 1; in colours[name] if
    given, else the axes' cycle), the alpha = 0.1 line and the axis labels."""
    from .risk_measures import cvar_curve

    for name, rets in returns_by_method.items():
        alphas, curve = cvar_curve(rets)
        ax.plot(alphas, curve, label=name, **({"color": colours[name]} if colours else {}))
    ax.set_xlabel(r"$\alpha$")
    ax.set_ylabel(r"CVaR$_\alpha$ of episode return")
    ax.axvline(0.1, color="0.6", ls=":")


def plot_risk_profile(returns_by_method: dict, path, title: str = "") -> None:
    """The CVaR_alpha curve of episode returns (alpha 0.01 .. 1) and a return histogram per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    if len(returns_by_method) > 10:  # the default cycle's 10 colours would repeat
        for ax in (ax1, ax2):
            ax.set_prop_cycle(color=plt.cm.tab20.colors)
    draw_cvar_profiles(ax1, returns_by_method)
    for name, rets in returns_by_method.items():
        ax2.hist(rets, bins=30, alpha=0.5, label=name)
    ax2.set_xlabel("episode return")
    ax2.set_ylabel("episodes")
    for ax in (ax1, ax2):
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    from .utils import save_figure

    save_figure(fig, path, dpi=110)
    plt.close(fig)
