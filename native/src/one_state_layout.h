// The orders of the tensor-core one-CTA kernel (one_state.cu built with RAMAC_CTA_MMA, the library's
// -DRAMAC_ONE_STATE=mma), shared by the kernel, the library that packs its fp16 weights
// (ramac_sampler.cpp) and the CPU test of both (tests/test_native.py). PTX's mma.m16n8k16 with
// fp16 inputs: lane l = 4 g + t of a warp holds A elements (rows g and g + 8, columns 2t, 2t + 1 and
// 2t + 8, 2t + 9 of the 16 x 16 tile) and B elements (rows 2t, 2t + 1, 2t + 8, 2t + 9, column g).
#ifndef RAMAC_ONE_STATE_LAYOUT_H
#define RAMAC_ONE_STATE_LAYOUT_H

#if defined(__CUDACC__)
#define RAMAC_LAYOUT_FN __host__ __device__ __forceinline__
#else
#define RAMAC_LAYOUT_FN inline
#endif

namespace ramac_layout {

// the n-th half of an H x H weight matrix ([output j][input k]) in the A operand's fragment order:
// 16-byte chunk c = n / 8 is lane c % 32's part of k-tile (c / 32) % (H / 16) of warp c / 32 / (H / 16)
// (the warp's 16 outputs), its 8 halves a0..a7
RAMAC_LAYOUT_FN void a_fragment(int n, int H, int& j, int& k) {
  const int c = n >> 3, e = n & 7, lane = c & 31, kt = (c >> 5) % (H / 16), warp = (c >> 5) / (H / 16);
  j = 16 * warp + (lane >> 2) + 8 * ((e >> 1) & 1);
  k = 16 * kt + 2 * (lane & 3) + (e & 1) + 8 * (e >> 2);
}

// where input unit j of a hidden layer sits among the halves of the B operand's order: k-tile j / 16,
// then the lane-in-group t holding it (b0, b1 = rows 2t, 2t + 1; b2, b3 = rows 2t + 8, 2t + 9), so
// that lane t of every group reads its 4 halves of a k-tile as 8 bytes at (4 kt + t) * 8
RAMAC_LAYOUT_FN int b_slot(int j) {
  const int r = j & 15;
  return (((j >> 4) * 4 + ((r & 7) >> 1)) << 2) + (r & 1) + ((r >> 3) << 1);
}

// W3's k-tiles from `regs` on sit in shared memory (the first `regs` in registers): chunk i there
// holds the fragment order's chunk w3_shared_source(i), and lane `lane` of warp `warp` finds its
// chunk of k-tile kt >= regs at w3_shared_chunk(warp, kt, lane)
RAMAC_LAYOUT_FN int w3_shared_source(int i, int H, int regs) {
  const int kts = H / 16 - regs, warp = i / (kts * 32), r = (i >> 5) % kts, lane = i & 31;
  return (warp * (H / 16) + regs + r) * 32 + lane;
}

RAMAC_LAYOUT_FN int w3_shared_chunk(int warp, int kt, int lane, int H, int regs) {
  return (warp * (H / 16 - regs) + kt - regs) * 32 + lane;
}

}  // namespace ramac_layout

#endif
