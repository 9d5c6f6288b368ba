"""The 2-D risky bandit (SPEC 2.5): one step, no state, modes in the action box.

    R  = (+0.7, +0.7)  +8 w.p. 0.9, -30 w.p. 0.1     mean 4.2, CVaR_0.1 = -30
    S  = (-0.7, +0.7)  Normal(3, 0.5^2)             mean 3,   CVaR_0.1 ~ 2.12
    L1 = (-0.7, -0.7)  Normal(0, 0.5^2)
    L2 = (+0.7, -0.7)  Normal(0, 0.5^2)
    outside every radius-0.35 disc (OOD): -20

A risk-neutral actor should pick R, a CVaR_0.1 actor S, BC all four. Other
layouts and reward laws are `BanditSpec`s (`bandit_spec.py`); the family the
bandit study trains on is in `bandit_family.py`. Every function here takes a
spec and defaults to SPEC 2.5.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data import OfflineDataset
from ..risk_measures import empirical_cvar
from ..utils import save_figure, seeded
from .bandit_family import DEFAULT
from .bandit_spec import BanditSpec

MODES = tuple(m.name for m in DEFAULT.modes)
REGIONS = DEFAULT.regions
CENTRES = DEFAULT.centres
RADIUS = 0.35
DATA_SIGMA = DEFAULT.data_sigma
OOD_REWARD = DEFAULT.ood_reward
STATE_DIM, ACTION_DIM = 1, 2
READOUT_TAUS = (0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.98)


def region_of(actions, spec: BanditSpec = DEFAULT) -> np.ndarray:
    """Region index per action: the modes in the spec's order, len(modes) outside every disc."""
    return spec.region_of(actions)


def sample_rewards(actions, rng: np.random.Generator, spec: BanditSpec = DEFAULT) -> np.ndarray:
    """One stochastic reward per action."""
    return spec.sample_rewards(actions, rng)


def region_stats(spec: BanditSpec = DEFAULT, alpha: float = 0.1) -> dict:
    """Exact mean and CVaR_alpha of each region's reward law."""
    return spec.region_stats(alpha)


def make_dataset(n: int | None = None, seed: int = 0, spec: BanditSpec = DEFAULT) -> OfflineDataset:
    """Behaviour data: a mixture of the modes (sigma per axis), clipped to the box."""
    n = spec.n_data if n is None else n
    if n < 1:
        raise ValueError(f"bandit data set needs n >= 1 transitions, got {n}")
    rng = np.random.default_rng(seed)
    actions = spec.behaviour_actions(n, rng)
    rewards = spec.sample_rewards(actions, rng)
    zeros = np.zeros((n, STATE_DIM), dtype=np.float32)
    return OfflineDataset.from_arrays(
        {"obs": zeros, "action": actions.astype(np.float32), "reward": rewards.astype(np.float32),
         "next_obs": zeros, "terminal": np.ones(n, np.float32), "timeout": np.zeros(n, np.float32)},
        meta={"task": spec.name, "n": n, "seed": seed, "generator": "ramac.envs.bandit.make_dataset",
              "bandit": spec.to_dict()},
        source=spec.name,
    )


