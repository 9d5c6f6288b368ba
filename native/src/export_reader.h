// Reading an export directory (native/FORMAT.md) on the host: header.json and weights.bin,
// checked against the shapes the library was compiled for. No CUDA here.
#ifndef RAMAC_EXPORT_READER_H
#define RAMAC_EXPORT_READER_H

#include <map>
#include <string>
#include <vector>

namespace ramac {

struct HostExport {
  std::string agent;
  int state_dim = 0, action_dim = 0, hidden = 0, n_steps = 0, state_pad = 0, action_pad = 0;
  float max_action = 1.0f;
  std::vector<float> obs_mean, obs_std;
  std::map<std::string, std::vector<float>> tensors;  // the PackedDenoiser tensors, fp32, row-major
};

// The error codes of ramac_sampler.h with a message.
struct LoadError {
  int code;
  std::string message;
};

// The tensors the kernel takes, in the order the library uploads them, and their shapes as
// functions of (H, A_P, S_P, T).
extern const char* const TENSOR_NAMES[10];

// Reads and checks the export; throws LoadError.
HostExport read_export(const std::string& dir, int hidden, int state_pad, int action_pad);

}  // namespace ramac
#endif
