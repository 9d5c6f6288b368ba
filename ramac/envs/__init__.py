"""Environments: the risky bandit (SPEC 2.5: bandit.py, its layouts and laws as parameters in
bandit_spec.py, the family of variants in bandit_family.py) and the Stochastic MuJoCo hazard
wrappers and presets (mujoco.py, SPEC 3)."""
