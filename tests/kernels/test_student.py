"""One-launch flow-student kernel vs the reference op, the reference op vs the nn.Module, and the
flow policy's fast path."""

import os

import pytest
import torch

from ramac import kernels
from ramac.agents.configs import FlowActorConfig
from ramac.flow import FlowPolicy
from ramac.kernels.student import pack_student, student_forward_ref, student_forward_triton
from ramac.nets import FlowMLP
from ramac.noise import Noise

from .helpers import precision_atol

# (state_dim, action_dim, hidden, layers): the bandit with one layer; a hidden width that is not a
# power of two (padded to 64); Hopper with 3 layers (input layer paired); HalfCheetah with 4 (alone);
# one action dim and 5 layers (a pair of hidden layers between the first and the last pair)
SHAPES = [(1, 2, 32, 1), (3, 2, 48, 2), (11, 3, 64, 3), (17, 6, 64, 4), (5, 1, 16, 5)]
# bf16: the kernel rounds [s, z] and each activation to bf16 (7 mantissa bits); through up to six
# matrices that is ~1e-2 on actions of unit scale (worst seen in the interpreter: 3.1e-2 at
# 4 x 512, where torch's own bf16 autocast error was 2.1e-2; the interpreter rounds bf16
# differently from the GPU): helpers.precision_atol with cpu_lowp.


def student(S, A, H, L, device, seed=0):
    """A FlowMLP whose raw outputs are centred with unit spread on the test inputs, so that with
    max_action 1 about a third of the actions hit the clip."""
    torch.manual_seed(seed)
    mlp = FlowMLP(S + A, A, H, L).to(device)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        raw = mlp(3 * torch.randn(512, S, generator=g).to(device), torch.randn(512, A, generator=g).to(device))
        mlp.net[-1].weight.div_(raw.std(0)[:, None])
        mlp.net[-1].bias.sub_(raw.mean(0)).div_(raw.std(0))
    return mlp


def inputs(S, A, B, device, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(B, S, generator=g)).to(device), torch.randn(B, A, generator=g).to(device)


def tolerance(p, state, z, precision, want):
    return precision_atol(lambda: student_forward_ref(p, state, z), precision, state.device, want, cpu_lowp=True)


@pytest.mark.parametrize("S,A,H,L", SHAPES)
@pytest.mark.parametrize("B", [1, 37])
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_kernel_matches_reference(S, A, H, L, B, precision, device):
    p = pack_student(student(S, A, H, L, device), max_action=1.0)
    state, z = inputs(S, A, B, device)
    got = student_forward_triton(p, state, z, precision=precision)
    want = student_forward_ref(p, state, z)
    torch.testing.assert_close(got, want, atol=tolerance(p, state, z, precision, want), rtol=0)
    if B > 1:  # the case exercises the clip, and not only the clip
        clipped = (want.abs() == 1.0).float().mean()
        assert 0.1 < clipped < 0.9, float(clipped)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fqls_shape(precision, device):
    """FQL's student: 4 x 512, HalfCheetah's 17 + 6 inputs (padded to 32)."""
    p = pack_student(student(17, 6, 512, 4, device), max_action=1.0)
    state, z = inputs(17, 6, 37, device)
    got = student_forward_triton(p, state, z, precision=precision)
    want = student_forward_ref(p, state, z)
    torch.testing.assert_close(got, want, atol=tolerance(p, state, z, precision, want), rtol=0)


