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

from .utils import atomic_torch_save, atomic_write_json, progress_bar, provenance, rng_state, set_rng_state

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@dataclass
class SACConfig:
    """SAC settings (CleanRL's continuous-action defaults)."""

    env_id: str = "HalfCheetah-v5"  # plain Gymnasium task the behaviour policy learns
    total_steps: int = 1_000_000  # environment steps (one update per step after learning_starts)
    learning_starts: int = 5_000  # uniform-random steps before learning
    batch_size: int = 256  # transitions per update
    hidden: int = 256  # width of the two hidden layers of actor and critics
    gamma: float = 0.99  # discount
    tau: float = 0.005  # target update rate
    policy_lr: float = 3e-4  # actor and temperature learning rate
    q_lr: float = 1e-3  # critic learning rate
    eval_every: int = 10_000  # steps between evaluations and policy snapshots
    eval_episodes: int = 10  # deterministic episodes per evaluation
    state_every: int = 50_000  # steps between full resumable states (replay buffer included)
    seed: int = 0  # seeds the env, torch and numpy
    device: str = "cpu"  # torch device of the networks


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
    """Flat numpy replay buffer (saved with the training state for exact resumes)."""

    def __init__(self, capacity, obs_dim, act_dim):
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.act = np.zeros((capacity, act_dim), np.float32)
        self.rew = np.zeros(capacity, np.float32)
        self.term = np.zeros(capacity, np.float32)
        self.n = 0

    def add(self, o, a, r, o2, term):
        i = self.n % len(self.rew)
        self.obs[i], self.act[i], self.rew[i], self.next_obs[i], self.term[i] = o, a, r, o2, term
        self.n += 1

    def sample(self, rng: np.random.Generator, batch: int, device):
        idx = rng.integers(0, min(self.n, len(self.rew)), batch)
        to = lambda x: torch.as_tensor(x[idx], device=device)  # noqa: E731
        return to(self.obs), to(self.act), to(self.rew), to(self.next_obs), to(self.term)

    def state(self):
        k = min(self.n, len(self.rew))
        return {"obs": self.obs[:k], "next_obs": self.next_obs[:k], "act": self.act[:k], "rew": self.rew[:k],
                "term": self.term[:k], "n": self.n}

    def load(self, s):
        k = len(s["rew"])
        self.obs[:k], self.next_obs[:k], self.act[:k], self.rew[:k], self.term[:k] = (
            s["obs"], s["next_obs"], s["act"], s["rew"], s["term"])
        self.n = int(s["n"])


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
        self.q_opt = torch.optim.Adam(list(self.q1.parameters()) + list(self.q2.parameters()), lr=cfg.q_lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.policy_lr)
        self.log_alpha = torch.zeros(1, requires_grad=True, device=d)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.policy_lr)
        self.target_entropy = -float(self.act_dim)

    def update(self, batch) -> dict:
        o, a, r, o2, term = batch
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            a2, logp2 = self.actor(o2)
            x2 = torch.cat([o2, a2], -1)
            q_next = torch.min(self.q1_t(x2), self.q2_t(x2)).squeeze(-1) - alpha * logp2
            y = r + self.cfg.gamma * (1 - term) * q_next
        x = torch.cat([o, a], -1)
        q_loss = F.mse_loss(self.q1(x).squeeze(-1), y) + F.mse_loss(self.q2(x).squeeze(-1), y)
        self.q_opt.zero_grad()
        q_loss.backward()
        self.q_opt.step()

        pi, logp = self.actor(o)
        xp = torch.cat([o, pi], -1)
        actor_loss = (alpha * logp - torch.min(self.q1(xp), self.q2(xp)).squeeze(-1)).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        alpha_loss = -(self.log_alpha.exp() * (logp.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad()
        alpha_loss.backward()
        self.alpha_opt.step()
        with torch.no_grad():
            for t, s in ((self.q1_t, self.q1), (self.q2_t, self.q2)):
                torch._foreach_lerp_(list(t.parameters()), list(s.parameters()), self.cfg.tau)
        return {"q_loss": q_loss.item(), "actor_loss": actor_loss.item(), "alpha": alpha.item()}

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


def evaluate_policy(policy_fn, env_id: str, episodes: int, seed: int, max_steps: int | None = None,
                    wrapper=None) -> np.ndarray:
    """Returns of `episodes` deterministic episodes run side by side in a vector env."""
    envs = gym.vector.SyncVectorEnv([
        (lambda: wrapper(gym.make(env_id)) if wrapper else gym.make(env_id)) for _ in range(episodes)])
    obs, _ = envs.reset(seed=seed)
    returns = np.zeros(episodes)
    alive = np.ones(episodes, bool)
    steps = 0
    while alive.any() and (max_steps is None or steps < max_steps):
        obs, r, term, trunc, _ = envs.step(policy_fn(obs))
        returns += r * alive
        alive &= ~(term | trunc)
        steps += 1
    envs.close()
    return returns


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


def train_sac(cfg: SACConfig, out_dir, progress=True, log=print) -> Path:
    """Train (or resume) SAC; writes snapshots/ and state.pt under out_dir."""
    out = Path(out_dir)
    (out / "snapshots").mkdir(parents=True, exist_ok=True)
    sac = SAC(cfg)
    buffer = Replay(cfg.total_steps, sac.obs_dim, sac.act_dim)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    env = gym.make(cfg.env_id)
    obs, _ = env.reset(seed=cfg.seed)
    step, history = 0, []
    state_path = out / "state.pt"
    if state_path.exists():
        s = torch.load(state_path, map_location="cpu", weights_only=False)
        if s["cfg"]["env_id"] != cfg.env_id:
            raise ValueError(f"{out} holds a run for {s['cfg']['env_id']}, not {cfg.env_id}")
        sac.load(s["sac"])
        buffer.load(s["buffer"])
        rng = s["np_rng"]
        set_rng_state(s["rng"])
        step, history = s["step"], s["history"]
        env.reset(seed=cfg.seed + step)  # the interrupted episode is not restored: start a fresh one
        obs, _ = env.reset()
        log(f"resumed {cfg.env_id} at step {step}")
    atomic_write_json(out / "config.json", {"sac": asdict(cfg), "provenance": provenance(sac.device)})
    bar = progress_bar(total=cfg.total_steps, initial=step, disable=not progress, desc=f"SAC {cfg.env_id}")
    ep_ret, info = 0.0, {}
    t0 = time.perf_counter()
    while step < cfg.total_steps:
        if step < cfg.learning_starts:
            action = env.action_space.sample()
        else:
            action = sac.act(obs[None])[0]
        obs2, r, term, trunc, _ = env.step(action)
        buffer.add(obs, action, r, obs2, float(term))
        obs, ep_ret = obs2, ep_ret + r
        if term or trunc:
            obs, _ = env.reset()
            ep_ret = 0.0
        if step >= cfg.learning_starts:
            info = sac.update(buffer.sample(rng, cfg.batch_size, sac.device))
        step += 1
        bar.update(1)
        if step % cfg.eval_every == 0:
            rets = evaluate_policy(lambda o: sac.act(o, True), cfg.env_id, cfg.eval_episodes, seed=10_000 + step)
            rec = {"step": step, "return_mean": float(rets.mean()), "return_std": float(rets.std()),
                   "episodes": len(rets), "wall_s": time.perf_counter() - t0, **info}
            history.append(rec)
            save_policy(sac, out / "snapshots" / f"step{step:08d}.pt", rec | {"env_id": cfg.env_id, "seed": cfg.seed})
            atomic_write_json(out / "history.json", history)
        if step % cfg.state_every == 0 or step == cfg.total_steps:
            atomic_torch_save({"sac": sac.state(), "buffer": buffer.state(), "np_rng": rng, "rng": rng_state(),
                               "step": step, "history": history, "cfg": asdict(cfg)}, state_path)
            bar.write(f"[{cfg.env_id} step {step}] return {rec['return_mean']:.0f} +- {rec['return_std']:.0f}")
    bar.close()
    env.close()
    return out


def history(out_dir) -> list[dict]:
    return json.loads((Path(out_dir) / "history.json").read_text())
