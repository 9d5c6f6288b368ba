"""The fast path (device-side schedules, CUDA graphs) computes the same updates as the eager one."""

import pytest
import torch
from torch._dynamo.utils import counters

from ramac.agents.radac import RADAC
from ramac.config import RADACConfig
from ramac.data.container import synthetic_dataset
from ramac.train.updaters import DeviceMetrics, FastUpdater
from ramac.nvtx import nvtx_range

S, A, N, B = 17, 6, 512, 32


def dataset(device="cpu"):
    return synthetic_dataset(S, A, N, device=device, terminal_rate=0.1)


def agent(device):
    # both phases (BC warm-up, then risk with a ramp) and both EMA phases happen in 10 steps
    cfg = RADACConfig(actor_hidden=32, critic_hidden=32, embedding_dim=16, n_quantiles=8, n_risk_quantiles=8,
                      n_timesteps=3, eta=0.5, eta_warmup_steps=4, eta_ramp_steps=3, ema_start=3, ema_every=2)
    torch.manual_seed(0)
    return RADAC(S, A, cfg).to(device)


@pytest.mark.parametrize("compiled,graph,operators", [(False, None, False), (True, False, False), (True, True, False),
                                                       (True, True, True)],
                         ids=["plain", "compiled", "compiled-graph", "compiled-graph-operators"])
def test_fast_update_matches_eager(device, compiled, graph, operators, monkeypatch):
    """Same seed and batches: the fast update (graphed on CUDA; losses through torch.compile when
    compiled; operators: the fused IQN critic and chain as custom operators inside the compiled
    losses) leaves the same parameters as the eager update after 10 steps of both phases."""
    if graph and device.type != "cuda":
        pytest.skip("CUDA graphs need a GPU")
    if operators:
        monkeypatch.setenv("RAMAC_IQN_UNDER_COMPILE", "1")
        monkeypatch.setenv("RAMAC_CHAIN_UNDER_COMPILE", "1")
    graph = device.type == "cuda" if graph is None else graph  # plain: graphed wherever it can be
    data = dataset(device)
    eager, fast_agent = agent(device), agent(device)
    init = {k: v.clone() for k, v in eager.state_dict().items()}
    idx = [torch.randint(0, N, (B,), generator=torch.Generator().manual_seed(i)).to(device) for i in range(10)]

    eager_metrics = DeviceMetrics()
    torch.manual_seed(1)
    for i in idx:
        info = eager.update(data.gather(i))
        eager.advanced()
        eager_metrics.add(info, eager.steps)
        eager_metrics.count += 1
    fast = FastUpdater(fast_agent, data, B, graph=graph, indices="given", warmup=2, compile=compiled)
    counters["stats"].clear()
    torch.manual_seed(1)
    for i in idx:
        fast.step(i)
    fast.sync()
    if compiled:  # the losses really ran as compiled graphs (critic, actor without and with risk)
        assert counters["stats"]["unique_graphs"] >= 3
    assert fast_agent.steps == eager.steps == 10
    assert int(fast_agent.step_t) == int(eager.step_t) == 10
    if graph:
        assert set(fast.graphs) == {False, True}  # both phases were replayed from graphs
    # metric means read on the host agree (the read is ordered after the replays): the losses of
    # all ten steps, so a missing or wrong term shows here whatever the parameters do
    means, first_bad = fast.metrics.read()
    want_means, _ = eager_metrics.read()
    assert first_bad == -1 and means["actor/eta"] > 0 and means.keys() == want_means.keys()
    off = {k: (means[k], v) for k, v in want_means.items() if means[k] != pytest.approx(v, rel=1e-3, abs=1e-4)}
    assert not off, off
    want, got = eager.state_dict(), fast_agent.state_dict()
    tol = 2e-4 if graph or compiled else 1e-5
    off = {k: float((v - want[k]).abs().max()) for k, v in got.items()
           if not torch.allclose(v.float(), want[k].float(), atol=tol, rtol=tol)}
    if off and compiled and device.type == "cuda":
        # Inductor's CUDA kernels sum in other orders, and Adam turns rounding-level differences of
        # near-zero gradients into steps of +-lr: compare what each network learned, as a whole
        for net in ("policy.actor.", "policy.actor_ema.", "critic1.", "critic2.", "critic1_target.", "critic2_target."):
            keys = [k for k in want if k.startswith(net)]
            moved = torch.cat([(want[k] - init[k]).flatten() for k in keys]).norm()
            gap = torch.cat([(got[k] - want[k]).flatten() for k in keys]).norm()
            print(f"{net} moved {float(moved):.4g}, gap {float(gap):.4g} ({float(gap / moved):.1%})")
        print("elementwise over", tol, off)
    assert not off, off


