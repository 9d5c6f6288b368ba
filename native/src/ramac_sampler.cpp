// The C API of ramac_sampler.h: weights to the device, the generated cubins into modules, and
// launches of the chain kernel with the argument list Triton's own launcher would pass.
#include "ramac_sampler.h"

#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <string>
#include <vector>

#include "cuda_driver.h"
#include "export_reader.h"
#include "one_state_layout.h"
#include "kernels_table.h"

namespace ramac {

Driver& driver() {
  static Driver d;
  return d;
}

namespace {

thread_local std::string last_error;

int fail(int code, const std::string& message) {
  last_error = message;
  return code;
}

struct CudaError {
  std::string message;
};

void check(CUresult r, const char* call) {
  if (r != CUDA_SUCCESS) throw CudaError{std::string(call) + " failed: " + driver().describe(r)};
}
#define RAMAC_CHECK(call) check(driver().call, #call)

// fp32 -> bf16 rounding to nearest even, as torch's .to(torch.bfloat16)
uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// the weights the tensor cores read: in the build's dot dtype; every other tensor fp32
bool is_dot_weight(const std::string& name) {
  return name == "w_x" || name == "w_s" || name == "w2" || name == "w3" || name == "w_out";
}

// scoped: the handle's context current on this thread, the caller's put back after
struct CtxGuard {
  bool pushed = false;
  explicit CtxGuard(CUcontext ctx) {
    CUcontext cur = nullptr;
    RAMAC_CHECK(cuCtxGetCurrent_(&cur));
    if (cur != ctx) {
      RAMAC_CHECK(cuCtxPushCurrent_(ctx));
      pushed = true;
    }
  }
  ~CtxGuard() {
    CUcontext popped;
    if (pushed) driver().cuCtxPopCurrent_(&popped);
  }
};

}  // namespace
}  // namespace ramac

using namespace ramac;

struct ramac_sampler {
  HostExport host;
  CUcontext ctx = nullptr;
  CUdevice device = 0;
  bool retained = false;  // ctx is device's primary context, retained by this handle
  CUdeviceptr arena = 0;  // every tensor, 256-byte aligned, then the int64 seed, the split kernel's barrier
  CUdeviceptr ptr[10] = {};  // and partials
  CUdeviceptr ptr32[10] = {};  // the same tensors with the dot weights in fp32 (fp32_weights variants)
  CUdeviceptr half_w2 = 0, half_w3 = 0;  // the one-CTA kernel's W2 and W3: fp16, [output][input] or mma's order
  CUdeviceptr seed = 0;
  CUdeviceptr barrier = 0;   // two int32, zero at load; the split kernel leaves the count at 0 after each use
  CUdeviceptr partials = 0;  // 2 x programs x block_m x hidden fp32 (one launch at a time per handle)
  std::vector<CUmodule> modules;
  std::vector<CUfunction> functions;  // one per RAMAC_VARIANTS entry
};

