"""The whole-chain sampler for a few states, spread over several programs (issue "Native sampler",
item 4).

At batch 1 the one-block chain kernel (`sampler._chain_kernel`) runs on one SM: on an H200 it took
96 us at batch 1 and 117 us at batch 4,096, the same latency. Here the hidden layer between W2 and
W3 is split over NPROG programs: program p owns hidden units [p HC, (p + 1) HC) of layer 2
(HC = H / NPROG), holds its slices W2[:, p] and W3[p, :] and the small layers (W_x, W_out) on chip
for all T steps, and per step

    h1 = mish(x W_x + s W_s + c_t)                    every program (s W_s once, before the steps)
    partial_p = mish(h1 W2[:, p] + b2[p]) W3[p, :]    its share of layer 3's input
    -- grid barrier (_jit._grid_barrier); partials through a double-buffered global scratch --
    h3 = mish(sum_p partial_p + b3); eps = h3 W_out + b_out; x = posterior step   every program

Every program sums the partials in the same order, so all hold the same x; program 0 writes the
actions. Two kernels:

  "tile"  _chain_split_kernel: up to 16 states as one 16-row tile, every product a tensor-core
          tl.dot (as the one-block kernel). Measured on an H200 (T = 5, H = 256, bf16, graphed;
          bench/results/native-H200/split/): 72 us at batch 1 against the one-block kernel's 96
          and graphed torch.compile's 89, but 88-112 us at batch 16 against 72; sample_chain takes
          it only when asked for (split="tile").
  "gemv"  _chain_split_gemv_kernel: one state, every product a CUDA-core dot product (tl.sum of
          a weight tile times a vector): the tile kernel computes 16 rows (mish included) where
          one is real. Measured on an H200 (bench/results/native-H200/split-2/, graphed, batch 1):
          32.6 us with fp32 weights (8 programs, 8 warps), 44-57 us with bf16 weights, against the
          tile kernel's 69-70 and graphed torch.compile's 86; its arithmetic is fp32 whatever the
          precision asked for, so sample_chain hands it fp32 weights and takes it for one state.

The math is sampler.sample_chain_ref's (the parity tests compare against it and against the
one-block kernel); the sum over p differs from the one-block kernel's accumulation order only by
float rounding. The programs must all be resident at once (a grid of NPROG <= 16 programs, on a
GPU of more SMs, with no other launch of a split kernel in flight: one scratch pair per device, so
split launches on concurrent streams, or concurrent replays of graphs holding them, are not
allowed; the launch is not cooperative, so the driver does not check residency). On an H200 a program's
slices must leave room in shared memory for the tile kernel's operand layouts: HC = 256 (one
program at H = 256) failed there for want of it, HC <= 64 runs at every precision.

Under TRITON_INTERPRET=1 programs run one after another, so a spinning barrier would wait
forever: interpreted launches use one program (the same code, the barrier passing at once).
"""

from __future__ import annotations

import os

import torch

from ._dispatch import HAS_TRITON, sm_count

SPLIT_MAX_BATCH = 16  # the tile kernel's one row block; larger batches take the one-block kernel
SPLIT_AUTO_MAX_BATCH = 1  # sample_chain's choice: one state, the GEMV kernel (measured faster than the rest)
SPLIT_KINDS = ("tile", "gemv")
SPLIT_NUM_WARPS = 8  # measured at batch 1 on an H200: 69 us with 8 warps, 73 with 4 (8 programs)
SPLIT_MAX_HIDDEN = 256  # the widest denoiser sample_chain splits (split_fits)
# The GEMV kernel on an H200 (batch 1, H = 256, graphed): with bf16 weights its best launch was 16
# programs x 4 warps, 44.0 us (56.7 at 16 x 8, 57.5 at 8 x 8; bench/results/native-H200/split-2/
# split.txt); sample_chain (and the native library) hand it fp32 weights instead and launch it at
# default_programs x SPLIT_NUM_WARPS (8 x 8: 32.6 us, the only fp32-weight launch measured).


def split_enabled() -> bool:
    """Whether one state takes the split GEMV kernel (RAMAC_SPLIT_SAMPLER=0 turns it off)."""
    return os.environ.get("RAMAC_SPLIT_SAMPLER", "1") != "0"


