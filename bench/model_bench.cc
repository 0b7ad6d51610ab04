// model_bench: forward + backward speed of Loom's dense InterFormer, samples/s (fp32).
//
//   model_bench [--config small|paper|all] [--device cpu|cuda] [--iters 10] [--warmup 2]
//               [--json PATH] [--seed 0] [--positions packed|full]
//
// Configs (other model fields at their model.proto defaults), the same as
// tests/reference/bench_torch.py so the two can be compared in one script (model_bench.sh):
//   small: B=512,  d=32, n=12 sparse, m=2 dense, k=3 sequences of T=50,  L=2, 2 heads
//   paper: B=2048, d=64, n=20 sparse, m=1 dense, k=3 sequences of T=100, L=3, 4 heads
// One step = zero the parameter gradients, forward, mean BCE loss, backward (parameter and
// input gradients) — what the trainer's dense step computes, without the optimizer.
// Inputs follow the parity batch semantics: random values, pre-padded sequences of mixed
// lengths (row 0 full, row 1 empty, row 2 one token, the rest uniform in [0, T]).
// Timing: --warmup untimed steps, then the median (and min) of --iters timed steps; on CUDA
// each step ends with a stream synchronize. The same run also times one large SGEMM
// (the BLAS/cuBLAS floor of this machine) and reports the model's GEMM FLOP rate as a ratio
// of it. Threads: OMP_NUM_THREADS as set by the caller (the CPU GEMM sets OpenBLAS to one
// thread and splits products over the OpenMP team itself; sgemm_kernel says whether f32
// products ran OpenBLAS or Loom's AVX2 kernel, LOOM_CPU_SGEMM=blas|loom|auto chooses).
// --positions full turns off the CPU's packed positions (InterFormer::SetPackedPositions):
// every padded position is computed, as in the reference.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "csrc/core/gpu.h"
#include "csrc/core/logging.h"
#include "csrc/core/philox.h"
#include "csrc/core/rng.h"
#include "csrc/model/interformer.h"
#include "csrc/model/ops/gemm.h"
#include "csrc/proto/model.pb.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace loom {
namespace {

struct BenchConfig {
  std::string name;
  int64_t batch = 0, seq_len = 0;
  proto::ModelConfig model;
};

BenchConfig Small() {
  BenchConfig c;
  c.name = "small";
  c.batch = 512;
  c.seq_len = 50;
  c.model.set_embedding_dim(32);
  c.model.set_num_sparse_features(12);
  c.model.set_num_dense_features(2);
  c.model.set_num_sequences(3);
  c.model.set_num_layers(2);
  c.model.set_num_heads(2);
  return c;
}

BenchConfig Paper() {
  BenchConfig c;
  c.name = "paper";
  c.batch = 2048;
  c.seq_len = 100;
  c.model.set_embedding_dim(64);
  c.model.set_num_sparse_features(20);
  c.model.set_num_dense_features(1);
  c.model.set_num_sequences(3);
  c.model.set_num_layers(3);
  c.model.set_num_heads(4);
  return c;
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Result {
  std::string config;
  int64_t batch = 0, params = 0;
  double median_s = 0, min_s = 0, sps = 0, loss = 0;
};

// A host tensor, then moved to `device`.
Tensor OnDevice(const Tensor& host, Device device) {
  return device.is_cpu() ? host : host.To(device);
}

Result RunConfig(const BenchConfig& bc, Device device, int iters, int warmup, uint64_t seed,
                 bool packed) {
  auto made = model::InterFormer::Create(bc.model, bc.batch, bc.seq_len, DType::kF32, device);
  LOOM_CHECK_OK(made.status());
  model::InterFormer& m = **made;
  m.SetPackedPositions(packed);
  m.Initialize(seed);
  const model::ModelDims& D = m.dims();
  const int64_t B = bc.batch, T = bc.seq_len;
  const ExecContext ctx{device, Stream{}};
  auto random = [&](const Shape& s, uint64_t stream) {
    Tensor t = Tensor::Empty(s, DType::kF32);
    FillNormal(ExecContext::Cpu(), t.view(), seed + 1, MakeStream(kRngTest, stream, 0), 0.0, 1.0);
    return OnDevice(t, device);
  };
  Tensor dense = random(Shape{B, D.m}, 1), sparse = random(Shape{B, D.n, D.d}, 2);
  std::vector<Tensor> seqs;
  for (int64_t j = 0; j < D.k; ++j) seqs.push_back(random(Shape{B, T, D.d}, 3 + j));
  Tensor mask_h = Tensor::Zeros(Shape{B, T}, DType::kU8),
         labels_h = Tensor::Empty(Shape{B}, DType::kF32);
  uint64_t state = seed * 2654435761u + 12345;
  for (int64_t i = 0; i < B; ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    const int64_t len = i == 0   ? T
                        : i == 1 ? 0
                        : i == 2 ? 1
                                 : static_cast<int64_t>((state >> 33) % (T + 1));
    for (int64_t t = T - len; t < T; ++t) mask_h.data<uint8_t>()[i * T + t] = 1;
    labels_h.data<float>()[i] = static_cast<float>((state >> 20) & 1);
  }
  Tensor mask = OnDevice(mask_h, device), labels = OnDevice(labels_h, device);
  model::DenseInputs in;
  in.dense = dense;
  in.sparse = sparse;
  for (const Tensor& s : seqs) in.seq.push_back(s);
  in.seq_mask = mask;
  Tensor logits = Tensor::Empty(Shape{B}, DType::kF32, device);
  Tensor loss = Tensor::Empty(Shape{1}, DType::kF32, device);
  Tensor grad_logits = Tensor::Empty(Shape{B}, DType::kF32, device);
  auto step = [&] {
    m.parameters().ZeroGrad(ctx.stream);
    m.Forward(ctx, in, logits);
    m.Loss(ctx, labels, loss, grad_logits);
    m.Backward(ctx, grad_logits);
    if (device.is_cuda()) gpu::StreamSynchronize(ctx.stream);
  };
  for (int i = 0; i < warmup; ++i) step();
  std::vector<double> times;
  for (int i = 0; i < iters; ++i) {
    const double t0 = Now();
    step();
    times.push_back(Now() - t0);
  }
  Result r;
  r.config = bc.name;
  r.batch = B;
  r.params = m.parameters().total_elements();
  r.median_s = Median(times);
  r.min_s = *std::min_element(times.begin(), times.end());
  r.sps = static_cast<double>(B) / r.median_s;
  r.loss = loss.To(Device::Cpu()).data<float>()[0];
  return r;
}

// GFLOP/s of one large square SGEMM: the dense-math ceiling of this machine and thread count.
double SgemmGflops(Device device) {
  const int64_t n = 2048;
  Tensor a = Tensor::Zeros(Shape{n, n}, DType::kF32, device);
  Tensor b = Tensor::Zeros(Shape{n, n}, DType::kF32, device);
  Tensor c = Tensor::Zeros(Shape{n, n}, DType::kF32, device);
  const ExecContext ctx{device, Stream{}};
  std::vector<double> times;
  for (int i = 0; i < 5; ++i) {
    const double t0 = Now();
    ops::Gemm(ctx, ops::GemmArgs{}, a, b, c);
    if (device.is_cuda()) gpu::StreamSynchronize(ctx.stream);
    if (i > 0) times.push_back(Now() - t0);
  }
  return 2.0 * n * n * n / Median(times) / 1e9;
}

int Main(int argc, char** argv) {
  std::string which = "all", device_name = "cpu", json, positions = "packed";
  int iters = 10, warmup = 2;
  uint64_t seed = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "model_bench: missing value after %s\n", k.c_str());
      return 2;
    }
    const std::string v = argv[++i];
    if (k == "--config") {
      which = v;
    } else if (k == "--device") {
      device_name = v;
    } else if (k == "--iters") {
      iters = std::max(1, std::atoi(v.c_str()));
    } else if (k == "--warmup") {
      warmup = std::max(0, std::atoi(v.c_str()));
    } else if (k == "--json") {
      json = v;
    } else if (k == "--positions") {
      positions = v;
    } else if (k == "--seed") {
      seed = std::strtoull(v.c_str(), nullptr, 10);
    } else {
      std::fprintf(stderr,
                   "usage: model_bench [--config small|paper|all] [--device cpu|cuda] "
                   "[--iters 10] [--warmup 2] [--json PATH] [--seed 0] "
                   "[--positions packed|full]\n");
      return 2;
    }
  }
  Device device = Device::Cpu();
  std::string device_desc = "cpu";
  if (device_name == "cuda") {
    if (!gpu::CudaAvailable()) {
      std::fprintf(stderr, "model_bench: --device cuda: %s\n", gpu::UnavailableReason().c_str());
      return 2;
    }
    device = Device::Cuda(0);
    device_desc = gpu::DeviceName(0);
  } else if (device_name != "cpu") {
    std::fprintf(stderr, "model_bench: --device must be cpu or cuda\n");
    return 2;
  }
  if (positions != "packed" && positions != "full") {
    std::fprintf(stderr, "model_bench: --positions must be packed or full\n");
    return 2;
  }
  std::vector<BenchConfig> configs;
  if (which == "small" || which == "all") configs.push_back(Small());
  if (which == "paper" || which == "all") configs.push_back(Paper());
  if (configs.empty()) {
    std::fprintf(stderr, "model_bench: --config must be small, paper or all\n");
    return 2;
  }
  int threads = 1;
