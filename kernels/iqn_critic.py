"""The per-quantile part of the IQN critic (ramac.nets.IQNCritic.quantiles), fused forward + backward.

    f   = cos(tau * pi * j),  j = 0 .. n_cos - 1                 (B, K, n_cos)
    phi = relu(f Wc^T + bc)                                      (B, K, emb)
    x   = trunk[:, None, :] * phi                                (B, K, emb)
    h   = relu(x Wh^T + bh)                                      (B, K, hidden)
    q   = h wo^T + bo                                            (B, K), fp32

taus: (B, K) per sample or (K,) shared; in general any shape that broadcasts to (..., B, K) in
torch's sense. Every other tensor may carry a leading stack dimension C (both critics, or
critics x seeds): trunk (C, B, emb), cos_w (C, emb, n_cos), ..., out_b (C, 1), q (C, B, K), and
taus then (K,), (B, K), (C, 1, K) or (C, B, K). One launch covers all C.

Precision: the two hidden matmuls run in trunk's dtype (a bf16 trunk, as under bf16 autocast:
bf16 operands, fp32 accumulation, activations rounded to bf16 where torch rounds them); the
cosine features and the output layer are fp32, and q is always fp32 (IQNCritic keeps its output
layer out of autocast). Gradients come back in each input's dtype; taus get none.

Kernels (rows are (b, k) pairs; a block holds BB samples x K_P fractions, K_P = K rounded up to a
power of two, so all K fractions of a sample live in one block):
* forward, one program per (row block, c): features, cos layer, product with the trunk, then the
  hidden units in chunks of BN whose ReLU outputs are reduced into q at once; no (rows, hidden)
  activation leaves registers.
* backward "rows", P_A programs per c, each walking row blocks p, p + P_A, ...: recomputes the
  forward, forms dL/dx over all hidden chunks, writes dL/dtrunk (the sum over k stays inside the
  block) and keeps the cos layer's weight gradient in registers, written once per program.
* backward "head", P_B programs per (hidden chunk, c): recomputes x, owns the chunk's slices of
  dWh, dbh and dwo in registers over its row blocks, written once per program.
Weight gradients are thus partial sums in (C, P, ...) buffers, summed over P in a fixed order by
one more launch per backward kernel: no atomics, and P depends only on the shapes, so the result
is bitwise reproducible.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ._dispatch import HAS_TRITON, fold_seeds, get_backend, is_vmapped, seeds_first, use_triton
from .iqn_launch import MIN_DOT_ROWS, launch_configs

# Where the public op takes the kernels by itself (H200, fwd + bwd replayed from a CUDA graph,
# bench/results/iqn-critic-H200.md): a bf16 trunk at batch 256 (4,096-8,192 rows), 53-87 us against
# 104-139 us for the reference (62-79 us compiled); fp32 (exact "ieee" dots, no tensor cores) loses
# everywhere (172-609 us at batch 256, 36 ms against 5.3 ms at 16,384 x 32), and larger bf16
# problems were not measured: those take the reference.
AUTO_ROWS = 16_384  # B x K at most
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
MAX_K = 128  # fractions per sample one row block can hold
MAX_EMB = 256  # embedding width (and cosine features) the kernel tiles hold


# --------------------------------------------------------------------------
# reference op
# --------------------------------------------------------------------------
def iqn_quantiles_ref(trunk, taus, cos_w, cos_b, head_w, head_b, out_w, out_b):
    """Plain PyTorch: IQNCritic.quantiles' math, with an optional leading stack dimension C.

    Materialises (..., B, K, hidden). Unstacked fp32 inputs give the module's result bit for bit.
    """
    stacked = _check_args(trunk, taus, cos_w, cos_b, head_w, head_b, out_w, out_b)
    dt = trunk.dtype
    n_cos = cos_w.shape[-1]
    freqs = math.pi * torch.arange(n_cos, dtype=torch.float32, device=trunk.device)
    taus = taus.reshape((1,) * (trunk.dim() - taus.dim()) + tuple(taus.shape))  # (C|1, B|1, K) or (B|1, K)
    feats = torch.cos(taus.float()[..., None] * freqs).to(dt)  # (..., K, n_cos)
    phi = torch.relu(_linear(feats, cos_w.to(dt), cos_b.to(dt), stacked))  # (..., K, emb)
    h = torch.relu(_linear(trunk[..., :, None, :] * phi, head_w.to(dt), head_b.to(dt), stacked))  # (..., B, K, hidden)
    with torch.autocast(h.device.type, enabled=False):  # q stays fp32, as in IQNCritic
        return _linear(h.float(), out_w.float(), out_b.float(), stacked).squeeze(-1)


def _linear(x, w, b, stacked):
    """x W^T + b; stacked: w (C, out, in) applies entry c to x[c] (x (C|1, ..., in)), as F.linear
    would entry by entry (baddbmm, like addmm, adds the bias before rounding to a bf16 output)."""
    if not stacked:
        return F.linear(x, w, b)
    x = x.expand(w.shape[0], *x.shape[1:])
    y = torch.baddbmm(b[:, None, :], x.reshape(w.shape[0], -1, x.shape[-1]), w.transpose(1, 2))
    return y.reshape(*x.shape[:-1], w.shape[1])


def _check_args(trunk, taus, cos_w, cos_b, head_w, head_b, out_w, out_b) -> bool:
    """Validate the shapes; True when the tensors carry a stack dimension."""
    if trunk.dim() not in (2, 3):
        raise ValueError(f"trunk must be (B, emb) or (C, B, emb), got shape {tuple(trunk.shape)}")
    lead = tuple(trunk.shape[:-2])
    B, E = trunk.shape[-2:]
    H = head_w.shape[-2] if head_w.dim() >= 2 else -1
    N = cos_w.shape[-1] if cos_w.dim() >= 1 else -1
    want = {"cos_w": (cos_w, (E, N)), "cos_b": (cos_b, (E,)), "head_w": (head_w, (H, E)),
            "head_b": (head_b, (H,)), "out_w": (out_w, (1, H)), "out_b": (out_b, (1,))}
    for name, (t, shape) in want.items():
        if tuple(t.shape) != lead + shape:
            raise ValueError(f"{name} must have shape {lead + shape} (trunk {tuple(trunk.shape)}), "
                             f"got {tuple(t.shape)}")
    if N < 1 or H < 1:
        raise ValueError(f"need at least one cosine feature and one hidden unit, got n_cos={N}, hidden={H}")
    if taus.dim() < 1 or taus.dim() > trunk.dim():
        raise ValueError(f"taus must broadcast to {lead + (B, 'K')}, got shape {tuple(taus.shape)}")
    full = lead + (B,)
    for have, size in zip(reversed(taus.shape[:-1]), reversed(full)):
        if have not in (1, size):
            raise ValueError(f"taus must broadcast to {full + (taus.shape[-1],)}, got shape {tuple(taus.shape)}")
    return bool(lead)


# --------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------
if HAS_TRITON:
    import triton
    import triton.language as tl

    from ._jit import _dot

    @triton.jit
    def _to(x, dot_t: tl.constexpr, EMULATE: tl.constexpr):
        # x -> the dot dtype, rounded to nearest even as the GPU's conversion does; the interpreter
        # truncates fp32 -> bf16 casts (an error twice as large, and biased), so EMULATE rounds first
        if EMULATE and dot_t == tl.bfloat16 and x.dtype == tl.float32:
            bits = x.to(tl.int32, bitcast=True)
            x = ((bits + 0x7FFF + ((bits >> 16) & 1)) & -65536).to(tl.float32, bitcast=True)
        return x.to(dot_t)

    @triton.jit
    def _rows(sb, B, K, BB: tl.constexpr, K_P: tl.constexpr):
        # sample block sb: row r is (b, k) = (sb * BB + r // K_P, r % K_P)
        r = tl.arange(0, BB * K_P)
        b = sb * BB + r // K_P
        k = r % K_P
        return b, k, (b < B) & (k < K)

    @triton.jit
    def _embed(c, b, k, ok,
               trunk_ptr,  # (C, B, E) trunk, its dtype is the dot dtype
               taus_ptr,  # taus broadcast to (C, B, K) by strides (0 where shared)
               cw_ptr,  # (C, E, N) cos_fc weight, any float dtype
               cb_ptr,  # (C, E) cos_fc bias
               B, E, N, s_tc, s_tb, s_tk,
               E_P: tl.constexpr, N_P: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
        # -> features f (BM, N_P) and x (BM, E_P) in the dot dtype; phi_pre, phi, trunk rows (BM, E_P) fp32
        dot_t = trunk_ptr.dtype.element_ty
        j = tl.arange(0, N_P)
        e = tl.arange(0, E_P)
        j_ok = j < N
        e_ok = e < E
        tau = tl.load(taus_ptr + c * s_tc + b * s_tb + k * s_tk, mask=ok, other=0.0).to(tl.float32)
        freq = j.to(tl.float32) * 3.141592653589793  # fp32(pi) * j, as torch forms cos_freqs
        f = tl.where(j_ok[None, :], tl.cos(tau[:, None] * freq[None, :]), 0.0)
        f = _to(f, dot_t, UPCAST)
        wc_t = tl.load(cw_ptr + c * E * N + e[None, :] * N + j[:, None],
                       mask=j_ok[:, None] & e_ok[None, :], other=0.0)
        wc_t = _to(wc_t, dot_t, UPCAST)  # (N_P, E_P) = Wc^T
        bc = _to(tl.load(cb_ptr + c * E + e, mask=e_ok, other=0.0), dot_t, UPCAST).to(tl.float32)
        phi_pre = _dot(f, wc_t, None, PRECISION, UPCAST) + bc[None, :]
        phi = _to(tl.maximum(phi_pre, 0.0), dot_t, UPCAST).to(tl.float32)  # rounded as torch's bf16 matmul
        t = tl.load(trunk_ptr + (c * B + b)[:, None] * E + e[None, :],
                    mask=ok[:, None] & e_ok[None, :], other=0.0).to(tl.float32)
        x = _to(t * phi, dot_t, UPCAST)
        return f, phi_pre, phi, t, x

    @triton.jit
    def _head_weights(c, n0, H, E,
                      hw_ptr,  # (C, H, E) head_fc weight
                      hb_ptr,  # (C, H) head_fc bias
                      ow_ptr,  # (C, H) output weight (out.weight (C, 1, H))
                      dot_t: tl.constexpr, E_P: tl.constexpr, BN: tl.constexpr, EMULATE: tl.constexpr):
        # hidden units n0 .. n0 + BN: Wh rows (BN, E_P) in the dot dtype, bh and wo (BN,) fp32 (0 past H)
        n = n0 + tl.arange(0, BN)
        e = tl.arange(0, E_P)
        n_ok = n < H
        wh = tl.load(hw_ptr + c * H * E + n[:, None] * E + e[None, :],
                     mask=n_ok[:, None] & (e < E)[None, :], other=0.0)
        wh = _to(wh, dot_t, EMULATE)
        bh = _to(tl.load(hb_ptr + c * H + n, mask=n_ok, other=0.0), dot_t, EMULATE).to(tl.float32)
        wo = tl.load(ow_ptr + c * H + n, mask=n_ok, other=0.0).to(tl.float32)
        return wh, bh, wo

    @triton.jit
    def _iqn_fwd_kernel(
        trunk_ptr, taus_ptr, cw_ptr, cb_ptr,  # as in _embed
        hw_ptr, hb_ptr, ow_ptr,  # as in _head_weights
        ob_ptr,  # (C,) output bias
        q_ptr,  # (C, B, K) fp32 out
        B, K, E, N, H, s_tc, s_tb, s_tk,
        BB: tl.constexpr, K_P: tl.constexpr, E_P: tl.constexpr, N_P: tl.constexpr, BN: tl.constexpr,
        PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    ):
        sb = tl.program_id(0)
        c = tl.program_id(1)
        dot_t = trunk_ptr.dtype.element_ty
        b, k, ok = _rows(sb, B, K, BB, K_P)
        _, _, _, _, x = _embed(c, b, k, ok, trunk_ptr, taus_ptr, cw_ptr, cb_ptr, B, E, N, s_tc, s_tb, s_tk,
                               E_P, N_P, PRECISION, UPCAST)
        q = tl.zeros([BB * K_P], dtype=tl.float32)
        for n0 in range(0, H, BN):
            wh, bh, wo = _head_weights(c, n0, H, E, hw_ptr, hb_ptr, ow_ptr, dot_t, E_P, BN, UPCAST)
            hp = _dot(x, tl.trans(wh), None, PRECISION, UPCAST) + bh[None, :]  # (BM, BN)
            h = _to(tl.maximum(hp, 0.0), dot_t, UPCAST).to(tl.float32)
            q += tl.sum(h * wo[None, :], axis=1)
        q += tl.load(ob_ptr + c).to(tl.float32)
        tl.store(q_ptr + (c * B + b) * K + k, q, mask=ok)

    # Backward. With g = dL/dq (per row) and masks m_h = [h_pre > 0], m_phi = [phi_pre > 0]:
    #   dh_pre = g wo * m_h                       dwo = sum_rows g h,   dbo = sum_rows g
    #   dWh    = dh_pre^T x,  dbh = sum_rows dh_pre,   dx = dh_pre Wh
    #   dtrunk_b = sum_k dx_bk * phi_bk           (the broadcast over k)
    #   dphi_pre = dx * trunk * m_phi
    #   dWc    = dphi_pre^T f,  dbc = sum_rows dphi_pre          (taus: no gradient)
    # In bf16, dh_pre, dx, the dtrunk terms and dphi_pre are rounded to bf16 where torch's bf16
    # autograd rounds them; every sum over rows accumulates in fp32.
    @triton.jit
    def _iqn_bwd_rows_kernel(
        trunk_ptr, taus_ptr, cw_ptr, cb_ptr,  # as in _embed
        hw_ptr, hb_ptr, ow_ptr,  # as in _head_weights
        dq_ptr,  # (C, B, K) fp32 dL/dq
        dtrunk_ptr,  # (C, B, E) out, trunk's dtype
        dcw_ptr,  # (C, P, E_P, N_P) fp32 out: per-program partial dWc
        dcb_ptr,  # (C, P, E_P) fp32 out: per-program partial dbc
        B, K, E, N, H, s_tc, s_tb, s_tk, n_blocks, P,
        BB: tl.constexpr, K_P: tl.constexpr, E_P: tl.constexpr, N_P: tl.constexpr, BN: tl.constexpr,
        PRECISION: tl.constexpr, UPCAST: tl.constexpr,
        COS_GRAD: tl.constexpr,  # False: dL/dtrunk only (the actor's risk term: the critics are constants)
    ):
        p = tl.program_id(0)
        c = tl.program_id(1)
        dot_t = trunk_ptr.dtype.element_ty
        e = tl.arange(0, E_P)
        j = tl.arange(0, N_P)
        acc_wc = tl.zeros([E_P, N_P], dtype=tl.float32)
        acc_bc = tl.zeros([E_P], dtype=tl.float32)
        for sb in range(p, n_blocks, P):
            b, k, ok = _rows(sb, B, K, BB, K_P)
            f, phi_pre, phi, t, x = _embed(c, b, k, ok, trunk_ptr, taus_ptr, cw_ptr, cb_ptr, B, E, N,
                                           s_tc, s_tb, s_tk, E_P, N_P, PRECISION, UPCAST)
            g = tl.load(dq_ptr + (c * B + b) * K + k, mask=ok, other=0.0)  # 0 on padded rows: they add nothing
            dx = tl.zeros([BB * K_P, E_P], dtype=tl.float32)
            for n0 in range(0, H, BN):
                wh, bh, wo = _head_weights(c, n0, H, E, hw_ptr, hb_ptr, ow_ptr, dot_t, E_P, BN, UPCAST)
                hp = _dot(x, tl.trans(wh), None, PRECISION, UPCAST) + bh[None, :]
                dh = _to(tl.where(hp > 0, g[:, None] * wo[None, :], 0.0), dot_t, UPCAST)  # (BM, BN)
                dx = _dot(dh, wh, dx, PRECISION, UPCAST)  # (BM, E_P)
            dx = _to(dx, dot_t, UPCAST).to(tl.float32)
            dt_rows = _to(dx * phi, dot_t, UPCAST).to(tl.float32)
            dtrunk = tl.sum(tl.reshape(dt_rows, (BB, K_P, E_P)), axis=1)  # (BB, E_P): a block holds all k
            bs = sb * BB + tl.arange(0, BB)
            tl.store(dtrunk_ptr + (c * B + bs)[:, None] * E + e[None, :], _to(dtrunk, dot_t, UPCAST),
                     mask=(bs < B)[:, None] & (e < E)[None, :])
            if COS_GRAD:
                dpp = _to(tl.where(phi_pre > 0, dx * t, 0.0), dot_t, UPCAST)  # (BM, E_P)
                acc_wc = _dot(tl.trans(dpp), f, acc_wc, PRECISION, UPCAST)
                acc_bc += tl.sum(dpp.to(tl.float32), axis=0)
        if COS_GRAD:
            part = c * P + p
            tl.store(dcw_ptr + (part * E_P + e)[:, None] * N_P + j[None, :], acc_wc)
            tl.store(dcb_ptr + part * E_P + e, acc_bc)

    @triton.jit
    def _iqn_bwd_head_kernel(
        trunk_ptr, taus_ptr, cw_ptr, cb_ptr,  # as in _embed
        hw_ptr, hb_ptr, ow_ptr,  # as in _head_weights
        dq_ptr,  # (C, B, K) fp32 dL/dq
        dhw_ptr,  # (C, P, H_P, E_P) fp32 out: per-program partial dWh
        dhb_ptr,  # (C, P, H_P) fp32 out: partial dbh
        dow_ptr,  # (C, P, H_P) fp32 out: partial dwo
        B, K, E, N, H, s_tc, s_tb, s_tk, n_blocks, P, H_P,
        BB: tl.constexpr, K_P: tl.constexpr, E_P: tl.constexpr, N_P: tl.constexpr, BN: tl.constexpr,
        PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    ):
        p = tl.program_id(0)
        n0 = tl.program_id(1) * BN
        c = tl.program_id(2)
        dot_t = trunk_ptr.dtype.element_ty
        wh, bh, wo = _head_weights(c, n0, H, E, hw_ptr, hb_ptr, ow_ptr, dot_t, E_P, BN, UPCAST)
        acc_wh = tl.zeros([BN, E_P], dtype=tl.float32)
        acc_bh = tl.zeros([BN], dtype=tl.float32)
        acc_wo = tl.zeros([BN], dtype=tl.float32)
        for sb in range(p, n_blocks, P):
            b, k, ok = _rows(sb, B, K, BB, K_P)
            _, _, _, _, x = _embed(c, b, k, ok, trunk_ptr, taus_ptr, cw_ptr, cb_ptr, B, E, N,
                                   s_tc, s_tb, s_tk, E_P, N_P, PRECISION, UPCAST)
            g = tl.load(dq_ptr + (c * B + b) * K + k, mask=ok, other=0.0)
            hp = _dot(x, tl.trans(wh), None, PRECISION, UPCAST) + bh[None, :]
            acc_wo += tl.sum(g[:, None] * _to(tl.maximum(hp, 0.0), dot_t, UPCAST).to(tl.float32), axis=0)
            dh = _to(tl.where(hp > 0, g[:, None] * wo[None, :], 0.0), dot_t, UPCAST)
            acc_bh += tl.sum(dh.to(tl.float32), axis=0)
            acc_wh = _dot(tl.trans(dh), x, acc_wh, PRECISION, UPCAST)  # (BN, E_P)
        n = n0 + tl.arange(0, BN)  # H_P is a multiple of BN: no mask
        e = tl.arange(0, E_P)
        part = (c * P + p) * H_P
        tl.store(dhw_ptr + (part + n)[:, None] * E_P + e[None, :], acc_wh)
        tl.store(dhb_ptr + part + n, acc_bh)
        tl.store(dow_ptr + part + n, acc_wo)

    # The backward kernels' per-program partial sums, summed over the programs in a fixed order (so
    # bitwise reproducible) by one launch per backward kernel for all of its gradients (up to three
    # "segments": partials (C, P, RP, CP) fp32, padded, -> gradient (C, R, CN) in its own dtype,
    # contiguous). Five to six strided torch sums plus slicing copies and casts before: 14 reduction
    # launches, 54 us of a bf16 update at batch 256 (bench/results/defaults-H200/bf16-defaults.md).
    @triton.jit
    def _sum_segment(src_ptr, dst_ptr, blk, c, P, R, CN, RP, CP, BLOCK: tl.constexpr, PB: tl.constexpr):
        # PB programs' partials at a time (a (PB, BLOCK) tile of loads in flight, not one row after
        # another: 11.5 us a launch on an H200 that way), summed over P in the tile's fixed order
        i = blk * BLOCK + tl.arange(0, BLOCK)
        ok = i < R * CN
        off = (i // CN) * CP + i % CN
        src = src_ptr + (c * P).to(tl.int64) * RP * CP
        acc = tl.zeros([PB, BLOCK], dtype=tl.float32)
        for p0 in range(0, P, PB):
            p = p0 + tl.arange(0, PB)
            acc += tl.load(src + p[:, None] * (RP * CP) + off[None, :], mask=(p < P)[:, None] & ok[None, :], other=0.0)
        tl.store(dst_ptr + c.to(tl.int64) * R * CN + i, tl.sum(acc, axis=0).to(dst_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def _sum_parts_kernel(
        s0, d0, R0, N0, RP0, CP0,  # segment 0: partials, gradient, sizes (rows, columns; padded)
        s1, d1, R1, N1, RP1, CP1,
        s2, d2, R2, N2, RP2, CP2,
        P, END0, END1,  # programs summed; the segments' last blocks (exclusive), segment 2 after END1
        BLOCK: tl.constexpr, PB: tl.constexpr,
    ):
        blk = tl.program_id(0)
        c = tl.program_id(1)
        if blk < END0:
            _sum_segment(s0, d0, blk, c, P, R0, N0, RP0, CP0, BLOCK, PB)
        elif blk < END1:
            _sum_segment(s1, d1, blk - END0, c, P, R1, N1, RP1, CP1, BLOCK, PB)
        else:
            _sum_segment(s2, d2, blk - END1, c, P, R2, N2, RP2, CP2, BLOCK, PB)


SUM_BLOCK, SUM_PARTS = 256, 8  # gradient elements per program of _sum_parts_kernel, programs' partials per load


def _sum_parts(P, segments):
    """segments: up to three (partials (C, P, RP, CP) fp32, gradient (C, R, CN) or (C, CN)) pairs;
    each gradient gets its partials summed over P, in one launch."""
    C = segments[0][1].shape[0]
    args, ends, end = [], [], 0
    for src, dst in segments:
        R, CN = (dst.shape[1], dst.shape[2]) if dst.dim() == 3 else (1, dst.shape[1])
        RP, CP = (src.shape[2], src.shape[3]) if src.dim() == 4 else (1, src.shape[2])
        args += [src, dst, R, CN, RP, CP]
        end += triton.cdiv(R * CN, SUM_BLOCK)
        ends.append(end)
    while len(ends) < 3:  # unused slots: never reached (their blocks start at the end)
        args += args[-6:]
        ends.append(end)
    _sum_parts_kernel[(end, C)](*args, P, ends[0], ends[1], BLOCK=SUM_BLOCK, PB=SUM_PARTS, num_warps=4)


def _pow2(n: int, least: int = 1) -> int:
    return max(least, 1 << (n - 1).bit_length())


class _Plan:
    """Stacked, contiguous views of the inputs and the launch geometry.

    block_m, block_n, programs: override the rules' choice for every kernel (tests); tuning:
    {kind: (block_m, block_n, warps, stages)} overrides it per kernel kind (the tuning study)."""

    def __init__(self, trunk, taus, cos_w, cos_b, head_w, head_b, out_w, out_b, block_m, block_n, programs,
                 tuning=None):
        self.stacked = trunk.dim() == 3
        lift = (lambda t: t) if self.stacked else (lambda t: t[None])
        self.trunk = lift(trunk).contiguous()
        C, B, E = self.trunk.shape
        self.tensors = [lift(t).contiguous() for t in (cos_w, cos_b, head_w, head_b, out_w, out_b)]
        K = taus.shape[-1]
        taus = taus.reshape((1,) * (3 - taus.dim()) + tuple(taus.shape))
        self.taus = taus.expand(C, B, K)  # broadcast dims get stride 0: the kernel reads shared taus in place
        N, H = self.tensors[0].shape[-1], self.tensors[2].shape[1]
        self.shape = C, B, K, E, N, H
        self.k_p, self.e_p, self.n_p = _pow2(K), _pow2(E, 16), _pow2(N, 16)
        configs, default_programs = launch_configs(trunk.dtype, self.e_p, C * B * K)
        configs.update(tuning or {})
        self.launch = {}
        least = -(-MIN_DOT_ROWS // self.k_p)  # samples per block that give the backward's dots 16 rows
        for kind, (bm, bn, warps, stages) in configs.items():
            bn = min(block_n or bn, _pow2(H, 16))
            self.launch[kind] = (max(least, (block_m or bm) // self.k_p), bn, warps, stages)  # samples per block
        self.programs = programs
        self.default_programs = default_programs
        self.precision = "ieee" if trunk.dtype == torch.float32 else "tf32"  # ignored by bf16 dots
        self.upcast = _INTERPRET

    def geometry(self, kind):
        bb, bn, warps, stages = self.launch[kind]
        return dict(BB=bb, K_P=self.k_p, E_P=self.e_p, N_P=self.n_p, BN=bn, PRECISION=self.precision,
                    UPCAST=self.upcast, num_warps=warps, num_stages=stages)

    def args(self):
        return (self.trunk, self.taus, self.tensors[0], self.tensors[1], self.tensors[2], self.tensors[3],
                self.tensors[4])

    def forward(self):
        C, B, K, E, N, H = self.shape
        q = torch.empty(C, B, K, device=self.trunk.device, dtype=torch.float32)
        _iqn_fwd_kernel[(triton.cdiv(B, self.launch["fwd"][0]), C)](
            *self.args(), self.tensors[5], q, B, K, E, N, H, *self.taus.stride(), **self.geometry("fwd"))
        return q

    def backward(self, dq, rows, head, cos=None):
        """dq (C, B, K) fp32 -> (dtrunk, dWc, dbc) if rows, (dWh, dbh, dwo) if head (else None),
        each weight gradient contiguous in its weight's dtype; cos=False (default: rows) leaves the
        cos layer's two out (None) and its partial sums uncomputed."""
        C, B, K, E, N, H = self.shape
        dev, f32 = self.trunk.device, torch.float32
        cos = rows if cos is None else cos
        out_rows = out_head = None
        if rows:
            n_blocks = triton.cdiv(B, self.launch["rows"][0])
            P = self.programs or max(1, min(n_blocks, triton.cdiv(self.default_programs, C)))
            dtrunk = torch.empty_like(self.trunk)
            dcw = torch.empty(C, P if cos else 0, self.e_p, self.n_p, device=dev, dtype=f32)
            dcb = torch.empty(C, P if cos else 0, self.e_p, device=dev, dtype=f32)
            _iqn_bwd_rows_kernel[(P, C)](
                *self.args(), dq, dtrunk, dcw, dcb, B, K, E, N, H, *self.taus.stride(), n_blocks, P,
                **self.geometry("rows"), COS_GRAD=cos)
            out_rows = dtrunk, None, None
            if cos:
                gcw, gcb = torch.empty_like(self.tensors[0]), torch.empty_like(self.tensors[1])
                _sum_parts(P, [(dcw, gcw), (dcb, gcb)])
                out_rows = dtrunk, gcw, gcb
        if head:
            n_blocks = triton.cdiv(B, self.launch["head"][0])
            bn = self.launch["head"][1]
            chunks = triton.cdiv(H, bn)
            h_p = chunks * bn
            P = self.programs or max(1, min(n_blocks, triton.cdiv(self.default_programs, C * chunks)))
            dhw = torch.empty(C, P, h_p, self.e_p, device=dev, dtype=f32)
            dhb = torch.empty(C, P, h_p, device=dev, dtype=f32)
            dow = torch.empty(C, P, h_p, device=dev, dtype=f32)
            _iqn_bwd_head_kernel[(P, chunks, C)](
                *self.args(), dq, dhw, dhb, dow, B, K, E, N, H, *self.taus.stride(), n_blocks, P, h_p,
                **self.geometry("head"))
            out_head = tuple(torch.empty_like(t) for t in self.tensors[2:5])  # dWh, dbh, dwo (C, 1, H)
            _sum_parts(P, [(dhw, out_head[0]), (dhb, out_head[1]), (dow, out_head[2])])
        return out_rows, out_head

    def gradients(self, dq, rows: bool, head: bool, out_bias: bool = True, cos: bool | None = None) -> list:
        """The seven gradients (trunk, cos_w, cos_b, head_w, head_b, out_w, out_b) from dq (the
        output's shape), each in its input's dtype and shape; None for a part not asked for (rows:
        trunk and the cos layer, cos: the cos layer (default: rows), head: the head and output
        weights, out_bias: out_b)."""
        dq = (dq if self.stacked else dq[None]).float().contiguous()
        got_rows, got_head = self.backward(dq, rows=rows or bool(cos), head=head, cos=cos)
        parts = [*(got_rows or (None,) * 3), *(got_head or (None,) * 3),
                 dq.sum((1, 2))[:, None] if out_bias else None]
        grads = [None if g is None else g.to(t.dtype) for g, t in zip(parts, (self.trunk, *self.tensors))]
        return grads if self.stacked else [None if g is None else g[0] for g in grads]


