"""Quantile-Huber loss of IQN (Dabney et al. 2018), fused forward + backward.

    u_bkj = y_bj - z_bk
    L_b   = w_b / K * sum_k sum_j |tau_bk - 1{u_bkj < 0}| * huber_kappa(u_bkj) / kappa

The asymmetric weight uses the fraction tau_k of the *predicted* quantile k
(the standard IQN loss). Reductions: "mean" (over b), "sum" (over b), "none"
(the per-sample L_b, shape (B,)).

The Triton kernel walks a tile of rows and never materialises (B, K, K'): each
thread holds (b, k) cells in registers and loops over the K' targets. Since
every term is cheap, it computes the per-row loss *and* the gradients w.r.t. z
and y in the same pass; backward only rescales them by the incoming gradient.
"""

from __future__ import annotations

import torch

from ._dispatch import HAS_TRITON, fold_seeds, seeds_first, use_triton

REDUCTIONS = ("mean", "sum", "none")
MAX_K = 1024  # predicted quantiles one kernel tile can hold
# The default launch: the loop over K', ~CELLS_PER_PROGRAM (b, k) cells per program, 4 warps. On an
# H200 at B = 16,384, K = K' = 32, fwd + bwd replayed from a CUDA graph (bench/results/qh-combo-H200/):
# 16 rows x 4 warps 18.6 us, 8 x 2 18.5, 32 x 2 19.4, 32 x 4 (the old ~1,024 cells) 20.8, the loop
# unrolled 22.1-22.4, torch.compile of the reference 33.2.
CELLS_PER_PROGRAM = 512


# --------------------------------------------------------------------------
# reference op
# --------------------------------------------------------------------------
def quantile_huber_loss_ref(pred, taus, target, kappa=1.0, weight=None, reduction="mean"):
    """Plain-PyTorch quantile-Huber loss; materialises the (B, K, K') tensor."""
    _check_args(pred, taus, target, kappa, weight, reduction)
    dtype = torch.promote_types(pred.dtype, torch.float32)
    z = pred.to(dtype)
    tau = taus.to(dtype).expand_as(z)
    u = target.to(dtype)[:, None, :] - z[:, :, None]  # (B, K, K')
    abs_u = u.abs()
    huber = torch.where(abs_u <= kappa, 0.5 * u * u, kappa * (abs_u - 0.5 * kappa))
    asym = (tau[:, :, None] - (u.detach() < 0).to(dtype)).abs()
    per_sample = (asym * huber).sum(dim=2).mean(dim=1) / kappa  # (B,)
    return _reduce(per_sample, weight, reduction)


