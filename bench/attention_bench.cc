// Attention forward and forward+backward speed (csrc/model/ops/attention.h), against ceilings
// measured in the same run.
//
//   attention_bench [--device cpu|cuda] [--dtype f32|bf16|all] [--kernel auto|simt|tc|all]
//                   [--reps N] [--warmup N] [--threads N] [--quick] [--json PATH]
//
// Shapes: T' in {104, 1004} (T = 100 / 1000 tokens + 4 CLS), head dim Dh in {16, 32, 64} with
// H = 64 / Dh heads (d = 64; Dh = 16 is the paper config, d = 64 with 4 heads), self-attention
// (Tq = Tk = T'), each with and without padding. Padded batches are pre-padded like the model's:
// 4 CLS keys plus the last L_b tokens valid, L_b spread over [T/4, T]. Batch B: 2048 (T' = 104)
// and 256 (T' = 1004) on CUDA, 32 and 2 on the CPU (--quick divides them by 8).
//
// FLOPs counted: only the work on VALID keys (the padded keys are skipped by both backends):
//   forward = 4 * H * Dh * Tq * sum_b(valid keys of b)  (q.k^T and p.v)
//   forward+backward = 3.5 * forward  (backward = 2.5 * forward: the FlashAttention convention;
//   Loom's two-pass deterministic backward actually computes 3.5 * forward, so the rate of the
//   arithmetic done is 4.5 / 3.5 = 1.29x the rate printed).
// Ceilings (same run): CPU: cblas_sgemm 1024^3 GFLOP/s; CUDA: cuBLAS GEMM 4096^3 TFLOP/s
// (fp32 without TF32 for f32, bf16 for bf16) and the device-to-device copy rate; "%gemm" is the
// attention rate over that GEMM rate, "x floor" the time over the memory floor (every input
// read once, every output written once, at the copy rate).
// Timing: --warmup untimed calls, then the median of --reps; CUDA: events around each call.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <cblas.h>
#include <omp.h>

#include "csrc/core/dtype.h"
#include "csrc/core/gpu.h"
#include "csrc/core/logging.h"
#include "csrc/core/philox.h"
#include "csrc/core/rng.h"
#include "csrc/core/tensor.h"
#include "csrc/model/ops/attention.h"

#if LOOM_WITH_CUDA
namespace loom::bench {  // attention_bench_cuda.cu
double CudaMedianMs(const std::function<void()>& fn, int warmup, int reps);
double CudaCopyGBs();
double CudaGemmTflops(bool bf16, int n);
}  // namespace loom::bench
#endif

namespace {

using loom::Device;
using loom::DType;
using loom::ExecContext;
using loom::Shape;
using loom::Tensor;
using loom::ops::AttentionArgs;
namespace ops = loom::ops;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Options {
  std::string device = "cpu";
  std::string dtype = "";  // default: f32 on the CPU, all on CUDA
  std::string kernel = "all";
  int reps = 0;    // default: 5 on the CPU, 20 on CUDA
  int warmup = 0;  // default: 1 on the CPU, 3 on CUDA
  int threads = 0;
  bool quick = false;
  std::string json;
};

struct Shape4 {
  int64_t batch, t, heads, dh;
  bool padded;
};

struct Row {
  std::string dtype, kernel;
  Shape4 s;
  double valid_fraction = 1.0;
  double fwd_ms = 0, fwdbwd_ms = 0, fwd_tflops = 0, fwdbwd_tflops = 0;
  double fwd_floor_ms = 0, fwdbwd_floor_ms = 0;  // memory floors (CUDA only)
  double gemm_tflops = 0;                        // the ceiling this row is compared with
};

std::vector<uint8_t> PaddedMask(const Shape4& s) {
  std::vector<uint8_t> mask(static_cast<size_t>(s.batch * s.t), 1);
  if (!s.padded) return mask;
  const int64_t tokens = s.t - 4, lo = tokens / 4;
  for (int64_t b = 0; b < s.batch; ++b) {
    // A fixed spread of lengths in [T/4, T] (deterministic, no RNG needed).
    const int64_t len = lo + (b * 7919) % (tokens - lo + 1);
    for (int64_t j = 4; j < s.t; ++j) {
      mask[static_cast<size_t>(b * s.t + j)] = j >= s.t - len ? 1 : 0;
    }
  }
  return mask;
}

// A host tensor of `dtype` with N(0, 1) values (Philox), for q, k, v and grad_o.
Tensor RandomHost(const Shape& shape, DType dtype, uint64_t stream) {
  Tensor f = Tensor::Empty(shape, DType::kF32);
  loom::FillNormal(ExecContext::Cpu(), f, 7, loom::MakeStream(loom::kRngTest, stream, 0), 0.0, 1.0);
  if (dtype == DType::kF32) return f;
  Tensor h = Tensor::Empty(shape, DType::kBF16);
  const float* src = f.data<float>();
  loom::bf16* dst = h.data<loom::bf16>();
  for (int64_t i = 0; i < f.numel(); ++i) dst[i] = loom::FloatToBf16(src[i]);
  return h;
}

double CpuMedianMs(const std::function<void()>& fn, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    const double t0 = Now();
    fn();
    ms.push_back((Now() - t0) * 1e3);
  }
  return Median(ms);
}

