// Latency and throughput of the native chain sampler, end to end from C++.
//
//   ramac_sampler_bench --export DIR [--batch 1 16 256 4096 65536] [--iters 200] [--warmup 20]
//                       [--launch plain|graph|both] [--noise] [--out bench.json]
//
// Per batch size and launch mode:
//   latency: one call then a stream synchronise, timed on the host, `iters` times: p50 / p90 / p99;
//   throughput: `iters` calls back to back, one synchronise: actions per second.
// plain: ramac_sampler_sample (two seed memsets + the kernel); graph: the call (seed read from
// device memory) captured once in a CUDA graph and replayed. --noise: the given-noise kernel.
// NVTX ranges (bench/B=.../MODE, and ramac/sample per call) when the toolkit's nvtx3 headers exist.
// Exit 77 without a CUDA device.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ramac_sampler.h"

#if defined(RAMAC_HAVE_NVTX)
#include <nvtx3/nvToolsExt.h>
#define RANGE_PUSH(name) nvtxRangePushA(name)
#define RANGE_POP() nvtxRangePop()
#else
#define RANGE_PUSH(name) ((void)0)
#define RANGE_POP() ((void)0)
#endif

namespace {

struct Options {
  std::string export_dir, out = "ramac_sampler_bench.json", launch = "both";
  std::vector<int> batches{1, 16, 256, 4096, 65536};
  int iters = 200, warmup = 20;
  bool noise = false;
};

struct Row {
  int batch;
  std::string launch;
  double p50, p90, p99, mean, min, per_call_us, actions_per_s;
};

#define CHECK_CUDA(call)                                                                        \
  do {                                                                                          \
    cudaError_t e_ = (call);                                                                    \
    if (e_ != cudaSuccess) {                                                                    \
      std::fprintf(stderr, "ramac_sampler_bench: %s failed: %s\n", #call, cudaGetErrorString(e_)); \
      std::exit(1);                                                                             \
    }                                                                                           \
  } while (0)

void die(const std::string& what) {
  std::fprintf(stderr, "ramac_sampler_bench: %s\n", what.c_str());
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--export") o.export_dir = value();
    else if (a == "--out") o.out = value();
    else if (a == "--iters") o.iters = std::atoi(value().c_str());
    else if (a == "--warmup") o.warmup = std::atoi(value().c_str());
    else if (a == "--launch") o.launch = value();
    else if (a == "--noise") o.noise = true;
    else if (a == "--batch") {
      o.batches.clear();
      while (i + 1 < argc && argv[i + 1][0] != '-') o.batches.push_back(std::atoi(argv[++i]));
    } else if (a == "--help" || a == "-h") {
      std::puts("usage: ramac_sampler_bench --export DIR [--batch B...] [--iters N] [--warmup N] "
                "[--launch plain|graph|both] [--noise] [--out FILE.json]");
      std::exit(0);
    } else die("unknown option " + a + " (see --help)");
  }
  if (o.export_dir.empty()) die("--export DIR is required (write one with `ramac export RUN_DIR --out DIR`)");
  if (o.iters < 1 || o.warmup < 0 || o.batches.empty()) die("--iters >= 1, --warmup >= 0 and one --batch at least");
  for (int b : o.batches)
    if (b < 1) die("batch sizes must be >= 1");
  if (o.launch != "plain" && o.launch != "graph" && o.launch != "both") die("--launch is plain, graph or both");
  return o;
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  size_t k = static_cast<size_t>(q * (v.size() - 1) + 0.5);
  return v[std::min(k, v.size() - 1)];
}

using Clock = std::chrono::steady_clock;

template <class F>
Row measure(const Options& o, int batch, const std::string& launch, F call, cudaStream_t stream) {
  std::string name = "bench/B=" + std::to_string(batch) + "/" + launch;
  RANGE_PUSH(name.c_str());
  for (int i = 0; i < o.warmup; ++i) call();
  CHECK_CUDA(cudaStreamSynchronize(stream));
  std::vector<double> us;
  for (int i = 0; i < o.iters; ++i) {
    auto t0 = Clock::now();
    RANGE_PUSH("ramac/sample");
    call();
    CHECK_CUDA(cudaStreamSynchronize(stream));
    RANGE_POP();
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  auto t0 = Clock::now();
  for (int i = 0; i < o.iters; ++i) call();
  CHECK_CUDA(cudaStreamSynchronize(stream));
  double per_call = std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / o.iters;
  RANGE_POP();
  double mean = 0;
  for (double u : us) mean += u / us.size();
  return Row{batch, launch, percentile(us, 0.5), percentile(us, 0.9), percentile(us, 0.99), mean,
             *std::min_element(us.begin(), us.end()), per_call, batch / (per_call * 1e-6)};
}

void write_json(const Options& o, const std::vector<Row>& rows, const std::string& device, const ramac_sampler_info& info) {
  FILE* f = std::fopen(o.out.c_str(), "w");
  if (!f) die("cannot write " + o.out);
  std::fprintf(f, "{\n \"what\": \"ramac_sampler_bench\",\n \"device\": \"%s\",\n \"build\": \"%s\",\n", device.c_str(),
               ramac_sampler_build_info());
  std::fprintf(f, " \"export\": \"%s\",\n \"agent\": \"%s\",\n \"state_dim\": %d, \"action_dim\": %d, \"hidden\": %d, "
               "\"T\": %d,\n \"noise\": \"%s\", \"iters\": %d, \"warmup\": %d,\n \"rows\": [\n",
               o.export_dir.c_str(), info.agent, info.state_dim, info.action_dim, info.hidden, info.n_steps,
               o.noise ? "given" : "philox", o.iters, o.warmup);
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    std::fprintf(f, "  {\"batch\": %d, \"launch\": \"%s\", \"p50_us\": %.2f, \"p90_us\": %.2f, \"p99_us\": %.2f, "
                 "\"mean_us\": %.2f, \"min_us\": %.2f, \"back_to_back_us\": %.2f, \"actions_per_s\": %.4g}%s\n",
                 r.batch, r.launch.c_str(), r.p50, r.p90, r.p99, r.mean, r.min, r.per_call_us, r.actions_per_s,
                 i + 1 < rows.size() ? "," : "");
  }
  std::fprintf(f, " ]\n}\n");
  std::fclose(f);
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::printf("SKIP: no CUDA device here; ramac_sampler_bench runs on a GPU machine\n");
    return 77;
  }
  CHECK_CUDA(cudaSetDevice(0));
  CHECK_CUDA(cudaFree(nullptr));
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  ramac_sampler* s = nullptr;
  if (ramac_sampler_load(o.export_dir.c_str(), &s) != RAMAC_OK) die(ramac_sampler_last_error());
  ramac_sampler_info info;
  ramac_sampler_get_info(s, &info);
  std::printf("ramac_sampler_bench on %s: %s; export %s (S=%d, A=%d, H=%d, T=%d), %s noise\n", prop.name,
              ramac_sampler_build_info(), o.export_dir.c_str(), info.state_dim, info.action_dim, info.hidden,
              info.n_steps, o.noise ? "given" : "Philox");
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const int max_b = *std::max_element(o.batches.begin(), o.batches.end());
  std::mt19937 rng(0);
  std::normal_distribution<float> normal;
  std::vector<float> host(std::max(size_t(max_b) * info.state_dim, size_t(info.n_steps + 1) * max_b * info.action_dim));
  for (float& v : host) v = normal(rng);
  float *states, *noise, *actions;
  int64_t* seed;
  CHECK_CUDA(cudaMalloc(&states, size_t(max_b) * info.state_dim * 4));
  CHECK_CUDA(cudaMalloc(&noise, size_t(info.n_steps + 1) * max_b * info.action_dim * 4));
  CHECK_CUDA(cudaMalloc(&actions, size_t(max_b) * info.action_dim * 4));
  CHECK_CUDA(cudaMalloc(&seed, 8));
  CHECK_CUDA(cudaMemcpy(states, host.data(), size_t(max_b) * info.state_dim * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(noise, host.data(), size_t(info.n_steps + 1) * max_b * info.action_dim * 4,
                        cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemset(seed, 0, 8));

  std::vector<Row> rows;
  uint64_t next_seed = 1;
  for (int b : o.batches) {
    auto sample = [&]() {  // plain: what an application calls
      int rc = o.noise ? ramac_sampler_sample_noise(s, states, b, noise, actions, stream)
                       : ramac_sampler_sample(s, states, b, next_seed++, actions, stream);
      if (rc != RAMAC_OK) die(ramac_sampler_last_error());
    };
    if (o.launch != "graph") rows.push_back(measure(o, b, "plain", sample, stream));
    if (o.launch != "plain") {
      cudaGraph_t graph;
      cudaGraphExec_t exec;
      CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
      int rc = o.noise ? ramac_sampler_sample_noise(s, states, b, noise, actions, stream)
                       : ramac_sampler_sample_seed_dev(s, states, b, seed, actions, stream);
      CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
      if (rc != RAMAC_OK) die(ramac_sampler_last_error());
      CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
      rows.push_back(measure(o, b, "graph", [&]() { CHECK_CUDA(cudaGraphLaunch(exec, stream)); }, stream));
      CHECK_CUDA(cudaGraphExecDestroy(exec));
      CHECK_CUDA(cudaGraphDestroy(graph));
    }
    for (size_t i = rows.size() - (o.launch == "both" ? 2 : 1); i < rows.size(); ++i)
      std::printf("B=%-6d %-5s p50 %9.1f us  p90 %9.1f us  p99 %9.1f us  back-to-back %9.1f us  %.3g actions/s\n",
                  rows[i].batch, rows[i].launch.c_str(), rows[i].p50, rows[i].p90, rows[i].p99, rows[i].per_call_us,
                  rows[i].actions_per_s);
  }
  write_json(o, rows, prop.name, info);
  std::printf("wrote %s\n", o.out.c_str());
  ramac_sampler_free(s);
  cudaFree(states);
  cudaFree(noise);
  cudaFree(actions);
  cudaFree(seed);
  cudaStreamDestroy(stream);
  return 0;
}
