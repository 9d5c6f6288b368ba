"""What one RADAC update and the evaluation loop compute, checked against values written out
here: the bootstrapped TD target, the EMA schedule, the eta warm-up and ramp, top_k and
softmax action selection, evaluation horizons and the auto-reset mask."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from ramac import kernels
from ramac.agents import make_agent
from ramac.agents.policy import DiffusionPolicy
from ramac.config import build_configs
from ramac.data import Batch, OfflineDataset
from ramac.envs.mujoco import EVAL_HORIZON
from ramac.evaluation import evaluate_preset, run_episodes

S, A = 3, 2
TINY = dict(actor_hidden=16, n_timesteps=3, critic_hidden=16, embedding_dim=8, n_quantiles=4, n_risk_quantiles=4)


def build(algo="radac", **over):
    cfg, _ = build_configs("halfcheetah-medium-expert", algo, agent_overrides={**TINY, **over})
    torch.manual_seed(0)
    return make_agent(algo, S, A, cfg)


def dataset(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return OfflineDataset.from_arrays({
        "obs": torch.randn(n, S, generator=g), "action": torch.rand(n, A, generator=g) * 2 - 1,
        "reward": 4 * torch.randn(n, generator=g), "next_obs": torch.randn(n, S, generator=g),
        "terminal": (torch.arange(n) % 4 == 0).float(), "timeout": torch.zeros(n),
    })


class StubCritic(nn.Module):
    """Z(s, a, tau) = fn(s, a, tau) for taus (B, K) or shared (K,); records what it was asked."""

    def __init__(self, fn):
        super().__init__()
        self.fn, self.calls = fn, []

    def forward(self, state, action, taus):
        self.calls.append((state.clone(), action.clone(), taus.clone()))
        return self.fn(state, action, taus.expand(state.shape[0], -1) if taus.dim() == 1 else taus)


def constant_actor(denoiser, eps):
    """Make a denoiser predict eps everywhere: with |eps| large, every chain's predicted x0 clips
    to -sign(eps) * max_action, and the last step (mean1 = 1, mean2 = 0) returns exactly that."""
    with torch.no_grad():
        denoiser.final.weight.zero_()
        denoiser.final.bias.fill_(eps)


# ---- TD target -----------------------------------------------------------------------------

def test_td_target_bootstraps_from_the_min_of_the_target_critics_at_the_ema_action(monkeypatch):
    """target_bj = r_b / scale + gamma * (1 - d_b) * min(Z1'(s'_b, a'_b, tau'_bj), Z2'(...)), clipped
    to +-q_clip / scale, with a'_b the EMA actor's action; both critics learn against it."""
    agent = build(reward_norm="std", q_clip=60.0, gamma=0.9, kappa=1.5)
    agent.fit_data(dataset())
    scale = float(agent.reward_scale)
    assert agent.bootstrap and scale > 2.0  # the reward's std, not 1
    constant_actor(agent.actor_ema, 100.0)  # next actions: exactly -1 (EMA actor)
    constant_actor(agent.actor, -100.0)  # the online actor would give +1
    agent.policy.forget_packs()
    # the two target critics cross at tau = 1/2, so min and max differ for every other fraction
    agent.critic1_target = StubCritic(lambda s, a, t: 3 * s[:, :1] + 6 * (t - 0.5) + 2 * a.sum(1, keepdim=True))
    agent.critic2_target = StubCritic(lambda s, a, t: 3 * s[:, :1] - 6 * (t - 0.5) + 2 * a.sum(1, keepdim=True))
    seen = []

    def spy(pred, taus, target, kappa=1.0, weight=None, reduction="mean"):
        seen.append((pred, taus, target, kappa))
        return kernels.quantile_huber_loss_ref(pred, taus, target, kappa, weight, reduction)

    monkeypatch.setattr(kernels, "quantile_huber_loss", spy)
    g = torch.Generator().manual_seed(1)
    next_obs = torch.randn(6, S, generator=g)
    next_obs[:, 0] = torch.tensor([0.5, -0.5, 2.0, 30.0, -30.0, 1.0])  # rows 3, 4: beyond the clip
    reward = torch.tensor([1.0, -2.0, 3.0, 4.0, -5.0, 100.0])
    terminal = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 1.0])  # rows 2, 5 terminal (5 also clipped)
    b = Batch(torch.randn(6, S, generator=g), torch.rand(6, A, generator=g) * 2 - 1, reward, next_obs, terminal)

    loss1, loss2, info = agent.critic_loss(b)

    (s1, a1, tau1), = agent.critic1_target.calls
    (s2, a2, tau2), = agent.critic2_target.calls
    torch.testing.assert_close(s1, next_obs)
    assert torch.equal(tau1, tau2) and tau1.shape == (6, agent.cfg.n_quantiles)  # one set of fractions
    assert (a1 == -1).all() and (a2 == -1).all(), "the next action must come from the EMA actor"
    a_next = -torch.ones(6, 1) * A  # sum of the EMA action's entries
    z1 = 3 * next_obs[:, :1] + 6 * (tau1 - 0.5) + 2 * a_next
    z2 = 3 * next_obs[:, :1] - 6 * (tau1 - 0.5) + 2 * a_next
    clip = 60.0 / scale
    want = (reward[:, None] / scale + 0.9 * (1 - terminal[:, None]) * torch.minimum(z1, z2)).clamp(-clip, clip)
    assert want[[0, 1]].abs().max() < clip and (want[[3, 4]].abs() == clip).all()  # both sides of the clip
    assert (want[2] == reward[2] / scale).all() and (want[5] == clip).all()
    assert len(seen) == 2
    for pred, taus, target, kappa in seen:
        torch.testing.assert_close(target, want)
        assert kappa == pytest.approx(1.5 / scale)  # the Huber threshold stays in reward units
    assert seen[0][0] is not seen[1][0] and torch.equal(seen[0][1], seen[1][1])  # z1, z2 at shared taus
    assert float(info["critic/target_mean"]) == pytest.approx(float(want.mean()) * scale, rel=1e-5)


# ---- EMA schedule ------------------------------------------------------------------------------

def test_ema_copies_before_start_and_averages_after_every_ema_every_steps():
    cfg, _ = build_configs("halfcheetah-medium-expert", "bc",
                           agent_overrides=dict(actor_hidden=8, ema_start=6, ema_every=3, ema_decay=0.8))
    policy = DiffusionPolicy(S, A, cfg)
    with torch.no_grad():
        for p in policy.actor_ema.parameters():
            p.fill_(-5.0)
    ema = -5.0
    for step in range(16):
        live = float(step + 1)
        with torch.no_grad():
            for p in policy.actor.parameters():
                p.fill_(live)
        policy.update_ema(torch.tensor(step))
        if step % 3 == 0:  # steps 0, 3: copy; 6, 9, 12, 15: average with weight 1 - decay
            ema = live if step < 6 else ema + 0.2 * (live - ema)
        for p in policy.actor_ema.parameters():
            torch.testing.assert_close(p, torch.full_like(p, ema), rtol=1e-6, atol=1e-6, msg=f"step {step}")
    # the schedule above, written out: 1 (0), 4 (3), 4.6 (6), 5.68 (9), 7.144 (12), 8.9152 (15)
    assert ema == pytest.approx(8.9152)


def test_update_runs_the_ema_schedule_on_the_step_before_it_advances():
    """Through RADAC.update: after each update's actor step, the EMA actor follows the schedule
    at that update's step (copy before ema_start, then every ema_every steps an average)."""
    agent = build(ema_start=4, ema_every=2, ema_decay=0.7)
    data = dataset()
    agent.fit_data(data)
    ema = [p.detach().clone() for p in agent.actor_ema.parameters()]
    for step in range(9):
        agent.update(data.gather(torch.arange(step, step + 8)))
        agent.advanced()
        live = [p.detach() for p in agent.actor.parameters()]
        if step % 2 == 0:
            w = 1.0 if step < 4 else 0.3
            ema = [e + w * (x - e) for e, x in zip(ema, live)]
        for e, got in zip(ema, agent.actor_ema.parameters()):
            torch.testing.assert_close(got, e, rtol=1e-6, atol=1e-6, msg=f"step {step}")
    assert int(agent.step_t) == agent.steps == 9


