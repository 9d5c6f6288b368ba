"""One-step flow student: the whole MLP and the clip for a block of states in one launch.

The student of RAFMAC and FQL is mu(s, z) = clip(MLP([s, z]), -max_action, max_action) with
L hidden Linear layers of width H, each followed by exact GELU, then a Linear to the A action
dims. Packing (`pack_student`) keeps private copies of the nn.Linear weights (the reference op
reads those, so it computes exactly what the module does) and, once per dot dtype, the layout
the kernel reads: zero-padded W^T matrices (input (D_P, H_P), the L - 1 hidden ones stacked
(L - 1, H_P, H_P), output (H_P, A_P)) and fp32 biases. Padding is exact: a padded hidden unit
has zero weights and bias, GELU(0) = 0, and its row of the next matrix is zero.

Per block of BM rows the activations stay in registers. Triton cannot assemble a register
tile chunk by chunk, so layers are fused in pairs, as the chain sampler fuses its layers 2
and 3: for each chunk c of BN hidden units, gelu(h W_a[:, c] + b_a[c]) is formed and at once
accumulated into acc += (.) W_b[c, :]; only h and acc are live, and the weight chunks stream
from L2 through tl.dot (bf16 or tf32 inputs, fp32 accumulation). With L + 1 matrices in all,
an even L leaves the input layer alone (computed over chunks of the input columns, which come
from memory), an odd L pairs it with the first hidden matrix; the last pair ends in the
output matrix. The noise z is an input (drawn by torch: CUDA-graph safe), or Philox noise
drawn in the kernel from a seed.

Forward only: evaluation and the critics' next actions. The differentiable path is the
nn.Module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ._dispatch import HAS_TRITON, use_triton
from .sampler import PRECISIONS, _pad


@dataclass
class PackedStudent:
    """The student's weights: nn.Linear layout for the reference op, kernel layouts on demand."""

    weights: tuple  # L + 1 tensors (out, in) as nn.Linear: private copies in the parameters' dtype
    biases: tuple  # L + 1 tensors (out,)
    state_dim: int
    action_dim: int
    max_action: float
    _casts: dict = field(default_factory=dict, repr=False)

    @property
    def hidden(self) -> int:
        return self.weights[0].shape[0]

    @property
    def n_hidden(self) -> int:
        return len(self.weights) - 1

    def kernel_weights(self, dtype: torch.dtype):
        """(w_in (D_P, H_P), w_hid (L - 1, H_P, H_P) or None, w_out (H_P, A_P)) in the dot dtype,
        and (b (L, H_P), b_out (A_P,)) in fp32; zero-padded W^T, cached per dtype."""
        if dtype not in self._casts:
            w, b = self.weights, self.biases
            H, L, A, D = self.hidden, self.n_hidden, self.action_dim, self.state_dim + self.action_dim
            h_p, d_p, a_p = _pad(H), _pad(D), _pad(A)
            dev = w[0].device
            w_in = torch.zeros(d_p, h_p, dtype=dtype, device=dev)
            w_in[:D, :H] = w[0].t()
            w_hid = None
            if L > 1:
                w_hid = torch.zeros(L - 1, h_p, h_p, dtype=dtype, device=dev)
                for j in range(1, L):
                    w_hid[j - 1, :H, :H] = w[j].t()
            w_out = torch.zeros(h_p, a_p, dtype=dtype, device=dev)
            w_out[:H, :A] = w[L].t()
            if "bias" not in self._casts:
                b_hid = torch.zeros(L, h_p, dtype=torch.float32, device=dev)
                for j in range(L):
                    b_hid[j, :H] = b[j]
                b_out = torch.zeros(a_p, dtype=torch.float32, device=dev)
                b_out[:A] = b[L]
                self._casts["bias"] = (b_hid, b_out)
            self._casts[dtype] = (w_in, w_hid, w_out)
        return self._casts[dtype], self._casts["bias"]