class IQNQuantilesFn(torch.autograd.Function):
    """Fused IQN quantile head: one Triton launch forward, two backward (row-wise and head weights)."""

    @staticmethod
    def forward(ctx, trunk, taus, cos_w, cos_b, head_w, head_b, out_w, out_b, config):
        plan = _Plan(trunk, taus, cos_w, cos_b, head_w, head_b, out_w, out_b, *config)
        q = plan.forward()
        ctx.save_for_backward(plan.trunk, plan.taus, *plan.tensors)  # the plan keeps only the geometry
        plan.trunk = plan.taus = plan.tensors = None
        ctx.plan = plan
        return q if plan.stacked else q[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, dq):
        plan = ctx.plan
        plan.trunk, plan.taus, *plan.tensors = ctx.saved_tensors
        need = ctx.needs_input_grad
        g = plan.gradients(dq, rows=need[0], cos=need[2] or need[3], head=any(need[i] for i in (4, 5, 6)),
                           out_bias=need[7])
        plan.trunk = plan.taus = plan.tensors = None
        return g[0], None, *g[1:], None  # no gradient for taus and the launch configuration


def _fits(trunk, taus, cos_w):
    return (taus.dim() >= 1 and taus.shape[-1] <= MAX_K and trunk.shape[-1] <= MAX_EMB
            and cos_w.dim() >= 1 and cos_w.shape[-1] <= MAX_EMB and trunk.dtype in (torch.float32, torch.bfloat16))


