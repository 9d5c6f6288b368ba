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

from .. import kernels
from ..data import Batch
from ..nets import IQNCritic
from ..nvtx import nvtx_range
from ..risk_measures import RiskMeasure
from .configs import RADACConfig
from .policy import PolicyAgent, set_grads

# parameter names of checkpoints from before the agent contract (the policy's parts sat on the agent)
_OLD_POLICY_KEYS = ("actor.", "actor_ema.", "diffusion.")


class RADAC(PolicyAgent):
    name = "radac"
    Config = RADACConfig
    losses = ("critic_loss", "actor_loss")

    def __init__(self, state_dim: int, action_dim: int, cfg: RADACConfig):
        super().__init__(state_dim, action_dim, cfg)
        n_cos = cfg.n_cos or cfg.n_quantiles

        def critic():
            return IQNCritic(state_dim, action_dim, cfg.embedding_dim, n_cos, cfg.critic_hidden)

        self.critic1, self.critic2 = critic(), critic()
        self.critic1_target = copy.deepcopy(self.critic1).requires_grad_(False)
        self.critic2_target = copy.deepcopy(self.critic2).requires_grad_(False)
        self.critic1_opt = torch.optim.Adam(self.critic1.parameters(), lr=cfg.lr_critic)
        self.critic2_opt = torch.optim.Adam(self.critic2.parameters(), lr=cfg.lr_critic)
        self.risk = RiskMeasure(cfg.risk, cfg.risk_param, cfg.n_risk_quantiles, cfg.risk_quadrature)
        self.select_risk = RiskMeasure(cfg.risk, cfg.risk_param, cfg.n_risk_quantiles, quadrature=True)
        self.q_measure = RiskMeasure("neutral", 0.0, cfg.n_risk_quantiles, quadrature=True)  # Q for softmax selection
        # the critics learn rewards / reward_scale (1 unless reward_norm="std"; see fit_data)
        self.register_buffer("reward_scale", torch.ones(()))
        self._kappa = cfg.kappa
        # False when every transition is terminal (one-step tasks such as the bandit):
        # the TD target is then the reward itself (K' = 1) and the next-action chain is skipped.
        self.bootstrap = True

    # the policy's parts under their published names
    @property
    def actor(self):
        return self.policy.actor

    @property
    def actor_ema(self):
        return self.policy.actor_ema

    @property
    def diffusion(self):
        return self.policy.diffusion

    @property
    def actor_opt(self):
        return self.policy.opt

    def fit_data(self, data) -> None:
        """Bootstrapping only where some transition is not terminal; with reward_norm="std" the
        critics' unit becomes the data set's reward std."""
        self.bootstrap = bool((data.terminal < 1).any())
        self.fit_reward_scale(data.reward)

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
        noise = self.noise("critic")
        with torch.no_grad():
            if self.bootstrap:
                z_next = self.next_quantiles(b.next_obs, noise.rand("next_taus", (B, K)), noise.sub("next"))  # (B, K')
                not_done = 1.0 - b.terminal[:, None]
                target = b.reward[:, None] / self.reward_scale + cfg.gamma * not_done * z_next
            else:  # one-step task: the target law is the reward itself, one sample per transition
                target = b.reward[:, None] / self.reward_scale
            clip = cfg.q_clip / self.reward_scale
            target = target.clamp(-clip, clip)
        taus = noise.rand("taus", (B, K))
        z1 = self.critic1(b.obs, b.action, taus)  # (B, K)
        z2 = self.critic2(b.obs, b.action, taus)
        loss1 = kernels.quantile_huber_loss(z1, taus, target, self._kappa)
        loss2 = kernels.quantile_huber_loss(z2, taus, target, self._kappa)
        info = {"critic/loss1": loss1.detach(), "critic/loss2": loss2.detach(),
                "critic/z_mean": z1.detach().mean() * self.reward_scale,
                "critic/target_mean": target.mean() * self.reward_scale}
        return loss1, loss2, info

    def next_quantiles(self, next_obs: torch.Tensor, taus: torch.Tensor, noise) -> torch.Tensor:
        """The TD target's next-state quantiles: min of the target critics at the policy's next
        action (the EMA actor's, one launch), (B, K')."""
        with nvtx_range("critic/next_action"):
            next_action = self.policy.sample_fast(next_obs, ema=True, noise=noise)
        return torch.minimum(self.critic1_target(next_obs, next_action, taus),
                             self.critic2_target(next_obs, next_action, taus))

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
        noise = self.noise("actor")
        if with_risk:
            with nvtx_range("actor/sample"):
                action = self.policy.sample(b.obs, noise.sub("sample"))
            value = self.risk.value(self.critic1, self.critic2, b.obs, action, noise.sub("risk"))  # (B,)
        weights = None
        if with_risk and cfg.bc_filter != "none":
            with torch.no_grad():
                weights, info["actor/bc_kept"] = self._bc_filter_weights(b, value.detach(), noise.sub("filter"))
        bc, bc_info = self.policy.bc_terms(b.obs, b.action, weights, noise.sub("bc"))
        loss = cfg.lambda_bc * bc
        info["actor/bc"] = bc.detach()
        info.update(bc_info)
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

    def _bc_filter_weights(self, b: Batch, own_value: torch.Tensor, noise=None):
        """BC weights (B,) summing to 1 over the data actions, and the share of the batch they rest on.

        "better": the data actions the critics rank at least as high as the actor's own action for
        the state; "better_mean": at least as high as the mean of bc_filter_samples fresh actor
        actions for the state (all of them when none is); "better_median": as high as their
        median (one stray action of four, off the data and valued far below the rest, drags the
        mean below the low modes' values and so opens BC on them for that state; the median
        holds); "top": the bc_filter_top share of the batch with the largest advantage (data value
        - that mean; a fixed share, so the anchor cannot vanish as the actor improves, and a
        ranking, so a common drop of the actor's values cannot open it to the low modes); "soft":
        softmax over the batch of the standardised advantage (data value - that mean) /
        temperature, the share being the effective sample size 1 / (B * sum w^2)."""
        cfg = self.cfg
        data_value = self.select_risk.value(self.critic1, self.critic2, b.obs, b.action)  # (B,)
        threshold = own_value
        if cfg.bc_filter in ("better_mean", "better_median", "top", "soft"):
            m = cfg.bc_filter_samples
            obs = b.obs.repeat_interleave(m, dim=0)
            actions = self.policy.sample_fast(obs, noise=noise)
            own = self.select_risk.value(self.critic1, self.critic2, obs, actions).view(-1, m)
            if cfg.bc_filter == "better_median":  # sort, not quantile(): no host check, capturable
                own = own.sort(dim=1).values
                threshold = 0.5 * (own[:, (m - 1) // 2] + own[:, m // 2])
            else:
                threshold = own.mean(dim=1)
        if cfg.bc_filter == "top":
            k = max(1, round(cfg.bc_filter_top * data_value.numel()))
            # out of place: vmap (seeds stacked) batches index_fill, and loops over scatter_ with a value
            keep = torch.zeros_like(data_value).index_fill(0, (data_value - threshold).topk(k).indices, 1.0)
            return keep / k, keep.mean()
        if cfg.bc_filter == "soft":
            adv = data_value - threshold
            weights = torch.softmax(adv / adv.std().clamp_min(1e-6) / cfg.bc_filter_temperature, dim=0)
            return weights, 1.0 / (weights.square().sum() * weights.numel())
        keep = (data_value >= threshold).float()
        kept = keep.sum()
        weights = torch.where(kept > 0, keep / kept.clamp_min(1.0), torch.full_like(keep, 1.0 / keep.numel()))
        return weights, kept / keep.numel()

    def compile_update(self, bf16: bool = False) -> None:
        """Run the update's pieces through torch.compile: both losses (forward and
        backward), the clipped optimiser steps, and the EMA / target averaging.

        Inductor fuses the elementwise work of the networks, the differentiable
        chain and the quantile loss (traced from the reference ops) into far fewer
        kernels, and turns Adam, clipping and averaging into a few wide kernels;
        the one-launch next-action sampler stays as it is. Random draws: see
        Agent._compile_methods.
        """
        self._compile_methods("critic_loss", "actor_loss", "_optimise", "_average", bf16=bf16)

    # ---- update -------------------------------------------------------------
    def eta_at(self, step: torch.Tensor) -> torch.Tensor:
        """eta at a device step (0-d tensor): 0 before the warm-up, then a linear ramp."""
        cfg = self.cfg
        ramp = ((step - cfg.eta_warmup_steps + 1) / cfg.eta_ramp_steps).clamp(0, 1) if cfg.eta_ramp_steps else 1.0
        return cfg.eta * (step >= cfg.eta_warmup_steps) * ramp

    def phase(self) -> bool:
        """Whether the next update runs the risk term: eta > 0 and past the warm-up."""
        return self.cfg.eta > 0 and self.steps >= self.cfg.eta_warmup_steps

    def update(self, b: Batch) -> dict:
        """One RADAC update; returns detached metric tensors (no host sync). Schedules read the
        device step; the host step picks the phase (with or without the risk term)."""
        step = self.step_t
        with nvtx_range("critic/loss"):
            loss1, loss2, info = self.critic_loss(b)
        self._step_critics(loss1, loss2, info)
        eta = self.eta_at(step)
        with nvtx_range("actor/loss"):
            actor_loss, actor_info = self.actor_loss(b, eta, with_risk=self.phase())
        info.update(actor_info)
        self._step_actor_and_average(actor_loss, info)
        info["actor/eta"] = eta.detach().float() if torch.is_tensor(eta) else torch.tensor(eta)
        return info

    def _step_critics(self, loss1, loss2, info: dict) -> None:
        with nvtx_range("critic/step"):  # one backward: loss1 only reaches critic 1, loss2 critic 2
            groups = ((self.critic1_opt, self.critic1, "critic/grad_norm1"),
                      (self.critic2_opt, self.critic2, "critic/grad_norm2"))
            set_grads(loss1 + loss2, groups, self.grad_sync)
            info.update(self._optimise(groups, self.cfg.grad_norm))

    def _step_actor_and_average(self, actor_loss, info: dict) -> None:
        """The actor's optimiser step, then the EMA / target averaging, then the device step + 1."""
        with nvtx_range("actor/step"):
            groups = ((self.policy.opt, self.policy.actor, "actor/grad_norm"),)
            set_grads(actor_loss, groups, self.grad_sync)
            info.update(self._optimise(groups, self.cfg.grad_norm))
        with nvtx_range("ema_targets"):
            self._average(self.step_t)
        self.step_t.add_(1)

    def _average(self, step) -> None:
        self.policy.update_ema(step)
        self.update_targets()

    @torch.no_grad()
    def update_targets(self):
        for target, live in ((self.critic1_target, self.critic1), (self.critic2_target, self.critic2)):
            torch._foreach_lerp_(list(target.parameters()), list(live.parameters()), self.cfg.polyak)

    def optimizers(self):
        return [self.policy.opt, self.critic1_opt, self.critic2_opt]

    # ---- acting ---------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Evaluation actions from the EMA actor: one sample per state (eval_select="none"), or
        one of n_candidates picked by the critics (top_k: uniformly among the best top_k by
        the risk value; softmax: with probabilities softmax(Q of the target critics))."""
        cfg = self.cfg
        obs = self.norm_obs(obs)
        if cfg.eval_select == "none":
            return self.policy.act(obs, generator)
        B, N = obs.shape[0], cfg.n_candidates
        obs_rep = obs.repeat_interleave(N, dim=0)
        cand = self.policy.act(obs_rep, generator)  # (B * N, A)
        if cfg.eval_select == "top_k":
            value = self.select_risk.value(self.critic1, self.critic2, obs_rep, cand).view(B, N)
            best = value.topk(cfg.top_k, dim=1).indices  # (B, k)
            u = torch.randint(0, cfg.top_k, (B, 1), device=obs.device, generator=generator)
            pick = best.gather(1, u).squeeze(1)
        else:
            q = self.target_q(obs_rep, cand).view(B, N)
            pick = torch.multinomial(torch.softmax(q, dim=1), 1, generator=generator).squeeze(1)
        return cand.view(B, N, -1)[torch.arange(B, device=obs.device), pick]

    @torch.no_grad()
    def target_q(self, obs, action) -> torch.Tensor:
        """Q = mean of the target critics' quantiles on the quadrature grid, min of the two (B,)."""
        return self.q_measure.value(self.critic1_target, self.critic2_target, obs, action)

    @torch.no_grad()
    def critic_quantiles(self, obs: torch.Tensor, action: torch.Tensor, taus: torch.Tensor):
        """Quantiles of both critics at raw observations and fractions taus (K,), in reward units: (2, B, K)."""
        obs = self.norm_obs(obs)
        return torch.stack([self.critic1(obs, action, taus), self.critic2(obs, action, taus)]) * self.reward_scale

    # ---- state ------------------------------------------------------------------
    def load_full_state(self, state: dict):
        model = {}
        for k, v in state["model"].items():  # checkpoints from before the agent contract
            model[f"policy.{k}" if k.startswith(_OLD_POLICY_KEYS) else k] = v
        model.setdefault("reward_scale", torch.ones(()))  # checkpoints from before reward_norm
        super().load_full_state({**state, "model": model})
        self._sync_scale()
