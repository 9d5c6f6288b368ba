"""The agent contract: every registry agent trains through the updaters, acts reproducibly from a
generator, saves and restores its whole state; the updaters need nothing beyond the contract."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

from ramac.agents import ALGOS, make_agent
from ramac.agents.registry import config_class
from ramac.agents.base import Agent
from ramac.config import build_configs
from ramac.data.container import synthetic_dataset
from ramac.train.updaters import EagerUpdater, FastUpdater, make_updater

S, A, N, B = 5, 2, 256, 16
TINY = dict(actor_hidden=16, n_timesteps=3, ema_start=2, ema_every=1, actor_layers=2, flow_steps=3, actor_hidden2=16,
            vae_hidden=16)
TINY_CRITIC = dict(critic_hidden=16, embedding_dim=8, n_quantiles=4, n_risk_quantiles=4, eta_warmup_steps=3,
                   n_candidates=4)


def dataset(device="cpu"):
    return synthetic_dataset(S, A, N, device=device, terminal_rate=0.1)


def build(algo, device="cpu", **extra):
    over = dict(TINY)
    if algo != "bc":
        over.update(TINY_CRITIC)
    over.update(extra)
    known = {f.name for f in dataclasses.fields(config_class(algo))}  # TINY names the settings of every agent
    cfg, _ = build_configs("halfcheetah-medium-expert", algo, agent_overrides={k: v for k, v in over.items()
                                                                               if k in known})
    torch.manual_seed(0)
    agent = make_agent(algo, S, A, cfg).to(device)
    agent.fit_data(dataset(device))
    return agent


def flat(agent):
    return torch.cat([p.detach().flatten() for p in agent.parameters()])


@pytest.mark.parametrize("algo", ALGOS)
def test_every_agent_trains_through_the_updaters_alike(algo, device):
    """Eager loop and the fast updater (eager on CPU, a CUDA graph per phase on the GPU, after 2
    eager warm-up steps) give the same parameters, across the agent's phases."""
    graph = device.type == "cuda"
    data = dataset(device)
    idx = [torch.randint(0, N, (B,), generator=torch.Generator().manual_seed(i)).to(device) for i in range(6)]
    a, b = build(algo, device), build(algo, device)
    torch.manual_seed(1)
    for i in idx:
        a.update(data.gather(i))
        a.advanced()
    fast = FastUpdater(b, data, B, graph=graph, indices="given", warmup=2)
    torch.manual_seed(1)
    for i in idx:
        fast.step(i)
    fast.sync()
    assert a.steps == b.steps == int(b.step_t) == 6
    if graph:
        assert fast.graphs  # the updates after the warm-up were replays
    tol = 2e-4 if graph else 1e-6
    torch.testing.assert_close(flat(a), flat(b), atol=tol, rtol=tol)
    means, first_bad = fast.metrics.read()
    assert first_bad == -1 and "actor/loss" in means
    assert not torch.equal(flat(a), flat(build(algo, device)))  # it learned something


@pytest.mark.parametrize("algo, extra", [("radac", {}), ("bc", {}), ("diffusion-ql", {}), ("rafmac", {}), ("fql", {}),
                                         ("radac", {"eval_select": "top_k", "top_k": 2})])
def test_act_repeats_with_the_same_generator_seed(algo, extra, device):
    """On the GPU too: the one-launch sampler takes the generator's noise."""
    agent = build(algo, device, **extra)
    obs = torch.randn(32, S, device=device)

    def act(seed):
        return agent.act(obs, generator=torch.Generator(device).manual_seed(seed))

    torch.manual_seed(5)
    first = act(3)
    torch.manual_seed(6)  # the global RNG does not matter
    assert torch.equal(first, act(3))
    assert not torch.equal(first, act(4))
    assert first.shape == (32, A) and first.abs().max() <= 1.0


def test_each_agent_evaluates_with_its_own_policy(monkeypatch):
    """Diffusion-QL picks among candidates by its target critics' Q; RADAC and BC take one sample."""
    calls = []
    from ramac.agents.radac import RADAC

    original = RADAC.target_q

    def spy(self, obs, action):
        calls.append(obs.shape[0])
        return original(self, obs, action)

    monkeypatch.setattr(RADAC, "target_q", spy)
    obs = torch.randn(8, S)
    build("radac").act(obs)
    build("bc").act(obs)
    assert calls == []
    dql = build("diffusion-ql")
    dql.act(obs)
    assert calls == [8 * dql.cfg.n_candidates]


def test_bc_has_no_critic():
    bc = build("bc")
    assert not any("critic" in name for name, _ in bc.named_parameters())
    assert len(bc.optimizers()) == 1