# ---- eta warm-up and ramp ----------------------------------------------------------------------

@pytest.mark.parametrize("warmup, ramp, want", [
    (3, 4, [0, 0, 0, 0.125, 0.25, 0.375, 0.5, 0.5, 0.5]),  # ramp over 4 steps, full from step 6
    (3, 0, [0, 0, 0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]),
    (0, 2, [0.25, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]),
    (0, 0, [0.5] * 9),
])
def test_eta_warmup_and_ramp(warmup, ramp, want):
    agent = build(eta=0.5, eta_warmup_steps=warmup, eta_ramp_steps=ramp)
    got = [float(agent.eta_at(torch.tensor(s))) for s in range(9)]
    assert got == pytest.approx(want)


def test_update_uses_eta_and_the_risk_term_on_schedule():
    """update() reads eta at its own step and leaves the risk term out before the warm-up ends."""
    agent = build(eta=0.5, eta_warmup_steps=3, eta_ramp_steps=2)
    data = dataset()
    agent.fit_data(data)
    etas, with_risk = [], []
    for step in range(6):
        info = agent.update(data.gather(torch.arange(8)))
        agent.advanced()
        etas.append(float(info["actor/eta"]))
        with_risk.append("actor/risk" in info)
    assert etas == pytest.approx([0, 0, 0, 0.25, 0.5, 0.5])
    assert with_risk == [False, False, False, True, True, True]


