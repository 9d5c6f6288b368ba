"""Settings: presets, overrides and validation messages."""

import pytest

from ramac.config import ALGOS, PRESETS, BCConfig, DiffusionQLConfig, RADACConfig, build_configs, from_dict, to_dict


def test_published_presets():
    a, t = build_configs("hopper-medium-replay")
    assert (a.lr_critic, a.eta, a.n_quantiles, a.embedding_dim, a.q_clip, a.lambda_bc) == (1e-5, 0.05, 16, 64, 150.0, 1.5)
    assert a.eta_warmup_steps == 300_000 and a.n_timesteps == 5 and a.beta_schedule == "vp"
    assert t.steps == 2_000_000
    a, _ = build_configs("walker2d-medium-replay")
    assert (a.lr_critic, a.n_quantiles, a.grad_norm) == (5e-6, 8, 3.0)
    assert a.eval_select == "none"  # RADAC evaluates one sample per state, as the published sample_action
    assert len(PRESETS) == 7


def test_each_agent_gets_its_own_settings():
    bc, _ = build_configs("walker2d-medium-expert", "bc")
    assert type(bc) is BCConfig and not hasattr(bc, "eta") and not hasattr(bc, "eval_select")
    radac, _ = build_configs("bandit")
    neutral, _ = build_configs("bandit", "neutral")
    assert neutral.risk == "neutral" and neutral.bc_filter == radac.bc_filter != "none"  # the ablation: only the distortion
    dql, _ = build_configs("bandit", "diffusion-ql")
    assert type(dql) is DiffusionQLConfig
    assert (dql.risk, dql.risk_norm, dql.bc_filter, dql.reward_norm) == ("neutral", "abs", "none", "none")
    assert (dql.eval_select, dql.n_candidates, dql.eta) == ("softmax", 50, 1.0)
    dql, _ = build_configs("halfcheetah-medium-replay", "diffusion-ql")
    assert (dql.lr_critic, dql.grad_norm, dql.eta, dql.eta_warmup_steps) == (3e-4, 2.0, 1.0, 0)
    with pytest.raises(ValueError, match="unknown agent setting 'eta'"):
        build_configs("bandit", "bc", agent_overrides={"eta": 0.1})
    with pytest.raises(ValueError, match="risk-neutral"):
        build_configs("bandit", "diffusion-ql", agent_overrides={"risk": "cvar"})


def test_cpu_variant():
    full, full_t = build_configs("bandit")
    cpu, cpu_t = build_configs("bandit", cpu_sized=True)
    assert full.actor_hidden == 256 and cpu.actor_hidden < 256 and cpu_t.steps < full_t.steps


def test_overrides_are_coerced():
    a, t = build_configs("bandit", agent_overrides={"eta": "0.3", "n_timesteps": "7", "risk_quadrature": "true"},
                         train_overrides={"steps": "2e3"})
    assert (a.eta, a.n_timesteps, a.risk_quadrature, t.steps) == (0.3, 7, True, 2000)


@pytest.mark.parametrize("overrides,message", [
    ({"etaa": 0.1}, "unknown agent setting 'etaa'"),
    ({"eta": -0.1}, "eta must be >= 0"),
    ({"gamma": 1.5}, r"gamma must be in \[0, 1\]"),
    ({"n_timesteps": 0}, "n_timesteps must be > 0"),
    ({"beta_schedule": "sigmoid"}, "beta_schedule"),
    ({"risk": "var"}, "unknown distortion"),
    ({"risk_param": 2.0}, "alpha must be in"),
    ({"lambda_bc": 0, "eta": 0}, "would not learn"),
    ({"top_k": 20, "n_candidates": 5}, "top_k"),
    ({"n_timesteps": "five"}, "not a valid int"),
    ({"polyak": 0}, "polyak"),
])
def test_bad_values_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        build_configs("bandit", agent_overrides=overrides)


def test_bad_preset_and_algo():
    with pytest.raises(ValueError, match="unknown task/preset 'cheetah'"):
        build_configs("cheetah")
    with pytest.raises(ValueError, match="unknown algo"):
        build_configs("bandit", "sac")
    with pytest.raises(ValueError, match="batch_size must be > 0"):
        build_configs("bandit", train_overrides={"batch_size": 0})


def test_round_trip():
    a, _ = build_configs("halfcheetah-medium-expert")
    assert from_dict(RADACConfig, to_dict(a)) == a


def test_config_files_from_before_eval_select_load():
    old = to_dict(build_configs("walker2d-medium-expert")[0])
    del old["eval_select"]
    for top_k, want in ((1, ("top_k", 1)), (0, ("none", 1)), (3, ("top_k", 3))):
        cfg = from_dict(RADACConfig, {**old, "top_k": top_k})
        assert (cfg.eval_select, cfg.top_k) == want


@pytest.mark.parametrize("algo", ALGOS)
def test_bench_and_profile_overrides_fit_every_agent(algo):
    """`ramac bench train --algo` and `ramac profile --algo` time the update from step one: the
    override exists only for the agents with a warm-up, and every agent's config accepts it."""
    from ramac.config import risk_from_step_one

    cfg, _ = build_configs("halfcheetah-medium-expert", algo, agent_overrides=risk_from_step_one(algo))
    assert getattr(cfg, "eta_warmup_steps", 0) == 0