double CpuSgemmGflops() {
  const int n = 1024;
  std::vector<float> a(static_cast<size_t>(n) * n, 0.5f), b(a.size(), 0.25f), c(a.size());
  const double ms = CpuMedianMs(
      [&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(),
                    n, 0.0f, c.data(), n);
      },
      1, 3);
  return 2.0 * n * n * static_cast<double>(n) / (ms * 1e-3) / 1e9;
}

void PrintHeader(const char* unit) {
  std::printf("%-5s %-6s %5s %4s %3s %5s %4s %7s | %9s %8s %6s | %9s %8s %6s\n", "dtype", "kernel",
              "T'", "Dh", "H", "B", "pad", "valid", "fwd ms", unit, "%gemm", "fwd+bwd ms", unit,
              "%gemm");
}

}  // namespace

int main(int argc, char** argv) {
  loom::InitLogging(argv[0]);
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "attention_bench: %s needs a value\n", k.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (k == "--device")
      opt.device = value();
    else if (k == "--dtype")
      opt.dtype = value();
    else if (k == "--kernel")
      opt.kernel = value();
    else if (k == "--reps")
      opt.reps = std::stoi(value());
    else if (k == "--warmup")
      opt.warmup = std::stoi(value());
    else if (k == "--threads")
      opt.threads = std::stoi(value());
    else if (k == "--quick")
      opt.quick = true;
    else if (k == "--json")
      opt.json = value();
    else {
      std::fprintf(stderr,
                   "usage: attention_bench [--device cpu|cuda] [--dtype f32|bf16|all] "
                   "[--kernel auto|simt|tc|all] [--reps N] [--warmup N] [--threads N] [--quick] "
                   "[--json PATH]\n");
      return 2;
    }
  }
  const bool cuda = opt.device == "cuda";
  if (!cuda && opt.device != "cpu") {
    std::fprintf(stderr, "attention_bench: --device must be cpu or cuda\n");
    return 2;
  }
  if (cuda && !loom::gpu::CudaAvailable()) {
    std::fprintf(stderr, "attention_bench: no usable GPU: %s\n",
                 loom::gpu::UnavailableReason().c_str());
    return 2;
  }
  if (opt.threads > 0) omp_set_num_threads(opt.threads);
  if (opt.reps <= 0) opt.reps = cuda ? 20 : 5;
  if (opt.warmup <= 0) opt.warmup = cuda ? 3 : 1;
  if (opt.dtype.empty()) opt.dtype = cuda ? "all" : "f32";

  // Variants: (dtype, kernel).
  std::vector<std::pair<DType, ops::AttentionCudaKernel>> variants;
  const bool want_f32 = opt.dtype == "f32" || opt.dtype == "all";
  const bool want_bf16 = cuda && (opt.dtype == "bf16" || opt.dtype == "all");
  if (want_f32) variants.push_back({DType::kF32, ops::AttentionCudaKernel::kAuto});
  if (want_bf16) {
    if (opt.kernel == "tc" || opt.kernel == "all" || opt.kernel == "auto") {
      variants.push_back({DType::kBF16, ops::AttentionCudaKernel::kTensorCore});
    }
    if (opt.kernel == "simt" || opt.kernel == "all") {
      variants.push_back({DType::kBF16, ops::AttentionCudaKernel::kSimt});
    }
  }
  if (variants.empty()) {
    std::fprintf(stderr, "attention_bench: nothing to run for --dtype %s on %s\n",
                 opt.dtype.c_str(), opt.device.c_str());
    return 2;
  }

  // Ceilings.
  double copy_gbs = 0, gemm_f32 = 0, gemm_bf16 = 0;
