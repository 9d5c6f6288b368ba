"""Environments: the risky bandit (SPEC 2.5); Stochastic MuJoCo wrappers come with issue 6."""
