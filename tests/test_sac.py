"""SAC behaviour-policy training: replay buffer, vector-env transitions, resume, and how pick() chooses."""

import json

import numpy as np
import pytest
import torch

from ramac.datagen import behaviour
from ramac.datagen.sac import SAC, Replay, SACConfig, Updater, save_policy, train_sac


def test_replay_wraps_and_samples_only_filled_rows():
    buf = Replay(capacity=5, obs_dim=2, act_dim=1, device="cpu")
    for start in (0, 3):  # 6 transitions into 5 rows: the first is overwritten
        k = np.arange(start, start + 3, dtype=np.float32)
        buf.add(np.stack([k, k], 1), k[:, None], k, np.stack([k + 1, k + 1], 1), np.zeros(3, np.float32))
    assert buf.n == 6 and float(buf.size_t) == 5
    o, a, r, o2, term = buf.sample(2000, torch.Generator().manual_seed(0))
    assert set(r.tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}  # row 0 now holds transition 5
    torch.testing.assert_close(o[:, 0], r)
    torch.testing.assert_close(o2[:, 0], r + 1)
    torch.testing.assert_close(a[:, 0], r)

    half = Replay(capacity=5, obs_dim=2, act_dim=1, device="cpu")
    half.add(*(x[:2] for x in (np.ones((3, 2)), np.ones((3, 1)), np.array([7.0, 8, 9]), np.ones((3, 2)),
                               np.zeros(3))))
    assert set(half.sample(500)[2].tolist()) == {7.0, 8.0}


def test_updater_changes_the_networks_and_reports_means():
    cfg = SACConfig(env_id="Hopper-v5", hidden=16, batch_size=8)
    sac = SAC(cfg)
    buf = Replay(100, sac.obs_dim, sac.act_dim, "cpu")
    rng = np.random.default_rng(0)
    buf.add(rng.normal(size=(50, 11)), rng.uniform(-1, 1, (50, 3)), rng.normal(size=50), rng.normal(size=(50, 11)),
            np.zeros(50))
    before = [p.clone() for p in sac.actor.parameters()]
    up = Updater(sac, buf, n=3)
    up()
    assert up.count == 3
    assert any(not torch.equal(b, p) for b, p in zip(before, sac.actor.parameters()))
    means = up.read()
    assert set(means) == {"q_loss", "actor_loss", "alpha"} and all(np.isfinite(v) for v in means.values())
    assert up.count == 0 and float(up.sums["q_loss"]) == 0


def test_vector_env_transitions_are_consistent_and_runs_resume(tmp_path):
    cfg = SACConfig(env_id="Hopper-v5", total_steps=1200, learning_starts=400, num_envs=4, hidden=16,
                    batch_size=32, eval_every=400, state_every=400, eval_episodes=2)
    train_sac(cfg, tmp_path, progress=False, log=lambda *a: None)
    state = torch.load(tmp_path / "state.pt", weights_only=False)
    rows = state["buffer"]["rows"].numpy()
    assert state["step"] == 1200 and state["buffer"]["n"] == len(rows) <= 1200
    obs, nxt, term = rows[:, :11], rows[:, 15:26], rows[:, -1]  # [obs, action, reward, next_obs, terminal]
    # every stored obs continues an earlier transition (its next_obs) unless it starts an episode; the
    # autoreset step is never stored, so each termination is followed by exactly one unmatched start
    window = 16
    starts = sum(not any(np.array_equal(obs[j], nxt[k]) for k in range(max(0, j - window), j))
                 for j in range(len(rows)))
    ends = int(term.sum())
    assert ends >= 8  # random early Hopper episodes are short: the check has terminations to look at
    assert 4 + ends - 4 <= starts <= 4 + ends
    hist = json.loads((tmp_path / "history.json").read_text())
    assert [r["step"] for r in hist] == [400, 800, 1200]
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == [
        "step00000400.pt", "step00000800.pt", "step00001200.pt"]

    # resume from the compact state (no replay buffer): continues the step count and the history
    (tmp_path / "state.pt").unlink()
    logs = []
    train_sac(SACConfig(**{**cfg.__dict__, "total_steps": 1600}), tmp_path, progress=False, log=logs.append)
    assert any("no replay buffer" in m for m in logs) and any("resumed Hopper-v5 at step 1200" in m for m in logs)
    assert [r["step"] for r in json.loads((tmp_path / "history.json").read_text())] == [400, 800, 1200, 1600]


