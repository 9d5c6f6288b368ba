"""BC: the diffusion policy trained by behaviour cloning alone (no critic). Its evaluation
policy is the EMA actor's sample, one per state."""

from __future__ import annotations

from ..nvtx import nvtx_range
from .configs import BCConfig
from .policy import PolicyAgent, set_grads


class BC(PolicyAgent):
    name = "bc"
    Config = BCConfig
    losses = ("actor_loss",)

    def actor_loss(self, b):
        bc = self.policy.bc_loss(b.obs, b.action, noise=self.noise("actor"))
        return bc, {"actor/bc": bc.detach(), "actor/loss": bc.detach()}

    def update(self, b) -> dict:
        with nvtx_range("actor/loss"):
            loss, info = self.actor_loss(b)
        with nvtx_range("actor/step"):
            groups = ((self.policy.opt, self.policy.actor, "actor/grad_norm"),)
            set_grads(loss, groups, self.grad_sync)
            info.update(self._optimise(groups, self.cfg.grad_norm))
        with nvtx_range("ema_targets"):
            self.policy.update_ema(self.step_t)
        self.step_t.add_(1)
        return info

    def optimizers(self):
        return [self.policy.opt]

    def compile_update(self, bf16: bool = False):
        self._compile_methods("actor_loss", "_optimise", bf16=bf16)

    def act(self, obs, generator=None):
        return self.policy.act(self.norm_obs(obs), generator)