#if LOOM_WITH_CUDA
  if (cuda) {
    copy_gbs = loom::bench::CudaCopyGBs();
    gemm_f32 = loom::bench::CudaGemmTflops(false, 4096);
    if (want_bf16) gemm_bf16 = loom::bench::CudaGemmTflops(true, 4096);
    std::printf(
        "device %s: copy %.0f GB/s (read+write), cuBLAS 4096^3: f32 %.1f TFLOP/s, "
        "bf16 %.1f TFLOP/s\n",
        loom::gpu::DeviceName(0).c_str(), copy_gbs, gemm_f32, gemm_bf16);
  }
#endif
  if (!cuda) {
    gemm_f32 = CpuSgemmGflops() * 1e-3;
    std::printf("cpu: %d OpenMP threads, cblas_sgemm 1024^3 %.1f GFLOP/s\n", omp_get_max_threads(),
                gemm_f32 * 1e3);
  }
  const char* unit = cuda ? "TFLOP/s" : "GFLOP/s";
  const double unit_scale = cuda ? 1.0 : 1e3;
  std::printf("FLOPs count valid keys only; fwd+bwd = 3.5 x fwd (FlashAttention convention).\n");
  PrintHeader(unit);

  const ExecContext ctx = cuda ? ExecContext::Cuda(0) : ExecContext::Cpu();
  const int div = opt.quick ? 8 : 1;
  std::vector<Row> rows;
  for (int64_t t : {104, 1004}) {
    for (int64_t dh : {16, 32, 64}) {
      for (bool padded : {true, false}) {
        const int64_t batch = (cuda ? (t < 500 ? 2048 : 256) : (t < 500 ? 32 : 2)) / div;
        const Shape4 s{std::max<int64_t>(batch, 1), t, 64 / dh, dh, padded};
        const std::vector<uint8_t> mask = PaddedMask(s);
        int64_t valid = 0;
        for (uint8_t m : mask) valid += m;
        const Shape qshape{s.batch, s.t, s.heads, s.dh};
        for (const auto& [dtype, kernel] : variants) {
          AttentionArgs args;
          args.cuda_kernel = kernel;
          const Device dev = ctx.device;
          Tensor q = RandomHost(qshape, dtype, 1).To(dev), k = RandomHost(qshape, dtype, 2).To(dev),
                 v = RandomHost(qshape, dtype, 3).To(dev),
                 go = RandomHost(qshape, dtype, 4).To(dev);
          Tensor m = Tensor::FromVector(mask, Shape{s.batch, s.t}).To(dev);
          Tensor o = Tensor::Empty(qshape, dtype, dev);
          Tensor lse = Tensor::Empty(ops::AttentionLseSpec(q.spec()), dev);
          Tensor gq = Tensor::Empty(qshape, dtype, dev), gk = Tensor::Empty(qshape, dtype, dev),
                 gv = Tensor::Empty(qshape, dtype, dev);
          auto fwd = [&] { ops::AttentionForward(ctx, args, q, k, v, m, o, lse); };
          auto fwdbwd = [&] {
            ops::AttentionForward(ctx, args, q, k, v, m, o, lse);
            ops::AttentionBackward(ctx, args, q, k, v, m, o, lse, go, gq, gk, gv);
          };
          Row r;
          r.dtype = loom::DTypeName(dtype);
          r.kernel = !cuda                                                               ? "cpu"
                     : dtype == DType::kF32 || kernel == ops::AttentionCudaKernel::kSimt ? "simt"
                                                                                         : "tc";
          r.s = s;
          r.valid_fraction = static_cast<double>(valid) / static_cast<double>(mask.size());
#if LOOM_WITH_CUDA
          if (cuda) {
            r.fwd_ms = loom::bench::CudaMedianMs(fwd, opt.warmup, opt.reps);
            r.fwdbwd_ms = loom::bench::CudaMedianMs(fwdbwd, opt.warmup, opt.reps);
          }
#endif
          if (!cuda) {
            r.fwd_ms = CpuMedianMs(fwd, opt.warmup, opt.reps);
            r.fwdbwd_ms = CpuMedianMs(fwdbwd, opt.warmup, opt.reps);
          }
          const double fwd_flops = 4.0 * static_cast<double>(s.heads * s.dh * s.t * valid);
          r.fwd_tflops = fwd_flops / (r.fwd_ms * 1e-3) / 1e12;
          r.fwdbwd_tflops = 3.5 * fwd_flops / (r.fwdbwd_ms * 1e-3) / 1e12;
          r.gemm_tflops = dtype == DType::kBF16 ? gemm_bf16 : gemm_f32;
          if (cuda && copy_gbs > 0) {
            const double x = static_cast<double>(q.nbytes()), l = static_cast<double>(lse.nbytes());
            r.fwd_floor_ms = (4 * x + l) / (copy_gbs * 1e9) * 1e3;
            r.fwdbwd_floor_ms =
                (12 * x + 2 * l + static_cast<double>(m.nbytes()) * 3) / (copy_gbs * 1e9) * 1e3;
          }
          std::printf(
              "%-5s %-6s %5lld %4lld %3lld %5lld %4s %6.1f%% | %9.3f %8.2f %5.1f%% | %9.3f "
              "%8.2f %5.1f%%\n",
              r.dtype.c_str(), r.kernel.c_str(), static_cast<long long>(s.t),
              static_cast<long long>(s.dh), static_cast<long long>(s.heads),
              static_cast<long long>(s.batch), padded ? "yes" : "no", 100 * r.valid_fraction,
              r.fwd_ms, r.fwd_tflops * unit_scale, 100 * r.fwd_tflops / r.gemm_tflops, r.fwdbwd_ms,
              r.fwdbwd_tflops * unit_scale, 100 * r.fwdbwd_tflops / r.gemm_tflops);
          std::fflush(stdout);
          rows.push_back(r);
        }
      }
    }
  }
  if (cuda) {
    std::printf("memory floors (time / floor): ");
    for (const Row& r : rows) {
      if (r.s.dh == 64 && !r.s.padded) {
        std::printf("%s-%s T'=%lld fwd %.1fx fwd+bwd %.1fx; ", r.dtype.c_str(), r.kernel.c_str(),
                    static_cast<long long>(r.s.t), r.fwd_ms / r.fwd_floor_ms,
                    r.fwdbwd_ms / r.fwdbwd_floor_ms);
      }
    }
    std::printf("\n");
  }

  if (!opt.json.empty()) {
    std::ofstream out(opt.json);
    out << "{\n  \"bench\": \"attention\",\n  \"device\": \""
        << (cuda ? loom::gpu::DeviceName(0) : std::string("cpu")) << "\",\n"
        << "  \"threads\": " << omp_get_max_threads() << ",\n"
        << "  \"flops_counted\": \"valid keys only; fwd+bwd = 3.5 x fwd\",\n"
        << "  \"copy_gbs\": " << copy_gbs << ",\n  \"gemm_tflops_f32\": " << gemm_f32
        << ",\n  \"gemm_tflops_bf16\": " << gemm_bf16 << ",\n  \"rows\": [\n";
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      out << "    {\"dtype\": \"" << r.dtype << "\", \"kernel\": \"" << r.kernel
          << "\", \"T\": " << r.s.t << ", \"dh\": " << r.s.dh << ", \"heads\": " << r.s.heads
          << ", \"batch\": " << r.s.batch << ", \"padded\": " << (r.s.padded ? "true" : "false")
          << ", \"valid_fraction\": " << r.valid_fraction << ", \"fwd_ms\": " << r.fwd_ms
          << ", \"fwdbwd_ms\": " << r.fwdbwd_ms << ", \"fwd_tflops\": " << r.fwd_tflops
          << ", \"fwdbwd_tflops\": " << r.fwdbwd_tflops << ", \"fwd_floor_ms\": " << r.fwd_floor_ms
          << ", \"fwdbwd_floor_ms\": " << r.fwdbwd_floor_ms << "}"
          << (i + 1 < rows.size() ? "," : "") << "\n";
    }
    out << "  ]\n}\n";
    std::printf(out ? "wrote %s\n" : "could not write %s\n", opt.json.c_str());
  }
  return 0;
}
