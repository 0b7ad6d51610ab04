// CPU vs CUDA for the non-lazy Adam step of the untouched rows (StepUntouchedRows): three
// shards (dense-update, lazy, dense-update but not held here), random touched keys, several
// steps. Step counts must match exactly; w, m, v within 1e-5 relative (as
// embedding_kernels_cuda_test.cc: the device pow() of the bias corrections may differ in the
// last bit). Skipped without a GPU (LOOM_SKIP_WITHOUT_GPU).
#include <algorithm>
#include <vector>

#include <gtest/gtest.h>

#include "csrc/core/gpu.h"
#include "csrc/embedding/sparse_optimizer.h"
#include "tests/embedding/embedding_test_util.h"
#include "tests/testing/gpu_test_util.h"

namespace loom::embedding {
namespace {

template <typename T>
class DeviceVector {
 public:
  explicit DeviceVector(const std::vector<T>& host) : n_(host.size()) {
    ptr_ = static_cast<T*>(gpu::DeviceAlloc(std::max<size_t>(1, n_) * sizeof(T)));
    if (n_ > 0) {
      gpu::MemcpyAsync(ptr_, host.data(), n_ * sizeof(T), gpu::CopyKind::kHostToDevice);
    }
    gpu::DeviceSynchronize();
  }
  ~DeviceVector() { gpu::DeviceFree(ptr_); }
  DeviceVector(const DeviceVector&) = delete;
  DeviceVector& operator=(const DeviceVector&) = delete;
  T* get() const { return ptr_; }
  std::vector<T> ToHost() const {
    std::vector<T> h(n_);
    gpu::DeviceSynchronize();
    if (n_ > 0) gpu::MemcpyAsync(h.data(), ptr_, n_ * sizeof(T), gpu::CopyKind::kDeviceToHost);
    gpu::DeviceSynchronize();
    return h;
  }

 private:
  T* ptr_ = nullptr;
  size_t n_ = 0;
};

struct HostShard {
  std::vector<float> w, m, v;
  std::vector<int32_t> steps;
};

TEST(StepUntouchedRowsCuda, MatchesCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  constexpr int kRowBits = 12;
  const int64_t rows[3] = {3000, 70, 50};
  const int widths[3] = {36, 8, 8};
  const char* texts[3] = {
      "type: ADAM learning_rate: 0.01 weight_decay: 0.02 update_mode: UPDATE_DENSE",
      "type: ADAM learning_rate: 0.01",
      "type: ADAM learning_rate: 0.01 update_mode: UPDATE_DENSE",
  };
  std::vector<OptimizerParams> params;
  std::vector<HostShard> cpu(3);
  for (int s = 0; s < 3; ++s) {
    auto spec = BuildEmbeddingSpec(testing::TestConfig(texts[s]), 1);
    ASSERT_TRUE(spec.ok()) << spec.status();
    params.push_back(MakeOptimizerParams(spec->tables[0].optimizer, widths[s], false));
    const int64_t n = rows[s] * widths[s];
    cpu[s].w.resize(n);
    cpu[s].m.resize(n);
    cpu[s].v.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      cpu[s].w[i] = static_cast<float>(testing::TestRandom(1, s, i) % 2001) / 10000.0f - 0.1f;
      cpu[s].m[i] = static_cast<float>(testing::TestRandom(2, s, i) % 2001) / 1e5f - 0.01f;
      cpu[s].v[i] = static_cast<float>(testing::TestRandom(3, s, i) % 1000) / 1e6f;
    }
    cpu[s].steps.assign(rows[s], 4);
  }
  std::vector<std::unique_ptr<DeviceVector<float>>> dw, dm, dv;
  std::vector<std::unique_ptr<DeviceVector<int32_t>>> dsteps;
  std::vector<ShardView> dviews(3), hviews(3);
  for (int s = 0; s < 3; ++s) {
    dw.push_back(std::make_unique<DeviceVector<float>>(cpu[s].w));
    dm.push_back(std::make_unique<DeviceVector<float>>(cpu[s].m));
    dv.push_back(std::make_unique<DeviceVector<float>>(cpu[s].v));
    dsteps.push_back(std::make_unique<DeviceVector<int32_t>>(cpu[s].steps));
    const bool held = s != 2;
    dviews[s] = {held ? dw[s]->get() : nullptr,
                 dm[s]->get(),
                 dv[s]->get(),
                 dsteps[s]->get(),
                 rows[s],
                 widths[s],
                 0};
    hviews[s] = {held ? cpu[s].w.data() : nullptr,
                 cpu[s].m.data(),
                 cpu[s].v.data(),
                 cpu[s].steps.data(),
                 rows[s],
                 widths[s],
                 0};
  }
  DeviceVector<ShardView> d_shards(dviews);
  DeviceVector<OptimizerParams> d_params(params);
  for (int step = 0; step < 3; ++step) {
    std::vector<uint64_t> keys;
    for (int s = 0; s < 3; ++s) {
      for (int64_t r = 0; r < rows[s]; ++r) {
        if (testing::TestRandom(7, step, s * 10000 + r) % 4 == 0) {
          keys.push_back((static_cast<uint64_t>(s) << kRowBits) | static_cast<uint64_t>(r));
        }
      }
    }
    UntouchedArgs a;
    a.num_shards = 3;
    a.shards = hviews.data();
    a.params = params.data();
    a.num_touched = static_cast<int64_t>(keys.size());
    a.touched_keys = keys.data();
    a.row_bits = kRowBits;
    a.lr_scale = 0.5f;
    StepUntouchedRows(ExecContext::Cpu(), a);
    DeviceVector<uint64_t> d_keys(keys);
    UntouchedArgs d = a;
    d.shards = d_shards.get();
    d.params = d_params.get();
    d.touched_keys = d_keys.get();
    StepUntouchedRows(ExecContext::Cuda(0), d);
    gpu::DeviceSynchronize();
  }
  for (int s = 0; s < 3; ++s) {
    const std::string what = "shard " + std::to_string(s);
    EXPECT_EQ(dsteps[s]->ToHost(), cpu[s].steps) << what;
    EXPECT_TRUE(testing::AllClose(dw[s]->ToHost(), cpu[s].w, 1e-5, 0.0, what + " w"));
    EXPECT_TRUE(testing::AllClose(dm[s]->ToHost(), cpu[s].m, 1e-5, 0.0, what + " m"));
    EXPECT_TRUE(testing::AllClose(dv[s]->ToHost(), cpu[s].v, 1e-5, 0.0, what + " v"));
  }
  // The oracle moved: the dense shard's never-touched rows stepped (k = 4 + 3), the lazy
  // shard's and the unheld shard's did not.
  EXPECT_EQ(*std::max_element(cpu[0].steps.begin(), cpu[0].steps.end()), 7);
  EXPECT_EQ(*std::max_element(cpu[1].steps.begin(), cpu[1].steps.end()), 4);
  EXPECT_EQ(*std::max_element(cpu[2].steps.begin(), cpu[2].steps.end()), 4);
}

}  // namespace
}  // namespace loom::embedding
