// ctest program of libramac_sampler. EXPORT_DIR is native/make_test_export.py's output.
//
//   ramac_sampler_test errors EXPORT_DIR   host-side failures: codes and messages (runs without a GPU)
//   ramac_sampler_test parity EXPORT_DIR   given noise: actions vs the fp32 PyTorch reference (expected.bin);
//                                          in-kernel noise: repeatable per seed, different across seeds
//
// Exit 0: passed; 1: failed; 77: skipped (no CUDA driver or device), ctest's SKIP_RETURN_CODE.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "json_mini.h"
#include "ramac_sampler.h"

namespace {

constexpr int SKIP = 77;
int failures = 0;

void expect(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream b;
  b << f.rdbuf();
  return b.str();
}

void spit(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}

std::vector<float> floats(const std::string& path) {
  std::string b = slurp(path);
  std::vector<float> v(b.size() / 4);
  std::memcpy(v.data(), b.data(), v.size() * 4);
  return v;
}

// a copy of the export with header.json (and optionally weights.bin) replaced
std::string variant(const std::string& src, const std::string& name, const std::string& header,
                    const std::string* weights = nullptr) {
  std::string dir = "ramac_test_" + name;
  std::string cmd = "mkdir -p " + dir;
  if (std::system(cmd.c_str()) != 0) return dir;
  spit(dir + "/header.json", header);
  spit(dir + "/weights.bin", weights ? *weights : slurp(src + "/weights.bin"));
  return dir;
}

std::string replace_number(std::string text, const std::string& key, const std::string& value) {
  size_t at = text.find("\"" + key + "\": ");
  if (at == std::string::npos) return text;
  at += key.size() + 4;
  size_t end = text.find_first_not_of("0123456789.", at);
  return text.replace(at, end - at, value);
}

bool has(const char* message, const std::string& part) { return std::string(message).find(part) != std::string::npos; }

int errors(const std::string& dir) {
  ramac_sampler* s = nullptr;
  int rc = ramac_sampler_load("/no/such/export", &s);
  expect(rc == RAMAC_ERR_IO && has(ramac_sampler_last_error(), "header.json") && !s,
         std::string("missing export: RAMAC_ERR_IO naming header.json (") + ramac_sampler_last_error() + ")");
  expect(ramac_sampler_load(nullptr, &s) == RAMAC_ERR_ARGUMENT, "NULL path: RAMAC_ERR_ARGUMENT");

  const std::string header = slurp(dir + "/header.json");
  rc = ramac_sampler_load(variant(dir, "not_json", "{\"format\": ").c_str(), &s);
  expect(rc == RAMAC_ERR_FORMAT && has(ramac_sampler_last_error(), "not valid JSON"),
         std::string("cut header: RAMAC_ERR_FORMAT (") + ramac_sampler_last_error() + ")");
  rc = ramac_sampler_load(variant(dir, "version", replace_number(header, "format_version", "99")).c_str(), &s);
  expect(rc == RAMAC_ERR_FORMAT && has(ramac_sampler_last_error(), "format version 99"),
         std::string("other format version: RAMAC_ERR_FORMAT (") + ramac_sampler_last_error() + ")");
  rc = ramac_sampler_load(variant(dir, "hidden", replace_number(header, "hidden", "512")).c_str(), &s);
  expect(rc == RAMAC_ERR_SHAPE && has(ramac_sampler_last_error(), "-DRAMAC_HIDDEN=512"),
         std::string("other hidden width: RAMAC_ERR_SHAPE naming the CMake option (") + ramac_sampler_last_error() + ")");
  const std::string cut = slurp(dir + "/weights.bin").substr(0, 1000);
  rc = ramac_sampler_load(variant(dir, "truncated", header, &cut).c_str(), &s);
  expect(rc == RAMAC_ERR_FORMAT && has(ramac_sampler_last_error(), "truncated"),
         std::string("truncated weights.bin: RAMAC_ERR_FORMAT (") + ramac_sampler_last_error() + ")");
  expect(ramac_sampler_sample(nullptr, nullptr, 1, 0, nullptr, nullptr) == RAMAC_ERR_ARGUMENT,
         "NULL handle: RAMAC_ERR_ARGUMENT");
  ramac_sampler_info info;
  expect(ramac_sampler_get_info(nullptr, &info) == RAMAC_ERR_ARGUMENT, "get_info(NULL): RAMAC_ERR_ARGUMENT");

  rc = ramac_sampler_load(dir.c_str(), &s);  // a good export: loads on a GPU, RAMAC_ERR_NO_DEVICE without one
  expect(rc == RAMAC_OK || rc == RAMAC_ERR_NO_DEVICE,
         std::string("good export: RAMAC_OK or RAMAC_ERR_NO_DEVICE (") + ramac_sampler_last_error() + ")");
  if (rc == RAMAC_OK) {
    expect(ramac_sampler_sample(s, nullptr, -1, 0, nullptr, nullptr) == RAMAC_ERR_ARGUMENT, "batch -1: RAMAC_ERR_ARGUMENT");
    expect(ramac_sampler_sample(s, nullptr, 0, 0, nullptr, nullptr) == RAMAC_OK, "batch 0: nothing to do");
    expect(ramac_sampler_get_info(s, &info) == RAMAC_OK && info.state_dim == 17 && info.action_dim == 6 &&
               info.n_steps == 5 && std::string(info.agent) == "radac",
           "get_info: the export's dims, T and agent");
    ramac_sampler_free(s);
  }
  ramac_sampler_free(nullptr);
  return failures ? 1 : 0;
}

#define CUDA_OK(call)                                                                 \
  do {                                                                                \
    cudaError_t e_ = (call);                                                          \
    if (e_ != cudaSuccess) {                                                          \
      std::printf("FAIL %s: %s\n", #call, cudaGetErrorString(e_));                    \
      return 1;                                                                       \
    }                                                                                 \
  } while (0)

int parity(const std::string& dir) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::printf("SKIP: no CUDA device here; the parity test runs on a GPU machine\n");
    return SKIP;
  }
  CUDA_OK(cudaSetDevice(0));
  CUDA_OK(cudaFree(nullptr));  // the runtime's (primary) context, current on this thread
  ramac_sampler* s = nullptr;
  if (ramac_sampler_load(dir.c_str(), &s) != RAMAC_OK) {
    std::printf("FAIL load: %s\n", ramac_sampler_last_error());
    return 1;
  }
  std::printf("build: %s\n", ramac_sampler_build_info());
  ramac_sampler_info info;
  ramac_sampler_get_info(s, &info);
  ramac::Json tc = ramac::JsonParser(slurp(dir + "/test_case.json")).parse();
  const int B = static_cast<int>(tc.find("batch")->number), S = info.state_dim, A = info.action_dim,
            T = info.n_steps;
  const double atol = tc.find("atol")->number;
  std::vector<float> states = floats(dir + "/states.bin"), noise = floats(dir + "/noise.bin"),
                     expected = floats(dir + "/expected.bin");
  if (states.size() != size_t(B) * S || noise.size() != size_t(T + 1) * B * A || expected.size() != size_t(B) * A) {
    std::printf("FAIL the test case's files do not match test_case.json\n");
    return 1;
  }
  float *d_states, *d_noise, *d_out;
  CUDA_OK(cudaMalloc(&d_states, states.size() * 4));
  CUDA_OK(cudaMalloc(&d_noise, noise.size() * 4));
  CUDA_OK(cudaMalloc(&d_out, expected.size() * 4));
  CUDA_OK(cudaMemcpy(d_states, states.data(), states.size() * 4, cudaMemcpyHostToDevice));
  std::vector<float> got(size_t(B) * A);