namespace {

void upload(ramac_sampler* s) {
  const bool bf16 = std::strcmp(RAMAC_BUILD.precision, "bf16") == 0;
  std::vector<unsigned char> staging;
  auto align = [&staging]() {  // the next tensor's offset, 256-byte aligned
    staging.resize((staging.size() + 255) / 256 * 256);
    return staging.size();
  };
  auto append_fp32 = [&staging](const std::vector<float>& t) {
    const unsigned char* p = reinterpret_cast<const unsigned char*>(t.data());
    staging.insert(staging.end(), p, p + 4 * t.size());
  };
  size_t offsets[11], offsets32[10] = {};
  for (int i = 0; i < 10; ++i) {
    const std::string name = TENSOR_NAMES[i];
    const std::vector<float>& t = s->host.tensors.at(name);
    offsets[i] = align();
    if (bf16 && is_dot_weight(name)) {
      for (float v : t) {
        uint16_t b = to_bf16(v);
        staging.insert(staging.end(), reinterpret_cast<unsigned char*>(&b), reinterpret_cast<unsigned char*>(&b) + 2);
      }
    } else {
      append_fp32(t);
    }
  }
  // the GEMV variant reads fp32 dot weights: with bf16 ones above, a second copy of those five
  bool fp32_copy = false;
  for (int i = 0; i < RAMAC_NUM_VARIANTS; ++i) fp32_copy = fp32_copy || (bf16 && RAMAC_VARIANTS[i].fp32_weights);
  for (int i = 0; i < 10 && fp32_copy; ++i) {
    if (!is_dot_weight(TENSOR_NAMES[i])) continue;
    offsets32[i] = align();
    append_fp32(s->host.tensors.at(TENSOR_NAMES[i]));
  }
  // the one-CTA kernel keeps W2 and W3 on chip in fp16, transposed to [output][input] (programs -1)
  // or in the tensor cores' fragment order (programs -2, one_state.cu's RAMAC_CTA_MMA)
  bool half_copy = false, fragments = false;
  for (int i = 0; i < RAMAC_NUM_VARIANTS; ++i) {
    half_copy = half_copy || RAMAC_VARIANTS[i].programs < 0;
    fragments = fragments || RAMAC_VARIANTS[i].programs == -2;
  }
  size_t half_at[2] = {};
  const int H = RAMAC_BUILD.hidden;
  for (int m = 0; m < 2 && half_copy; ++m) {
    const std::vector<float>& t = s->host.tensors.at(m == 0 ? "w2" : "w3");  // (H, H) inputs x outputs
    half_at[m] = align();
    for (int n = 0; n < H * H; ++n) {
      int j = n / H, k = n % H;  // the n-th half written: output j, input k
      if (fragments) ramac_layout::a_fragment(n, H, j, k);
      const float v = t[size_t(k) * H + j];
      if (!(std::fabs(v) <= 65504.0f))
        throw LoadError{RAMAC_ERR_FORMAT, std::string("weight ") + (m == 0 ? "w2" : "w3") + " = " + std::to_string(v) +
                                              " is outside fp16's range, which the one-state kernel keeps W2 and W3 in; "
                                              "rebuild with -DRAMAC_ONE_STATE=gemv"};
      const __half h = __float2half_rn(v);
      const unsigned char* p = reinterpret_cast<const unsigned char*>(&h);
      staging.insert(staging.end(), p, p + 2);
    }
  }
  offsets[10] = align();
  staging.resize(offsets[10] + 24, 0);  // the seed, 0 until a call sets it; at +16 the barrier, zero
  size_t partials = 0;  // the largest split variant's scratch
  for (int i = 0; i < RAMAC_NUM_VARIANTS; ++i) {
    const ramac_variant& v = RAMAC_VARIANTS[i];
    if (v.programs > 0) partials = std::max(partials, size_t(2) * v.programs * v.block_m * RAMAC_BUILD.hidden * 4);
  }
  const size_t partials_at = (staging.size() + 255) / 256 * 256;
  RAMAC_CHECK(cuMemAlloc_(&s->arena, partials_at + partials));
  RAMAC_CHECK(cuMemcpyHtoD_(s->arena, staging.data(), staging.size()));
  for (int i = 0; i < 10; ++i) {
    s->ptr[i] = s->arena + offsets[i];
    s->ptr32[i] = s->arena + (offsets32[i] ? offsets32[i] : offsets[i]);  // a copy follows the tensors: never at 0
  }
  if (half_copy) {
    s->half_w2 = s->arena + half_at[0];
    s->half_w3 = s->arena + half_at[1];
  }
  s->seed = s->arena + offsets[10];
  s->barrier = s->seed + 16;  // 16-byte aligned, as the kernel was compiled to assume
  s->partials = s->arena + partials_at;
}

void load_modules(ramac_sampler* s) {
  Driver& d = driver();
  int optin = 0;
  RAMAC_CHECK(cuDeviceGetAttribute_(&optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, s->device));
  for (int i = 0; i < RAMAC_NUM_VARIANTS; ++i) {
    const ramac_variant& v = RAMAC_VARIANTS[i];
    CUmodule m;
    CUfunction f;
    CUresult r = d.cuModuleLoadData_(&m, v.cubin);
    if (r != CUDA_SUCCESS)
      throw CudaError{"cannot load the kernels compiled for sm_" + std::to_string(RAMAC_BUILD.arch) +
                      " on this GPU (" + d.describe(r) + "); rebuild with cmake -DRAMAC_ARCH=<its compute capability>"};
    s->modules.push_back(m);
    RAMAC_CHECK(cuModuleGetFunction_(&f, m, v.entry));
    if (v.shared > 49152) {  // what Triton's loader does: opt in to the large shared-memory carve-out
      if (static_cast<int>(v.shared) > optin)
        throw CudaError{"the kernel needs " + std::to_string(v.shared) + " bytes of shared memory, this GPU allows " +
                        std::to_string(optin)};
      int static_shared = 0;
      RAMAC_CHECK(cuFuncSetCacheConfig_(f, CU_FUNC_CACHE_PREFER_SHARED));
      RAMAC_CHECK(cuFuncGetAttribute_(&static_shared, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, f));
      RAMAC_CHECK(cuFuncSetAttribute_(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, optin - static_shared));
    }
    s->functions.push_back(f);
  }
}

void release(ramac_sampler* s) {
  Driver& d = driver();
  if (s->ctx) {
    CUcontext cur = nullptr, popped;
    d.cuCtxGetCurrent_(&cur);
    bool pushed = cur != s->ctx && d.cuCtxPushCurrent_(s->ctx) == CUDA_SUCCESS;
    for (CUmodule m : s->modules) d.cuModuleUnload_(m);
    if (s->arena) d.cuMemFree_(s->arena);
    if (pushed) d.cuCtxPopCurrent_(&popped);
    if (s->retained) d.cuDevicePrimaryCtxRelease_(s->device);
  }
  delete s;
}

int launch(ramac_sampler* s, const float* states, int batch, const float* noise, CUdeviceptr seed_ptr,
           float* actions, ramac_stream_t stream) {
  if (!s) return fail(RAMAC_ERR_ARGUMENT, "the sampler handle is NULL");
  if (batch < 0) return fail(RAMAC_ERR_ARGUMENT, "batch must be >= 0, got " + std::to_string(batch));
  if (batch == 0) return RAMAC_OK;
  if (!states || !actions) return fail(RAMAC_ERR_ARGUMENT, "states and actions must be device pointers, got NULL");
  const HostExport& h = s->host;
  // the kernel's offsets are 32-bit: noise index (T + 1) * B * A and state index B * S must fit
  const long long widest = static_cast<long long>(h.n_steps + 1) * batch * (h.action_dim > h.state_dim ? h.action_dim : h.state_dim);
  if (widest >= (1LL << 31))
    return fail(RAMAC_ERR_ARGUMENT, "batch " + std::to_string(batch) + " is too large for the kernel's 32-bit offsets");
  const int has_noise = noise != nullptr;
  int pick = -1;
  for (int i = 0; i < RAMAC_NUM_VARIANTS && pick < 0; ++i) {
    const ramac_variant& v = RAMAC_VARIANTS[i];
    if (v.has_noise == has_noise && (v.max_batch < 0 || batch <= v.max_batch)) pick = i;
  }
  if (pick < 0) return fail(RAMAC_ERR_ARGUMENT, "no compiled variant serves batch " + std::to_string(batch));
  const ramac_variant& v = RAMAC_VARIANTS[pick];
  if (v.max_steps > 0 && h.n_steps > v.max_steps)
    return fail(RAMAC_ERR_SHAPE, "the one-state kernel takes at most " + std::to_string(v.max_steps) +
                                     " diffusion steps, the export has " + std::to_string(h.n_steps) +
                                     "; rebuild with -DRAMAC_ONE_STATE=gemv");
  CUdeviceptr state_p = reinterpret_cast<CUdeviceptr>(states), out_p = reinterpret_cast<CUdeviceptr>(actions);
  // unused pointers get the output buffer, as sample_chain_triton passes
  CUdeviceptr noise_p = has_noise ? reinterpret_cast<CUdeviceptr>(noise) : out_p;
  CUdeviceptr seed_p = has_noise ? out_p : seed_ptr;
  int B = batch, S = h.state_dim, A = h.action_dim, T = h.n_steps;
  float max_action = h.max_action;
  CUdeviceptr scratch = 0;  // global / profile scratch: size 0 (checked by gen_kernels.py), NULL as Triton passes
  CUdeviceptr* w = v.fp32_weights ? s->ptr32 : s->ptr;
  void* params[26] = {&state_p, &noise_p, &out_p, &w[0], &w[1], &w[2], &w[3], &w[4],
                      &w[5], &w[6], &w[7], &w[8], &w[9], &seed_p};
  int n = 14;
  unsigned grid = 1;
  if (v.programs < 0) {  // the one-CTA kernel, one block: fp16 W2, W3 first, then the fp32 tensors it reads, no B
    // (TENSOR_NAMES: w_x, w_s, c_time, w2, b2, w3, b3, w_out, b_out, coefs)
    void* cta[] = {&state_p, &noise_p, &out_p, &s->half_w2, &s->half_w3, &w[0], &w[1], &w[2], &w[4], &w[6],
                   &w[7], &w[8], &w[9], &seed_p, &S, &A, &T, &max_action};
    std::copy(std::begin(cta), std::end(cta), params);
  } else {
    if (v.programs > 0) {  // the split kernel: its partials and barrier after the seed; B compiled in
      params[n++] = &s->partials;
      params[n++] = &s->barrier;
    } else {
      params[n++] = &B;
    }
    for (void* arg : {static_cast<void*>(&S), static_cast<void*>(&A), static_cast<void*>(&T),
                      static_cast<void*>(&max_action)})
      params[n++] = arg;
    for (; n < v.n_params && n < 26; ++n) params[n] = &scratch;
    grid = v.programs > 0 ? static_cast<unsigned>(v.programs)
                          : static_cast<unsigned>((batch + v.block_m - 1) / v.block_m);
  }
  try {
    CtxGuard guard(s->ctx);
    RAMAC_CHECK(cuLaunchKernel_(s->functions[pick], grid, 1, 1, 32u * v.num_warps, 1, 1, v.shared,
                                reinterpret_cast<CUstream>(stream), params, nullptr));
  } catch (const CudaError& e) {
    return fail(RAMAC_ERR_CUDA, e.message);
  }
  return RAMAC_OK;
}

}  // namespace

