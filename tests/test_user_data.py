"""Training on a user's data set (`ramac train --dataset`), evaluated in any Gymnasium env."""

import json

import gymnasium as gym
import numpy as np
import pytest

from ramac.cli import main
from ramac.config import preset_for_dataset

SHORT = ["--device", "cpu", "--no-progress", "--steps", "12", "--eval-every", "0", "--eval-episodes", "2"]
TINY = SHORT + ["--set", "actor_hidden=16", "--set", "critic_hidden=16", "--set", "embedding_dim=8",
                "--set", "n_quantiles=4", "--set", "n_risk_quantiles=4"]
ENV = "MountainCarContinuous-v0"  # obs dim 2, action dim 1 in [-1, 1]


def npz(path, obs_dim=2, n=300):
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    np.savez(path, observations=obs, actions=np.tanh(rng.normal(size=(n, 1))).astype(np.float32),
             rewards=rng.normal(size=n).astype(np.float32), next_observations=obs + 0.01,
             terminals=np.zeros(n), timeouts=(np.arange(n) % 100 == 99))
    return path


def test_an_npz_data_set_trains_and_evaluates_in_the_given_env(tmp_path, capsys):
    data = npz(tmp_path / "d.npz")
    assert main(["train", "--dataset", str(data), "--env", ENV, *TINY, "--run-dir", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "settings of the halfcheetah-medium-expert preset" in out
    final = json.loads((tmp_path / "r" / "eval.json").read_text())
    assert final["episodes"] == 2 and final["return/mean"] < 0  # MountainCar's action cost, no goal reached
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["train"]
    assert saved["dataset"] == str(data) and saved["env"] == ENV
    # `ramac eval --env`: any env whose spaces fit; one that does not is one line
    assert main(["eval", str(tmp_path / "r"), "--env", ENV, "--episodes", "2", "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "r" / "eval-again.json").read_text())["episodes"] == 2
    assert main(["eval", str(tmp_path / "r"), "--env", "Pendulum-v1", "--episodes", "2", "--device", "cpu"]) == 2
    assert "Pendulum-v1 has obs dim 3" in capsys.readouterr().err


def test_without_an_env_the_run_trains_and_says_it_was_not_evaluated(tmp_path, capsys):
    data = npz(tmp_path / "d.npz")
    assert main(["train", "--dataset", str(data), *TINY, "--run-dir", str(tmp_path / "r")]) == 0
    assert "no evaluation" in capsys.readouterr().out
    assert json.loads((tmp_path / "r" / "eval.json").read_text()) == {"step": 12}


def test_data_of_another_env_is_refused_before_training(tmp_path, capsys):
    data = npz(tmp_path / "d.npz", obs_dim=5)
    assert main(["train", "--dataset", str(data), "--env", ENV, *TINY, "--run-dir", str(tmp_path / "r")]) == 2
    assert "'obs' has dim 5 but MountainCarContinuous-v0 has obs dim 2" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_minari_data_set_is_evaluated_in_the_env_it_records(tmp_path, monkeypatch, capsys):
    import minari
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    rng = np.random.default_rng(0)
    episodes = [EpisodeBuffer(id=i, observations=rng.normal(size=(51, 2)).astype(np.float32),
                              actions=rng.uniform(-1, 1, (50, 1)).astype(np.float32), rewards=list(rng.normal(size=50)),
                              terminations=[False] * 50, truncations=[False] * 49 + [True], infos={})
                for i in range(4)]
    minari.create_dataset_from_buffers("usertest/mountaincar-v0", episodes, env=gym.spec(ENV),
                                       algorithm_name="random", code_permalink="none", author="t",
                                       author_email="t@t")
    assert main(["train", "--dataset", "minari:usertest/mountaincar-v0", *TINY,
                 "--run-dir", str(tmp_path / "r")]) == 0
    assert json.loads((tmp_path / "r" / "eval.json").read_text())["episodes"] == 2
    assert main(["train", "--dataset", "minari:usertest/none-v0", *TINY, "--run-dir", str(tmp_path / "s")]) == 2
    assert "cannot load the Minari data set 'usertest/none-v0'" in capsys.readouterr().err


@pytest.mark.parametrize("source, env, preset", [
    ("minari:mujoco/halfcheetah/medium-v0", None, "halfcheetah-medium-expert"),
    ("d4rl-hopper-medium.hdf5", None, "hopper-medium-expert"),
    ("data.npz", "Walker2d-v5", "walker2d-medium-expert"),
    ("data.npz", "MountainCarContinuous-v0", "halfcheetah-medium-expert"),
])
def test_the_preset_follows_the_env_name(source, env, preset):
    assert preset_for_dataset(source, env) == preset


def test_resume_keeps_the_runs_data_set(tmp_path, capsys):
    data = npz(tmp_path / "d.npz")
    assert main(["train", "--dataset", str(data), *TINY, "--run-dir", str(tmp_path / "r")]) == 0
    assert main(["train", "--resume", str(tmp_path / "r"), "--dataset", str(data)]) == 2
    assert "--dataset would change them" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "r"), "--steps", "14", "--no-progress"]) == 0


def test_observation_normalisation_is_kept_with_the_agent_and_used_in_act(tmp_path):
    import torch

    from ramac.train import load_agent

    rng = np.random.default_rng(1)
    obs = (5.0 + 3.0 * rng.normal(size=(400, 2))).astype(np.float32)
    np.savez(tmp_path / "d.npz", observations=obs, actions=np.tanh(rng.normal(size=(400, 1))).astype(np.float32),
             rewards=rng.normal(size=400).astype(np.float32), terminals=np.zeros(400),
             timeouts=np.arange(400) % 100 == 99)
    assert main(["train", "--dataset", str(tmp_path / "d.npz"), "--obs-norm", *TINY,
                 "--run-dir", str(tmp_path / "r")]) == 0
    agent, cfg, _ = load_agent(tmp_path / "r", "cpu")
    assert cfg.obs_norm
    torch.testing.assert_close(agent.obs_mean, torch.tensor([5.0, 5.0]), atol=0.4, rtol=0)
    torch.testing.assert_close(agent.obs_std, torch.tensor([3.0, 3.0]), atol=0.3, rtol=0)
    raw = torch.from_numpy(obs[:16])
    got = agent.act(raw, generator=torch.Generator().manual_seed(0))
    want = agent.policy.act((raw - agent.obs_mean) / agent.obs_std, torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, want)
    assert not torch.equal(got, agent.policy.act(raw, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("algo", ["bc", "neutral", "diffusion-ql", "rafmac", "fql", "codac", "cql", "oraac"])
def test_every_agent_trains_on_a_data_set_and_is_evaluated_in_an_env(algo, tmp_path):
    """Each registry agent (RADAC above) through the whole command: data set, preset by env name,
    training, evaluation episodes in the env, run directory."""
    sizes = {"actor_hidden": 16}
    if algo != "bc":  # BC has no critic
        sizes.update(critic_hidden=16, embedding_dim=8, n_quantiles=4, n_risk_quantiles=4)
    if algo in ("rafmac", "fql"):
        sizes["actor_layers"] = 2
    sets = [arg for k, v in sizes.items() for arg in ("--set", f"{k}={v}")]
    data = npz(tmp_path / "d.npz")
    assert main(["train", "--dataset", str(data), "--env", ENV, "--algo", algo, *SHORT, *sets,
                 "--run-dir", str(tmp_path / "r")]) == 0
    final = json.loads((tmp_path / "r" / "eval.json").read_text())
    assert final["episodes"] == 2 and np.isfinite(final["return/mean"])
    assert json.loads((tmp_path / "r" / "config.json").read_text())["train"]["algo"] == algo
