"""The differentiable chain (kernels.chain_grad): the reference op is Diffusion.sample's chain, and the
fused forward + backward kernels match it in value and in every weight's gradient."""

import inspect

import pytest
import torch

from ramac import kernels
from ramac.diffusion import Diffusion
from ramac.kernels import chain_grad
from ramac.kernels.chain_grad import denoise_chain, denoise_chain_ref, denoise_chain_triton
from ramac.nets import Denoiser

from .helpers import compiled_graphs

NAMES = ("w1", "b1", "w2", "b2", "w3", "b3", "w4", "b4", "t_emb")


def setup(B, S, A, H, T, device, seed=0, max_action=1.0, scale=1.0):
    """A denoiser with random weights (scaled up so that the clamps and Mish's curved part are both
    reached), its chain's noise and a state batch."""
    torch.manual_seed(seed)
    model = Denoiser(S, A, H).to(device)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    diffusion = Diffusion(T, "vp", max_action=max_action).to(device)
    g = torch.Generator().manual_seed(seed + 1)
    state = torch.randn(B, S, generator=g).to(device)
    noise = torch.randn(T + 1, B, A, generator=g).to(device)
    return model, diffusion, state, noise


def chain_args(model, diffusion):
    l1, l2, l3 = model.mid[0], model.mid[2], model.mid[4]
    t_emb = model.time_mlp(torch.arange(diffusion.T, device=l1.weight.device))
    coefs = [tuple(c)[:5] for c in diffusion._steps]
    return [l1.weight, l1.bias, l2.weight, l2.bias, l3.weight, l3.bias, model.final.weight, model.final.bias,
            t_emb], coefs


def run(fn, model, diffusion, state, noise, g_out, **kw):
    params, coefs = chain_args(model, diffusion)
    wrt = list(model.parameters())
    out = fn(state, noise, *params, coefs, diffusion.max_action, **kw)
    return out.detach(), torch.autograd.grad(out, wrt, g_out)


def test_the_reference_op_is_diffusion_sample(device):
    model, diffusion, state, noise = setup(9, 5, 3, 32, 4, device, scale=2.0)
    g_out = torch.randn(9, 3, device=device)
    with kernels.use("reference"):
        want = model(noise[0], torch.zeros(9, dtype=torch.long, device=device), state)  # (touch the model once)
        want = diffusion.sample(model, state, noise)
        grads_want = torch.autograd.grad(want, list(model.parameters()), g_out)
    got, grads_got = run(denoise_chain_ref, model, diffusion, state, noise, g_out)
    torch.testing.assert_close(got, want.detach(), atol=1e-6, rtol=1e-6)
    for name, a, b in zip([n for n, _ in model.named_parameters()], grads_got, grads_want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=name)


# (B, S, A, H, T, max_action, weight scale): partial row blocks (B 37), one state, one action dim,
# S and A padded (17 -> 32, 6 -> 16), one step, clamps binding (small max_action, large weights)
SHAPES = [
    (37, 17, 6, 32, 5, 1.0, 1.0),
    (1, 3, 1, 16, 1, 100.0, 1.0),  # (no clamp binds: one sample, whose gradient must not be clamped to 0)
    (20, 11, 3, 64, 3, 0.3, 2.0),
    (33, 5, 2, 16, 5, 1.0, 3.0),
]


@pytest.mark.parametrize("B, S, A, H, T, max_action, scale", SHAPES)
def test_the_fused_chain_matches_the_reference_in_value_and_every_gradient(B, S, A, H, T, max_action, scale, device):
    model, diffusion, state, noise = setup(B, S, A, H, T, device, seed=B, max_action=max_action, scale=scale)
    g_out = torch.randn(B, A, generator=torch.Generator().manual_seed(7)).to(device)
    want, grads_want = run(denoise_chain_ref, model, diffusion, state, noise, g_out)
    got, grads_got = run(denoise_chain_triton, model, diffusion, state, noise, g_out, precision="ieee")
    assert got.shape == (B, A) and got.abs().max() <= max_action
    tol = 1e-4 if device.type == "cpu" else 1e-3  # fp32 sums in another order (GPU: ieee dots)
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)
    for (name, _), a, b in zip(model.named_parameters(), grads_got, grads_want):
        scale_b = max(1e-6, b.abs().max().item())  # relative to the largest entry, however small
        torch.testing.assert_close(a, b, atol=tol * scale_b, rtol=tol, msg=name)


