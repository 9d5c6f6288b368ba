"""Triton helpers the kernels share (jit functions: Mish, the schedule constants of a step, the
tensor-core dot in the dtype each precision names, and a grid-wide barrier for kernels whose
programs exchange partial results). Nothing here launches a kernel."""

from __future__ import annotations

from ._dispatch import HAS_TRITON

if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _mish(x):
        # mish(x) = x tanh(softplus(x)) = x n / (n + 2), n = e^x (e^x + 2); = x for large x
        e = tl.exp(tl.minimum(x, 20.0))
        n = e * (e + 2.0)
        return tl.where(x > 20.0, x, x * n / (n + 2.0))

    @triton.jit
    def _step_coefs(coef_ptr, t, STRIDE: tl.constexpr):
        # step t's (recip, recipm1, mean1, mean2, sigma): the first five of its STRIDE schedule constants
        row = coef_ptr + t * STRIDE
        return tl.load(row), tl.load(row + 1), tl.load(row + 2), tl.load(row + 3), tl.load(row + 4)

    @triton.jit
    def _round_tf32(x):
        # fp32 -> the nearest tf32 (10 mantissa bits, ties away from zero), still stored as fp32:
        # what cuBLAS's cvt.rna.tf32.f32 does. tl.dot's tf32 inputs are otherwise truncated (the
        # low 13 bits dropped), a biased error that grows through layers: on an H200 the student
        # kernel's tf32 error reached 2.8e-2 where torch's tf32 matmuls erred < 5e-3
        # (triton-lang/triton#4574)
        bits = x.to(tl.int32, bitcast=True)
        return ((bits + 4096) & -8192).to(tl.float32, bitcast=True)

    @triton.jit
    def _dot(a, b, acc, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
        # UPCAST: the Triton interpreter mishandles bf16 tl.dot, so interpreted runs
        # multiply the (bf16-rounded) operands in fp32 instead
        if UPCAST:
            return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
        if PRECISION == "tf32" and a.dtype == tl.float32:  # fp32 operands (tf32 dots): rounded to
            # nearest, as cuBLAS does; bf16 operands pass as they are (the bf16 path's PRECISION is
            # "tf32" too, which tl.dot ignores for 16-bit inputs)
            return tl.dot(_round_tf32(a), _round_tf32(b), acc, input_precision=PRECISION)
        return tl.dot(a, b, acc, input_precision=PRECISION)

    @triton.jit
    def _barrier_generation(bar_ptr):
        # _grid_barrier's generation as a launch starts: the launch before advanced it at its last
        # barrier, and nothing moves it again until every program of this launch has arrived once
        return tl.atomic_add(bar_ptr + 1, 0, sem="acquire", scope="gpu")

    @triton.jit
    def _grid_barrier(bar_ptr, NPROG: tl.constexpr, gen):
        # Every one of the grid's NPROG programs waits here until all have arrived (they must all be
        # resident at once: a grid of at most a few dozen programs on an otherwise idle stream).
        # bar_ptr: two int32 in global memory, [0] the arrivals (back to 0 after each barrier), [1] a
        # generation the last arrival advances, the others spinning until it moves; nothing needs
        # resetting between launches. gen: the generation before this barrier, counted by the caller
        # (_barrier_generation at the start plus the barriers passed since), so that a barrier costs
        # one round trip to L2 fewer than reading it here (5 per call of the T = 5 split sampler).
        # Scalar atomics run on one thread of the program, so each program counts once; the thread
        # barriers before and after order the program's other threads' global stores and loads
        # around that thread's release and acquire.
        tl.debug_barrier()
        arrived = tl.atomic_add(bar_ptr, 1, sem="acq_rel", scope="gpu")
        if arrived == NPROG - 1:
            tl.atomic_xchg(bar_ptr, 0, sem="relaxed", scope="gpu")
            tl.atomic_add(bar_ptr + 1, 1, sem="release", scope="gpu")
        else:
            while tl.atomic_add(bar_ptr + 1, 0, sem="acquire", scope="gpu") == gen:
                pass
        tl.debug_barrier()

    @triton.jit
    def _seed_chain_ptrs(sid, state_ptr, noise_ptr, out_ptr, w_x_ptr, w_s_ptr, c_time_ptr, w2_ptr, b2_ptr, w3_ptr,
                         b3_ptr, w_out_ptr, b_out_ptr, coef_ptr, B, S, A, T,
                         H: tl.constexpr, A_P: tl.constexpr, S_P: tl.constexpr, NCOEF: tl.constexpr):
        # seed sid's slices of the chain kernels' common tensors, each stacked contiguous along a
        # leading seed dimension: states (B, S), noise (T + 1, B, A), actions (B, A), the packed
        # denoiser (w_x (A_P, H), w_s (S_P, H), c_time (T, H), W2^T, b2, W3^T, b3, W_out (H, A_P),
        # b_out (A_P,)) and the schedule (T, NCOEF)
        return (state_ptr + sid * B * S, noise_ptr + sid * (T + 1) * B * A, out_ptr + sid * B * A,
                w_x_ptr + sid * A_P * H, w_s_ptr + sid * S_P * H, c_time_ptr + sid * T * H,
                w2_ptr + sid * H * H, b2_ptr + sid * H, w3_ptr + sid * H * H, b3_ptr + sid * H,
                w_out_ptr + sid * H * A_P, b_out_ptr + sid * A_P, coef_ptr + sid * T * NCOEF)

    @triton.jit
    def _chain_noise(noise_ptr, seed_ptr, offs, mask, HAS_NOISE: tl.constexpr):
        # the chain samplers' noise at offsets offs of the (T + 1, B, A) layout: read from noise_ptr,
        # or Philox from the device seed at the same offsets (so a given seed gives the same noise in
        # every sampler kernel); 0 where mask is false
        # (if/else, not an early return: the compiler still types the statements after a return
        # under a constexpr if, and tl.randn then fails on the float placeholder seed_ptr)
        if HAS_NOISE:
            z = tl.load(noise_ptr + offs, mask=mask, other=0.0)
        else:
            z = tl.where(mask, tl.randn(tl.load(seed_ptr), offs), 0.0)
        return z

    @triton.jit
    def _posterior_step(x, eps, z, coef_ptr, t, max_action):
        # x_{t-1} from x_t, the predicted noise eps and the step's noise z (denoise.py's step: x0
        # predicted and clipped, then the posterior mean plus sigma z)
        recip, recipm1, mean1, mean2, sigma = _step_coefs(coef_ptr, t, 8)
        x0 = tl.minimum(tl.maximum(recip * x - recipm1 * eps, -max_action), max_action)
        return mean1 * x0 + mean2 * x + sigma * z