# ---- evaluation-time action selection ----------------------------------------------------------

def given_candidates(monkeypatch, agent, cand):
    """The EMA actor proposes cand (B, N, A) in act(), whatever the state."""
    B, N, A_ = cand.shape
    monkeypatch.setattr(agent.policy, "act", lambda obs, generator=None: cand.reshape(B * N, A_))


def test_top_k_picks_uniformly_among_the_best_k_by_the_risk_value(monkeypatch):
    """Z(s, a, tau) = a_0 + 10 |a_1| (tau - 1/2): the mean ranks by a_0, CVaR_0.1 by
    a_0 - 4.5 |a_1| (its fractions average 0.05). The pick is one of the top_k by CVaR."""
    N, k, B = 8, 3, 400
    agent = build(eval_select="top_k", top_k=k, n_candidates=N, risk="cvar", risk_param=0.1)

    def z(s, a, t):
        return a[:, :1] + 10 * a[:, 1:].abs() * (t - 0.5)

    agent.critic1 = StubCritic(z)
    agent.critic2 = StubCritic(lambda s, a, t: z(s, a, t) + 1.0)  # the min is critic 1
    cand = torch.rand(B, N, A, generator=torch.Generator().manual_seed(1)) * 2 - 1  # distinct
    given_candidates(monkeypatch, agent, cand)
    chosen = agent.act(torch.randn(B, S), generator=torch.Generator().manual_seed(0))
    cand = cand.double()
    cvar = cand[..., 0] - 4.5 * cand[..., 1].abs()  # (B, N)
    order = cvar.argsort(dim=1, descending=True)
    idx = (cand == chosen.double()[:, None, :]).all(-1).float().argmax(1)  # which candidate was picked
    assert torch.equal(cand[torch.arange(B), idx], chosen.double())
    rank = (order == idx[:, None]).float().argmax(1)  # 0 = best by CVaR
    assert (rank < k).all()
    share = torch.bincount(rank, minlength=k).float() / B
    assert (share > 0.2).all(), share  # uniform among the k, not always the best
    by_mean = cand[..., 0].argsort(dim=1, descending=True)[:, :k]
    assert (by_mean != idx[:, None]).all(1).any()  # some picks are outside the mean's top k


