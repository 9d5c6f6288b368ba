"""Whole-chain sampler (HalfCheetah shapes, hidden 256, T = 5) against the reference chain."""

import pytest
import torch

from ramac.diffusion import Diffusion
from ramac.kernels.sampler import sample_chain_ref, sample_chain_triton
from ramac.nets import Denoiser

from .conftest import synced


@pytest.fixture(scope="module")
def packed():
    torch.manual_seed(0)
    model = Denoiser(17, 6, 256).cuda()
    return Diffusion(5, "vp").cuda().pack(model)


@pytest.mark.parametrize("provider", ["reference", "triton-bf16", "triton-tf32"])
@pytest.mark.parametrize("batch", [1, 256, 4096, 65_536])
def test_sampler(packed, batch, provider, record_device):
    state = torch.randn(batch, 17, device="cuda")
    seed = torch.tensor([1], dtype=torch.int64, device="cuda")
    if provider == "reference":
        fn = lambda: sample_chain_ref(packed, state)  # noqa: E731
    else:
        prec = provider.split("-")[1]
        fn = lambda: sample_chain_triton(packed, state, seed=seed, precision=prec)  # noqa: E731
    record_device.group = f"sampler T=5 batch={batch}"
    record_device.extra_info.update(batch=batch, provider=provider)
    with torch.no_grad():
        record_device.pedantic(synced(fn), rounds=30, iterations=5, warmup_rounds=3)
