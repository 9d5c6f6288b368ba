"""The agent contract: what the trainer and the updaters (eager, CUDA graph, torch.compile,
bf16) may use of an agent, and nothing more.

An agent is built from (state_dim, action_dim, config) and owns its networks, optimisers,
schedules and its one step counter. The counter lives twice, kept in step here only:
`step_t`, a 0-d device tensor that update() reads for its schedules and advances on the
device (so one captured CUDA graph serves every step of a phase), and `steps`, its host
mirror, advanced by `advanced()` once per update that really ran (eager or replayed).

    agent.fit_data(data)            once, before training: statistics of the data set
    agent.seed_noise(seed)          the update's random numbers (agent.noise) come from the run's seed
    agent.noise(scope)              the draws of the update at the device step (ramac.noise.Noise)
    agent.noise_shard               (rank, world): this process's slice of a data-parallel batch
    agent.phase()                   the update's control flow at this step (one graph each)
    agent.update(batch) -> dict     one update, graph-safe: no host reads, device metrics
    Agent.losses                    the methods update() calls for its losses: functions of the
                                    parameters, buffers and arguments only (seeds stacked run them
                                    under torch.func.vmap, ramac.train.stacked); () opts out
    agent.advanced()                the updater ran one update (eager or a replay)
    agent.optimizers()              the optimisers it owns (the updater picks their kernels)
    agent.before_capture()          drop caches a capture must not read (weight packs)
    agent.sync()                    before evaluating or saving after replays
    agent.compile_update(bf16)      run the update's pieces through torch.compile
    agent.act(obs, generator=None)  evaluation actions (its own evaluation policy) from raw observations
    agent.set_obs_norm(mean, std)   act() normalises observations as the training data were
    agent.full_state() / load_full_state(state)
"""

from __future__ import annotations

import os
from typing import ClassVar, Hashable

import torch
from torch import nn

from ..noise import Noise
from ..utils import env_switch


