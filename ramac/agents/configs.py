"""Each agent's settings as a dataclass (torch-free: the CLI and the presets read them without
importing torch). Field comments are the CLI's help; defaults are the published ones.

    DiffusionActorConfig   the diffusion policy every diffusion agent trains (BC uses only it)
    RADACConfig            + two IQN critics and the BC + eta * (-risk) actor loss (SPEC 2.3)
    NeutralConfig          RADAC with the risk-neutral distortion (an ablation: every other setting RADAC's)
    DiffusionQLConfig      Diffusion-QL (Wang et al. 2023): Q normalised by mean |Q|, softmax selection at evaluation
    FlowActorConfig        the flow policy: rectified-flow BC field and a one-step student (FQL's)
    RAFMACConfig           + two IQN critics: lambda_distill * distillation + eta * (-risk) (SPEC 2.4)
    FQLConfig              FQL (Park et al. 2025): RAFMAC's loss with Q (risk-neutral), its alpha
    GaussianActorConfig    a tanh-Gaussian policy (SAC's) with a target copy
    CODACConfig            + two IQN critics with the CQL penalty; actor: distorted expectation + entropy
    CQLConfig              CQL (Kumar et al. 2020): CODAC's risk-neutral form
    ORAACConfig            ORAAC (Urpi et al. 2021): VAE behaviour model + bounded perturbation actor for CVaR
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

RISK_NORMS = ("none", "abs")
REWARD_NORMS = ("none", "std")
BC_FILTERS = ("none", "better", "better_mean", "better_median", "top", "soft")
EVAL_SELECT = ("none", "top_k", "softmax")
SAMPLER_PRECISIONS = ("bf16", "tf32", "fp32")  # kernels.PRECISIONS, restated so that this module stays torch-free
SCHEDULES = ("vp", "linear", "cosine")  # diffusion.SCHEDULES, likewise


def _check(cfg, positive=(), non_negative=(), unit=(), choices=()):
    for name in positive:
        if not getattr(cfg, name) > 0:
            raise ValueError(f"{name} must be > 0, got {getattr(cfg, name)}")
    for name in non_negative:
        if not getattr(cfg, name) >= 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    for name in unit:
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {getattr(cfg, name)}")
    for name, allowed in choices:
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {getattr(cfg, name)!r}")


@dataclass
class DiffusionActorConfig:
    """The diffusion policy (eps-prediction denoiser, DDPM chain) and its EMA copy."""

    lr_actor: float = 3e-4  # Adam learning rate of the denoiser
    actor_hidden: int = 256  # width of the denoiser's 3 hidden layers
    n_timesteps: int = 5  # diffusion steps T
    beta_schedule: str = "vp"  # vp | linear | cosine
    max_action: float = 1.0  # actions (and predicted x0) are clipped to [-max_action, max_action]
    ema_decay: float = 0.995  # EMA actor decay
    ema_start: int = 1000  # EMA copies the actor until this step, then averages
    ema_every: int = 5  # EMA update period (steps)
    sampler_precision: str = "bf16"  # tensor-core inputs of the one-launch sampler on CUDA: bf16 | tf32 | fp32
    grad_norm: float = 5.0  # gradient-norm clip of every network (0 = off)

    def validate(self):
        _check(self, positive=("lr_actor", "max_action", "actor_hidden", "n_timesteps", "ema_every"),
               non_negative=("ema_start", "grad_norm"), unit=("ema_decay",),
               choices=(("beta_schedule", SCHEDULES), ("sampler_precision", SAMPLER_PRECISIONS)))
        return self


BCConfig = DiffusionActorConfig  # BC trains the diffusion policy alone: no critic, no other setting


@dataclass
class FlowActorConfig:
    """The flow policy (Park et al. 2025): a velocity field trained by rectified-flow BC, integrated
    with flow_steps Euler steps, and a one-step student mu(s, z) distilled from it (the evaluated
    policy). Published FQL shapes: 4 hidden layers of 512 (GELU), lr 3e-4, no gradient clip."""

    lr_actor: float = 3e-4  # Adam learning rate of the velocity field and the student
    actor_hidden: int = 512  # width of the hidden layers of the velocity field and of the student
    actor_layers: int = 4  # hidden layers of each
    flow_steps: int = 10  # Euler steps of the BC flow (the distillation target)
    lambda_distill: float = 10.0  # weight of ||mu(s, z) - flow(s, z)||^2 (FQL's alpha)
    max_action: float = 1.0  # the student's and the flow's actions are clipped to [-max_action, max_action]
    grad_norm: float = 0.0  # gradient-norm clip of every network (0 = off, as FQL)
    sampler_precision: str = "bf16"  # tensor-core inputs of the one-launch student sampler on CUDA: bf16 | tf32 | fp32

    def validate(self):
        _check(self, positive=("lr_actor", "max_action", "actor_hidden", "actor_layers", "flow_steps"),
               non_negative=("lambda_distill", "grad_norm"), choices=(("sampler_precision", SAMPLER_PRECISIONS),))
        return self


@dataclass
class CriticConfig:
    """Two IQN critics with Polyak-averaged targets, and the risk measure the actor is trained for."""

    lr_critic: float = 5e-5  # Adam learning rate of each critic
    critic_hidden: int = 256  # width of the critic's state/action/head layers
    n_quantiles: int = 32  # fractions K of the critic loss (predicted and target)
    embedding_dim: int = 128  # quantile embedding width
    n_cos: int = 0  # cosine features of tau; 0 = n_quantiles as published
    gamma: float = 0.99  # discount
    polyak: float = 0.005  # target update rate
    q_clip: float = 300.0  # TD targets are clipped to [-q_clip, q_clip] (reward units)
    reward_norm: str = "none"  # none (published) | std: the critics learn rewards divided by the data's reward std
    kappa: float = 1.0  # Huber threshold of the quantile loss (reward units)
    # -- risk measure of the actor loss (SPEC 2.2)
    risk: str = "cvar"  # distortion: neutral | cvar | wang | cpw | power
    risk_param: float = 0.1  # the distortion's parameter: alpha for cvar, its own eta for wang / cpw / power
    n_risk_quantiles: int = 32  # fractions per sample in the actor's risk term
    risk_quadrature: bool = False  # deterministic midpoint grid instead of random fractions

    def validate_critic(self):
        _check(self, positive=("lr_critic", "kappa", "critic_hidden", "n_quantiles", "embedding_dim",
                               "n_risk_quantiles"),
               non_negative=("n_cos", "q_clip"), unit=("gamma",), choices=(("reward_norm", REWARD_NORMS),))
        if not 0.0 < self.polyak <= 1.0:
            raise ValueError(f"polyak must be in (0, 1], got {self.polyak}")
        from .. import kernels  # the distortion's parameter range lives with the kernels

        kernels.check_distortion(self.risk, self.risk_param)
        return self


@dataclass
class CriticLossConfig(CriticConfig):
    """The critics and the actor loss lambda_bc * BC + eta * (-risk) of the generative-policy agents."""

    lambda_bc: float = 1.0  # weight of the BC loss (eps-prediction for diffusion, rectified flow for flows)
    eta: float = 0.02  # weight of the risk term -risk(Z) in the actor loss (not the distortion's parameter)
    eta_warmup_steps: int = 0  # eta = 0 before this step (BC only)
    eta_ramp_steps: int = 0  # then eta ramps linearly to its value over this many steps
    risk_norm: str = "none"  # none: published -eta * risk; abs: -eta * risk / detached mean |risk|
    bc_filter: str = "none"  # none: BC on every data action (published); better: only data actions ranked >= the
    # actor's own action for the state; better_mean: >= the mean value of bc_filter_samples actor actions
    # (the binary advantage filter of CRR, Wang et al. 2020); better_median: >= their median (one stray action
    # of the actor, e.g. off the data, cannot open the filter to the low modes for its state); top: the
    # bc_filter_top share of the batch with the largest advantage A = data value - that mean (a fixed share:
    # the anchor neither vanishes as the actor improves nor opens to the low modes as it slips); soft: weights
    # softmax(A / std(A) / temperature) over the batch (CRR's exponential filter made scale-free)
    bc_filter_samples: int = 4  # actor actions per state that estimate the threshold (all filters but better)
    bc_filter_top: float = 0.1  # bc_filter="top": share of the batch imitated
    bc_filter_temperature: float = 1.0  # bc_filter="soft": temperature of the standardised advantages
    # -- evaluation policy
    eval_select: str = "none"  # none: one sample per state; top_k: one of the best top_k of n_candidates by the
    # critics' risk value; softmax: one of n_candidates drawn with probabilities softmax(target-critic Q)
    top_k: int = 1  # with eval_select="top_k"
    n_candidates: int = 10  # candidates per state with eval_select="top_k" or "softmax"

    def validate_loss(self):
        self.validate_critic()
        _check(self, positive=("n_candidates", "bc_filter_samples", "top_k", "bc_filter_temperature"),
               non_negative=("lambda_bc", "eta", "eta_warmup_steps", "eta_ramp_steps"),
               choices=(("bc_filter", BC_FILTERS), ("risk_norm", RISK_NORMS), ("eval_select", EVAL_SELECT)))
        if not 0.0 < self.bc_filter_top <= 1.0:
            raise ValueError(f"bc_filter_top must be in (0, 1], got {self.bc_filter_top}")
        if self.lambda_bc == 0 and self.eta == 0:
            raise ValueError("lambda_bc and eta are both 0: the actor would not learn")
        if self.top_k > self.n_candidates:
            raise ValueError(f"top_k ({self.top_k}) cannot exceed n_candidates ({self.n_candidates})")
        return self


@dataclass
class RADACConfig(CriticLossConfig, DiffusionActorConfig):
    """RADAC: the diffusion actor trained with lambda_bc * BC + eta * (-risk) against two IQN critics."""

    def validate(self):
        DiffusionActorConfig.validate(self)
        return self.validate_loss()


@dataclass
class RAFMACConfig(CriticLossConfig, FlowActorConfig):
    """RAFMAC (SPEC 2.4): the flow policy's student trained with lambda_distill * distillation +
    eta * (-risk) against two IQN critics, beside the flow's own BC loss."""

    def validate(self):
        FlowActorConfig.validate(self)
        self.validate_loss()
        if self.eval_select != "none":
            raise ValueError(f"a flow agent acts with its one-step student (eval_select none), "
                             f"got {self.eval_select!r}")
        return self


