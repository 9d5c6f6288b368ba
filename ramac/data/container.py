"""Offline data set container: validated tensors, loaders (npz, HDF5, Minari), device sampling."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

KEYS = ("obs", "action", "reward", "next_obs", "terminal", "timeout")
# file key aliases: D4RL / Minari-style names map onto ours
ALIASES = {
    "observations": "obs", "actions": "action", "rewards": "reward",
    "next_observations": "next_obs", "terminals": "terminal", "terminations": "terminal",
    "timeouts": "timeout", "truncations": "timeout",
}
_FLAGS = ("terminal", "timeout")
ACTION_BOUND = 1.0  # actors clip their actions to [-1, 1]; data actions must lie there too


class DatasetError(ValueError):
    """An offline data set is malformed; the message names the key and the problem."""


class Batch(NamedTuple):
    obs: torch.Tensor  # (B, S)
    action: torch.Tensor  # (B, A)
    reward: torch.Tensor  # (B,)
    next_obs: torch.Tensor  # (B, S)
    terminal: torch.Tensor  # (B,) 1.0 where the episode ended by termination (no bootstrap)


@dataclass
class OfflineDataset:
    """Transitions as float32 tensors; `extras` holds per-step extras (e.g. the risky flag)."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    terminal: torch.Tensor
    timeout: torch.Tensor
    extras: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    # ---- construction ---------------------------------------------------------
    @classmethod
    def from_arrays(cls, arrays: dict, meta: dict | None = None, source: str = "data set") -> "OfflineDataset":
        """Validate a mapping of arrays (our key names or D4RL/Minari aliases) and build the set."""
        named = {}
        for key, value in arrays.items():
            name = ALIASES.get(key, key)
            if name in named:
                raise DatasetError(f"{source}: key {name!r} given twice (as {key!r} and an alias)")
            named[name] = value
        if "timeout" not in named and "terminal" in named:
            named["timeout"] = np.zeros(len(np.asarray(named["terminal"])), dtype=np.float32)
        if "next_obs" not in named and all(k in named for k in ("obs", "terminal", "timeout")):
            named = _derive_next_obs(named, source)
        missing = [k for k in KEYS if k not in named]
        if missing:
            raise DatasetError(f"{source}: missing key(s) {missing}; need {list(KEYS)} (or D4RL names)")
        tensors = {k: _validate_array(source, k, named[k]) for k in KEYS}
        extras = {k: _validate_array(source, k, v) for k, v in named.items() if k not in KEYS}
        _check_shapes(source, tensors, extras)
        return cls(**tensors, extras=extras, meta=dict(meta or {}))

    def check_dims(self, state_dim: int, action_dim: int, env: str) -> "OfflineDataset":
        """Raise DatasetError unless obs and actions have the dims of `env`, the environment
        that will evaluate the policy (found when the data set loads, not after training)."""
        source = self.meta.get("source", "data set")
        for key, have, want in (("obs", self.state_dim, state_dim), ("action", self.action_dim, action_dim)):
            if have != want:
                raise DatasetError(f"{source}: {key!r} has dim {have} but {env} has {key} dim {want}; "
                                   f"the data set was made for another environment")
        return self

    @property
    def size(self) -> int:
        return self.obs.shape[0]

    @property
    def state_dim(self) -> int:
        return self.obs.shape[1]

    @property
    def action_dim(self) -> int:
        return self.action.shape[1]

    def to(self, device) -> "OfflineDataset":
        move = {k: getattr(self, k).to(device) for k in KEYS}
        return OfflineDataset(**move, extras={k: v.to(device) for k, v in self.extras.items()}, meta=self.meta)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        """A uniform mini-batch; indices are drawn on the data set's device."""
        return self.gather(torch.randint(0, self.size, (batch_size,), device=self.obs.device, generator=generator))

    def obs_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of the observations; a constant dimension gets std 1."""
        mean, std = self.obs.mean(dim=0), self.obs.std(dim=0)
        return mean, torch.where(std > 1e-6, std, torch.ones_like(std))

    def normalised(self, mean: torch.Tensor, std: torch.Tensor) -> "OfflineDataset":
        """A copy with obs and next_obs as (x - mean) / std."""
        norm = lambda x: (x - mean.to(x.device)) / std.to(x.device)  # noqa: E731
        return OfflineDataset(norm(self.obs), self.action, self.reward, norm(self.next_obs), self.terminal,
                              self.timeout, dict(self.extras), {**self.meta, "obs_normalised": True})

    def gather(self, idx: torch.Tensor) -> Batch:
        return Batch(self.obs[idx], self.action[idx], self.reward[idx], self.next_obs[idx], self.terminal[idx])

    # ---- files ----------------------------------------------------------------------
    def save_npz(self, path) -> None:
        arrays = {k: getattr(self, k).cpu().numpy() for k in KEYS}
        arrays.update({k: v.cpu().numpy() for k, v in self.extras.items()})
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path) -> "OfflineDataset":
        """Load a `.npz` or HDF5 (`.h5`, `.hdf5`) file of transitions."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no data set file at {path}")
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        elif path.suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as f:
                arrays = {k: f[k][()] for k in f.keys() if isinstance(f[k], h5py.Dataset)}
        else:
            raise DatasetError(f"{path}: unsupported file type {path.suffix!r} (use .npz, .h5 or .hdf5)")
        return cls.from_arrays(arrays, meta={"source": str(path)}, source=str(path))

    @classmethod
    def from_minari(cls, dataset) -> "OfflineDataset":
        """Flatten a Minari data set (an id or a MinariDataset) into transitions."""
        import minari

        if isinstance(dataset, str):
            dataset = minari.load_dataset(dataset)
        cols = {k: [] for k in ("obs", "next_obs", "action", "reward", "terminal", "timeout")}
        risky = []
        for ep in dataset.iterate_episodes():
            obs = np.asarray(ep.observations)
            cols["obs"].append(obs[:-1])
            cols["next_obs"].append(obs[1:])
            cols["action"].append(np.asarray(ep.actions))
            cols["reward"].append(np.asarray(ep.rewards))
            cols["terminal"].append(np.asarray(ep.terminations))
            cols["timeout"].append(np.asarray(ep.truncations))
            infos = ep.infos or {}
            if "risky" in infos:
                risky.append(np.asarray(infos["risky"])[-len(ep.rewards):])
        source = f"minari:{dataset.spec.dataset_id}"
        if not cols["obs"]:
            raise DatasetError(f"{source}: the data set has no episodes")
        arrays = {k: np.concatenate(v) for k, v in cols.items()}
        if risky and len(risky) == len(cols["obs"]):
            arrays["risky"] = np.concatenate(risky)
        meta = {"source": source, "episodes": len(cols["obs"])}
        return cls.from_arrays(arrays, meta=meta, source=source)


