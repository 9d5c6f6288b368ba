"""The diffusion policy every diffusion agent trains: the denoiser, its EMA copy, the DDPM
chain (differentiable, and the one-launch sampler), the BC loss and the optimiser steps; and
PolicyAgent, the base of the agents that train a generative policy."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..diffusion import Diffusion
from ..nets import Denoiser
from ..utils import env_switch
from .base import Agent
from .configs import DiffusionActorConfig


def set_grads(loss, groups, sync=None) -> None:
    """Gradients of loss for the networks in groups ((optimiser, network, metric key), ...) only
    (one backward: a loss that is a sum reaches each network through its own term); sync: the
    agent's grad_sync (data parallelism: the gradients averaged over the processes), or None.

    The gradients are stored contiguous: a compiled backward may hand one out with padded strides
    (Inductor pads a (256, 39) weight's gradient to a row stride of 40), and a compiled optimiser
    step traced on contiguous gradients does not guard their strides: it fails its own stride
    assertion (on the GPU when the actor's risk term starts after a BC-only warm-up).

    A loss per seed (seeds stacked, ramac.train.stacked) is summed: seed k's parameters reach
    only seed k's loss, so each gets its own loss's gradient."""
    params = [p for _, net, _ in groups for p in net.parameters()]
    grads = torch.autograd.grad(loss.sum() if loss.dim() else loss, params)
    if sync is not None:
        grads = sync(list(grads))
    for p, g in zip(params, grads):
        p.grad = g.contiguous()


def clip_grad_norm(params, max_norm: float) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_'s arithmetic (the 2-norm of the gradients' 2-norms; each
    gradient times min(1, max_norm / (norm + 1e-6))) in ops that Inductor compiles into its own
    kernels: torch's calls torch._foreach_norm, an ATen fallback in compiled code (on an H200 the
    compiled update at batch 256 spends 46 us of 1,160 in 6 multi_tensor_apply launches,
    bench/results/defaults-H200/). Returns the pre-clip norm."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total


def compiled_clip() -> bool:
    """Whether compiled code clips with clip_grad_norm rather than torch's clip_grad_norm_ (eager code
    keeps torch's one fused launch): by default, RAMAC_CLIP_COMPILED=0 opts out. On an H200, one RADAC
    seed at batch 256: graph-compile-bf16 896 -> 936 updates/s, graph-compile (fp32) 553 -> 567
    (bench/results/clip-pad-H200/)."""
    return env_switch("RAMAC_CLIP_COMPILED", True) and torch.compiler.is_compiling()


def optimise(groups, grad_norm: float) -> dict:
    """Per network: clip its gradient norm (grad_norm > 0), take its optimiser step; the
    pre-clip norms by metric key."""
    norms = {}
    clip = clip_grad_norm if compiled_clip() else torch.nn.utils.clip_grad_norm_
    for opt, net, key in groups:
        if grad_norm > 0:
            norms[key] = clip(list(net.parameters()), grad_norm)
        opt.step()
    return norms


class DiffusionPolicy(nn.Module):
    """actor (trained), actor_ema (evaluated, and makes the critics' next actions)."""

    def __init__(self, state_dim: int, action_dim: int, cfg: DiffusionActorConfig):
        super().__init__()
        self.cfg = cfg
        self.diffusion = Diffusion(cfg.n_timesteps, cfg.beta_schedule, cfg.max_action, cfg.sampler_precision)
        self.actor = Denoiser(state_dim, action_dim, cfg.actor_hidden)
        self.actor_ema = copy.deepcopy(self.actor).requires_grad_(False)
        self.opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr_actor)

    def bc_loss(self, obs, action, weights=None, noise=None):
        return self.diffusion.bc_loss(self.actor, action, obs, weights, noise)

    def bc_terms(self, obs, action, weights=None, noise=None):
        """The policy's own loss (here the BC loss) and its parts for the metrics (none).
        noise: the update's ramac.noise.Noise (every policy method takes one; None: torch's stream)."""
        return self.bc_loss(obs, action, weights, noise), {}

    def _chain_noise(self, obs, noise):
        return self.diffusion.chain_noise(noise, obs.shape[0], self.actor.action_dim)

    def sample(self, obs, noise=None):
        """Actions of the trained actor through the whole chain, differentiable."""
        return self.diffusion.sample(self.actor, obs, self._chain_noise(obs, noise))

    def sample_fast(self, obs, seed=None, ema: bool = False, noise=None):
        """Forward-only chain (one launch on CUDA): its noise from `noise`, or in the kernel from
        `seed` (a Philox seed tensor the caller advances)."""
        return self.diffusion.sample_fast(self.actor_ema if ema else self.actor, obs,
                                          noise=self._chain_noise(obs, noise), seed=seed)

    @torch.no_grad()
    def act(self, obs, generator: torch.Generator | None = None):
        """The EMA actor's actions, one chain per state; noise from `generator` when given."""
        noise = None
        if generator is not None:
            noise = torch.randn(self.diffusion.T + 1, obs.shape[0], self.actor.action_dim, device=obs.device,
                                dtype=obs.dtype, generator=generator)
        return self.diffusion.sample_fast(self.actor_ema, obs, noise=noise)

    @torch.no_grad()
    def update_ema(self, step: torch.Tensor) -> None:
        """Every ema_every steps: copy the actor before ema_start, average after (graph-safe:
        the schedule is a weight in [0, 1] computed from the device step)."""
        cfg = self.cfg
        ema, live = list(self.actor_ema.parameters()), list(self.actor.parameters())
        weight = torch.where(step < cfg.ema_start, 1.0, 1.0 - cfg.ema_decay) * (step % cfg.ema_every == 0)
        diff = torch._foreach_sub(live, ema)
        torch._foreach_mul_(diff, weight)
        torch._foreach_add_(ema, diff)

    def forget_packs(self) -> None:
        self.diffusion.forget_packs()


class PolicyAgent(Agent):
    """An agent that trains a generative policy (self.policy, of the class Policy: the diffusion
    policy here, ramac.flow.FlowPolicy for the flow agents): the parts of the contract that
    depend only on it."""

    Policy: type = DiffusionPolicy

    def __init__(self, state_dim: int, action_dim: int, cfg: DiffusionActorConfig):
        super().__init__(state_dim, action_dim, cfg)
        self.policy = self.Policy(state_dim, action_dim, cfg)
        self._optimise = optimise  # replaced by its compiled form in compile_update

    def before_capture(self) -> None:
        self.policy.forget_packs()  # the weight packing must be recorded, not read from a cache

    def sync(self) -> None:
        self.policy.forget_packs()  # graph replays do not bump the parameters' version counters
