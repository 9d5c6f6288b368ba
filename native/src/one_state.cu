// The whole denoising chain for ONE state in one thread block (the library's `-DRAMAC_ONE_STATE=cta`
// variant, issue 17 item 4): the chain native/FORMAT.md describes, T steps, every product a dot
// product on the CUDA cores in fp32 with the two hidden H x H weight matrices held on chip in fp16
// for the whole chain -- W2 in shared memory (128 KB at H = 256), W3 mostly in registers (each thread
// 11 of its 16 x 8 slice, the rest of W3 in shared memory) -- so that after one read of the weights
// from L2 a step costs only on-chip work and four block barriers, where the split Triton kernels
// meet at a grid barrier through L2 every step.
//
// Layout (H = 256, 512 threads = 16 warps): for a hidden layer, warp w owns outputs
// [16 w, 16 w + 16) and lane l the inputs [8 l, 8 l + 8) of each; in two passes of 8 outputs, a
// lane's 8 partial sums are reduced over the warp by a butterfly that leaves output (l >> 2) of the
// pass in lanes 4 (l >> 2) to 4 (l >> 2) + 3.
// Layer 1 (x_t and the state) is one output per thread of the first H threads, with the state's
// part computed once for all steps; the output layer is one warp per action dimension.
//
// RAMAC_CTA_MMA=1 (the library's `-DRAMAC_ONE_STATE=mma`) computes the two hidden layers on the
// tensor cores instead: each warp's 16 outputs as 16 mma.sync.m16n8k16 (fp16 inputs, fp32
// accumulation) over the 16 k-tiles of the layer's input, in four independent chains; the weights
// come in the fragment order of the A operand (the library packs them so: a lane's 8 halves of
// k-tile kt are one 16-byte chunk, ((warp * 16 + kt) * 32 + lane)), W3's first W3_REGS k-tiles in
// registers and the rest in shared memory; the input vector is the B operand, every one of its 8
// columns the same vector (so every column of the product is the layer's output), kept in shared
// memory in fp16 in the B fragment's order, 8 bytes per lane and k-tile. Where the CUDA-core loop
// spends ~900 instructions a warp on a step, these take ~100.
//
// Numbers: fp16 weights (10-bit mantissa, the weights checked against fp16's range when the library
// loads them), fp32 activations, accumulation and everything else (RAMAC_CTA_MMA: the hidden
// layers' inputs rounded to fp16 for the tensor cores). Noise: read from a (T + 1, 1, A)
// buffer, or drawn from the device seed exactly as Triton's tl.randn(seed, offset) at the offsets
// of that layout (Philox 4x32-10, Box-Muller), so a seed gives the noise of the Triton kernels.
#include <cuda_fp16.h>
#include <cuda_pipeline.h>
#include <stdint.h>

#include "one_state_layout.h"

#ifndef RAMAC_H
#define RAMAC_H 256
#endif
#ifndef RAMAC_A_P
#define RAMAC_A_P 16
#endif
#ifndef RAMAC_S_P
#define RAMAC_S_P 32
#endif
#ifndef RAMAC_T_MAX
#define RAMAC_T_MAX 128
#endif
#ifndef RAMAC_CTA_MMA
#define RAMAC_CTA_MMA 0
#endif

