"""BC: the diffusion policy trained by behaviour cloning alone (no critic). Its evaluation
policy is the EMA actor's sample, one per state."""

from __future__ import annotations

from ..nvtx import nvtx_range
from .base import Agent
from .configs import BCConfig
from .policy import DiffusionPolicy, optimise, set_grads


class BC(Agent):
    name = "bc"
    Config = BCConfig

    def __init__(self, state_dim: int, action_dim: int, cfg: BCConfig):
        super().__init__(state_dim, action_dim, cfg)
        self.policy = DiffusionPolicy(state_dim, action_dim, cfg)
        self._optimise = optimise

    def actor_loss(self, b):
        bc = self.policy.bc_loss(b.obs, b.action)
        return bc, {"actor/bc": bc.detach(), "actor/loss": bc.detach()}

    def update(self, b) -> dict:
        with nvtx_range("actor/loss"):
            loss, info = self.actor_loss(b)
        with nvtx_range("actor/step"):
            groups = ((self.policy.opt, self.policy.actor, "actor/grad_norm"),)
            set_grads(loss, groups)
            info.update(self._optimise(groups, self.cfg.grad_norm))
        with nvtx_range("ema_targets"):
            self.policy.update_ema(self.step_t)
        self.step_t.add_(1)
        return info

    def optimizers(self):
        return [self.policy.opt]

    def before_capture(self):
        self.policy.forget_packs()

    def sync(self):
        self.policy.forget_packs()

    def compile_update(self):
        if self.__dict__.get("_compiled"):
            return
        self._compiled = True
        import torch

        for group in self.policy.opt.param_groups:  # Inductor fuses the multi-tensor ops, not the fused kernel
            group["fused"], group["foreach"] = False, True
        options = {"fallback_random": True}
        self.actor_loss = torch.compile(self.actor_loss, dynamic=False, options=options)
        self._optimise = torch.compile(optimise, dynamic=False, options=options)

    def act(self, obs, generator=None):
        return self.policy.act(self.norm_obs(obs), generator)
