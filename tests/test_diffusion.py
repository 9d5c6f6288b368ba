"""Diffusion actor: schedules, posterior step, samplers, and BC on a two-mode law."""

import numpy as np
import pytest
import torch

from ramac import kernels
from ramac.diffusion import Diffusion, make_betas
from ramac.kernels import StepCoefs, posterior_step_ref
from ramac.nets import Denoiser


@pytest.mark.parametrize("name", ["vp", "linear", "cosine"])
@pytest.mark.parametrize("T", [1, 5, 20])
def test_schedules_are_valid(name, T):
    betas = make_betas(name, T)
    assert betas.shape == (T,)
    assert ((betas > 0) & (betas < 1)).all()
    if T > 1:
        assert (np.diff(betas) >= 0).all()  # noise grows with t
    alphabar_T = np.prod(1 - betas)
    if T >= 5:
        assert alphabar_T < 0.2  # the chain starts close to pure noise


def test_unknown_schedule():
    with pytest.raises(ValueError, match="unknown beta schedule"):
        make_betas("sigmoid", 5)


def test_coefficients_match_ddpm_posterior():
    d = Diffusion(5, "vp")
    betas = torch.tensor(make_betas("vp", 5), dtype=torch.float64)
    ac = torch.cumprod(1 - betas, 0)
    t = 3
    c = d.step_coefs(t)
    assert c.recip == pytest.approx(float(1 / ac[t].sqrt()))
    # posterior mean of x_{t-1} given x0 and x_t (Ho et al. eq. 7)
    assert c.mean1 == pytest.approx(float(ac[t - 1].sqrt() * betas[t] / (1 - ac[t])))
    assert c.mean2 == pytest.approx(float((1 - betas[t]).sqrt() * (1 - ac[t - 1]) / (1 - ac[t])))
    assert c.sigma == pytest.approx(float((betas[t] * (1 - ac[t - 1]) / (1 - ac[t])).sqrt()))
    assert d.step_coefs(0).sigma == 0.0


def test_posterior_step_recovers_x0_from_exact_noise():
    d = Diffusion(5, "vp", max_action=10.0)
    x0, eps = torch.randn(64, 3), torch.randn(64, 3)
    t = 2
    x_t = d.q_sample(x0, torch.full((64,), t), eps)
    c = d.step_coefs(t)
    got = posterior_step_ref(x_t, eps, None, c)
    torch.testing.assert_close(got, c.mean1 * x0 + c.mean2 * x_t, atol=1e-5, rtol=1e-5)


def test_posterior_step_gradients():
    c = StepCoefs(1.3, 0.7, 0.4, 0.5, 0.2, 1.0)
    x = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    e = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    z = torch.randn(8, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x, e: posterior_step_ref(x, e, z, c), (x, e))


def test_chain_sampler_matches_differentiable_chain():
    torch.manual_seed(0)
    model, d = Denoiser(3, 2, 32), Diffusion(6, "vp")
    s, noise = torch.randn(9, 3), torch.randn(7, 9, 2)
    with torch.no_grad():
        torch.testing.assert_close(d.sample(model, s, noise), d.sample_fast(model, s, noise), atol=1e-5, rtol=1e-5)


def test_sample_has_gradient_through_every_step():
    torch.manual_seed(0)
    model, d = Denoiser(1, 2, 16), Diffusion(4, "vp")
    out = d.sample(model, torch.zeros(5, 1))
    out.sum().backward()
    assert model.mid[0].weight.grad is not None and model.mid[0].weight.grad.abs().sum() > 0


def test_pack_cache_follows_weight_updates():
    model, d = Denoiser(1, 2, 16), Diffusion(3, "vp")
    p1 = d.pack(model)
    assert d.pack(model) is p1
    with torch.no_grad():
        model.mid[2].weight.add_(1.0)
    assert d.pack(model) is not p1
    p2 = d.pack(model)
    with torch.no_grad():  # the EMA update path
        torch._foreach_lerp_(list(model.parameters()), [p + 1 for p in model.parameters()], 0.5)
    p3 = d.pack(model)
    assert p3 is not p2
    torch.testing.assert_close(p3.w2, p2.w2 + 0.5)


def test_bc_reproduces_two_modes():
    """A small diffusion policy cloned from a two-mode 2-D law samples both modes."""
    torch.manual_seed(0)
    centres = torch.tensor([[-0.6, 0.0], [0.6, 0.0]])
    model, d = Denoiser(1, 2, 64), Diffusion(10, "vp")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    state = torch.zeros(256, 1)
    for _ in range(2500):
        a = centres[torch.randint(0, 2, (256,))] + 0.08 * torch.randn(256, 2)
        loss = d.bc_loss(model, a, state)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        x = d.sample_fast(model, torch.zeros(2000, 1))
    dist = torch.cdist(x, centres)  # (N, 2)
    near = dist.min(dim=1).values < 0.3
    share = torch.bincount(dist.argmin(dim=1)[near], minlength=2).float() / len(x)
    assert share.min() > 0.3, share
    assert (~near).float().mean() < 0.15