@dataclass
class FQLConfig(RAFMACConfig):
    """FQL (Park et al. 2025), risk-neutral: the same flow and student with FQL's loss: rectified-flow
    BC + alpha * distillation - Q, Q the mean of the IQN critics' quantiles (min of the two; FQL
    averages its two scalar critics), unnormalised (FQL's normalize_q_loss=False), alpha = 10 (its
    default; the FQL paper tunes alpha per task and reports none for D4RL locomotion)."""

    risk: str = "neutral"  # fixed: Q = the mean of the quantiles
    risk_param: float = 0.0  # unused
    eta: float = 1.0  # weight of -Q (FQL: 1)

    def validate(self):
        if self.risk != "neutral":
            raise ValueError(f"FQL is risk-neutral, got risk={self.risk!r} (use --algo rafmac)")
        return super().validate()


@dataclass
class GaussianActorConfig:
    """A tanh-Gaussian policy (SAC's) with a Polyak-averaged target copy that makes the next actions."""

    lr_actor: float = 3e-5  # Adam learning rate of the policy (CODAC: 3e-5)
    actor_hidden: int = 256  # width of the policy's 2 hidden layers
    max_action: float = 1.0  # actions are tanh-squashed into [-max_action, max_action]
    entropy_alpha: float = 0.2  # SAC's entropy temperature, fixed (CODAC's default: no automatic tuning)
    grad_norm: float = 0.0  # gradient-norm clip of every network (0 = off, as CODAC)

    def validate(self):
        _check(self, positive=("lr_actor", "actor_hidden", "max_action"), non_negative=("entropy_alpha", "grad_norm"))
        return self


