"""The flow policy of RAFMAC and FQL (ramac.flow): Euler integration, the rectified-flow target,
the BC filter's weights, distillation, and which loss reaches which network."""

import pytest
import torch
from torch import nn

from ramac.agents import make_agent
from ramac.config import build_configs
from ramac.data import Batch
from ramac.flow import FlowPolicy

TINY = dict(actor_hidden=32, actor_layers=2, critic_hidden=16, embedding_dim=8, n_quantiles=4, n_risk_quantiles=4)


def policy(**over):
    cfg, _ = build_configs("bandit", "rafmac", agent_overrides={**TINY, **over})
    torch.manual_seed(0)
    return FlowPolicy(3, 2, cfg)


class Field(nn.Module):
    """A stand-in velocity field: fn(state, x, t)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, state, x, t):
        return self.fn(state, x, t)


def test_flow_actions_are_euler_steps_of_the_field_clipped_to_the_box():
    p = policy(flow_steps=4)
    z = torch.tensor([[0.2, -0.3], [0.5, 0.9]])
    obs = torch.zeros(2, 3)
    p.actor.field = Field(lambda s, x, t: torch.full_like(x, 0.25))  # dx/dt = 0.25: z + 0.25, then clipped
    torch.testing.assert_close(p.flow_actions(obs, z), torch.tensor([[0.45, -0.05], [0.75, 1.0]]))
    p.actor.field = Field(lambda s, x, t: -x)  # dx/dt = -x: four Euler steps multiply by (1 - 1/4)^4
    torch.testing.assert_close(p.flow_actions(obs, z), z * 0.75 ** 4)
    p.actor.field = Field(lambda s, x, t: t.expand_as(x))  # dx/dt = t at the left end of each step
    torch.testing.assert_close(p.flow_actions(obs, z), (z + (0 + 0.25 + 0.5 + 0.75) / 4).clamp(-1, 1))


def test_rectified_flow_target_is_the_action_minus_the_noise():
    """A field that knows the action a predicts (a - x_t) / (1 - t) = a - z exactly: loss 0. Any
    other interpolation or target (z - a, t and 1 - t swapped) leaves a large loss."""
    p = policy().double()
    a = torch.tensor([0.6, -0.4], dtype=torch.float64)
    obs, action = torch.zeros(512, 3, dtype=torch.float64), a.expand(512, 2).clone()
    p.actor.field = Field(lambda s, x, t: (a - x) / (1 - t))
    assert float(p.flow_bc_loss(obs, action)) < 1e-12
    p.actor.field = Field(lambda s, x, t: torch.zeros_like(x))  # predicts nothing: E||a - z||^2 / 2 dims
    assert float(p.flow_bc_loss(obs, action)) == pytest.approx(1 + float(a.square().mean()), rel=0.15)


def test_flow_bc_weights_weigh_each_data_action():
    p = policy()
    p.actor.field = Field(lambda s, x, t: torch.zeros_like(x))
    action, obs = torch.rand(6, 2) * 2 - 1, torch.zeros(6, 3)
    w = torch.tensor([0.0, 0.5, 0.0, 0.25, 0.25, 0.0])
    torch.manual_seed(1)
    z = torch.randn_like(action)  # the loss's first draw
    per = (action - z).square().mean(dim=1)
    torch.manual_seed(1)
    torch.testing.assert_close(p.flow_bc_loss(obs, action, w), (w * per).sum())


def test_distillation_makes_the_student_the_flow():
    p = policy()
    opt = torch.optim.Adam(p.actor.student.parameters(), lr=3e-3)
    obs = torch.randn(256, 3)
    for _ in range(400):
        opt.zero_grad()
        p.distill_loss(obs).backward()
        opt.step()
    z = torch.randn(256, 2)
    with torch.no_grad():
        gap = (p.actor.student(obs, z) - p.flow_actions(obs, z)).square().mean()
        spread = p.flow_actions(obs, z).var(dim=0).mean()
    assert float(gap) < 0.1 * float(spread), (float(gap), float(spread))
    assert p.actor.field.net[0].weight.grad is None  # the distillation target is fixed


@pytest.mark.parametrize("algo", ["rafmac", "fql"])
def test_the_risk_term_reaches_the_student_and_the_flow_bc_only_the_field(algo):
    cfg, _ = build_configs("bandit", algo, agent_overrides={**TINY, "bc_filter": "none"})
    torch.manual_seed(0)
    agent = make_agent(algo, 1, 2, cfg)
    for critic in (agent.critic1, agent.critic2):  # the published init starts the critics nearly flat
        nn.init.normal_(critic.out.weight)
    b = Batch(torch.zeros(64, 1), torch.rand(64, 2) * 2 - 1, torch.randn(64), torch.zeros(64, 1), torch.ones(64))

    def grads(lambda_bc, lambda_distill, eta):
        agent.cfg.lambda_bc, agent.policy.cfg.lambda_distill = lambda_bc, lambda_distill
        agent.policy.actor.zero_grad(set_to_none=True)
        loss, _ = agent.actor_loss(b, eta, with_risk=eta > 0)
        loss.backward()
        norm = {}
        for part in ("field", "student"):
            gs = [q.grad for q in getattr(agent.policy.actor, part).parameters()]
            norm[part] = sum(float(g.norm()) for g in gs if g is not None)
        return norm

    risk_only = grads(0.0, 0.0, 1.0)
    assert risk_only["field"] == 0.0 and risk_only["student"] > 0.0
    bc_only = grads(1.0, 0.0, 0.0)
    assert bc_only["field"] > 0.0 and bc_only["student"] == 0.0
    distill_only = grads(1.0, 1.0, 0.0)
    assert distill_only["student"] > 0.0