def test_updater_argument_errors():
    data = dataset(torch.device("cpu"))
    with pytest.raises(ValueError, match="CUDA graphs"):
        FastUpdater(agent("cpu"), data, B, graph=True)
    fast = FastUpdater(agent("cpu"), data, B, graph=False)
    with pytest.raises(ValueError, match="indices"):
        fast.step(torch.zeros(B, dtype=torch.long))


def test_nvtx_is_free_when_off():
    assert nvtx_range("critic/loss") is nvtx_range("actor/loss")  # one shared null context


def test_critic_quantiles_stay_fp32_under_bf16_autocast():
    from ramac.nets import IQNCritic

    critic = IQNCritic(3, 2, embedding_dim=8, n_cos=4, hidden=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = critic(torch.randn(5, 3), torch.randn(5, 2), torch.rand(5, 4))
        h = critic.head_fc(torch.randn(2, 8))
    assert h.dtype == torch.bfloat16  # autocast is active for the hidden layers
    assert z.dtype == torch.float32


def test_bf16_update_tracks_fp32_and_changes_rounding():
    """bf16 autocast (CPU here) takes the same steps as fp32 up to bf16 rounding."""
    data = dataset(torch.device("cpu"))
    idx = [torch.randint(0, N, (B,), generator=torch.Generator().manual_seed(i)) for i in range(6)]
    params = {}
    for bf16 in (False, True):
        a = agent("cpu")
        fast = FastUpdater(a, data, B, graph=False, bf16=bf16, indices="given")
        torch.manual_seed(1)
        for i in idx:
            fast.step(i)
        assert fast.metrics.read()[1] == -1
        params[bf16] = torch.cat([p.detach().flatten() for p in a.parameters()])
    gap = (params[True] - params[False]).abs().max().item()
    assert 0 < gap < 5e-3  # rounding shows, but the updates agree to bf16 precision


def test_make_updater_picks_the_plain_loop_unless_a_fast_feature_applies():
    from ramac.train.updaters import EagerUpdater, make_updater

    data = dataset(torch.device("cpu"))
    plain = make_updater(agent("cpu"), data, B, graph=True, compile=True)  # neither applies on CPU
    assert isinstance(plain, EagerUpdater)
    fast = make_updater(agent("cpu"), data, B, bf16=True)
    assert isinstance(fast, FastUpdater) and fast.bf16 and not fast.graph


def test_metrics_average_over_the_updates_that_report_them():
    """ORAAC reports its actor's metrics every 2nd update: their mean is over those updates, not
    over all; a metric no update reported since the last read is left out."""
    m = DeviceMetrics()
    for info in ({"critic/loss1": 1.0, "actor/loss": 4.0}, {"critic/loss1": 3.0}, {"critic/loss1": 5.0, "actor/loss": 6.0}):
        m.add({k: torch.tensor(v) for k, v in info.items()}, 1)
        m.count += 1
    means, first_bad = m.read()
    assert means == {"critic/loss1": 3.0, "actor/loss": 5.0} and first_bad == -1
    m.add({"critic/loss1": torch.tensor(2.0)}, 4)
    m.count += 1
    assert m.read()[0] == {"critic/loss1": 2.0}


@pytest.mark.parametrize("bf16", [False, True])
def test_the_updater_tells_the_agent_which_path_it_compiles_for(bf16, monkeypatch):
    """compile_update learns whether the update runs under bf16 autocast (Inductor's shape padding
    is the bf16 path's default alone)."""
    a = agent("cpu")
    seen = []
    monkeypatch.setattr(a, "compile_update", lambda **kw: seen.append(kw))
    FastUpdater(a, dataset(), B, graph=False, bf16=bf16, compile=True)
    assert seen == [{"bf16": bf16}]


def test_compiled_updates_draw_the_eager_batches():
    """With compile on, the batch draw (indices from the device step, then the gathers) runs as one
    compiled function, drawing the indices the eager draw does at every step."""
    data = dataset()
    seen = {}
    for compiled in (False, True):
        a = agent("cpu")
        fast = FastUpdater(a, data, B, graph=False, compile=compiled)
        assert hasattr(fast._draw, "_torchdynamo_orig_callable") == compiled
        seen[compiled] = []
        for _ in range(3):
            fast.step()
            seen[compiled].append(fast.idx.clone())
    assert all(torch.equal(x, y) for x, y in zip(seen[False], seen[True]))
    assert not torch.equal(seen[True][0], seen[True][1])  # the step moves the draw on