def test_only_the_fused_path_runs_on_cuda_and_the_reference_elsewhere(device, monkeypatch):
    import ramac.kernels.chain_grad as chain_grad

    model, diffusion, state, noise = setup(4, 5, 2, 16, 2, device)
    params, coefs = chain_args(model, diffusion)
    called = []
    monkeypatch.setattr(chain_grad, "denoise_chain_triton", lambda *a, **k: called.append(1) or a[1][0][:, :2])
    denoise_chain(state, noise, *params, coefs, 1.0)
    assert called == ([1] if device.type == "cuda" else [])
    with kernels.use("reference"):
        denoise_chain(state, noise, *params, coefs, 1.0)
    assert len(called) == (1 if device.type == "cuda" else 0)


def test_bad_shapes_are_one_clear_error():
    model, diffusion, state, noise = setup(4, 5, 2, 16, 2, torch.device("cpu"))
    params, coefs = chain_args(model, diffusion)
    with pytest.raises(ValueError, match="noise"):
        denoise_chain_ref(state, noise[1:], *params, coefs, 1.0)
    with pytest.raises(ValueError, match="w1 must be"):
        denoise_chain_ref(state[:, :4], noise, *params, coefs, 1.0)
    with pytest.raises(ValueError, match="block_m must be one of"):  # 64: an illegal access on an H200
        denoise_chain_triton(state, noise, *params, coefs, 1.0, block_m=64)


def test_diffusion_sample_takes_the_fused_chain_unless_told_not_to(device, monkeypatch):
    """By default (RAMAC_FUSED_CHAIN unset) Diffusion.sample is kernels.denoise_chain (coefficients
    from the device buffer), with the same values and gradients as its per-step chain
    (RAMAC_FUSED_CHAIN=0)."""
    model, diffusion, state, noise = setup(21, 7, 4, 32, 5, device, scale=2.0)
    g_out = torch.randn(21, 4, generator=torch.Generator().manual_seed(3)).to(device)

    def sampled():
        out = diffusion.sample(model, state, noise)
        return out.detach(), torch.autograd.grad(out, list(model.parameters()), g_out)

    monkeypatch.setenv("RAMAC_FUSED_CHAIN", "0")
    want, grads_want = sampled()
    monkeypatch.delenv("RAMAC_FUSED_CHAIN")
    import ramac.kernels.chain_grad as chain_grad

    calls = []
    real = chain_grad.denoise_chain_triton

    def exact(*a, **k):  # the fused chain in exact fp32 (precision may come by position or name)
        calls.append(1)
        bound = inspect.signature(real).bind(*a, **k)
        bound.arguments["precision"] = "ieee"
        return real(*bound.args, **bound.kwargs)

    monkeypatch.setattr(chain_grad, "denoise_chain_triton", exact)
    got, grads_got = sampled()
    assert calls == ([1] if device.type == "cuda" else [])
    big = torch.empty(chain_grad.FUSED_CHAIN_MAX_BATCH + 1, 7, device=device)
    assert not chain_grad.fused_chain_enabled(big) and chain_grad.fused_chain_enabled(state) == (device.type == "cuda")
    tol = 1e-4 if device.type == "cpu" else 1e-3
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)
    for (name, _), a, b in zip(model.named_parameters(), grads_got, grads_want):
        torch.testing.assert_close(a, b, atol=tol * max(1e-6, b.abs().max().item()), rtol=tol, msg=name)


@pytest.mark.parametrize("B, S, A, H, T", [(37, 17, 6, 32, 5), (5, 3, 2, 16, 3)])
def test_bf16_dots_err_no_more_than_twice_torchs_own_bf16(B, S, A, H, T, device):
    """precision="bf16" (bf16 dot inputs, fp32 accumulation and pre-activations) against the fp32
    reference: at most twice the error of the reference itself under bf16 autocast (flash-attention's
    rule), plus 1 % of the largest value, for the actions and every gradient."""
    model, diffusion, state, noise = setup(B, S, A, H, T, device, seed=B, scale=1.5)
    g_out = torch.randn(B, A, generator=torch.Generator().manual_seed(5)).to(device)
    want, grads_want = run(denoise_chain_ref, model, diffusion, state, noise, g_out)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        lowp, grads_lowp = run(denoise_chain_ref, model, diffusion, state, noise, g_out)
    got, grads_got = run(denoise_chain_triton, model, diffusion, state, noise, g_out, precision="bf16")
    for name, a, lo, b in zip(["action"] + [n for n, _ in model.named_parameters()], [got, *grads_got],
                              [lowp, *grads_lowp], [want, *grads_want]):
        scale = b.abs().max().item()
        bound = 2 * (lo.float() - b).abs().max().item() + 1e-2 * scale
        err = (a.float() - b).abs().max().item()
        assert err <= bound, f"{name}: error {err:.3g} > {bound:.3g} (torch bf16: {bound / 2:.3g})"
    assert (got - want).abs().max() > 0  # (the bf16 path did round)


