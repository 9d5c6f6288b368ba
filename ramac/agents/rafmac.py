"""RAFMAC (SPEC 2.4) and FQL (Park et al. 2025): the flow policy (ramac.flow) against two IQN critics.

One update, in order (RADAC's, with the flow policy in place of the diffusion one):
  1. critics: TD targets from the student's next actions and the target critics, the standard
     IQN quantile-Huber loss for each critic;
  2. actor: lambda_bc * (rectified-flow BC of the velocity field + lambda_distill *
     ||mu(s, z) - flow(s, z)||^2) + eta * (-risk of mu(s, z)), the risk value of the student's
     action from the critics (RAFMAC: CVaR_alpha or another distortion; FQL: Q, the mean of
     the quantiles), gradients into the student only;
  3. Polyak-averaged target critics (no EMA policy: the student is evaluated as trained).

Evaluation: the student, one network pass per state, z ~ N(0, I). The BC filters, reward
normalisation and risk-term forms of RADACConfig apply as they do for RADAC (the filter weights
the flow's BC loss, i.e. which data actions the flow, and through it the student, imitates).
"""

from __future__ import annotations

from ..flow import FlowPolicy
from .configs import FQLConfig, RAFMACConfig
from .radac import RADAC


class RAFMAC(RADAC):
    name = "rafmac"
    Config = RAFMACConfig
    Policy = FlowPolicy


class FQL(RAFMAC):
    name = "fql"
    Config = FQLConfig
