"""Risk measures as distortions of quantile fractions, and tail averaging.

A distortion beta maps fractions tau ~ U(0, 1) to fractions at which the
critics are evaluated; averaging Z(beta(tau)) over tau gives the distorted
expectation (Dabney et al. 2018):

    neutral  beta(tau) = tau                                  (the mean)
    cvar     beta(tau) = alpha * tau                          (CVaR_alpha, lower tail)
    wang     beta(tau) = Phi(Phi^-1(tau) + eta)               (eta < 0: risk-averse)
    cpw      beta(tau) = tau^eta / (tau^eta + (1 - tau)^eta)^(1/eta)
    power    beta(tau) = 1 - (1 - tau)^(1 / (1 + |eta|))      (eta < 0: risk-averse)
                       = tau^(1 / (1 + eta))                   (eta >= 0: risk-seeking)

Tail averaging takes critic outputs of two critics at K distorted fractions,
the elementwise min and a weighted mean over K (weights 1/K for Monte Carlo
fractions, or quadrature weights for a deterministic grid). Where the two
critics tie exactly, the gradient is split equally between them, as
`torch.minimum` does, so the kernel and the reference op agree everywhere.
"""

from __future__ import annotations

import math

import torch

from ._dispatch import HAS_TRITON, fold_seeds, seeds_first, use_triton

DISTORTIONS = ("neutral", "cvar", "wang", "cpw", "power")
DEFAULT_PARAMS = {"neutral": 0.0, "cvar": 0.1, "wang": -0.7, "cpw": 0.71, "power": -2.0}
_KIND_CODE = {name: i for i, name in enumerate(DISTORTIONS)}


def check_distortion(kind: str, param: float) -> None:
    """Raise a clear ValueError for an unknown distortion or a parameter out of range."""
    if kind not in DISTORTIONS:
        raise ValueError(f"unknown distortion {kind!r}; choose one of {DISTORTIONS}")
    if not math.isfinite(param):
        raise ValueError(f"{kind} parameter must be finite, got {param}")
    if kind == "cvar" and not 0.0 < param <= 1.0:
        raise ValueError(f"cvar alpha must be in (0, 1], got {param}")
    if kind == "cpw" and not param >= 0.28:
        raise ValueError(f"cpw eta must be >= 0.28 (below that the weighting is not monotone), got {param}")


# --------------------------------------------------------------------------
# reference ops
# --------------------------------------------------------------------------
def distort_ref(tau: torch.Tensor, kind: str, param: float) -> torch.Tensor:
    """Distorted fractions beta(tau), same shape and dtype as tau."""
    check_distortion(kind, param)
    if kind == "neutral":
        return tau.clone()
    if kind == "cvar":
        return tau * param
    t = tau.double()
    if kind == "wang":
        out = torch.special.ndtr(torch.special.ndtri(t) + param)
    elif kind == "cpw":
        num = t.pow(param)
        out = num / (num + (1.0 - t).pow(param)).pow(1.0 / param)
    elif param >= 0:  # power, risk-seeking branch
        out = t.pow(1.0 / (1.0 + param))
    else:
        out = 1.0 - (1.0 - t).pow(1.0 / (1.0 + abs(param)))
    return out.to(tau.dtype)


