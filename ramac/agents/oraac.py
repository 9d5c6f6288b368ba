"""ORAAC (Urpi et al. 2021, "Risk-Averse Offline Reinforcement Learning") on the package's IQN critics.

One update, in order (the published `ORAAC.train`):
  1. VAE: reconstruction + kl_weight * KL on the batch's (s, a) (its own optimiser);
  2. critics: the standard IQN quantile-Huber loss against r + gamma * Z_target(s', a'), a' the
     target actor's perturbation of a VAE action at s';
  3. every actor_every-th step: the actor maximises the risk value (CVaR_alpha: the mean of Z at
     n_risk_quantiles fractions tau ~ U(0, alpha)) of its perturbation of a fresh VAE action (the
     VAE action detached), then the target actor and the target critics move by Polyak averaging.

Evaluation: the actor on the VAE's action at latent z = 0 (deterministic), as the published act().

Choices, stated: the critics are the package's two IQN critics with the min of the two, as for
every agent here, so that the comparison isolates the actor (ORAAC has one IQN critic); the VAE's
early stop of the published code (freeze it once its loss stops moving) is not used.
"""

from __future__ import annotations

import torch

from ..data import Batch
from ..nvtx import nvtx_range
from ..perturbation import ORAACPolicy
from .configs import ORAACConfig
from .policy import set_grads
from .radac import RADAC


class ORAAC(RADAC):
    name = "oraac"
    Config = ORAACConfig
    Policy = ORAACPolicy
    losses = ("vae_loss", "critic_loss", "actor_loss")

    def phase(self) -> bool:
        """Whether this step updates the actor and the targets (every actor_every-th step)."""
        return self.steps % self.cfg.actor_every == 0

    def vae_loss(self, b: Batch):
        loss, info = self.policy.bc_terms(b.obs, b.action, noise=self.noise("vae"))
        return loss, {**info, "vae/loss": loss.detach()}

    def actor_loss(self, b: Batch, eta=None, with_risk: bool = True):
        """-risk value of the actor's perturbed action (the min of the two critics)."""
        noise = self.noise("actor")
        value = self.risk.value(self.critic1, self.critic2, b.obs, self.policy.sample(b.obs, noise.sub("sample")),
                                noise.sub("risk"))
        loss = -value.mean()
        return loss, {"actor/loss": loss.detach(), "actor/risk": value.mean().detach()}

    def update(self, b: Batch) -> dict:
        with nvtx_range("vae"):
            vae_loss, info = self.vae_loss(b)
            groups = ((self.policy.vae_opt, self.policy.vae, "vae/grad_norm"),)
            set_grads(vae_loss, groups, self.grad_sync)
            info.update(self._optimise(groups, self.cfg.grad_norm))
        with nvtx_range("critic/loss"):
            loss1, loss2, critic_info = self.critic_loss(b)
        info.update(critic_info)
        self._step_critics(loss1, loss2, info)
        if self.phase():
            with nvtx_range("actor/loss"):
                actor_loss, actor_info = self.actor_loss(b)
            info.update(actor_info)
            self._step_actor_and_average(actor_loss, info)
        else:
            self.step_t.add_(1)
        return info

    def compile_update(self, bf16: bool = False) -> None:
        self._compile_methods("vae_loss", "critic_loss", "actor_loss", "_optimise", "_average", bf16=bf16)

    def optimizers(self):
        return [self.policy.opt, self.critic1_opt, self.critic2_opt, self.policy.vae_opt]

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The actor on the VAE's action at z = 0 (ORAAC's evaluation; deterministic)."""
        return self.policy.act(self.norm_obs(obs))
