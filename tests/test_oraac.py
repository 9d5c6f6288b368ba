"""ORAAC (ramac/agents/oraac.py, ramac/perturbation.py): the perturbation's bound, the evaluation
action, which loss reaches which network, the actor's update period and the VAE's loss."""

import pytest
import torch

from ramac.agents import make_agent
from ramac.config import build_configs
from ramac.data import Batch

TINY = dict(actor_hidden=32, actor_hidden2=32, vae_hidden=32, critic_hidden=16, embedding_dim=8, n_quantiles=4,
            n_risk_quantiles=4)
S, A = 3, 2


def agent(**over):
    cfg, _ = build_configs("hopper-medium-expert", "oraac", agent_overrides={**TINY, **over})
    torch.manual_seed(0)
    return make_agent("oraac", S, A, cfg)


def batch(B=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(B, S, generator=g), torch.rand(B, A, generator=g) * 2 - 1, torch.randn(B, generator=g),
                 torch.randn(B, S, generator=g), torch.zeros(B))


def params(net):
    return torch.cat([p.detach().flatten().clone() for p in net.parameters()])


@pytest.mark.parametrize("perturbation", [0.05, 0.5])
def test_the_actor_moves_an_action_by_at_most_the_perturbation(perturbation):
    a = agent(perturbation=perturbation, max_action=2.0)
    actor = a.policy.actor
    with torch.no_grad():  # large weights saturate the tanh: the bound is reached, not just respected
        for p in actor.parameters():
            p.mul_(50)
    obs, base = torch.randn(512, S), (torch.rand(512, A) * 2 - 1) * 1.5
    moved = actor(obs, base)
    shift = (moved - base).abs()
    assert shift.max() <= perturbation * 2.0 + 1e-5
    assert shift.max() >= 0.9 * perturbation * 2.0
    assert moved.abs().max() <= 2.0


def test_evaluation_is_the_actor_on_the_vae_action_at_latent_zero():
    a = agent()
    obs = torch.randn(16, S)
    zero = torch.zeros(16, a.policy.vae.latent_dim)
    want = a.policy.actor(obs, a.policy.vae.decode(obs, zero))
    torch.manual_seed(1)
    first = a.act(obs, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(2)
    torch.testing.assert_close(first, want)
    assert torch.equal(first, a.act(obs))  # deterministic: neither the generator nor the global RNG matters


def test_the_actor_loss_reaches_the_actor_only_and_the_vae_loss_the_vae_only():
    a, b = agent(), batch()
    actor_loss, _ = a.actor_loss(b)
    vae_loss, _ = a.vae_loss(b)
    vae_params, actor_params = list(a.policy.vae.parameters()), list(a.policy.actor.parameters())
    assert all(g is None for g in torch.autograd.grad(actor_loss, vae_params, allow_unused=True, retain_graph=True))
    assert all(g is not None for g in torch.autograd.grad(actor_loss, actor_params, allow_unused=True))
    assert all(g is None for g in torch.autograd.grad(vae_loss, actor_params, allow_unused=True, retain_graph=True))


def test_the_actor_and_the_targets_move_every_actor_every_steps():
    a = agent(actor_every=2)
    nets = {"actor": a.policy.actor, "actor_target": a.policy.actor_target, "critic1": a.critic1,
            "critic1_target": a.critic1_target, "vae": a.policy.vae}
    moved = []
    for step in range(4):
        before = {k: params(n) for k, n in nets.items()}
        a.update(batch(seed=step))
        a.advanced()
        moved.append({k for k, n in nets.items() if not torch.equal(before[k], params(n))})
    every = {"actor", "actor_target", "critic1", "critic1_target", "vae"}
    assert moved == [every, {"critic1", "vae"}, every, {"critic1", "vae"}]
    assert int(a.step_t) == 4


def test_the_vae_loss_is_reconstruction_plus_the_weighted_gaussian_kl():
    a = agent(kl_weight=0.5)
    obs, action = torch.randn(64, S), torch.rand(64, A) * 2 - 1
    vae = a.policy.vae
    torch.manual_seed(4)
    loss, recon, kl = vae.loss(obs, action, 0.5)
    mean, std = vae.encode(obs, action)
    want_kl = torch.distributions.kl_divergence(torch.distributions.Normal(mean, std),
                                                torch.distributions.Normal(0.0, 1.0)).mean()
    torch.testing.assert_close(kl, want_kl)
    torch.manual_seed(4)
    want_recon = (vae.decode(obs, mean + std * torch.randn_like(std)) - action).square().mean()
    torch.testing.assert_close(recon, want_recon)
    torch.testing.assert_close(loss, want_recon + 0.5 * want_kl)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="perturbation"):
        agent(perturbation=0.0)
    with pytest.raises(ValueError, match="actor_every"):
        agent(actor_every=0)
