"""The family of risky bandits that the bandit study trains on.

`bandit` is SPEC 2.5. The variants move the modes, change their number (3 and 4)
and their reward laws, scale every reward by 0.5 to 5, and put a safe mode inside a
ring of risky ones. In each, a CVaR_0.1 actor should pick the mode with the best
lower tail (`BanditSpec.best_mode("cvar")`), which is never the mode with the best mean.
"""

from __future__ import annotations

import math

from .bandit_spec import BanditSpec, Mode, RewardLaw

L = RewardLaw.parse


def _spec_2_5() -> BanditSpec:
    return BanditSpec("bandit", (
        Mode("R", (0.7, 0.7), L("two_point(8, -30, 0.1)")),
        Mode("S", (-0.7, 0.7), L("normal(3, 0.5)")),
        Mode("L1", (-0.7, -0.7), L("normal(0, 0.5)")),
        Mode("L2", (0.7, -0.7), L("normal(0, 0.5)")),
    ), ood_reward=-20.0, note="SPEC 2.5")


def _moved() -> BanditSpec:
    # four modes at other places, with four different laws: a wide normal as the risky mode,
    # a rare large loss on one low mode
    return BanditSpec("bandit-moved", (
        Mode("R", (-0.55, -0.6), L("normal(5, 4)")),
        Mode("S", (0.6, -0.45), L("normal(3, 0.5)")),
        Mode("L1", (-0.5, 0.55), L("two_point(2, -10, 0.05)")),
        Mode("L2", (0.45, 0.65), L("normal(0, 0.5)")),
    ), ood_reward=-20.0, note="4 modes moved, other laws")


def _three() -> BanditSpec:
    return BanditSpec("bandit-3modes", (
        Mode("R", (0.0, 0.65), L("two_point(10, -25, 0.15)")),
        Mode("S", (-0.65, -0.45), L("normal(2, 0.3)")),
        Mode("L", (0.65, -0.45), L("normal(0.5, 1)")),
    ), ood_reward=-15.0, note="3 modes")


def _ring() -> BanditSpec:
    # a safe mode at the centre of a ring of six risky modes, each with the best mean
    ring = tuple(
        Mode(f"R{i + 1}", (round(0.72 * math.cos(math.pi * i / 3), 3), round(0.72 * math.sin(math.pi * i / 3), 3)),
             L("two_point(8, -30, 0.1)"), radius=0.28)
        for i in range(6)
    )
    return BanditSpec("bandit-ring", (Mode("S", (0.0, 0.0), L("normal(3, 0.5)"), radius=0.28),) + ring,
                      ood_reward=-20.0, data_sigma=0.08, note="safe mode inside a ring of 6 risky modes")


def _family() -> dict[str, BanditSpec]:
    base, moved, three, ring = _spec_2_5(), _moved(), _three(), _ring()
    specs = [
        base,
        base.scaled(0.5, "bandit-x0.5"),
        base.scaled(2.0, "bandit-x2"),
        base.scaled(5.0, "bandit-x5"),
        moved,
        moved.scaled(5.0, "bandit-moved-x5"),
        three,
        three.scaled(5.0, "bandit-3modes-x5"),
        ring,
        ring.scaled(3.0, "bandit-ring-x3"),
    ]
    return {s.name: s for s in specs}


FAMILY: dict[str, BanditSpec] = _family()
DEFAULT = FAMILY["bandit"]


def get_spec(name: str) -> BanditSpec:
    """A family member by name (`bandit`, `bandit-x5`, ...)."""
    if name not in FAMILY:
        raise ValueError(f"unknown bandit {name!r}; known: {', '.join(FAMILY)}")
    return FAMILY[name]


def is_bandit(task: str) -> bool:
    return task in FAMILY
