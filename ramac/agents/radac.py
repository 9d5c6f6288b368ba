"""RADAC (SPEC 2.3): a diffusion actor trained with BC + eta * (-risk) against two IQN critics.

One update, in order:
  1. critic: TD targets from the EMA actor's next action and the target critics
     at fresh fractions (min of the two, clipped), standard IQN quantile-Huber
     loss for each critic, separate Adam steps with gradient clipping;
  2. actor: eps-prediction BC loss plus eta * (-risk), where the action is drawn
     with the full T-step chain and gradients flow through every step;
  3. EMA actor on its schedule, Polyak-averaged target critics.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .. import kernels
from ..config import RADACConfig
from ..data import Batch
from ..diffusion import Diffusion
from ..nets import Denoiser, IQNCritic
from ..nvtx import nvtx_range
from ..risk import RiskMeasure


class RADAC(nn.Module):
    def __init__(self, state_dim: int, action_dim: int, cfg: RADACConfig):
        super().__init__()
        self.cfg = cfg.validate()
        self.state_dim, self.action_dim = state_dim, action_dim
        self.diffusion = Diffusion(cfg.n_timesteps, cfg.beta_schedule, cfg.max_action, cfg.sampler_precision)
        self.actor = Denoiser(state_dim, action_dim, cfg.actor_hidden)
        self.actor_ema = copy.deepcopy(self.actor).requires_grad_(False)
        n_cos = cfg.n_cos or cfg.n_quantiles

        def critic():
            return IQNCritic(state_dim, action_dim, cfg.embedding_dim, n_cos, cfg.critic_hidden)

        self.critic1, self.critic2 = critic(), critic()
        self.critic1_target = copy.deepcopy(self.critic1).requires_grad_(False)
        self.critic2_target = copy.deepcopy(self.critic2).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr_actor)
        self.critic1_opt = torch.optim.Adam(self.critic1.parameters(), lr=cfg.lr_critic)
        self.critic2_opt = torch.optim.Adam(self.critic2.parameters(), lr=cfg.lr_critic)
        self.risk = RiskMeasure(cfg.risk, cfg.risk_param, cfg.n_risk_quantiles, cfg.risk_quadrature)
        self.select_risk = RiskMeasure(cfg.risk, cfg.risk_param, cfg.n_risk_quantiles, quadrature=True)
        self.steps_done = 0
        # Philox seed of the one-launch sampler; advanced on the device so that CUDA-graph
        # replays draw fresh next actions
        self.register_buffer("sampler_seed", torch.zeros(1, dtype=torch.int64))
        # the critics learn rewards / reward_scale (1 unless reward_norm="std"; see fit_reward_scale)
        self.register_buffer("reward_scale", torch.ones(()))
        self._kappa = cfg.kappa
        # False when every transition is terminal (one-step tasks such as the bandit):
        # the TD target is then the reward itself (K' = 1) and the next-action chain is skipped.
        self.bootstrap = True

    def fit_reward_scale(self, rewards: torch.Tensor) -> None:
        """With reward_norm="std": the critics' unit becomes the data set's reward std, so the
        problem the critics (and the risk term) see does not depend on the reward scale."""
        if self.cfg.reward_norm == "std":
            self.reward_scale.fill_(float(rewards.float().std().clamp_min(1e-6)))
        self._sync_scale()

    def _sync_scale(self) -> None:
        # the Huber threshold stays in reward units (kappa / scale in the critics' units), so the
        # quantile loss keeps its shape; a python float, constant once training starts
        self._kappa = self.cfg.kappa / float(self.reward_scale)

    # ---- losses -----------------------------------------------------------
    def critic_loss(self, b: Batch):
        """Quantile-Huber loss of each critic against the shared distributional TD target."""
        cfg = self.cfg
        B, K = b.obs.shape[0], cfg.n_quantiles
        with torch.no_grad():
            if self.bootstrap:
                next_action = self.diffusion.sample_fast(self.actor_ema, b.next_obs, seed=self.sampler_seed)
                self.sampler_seed.add_(1)
                next_taus = torch.rand(B, K, device=b.obs.device)
                z_next = torch.minimum(
                    self.critic1_target(b.next_obs, next_action, next_taus),
                    self.critic2_target(b.next_obs, next_action, next_taus),
                )  # (B, K')
                not_done = 1.0 - b.terminal[:, None]
                target = b.reward[:, None] / self.reward_scale + cfg.gamma * not_done * z_next
            else:  # one-step task: the target law is the reward itself, one sample per transition
                target = b.reward[:, None] / self.reward_scale
            clip = cfg.q_clip / self.reward_scale
            target = target.clamp(-clip, clip)
        taus = torch.rand(B, K, device=b.obs.device)
        z1 = self.critic1(b.obs, b.action, taus)  # (B, K)
        z2 = self.critic2(b.obs, b.action, taus)
        loss1 = kernels.quantile_huber_loss(z1, taus, target, self._kappa)
        loss2 = kernels.quantile_huber_loss(z2, taus, target, self._kappa)
        info = {"critic/loss1": loss1.detach(), "critic/loss2": loss2.detach(),
                "critic/z_mean": z1.detach().mean() * self.reward_scale,
                "critic/target_mean": target.mean() * self.reward_scale}
        return loss1, loss2, info

    def actor_loss(self, b: Batch, eta, with_risk: bool = True):
        """lambda_bc * BC + eta * (-risk of the sampled action), risk through the whole chain.

        eta: a float or a 0-d device tensor; with_risk=False skips the chain (eta = 0 phases).
        With bc_filter="better" the BC term imitates only the data actions that the critics
        rank at least as high as the actor's own action for the same state (all of them when
        none is): the pathwise risk gradient cannot carry the policy across the valleys
        between modes that a sharp critic learns, so plain BC, which covers every mode,
        would slowly move mass back into the lower ones.
        """
        cfg = self.cfg
        info = {}
        if with_risk:
            with nvtx_range("actor/sample"):
                action = self.diffusion.sample(self.actor, b.obs)
            value = self.risk.value(self.critic1, self.critic2, b.obs, action)  # (B,)
        weights = None
        if with_risk and cfg.bc_filter != "none":
            with torch.no_grad():
                weights, info["actor/bc_kept"] = self._bc_filter_weights(b, value.detach())
        bc = self.diffusion.bc_loss(self.actor, b.action, b.obs, weights)
        loss = cfg.lambda_bc * bc
        info["actor/bc"] = bc.detach()
        if with_risk:
            risk = value.mean()
            if cfg.risk_norm == "abs":  # Diffusion-QL's Q normalisation, applied to the risk value
                scale = value.detach().abs().mean().clamp_min(1e-6)
                info["actor/risk_scale"] = scale
                loss = loss - eta * risk / scale
            else:
                loss = loss - eta * risk
            info["actor/risk"] = risk.detach()
        info["actor/loss"] = loss.detach()
        return loss, info

    def _bc_filter_weights(self, b: Batch, own_value: torch.Tensor):
        """BC weights (B,) over the data actions that the critics rank at least as high as the
        actor's action for the state ("better": its own sample; "better_mean": the mean of
        bc_filter_samples fresh samples), and the kept share; all of them when none is kept."""
        cfg = self.cfg
        data_value = self.select_risk.value(self.critic1, self.critic2, b.obs, b.action)  # (B,)
        threshold = own_value
        if cfg.bc_filter == "better_mean":
            m = cfg.bc_filter_samples
            obs = b.obs.repeat_interleave(m, dim=0)
            actions = self.diffusion.sample_fast(self.actor, obs, seed=self.sampler_seed)
            self.sampler_seed.add_(1)
            threshold = self.select_risk.value(self.critic1, self.critic2, obs, actions).view(-1, m).mean(dim=1)
        keep = (data_value >= threshold).float()
        kept = keep.sum()
        weights = torch.where(kept > 0, keep / kept.clamp_min(1.0), torch.full_like(keep, 1.0 / keep.numel()))
        return weights, kept / keep.numel()

    def compile_update(self) -> None:
        """Run the update's pieces through torch.compile: both losses (forward and
        backward), the clipped optimiser steps, and the EMA / target averaging.

        Inductor fuses the elementwise work of the networks, the differentiable
        chain and the quantile loss (traced from the reference ops) into far fewer
        kernels, and turns Adam, clipping and averaging into a few wide kernels;
        the one-launch next-action sampler stays as it is. Random draws keep
        PyTorch's own streams (fallback_random), so a compiled update computes the
        same numbers as the eager one up to float rounding.
        """
        if self.__dict__.get("_compiled"):
            return
        self._compiled = True
        limit = max(torch._dynamo.config.recompile_limit, 64)  # one compile per agent instance and phase
        torch._dynamo.config.recompile_limit = limit
        options = {"fallback_random": True}
        for opt in (self.actor_opt, self.critic1_opt, self.critic2_opt):
            for group in opt.param_groups:  # Inductor fuses the multi-tensor ops, not the fused kernel
                group["fused"], group["foreach"] = False, True
        for name in ("critic_loss", "actor_loss", "_optimise", "_average"):
            setattr(self, name, torch.compile(getattr(self, name), dynamic=False, options=options))

    # ---- update -------------------------------------------------------------
    def eta_at(self, step):
        """eta at a step (python int, or 0-d device tensor inside a CUDA graph)."""
        cfg = self.cfg
        if torch.is_tensor(step):
            ramp = ((step - cfg.eta_warmup_steps + 1) / cfg.eta_ramp_steps).clamp(0, 1) if cfg.eta_ramp_steps else 1.0
            return cfg.eta * (step >= cfg.eta_warmup_steps) * ramp
        if step < cfg.eta_warmup_steps:
            return 0.0
        if cfg.eta_ramp_steps > 0:
            return cfg.eta * min(1.0, (step - cfg.eta_warmup_steps + 1) / cfg.eta_ramp_steps)
        return cfg.eta

    def risk_active(self, step: int) -> bool:
        """Whether the risk term runs at this (host-side) step: eta > 0 after the warm-up."""
        return self.cfg.eta > 0 and step >= self.cfg.eta_warmup_steps

    def update(self, b: Batch, step=None) -> dict:
        """One RADAC update; returns detached metric tensors (no host sync).

        step: None (eager: this agent's own counter), or a 0-d device tensor that
        a CUDA graph advances; then the caller also passes the host's step count
        as steps_done so the right phase (with or without the risk term) runs.
        """
        host_step = self.steps_done
        step = host_step if step is None else step

        with nvtx_range("critic/loss"):
            loss1, loss2, info = self.critic_loss(b)
        with nvtx_range("critic/step"):  # one backward: loss1 only reaches critic 1, loss2 critic 2
            self._step(loss1 + loss2, info, (self.critic1_opt, self.critic1, "critic/grad_norm1"),
                       (self.critic2_opt, self.critic2, "critic/grad_norm2"))

        eta = self.eta_at(step)
        with nvtx_range("actor/loss"):
            actor_loss, actor_info = self.actor_loss(b, eta, with_risk=self.risk_active(host_step))
        info.update(actor_info)
        with nvtx_range("actor/step"):
            self._step(actor_loss, info, (self.actor_opt, self.actor, "actor/grad_norm"))

        with nvtx_range("ema_targets"):
            self._average(step)
        self.steps_done += 1
        info["actor/eta"] = eta.detach().float() if torch.is_tensor(eta) else torch.tensor(eta)
        return info

    def _step(self, loss, info, *groups):
        """Gradients of loss for the networks in groups (optimizer, network, metric key) only,
        then per network: clip its gradient norm and take its optimiser step."""
        params = [p for _, net, _ in groups for p in net.parameters()]
        for p, g in zip(params, torch.autograd.grad(loss, params)):
            p.grad = g
        info.update(self._optimise(groups))

    def _optimise(self, groups) -> dict:
        norms = {}
        for opt, net, key in groups:
            if self.cfg.grad_norm > 0:
                norms[key] = torch.nn.utils.clip_grad_norm_(list(net.parameters()), self.cfg.grad_norm)
            opt.step()
        return norms

    def _average(self, step) -> None:
        self.update_ema(step)
        self.update_targets()

    @torch.no_grad()
    def update_ema(self, step):
        """Every ema_every steps: copy the actor before ema_start, average after."""
        cfg = self.cfg
        ema, live = list(self.actor_ema.parameters()), list(self.actor.parameters())
        if torch.is_tensor(step):  # inside a CUDA graph: the schedule becomes a weight in [0, 1]
            weight = torch.where(step < cfg.ema_start, 1.0, 1.0 - cfg.ema_decay) * (step % cfg.ema_every == 0)
            diff = torch._foreach_sub(live, ema)
            torch._foreach_mul_(diff, weight)
            torch._foreach_add_(ema, diff)
            return
        if step % cfg.ema_every:
            return
        if step < cfg.ema_start:
            torch._foreach_copy_(ema, live)
        else:
            torch._foreach_lerp_(ema, live, 1.0 - cfg.ema_decay)

    @torch.no_grad()
    def update_targets(self):
        for target, live in ((self.critic1_target, self.critic1), (self.critic2_target, self.critic2)):
            torch._foreach_lerp_(list(target.parameters()), list(live.parameters()), self.cfg.polyak)

    # ---- acting ---------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Evaluation actions from the EMA actor (top_k: best of n_candidates by critic risk)."""
        cfg = self.cfg
        if cfg.top_k == 0:
            return self.diffusion.sample_fast(self.actor_ema, obs)
        B, N = obs.shape[0], cfg.n_candidates
        obs_rep = obs.repeat_interleave(N, dim=0)
        cand = self.diffusion.sample_fast(self.actor_ema, obs_rep)  # (B * N, A)
        value = self.select_risk.value(self.critic1, self.critic2, obs_rep, cand).view(B, N)
        best = value.topk(cfg.top_k, dim=1).indices  # (B, k)
        pick = best.gather(1, torch.randint(0, cfg.top_k, (B, 1), device=obs.device))
        return cand.view(B, N, -1)[torch.arange(B, device=obs.device), pick.squeeze(1)]

    @torch.no_grad()
    def critic_quantiles(self, obs: torch.Tensor, action: torch.Tensor, taus: torch.Tensor):
        """Quantiles of both critics at fractions taus (K,), in reward units: (2, B, K)."""
        return torch.stack([self.critic1(obs, action, taus), self.critic2(obs, action, taus)]) * self.reward_scale

    # ---- state ------------------------------------------------------------------
    def full_state(self) -> dict:
        return {
            "model": self.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic1_opt": self.critic1_opt.state_dict(),
            "critic2_opt": self.critic2_opt.state_dict(),
            "steps_done": self.steps_done,
        }

    def load_full_state(self, state: dict):
        model = dict(state["model"])
        model.setdefault("reward_scale", torch.ones(()))  # checkpoints from before reward_norm
        self.load_state_dict(model)
        self._sync_scale()
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic1_opt.load_state_dict(state["critic1_opt"])
        self.critic2_opt.load_state_dict(state["critic2_opt"])
        self.steps_done = int(state["steps_done"])