def default_programs(hidden: int) -> int:
    """Programs sharing the hidden layer: 32 hidden units each, at most 16 programs, at least one."""
    return max(1, min(16, hidden // 32))


if HAS_TRITON:
    import triton
    import triton.language as tl

    from ._jit import _barrier_generation, _chain_noise, _dot, _grid_barrier, _mish, _posterior_step

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
        x = _chain_noise(noise_ptr, seed_ptr, T * B * A + noise_offs, x_ok, HAS_NOISE)
        part_offs = rows[:, None] * H + hk[None, :]
        part_mask = row_ok[:, None]
        gen0 = _barrier_generation(bar_ptr)
        for i in range(T):
            t = T - 1 - i
            c_t = tl.load(c_time_ptr + t * H + hk)
            # the step's noise first: independent of the chain, its Philox rounds overlap the products
            z = _chain_noise(noise_ptr, seed_ptr, t * B * A + noise_offs, x_ok, HAS_NOISE)
            h1 = _mish(_dot(x.to(dot_t), w_x, s_part, DOT_PRECISION, UPCAST) + c_t[None, :]).to(dot_t)
            h2 = _mish(_dot(h1, w2, None, DOT_PRECISION, UPCAST) + b2[None, :]).to(dot_t)  # (BM, HC)
            slots = part_ptr + (i % 2) * NPROG * BM * H  # this step's NPROG partials
            tl.store(slots + pid * BM * H + part_offs, _dot(h2, w3, None, DOT_PRECISION, UPCAST), mask=part_mask)
            _grid_barrier(bar_ptr, NPROG, gen0 + i)
            acc = tl.zeros([BM, H], dtype=tl.float32)
            for p in range(NPROG):  # the same order in every program: all compute the same x
                acc += tl.load(slots + p * BM * H + part_offs, mask=part_mask, other=0.0, cache_modifier=".cg")
            h3 = _mish(acc + b3[None, :]).to(dot_t)
            eps = _dot(h3, w_out, None, DOT_PRECISION, UPCAST) + b_out[None, :]
            x = _posterior_step(x, eps, z, coef_ptr, t, max_action)

        x = tl.minimum(tl.maximum(x, -max_action), max_action)
        if pid == 0:
            tl.store(out_ptr + noise_offs, x, mask=x_ok)

    @triton.jit
    def _as_dot(v, dot_t: tl.constexpr):
        # v rounded to the dtype the tile kernels feed their dots (bf16), kept in fp32 for the products
        return v.to(dot_t).to(tl.float32)

    @triton.jit
    def _chain_split_gemv_kernel(
        state_ptr, noise_ptr, out_ptr,  # (1, S) state; (T + 1, 1, A) fp32 noise if HAS_NOISE; (1, A) fp32 out
        w_x_ptr, w_s_ptr, c_time_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr, w_out_ptr, b_out_ptr, coef_ptr,  # packed
        seed_ptr, part_ptr, bar_ptr,  # as _chain_split_kernel's (the partials (2, NPROG, H))
        S, A, T, max_action,
        H: tl.constexpr, A_P: tl.constexpr, S_P: tl.constexpr, HC: tl.constexpr, NPROG: tl.constexpr,
        HAS_NOISE: tl.constexpr,
    ):
        # One state, every product a dot product on the CUDA cores in fp32 (weights as stored,
        # activations rounded as the tile kernels round their dot operands). Each weight tile is
        # oriented so that a product's output vector is the next product's input along the same
        # tile axis: x (axis 0) -> h1 (axis 1) -> h2 (axis 0) -> partial, h3 (axis 1) -> eps (axis 0).
        pid = tl.program_id(0)
        ka = tl.arange(0, A_P)
        ks = tl.arange(0, S_P)
        hk = tl.arange(0, H)
        hc = pid * HC + tl.arange(0, HC)
        a_ok = ka < A
        dot_t = w2_ptr.dtype.element_ty

        w_x = tl.load(w_x_ptr + ka[:, None] * H + hk[None, :])  # (A_P, H): sum over axis 0
        w2 = tl.load(w2_ptr + hk[None, :] * H + hc[:, None])  # (HC, H) = W2[hc, :]: sum over axis 1
        b2 = tl.load(b2_ptr + hc)
        w3 = tl.load(w3_ptr + hc[:, None] * H + hk[None, :])  # (HC, H) = W3^T[hc, :]: sum over axis 0
        b3 = tl.load(b3_ptr + hk)
        w_out = tl.load(w_out_ptr + hk[None, :] * A_P + ka[:, None])  # (A_P, H) = W4 padded: sum over axis 1
        b_out = tl.load(b_out_ptr + ka)
        s = _as_dot(tl.load(state_ptr + ks, mask=ks < S, other=0.0), dot_t)
        w_s = tl.load(w_s_ptr + ks[:, None] * H + hk[None, :]).to(tl.float32)
        s_part = tl.sum(w_s * s[:, None], axis=0)  # (H,)

        x = _chain_noise(noise_ptr, seed_ptr, T * A + ka, a_ok, HAS_NOISE)
        gen0 = _barrier_generation(bar_ptr)
        for i in range(T):
            t = T - 1 - i
            z = _chain_noise(noise_ptr, seed_ptr, t * A + ka, a_ok, HAS_NOISE)  # first: overlaps the products
            a1 = tl.sum(w_x.to(tl.float32) * _as_dot(x, dot_t)[:, None], axis=0) + s_part
            h1 = _as_dot(_mish(a1 + tl.load(c_time_ptr + t * H + hk)), dot_t)
            h2 = _as_dot(_mish(tl.sum(w2.to(tl.float32) * h1[None, :], axis=1) + b2), dot_t)  # (HC,)
            slots = part_ptr + (i % 2) * NPROG * H
            tl.store(slots + pid * H + hk, tl.sum(w3.to(tl.float32) * h2[:, None], axis=0))
            _grid_barrier(bar_ptr, NPROG, gen0 + i)
            acc = tl.zeros([H], dtype=tl.float32)
            for p in range(NPROG):  # the same order in every program: all compute the same x
                acc += tl.load(slots + p * H + hk, cache_modifier=".cg")
            h3 = _as_dot(_mish(acc + b3), dot_t)
            eps = tl.sum(w_out.to(tl.float32) * h3[None, :], axis=1) + b_out  # (A_P,)
            x = _posterior_step(x, eps, z, coef_ptr, t, max_action)

        x = tl.minimum(tl.maximum(x, -max_action), max_action)
        if pid == 0:
            tl.store(out_ptr + ka, x, mask=a_ok)


_SCRATCH: dict = {}  # device -> (partials, barrier)
_RETIRED: list = []  # outgrown partials buffers, kept: a captured CUDA graph may still write into them


def _scratch(device: torch.device, hidden: int):
    """The partials buffer and barrier state of split launches on this device, sized for the most
    programs a hidden width allows (H / 16). Made eagerly: a barrier first allocated inside a CUDA
    graph capture would be zeroed only when the graph replays, so a launch under capture with none
    (or too small a one) made before is refused."""
    need = 2 * (hidden // 16) * SPLIT_MAX_BATCH * hidden
    have = _SCRATCH.get(device)
    if have is None or have[0].numel() < need:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("the split chain sampler's scratch is made outside CUDA graph capture: run the "
                               f"sampler once on this device (hidden width {hidden}) before capturing it")
        if have is not None:
            _RETIRED.append(have[0])
        barrier = have[1] if have is not None else torch.zeros(2, device=device, dtype=torch.int32)
        have = _SCRATCH[device] = (torch.empty(need, device=device, dtype=torch.float32), barrier)
    return have


def split_fits(hidden: int) -> bool:
    """Whether sample_chain may pick the split kernel at this hidden width: measured at H = 256
    (32 hidden units per program); wider layers need more shared memory per program than an H200
    has at 16 programs (H = 512 in tf32: 264 KB), so they keep the one-block kernel."""
    return hidden <= SPLIT_MAX_HIDDEN


def launch_split(p, dot_weights, state, noise, seed, out, precision: str, kind: str = "tile",
                 programs: int | None = None, num_warps: int | None = None) -> None:
    """One launch of a split kernel (kind "tile": B <= SPLIT_MAX_BATCH states; "gemv": one state;
    sampler.sample_chain_triton checks the other arguments). dot_weights: (w_x, w_s, w2, w3, w_out)
    in the dot dtype; noise None: Philox noise from seed (a 1-element int64 device tensor);
    programs: NPROG, a power of two dividing the hidden width into slices of at least 16 (default:
    default_programs)."""
    B, H = state.shape[0], p.hidden
    if kind not in SPLIT_KINDS:
        raise ValueError(f"split must be one of {SPLIT_KINDS} (or None / False), got {kind!r}")
    most = 1 if kind == "gemv" else SPLIT_MAX_BATCH
    if B > most:
        raise ValueError(f"the split chain kernel ({kind}) takes at most {most} states, got {B}")
    nprog = programs or default_programs(H)
    if nprog < 1 or nprog & (nprog - 1) or H % nprog or H // nprog < 16:
        raise ValueError(f"programs must be a power of two that leaves >= 16 of the {H} hidden units to each, "
                         f"got {nprog}")
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    if interpreted:
        nprog = 1
    elif nprog > (sms := sm_count(state.device)):
        raise ValueError(f"{nprog} programs cannot all be resident on this GPU's {sms} SMs")
    parts, barrier = _scratch(state.device, H)
    w_x, w_s, w2, w3, w_out = (w.contiguous() for w in dot_weights)
    c_time, b2, b3, b_out, coefs = (getattr(p, n).float().contiguous()
                                    for n in ("c_time", "b2", "b3", "b_out", "coefs"))
    has_noise = noise is not None
    pointers = (state.contiguous(), noise.float().contiguous() if has_noise else out, out,
                w_x, w_s, c_time, w2, b2, w3, b3, w_out, b_out, coefs, out if has_noise else seed, parts, barrier)
    shape = dict(H=H, A_P=w_x.shape[0], S_P=w_s.shape[0], HC=H // nprog, NPROG=nprog, HAS_NOISE=has_noise,
                 num_warps=num_warps or SPLIT_NUM_WARPS, num_stages=1)
    sizes = (p.state_dim, p.action_dim, c_time.shape[0], p.max_action)
    if kind == "gemv":
        _chain_split_gemv_kernel[(nprog,)](*pointers, *sizes, **shape)
    else:
        _chain_split_kernel[(nprog,)](*pointers, B, *sizes, BM=SPLIT_MAX_BATCH, UPCAST=interpreted,
                                      DOT_PRECISION="ieee" if precision == "fp32" else "tf32", **shape)