@dataclass
class CODACConfig(CriticConfig, GaussianActorConfig):
    """CODAC (Ma et al. 2021): the IQN critics with a conservative (CQL) penalty per quantile level,
    and a tanh-Gaussian actor maximising the distorted expectation minus entropy_alpha * log pi."""

    lr_critic: float = 3e-4  # CODAC: 3e-4
    cql_weight: float = 10.0  # weight of the penalty log-sum-exp_a Z_tau(s, a) - Z_tau(s, a_data) (min_z_weight)
    cql_actions: int = 10  # actions per state of each kind in the log-sum-exp: uniform, pi(s), pi(s')
    lagrange: bool = True  # tune the penalty's weight alpha' so that the penalty stays near lagrange_threshold
    lagrange_threshold: float = 10.0  # the penalty's target value (in the critics' units)
    lr_lagrange: float = 3e-4  # Adam learning rate of log alpha'

    def validate(self):
        GaussianActorConfig.validate(self)
        self.validate_critic()
        _check(self, positive=("cql_actions", "lr_lagrange"), non_negative=("cql_weight",))
        return self


@dataclass
class CQLConfig(CODACConfig):
    """CQL (Kumar et al. 2020) as CODAC's risk-neutral form: the actor maximises the mean of the
    conservative IQN critics' quantiles (CQL has a scalar critic)."""

    risk: str = "neutral"  # fixed: Q = the mean of the quantiles
    risk_param: float = 0.0  # unused

    def validate(self):
        if self.risk != "neutral":
            raise ValueError(f"CQL is risk-neutral, got risk={self.risk!r} (use --algo codac)")
        return super().validate()