namespace {

constexpr int H = RAMAC_H, A_P = RAMAC_A_P, S_P = RAMAC_S_P, T_MAX = RAMAC_T_MAX;
constexpr int THREADS = 512, WARPS = THREADS / 32;
constexpr int OUTS = H / WARPS;  // outputs per warp
constexpr int INS = H / 32;      // inputs per lane
constexpr int W3_REGS = 11;      // of a warp's 16 rows of W3, those a lane keeps in registers (the rest
                                 // in shared memory: all 16, 64 registers, spilled at 128 a thread)
constexpr int PASS = 8;          // outputs reduced together (two passes of the warp's 16: fewer live registers)
static_assert(H == 256, "the one-CTA chain kernel is written for H = 256 (16 outputs x 8 inputs per lane)");
constexpr int NCOEF = 8;         // schedule constants per step (the export's coefs columns)
// shared memory, bytes: W2 and W3's shared rows (fp16), w_x and w_out (fp32), two activation buffers,
// x_t, the noise and the schedule of T_MAX steps
// (native/gen_kernels.py computes the same number for the library's launch: cta_shared)
constexpr unsigned SHARED = 2 * H * H + 2 * WARPS * (OUTS - W3_REGS) * H +
                            4 * (2 * A_P * H + 2 * H + A_P + (T_MAX + 1) * A_P + T_MAX * NCOEF);
static_assert(A_P <= WARPS, "one warp per action dimension");
#ifdef RAMAC_EXPECT_SHARED  // what the library launches with (gen_kernels.py passes its own count)
static_assert(SHARED == RAMAC_EXPECT_SHARED, "gen_kernels.py's cta_shared() and this kernel's SHARED differ");
#endif
constexpr unsigned FULL = 0xffffffffu;

__device__ __forceinline__ float mish(float x) {  // x tanh(softplus(x)) = x n / (n + 2), n = e^x (e^x + 2)
  const float e = expf(fminf(x, 20.0f));
  const float n = e * (e + 2.0f);
  return x > 20.0f ? x : x * n / (n + 2.0f);
}

// Triton's tl.randn(seed, offset) (triton/language/random.py): Philox 4x32 with 10 rounds on the
// counter (offset, 0, 0, 0) and key (seed's low and high words), the first two words to uniforms,
// the first output of the Box-Muller pair
// (host and device: tests/test_native.py runs it on the CPU against the Triton interpreter's tl.randn)
__host__ __device__ __forceinline__ uint32_t umulhi(uint32_t a, uint32_t b) {
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);  // mul.hi.u32 on the device
}

__host__ __device__ __forceinline__ float uniform(uint32_t u) {
  int32_t i = static_cast<int32_t>(u);
  i = i < 0 ? ~i : i;
  return static_cast<float>(i) * 4.6566127342e-10f;
}

__host__ __device__ __noinline__ float triton_randn(uint64_t seed, uint32_t offset) {
  uint32_t c0 = offset, c1 = 0, c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
#pragma unroll
  for (int r = 0; r < 10; ++r) {
    const uint32_t a0 = c0, a2 = c2;
    c0 = umulhi(0xCD9E8D57u, a2) ^ c1 ^ k0;
    c2 = umulhi(0xD2511F53u, a0) ^ c3 ^ k1;
    c1 = 0xCD9E8D57u * a2;
    c3 = 0xD2511F53u * a0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  const float u1 = fmaxf(1.0e-7f, uniform(c0)), u2 = uniform(c1);
  return sqrtf(-2.0f * logf(u1)) * cosf(6.283185307179586f * u2);
}

#if !RAMAC_CTA_MMA
// one stage of the butterfly: a lane keeps the upper or lower half of the HALF * 2 values it still
// holds (by its bit BIT) and adds the partner's (lane ^ BIT) copy of that half
template <int HALF, int BIT>
__device__ __forceinline__ void butterfly(float (&v)[PASS], int lane) {
  const bool upper = lane & BIT;
#pragma unroll
  for (int i = 0; i < HALF; ++i) {
    const float send = upper ? v[i] : v[i + HALF];
    const float keep = upper ? v[i + HALF] : v[i];
    v[i] = keep + __shfl_xor_sync(FULL, send, BIT);
  }
}

// v[0..7]: this lane's partial sums of 8 outputs; returns output (lane >> 2)'s total over the warp
// (bits 4..2 of the lane pick the halves kept: 9 shuffles where 8 warp sums would take 40)
__device__ __forceinline__ float reduce_scatter8(float (&v)[PASS], int lane) {
  static_assert(PASS == 8, "written for 8 outputs per pass");
  butterfly<4, 16>(v, lane);
  butterfly<2, 8>(v, lane);
  butterfly<1, 4>(v, lane);
  const float s = v[0] + __shfl_xor_sync(FULL, v[0], 2);
  return s + __shfl_xor_sync(FULL, s, 1);
}

#endif

__device__ __forceinline__ void load_inputs(const float* h, int lane, float (&in)[INS]) {
  const float4* p = reinterpret_cast<const float4*>(h + lane * INS);
  const float4 a = p[0], b = p[1];
  in[0] = a.x; in[1] = a.y; in[2] = a.z; in[3] = a.w;
  in[4] = b.x; in[5] = b.y; in[6] = b.z; in[7] = b.w;
}

#if RAMAC_CTA_MMA
// ---- the tensor-core layers ----
constexpr int KT = H / 16;  // k-tiles of a hidden layer's input

using ramac_layout::b_slot;  // the input's B order (one_state_layout.h, with the weights' A order)

// d += A B for one k-tile: A a lane's 16-byte chunk of the weights' fragment, B its 8 bytes of the input
__device__ __forceinline__ void mma16816(float (&d)[4], uint4 a, uint2 b) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
               "{%0, %1, %2, %3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b.x), "r"(b.y));
}

