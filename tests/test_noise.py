"""ramac.noise: the counter-based draws of the updates."""

from __future__ import annotations

import math

import pytest
import torch

from ramac.noise import Noise, mix, mix_int


def noise(seed=3, step=7, **kw):
    return Noise.at(torch.tensor(seed), torch.tensor(step), **kw)


def test_mix_is_splitmix64_in_wrapping_int64():
    """The tensor finaliser equals the python-int reference on words across the whole range
    (a multiplication that saturated or an arithmetic shift left in would differ)."""
    words = torch.randint(-2**63, 2**63 - 1, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.int64)
    words = torch.cat([words, torch.tensor([0, 1, -1, 2**63 - 1, -2**63])])
    got = [int(v) & (2**64 - 1) for v in mix(words)]
    assert got == [mix_int(int(w)) for w in words]
    assert mix_int(0) == 0 and mix_int(1) == 0x5692161D100B05E5  # splitmix64's finaliser of 1


def test_the_laws():
    n = noise()
    u, z, k = n.rand("u", (200_000,)), n.randn("z", (200_000,)), n.randint("k", 7, (70_000,))
    assert 0 <= float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.003 and abs(float(u.var()) - 1 / 12) < 0.001
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
    assert abs(float((z.abs() < 1.96).float().mean()) - 0.95) < 0.003
    counts = torch.bincount(k, minlength=7).float()
    assert int(k.min()) == 0 and int(k.max()) == 6 and float((counts - 10_000).abs().max()) < 500
    pair = torch.stack([n.rand("a", (50_000,)), n.rand("b", (50_000,))])
    assert abs(float(torch.corrcoef(pair)[0, 1])) < 0.02  # two names: unrelated draws


def test_same_inputs_same_numbers_and_each_input_matters():
    base = noise().randn("x", (64,))
    assert torch.equal(noise().randn("x", (64,)), base)
    for other in (noise(seed=4).randn("x", (64,)), noise(step=8).randn("x", (64,)), noise().randn("y", (64,)),
                  noise(scope="actor").randn("x", (64,)), noise().sub("actor").sub("bc").randn("x", (64,))):
        assert not torch.equal(other, base)
    assert torch.equal(noise(scope="actor").randn("x", (64,)), noise().sub("actor").randn("x", (64,)))


@pytest.mark.parametrize("batch_dim", [0, 1])
def test_shards_of_the_global_batch_put_together_are_the_global_draw(batch_dim):
    shape = (6, 4, 3) if batch_dim == 0 else (5, 4, 3)
    whole = list(shape)
    whole[batch_dim] *= 3
    want = noise().randn("x", whole, batch_dim=batch_dim)
    parts = [noise(shard=(r, 3)).randn("x", shape, batch_dim=batch_dim) for r in range(3)]
    assert torch.equal(torch.cat(parts, dim=batch_dim), want)


def test_bad_shards_and_bounds_are_refused():
    with pytest.raises(ValueError, match="shard"):
        noise(shard=(2, 2))
    with pytest.raises(ValueError, match="high"):
        noise().randint("k", 0, (3,))


def test_compiled_draws_equal_eager_ones_without_graph_breaks(device):
    from torch._dynamo.utils import counters

    seed, step = torch.tensor(5, device=device), torch.tensor(11, device=device)

    def f(x):
        n = Noise.at(seed, step, "critic")
        return x + n.sub("a").randn("eps", x.shape) * n.rand("u", x.shape) + n.randint("t", 5, x.shape)

    counters["graph_break"].clear()
    x = torch.zeros(64, 33, device=device)
    got = torch.compile(f, options={"fallback_random": True})(x)
    torch.testing.assert_close(got, f(x), atol=1e-6, rtol=1e-6)
    assert not counters["graph_break"]
    assert math.isfinite(float(got.sum()))
