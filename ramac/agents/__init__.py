"""Agents behind one contract (base.Agent), found by name in the registry.

    base.py          the contract the trainer and the updaters use
    configs.py       every agent's settings (torch-free)
    registry.py      name -> agent class and config class
    policy.py        the diffusion policy the diffusion agents share
    radac.py         RADAC (and the risk-neutral ablation "neutral")
    bc.py            BC
    diffusion_ql.py  Diffusion-QL
"""

from .registry import ALGOS, AGENTS, agent_class, config_class, make_agent

__all__ = ["ALGOS", "AGENTS", "agent_class", "config_class", "make_agent"]
