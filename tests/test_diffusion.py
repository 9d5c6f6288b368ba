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


def _risk_stand_in(action):
    """A smooth stand-in for the actor loss's eta * (-risk(Z(s, a))): any loss with a
    non-zero, action-dependent gradient serves."""
    w = torch.linspace(-1.0, 2.0, action.numel(), dtype=action.dtype).view_as(action)
    return -(w * action).sum() + 0.3 * action.square().sum()


def _chain_setup(T=4):
    """A float64 denoiser, a chain with max_action so large that nothing is clipped (clipping
    zeroes the gradient on the clipped entries), and the chain's noise given explicitly."""
    torch.manual_seed(0)
    model, d = Denoiser(3, 2, 16).double(), Diffusion(T, "vp", max_action=100.0)
    g = torch.Generator().manual_seed(1)
    state = torch.randn(3, 3, generator=g, dtype=torch.float64)
    noise = torch.randn(T + 1, 3, 2, generator=g, dtype=torch.float64)
    return model, d, state, noise


def _grad_wrt_x_T(d, model, state, noise):
    """d loss / d x_T by autograd through Diffusion.sample (zeros where no gradient arrives)."""
    x_T = noise[d.T].clone().requires_grad_()
    out = d.sample(model, state, torch.cat([noise[: d.T], x_T[None]]))
    assert out.abs().max() < d.max_action  # nothing clipped: the finite differences are smooth
    loss = _risk_stand_in(out)
    if not loss.requires_grad:
        return torch.zeros_like(x_T)
    (g,) = torch.autograd.grad(loss, x_T, allow_unused=True)
    return torch.zeros_like(x_T) if g is None else g


def _finite_difference_wrt_x_T(d, model, state, noise, h=1e-6):
    """Central differences of the same loss in x_T, one entry at a time (no autograd)."""
    fd = torch.zeros_like(noise[d.T])
    with torch.no_grad():
        for idx in np.ndindex(*fd.shape):
            plus, minus = noise.clone(), noise.clone()
            plus[(d.T, *idx)] += h
            minus[(d.T, *idx)] -= h
            fd[idx] = (_risk_stand_in(d.sample(model, state, plus))
                       - _risk_stand_in(d.sample(model, state, minus))) / (2 * h)
    return fd


def test_actor_loss_gradient_reaches_x_T_through_every_step():
    """d loss / d x_T by autograd through the T-step chain equals its finite difference: x_T
    reaches the action only through all T steps, so any step that drops the gradient (its
    output, or the denoiser's input) changes this derivative."""
    model, d, state, noise = _chain_setup()
    got = _grad_wrt_x_T(d, model, state, noise)
    want = _finite_difference_wrt_x_T(d, model, state, noise)
    assert want.abs().min() > 1e-3  # every entry of x_T moves the loss
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("what", ["output", "denoiser_input"])
@pytest.mark.parametrize("step", range(4))
def test_gradient_check_catches_one_detached_step(monkeypatch, step, what):
    """The check above has teeth: detaching ONE step of the chain (its output, or only the x_t
    the denoiser sees) gives a d loss / d x_T that differs from the finite difference."""
    import ramac.diffusion as diffusion_module

    model, d, state, noise = _chain_setup()
    want = _finite_difference_wrt_x_T(d, model, state, noise)
    original = diffusion_module.kernels.posterior_step
    calls = []

    def step_with_a_break(x, eps, z, c):
        calls.append(None)
        broken = len(calls) - 1 == step
        if broken and what == "denoiser_input":  # eps computed again from a detached x_t
            t = torch.full((x.shape[0],), d.T - 1 - step, dtype=torch.long)
            eps = model(x.detach(), t, state)
        out = original(x, eps, z, c)
        return out.detach() if broken and what == "output" else out

    monkeypatch.setattr(diffusion_module.kernels, "posterior_step", step_with_a_break)
    got = _grad_wrt_x_T(d, model, state, noise)
    assert len(calls) == d.T
    assert (got - want).abs().max() > 1e-3


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