@pytest.mark.parametrize("algo", ALGOS)
def test_full_state_round_trip_continues_identically(algo):
    data = dataset()
    idx = [torch.randint(0, N, (B,), generator=torch.Generator().manual_seed(i)) for i in range(6)]
    a = build(algo)
    for i in idx[:3]:
        a.update(data.gather(i))
        a.advanced()
    b = build(algo)
    b.load_full_state(copy.deepcopy(a.full_state()))  # as through a checkpoint file: no shared tensors
    assert b.steps == a.steps == 3 and int(b.step_t) == 3
    for agent in (a, b):
        torch.manual_seed(2)
        for i in idx[3:]:
            agent.update(data.gather(i))
            agent.advanced()
    assert torch.equal(flat(a), flat(b))


def test_make_agent_checks_the_config_class():
    cfg, _ = build_configs("bandit", "bc")
    with pytest.raises(TypeError, match="takes a RADACConfig"):
        make_agent("radac", 2, 2, cfg)
    with pytest.raises(ValueError, match="unknown agent"):
        make_agent("sac", 2, 2, cfg)


class LinearBC(Agent):
    """The smallest agent the contract allows: least-squares BC of a linear policy."""

    name = "linear-bc"

    def __init__(self, state_dim, action_dim, cfg=None):
        super().__init__(state_dim, action_dim, cfg)
        self.net = nn.Linear(state_dim, action_dim)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.1)

    def update(self, b):
        loss = (self.net(b.obs) - b.action).square().mean()
        self.opt.zero_grad(set_to_none=False)
        loss.backward()
        self.opt.step()
        self.step_t.add_(1)
        return {"actor/loss": loss.detach()}

    def optimizers(self):
        return [self.opt]

    def act(self, obs, generator=None):
        return self.net(obs).clamp(-1, 1)


def test_the_updaters_need_nothing_beyond_the_contract(device):
    data = dataset(device)
    agent = LinearBC(S, A).to(device)
    updater = make_updater(agent, data, B, graph=True, compile=False)
    assert isinstance(updater, FastUpdater if device.type == "cuda" else EagerUpdater)
    for _ in range(30):
        updater.step()
    updater.sync()
    means, first_bad = updater.metrics.read()
    assert first_bad == -1 and agent.steps == int(agent.step_t) == 30
    assert means["actor/loss"] < 1.0


@pytest.mark.parametrize("algo", ALGOS)
def test_every_draw_of_the_update_comes_from_the_runs_seed(algo, device):
    """Same noise seed, same update, whatever torch's own stream holds (a draw left on torch's
    stream makes the two runs of seed 0 differ: tried); another seed, another update."""
    data = dataset(device)
    batch = data.gather(torch.arange(B, device=device))

    def trained(seed, torch_stream):
        agent = build(algo, device, eta_warmup_steps=0)
        agent.seed_noise(seed)
        torch.manual_seed(torch_stream)
        for _ in range(2):
            agent.update(batch)
            agent.advanced()
        return flat(agent)

    first = trained(0, torch_stream=1)
    torch.testing.assert_close(trained(0, torch_stream=2), first, atol=0, rtol=0)
    assert not torch.equal(trained(1, torch_stream=1), first)




def test_as_constant_leaves_the_module_alone_without_grad_mode():
    """No grad mode (acting, targets): the critic itself, not a functional_call over detached copies
    of its parameters; with grad mode the same values through no parameter edge."""
    from ramac.risk_measures import as_constant

    critic = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3)
    with torch.no_grad():
        assert as_constant(critic) is critic
    read = as_constant(critic)
    assert read is not critic and torch.equal(read(x), critic(x)) and not read(x).requires_grad


@pytest.mark.parametrize("algo", [a for a in ALGOS if a != "bc"])
def test_the_actor_loss_reads_the_critics_as_constants(algo):
    """The actor's risk term reaches the critics' parameters through no autograd edge (their
    gradients would be computed and thrown away: the fused IQN backward's head kernel, and every
    input gradient of a compiled backward), while the actor's gradient still depends on the critics."""
    agent = build(algo)
    batch = dataset().gather(torch.arange(B))
    critics = [p for c in (agent.critic1, agent.critic2) for p in c.parameters()]
    actor = [p for p in agent.parameters() if p.requires_grad and all(p is not q for q in critics)]

    def grads(scale):  # the same draws each call (the update's noise is a function of the step)
        with torch.no_grad():  # critics whose output moves with the action
            for p in critics:
                p.normal_(0.0, scale, generator=torch.Generator().manual_seed(p.numel()))
        loss, _ = agent.actor_loss(batch, 1.0)
        assert all(g is None for g in torch.autograd.grad(loss, critics, allow_unused=True, retain_graph=True))
        return torch.autograd.grad(loss, actor, allow_unused=True)

    a, b = grads(0.3), grads(0.6)
    assert any(x is not None and not torch.allclose(x, y) for x, y in zip(a, b))