def pack_student(mlp_or_linears, max_action: float) -> PackedStudent:
    """Pack the student: an nn.Module whose nn.Linear layers, in order, are the MLP's (GELU
    between them, e.g. FlowMLP), or a list of nn.Linear or (weight (out, in), bias (out,)).

    The first layer's inputs are [state, z] with z of the output's width. Packing is
    device-side work only (copies), so it can be captured in a CUDA graph.
    """
    if isinstance(mlp_or_linears, nn.Module):
        for m in mlp_or_linears.modules():
            if isinstance(m, nn.GELU) and m.approximate != "none":
                raise ValueError("the student kernel computes exact GELU; got approximate='tanh'")
        layers = [m for m in mlp_or_linears.modules() if isinstance(m, nn.Linear)]
    else:
        layers = list(mlp_or_linears)
    pairs = [(m.weight, m.bias) if isinstance(m, nn.Linear) else tuple(m) for m in layers]
    if len(pairs) < 2:
        raise ValueError(f"the student needs at least one hidden layer and an output layer, got {len(pairs)} layers")
    if any(b is None for _, b in pairs):
        raise ValueError("every layer of the student needs a bias")
    H, A = pairs[0][0].shape[0], pairs[-1][0].shape[0]
    D = pairs[0][0].shape[1]
    for i, (w, b) in enumerate(pairs):
        want_out = A if i == len(pairs) - 1 else H
        want_in = D if i == 0 else H
        if tuple(w.shape) != (want_out, want_in) or tuple(b.shape) != (want_out,):
            raise ValueError(f"layer {i}: weight {tuple(w.shape)}, bias {tuple(b.shape)}; expected weight "
                             f"({want_out}, {want_in}) and bias ({want_out},) for hidden width {H}")
    if D < A:
        raise ValueError(f"the first layer takes {D} inputs, fewer than the noise's {A} dims")
    with torch.no_grad():  # private copies: the pack must not alias (or track) live parameters
        weights = tuple(w.detach().clone() for w, _ in pairs)
        biases = tuple(b.detach().clone() for _, b in pairs)
    return PackedStudent(weights, biases, state_dim=D - A, action_dim=A, max_action=float(max_action))


