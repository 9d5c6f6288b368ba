"""Fused posterior step vs the reference op."""

import pytest
import torch

from ramac.kernels.denoise import StepCoefs, posterior_step_ref, posterior_step_triton

from .helpers import assert_same

COEFS = StepCoefs(1.3, 0.7, 0.4, 0.5, 0.2, 1.0)


@pytest.mark.parametrize("shape", [(37, 6), (1, 2), (256, 3), (5, 17)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_noise", [True, False])
def test_matches_reference(shape, dtype, with_noise, device):
    g = torch.Generator().manual_seed(shape[0])
    x = (2 * torch.randn(shape, generator=g)).to(device, dtype).requires_grad_()  # clipping active on many
    e = torch.randn(shape, generator=g).to(device, dtype).requires_grad_()
    z = torch.randn(shape, generator=g).to(device, dtype) if with_noise else None
    grad_out = torch.randn(shape, generator=g).to(device, dtype)
    assert_same(lambda a, b: posterior_step_triton(a, b, z, COEFS), lambda a, b: posterior_step_ref(a, b, z, COEFS),
                (x, e), grad_out, dtype)


def test_clip_boundary_is_inclusive_like_torch_clamp(device):
    # raw x0 = recip * x - recipm1 * eps lands exactly on +-max_action
    c = StepCoefs(1.0, 0.0, 0.4, 0.5, 0.0, 1.0)
    x = torch.tensor([[1.0, -1.0, 1.5, 0.25]], device=device, requires_grad=True)
    e = torch.zeros_like(x, requires_grad=True)
    assert_same(lambda a, b: posterior_step_triton(a, b, None, c), lambda a, b: posterior_step_ref(a, b, None, c),
                (x, e), torch.ones_like(x))


def test_last_step_adds_no_noise(device):
    c = COEFS._replace(sigma=0.0)
    x, e = torch.randn(4, 3, device=device), torch.randn(4, 3, device=device)
    z = torch.randn(4, 3, device=device)
    torch.testing.assert_close(posterior_step_triton(x, e, z, c), posterior_step_ref(x, e, None, c))


def test_shape_errors(device):
    with pytest.raises(ValueError, match="same shape"):
        posterior_step_triton(torch.zeros(3, 2, device=device), torch.zeros(3, 3, device=device), None, COEFS)


@pytest.mark.parametrize("eps_dim", [0, 1, None])
def test_under_vmap_one_launch_computes_each_seeds_step(eps_dim, device, monkeypatch):
    """Seeds stacked: vmap over the fused step runs one launch over all seeds (eps batched along
    dimension 0 or 1, or shared: None), with each seed's values and gradients."""
    from ramac.kernels import denoise

    K, shape = 3, (7, 4)
    g = torch.Generator().manual_seed(0)
    x = (2 * torch.randn(K, *shape, generator=g)).to(device).requires_grad_()
    e_full = torch.randn(K, *shape, generator=g).to(device)
    e = {0: e_full, 1: e_full.transpose(0, 1).contiguous(), None: e_full[0]}[eps_dim].requires_grad_()
    z = torch.randn(K, *shape, generator=g).to(device)
    w = torch.randn(K, *shape, generator=g).to(device)
    launches = []
    real = denoise.PosteriorStepFn.forward
    monkeypatch.setattr(denoise.PosteriorStepFn, "forward", staticmethod(lambda *a: launches.append(1) or real(*a)))
    got = torch.func.vmap(lambda a, b, n: posterior_step_triton(a, b, n, COEFS), in_dims=(0, eps_dim, 0))(x, e, z)
    assert len(launches) == 1
    dx, de = torch.autograd.grad((got * w).sum(), (x, e))
    de_want = []
    for k in range(K):
        xk = x[k].detach().requires_grad_()
        ek = (e_full[k] if eps_dim is not None else e_full[0]).detach().requires_grad_()
        want = posterior_step_ref(xk, ek, z[k], COEFS)
        torch.testing.assert_close(got[k], want, atol=1e-6, rtol=1e-6)
        gx, ge = torch.autograd.grad((want * w[k]).sum(), (xk, ek))
        torch.testing.assert_close(dx[k], gx, atol=1e-6, rtol=1e-6)
        de_want.append(ge)
    if eps_dim is None:  # a shared eps gets the sum of the seeds' gradients
        torch.testing.assert_close(de, sum(de_want), atol=1e-5, rtol=1e-5)
    else:
        torch.testing.assert_close(de, torch.stack(de_want).movedim(0, eps_dim), atol=1e-6, rtol=1e-6)
