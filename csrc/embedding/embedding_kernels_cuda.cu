// CUDA twins of embedding_kernels_cpu.cc. Same inputs, same outputs: the float arithmetic is
// written with explicit _rn intrinsics (no FMA contraction), so pooled outputs and gradient
// contributions are the CPU's bits. Dedup uses CUB's radix sort (stable) and run-length
// encoding; row copies use 16-byte vector loads when the slice is 4-float aligned.
#include "csrc/embedding/embedding_kernels.h"

#include <algorithm>

#include <cub/cub.cuh>

#include "csrc/core/cuda_check.cuh"
#include "csrc/core/gpu.h"
#include "csrc/embedding/bag_rules.h"
#include "csrc/embedding/embedding_spec.h"
#include "csrc/embedding/id_map.h"

namespace loom::embedding::internal {
namespace {

constexpr int kWarp = 32;
constexpr int kBlock = 256;

__device__ __forceinline__ bool BagIsBad(const FeatureRoute& fr, int64_t first, int64_t len,
                                         int64_t raw_len) {
  return BagTooLong(fr, raw_len) || FirstBadDirectPos(fr, first, len) >= 0;
}

// One thread per bag: item count (at begin[g + 1]) and the first bad bag (atomicMin).
__global__ void CountItemsKernel(BucketizeArgs a, unsigned long long* first_bad) {
  const int64_t num_bags = a.batch * a.num_features;
  const int64_t g = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (g >= num_bags) return;
  const FeatureRoute fr = a.features[g % a.num_features];
  int64_t first, len, raw_len;
  BagRange(fr, g / a.num_features, &first, &len, &raw_len);
  const bool cw = fr.strategy == static_cast<int>(Strategy::kColumnWise);
  a.bag_item_begin[g + 1] = len * (cw ? fr.num_parts : 1);
  if (BagIsBad(fr, first, len, raw_len)) atomicMin(first_bad, static_cast<unsigned long long>(g));
}

__global__ void DescribeBadBagKernel(BucketizeArgs a, const unsigned long long* first_bad,
                                     BucketizeError* error) {
  const int64_t g = static_cast<int64_t>(*first_bad);
  const int f = static_cast<int>(g % a.num_features);
  DescribeBadBag(a.features[f], f, g / a.num_features, error);
}

// One thread per bag: the bag's items in canonical order (as BucketizeCpu pass 2).
__global__ void FillItemsKernel(BucketizeArgs a) {
  const int64_t num_bags = a.batch * a.num_features;
  const int64_t g = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (g >= num_bags) return;
  const int64_t b = g / a.num_features;
  const FeatureRoute fr = a.features[g % a.num_features];
  int64_t first, len, raw_len;
  BagRange(fr, b, &first, &len, &raw_len);
  int64_t item = a.bag_item_begin[g];
  const bool seq = fr.kind == static_cast<int>(FeatureKind::kSequence);
  const float inv_len = len > 0 ? __fdiv_rn(1.0f, static_cast<float>(len)) : 0.0f;
  for (int64_t p = 0; p < len; ++p) {
    const int64_t row = MapId(fr.ids[first + p], fr.mapping, fr.num_rows, fr.hash_seed);
    float scale = 1.0f;
    if (!seq && fr.pooling == static_cast<int>(Pooling::kMean)) scale = inv_len;
    if (!seq && fr.pooling == static_cast<int>(Pooling::kWeightedSum))
      scale = fr.weights[first + p];
    const int64_t out_base = seq ? (b * fr.max_length + (fr.max_length - len + p)) * fr.dim
                                 : b * fr.out_stride + fr.out_col;
    int part = fr.part_begin;
    int64_t local = row;
    int parts_here = 1;
    if (fr.strategy == static_cast<int>(Strategy::kRowWise)) {
      part = fr.part_begin + static_cast<int>(row % fr.num_parts);
      local = row / fr.num_parts;
    } else if (fr.strategy == static_cast<int>(Strategy::kColumnWise)) {
      parts_here = fr.num_parts;
    }
    for (int k = 0; k < parts_here; ++k, ++item) {
      const RoutePart rp = a.parts[part + k];
      a.item_key[item] =
          (static_cast<uint64_t>(rp.slot) << a.row_bits) | static_cast<uint64_t>(local);
      a.item_part[item] = part + k;
      a.item_scale[item] = scale;
      a.item_out[item] = out_base + rp.col_begin;
    }
  }
}

__global__ void IotaKernel(int32_t* v, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) v[i] = static_cast<int32_t>(i);
}

__global__ void FinishUniqueKernel(int32_t* unique_begin, const int64_t* num_runs, int64_t n) {
  unique_begin[*num_runs] = static_cast<int32_t>(n);
}

// inverse[perm[j]] = the run containing sorted position j (binary search in unique_begin).
__global__ void InverseKernel(const int32_t* perm, const int32_t* unique_begin,
                              const int64_t* num_runs, int64_t n, int32_t* inverse) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= n) return;
  int64_t lo = 0, hi = *num_runs - 1;  // last run with begin <= j
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (unique_begin[mid] <= j) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  inverse[perm[j]] = static_cast<int32_t>(lo);
}

