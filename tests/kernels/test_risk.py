"""Distortion and tail-averaging kernels vs the reference ops."""

import pytest
import torch

from ramac.kernels import quadrature_fractions
from ramac.kernels.risk import distort_ref, distort_triton, tail_mean_ref, tail_mean_triton

from .helpers import assert_same

KINDS = [("neutral", 0.0), ("cvar", 0.1), ("cvar", 1.0), ("wang", -0.7), ("wang", 0.75), ("cpw", 0.71),
         ("power", -2.0), ("power", 1.5)]


@pytest.mark.parametrize("kind,param", KINDS)
def test_distortion_kernel(kind, param, device):
    u = torch.cat([torch.rand(997), torch.tensor([0.0, 1.0, 1e-7, 1 - 1e-7, 0.5, 0.02425, 0.97575])]).to(device)
    got = distort_triton(u, kind, param)
    want = distort_ref(u.double(), kind, param).float()
    torch.testing.assert_close(got, want, atol=5e-7, rtol=1e-5)
    assert got.shape == u.shape and got.dtype == u.dtype


def test_distortion_keeps_shape_and_dtype(device):
    u = torch.rand(3, 5, device=device, dtype=torch.bfloat16)
    out = distort_triton(u, "wang", -0.7)
    assert out.shape == (3, 5) and out.dtype == torch.bfloat16


@pytest.mark.parametrize("B,K", [(37, 13), (1, 1), (256, 32), (4, 300)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("weighted", [False, True])
def test_tail_mean_kernel(B, K, dtype, weighted, device):
    g = torch.Generator().manual_seed(B * K)
    z1 = torch.randn(B, K, generator=g).to(device, dtype).requires_grad_()
    z2 = torch.randn(B, K, generator=g).to(device, dtype).requires_grad_()
    w = torch.rand(K, generator=g).to(device) if weighted else None
    grad_out = torch.randn(B, generator=g).to(device)
    assert_same(lambda a, b: tail_mean_triton(a, b, w), lambda a, b: tail_mean_ref(a, b, w), (z1, z2), grad_out, dtype)


def test_ties_split_the_gradient(device):
    z1 = torch.tensor([[1.0, 2.0, 3.0, 4.0]], device=device, requires_grad=True)
    z2 = torch.tensor([[1.0, 1.0, 3.0, 5.0]], device=device, requires_grad=True)
    out = tail_mean_triton(z1, z2)
    g1, g2 = torch.autograd.grad(out, (z1, z2), torch.ones(1, device=device))
    torch.testing.assert_close(g1, torch.tensor([[0.125, 0.0, 0.125, 0.25]], device=device))
    torch.testing.assert_close(g2, torch.tensor([[0.125, 0.25, 0.125, 0.0]], device=device))
    assert_same(tail_mean_triton, tail_mean_ref, (z1, z2), torch.full((1,), 3.0, device=device))


def test_nan_propagates_like_torch_minimum(device):
    z1 = torch.tensor([[float("nan"), 1.0], [1.0, 2.0]], device=device)
    z2 = torch.tensor([[0.0, 1.0], [float("nan"), 2.0]], device=device)
    assert torch.isnan(tail_mean_triton(z1, z2)).all()


def test_cvar_alpha_one_quadrature_is_the_mean(device):
    # a critic whose quantile function is known: Z(tau) = 10 tau - 2 (mean 3)
    taus, w = quadrature_fractions(64, "cvar", 1.0, device=device)
    z = (10 * taus - 2).expand(5, -1).contiguous()
    torch.testing.assert_close(tail_mean_triton(z, z + 1, w), torch.full((5,), 3.0, device=device))
    taus, w = quadrature_fractions(64, "cvar", 0.1, device=device)
    z = (10 * taus - 2).expand(5, -1).contiguous()
    torch.testing.assert_close(tail_mean_triton(z, z, w), torch.full((5,), -1.5, device=device))
