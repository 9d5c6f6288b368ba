"""The package's quantile-Huber loss (reference op and fused Triton op) against SPEC 2.1 written
out one term at a time, and that it learns the right quantiles."""

import numpy as np
import pytest
import torch

from ramac.kernels import HAS_TRITON, quantile_huber_loss, quantile_huber_loss_ref

if HAS_TRITON:  # on CPU the kernel runs under TRITON_INTERPRET=1 (tests/conftest.py)
    from ramac.kernels.quantile_huber import quantile_huber_loss_triton

OPS = {"reference": quantile_huber_loss_ref}
if HAS_TRITON:
    OPS["triton"] = quantile_huber_loss_triton


def loop_loss(pred, taus, target, kappa):
    """SPEC 2.1, one term at a time in python floats:
    L = 1/(B*K) * sum_b sum_k sum_j |tau_k - 1{u_bkj < 0}| * huber_kappa(u_bkj) / kappa,
    u_bkj = y_bj - z_bk, tau_k the fraction of the *predicted* quantile k."""
    B, K = pred.shape
    total = 0.0
    for b in range(B):
        for k in range(K):
            tau = float(taus[k] if taus.dim() == 1 else taus[b, k])
            for j in range(target.shape[1]):
                u = float(target[b, j]) - float(pred[b, k])
                huber = 0.5 * u * u if abs(u) <= kappa else kappa * (abs(u) - 0.5 * kappa)
                total += abs(tau - (1.0 if u < 0 else 0.0)) * huber / kappa
    return total / (B * K)


def loop_grads(pred, taus, target, kappa, h=1e-6):
    """Central differences of loop_loss in every prediction and target (float64, no autograd)."""
    def loss(z, y):
        return loop_loss(z, taus, y, kappa)

    pred, target = pred.double(), target.double()
    dp, dy = torch.zeros_like(pred), torch.zeros_like(target)
    for idx in np.ndindex(*pred.shape):
        e = torch.zeros_like(pred)
        e[idx] = h
        dp[idx] = (loss(pred + e, target) - loss(pred - e, target)) / (2 * h)
    for idx in np.ndindex(*target.shape):
        e = torch.zeros_like(target)
        e[idx] = h
        dy[idx] = (loss(pred, target + e) - loss(pred, target - e)) / (2 * h)
    return dp, dy


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("B,K,KP", [(5, 4, 3), (4, 5, 5), (3, 2, 6)])  # K = K' too: a swapped index shows
@pytest.mark.parametrize("shared_taus", [False, True])
@pytest.mark.parametrize("kappa", [1.0, 0.5, 3.0])
def test_matches_spec_term_by_term(op, B, K, KP, shared_taus, kappa):
    """Value and gradients (w.r.t. predictions and targets) of the package op equal SPEC 2.1's sum."""
    g = torch.Generator().manual_seed(1)
    dtype = torch.float64 if op == "reference" else torch.float32  # the kernel computes in fp32
    pred = (torch.randn(B, K, generator=g, dtype=torch.float64) * 2).to(dtype)
    target = (torch.randn(B, KP, generator=g, dtype=torch.float64) * 2).to(dtype)
    taus = torch.rand(K if shared_taus else (B, K), generator=g, dtype=torch.float64).to(dtype)
    p, y = pred.clone().requires_grad_(), target.clone().requires_grad_()
    got = OPS[op](p, taus, y, kappa)
    dp, dy = torch.autograd.grad(got, (p, y))
    want_dp, want_dy = loop_grads(pred, taus, target, kappa)
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    assert got.item() == pytest.approx(loop_loss(pred, taus, target, kappa), rel=tol["rtol"])
    torch.testing.assert_close(dp.double(), want_dp, **tol)
    torch.testing.assert_close(dy.double(), want_dy, **tol)


@pytest.mark.parametrize("op", OPS)
def test_each_quantile_is_weighted_by_its_own_fraction(op):
    """Why SPEC 2.1 insists on tau_k: with every prediction at 0 and K' = K targets far above
    (below) it, dL/dz_k = -K'/K * tau_k (resp. K'/K * (1 - tau_k)), different for every k.
    Weighting by the target's fraction instead (the published code) gives every k the same
    gradient, and the learned quantiles collapse to one value."""
    taus = torch.tensor([0.05, 0.2, 0.5, 0.8, 0.95])
    K = len(taus)
    for y, want in ((10.0, -taus), (-10.0, 1 - taus)):
        z = torch.zeros(1, K, requires_grad=True)
        (grad,) = torch.autograd.grad(OPS[op](z, taus, torch.full((1, K), y)), z)
        torch.testing.assert_close(grad[0], want, rtol=1e-6, atol=1e-7)


def test_reductions_and_weights():
    g = torch.Generator().manual_seed(2)
    pred, target, taus = torch.randn(6, 4, generator=g), torch.randn(6, 5, generator=g), torch.rand(6, 4, generator=g)
    w = torch.rand(6, generator=g)
    per = quantile_huber_loss_ref(pred, taus, target, reduction="none")
    assert per.shape == (6,)
    assert quantile_huber_loss_ref(pred, taus, target).item() == pytest.approx(per.mean().item(), rel=1e-6)
    assert quantile_huber_loss_ref(pred, taus, target, reduction="sum").item() == pytest.approx(per.sum().item(), rel=1e-6)
    weighted = quantile_huber_loss_ref(pred, taus, target, weight=w, reduction="none")
    torch.testing.assert_close(weighted, per * w)


def test_gradient_descent_converges_to_true_quantiles():
    """Gradient descent with the package loss on K free values against samples of 10 * Exp(1)
    reaches the true quantiles (the scale is large against kappa = 1, so Huber's quadratic
    zone barely moves the minimiser)."""
    torch.manual_seed(0)
    K = 9
    taus = (torch.arange(K) + 0.5) / K
    z = torch.zeros(1, K, requires_grad=True)
    opt = torch.optim.Adam([z], lr=0.5)
    for _ in range(3000):
        y = 10 * torch.distributions.Exponential(1.0).sample((1, 64))
        loss = quantile_huber_loss(z, taus, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        for group in opt.param_groups:
            group["lr"] = max(0.01, group["lr"] * 0.998)
    z = z.detach()[0].numpy()
    true_q = -10 * np.log(1 - taus.numpy())  # quantiles of 10 * Exp(1): 0.57 ... 21.97
    np.testing.assert_allclose(z, true_q, atol=0.6)
    assert (np.diff(z) > 0).all()


def test_rejects_bad_arguments():
    pred, target = torch.zeros(3, 4), torch.zeros(3, 2)
    with pytest.raises(ValueError, match="taus must be"):
        quantile_huber_loss_ref(pred, torch.zeros(5), target)
    with pytest.raises(ValueError, match="target must be"):
        quantile_huber_loss_ref(pred, torch.zeros(4), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="kappa"):
        quantile_huber_loss_ref(pred, torch.zeros(4), target, kappa=0.0)
    with pytest.raises(ValueError, match="reduction"):
        quantile_huber_loss_ref(pred, torch.zeros(4), target, reduction="avg")
