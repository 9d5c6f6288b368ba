"""Stochastic MuJoCo: hazard wrappers, data sets, vectorised evaluation, OOD detectors."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from ramac.data import stochastic_mujoco as datasets
from ramac.datagen import behaviour
from ramac.data import OfflineDataset
from ramac.envs.mujoco import HAZARDS, PITCH_INDEX, XVEL_INDEX, Hazard, HazardWrapper, make_risky_env
from ramac.evaluation import bootstrap_ci, episode_metrics, run_episodes
from ramac.ood import DenoisingDetector, NNDetector, detector_report
from ramac.datagen.sac import SAC, SACConfig, load_policy, save_policy


@pytest.mark.parametrize("env_id", ["HalfCheetah-v5", "Hopper-v5", "Walker2d-v5"])
def test_observation_indices_match_simulator_state(env_id):
    env = gym.make(env_id)
    env.reset(seed=0)
    for _ in range(30):
        obs, *_ = env.step(env.action_space.sample())
        data = env.unwrapped.data
        assert obs[PITCH_INDEX] == pytest.approx(data.qpos[2])
        qvel0 = np.clip(data.qvel[0], -10, 10) if env_id != "HalfCheetah-v5" else data.qvel[0]
        assert obs[XVEL_INDEX[env_id]] == pytest.approx(qvel0)


def test_velocity_hazard_penalty_rate_and_flag():
    # max_vel = 0: every step is risky, so the penalty rate is the coin's probability
    env = make_risky_env("halfcheetah-medium-expert", max_vel=0.0, prob=0.3, cost=-7.0)
    env.reset(seed=1)
    pens, risky = [], []
    for _ in range(3000):
        obs, r, term, trunc, info = env.step(env.action_space.sample())
        pens.append(info["penalty"])
        risky.append(info["risky"])
        if term or trunc:
            env.reset()
    pens = np.array(pens)
    assert all(risky)
    assert set(np.unique(pens)) == {0.0, -7.0}
    assert (pens < 0).mean() == pytest.approx(0.3, abs=0.03)
    # and never penalised when nothing is risky
    env = make_risky_env("halfcheetah-medium-expert", max_vel=1e9)
    env.reset(seed=1)
    assert all(env.step(env.action_space.sample())[4]["penalty"] == 0 for _ in range(200))


def test_penalty_is_added_to_the_reward():
    base, risky = gym.make("Hopper-v5"), make_risky_env("hopper-medium-replay", low=10.0, high=20.0, factor=1e9,
                                                        prob=1.0)
    base.reset(seed=3)
    risky.reset(seed=3)
    a = base.action_space.sample()
    _, r0, *_ = base.step(a)
    _, r1, _, _, info = risky.step(a)
    assert info["risky"] and r1 == pytest.approx(r0 - 50.0)


class PitchEnv(gym.Env):
    """A base env that never ends an episode; the action's first entry becomes the torso pitch
    of the next observation (Hopper's layout)."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (11,), np.float64)
    action_space = gym.spaces.Box(-10.0, 10.0, (3,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(11), {}

    def step(self, action):
        obs = np.zeros(11)
        obs[PITCH_INDEX] = action[0]
        return obs, 1.0, False, False, {}


@pytest.mark.parametrize("preset", [p for p, h in HAZARDS.items() if h.kind == "pose"])
def test_pose_hazard_terminates_beyond_factor(preset):
    """The wrapper alone ends the episode once |pitch| > factor * |high| (the base env never does)."""
    h = HAZARDS[preset]
    limit = h.factor * abs(h.high)
    env = HazardWrapper(PitchEnv(), h)
    env.reset(seed=0)
    for pitch, ends in [(0.0, False), (0.99 * limit, False), (limit, False), (1.01 * limit, True),
                        (-1.01 * limit, True), (-0.99 * limit, False)]:
        obs, r, term, trunc, info = env.step(np.array([pitch, 0.0, 0.0]))
        assert obs[PITCH_INDEX] == pytest.approx(pitch)
        assert term is ends and not trunc, (preset, pitch)
        assert info["risky"] == (not h.low <= obs[PITCH_INDEX] <= h.high)


def test_pose_hazard_terminates_hopper_that_would_go_on():
    """On Hopper-v5 with its own termination off, the hazard's factor ends the episode."""
    h = HAZARDS["hopper-medium-replay"]  # terminate when |pitch| > 2 * 0.1
    env = HazardWrapper(gym.make("Hopper-v5", terminate_when_unhealthy=False), h)
    env.reset(seed=0)
    env.unwrapped.set_state(np.r_[0, 1.25, 0.3, 0, 0, 0], np.zeros(6))
    obs, r, term, trunc, info = env.step(np.zeros(3))
    assert abs(obs[PITCH_INDEX]) > 0.2 and term and info["risky"]
    env.unwrapped.set_state(np.r_[0, 1.25, 0.15, 0, 0, 0], np.zeros(6))  # risky, inside the factor
    obs, r, term, trunc, info = env.step(np.zeros(3))
    assert 0.1 < obs[PITCH_INDEX] < 0.2 and not term and info["risky"]


def test_episodes_are_reproducible():
    def run(seed):
        env = make_risky_env("walker2d-medium-expert", prob=0.5)
        env.reset(seed=seed)
        env.action_space.seed(seed)
        return [env.step(env.action_space.sample())[1] for _ in range(50)]

    assert run(4) == run(4) and run(4) != run(5)


def test_registered_ids():
    env = gym.make("ramac/RiskyHopper-v5")
    env.reset(seed=0)
    assert "risky" in env.step(env.action_space.sample())[4]
    with pytest.raises(ValueError, match="unknown Stochastic MuJoCo preset"):
        make_risky_env("hopper-expert")
    with pytest.raises(ValueError, match="probability"):
        HazardWrapper(gym.make("Hopper-v5"), Hazard("Hopper-v5", "pose", -1, 2.0))


@pytest.fixture
def fake_policies(tmp_path, monkeypatch):
    """Untrained SAC actors installed as behaviour policies (a temporary assets folder)."""
    monkeypatch.setattr(behaviour, "ASSETS", tmp_path / "assets")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    d = behaviour.policy_dir("Hopper-v5")
    (d / "replay").mkdir(parents=True)
    for i, name in enumerate(["medium", "expert", "replay/step00001000", "replay/step00002000"]):
        torch.manual_seed(i)
        save_policy(SAC(SACConfig(env_id="Hopper-v5", hidden=16)), d / f"{name}.pt", {"step": i})
    (d / "provenance.json").write_text(json.dumps({"expert": {"return_mean": 1.0}, "medium": {"return_mean": 0.5}}))
    return d


def test_data_make_round_trip_and_determinism(fake_policies):
    rec = datasets.make("hopper-medium-expert", size=300, seed=0, num_envs=3, progress=False)
    assert [p["transitions"] for p in rec["parts"]] == [150, 150]
    data = datasets.load("hopper-medium-expert")
    assert data.size == 300 and data.state_dim == 11 and data.action_dim == 3
    assert "risky" in data.extras and data.meta["seed"] == 0
    inside = ((data.terminal == 0) & (data.timeout == 0)).nonzero()[0, 0]  # a step inside an episode
    torch.testing.assert_close(data.obs[inside + 1], data.next_obs[inside])
    with pytest.raises(FileExistsError, match="--overwrite"):
        datasets.make("hopper-medium-expert", size=300, progress=False)
    datasets.make("hopper-medium-expert", size=300, seed=0, num_envs=3, progress=False, overwrite=True)
    again = datasets.load("hopper-medium-expert")
    torch.testing.assert_close(again.action, data.action)
    torch.testing.assert_close(again.reward, data.reward)
    datasets.make("hopper-medium-expert", size=300, seed=1, num_envs=3, progress=False, overwrite=True)
    assert not torch.equal(datasets.load("hopper-medium-expert").action, data.action)
    # two workers: each policy's share in two pieces, rolled out in two processes; the same twice
    rec = datasets.make("hopper-medium-expert", size=300, seed=0, num_envs=3, progress=False, overwrite=True,
                        workers=2)
    assert [p["transitions"] for p in rec["parts"]] == [150, 150] and rec["workers"] == 2
    two = datasets.load("hopper-medium-expert")
    assert two.size == 300 and not torch.equal(two.action, data.action)
    assert not torch.equal(two.action[:75], two.action[75:150])  # the medium share's two pieces: seeded apart
    datasets.make("hopper-medium-expert", size=300, seed=0, num_envs=3, progress=False, overwrite=True, workers=2)
    torch.testing.assert_close(datasets.load("hopper-medium-expert").action, two.action, atol=0, rtol=0)
    # medium-replay: each replay snapshot contributes an equal share
    rec = datasets.make("hopper-medium-replay", size=101, num_envs=2, progress=False)
    assert [p["transitions"] for p in rec["parts"]] == [51, 50]
    assert datasets.list_local() == ["hopper-medium-expert-v0", "hopper-medium-replay-v0"]


def test_missing_data_set_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="ramac data make walker2d-medium-replay"):
        datasets.load("walker2d-medium-replay")


def test_missing_policies_name_the_command(tmp_path, monkeypatch):
    monkeypatch.setattr(behaviour, "ASSETS", tmp_path)
    with pytest.raises(FileNotFoundError, match="ramac behaviour train Walker2d-v5"):
        behaviour.load("Walker2d-v5", "expert")


class ConstantReturnEnv(gym.Env):
    """Episode i (set by its reset seed) pays reward i per step for 3 steps; every other step is risky."""

    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.value, self.t = float(seed % 100), 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(2, np.float32), self.value, self.t >= 3, False, {"risky": self.t % 2 == 0}


def test_evaluation_metrics_on_known_returns():
    roll = run_episodes(lambda obs: np.zeros((len(obs), 1)), ConstantReturnEnv, episodes=10, horizon=None, seed=0,
                        asynchronous=False)
    np.testing.assert_allclose(np.sort(roll["returns"]), 3 * np.arange(10))
    assert (roll["lengths"] == 3).all() and (roll["risky"] == 1).all()
    m = episode_metrics(roll["returns"], roll["lengths"], roll["risky"], "Hopper-v5")
    assert m["return/mean"] == pytest.approx(13.5)
    assert m["return/cvar_0.1"] == pytest.approx(0.0)  # worst ceil(0.1 * 10) = 1 episode
    assert m["risky_rate"] == pytest.approx(1 / 3)
    lo, hi = m["return/mean_ci95"]
    assert lo < 13.5 < hi
    assert m["score/mean"] == pytest.approx(100 * (13.5 + 20.272305) / (3234.3 + 20.272305))
    roll = run_episodes(lambda obs: np.zeros((len(obs), 1)), ConstantReturnEnv, 4, horizon=2, seed=0,
                        asynchronous=False)
    assert (roll["lengths"] == 2).all()


def test_bootstrap_ci_covers_the_truth():
    x = np.random.default_rng(0).normal(5.0, 1.0, 400)
    lo, hi = bootstrap_ci(x, np.mean)
    assert lo < 5.0 < hi and hi - lo < 0.4


def test_detectors_flag_random_actions_not_data():
    g = torch.Generator().manual_seed(0)
    n = 4000
    obs = torch.randn(n, 3, generator=g)
    act = torch.tanh(obs[:, :2] + 0.05 * torch.randn(n, 2, generator=g))  # a deterministic-ish behaviour policy
    data = OfflineDataset.from_arrays({"obs": obs, "action": act, "reward": torch.zeros(n),
                                       "next_obs": obs, "terminal": torch.zeros(n), "timeout": torch.zeros(n)})
    tr, ho = slice(0, 3600), slice(3600, None)
    nn = NNDetector(data.obs[tr], data.action[tr]).calibrate(data.obs[ho], data.action[ho])
    den = DenoisingDetector(data.obs[tr], data.action[tr], steps=600, hidden=64).calibrate(data.obs[ho],
                                                                                           data.action[ho])
    fresh_obs = torch.randn(1000, 3, generator=g)
    fresh_act = torch.tanh(fresh_obs[:, :2] + 0.05 * torch.randn(1000, 2, generator=g))
    uniform = torch.rand(1000, 2, generator=g) * 2 - 1
    on = detector_report([nn, den], fresh_obs, fresh_act)
    off = detector_report([nn, den], fresh_obs, uniform)
    for key in ("ood/nearest_neighbour", "ood/denoising_error"):
        assert on[key] < 0.05  # about the calibrated 1 %
        assert off[key] > 0.5  # random actions are mostly flagged
    assert off["ood/nearest_neighbour_kappa3"] > 10 * max(on["ood/nearest_neighbour_kappa3"], 0.01)


def test_policy_snapshot_round_trip(tmp_path):
    sac = SAC(SACConfig(env_id="Hopper-v5", hidden=16))
    save_policy(sac, tmp_path / "p.pt", {"step": 1})
    actor = load_policy(tmp_path / "p.pt")
    obs = torch.randn(4, 11)
    torch.testing.assert_close(actor(obs, deterministic=True)[0], sac.actor(obs, deterministic=True)[0],
                               atol=2e-2, rtol=2e-2)  # fp16 storage


def test_evaluation_repeats_with_the_same_seed():
    """`ramac eval --seed S` twice on one checkpoint gives the same numbers: the seed reaches the
    policy's noise, not only the environment resets."""
    import torch

    from ramac.agents.radac import RADAC
    from ramac.config import build_configs
    from ramac.evaluation import evaluate_preset

    torch.manual_seed(0)
    cfg, _ = build_configs("hopper-medium-replay", "radac", agent_overrides={"actor_hidden": 32, "critic_hidden": 32})
    agent = RADAC(11, 3, cfg)

    def returns(seed):
        return evaluate_preset(agent, "hopper-medium-replay", episodes=3, seed=seed)["_returns"].tolist()

    first = returns(7)
    torch.rand(5)  # whatever happened to the global streams in between
    assert returns(7) == first
    assert returns(8) != first


def test_data_detectors_fitted_once_give_what_fresh_ones_give():
    """A sweep fits a data set's detectors once and reuses them for every agent (fit_data_detectors);
    the critic detector is still each agent's own, calibrated on the same held-out pairs."""
    from ramac.agents import make_agent
    from ramac.agents.configs import RADACConfig
    from ramac.ood import build_detectors, fit_data_detectors

    g = torch.Generator().manual_seed(1)
    n = 800
    obs = torch.randn(n, 3, generator=g)
    act = torch.tanh(obs[:, :2] + 0.1 * torch.randn(n, 2, generator=g))
    data = OfflineDataset.from_arrays({"obs": obs, "action": act, "reward": torch.zeros(n),
                                       "next_obs": obs, "terminal": torch.zeros(n), "timeout": torch.zeros(n)})
    fitted = fit_data_detectors(data, denoiser_steps=20)
    pairs = torch.randn(200, 3, generator=g), torch.rand(200, 2, generator=g) * 2 - 1
    for seed in (0, 1):  # two agents: each gets its own critic detector
        torch.manual_seed(seed)
        agent = make_agent("radac", 3, 2, RADACConfig(actor_hidden=16, critic_hidden=16, embedding_dim=8,
                                                      n_quantiles=4, n_risk_quantiles=4).validate())
        fresh = build_detectors(data, agent, denoiser_steps=20)
        reused = build_detectors(data, agent, fitted=fitted)
        assert [d.name for d in reused] == [d.name for d in fresh] == ["nearest_neighbour", "denoising_error",
                                                                        "critic_disagreement"]
        assert [d.threshold for d in reused] == [d.threshold for d in fresh]
        assert detector_report(reused, *pairs) == detector_report(fresh, *pairs)
