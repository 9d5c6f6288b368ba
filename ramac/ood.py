"""Out-of-distribution action detectors (SPEC 4), calibrated on held-out data-set pairs.

Each detector gives a score per (s, a); its threshold is the `quantile` (99 %
by default) of the scores of held-out data-set pairs, so about 1 % of genuine
data-set pairs are flagged by construction, and a policy's OOD rate is the share
of its evaluation pairs above the threshold.

(a) nearest neighbour, `NNDetector`: for an evaluation pair (s, a), take the k
    nearest data-set states to s (Euclidean distance after z-scoring each state
    dimension on the data set) and the smallest Euclidean distance from a to the
    actions recorded at those states:
        d(s, a) = min_{j in kNN(s)} || a - a_j ||_2.
    The data set's own scale is the median of d over held-out pairs, and the
    score is kappa(s, a) = d(s, a) / scale. Besides the calibrated threshold, the
    detector reports the share of pairs with kappa > 3 (the figure SPEC 4 quotes).
(b) denoising error, `DenoisingDetector`: the mean eps-prediction error of a BC
    diffusion model trained on the data set, averaged over all T steps and
    `draws` noise draws: large where the action is unlike the data at that state.
(c) critic disagreement, `CriticDetector`: mean over a fixed fraction grid of
    |Z1(s, a, tau) - Z2(s, a, tau)| for the two critics of a trained agent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .diffusion import Diffusion
from .nets import Denoiser


def _chunks(n, size):
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


class Detector:
    name = "detector"
    quantile = 0.99

    def score(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:  # (N,)
        raise NotImplementedError

    def calibrate(self, obs, act, quantile: float = 0.99) -> "Detector":
        """Threshold = the quantile of held-out data-set scores."""
        s = self.score(obs, act)
        self.quantile = quantile
        self.threshold = float(torch.quantile(s.float().cpu(), quantile))
        return self

    def rate(self, obs, act) -> float:
        return float((self.score(obs, act) > self.threshold).float().mean())


class NNDetector(Detector):
    name = "nearest_neighbour"

    def __init__(self, obs, act, k: int = 10, max_reference: int = 200_000, seed: int = 0):
        if len(obs) > max_reference:  # a random subset of the data set is the reference (and the scale)
            keep = torch.randperm(len(obs), generator=torch.Generator().manual_seed(seed))[:max_reference]
            obs, act = obs[keep.to(obs.device)], act[keep.to(obs.device)]
        self.mu, self.sd = obs.mean(0), obs.std(0).clamp(min=1e-6)
        self.obs, self.act = (obs - self.mu) / self.sd, act
        self.k = min(k, len(obs))
        self.chunk = max(1, 2**26 // len(obs))  # keeps each (chunk, reference) distance block ~256 MB
        self.scale = 1.0

    def distance(self, obs, act):
        out = torch.empty(len(obs), device=obs.device)
        z = (obs - self.mu) / self.sd
        for sl in _chunks(len(obs), self.chunk):
            nn = torch.cdist(z[sl], self.obs).topk(self.k, largest=False).indices  # (n, k)
            out[sl] = (self.act[nn] - act[sl, None, :]).norm(dim=-1).min(dim=1).values
        return out

    def score(self, obs, act):
        return self.distance(obs, act) / self.scale

    def calibrate(self, obs, act, quantile: float = 0.99):
        self.scale = float(self.distance(obs, act).median().clamp(min=1e-8))
        return super().calibrate(obs, act, quantile)

    def kappa_rate(self, obs, act, kappa: float = 3.0) -> float:
        return float((self.score(obs, act) > kappa).float().mean())


class DenoisingDetector(Detector):
    name = "denoising_error"

    def __init__(self, obs, act, steps: int = 2000, hidden: int = 256, T: int = 5, batch: int = 256,
                 draws: int = 4, seed: int = 0, progress=None):
        g = torch.Generator(device=obs.device).manual_seed(seed)
        torch.manual_seed(seed)
        self.model = Denoiser(obs.shape[1], act.shape[1], hidden).to(obs.device)
        self.diffusion = Diffusion(T).to(obs.device)
        opt = torch.optim.Adam(self.model.parameters(), lr=3e-4)
        for _ in range(steps):
            idx = torch.randint(0, len(obs), (batch,), device=obs.device, generator=g)
            loss = self.diffusion.bc_loss(self.model, act[idx], obs[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if progress is not None:
                progress.update(1)
        self.draws, self.T = draws, T

    @torch.no_grad()
    def score(self, obs, act):
        gen = torch.Generator(device=obs.device).manual_seed(1234)  # same noise for every call
        total = torch.zeros(len(obs), device=obs.device)
        for _ in range(self.draws):
            for t in range(self.T):
                steps = torch.full((len(obs),), t, device=obs.device, dtype=torch.long)
                eps = torch.randn(act.shape, device=obs.device, generator=gen)
                pred = self.model(self.diffusion.q_sample(act, steps, eps), steps, obs)
                total += ((pred - eps) ** 2).mean(dim=1)
        return total / (self.draws * self.T)


class CriticDetector(Detector):
    name = "critic_disagreement"

    def __init__(self, agent, n: int = 16):
        self.agent = agent
        self.taus = (torch.arange(n, dtype=torch.float32) + 0.5) / n

    @torch.no_grad()
    def score(self, obs, act):
        z = self.agent.critic_quantiles(obs, act, self.taus.to(obs.device))  # (2, N, n)
        return (z[0] - z[1]).abs().mean(dim=1)


def split_heldout(n: int, fraction: float = 0.1, seed: int = 0):
    """(train indices, held-out indices) of a data set of n pairs."""
    perm = np.random.default_rng(seed).permutation(n)
    k = max(1, int(round(fraction * n)))
    return torch.from_numpy(perm[k:]), torch.from_numpy(perm[:k])


@dataclass
class DataDetectors:
    """The detectors that depend on the data set alone, fitted and calibrated, with the held-out
    split that calibrates a critic detector: one per data set, shared by every agent trained on it."""
    detectors: list
    obs_heldout: torch.Tensor
    act_heldout: torch.Tensor
    quantile: float


def fit_data_detectors(data, heldout: float = 0.1, quantile: float = 0.99, denoiser_steps: int = 2000,
                       seed: int = 0, progress=None) -> DataDetectors:
    """The nearest-neighbour and denoising detectors, fitted on a data set's training split and
    calibrated on its held-out split."""
    train_idx, held_idx = split_heldout(data.size, heldout, seed)
    dev = data.obs.device
    train_idx, held_idx = train_idx.to(dev), held_idx.to(dev)
    obs_tr, act_tr = data.obs[train_idx], data.action[train_idx]
    obs_ho, act_ho = data.obs[held_idx], data.action[held_idx]
    dets = [NNDetector(obs_tr, act_tr, seed=seed),
            DenoisingDetector(obs_tr, act_tr, steps=denoiser_steps, seed=seed, progress=progress)]
    return DataDetectors([d.calibrate(obs_ho, act_ho, quantile) for d in dets], obs_ho, act_ho, quantile)


def build_detectors(data, agent=None, heldout: float = 0.1, quantile: float = 0.99, denoiser_steps: int = 2000,
                    seed: int = 0, progress=None, fitted: DataDetectors | None = None) -> list[Detector]:
    """The three detectors, fitted on a data set's training split and calibrated on its held-out
    split; fitted: the data set's own two, already fitted (fit_data_detectors), to reuse."""
    if fitted is None:
        fitted = fit_data_detectors(data, heldout, quantile, denoiser_steps, seed, progress)
    dets = list(fitted.detectors)
    if agent is not None:
        dets.append(CriticDetector(agent).calibrate(fitted.obs_heldout, fitted.act_heldout, fitted.quantile))
    return dets


def detector_report(detectors, obs, act) -> dict:
    """OOD rate of each detector on (obs, act) pairs, plus kappa > 3 for the NN detector."""
    out = {}
    for d in detectors:
        out[f"ood/{d.name}"] = d.rate(obs, act)
        if isinstance(d, NNDetector):
            out["ood/nearest_neighbour_kappa3"] = d.kappa_rate(obs, act, 3.0)
    return out
