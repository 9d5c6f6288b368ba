"""Reference quantile-Huber loss: definition, and that it learns the right quantiles."""

import numpy as np
import pytest
import torch

from ramac.kernels import quantile_huber_loss_ref


def loop_loss(pred, taus, target, kappa):
    """Direct transcription of SPEC 2.1, one term at a time."""
    B, K = pred.shape
    total = 0.0
    for b in range(B):
        for k in range(K):
            tau = float(taus[k] if taus.dim() == 1 else taus[b, k])
            for j in range(target.shape[1]):
                u = float(target[b, j] - pred[b, k])
                huber = 0.5 * u * u if abs(u) <= kappa else kappa * (abs(u) - 0.5 * kappa)
                total += abs(tau - (1.0 if u < 0 else 0.0)) * huber / kappa
    return total / (B * K)


@pytest.mark.parametrize("shared_taus", [False, True])
@pytest.mark.parametrize("kappa", [1.0, 0.5, 3.0])
def test_matches_direct_loop(shared_taus, kappa):
    g = torch.Generator().manual_seed(1)
    B, K, KP = 5, 4, 3
    pred = torch.randn(B, K, generator=g, dtype=torch.float64) * 2
    target = torch.randn(B, KP, generator=g, dtype=torch.float64) * 2
    taus = torch.rand(K if shared_taus else (B, K), generator=g, dtype=torch.float64)
    got = quantile_huber_loss_ref(pred, taus, target, kappa)
    assert got.item() == pytest.approx(loop_loss(pred, taus, target, kappa), rel=1e-10)


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


def _fit_quantiles(weight_by_target: bool, steps=3000):
    """Gradient descent on K free values against samples of 10 * Exp(1); returns (values, taus).

    The scale (10) is large against kappa = 1, so Huber's quadratic zone barely moves
    the minimiser away from the true quantile."""
    torch.manual_seed(0)
    K = 9
    taus = (torch.arange(K) + 0.5) / K
    z = torch.zeros(1, K, requires_grad=True)
    opt = torch.optim.Adam([z], lr=0.5)
    for _ in range(steps):
        y = 10 * torch.distributions.Exponential(1.0).sample((1, 64))
        if weight_by_target:  # the published variant: weight by the target's fraction
            u = y[:, None, :] - z[:, :, None]
            tau_j = torch.rand(1, 1, 64)
            huber = torch.where(u.abs() <= 1, 0.5 * u**2, u.abs() - 0.5)
            loss = ((tau_j - (u.detach() < 0).float()).abs() * huber).sum(2).mean()
        else:
            loss = quantile_huber_loss_ref(z, taus, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        for group in opt.param_groups:
            group["lr"] = max(0.01, group["lr"] * 0.998)
    return z.detach()[0], taus


def test_gradient_descent_converges_to_true_quantiles():
    z, taus = _fit_quantiles(weight_by_target=False)
    true_q = -10 * np.log(1 - taus.numpy())  # quantiles of 10 * Exp(1): 0.57 ... 21.97
    np.testing.assert_allclose(z.numpy(), true_q, atol=0.6)
    assert (np.diff(z.numpy()) > 0).all()


def test_target_fraction_weighting_collapses_quantiles():
    """Why SPEC 2.1 insists on tau_k: weighting by the target's fraction gives every
    quantile the same gradient, so all K values collapse to one (the median-ish value)."""
    z, taus = _fit_quantiles(weight_by_target=True)
    true_q = -10 * np.log(1 - taus.numpy())
    assert z.max() - z.min() < 0.5
    assert np.abs(z.numpy() - true_q).max() > 5.0


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
