"""The whole-chain sampler for a few states, spread over several programs (issue "Native sampler",
item 4).

At batch 1 the one-block chain kernel (`sampler._chain_kernel`) is bound by one SM streaming the
denoiser's weights from L2 for every step: on an H200 it took 96 us at batch 1 and 117 us at
batch 4,096, the same latency. Here the hidden layer between W2 and W3 is split over NPROG
programs: program p owns hidden units [p HC, (p + 1) HC) of layer 2 (HC = H / NPROG), holds its
slices W2[:, p] and W3[p, :] and the small layers (W_x, W_out) on chip for all T steps, and per
step

    h1 = mish(x W_x + s W_s + c_t)                    every program (s W_s once, before the steps)
    partial_p = mish(h1 W2[:, p] + b2[p]) W3[p, :]    its share of layer 3's input
    -- grid barrier (_jit._grid_barrier); partials through a double-buffered global scratch --
    h3 = mish(sum_p partial_p + b3); eps = h3 W_out + b_out; x = posterior step   every program

Every program sums the partials in the same order, so all hold the same x; program 0 writes the
actions. The math is sampler.sample_chain_ref's (the parity tests compare against it and against
the one-block kernel); the sum over p differs from the one-block kernel's accumulation order only
by float rounding. The programs must all be resident at once (a grid of NPROG <= 16 programs), and
one scratch pair serves one stream at a time (cached per device and stream).

Under TRITON_INTERPRET=1 programs run one after another, so a spinning barrier would wait
forever: interpreted launches use one program (the same code, the barrier passing at once).
"""

from __future__ import annotations

import os

import torch

from ._dispatch import HAS_TRITON

SPLIT_MAX_BATCH = 16  # one row block of 16 states; larger batches take the one-block kernel
SPLIT_NUM_WARPS = 4


def split_enabled() -> bool:
    """Whether small batches take this kernel (RAMAC_SPLIT_SAMPLER=0 turns it off)."""
    return os.environ.get("RAMAC_SPLIT_SAMPLER", "1") != "0"