def test_the_state_gets_its_gradient_and_the_noise_is_refused(device):
    model, diffusion, state, noise = setup(19, 5, 3, 16, 3, device, scale=2.0, max_action=100.0)
    params, coefs = chain_args(model, diffusion)
    g_out = torch.randn(19, 3, generator=torch.Generator().manual_seed(2)).to(device)
    s = state.clone().requires_grad_()
    want = torch.autograd.grad(denoise_chain_ref(s, noise, *params, coefs, 100.0), s, g_out)[0]
    got = torch.autograd.grad(denoise_chain_triton(s, noise, *params, coefs, 100.0, precision="ieee"), s, g_out)[0]
    assert want.abs().max() > 0
    torch.testing.assert_close(got, want, atol=1e-4 * want.abs().max().item(), rtol=1e-4)
    with pytest.raises(ValueError, match="no gradient to its noise"):
        denoise_chain_triton(state, noise.clone().requires_grad_(), *params, coefs, 100.0)


def test_the_backward_keeps_fp32_weight_gradients_inside_bf16_autocast(device):
    """The updaters run forward and backward in one autocast region: the backward's GEMMs must not
    drop to bf16 there (the same gradients as a backward outside autocast, bit for bit)."""
    model, diffusion, state, noise = setup(23, 5, 3, 32, 3, device, scale=1.5)
    g_out = torch.randn(23, 3, generator=torch.Generator().manual_seed(4)).to(device)
    params, coefs = chain_args(model, diffusion)
    wrt = list(model.parameters())
    with torch.autocast(device.type, dtype=torch.bfloat16):
        out = denoise_chain_triton(state, noise, *params, coefs, 1.0, precision="bf16")
        inside = torch.autograd.grad(out, wrt, g_out, retain_graph=True)
    outside = torch.autograd.grad(out, wrt, g_out)
    assert all(a.dtype == torch.float32 for a in inside)
    for (name, _), a, b in zip(model.named_parameters(), inside, outside):
        if name.startswith(("mid.2", "mid.4", "final")):  # gradients from the op's own GEMMs alone (the
            assert torch.equal(a, b), name  # time MLP's also pass through autocast-recorded ops outside it)


@pytest.mark.parametrize("precision,tf32", [("bf16", True), ("tf32", True), ("ieee", False)])
def test_the_weight_gradient_products_take_tf32_unless_the_dots_are_exact(precision, tf32, device, monkeypatch):
    """The backward's weight-gradient products run with CUDA matmuls in TF32 where the chain's dots
    are tf32 or bf16, in exact fp32 for "ieee" or with RAMAC_CHAIN_WGRAD_TF32=0; the flag is restored."""
    from ramac.kernels import chain_grad

    seen = []
    real = chain_grad._backward_in_fp32
    monkeypatch.setattr(chain_grad, "_backward_in_fp32",
                        lambda *a: seen.append(torch.backends.cuda.matmul.fp32_precision) or real(*a))
    model, diffusion, state, noise = setup(5, 3, 2, 16, 2, device)
    before = torch.backends.cuda.matmul.fp32_precision
    for off in ("1", "0"):
        monkeypatch.setenv("RAMAC_CHAIN_WGRAD_TF32", off)
        run(denoise_chain_triton, model, diffusion, state, noise, torch.ones(5, 2, device=device), precision=precision)
    assert seen == (["tf32", before] if tf32 else [before, before])
    assert torch.backends.cuda.matmul.fp32_precision == before