// a warp's 16 outputs of a hidden layer (before bias and activation): rows g and g + 8 of its tile
// in (c[0], c[2]); chunk(kt) the lane's weight chunk of k-tile kt, x the input in the B order
template <typename Chunk>
__device__ __forceinline__ float2 layer_mma(Chunk chunk, const __half* x, int lane) {
  float acc[4][4] = {};  // four independent chains of four k-tiles: the tensor cores' latency overlapped
  const uint2* bx = reinterpret_cast<const uint2*>(x) + (lane & 3);
#pragma unroll
  for (int kt = 0; kt < KT; ++kt) mma16816(acc[kt & 3], chunk(kt), bx[kt * 4]);
  return make_float2((acc[0][0] + acc[1][0]) + (acc[2][0] + acc[3][0]),
                     (acc[0][2] + acc[1][2]) + (acc[2][2] + acc[3][2]));
}

#else
__device__ __forceinline__ float dot8(uint4 w, const float (&in)[INS]) {
  const __half2* p = reinterpret_cast<const __half2*>(&w);
  float s = 0.0f;
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const float2 f = __half22float2(p[q]);
    s = fmaf(f.x, in[2 * q], s);
    s = fmaf(f.y, in[2 * q + 1], s);
  }
  return s;
}
#endif

template <bool HAS_NOISE>
__device__ void chain(const float* __restrict__ state, const float* __restrict__ noise, float* __restrict__ out,
                      const __half* __restrict__ w2h, const __half* __restrict__ w3h,
                      const float* __restrict__ w_x, const float* __restrict__ w_s, const float* __restrict__ c_time,
                      const float* __restrict__ b2, const float* __restrict__ b3, const float* __restrict__ w_out,
                      const float* __restrict__ b_out, const float* __restrict__ coef, const int64_t* __restrict__ seed,
                      int S, int A, int T, float max_action) {
  extern __shared__ __align__(16) unsigned char smem[];
  __half* w2s = reinterpret_cast<__half*>(smem);           // (H, H) W2 as [output][input]
  __half* w3s = w2s + H * H;                                // (WARPS, 16 - W3_REGS, H) W3's other rows
  float* wxs = reinterpret_cast<float*>(w3s + WARPS * (OUTS - W3_REGS) * H);  // (A_P, H) layer 1's x_t weights
  float* wos = wxs + A_P * H;                               // (H, A_P) the output layer's weights
  float* ha = wos + H * A_P;                                // two (H,) activation buffers
  float* hb = ha + H;
#if RAMAC_CTA_MMA  // ha: the third layer's output; hb: the second and third layers' inputs, fp16 in the B order
  __half* xa = reinterpret_cast<__half*>(hb);
  __half* xb = xa + H;
#endif
  float* xs = hb + H;                                       // (A_P,) x_t
  float* zs = xs + A_P;                                     // (T + 1, A_P) noise
  float* cs = zs + (T_MAX + 1) * A_P;                       // (T, NCOEF) the schedule (16-byte aligned)
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  unsigned shared;
  asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(shared));
  if (shared < SHARED || T > T_MAX || T < 1 || A > A_P || blockDim.x != THREADS) {  // the launch's checks
    if (tid < A) out[tid] = __int_as_float(0x7fc00000);  // failed: NaN actions, never silently wrong ones
    return;
  }

  // Everything a step reads from memory comes on chip first, all requests in flight at once: each
  // thread's 16-byte chunks of W2, W3's shared rows, w_x, w_out and the schedule as asynchronous
  // copies into shared memory (no registers held, no thread waits on one before issuing the next:
  // one load after another took ~20 us of L2 round trips), its 11 rows of W3 into registers
#pragma unroll
  for (int j = 0; j < H * H / 8 / THREADS; ++j) {
    const int i = tid + j * THREADS;
    __pipeline_memcpy_async(reinterpret_cast<uint4*>(w2s) + i, reinterpret_cast<const uint4*>(w2h) + i, 16);
  }
  constexpr int W3_SHARED_CHUNKS = WARPS * (OUTS - W3_REGS) * H / 8;  // row r of warp w: W3 row 16 w + W3_REGS + r
