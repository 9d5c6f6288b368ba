"""Typed settings: the RADAC agent, the training run, and the per-task presets (SPEC 2.6)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields

from .agents.configs import BCConfig, DiffusionQLConfig, NeutralConfig, RADACConfig  # torch-free
from .agents.registry import ALGOS, config_class
from .envs.bandit_family import FAMILY as BANDITS  # numpy only: building the CLI never imports torch

__all__ = ["ALGOS", "BCConfig", "DiffusionQLConfig", "NeutralConfig", "PRESETS", "Preset", "RADACConfig",
           "TrainConfig", "build_configs", "from_dict", "preset_names", "preset_of", "risk_from_step_one",
           "task_names", "to_dict"]


@dataclass
class TrainConfig:
    """One training run."""

    task: str = "bandit"  # a bandit or MuJoCo preset name (with --dataset: the preset whose settings apply)
    dataset: str = ""  # train on this data set instead of the task's: FILE.npz | FILE.h5 | minari:ID
    env: str = ""  # with --dataset: the Gymnasium env that evaluates (default: the one a Minari set records)
    obs_norm: bool = False  # normalise observations by the data set's mean and std (kept with the agent, used in act)
    algo: str = "radac"  # agent: radac | bc | neutral | diffusion-ql (ramac.agents.registry)
    steps: int = 14_000  # gradient updates
    batch_size: int = 256  # transitions per update
    seed: int = 0  # seeds torch, numpy and the data sampler
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    eval_every: int = 2_000  # steps between evaluations (0: only at the end)
    eval_samples: int = 2_000  # bandit: policy actions per evaluation
    eval_episodes: int = 10  # MuJoCo: episodes per evaluation during training (`ramac eval`: 100)
    log_every: int = 500  # steps between metric records (and non-finite checks)
    ckpt_every: int = 2_000  # steps between checkpoints (always at the end)
    threads: int = 0  # torch CPU threads (0: torch's default)
    graph: bool = True  # on CUDA: replay the whole update as one CUDA graph
    bf16: bool = False  # bf16 autocast for the networks (fp32 master weights, fp32 quantile loss)
    compile: bool = True  # on CUDA: torch.compile the update's pieces (fused kernels in the graph; ~1 min to compile)
    tensorboard: bool = False  # also write the metrics as TensorBoard events into RUN_DIR/tensorboard

    def validate(self) -> "TrainConfig":
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {ALGOS}, got {self.algo!r}")
        for name in ("steps", "batch_size", "eval_samples", "eval_episodes", "log_every", "ckpt_every"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("eval_every", "threads", "seed"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        return self


@dataclass
class Preset:
    """Agent and run settings of one task, per-algorithm overrides, and a smaller CPU variant."""

    agent: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    algo: dict = field(default_factory=dict)  # algo name -> agent overrides
    cpu: dict = field(default_factory=dict)  # agent/train overrides for a CPU-sized run


_CODAC = dict(lr_critic=3e-4, n_quantiles=32, grad_norm=0.0)
_ORAAC = dict(lr_critic=1e-3, n_quantiles=32, grad_norm=0.0)


def _mujoco(diffusion_ql_grad_norm: float, **agent) -> Preset:
    """A Stochastic MuJoCo preset: RADAC's published settings for the task (SPEC 2.6), 2M updates;
    Diffusion-QL with its published locomotion settings (lr 3e-4 for actor and critic, eta 1,
    the task's gradient clip) on the same IQN critics."""
    return Preset(
        agent=agent,
        train=dict(steps=2_000_000, eval_every=50_000, log_every=1_000, ckpt_every=50_000),
        algo={"diffusion-ql": dict(lr_critic=3e-4, eta=1.0, eta_warmup_steps=0, lambda_bc=1.0,
                                   grad_norm=diffusion_ql_grad_norm),
              # FQL's published settings (lr 3e-4 for every network, -Q with weight 1, alpha = 10, no
              # gradient clip) on RADAC's critic shapes for the task; RAFMAC: RADAC's settings
              "fql": dict(lr_critic=3e-4, eta=1.0, eta_warmup_steps=0, lambda_bc=1.0, grad_norm=0.0),
              # CODAC's published settings (critic lr 3e-4, 32 quantiles, no clip; its own defaults for
              # the actor, the penalty and the Lagrange threshold), CQL the same with the mean
              "codac": _CODAC, "cql": _CODAC,
              # ORAAC's published settings (critic lr 1e-3, 32 quantiles, no clip; its own defaults for the
              # actor, the VAE and the perturbation)
              "oraac": _ORAAC},
    )


# RADAC on the bandit (and the neutral ablation, which changes only the distortion)
_BANDIT_RADAC = dict(eta=0.5, risk_norm="none", bc_filter="top", reward_norm="std")

PRESETS: dict[str, Preset] = {
    # SPEC 2.6, published RADAC settings. RADAC's evaluation policy is one sample of the EMA actor per
    # state, as the published sample_action draws (its top_k names which saved checkpoint to keep).
    "halfcheetah-medium-expert": _mujoco(7.0, lr_critic=5e-5, eta=0.02, n_quantiles=32, embedding_dim=128,
                                         q_clip=300.0, lambda_bc=1.0, grad_norm=5.0),
    "halfcheetah-medium-replay": _mujoco(2.0, lr_critic=5e-5, eta=0.02, n_quantiles=16, embedding_dim=64,
                                         q_clip=300.0, lambda_bc=1.0, grad_norm=5.0),
    "hopper-medium-expert": _mujoco(5.0, lr_critic=1e-5, eta=0.05, n_quantiles=16, embedding_dim=64, q_clip=300.0,
                                    lambda_bc=1.0, eta_warmup_steps=300_000, grad_norm=5.0),
    "hopper-medium-replay": _mujoco(4.0, lr_critic=1e-5, eta=0.05, n_quantiles=16, embedding_dim=64, q_clip=150.0,
                                    lambda_bc=1.5, eta_warmup_steps=300_000, grad_norm=5.0),
    "walker2d-medium-expert": _mujoco(5.0, lr_critic=1e-5, eta=0.05, n_quantiles=16, embedding_dim=64, q_clip=300.0,
                                      lambda_bc=1.5, eta_warmup_steps=300_000, grad_norm=5.0),
    "walker2d-medium-replay": _mujoco(4.0, lr_critic=5e-6, eta=0.02, n_quantiles=8, embedding_dim=32, q_clip=300.0,
                                      lambda_bc=1.0, eta_warmup_steps=300_000, grad_norm=3.0),
    # SPEC 2.5: a one-step problem. More denoising steps than MuJoCo (T = 5
    # leaves many samples between the modes), a faster critic (no bootstrapping),
    # and a BC-only warm-up so the critic has learned the reward law before the
    # risk term moves the actor. RADAC here (results/bandit-diagnosis/, results/bandit-study/):
    # the critics learn rewards in units of the data's reward std (reward_norm="std"), which
    # makes -eta * CVaR scale-free without dividing by |CVaR| (that weight grows without bound
    # where the CVaR nears 0, and it did grow as one run slid into the low modes); BC imitates
    # the 10 % of each batch with the largest advantage (data value - the mean value of 4 of the
    # actor's own actions for the state; bc_filter="top"): with plain BC the CVaR actor drifts
    # from S into the low modes once the critic has learned the valleys between the modes
    # (30k+ steps), which the pathwise risk gradient cannot cross; with a threshold filter
    # ("better_mean": data ranked >= the actor) the share BC keeps grows as the actor slips,
    # which opened BC to the low modes and collapsed 1 of 3 (mean) and 3 of 6 (median) runs
    # after 24-31k steps; a fixed share by rank cannot open. eta = 0.5 in those units is about
    # the weight the earlier |CVaR|-normalised form (0.2 / 0.34) had on the default bandit.
    # The published form stays selectable:
    # --set bc_filter=none --set reward_norm=none --set eta=0.2. The risk-neutral ablation
    # sees smaller gaps between the modes' means (R 4.2 vs S 3) than CVaR does between their
    # tails; it keeps RADAC's settings but the distortion.
    "bandit": Preset(
        agent=dict(n_timesteps=20, lr_critic=3e-4, eta_warmup_steps=4_000, q_clip=100.0, ema_start=1_000),
        train=dict(steps=14_000, eval_every=2_000, log_every=500, ckpt_every=2_000),
        algo={"radac": _BANDIT_RADAC, "neutral": _BANDIT_RADAC, "rafmac": _BANDIT_RADAC,
              "diffusion-ql": dict(eta=1.0),  # Diffusion-QL: its published loss and eta
              "fql": dict(_BANDIT_RADAC, eta=1.0)},  # FQL: its weight of -Q, RADAC's anchor and units
        # CPU-sized: narrower networks, fewer fractions and faster learning rates so
        # that both networks leave their initial plateau within a few thousand steps.
        cpu=dict(agent=dict(actor_hidden=128, actor_hidden2=128, vae_hidden=128, critic_hidden=128, embedding_dim=64,
                            n_quantiles=16, n_risk_quantiles=16, lr_actor=1e-3, lr_critic=1e-3, eta_warmup_steps=2_500,
                            ema_start=500, ema_every=1),
                 train=dict(steps=5_000, eval_every=1_000, ckpt_every=1_000)),
    ),
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def task_names() -> list[str]:
    """Every task `ramac train --task` accepts: the presets and the bandit family (which share
    the bandit preset)."""
    return sorted(set(PRESETS) | set(BANDITS))


def preset_for_dataset(source: str, env: str | None = None) -> str:
    """The preset whose settings a user's data set trains with: the MuJoCo body named in the env id
    or the data set's source (HalfCheetah -> halfcheetah-medium-expert, ...), else HalfCheetah's."""
    text = f"{env or ''} {source}".lower().replace("_", "").replace("-", "")
    for body in ("halfcheetah", "hopper", "walker2d"):
        if body in text:
            return f"{body}-medium-expert"
    return "halfcheetah-medium-expert"


def preset_of(task: str) -> str:
    return "bandit" if task in BANDITS else task


def _apply(obj, overrides: dict, what: str):
    names = {f.name: f for f in fields(obj)}
    for key, value in overrides.items():
        if key not in names:
            raise ValueError(f"unknown {what} setting {key!r}; known: {', '.join(sorted(names))}")
        setattr(obj, key, _coerce(names[key], value, key))
    return obj


def _coerce(f: dataclasses.Field, value, key):
    kind = type(f.default)
    if isinstance(value, str) and kind is not str:
        try:
            if kind is bool:
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return value.lower() in ("true", "1", "yes")
            return kind(float(value)) if kind is int and "e" in value.lower() else kind(value)
        except ValueError:
            raise ValueError(f"setting {key}={value!r} is not a valid {kind.__name__}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, kind):
        raise ValueError(f"setting {key}={value!r} must be a {kind.__name__}")
    return value


def build_configs(task: str = "bandit", algo: str = "radac", cpu_sized: bool = False,
                  agent_overrides: dict | None = None, train_overrides: dict | None = None):
    """Resolve (agent config, TrainConfig) for a task preset, an agent and user overrides; the
    agent config is the registry's class for `algo` (RADACConfig, BCConfig, ...).

    Order: the config class's defaults < preset < CPU-sized preset part < the preset's settings
    for this agent < user overrides. Preset settings an agent does not have (BC has no critic)
    are left out; a user override it does not have is an error. Validated once, here.
    """
    if preset_of(task) not in PRESETS:
        raise ValueError(f"unknown task/preset {task!r}; known: {', '.join(task_names())}")
    if algo not in ALGOS:
        raise ValueError(f"unknown algo {algo!r}; choose one of {', '.join(ALGOS)}")
    preset = PRESETS[preset_of(task)]
    cls = config_class(algo)
    known = {f.name for f in fields(cls)}

    def own(settings: dict) -> dict:
        return {k: v for k, v in settings.items() if k in known}

    agent = _apply(cls(), own(preset.agent), "agent")
    train = _apply(TrainConfig(task=task, algo=algo), preset.train, "train")
    if cpu_sized:
        _apply(agent, own(preset.cpu.get("agent", {})), "agent")
        _apply(train, preset.cpu.get("train", {}), "train")
    _apply(agent, own(preset.algo.get(algo, {})), "agent")
    _apply(agent, agent_overrides or {}, "agent")
    _apply(train, train_overrides or {}, "train")
    return agent.validate(), train.validate()


def agent_fields(algo: str) -> set[str]:
    """The names of an agent's settings."""
    return {f.name for f in fields(config_class(algo))}


def agent_shares(overrides: dict, algos) -> tuple[dict[str, dict], list[str]]:
    """Settings meant for several agents: each agent's share (the keys it has), and the keys none
    of them has (a typo would otherwise apply to nobody; callers refuse them)."""
    known = {a: agent_fields(a) for a in algos}
    orphans = [k for k in overrides if not any(k in names for names in known.values())]
    return {a: {k: v for k, v in overrides.items() if k in known[a]} for a in algos}, orphans


def risk_from_step_one(algo: str) -> dict:
    """Agent overrides that time or profile the whole update from the first step: no BC-only
    warm-up, for the agents that have one."""
    return {"eta_warmup_steps": 0} if "eta_warmup_steps" in agent_fields(algo) else {}


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls, data: dict):
    """A config from its saved dict (config.json, checkpoints), migrating older files."""
    data = dict(data)
    if "top_k" in data and "eval_select" not in data and "eval_select" in {f.name for f in fields(cls)}:
        top_k = int(data["top_k"])  # before eval_select: top_k = 0 meant one sample per state
        data["eval_select"], data["top_k"] = ("top_k", top_k) if top_k > 0 else ("none", 1)
    return _apply(cls(), data, cls.__name__).validate()
