"""The layout and reward laws of a 2-D risky bandit, as parameters (SPEC 2.5 is the default).

A bandit is a set of modes in the action box [-1, 1]^2, each a disc with a centre,
a radius and a reward law; actions outside every disc pay a fixed OOD reward. The
behaviour data are a mixture of Gaussians (sigma per axis) at the mode centres,
clipped to the box. Laws are written as short strings, e.g. ``normal(3, 0.5)`` or
``two_point(8, -30, 0.1)`` (+8, or -30 with probability 0.1), so specs read well in
JSON, TOML and on the command line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from statistics import NormalDist

import numpy as np

LAW_KINDS = ("normal", "two_point", "constant")


@dataclass(frozen=True)
class RewardLaw:
    """normal(mean, std) | two_point(high, low, p_low) | constant(value)."""

    kind: str
    params: tuple[float, ...]

    def __post_init__(self):
        need = {"normal": 2, "two_point": 3, "constant": 1}
        if self.kind not in need:
            raise ValueError(f"unknown reward law {self.kind!r}; choose one of {LAW_KINDS}")
        if len(self.params) != need[self.kind]:
            raise ValueError(f"{self.kind} takes {need[self.kind]} parameters, got {len(self.params)}")
        if not all(math.isfinite(p) for p in self.params):
            raise ValueError(f"{self}: parameters must be finite")
        if self.kind == "normal" and self.params[1] < 0:
            raise ValueError(f"{self}: the standard deviation must be >= 0")
        if self.kind == "two_point" and not 0.0 <= self.params[2] <= 1.0:
            raise ValueError(f"{self}: p_low must be in [0, 1]")

    @classmethod
    def parse(cls, text: str) -> "RewardLaw":
        m = re.fullmatch(r"\s*(\w+)\s*\(([^)]*)\)\s*", text)
        if not m:
            raise ValueError(f"cannot read reward law {text!r}; write e.g. normal(3, 0.5) or two_point(8, -30, 0.1)")
        try:
            params = tuple(float(p) for p in m.group(2).split(",") if p.strip())
        except ValueError:
            raise ValueError(f"cannot read the numbers of reward law {text!r}") from None
        return cls(m.group(1), params)

    def __str__(self) -> str:
        return f"{self.kind}({', '.join(f'{p:g}' for p in self.params)})"

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "normal":
            return rng.normal(self.params[0], self.params[1], n)
        if self.kind == "two_point":
            high, low, p_low = self.params
            return np.where(rng.random(n) < p_low, low, high)
        return np.full(n, self.params[0])

    def mean(self) -> float:
        if self.kind == "normal":
            return self.params[0]
        if self.kind == "two_point":
            high, low, p_low = self.params
            return p_low * low + (1 - p_low) * high
        return self.params[0]

    def cvar(self, alpha: float) -> float:
        """Exact CVaR_alpha (mean of the lower alpha tail)."""
        if self.kind == "normal":
            mu, sd = self.params
            z = NormalDist().inv_cdf(alpha)
            return mu - sd * math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi) / alpha
        if self.kind == "two_point":
            high, low, p_low = self.params
            lo, hi = min(high, low), max(high, low)
            p_lo = p_low if low <= high else 1 - p_low
            return lo if p_lo >= alpha else (p_lo * lo + (alpha - p_lo) * hi) / alpha
        return self.params[0]

    def quantile(self, tau: float) -> float:
        if self.kind == "normal":
            return self.params[0] + self.params[1] * NormalDist().inv_cdf(min(max(tau, 1e-9), 1 - 1e-9))
        if self.kind == "two_point":
            high, low, p_low = self.params
            lo, hi = min(high, low), max(high, low)
            p_lo = p_low if low <= high else 1 - p_low
            return lo if tau < p_lo else hi
        return self.params[0]

    def scaled(self, k: float) -> "RewardLaw":
        """Rewards multiplied by k (a normal's std too)."""
        if self.kind == "normal":
            return RewardLaw("normal", (k * self.params[0], abs(k) * self.params[1]))
        if self.kind == "two_point":
            return RewardLaw("two_point", (k * self.params[0], k * self.params[1], self.params[2]))
        return RewardLaw("constant", (k * self.params[0],))


@dataclass(frozen=True)
class Mode:
    name: str
    centre: tuple[float, float]
    law: RewardLaw
    radius: float = 0.35
    weight: float = 1.0  # share of the behaviour data (normalised over the modes)


@dataclass(frozen=True)
class BanditSpec:
    """Modes, the OOD reward and how the behaviour data are drawn."""

    name: str
    modes: tuple[Mode, ...]
    ood_reward: float = -20.0  # reward of an action outside every mode's disc
    data_sigma: float = 0.1  # behaviour noise per axis around a mode centre
    n_data: int = 10_000  # transitions in the default data set
    note: str = field(default="", compare=False)  # what the variant tests

    def __post_init__(self):
        if not self.modes:
            raise ValueError(f"bandit {self.name!r} needs at least one mode")
        names = [m.name for m in self.modes]
        if len(set(names)) != len(names) or "outside" in names:
            raise ValueError(f"bandit {self.name!r}: mode names must be unique and not 'outside', got {names}")
        for m in self.modes:
            if not (len(m.centre) == 2 and all(-1.0 <= c <= 1.0 for c in m.centre)):
                raise ValueError(f"bandit {self.name!r}: centre of {m.name} must lie in [-1, 1]^2, got {m.centre}")
            if not m.radius > 0 or not m.weight > 0:
                raise ValueError(f"bandit {self.name!r}: {m.name} needs radius > 0 and weight > 0")
        if not self.data_sigma >= 0 or not self.n_data >= 1:
            raise ValueError(f"bandit {self.name!r}: need data_sigma >= 0 and n_data >= 1")

    # ---- geometry and rewards ------------------------------------------------------
    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modes) + ("outside",)

    @property
    def centres(self) -> np.ndarray:
        return np.array([m.centre for m in self.modes], dtype=np.float64)

    def region_of(self, actions) -> np.ndarray:
        """Mode index per action (nearest centre whose disc holds it), len(modes) outside every disc."""
        a = np.asarray(actions, dtype=np.float64).reshape(-1, 2)
        d = np.linalg.norm(a[:, None, :] - self.centres[None], axis=-1)  # (N, M)
        radii = np.array([m.radius for m in self.modes])
        d = np.where(d <= radii[None], d, np.inf)
        nearest = d.argmin(axis=1)
        return np.where(np.isfinite(d[np.arange(len(a)), nearest]), nearest, len(self.modes))

    def sample_rewards(self, actions, rng: np.random.Generator) -> np.ndarray:
        region = self.region_of(actions)
        r = np.full(len(region), float(self.ood_reward))
        groups: dict[RewardLaw, list[int]] = {}  # modes with one law share one draw, in index order
        for i, m in enumerate(self.modes):
            groups.setdefault(m.law, []).append(i)
        for law, idx in groups.items():
            hit = np.isin(region, idx)
            r[hit] = law.sample(rng, int(hit.sum()))
        return r

    def region_stats(self, alpha: float = 0.1) -> dict[str, tuple[float, float]]:
        """Exact (mean, CVaR_alpha) of each region's reward law."""
        out = {m.name: (m.law.mean(), m.law.cvar(alpha)) for m in self.modes}
        out["outside"] = (float(self.ood_reward), float(self.ood_reward))
        return out

    def best_modes(self, risk: str = "cvar", alpha: float = 0.1) -> list[str]:
        """The modes (several where tied) a CVaR_alpha actor ('cvar') or a risk-neutral one
        ('mean') should pick."""
        col = 1 if risk == "cvar" else 0
        stats = self.region_stats(alpha)
        best = max(stats[m.name][col] for m in self.modes)
        return [m.name for m in self.modes if stats[m.name][col] >= best - 1e-9]

    def best_mode(self, risk: str = "cvar", alpha: float = 0.1) -> str:
        return "+".join(self.best_modes(risk, alpha))

    def reward_range(self) -> tuple[float, float]:
        lo = min([m.law.quantile(0.0) for m in self.modes] + [self.ood_reward])
        hi = max([m.law.quantile(1.0) for m in self.modes] + [self.ood_reward])
        return lo, hi

    # ---- data ------------------------------------------------------------------------
    def behaviour_actions(self, n: int, rng: np.random.Generator) -> np.ndarray:
        w = np.array([m.weight for m in self.modes], dtype=np.float64)
        if np.all(w == w[0]):
            mode = rng.integers(0, len(self.modes), n)
        else:
            mode = rng.choice(len(self.modes), size=n, p=w / w.sum())
        return np.clip(self.centres[mode] + self.data_sigma * rng.standard_normal((n, 2)), -1.0, 1.0)

    # ---- variants and files -----------------------------------------------------------
    def scaled(self, k: float, name: str | None = None) -> "BanditSpec":
        """Every reward (modes and OOD) multiplied by k."""
        modes = tuple(replace(m, law=m.law.scaled(k)) for m in self.modes)
        return replace(self, name=name or f"{self.name}-x{k:g}", modes=modes, ood_reward=k * self.ood_reward,
                       note=f"{self.note}, rewards x{k:g}")

    def to_dict(self) -> dict:
        return {"name": self.name, "ood_reward": self.ood_reward, "data_sigma": self.data_sigma,
                "n_data": self.n_data, "note": self.note,
                "modes": [{"name": m.name, "centre": list(m.centre), "law": str(m.law), "radius": m.radius,
                           "weight": m.weight} for m in self.modes]}

    @classmethod
    def from_dict(cls, d: dict) -> "BanditSpec":
        known = {"name", "ood_reward", "data_sigma", "n_data", "note", "modes"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown bandit spec key(s) {sorted(unknown)}; known: {sorted(known)}")
        try:
            modes = tuple(Mode(m["name"], tuple(float(c) for c in m["centre"]), RewardLaw.parse(m["law"]),
                               float(m.get("radius", 0.35)), float(m.get("weight", 1.0))) for m in d["modes"])
        except KeyError as e:
            raise ValueError(f"a bandit mode needs the key {e}") from None
        rest = {k: d[k] for k in ("ood_reward", "data_sigma", "n_data", "note") if k in d}
        return cls(name=str(d.get("name", "custom")), modes=modes, **rest)
