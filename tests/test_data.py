"""Offline data set container: loading and sampling (validation errors: test_bad_input.py)."""

import gymnasium as gym
import h5py
import numpy as np
import pytest
import torch

from ramac.data import OfflineDataset


def arrays(n=20, s=3, a=2, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "obs": rng.standard_normal((n, s)).astype(np.float32),
        "action": rng.uniform(-1, 1, (n, a)).astype(np.float32),
        "reward": rng.standard_normal(n).astype(np.float32),
        "next_obs": rng.standard_normal((n, s)).astype(np.float32),
        "terminal": (rng.random(n) < 0.1),
        "timeout": np.zeros(n, dtype=np.int64),
    }


def test_from_arrays_and_sampling():
    d = OfflineDataset.from_arrays(arrays())
    assert (d.size, d.state_dim, d.action_dim) == (20, 3, 2)
    assert d.terminal.dtype == torch.float32
    g = torch.Generator().manual_seed(0)
    b1 = d.sample(8, g)
    b2 = d.sample(8, torch.Generator().manual_seed(0))
    assert b1.obs.shape == (8, 3) and b1.reward.shape == (8,)
    torch.testing.assert_close(b1.action, b2.action)


def test_d4rl_names_and_extras():
    raw = arrays()
    named = {"observations": raw["obs"], "actions": raw["action"], "rewards": raw["reward"][:, None],
             "next_observations": raw["next_obs"], "terminals": raw["terminal"], "risky": raw["terminal"]}
    d = OfflineDataset.from_arrays(named)
    assert d.reward.shape == (20,) and d.timeout.sum() == 0
    assert "risky" in d.extras


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_file_round_trip(tmp_path, suffix):
    d = OfflineDataset.from_arrays(arrays())
    path = tmp_path / f"data{suffix}"
    if suffix == ".npz":
        d.save_npz(path)
    else:
        with h5py.File(path, "w") as f:
            for k, v in arrays().items():
                f[k] = v
    back = OfflineDataset.load(path)
    torch.testing.assert_close(back.obs, d.obs)
    torch.testing.assert_close(back.terminal, d.terminal)


def test_minari_round_trip(tmp_path, monkeypatch):
    import minari
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    rng = np.random.default_rng(0)
    episodes, lengths = [], (5, 7)
    for i, n in enumerate(lengths):
        episodes.append(EpisodeBuffer(
            id=i, observations=rng.standard_normal((n + 1, 3)).astype(np.float32),
            actions=rng.uniform(-1, 1, (n, 2)).astype(np.float32), rewards=list(rng.standard_normal(n)),
            terminations=[False] * (n - 1) + [i == 0], truncations=[False] * (n - 1) + [i == 1], infos={},
        ))
    box = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    minari.create_dataset_from_buffers(
        "ramactest/toy-v0", episodes, observation_space=box, action_space=gym.spaces.Box(-1, 1, (2,), np.float32),
        ref_min_score=0.0, ref_max_score=1.0,
    )
    d = OfflineDataset.from_minari("ramactest/toy-v0")
    assert d.size == sum(lengths)
    assert d.terminal.sum() == 1 and d.timeout.sum() == 1
    ep0 = episodes[0]
    torch.testing.assert_close(d.next_obs[0], torch.from_numpy(ep0.observations[1]))


def test_next_observations_are_derived_within_episodes_when_a_file_lacks_them(tmp_path):
    # two episodes: rows 0-2 end by time-out (row 2), rows 3-4 end by termination (row 4)
    obs = np.arange(10, dtype=np.float32).reshape(5, 2)
    arrays = {"observations": obs, "actions": np.zeros((5, 1), np.float32), "rewards": np.arange(5.0),
              "terminals": np.array([0, 0, 0, 0, 1]), "timeouts": np.array([0, 0, 1, 0, 0])}
    np.savez(tmp_path / "d.npz", **arrays)
    d = OfflineDataset.load(tmp_path / "d.npz")
    assert d.size == 4  # the time-out step has no next observation: dropped
    torch.testing.assert_close(d.reward, torch.tensor([0.0, 1.0, 3.0, 4.0]))
    torch.testing.assert_close(d.next_obs[:3], torch.from_numpy(obs[[1, 2, 4]]))  # the next row, inside episodes
    assert float(d.terminal[3]) == 1.0  # the terminal step stays (its next observation is never used)