def test_softmax_picks_by_target_critic_q(monkeypatch):
    """Probabilities softmax(Q of the target critics): a candidate far better is chosen almost
    always; Q = log(1, 2, 4, 1) gives 1/8, 2/8, 4/8, 1/8. The online critics rank the other way
    round and must not matter."""
    N, B = 4, 4000
    agent = build(eval_select="softmax", n_candidates=N)
    agent.critic1_target = StubCritic(lambda s, a, t: 2 * a[:, :1] + 0 * t)
    agent.critic2_target = StubCritic(lambda s, a, t: 2 * a[:, :1] + 0 * t + 3.0)  # min: target 1
    agent.critic1 = agent.critic2 = StubCritic(lambda s, a, t: -100 * a[:, :1] + 0 * t)

    def pick_shares(a0):
        cand = torch.zeros(B, N, A)
        cand[..., 0] = torch.as_tensor(a0)
        cand[..., 1] = torch.arange(N)  # tells the candidates apart
        given_candidates(monkeypatch, agent, cand)
        chosen = agent.act(torch.zeros(B, S), generator=torch.Generator().manual_seed(0))
        return torch.bincount(chosen[:, 1].long(), minlength=N).float() / B

    far = pick_shares([0.0, 0.3, 9.0, -1.0])  # Q: 0, 0.6, 18, -2
    assert far[2] > 0.999
    shares = pick_shares(0.5 * np.log([1.0, 2.0, 4.0, 1.0]))  # Q = 2 * a_0 = log(1, 2, 4, 1)
    torch.testing.assert_close(shares, torch.tensor([0.125, 0.25, 0.5, 0.125]), atol=0.03, rtol=0)


# ---- evaluation horizons and the auto-reset mask -----------------------------------------------

class CountingEnv(gym.Env):
    """Its first episode lasts (reset seed % 4) + 1 steps (even lengths end by termination, odd
    ones by truncation) and pays 1 per step, risky on the first step only. After an auto-reset
    it plays on: later episodes pay 1000 per step, every step risky. obs = (episode, t)."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.length, self.episode = seed % 4 + 1, 0
        else:
            self.episode += 1
        self.t = 0
        return np.array([self.episode, 0], np.float32), {}

    def step(self, action):
        if self.episode > 10:  # a loop that never sees the end would otherwise run forever
            raise RuntimeError("the evaluation loop ran on long after every episode ended")
        self.t += 1
        end = self.t >= self.length
        reward = 1.0 if self.episode == 0 else 1000.0
        info = {"risky": self.episode > 0 or self.t == 1}
        obs = np.array([self.episode, self.t], np.float32)
        return obs, reward, end and self.length % 2 == 0, end and self.length % 2 == 1, info


@pytest.mark.parametrize("horizon", [None, 3])
def test_episodes_stop_counting_when_they_end_and_at_the_horizon(horizon):
    """Episodes of lengths 1, 2, 3, 4, 1, 2 side by side: the loop runs until the longest ends,
    but an ended episode's auto-reset and later steps add no reward, length or risky step;
    a horizon cuts every episode there."""
    roll = run_episodes(lambda obs: np.zeros((len(obs), 1)), CountingEnv, episodes=6, horizon=horizon, seed=0,
                        asynchronous=False, record=True)
    lengths = np.array([1, 2, 3, 4, 1, 2])
    if horizon is not None:
        lengths = np.minimum(lengths, horizon)
    np.testing.assert_array_equal(roll["lengths"], lengths)
    np.testing.assert_array_equal(roll["returns"], lengths.astype(float))
    np.testing.assert_array_equal(roll["risky"], np.ones(6))
    assert len(roll["obs"]) == lengths.sum() and (roll["obs"][:, 0] == 0).all()  # first episodes only


class EndlessEnv(gym.Env):
    """Never terminates (a TimeLimit of 1000 truncates it, as on the MuJoCo tasks)."""

    observation_space = gym.spaces.Box(-1, 1, (S,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (A,), np.float32)
    steps = 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(S, np.float32), {}

    def step(self, action):
        self.steps += 1
        if self.steps > 1100:  # a loop that never sees the end would otherwise run forever
            raise RuntimeError("the evaluation loop ran on past the time limit")
        return np.zeros(S, np.float32), 1.0, False, False, {"risky": False}


class ZeroAgent:
    def act(self, obs, generator=None):
        return torch.zeros(obs.shape[0], A)


@pytest.mark.parametrize("preset, horizon", [("halfcheetah-medium-replay", 200), ("hopper-medium-expert", 500),
                                             ("walker2d-medium-replay", 500)])
def test_evaluation_horizon_is_the_published_one(monkeypatch, preset, horizon):
    import ramac.evaluation as evaluation

    assert EVAL_HORIZON == {"HalfCheetah-v5": 200, "Hopper-v5": 500, "Walker2d-v5": 500}  # SPEC 3
    monkeypatch.setattr(evaluation, "make_risky_env", lambda p: gym.wrappers.TimeLimit(EndlessEnv(), 1000))
    m = evaluate_preset(ZeroAgent(), preset, episodes=2)
    assert m["horizon"] == horizon and m["length/mean"] == horizon and (m["_returns"] == horizon).all()
    m = evaluate_preset(ZeroAgent(), preset, episodes=2, full_horizon=True)
    assert m["horizon"] == 1000 and m["length/mean"] == 1000


class _PaddedGrad(torch.autograd.Function):
    """sum(w^2) whose gradient comes back with a padded row stride, as a compiled backward's may."""

    @staticmethod
    def forward(ctx, w):
        ctx.save_for_backward(w)
        return w.square().sum()

    @staticmethod
    def backward(ctx, g):
        (w,) = ctx.saved_tensors
        if w.dim() != 2:
            return 2 * g * w
        buf = torch.empty(w.shape[0], w.shape[1] + 1, dtype=w.dtype)
        buf[:, : w.shape[1]] = 2 * g * w
        return buf[:, : w.shape[1]]


