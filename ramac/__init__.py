"""ramac: risk-aware offline RL with generative (diffusion) actors and IQN critics."""

__version__ = "0.1.0"
