"""Whole-chain sampler kernel vs the reference chain, and the dispatch switch."""

import os

import numpy as np
import pytest
import torch

from ramac import kernels
from ramac.diffusion import Diffusion
from ramac.envs import bandit
from ramac.kernels.sampler import sample_chain_ref, sample_chain_triton
from ramac.nets import Denoiser

from .helpers import precision_atol

# (state_dim, action_dim, T): the bandit, Hopper, HalfCheetah / Walker2d
TASKS = [(1, 2, 20), (11, 3, 5), (17, 6, 5), (17, 6, 1)]
# Measured on an H200: the kernel's worst tf32 error was 5.1e-3, about twice cuBLAS's own tf32 error
# on that case (helpers.precision_atol).


def tolerance(p, state, noise, precision, want):
    return precision_atol(lambda: sample_chain_ref(p, state, noise), precision, state.device, want)


def packed(S, A, T, hidden=32, seed=0, device="cpu"):
    torch.manual_seed(seed)
    model, diffusion = Denoiser(S, A, hidden).to(device), Diffusion(T, "vp").to(device)
    return model, diffusion, diffusion.pack(model)


@pytest.mark.parametrize("S,A,T", TASKS)
@pytest.mark.parametrize("B", [1, 37])
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_same_noise_same_actions(S, A, T, B, precision, device, monkeypatch):
    model, diffusion, p = packed(S, A, T, device=device)
    g = torch.Generator().manual_seed(B)
    state = (3 * torch.randn(B, S, generator=g)).to(device)
    noise = torch.randn(T + 1, B, A, generator=g).to(device)
    got = sample_chain_triton(p, state, noise, precision=precision)
    want = sample_chain_ref(p, state, noise)
    atol = tolerance(p, state, noise, precision, want)
    torch.testing.assert_close(got, want, atol=atol, rtol=0)
    # and the module-level differentiable chain agrees too: its per-step form (on CUDA Diffusion.sample
    # takes the fused chain kernels, tested at their own precision in test_chain_grad.py)
    monkeypatch.setenv("RAMAC_FUSED_CHAIN", "0")
    with torch.no_grad():
        torch.testing.assert_close(got, diffusion.sample(model, state, noise), atol=atol, rtol=0)