def test_bad_sac_settings_are_named():
    with pytest.raises(ValueError, match="num_envs"):
        SACConfig(num_envs=0)
    with pytest.raises(ValueError, match="multiples of num_envs"):
        SACConfig(num_envs=3, eval_every=10_000)


@pytest.fixture
def fake_run(tmp_path, monkeypatch):
    """A SAC run with 8 snapshots, and re-evaluation scores read from a table instead of episodes."""
    train_eval = {10: 100, 20: 900, 30: 1500, 40: 1600, 50: 2500, 60: 3000, 70: 3300, 80: 2900}
    rerun = {10: (110, 5), 20: (950, 40), 30: (1450, 900), 40: (1580, 60), 50: (2400, 100), 60: (3000, 50),
             70: (2600, 700), 80: (2800, 90)}
    (tmp_path / "snapshots").mkdir()
    sac = SAC(SACConfig(env_id="Hopper-v5", hidden=8))
    hist = []
    for step, ret in train_eval.items():
        save_policy(sac, tmp_path / "snapshots" / f"step{step:08d}.pt", {"step": step})
        hist.append({"step": step, "return_mean": ret, "return_std": 0.1 * ret})
    (tmp_path / "history.json").write_text(json.dumps(hist))
    calls = []

    def fake_eval(path, base_env, episodes=20, seed=123):
        step = int(path.name[4:12])
        calls.append(step)
        return rerun[step]

    monkeypatch.setattr(behaviour, "evaluate_file", fake_eval)
    return tmp_path, calls


def test_pick_re_evaluates_and_prefers_steady_policies(fake_run, tmp_path_factory):
    run, calls = fake_run
    dest = tmp_path_factory.mktemp("assets") / "Hopper-v5"
    rec = behaviour.pick(run, "Hopper-v5", command="test", dest=dest)
    # expert: the best re-evaluated of the three best training evaluations (70 drops to 2600 when re-run)
    assert rec["expert"]["step"] == 60 and rec["expert"]["return_mean"] == 3000
    # medium band [0.9 * 1000, 1.1 * 1500]: 40 and 30 qualify by training eval; 40 re-evaluates steadily
    assert rec["medium"]["step"] == 40
    assert sorted(set(calls)) == [40, 60, 70, 80]  # 20 and 30 are never re-run: 40, the latest, passes
    assert sorted(p.name for p in (dest / "replay").iterdir()) == [f"step{s:08d}.pt" for s in (10, 20, 30, 40)]
    assert (dest / "expert.pt").read_bytes() == (run / "snapshots" / "step00000060.pt").read_bytes()
    saved = json.loads((dest / "provenance.json").read_text())
    assert saved["medium"]["return_std"] == 60 and saved["medium"]["return_at_training_eval"] == 1600


@pytest.mark.parametrize("env", ["HalfCheetah-v5", "Hopper-v5", "Walker2d-v5"])
def test_shipped_policies_match_their_provenance(env):
    d = behaviour.require(env)
    rec = json.loads((d / "provenance.json").read_text())
    for name in ("expert", "medium"):
        assert behaviour.file_hash(d / f"{name}.pt") == rec[name]["sha256_16"]
    assert sorted(p.name for p in behaviour.replay_snapshots(env)) == sorted(r["file"] for r in rec["replay"])


@pytest.mark.parametrize("env,which", [("HalfCheetah-v5", "expert"), ("Hopper-v5", "medium")])
def test_shipped_policy_reproduces_its_recorded_return(env, which):
    rec = json.loads((behaviour.policy_dir(env) / "provenance.json").read_text())[which]
    mean, _ = behaviour.evaluate_file(behaviour.policy_dir(env) / f"{which}.pt", env, episodes=2, seed=7)
    assert abs(mean - rec["return_mean"]) < 4 * rec["return_std"] + 0.05 * abs(rec["return_mean"])
