"""The chain sampler over stacked seeds: one launch (a grid axis per seed) for K seeds' weights,
states and noise, and its vmap rule (seeds stacked under torch.func.vmap: ramac.train.stacked)."""

import pytest
import torch

from ramac import kernels
from ramac.kernels.sampler import (
    _PACKED_TENSORS, PackedDenoiser, _ChainPerSeed, sample_chain_ref, sample_chain_stacked_triton,
)

from .test_sampler import packed, tolerance

K = 3


def stacked_packs(S, A, T, hidden=32, device="cpu"):
    """K seeds' packs and the one with every tensor stacked (K leading)."""
    packs = [packed(S, A, T, hidden, seed=k, device=device)[2] for k in range(K)]
    first = packs[0]
    return packs, PackedDenoiser(*(torch.stack([getattr(p, n) for p in packs]) for n in _PACKED_TENSORS),
                                 coefs_host=first.coefs_host, action_dim=A, state_dim=S, max_action=first.max_action)


def inputs(S, A, T, B, device):
    g = torch.Generator().manual_seed(B)
    state = (2 * torch.randn(K, B, S, generator=g)).to(device)
    noise = torch.randn(K, T + 1, B, A, generator=g).to(device)
    return state, noise


@pytest.mark.parametrize("S,A,T", [(17, 6, 5), (1, 2, 3)])
@pytest.mark.parametrize("B", [1, 37])
@pytest.mark.parametrize("precision", ["fp32", "tf32"])
def test_seed_k_of_the_stacked_launch_is_seed_k_alone(S, A, T, B, precision, device):
    """Fails when a seed reads another seed's weights, states or noise (tried: the noise offset
    without the seed's stride)."""
    packs, stack = stacked_packs(S, A, T, device=device)
    state, noise = inputs(S, A, T, B, device)
    got = sample_chain_stacked_triton(stack, state, noise, precision)
    for k, p in enumerate(packs):
        want = sample_chain_ref(p, state[k], noise[k])
        torch.testing.assert_close(got[k], want, atol=tolerance(p, state[k], noise[k], precision, want), rtol=0)


def test_the_vmap_rule_launches_once_for_all_seeds(device, monkeypatch):
    """vmap over the per-seed function: the stacked kernel runs (once), seed k gets its own actions."""
    S, A, T, B = 17, 6, 5, 9
    packs, stack = stacked_packs(S, A, T, device=device)
    state, noise = inputs(S, A, T, B, device)
    launches = []
    real = kernels.sampler.sample_chain_stacked_triton
    monkeypatch.setattr(kernels.sampler, "sample_chain_stacked_triton",
                        lambda *a, **kw: launches.append(1) or real(*a, **kw))
    meta = (A, S, packs[0].max_action, packs[0].coefs_host, "fp32")

    def one(state, noise, *tensors):
        return _ChainPerSeed.apply(meta, state, noise, *tensors)
    got = torch.func.vmap(one)(state, noise, *(getattr(stack, n) for n in _PACKED_TENSORS))
    assert launches == [1]
    for k, p in enumerate(packs):
        torch.testing.assert_close(got[k], sample_chain_ref(p, state[k], noise[k]), atol=1e-5, rtol=0)
    # a tensor shared by the seeds (no batch dimension: the schedule) is broadcast to them
    shared = [getattr(stack, n) if n != "coefs" else packs[0].coefs for n in _PACKED_TENSORS]
    dims = (0, 0, *[None if n == "coefs" else 0 for n in _PACKED_TENSORS])
    again = torch.func.vmap(one, in_dims=dims)(state, noise, *shared)
    torch.testing.assert_close(again, got)


def test_sample_chain_under_vmap_is_each_seeds_chain(device):
    """The public op inside vmap (what stacked seeds call): on CUDA the vmap rule, elsewhere the
    reference op batched by vmap; either way seed k's chain."""
    S, A, T, B = 11, 3, 5, 8
    packs, stack = stacked_packs(S, A, T, device=device)
    state, noise = inputs(S, A, T, B, device)

    def one(state, noise, *tensors):
        p = PackedDenoiser(*tensors, coefs_host=packs[0].coefs_host, action_dim=A, state_dim=S,
                           max_action=packs[0].max_action)
        return kernels.sample_chain(p, state, noise, precision="fp32")
    got = torch.func.vmap(one)(state, noise, *(getattr(stack, n) for n in _PACKED_TENSORS))
    for k, p in enumerate(packs):
        torch.testing.assert_close(got[k], sample_chain_ref(p, state[k], noise[k]), atol=1e-4, rtol=0)


def test_a_stacked_launch_refuses_mismatched_shapes(device):
    packs, stack = stacked_packs(17, 6, 5, device=device)
    state, noise = inputs(17, 6, 5, 4, device)
    with pytest.raises(ValueError, match="state must be"):
        sample_chain_stacked_triton(stack, state[:, :, :3], noise)
    with pytest.raises(ValueError, match="leading dimension of 2 seeds"):
        sample_chain_stacked_triton(stack, state[:2], noise[:2])