#pragma unroll
  for (int j = 0; j < (W3_SHARED_CHUNKS + THREADS - 1) / THREADS; ++j) {
    const int i = tid + j * THREADS;
    if (i < W3_SHARED_CHUNKS) {
#if RAMAC_CTA_MMA  // the fragment order's chunks of k-tiles W3_REGS.. (one_state_layout.h)
      __pipeline_memcpy_async(reinterpret_cast<uint4*>(w3s) + i,
                              reinterpret_cast<const uint4*>(w3h) + ramac_layout::w3_shared_source(i, H, W3_REGS), 16);
#else
      const int row = i / (H / 8), col = i % (H / 8), w = row / (OUTS - W3_REGS), r = row % (OUTS - W3_REGS);
      __pipeline_memcpy_async(reinterpret_cast<uint4*>(w3s) + i,
                              reinterpret_cast<const uint4*>(w3h + (w * OUTS + W3_REGS + r) * H) + col, 16);
#endif
    }
  }
#pragma unroll
  for (int j = 0; j < (A_P * H / 4 + THREADS - 1) / THREADS; ++j) {  // w_x (A_P, H) and w_out (H, A_P), padded
    const int i = tid + j * THREADS;
    if (i < A_P * H / 4) {
      __pipeline_memcpy_async(reinterpret_cast<float4*>(wxs) + i, reinterpret_cast<const float4*>(w_x) + i, 16);
      __pipeline_memcpy_async(reinterpret_cast<float4*>(wos) + i, reinterpret_cast<const float4*>(w_out) + i, 16);
    }
  }
  if (tid < T * NCOEF / 4)
    __pipeline_memcpy_async(reinterpret_cast<float4*>(cs) + tid, reinterpret_cast<const float4*>(coef) + tid, 16);
  __pipeline_commit();
  const int jr = warp * OUTS + (lane >> 2);  // the hidden unit this lane holds after a first pass's reduction
  const float b2r[2] = {b2[jr], b2[jr + PASS]}, b3r[2] = {b3[jr], b3[jr + PASS]};
  const float bo = warp < A ? b_out[warp] : 0.0f;  // the output layer: warp a < A computes eps[a]
  float ct = 0.0f, s_part = 0.0f;  // layer 1's time row and state part, one unit per thread of the first H
  if (tid < H) {
    ct = c_time[(T - 1) * H + tid];
#pragma unroll
    for (int i = 0; i < S_P; ++i)  // w_s is zero past row S; all S_P loads issued before the sums
      s_part = fmaf(i < S ? state[i] : 0.0f, w_s[i * H + tid], s_part);
  }
  uint4 w3r[W3_REGS];  // after the state part: its 32 loads and these would not fit the registers together
#pragma unroll
  for (int o = 0; o < W3_REGS; ++o)
#if RAMAC_CTA_MMA  // k-tile o of the warp's rows
    w3r[o] = reinterpret_cast<const uint4*>(w3h)[(warp * KT + o) * 32 + lane];
#else
    w3r[o] = *reinterpret_cast<const uint4*>(w3h + (warp * OUTS + o) * H + lane * INS);