def iqn_quantiles_triton(trunk, taus, cos_w, cos_b, head_w, head_b, out_w, out_b, *,
                         block_m=None, block_n=None, programs=None):
    """The Triton path, whatever the device (tests call it under TRITON_INTERPRET=1).

    block_m: rows (b, k) per block (rounded to whole samples), block_n: hidden units per chunk,
    programs: backward programs per stack entry (and hidden chunk); None: the defaults.
    """
    _check_args(trunk, taus, cos_w, cos_b, head_w, head_b, out_w, out_b)
    if not _fits(trunk, taus, cos_w):
        raise ValueError(f"the fused kernel takes an fp32 or bf16 trunk, at most {MAX_K} fractions and {MAX_EMB} "
                         f"embedding units or cosine features; got {trunk.dtype}, K={taus.shape[-1]}, "
                         f"emb={trunk.shape[-1]}, n_cos={cos_w.shape[-1]}")
    if trunk.shape[-2] == 0 or taus.shape[-1] == 0:
        return iqn_quantiles_ref(trunk, taus.detach(), cos_w, cos_b, head_w, head_b, out_w, out_b)
    return fold_seeds(IQNQuantilesFn.apply, _iqn_fold, trunk, taus.detach(), cos_w, cos_b, head_w, head_b, out_w,
                      out_b, (block_m, block_n, programs))