// Copies w floats; 16-byte vectors when both ends are 16-byte aligned.
__device__ __forceinline__ void WarpCopy(float* dst, const float* src, int w, int lane) {
  if ((reinterpret_cast<uintptr_t>(dst) & 15) == 0 &&
      (reinterpret_cast<uintptr_t>(src) & 15) == 0) {
    const int w4 = w / 4;
    const float4* s4 = reinterpret_cast<const float4*>(src);
    float4* d4 = reinterpret_cast<float4*>(dst);
    for (int c = lane; c < w4; c += kWarp) d4[c] = __ldg(s4 + c);
    for (int c = 4 * w4 + lane; c < w; c += kWarp) dst[c] = __ldg(src + c);
  } else {
    for (int c = lane; c < w; c += kWarp) dst[c] = __ldg(src + c);
  }
}

__global__ void GatherRowsKernel(const uint64_t* keys, int64_t n, int row_bits,
                                 const ShardView* shards, const int64_t* out_off, float* out) {
  const int64_t i = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (i >= n) return;
  const uint64_t key = keys[i];
  const ShardView& s = shards[key >> row_bits];
  const int64_t row = static_cast<int64_t>(key & ((uint64_t{1} << row_bits) - 1));
  WarpCopy(out + out_off[i], s.weights + row * s.width, s.width, lane);
}

// Where item i's row slice is (PoolArgs: after a dedup, or straight from the item's key).
__device__ __forceinline__ const float* PoolRow(const PoolArgs& a, int64_t i, int width) {
  return a.item_key == nullptr ? a.unique_ptr[a.item_to_unique[i]] : PoolRowByKey(a, i, width);
}

// One warp per bag.
__global__ void PoolForwardKernel(PoolArgs a) {
  const int64_t g = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (g >= a.batch * a.num_features) return;
  const int64_t b = g / a.num_features;
  const int f = static_cast<int>(g % a.num_features);
  const FeatureRoute& fr = a.features[f];
  float* out = a.feature_out[f];
  const int64_t i0 = a.bag_item_begin[g], i1 = a.bag_item_begin[g + 1];
  if (fr.kind == static_cast<int>(FeatureKind::kSequence)) {
    const int64_t T = fr.max_length, D = fr.dim;
    const int parts = fr.strategy == static_cast<int>(Strategy::kColumnWise) ? fr.num_parts : 1;
    const int64_t len = (i1 - i0) / parts;
    for (int64_t c = lane; c < (T - len) * D; c += kWarp) out[b * T * D + c] = 0.0f;
    for (int64_t t = lane; t < T; t += kWarp)
      a.feature_mask[f][b * T + t] = t < T - len ? 0.0f : 1.0f;
    for (int64_t i = i0; i < i1; ++i) {
      const RoutePart& rp = a.parts[a.item_part[i]];
      WarpCopy(out + a.item_out[i], PoolRow(a, i, rp.width), rp.width, lane);
    }
  } else {
    float* dst = out + b * fr.out_stride + fr.out_col;
    for (int c = lane; c < fr.dim; c += kWarp) dst[c] = 0.0f;
    __syncwarp();
    for (int64_t i = i0; i < i1; ++i) {
      const RoutePart& rp = a.parts[a.item_part[i]];
      const float s = a.item_scale[i];
      const float* src = PoolRow(a, i, rp.width);
      float* o = out + a.item_out[i];
      for (int c = lane; c < rp.width; c += kWarp)
        o[c] = __fadd_rn(o[c], __fmul_rn(s, __ldg(src + c)));
      __syncwarp();
    }
  }
}

