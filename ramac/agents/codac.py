"""CODAC (Ma et al. 2021) and CQL (Kumar et al. 2020) on the package's IQN critics.

One update, in order (CODAC's published `update_parameters`, version 2):
  1. critics: the standard IQN quantile-Huber loss against the soft TD target
     r + gamma * (min of the target critics at a' ~ target policy(s') - alpha * log pi(a'|s')),
     plus the conservative penalty, per critic, at one random fraction tau per state:
         cql_weight * ( log sum_a exp(Z_tau(s, a) - log density(a)) - Z_tau(s, a_data) ),
     the log-sum-exp over cql_actions uniform actions, cql_actions pi(.|s) and cql_actions
     pi(.|s') actions (importance-corrected by their densities), all scored at s; with
     `lagrange`, times alpha' = exp(log alpha') tuned so that the penalty stays at the
     threshold (alpha' grows while the penalty is above it);
  2. actor: alpha * log pi(a|s) - risk(min(Z1, Z2)(s, a)), a ~ pi(.|s) reparameterised; the risk
     measure is the distortion of the config (CODAC: CVaR_0.1; CQL: the mean);
  3. Polyak averaging of the target critics and of the target policy.

Evaluation: the squashed mean action. The published code scores the data term of the penalty
with the mean over all fractions and the log-sum-exp at one fraction; here both use the same
fraction, as the paper's penalty (an expectation over tau of the per-level CQL gap) reads.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..data import Batch
from ..gaussian import GaussianPolicy
from ..nvtx import nvtx_range
from .configs import CODACConfig, CQLConfig
from .policy import optimise, set_grads
from .radac import RADAC


class _LogAlpha(nn.Module):
    """log alpha', the conservative penalty's weight under the Lagrange form."""

    def __init__(self):
        super().__init__()
        self.value = nn.Parameter(torch.zeros(()))


class CODAC(RADAC):
    name = "codac"
    Config = CODACConfig
    Policy = GaussianPolicy
    losses = ("critic_losses", "actor_loss", "lagrange_loss")

    def __init__(self, state_dim: int, action_dim: int, cfg: CODACConfig):
        super().__init__(state_dim, action_dim, cfg)
        self.log_alpha_prime = _LogAlpha()
        self.lagrange_opt = torch.optim.Adam(self.log_alpha_prime.parameters(), lr=cfg.lr_lagrange)

    def phase(self) -> int:
        return 0  # one control flow for every step

    def _alpha(self) -> torch.Tensor:
        """The entropy temperature in the critics' units (their unit is reward_scale)."""
        return self.cfg.entropy_alpha / self.reward_scale

    # ---- losses -------------------------------------------------------------------
    def next_quantiles(self, next_obs: torch.Tensor, taus: torch.Tensor, noise) -> torch.Tensor:
        """Soft next-state quantiles: min of the target critics at a' ~ the target policy, minus
        alpha * log pi(a'|s')."""
        action, log_prob = self.policy.rsample(next_obs, self.policy.actor_target, noise)
        z = torch.minimum(self.critic1_target(next_obs, action, taus), self.critic2_target(next_obs, action, taus))
        return z - self._alpha() * log_prob[:, None]

    def conservative_penalty(self, b: Batch):
        """Each critic's CQL gap at one random fraction per state (before cql_weight and alpha')."""
        cfg, (B, A), n = self.cfg, b.action.shape, self.cfg.cql_actions
        noise = self.noise("penalty")  # rows of sample i at [i * n, (i + 1) * n): sample-major, shardable
        tau = noise.rand("tau", (B, 1))
        obs, tau_n = b.obs.repeat_interleave(n, dim=0), tau.repeat_interleave(n, dim=0)
        with torch.no_grad():
            uniform = (noise.rand("uniform", (B * n, A)) * 2 - 1) * cfg.max_action
            here, log_here = self.policy.rsample(obs, noise=noise.sub("here"))
            there, log_there = self.policy.rsample(b.next_obs.repeat_interleave(n, dim=0), noise=noise.sub("there"))
        log_uniform = -A * math.log(2 * cfg.max_action)  # density of the uniform actions
        gaps = []
        for critic in (self.critic1, self.critic2):
            def z(actions):
                return critic(obs, actions, tau_n).view(B, n)

            scores = torch.cat([z(uniform) - log_uniform, z(there) - log_there.view(B, n),
                                z(here) - log_here.view(B, n)], dim=1)
            gaps.append(torch.logsumexp(scores, dim=1).mean() - critic(b.obs, b.action, tau).mean())
        return gaps

    def _alpha_prime(self) -> torch.Tensor:
        return self.log_alpha_prime.value.exp().clamp(0.0, 1e6)

    def critic_losses(self, b: Batch):
        """(loss1, loss2, the mean penalty (detached; the Lagrange loss's input), metrics)."""
        cfg = self.cfg
        loss1, loss2, info = self.critic_loss(b)
        gap1, gap2 = self.conservative_penalty(b)
        pen1, pen2 = cfg.cql_weight * gap1, cfg.cql_weight * gap2
        info["critic/cql_gap1"], info["critic/cql_gap2"] = gap1.detach(), gap2.detach()
        if cfg.lagrange:
            weight = self._alpha_prime().detach()
            loss1 = loss1 + weight * (pen1 - cfg.lagrange_threshold)
            loss2 = loss2 + weight * (pen2 - cfg.lagrange_threshold)
            info["critic/alpha_prime"] = weight
        else:
            loss1, loss2 = loss1 + pen1, loss2 + pen2
        return loss1, loss2, 0.5 * (pen1 + pen2).detach(), info

    def lagrange_loss(self, penalty: torch.Tensor) -> torch.Tensor:
        """-alpha' * (penalty - threshold): alpha' grows while the penalty is above the threshold.
        Its own small graph, outside the compiled critic losses (whose saved tensors the critics'
        backward frees)."""
        return -self._alpha_prime() * (penalty - self.cfg.lagrange_threshold)

    def actor_loss(self, b: Batch, eta=None, with_risk: bool = True):
        """alpha * log pi - risk value of the reparameterised action (the min of the two critics)."""
        noise = self.noise("actor")
        action, log_prob = self.policy.rsample(b.obs, noise=noise.sub("sample"))
        value = self.risk.value(self.critic1, self.critic2, b.obs, action, noise.sub("risk"))
        loss = (self._alpha() * log_prob - value).mean()
        return loss, {"actor/loss": loss.detach(), "actor/risk": value.mean().detach(),
                      "actor/log_prob": log_prob.mean().detach()}

    # ---- update ---------------------------------------------------------------------
    def update(self, b: Batch) -> dict:
        with nvtx_range("critic/loss"):
            loss1, loss2, penalty, info = self.critic_losses(b)
        self._step_critics(loss1, loss2, info)
        if self.cfg.lagrange:
            groups = ((self.lagrange_opt, self.log_alpha_prime, "critic/alpha_prime_grad"),)
            set_grads(self.lagrange_loss(penalty), groups, self.grad_sync)
            optimise(groups, 0.0)
        with nvtx_range("actor/loss"):
            actor_loss, actor_info = self.actor_loss(b)
        info.update(actor_info)
        self._step_actor_and_average(actor_loss, info)
        return info

    def compile_update(self, bf16: bool = False) -> None:
        self._compile_methods("critic_losses", "actor_loss", "_optimise", "_average", bf16=bf16)

    def optimizers(self):
        return [self.policy.opt, self.critic1_opt, self.critic2_opt, self.lagrange_opt]

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The squashed mean action (CODAC's evaluation; deterministic)."""
        return self.policy.act(self.norm_obs(obs))


class CQL(CODAC):
    name = "cql"
    Config = CQLConfig
