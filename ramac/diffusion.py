"""DDPM over actions (SPEC 2.3): schedules, forward noising, BC loss, samplers.

The sampling chain goes through `ramac.kernels`: `posterior_step` (fused step,
differentiable) when gradients must flow through every step, and
`sample_chain` (all T steps in one launch on CUDA) otherwise.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import kernels, noise as draws
from .cuda_graphs import weights_version
from .kernels import StepCoefs

SCHEDULES = ("vp", "linear", "cosine")


def vp_betas(T: int, b_min: float = 0.1, b_max: float = 10.0) -> np.ndarray:
    """Variance-preserving schedule of Diffusion-QL (discretised VP SDE)."""
    t = np.arange(1, T + 1)
    alpha = np.exp(-b_min / T - 0.5 * (b_max - b_min) * (2 * t - 1) / T**2)
    return 1.0 - alpha


def linear_betas(T: int, start: float = 1e-4, end: float = 2e-2) -> np.ndarray:
    """DDPM's linear schedule, rescaled by 1000 / T so that few steps still end near noise."""
    scale = 1000.0 / T
    return np.clip(np.linspace(start * scale, end * scale, T), 0.0, 0.999)


def cosine_betas(T: int, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal's cosine schedule, betas clipped to 0.999."""
    x = np.linspace(0, T, T + 1)
    ac = np.cos(((x / T) + s) / (1 + s) * math.pi * 0.5) ** 2
    ac = ac / ac[0]
    return np.clip(1 - ac[1:] / ac[:-1], 0, 0.999)


def make_betas(name: str, T: int) -> np.ndarray:
    if name not in SCHEDULES:
        raise ValueError(f"unknown beta schedule {name!r}; choose one of {SCHEDULES}")
    if T < 1:
        raise ValueError(f"need at least one diffusion step, got T={T}")
    return {"vp": vp_betas, "linear": linear_betas, "cosine": cosine_betas}[name](T)


class Diffusion(nn.Module):
    """Schedule buffers plus the samplers and BC loss for an eps-prediction model."""

    def __init__(self, n_timesteps: int = 5, schedule: str = "vp", max_action: float = 1.0,
                 sampler_precision: str = "bf16"):
        super().__init__()
        self.T = n_timesteps
        self.sampler_precision = sampler_precision
        self.max_action = float(max_action)
        betas = torch.tensor(make_betas(schedule, n_timesteps), dtype=torch.float64)
        alphas = 1.0 - betas
        ac = torch.cumprod(alphas, 0)
        ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        coefs = torch.stack([
            torch.sqrt(1.0 / ac),  # recip
            torch.sqrt(1.0 / ac - 1.0),  # recipm1
            betas * torch.sqrt(ac_prev) / (1.0 - ac),  # mean1 (x0)
            (1.0 - ac_prev) * torch.sqrt(alphas) / (1.0 - ac),  # mean2 (x_t)
            torch.exp(0.5 * torch.log(post_var.clamp(min=1e-20))),  # sigma
        ], dim=1)
        coefs[0, 4] = 0.0  # no noise on the last step
        self.register_buffer("coefs", coefs.float(), persistent=False)
        self.register_buffer("sqrt_ac", torch.sqrt(ac).float(), persistent=False)
        self.register_buffer("sqrt_1m_ac", torch.sqrt(1.0 - ac).float(), persistent=False)
        # python floats for the fused step (constant per t, so CUDA graphs bake them in)
        self._steps = [StepCoefs(*coefs[t].tolist(), self.max_action) for t in range(n_timesteps)]

    def step_coefs(self, t: int) -> StepCoefs:
        return self._steps[t]

    # ---- training -------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.sqrt_ac[t, None] * x0 + self.sqrt_1m_ac[t, None] * noise

    def bc_loss(self, model: nn.Module, action: torch.Tensor, state: torch.Tensor,
                weights: torch.Tensor | None = None, noise: draws.Noise | None = None) -> torch.Tensor:
        """Eps-prediction MSE at one uniformly drawn step per sample; weights (B,) summing
        to 1 weight the samples (default: the plain mean). Draws from `noise` (an update's
        ramac.noise.Noise) where given, else from torch's stream."""
        t = draws.randint(noise, "t", self.T, (action.shape[0],), action.device)
        eps = draws.randn(noise, "eps", action.shape, action.device, action.dtype)
        pred = model(self.q_sample(action, t, eps), t, state)
        if weights is None:
            return F.mse_loss(pred, eps)
        return (weights * (pred - eps).square().mean(dim=1)).sum()

    # ---- sampling -------------------------------------------------------
    def chain_noise(self, noise: draws.Noise | None, batch: int, action_dim: int) -> torch.Tensor | None:
        """The chain's (T + 1, B, A) noise drawn from an update's Noise (None without one)."""
        if noise is None:
            return None
        return noise.randn("chain", (self.T + 1, batch, action_dim), batch_dim=1)

    def sample(self, model: nn.Module, state: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Full T-step chain, differentiable through every step (reparameterised noise).

        noise: optional (T + 1, B, A) with noise[T] = x_T and noise[t] the noise
        added at step t (the layout of `kernels.sample_chain`). On CUDA, outside torch.compile and
        up to 4,096 states, the whole chain is one op (`kernels.denoise_chain`: fused forward and
        backward kernels; kernels.fused_chain_enabled says when, RAMAC_FUSED_CHAIN=0 turns it off).
        """
        B, A = state.shape[0], model.action_dim
        if noise is None:
            noise = torch.randn(self.T + 1, B, A, device=state.device, dtype=state.dtype)
        if hasattr(model, "mid") and kernels.fused_chain_enabled(state):  # the Diffusion-QL denoiser
            # all T steps, forward and backward, in two launches (kernels.denoise_chain)
            l1, l2, l3 = model.mid[0], model.mid[2], model.mid[4]
            t_emb = model.time_mlp(torch.arange(self.T, device=state.device))
            return kernels.denoise_chain(state, noise, l1.weight, l1.bias, l2.weight, l2.bias, l3.weight, l3.bias,
                                         model.final.weight, model.final.bias, t_emb, self.coefs, self.max_action)
        x = noise[self.T]
        for t in reversed(range(self.T)):
            steps = torch.full((B,), t, device=state.device, dtype=torch.long)
            x = kernels.posterior_step(x, model(x, steps, state), noise[t], self._steps[t])
        return x.clamp(-self.max_action, self.max_action)

    @torch.compiler.disable  # already one launch on CUDA: kept out of compiled graphs
    @torch.no_grad()
    def sample_fast(self, model: nn.Module, state: torch.Tensor, noise: torch.Tensor | None = None,
                    seed=None) -> torch.Tensor:
        """Forward-only chain through `kernels.sample_chain` (one launch on CUDA)."""
        return kernels.sample_chain(self.pack(model), state, noise=noise, seed=seed,
                                    precision=self.sampler_precision)

    def pack(self, model: nn.Module) -> kernels.PackedDenoiser:
        """Weights of `model` laid out for the chain sampler, cached until they change.

        Parameter version counters detect eager in-place updates; CUDA-graph replays
        do not bump them, so code that replays updates calls `forget_packs()`.
        """
        version = weights_version(model.parameters())
        key = None if version is None else (id(model),) + version
        cached = getattr(self, "_pack_cache", None)
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        with torch.no_grad():
            steps = torch.arange(self.T, device=self.coefs.device)
            l1, l2, l3 = model.mid[0], model.mid[2], model.mid[4]
            packed = kernels.pack_denoiser(
                l1.weight, l1.bias, l2.weight, l2.bias, l3.weight, l3.bias,
                model.final.weight, model.final.bias, model.time_mlp(steps), self.coefs,
                state_dim=model.state_dim, max_action=self.max_action, coefs_host=[c[:5] for c in self._steps],
            )
        self._pack_cache = None if key is None else (key, packed)
        return packed

    def forget_packs(self) -> None:
        self._pack_cache = None