def _reduce(per_sample, weight, reduction):
    if weight is not None:
        per_sample = per_sample * weight.to(per_sample.dtype)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def _check_args(pred, taus, target, kappa, weight, reduction):
    if pred.dim() != 2:
        raise ValueError(f"pred must be (B, K), got shape {tuple(pred.shape)}")
    B, K = pred.shape
    if target.dim() != 2 or target.shape[0] != B:
        raise ValueError(f"target must be (B={B}, K'), got shape {tuple(target.shape)}")
    if tuple(taus.shape) not in ((B, K), (K,)):
        raise ValueError(f"taus must be ({B}, {K}) or ({K},), got shape {tuple(taus.shape)}")
    if weight is not None and tuple(weight.shape) != (B,):
        raise ValueError(f"weight must be ({B},), got shape {tuple(weight.shape)}")
    if not kappa > 0:
        raise ValueError(f"kappa must be > 0, got {kappa}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


# --------------------------------------------------------------------------
# Triton kernel
# --------------------------------------------------------------------------
if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _quantile_huber_kernel(
        pred_ptr,  # (B, K) predicted quantiles, any float dtype
        tau_ptr,  # (B, K) or (K,) fractions of the predicted quantiles (stride_tb = 0)
        target_ptr,  # (B, K') target samples
        weight_ptr,  # (B,) per-sample weights (read only if HAS_WEIGHT)
        loss_ptr,  # (B,) fp32 out: per-sample loss L_b
        dpred_ptr,  # (B, K) fp32 out: dL_b / dz_bk
        dtarget_ptr,  # (B, K') fp32 out: dL_b / dy_bj
        B, K, KP,
        stride_pb, stride_tb, stride_yb,
        kappa, inv_k, grad_scale,
        HAS_WEIGHT: tl.constexpr,
        GRAD_PRED: tl.constexpr,
        GRAD_TARGET: tl.constexpr,
        BLOCK_B: tl.constexpr,
        BLOCK_K: tl.constexpr,
        UNROLL: tl.constexpr,
        KP_C: tl.constexpr,  # K' when UNROLL (else 0)
    ):
        # With g_bkj = |tau_bk - 1{u<0}| * clamp(u_bkj, -kappa, kappa) / kappa
        # (the derivative of the weighted Huber term w.r.t. u; the weight is a
        # step function, so it is constant almost everywhere):
        #   dL_b/dz_bk = -w_b/K * sum_j g_bkj,   dL_b/dy_bj = w_b/K * sum_k g_bkj.
        # Each thread owns (b, k) cells and walks the K' targets: the loss and dL/dz
        # accumulate in registers with no cross-thread reduction; dL/dy (only when the
        # target needs a gradient) reduces over k once per target. Cells outside (B, K)
        # get both asymmetric weights 0, so they add nothing and need no mask per target.
        pid = tl.program_id(0)
        rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
        ks = tl.arange(0, BLOCK_K)
        row_ok = rows < B
        rk_ok = row_ok[:, None] & (ks < K)[None, :]
        z = tl.load(pred_ptr + rows[:, None] * stride_pb + ks[None, :], mask=rk_ok, other=0.0).to(tl.float32)
        tau = tl.load(tau_ptr + rows[:, None] * stride_tb + ks[None, :], mask=rk_ok, other=0.0).to(tl.float32)
        if HAS_WEIGHT:
            scale = tl.load(weight_ptr + rows, mask=row_ok, other=0.0).to(tl.float32) * inv_k
        else:
            scale = tl.zeros([BLOCK_B], dtype=tl.float32) + inv_k
        scale = scale / kappa
        below = tl.where(rk_ok, 1.0 - tau, 0.0)  # weight of targets below the prediction (u < 0)
        scale_g = scale * grad_scale  # the gradients' scale: times the 1/B of a "mean" reduction

        loss_acc = tl.zeros([BLOCK_B, BLOCK_K], dtype=tl.float32)
        dz_acc = tl.zeros([BLOCK_B, BLOCK_K], dtype=tl.float32)
        if UNROLL:  # K' known at compile time: every target load can be issued up front
            for j in tl.static_range(KP_C):
                loss_acc, dz_acc = _qh_target(target_ptr, dtarget_ptr, rows, row_ok, z, tau, below, scale_g,
                                              kappa, stride_yb, KP, j, loss_acc, dz_acc, GRAD_TARGET)
        else:
            for j in range(0, KP):
                loss_acc, dz_acc = _qh_target(target_ptr, dtarget_ptr, rows, row_ok, z, tau, below, scale_g,
                                              kappa, stride_yb, KP, j, loss_acc, dz_acc, GRAD_TARGET)

        loss = tl.sum(tl.where(rk_ok, loss_acc, 0.0), axis=1) * scale  # (once: padding times an inf target)
        tl.store(loss_ptr + rows, loss, mask=row_ok)
        if GRAD_PRED:  # scaled already, so backward is one product per gradient
            tl.store(dpred_ptr + rows[:, None] * K + ks[None, :], -dz_acc * scale_g[:, None], mask=rk_ok)

    @triton.jit
    def _qh_target(target_ptr, dtarget_ptr, rows, row_ok, z, tau, below, scale_g, kappa, stride_yb, KP, j,
                   loss_acc, dz_acc, GRAD_TARGET: tl.constexpr):
        # One target sample y_bj against the row's K predicted quantiles. With c = min(|u|, kappa):
        # huber(u) = c (|u| - c / 2) and clamp(u, -kappa, kappa) = sign(u) c, so with m = asym c the
        # loss term is m (|u| - c / 2) and g is +-m: a handful of operations per pair, no mask.
        y = tl.load(target_ptr + rows * stride_yb + j, mask=row_ok, other=0.0).to(tl.float32)
        u = y[:, None] - z  # (BLOCK_B, BLOCK_K)
        neg = u < 0
        abs_u = tl.abs(u)
        c = tl.minimum(abs_u, kappa)
        m = tl.where(neg, below, tau) * c
        g = tl.where(neg, -m, m)
        if GRAD_TARGET:
            tl.store(dtarget_ptr + rows * KP + j, tl.sum(g, axis=1) * scale_g, mask=row_ok)
        return loss_acc + m * (abs_u - 0.5 * c), dz_acc + g

    def _launch(pred, taus, target, weight, kappa, grad_pred, grad_target, grad_scale, config):
        unroll, block_b, num_warps = config  # (None: the default launch's rows and warps)
        B, K = pred.shape
        KP = target.shape[1]
        pred = pred if pred.stride(1) == 1 else pred.contiguous()
        target = target if target.stride(1) == 1 else target.contiguous()
        taus = taus.contiguous()
        stride_tb = 0 if taus.dim() == 1 else taus.stride(0)
        dev = pred.device
        loss = torch.empty(B, device=dev, dtype=torch.float32)
        dpred = torch.empty((B, K), device=dev, dtype=torch.float32) if grad_pred else loss
        dtarget = torch.empty((B, KP), device=dev, dtype=torch.float32) if grad_target else loss
        block_k = max(triton.next_power_of_2(K), 2)
        block_b = block_b or max(1, min(64, CELLS_PER_PROGRAM // block_k))
        grid = (triton.cdiv(B, block_b),)
        _quantile_huber_kernel[grid](
            pred, taus, target, weight if weight is not None else loss,
            loss, dpred, dtarget,
            B, K, KP,
            pred.stride(0), stride_tb, target.stride(0),
            float(kappa), 1.0 / K, float(grad_scale),
            HAS_WEIGHT=weight is not None,
            GRAD_PRED=grad_pred,
            GRAD_TARGET=grad_target,
            BLOCK_B=block_b, BLOCK_K=block_k,
            UNROLL=bool(unroll), KP_C=KP if unroll else 0,
            num_warps=num_warps or 4,
        )
        return loss, (dpred if grad_pred else None), (dtarget if grad_target else None)


class QuantileHuberFn(torch.autograd.Function):
    """Fused quantile-Huber loss; gradients for pred and target."""

    @staticmethod
    def forward(ctx, pred, taus, target, weight, kappa, reduction, config):
        need_pred, _, need_target = ctx.needs_input_grad[:3]
        # with "mean", dL/dz and dL/dy come out of the kernel already divided by B (one launch less each)
        loss, dpred, dtarget = _launch(pred, taus, target, weight, kappa, need_pred, need_target,
                                       1.0 / max(pred.shape[0], 1) if reduction == "mean" else 1.0, config)
        ctx.save_for_backward(dpred, dtarget)
        ctx.reduction = reduction
        ctx.dtypes = (pred.dtype, target.dtype)
        if reduction == "none":
            return loss
        return loss.mean() if reduction == "mean" else loss.sum()

    @staticmethod
    def backward(ctx, grad_out):
        dpred, dtarget = ctx.saved_tensors
        g = grad_out.float()[:, None] if ctx.reduction == "none" else grad_out.float()
        grad_pred = (dpred * g).to(ctx.dtypes[0]) if dpred is not None else None
        grad_target = (dtarget * g).to(ctx.dtypes[1]) if dtarget is not None else None
        return grad_pred, None, grad_target, None, None, None, None


def quantile_huber_loss_triton(pred, taus, target, kappa=1.0, weight=None, reduction="mean", unroll=False,
                               block_b=None, num_warps=None):
    """The Triton path, whatever the device (tests call it under TRITON_INTERPRET=1). unroll: the loop
    over the K' targets unrolled at compile time (one compilation per K'); block_b: rows per program
    (a power of two; default ~CELLS_PER_PROGRAM (b, k) cells per program); num_warps (default 4). Which launch is
    faster is timed by bench/studies/qh_graph_check.py --configs."""
    if block_b is not None and (block_b < 1 or block_b & (block_b - 1)):
        raise ValueError(f"block_b must be a power of two, got {block_b}")
    config = (unroll, block_b, num_warps)
    _check_args(pred, taus, target, kappa, weight, reduction)
    if pred.shape[1] > MAX_K:
        raise ValueError(f"the fused kernel holds at most {MAX_K} predicted quantiles, got {pred.shape[1]}")
    return fold_seeds(QuantileHuberFn.apply, _qh_fold, pred, taus.detach(), target, weight, kappa, reduction, config)


def _qh_fold(K, in_dims, pred, taus, target, weight, kappa, reduction, config):
    """Under vmap over K seeds: one launch over the K x B samples (per-sample losses), reduced per seed."""
    pred, target, weight = seeds_first(K, (pred, target, weight), (in_dims[0], in_dims[2], in_dims[3]))
    B = pred.shape[1]
    if in_dims[1] is not None or taus.dim() == 2:  # per-seed or per-sample fractions: one row per sample
        taus = seeds_first(K, (taus,), in_dims[1:2])[0]
        taus = (taus if taus.dim() == 3 else taus[:, None, :]).expand(K, B, pred.shape[2]).reshape(K * B, -1)
    flat = QuantileHuberFn.apply(pred.reshape(K * B, -1), taus, target.reshape(K * B, -1),
                                 None if weight is None else weight.reshape(K * B), kappa, "none", config)
    per_seed = flat.view(K, B)
    return per_seed if reduction == "none" else per_seed.mean(1) if reduction == "mean" else per_seed.sum(1)


def quantile_huber_loss(pred, taus, target, kappa=1.0, weight=None, reduction="mean"):
    """Quantile-Huber loss; Triton on CUDA tensors, reference op otherwise.

    pred (B, K) predicted quantiles at fractions taus (B, K) or (K,); target
    (B, K') samples of the target distribution; weight (B,) optional.
    """
    extra = () if weight is None else (weight,)
    if use_triton(pred, target, taus, *extra, vmap_rule=True) and pred.dim() == 2 and pred.shape[1] <= MAX_K:
        return quantile_huber_loss_triton(pred, taus, target, kappa, weight, reduction)
    return quantile_huber_loss_ref(pred, taus, target, kappa, weight, reduction)
