"""Distortion risk measures (SPEC 2.2) and empirical CVaR."""

import math

import numpy as np
import pytest
import torch

from ramac.kernels import distort_ref, quadrature_fractions, tail_mean_ref
from ramac.risk_measures import RiskMeasure, cvar_curve, empirical_cvar

GRID = torch.linspace(0, 1, 2001, dtype=torch.float64)


def quantile_fn_discrete(values, probs):
    """Quantile function of a discrete law, vectorised over tau."""
    order = np.argsort(values)
    v, cdf = np.asarray(values)[order], np.cumsum(np.asarray(probs)[order])

    def q(tau):
        idx = np.searchsorted(cdf, np.asarray(tau), side="left")
        return torch.as_tensor(v[np.minimum(idx, len(v) - 1)])

    return q


def distorted_expectation(q, kind, param, n=200_000):
    """E_tau~U[Z(beta(tau))] by a fine midpoint rule."""
    taus, w = quadrature_fractions(n, kind, param, dtype=torch.float64)
    return float((q(taus.numpy()) * w).sum())


def test_cvar_alpha_one_is_the_mean():
    q = quantile_fn_discrete([8.0, -30.0], [0.9, 0.1])
    assert distorted_expectation(q, "cvar", 1.0) == pytest.approx(0.9 * 8 - 0.1 * 30, abs=1e-6)
    assert distorted_expectation(q, "neutral", 0.0) == pytest.approx(4.2, abs=1e-6)


def test_cvar_of_known_discrete_distribution():
    # the bandit's risky mode: +8 w.p. 0.9, -30 w.p. 0.1 -> CVaR_0.1 = -30, CVaR_0.2 = (-30 + 8) / 2
    q = quantile_fn_discrete([8.0, -30.0], [0.9, 0.1])
    assert distorted_expectation(q, "cvar", 0.1) == pytest.approx(-30.0, abs=1e-3)
    assert distorted_expectation(q, "cvar", 0.2) == pytest.approx(-11.0, abs=1e-3)
    # a die: CVaR_{1/3} = mean of {1, 2}
    die = quantile_fn_discrete([1, 2, 3, 4, 5, 6], [1 / 6] * 6)
    assert distorted_expectation(die, "cvar", 1 / 3) == pytest.approx(1.5, abs=1e-3)


@pytest.mark.parametrize("kind,param", [("wang", -0.7), ("wang", 0.5), ("cpw", 0.71), ("power", -2.0),
                                        ("power", 1.5), ("cvar", 0.1), ("neutral", 0.0)])
def test_maps_unit_interval_monotonically(kind, param):
    out = distort_ref(GRID, kind, param)
    assert out.min() >= 0 and out.max() <= 1
    assert (out.diff() >= -1e-12).all()
    assert out[0] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("kind,param", [("wang", -0.7), ("power", -2.0), ("cvar", 0.1)])
def test_risk_averse_distortions_shift_mass_to_the_lower_tail(kind, param):
    out = distort_ref(GRID[1:-1], kind, param)
    assert (out < GRID[1:-1]).all()  # beta(tau) < tau: lower quantiles are sampled
    # and on a law, the distorted expectation is below the mean
    q = quantile_fn_discrete([8.0, -30.0], [0.9, 0.1])
    assert distorted_expectation(q, kind, param) < 4.2 - 1.0


def test_risk_seeking_parameters_go_the_other_way():
    for kind, param in (("wang", 0.7), ("power", 2.0)):
        assert (distort_ref(GRID[1:-1], kind, param) > GRID[1:-1]).all()


def test_cpw_is_inverse_s_shaped():
    # CPW (eta = 0.71) overweights both tails: beta > tau for small tau, < tau for large tau
    out = distort_ref(torch.tensor([0.05, 0.1, 0.9, 0.95], dtype=torch.float64), "cpw", 0.71)
    assert out[0] > 0.05 and out[1] > 0.1 and out[2] < 0.9 and out[3] < 0.95
    assert distort_ref(torch.tensor([1.0], dtype=torch.float64), "cpw", 0.71).item() == pytest.approx(1.0)


def test_wang_closed_form():
    tau = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    want = [0.5 * (1 + math.erf((x + -0.7) / math.sqrt(2))) for x in (-1.2815515655446004, 0.0, 1.2815515655446004)]
    torch.testing.assert_close(distort_ref(tau, "wang", -0.7), torch.tensor(want, dtype=torch.float64))


def test_bad_parameters_are_rejected():
    with pytest.raises(ValueError, match="unknown distortion"):
        distort_ref(GRID, "var", 0.1)
    with pytest.raises(ValueError, match="alpha"):
        distort_ref(GRID, "cvar", 0.0)
    with pytest.raises(ValueError, match="alpha"):
        RiskMeasure("cvar", 1.5)
    with pytest.raises(ValueError, match="cpw"):
        distort_ref(GRID, "cpw", 0.1)


def test_tail_mean_min_and_weights():
    z1 = torch.tensor([[1.0, 5.0, 3.0]])
    z2 = torch.tensor([[2.0, 4.0, 3.0]])
    assert tail_mean_ref(z1, z2).item() == pytest.approx((1 + 4 + 3) / 3)
    w = torch.tensor([0.5, 0.25, 0.25])
    assert tail_mean_ref(z1, z2, w).item() == pytest.approx(0.5 + 1 + 0.75)


def test_quadrature_fractions_cover_the_tail():
    taus, w = quadrature_fractions(4, "cvar", 0.1)
    torch.testing.assert_close(taus, torch.tensor([0.0125, 0.0375, 0.0625, 0.0875]))
    assert w.sum().item() == pytest.approx(1.0)


def test_empirical_cvar():
    x = np.arange(1, 101, dtype=float)  # worst ceil(0.1 * 100) = 10 values: 1..10
    assert empirical_cvar(x, 0.1) == pytest.approx(5.5)
    assert empirical_cvar(x, 1.0) == pytest.approx(50.5)
    assert empirical_cvar(np.arange(1, 12, dtype=float), 0.1) == pytest.approx(1.5)  # ceil(1.1) = 2 values
    alphas, curve = cvar_curve(x, [0.1, 0.5, 1.0])
    assert (np.diff(curve) > 0).all()
    with pytest.raises(ValueError):
        empirical_cvar([], 0.1)