// One warp per unique key.
__global__ void PackContributionsKernel(PackArgs a) {
  const int64_t u = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (u >= a.num_unique) return;
  float* dst = a.out + a.contrib_off[u];
  for (int32_t j = a.unique_begin[u]; j < a.unique_begin[u + 1]; ++j) {
    const int32_t i = a.perm[j];
    const RoutePart& rp = a.parts[a.item_part[i]];
    const float* g = a.feature_grad[rp.feature] + a.item_out[i];
    const float s = a.item_scale[i];
    for (int c = lane; c < rp.width; c += kWarp) dst[c] = __fmul_rn(s, g[c]);
    dst += rp.width;
  }
}

int Blocks(int64_t threads) { return static_cast<int>((threads + kBlock - 1) / kBlock); }

// CUB scratch layout of SortUniqueCuda: [num_runs (i64) | 256 B pad | CUB temp].
constexpr size_t kHeader = 256;

size_t SortCubBytes(int64_t n) {
  size_t sort = 0, rle = 0, scan = 0;
  cub::DoubleBuffer<uint64_t> k(nullptr, nullptr);
  cub::DoubleBuffer<int32_t> v(nullptr, nullptr);
  LOOM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, sort, k, v, static_cast<int>(n)));
  LOOM_CUDA_CHECK(cub::DeviceRunLengthEncode::Encode(
      nullptr, rle, static_cast<const uint64_t*>(nullptr), static_cast<uint64_t*>(nullptr),
      static_cast<int32_t*>(nullptr), static_cast<int64_t*>(nullptr), static_cast<int>(n)));
  LOOM_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, scan, static_cast<int32_t*>(nullptr),
                                                static_cast<int32_t*>(nullptr),
                                                static_cast<int>(n)));
  return std::max(sort, std::max(rle, scan));
}

}  // namespace

size_t BucketizeCudaTempBytesImpl(int64_t num_bags) {
  size_t scan = 0;
  LOOM_CUDA_CHECK(cub::DeviceScan::InclusiveSum(nullptr, scan, static_cast<int64_t*>(nullptr),
                                                static_cast<int64_t*>(nullptr),
                                                static_cast<int>(num_bags)));
  return kHeader + scan;
}

int64_t BucketizeCuda(const BucketizeArgs& a, BucketizeError* error, Stream stream) {
  cudaStream_t s = AsCudaStream(stream);
  const int64_t num_bags = a.batch * a.num_features;
  CHECK_GE(a.temp_bytes, BucketizeCudaTempBytesImpl(num_bags)) << "Bucketize: CUDA scratch";
  auto* first_bad = static_cast<unsigned long long*>(a.temp);
  auto* dev_error = reinterpret_cast<BucketizeError*>(static_cast<char*>(a.temp) + 64);
  void* cub_temp = static_cast<char*>(a.temp) + kHeader;
  size_t cub_bytes = a.temp_bytes - kHeader;
  const unsigned long long none = ~0ull;
  LOOM_CUDA_CHECK(cudaMemcpyAsync(first_bad, &none, sizeof(none), cudaMemcpyHostToDevice, s));
  LOOM_CUDA_CHECK(cudaMemsetAsync(a.bag_item_begin, 0, sizeof(int64_t), s));
  if (num_bags > 0) {
    CountItemsKernel<<<Blocks(num_bags), kBlock, 0, s>>>(a, first_bad);
    LOOM_CUDA_CHECK_LAUNCH();
  }
  unsigned long long bad = none;
  LOOM_CUDA_CHECK(cudaMemcpyAsync(&bad, first_bad, sizeof(bad), cudaMemcpyDeviceToHost, s));
  LOOM_CUDA_CHECK(cudaStreamSynchronize(s));
  if (bad != none) {
    DescribeBadBagKernel<<<1, 1, 0, s>>>(a, first_bad, dev_error);
    LOOM_CUDA_CHECK_LAUNCH();
    LOOM_CUDA_CHECK(cudaMemcpyAsync(error, dev_error, sizeof(*error), cudaMemcpyDeviceToHost, s));
    LOOM_CUDA_CHECK(cudaStreamSynchronize(s));
    return -1;
  }
  if (num_bags == 0) return 0;
  LOOM_CUDA_CHECK(cub::DeviceScan::InclusiveSum(cub_temp, cub_bytes, a.bag_item_begin + 1,
                                                a.bag_item_begin + 1, static_cast<int>(num_bags),
                                                s));
  FillItemsKernel<<<Blocks(num_bags), kBlock, 0, s>>>(a);
  LOOM_CUDA_CHECK_LAUNCH();
  int64_t n = 0;
  LOOM_CUDA_CHECK(
      cudaMemcpyAsync(&n, a.bag_item_begin + num_bags, sizeof(n), cudaMemcpyDeviceToHost, s));
  LOOM_CUDA_CHECK(cudaStreamSynchronize(s));
  return n;
}

