/* ramac_sampler: the RADAC actor's whole DDPM chain (all T denoising steps in one launch of
   the package's Triton kernel, compiled ahead of time) behind a small C API.

   Typical use (error checks shortened):

     ramac_sampler* s;
     if (ramac_sampler_load("export_dir", &s) != RAMAC_OK) puts(ramac_sampler_last_error());
     ramac_sampler_sample(s, states_dev, batch, seed, actions_dev, stream);   // (B, S) -> (B, A)
     ramac_sampler_free(s);

   Pointers named *_dev are CUDA device pointers (fp32, contiguous, row-major). Every call is
   asynchronous on `stream`; nothing synchronises. States are what the denoiser sees: the agent's
   act() first normalises observations, (obs - obs_mean) / obs_std (ramac_sampler_get_info gives
   both; identity unless the run trained with --obs-norm). Failures return a ramac_status and leave
   a one-line message for ramac_sampler_last_error(); the library never exits or prints.

   Batches of at most 16 states take the split chain (several blocks share the hidden layer and
   wait for each other at a grid barrier in the handle's memory): launches that use one handle must
   not overlap, so use one handle per stream, as for the seed below.

   The export directory is written by `ramac export RUN_DIR --out DIR` (format: native/FORMAT.md).
   The library is compiled for one architecture and one (H, S_P, A_P); loading an export of other
   shapes fails with RAMAC_ERR_SHAPE, naming the CMake options to rebuild with. */
#ifndef RAMAC_SAMPLER_H
#define RAMAC_SAMPLER_H

#include <stdint.h>

#ifndef RAMAC_API /* the library's build marks these exported; users see nothing */
#define RAMAC_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* A CUstream or a cudaStream_t (the same type); NULL: the legacy default stream. */
typedef struct CUstream_st* ramac_stream_t;

typedef struct ramac_sampler ramac_sampler;

typedef enum {
  RAMAC_OK = 0,
  RAMAC_ERR_ARGUMENT = 1,  /* a NULL handle or pointer, a negative or too large batch */
  RAMAC_ERR_IO = 2,        /* header.json or weights.bin missing or unreadable */
  RAMAC_ERR_FORMAT = 3,    /* the export is malformed, truncated or of another format version */
  RAMAC_ERR_SHAPE = 4,     /* the export's shapes differ from the ones this library was compiled for */
  RAMAC_ERR_NO_DEVICE = 5, /* no CUDA driver (libcuda.so.1) or no CUDA device */
  RAMAC_ERR_CUDA = 6       /* a CUDA driver call failed (the message names it) */
} ramac_status;

typedef struct {
  int state_dim, action_dim, hidden, n_steps;
  float max_action;
  const float* obs_mean;   /* host arrays of state_dim floats, owned by the sampler */
  const float* obs_std;
  const char* agent;       /* the exported agent's name, e.g. "radac" */
} ramac_sampler_info;

/* Read DIR/header.json and DIR/weights.bin, upload the weights, load the kernels. Uses the CUDA
   context current on this thread, else device 0's primary context (the one the CUDA runtime and
   PyTorch use). */
RAMAC_API int ramac_sampler_load(const char* export_dir, ramac_sampler** out);

/* actions_dev (batch, A) from states_dev (batch, S), noise drawn in the kernel (Philox) from seed:
   the same seed gives the same actions as the Python sampler's seed path (sample_chain_triton with
   that seed). The seed goes to the device by two cuMemsetD32Async on `stream` (graph-capturable;
   a captured graph replays the captured seed). Calls on other streams share the handle's seed
   buffer: use one handle per stream, or ramac_sampler_sample_seed_dev. */
RAMAC_API int ramac_sampler_sample(ramac_sampler* s, const float* states_dev, int batch, uint64_t seed,
                         float* actions_dev, ramac_stream_t stream);

/* The same with the seed read from device memory (one int64) when the kernel runs: a CUDA graph
   that captured this call draws fresh noise on each replay after the caller updates *seed_dev. */
RAMAC_API int ramac_sampler_sample_seed_dev(ramac_sampler* s, const float* states_dev, int batch,
                                  const int64_t* seed_dev, float* actions_dev, ramac_stream_t stream);

/* The same with the noise given: noise_dev (T + 1, batch, A), noise[T] = x_T, noise[t] the noise
   added at step t (kernels.sample_chain's layout), for exact parity with the Python samplers. */
RAMAC_API int ramac_sampler_sample_noise(ramac_sampler* s, const float* states_dev, int batch,
                               const float* noise_dev, float* actions_dev, ramac_stream_t stream);

RAMAC_API int ramac_sampler_get_info(const ramac_sampler* s, ramac_sampler_info* info);

/* Frees device memory and modules (after the work queued on them is done). NULL is a no-op. */
RAMAC_API void ramac_sampler_free(ramac_sampler* s);

/* The message of the last failed call on this thread ("" if none). */
RAMAC_API const char* ramac_sampler_last_error(void);

/* What this build holds: architecture, compiled shapes, precision, Triton version. */
RAMAC_API const char* ramac_sampler_build_info(void);

#ifdef __cplusplus
}
#endif
#endif
