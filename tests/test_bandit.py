"""The 2-D risky bandit (SPEC 2.5): environment, data, evaluation, and end-to-end training."""

import json

import numpy as np
import pytest
import torch

from ramac.cli import main
from ramac.config import build_configs
from ramac.envs import bandit
from ramac.train import train


def test_regions():
    pts = np.array([[0.7, 0.7], [-0.7, 0.7], [-0.7, -0.7], [0.7, -0.7], [0.0, 0.0], [0.7, 0.7 - 0.35],
                    [0.7, 0.7 - 0.36], [1.0, 1.0]])
    assert bandit.region_of(pts).tolist() == [0, 1, 2, 3, 4, 0, 4, 4]  # (1, 1) is 0.42 from R


def test_reward_laws():
    rng = np.random.default_rng(0)
    n = 200_000
    for i, name in enumerate(bandit.REGIONS):
        a = np.tile(bandit.CENTRES[i] if i < 4 else np.zeros(2), (n, 1))
        r = bandit.sample_rewards(a, rng)
        mean, cvar = bandit.region_stats()[name]
        assert r.mean() == pytest.approx(mean, abs=0.05)
        assert np.sort(r)[: n // 10].mean() == pytest.approx(cvar, abs=0.05)
    r = bandit.sample_rewards(np.tile(bandit.CENTRES[0], (n, 1)), rng)
    assert set(np.unique(r)) == {-30.0, 8.0}
    assert (r == -30).mean() == pytest.approx(0.1, abs=0.005)


def test_dataset_is_seeded_and_four_modal():
    d = bandit.make_dataset()
    assert d.size == 10_000 and d.state_dim == 1 and d.action_dim == 2
    assert bool((d.terminal == 1).all()) and float(d.obs.abs().max()) == 0.0
    share = np.bincount(bandit.region_of(d.action.numpy()), minlength=5) / d.size
    assert (share[:4] > 0.23).all() and share[4] < 0.01
    assert torch.equal(d.action, bandit.make_dataset().action)
    assert not torch.equal(d.action, bandit.make_dataset(seed=1).action)
    assert float(d.action.abs().max()) <= 1.0


class FixedAgent:
    """Acts with a fixed set of actions and reports known critic quantiles."""

    def __init__(self, actions):
        self.actions = torch.as_tensor(actions, dtype=torch.float32)

    def act(self, obs, generator=None):
        return self.actions[: obs.shape[0]]

    def critic_quantiles(self, obs, action, taus):
        return torch.stack([action[:, :1] * 0 + taus, action[:, :1] * 0 - taus])


def test_evaluate_counts_regions_and_tail():
    acts = np.repeat(np.array([[0.7, 0.7], [-0.7, 0.7], [0.0, 0.0], [-0.7, -0.7]]), [500, 300, 100, 100], axis=0)
    m = bandit.evaluate(FixedAgent(acts), n_actions=1000, reward_draws=20)
    assert (m["share/R"], m["share/S"], m["share/outside"], m["share/L1"], m["share/L2"]) == (0.5, 0.3, 0.1, 0.1, 0.0)
    assert m["reward/mean"] == pytest.approx(0.5 * 4.2 + 0.3 * 3 - 0.1 * 20, abs=0.3)
    assert m["reward/cvar_0.1"] == pytest.approx(-(0.05 * 30 + 0.05 * 20) / 0.1, abs=0.5)
    assert m["quantile/S/critic1/0.5"] == pytest.approx(0.5)
    assert m["quantile/S/critic2/0.9"] == pytest.approx(-0.9)


def test_plot_writes_png(tmp_path):
    d = bandit.make_dataset(500)
    bandit.plot({"a": d.action.numpy(), "b": d.action.numpy()[:50]}, d.action.numpy(), tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 10_000


def _eval(run_dir):
    return json.loads((run_dir / "eval.json").read_text())


@pytest.mark.slow  # ~14 min on 2 cores: `pytest -m slow` (the CVaR actor's drift took 9k steps to show)
def test_ramac_train_holds_the_safe_mode_in_a_long_run(tmp_path, capsys):
    """`ramac train` as a user runs it (CPU-sized bandit preset, RADAC with CVaR_0.1), for
    almost twice the preset's steps. The published form of the actor loss (plain BC,
    unnormalised risk term) reaches S and then drifts off it: at 9k steps it held about
    70 % in S and 25 % outside (results/bandit-diagnosis/); the CVaR actor must stay."""
    run_dir = tmp_path / "radac"
    assert main(["train", "--device", "cpu", "--run-dir", str(run_dir), "--no-progress", "--steps", "9000",
                 "--eval-every", "3000"]) == 0
    assert str(run_dir) in capsys.readouterr().out
    m = _eval(run_dir)
    assert m["step"] == 9000
    assert m["share/S"] >= 0.90 and m["share/outside"] <= 0.05, bandit.summary_line(m)
    assert m["share/R"] <= 0.05
    for critic in ("critic1", "critic2"):  # the learned law at R: -30 w.p. 0.1, +8 otherwise
        assert m[f"quantile/R/{critic}/0.02"] < -15 and m[f"quantile/R/{critic}/0.05"] < -15
        assert m[f"quantile/R/{critic}/0.5"] > 5
    for name in ("config.json", "metrics.jsonl", "train.csv", "eval.csv", "checkpoint.pt", "bandit.png"):
        assert (run_dir / name).exists(), name
    # the actor held S at every evaluation, not only at the end
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if '"kind": "eval"' in line]
    assert [e["step"] for e in evals] == [3000, 6000, 9000]
    assert all(e["share/S"] >= 0.85 for e in evals), [round(e["share/S"], 3) for e in evals]
    # and `ramac eval` re-evaluates the checkpoint
    assert main(["eval", str(run_dir), "--samples", "2000", "--device", "cpu"]) == 0
    again = json.loads((run_dir / "eval-again.json").read_text())
    assert again["share/S"] >= 0.85


def test_cvar_actor_holds_the_support_when_rewards_are_five_times_larger(tmp_path):
    """bandit-x5: every reward (and the OOD reward) times 5. With the published unnormalised
    risk term the actor leaves the data support (most actions outside); the scale-free
    setting of the bandit preset must pick S as on the default bandit."""
    agent, cfg = build_configs("bandit-x5", "radac", cpu_sized=True,  # 500 steps after a shortened BC-only warm-up
                               agent_overrides={"eta_warmup_steps": 1500},
                               train_overrides={"steps": 2000, "eval_every": 0, "device": "cpu"})
    m = train(agent, cfg, tmp_path / "x5", progress=False).final_eval
    assert m["share/best_tail"] >= 0.90 and m["share/outside"] <= 0.05, bandit.summary_line(m)
    q = m["quantile/R/critic1/0.02"]  # critic readouts are in reward units: -150 clipped at q_clip = -100
    assert q < -60, q


@pytest.mark.slow  # the risk-neutral contrasts: ~5 min together on 2 cores (`pytest -m slow`); CI keeps the risk-averse ones
def test_neutral_prefers_risky_mode(tmp_path):
    agent, cfg = build_configs("bandit", "neutral", cpu_sized=True, agent_overrides={"eta_warmup_steps": 1000},
                               train_overrides={"steps": 1500, "eval_every": 0, "device": "cpu"})
    m = train(agent, cfg, tmp_path / "neutral", progress=False).final_eval
    assert m["share/R"] >= 0.80, bandit.summary_line(m)


@pytest.mark.slow
def test_diffusion_ql_prefers_risky_mode(tmp_path):
    """Diffusion-QL (its Q-normalised loss, eta 1, softmax over 50 candidates by Q) picks R, 1,000
    steps after a shortened BC-only warm-up (after 500 it had 73 % in R and 26 % outside)."""
    agent, cfg = build_configs("bandit", "diffusion-ql", cpu_sized=True, agent_overrides={"eta_warmup_steps": 1000},
                               train_overrides={"steps": 2000, "eval_every": 0, "device": "cpu",
                                                "eval_samples": 500})  # x 50 candidates
    m = train(agent, cfg, tmp_path / "dql", progress=False).final_eval
    assert m["share/R"] >= 0.80, bandit.summary_line(m)


def test_bc_covers_all_four_modes(tmp_path):
    agent, cfg = build_configs("bandit", "bc", cpu_sized=True,
                               train_overrides={"steps": 3000, "eval_every": 0, "device": "cpu"})
    m = train(agent, cfg, tmp_path / "bc", progress=False).final_eval
    for mode in bandit.MODES:
        assert m[f"share/{mode}"] >= 0.15, bandit.summary_line(m)
    assert m["share/outside"] <= 0.15


@pytest.mark.parametrize("algo, mode", [("rafmac", "S"), pytest.param("fql", "R", marks=pytest.mark.slow)])
def test_flow_agents_pick_their_mode(algo, mode, tmp_path):
    """SPEC 2.5: the one-step student of RAFMAC (CVaR_0.1) picks S, FQL's (Q) picks R, within the
    support, 500 steps after a shortened BC-only warm-up."""
    agent, cfg = build_configs("bandit", algo, cpu_sized=True, agent_overrides={"eta_warmup_steps": 1000},
                               train_overrides={"steps": 1500, "eval_every": 0, "device": "cpu"})
    m = train(agent, cfg, tmp_path / algo, progress=False).final_eval
    assert m[f"share/{mode}"] >= 0.90 and m["share/outside"] <= 0.05, bandit.summary_line(m)



def test_oraac_moves_the_action_out_of_the_risky_mode(tmp_path):
    """ORAAC's CVaR perturbation actor (no BC-only warm-up) moves the action away from the VAE's
    (latent 0), which sits in the risky mode R like the data's most frequent action: at step 500
    twelve of thirteen runs below acted in R, at 1,000 none did. Where it goes depends on the seed, so this is all the
    test asks. Measured (CPU, 2,000 steps, evaluated every 500): with the update's counter-based
    draws (ramac.noise) seeds 0-6 ended in S for 1 and 4, in L1 for 5 and 6, outside the support
    for 0, 2 and 3; with torch's stream before it, seeds 0-4 ended in S and seed 5 outside. A
    perturbation actor may leave the support (SPEC 2.5); ORAAC does not reliably find S here."""
    agent, cfg = build_configs("bandit", "oraac", cpu_sized=True,
                               train_overrides={"steps": 1000, "eval_every": 500, "device": "cpu"})
    run = train(agent, cfg, tmp_path / "oraac", progress=False).run_dir
    early, late = [e for e in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                   if e["kind"] == "eval"]
    assert early["step"] == 500 and early["share/R"] >= 0.95, bandit.summary_line(early)
    assert late["share/R"] <= 0.05, bandit.summary_line(late)
    # the evaluation is deterministic and the bandit has one state: one region holds every action
    assert max(late[f"share/{r}"] for r in ("R", "S", "L1", "L2", "outside")) == 1.0, bandit.summary_line(late)