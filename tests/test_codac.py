"""CODAC and CQL (ramac/agents/codac.py): the conservative penalty, its Lagrange weight, the soft
TD target and the tanh-Gaussian policy's density."""

import math

import pytest
import torch
from torch import nn

from ramac.agents import make_agent
from ramac.config import build_configs
from ramac.data import Batch

TINY = dict(actor_hidden=32, critic_hidden=16, embedding_dim=8, n_quantiles=4, n_risk_quantiles=4)


def agent(algo="codac", **over):
    cfg, _ = build_configs("hopper-medium-expert", algo, agent_overrides={**TINY, **over})
    torch.manual_seed(0)
    return make_agent(algo, 3, 2, cfg)


def batch(B=32):
    g = torch.Generator().manual_seed(0)
    return Batch(torch.randn(B, 3, generator=g), torch.rand(B, 2, generator=g) * 2 - 1, torch.randn(B, generator=g),
                 torch.randn(B, 3, generator=g), torch.zeros(B))


class Const(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, state, action, taus):
        return torch.full((state.shape[0], taus.shape[-1]), self.c)


def test_conservative_penalty_is_the_importance_weighted_log_sum_exp_gap():
    """Constant critics Z = c and a policy of density 1 (log pi = 0): the gap is
    log(n * 2^A [uniform, density 2^-A] + n [pi(s)] + n [pi(s')]) for n actions of each kind."""
    a = agent(cql_actions=10)
    a.critic1, a.critic2 = Const(3.0), Const(-7.0)

    def rsample(obs, net=None, noise=None):
        return torch.zeros(obs.shape[0], 2), torch.zeros(obs.shape[0])

    a.policy.rsample = rsample
    gap1, gap2 = a.conservative_penalty(batch())
    assert float(gap1) == pytest.approx(math.log(10 * 4 + 10 + 10), rel=1e-5)
    assert float(gap2) == pytest.approx(float(gap1), rel=1e-5)  # the gap does not depend on the level c


@pytest.mark.parametrize("threshold, grows", [(-1e4, True), (1e4, False)])
def test_lagrange_weight_grows_while_the_penalty_is_above_its_threshold(threshold, grows):
    a = agent(lagrange_threshold=threshold)
    a.fit_data(batch())
    before = float(a.log_alpha_prime.value.detach())
    for _ in range(3):
        a.update(batch())
        a.advanced()
    assert (float(a.log_alpha_prime.value.detach()) > before) == grows


def test_soft_target_subtracts_alpha_times_the_next_log_density():
    b = batch()
    taus = torch.rand(32, 4)
    out = {}
    for alpha in (0.0, 0.7):
        a = agent(entropy_alpha=alpha)
        z = a.next_quantiles(b.next_obs, taus, a.noise("next"))
        _, log_prob = a.policy.rsample(b.next_obs, a.policy.actor_target, a.noise("next"))
        out[alpha] = (z, log_prob)
    torch.testing.assert_close(out[0.7][0], out[0.0][0] - 0.7 * out[0.7][1][:, None])


def test_tanh_gaussian_log_density_matches_torch_distributions():
    from torch.distributions import Independent, Normal, TransformedDistribution
    from torch.distributions.transforms import AffineTransform, TanhTransform

    a = agent(max_action=2.0)
    obs = torch.randn(64, 3)
    torch.manual_seed(3)
    action, log_prob = a.policy.rsample(obs)
    mean, log_std = a.policy.actor(obs)
    dist = TransformedDistribution(Independent(Normal(mean, log_std.exp()), 1),
                                   [TanhTransform(cache_size=1), AffineTransform(0.0, 2.0)])
    want = dist.log_prob(action.clamp(-2 + 1e-5, 2 - 1e-5))
    torch.testing.assert_close(log_prob, want, atol=2e-3, rtol=1e-3)
    assert action.abs().max() <= 2.0


def test_cql_is_codac_with_the_mean():
    assert agent("cql").risk.kind == "neutral" and agent("codac").risk.kind == "cvar"
    with pytest.raises(ValueError, match="CQL is risk-neutral"):
        build_configs("bandit", "cql", agent_overrides={"risk": "cvar"})