def default_programs(hidden: int) -> int:
    """Programs sharing the hidden layer: 32 hidden units each, at most 16 programs, at least one."""
    return max(1, min(16, hidden // 32))


if HAS_TRITON:
    import triton
    import triton.language as tl

    from ._jit import _dot, _grid_barrier, _mish, _step_coefs

    @triton.jit
    def _chain_split_kernel(
        state_ptr, noise_ptr, out_ptr,  # (B, S) states; (T + 1, B, A) fp32 noise if HAS_NOISE; (B, A) fp32 out
        w_x_ptr, w_s_ptr, c_time_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr, w_out_ptr, b_out_ptr, coef_ptr,  # packed
        seed_ptr,  # (1,) int64 Philox seed (read only if not HAS_NOISE)
        part_ptr,  # (2, NPROG, BM, H) fp32 scratch: the partial sums of layer 3's input, by step parity
        bar_ptr,  # (2,) int32 barrier state (zeros when first allocated)
        B, S, A, T, max_action,
        H: tl.constexpr, A_P: tl.constexpr, S_P: tl.constexpr, BM: tl.constexpr, HC: tl.constexpr,
        NPROG: tl.constexpr, HAS_NOISE: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    ):
        pid = tl.program_id(0)
        rows = tl.arange(0, BM)
        row_ok = rows < B
        a_cols = tl.arange(0, A_P)
        s_cols = tl.arange(0, S_P)
        hk = tl.arange(0, H)
        hc = pid * HC + tl.arange(0, HC)
        x_ok = row_ok[:, None] & (a_cols < A)[None, :]
        dot_t = w2_ptr.dtype.element_ty

        # on chip for all T steps: this program's slices of layers 2 and 3, layer 1's x part, the output layer
        w2 = tl.load(w2_ptr + hk[:, None] * H + hc[None, :])  # (H, HC)
        b2 = tl.load(b2_ptr + hc)
        w3 = tl.load(w3_ptr + hc[:, None] * H + hk[None, :])  # (HC, H)
        b3 = tl.load(b3_ptr + hk)
        w_x = tl.load(w_x_ptr + a_cols[:, None] * H + hk[None, :])  # (A_P, H)
        w_out = tl.load(w_out_ptr + hk[:, None] * A_P + a_cols[None, :])  # (H, A_P)
        b_out = tl.load(b_out_ptr + a_cols)
        s_ok = row_ok[:, None] & (s_cols < S)[None, :]
        s = tl.load(state_ptr + rows[:, None] * S + s_cols[None, :], mask=s_ok, other=0.0).to(dot_t)
        s_part = _dot(s, tl.load(w_s_ptr + s_cols[:, None] * H + hk[None, :]), None, DOT_PRECISION, UPCAST)

        noise_offs = rows[:, None] * A + a_cols[None, :]
        if HAS_NOISE:
            x = tl.load(noise_ptr + T * B * A + noise_offs, mask=x_ok, other=0.0)
        else:
            seed = tl.load(seed_ptr)
            x = tl.where(x_ok, tl.randn(seed, T * B * A + noise_offs), 0.0)
        part_offs = rows[:, None] * H + hk[None, :]
        part_mask = row_ok[:, None]
        for i in range(T):
            t = T - 1 - i
            c_t = tl.load(c_time_ptr + t * H + hk)
            h1 = _mish(_dot(x.to(dot_t), w_x, s_part, DOT_PRECISION, UPCAST) + c_t[None, :]).to(dot_t)
            h2 = _mish(_dot(h1, w2, None, DOT_PRECISION, UPCAST) + b2[None, :]).to(dot_t)  # (BM, HC)
            slots = part_ptr + (i % 2) * NPROG * BM * H  # this step's NPROG partials
            tl.store(slots + pid * BM * H + part_offs, _dot(h2, w3, None, DOT_PRECISION, UPCAST), mask=part_mask)
            _grid_barrier(bar_ptr, NPROG)
            acc = tl.zeros([BM, H], dtype=tl.float32)
            for p in range(NPROG):  # the same order in every program: all compute the same x
                acc += tl.load(slots + p * BM * H + part_offs, mask=part_mask, other=0.0, cache_modifier=".cg")
            h3 = _mish(acc + b3[None, :]).to(dot_t)
            eps = _dot(h3, w_out, None, DOT_PRECISION, UPCAST) + b_out[None, :]

            recip, recipm1, mean1, mean2, sigma = _step_coefs(coef_ptr, t, 8)
            x0 = tl.minimum(tl.maximum(recip * x - recipm1 * eps, -max_action), max_action)
            if HAS_NOISE:
                z = tl.load(noise_ptr + t * B * A + noise_offs, mask=x_ok, other=0.0)
            else:
                z = tl.where(x_ok, tl.randn(seed, t * B * A + noise_offs), 0.0)
            x = mean1 * x0 + mean2 * x + sigma * z

        x = tl.minimum(tl.maximum(x, -max_action), max_action)
        if pid == 0:
            tl.store(out_ptr + noise_offs, x, mask=x_ok)


_SCRATCH: dict = {}  # (device, stream) -> (partials, barrier)


def _scratch(device: torch.device, programs: int, hidden: int):
    """The partials buffer and barrier state of launches on this device and its current stream."""
    key = (device, torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0)
    need = 2 * programs * SPLIT_MAX_BATCH * hidden
    have = _SCRATCH.get(key)
    if have is None or have[0].numel() < need:
        barrier = have[1] if have is not None else torch.zeros(2, device=device, dtype=torch.int32)
        have = _SCRATCH[key] = (torch.empty(need, device=device, dtype=torch.float32), barrier)
    return have


def launch_split(p, dot_weights, state, noise, seed, out, precision: str, programs: int | None = None,
                 num_warps: int | None = None) -> None:
    """One launch of _chain_split_kernel for B <= SPLIT_MAX_BATCH states (sampler.sample_chain_triton
    checks the arguments). dot_weights: (w_x, w_s, w2, w3, w_out) in the dot dtype; noise None:
    Philox noise from seed (a 1-element int64 device tensor); programs: NPROG, a power of two
    dividing the hidden width into slices of at least 16 (default: default_programs)."""
    B, H = state.shape[0], p.hidden
    if B > SPLIT_MAX_BATCH:
        raise ValueError(f"the split chain kernel takes at most {SPLIT_MAX_BATCH} states, got {B}")
    nprog = programs or default_programs(H)
    if nprog < 1 or nprog & (nprog - 1) or H % nprog or H // nprog < 16:
        raise ValueError(f"programs must be a power of two that leaves >= 16 of the {H} hidden units to each, "
                         f"got {nprog}")
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    if interpreted:
        nprog = 1
    parts, barrier = _scratch(state.device, nprog, H)
    w_x, w_s, w2, w3, w_out = (w.contiguous() for w in dot_weights)
    c_time, b2, b3, b_out, coefs = (getattr(p, n).float().contiguous()
                                    for n in ("c_time", "b2", "b3", "b_out", "coefs"))
    has_noise = noise is not None
    _chain_split_kernel[(nprog,)](
        state.contiguous(), noise.float().contiguous() if has_noise else out, out,
        w_x, w_s, c_time, w2, b2, w3, b3, w_out, b_out, coefs, out if has_noise else seed, parts, barrier,
        B, p.state_dim, p.action_dim, c_time.shape[0], p.max_action,
        H=H, A_P=w_x.shape[0], S_P=w_s.shape[0], BM=SPLIT_MAX_BATCH, HC=H // nprog, NPROG=nprog,
        HAS_NOISE=has_noise, DOT_PRECISION="ieee" if precision == "fp32" else "tf32", UPCAST=interpreted,
        num_warps=num_warps or SPLIT_NUM_WARPS, num_stages=1,
    )