def tail_mean_ref(z1: torch.Tensor, z2: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """sum_k w_k * min(z1, z2)[:, k] for (B, K) inputs; w_k = 1/K by default. Returns (B,)."""
    _check_tail(z1, z2, weights)
    m = torch.minimum(z1, z2)
    if weights is None:
        return m.mean(dim=1)
    return (m * weights.to(m.dtype)).sum(dim=1)


def quadrature_fractions(n: int, kind: str = "cvar", param: float = 0.1, device=None, dtype=torch.float32):
    """Deterministic fractions for a distortion: beta at the midpoints of n equal bins.

    With equal weights 1/n this is the midpoint rule for E_tau[Z(beta(tau))]; for
    CVaR_alpha the fractions are alpha * (k + 1/2) / n, the bins of [0, alpha].
    Returns (fractions (n,), weights (n,)).
    """
    if n < 1:
        raise ValueError(f"need at least one quadrature point, got {n}")
    mid = (torch.arange(n, device=device, dtype=torch.float64) + 0.5) / n
    fractions = distort_ref(mid, kind, param).to(dtype)
    weights = torch.full((n,), 1.0 / n, device=device, dtype=dtype)
    return fractions, weights


def _check_tail(z1, z2, weights):
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must both be (B, K), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if weights is not None and tuple(weights.shape) != (z1.shape[1],):
        raise ValueError(f"weights must be ({z1.shape[1]},), got {tuple(weights.shape)}")


# --------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------
if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _ndtri(p):
        # Acklam's rational approximation of the standard normal quantile (relative error
        # < 1.2e-9 in exact arithmetic); p <= 0 -> -inf, p >= 1 -> +inf.
        p_low = 0.02425
        q = p - 0.5
        r = q * q
        num = ((((-3.969683028665376e01 * r + 2.209460984245205e02) * r - 2.759285104469687e02) * r
                + 1.383577518672690e02) * r - 3.066479806614716e01) * r + 2.506628277459239e00
        den = ((((-5.447609879822406e01 * r + 1.615858368580409e02) * r - 1.556989798598866e02) * r
                + 6.680131188771972e01) * r - 1.328068155288572e01) * r + 1.0
        central = num * q / den
        # the rational form cancels badly in fp32 near |q| = 0.475 (errors ~1e-4); one Newton
        # step on Phi(x) = p brings it to ~1e-7 (|x| < 2 here, so exp(x^2 / 2) stays small)
        err = 0.5 * (1.0 + tl.math.erf(central * 0.7071067811865476)) - p
        central = central - err * 2.5066282746310002 * tl.exp(0.5 * central * central)
        pt = tl.where(p < 0.5, p, 1.0 - p)
        pt = tl.maximum(pt, 1e-38)
        s = tl.sqrt(-2.0 * tl.log(pt))
        num_t = ((((-7.784894002430293e-03 * s - 3.223964580411365e-01) * s - 2.400758277161838e00) * s
                  - 2.549732539343734e00) * s + 4.374664141464968e00) * s + 2.938163982698783e00
        den_t = (((7.784695709041462e-03 * s + 3.224671290700398e-01) * s + 2.445134137142996e00) * s
                 + 3.754408661907416e00) * s + 1.0
        tail = num_t / den_t
        tail = tl.where(p < 0.5, tail, -tail)
        x = tl.where((p >= p_low) & (p <= 1.0 - p_low), central, tail)
        x = tl.where(p <= 0.0, float("-inf"), x)
        return tl.where(p >= 1.0, float("inf"), x)

    @triton.jit
    def _pow(x, e):
        # x^e for x >= 0 and e > 0 (0^e = 0)
        return tl.where(x > 0.0, tl.exp(e * tl.log(tl.maximum(x, 1e-38))), 0.0)

    @triton.jit
    def _distort_kernel(
        tau_ptr,  # (N,) fractions in [0, 1], any float dtype
        out_ptr,  # (N,) distorted fractions, same dtype
        N, param,
        KIND: tl.constexpr,  # index into DISTORTIONS
        BLOCK: tl.constexpr,
    ):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = offs < N
        t = tl.load(tau_ptr + offs, mask=ok, other=0.5).to(tl.float32)
        if KIND == 0:
            out = t
        elif KIND == 1:
            out = t * param
        elif KIND == 2:
            out = 0.5 * (1.0 + tl.math.erf((_ndtri(t) + param) * 0.7071067811865476))
        elif KIND == 3:
            num = _pow(t, param)
            out = num / _pow(num + _pow(1.0 - t, param), 1.0 / param)
        else:
            if param >= 0:
                out = _pow(t, 1.0 / (1.0 + param))
            else:
                out = 1.0 - _pow(1.0 - t, 1.0 / (1.0 - param))
        tl.store(out_ptr + offs, out, mask=ok)

    @triton.jit
    def _tail_fwd_kernel(
        z1_ptr, z2_ptr,  # (B, K) critic outputs at the distorted fractions
        w_ptr,  # (K,) quadrature weights (read only if HAS_WEIGHTS)
        out_ptr,  # (B,) fp32: sum_k w_k min(z1, z2)
        B, K, stride1, stride2, inv_k,
        HAS_WEIGHTS: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        row_ok = rows < B
        acc = tl.zeros([BLOCK_B], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            ok = row_ok[:, None] & (ks < K)[None, :]
            a = tl.load(z1_ptr + rows[:, None] * stride1 + ks[None, :], mask=ok, other=0.0).to(tl.float32)
            b = tl.load(z2_ptr + rows[:, None] * stride2 + ks[None, :], mask=ok, other=0.0).to(tl.float32)
            m = tl.where((a < b) | (a != a), a, b)  # min that propagates NaN like torch.minimum
            if HAS_WEIGHTS:
                w = tl.load(w_ptr + ks, mask=ks < K, other=0.0).to(tl.float32)
            else:
                w = tl.where(ks < K, inv_k, 0.0)
            acc += tl.sum(m * w[None, :], axis=1)
        tl.store(out_ptr + rows, acc, mask=row_ok)

    @triton.jit
    def _tail_bwd_kernel(
        z1_ptr, z2_ptr,  # (B, K) saved inputs
        w_ptr,  # (K,) weights (read only if HAS_WEIGHTS)
        g_ptr,  # (B,) incoming gradient
        d1_ptr, d2_ptr,  # (B, K) out: gradients w.r.t. z1, z2 (contiguous)
        B, K, stride1, stride2, inv_k,
        HAS_WEIGHTS: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        # d out_b / d z1_bk = w_k * (1 if z1 < z2, 1/2 if z1 == z2, 0 otherwise); z2 mirrored.
        rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        row_ok = rows < B
        g = tl.load(g_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
        for k0 in range(0, K, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            ok = row_ok[:, None] & (ks < K)[None, :]
            a = tl.load(z1_ptr + rows[:, None] * stride1 + ks[None, :], mask=ok, other=0.0).to(tl.float32)
            b = tl.load(z2_ptr + rows[:, None] * stride2 + ks[None, :], mask=ok, other=0.0).to(tl.float32)
            if HAS_WEIGHTS:
                w = tl.load(w_ptr + ks, mask=ks < K, other=0.0).to(tl.float32)
            else:
                w = tl.zeros([BLOCK_K], dtype=tl.float32) + inv_k
            gw = g[:, None] * w[None, :]
            share1 = tl.where(a < b, 1.0, tl.where(a == b, 0.5, 0.0))
            share2 = tl.where(b < a, 1.0, tl.where(a == b, 0.5, 0.0))
            tl.store(d1_ptr + rows[:, None] * K + ks[None, :], gw * share1, mask=ok)
            tl.store(d2_ptr + rows[:, None] * K + ks[None, :], gw * share2, mask=ok)

    def _tail_blocks(K):
        block_k = min(max(triton.next_power_of_2(K), 2), 128)
        return max(1, 1024 // block_k), block_k


class TailMeanFn(torch.autograd.Function):
    """min over two critics, weighted mean over K; gradients for both critics."""

    @staticmethod
    def forward(ctx, z1, z2, weights):
        B, K = z1.shape
        z1 = z1 if z1.stride(1) == 1 else z1.contiguous()
        z2 = z2 if z2.stride(1) == 1 else z2.contiguous()
        out = torch.empty(B, device=z1.device, dtype=torch.float32)
        block_b, block_k = _tail_blocks(K)
        _tail_fwd_kernel[(triton.cdiv(B, block_b),)](
            z1, z2, weights if weights is not None else out, out,
            B, K, z1.stride(0), z2.stride(0), 1.0 / K,
            HAS_WEIGHTS=weights is not None, BLOCK_B=block_b, BLOCK_K=block_k,
        )
        ctx.save_for_backward(z1, z2, weights)
        return out.to(torch.promote_types(z1.dtype, torch.float32))

    @staticmethod
    def backward(ctx, grad_out):
        z1, z2, weights = ctx.saved_tensors
        B, K = z1.shape
        d1 = torch.empty((B, K), device=z1.device, dtype=z1.dtype)
        d2 = torch.empty((B, K), device=z2.device, dtype=z2.dtype)
        block_b, block_k = _tail_blocks(K)
        _tail_bwd_kernel[(triton.cdiv(B, block_b),)](
            z1, z2, weights if weights is not None else z1, grad_out.contiguous(), d1, d2,
            B, K, z1.stride(0), z2.stride(0), 1.0 / K,
            HAS_WEIGHTS=weights is not None, BLOCK_B=block_b, BLOCK_K=block_k,
        )
        return d1, d2, None


def distort_triton(tau: torch.Tensor, kind: str, param: float) -> torch.Tensor:
    """The Triton distortion kernel, whatever the device (tests run it interpreted)."""
    check_distortion(kind, param)
    flat = tau.contiguous().view(-1)
    out = torch.empty_like(flat)
    block = 1024
    _distort_kernel[(triton.cdiv(flat.numel(), block),)](
        flat, out, flat.numel(), float(param), KIND=_KIND_CODE[kind], BLOCK=block
    )
    return out.view(tau.shape)


def tail_mean_triton(z1, z2, weights=None):
    """The Triton tail-averaging path, whatever the device."""
    _check_tail(z1, z2, weights)
    return fold_seeds(TailMeanFn.apply, _tail_fold, z1, z2, None if weights is None else weights.contiguous())


def _tail_fold(K, in_dims, z1, z2, weights):
    """Under vmap over K seeds: one launch over the K x B rows (weights shared by the seeds; per-seed
    weights take the reference form on the stacked tensors)."""
    z1, z2, weights = seeds_first(K, (z1, z2, weights), in_dims)
    if weights is not None and in_dims[2] is not None:
        return (torch.minimum(z1, z2) * weights[:, None, :].to(z1.dtype)).sum(-1)
    B = z1.shape[1]
    weights = None if weights is None else weights[0]
    return TailMeanFn.apply(z1.reshape(K * B, -1), z2.reshape(K * B, -1), weights).view(K, B)


def distort(tau: torch.Tensor, kind: str, param: float) -> torch.Tensor:
    """Distorted fractions beta(tau); Triton on CUDA, reference op otherwise."""
    if use_triton(tau):
        return distort_triton(tau, kind, param)
    return distort_ref(tau, kind, param)


def tail_mean(z1: torch.Tensor, z2: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Risk value per sample: weighted mean over K of min(z1, z2). (B, K) x 2 -> (B,)."""
    if use_triton(z1, z2, *(() if weights is None else (weights,)), vmap_rule=True):
        return tail_mean_triton(z1, z2, weights)
    return tail_mean_ref(z1, z2, weights)
