"""Diffusion-QL (Wang et al. 2023), risk-neutral, on the package's IQN critics.

The update is RADAC's with the settings of DiffusionQLConfig: Q is the mean of the critics'
quantiles (the min of the two critics, as RADAC's risk value), the actor loss is the
published BC + eta * (-Q / detached mean |Q|) (risk="neutral", risk_norm="abs"), and the
evaluation policy is the published sample_action: n_candidates = 50 actions per state from
the EMA actor, one drawn with probabilities softmax(Q of the target critics).
"""

from __future__ import annotations

from .configs import DiffusionQLConfig
from .radac import RADAC


class DiffusionQL(RADAC):
    name = "diffusion-ql"
    Config = DiffusionQLConfig