#endif
  for (int i = tid; i < (T + 1) * A; i += THREADS) {  // noise index t * A + a of the (T + 1, 1, A) layout
    const float z = HAS_NOISE ? noise[i] : triton_randn(static_cast<uint64_t>(*seed), static_cast<uint32_t>(i));
    zs[(i / A) * A_P + i % A] = z;
  }
  __pipeline_wait_prior(0);
  __syncthreads();
  if (tid < A_P) xs[tid] = tid < A ? zs[T * A_P + tid] : 0.0f;
  __syncthreads();

  for (int t = T - 1; t >= 0; --t) {
    if (tid < H) {  // layer 1: one unit per thread
      float a1 = s_part + ct;
#pragma unroll
      for (int a = 0; a < A_P; ++a) a1 = fmaf(xs[a], wxs[a * H + tid], a1);  // w_x and x_t are 0 past A
#if RAMAC_CTA_MMA
      xa[b_slot(tid)] = __float2half_rn(mish(a1));
#else
      ha[tid] = mish(a1);
#endif
      if (t > 0) ct = c_time[(t - 1) * H + tid];  // the next step's, loaded while this one runs
    }
    __syncthreads();
    float in[INS];
#if RAMAC_CTA_MMA
    {  // layers 2 and 3 on the tensor cores: W2 from shared memory, W3 from registers and shared memory
      const uint4* w2c = reinterpret_cast<const uint4*>(w2s) + warp * KT * 32 + lane;
      float2 c = layer_mma([&](int kt) { return w2c[kt * 32]; }, xa, lane);
      if (!(lane & 3)) {
        xb[b_slot(jr)] = __float2half_rn(mish(c.x + b2r[0]));
        xb[b_slot(jr + PASS)] = __float2half_rn(mish(c.y + b2r[1]));
      }
      __syncthreads();
      const uint4* w3c = reinterpret_cast<const uint4*>(w3s);
      c = layer_mma([&](int kt) {
        return kt < W3_REGS ? w3r[kt < W3_REGS ? kt : 0] : w3c[ramac_layout::w3_shared_chunk(warp, kt, lane, H, W3_REGS)];
      }, xb, lane);
      if (!(lane & 3)) {
        ha[jr] = mish(c.x + b3r[0]);
        ha[jr + PASS] = mish(c.y + b3r[1]);
      }
    }
#else
    float v[PASS];
    load_inputs(ha, lane, in);  // layer 2: W2 from shared memory
#pragma unroll
    for (int p = 0; p < OUTS / PASS; ++p) {
#pragma unroll
      for (int o = 0; o < PASS; ++o)
        v[o] = dot8(*reinterpret_cast<const uint4*>(w2s + (warp * OUTS + p * PASS + o) * H + lane * INS), in);
      const float h = mish(reduce_scatter8(v, lane) + b2r[p]);
      if (!(lane & 3)) hb[jr + p * PASS] = h;
    }
    __syncthreads();
    load_inputs(hb, lane, in);  // layer 3: W3 from registers
#pragma unroll
    for (int p = 0; p < OUTS / PASS; ++p) {
#pragma unroll
      for (int o = 0; o < PASS; ++o) {
        const int row = p * PASS + o;
        v[o] = dot8(row < W3_REGS ? w3r[row < W3_REGS ? row : 0]
                                  : *reinterpret_cast<const uint4*>(w3s + (warp * (OUTS - W3_REGS) + row - W3_REGS) * H + lane * INS),
                    in);
      }
      const float h = mish(reduce_scatter8(v, lane) + b3r[p]);
      if (!(lane & 3)) ha[jr + p * PASS] = h;
    }
#endif
    __syncthreads();
    if (warp < A) {  // the output layer and the posterior step, one warp per action dimension
      load_inputs(ha, lane, in);
      float e = 0.0f;
#pragma unroll
      for (int m = 0; m < INS; ++m) e = fmaf(wos[(lane * INS + m) * A_P + warp], in[m], e);
#pragma unroll
      for (int bit = 16; bit >= 1; bit /= 2) e += __shfl_xor_sync(FULL, e, bit);
      if (lane == 0) {
        const float* c = cs + t * NCOEF;  // recip, recipm1, mean1, mean2, sigma
        const float x = xs[warp];
        const float x0 = fminf(fmaxf(c[0] * x - c[1] * (e + bo), -max_action), max_action);
        xs[warp] = c[2] * x0 + c[3] * x + c[4] * zs[t * A_P + warp];
      }
    }
    __syncthreads();
  }
  if (tid < A) out[tid] = fminf(fmaxf(xs[tid], -max_action), max_action);
}

}  // namespace

// One block of 512 threads, dynamic shared memory SHARED bytes (gen_kernels.py's cta_shared()); T <= RAMAC_T_MAX,
// S <= the state pad, A <= A_P. w2h, w3h: (H, H) fp16, [output][input] (the export's w2, w3
// transposed); w_x, w_s, w_out: the export's fp32 tensors; seed: an int64 on the device.
#define RAMAC_ONE_STATE_ARGS                                                                                 \
  const float* __restrict__ state, const float* __restrict__ noise, float* __restrict__ out,                \
      const __half* __restrict__ w2h, const __half* __restrict__ w3h, const float* __restrict__ w_x,        \
      const float* __restrict__ w_s, const float* __restrict__ c_time, const float* __restrict__ b2,        \
      const float* __restrict__ b3, const float* __restrict__ w_out, const float* __restrict__ b_out,       \
      const float* __restrict__ coef, const int64_t* __restrict__ seed, int S, int A, int T, float max_action
#define RAMAC_ONE_STATE_CALL \
  state, noise, out, w2h, w3h, w_x, w_s, c_time, b2, b3, w_out, b_out, coef, seed, S, A, T, max_action

extern "C" __global__ void __launch_bounds__(THREADS, 1) ramac_one_state_noise(RAMAC_ONE_STATE_ARGS) {
  chain<true>(RAMAC_ONE_STATE_CALL);
}

extern "C" __global__ void __launch_bounds__(THREADS, 1) ramac_one_state_seed(RAMAC_ONE_STATE_ARGS) {
  chain<false>(RAMAC_ONE_STATE_CALL);
}