def test_a_compiled_optimiser_step_takes_gradients_with_padded_strides():
    """The compiled optimiser step is traced on the BC-only warm-up's contiguous gradients; when
    the risk term starts, a compiled backward can hand a weight gradient out with a padded stride
    ((256, 39) stored with row stride 40). set_grads stores them contiguous: without that the
    compiled step failed its stride assertion (seen on an H200 at the end of the warm-up)."""
    from ramac.agents.policy import set_grads

    agent = make_agent("radac", 3, 2, build_configs("bandit", "radac", cpu_sized=True,
                                                    agent_overrides={"actor_hidden": 8})[0])
    agent.compile_update()
    groups = ((agent.policy.opt, agent.policy.actor, "actor/grad_norm"),)
    params = list(agent.policy.actor.parameters())
    set_grads(sum(p.square().sum() for p in params), groups)
    agent._optimise(groups, 1.0)  # traced on contiguous gradients
    set_grads(sum(_PaddedGrad.apply(p) for p in params), groups)
    assert all(p.grad.is_contiguous() for p in params)
    before = [p.detach().clone() for p in params]
    agent._optimise(groups, 1.0)
    assert all(not torch.equal(a, p) for a, p in zip(before, params))


def _inductor_options(monkeypatch, env: dict, bf16: bool = True) -> list[dict]:
    """The Inductor options of every method compile_update compiles, with these environment settings
    (None: unset)."""
    seen = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: seen.append(kw["options"]) or fn)
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    cfg = build_configs("bandit", "radac", cpu_sized=True, agent_overrides={"actor_hidden": 8})[0]
    make_agent("radac", 3, 2, cfg).compile_update(bf16=bf16)
    assert seen and all(o["fallback_random"] for o in seen)
    return seen