def _iqn_fold(K, in_dims, trunk, taus, *weights_and_config):
    """Under vmap over K seeds: the seeds become (more) stacked critics, C' = K x C, one launch."""
    *weights, config = weights_and_config
    return _critics_folded(lambda *a: IQNQuantilesFn.apply(*a, config), K, in_dims, trunk, taus, *weights)


def _critics_folded(op, K, in_dims, trunk, taus, *weights):
    """op(trunk, taus, *weights) over stacked critics (C', B, ...) for K seeds' critics: each seed's
    own stack of critics (if any) and the seeds folded into one C' = K x C, the quantiles (K, ..., B, N)."""
    trunk, taus, *weights = seeds_first(K, (trunk, taus, *weights), in_dims[:8])
    lead = trunk.shape[1:-2]  # a seed's own stack of critics, if any
    B, N = trunk.shape[-2], taus.shape[-1]
    taus = taus.reshape(K, *(1,) * (len(lead) + 2 - taus.dim() + 1), *taus.shape[1:])
    taus = taus.expand(K, *lead, B, N).reshape(-1, B, N)
    q = op(trunk.reshape(-1, *trunk.shape[-2:]), taus, *(w.reshape(-1, *w.shape[1 + len(lead):]) for w in weights))
    return q.view(K, *lead, B, N)


