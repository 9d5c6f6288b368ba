"""One DDPM posterior step, fused: eps -> x0 -> clip -> posterior mean -> + sigma * noise.

    x0     = clip(c_recip * x_t - c_recipm1 * eps, -max_action, max_action)
    mean   = c_mean1 * x0 + c_mean2 * x_t
    x_prev = mean + sigma * noise          (sigma = 0 at the last step)

The constants of step t come from the noise schedule (see ramac.diffusion).
Backward gives dL/dx_t and dL/deps so the actor loss can differentiate
through every step of the chain; the noise is reparameterised (no gradient).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ._dispatch import HAS_TRITON, seeds_first, use_triton


class StepCoefs(NamedTuple):
    """Schedule constants of one posterior step (python floats)."""

    recip: float  # sqrt(1 / alphabar_t)
    recipm1: float  # sqrt(1 / alphabar_t - 1)
    mean1: float  # posterior mean coefficient of x0
    mean2: float  # posterior mean coefficient of x_t
    sigma: float  # posterior standard deviation (0 at t = 0)
    max_action: float  # x0 is clipped to [-max_action, max_action]


def posterior_step_ref(x_t: torch.Tensor, eps: torch.Tensor, noise: torch.Tensor | None, c: StepCoefs):
    """Plain-PyTorch posterior step; differentiable w.r.t. x_t and eps."""
    x0 = (c.recip * x_t - c.recipm1 * eps).clamp(-c.max_action, c.max_action)
    mean = c.mean1 * x0 + c.mean2 * x_t
    if noise is None or c.sigma == 0.0:
        return mean
    return mean + c.sigma * noise


if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _posterior_fwd_kernel(
        x_ptr,  # (N,) x_t, flattened (B, A)
        eps_ptr,  # (N,) predicted noise
        noise_ptr,  # (N,) fresh N(0, 1) noise (read only if HAS_NOISE)
        out_ptr,  # (N,) x_{t-1}
        N, recip, recipm1, mean1, mean2, sigma, max_action,
        HAS_NOISE: tl.constexpr, BLOCK: tl.constexpr,
    ):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = offs < N
        x = tl.load(x_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        e = tl.load(eps_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        x0 = tl.minimum(tl.maximum(recip * x - recipm1 * e, -max_action), max_action)
        out = mean1 * x0 + mean2 * x
        if HAS_NOISE:
            out += sigma * tl.load(noise_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        tl.store(out_ptr + offs, out, mask=ok)

    @triton.jit
    def _posterior_bwd_kernel(
        x_ptr, eps_ptr,  # (N,) saved inputs
        g_ptr,  # (N,) dL/dx_{t-1}
        dx_ptr, deps_ptr,  # (N,) out: dL/dx_t, dL/deps
        N, recip, recipm1, mean1, mean2, max_action,
        BLOCK: tl.constexpr,
    ):
        # dx0/dx0_raw = 1 inside [-m, m] (inclusive, as torch.clamp), 0 outside;
        # dL/dx_t = mean2 * g + recip * mean1 * g * inside;  dL/deps = -recipm1 * mean1 * g * inside.
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = offs < N
        x = tl.load(x_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        e = tl.load(eps_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        raw = recip * x - recipm1 * e
        g0 = tl.where((raw >= -max_action) & (raw <= max_action), mean1 * g, 0.0)
        tl.store(dx_ptr + offs, mean2 * g + recip * g0, mask=ok)
        tl.store(deps_ptr + offs, -recipm1 * g0, mask=ok)

    _BLOCK = 1024


class PosteriorStepFn(torch.autograd.Function):
    """The fused step; elementwise, so under torch.func.vmap (seeds stacked) it runs once on the
    stacked tensors (the vmap rule moves the seed dimension first and launches over all of them)."""

    @staticmethod
    def forward(x_t, eps, noise, c):
        x_t, eps = x_t.contiguous(), eps.contiguous()
        has_noise = noise is not None and c.sigma != 0.0
        out = torch.empty_like(x_t)
        n = x_t.numel()
        _posterior_fwd_kernel[(triton.cdiv(n, _BLOCK),)](
            x_t, eps, noise.contiguous() if has_noise else x_t, out,
            n, c.recip, c.recipm1, c.mean1, c.mean2, c.sigma, c.max_action,
            HAS_NOISE=has_noise, BLOCK=_BLOCK,
        )
        return out

    @staticmethod
    def setup_context(ctx, inputs, output):
        x_t, eps, _, c = inputs
        ctx.save_for_backward(x_t, eps)
        ctx.c = c

    @staticmethod
    def vmap(info, in_dims, x_t, eps, noise, c):
        x_t, eps, noise = seeds_first(info.batch_size, (x_t, eps, noise), in_dims[:3])
        return PosteriorStepFn.apply(x_t, eps, noise, c), 0

    @staticmethod
    def backward(ctx, g):
        x_t, eps = ctx.saved_tensors
        x_t, eps = x_t.contiguous(), eps.contiguous()
        c = ctx.c
        dx, deps = torch.empty_like(x_t), torch.empty_like(eps)
        n = x_t.numel()
        _posterior_bwd_kernel[(triton.cdiv(n, _BLOCK),)](
            x_t, eps, g.contiguous(), dx, deps,
            n, c.recip, c.recipm1, c.mean1, c.mean2, c.max_action, BLOCK=_BLOCK,
        )
        return dx, deps, None, None


def _check(x_t, eps, noise):
    if x_t.shape != eps.shape:
        raise ValueError(f"x_t {tuple(x_t.shape)} and eps {tuple(eps.shape)} must have the same shape")
    if noise is not None and noise.shape != x_t.shape:
        raise ValueError(f"noise {tuple(noise.shape)} must have the shape of x_t {tuple(x_t.shape)}")


def posterior_step_triton(x_t, eps, noise, c: StepCoefs):
    """The fused Triton step, whatever the device (tests run it interpreted)."""
    _check(x_t, eps, noise)
    return PosteriorStepFn.apply(x_t, eps, noise, c)


def posterior_step(x_t, eps, noise, c: StepCoefs):
    """x_{t-1} from x_t and the predicted noise; Triton on CUDA, reference otherwise."""
    tensors = (x_t, eps) if noise is None else (x_t, eps, noise)
    if use_triton(*tensors, vmap_rule=True):  # elementwise: a vmap rule launches once for all seeds
        return posterior_step_triton(x_t, eps, noise, c)
    _check(x_t, eps, noise)
    return posterior_step_ref(x_t, eps, noise, c)