class Agent(nn.Module):
    name: ClassVar[str] = ""
    Config: ClassVar[type] = object
    losses: ClassVar[tuple[str, ...]] = ()

    def __init__(self, state_dim: int, action_dim: int, cfg):
        super().__init__()
        self.cfg = cfg
        self.state_dim, self.action_dim = state_dim, action_dim
        self.register_buffer("step_t", torch.zeros((), dtype=torch.long))
        self.steps = 0
        # every random number of update() (and the updaters' batch indices) is a function of this
        # seed, the device step and the draw's name: see ramac.noise
        self.register_buffer("noise_seed", torch.zeros((), dtype=torch.long))
        self.noise_shard = (0, 1)
        self.grad_sync = None  # data parallelism: averages each network's gradients over the processes
        # observation normalisation (identity unless the run asks for it): act() takes raw observations
        self.register_buffer("obs_mean", torch.zeros(state_dim))
        self.register_buffer("obs_std", torch.ones(state_dim))

    def set_obs_norm(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """From now on act() normalises its observations (the data set's, normalised alike, train it)."""
        self.obs_mean.copy_(mean)
        self.obs_std.copy_(std)

    def norm_obs(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    # ---- training -------------------------------------------------------------------
    def fit_data(self, data) -> None:
        """Called once before training with the whole data set (on the training device)."""

    def seed_noise(self, seed: int) -> None:
        """The update's random numbers come from the run's seed: two seeds differ, one seed repeats,
        on every path (eager, graphed, compiled) and side by side with other seeds."""
        self.noise_seed.fill_(int(seed))

    def noise(self, scope: str = "") -> Noise:
        """The draws of the update at the current device step (graph-safe: no host read)."""
        return Noise.at(self.noise_seed, self.step_t, scope, self.noise_shard)

    def phase(self) -> Hashable:
        """Which control flow the next update takes (the updater keeps one CUDA graph per phase)."""
        return 0

    def update(self, batch) -> dict:
        """One update from a Batch: detached metric tensors; advances step_t on the device."""
        raise NotImplementedError

    def advanced(self) -> None:
        self.steps += 1

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return []

    def before_capture(self) -> None:
        """Called right before a CUDA-graph capture of update()."""

    def sync(self) -> None:
        """Called after graph replays, before anything reads the agent's eager state."""

    def compile_update(self, bf16: bool = False) -> None:
        """Compile what pays to compile (default: nothing); bf16: the update runs under bf16
        autocast (some of Inductor's settings pay on one path only)."""

    def _compile_methods(self, *names: str, bf16: bool = False) -> None:
        """torch.compile these methods of the update, once per agent. The update's draws are
        ramac.noise's integer arithmetic, which Inductor fuses and computes as eager does: a
        compiled update computes the eager one's numbers up to float rounding. The optimisers take
        the multi-tensor path, which Inductor fuses itself."""
        if self.__dict__.get("_compiled"):
            return
        self._compiled = True
        limit = max(torch._dynamo.config.recompile_limit, 64)  # one compile per agent instance and phase
        torch._dynamo.config.recompile_limit = limit
        for opt in self.optimizers():
            for group in opt.param_groups:  # Inductor fuses the multi-tensor ops, not the fused kernel
                group["fused"], group["foreach"] = False, True
        options = dict(dynamic=False, options=inductor_options(bf16))
        for name in names:  # a method that knows how it compiles says so (seeds stacked: ramac.train.stacked)
            method = getattr(self, name)
            setattr(self, name, method.compiled(**options) if hasattr(method, "compiled") else
                    torch.compile(method, **options))

    # ---- acting -----------------------------------------------------------------------
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    # ---- state ------------------------------------------------------------------------
    def full_state(self) -> dict:
        """Parameters, buffers, optimiser states and the step; tensors that are views (seeds stacked:
        this seed's slice of the stack's tensors) copied, so that a checkpoint saves its own seed only."""
        return _owned({"model": self.state_dict(), "optimizers": [o.state_dict() for o in self.optimizers()],
                       "steps": self.steps})

    def load_full_state(self, state: dict) -> None:
        model = dict(state["model"])
        steps = int(state.get("steps", state.get("steps_done", 0)))
        model.setdefault("step_t", torch.tensor(steps))  # checkpoints from before the contract
        model.setdefault("obs_mean", torch.zeros(self.state_dim))  # ... and from before observation normalisation
        model.setdefault("obs_std", torch.ones(self.state_dim))
        model.setdefault("noise_seed", self.noise_seed.detach().clone())  # ... and from before ramac.noise
        model.pop("sampler_seed", None)  # the chain sampler's Philox seed of then
        self.load_state_dict(model)
        opts = state.get("optimizers")
        if opts is None:  # checkpoints from before the contract named each optimiser
            opts = [state[k] for k in ("actor_opt", "critic1_opt", "critic2_opt") if k in state]
        for opt, s in zip(self.optimizers(), opts, strict=True):
            opt.load_state_dict(s)
        self.steps = steps
        self.step_t.fill_(steps)


def _owned(obj):
    """obj with every tensor that is a part of a larger storage (a view, or a detached view: a stacked
    seed's parameter in state_dict()) replaced by a copy: torch.save writes the whole storage."""
    if isinstance(obj, dict):
        return {k: _owned(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_owned(v) for v in obj)
    if torch.is_tensor(obj) and obj.untyped_storage().nbytes() > obj.numel() * obj.element_size():
        return obj.clone()
    return obj


def inductor_options(bf16: bool) -> dict:
    """The Inductor settings of every compiled piece of an update (the agents' methods, the
    updater's batch draw); bf16: the update runs under bf16 autocast."""
    inductor = {"fallback_random": True}
    # Inductor's horizontal fusion of independent kernels (issue 18 item 3): on an H200, one seed
    # at batch 256 (graph-compile-bf16) 713 -> 803 updates/s alone, 737 -> 857 with the IQN
    # critic's operator (bench/results/speed-ab-H200/, qh-combo-H200/); RAMAC_COMBO_KERNELS=0 opts out
    if os.environ.get("RAMAC_COMBO_KERNELS", "1") != "0":
        inductor["combo_kernels"] = True
    # Inductor pads matrix products whose sizes are not multiples of 16 bytes (HalfCheetah's 17
    # state and 6 action columns, the denoiser's 39 inputs) only where it thinks them compute
    # bound, never at batch 256, where cuBLAS then runs sm_75 "align1" kernels (120 of the 1,160 us
    # of bench/results/defaults-H200/bf16-defaults.md). Padded all on the bf16 path (the default;
    # RAMAC_SHAPE_PAD=0 leaves it to Inductor, =1 pads the fp32 path too): one RADAC seed at
    # batch 256 on an H200, graph-compile-bf16 896 -> 966 updates/s (bench/results/clip-pad-H200/),
    # graph-compile (fp32) 566 -> 548 (bench/results/defaults2-H200/)
    if env_switch("RAMAC_SHAPE_PAD", bf16):
        inductor["force_shape_pad"] = True
    # Programmatic Dependent Launch between Inductor's kernels (Hopper and later: a kernel's
    # prologue overlaps its predecessor's tail, where ~450 kernels average 2.5 us each at batch
    # 256); opt-in (RAMAC_PDL=1): one RADAC seed at batch 256 on graph-compile-bf16, 1,031 -> 1,052
    # updates/s on an H200, within the spread of repeated runs (bench/results/defaults2-H200/)
    if env_switch("RAMAC_PDL", False):
        inductor["triton.enable_pdl"] = True
    return inductor
