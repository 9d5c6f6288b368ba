"""Stochastic MuJoCo (SPEC 3): hazard wrappers on Gymnasium v5 tasks and the six presets.

Velocity hazard (HalfCheetah): |x-velocity| > max_vel marks a step risky; a risky
step is penalised with `cost` with probability `prob`. Pose hazard (Hopper,
Walker2d): torso pitch outside [low, high] marks a step risky (penalised the same
way), and the episode terminates when |pitch| > factor * |high|. The coin flips
use the wrapped environment's own generator, so `reset(seed=...)` makes episodes
reproducible. `info` carries `risky` (bool) and `penalty` (the cost added, or 0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import gymnasium as gym
import numpy as np

# observation indices on v5 (the v2 layouts): x-velocity and torso pitch
XVEL_INDEX = {"HalfCheetah-v5": 8, "Walker2d-v5": 8, "Hopper-v5": 5}
PITCH_INDEX = 1
# D4RL reference returns for normalised scores
D4RL_REF = {"HalfCheetah-v5": (-280.178953, 12135.0), "Hopper-v5": (-20.272305, 3234.3),
            "Walker2d-v5": (1.629008, 4592.3)}
# evaluation horizons of the published results (the full 1000 steps as an option)
EVAL_HORIZON = {"HalfCheetah-v5": 200, "Hopper-v5": 500, "Walker2d-v5": 500}


@dataclass(frozen=True)
class Hazard:
    """Parameters of one preset's hazard."""

    base_env: str  # Gymnasium task id
    kind: str  # "velocity" or "pose"
    cost: float  # reward added on a penalised risky step
    prob: float  # probability that a risky step is penalised
    max_vel: float = 0.0  # velocity hazard: |x-velocity| above this is risky
    low: float = 0.0  # pose hazard: pitch below this is risky
    high: float = 0.0  # pose hazard: pitch above this is risky
    factor: float = 0.0  # pose hazard: terminate when |pitch| > factor * |high|


HAZARDS = {
    "halfcheetah-medium-expert": Hazard("HalfCheetah-v5", "velocity", cost=-70.0, prob=0.05, max_vel=10.0),
    "halfcheetah-medium-replay": Hazard("HalfCheetah-v5", "velocity", cost=-60.0, prob=0.05, max_vel=5.0),
    "hopper-medium-expert": Hazard("Hopper-v5", "pose", cost=-50.0, prob=0.1, low=-0.17, high=0.04, factor=100.0),
    "hopper-medium-replay": Hazard("Hopper-v5", "pose", cost=-50.0, prob=0.1, low=-0.1, high=0.1, factor=2.0),
    "walker2d-medium-expert": Hazard("Walker2d-v5", "pose", cost=-30.0, prob=0.1, low=-0.5, high=0.5, factor=2.0),
    "walker2d-medium-replay": Hazard("Walker2d-v5", "pose", cost=-30.0, prob=0.1, low=-0.5, high=0.5, factor=2.0),
}
RISKY_IDS = {"HalfCheetah-v5": "ramac/RiskyHalfCheetah-v5", "Hopper-v5": "ramac/RiskyHopper-v5",
             "Walker2d-v5": "ramac/RiskyWalker2d-v5"}


class HazardWrapper(gym.Wrapper):
    def __init__(self, env: gym.Env, hazard: Hazard):
        super().__init__(env)
        if hazard.kind not in ("velocity", "pose"):
            raise ValueError(f"hazard kind must be 'velocity' or 'pose', got {hazard.kind!r}")
        if not 0.0 <= hazard.prob <= 1.0:
            raise ValueError(f"penalty probability must be in [0, 1], got {hazard.prob}")
        self.hazard = hazard
        self.xvel_index = XVEL_INDEX.get(hazard.base_env, 8)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        h = self.hazard
        if h.kind == "velocity":
            risky = abs(float(obs[self.xvel_index])) > h.max_vel
        else:
            pitch = float(obs[PITCH_INDEX])
            risky = pitch < h.low or pitch > h.high
            if abs(pitch) > h.factor * abs(h.high):
                terminated = True
        penalty = h.cost if risky and self.np_random.random() < h.prob else 0.0
        info = dict(info, risky=risky, penalty=penalty)
        return obs, reward + penalty, terminated, truncated, info


def make_risky_env(preset: str, **overrides) -> gym.Env:
    """The risky environment of a preset (e.g. 'hopper-medium-replay'); overrides change hazard fields."""
    if preset not in HAZARDS:
        raise ValueError(f"unknown Stochastic MuJoCo preset {preset!r}; known: {', '.join(HAZARDS)}")
    hazard = Hazard(**{**asdict(HAZARDS[preset]), **overrides})
    return HazardWrapper(gym.make(hazard.base_env), hazard)


def _entry_point(preset: str, **overrides):
    return make_risky_env(preset, **overrides)


def env_spec(preset: str) -> gym.envs.registration.EnvSpec:
    """The registered risky env's spec with this preset's hazard in its kwargs: what a data set
    stores, so that Minari's recover_environment() rebuilds this preset's hazard (the registered
    id alone would give its default, the medium-expert hazard)."""
    import dataclasses

    if preset not in HAZARDS:
        raise ValueError(f"unknown Stochastic MuJoCo preset {preset!r}; known: {', '.join(HAZARDS)}")
    spec = gym.spec(RISKY_IDS[HAZARDS[preset].base_env])
    return dataclasses.replace(spec, kwargs={**spec.kwargs, "preset": preset})


def register_envs() -> None:
    """Register ramac/Risky{HalfCheetah,Hopper,Walker2d}-v5 (medium-expert hazards by default)."""
    for preset in ("halfcheetah-medium-expert", "hopper-medium-expert", "walker2d-medium-expert"):
        env_id = RISKY_IDS[HAZARDS[preset].base_env]
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="ramac.envs.mujoco:_entry_point", kwargs={"preset": preset})


def normalized_score(base_env: str, returns) -> np.ndarray:
    lo, hi = D4RL_REF[base_env]
    return 100.0 * (np.asarray(returns, dtype=np.float64) - lo) / (hi - lo)


register_envs()