@dataclass
class NeutralConfig(RADACConfig):
    """RADAC with the risk-neutral distortion (the mean of the quantiles): the ablation that
    changes nothing but the risk measure."""

    risk: str = "neutral"  # fixed: the mean of the critics' quantiles
    risk_param: float = 0.0  # unused by the neutral distortion

    def validate(self):
        if self.risk != "neutral":
            raise ValueError(f"the neutral agent's risk is 'neutral', got {self.risk!r} (use --algo radac)")
        return super().validate()


@dataclass
class DiffusionQLConfig(RADACConfig):
    """Diffusion-QL (Wang et al. 2023, published actor loss): BC + eta * (-Q / detached mean |Q|) with
    Q the mean of the IQN critics' quantiles (min of the two), and at evaluation one of n_candidates
    actions drawn with probabilities softmax(Q of the target critic), as its sample_action does."""

    risk: str = "neutral"  # fixed: Q = the mean of the quantiles
    risk_param: float = 0.0  # unused
    risk_norm: str = "abs"  # the published normalisation of Q
    eta: float = 1.0  # published weight for the locomotion tasks
    eval_select: str = "softmax"  # the published evaluation policy
    n_candidates: int = 50  # candidates per state in the published sample_action

    def validate(self):
        if self.risk != "neutral":
            raise ValueError(f"Diffusion-QL is risk-neutral, got risk={self.risk!r} (use --algo radac)")
        return super().validate()


@dataclass
class ORAACConfig(CriticConfig):
    """ORAAC (Urpi et al. 2021): a conditional VAE of the data's actions and a perturbation actor that
    moves the VAE's action by at most perturbation * max_action towards a higher risk value (the
    distortion of the critics: CVaR_alpha, sampled fractions), against the two IQN critics. Published
    settings (its D4RL configs): critic lr 1e-3, actor lr 1e-4, VAE lr 1e-3 (Adam's default), 8
    fractions in the actor's risk term, the actor and the targets updated every 2nd step, lamda 0.5,
    i.e. a perturbation of up to 0.5 * max_action."""

    lr_critic: float = 1e-3  # ORAAC: 1e-3
    n_risk_quantiles: int = 8  # ORAAC: 8 fractions tau ~ U(0, alpha) per state in the actor's risk term
    grad_norm: float = 0.0  # gradient-norm clip of every network (0 = off, as ORAAC)
    # -- the policy
    lr_actor: float = 1e-4  # Adam learning rate of the perturbation actor
    actor_hidden: int = 400  # width of the perturbation actor's first hidden layer
    actor_hidden2: int = 300  # ... and of its second
    perturbation: float = 0.5  # the largest perturbation per action dimension, in units of max_action (1 - lamda)
    actor_every: int = 2  # the actor and the target networks are updated every this many steps
    max_action: float = 1.0  # actions are clipped to [-max_action, max_action]
    # -- the behaviour model (VAE)
    lr_vae: float = 1e-3  # Adam learning rate of the VAE
    vae_hidden: int = 750  # width of the encoder's and the decoder's 2 hidden layers
    latent_dim: int = 0  # latent dimension; 0 = 2 * action_dim (ORAAC's)
    kl_weight: float = 0.5  # weight of the KL term of the VAE loss

    def validate(self):
        self.validate_critic()
        _check(self, positive=("lr_actor", "actor_hidden", "actor_hidden2", "actor_every", "max_action", "lr_vae",
                               "vae_hidden"),
               non_negative=("latent_dim", "kl_weight", "grad_norm"))
        if not 0.0 < self.perturbation <= 2.0:
            raise ValueError(f"perturbation must be in (0, 2] (units of max_action), got {self.perturbation}")
        return self


def fields_of(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def field_help(cls) -> dict[str, str]:
    """Each field's help: its comment in the class source (continuation comment lines included;
    `# --` lines are section headings), over the class and its bases. The CLI's help comes from here, so a default lives in one place."""
    import inspect

    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        last = None
        for line in inspect.getsource(klass).splitlines():
            stripped = line.strip()
            if stripped.startswith("# --"):  # a section heading, not a field's comment
                last = None
                continue
            if stripped.startswith("#") and last is not None and line.startswith("    #"):
                out[last] += " " + stripped.lstrip("# ").strip()
                continue
            head, _, comment = line.partition("  # ")
            name = head.strip().split(":")[0]
            if line.startswith("    ") and not line.startswith("     ") and ":" in head and name.isidentifier():
                base = out.get(name)  # a subclass's comment adds to its base's
                out[name] = f"{base} ({comment.strip()})" if base and comment.strip() else (comment.strip() or base or "")
                last = name
            elif stripped and not stripped.startswith("#"):
                last = None
    return out