@torch.no_grad()
def evaluate(agent, n_actions: int = 2_000, reward_draws: int = 10, seed: int = 0, device="cpu",
             spec: BanditSpec = DEFAULT) -> dict:
    """Mode shares (and the share in the mode a CVaR_0.1 actor should pick), reward mean /
    CVaR_0.1 and critic quantiles at the mode centres."""
    generator = torch.Generator(torch.device(device)).manual_seed(seed)
    with seeded(seed, torch.device(device)):  # anything an agent draws outside its generator
        obs = torch.zeros(n_actions, STATE_DIM, device=device)
        actions = agent.act(obs, generator=generator).float().cpu().numpy()
    region = spec.region_of(actions)
    rng = np.random.default_rng(seed)
    rewards = spec.sample_rewards(np.repeat(actions, reward_draws, axis=0), rng)
    out = {f"share/{name}": float((region == i).mean()) for i, name in enumerate(spec.regions)}
    out["share/best_tail"] = sum(out[f"share/{name}"] for name in spec.best_modes("cvar"))
    out["share/best_mean"] = sum(out[f"share/{name}"] for name in spec.best_modes("mean"))
    out["reward/mean"] = float(rewards.mean())
    out["reward/cvar_0.1"] = empirical_cvar(rewards, 0.1)
    out["_actions"], out["_returns"] = actions, rewards  # per-draw rewards: the one-step task's returns
    if not hasattr(agent, "critic_quantiles"):  # an agent without a distributional critic (BC)
        return out
    modes = [m.name for m in spec.modes]
    taus = torch.tensor(READOUT_TAUS, device=device)
    centres = torch.tensor(spec.centres, dtype=torch.float32, device=device)
    q = agent.critic_quantiles(torch.zeros(len(modes), STATE_DIM, device=device), centres, taus).cpu().numpy()
    for i, name in enumerate(modes):  # q: (2 critics, modes, taus)
        for c in range(2):
            for k, tau in enumerate(READOUT_TAUS):
                out[f"quantile/{name}/critic{c + 1}/{tau:g}"] = float(q[c, i, k])
    return out


def region_maps(spec: BanditSpec = DEFAULT, n: int = 241) -> tuple[np.ndarray, np.ndarray]:
    """The true reward mean and CVaR_0.1 of each point of an n x n grid over the action box."""
    grid = np.linspace(-1, 1, n)
    gx, gy = np.meshgrid(grid, grid)
    region = spec.region_of(np.stack([gx.ravel(), gy.ravel()], axis=1)).reshape(gx.shape)
    stats = spec.region_stats()
    table = np.array([stats[name] for name in spec.regions])  # (regions, 2): mean, CVaR
    return table[region, 0], table[region, 1]


def summary_line(m: dict) -> str:
    regions = [k.split("/", 1)[1] for k in m if k.startswith("share/") and k not in ("share/best_tail", "share/best_mean")]
    shares = " ".join(f"{name} {100 * m[f'share/{name}']:.1f}%" for name in regions)
    return f"{shares} | reward mean {m['reward/mean']:.2f} CVaR0.1 {m['reward/cvar_0.1']:.2f}"


def plot(results: dict, data_actions, path, title: str = "", spec: BanditSpec = DEFAULT) -> None:
    """Data and policy actions over maps of the per-region reward mean and CVaR_0.1.

    results: {method name: policy actions (N, 2)}; one row of two panels per method.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = region_maps(spec, 241)
    vmin, vmax = float(min(m.min() for m in maps)), float(max(m.max() for m in maps))
    data = np.asarray(data_actions)[:3000]
    fig, axes = plt.subplots(len(results), 2, figsize=(10, 4.6 * len(results)), squeeze=False)
    for row, (name, actions) in enumerate(results.items()):
        actions = np.asarray(actions)
        shares = np.bincount(spec.region_of(actions), minlength=len(spec.regions)) / max(len(actions), 1)
        for col, (values, label) in enumerate(zip(maps, ("mean reward", "CVaR$_{0.1}$ of reward"))):
            ax = axes[row, col]
            im = ax.imshow(values, extent=(-1, 1, -1, 1), origin="lower", cmap="RdYlGn", vmin=vmin, vmax=vmax)
            ax.scatter(data[:, 0], data[:, 1], s=2, c="0.35", alpha=0.35, label="data")
            ax.scatter(actions[:, 0], actions[:, 1], s=3, c="tab:blue", alpha=0.5, label="policy")
            for m in spec.modes:
                ax.text(m.centre[0], m.centre[1] + m.radius + 0.03, m.name, ha="center", fontsize=9, weight="bold")
            ax.set_xlim(-1, 1), ax.set_ylim(-1, 1), ax.set_aspect("equal")
            ax.set_title(f"{name}: {label}", fontsize=10)
            fig.colorbar(im, ax=ax, fraction=0.046)
            if col == 0:
                ax.legend(loc="lower center", fontsize=8, markerscale=4)
        axes[row, 1].set_xlabel(
            " ".join(f"{r} {100 * s:.0f}%" for r, s in zip(spec.regions, shares)), fontsize=9
        )
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
