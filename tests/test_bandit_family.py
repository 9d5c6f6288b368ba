"""Bandit layouts and reward laws as parameters, the family, and the CVaR actor on it."""

import json
import math

import numpy as np
import pytest

from ramac.study import collect, t_interval
from ramac.cli import main
from ramac.envs import bandit
from ramac.envs.bandit_family import DEFAULT, FAMILY, get_spec
from ramac.envs.bandit_spec import BanditSpec, Mode, RewardLaw


@pytest.mark.parametrize("text, mean, cvar", [
    ("normal(3, 0.5)", 3.0, 3.0 - 0.5 * 1.7549833193248680),
    ("two_point(8, -30, 0.1)", 4.2, -30.0),
    ("two_point(8, -30, 0.05)", 6.1, (0.05 * -30 + 0.05 * 8) / 0.1),
    ("constant(-2)", -2.0, -2.0),
])
def test_reward_law_moments_match_samples(text, mean, cvar):
    law = RewardLaw.parse(text)
    assert str(RewardLaw.parse(str(law))) == str(law)
    assert law.mean() == pytest.approx(mean, abs=1e-9)
    assert law.cvar(0.1) == pytest.approx(cvar, abs=1e-6)
    x = np.sort(law.sample(np.random.default_rng(0), 400_000))
    assert x.mean() == pytest.approx(mean, abs=0.03)
    assert x[: len(x) // 10].mean() == pytest.approx(cvar, abs=0.2)  # a two-point tail moves with its share


@pytest.mark.parametrize("bad", ["normal(3)", "cauchy(0, 1)", "normal(0, -1)", "two_point(1, 0, 2)", "3 + 4"])
def test_reward_law_rejects_bad_text(bad):
    with pytest.raises(ValueError):
        RewardLaw.parse(bad)


def test_default_is_spec_2_5_and_its_data_is_unchanged():
    stats = DEFAULT.region_stats()
    assert stats["R"] == pytest.approx((4.2, -30.0)) and stats["S"][0] == 3.0
    assert stats["S"][1] == pytest.approx(2.1227, abs=1e-3) and stats["outside"] == (-20.0, -20.0)
    assert DEFAULT.best_mode("cvar") == "S" and DEFAULT.best_mode("mean") == "R"
    # the module-level helpers and the spec give the same data set as the SPEC 2.5 generator
    rng = np.random.default_rng(0)
    mode = rng.integers(0, 4, 500)
    actions = np.clip(bandit.CENTRES[mode] + 0.1 * rng.standard_normal((500, 2)), -1, 1)
    d = bandit.make_dataset(500)
    assert np.allclose(d.action.numpy(), actions.astype(np.float32))


def test_family_has_the_variants_the_study_needs():
    assert len(FAMILY) >= 8
    sizes = {len(s.modes) for s in FAMILY.values()}
    assert {3, 4} <= sizes
    scales = {round(abs(s.ood_reward) / 20, 2) for s in FAMILY.values()}
    assert 0.5 in scales and 5.0 in scales
    ring = get_spec("bandit-ring")
    safe = next(m for m in ring.modes if m.name == "S")
    others = [m for m in ring.modes if m.name != "S"]
    assert all(math.dist(safe.centre, m.centre) > safe.radius + m.radius for m in others)
    for spec in FAMILY.values():  # the risk-averse and the risk-neutral choice differ in every variant
        assert spec.best_modes("cvar") != spec.best_modes("mean"), spec.name
        d = bandit.make_dataset(2000, spec=spec)
        share = np.bincount(spec.region_of(d.action.numpy()), minlength=len(spec.regions)) / 2000
        assert share[-1] < 0.02, spec.name  # behaviour data stay on the modes
    with pytest.raises(ValueError, match="unknown bandit"):
        get_spec("bandit-x7")


def test_scaled_variant_scales_every_reward():
    x5 = DEFAULT.scaled(5.0)
    a = np.repeat(DEFAULT.centres, 1000, axis=0)
    r1 = DEFAULT.sample_rewards(a, np.random.default_rng(3))
    r5 = x5.sample_rewards(a, np.random.default_rng(3))
    assert np.allclose(r5, 5 * r1)
    assert x5.sample_rewards(np.zeros((1, 2)), np.random.default_rng(0))[0] == -100.0


def test_spec_round_trips_through_json_and_rejects_bad_layouts():
    for spec in FAMILY.values():
        again = BanditSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert again == spec
    law = RewardLaw.parse("normal(0, 1)")
    with pytest.raises(ValueError, match="centre"):
        BanditSpec("b", (Mode("A", (1.5, 0.0), law),))
    with pytest.raises(ValueError, match="unique"):
        BanditSpec("b", (Mode("A", (0.0, 0.0), law), Mode("A", (0.5, 0.0), law)))
    with pytest.raises(ValueError, match="unknown bandit spec key"):
        BanditSpec.from_dict({"modes": [], "radius": 1})


def test_regions_take_the_nearest_disc_that_holds_the_action():
    spec = BanditSpec("b", (Mode("A", (0.0, 0.0), RewardLaw.parse("constant(1)"), radius=0.5),
                            Mode("B", (0.6, 0.0), RewardLaw.parse("constant(2)"), radius=0.2)))
    pts = np.array([[0.0, 0.0], [0.45, 0.0], [0.55, 0.0], [0.75, 0.0], [0.9, 0.0]])
    assert spec.region_of(pts).tolist() == [0, 1, 1, 1, 2]


def test_t_interval_and_report_rows(tmp_path):
    m, h = t_interval([0.9, 0.95, 1.0])
    assert m == pytest.approx(0.95) and h == pytest.approx(4.303 * 0.05 / math.sqrt(3))
    assert math.isnan(t_interval([0.5])[1])
    runs = []
    for seed, (best, out) in enumerate([(0.95, 0.01), (0.91, 0.04)]):
        d = tmp_path / f"r{seed}"
        d.mkdir()
        row = {"kind": "eval", "step": 100, "share/best_tail": best, "share/outside": out, "share/best_mean": 0.0,
               "reward/mean": 3.0, "reward/cvar_0.1": 2.0}
        (d / "metrics.jsonl").write_text(json.dumps(row) + "\n")
        runs.append(("bandit", seed, d))
    rep = collect(runs, [100], "radac", {})
    assert rep["rows"][0]["goal_met"] and rep["rows"][0]["best_tail_min"] == 0.91
    (runs[1][2] / "metrics.jsonl").write_text(json.dumps({**row, "share/outside": 0.06}) + "\n")
    assert not collect(runs, [100], "radac", {})["rows"][0]["goal_met"]


def test_study_command_lists_the_family(capsys):
    assert main(["study", "bandit", "--list"]) == 0
    out = capsys.readouterr().out
    for name in FAMILY:
        assert name in out
    assert main(["study", "bandit", "--variants", "bandit-x9", "--device", "cpu"]) == 2


class _XValue:
    """A stand-in risk measure: the value of an action is its first coordinate."""

    def value(self, critic1, critic2, state, action):
        return action[:, 0]


@pytest.mark.parametrize("mode", ["better", "better_mean"])
def test_bc_filter_keeps_the_data_actions_ranked_at_least_as_high(mode):
    import torch

    from ramac.agents.radac import RADAC
    from ramac.config import build_configs
    from ramac.data import Batch

    torch.manual_seed(0)
    cfg, _ = build_configs("bandit", "radac", cpu_sized=True, agent_overrides={"bc_filter": mode})
    agent = RADAC(1, 2, cfg)
    agent.select_risk = _XValue()
    x = torch.tensor([-0.9, -0.2, 0.1, 0.6, 0.95])
    b = Batch(torch.zeros(5, 1), torch.stack([x, torch.zeros(5)], 1), torch.zeros(5), torch.zeros(5, 1),
              torch.ones(5))
    own = torch.tensor([0.0, 0.0, 0.5, 0.5, 2.0])
    weights, kept = agent._bc_filter_weights(b, own)
    assert float(weights.sum()) == pytest.approx(1.0)
    if mode == "better":  # data value x_b against the actor's own value own_b
        assert (weights > 0).tolist() == [False, False, False, True, False]
        assert float(kept) == pytest.approx(0.2)
        none, kept0 = agent._bc_filter_weights(b, torch.full((5,), 5.0))  # nothing better: plain BC
        assert torch.allclose(none, torch.full((5,), 0.2)) and float(kept0) == 0.0
    else:  # one threshold per state: the mean x of the actor's samples, the same for these equal states
        kept_mask = weights > 0
        assert 0.0 < float(kept) < 1.0  # the untrained actor's mean x lies inside the data's range
        assert (kept_mask == (x >= x[kept_mask].min())).all() and float(kept) == kept_mask.float().mean()


def test_median_bc_filter_is_not_opened_by_one_stray_actor_action():
    """One of the actor's four actions for a state far off the data (valued -50) pulls their mean
    below every data action, so better_mean keeps the whole batch, the low modes too; the median
    of the four stays at the other three and keeps only the data actions at least that good."""
    import torch

    from ramac.agents.radac import RADAC
    from ramac.config import build_configs
    from ramac.data import Batch

    x = torch.tensor([-0.9, -0.2, 0.4, 0.8, 0.95])
    b = Batch(torch.zeros(5, 1), torch.stack([x, torch.zeros(5)], 1), torch.zeros(5), torch.zeros(5, 1),
              torch.ones(5))
    own = torch.tensor([0.5, 0.7, -50.0, 0.6])  # the actor's four actions' values per state, one stray

    def sample_fast(obs, seed=None, ema=False, noise=None):
        return torch.stack([own.repeat(obs.shape[0] // 4), torch.zeros(obs.shape[0])], 1)

    kept = {}
    for mode in ("better_mean", "better_median"):
        cfg, _ = build_configs("bandit", "radac", cpu_sized=True, agent_overrides={"bc_filter": mode})
        torch.manual_seed(0)
        agent = RADAC(1, 2, cfg)
        agent.select_risk, agent.policy.sample_fast = _XValue(), sample_fast
        weights, kept[mode] = agent._bc_filter_weights(b, torch.zeros(5))
        assert float(weights.sum()) == pytest.approx(1.0)
    assert float(kept["better_mean"]) == 1.0  # mean -12.05: every data action passes
    assert float(kept["better_median"]) == pytest.approx(0.4)  # median 0.55: only x = 0.8, 0.95


def test_top_bc_filter_keeps_a_fixed_share_by_advantage_wherever_the_actor_is():
    """bc_filter="top" imitates the bc_filter_top share of the batch with the largest advantage;
    the actor's values falling by a common amount (it slid into a low mode) change nothing,
    where better_mean would open BC to more of the batch."""
    import torch

    from ramac.agents.radac import RADAC
    from ramac.config import build_configs
    from ramac.data import Batch

    x = torch.linspace(-0.9, 0.9, 20)[torch.randperm(20, generator=torch.Generator().manual_seed(0))]
    b = Batch(torch.zeros(20, 1), torch.stack([x, torch.zeros(20)], 1), torch.zeros(20), torch.zeros(20, 1),
              torch.ones(20))
    cfg, _ = build_configs("bandit", "radac", cpu_sized=True,
                           agent_overrides={"bc_filter": "top", "bc_filter_top": 0.2})
    torch.manual_seed(0)
    agent = RADAC(1, 2, cfg)
    agent.select_risk = _XValue()
    out = []
    for level in (0.8, -0.5):  # the actor's four actions per state, all at value `level`
        agent.policy.sample_fast = lambda obs, seed=None, ema=False, noise=None, v=level: torch.full((obs.shape[0], 2), v)
        weights, share = agent._bc_filter_weights(b, torch.zeros(20))
        out.append(weights)
        assert float(weights.sum()) == pytest.approx(1.0) and float(share) == pytest.approx(0.2)
        assert set(torch.nonzero(weights).flatten().tolist()) == set(x.topk(4).indices.tolist())
    torch.testing.assert_close(out[0], out[1])


def test_soft_bc_filter_weights_favour_better_data_and_ignore_scale_and_shift():
    import torch

    from ramac.agents.radac import RADAC
    from ramac.config import build_configs
    from ramac.data import Batch

    cfg, _ = build_configs("bandit", "radac", cpu_sized=True, agent_overrides={"bc_filter": "soft"})
    torch.manual_seed(0)
    agent = RADAC(1, 2, cfg)
    agent.policy.sample_fast = lambda obs, seed=None, ema=False, noise=None: torch.zeros(obs.shape[0], 2)  # threshold: value at 0
    x = torch.linspace(-0.9, 0.9, 64)
    b = Batch(torch.zeros(64, 1), torch.stack([x, torch.zeros(64)], 1), torch.zeros(64), torch.zeros(64, 1),
              torch.ones(64))
    out = []
    for scale, shift in ((1.0, 0.0), (7.0, -3.0)):  # the critics' unit and zero do not matter

        class Value:
            def value(self, critic1, critic2, state, action, scale=scale, shift=shift):
                return scale * action[:, 0] + shift

        agent.select_risk = Value()
        weights, share = agent._bc_filter_weights(b, torch.zeros(64))
        out.append(weights)
        assert float(weights.sum()) == pytest.approx(1.0)
        assert (weights[1:] > weights[:-1]).all()  # a better data action weighs more
        assert 0.2 < float(share) < 1.0  # BC rests on a good part of the batch, not on a few rows
    torch.testing.assert_close(out[0], out[1])