# issue 18's Inductor settings: (variable, option, on by default on the bf16 path, the value that
# turns it the other way, a value refused or None where any value other than "0" means on)
INDUCTOR_SWITCHES = [("RAMAC_COMBO_KERNELS", "combo_kernels", True, "0", None),
                     ("RAMAC_SHAPE_PAD", "force_shape_pad", True, "0", "yes"),
                     ("RAMAC_PDL", "triton.enable_pdl", False, "1", "on")]


@pytest.mark.parametrize("var,option,default,flip,bad", INDUCTOR_SWITCHES)
def test_inductor_switches_reach_every_compiled_method(monkeypatch, var, option, default, flip, bad):
    """Each switch's option is in (or out of) the options every compiled method of the update gets,
    by default and when turned the other way; a value it does not know is an error."""
    for value, on in ((None, default), (flip, not default)):
        seen = _inductor_options(monkeypatch, {var: value})
        assert all(o.get(option) is True for o in seen) if on else not any(option in o for o in seen), value
    if bad is not None:
        with pytest.raises(ValueError, match=var):
            _inductor_options(monkeypatch, {var: bad})


def test_shape_padding_is_the_bf16_paths_default_alone(monkeypatch):
    """Inductor pads unaligned matrix products on the bf16 path by default (faster there) and not on
    the fp32 path (slower there); RAMAC_SHAPE_PAD=1 pads both, =0 neither."""
    def padded(value, bf16):
        return all(o.get("force_shape_pad") is True for o in _inductor_options(monkeypatch, {"RAMAC_SHAPE_PAD": value},
                                                                                 bf16=bf16))

    assert padded(None, True) and not padded(None, False)
    assert padded("1", True) and padded("1", False)
    assert not padded("0", True) and not padded("0", False)


@pytest.mark.parametrize("max_norm", [0.5, 1e3])  # clipped, and left alone
def test_clip_grad_norm_is_torchs_arithmetic(max_norm):
    """ramac.agents.policy.clip_grad_norm (RAMAC_CLIP_COMPILED=1: ops Inductor compiles, where torch's
    clip_grad_norm_ calls an ATen fallback) returns torch's norm and leaves torch's gradients, eager
    and compiled."""
    from ramac.agents.policy import clip_grad_norm

    shapes = [(64, 39), (64,), (1, 64), (3,)]

    def params():
        ps = [torch.zeros(s, requires_grad=True) for s in shapes]
        for p in ps:
            p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()))
        return ps

    want_ps = params()
    want = torch.nn.utils.clip_grad_norm_(want_ps, max_norm)
    torch._dynamo.reset()
    for fn in (clip_grad_norm, torch.compile(clip_grad_norm)):
        ps = params()
        got = fn(ps, max_norm)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
        for p, q in zip(ps, want_ps):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=0)
    assert (want > max_norm) == (max_norm == 0.5)  # the two cases are what they say
    torch._dynamo.reset()


def test_optimise_clips_with_the_compiled_form_in_compiled_code(monkeypatch):
    """Compiled code clips with clip_grad_norm unless RAMAC_CLIP_COMPILED=0; eager code keeps torch's
    clip_grad_norm_ (one fused launch there); a bad value is an error."""
    from ramac.agents import policy

    net = nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    seen = []
    monkeypatch.setattr(policy, "clip_grad_norm", lambda ps, m: seen.append(m) or torch.zeros(()))
    for compiling, flag, calls in ((True, None, 1), (True, "0", 1), (False, None, 1), (True, "1", 2)):
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda c=compiling: c)
        if flag is None:
            monkeypatch.delenv("RAMAC_CLIP_COMPILED", raising=False)
        else:
            monkeypatch.setenv("RAMAC_CLIP_COMPILED", flag)
        for p in net.parameters():
            p.grad = torch.ones_like(p)
        policy.optimise([(opt, net, "k")], 2.0)
        assert len(seen) == calls, (compiling, flag)
    monkeypatch.setenv("RAMAC_CLIP_COMPILED", "yes")
    with pytest.raises(ValueError, match="RAMAC_CLIP_COMPILED"):
        policy.optimise([(opt, net, "k")], 2.0)
