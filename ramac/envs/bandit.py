"""The 2-D risky bandit (SPEC 2.5): one step, no state, four behaviour modes.

    R  = (+0.7, +0.7)  +8 w.p. 0.9, -30 w.p. 0.1     mean 4.2, CVaR_0.1 = -30
    S  = (-0.7, +0.7)  Normal(3, 0.5^2)             mean 3,   CVaR_0.1 ~ 2.12
    L1 = (-0.7, -0.7)  Normal(0, 0.5^2)
    L2 = (+0.7, -0.7)  Normal(0, 0.5^2)
    outside every radius-0.35 disc (OOD): -20

A risk-neutral actor should pick R, a CVaR_0.1 actor S, BC all four.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..data import OfflineDataset
from ..risk import empirical_cvar
from ..utils import seeded

MODES = ("R", "S", "L1", "L2")
REGIONS = MODES + ("outside",)
CENTRES = np.array([[0.7, 0.7], [-0.7, 0.7], [-0.7, -0.7], [0.7, -0.7]])
RADIUS = 0.35
DATA_SIGMA = 0.1
OOD_REWARD = -20.0
STATE_DIM, ACTION_DIM = 1, 2
READOUT_TAUS = (0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.98)


def region_of(actions) -> np.ndarray:
    """Region index per action: 0..3 for the modes in MODES order, 4 outside every disc."""
    a = np.asarray(actions, dtype=np.float64).reshape(-1, 2)
    d = np.linalg.norm(a[:, None, :] - CENTRES[None], axis=-1)  # (N, 4)
    nearest = d.argmin(axis=1)
    return np.where(d[np.arange(len(a)), nearest] <= RADIUS, nearest, 4)


def sample_rewards(actions, rng: np.random.Generator) -> np.ndarray:
    """One stochastic reward per action."""
    region = region_of(actions)
    n = len(region)
    r = np.full(n, OOD_REWARD)
    risky = region == 0
    r[risky] = np.where(rng.random(risky.sum()) < 0.1, -30.0, 8.0)
    safe = region == 1
    r[safe] = rng.normal(3.0, 0.5, safe.sum())
    low = (region == 2) | (region == 3)
    r[low] = rng.normal(0.0, 0.5, low.sum())
    return r


def region_stats() -> dict:
    """Exact mean and CVaR_0.1 of each region's reward law."""
    phi = math.exp(-0.5 * 1.2815515655446004**2) / math.sqrt(2 * math.pi)  # N(0,1) density at its 10% quantile
    gauss_cvar = -0.5 * phi / 0.1
    return {
        "R": (4.2, -30.0), "S": (3.0, 3.0 + gauss_cvar), "L1": (0.0, gauss_cvar), "L2": (0.0, gauss_cvar),
        "outside": (OOD_REWARD, OOD_REWARD),
    }


def make_dataset(n: int = 10_000, seed: int = 0) -> OfflineDataset:
    """Behaviour data: equal mixture of the four modes, sigma 0.1 per axis, clipped to the box."""
    if n < 1:
        raise ValueError(f"bandit data set needs n >= 1 transitions, got {n}")
    rng = np.random.default_rng(seed)
    mode = rng.integers(0, 4, n)
    actions = np.clip(CENTRES[mode] + DATA_SIGMA * rng.standard_normal((n, 2)), -1.0, 1.0)
    rewards = sample_rewards(actions, rng)
    zeros = np.zeros((n, STATE_DIM), dtype=np.float32)
    return OfflineDataset.from_arrays(
        {"obs": zeros, "action": actions.astype(np.float32), "reward": rewards.astype(np.float32),
         "next_obs": zeros, "terminal": np.ones(n, np.float32), "timeout": np.zeros(n, np.float32)},
        meta={"task": "bandit", "n": n, "seed": seed, "generator": "ramac.envs.bandit.make_dataset"},
        source="bandit",
    )


@torch.no_grad()
def evaluate(agent, n_actions: int = 2_000, reward_draws: int = 10, seed: int = 0, device="cpu") -> dict:
    """Mode shares, reward mean / CVaR_0.1 and critic quantiles at the mode centres."""
    with seeded(seed, torch.device(device)):
        obs = torch.zeros(n_actions, STATE_DIM, device=device)
        actions = agent.act(obs).float().cpu().numpy()
    region = region_of(actions)
    rng = np.random.default_rng(seed)
    rewards = sample_rewards(np.repeat(actions, reward_draws, axis=0), rng)
    out = {f"share/{name}": float((region == i).mean()) for i, name in enumerate(REGIONS)}
    out["reward/mean"] = float(rewards.mean())
    out["reward/cvar_0.1"] = empirical_cvar(rewards, 0.1)
    taus = torch.tensor(READOUT_TAUS, device=device)
    centres = torch.tensor(CENTRES, dtype=torch.float32, device=device)
    q = agent.critic_quantiles(torch.zeros(4, STATE_DIM, device=device), centres, taus).cpu().numpy()  # (2, 4, K)
    for i, name in enumerate(MODES):
        for c in range(2):
            for k, tau in enumerate(READOUT_TAUS):
                out[f"quantile/{name}/critic{c + 1}/{tau:g}"] = float(q[c, i, k])
    out["_actions"] = actions
    return out


def summary_line(m: dict) -> str:
    shares = " ".join(f"{name} {100 * m[f'share/{name}']:.1f}%" for name in REGIONS)
    return f"{shares} | reward mean {m['reward/mean']:.2f} CVaR0.1 {m['reward/cvar_0.1']:.2f}"


def plot(results: dict, data_actions, path, title: str = "") -> None:
    """Data and policy actions over maps of the per-region reward mean and CVaR_0.1.

    results: {method name: policy actions (N, 2)}; one row of two panels per method.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(-1, 1, 241)
    gx, gy = np.meshgrid(grid, grid)
    region = region_of(np.stack([gx.ravel(), gy.ravel()], axis=1)).reshape(gx.shape)
    stats = region_stats()
    maps = [np.vectorize(lambda r: stats[REGIONS[r]][j])(region) for j in (0, 1)]
    data = np.asarray(data_actions)[:3000]
    fig, axes = plt.subplots(len(results), 2, figsize=(10, 4.6 * len(results)), squeeze=False)
    for row, (name, actions) in enumerate(results.items()):
        actions = np.asarray(actions)
        shares = np.bincount(region_of(actions), minlength=5) / max(len(actions), 1)
        for col, (values, label) in enumerate(zip(maps, ("mean reward", "CVaR$_{0.1}$ of reward"))):
            ax = axes[row, col]
            im = ax.imshow(values, extent=(-1, 1, -1, 1), origin="lower", cmap="RdYlGn", vmin=-30, vmax=8)
            ax.scatter(data[:, 0], data[:, 1], s=2, c="0.35", alpha=0.35, label="data")
            ax.scatter(actions[:, 0], actions[:, 1], s=3, c="tab:blue", alpha=0.5, label="policy")
            for (cx, cy), mode in zip(CENTRES, MODES):
                ax.text(cx, cy + RADIUS + 0.04, mode, ha="center", fontsize=9, weight="bold")
            ax.set_xlim(-1, 1), ax.set_ylim(-1, 1), ax.set_aspect("equal")
            ax.set_title(f"{name}: {label}", fontsize=10)
            fig.colorbar(im, ax=ax, fraction=0.046)
            if col == 0:
                ax.legend(loc="lower center", fontsize=8, markerscale=4)
        axes[row, 1].set_xlabel(
            " ".join(f"{r} {100 * s:.0f}%" for r, s in zip(REGIONS, shares)), fontsize=9
        )
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
