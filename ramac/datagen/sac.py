"""A compact SAC (Haarnoja et al. 2018, automatic entropy tuning) for behaviour policies.

It trains on the plain Gymnasium v5 tasks and saves, along the way, the
checkpoints the data sets are built from: every `ckpt_every` steps a policy
snapshot (fp16, a few hundred kB) with its evaluated return, plus a full,
resumable training state (networks, optimisers, replay buffer, RNG) written
atomically. `ramac behaviour pick` then chooses the expert and the medium
policy from the snapshots' evaluated returns.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..cuda_graphs import on_side_stream
from ..utils import atomic_torch_save, atomic_write_json, progress_bar, provenance, rng_state, set_rng_state

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@dataclass
class SACConfig:
    """SAC settings (CleanRL's continuous-action defaults, plus the GPU fast path)."""

    env_id: str = "HalfCheetah-v5"  # plain Gymnasium task the behaviour policy learns
    total_steps: int = 1_000_000  # environment steps (one update per environment step after learning_starts)
    learning_starts: int = 5_000  # uniform-random steps before learning
    batch_size: int = 256  # transitions per update
    hidden: int = 256  # width of the two hidden layers of actor and critics
    gamma: float = 0.99  # discount
    tau: float = 0.005  # target update rate
    policy_lr: float = 3e-4  # actor and temperature learning rate
    q_lr: float = 1e-3  # critic learning rate
    num_envs: int = 1  # environments stepped side by side; each round does num_envs updates
    graph: bool = True  # on CUDA: the num_envs updates of a round replayed as one CUDA graph
    eval_every: int = 10_000  # steps between evaluations and policy snapshots
    eval_episodes: int = 10  # deterministic episodes per evaluation
    state_every: int = 50_000  # steps between full resumable states (replay buffer included)
    seed: int = 0  # seeds the env, torch and numpy
    device: str = "cpu"  # torch device of the networks and the replay buffer

    def __post_init__(self):
        for name in ("total_steps", "batch_size", "hidden", "num_envs", "eval_every", "eval_episodes",
                     "state_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"SACConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_every % self.num_envs or self.state_every % self.num_envs:
            raise ValueError(f"eval_every ({self.eval_every}) and state_every ({self.state_every}) must be "
                             f"multiples of num_envs ({self.num_envs})")


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy; `deterministic` gives tanh(mean)."""

    def __init__(self, obs_dim, act_dim, hidden, act_scale, act_bias):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.mean = nn.Linear(hidden, act_dim)
        self.log_std = nn.Linear(hidden, act_dim)
        self.register_buffer("act_scale", torch.as_tensor(act_scale, dtype=torch.float32))
        self.register_buffer("act_bias", torch.as_tensor(act_bias, dtype=torch.float32))

    def forward(self, obs, deterministic=False, generator=None):
        h = self.net(obs)
        mean = self.mean(h)
        if deterministic:
            return torch.tanh(mean) * self.act_scale + self.act_bias, None
        log_std = torch.tanh(self.log_std(h))
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1)
        std = log_std.exp()
        u = mean + std * torch.randn(mean.shape, generator=generator, device=mean.device)
        y = torch.tanh(u)
        log_prob = (-0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - torch.log(self.act_scale * (1 - y.pow(2)) + 1e-6).sum(-1)
        return y * self.act_scale + self.act_bias, log_prob


def q_net(obs_dim, act_dim, hidden):
    return nn.Sequential(nn.Linear(obs_dim + act_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 1))


class Replay:
    """Replay buffer of flat rows [obs, action, reward, next_obs, terminal] on the training device.

    Mini-batches are drawn on the device from a size counter that also lives
    there, so sampling can sit inside a CUDA graph.
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device):
        self.obs_dim, self.act_dim, self.capacity = obs_dim, act_dim, capacity
        self.rows = torch.zeros(capacity, 2 * obs_dim + act_dim + 2, device=device)
        self.n = 0  # transitions ever added (host copy)
        self.size_t = torch.zeros((), device=device)  # filled rows, as a float for device-side sampling

    def add(self, o, a, r, o2, term) -> None:
        """Add a batch of transitions (numpy arrays with a leading env axis)."""
        rows = np.concatenate([o, a, r[:, None], o2, term[:, None]], 1).astype(np.float32)
        idx = (self.n + np.arange(len(rows))) % self.capacity
        self.rows[torch.as_tensor(idx, device=self.rows.device)] = torch.as_tensor(rows).to(self.rows.device)
        self.n += len(rows)
        self.size_t.fill_(min(self.n, self.capacity))

    def sample(self, batch: int, generator=None):
        """Uniform rows drawn on the device (graph-safe: no host read of the size)."""
        u = torch.rand(batch, device=self.rows.device, generator=generator)
        idx = (u * self.size_t).long().clamp_(max=self.capacity - 1)
        x = self.rows[idx]
        o, a = self.obs_dim, self.act_dim
        return x[:, :o], x[:, o:o + a], x[:, o + a], x[:, o + a + 1:2 * o + a + 1], x[:, -1]

    def state(self) -> dict:
        return {"rows": self.rows[:min(self.n, self.capacity)].cpu(), "n": self.n}

    def load(self, s: dict) -> None:
        k = len(s["rows"])
        self.rows[:k] = s["rows"].to(self.rows.device)
        self.n = int(s["n"])
        self.size_t.fill_(min(self.n, self.capacity))


class SAC:
    def __init__(self, cfg: SACConfig):
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        env = gym.make(cfg.env_id)
        self.obs_dim = env.observation_space.shape[0]
        self.act_dim = env.action_space.shape[0]
        low, high = env.action_space.low, env.action_space.high
        env.close()
        d, h = self.device, cfg.hidden
        self.actor = Actor(self.obs_dim, self.act_dim, h, (high - low) / 2, (high + low) / 2).to(d)
        self.q1, self.q2 = q_net(self.obs_dim, self.act_dim, h).to(d), q_net(self.obs_dim, self.act_dim, h).to(d)
        self.q1_t, self.q2_t = q_net(self.obs_dim, self.act_dim, h).to(d), q_net(self.obs_dim, self.act_dim, h).to(d)
        self.q1_t.load_state_dict(self.q1.state_dict())
        self.q2_t.load_state_dict(self.q2.state_dict())
        self.log_alpha = torch.zeros(1, requires_grad=True, device=d)
        # on CUDA: fused (one kernel per step) and capturable (step counts on the device) Adam
        kw = {"fused": True, "capturable": True} if d.type == "cuda" else {}
        self.q_opt = torch.optim.Adam(list(self.q1.parameters()) + list(self.q2.parameters()), lr=cfg.q_lr, **kw)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.policy_lr, **kw)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.policy_lr, **kw)
        self.target_entropy = -float(self.act_dim)

    def update(self, batch) -> dict:
        """One SAC update; returns detached tensors (no host synchronisation, capturable)."""
        o, a, r, o2, term = batch
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            a2, logp2 = self.actor(o2)
            x2 = torch.cat([o2, a2], -1)
            q_next = torch.min(self.q1_t(x2), self.q2_t(x2)).squeeze(-1) - alpha * logp2
            y = r + self.cfg.gamma * (1 - term) * q_next
        x = torch.cat([o, a], -1)
        q_loss = F.mse_loss(self.q1(x).squeeze(-1), y) + F.mse_loss(self.q2(x).squeeze(-1), y)
        self.q_opt.zero_grad(set_to_none=False)
        q_loss.backward()
        self.q_opt.step()

        pi, logp = self.actor(o)
        xp = torch.cat([o, pi], -1)
        actor_loss = (alpha * logp - torch.min(self.q1(xp), self.q2(xp)).squeeze(-1)).mean()
        self.actor_opt.zero_grad(set_to_none=False)
        actor_loss.backward()
        self.actor_opt.step()
        alpha_loss = -(self.log_alpha.exp() * (logp.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=False)
        alpha_loss.backward()
        self.alpha_opt.step()
        with torch.no_grad():
            for t, s in ((self.q1_t, self.q1), (self.q2_t, self.q2)):
                torch._foreach_lerp_(list(t.parameters()), list(s.parameters()), self.cfg.tau)
        return {"q_loss": q_loss.detach(), "actor_loss": actor_loss.detach(), "alpha": alpha[0]}

    @torch.no_grad()
    def act(self, obs, deterministic=False) -> np.ndarray:
        a, _ = self.actor(torch.as_tensor(obs, dtype=torch.float32, device=self.device), deterministic)
        return a.cpu().numpy()

    def state(self) -> dict:
        return {k: getattr(self, k).state_dict() for k in
                ("actor", "q1", "q2", "q1_t", "q2_t", "q_opt", "actor_opt", "alpha_opt")} | {
            "log_alpha": self.log_alpha.detach().cpu()}

    def load(self, s: dict):
        for k in ("actor", "q1", "q2", "q1_t", "q2_t", "q_opt", "actor_opt", "alpha_opt"):
            getattr(self, k).load_state_dict(s[k])
        with torch.no_grad():
            self.log_alpha.copy_(s["log_alpha"])


class Updater:
    """`n` SAC updates per call with metric sums on the device; on CUDA (cfg.graph) one graph replay."""

    def __init__(self, sac: SAC, buffer: Replay, n: int):
        self.sac, self.buffer, self.n = sac, buffer, n
        self.use_graph = sac.cfg.graph and sac.device.type == "cuda"
        self.sums = {k: torch.zeros((), device=sac.device) for k in ("q_loss", "actor_loss", "alpha")}
        self.count = 0
        self.stream = torch.cuda.Stream() if self.use_graph else None
        self.graph, self.warm = None, 0

    def _run(self) -> None:
        for _ in range(self.n):
            info = self.sac.update(self.buffer.sample(self.sac.cfg.batch_size))
            for k, v in info.items():
                self.sums[k].add_(v)

    def __call__(self) -> None:
        if self.use_graph and self.warm >= 3:
            if self.graph is None:
                self.graph = torch.cuda.CUDAGraph()
                with on_side_stream(self.stream):
                    with torch.cuda.graph(self.graph, stream=self.stream):
                        self._run()  # recorded, not run
            self.graph.replay()
        else:  # the CPU path, and on CUDA the real updates that warm the graph's memory pool up
            with on_side_stream(self.stream):
                self._run()
            self.warm += 1
        self.count += self.n

    def read(self) -> dict:
        """Means since the last read (one host synchronisation)."""
        out = {k: float(v) / max(self.count, 1) for k, v in self.sums.items()}
        for v in self.sums.values():
            v.zero_()
        self.count = 0
        return out


def evaluate_policy(policy_fn, env_id: str, episodes: int, seed: int, max_steps: int | None = None) -> np.ndarray:
    """Returns of `episodes` deterministic episodes of the plain task run side by side."""
    from ..evaluation import run_episodes

    return run_episodes(policy_fn, lambda: gym.make(env_id), episodes, max_steps, seed, asynchronous=False)["returns"]


def save_policy(sac: SAC, path: Path, meta: dict):
    """A policy snapshot: the actor in fp16 plus metadata (what data sets are built from)."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in sac.actor.state_dict().items()}
    atomic_torch_save({"actor": state, "obs_dim": sac.obs_dim, "act_dim": sac.act_dim, "hidden": sac.cfg.hidden,
                       "meta": meta}, path)


def load_policy(path, device="cpu") -> Actor:
    blob = torch.load(path, map_location="cpu", weights_only=False)
    state = {k: v.float() if v.is_floating_point() else v for k, v in blob["actor"].items()}
    actor = Actor(blob["obs_dim"], blob["act_dim"], blob["hidden"], state["act_scale"], state["act_bias"])
    actor.load_state_dict(state)
    return actor.to(device).eval()


def train_sac(cfg: SACConfig, out_dir, progress=True, log=print, max_minutes: float | None = None) -> Path:
    """Train (or resume) SAC; writes snapshots/, history.json and state.pt under out_dir.

    cfg.num_envs environments step side by side (next-step autoreset: the step
    that resets an env is not stored); each round adds num_envs transitions and
    runs num_envs updates, so the update-to-data ratio stays one. With
    max_minutes the run stops at the next state save after that much wall time
    (resume it by calling again with the same out_dir).
    """
    out = Path(out_dir)
    (out / "snapshots").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    sac = SAC(cfg)
    buffer = Replay(cfg.total_steps, sac.obs_dim, sac.act_dim, sac.device)
    n_env = cfg.num_envs
    envs = gym.vector.SyncVectorEnv([lambda: gym.make(cfg.env_id) for _ in range(n_env)])
    envs.action_space.seed(cfg.seed)
    obs, _ = envs.reset(seed=cfg.seed)
    step, history_ = 0, []
    state_path = out / "state.pt"
    small_path = out / "state-small.pt"
    resume_from = state_path if state_path.exists() else small_path if small_path.exists() else None
    if resume_from is not None:
        s = torch.load(resume_from, map_location="cpu", weights_only=False)
        if s["cfg"]["env_id"] != cfg.env_id:
            raise ValueError(f"{out} holds a run for {s['cfg']['env_id']}, not {cfg.env_id}")
        sac.load(s["sac"])
        if "buffer" in s:
            buffer.load(s["buffer"])
        else:  # a compact state: the buffer refills from the current policy before updates resume
            log(f"{resume_from.name} has no replay buffer: refilling it with the current policy")
        set_rng_state(s["rng"])
        step, history_ = s["step"], s["history"]
        obs, _ = envs.reset(seed=cfg.seed + step)  # the interrupted episodes are not restored: fresh ones
        log(f"resumed {cfg.env_id} at step {step}")
    atomic_write_json(out / "config.json", {"sac": asdict(cfg), "provenance": provenance(sac.device)})
    updater = Updater(sac, buffer, n_env)
    bar = progress_bar(total=cfg.total_steps, initial=step, disable=not progress, desc=f"SAC {cfg.env_id}")
    t0 = time.perf_counter()
    fresh = np.zeros(n_env, bool)  # envs whose last step ended an episode: this step resets them
    while step < cfg.total_steps:
        if step < cfg.learning_starts and buffer.n == step:  # not after a resume without replay buffer
            action = envs.action_space.sample()
        else:
            action = sac.act(obs)
        obs2, r, term, trunc, _ = envs.step(action)
        keep = ~fresh
        buffer.add(obs[keep], action[keep], r[keep], obs2[keep], term[keep].astype(np.float32))
        fresh = term | trunc
        obs = obs2
        if step >= cfg.learning_starts and buffer.n >= min(cfg.learning_starts, cfg.batch_size * 4):
            updater()
        step += n_env
        bar.update(n_env)
        if step % cfg.eval_every == 0:
            rets = evaluate_policy(lambda o: sac.act(o, True), cfg.env_id, cfg.eval_episodes, seed=10_000 + step)
            info = updater.read() if updater.count else {}
            rec = {"step": step, "return_mean": float(rets.mean()), "return_std": float(rets.std()),
                   "episodes": len(rets), "wall_s": time.perf_counter() - t0, **info}
            history_.append(rec)
            save_policy(sac, out / "snapshots" / f"step{step:08d}.pt",
                        rec | {"env_id": cfg.env_id, "seed": cfg.seed})
            atomic_write_json(out / "history.json", history_)
            bar.write(f"[{cfg.env_id} step {step}] return {rec['return_mean']:.0f} +- {rec['return_std']:.0f}"
                      f" ({rec['wall_s']:.0f} s)")
        timed_out = max_minutes is not None and time.perf_counter() - t0 > 60 * max_minutes
        if step % cfg.state_every == 0 or step >= cfg.total_steps or timed_out:
            small = {"sac": sac.state(), "rng": rng_state(), "step": step, "history": history_, "cfg": asdict(cfg)}
            atomic_torch_save(small, small_path)  # a few MB: networks and optimisers only
            atomic_torch_save(small | {"buffer": buffer.state()}, state_path)
            if timed_out:
                log(f"stopping {cfg.env_id} at step {step} after {max_minutes} min; resume with the same --out")
                break
    bar.close()
    envs.close()
    return out


def history(out_dir) -> list[dict]:
    return json.loads((Path(out_dir) / "history.json").read_text())