# --------------------------------------------------------------------------
# the same kernels as an opaque operator for torch.compile
# --------------------------------------------------------------------------
# Under torch.compile the public op calls the fused kernels as the custom operator
# ramac::iqn_quantiles, which Inductor leaves whole (and a CUDA graph captures), where the kernels
# win eagerly (a bf16 trunk, B x K <= AUTO_ROWS); elsewhere it traces the reference, which Inductor
# fuses with its neighbours. On an H200, one seed at batch 256 on graph-compile-bf16: 713 -> 761
# updates/s with the operator alone, 737 -> 857 with it and Inductor's combo kernels together
# (bench/results/speed-ab-H200/, bench/results/qh-combo-H200/). RAMAC_IQN_UNDER_COMPILE=0 always
# traces the reference; =1 takes the operator for every shape and dtype the kernels take (to measure
# it against Inductor's code where the speed rule says no).
def under_compile() -> str:
    """The rule for torch.compile'd code (RAMAC_IQN_UNDER_COMPILE): "auto" (default: the operator
    where the eager speed rule takes the kernels, outside vmap: stacked seeds compiled with the
    operator, one call for all seeds by its vmap rule, are not yet timed against Inductor's code),
    "1" (always the operator) or "0" (never)."""
    mode = os.environ.get("RAMAC_IQN_UNDER_COMPILE", "auto")
    if mode not in ("auto", "0", "1"):
        raise ValueError(f"RAMAC_IQN_UNDER_COMPILE must be auto, 0 or 1, got {mode!r}")
    return mode