extern "C" {

int ramac_sampler_load(const char* export_dir, ramac_sampler** out) {
  if (!export_dir || !out) return fail(RAMAC_ERR_ARGUMENT, "export_dir and out must not be NULL");
  *out = nullptr;
  auto* s = new ramac_sampler();
  try {
    s->host = read_export(export_dir, RAMAC_BUILD.hidden, RAMAC_BUILD.state_pad, RAMAC_BUILD.action_pad);
  } catch (const LoadError& e) {
    delete s;
    return fail(e.code, e.message);
  }
  std::string why;
  Driver& d = driver();
  if (!d.open(&why)) {
    delete s;
    return fail(RAMAC_ERR_NO_DEVICE, why);
  }
  try {
    CUresult r = d.cuInit_(0);
    int count = 0;
    if (r == CUDA_SUCCESS) r = d.cuDeviceGetCount_(&count);
    if (r != CUDA_SUCCESS || count == 0) {
      delete s;
      return fail(RAMAC_ERR_NO_DEVICE, "no CUDA device (" + (r != CUDA_SUCCESS ? d.describe(r) : "none found") + ")");
    }
    RAMAC_CHECK(cuCtxGetCurrent_(&s->ctx));
    if (s->ctx) {
      RAMAC_CHECK(cuCtxGetDevice_(&s->device));
    } else {  // no context on this thread: device 0's primary one, as Triton and the CUDA runtime use
      RAMAC_CHECK(cuDeviceGet_(&s->device, 0));
      RAMAC_CHECK(cuDevicePrimaryCtxRetain_(&s->ctx, s->device));
      s->retained = true;
      RAMAC_CHECK(cuCtxSetCurrent_(s->ctx));
    }
    CtxGuard guard(s->ctx);
    upload(s);
    load_modules(s);
  } catch (const CudaError& e) {
    release(s);
    return fail(RAMAC_ERR_CUDA, e.message);
  } catch (const LoadError& e) {  // weights the one-state kernel cannot hold (checked before any allocation)
    release(s);
    return fail(e.code, e.message);
  }
  *out = s;
  return RAMAC_OK;
}

int ramac_sampler_sample(ramac_sampler* s, const float* states_dev, int batch, uint64_t seed, float* actions_dev,
                         ramac_stream_t stream) {
  if (s && batch > 0) {
    try {
      CtxGuard guard(s->ctx);
      CUstream st = reinterpret_cast<CUstream>(stream);
      RAMAC_CHECK(cuMemsetD32Async_(s->seed, static_cast<unsigned>(seed & 0xffffffffu), 1, st));
      RAMAC_CHECK(cuMemsetD32Async_(s->seed + 4, static_cast<unsigned>(seed >> 32), 1, st));
    } catch (const CudaError& e) {
      return fail(RAMAC_ERR_CUDA, e.message);
    }
  }
  return launch(s, states_dev, batch, nullptr, s ? s->seed : 0, actions_dev, stream);
}

int ramac_sampler_sample_seed_dev(ramac_sampler* s, const float* states_dev, int batch, const int64_t* seed_dev,
                                  float* actions_dev, ramac_stream_t stream) {
  if (!seed_dev && batch > 0) return fail(RAMAC_ERR_ARGUMENT, "seed_dev must be a device pointer, got NULL");
  return launch(s, states_dev, batch, nullptr, reinterpret_cast<CUdeviceptr>(seed_dev), actions_dev, stream);
}

int ramac_sampler_sample_noise(ramac_sampler* s, const float* states_dev, int batch, const float* noise_dev,
                               float* actions_dev, ramac_stream_t stream) {
  if (!noise_dev && batch > 0) return fail(RAMAC_ERR_ARGUMENT, "noise_dev must be a device pointer, got NULL");
  return launch(s, states_dev, batch, noise_dev, 0, actions_dev, stream);
}

int ramac_sampler_get_info(const ramac_sampler* s, ramac_sampler_info* info) {
  if (!s || !info) return fail(RAMAC_ERR_ARGUMENT, "the sampler handle and info must not be NULL");
  const HostExport& h = s->host;
  *info = ramac_sampler_info{h.state_dim, h.action_dim, h.hidden, h.n_steps, h.max_action,
                             h.obs_mean.data(), h.obs_std.data(), h.agent.c_str()};
  return RAMAC_OK;
}

void ramac_sampler_free(ramac_sampler* s) {
  if (s) release(s);
}

const char* ramac_sampler_last_error(void) { return last_error.c_str(); }

const char* ramac_sampler_build_info(void) { return RAMAC_BUILD.text; }

}  // extern "C"
