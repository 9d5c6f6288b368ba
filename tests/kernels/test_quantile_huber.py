"""Fused quantile-Huber kernel vs the reference op: values and gradients."""

import pytest
import torch

from ramac.kernels.quantile_huber import quantile_huber_loss_ref, quantile_huber_loss_triton

from .helpers import assert_same

SHAPES = [(37, 13, 7), (1, 1, 1), (1, 32, 32), (64, 32, 32), (6, 16, 16), (3, 200, 5), (4, 8, 70)]


def make(B, K, KP, dtype, device, shared=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    pred = (3 * torch.randn(B, K, generator=g)).to(device, dtype).requires_grad_()
    target = (3 * torch.randn(B, KP, generator=g)).to(device, dtype).requires_grad_()
    taus = torch.rand(K if shared else (B, K), generator=g).to(device)
    return pred, taus, target


@pytest.mark.parametrize("B,K,KP", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("unroll", [False, True])
def test_matches_reference(B, K, KP, dtype, unroll, device):
    pred, taus, target = make(B, K, KP, dtype, device)
    g = torch.tensor(0.7, device=device)  # incoming gradient different from 1
    assert_same(lambda p, y: quantile_huber_loss_triton(p, taus, y, unroll=unroll),
                lambda p, y: quantile_huber_loss_ref(p, taus, y), (pred, target), g, dtype)


@pytest.mark.parametrize("block_b,num_warps", [(1, 1), (4, 2), (128, 8)])
@pytest.mark.parametrize("B,K,KP", [(37, 13, 7), (5, 40, 9)])
def test_launch_settings(block_b, num_warps, B, K, KP, device):
    # rows per program below, at and above the batch: ragged last programs and programs with no row
    pred, taus, target = make(B, K, KP, torch.float32, device, seed=5)
    assert_same(lambda p, y: quantile_huber_loss_triton(p, taus, y, block_b=block_b, num_warps=num_warps),
                lambda p, y: quantile_huber_loss_ref(p, taus, y), (pred, target), torch.tensor(0.3, device=device))


def test_rejects_block_b_not_a_power_of_two(device):
    pred, taus, target = make(4, 4, 4, torch.float32, device)
    with pytest.raises(ValueError, match="power of two"):
        quantile_huber_loss_triton(pred, taus, target, block_b=12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shared", [False, True])
def test_reductions_weights_and_shared_fractions(reduction, weighted, shared, device):
    pred, taus, target = make(9, 5, 6, torch.float32, device, shared=shared, seed=3)
    w = torch.rand(9, device=device) if weighted else None
    g = torch.randn(9, device=device) if reduction == "none" else torch.tensor(-1.3, device=device)
    assert_same(lambda p, y: quantile_huber_loss_triton(p, taus, y, 1.0, w, reduction),
                lambda p, y: quantile_huber_loss_ref(p, taus, y, 1.0, w, reduction), (pred, target), g)


@pytest.mark.parametrize("kappa", [1.0, 0.25, 4.0])
def test_edges_u_zero_and_u_equal_kappa(kappa, device):
    # targets placed exactly at the prediction (u = 0) and at +-kappa (the Huber knee)
    pred = torch.tensor([[0.0, 1.0, -2.0]], device=device)
    target = torch.stack([pred[0, 0] + torch.tensor([0.0, kappa, -kappa], device=device)])
    pred.requires_grad_()
    target.requires_grad_()
    taus = torch.tensor([[0.1, 0.5, 0.9]], device=device)
    assert_same(lambda p, y: quantile_huber_loss_triton(p, taus, y, kappa),
                lambda p, y: quantile_huber_loss_ref(p, taus, y, kappa), (pred, target),
                torch.tensor(2.0, device=device))


def test_target_without_grad_and_no_grad_mode(device):
    pred, taus, target = make(8, 4, 4, torch.float32, device)
    target = target.detach()
    out = quantile_huber_loss_triton(pred, taus, target)
    (gp,) = torch.autograd.grad(out, pred)
    (gr,) = torch.autograd.grad(quantile_huber_loss_ref(pred, taus, target), pred)
    torch.testing.assert_close(gp, gr)
    with torch.no_grad():
        torch.testing.assert_close(quantile_huber_loss_triton(pred, taus, target),
                                   quantile_huber_loss_ref(pred, taus, target))


def test_non_contiguous_inputs(device):
    pred, taus, target = make(10, 8, 12, torch.float32, device)
    p2, y2 = pred[::2], target[::2, ::1]
    torch.testing.assert_close(quantile_huber_loss_triton(p2, taus[::2], y2),
                               quantile_huber_loss_ref(p2, taus[::2], y2))


def test_rejects_too_many_quantiles(device):
    with pytest.raises(ValueError, match="at most"):
        quantile_huber_loss_triton(torch.zeros(1, 2048, device=device), torch.zeros(2048, device=device),
                                   torch.zeros(1, 1, device=device))
