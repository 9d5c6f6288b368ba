"""Networks: the diffusion denoiser MLP, the flow policy's MLPs and the IQN critic (SPEC 2.1, 2.3, 2.4)."""

from __future__ import annotations

import math

import torch
from torch import nn

from . import kernels


class SinusoidalPosEmb(nn.Module):
    """Transformer-style sinusoidal embedding of the (integer) diffusion step."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2:
            raise ValueError(f"time embedding width must be even, got {dim}")
        half = dim // 2
        freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # (B,) -> (B, dim)
        arg = t.float()[:, None] * self.freqs[None, :]
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


class Denoiser(nn.Module):
    """eps_theta(x_t, t, s): the Diffusion-QL MLP (time embedding 16, 3 x hidden, Mish)."""

    def __init__(self, state_dim: int, action_dim: int, hidden: int = 256, t_dim: int = 16):
        super().__init__()
        self.state_dim, self.action_dim = state_dim, action_dim
        self.time_mlp = nn.Sequential(
            SinusoidalPosEmb(t_dim), nn.Linear(t_dim, t_dim * 2), nn.Mish(), nn.Linear(t_dim * 2, t_dim)
        )
        self.mid = nn.Sequential(
            nn.Linear(action_dim + t_dim + state_dim, hidden), nn.Mish(),
            nn.Linear(hidden, hidden), nn.Mish(),
            nn.Linear(hidden, hidden), nn.Mish(),
        )
        self.final = nn.Linear(hidden, action_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        # x (B, A), t (B,) integer steps, state (B, S) -> eps (B, A)
        h = torch.cat([x, self.time_mlp(t), state], dim=-1)
        return self.final(self.mid(h))


class FlowMLP(nn.Module):
    """An MLP on its concatenated inputs: the flow policy's velocity field v(s, x_t, t) and its
    one-step student mu(s, z) (FQL's: `layers` hidden layers, GELU, no layer norm)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 512, layers: int = 4):
        super().__init__()
        dims, mods = [in_dim] + [hidden] * layers, []
        for a, b in zip(dims[:-1], dims[1:]):
            mods += [nn.Linear(a, b), nn.GELU()]
        self.net = nn.Sequential(*mods, nn.Linear(dims[-1], out_dim))

    def forward(self, *parts: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat(parts, dim=-1))


class IQNCritic(nn.Module):
    """Z(s, a, tau): implicit quantile network with the published layout.

    The state/action trunk runs once per (s, a) and is broadcast over the K
    fractions; only the cosine embedding and the head run per quantile.
    """

    def __init__(self, state_dim: int, action_dim: int, embedding_dim: int = 128, n_cos: int = 32,
                 hidden: int = 256):
        super().__init__()
        self.state_fc = nn.Linear(state_dim, hidden)
        self.action_fc = nn.Linear(action_dim, hidden)
        self.merge_fc = nn.Linear(2 * hidden, embedding_dim)
        self.cos_fc = nn.Linear(n_cos, embedding_dim)
        self.head_fc = nn.Linear(embedding_dim, hidden)
        self.out = nn.Linear(hidden, 1)
        # published init: hidden weights N(0, 0.1), hidden biases left at PyTorch's default
        # (zero biases leave many ReLUs dead and the low quantiles stuck for thousands of steps)
        for layer in (self.state_fc, self.action_fc, self.merge_fc, self.cos_fc, self.head_fc):
            nn.init.normal_(layer.weight, 0.0, 0.1)
        nn.init.uniform_(self.out.weight, -3e-4, 3e-4)
        nn.init.zeros_(self.out.bias)

    def trunk(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:  # -> (B, emb)
        h = torch.cat([torch.relu(self.state_fc(state)), torch.relu(self.action_fc(action))], dim=-1)
        return torch.relu(self.merge_fc(h))

    def quantiles(self, trunk: torch.Tensor, taus: torch.Tensor) -> torch.Tensor:
        """trunk (B, emb); taus (B, K) per sample or (K,) shared -> (B, K): relu(cos_fc(cos(pi j tau)))
        times the trunk, head_fc + ReLU, out. One fused op (kernels.iqn_quantiles: Triton on CUDA, no
        (B, K, hidden) activation in memory; the same math in PyTorch elsewhere). The quantiles stay
        fp32 under bf16 autocast: bf16 keeps ~3 digits, so values of tens would be rounded by ~0.1-0.5,
        a floor under the quantile loss."""
        return kernels.iqn_quantiles(trunk, taus, self.cos_fc.weight, self.cos_fc.bias, self.head_fc.weight,
                                     self.head_fc.bias, self.out.weight, self.out.bias)

    def forward(self, state, action, taus):
        return self.quantiles(self.trunk(state, action), taus)
