/* The compiled variants of the chain sampler, defined by the generated ramac_kernels.c
   (native/gen_kernels.py). Private to the library. */
#ifndef RAMAC_KERNELS_TABLE_H
#define RAMAC_KERNELS_TABLE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  const char* entry;           /* the kernel's symbol in the cubin */
  const unsigned char* cubin;  /* the cubin's bytes */
  size_t cubin_size;
  int block_m, block_n, num_warps, num_stages;
  int has_noise;               /* 1: noise read from a buffer; 0: Philox from a device seed */
  int max_batch;               /* the variant serves batch <= max_batch (-1: any larger batch) */
  unsigned shared;             /* dynamic shared memory per block, bytes */
  int n_params;                /* kernel parameters: the run-time arguments + trailing scratch pointers */
  int programs;                /* 0: the one-block kernel (19 run-time arguments, a program per block_m
                                  states); N: a split kernel for one state, GEMV or tile (20: the
                                  partials scratch and barrier pointers after the seed, no B; N
                                  programs share the hidden layer; block_m sizes the partials);
                                  -1: the one-CTA CUDA kernel for one state (native/src/one_state.cu:
                                  18 arguments, W2 and W3 as fp16 copies [output][input], no B; one
                                  block of 32 x num_warps threads); -2: the same with its hidden
                                  layers on the tensor cores (RAMAC_CTA_MMA), W2 and W3 in the mma
                                  A fragment order (one_state_layout.h) */
  int fp32_weights;            /* 1: reads the dot weights in fp32 whatever the build's precision (the
                                  GEMV variant; the one-CTA kernel's w_x, w_s and w_out); 0: in the
                                  build's dtype */
  int max_steps;               /* the most diffusion steps T the variant takes (0: any) */
} ramac_variant;

typedef struct {
  int arch, hidden, state_pad, action_pad;
  const char* precision;       /* "bf16", "tf32" or "fp32": the weights' dtype on the device */
  const char* text;            /* one line for ramac_sampler_build_info() */
} ramac_build;

extern const ramac_variant RAMAC_VARIANTS[];
extern const int RAMAC_NUM_VARIANTS;
extern const ramac_build RAMAC_BUILD;

#ifdef __cplusplus
}
#endif
#endif
