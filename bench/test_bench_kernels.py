"""Each kernel against its reference op and torch.compile of it: fwd, bwd, full (fwd + bwd)."""

import functools

import pytest
import torch

from ramac.perf.bench import _modes, kernel_cases

from .conftest import synced

OPS = ["quantile_huber", "tail_mean", "posterior_step", "distort_wang", "iqn_critic"]


@functools.lru_cache(maxsize=None)
def _cases():
    return {name: (shape, providers, params) for name, shape, providers, params in kernel_cases(torch.device("cuda"))}


@functools.lru_cache(maxsize=None)
def _compiled(op):
    return torch.compile(_cases()[op][1]["reference"], dynamic=False)


@pytest.mark.parametrize("mode", ["fwd", "bwd", "full"])
@pytest.mark.parametrize("provider", ["reference", "compile", "triton"])
@pytest.mark.parametrize("op", OPS)
def test_kernel(op, provider, mode, record_device):
    shape, providers, params = _cases()[op]
    make_out = _compiled(op) if provider == "compile" else providers[provider]
    modes = _modes(make_out, params) if params else {"fwd": make_out}
    if mode not in modes:
        pytest.skip(f"{op} has no backward")
    record_device.group = f"{op} {shape} {mode}"
    record_device.extra_info.update(op=op, shape=shape, provider=provider, mode=mode)
    record_device.pedantic(synced(modes[mode]), rounds=50, iterations=10, warmup_rounds=5)