  // every compiled configuration at 132 SMs (gen_kernels --sms): one state (the split kernel), the first 5
  // and 2,113 rows (16-row programs, then 64 x 64 tiles past one wave of 16-row ones), the whole case
  for (int b : {1, 5, 2113, B}) {
    if (b > B) continue;
    std::vector<float> sub(size_t(T + 1) * b * A);  // noise[:, :b, :]
    for (int t = 0; t <= T; ++t)
      std::memcpy(&sub[size_t(t) * b * A], &noise[size_t(t) * B * A], size_t(b) * A * 4);
    CUDA_OK(cudaMemcpy(d_noise, sub.data(), sub.size() * 4, cudaMemcpyHostToDevice));
    int rc = ramac_sampler_sample_noise(s, d_states, b, d_noise, d_out, nullptr);
    expect(rc == RAMAC_OK, std::string("sample_noise B=") + std::to_string(b) + " " + ramac_sampler_last_error());
    CUDA_OK(cudaMemcpy(got.data(), d_out, size_t(b) * A * 4, cudaMemcpyDeviceToHost));
    double worst = 0;
    for (size_t i = 0; i < size_t(b) * A; ++i) worst = std::fmax(worst, std::fabs(double(got[i]) - expected[i]));
    char line[160];
    std::snprintf(line, sizeof line, "given noise, B=%d: max |native - reference| = %.3g <= atol %.3g", b, worst, atol);
    expect(worst <= atol, line);
  }

  // in-kernel noise: the same seed repeats exactly, another seed differs, actions stay in range
  std::vector<float> first(got.size()), again(got.size()), other(got.size());
  const struct { uint64_t seed; std::vector<float>* out; } runs[] = {{7, &first}, {7, &again}, {8, &other}};
  for (const auto& run : runs) {
    expect(ramac_sampler_sample(s, d_states, B, run.seed, d_out, nullptr) == RAMAC_OK, "sample (seed)");
    CUDA_OK(cudaMemcpy(run.out->data(), d_out, got.size() * 4, cudaMemcpyDeviceToHost));
  }
  bool in_range = true;
  for (float v : first) in_range = in_range && std::isfinite(v) && std::fabs(v) <= info.max_action;
  expect(first == again, "seed 7 twice: the same actions");
  expect(first != other, "seeds 7 and 8: different actions");
  expect(in_range, "seeded actions finite and within [-max_action, max_action]");
  ramac_sampler_free(s);
  cudaFree(d_states);
  cudaFree(d_noise);
  cudaFree(d_out);
  return failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s errors|parity EXPORT_DIR\n", argv[0]);
    return 2;
  }
  std::string mode = argv[1], dir = argv[2];
  if (mode == "errors") return errors(dir);
  if (mode == "parity") return parity(dir);
  std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
  return 2;
}
