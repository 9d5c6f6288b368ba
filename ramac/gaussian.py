"""The tanh-Gaussian policy of CODAC and CQL (SAC's, Haarnoja et al. 2018): mean and log-std heads
on two hidden ReLU layers, actions tanh(u) * max_action with u ~ N(mean, std), the log-density
corrected for the squashing; a Polyak-averaged target copy makes the critics' next actions; the
evaluated action is the squashed mean (CODAC's select_action(eval=True))."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from . import noise as draws

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # SAC's clamp of the log-std head


class GaussianActor(nn.Module):
    def __init__(self, state_dim: int, action_dim: int, hidden: int = 256):
        super().__init__()
        self.action_dim = action_dim
        self.trunk = nn.Sequential(nn.Linear(state_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.mean = nn.Linear(hidden, action_dim)
        self.log_std = nn.Linear(hidden, action_dim)

    def forward(self, obs):
        h = self.trunk(obs)
        return self.mean(h), self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)


class GaussianPolicy(nn.Module):
    """actor (trained) and actor_target (Polyak copy: next actions), with the interface the critic
    agents use of a policy (sample, sample_fast, act, update_ema, forget_packs)."""

    def __init__(self, state_dim: int, action_dim: int, cfg):
        super().__init__()
        self.cfg = cfg
        self.actor = GaussianActor(state_dim, action_dim, cfg.actor_hidden)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr_actor)

    @property
    def actor_ema(self) -> nn.Module:
        return self.actor_target

    def rsample(self, obs: torch.Tensor, net: nn.Module | None = None, noise=None):
        """Reparameterised actions and their log-densities (B,); eps from an update's Noise
        (ramac.noise) or torch's stream."""
        mean, log_std = (self.actor if net is None else net)(obs)
        eps = draws.randn(noise, "eps", mean.shape, mean.device, mean.dtype)
        u = mean + log_std.exp() * eps
        y = torch.tanh(u)
        log_prob = (-0.5 * eps.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(dim=1)
        log_prob = log_prob - torch.log(self.cfg.max_action * (1 - y.square()) + 1e-6).sum(dim=1)
        return y * self.cfg.max_action, log_prob

    def sample(self, obs: torch.Tensor, noise=None) -> torch.Tensor:
        return self.rsample(obs, noise=noise)[0]

    @torch.no_grad()
    def sample_fast(self, obs: torch.Tensor, seed=None, ema: bool = False, noise=None) -> torch.Tensor:
        return self.rsample(obs, self.actor_target if ema else self.actor, noise)[0]

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The squashed mean: deterministic (the generator is not used)."""
        return torch.tanh(self.actor(obs)[0]) * self.cfg.max_action

    @torch.no_grad()
    def update_ema(self, step: torch.Tensor) -> None:
        """The target copy follows the actor at the critics' Polyak rate, every step."""
        torch._foreach_lerp_(list(self.actor_target.parameters()), list(self.actor.parameters()), self.cfg.polyak)

    def forget_packs(self) -> None:
        """No cached weight packs."""