# --------------------------------------------------------------------------
# reference op
# --------------------------------------------------------------------------
def student_forward_ref(p: PackedStudent, state: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
    """Plain PyTorch, the module's own ops (bit for bit): clip(MLP([state, z])). z: (B, A)."""
    _check(p, state, z)
    if z is None:
        z = torch.randn(state.shape[0], p.action_dim, device=state.device, dtype=state.dtype)
    x = torch.cat([state, z], dim=-1)
    for w, b in zip(p.weights[:-1], p.biases[:-1]):
        x = F.gelu(F.linear(x, w, b))
    return F.linear(x, p.weights[-1], p.biases[-1]).clamp(-p.max_action, p.max_action)


def _check(p, state, z):
    if state.dim() != 2 or state.shape[1] != p.state_dim:
        raise ValueError(f"state must be (B, {p.state_dim}), got {tuple(state.shape)}")
    if z is not None and tuple(z.shape) != (state.shape[0], p.action_dim):
        raise ValueError(f"z must be (B, A) = {(state.shape[0], p.action_dim)}, got {tuple(z.shape)}")


# --------------------------------------------------------------------------
# Triton kernel
# --------------------------------------------------------------------------
if HAS_TRITON:
    import triton
    import triton.language as tl

    from ._jit import _dot

    @triton.jit
    def _gelu(x):
        # exact GELU (nn.GELU's default): x Phi(x) = x (1 + erf(x / sqrt(2))) / 2
        return 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))

    @triton.jit
    def _load_input(state_ptr, z_ptr, seed_ptr, rows, cols, B, S, A, HAS_Z: tl.constexpr):
        # columns [0, S) of [s, z] from the states, [S, S + A) from z (or Philox), the rest 0
        row_ok = (rows < B)[:, None]
        s = tl.load(state_ptr + rows[:, None] * S + cols[None, :], mask=row_ok & (cols < S)[None, :], other=0.0)
        zc = cols - S
        z_ok = row_ok & ((zc >= 0) & (zc < A))[None, :]
        z_offs = rows[:, None] * A + zc[None, :]
        if HAS_Z:
            z = tl.load(z_ptr + z_offs, mask=z_ok, other=0.0).to(tl.float32)
        else:
            z = tl.where(z_ok, tl.randn(tl.load(seed_ptr), z_offs), 0.0)
        return s.to(tl.float32) + z

    @triton.jit
    def _pair(h, wa_ptr, ba_ptr, wb_ptr,
              K: tl.constexpr, H: tl.constexpr, N: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
              DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
        # two layers: sum over chunks c of gelu(h W_a[:, c] + b_a[c]) W_b[c, :] -> (BM, N) fp32 (no b_b)
        # h: (BM, K) dot dtype; wa_ptr: (K, H) W_a^T; ba_ptr: (H,) fp32; wb_ptr: (H, N) W_b^T
        dot_t = wa_ptr.dtype.element_ty
        k = tl.arange(0, K)
        n = tl.arange(0, N)
        bn = tl.arange(0, BN)
        acc = tl.zeros([BM, N], dtype=tl.float32)
        for n0 in range(0, H, BN):
            mid = _dot(h, tl.load(wa_ptr + k[:, None] * H + n0 + bn[None, :]), None, DOT_PRECISION, UPCAST)
            mid = _gelu(mid + tl.load(ba_ptr + n0 + bn)[None, :]).to(dot_t)  # (BM, BN)
            acc = _dot(mid, tl.load(wb_ptr + (n0 + bn)[:, None] * N + n[None, :]), acc, DOT_PRECISION, UPCAST)
        return acc

    @triton.jit
    def _student_kernel(
        state_ptr,  # (B, S) states, any float dtype
        z_ptr,  # (B, A) noise, any float dtype (read only if HAS_Z)
        seed_ptr,  # (1,) int64 Philox seed (read only if not HAS_Z)
        out_ptr,  # (B, A) fp32 actions
        w_in_ptr,  # (D_P, H) W_0^T, dot dtype
        w_hid_ptr,  # (L - 1, H, H) W_j^T for j = 1 .. L - 1, dot dtype (unused if L == 1)
        w_out_ptr,  # (H, A_P) W_L^T, dot dtype
        b_ptr,  # (L, H) fp32 hidden biases
        b_out_ptr,  # (A_P,) fp32
        B, S, A, max_action,
        L: tl.constexpr, FIRST: tl.constexpr, D_P: tl.constexpr, H: tl.constexpr, A_P: tl.constexpr,
        BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
        HAS_Z: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    ):
        rows = tl.program_id(0) * BM + tl.arange(0, BM)
        hk = tl.arange(0, H)
        dot_t = w_in_ptr.dtype.element_ty

        if L % 2 == 0:  # layer 0 alone, over chunks of the input columns: h = h^(1)
            kk = tl.arange(0, BK)
            acc = tl.zeros([BM, H], dtype=tl.float32)
            for k0 in range(0, D_P, BK):
                x = _load_input(state_ptr, z_ptr, seed_ptr, rows, k0 + kk, B, S, A, HAS_Z).to(dot_t)
                acc = _dot(x, tl.load(w_in_ptr + (k0 + kk)[:, None] * H + hk[None, :]), acc, DOT_PRECISION, UPCAST)
            h = _gelu(acc + tl.load(b_ptr + hk)[None, :]).to(dot_t)
        else:
            x = _load_input(state_ptr, z_ptr, seed_ptr, rows, tl.arange(0, D_P), B, S, A, HAS_Z).to(dot_t)
            if L >= 3:  # layers 0 and 1 as a pair: h = h^(2)
                acc = _pair(x, w_in_ptr, b_ptr, w_hid_ptr, D_P, H, H, BM, BN, DOT_PRECISION, UPCAST)
                h = _gelu(acc + tl.load(b_ptr + H + hk)[None, :]).to(dot_t)

        if L >= 2:
            for a in range(FIRST, L - 1, 2):  # hidden layers a and a + 1 (stacked at a - 1 and a): h^(a + 2)
                acc = _pair(h, w_hid_ptr + (a - 1) * H * H, b_ptr + a * H, w_hid_ptr + a * H * H,
                            H, H, H, BM, BN, DOT_PRECISION, UPCAST)
                h = _gelu(acc + tl.load(b_ptr + (a + 1) * H + hk)[None, :]).to(dot_t)
            # the last hidden layer and the output
            out = _pair(h, w_hid_ptr + (L - 2) * H * H, b_ptr + (L - 1) * H, w_out_ptr,
                        H, H, A_P, BM, BN, DOT_PRECISION, UPCAST)
        else:  # one hidden layer: the input layer and the output
            out = _pair(x, w_in_ptr, b_ptr, w_out_ptr, D_P, H, A_P, BM, BN, DOT_PRECISION, UPCAST)

        a_cols = tl.arange(0, A_P)
        out = out + tl.load(b_out_ptr + a_cols)[None, :]
        out = tl.minimum(tl.maximum(out, -max_action), max_action)
        out_ok = (rows < B)[:, None] & (a_cols < A)[None, :]
        tl.store(out_ptr + rows[:, None] * A + a_cols[None, :], out, mask=out_ok)

    def _launch_config(B, H, precision):
        """(BM, BN, warps, stages): a first guess from the chain sampler's H200 sweeps, not yet
        swept for this kernel. At H = 512 the (BM, H) fp32 accumulator alone takes 2 BM registers
        per thread of 8 warps (BM <= 32), and one stage of the two weight chunks (H, BN) and
        (BN, H) takes 4 H BN bytes of shared memory in bf16 (8 H BN in fp32): 64 KB at BN = 32.
        fp32 weight chunks take twice the shared memory: smaller tiles, no multi-buffering."""
        if precision != "bf16":
            return (16 if B <= 16 else 32), (32 if H <= 256 else 16), (4 if H <= 256 else 8), 1
        if B <= 16:
            return (16, 64, 8, 3) if H <= 256 else (16, 32, 8, 2)
        return (64 if H <= 256 else 32), 32, 8, 2


def student_forward_triton(p: PackedStudent, state, z=None, seed=None, precision="bf16",
                           block_m=None, block_n=None, num_warps=None, num_stages=None):
    """One-launch student. z: (B, A), or None for Philox noise from seed (an int, a 1-element
    int64 device tensor a CUDA graph can advance, or None to draw one from torch's generator)."""
    _check(p, state, z)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    B, S, A, L = state.shape[0], p.state_dim, p.action_dim, p.n_hidden
    out = torch.empty(B, A, device=state.device, dtype=torch.float32)
    if B == 0:
        return out
    dot_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    (w_in, w_hid, w_out), (b_hid, b_out) = p.kernel_weights(dot_dtype)
    d_p, h_p, a_p = w_in.shape[0], w_in.shape[1], w_out.shape[1]
    bm, bn, nw, ns = _launch_config(B, h_p, precision)
    bm, nw, ns = block_m or bm, num_warps or nw, num_stages or ns
    bn = min(block_n or bn, h_p)
    bk = min(d_p, 32 if precision == "bf16" else 16)
    if z is None:
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        if not torch.is_tensor(seed):
            seed = torch.tensor([seed], dtype=torch.int64, device=state.device)
        z_arg = out
    else:
        z_arg, seed = z.contiguous(), out
    _student_kernel[(triton.cdiv(B, bm),)](
        state.contiguous(), z_arg, seed, out,
        w_in, w_in if w_hid is None else w_hid, w_out, b_hid, b_out,
        B, S, A, p.max_action,
        L=L, FIRST=1 if L % 2 == 0 else 2, D_P=d_p, H=h_p, A_P=a_p, BM=bm, BN=bn, BK=bk,
        HAS_Z=z is not None, DOT_PRECISION="ieee" if precision == "fp32" else "tf32",
        UPCAST=os.environ.get("TRITON_INTERPRET") == "1", num_warps=nw, num_stages=ns,
    )
    return out


def student_sample(p: PackedStudent, state, z=None, precision="bf16", seed=None):
    """mu(state, z): one Triton launch on CUDA (fp32 actions), the reference op otherwise.
    z None: Philox noise from seed in the kernel, torch's randn in the reference op."""
    if use_triton(state, *p.weights, *p.biases, *(() if z is None else (z,))):
        return student_forward_triton(p, state, z, seed=seed, precision=precision)
    return student_forward_ref(p, state, z)
