"""The vmap rules of the quantile-Huber loss, the tail mean and the IQN critic (kernels._dispatch.fold_seeds):
under torch.func.vmap over stacked seeds (ramac.train.stacked) each op launches once, over the seeds
folded into its batch (or critic-stack) dimension, and seed k gets what the reference op gives for
seed k alone, in value and in every gradient."""

import pytest
import torch

from ramac.kernels import iqn_critic, quantile_huber, risk

K = 3  # seeds


def rand(*shape, seed, scale=1.0, grad=True):
    t = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale
    return t.requires_grad_(grad)


def to(device, *tensors):
    return [t.detach().to(device).requires_grad_(t.requires_grad) for t in tensors]


def check(got, want, params, tol):
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)
    g_got = torch.autograd.grad(got.pow(2).sum(), params)
    g_want = torch.autograd.grad(want.pow(2).sum(), params)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)


def counted(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **kw: calls.append(1) or real(*a, **kw))
    return calls


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("taus_kind", ["per-seed rows", "shared", "per-seed vector"])
@pytest.mark.parametrize("weighted", [False, True])
def test_quantile_huber_over_stacked_seeds(reduction, taus_kind, weighted, device, monkeypatch):
    """Fails when the fold mixes seeds' rows (tried: per-seed fractions not expanded per sample) or
    reduces over every seed at once (tried: the mean over K x B)."""
    B, N, M = 5, 4, 6
    pred, target = to(device, rand(K, B, N, seed=1), rand(K, B, M, seed=2))
    weight, = to(device, rand(K, B, seed=3, grad=False).abs())
    taus = {"per-seed rows": torch.rand(K, B, N), "shared": torch.rand(N), "per-seed vector": torch.rand(K, N)}[taus_kind]
    taus = taus.to(device)
    per_seed = taus_kind != "shared"
    launches = counted(monkeypatch, quantile_huber, "_launch")

    def loss(p, t, y, w):
        return quantile_huber.quantile_huber_loss_triton(p, t, y, 1.0, w if weighted else None, reduction)
    got = torch.func.vmap(loss, in_dims=(0, 0 if per_seed else None, 0, 0))(pred, taus, target, weight)
    assert len(launches) == 1
    want = torch.stack([quantile_huber.quantile_huber_loss_ref(
        pred[k], taus[k] if per_seed else taus, target[k], 1.0, weight[k] if weighted else None, reduction)
        for k in range(K)])
    check(got, want, [pred, target], 1e-5)


@pytest.mark.parametrize("weights_kind", [None, "shared", "per-seed"])
def test_tail_mean_over_stacked_seeds(weights_kind, device, monkeypatch):
    B, N = 6, 8
    z1, z2 = to(device, rand(K, B, N, seed=4), rand(K, B, N, seed=5))
    w = {None: None, "shared": torch.rand(N), "per-seed": torch.rand(K, N)}[weights_kind]
    w = None if w is None else w.to(device)
    launches = counted(monkeypatch, risk.TailMeanFn, "apply")
    got = torch.func.vmap(risk.tail_mean_triton, in_dims=(0, 0, 0 if weights_kind == "per-seed" else None))(z1, z2, w)
    assert len(launches) == (0 if weights_kind == "per-seed" else 1)  # per-seed weights: the reference form
    want = torch.stack([risk.tail_mean_ref(z1[k], z2[k], None if w is None else w[k] if w.dim() == 2 else w)
                        for k in range(K)])
    check(got, want, [z1, z2], 1e-5)


@pytest.mark.parametrize("critics", [(), (2,)])
@pytest.mark.parametrize("taus_kind", ["per-seed rows", "shared vector", "per-seed vector", "shared rows"])
def test_iqn_critic_over_stacked_seeds(critics, taus_kind, device, monkeypatch):
    """Seeds become stacked critics (C' = K x C): fails when a seed's weights meet another seed's trunk
    or fractions (tried: fractions shared by the seeds broadcast without the critics' dimension)."""
    B, N, E, H = 4, 5, 8, 16
    trunk, = to(device, torch.relu(rand(K, *critics, B, E, seed=6)))
    weights = to(device, *(rand(K, *critics, *shape, seed=7 + i, scale=0.3)
                           for i, shape in enumerate([(E, N), (E,), (H, E), (H,), (1, H), (1,)])))
    taus = {"per-seed rows": torch.rand(K, B, N), "shared vector": torch.rand(N), "per-seed vector": torch.rand(K, N),
            "shared rows": torch.rand(B, N)}[taus_kind].to(device)
    per_seed = taus_kind.startswith("per-seed")
    plans = counted(monkeypatch, iqn_critic._Plan, "forward")
    got = torch.func.vmap(iqn_critic.iqn_quantiles_triton, in_dims=(0, 0 if per_seed else None) + (0,) * 6)(
        trunk, taus, *weights)
    assert len(plans) == 1
    want = torch.stack([iqn_critic.iqn_quantiles_ref(trunk[k], taus[k] if per_seed else taus, *(w[k] for w in weights))
                        for k in range(K)])
    check(got, want, [trunk, *weights], 1e-4 if device.type == "cpu" else 2e-3)


def test_a_vmap_run_eagerly_inside_torch_compile_takes_the_rule(device):
    """A graph break in a vmapped body makes torch.compile run the vmap eagerly and compile the frames
    it calls: the rule must stay an eager op (without torch.compiler.disable on it, torch.compile traced
    the kernel's launch and failed, on the GPU in Inductor and on the CPU in the interpreter)."""
    B, N = 4, 5
    pred, target = to(device, rand(K, B, N, seed=1), rand(K, B, N, seed=2, grad=False))
    taus = torch.rand(N, generator=torch.Generator().manual_seed(3)).to(device)

    @torch.compiler.disable
    def graph_break(x):
        return x

    def loss(p, t, y):
        return quantile_huber.quantile_huber_loss_triton(graph_break(p), t, y, 1.0)
    torch._dynamo.reset()
    got = torch.compile(lambda p, t, y: torch.func.vmap(loss, in_dims=(0, None, 0))(p, t, y))(pred, taus, target)
    want = torch.stack([quantile_huber.quantile_huber_loss_ref(pred[k], taus, target[k]) for k in range(K)])
    check(got, want, [pred], 1e-5)