@pytest.mark.parametrize("shared_coefs", [False, True])
def test_seeds_stacked_under_vmap_are_each_seeds_own_chain(shared_coefs, device):
    """Under torch.func.vmap (seeds stacked) the fused chain runs once for every seed (a grid axis
    over the seeds): each seed's actions and weight gradients equal its own call's."""
    K, B, S, A, H, T = 3, 9, 5, 2, 16, 3
    seeds = [setup(B, S, A, H, T, device, seed=10 + k, max_action=0.5, scale=2.0) for k in range(K)]
    g_out = torch.randn(K, B, A, generator=torch.Generator().manual_seed(5)).to(device)
    coefs = torch.tensor([list(c) for c in chain_args(*seeds[0][:2])[1]], device=device)
    want, want_grads = [], []
    for k, (model, diffusion, state, noise) in enumerate(seeds):
        params = [p.detach().requires_grad_() for p in chain_args(model, diffusion)[0]]
        out = denoise_chain_triton(state, noise, *params, coefs, 0.5, precision="ieee")
        want.append(out.detach())
        want_grads.append(torch.autograd.grad(out, params, g_out[k]))
    stacked = [torch.stack([chain_args(m, d)[0][i].detach() for m, d, _, _ in seeds]).requires_grad_()
               for i in range(len(NAMES))]
    states, noises = torch.stack([s[2] for s in seeds]), torch.stack([s[3] for s in seeds])
    coef_arg, coef_dim = (coefs, None) if shared_coefs else (coefs.expand(K, *coefs.shape).clone(), 0)

    def one(state, noise, coef, *params):
        return denoise_chain_triton(state, noise, *params, coef, 0.5, precision="ieee")

    got = torch.func.vmap(one, in_dims=(0, 0, coef_dim) + (0,) * len(NAMES))(states, noises, coef_arg, *stacked)
    grads = torch.autograd.grad(got, stacked, g_out)
    tol = 1e-5 if device.type == "cpu" else 1e-4
    torch.testing.assert_close(got.detach(), torch.stack(want), atol=tol, rtol=tol)
    for i, name in enumerate(NAMES):
        torch.testing.assert_close(grads[i], torch.stack([g[i] for g in want_grads]), atol=tol, rtol=tol, msg=name)


def test_the_forward_block_counts_each_seeds_programs(monkeypatch):
    """16 rows per program while seeds x cdiv(B, 16) programs fit one wave on the SMs, else 32: each
    seed's row blocks are separate programs (17 states make two blocks per seed, not 17/16)."""
    from types import SimpleNamespace

    from ramac.kernels.chain_grad import _forward_block

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: SimpleNamespace(multi_processor_count=132))
    cuda = torch.device("cuda")
    assert _forward_block(256, cuda) == 16 and _forward_block(4096, cuda) == 32
    assert _forward_block(256, cuda, seeds=8) == 16 and _forward_block(256, cuda, seeds=9) == 32
    assert _forward_block(17, cuda, seeds=66) == 16 and _forward_block(17, cuda, seeds=70) == 32  # 140 programs
    assert _forward_block(16, cuda, seeds=1000) == 16  # one block per seed holds all its states


# ---- the custom operators for torch.compile (RAMAC_CHAIN_UNDER_COMPILE=1) ----

def _operator_args(model, diffusion, state, noise, lead=()):
    params, _ = chain_args(model, diffusion)
    ops = chain_grad._operands(noise, *params, diffusion.coefs)
    grow = (lambda t: t.expand(*lead, *t.shape).clone()) if lead else (lambda t: t)
    return (grow(state), grow(noise), *(grow(o.detach()).requires_grad_() for o in ops[:-1]), grow(ops[-1]), 1.0,
            "ieee")