size_t SortUniqueCudaTempBytesImpl(int64_t n) {
  return kHeader + SortCubBytes(std::max<int64_t>(n, 1));
}

int64_t SortUniqueCuda(const SortUniqueArgs& a, Stream stream) {
  cudaStream_t s = AsCudaStream(stream);
  const int64_t n = a.n;
  if (n == 0) {
    LOOM_CUDA_CHECK(cudaMemsetAsync(a.unique_begin, 0, sizeof(int32_t), s));
    LOOM_CUDA_CHECK(cudaStreamSynchronize(s));
    return 0;
  }
  CHECK_GE(a.temp_bytes, SortUniqueCudaTempBytesImpl(n)) << "SortUnique: CUDA scratch";
  auto* num_runs = static_cast<int64_t*>(a.temp);
  void* cub_temp = static_cast<char*>(a.temp) + kHeader;
  size_t cub_bytes = a.temp_bytes - kHeader;
  IotaKernel<<<Blocks(n), kBlock, 0, s>>>(a.perm, n);
  LOOM_CUDA_CHECK_LAUNCH();
  cub::DoubleBuffer<uint64_t> keys(a.keys, a.keys_tmp);
  cub::DoubleBuffer<int32_t> vals(a.perm, a.vals_tmp);
  LOOM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(cub_temp, cub_bytes, keys, vals,
                                                  static_cast<int>(n), 0, a.bits, s));
  if (vals.Current() != a.perm) {
    LOOM_CUDA_CHECK(
        cudaMemcpyAsync(a.perm, vals.Current(), n * sizeof(int32_t), cudaMemcpyDeviceToDevice, s));
  }
  // Run lengths into vals_tmp (free now), then their exclusive scan = run starts.
  int32_t* counts = a.vals_tmp;
  cub_bytes = a.temp_bytes - kHeader;
  LOOM_CUDA_CHECK(cub::DeviceRunLengthEncode::Encode(cub_temp, cub_bytes, keys.Current(),
                                                     a.unique_keys, counts, num_runs,
                                                     static_cast<int>(n), s));
  int64_t u = 0;
  LOOM_CUDA_CHECK(cudaMemcpyAsync(&u, num_runs, sizeof(u), cudaMemcpyDeviceToHost, s));
  LOOM_CUDA_CHECK(cudaStreamSynchronize(s));
  cub_bytes = a.temp_bytes - kHeader;
  LOOM_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(cub_temp, cub_bytes, counts, a.unique_begin,
                                                static_cast<int>(u), s));
  FinishUniqueKernel<<<1, 1, 0, s>>>(a.unique_begin, num_runs, n);
  LOOM_CUDA_CHECK_LAUNCH();
  if (a.inverse != nullptr) {
    InverseKernel<<<Blocks(n), kBlock, 0, s>>>(a.perm, a.unique_begin, num_runs, n, a.inverse);
    LOOM_CUDA_CHECK_LAUNCH();
  }
  return u;
}

void GatherRowsCuda(const uint64_t* keys, int64_t n, int row_bits, const ShardView* shards,
                    const int64_t* out_off, float* out, Stream stream) {
  GatherRowsKernel<<<Blocks(n * kWarp), kBlock, 0, AsCudaStream(stream)>>>(keys, n, row_bits,
                                                                           shards, out_off, out);
  LOOM_CUDA_CHECK_LAUNCH();
}

void PoolForwardCuda(const PoolArgs& a, Stream stream) {
  const int64_t bags = a.batch * a.num_features;
  if (bags == 0) return;
  PoolForwardKernel<<<Blocks(bags * kWarp), kBlock, 0, AsCudaStream(stream)>>>(a);
  LOOM_CUDA_CHECK_LAUNCH();
}

void PackContributionsCuda(const PackArgs& a, Stream stream) {
  PackContributionsKernel<<<Blocks(a.num_unique * kWarp), kBlock, 0, AsCudaStream(stream)>>>(a);
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace loom::embedding::internal