def _derive_next_obs(named: dict, source: str) -> dict:
    """next_obs from consecutive rows of an episode (D4RL files without next_observations): a step's
    next observation is the next row's, a terminal step's is never used (its own stands in), and the
    steps that end an episode by time-out (and the file's last step, unless terminal) have none, so
    they are dropped, as D4RL's qlearning_dataset does."""
    obs = np.asarray(named["obs"])
    terminal = np.asarray(named["terminal"]).astype(bool).reshape(-1)
    timeout = np.asarray(named["timeout"]).astype(bool).reshape(-1)
    n = len(obs)
    if n == 0 or len(terminal) != n or len(timeout) != n:
        return named  # the shape checks name the problem
    nxt = np.concatenate([obs[1:], obs[-1:]])
    nxt[terminal] = obs[terminal]
    keep = ~(timeout & ~terminal)
    keep[-1] &= bool(terminal[-1])
    if not keep.any():
        raise DatasetError(f"{source}: no next_observations and no step with a known next observation")
    out = {k: np.asarray(v)[keep] if np.asarray(v).shape[:1] == (n,) else v for k, v in named.items()}
    out["next_obs"] = nxt[keep]
    return out


def _validate_array(source: str, key: str, value) -> torch.Tensor:
    try:
        arr = value.detach().cpu().numpy() if torch.is_tensor(value) else np.asarray(value)
    except Exception as e:  # ragged lists and the like
        raise DatasetError(f"{source}: {key!r} cannot be read as an array ({e})") from None
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise DatasetError(f"{source}: {key!r} has dtype {arr.dtype}; expected a real numeric dtype")
    if key in _FLAGS:
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.size and not np.isin(arr, (0, 1)).all():
            raise DatasetError(f"{source}: {key!r} must hold only 0/1 (or booleans)")
    elif arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=tuple(range(1, arr.ndim))).nonzero()[0][0])
        raise DatasetError(f"{source}: {key!r} has NaN or inf values (first at row {bad})")
    return torch.from_numpy(np.ascontiguousarray(arr)).float()