@torch.library.custom_op("ramac::iqn_quantiles", mutates_args=())
def _fused_op(trunk: torch.Tensor, taus: torch.Tensor, cos_w: torch.Tensor, cos_b: torch.Tensor,
              head_w: torch.Tensor, head_b: torch.Tensor, out_w: torch.Tensor, out_b: torch.Tensor) -> torch.Tensor:
    plan = _Plan(trunk, taus, cos_w, cos_b, head_w, head_b, out_w, out_b, None, None, None)
    q = plan.forward()
    return q if plan.stacked else q[0]


@_fused_op.register_fake
def _(trunk, taus, cos_w, cos_b, head_w, head_b, out_w, out_b):
    return trunk.new_empty((*trunk.shape[:-1], taus.shape[-1]), dtype=torch.float32)


@torch.library.custom_op("ramac::iqn_quantiles_backward", mutates_args=())
def _fused_backward_op(dq: torch.Tensor, trunk: torch.Tensor, taus: torch.Tensor, cos_w: torch.Tensor,
                       cos_b: torch.Tensor, head_w: torch.Tensor, head_b: torch.Tensor, out_w: torch.Tensor,
                       out_b: torch.Tensor, rows: bool, cos: bool, head: bool) -> list[torch.Tensor]:
    """The seven gradients (trunk, cos_w, cos_b, head_w, head_b, out_w, out_b); those of a part not
    asked for (rows: trunk, cos: the cos layer, head: the head and output weights) are left empty."""
    plan = _Plan(trunk, taus, cos_w, cos_b, head_w, head_b, out_w, out_b, None, None, None)
    grads = plan.gradients(dq, rows, head, cos=cos)
    # contiguous, as the fake says (Inductor checks the strides of what an opaque operator returns);
    # a custom operator returns no None
    return [t.new_empty(t.shape) if g is None else g.contiguous()
            for g, t in zip(grads, (trunk, cos_w, cos_b, head_w, head_b, out_w, out_b))]