def test_wide_hidden_and_block_options(device):
    model, diffusion, p = packed(17, 6, 5, hidden=128, device=device)
    state, noise = torch.randn(70, 17, device=device), torch.randn(6, 70, 6, device=device)
    want = sample_chain_ref(p, state, noise)
    for bm, bn in ((16, 32), (32, 128), (64, 64)):
        got = sample_chain_triton(p, state, noise, precision="fp32", block_m=bm, block_n=bn)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_seeded_noise_is_reproducible(device):
    _, _, p = packed(3, 2, 4, device=device)
    state = torch.randn(50, 3, device=device)
    a = sample_chain_triton(p, state, seed=7)
    b = sample_chain_triton(p, state, seed=7)
    c = sample_chain_triton(p, state, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    seed_t = torch.tensor([7], dtype=torch.int64, device=device)  # device seed (graph capturable)
    assert torch.equal(a, sample_chain_triton(p, state, seed=seed_t))
    assert a.abs().max() <= 1.0


@pytest.mark.parametrize("precision", [
    "fp32",
    pytest.param("bf16", marks=pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="the Triton interpreter rounds to bf16 differently from the GPU (errors ~4x larger)")),
])
def test_output_distribution_matches_on_the_bandit(precision, device):
    """A BC policy on the bandit data: kernel (Philox noise) and reference (torch noise)
    samples land in the four modes in the same proportions."""
    torch.manual_seed(0)
    data = bandit.make_dataset(4096)
    model, diffusion = Denoiser(1, 2, 64), Diffusion(10, "vp")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2500):
        b = data.sample(256)
        loss = diffusion.bc_loss(model, b.action, b.obs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model, diffusion = model.to(device), diffusion.to(device)
    p = diffusion.pack(model)
    n = 3000
    state = torch.zeros(n, 1, device=device)
    a_k = sample_chain_triton(p, state, seed=1, precision=precision).cpu().numpy()
    a_r = sample_chain_ref(p, state).cpu().numpy()
    share_k = np.bincount(bandit.region_of(a_k), minlength=5) / n
    share_r = np.bincount(bandit.region_of(a_r), minlength=5) / n
    assert share_r[:4].min() > 0.1  # the policy is multi-modal, so the comparison means something
    # two samples of 3000: the standard error of a share is <= 0.9 %, so 4 points is > 3 s.e.
    np.testing.assert_allclose(share_k, share_r, atol=0.04)
    # two-sample Kolmogorov-Smirnov distance per axis, below its 0.1 % critical value (0.050)
    grid = np.linspace(-1, 1, 401)
    for axis in range(2):
        cdf_k = np.searchsorted(np.sort(a_k[:, axis]), grid, side="right") / n
        cdf_r = np.searchsorted(np.sort(a_r[:, axis]), grid, side="right") / n
        assert np.abs(cdf_k - cdf_r).max() < 0.050


def test_dispatch_switch(device):
    _, _, p = packed(3, 2, 4, device=device)
    state, noise = torch.randn(5, 3, device=device), torch.randn(5, 5, 2, device=device)
    with kernels.use("reference"):
        assert kernels.get_backend() == "reference"
        assert not kernels.use_triton(state)
        torch.testing.assert_close(kernels.sample_chain(p, state, noise), sample_chain_ref(p, state, noise))
    assert kernels.get_backend() == "auto"
    assert kernels.use_triton(state) == (device.type == "cuda")
    with pytest.raises(ValueError, match="unknown kernel backend"):
        kernels.set_backend("cuda")


def test_bad_backend_in_environment(monkeypatch):
    monkeypatch.setenv("RAMAC_KERNELS", "fast")
    with pytest.raises(ValueError, match="RAMAC_KERNELS"):
        kernels.get_backend()


def test_shape_errors(device):
    _, _, p = packed(3, 2, 4, device=device)
    with pytest.raises(ValueError, match="state must be"):
        sample_chain_triton(p, torch.zeros(5, 4, device=device))
    with pytest.raises(ValueError, match="noise must be"):
        sample_chain_triton(p, torch.zeros(5, 3, device=device), torch.zeros(4, 5, 2, device=device))


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="checks the interpreter fallback only")
def test_interpreter_is_active_on_cpu():
    assert not torch.cuda.is_available()


if kernels.HAS_TRITON:
    import triton
    import triton.language as tl

    from ramac.kernels._jit import _round_tf32

    @triton.jit
    def _round_kernel(x_ptr, out_ptr, N: tl.constexpr):
        i = tl.arange(0, N)
        tl.store(out_ptr + i, _round_tf32(tl.load(x_ptr + i)))