@pytest.mark.parametrize("L", [3, 4])
def test_block_options(L, device):
    p = pack_student(student(17, 6, 128, L, device), max_action=1.0)
    state, z = inputs(17, 6, 70, device)  # 70: no block size divides it
    want = student_forward_ref(p, state, z)
    for bm, bn in ((16, 16), (32, 64), (64, 128)):
        got = student_forward_triton(p, state, z, precision="fp32", block_m=bm, block_n=bn)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("L", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reference_is_the_module_bit_for_bit(L, dtype):
    mlp = student(5, 3, 40, L, "cpu").to(dtype)
    state, z = (t.to(dtype) for t in inputs(5, 3, 33, "cpu"))
    p = pack_student(mlp, max_action=0.7)
    with torch.no_grad():
        assert torch.equal(student_forward_ref(p, state, z), mlp(state, z).clamp(-0.7, 0.7))


def test_pack_from_weight_pairs_and_bad_input():
    mlp = student(3, 2, 16, 2, "cpu")
    linears = [m for m in mlp.net if isinstance(m, torch.nn.Linear)]
    state, z = inputs(3, 2, 9, "cpu")
    by_module = student_forward_ref(pack_student(mlp, 1.0), state, z)
    assert torch.equal(student_forward_ref(pack_student([(m.weight, m.bias) for m in linears], 1.0), state, z),
                       by_module)
    assert torch.equal(student_forward_ref(pack_student(linears, 1.0), state, z), by_module)
    p = pack_student(mlp, 1.0)
    assert (p.state_dim, p.action_dim, p.hidden, p.n_hidden) == (3, 2, 16, 2)
    with pytest.raises(ValueError, match="at least one hidden layer"):
        pack_student(linears[-1:], 1.0)
    with pytest.raises(ValueError, match="layer 1"):
        pack_student([linears[0], torch.nn.Linear(8, 16), linears[2]], 1.0)
    with pytest.raises(ValueError, match="exact GELU"):
        pack_student(torch.nn.Sequential(linears[0], torch.nn.GELU("tanh"), linears[2]), 1.0)
    with pytest.raises(ValueError, match="state must be"):
        student_forward_triton(p, torch.zeros(4, 5), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="z must be"):
        student_forward_ref(p, torch.zeros(4, 3), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="precision"):
        student_forward_triton(p, state, z, precision="fp16")


def test_philox_noise(device):
    p = pack_student(student(2, 2, 32, 1, device), max_action=1.0)
    state = torch.zeros(1024, 2, device=device)
    a = student_forward_triton(p, state, seed=7)
    assert torch.equal(a, student_forward_triton(p, state, seed=7))
    assert not torch.equal(a, student_forward_triton(p, state, seed=8))
    seed_t = torch.tensor([7], dtype=torch.int64, device=device)  # device seed (graph capturable)
    assert torch.equal(a, student_forward_triton(p, state, seed=seed_t))
    b = student_forward_ref(p, state)  # torch's noise: the same law of actions
    # 1024 samples each: the standard error of a mean is <= 1 / 32 of a spread <= 1
    torch.testing.assert_close(a.mean(0), b.mean(0), atol=0.15, rtol=0)
    torch.testing.assert_close(a.std(0), b.std(0), atol=0.1, rtol=0)


def test_dispatch(device):
    p = pack_student(student(3, 2, 16, 2, device), max_action=1.0)
    state, z = inputs(3, 2, 5, device)
    with kernels.use("reference"):
        assert torch.equal(kernels.student_sample(p, state, z), student_forward_ref(p, state, z))
    got = kernels.student_sample(p, state, z, "fp32")
    if device.type == "cuda":
        torch.testing.assert_close(got, student_forward_triton(p, state, z, precision="fp32"))
    else:
        assert torch.equal(got, student_forward_ref(p, state, z))


def flow_policy(device, precision="bf16"):
    torch.manual_seed(0)
    cfg = FlowActorConfig(actor_hidden=32, actor_layers=2, sampler_precision=precision)
    return FlowPolicy(3, 2, cfg).to(device)


def test_policy_fast_path_is_the_module(device):
    """sample_fast and act draw the same noise as the module path: on CPU the same actions
    bit for bit; on CUDA within the fp32 kernel's tolerance."""
    policy = flow_policy(device, "fp32")
    obs = torch.randn(37, 3, device=device)
    exact = device.type != "cuda"

    def same(a, b):
        assert torch.equal(a, b) if exact else torch.allclose(a, b, atol=1e-5, rtol=0)

    noise = Noise.at(torch.tensor(3, device=device), torch.tensor(0, device=device))
    fast = policy.sample_fast(obs, noise=noise)
    with torch.no_grad():
        same(fast, policy.sample(obs, noise))
    acted = policy.act(obs, torch.Generator(device).manual_seed(5))
    z = torch.randn(37, policy.actor.action_dim, device=device, generator=torch.Generator(device).manual_seed(5))
    with torch.no_grad():
        same(acted, policy._clip(policy.actor.student(obs, z)))


def test_policy_pack_follows_the_weights(device):
    policy = flow_policy(device)
    packed = policy.pack()
    assert policy.pack() is packed  # cached while the weights stay
    policy.actor.student(torch.randn(4, 3, device=device), torch.randn(4, 2, device=device)).sum().backward()
    policy.opt.step()  # an in-place update bumps the parameters' versions: a new pack
    assert policy.pack() is not packed
    packed = policy.pack()
    policy.forget_packs()  # what the agents call before graph capture and after replays
    assert policy.pack() is not packed
    torch.testing.assert_close(policy.pack().weights[0], policy.actor.student.net[0].weight, rtol=0, atol=0)


def test_bench_student_builds_rows(device):
    """The bench's student part on a tiny student at batch 2 (on CPU the Triton rows run in the
    interpreter; on CUDA the graphed rows too)."""
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("Triton on CPU tensors needs the interpreter")
    from ramac.perf.bench import bench_student

    rows = bench_student(device, batches=(2,), shapes=((32, 2),), radac_hidden=32, compile_ref=False, blocks=2)
    assert [r for r in rows if "error" in r] == []
    student_rows = [r for r in rows if r["op"] == "student"]
    providers = {r["provider"] for r in student_rows}
    assert {"reference", "module", "triton-bf16", "triton-tf32", "triton-bf16-philox"} <= providers
    assert all(r["ratio_vs_radac_sampler"] > 0 and r["tflop_per_s"] > 0 for r in student_rows)
    if device.type == "cuda":
        assert "graphed-student" in providers and any(r["launch"] == "graph" for r in student_rows)