@_fused_backward_op.register_fake
def _(dq, trunk, taus, cos_w, cos_b, head_w, head_b, out_w, out_b, rows, cos, head):
    return [t.new_empty(t.shape) for t in (trunk, cos_w, cos_b, head_w, head_b, out_w, out_b)]


def _fused_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _fused_grad(ctx, dq):
    trunk, taus, *weights = ctx.saved_tensors
    need = ctx.needs_input_grad
    rows, cos, head = need[0], need[2] or need[3], any(need[i] for i in (4, 5, 6))
    g = _fused_backward_op(dq, trunk, taus, *weights, rows, cos, head)
    return (g[0] if need[0] else None, None, *(g[i - 1] if need[i] else None for i in range(2, 8)))


_fused_op.register_autograd(_fused_grad, setup_context=_fused_setup)


def _fused_vmap(info, in_dims, *tensors):
    """Seeds stacked (torch.func.vmap): one call of the operator for every seed's critics."""
    return _critics_folded(_fused_op, info.batch_size, in_dims, *tensors), 0


_fused_op.register_vmap(_fused_vmap)


def iqn_quantiles(trunk, taus, cos_w, cos_b, head_w, head_b, out_w, out_b):
    """Quantiles q (B, K) (or (C, B, K) stacked) of IQN critics from their trunk output and fractions.

    Triton on CUDA tensors where it was measured faster (a bf16 trunk, B x K <= AUTO_ROWS), the
    reference op otherwise; under torch.compile the same rule picks between the custom operator
    ramac::iqn_quantiles (the kernels) and the reference (for Inductor to fuse), unless
    RAMAC_IQN_UNDER_COMPILE says "0" (always the reference) or "1" (the operator for every shape and
    dtype the kernels take, to measure it against Inductor's code). Arguments as nn.Linear holds them:
    trunk (B, emb), taus (B, K) or (K,), cos_w (emb, n_cos), cos_b (emb,), head_w (hidden, emb),
    head_b (hidden,), out_w (1, hidden), out_b (1,); each with a leading C when stacked.
    """
    tensors = (trunk, taus, cos_w, cos_b, head_w, head_b, out_w, out_b)
    fits = trunk.dim() in (2, 3) and _fits(trunk, taus, cos_w) and trunk.shape[-2] > 0 and taus.shape[-1] > 0
    wins = trunk.dtype == torch.bfloat16 and trunk.shape[-2] * taus.shape[-1] <= AUTO_ROWS
    if torch.compiler.is_compiling():
        mode = under_compile()
        if (fits and (mode == "1" or mode == "auto" and wins and not is_vmapped(*tensors)) and HAS_TRITON
                and get_backend() != "reference"
                and all(t.is_cuda or _INTERPRET for t in tensors)):
            _check_args(*tensors)
            return _fused_op(trunk, taus.detach(), cos_w, cos_b, head_w, head_b, out_w, out_b)
        return iqn_quantiles_ref(*tensors)
    if fits and wins and use_triton(*tensors, vmap_rule=True):
        return iqn_quantiles_triton(*tensors)
    return iqn_quantiles_ref(*tensors)
