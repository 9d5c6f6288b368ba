// The CUDA driver API, opened at run time (dlopen libcuda.so.1) instead of linked: the library
// then loads on a machine without a GPU driver (the CPU build machine, ctypes in the CPU tests),
// and ramac_sampler_load reports RAMAC_ERR_NO_DEVICE instead of the process failing to start.
#ifndef RAMAC_CUDA_DRIVER_H
#define RAMAC_CUDA_DRIVER_H

#include <cuda.h>
#include <dlfcn.h>

#include <mutex>
#include <string>

namespace ramac {

// cuda.h maps some names to versioned symbols (cuMemAlloc -> cuMemAlloc_v2): RAMAC_STR expands
// the macro first, so dlsym looks up the symbol a linked call would use
#define RAMAC_STR_(x) #x
#define RAMAC_STR(x) RAMAC_STR_(x)
#define RAMAC_CU_FUNCS(X)                                                                        \
  X(cuInit) X(cuGetErrorName) X(cuGetErrorString) X(cuDeviceGetCount) X(cuDeviceGet)             \
  X(cuDeviceGetAttribute) X(cuCtxGetCurrent) X(cuCtxSetCurrent) X(cuCtxGetDevice)                \
  X(cuCtxPushCurrent) X(cuCtxPopCurrent) X(cuDevicePrimaryCtxRetain) X(cuDevicePrimaryCtxRelease) \
  X(cuModuleLoadData) X(cuModuleUnload) X(cuModuleGetFunction) X(cuFuncGetAttribute)             \
  X(cuFuncSetAttribute) X(cuFuncSetCacheConfig) X(cuMemAlloc) X(cuMemFree) X(cuMemcpyHtoD)       \
  X(cuMemsetD32Async) X(cuLaunchKernel)

struct Driver {
#define RAMAC_DECL(f) decltype(&f) f##_ = nullptr;
  RAMAC_CU_FUNCS(RAMAC_DECL)
#undef RAMAC_DECL
  bool ok = false;

  // Open libcuda and resolve every function; on failure `why` says which step failed.
  bool open(std::string* why) {
    static std::mutex m;  // two threads loading samplers at once open the driver once
    std::lock_guard<std::mutex> lock(m);
    if (ok) return true;
    void* h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char* e = dlerror();
      *why = std::string("no CUDA driver on this machine (") + (e ? e : "cannot open libcuda.so.1") + ")";
      return false;
    }
#define RAMAC_LOAD(f)                                                          \
  f##_ = reinterpret_cast<decltype(&f)>(dlsym(h, RAMAC_STR(f)));               \
  if (!f##_) {                                                                 \
    *why = std::string("the CUDA driver lacks ") + RAMAC_STR(f) + " (too old)"; \
    return false;                                                              \
  }
    RAMAC_CU_FUNCS(RAMAC_LOAD)
#undef RAMAC_LOAD
    ok = true;  // the handle stays open for the life of the process
    return true;
  }

  std::string describe(CUresult r) const {
    const char *name = nullptr, *text = nullptr;
    if (cuGetErrorName_) cuGetErrorName_(r, &name);
    if (cuGetErrorString_) cuGetErrorString_(r, &text);
    return std::string(name ? name : "CUDA error " + std::to_string(static_cast<int>(r))) + (text ? ": " : "") +
           (text ? text : "");
  }
};

Driver& driver();

}  // namespace ramac
#endif