@pytest.mark.skipif(not kernels.HAS_TRITON, reason="needs Triton")
def test_tf32_rounding_is_to_nearest():
    """The samplers' tf32 operands are rounded to the nearest tf32 (as cuBLAS), not truncated as
    tl.dot's tf32 inputs are: on random values and on ties."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.cat([torch.randn(1000) * 10.0 ** torch.randint(-3, 4, (1000,)),
                   torch.tensor([1 + 2.0**-11, -(1 + 2.0**-11), 1 + 2.0**-11 - 2.0**-23, 0.0, -0.0, 1.0])])
    x = torch.cat([x, torch.zeros(1024 - x.numel())]).to(dev)
    out = torch.empty_like(x)
    _round_kernel[(1,)](x, out, N=1024)
    x64, out64 = x.double().cpu(), out.double().cpu()
    ulp = 2.0 ** (torch.floor(torch.log2(x64.abs().clamp_min(1e-30))) - 10)  # tf32's spacing at x
    assert ((out64 - x64).abs() <= ulp / 2 + 1e-30).all()  # nearest: within half a tf32 spacing
    assert (out.view(torch.int32) & 8191 == 0).all()  # tf32 values: the low 13 bits are zero
    assert out[1000].item() == 1 + 2.0**-10 and out[1001].item() == -(1 + 2.0**-10)  # ties away from zero
    assert out[1002].item() == 1.0


def test_launch_rule_spreads_programs_over_the_sms():
    # bf16: the smallest row block whose programs (seeds x cdiv(B, BM)) fit one wave on the SMs
    from ramac.kernels.sampler import _launch_config
    rows = lambda B, sms, seeds=1: _launch_config(B, "bf16", sms, seeds)[:2]  # noqa: E731
    assert rows(1, 132) == rows(16, 1) == (16, 64)
    assert rows(256, 132) == rows(2048, 132) == (16, 64)  # 16 and 128 programs of 16 rows
    assert rows(2113, 132) == rows(4096, 132) == (64, 64)  # 133 programs of 16 rows: two waves
    assert rows(256, 132, seeds=16) == (64, 64) and rows(256, 15) == (64, 64)
    assert rows(65_536, 132) == rows(256, 3) == (64, 32)  # more than a wave either way


def test_a_launch_setting_too_large_for_the_gpu_falls_back(device, monkeypatch):
    # a GPU with less shared memory per block than an H200 (A100, RTX 30/40, L4) refuses the rule's
    # larger tiles with OutOfResources: the sampler takes a smaller setting, once found per device
    import triton

    from ramac.kernels import sampler

    real, tried = sampler._launch, []

    def small_gpu(p, dot_weights, state, noise, seed, out, precision, tiles, seeds=None):
        tried.append(tiles)
        if tiles[1] > 32:  # this "GPU" has room for 32-column weight tiles only
            raise triton.runtime.errors.OutOfResources(200_000, 101_376, "shared memory")
        return real(p, dot_weights, state, noise, seed, out, precision, tiles, seeds)

    monkeypatch.setattr(sampler, "_launch", small_gpu)
    monkeypatch.setattr(sampler, "_FITTING", {})
    _, _, p = packed(17, 6, 5, hidden=64, device=device)
    g = torch.Generator().manual_seed(0)
    state, noise = torch.randn(37, 17, generator=g).to(device), torch.randn(6, 37, 6, generator=g).to(device)
    want = sample_chain_ref(p, state, noise)
    for _ in range(2):
        got = sample_chain_triton(p, state, noise, precision="bf16", block_n=64)
        torch.testing.assert_close(got, want, atol=tolerance(p, state, noise, "bf16", want), rtol=0)
    assert [t[1] for t in tried] == [64, 32, 32]  # refused once, then the fitting setting straight away


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("S,A,T,hidden,block_n", [(17, 6, 5, 128, 32), (1, 2, 3, 32, 32), (11, 3, 2, 64, 16)])
def test_the_lean_layer_order_computes_the_same_chain(S, A, T, hidden, block_n, precision, device, monkeypatch):
    """RAMAC_SAMPLER_LEAN=1 (layers 1 + 2 and 3 + output in chunks of block_n units): the reference's
    actions within the precision's tolerance, given and Philox noise, and the default order's up to
    the sums' order."""
    model, diffusion, p = packed(S, A, T, hidden=hidden, device=device)
    g = torch.Generator().manual_seed(hidden)
    state = (3 * torch.randn(37, S, generator=g)).to(device)
    noise = torch.randn(T + 1, 37, A, generator=g).to(device)
    want = sample_chain_ref(p, state, noise)
    default = sample_chain_triton(p, state, noise, precision=precision, block_m=16, block_n=block_n)
    seeded = sample_chain_triton(p, state, seed=3, precision=precision, block_m=16, block_n=block_n)
    monkeypatch.setenv("RAMAC_SAMPLER_LEAN", "1")
    got = sample_chain_triton(p, state, noise, precision=precision, block_m=16, block_n=block_n)
    torch.testing.assert_close(got, want, atol=tolerance(p, state, noise, precision, want), rtol=0)
    torch.testing.assert_close(got, default, atol=1e-4 if precision == "fp32" else 2e-2, rtol=0)
    lean_seeded = sample_chain_triton(p, state, seed=3, precision=precision, block_m=16, block_n=block_n)
    torch.testing.assert_close(lean_seeded, seeded, atol=1e-4 if precision == "fp32" else 2e-2, rtol=0)


def test_the_lean_setting_is_checked(monkeypatch):
    from ramac.kernels.sampler import lean_enabled

    monkeypatch.setenv("RAMAC_SAMPLER_LEAN", "yes")
    with pytest.raises(ValueError, match="RAMAC_SAMPLER_LEAN must be 0 or 1, got 'yes'"):
        lean_enabled()
