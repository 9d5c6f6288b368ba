"""Risk measures of the actor loss (SPEC 2.2) and empirical tail statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import kernels, noise as draws


@dataclass(frozen=True)
class RiskMeasure:
    """Distorted expectation of min(Z1, Z2) over n fractions."""

    kind: str = "cvar"  # neutral | cvar | wang | cpw | power
    param: float = 0.1  # alpha for cvar, eta otherwise
    n: int = 32  # fractions per sample
    quadrature: bool = False  # deterministic midpoint grid instead of Monte Carlo draws

    def __post_init__(self):
        kernels.check_distortion(self.kind, self.param)
        if self.n < 1:
            raise ValueError(f"risk measure needs n >= 1 fractions, got {self.n}")

    def fractions(self, batch: int, device, noise=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(taus, weights): taus (batch, n) Monte Carlo draws (from an update's Noise where given),
        or (n,) grid with weights."""
        if self.quadrature:
            return kernels.quadrature_fractions(self.n, self.kind, self.param, device=device)
        u = draws.rand(noise, "fractions", (batch, self.n), device)
        return kernels.distort(u, self.kind, self.param), None

    def value(self, critic1, critic2, state: torch.Tensor, action: torch.Tensor, noise=None) -> torch.Tensor:
        """Risk value per sample (B,), differentiable w.r.t. the action (and the state) only: the
        critics' parameters are read as constants (see `as_constant`)."""
        taus, weights = self.fractions(state.shape[0], state.device, noise)
        z1 = as_constant(critic1)(state, action, taus)
        z2 = as_constant(critic2)(state, action, taus)
        return kernels.tail_mean(z1, z2, weights)


def as_constant(module: torch.nn.Module):
    """module's forward with its parameters detached. The actor's risk term differentiates the
    critics w.r.t. the action alone, but a critic read with live parameters makes every backward
    through it compute their gradients as well: the fused IQN op's backward cannot tell that
    torch.autograd.grad(loss, actor parameters) throws them away (its needs_input_grad is fixed at
    forward time), and neither can a torch.compile'd backward, which computes the gradient of every
    input that requires one. Reading them detached skips that work and changes no number. Without
    grad mode (acting, targets) the module itself is returned: nothing is differentiated there."""
    if not torch.is_grad_enabled():
        return module
    # every parameter, whatever its requires_grad says: under vmap (seeds stacked) a parameter is a
    # batched wrapper that reports False while the tensor inside it does require a gradient
    params = {name: p.detach() for name, p in module.named_parameters()}
    return lambda *args: torch.func.functional_call(module, params, args)


def bootstrap_ci(x, stat, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of stat(x)."""
    x = np.asarray(x, dtype=np.float64)
    rng = np.random.default_rng(seed)
    samples = x[rng.integers(0, len(x), (n_boot, len(x)))]  # one resample per row
    try:  # numpy reductions take axis: all resamples in one call
        stats = np.asarray(stat(samples, axis=1), dtype=np.float64)
    except TypeError:
        stats = np.array([stat(s) for s in samples])
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def empirical_cvar(x, alpha: float = 0.1) -> float:
    """CVaR_alpha of samples: the mean of the worst ceil(alpha * N) values."""
    x = np.sort(np.asarray(x, dtype=np.float64).ravel())
    if x.size == 0:
        raise ValueError("CVaR of an empty sample")
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    return float(x[: max(1, math.ceil(alpha * x.size))].mean())


def cvar_curve(x, alphas=None) -> tuple[np.ndarray, np.ndarray]:
    """CVaR_alpha of samples for alpha in (0, 1] (the risk profile)."""
    alphas = np.linspace(0.01, 1.0, 100) if alphas is None else np.asarray(alphas)
    return alphas, np.array([empirical_cvar(x, a) for a in alphas])