#ifdef _OPENMP
  threads = omp_get_max_threads();
#endif
  const double sgemm = SgemmGflops(device);
  // Which f32 GEMM the CPU ran: cblas_sgemm or Loom's AVX2 kernel (csrc/model/ops/gemm.h).
  const std::string sgemm_kernel =
      device.is_cpu() ? (ops::internal::CpuSgemmUsesLoomKernel() ? "loom-avx2" : "blas") : "cublas";
  std::printf(
      "model_bench device=%s omp_threads=%d positions=%s sgemm_kernel=%s sgemm_2048=%.1f "
      "GFLOP/s\n",
      device_desc.c_str(), threads, positions.c_str(), sgemm_kernel.c_str(), sgemm);
  std::printf("%-6s %6s %10s %12s %12s %12s %10s\n", "config", "B", "params", "median_ms", "min_ms",
              "samples/s", "loss");
  std::vector<Result> results;
  for (const BenchConfig& bc : configs) {
    const Result r = RunConfig(bc, device, iters, warmup, seed, positions == "packed");
    std::printf("%-6s %6lld %10lld %12.1f %12.1f %12.1f %10.5f\n", r.config.c_str(),
                static_cast<long long>(r.batch), static_cast<long long>(r.params), r.median_s * 1e3,
                r.min_s * 1e3, r.sps, r.loss);
    std::fflush(stdout);
    results.push_back(r);
  }
  if (!json.empty()) {
    std::ofstream f(json);
    if (!f) {
      std::fprintf(stderr, "model_bench: cannot write %s\n", json.c_str());
      return 1;
    }
    f << "{\n  \"benchmark\": \"model_bench\",\n  \"device\": \"" << device_name
      << "\",\n  \"device_name\": \"" << device_desc << "\",\n  \"omp_threads\": " << threads
      << ",\n  \"positions\": \"" << positions << "\",\n  \"sgemm_kernel\": \"" << sgemm_kernel
      << "\",\n  \"iters\": " << iters << ",\n  \"warmup\": " << warmup
      << ",\n  \"sgemm_2048_gflops\": " << sgemm << ",\n  \"results\": [\n";
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      f << "    {\"config\": \"" << r.config << "\", \"batch\": " << r.batch
        << ", \"parameters\": " << r.params << ", \"median_step_s\": " << r.median_s
        << ", \"min_step_s\": " << r.min_s << ", \"samples_per_sec\": " << r.sps
        << ", \"loss\": " << r.loss << "}" << (i + 1 < results.size() ? "," : "") << "\n";
    }
    f << "  ]\n}\n";
  }
  return 0;
}

}  // namespace
}  // namespace loom

int main(int argc, char** argv) {
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  return loom::Main(argc, argv);
}
