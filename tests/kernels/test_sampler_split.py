"""The chain over several programs (kernels/sampler_split.py: the tile and GEMV kernels) vs the
reference chain and the one-block kernel; on the GPU with 4 to 16 programs exchanging partials
through the grid barrier (under the interpreter the programs would run one after another, so one
program runs there)."""

import pytest
import torch

from ramac.kernels import sampler, sampler_split
from ramac.kernels.sampler import sample_chain_ref, sample_chain_triton

from .test_sampler import packed, tolerance

pytestmark = pytest.mark.skipif(not sampler.HAS_TRITON, reason="needs Triton")
ON_GPU = torch.cuda.is_available()
PROGRAMS = [4, 8, 16] if ON_GPU else [None]  # one program at H = 256 needs more shared memory than an H200 has
CASES = [("tile", 1), ("tile", 7), ("tile", 16), ("gemv", 1)]


def inputs(S, A, T, B, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(B, S, generator=g)).to(device), torch.randn(T + 1, B, A, generator=g).to(device)


@pytest.mark.parametrize("S,A,T", [(17, 6, 5), (11, 3, 5), (1, 2, 20)])
@pytest.mark.parametrize("kind,B", CASES)
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
@pytest.mark.parametrize("programs", PROGRAMS)
def test_split_chain_matches_the_reference(S, A, T, kind, B, precision, programs, device):
    _, _, p = packed(S, A, T, hidden=256, device=device)
    state, noise = inputs(S, A, T, B, device, seed=B)
    got = sample_chain_triton(p, state, noise, precision=precision, split=kind, programs=programs)
    want = sample_chain_ref(p, state, noise)
    torch.testing.assert_close(got, want, atol=tolerance(p, state, noise, precision, want), rtol=0)


@pytest.mark.parametrize("kind,B", [("tile", 9), ("gemv", 1)])
@pytest.mark.parametrize("programs", PROGRAMS)
def test_split_chain_draws_the_one_block_kernels_noise(kind, B, programs, device):
    """Philox noise from a seed: the same offsets as the one-block kernel, so the same actions up to
    the order of the sums."""
    _, _, p = packed(17, 6, 5, hidden=256, device=device)
    state, _ = inputs(17, 6, 5, B, device)
    one_block = sample_chain_triton(p, state, seed=11, precision="fp32", split=False)
    split = sample_chain_triton(p, state, seed=11, precision="fp32", split=kind, programs=programs)
    torch.testing.assert_close(split, one_block, atol=1e-5, rtol=0)
    other = sample_chain_triton(p, state, seed=12, precision="fp32", split=kind, programs=programs)
    assert not torch.allclose(split, other)


def test_small_batches_take_the_split_kernel(monkeypatch, device):
    monkeypatch.delenv("RAMAC_SPLIT_SAMPLER", raising=False)
    calls = []
    real = sampler.launch_split
    def spy(*a, **k):  # (states, kind, weight dtype)
        calls.append((a[2].shape[0], a[7], a[1][2].dtype))
        return real(*a, **k)

    monkeypatch.setattr(sampler, "launch_split", spy)
    _, _, p = packed(17, 6, 5, hidden=64, device=device)
    for B in (1, 2, 16):  # one state: the split GEMV kernel from fp32 weights (measured fastest there)
        sample_chain_triton(p, inputs(17, 6, 5, B, device)[0], seed=0)
    sample_chain_triton(p, inputs(17, 6, 5, 1, device)[0], seed=0, block_m=16)  # a one-block tile asked for
    sample_chain_triton(p, inputs(17, 6, 5, 1, device)[0], seed=0, num_warps=4)  # one-block warps asked for
    sample_chain_triton(p, inputs(17, 6, 5, 3, device)[0], seed=0, split="tile")
    monkeypatch.setattr(sampler_split, "SPLIT_MAX_HIDDEN", 32)  # wider than the split kernel is measured at
    sample_chain_triton(p, inputs(17, 6, 5, 1, device)[0], seed=0)
    monkeypatch.undo()
    monkeypatch.setattr(sampler, "launch_split", spy)
    monkeypatch.setenv("RAMAC_SPLIT_SAMPLER", "0")
    sample_chain_triton(p, inputs(17, 6, 5, 1, device)[0], seed=0)
    assert calls == [(1, "gemv", torch.float32), (3, "tile", torch.bfloat16)]


def test_split_arguments_are_checked(device):
    _, _, p = packed(17, 6, 5, hidden=64, device=device)
    state, noise = inputs(17, 6, 5, 17, device)
    with pytest.raises(ValueError, match=r"\(tile\) takes at most 16 states"):
        sample_chain_triton(p, state, noise, split="tile")
    with pytest.raises(ValueError, match=r"\(gemv\) takes at most 1 states"):
        sample_chain_triton(p, state[:2], noise[:, :2], split="gemv")
    with pytest.raises(ValueError, match="split must be one of"):
        sample_chain_triton(p, state[:1], noise[:, :1], split="warp")
    for bad in (3, 8):  # not a power of two; 64 / 8 leaves 8 hidden units per program
        with pytest.raises(ValueError, match="programs must be a power of two"):
            sample_chain_triton(p, state[:4], noise[:, :4], split="tile", programs=bad)


@pytest.mark.skipif(not ON_GPU, reason="the grid barrier and CUDA graphs need a GPU")
@pytest.mark.parametrize("kind,B", [("tile", 3), ("gemv", 1)])
def test_split_chain_repeats_and_replays_in_a_cuda_graph(kind, B, device):
    """The barrier state carries over launches (nothing is reset): 200 launches, then the same chain
    captured in a CUDA graph and replayed with new states, give the reference's actions each time."""
    _, _, p = packed(17, 6, 5, hidden=256, device=device)
    state, noise = inputs(17, 6, 5, B, device)
    first = sample_chain_triton(p, state, noise, precision="fp32", split=kind, programs=8)
    torch.testing.assert_close(first, sample_chain_ref(p, state, noise), atol=1e-5, rtol=0)
    for _ in range(200):  # every launch the same actions (a barrier that let a program run ahead would not)
        assert torch.equal(sample_chain_triton(p, state, noise, precision="fp32", split=kind, programs=8), first)
    static_state = state.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side):
        out = sample_chain_triton(p, static_state, noise, precision="fp32", split=kind, programs=8)
    for k in range(5):
        static_state.copy_(state + k)
        graph.replay()
        torch.testing.assert_close(out, sample_chain_ref(p, state + k, noise), atol=1e-5, rtol=0)


@pytest.mark.skipif(not ON_GPU, reason="CUDA graph capture needs a GPU")
def test_split_scratch_is_not_first_made_inside_a_capture(monkeypatch, device):
    """A barrier zeroed only when a graph replays would hang an eager launch before it: a capture
    that would make the scratch is refused with a message saying what to do."""
    _, _, p = packed(17, 6, 5, hidden=64, device=device)
    state, noise = inputs(17, 6, 5, 1, device)
    monkeypatch.setattr(sampler_split, "_SCRATCH", {})
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with pytest.raises(RuntimeError, match="run the sampler once on this device"):
        with torch.cuda.graph(torch.cuda.CUDAGraph(), stream=side):
            sample_chain_triton(p, state, noise, split="tile")
