"""Seeds stacked (ramac.train.stacked): K seeds of one agent as one computation over parameters with
a leading seed dimension. Seed i computes what a single run of seed i computes; each agent stays
usable on its own (evaluation, checkpoints) as views of its slice."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ramac.train.stacked import SeedStack, StackedSeedsUpdater, optimise_per_seed, unstackable
from ramac.train.updaters import SeedsUpdater, make_seeds_updater, make_updater

from test_agents import B, dataset, flat
from test_seeds import SEEDS, seeded_agent

STEPS = 6  # across the BC-only warm-up (3 steps) and the risk phase


def _states(agent):
    """Every parameter and every optimiser state tensor (Adam's moments), flattened."""
    moments = [v.flatten() for o in agent.optimizers() for s in o.state.values() for k, v in s.items() if k != "step"]
    return torch.cat([flat(agent), *moments])


@pytest.mark.parametrize("algo", ["radac", "rafmac", "oraac", "bc", "codac"])
def test_seed_i_of_a_stack_equals_seed_i_alone(algo, device, monkeypatch):
    """Parameters, Adam's moments and metrics of each seed after six updates (on CUDA: two eager
    warm-up steps per phase, then replays of the stack's graph). Fails when a seed's draws come
    from another's noise seed, when the gradient norm is clipped over all seeds at once (tried:
    one norm for the stack), or when an optimiser state is shared."""
    monkeypatch.setenv("RAMAC_STACK_SEEDS", "1")
    data = dataset(device)
    stacked = [seeded_agent(algo, s, device) for s in SEEDS]
    group = make_seeds_updater(stacked, data, B, graph=True, compile=False, warmup=2)
    assert isinstance(group, StackedSeedsUpdater)
    for _ in range(STEPS):
        group.step()
    group.sync()
    if device.type == "cuda":
        assert group.inner.graphs  # the steps after the warm-up were replays
    for seed, agent in zip(SEEDS, stacked):
        alone = seeded_agent(algo, seed, device)
        upd = make_updater(alone, data, B, graph=True, compile=False, warmup=2)
        for _ in range(STEPS):
            upd.step()
        upd.sync()
        assert agent.steps == alone.steps == STEPS and int(agent.step_t) == STEPS
        torch.testing.assert_close(_states(agent), _states(alone), atol=2e-5, rtol=1e-4)
        means, bad = group.updaters[SEEDS.index(seed)].metrics.read()
        want, want_bad = upd.metrics.read()
        assert bad == want_bad == -1 and means.keys() == want.keys()
        torch.testing.assert_close(torch.tensor([means[k] for k in want]), torch.tensor(list(want.values())),
                                   atol=1e-4, rtol=1e-4)
    assert not torch.equal(flat(stacked[0]), flat(stacked[1]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled path is CUDA's")
@pytest.mark.parametrize("operators", [False, True])
def test_the_compiled_stack_computes_what_the_eager_one_does(monkeypatch, operators):
    """Graph + torch.compile (the optimiser steps and averaging as for one agent, each vmapped loss
    compiled on its own: see SeedStack) against the graphed eager stack, radac, six updates; a
    compiled loss that falls back to eager (the check's warning) fails the test. operators: the
    compiled losses call the fused IQN critic and chain as custom operators, one call for all seeds
    (RAMAC_IQN_UNDER_COMPILE=1, RAMAC_CHAIN_UNDER_COMPILE=1)."""
    import warnings

    warnings.simplefilter("error", RuntimeWarning)
    monkeypatch.setenv("RAMAC_STACK_SEEDS", "1")
    if operators:
        monkeypatch.setenv("RAMAC_IQN_UNDER_COMPILE", "1")
        monkeypatch.setenv("RAMAC_CHAIN_UNDER_COMPILE", "1")
    cuda = torch.device("cuda")
    data = dataset(cuda)
    runs = []
    for compile in (False, True):
        agents = [seeded_agent("radac", s, cuda) for s in SEEDS]
        group = make_seeds_updater(agents, data, B, graph=True, compile=compile, warmup=2)
        for _ in range(STEPS):
            group.step()
        group.sync()
        runs.append(torch.cat([_states(a) for a in agents]))
    torch.testing.assert_close(runs[1], runs[0], atol=1e-4, rtol=1e-3)


def test_the_clip_is_per_seed():
    """optimise_per_seed on a stacked gradient scales each seed's slice as clip_grad_norm_ does alone."""
    net = torch.nn.Linear(3, 2)
    with torch.no_grad():
        net.weight.copy_(torch.randn(2, 3))
    grads = [torch.randn(4, *p.shape) * (k + 1) for k, p in enumerate(net.parameters())]
    stacked = torch.nn.Module()
    stacked.w = torch.nn.Parameter(torch.zeros(4, 2, 3))
    stacked.b = torch.nn.Parameter(torch.zeros(4, 2))
    for p, g in zip(stacked.parameters(), grads):
        p.grad = g.clone()
    opt = torch.optim.SGD(stacked.parameters(), lr=1.0)
    norms = optimise_per_seed(((opt, stacked, "n"),), grad_norm=1.5)["n"]
    for k in range(4):
        alone = [g[k].clone() for g in grads]
        ps = [torch.nn.Parameter(torch.zeros_like(a)) for a in alone]
        for p, a in zip(ps, alone):
            p.grad = a
        want = torch.nn.utils.clip_grad_norm_(ps, 1.5)
        torch.testing.assert_close(norms[k], want)
        torch.testing.assert_close(stacked.w.detach()[k], -ps[0].grad)
        torch.testing.assert_close(stacked.b.detach()[k], -ps[1].grad)


def test_a_stacked_seed_saves_and_restores_its_own_slice(tmp_path, monkeypatch):
    """A checkpoint holds one seed's tensors (not the stack's storage) and restores that seed."""
    monkeypatch.setenv("RAMAC_STACK_SEEDS", "1")
    agents = [seeded_agent("radac", s, torch.device("cpu")) for s in SEEDS]
    group = make_seeds_updater(agents, dataset(), B, graph=False, compile=False)
    for _ in range(4):
        group.step()
    state = agents[1].full_state()
    torch.save(state, tmp_path / "one.pt")
    weight = state["model"]["critic1.state_fc.weight"]
    moments = [v for o in state["optimizers"] for s in o["state"].values() for k, v in s.items() if k != "step"]
    assert moments and all(t.untyped_storage().nbytes() == t.numel() * 4 for t in [weight, *moments])
    fresh = seeded_agent("radac", 7, torch.device("cpu"))
    fresh.load_full_state(torch.load(tmp_path / "one.pt", weights_only=False))
    torch.testing.assert_close(_states(fresh), _states(agents[1]))
    assert fresh.steps == 4


def test_the_stack_agents_are_views_that_follow_the_updates(monkeypatch):
    monkeypatch.setenv("RAMAC_STACK_SEEDS", "1")
    agents = [seeded_agent("bc", s, torch.device("cpu")) for s in SEEDS]
    group = make_seeds_updater(agents, dataset(), B, graph=False, compile=False)
    before = flat(agents[2]).clone()
    group.step()
    stack = group.seeds
    name, p = next(iter(stack.params.items()))
    assert p.shape[0] == len(SEEDS) and not torch.equal(flat(agents[2]), before)
    torch.testing.assert_close(dict(agents[2].named_parameters())[name], p.detach()[2])


def test_what_cannot_be_stacked_runs_side_by_side(monkeypatch):
    monkeypatch.setenv("RAMAC_STACK_SEEDS", "1")
    cpu = torch.device("cpu")
    mixed = [seeded_agent("bc", 0, cpu), seeded_agent("radac", 1, cpu)]
    assert unstackable(mixed) == "the agents differ in class or settings"
    assert isinstance(make_seeds_updater(mixed, dataset(), B, graph=False, compile=False), SeedsUpdater)
    late = [seeded_agent("bc", 0, cpu), seeded_agent("bc", 1, cpu)]
    late[1].steps = 3
    assert unstackable(late) == "the agents are at different steps"
    assert unstackable(late[:1]) == "one seed"
    with pytest.raises(ValueError, match="cannot stack these seeds: one seed"):
        SeedStack(late[:1])
    other = seeded_agent("bc", 1, cpu)
    other.cfg = dataclasses.replace(other.cfg, lr_actor=1.0)
    assert unstackable([late[0], other]) == "the agents differ in class or settings"
    monkeypatch.setenv("RAMAC_STACK_SEEDS", "0")
    same = [seeded_agent("bc", s, cpu) for s in SEEDS]
    assert isinstance(make_seeds_updater(same, dataset(), B, graph=False, compile=False), SeedsUpdater)


def test_every_agent_that_names_its_losses_has_those_methods():
    from ramac.agents import ALGOS
    from test_agents import build

    for algo in ALGOS:
        agent = build(algo)
        for name in type(agent).losses:
            assert callable(getattr(agent, name, None)), f"{algo} names {name} in losses"


def test_stacked_seeds_train_and_resume_as_side_by_side_ones(tmp_path, monkeypatch):
    """train_seeds on the bandit, stacked: each seed's checkpoint matches the side-by-side run's, and
    a stacked run resumed from its checkpoints (optimiser states stacked again) ends where one
    stacked run straight through ends."""
    from test_seeds import _bandit, _params
    from ramac.train.group import resume_seeds, train_seeds

    quiet = dict(progress=False, log=lambda *a: None)
    stacks = _count_stacks(monkeypatch)
    agent_cfg, train_cfg = _bandit(40)
    side = [tmp_path / "side" / f"seed{s}" for s in (0, 1)]
    train_seeds(agent_cfg, train_cfg, [0, 1], side, **quiet)
    monkeypatch.setenv("RAMAC_STACK_SEEDS", "1")
    straight = [tmp_path / "straight" / f"seed{s}" for s in (0, 1)]
    train_seeds(agent_cfg, train_cfg, [0, 1], straight, **quiet)
    _, short_cfg = _bandit(20)
    parts = [tmp_path / "parts" / f"seed{s}" for s in (0, 1)]
    train_seeds(agent_cfg, short_cfg, [0, 1], parts, **quiet)
    resume_seeds(tmp_path / "parts", steps=40, **quiet)
    assert stacks == ["radac"] * 3  # straight, parts, resumed
    for a, b, c in zip(side, straight, parts):
        want, got, resumed = _params(a), _params(b), _params(c)
        for k in want:
            torch.testing.assert_close(got[k], want[k], atol=1e-4, rtol=1e-4, msg=k)
            torch.testing.assert_close(resumed[k], got[k], atol=0, rtol=0, msg=k)


def _stack_and_batch(algo="bc"):
    from ramac.train.updaters import batch_indices

    seeds = SeedStack([seeded_agent(algo, s, torch.device("cpu")) for s in SEEDS])
    data = dataset()
    return seeds, data.gather(seeds.call(lambda: batch_indices(seeds.agent, data, B)))


def _fake_compile(calls, spoil):
    def compile(fn, **kw):
        def compiled(*args, **kwargs):
            calls.append(kwargs.get("pack"))
            loss, info = fn(*args, **kwargs)
            return (loss.detach() if spoil else loss), info  # spoil: the gradient lost, as torch 2.13 did
        return compiled
    return compile


def test_a_compiled_loss_that_loses_its_gradient_runs_eagerly(monkeypatch):
    from ramac.train.stacked import _checked_compile

    seeds, b = _stack_and_batch()
    calls = []
    monkeypatch.setattr(torch, "compile", _fake_compile(calls, spoil=True))
    checked = _checked_compile(seeds.agent.actor_loss)
    with pytest.warns(RuntimeWarning, match="differs from its eager form"):
        loss, _ = checked(b)
    assert loss.requires_grad and loss.shape == (len(SEEDS),)
    loss, _ = checked(b)
    assert loss.requires_grad and len(calls) == 1  # eager from then on


def test_a_compiled_loss_returns_its_metrics_packed(monkeypatch):
    from ramac.train.stacked import _checked_compile

    seeds, b = _stack_and_batch()
    calls = []
    monkeypatch.setattr(torch, "compile", _fake_compile(calls, spoil=False))
    checked = _checked_compile(seeds.agent.actor_loss)
    want_loss, want_info = seeds.agent.actor_loss(b)
    for _ in range(2):
        loss, info = checked(b)
        assert loss.requires_grad and info.keys() == want_info.keys()
        torch.testing.assert_close(loss, want_loss)
        for k in info:
            assert not info[k].requires_grad
            torch.testing.assert_close(info[k], want_info[k])
    assert len(calls) == 2 and calls[0] == calls[1] and len(calls[0]) == len(want_info)  # the metrics, packed


def test_a_seed_gone_non_finite_leaves_the_others_as_they_would_be(monkeypatch):
    """Seed 1's weights set to NaN: its metrics report it from the first update on, and seeds 0 and 2
    end where they end alone (its NaN gradient norm cannot reach their clipping, nor its Adam state
    theirs)."""
    monkeypatch.setenv("RAMAC_STACK_SEEDS", "1")
    cpu = torch.device("cpu")
    agents = [seeded_agent("radac", s, cpu) for s in SEEDS]
    group = make_seeds_updater(agents, dataset(), B, graph=False, compile=False)
    with torch.no_grad():
        next(agents[1].critic1.parameters()).fill_(float("nan"))
    for _ in range(4):
        group.step()
    assert group.updaters[1].metrics.read()[1] == 1
    for i in (0, 2):
        assert group.updaters[i].metrics.read()[1] == -1
        alone = seeded_agent("radac", SEEDS[i], cpu)
        upd = make_updater(alone, dataset(), B, graph=False, compile=False)
        for _ in range(4):
            upd.step()
        torch.testing.assert_close(_states(agents[i]), _states(alone), atol=2e-5, rtol=1e-4)


def test_stack_seeds_without_seeds_is_refused_in_one_line(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "ramac", "train", "--stack-seeds", "--run-dir", str(tmp_path / "r")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "--stack-seeds stacks the seeds of --seeds" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_seeds_trained_side_by_side_resume_stacked(tmp_path, monkeypatch):
    """The checkpoints are the same files either way: seeds trained side by side for 20 steps and
    resumed stacked to 40 (their Adam states stacked from theirs) end where 40 side-by-side steps end."""
    from test_seeds import _bandit, _params
    from ramac.train.group import resume_seeds, train_seeds

    quiet = dict(progress=False, log=lambda *a: None)
    agent_cfg, train_cfg = _bandit(40)
    straight = [tmp_path / "straight" / f"seed{s}" for s in (0, 1)]
    train_seeds(agent_cfg, train_cfg, [0, 1], straight, **quiet)
    _, short_cfg = _bandit(20)
    parts = [tmp_path / "parts" / f"seed{s}" for s in (0, 1)]
    train_seeds(agent_cfg, short_cfg, [0, 1], parts, **quiet)
    monkeypatch.setenv("RAMAC_STACK_SEEDS", "1")
    stacks = _count_stacks(monkeypatch)
    resume_seeds(tmp_path / "parts", steps=40, **quiet)
    assert stacks == ["radac"]
    for a, b in zip(straight, parts):  # float drift only: bmm against mm over 20 steps reached 1.8e-4
        want, got = _params(a), _params(b)
        for k in want:
            torch.testing.assert_close(got[k], want[k], atol=1e-3, rtol=1e-3, msg=k)


def test_a_sweep_with_stacked_seeds_trains_every_unit_stacked(tmp_path, monkeypatch):
    """`ramac sweep --stack-seeds`: each unit (a task and agent, its seeds) is one stack; the tables
    are written as for side-by-side seeds."""
    from ramac.cli import main
    from test_sweep import write

    built = _count_stacks(monkeypatch)
    monkeypatch.setenv("RAMAC_STACK_SEEDS", "0")  # recorded, so the "1" that --stack-seeds sets is undone after
    path, out = write(tmp_path, steps=20), tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--device", "cpu", "--stack-seeds"]) == 0
    assert sorted(built) == ["bc", "radac"]
    assert (out / "bandit.md").exists() and len(list(out.glob("runs/*/eval.json"))) == 4


def _count_stacks(monkeypatch) -> list:
    """The agents' names of every SeedStack built from now on (a test that stacking really ran)."""
    from ramac.train import stacked

    built, real = [], stacked.SeedStack.__init__
    monkeypatch.setattr(stacked.SeedStack, "__init__", lambda self, agents: built.append(
        type(agents[0]).name) or real(self, agents))
    return built


def test_a_seeds_weight_pack_follows_the_stacks_eager_updates(monkeypatch):
    """A seed agent's weights are views that share the stack's version counter, so its sampler's
    weight pack (cached on ramac.cuda_graphs.weights_version) is rebuilt after an eager update
    without a sync (tried: binding with p.data = slice, which the counter does not see)."""
    from ramac.cuda_graphs import weights_version

    monkeypatch.setenv("RAMAC_STACK_SEEDS", "1")
    agents = [seeded_agent("radac", s, torch.device("cpu")) for s in SEEDS]
    group = make_seeds_updater(agents, dataset(), B, graph=False, compile=False)
    obs = torch.randn(4, agents[0].state_dim)
    noise = torch.randn(agents[0].diffusion.T + 1, 4, agents[0].action_dim)
    before = weights_version(agents[2].policy.actor_ema.parameters())
    first = agents[2].diffusion.sample_fast(agents[2].policy.actor_ema, obs, noise)
    group.step()
    assert weights_version(agents[2].policy.actor_ema.parameters()) != before
    fresh = agents[2].diffusion.sample_fast(agents[2].policy.actor_ema, obs, noise)
    agents[2].sync()
    torch.testing.assert_close(fresh, agents[2].diffusion.sample_fast(agents[2].policy.actor_ema, obs, noise))
    assert not torch.equal(fresh, first)


def test_a_per_seed_scalar_parameter_is_clipped_too():
    """optimise_per_seed on a stacked 0-d parameter (shape (K,)): its own norm per seed."""
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([3.0, -0.5, 4.0])
    holder = torch.nn.Module()
    holder.p = p
    norms = optimise_per_seed(((torch.optim.SGD([p], lr=1.0), holder, "n"),), grad_norm=1.0)["n"]
    torch.testing.assert_close(norms, torch.tensor([3.0, 0.5, 4.0]))
    torch.testing.assert_close(p.detach(), torch.tensor([-1.0, 0.5, -1.0]), atol=1e-5, rtol=0)


def test_a_bf16_stack_computes_in_bf16_as_its_seeds_do(monkeypatch):
    """Under bf16 autocast a stack's layers compute in bf16, as one seed's do, and seed i ends near
    seed i alone. Fails without ramac.train.stacked.linear_follows_autocast: vmap adds nn.Linear's
    bias in fp32 (pytorch/pytorch#192617), so the stack ran in fp32 (tried: the critics' trunk fp32)."""
    from ramac.nets import IQNCritic

    monkeypatch.setenv("RAMAC_STACK_SEEDS", "1")
    trunks = []
    real = IQNCritic.quantiles
    monkeypatch.setattr(IQNCritic, "quantiles", lambda self, trunk, taus: trunks.append(trunk.dtype) or
                        real(self, trunk, taus))
    data = dataset()
    stacked = [seeded_agent("radac", s, torch.device("cpu")) for s in SEEDS]
    group = make_seeds_updater(stacked, data, B, graph=False, bf16=True, compile=False)
    assert isinstance(group, StackedSeedsUpdater)
    for _ in range(STEPS):
        group.step()
    group.sync()
    assert trunks and set(trunks) == {torch.bfloat16}
    for seed, agent in zip(SEEDS, stacked):
        alone = seeded_agent("radac", seed, torch.device("cpu"))
        upd = make_updater(alone, data, B, graph=False, bf16=True, compile=False)
        for _ in range(STEPS):
            upd.step()
        upd.sync()
        torch.testing.assert_close(flat(agent), flat(alone), atol=2e-3, rtol=2e-2)


def test_stacked_actor_loss_reads_the_critics_as_constants():
    """Under vmap a parameter reports requires_grad=False (a batched wrapper): the critics must be
    read detached there too, or every stacked update computes the critics' weight gradients of the
    actor's risk term and throws them away (4 IQN head-kernel launches per update where 2 are needed)."""
    seeds, b = _stack_and_batch("radac")
    loss, _ = seeds.agent.actor_loss(b, 1.0)
    critics = [p for n, p in seeds.params.items() if n.startswith(("critic1.", "critic2."))]
    actor = [p for n, p in seeds.params.items() if n.startswith("policy.actor.")]
    assert critics and actor
    grads = torch.autograd.grad(loss.sum(), critics + actor, allow_unused=True)
    assert all(g is None for g in grads[:len(critics)])
    assert all(g is not None for g in grads[len(critics):])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fused chain runs on CUDA")
def test_seeds_stacked_through_the_fused_chain_equal_each_seed_alone(monkeypatch):
    """The actor's chain of the stacked seeds (RAMAC_FUSED_CHAIN_STACKED, on by default) is one
    fused launch over the seeds (kernels.chain_grad, a grid axis over the seeds), and each seed
    still trains as alone."""
    from ramac.kernels import chain_grad

    monkeypatch.setenv("RAMAC_FUSED_CHAIN_STACKED", "1")
    calls = []
    real = chain_grad._fused
    monkeypatch.setattr(chain_grad, "_fused", lambda *a, **k: calls.append(k["stacked"]) or real(*a, **k))
    test_seed_i_of_a_stack_equals_seed_i_alone("radac", torch.device("cuda"), monkeypatch)
    assert True in calls and False in calls  # stacked launches, and the seeds alone took the fused chain too


def test_the_stacked_batch_draw_compiles_to_the_eager_draw(monkeypatch):
    """Each seed's batch draw (under vmap) compiled, as the compiled stacked updater runs it, draws
    the eager draw's batches: the same indices for each seed, different ones across seeds."""
    monkeypatch.setenv("RAMAC_STACK_SEEDS", "1")
    agents = [seeded_agent("bc", s, torch.device("cpu")) for s in SEEDS]
    inner = make_seeds_updater(agents, dataset(), B, graph=False, compile=False).inner
    eager = inner._draw_batch()
    torch._dynamo.reset()
    compiled = torch.compile(inner._draw_batch, dynamic=False)()
    torch._dynamo.reset()
    for a, b in zip(eager, compiled):
        assert torch.equal(a, b)
    assert eager.obs.shape[0] == len(SEEDS) and not torch.equal(eager.obs[0], eager.obs[1])
