"""Whole-chain DDPM sampler: all T denoising steps for a block of states in one launch.

The denoiser is the Diffusion-QL MLP used by RADAC:

    h1  = mish(W1 [x_t, temb(t), s] + b1)
    h2  = mish(W2 h1 + b2);  h3 = mish(W3 h2 + b3);  eps = W4 h3 + b4

followed by the posterior step of `denoise.py`. Packing (`pack_denoiser`)
prepares what the kernel needs once per set of weights:

* the time-embedding part of layer 1 plus b1 is the same for every state, so it
  becomes a (T, H) table `c_time`;
* x and s enter layer 1 through zero-padded (A_P, H) and (S_P, H) matrices; the
  state tile is loaded once and kept (in the dot dtype) for the whole chain;
* layers 2 and 3 are fused chunk by chunk: for each chunk c of BN hidden units
  the kernel forms mish(h1 W2[:, c] + b2[c]) and immediately accumulates it
  into h1-independent acc += (.) W3[c, :], so no (BM, H) intermediate other than
  h1 and the accumulator is live, and weight chunks stream from L2 through a
  pipelined loop while tensor cores (tl.dot, bf16 or tf32 inputs, fp32
  accumulate) do the products. (TMA descriptors for the weight chunks were
  tried: 17 % faster at batch 65,536 but slower at batch 1, out of shared
  memory for tf32, and illegal accesses in some launch configurations.)

Forward only: evaluation and the target next actions. The reference op
`sample_chain_ref` computes the same chain in plain PyTorch from the same
packed weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ._dispatch import HAS_TRITON, env_switch, is_vmapped, seeds_first, sm_count, use_triton
from .sampler_split import SPLIT_AUTO_MAX_BATCH, launch_split, split_enabled, split_fits

PRECISIONS = ("bf16", "tf32", "fp32")


@dataclass
class PackedDenoiser:
    """Denoiser weights and schedule laid out for the chain sampler (fp32 masters)."""

    w_x: torch.Tensor  # (A_P, H): rows [0, A) = W1_x^T, rest 0
    w_s: torch.Tensor  # (S_P, H): rows [0, S) = W1_s^T, rest 0
    c_time: torch.Tensor  # (T, H): W1_t temb(t) + b1 for step t
    w2: torch.Tensor  # (H, H) = W2^T
    b2: torch.Tensor  # (H,)
    w3: torch.Tensor  # (H, H) = W3^T
    b3: torch.Tensor  # (H,)
    w_out: torch.Tensor  # (H, A_P): columns [0, A) = W4^T, rest 0
    b_out: torch.Tensor  # (A_P,): [0, A) = b4, rest 0
    coefs: torch.Tensor  # (T, 8) fp32: recip, recipm1, mean1, mean2, sigma per step t (then padding)
    coefs_host: tuple  # the same five constants per step as python floats (sync-free reference op)
    action_dim: int
    state_dim: int
    max_action: float
    _casts: dict = field(default_factory=dict, repr=False)

    @property
    def n_steps(self) -> int:
        return self.c_time.shape[0]

    @property
    def hidden(self) -> int:
        return self.w2.shape[0]

    def weights_as(self, dtype: torch.dtype):
        """(w_x, w_s, w2, w3, w_out) in the dtype the tensor cores read, cached."""
        if dtype not in self._casts:
            self._casts[dtype] = tuple(w.to(dtype).contiguous()
                                       for w in (self.w_x, self.w_s, self.w2, self.w3, self.w_out))
        return self._casts[dtype]


def pack_denoiser(w1, b1, w2, b2, w3, b3, w4, b4, time_emb, coefs, state_dim, max_action,
                  coefs_host=None) -> PackedDenoiser:
    """Pack torch.nn.Linear weights (out, in) of the denoiser MLP.

    w1: (H, A + E + S) with inputs ordered (x, temb, s); time_emb: (T, E), the
    embedding MLP's output for t = 0..T-1; coefs: (T, 5) schedule constants on
    the weights' device, coefs_host the same as python floats (read back from
    `coefs` when omitted, which synchronises: pass them when packing inside a
    CUDA graph). Packing is device-side work only, so it can be captured.
    """
    H, d_in = w1.shape
    T, E = time_emb.shape
    A = w4.shape[0]
    S = state_dim
    if d_in != A + E + S:
        raise ValueError(f"layer 1 takes {d_in} inputs, expected action {A} + time {E} + state {S}")
    a_p, s_p = _pad(A), _pad(S)
    w1, b1, w2, b2, w3, b3, w4, b4 = (t.detach() for t in (w1, b1, w2, b2, w3, b3, w4, b4))

    def copy(t):  # a private fp32 copy: the pack must not alias (or track) live parameters
        return t.float().clone().contiguous()

    def padded(t, rows=0, cols=0):  # zero rows / columns appended, out of place (so torch.func.vmap can batch it)
        return F.pad(t.float(), (0, cols, 0, rows)).contiguous()

    w_x = padded(w1[:, :A].t(), rows=a_p - A)
    w_s = padded(w1[:, A + E:].t(), rows=s_p - S)
    c_time = time_emb.detach().float() @ w1[:, A:A + E].t().float() + b1.float()
    w_out = padded(w4.t(), cols=a_p - A)
    b_out = F.pad(b4.float(), (0, a_p - A))
    coef_table = padded(coefs.detach(), cols=3)
    return PackedDenoiser(
        w_x=w_x, w_s=w_s, c_time=c_time.contiguous(), w2=copy(w2.t()), b2=copy(b2), w3=copy(w3.t()), b3=copy(b3),
        w_out=w_out, b_out=b_out,
        coefs=coef_table, coefs_host=tuple(tuple(map(float, row)) for row in (coefs_host or coefs.tolist())),
        action_dim=A, state_dim=S, max_action=float(max_action),
    )


def _pad(n: int) -> int:
    """Width of a tile holding n columns: a power of two, at least 16 (tl.dot's minimum K)."""
    return max(16, 1 << (n - 1).bit_length())


# --------------------------------------------------------------------------
# reference op
# --------------------------------------------------------------------------
def sample_chain_ref(p: PackedDenoiser, state: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Plain-PyTorch chain from packed weights. noise: (T + 1, B, A), noise[T] = x_T."""
    B = state.shape[0]
    A, S, T = p.action_dim, p.state_dim, p.n_steps
    _check_chain(p, state, noise)
    if noise is None:
        noise = torch.randn(T + 1, B, A, device=state.device, dtype=torch.float32)
    s_part = state.float() @ p.w_s[:S]
    x = noise[T].float()
    for t in reversed(range(T)):
        h = F.mish(x @ p.w_x[:A] + s_part + p.c_time[t])
        h = F.mish(h @ p.w2 + p.b2)
        h = F.mish(h @ p.w3 + p.b3)
        eps = h @ p.w_out[:, :A] + p.b_out[:A]
        recip, recipm1, mean1, mean2, sigma = p.coefs_host[t][:5]
        x0 = (recip * x - recipm1 * eps).clamp(-p.max_action, p.max_action)
        x = mean1 * x0 + mean2 * x + sigma * noise[t].float()
    return x.clamp(-p.max_action, p.max_action)


def _check_chain(p, state, noise):
    if state.dim() != 2 or state.shape[1] != p.state_dim:
        raise ValueError(f"state must be (B, {p.state_dim}), got {tuple(state.shape)}")
    want = (p.n_steps + 1, state.shape[0], p.action_dim)
    if noise is not None and tuple(noise.shape) != want:
        raise ValueError(f"noise must be {want} (noise[T] is x_T), got {tuple(noise.shape)}")


# --------------------------------------------------------------------------
# Triton kernel
# --------------------------------------------------------------------------
if HAS_TRITON:
    import triton
    import triton.language as tl

    from ._jit import _chain_noise, _dot, _mish, _posterior_step, _seed_chain_ptrs

    @triton.jit
    def _chain_kernel(
        state_ptr,  # (B, S) states, any float dtype
        noise_ptr,  # (T + 1, B, A) fp32 noise, noise[T] = x_T (read only if HAS_NOISE)
        out_ptr,  # (B, A) fp32 actions
        w_x_ptr, w_s_ptr,  # (A_P, H) and (S_P, H) layer-1 weights, dot dtype
        c_time_ptr,  # (T, H) fp32 time part of layer 1 + b1
        w2_ptr, b2_ptr,  # (H, H) W2^T, dot dtype; (H,) fp32
        w3_ptr, b3_ptr,  # (H, H) W3^T, dot dtype; (H,) fp32
        w_out_ptr, b_out_ptr,  # (H, A_P) dot dtype; (A_P,) fp32
        coef_ptr,  # (T, 8) fp32 schedule constants
        seed_ptr,  # (1,) int64 Philox seed (read only if not HAS_NOISE)
        B, S, A, T, max_action,
        H: tl.constexpr, A_P: tl.constexpr, S_P: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
        HAS_NOISE: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
        STACKED: tl.constexpr = False,  # seeds stacked: program_id(1) picks a seed, every tensor
        # then has a leading seed dimension (contiguous), weights, states, noise and actions alike
        LEAN: tl.constexpr = False,  # the layers in the order that keeps fewer values live (lean_enabled)
    ):
        if STACKED:
            (state_ptr, noise_ptr, out_ptr, w_x_ptr, w_s_ptr, c_time_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr, w_out_ptr,
             b_out_ptr, coef_ptr) = _seed_chain_ptrs(
                tl.program_id(1).to(tl.int64), state_ptr, noise_ptr, out_ptr, w_x_ptr, w_s_ptr, c_time_ptr, w2_ptr,
                b2_ptr, w3_ptr, b3_ptr, w_out_ptr, b_out_ptr, coef_ptr, B, S, A, T, H, A_P, S_P, 8)
        rows = tl.program_id(0) * BM + tl.arange(0, BM)
        row_ok = rows < B
        a_cols = tl.arange(0, A_P)
        s_cols = tl.arange(0, S_P)
        x_ok = row_ok[:, None] & (a_cols < A)[None, :]
        hk = tl.arange(0, H)
        dot_t = w2_ptr.dtype.element_ty
        bn = tl.arange(0, BN)
        w2_offs = hk[:, None] * H + bn[None, :]  # (H, BN) block of W2^T at column 0
        w3_offs = bn[:, None] * H + hk[None, :]  # (BN, H) block of W3^T at row 0
        s_ok = row_ok[:, None] & (s_cols < S)[None, :]
        s = tl.load(state_ptr + rows[:, None] * S + s_cols[None, :], mask=s_ok, other=0.0).to(dot_t)
        noise_offs = rows[:, None] * A + a_cols[None, :]
        x = _chain_noise(noise_ptr, seed_ptr, T * B * A + noise_offs, x_ok, HAS_NOISE)

        b3 = tl.load(b3_ptr + hk)
        b_out = tl.load(b_out_ptr + a_cols)
        for i in range(T):
            t = T - 1 - i
            if LEAN:
                # layers 1 and 2 over chunks of layer 1's outputs (each chunk of h1 made from the small
                # layer-1 inputs and folded into layer 2's accumulator at once), then layers 3 and the
                # output over chunks of layer 3's outputs (each folded into eps at once): at most one
                # (BM, H) tensor live, where the default order holds h1 and layer 3's accumulator together
                xd = x.to(dot_t)
                acc = tl.zeros([BM, H], dtype=tl.float32)
                for k0 in range(0, H, BN):
                    h1c = _dot(s, tl.load(w_s_ptr + s_cols[:, None] * H + k0 + bn[None, :]), None, DOT_PRECISION,
                               UPCAST)
                    h1c = _dot(xd, tl.load(w_x_ptr + a_cols[:, None] * H + k0 + bn[None, :]), h1c, DOT_PRECISION,
                               UPCAST)
                    h1c = _mish(h1c + tl.load(c_time_ptr + t * H + k0 + bn)[None, :]).to(dot_t)  # (BM, BN)
                    acc = _dot(h1c, tl.load(w2_ptr + k0 * H + w3_offs), acc, DOT_PRECISION, UPCAST)  # (BM, H)
                h2 = _mish(acc + tl.load(b2_ptr + hk)[None, :]).to(dot_t)
                eps = tl.zeros([BM, A_P], dtype=tl.float32)
                for m0 in range(0, H, BN):
                    h3c = _dot(h2, tl.load(w3_ptr + m0 + w2_offs), None, DOT_PRECISION, UPCAST)  # (BM, BN)
                    h3c = _mish(h3c + tl.load(b3_ptr + m0 + bn)[None, :]).to(dot_t)
                    eps = _dot(h3c, tl.load(w_out_ptr + (m0 + bn[:, None]) * A_P + a_cols[None, :]), eps,
                               DOT_PRECISION, UPCAST)
                eps = eps + b_out[None, :]
            else:
                c_t = tl.load(c_time_ptr + t * H + hk)
                w_s = tl.load(w_s_ptr + s_cols[:, None] * H + hk[None, :])
                w_x = tl.load(w_x_ptr + a_cols[:, None] * H + hk[None, :])
                h1 = _dot(s, w_s, None, DOT_PRECISION, UPCAST)
                h1 = _dot(x.to(dot_t), w_x, h1, DOT_PRECISION, UPCAST) + c_t[None, :]
                h1 = _mish(h1).to(dot_t)
                acc = tl.zeros([BM, H], dtype=tl.float32)
                for n0 in range(0, H, BN):
                    h2c = _dot(h1, tl.load(w2_ptr + n0 + w2_offs), None, DOT_PRECISION, UPCAST)  # (BM, BN)
                    h2c = _mish(h2c + tl.load(b2_ptr + n0 + bn)[None, :]).to(dot_t)
                    acc = _dot(h2c, tl.load(w3_ptr + n0 * H + w3_offs), acc, DOT_PRECISION, UPCAST)  # (BM, H)
                h3 = _mish(acc + b3[None, :]).to(dot_t)
                w_out = tl.load(w_out_ptr + hk[:, None] * A_P + a_cols[None, :])
                eps = _dot(h3, w_out, None, DOT_PRECISION, UPCAST) + b_out[None, :]

            z = _chain_noise(noise_ptr, seed_ptr, t * B * A + noise_offs, x_ok, HAS_NOISE)
            x = _posterior_step(x, eps, z, coef_ptr, t, max_action)  # padded columns stay 0: eps, z, x are 0

        x = tl.minimum(tl.maximum(x, -max_action), max_action)
        tl.store(out_ptr + noise_offs, x, mask=x_ok)

    def _launch_config(B, precision, sms, seeds=1):
        """(BM, BN, warps, stages), from sweeps on an H200 (bench/studies/sweep_sampler.py): the
        smallest row block whose programs (seeds x cdiv(B, BM)) fit one wave on the GPU's sms. bf16,
        T = 5, H = 256 (bench/results/qh-combo-H200/): 16-row programs 95 us at batch 256 and 91 us
        at 2,048, against 128 and 131 us for the 64-row ones that left most SMs idle; 64 rows x 64
        columns 118 us at 4,096 (16 rows: two waves, 128 us; 64 x 32: 130 us); beyond one wave of
        64-row programs, 64 x 32 (65,536: 937 us, 64 x 64 947 us). fp32 weight tiles take twice
        the shared memory: smaller tiles, no multi-buffering (not swept by batch)."""
        if precision != "bf16":
            return (16 if B <= 16 else 32), 32, 4, 1
        if B <= 16 or seeds * triton.cdiv(B, 16) <= sms:
            return 16, 64, 8, 3
        if seeds * triton.cdiv(B, 64) <= sms:
            return 64, 64, 8, 2
        return 64, 32, 8, 2


def sample_chain_triton(p: PackedDenoiser, state, noise=None, seed=None, precision="bf16",
                        block_m=None, block_n=None, num_warps=None, num_stages=None, split=None, programs=None):
    """One-launch chain sampler. noise: (T + 1, B, A) or None (Philox from seed).

    seed: an int, a 1-element int64 tensor on the device (so a CUDA graph can
    refresh it between replays), or None to draw one from torch's generator.
    split: "tile" or "gemv", the chain over `programs` programs sharing the hidden layer
    (sampler_split: "tile" takes up to SPLIT_MAX_BATCH states, "gemv" one, in fp32 arithmetic from
    fp32 weights whatever the precision: more exact, and faster than from bf16 weights); None picks
    "gemv" for one state (SPLIT_AUTO_MAX_BATCH) at hidden widths up to SPLIT_MAX_HIDDEN unless
    RAMAC_SPLIT_SAMPLER=0 or a one-block launch setting is given; False always takes the one-block
    kernel.
    """
    _check_chain(p, state, noise)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    B = state.shape[0]
    A, H = p.action_dim, p.hidden
    if H < 16 or H & (H - 1):
        raise ValueError(f"the chain kernel needs a power-of-two hidden width >= 16, got {H}")
    dot_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    out = torch.empty(B, A, device=state.device, dtype=torch.float32)
    if B == 0:
        return out
    if split is None:
        auto = B <= SPLIT_AUTO_MAX_BATCH and split_enabled() and split_fits(H)
        one_block_asked = (block_m, block_n, num_warps, num_stages) != (None,) * 4
        split = ("gemv" if B == 1 else "tile") if auto and not one_block_asked else False
    if noise is None:
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        if not torch.is_tensor(seed):
            seed = torch.tensor([seed], dtype=torch.int64, device=state.device)
    if split:
        weights = p.weights_as(torch.float32 if split == "gemv" else dot_dtype)
        launch_split(p, weights, state, noise, seed, out, precision, split, programs, num_warps)
        return out
    bm, bn, nw, ns = _launch_config(B, precision, sm_count(state.device))
    tiles = (block_m or bm, min(block_n or bn, H), num_warps or nw, num_stages or ns)
    _launch_fitting(p, p.weights_as(dot_dtype), state, noise, seed, out, precision, tiles)
    return out


_FITTING: dict = {}  # (device, tiles asked for) -> the tiles that fit its shared memory


def _launch_fitting(p: PackedDenoiser, dot_weights, state, noise, seed, out, precision, tiles, seeds=None):
    """_launch with the first of tiles and two smaller fallbacks that fits the GPU's shared memory
    per block. _launch_config's tiles were measured on an H200 (227 KB a block); compiled by Triton
    3.9 for H = 256 in bf16 (native/gen_kernels.py's compile on the CPU), 16 x 64 x 3 stages take
    146 KB, 64 x 64 x 2 120 KB (sm_80/86) to 164 KB (sm_90), 64 x 32 x 2 84-100 KB, 16 x 32 x 2
    49 KB: an A100 (163 KB) or an RTX 30/40, L4 or L40 (99 KB) takes a fallback, found once per
    device and setting."""
    key = (state.device, tiles)
    bm, bn, nw, ns = tiles
    candidates = [_FITTING.get(key, tiles), (bm, min(bn, 32), nw, min(ns, 2)), (16, min(bn, 32), 4, 1)]
    for t in dict.fromkeys(candidates):
        try:
            _launch(p, dot_weights, state, noise, seed, out, precision, t, seeds)
        except triton.runtime.errors.OutOfResources:
            continue
        _FITTING[key] = t
        return
    raise RuntimeError(f"the chain sampler found no launch setting that fits this GPU's shared memory (tried "
                       f"{list(dict.fromkeys(candidates))})")


def _launch(p: PackedDenoiser, dot_weights, state, noise, seed, out, precision, tiles, seeds=None):
    """One launch of _chain_kernel. dot_weights: (w_x, w_s, w2, w3, w_out) in the dot dtype; noise
    None: Philox noise from seed; tiles: (BM, BN, warps, stages); seeds: K for a stacked launch (every
    tensor with a leading seed dimension, a second grid axis over the seeds)."""
    bm, bn, nw, ns = tiles
    w_x, w_s, w2, w3, w_out = (w.contiguous() for w in dot_weights)
    c_time, b2, b3, b_out, coefs = (getattr(p, n).float().contiguous()
                                    for n in ("c_time", "b2", "b3", "b_out", "coefs"))
    has_noise = noise is not None
    _chain_kernel[(triton.cdiv(state.shape[-2], bm), seeds or 1)](
        state.contiguous(), noise.float().contiguous() if has_noise else out, out,
        w_x, w_s, c_time, w2, b2, w3, b3, w_out, b_out, coefs, out if has_noise else seed,
        state.shape[-2], p.state_dim, p.action_dim, c_time.shape[-2], p.max_action,
        H=w2.shape[-1], A_P=w_x.shape[-2], S_P=w_s.shape[-2], BM=bm, BN=bn,
        HAS_NOISE=has_noise, DOT_PRECISION="ieee" if precision == "fp32" else "tf32",
        UPCAST=os.environ.get("TRITON_INTERPRET") == "1", STACKED=seeds is not None, LEAN=lean_enabled(),
        num_warps=nw, num_stages=ns,
    )


def lean_enabled() -> bool:
    """RAMAC_SAMPLER_LEAN=1: the one-block kernel computes layers 1 + 2 and 3 + output in chunks that
    keep one (BM, H) tensor live instead of two. Compiled for sm_90 on the CPU (Triton 3.9) it
    spills nothing at the two launch settings _launch_config picks on an H200 (16 x 64 x 8 warps:
    166 registers; 64 x 32 x 8: 200), where the default order takes 255 and spills 382 and 128 bytes
    (bench/results/sampler-regs-cpu.md); opt-in until timed on a GPU
    (bench/studies/sweep_sampler.py --lean 0 1)."""
    return env_switch("RAMAC_SAMPLER_LEAN", False)


_PACKED_TENSORS = ("w_x", "w_s", "c_time", "w2", "b2", "w3", "b3", "w_out", "b_out", "coefs")


def sample_chain_stacked_triton(p: PackedDenoiser, state, noise, precision="bf16"):
    """The chain for K seeds in one launch: every tensor of p with a leading seed dimension K,
    state (K, B, S), noise (K, T + 1, B, A) -> actions (K, B, A). Seed k computes
    sample_chain_triton of its slices (a second grid axis over the seeds)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    K, B = state.shape[0], state.shape[1]
    A, S, H = p.action_dim, p.state_dim, p.w2.shape[-1]
    T = p.c_time.shape[1]
    if state.shape != (K, B, S) or noise.shape != (K, T + 1, B, A):
        raise ValueError(f"stacked chain: state must be (K, B, {S}) and noise (K, {T + 1}, B, {A}), got "
                         f"{tuple(state.shape)} and {tuple(noise.shape)}")
    if any(getattr(p, n).shape[0] != K for n in _PACKED_TENSORS):
        raise ValueError(f"stacked chain: every packed tensor needs a leading dimension of {K} seeds")
    out = torch.empty(K, B, A, device=state.device, dtype=torch.float32)
    if B == 0 or K == 0:
        return out
    dot_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    bm, bn, nw, ns = _launch_config(B, precision, sm_count(state.device), seeds=K)
    dot_weights = [getattr(p, n).to(dot_dtype) for n in ("w_x", "w_s", "w2", "w3", "w_out")]
    _launch_fitting(p, dot_weights, state, noise, None, out, precision, (bm, min(bn, H), nw, ns), seeds=K)
    return out


class _ChainPerSeed(torch.autograd.Function):
    """sample_chain_triton as a function of tensors, with a vmap rule: under torch.func.vmap over
    stacked seeds (ramac.train.stacked) the K chains are one launch of the stacked kernel."""

    @staticmethod
    def forward(meta, state, noise, *tensors):
        return sample_chain_triton(_repack(meta, tensors), state, noise, precision=meta[-1])

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def vmap(info, in_dims, meta, state, noise, *tensors):
        state, noise, *tensors = seeds_first(info.batch_size, (state, noise, *tensors), in_dims[1:])
        return sample_chain_stacked_triton(_repack(meta, tensors), state, noise, precision=meta[-1]), 0


def _repack(meta, tensors) -> PackedDenoiser:
    A, S, max_action, coefs_host, _ = meta
    return PackedDenoiser(*tensors, coefs_host=coefs_host, action_dim=A, state_dim=S, max_action=max_action)


def sample_chain(p: PackedDenoiser, state, noise=None, seed=None, precision="bf16"):
    """All T denoising steps; one Triton launch on CUDA, reference loop otherwise. Under
    torch.func.vmap (seeds stacked) with the noise given: one launch for all seeds."""
    if p.hidden >= 16 and p.hidden & (p.hidden - 1) == 0:
        tensors = [getattr(p, n) for n in _PACKED_TENSORS]
        if noise is not None and is_vmapped(state, noise, *tensors):
            if use_triton(state, noise, *tensors, vmap_rule=True):
                meta = (p.action_dim, p.state_dim, p.max_action, p.coefs_host, precision)
                return _ChainPerSeed.apply(meta, state, noise, *tensors)
        elif use_triton(state, *tensors, *(() if noise is None else (noise,))):
            return sample_chain_triton(p, state, noise, seed, precision)
    return sample_chain_ref(p, state, noise)
