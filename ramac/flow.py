"""The flow policy of RAFMAC and FQL (SPEC 2.4; Park et al. 2025): a velocity field v(s, x_t, t)
trained by rectified-flow BC on the data's actions, and a one-step student mu(s, z), z ~ N(0, I),
distilled from the flow's Euler integration. The student is the evaluated policy and makes the
critics' next actions; its actions are one network pass.

    rectified flow:  x_t = (1 - t) z + t a,  t ~ U[0, 1],  loss ||v(s, x_t, t) - (a - z)||^2
    flow(s, z):      flow_steps Euler steps of dx/dt = v from x_0 = z, clipped to the action box
    distillation:    ||mu(s, z) - flow(s, z)||^2 (flow(s, z) fixed)
"""

from __future__ import annotations

import torch
from torch import nn

from . import kernels, noise as draws
from .cuda_graphs import weights_version
from .nets import FlowMLP


class FlowActor(nn.Module):
    """The trained networks: the velocity field and the student (one optimiser for both)."""

    def __init__(self, state_dim: int, action_dim: int, hidden: int, layers: int):
        super().__init__()
        self.state_dim, self.action_dim = state_dim, action_dim
        self.field = FlowMLP(state_dim + action_dim + 1, action_dim, hidden, layers)
        self.student = FlowMLP(state_dim + action_dim, action_dim, hidden, layers)


class FlowPolicy(nn.Module):
    """The flow policy with the interface the critic agents use of a policy (see DiffusionPolicy):
    bc_terms, sample (differentiable), sample_fast (no grad), act, update_ema, forget_packs."""

    def __init__(self, state_dim: int, action_dim: int, cfg):
        super().__init__()
        self.cfg = cfg
        self.actor = FlowActor(state_dim, action_dim, cfg.actor_hidden, cfg.actor_layers)
        self.opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr_actor)
        self._pack_cache = None

    @property
    def actor_ema(self) -> nn.Module:
        return self.actor.student  # no EMA: the student is evaluated as trained (as FQL)

    def _clip(self, a: torch.Tensor) -> torch.Tensor:
        return a.clamp(-self.cfg.max_action, self.cfg.max_action)

    # ---- losses -----------------------------------------------------------------------
    def flow_bc_loss(self, obs, action, weights=None, noise=None) -> torch.Tensor:
        """Rectified-flow BC: per sample the mean over action dims; the batch mean, or the
        weighted sum with weights summing to 1 (the BC filters)."""
        z = draws.randn(noise, "flow_z", action.shape, action.device, action.dtype)
        t = draws.rand(noise, "flow_t", (action.shape[0], 1), action.device, action.dtype)
        x_t = (1 - t) * z + t * action
        per = (self.actor.field(obs, x_t, t) - (action - z)).square().mean(dim=1)
        return per.mean() if weights is None else (weights * per).sum()

    def flow_actions(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """flow(s, z): Euler steps of the velocity field from z, clipped to the action box."""
        x, n = z, self.cfg.flow_steps
        for i in range(n):
            t = torch.full((z.shape[0], 1), i / n, device=z.device, dtype=z.dtype)
            x = x + self.actor.field(obs, x, t) / n
        return self._clip(x)

    def distill_loss(self, obs: torch.Tensor, noise=None) -> torch.Tensor:
        z = self._noise(obs, noise=noise, name="distill_z")
        with torch.no_grad():
            target = self.flow_actions(obs, z)
        return (self.actor.student(obs, z) - target).square().mean()

    def bc_terms(self, obs, action, weights=None, noise=None):
        """The policy's own loss: flow BC + lambda_distill * distillation, and its parts."""
        flow_bc, distill = self.flow_bc_loss(obs, action, weights, noise), self.distill_loss(obs, noise)
        return flow_bc + self.cfg.lambda_distill * distill, {"actor/flow_bc": flow_bc.detach(),
                                                             "actor/distill": distill.detach()}

    # ---- actions ----------------------------------------------------------------------
    def _noise(self, obs, generator=None, noise=None, name="z"):
        """The student's z: from an update's Noise, else from `generator` (evaluation) or torch's stream."""
        shape = (obs.shape[0], self.actor.action_dim)
        if noise is not None:
            return noise.randn(name, shape, dtype=obs.dtype)
        return torch.randn(shape, device=obs.device, dtype=obs.dtype, generator=generator)

    def sample(self, obs: torch.Tensor, noise=None) -> torch.Tensor:
        """The student's actions, differentiable (the risk term's): the nn.Module."""
        return self._clip(self.actor.student(obs, self._noise(obs, noise=noise)))

    @torch.compiler.disable  # already one launch on CUDA: kept out of compiled graphs
    @torch.no_grad()
    def sample_fast(self, obs: torch.Tensor, seed=None, ema: bool = False, noise=None) -> torch.Tensor:
        """The student's actions without gradients (next actions, the BC filter's baseline) through
        `kernels.student_sample` (one launch on CUDA). z from `noise`, else torch's stream (`seed`,
        the diffusion sampler's, is not used)."""
        return kernels.student_sample(self.pack(), obs, self._noise(obs, noise=noise), self.cfg.sampler_precision)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return kernels.student_sample(self.pack(), obs, self._noise(obs, generator), self.cfg.sampler_precision)

    def pack(self) -> kernels.PackedStudent:
        """The student's weights packed for `kernels.student_sample`, cached until they change.

        Parameter version counters detect eager in-place updates; CUDA-graph replays do not
        bump them, so code that replays updates calls `forget_packs()` (and before capture, so
        that the packing is recorded in the graph rather than read from a cache).
        """
        student = self.actor.student
        key = weights_version(student.parameters())
        if key is not None and self._pack_cache is not None and self._pack_cache[0] == key:
            return self._pack_cache[1]
        packed = kernels.pack_student(student, self.cfg.max_action)
        self._pack_cache = None if key is None else (key, packed)
        return packed

    def update_ema(self, step: torch.Tensor) -> None:
        """No EMA copy (FQL has none)."""

    def forget_packs(self) -> None:
        self._pack_cache = None
