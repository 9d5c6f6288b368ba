"""The updates' random numbers: counter-based, so that every draw is a pure function of
(the run's noise seed, the agent's device step, the draw's name, the element's index).

    noise = agent.noise("critic")                    # at the agent's current device step
    taus = noise.rand("taus", (B, K))                # U[0, 1)
    eps = noise.randn("eps", (B, A))                 # N(0, 1)
    t = noise.randint("t", T, (B,))                  # {0, ..., T - 1}
    chain = noise.randn("chain", (T + 1, B, A), batch_dim=1)

What this buys, and why it is not torch's generator:
- one seed, one stream, on every path: eager, CUDA graph, torch.compile (pure tensor ops, which
  Inductor fuses with their neighbours; a torch.Generator would break the compiled graph) and on
  CPU or GPU alike (integer arithmetic, no device-specific generator);
- seeds side by side: K agents of K seeds in one process (one CUDA graph) draw what K separate
  runs draw, because no draw touches a shared stream;
- data parallelism: a draw names its batch dimension; with `shard=(rank, world)` each process
  computes the whole global batch's numbers and keeps its own slice, so world processes on B
  samples each draw exactly what one process on world * B samples draws;
- resume needs no generator state: the counter is the agent's step.

The bits: splitmix64 (Steele et al. 2014; the output function of Java's SplittableRandom), in
wrapping int64 arithmetic. A step's key is mix(seed * G + step); element i of the draw named n
takes mix(G * (key ^ (fnv1a32(scope/n) * 2^32) ^ i)): distinct (key, name, i) give distinct
words (the name's bits and i's do not overlap; xor with the key, the odd multiplier and mix are
bijections). Written so that Inductor never folds the index into arithmetic with a 64-bit
constant: splitmix's own key + G * i became a vector arange with a truncated step (torch 2.13,
CPU), and i + a 64-bit constant an int32 index expression that Triton refuses (torch 2.11, CUDA). Uniforms take the top 24 bits (exact in float32, in [0, 1));
normals are Box-Muller on two 24-bit halves of one word (|z| <= 5.77); integers in [0, high)
are the low 62 bits modulo high (bias below high / 2^62).
"""

from __future__ import annotations

import math

import torch

_MASK64 = (1 << 64) - 1


def _signed(x: int) -> int:
    """A 64-bit pattern as the int64 value with the same bits."""
    x &= _MASK64
    return x - (1 << 64) if x >> 63 else x


GOLDEN = _signed(0x9E3779B97F4A7C15)
_M1, _M2 = _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)
_U24 = 2.0**-24


def _srl(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's >> is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 tensors (wrapping multiplication)."""
    x = x ^ _srl(x, 30)
    x = x * _M1
    x = x ^ _srl(x, 27)
    x = x * _M2
    return x ^ _srl(x, 31)


def mix_int(x: int) -> int:
    """The same function on a python int (the reference the tests check the tensor one against)."""
    x &= _MASK64
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _MASK64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def site_offset(name: str) -> int:
    """fnv1a32(name) * 2^32 (as int64): the high half of the counters of the draw `name` (the low
    half is the element's index). Plain python on a constant string: torch.compile folds it."""
    h = 0x811C9DC5
    for ch in name:
        h = ((h ^ ord(ch)) * 0x01000193) & 0xFFFFFFFF
    return _signed(h << 32)


class Noise:
    """The draws of one update (or one part of it) at one device step. Cheap to make: one
    key per step, computed on the device (no host read, capturable)."""

    def __init__(self, key: torch.Tensor, scope: str = "", shard: tuple[int, int] = (0, 1)):
        rank, world = shard
        if not 0 <= rank < world:
            raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
        self.key, self.scope, self.shard = key, scope, (int(rank), int(world))
        self.device = key.device

    @classmethod
    def at(cls, seed: torch.Tensor, step: torch.Tensor, scope: str = "", shard: tuple[int, int] = (0, 1)) -> Noise:
        """The draws at a device step of the stream `seed` (both 0-d or 1-element int64 tensors)."""
        return cls(mix(seed.reshape(()) * GOLDEN + step.reshape(())), scope, shard)

    def sub(self, scope: str) -> Noise:
        """The same step's draws under a longer name (scope/sub), for a part of the update."""
        return Noise(self.key, f"{self.scope}/{scope}" if self.scope else scope, self.shard)

    def bits(self, name: str, shape, batch_dim: int = 0) -> torch.Tensor:
        """int64 words of the draw `name`; with a shard, this process's slice of the global batch."""
        shape = tuple(int(s) for s in shape)
        rank, world = self.shard
        full = list(shape)
        if world > 1:
            if not shape:
                raise ValueError("a sharded draw needs a batch dimension")
            full[batch_dim] *= world
        n = math.prod(full)
        if n > 2**32:
            raise ValueError(f"a draw holds at most 2^32 numbers, asked for {n}")
        offset = site_offset(f"{self.scope}/{name}" if self.scope else name)
        idx = torch.arange(n, device=self.device, dtype=torch.int64)
        words = mix(((self.key ^ offset) ^ idx) * GOLDEN).view(full)
        if world > 1:
            words = words.narrow(batch_dim, rank * shape[batch_dim], shape[batch_dim])
        return words

    def rand(self, name: str, shape, batch_dim: int = 0, dtype=torch.float32) -> torch.Tensor:
        """U[0, 1) in steps of 2^-24."""
        return (_srl(self.bits(name, shape, batch_dim), 40).to(torch.float32) * _U24).to(dtype)

    def randn(self, name: str, shape, batch_dim: int = 0, dtype=torch.float32) -> torch.Tensor:
        """N(0, 1) by Box-Muller on the word's two 24-bit halves."""
        w = self.bits(name, shape, batch_dim)
        u1 = (_srl(w, 40) + 1).to(torch.float32) * _U24  # (0, 1]: log is finite
        u2 = ((w >> 16) & 0xFFFFFF).to(torch.float32) * _U24
        return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)).to(dtype)

    def randint(self, name: str, high: int, shape, batch_dim: int = 0) -> torch.Tensor:
        """Integers in [0, high)."""
        if high < 1:
            raise ValueError(f"randint needs high >= 1, got {high}")
        return (self.bits(name, shape, batch_dim) & ((1 << 62) - 1)) % int(high)


# ---- draws from a Noise, or from torch's own stream where there is none (callers outside an update) ----
def rand(noise: Noise | None, name: str, shape, device, dtype=torch.float32, batch_dim: int = 0) -> torch.Tensor:
    if noise is None:
        return torch.rand(shape, device=device, dtype=dtype)
    return noise.rand(name, shape, batch_dim, dtype)


def randn(noise: Noise | None, name: str, shape, device, dtype=torch.float32, batch_dim: int = 0) -> torch.Tensor:
    if noise is None:
        return torch.randn(shape, device=device, dtype=dtype)
    return noise.randn(name, shape, batch_dim, dtype)


def randint(noise: Noise | None, name: str, high: int, shape, device, batch_dim: int = 0) -> torch.Tensor:
    if noise is None:
        return torch.randint(0, high, shape, device=device)
    return noise.randint(name, high, shape, batch_dim)