@pytest.mark.parametrize("lead", [(), (2,)])
def test_the_chain_operators_registrations(lead, device):
    """Schema, fake (meta) shapes, dtypes and strides and the autograd registration of
    ramac::denoise_chain and its backward operator, alone and with seeds stacked."""
    args = _operator_args(*setup(7, 5, 3, 16, 3, device, scale=2.0), lead=lead)
    torch.library.opcheck(torch.ops.ramac.denoise_chain.default, args,
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
    outs = torch.ops.ramac.denoise_chain.default(*(a.detach() if torch.is_tensor(a) else a for a in args))
    g = torch.randn_like(outs[0])
    torch.library.opcheck(torch.ops.ramac.denoise_chain_backward.default,
                          (g, args[0], args[11], *outs[1:], 1.0, "ieee"), test_utils=("test_schema", "test_faketensor"))


def test_under_compile_the_operator_is_the_chain_when_switched_on(device, monkeypatch):
    """Compiled Diffusion.sample leaves the chain to Inductor by default and calls ramac::denoise_chain
    once with RAMAC_CHAIN_UNDER_COMPILE=1, with the per-step chain's values and gradients (exact fp32
    dots here)."""
    model, diffusion, state, noise = setup(21, 7, 4, 32, 5, device, scale=2.0)
    g_out = torch.randn(21, 4, generator=torch.Generator().manual_seed(3)).to(device)
    wrt = list(model.parameters())

    def sampled(state, noise):
        out = diffusion.sample(model, state, noise)
        return out, torch.autograd.grad(out, wrt, g_out)

    monkeypatch.setenv("RAMAC_FUSED_CHAIN", "0")
    want, grads_want = sampled(state, noise)
    monkeypatch.delenv("RAMAC_FUSED_CHAIN")
    monkeypatch.setattr(chain_grad, "_autocast_precision", lambda state: "ieee")
    _, seen = compiled_graphs(lambda s, n: diffusion.sample(model, s, n), state, noise)
    assert seen and not any("ramac.denoise_chain" in code for code in seen)
    monkeypatch.setenv("RAMAC_CHAIN_UNDER_COMPILE", "1")
    _, seen = compiled_graphs(lambda s, n: diffusion.sample(model, s, n), state, noise)
    assert sum(code.count("ramac.denoise_chain.default(") for code in seen) == 1
    torch._dynamo.reset()
    got, grads_got = torch.compile(sampled, backend="aot_eager")(state, noise)
    torch._dynamo.reset()
    tol = 1e-4 if device.type == "cpu" else 1e-3
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)
    for (name, _), a, b in zip(model.named_parameters(), grads_got, grads_want):
        torch.testing.assert_close(a, b, atol=tol * max(1e-6, b.abs().max().item()), rtol=tol, msg=name)


def test_under_compile_stacked_seeds_share_one_operator_call(device, monkeypatch):
    """Compiled over torch.func.vmap (seeds stacked), the operator's vmap rule runs the chain once for
    every seed, and each seed's actions and weight gradients are its own chain's."""
    K, B, S, A, H, T = 3, 9, 5, 2, 16, 3
    seeds = [setup(B, S, A, H, T, device, seed=10 + k, max_action=0.5, scale=2.0) for k in range(K)]
    g_out = torch.randn(K, B, A, generator=torch.Generator().manual_seed(5)).to(device)
    coefs = seeds[0][1].coefs
    want, want_grads = [], []
    for k, (model, diffusion, state, noise) in enumerate(seeds):
        params = [p.detach().requires_grad_() for p in chain_args(model, diffusion)[0]]
        out = denoise_chain_ref(state, noise, *params, coefs, 0.5)
        want.append(out.detach())
        want_grads.append(torch.autograd.grad(out, params, g_out[k]))
    stacked = [torch.stack([chain_args(m, d)[0][i].detach() for m, d, _, _ in seeds]).requires_grad_()
               for i in range(len(NAMES))]
    states, noises = torch.stack([s[2] for s in seeds]), torch.stack([s[3] for s in seeds])

    def one(state, noise, *params):
        return denoise_chain(state, noise, *params, coefs, 0.5, precision="ieee")

    def run_stacked(states, noises, *stacked):
        got = torch.func.vmap(one)(states, noises, *stacked)
        return got, torch.autograd.grad(got, stacked, g_out)

    monkeypatch.setenv("RAMAC_CHAIN_UNDER_COMPILE", "1")
    _, seen = compiled_graphs(torch.func.vmap(one), states, noises, *stacked)
    assert any("ramac.denoise_chain" in code for code in seen)
    launches = []  # the forward kernel's launches (without the rule vmap would run the operator per seed)
    forward = chain_grad._chain_forward
    monkeypatch.setattr(chain_grad, "_chain_forward", lambda *a: launches.append(1) or forward(*a))
    got, grads = torch.compile(run_stacked, backend="aot_eager")(states, noises, *stacked)
    torch._dynamo.reset()
    assert len(launches) == 1
    tol = 1e-5 if device.type == "cpu" else 1e-4
    torch.testing.assert_close(got, torch.stack(want), atol=tol, rtol=tol)
    for i, name in enumerate(NAMES):
        torch.testing.assert_close(grads[i], torch.stack([g[i] for g in want_grads]), atol=tol, rtol=tol, msg=name)


def test_the_under_compile_setting_is_checked(monkeypatch):
    monkeypatch.setenv("RAMAC_CHAIN_UNDER_COMPILE", "yes")
    with pytest.raises(ValueError, match="RAMAC_CHAIN_UNDER_COMPILE must be 0 or 1, got 'yes'"):
        chain_grad.under_compile()
