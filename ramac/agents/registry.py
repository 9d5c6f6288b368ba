"""Agent names -> (module, class, config class). Torch-free: the CLI lists the names and builds
settings from the config classes; the agent module is imported only when an agent is made."""

from __future__ import annotations

import importlib

from .configs import (BCConfig, CODACConfig, CQLConfig, DiffusionQLConfig, FQLConfig, NeutralConfig, ORAACConfig,
                      RADACConfig, RAFMACConfig)

# name: (module under ramac.agents, class name, config class, one line for --help)
AGENTS = {
    "radac": ("radac", "RADAC", RADACConfig, "diffusion actor, BC + eta * (-CVaR) against two IQN critics"),
    "bc": ("bc", "BC", BCConfig, "the diffusion policy by behaviour cloning alone (no critic)"),
    "neutral": ("radac", "RADAC", NeutralConfig, "RADAC with the risk-neutral distortion (ablation)"),
    "diffusion-ql": ("diffusion_ql", "DiffusionQL", DiffusionQLConfig,
                     "Diffusion-QL: BC + eta * (-Q / mean |Q|), softmax selection by Q at evaluation"),
    "rafmac": ("rafmac", "RAFMAC", RAFMACConfig,
               "flow BC + one-step student, distillation + eta * (-CVaR) against two IQN critics (SPEC 2.4)"),
    "fql": ("rafmac", "FQL", FQLConfig, "FQL: flow BC + one-step student, alpha * distillation - Q (risk-neutral)"),
    "codac": ("codac", "CODAC", CODACConfig,
              "CODAC: tanh-Gaussian actor, CVaR + entropy, against IQN critics with the CQL penalty"),
    "cql": ("codac", "CQL", CQLConfig, "CQL: CODAC's risk-neutral form (Q + entropy, conservative critics)"),
    "oraac": ("oraac", "ORAAC", ORAACConfig,
              "ORAAC: VAE behaviour model + perturbation actor (at most 0.5 * max_action) for CVaR"),
}
ALGOS = tuple(AGENTS)


def _check(name: str) -> None:
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; known: {', '.join(AGENTS)}")


def config_class(name: str) -> type:
    _check(name)
    return AGENTS[name][2]


def agent_class(name: str) -> type:
    _check(name)
    module, cls, _, _ = AGENTS[name]
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)


def make_agent(name: str, state_dim: int, action_dim: int, cfg):
    """Build the named agent; cfg must be an instance of its config class."""
    want = config_class(name)
    if type(cfg) is not want:
        raise TypeError(f"agent {name!r} takes a {want.__name__}, got a {type(cfg).__name__}")
    return agent_class(name)(state_dim, action_dim, cfg)
