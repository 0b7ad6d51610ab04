// CUDA pieces of attention_bench: event timing and the two ceilings measured in the same run
// (device-to-device copy bandwidth, cuBLAS GEMM rate in fp32 and bf16). Built only with CUDA.
#include <algorithm>
#include <functional>
#include <vector>

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <glog/logging.h>

#include "csrc/core/cuda_check.cuh"

namespace loom::bench {
namespace {

#define BENCH_CUBLAS_CHECK(call)                                                  \
  do {                                                                            \
    cublasStatus_t st_ = (call);                                                  \
    CHECK_EQ(st_, CUBLAS_STATUS_SUCCESS) << "cuBLAS error in " #call ": " << st_; \
  } while (0)

double MedianOf(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

// Median over `reps` of the time of fn() on the default stream, measured with CUDA events
// around each repetition, after `warmup` untimed calls.
double CudaMedianMs(const std::function<void()>& fn, int warmup, int reps) {
  cudaEvent_t start, stop;
  LOOM_CUDA_CHECK(cudaEventCreate(&start));
  LOOM_CUDA_CHECK(cudaEventCreate(&stop));
  for (int i = 0; i < warmup; ++i) fn();
  LOOM_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    LOOM_CUDA_CHECK(cudaEventRecord(start));
    fn();
    LOOM_CUDA_CHECK(cudaEventRecord(stop));
    LOOM_CUDA_CHECK(cudaEventSynchronize(stop));
    float t = 0.0f;
    LOOM_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  LOOM_CUDA_CHECK(cudaGetLastError());
  LOOM_CUDA_CHECK(cudaEventDestroy(start));
  LOOM_CUDA_CHECK(cudaEventDestroy(stop));
  return MedianOf(ms);
}

// Device-to-device copy of 1 GiB: GB/s counting bytes read plus bytes written.
double CudaCopyGBs() {
  const size_t bytes = size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  LOOM_CUDA_CHECK(cudaMalloc(&a, bytes));
  LOOM_CUDA_CHECK(cudaMalloc(&b, bytes));
  LOOM_CUDA_CHECK(cudaMemset(a, 1, bytes));
  const double ms = CudaMedianMs(
      [&] { LOOM_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); }, 2, 10);
  LOOM_CUDA_CHECK(cudaFree(a));
  LOOM_CUDA_CHECK(cudaFree(b));
  return 2.0 * static_cast<double>(bytes) / (ms * 1e-3) / 1e9;
}

// cuBLAS n x n x n GEMM rate in TFLOP/s: fp32 (CUBLAS_COMPUTE_32F, no TF32) or bf16 inputs
// with fp32 accumulation. Inputs are non-zero (a zero matrix can run faster than data).
double CudaGemmTflops(bool bf16, int n) {
  cublasHandle_t handle;
  BENCH_CUBLAS_CHECK(cublasCreate(&handle));
  const size_t elems = static_cast<size_t>(n) * n;
  const size_t esize = bf16 ? 2 : 4;
  void *a = nullptr, *b = nullptr, *c = nullptr;
  LOOM_CUDA_CHECK(cudaMalloc(&a, elems * esize));
  LOOM_CUDA_CHECK(cudaMalloc(&b, elems * esize));
  LOOM_CUDA_CHECK(cudaMalloc(&c, elems * 4));
  // 0x3c: bf16 0x3c3c ~ 0.0115, f32 0x3c3c3c3c ~ 0.0115: small, non-zero, finite.
  LOOM_CUDA_CHECK(cudaMemset(a, 0x3c, elems * esize));
  LOOM_CUDA_CHECK(cudaMemset(b, 0x3c, elems * esize));
  const float alpha = 1.0f, beta = 0.0f;
  const cudaDataType_t in_type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
  const double ms = CudaMedianMs(
      [&] {
        BENCH_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, a,
                                        in_type, n, b, in_type, n, &beta, c, CUDA_R_32F, n,
                                        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      },
      2, 10);
  LOOM_CUDA_CHECK(cudaFree(a));
  LOOM_CUDA_CHECK(cudaFree(b));
  LOOM_CUDA_CHECK(cudaFree(c));
  BENCH_CUBLAS_CHECK(cublasDestroy(handle));
  return 2.0 * n * static_cast<double>(n) * n / (ms * 1e-3) / 1e12;
}

}  // namespace loom::bench
