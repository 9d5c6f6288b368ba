"""ORAAC's policy (Urpi et al. 2021): a generative behaviour model, a conditional VAE of the data's
actions (BCQ's, Fujimoto et al. 2019), and a perturbation actor that moves the VAE's action by at
most `perturbation * max_action` per dimension towards a higher CVaR.

    VAE:          encoder (s, a) -> mean, std of a latent z (dim 2 * action_dim); decoder (s, z) ->
                  tanh(.) * max_action; loss ||decode(s, z) - a||^2 + kl_weight * KL(q(z|s, a) || N(0, I))
    behaviour:    decode(s, z), z ~ N(0, I) clipped to [-0.5, 0.5] (training); z = 0 (evaluation)
    actor:        xi(s, a) = perturbation * max_action * tanh(MLP(s, a)); pi(s) = clip(a + xi(s, a)),
                  a = the VAE's action (detached: the actor's loss does not train the VAE)
    target actor: a Polyak copy of the actor; makes the critics' next actions
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from . import noise as draws

LOG_STD_MIN, LOG_STD_MAX = -4.0, 15.0  # the published clamp of the encoder's log-std
LATENT_CLIP = 0.5  # sampled latents are clipped to [-0.5, 0.5] (BCQ's)


class BehaviourVAE(nn.Module):
    def __init__(self, state_dim: int, action_dim: int, latent_dim: int, hidden: int, max_action: float):
        super().__init__()
        self.latent_dim, self.max_action = latent_dim, max_action
        self.encoder = nn.Sequential(nn.Linear(state_dim + action_dim, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden), nn.ReLU())
        self.mean = nn.Linear(hidden, latent_dim)
        self.log_std = nn.Linear(hidden, latent_dim)
        self.decoder = nn.Sequential(nn.Linear(state_dim + latent_dim, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, action_dim))

    def encode(self, obs, action):
        h = self.encoder(torch.cat([obs, action], dim=1))
        return self.mean(h), self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX).exp()

    def decode(self, obs, z=None, noise=None):
        """Actions for latents z; z=None draws them (clipped; from an update's Noise where given),
        z=0 is the evaluation's latent."""
        if z is None:
            shape = (obs.shape[0], self.latent_dim)
            z = draws.randn(noise, "latent", shape, obs.device, obs.dtype).clamp(-LATENT_CLIP, LATENT_CLIP)
        return torch.tanh(self.decoder(torch.cat([obs, z], dim=1))) * self.max_action

    def loss(self, obs, action, kl_weight: float, noise=None):
        """(reconstruction MSE + kl_weight * mean KL, reconstruction, KL)."""
        mean, std = self.encode(obs, action)
        recon = self.decode(obs, mean + std * draws.randn(noise, "eps", std.shape, std.device, std.dtype))
        recon_loss = F.mse_loss(recon, action)
        kl = (0.5 * (mean.square() + std.square() - 1) - std.log()).mean()  # KL(N(mean, std) || N(0, 1)) per dim
        return recon_loss + kl_weight * kl, recon_loss, kl


class PerturbationActor(nn.Module):
    def __init__(self, state_dim: int, action_dim: int, hidden: tuple[int, int], perturbation: float,
                 max_action: float):
        super().__init__()
        self.perturbation, self.max_action = perturbation, max_action
        self.net = nn.Sequential(nn.Linear(state_dim + action_dim, hidden[0]), nn.ReLU(),
                                 nn.Linear(hidden[0], hidden[1]), nn.ReLU(), nn.Linear(hidden[1], action_dim))

    def forward(self, obs, action):
        xi = self.perturbation * self.max_action * torch.tanh(self.net(torch.cat([obs, action], dim=1)))
        return (action + xi).clamp(-self.max_action, self.max_action)


class ORAACPolicy(nn.Module):
    """vae (behaviour model, its own optimiser), actor (perturbation, trained for the risk value) and
    actor_target, with the interface the critic agents use of a policy."""

    def __init__(self, state_dim: int, action_dim: int, cfg):
        super().__init__()
        self.cfg = cfg
        latent = cfg.latent_dim or 2 * action_dim
        self.vae = BehaviourVAE(state_dim, action_dim, latent, cfg.vae_hidden, cfg.max_action)
        self.actor = PerturbationActor(state_dim, action_dim, (cfg.actor_hidden, cfg.actor_hidden2),
                                       cfg.perturbation, cfg.max_action)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr_actor)
        self.vae_opt = torch.optim.Adam(self.vae.parameters(), lr=cfg.lr_vae)

    @property
    def actor_ema(self) -> nn.Module:
        return self.actor_target

    def bc_terms(self, obs, action, weights=None, noise=None):
        """The behaviour model's loss and its parts (ORAAC has no BC filter: weights unused)."""
        loss, recon, kl = self.vae.loss(obs, action, self.cfg.kl_weight, noise)
        return loss, {"vae/recon": recon.detach(), "vae/kl": kl.detach()}

    def _perturbed(self, obs, net, noise=None):
        with torch.no_grad():
            base = self.vae.decode(obs, noise=noise)
        return net(obs, base)

    def sample(self, obs: torch.Tensor, noise=None) -> torch.Tensor:
        """The actor's actions on fresh VAE actions, differentiable in the actor only."""
        return self._perturbed(obs, self.actor, noise)

    @torch.no_grad()
    def sample_fast(self, obs: torch.Tensor, seed=None, ema: bool = False, noise=None) -> torch.Tensor:
        """Without gradients; the target actor's with ema (the critics' next actions)."""
        return self._perturbed(obs, self.actor_target if ema else self.actor, noise)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """ORAAC's evaluation action: the actor on the VAE's action at z = 0 (deterministic)."""
        zero = torch.zeros(obs.shape[0], self.vae.latent_dim, device=obs.device, dtype=obs.dtype)
        return self.actor(obs, self.vae.decode(obs, zero))

    @torch.no_grad()
    def update_ema(self, step: torch.Tensor) -> None:
        """The target actor follows the actor at the critics' Polyak rate."""
        torch._foreach_lerp_(list(self.actor_target.parameters()), list(self.actor.parameters()), self.cfg.polyak)

    def forget_packs(self) -> None:
        """No cached weight packs."""