def _check_shapes(source, t: dict, extras: dict):
    n = t["obs"].shape[0] if t["obs"].dim() else 0
    if n == 0:
        raise DatasetError(f"{source}: the data set is empty (0 transitions)")
    for key in ("obs", "next_obs", "action"):
        if t[key].dim() != 2:
            raise DatasetError(f"{source}: {key!r} must be 2-D (N, dim), got shape {tuple(t[key].shape)}")
    if t["reward"].dim() == 2 and t["reward"].shape[1] == 1:
        t["reward"] = t["reward"][:, 0]
    if t["reward"].dim() != 1:
        raise DatasetError(f"{source}: 'reward' must be 1-D (N,), got shape {tuple(t['reward'].shape)}")
    if t["next_obs"].shape[1] != t["obs"].shape[1]:
        raise DatasetError(
            f"{source}: 'next_obs' has dim {t['next_obs'].shape[1]} but 'obs' has dim {t['obs'].shape[1]}"
        )
    for key, value in list(t.items()) + list(extras.items()):
        if value.shape[0] != n:
            raise DatasetError(f"{source}: {key!r} has {value.shape[0]} rows but 'obs' has {n} (mismatched lengths)")
    _check_action_range(source, t["action"])


def _check_action_range(source, action: torch.Tensor):
    """The actor's actions are clipped to [-1, 1]: data actions outside it could never be imitated."""
    lo, hi = float(action.min()), float(action.max())
    if lo < -ACTION_BOUND or hi > ACTION_BOUND:
        row = int(((action < -ACTION_BOUND) | (action > ACTION_BOUND)).any(dim=1).nonzero()[0, 0])
        raise DatasetError(
            f"{source}: 'action' values lie in [{lo:.4g}, {hi:.4g}] (first outside [-1, 1] at row {row}) but the "
            f"actor's actions are clipped to [-1, 1]; rescale the actions to [-1, 1] with the action space's "
            f"bounds (2 * (a - low) / (high - low) - 1)"
        )


def synthetic_dataset(state_dim=17, action_dim=6, n=100_000, device="cpu", seed=0, terminal_rate=0.01):
    """Random transitions (HalfCheetah's shape by default, 1 % terminal), for timing and tests."""
    g = torch.Generator().manual_seed(seed)
    arrays = {
        "obs": torch.randn(n, state_dim, generator=g), "action": torch.rand(n, action_dim, generator=g) * 2 - 1,
        "reward": torch.randn(n, generator=g), "next_obs": torch.randn(n, state_dim, generator=g),
        "terminal": (torch.rand(n, generator=g) < terminal_rate).float(), "timeout": torch.zeros(n),
    }
    return OfflineDataset.from_arrays(arrays, meta={"synthetic": True}).to(device)
