// CPU vs CUDA for every kernel of the embedding pipeline (bucketize, unique, lookup, pool,
// pack, reduce, update) on fresh random inputs. The CUDA kernels avoid FMA contraction, so
// most outputs must match bit for bit; the optimizer update is held to 1e-5 relative (the
// engineering guide's fp32 tolerance; Adam's pow() may differ in the last bit).
// Skipped without a GPU (LOOM_SKIP_WITHOUT_GPU); run by tests/gpu/device_check.sh.
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>
#include <omp.h>

#include "csrc/core/gpu.h"
#include "csrc/embedding/embedding_kernels.h"
#include "csrc/embedding/sparse_optimizer.h"
#include "tests/embedding/embedding_test_util.h"
#include "tests/testing/gpu_test_util.h"

namespace loom::embedding {
namespace {

// A device copy of a host vector, freed on destruction.
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
  explicit DeviceVector(size_t n) : DeviceVector(std::vector<T>(n)) {}
  ~DeviceVector() { gpu::DeviceFree(ptr_); }
  DeviceVector(const DeviceVector&) = delete;
  DeviceVector& operator=(const DeviceVector&) = delete;
  T* get() const { return ptr_; }
  std::vector<T> ToHost(size_t n) const {
    std::vector<T> h(n);
    gpu::DeviceSynchronize();
    if (n > 0) gpu::MemcpyAsync(h.data(), ptr_, n * sizeof(T), gpu::CopyKind::kDeviceToHost);
    gpu::DeviceSynchronize();
    return h;
  }
  std::vector<T> ToHost() const { return ToHost(n_); }

 private:
  T* ptr_ = nullptr;
  size_t n_ = 0;
};

template <typename T>
::testing::AssertionResult Same(const std::vector<T>& a, const std::vector<T>& b, const char* w) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << w << ": sizes differ";
  return testing::BitEqual(a.data(), b.data(), a.size(), w);
}

const ExecContext kCuda = ExecContext::Cuda(0);

// A random batch of three features routed like a mixed plan: RW (2 shards), CW (2 slices) as
// a sequence, TW weighted sum.
struct Batch {
  int64_t B = 96;
  std::vector<RoutePart> parts = {{0, 0, 1, 0, 8, 0},
                                  {0, 1, 0, 0, 8, 0},
                                  {1, 2, 2, 0, 8, 0},
                                  {1, 3, 3, 8, 4, 0},
                                  {2, 4, 4, 0, 16, 0}};
  std::vector<std::vector<int64_t>> ids{3}, offsets{3};
  std::vector<std::vector<float>> weights{3};
  std::vector<FeatureRoute> routes{3};

  Batch() {
    std::mt19937_64 rng(17);
    const int max_len[3] = {5, 9, 4};
    for (int f = 0; f < 3; ++f) {
      offsets[f].push_back(0);
      for (int64_t b = 0; b < B; ++b) {
        const int len = static_cast<int>(rng() % (max_len[f] + 1));
        for (int i = 0; i < len; ++i) {
          ids[f].push_back(static_cast<int64_t>(rng() % 50) - 5);
          weights[f].push_back(static_cast<float>(rng() % 100) / 37.0f);
        }
        offsets[f].push_back(static_cast<int64_t>(ids[f].size()));
      }
    }
    routes[0].num_rows = 1000;
    routes[0].kind = static_cast<int>(FeatureKind::kMultiHot);
    routes[0].pooling = static_cast<int>(Pooling::kMean);
    routes[0].max_ids = 5;
    routes[0].strategy = static_cast<int>(Strategy::kRowWise);
    routes[0].part_begin = 0;
    routes[0].num_parts = 2;
    routes[0].dim = 8;
    routes[0].out_stride = 24;
    routes[0].out_col = 0;
    routes[1].num_rows = 300;
    routes[1].mapping = static_cast<int>(IdMapping::kHash);
    routes[1].hash_seed = 5;
    routes[1].kind = static_cast<int>(FeatureKind::kSequence);
    routes[1].max_ids = 6;
    routes[1].max_length = 6;
    routes[1].strategy = static_cast<int>(Strategy::kColumnWise);
    routes[1].part_begin = 2;
    routes[1].num_parts = 2;
    routes[1].dim = 12;
    routes[1].out_stride = 6 * 12;
    routes[2].num_rows = 77;
    routes[2].kind = static_cast<int>(FeatureKind::kMultiHot);
    routes[2].pooling = static_cast<int>(Pooling::kWeightedSum);
    routes[2].max_ids = 4;
    routes[2].strategy = static_cast<int>(Strategy::kTableWise);
    routes[2].part_begin = 4;
    routes[2].num_parts = 1;
    routes[2].dim = 16;
    routes[2].out_stride = 24;
    routes[2].out_col = 8;
  }
  int64_t MaxItems() const {
    int64_t n = 0;
    for (int f = 0; f < 3; ++f) n += static_cast<int64_t>(ids[f].size()) * 2;
    return n;
  }
};

// The host-side outputs of bucketize + unique on the CPU.
struct CpuPipeline {
  std::vector<int64_t> begin, out;
  std::vector<uint64_t> key, sorted, uk;
  std::vector<int32_t> part, perm, ub, inv;
  std::vector<float> scale;
  int64_t n = 0, u = 0;
  explicit CpuPipeline(Batch& bt) {
    std::vector<FeatureRoute> r = bt.routes;
    for (int f = 0; f < 3; ++f) {
      r[f].ids = bt.ids[f].data();
      r[f].offsets = bt.offsets[f].data();
      r[f].weights = bt.weights[f].data();
    }
    const int64_t m = bt.MaxItems();
    begin.resize(bt.B * 3 + 1);
    key.resize(m);
    part.resize(m);
    scale.resize(m);
    out.resize(m);
    BucketizeArgs a;
    a.features = r.data();
    a.num_features = 3;
    a.parts = bt.parts.data();
    a.batch = bt.B;
    a.row_bits = 10;
    a.bag_item_begin = begin.data();
    a.item_key = key.data();
    a.item_part = part.data();
    a.item_scale = scale.data();
    a.item_out = out.data();
    BucketizeError err;
    n = Bucketize(ExecContext::Cpu(), a, &err);
    CHECK_GT(n, 0);
    sorted.assign(key.begin(), key.begin() + n);
    std::vector<uint64_t> kt(n);
    std::vector<int32_t> vt(n);
    std::vector<int64_t> hist(omp_get_max_threads() * 2048);
    perm.resize(n);
    uk.resize(n);
    ub.resize(n + 1);
    inv.resize(n);
    SortUniqueArgs s;
    s.keys = sorted.data();
    s.n = n;
    s.bits = 13;
    s.keys_tmp = kt.data();
    s.vals_tmp = vt.data();
    s.histogram = hist.data();
    s.histogram_threads = omp_get_max_threads();
    s.perm = perm.data();
    s.unique_keys = uk.data();
    s.unique_begin = ub.data();
    s.inverse = inv.data();
    u = SortUnique(ExecContext::Cpu(), s);
  }
};

TEST(EmbeddingKernelsCuda, BucketizeMatchesCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  Batch bt;
  CpuPipeline cpu(bt);
  std::vector<std::unique_ptr<DeviceVector<int64_t>>> dids, doffs;
  std::vector<std::unique_ptr<DeviceVector<float>>> dw;
  std::vector<FeatureRoute> r = bt.routes;
  for (int f = 0; f < 3; ++f) {
    dids.emplace_back(new DeviceVector<int64_t>(bt.ids[f]));
    doffs.emplace_back(new DeviceVector<int64_t>(bt.offsets[f]));
    dw.emplace_back(new DeviceVector<float>(bt.weights[f]));
    r[f].ids = dids[f]->get();
    r[f].offsets = doffs[f]->get();
    r[f].weights = dw[f]->get();
  }
  DeviceVector<FeatureRoute> droutes(r);
  DeviceVector<RoutePart> dparts(bt.parts);
  const int64_t m = bt.MaxItems();
  DeviceVector<int64_t> begin(bt.B * 3 + 1), out(m);
  DeviceVector<uint64_t> key(m);
  DeviceVector<int32_t> part(m);
  DeviceVector<float> scale(m);
  DeviceVector<char> temp(BucketizeCudaTempBytes(bt.B * 3));
  BucketizeArgs a;
  a.features = droutes.get();
  a.num_features = 3;
  a.parts = dparts.get();
  a.batch = bt.B;
  a.row_bits = 10;
  a.bag_item_begin = begin.get();
  a.item_key = key.get();
  a.item_part = part.get();
  a.item_scale = scale.get();
  a.item_out = out.get();
  a.temp = temp.get();
  a.temp_bytes = BucketizeCudaTempBytes(bt.B * 3);
  BucketizeError err;
  ASSERT_EQ(Bucketize(kCuda, a, &err), cpu.n);
  const size_t n = static_cast<size_t>(cpu.n);
  EXPECT_TRUE(Same(begin.ToHost(), cpu.begin, "bag_item_begin"));
  EXPECT_TRUE(
      Same(key.ToHost(n), std::vector<uint64_t>(cpu.key.begin(), cpu.key.begin() + n), "key"));
  EXPECT_TRUE(
      Same(part.ToHost(n), std::vector<int32_t>(cpu.part.begin(), cpu.part.begin() + n), "part"));
  EXPECT_TRUE(
      Same(scale.ToHost(n), std::vector<float>(cpu.scale.begin(), cpu.scale.begin() + n), "scale"));
  EXPECT_TRUE(
      Same(out.ToHost(n), std::vector<int64_t>(cpu.out.begin(), cpu.out.begin() + n), "out"));
  // A bag over max_ids is reported as on the CPU.
  std::vector<FeatureRoute> bad = r;
  bad[0].max_ids = 2;
  DeviceVector<FeatureRoute> dbad(bad);
  a.features = dbad.get();
  EXPECT_EQ(Bucketize(kCuda, a, &err), -1);
  EXPECT_EQ(err.kind, 2);
  EXPECT_EQ(err.feature, 0);
}

TEST(EmbeddingKernelsCuda, SortUniqueMatchesCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(23);
  for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{300000}}) {
    std::vector<uint64_t> keys(n);
    for (auto& k : keys) k = (rng() % (n / 4 + 1)) * 7919 % (uint64_t{1} << 23);
    std::vector<uint64_t> hk = keys, kt(n), uk(n);
    std::vector<int32_t> perm(n), vt(n), ub(n + 1), inv(n);
    std::vector<int64_t> hist(omp_get_max_threads() * 2048);
    SortUniqueArgs s;
    s.keys = hk.data();
    s.n = n;
    s.bits = 23;
    s.keys_tmp = kt.data();
    s.vals_tmp = vt.data();
    s.histogram = hist.data();
    s.histogram_threads = omp_get_max_threads();
    s.perm = perm.data();
    s.unique_keys = uk.data();
    s.unique_begin = ub.data();
    s.inverse = inv.data();
    const int64_t u = SortUnique(ExecContext::Cpu(), s);
    DeviceVector<uint64_t> dk(keys), dkt(n), duk(n);
    DeviceVector<int32_t> dperm(n), dvt(n), dub(n + 1), dinv(n);
    DeviceVector<char> temp(SortUniqueCudaTempBytes(n));
    SortUniqueArgs d = s;
    d.keys = dk.get();
    d.keys_tmp = dkt.get();
    d.vals_tmp = dvt.get();
    d.histogram = nullptr;
    d.temp = temp.get();
    d.temp_bytes = SortUniqueCudaTempBytes(n);
    d.perm = dperm.get();
    d.unique_keys = duk.get();
    d.unique_begin = dub.get();
    d.inverse = dinv.get();
    ASSERT_EQ(SortUnique(kCuda, d), u) << n;
    EXPECT_TRUE(Same(dperm.ToHost(), perm, "perm"));
    EXPECT_TRUE(Same(duk.ToHost(u), std::vector<uint64_t>(uk.begin(), uk.begin() + u), "unique"));
    EXPECT_TRUE(
        Same(dub.ToHost(u + 1), std::vector<int32_t>(ub.begin(), ub.begin() + u + 1), "begin"));
    EXPECT_TRUE(Same(dinv.ToHost(), inv, "inverse"));
  }
}

// Lookup, pool and pack on the pipeline's items, against the CPU.
TEST(EmbeddingKernelsCuda, GatherPoolPackMatchCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  Batch bt;
  CpuPipeline cpu(bt);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  // A table per shard slot (rows 1024, its width), as the owner would hold them.
  std::vector<std::vector<float>> tables(5);
  std::vector<std::unique_ptr<DeviceVector<float>>> dtables;
  std::vector<ShardView> hv(5), dv(5);
  for (int s = 0; s < 5; ++s) {
    tables[s].resize(1024 * bt.parts[s].width);
    for (float& x : tables[s]) x = dist(rng);
    dtables.emplace_back(new DeviceVector<float>(tables[s]));
    hv[s].weights = tables[s].data();
    hv[s].width = bt.parts[s].width;
    hv[s].num_rows = 1024;
    dv[s] = hv[s];
    dv[s].weights = dtables[s]->get();
  }
  // Gather the unique rows (keys' slot == shard here), offsets by width.
  std::vector<int64_t> off(cpu.u + 1, 0);
  for (int64_t k = 0; k < cpu.u; ++k) off[k + 1] = off[k] + bt.parts[cpu.uk[k] >> 10].width;
  std::vector<float> rows(off[cpu.u]);
  GatherRows(ExecContext::Cpu(), cpu.uk.data(), cpu.u, 10, hv.data(), off.data(), rows.data());
  DeviceVector<uint64_t> duk(std::vector<uint64_t>(cpu.uk.begin(), cpu.uk.begin() + cpu.u));
  DeviceVector<int64_t> doff(off);
  DeviceVector<ShardView> dshards(dv);
  DeviceVector<float> drows(rows.size());
  GatherRows(kCuda, duk.get(), cpu.u, 10, dshards.get(), doff.get(), drows.get());
  EXPECT_TRUE(Same(drows.ToHost(), rows, "gathered rows"));
  // Pool from the gathered rows.
  std::vector<const float*> uptr(cpu.u), duptr(cpu.u);
  for (int64_t k = 0; k < cpu.u; ++k) {
    uptr[k] = rows.data() + off[k];
    duptr[k] = drows.get() + off[k];
  }
  std::vector<float> pooled(bt.B * 24, -7.0f), seq(bt.B * 6 * 12, -7.0f), mask(bt.B * 6, -7.0f);
  std::vector<float*> fout = {pooled.data(), seq.data(), pooled.data()};
  std::vector<float*> fmask = {nullptr, mask.data(), nullptr};
  std::vector<FeatureRoute> r = bt.routes;  // Pool reads no ids
  PoolArgs pa;
  pa.features = r.data();
  pa.num_features = 3;
  pa.parts = bt.parts.data();
  pa.batch = bt.B;
  pa.bag_item_begin = cpu.begin.data();
  pa.item_part = cpu.part.data();
  pa.item_scale = cpu.scale.data();
  pa.item_out = cpu.out.data();
  pa.item_to_unique = cpu.inv.data();
  pa.unique_ptr = uptr.data();
  pa.feature_out = fout.data();
  pa.feature_mask = fmask.data();
  PoolForward(ExecContext::Cpu(), pa);
  DeviceVector<float> dpooled(bt.B * 24), dseq(bt.B * 6 * 12), dmask(bt.B * 6);
  DeviceVector<float*> dfout(std::vector<float*>{dpooled.get(), dseq.get(), dpooled.get()});
  DeviceVector<float*> dfmask(std::vector<float*>{nullptr, dmask.get(), nullptr});
  DeviceVector<FeatureRoute> droutes(r);
  DeviceVector<RoutePart> dparts(bt.parts);
  DeviceVector<int64_t> dbegin(cpu.begin), dout(cpu.out);
  DeviceVector<int32_t> dpart(cpu.part), dinv(cpu.inv), dperm(cpu.perm), dub(cpu.ub);
  DeviceVector<float> dscale(cpu.scale);
  DeviceVector<const float*> duptr_d(duptr);
  PoolArgs dpa = pa;
  dpa.features = droutes.get();
  dpa.parts = dparts.get();
  dpa.bag_item_begin = dbegin.get();
  dpa.item_part = dpart.get();
  dpa.item_scale = dscale.get();
  dpa.item_out = dout.get();
  dpa.item_to_unique = dinv.get();
  dpa.unique_ptr = duptr_d.get();
  dpa.feature_out = dfout.get();
  dpa.feature_mask = dfmask.get();
  PoolForward(kCuda, dpa);
  EXPECT_TRUE(Same(dpooled.ToHost(), pooled, "pooled"));
  EXPECT_TRUE(Same(dseq.ToHost(), seq, "sequence"));
  EXPECT_TRUE(Same(dmask.ToHost(), mask, "mask"));
  // Pool with every row read in place by its item's key (the one-rank forward, no dedup):
  // the same outputs.
  std::vector<uint64_t> item_key(cpu.n);
  for (int64_t i = 0; i < cpu.n; ++i) item_key[i] = cpu.uk[cpu.inv[i]];
  std::vector<const float*> slot_weights(5);
  for (int s = 0; s < 5; ++s) slot_weights[s] = dtables[s]->get();
  DeviceVector<uint64_t> dkey(item_key);
  DeviceVector<const float*> dslot_weights(slot_weights);
  DeviceVector<float> kpooled(bt.B * 24), kseq(bt.B * 6 * 12), kmask(bt.B * 6);
  DeviceVector<float*> kfout(std::vector<float*>{kpooled.get(), kseq.get(), kpooled.get()});
  DeviceVector<float*> kfmask(std::vector<float*>{nullptr, kmask.get(), nullptr});
  PoolArgs kpa = dpa;
  kpa.item_to_unique = nullptr;
  kpa.unique_ptr = nullptr;
  kpa.item_key = dkey.get();
  kpa.slot_weights = dslot_weights.get();
  kpa.row_bits = 10;
  kpa.feature_out = kfout.get();
  kpa.feature_mask = kfmask.get();
  PoolForward(kCuda, kpa);
  EXPECT_TRUE(Same(kpooled.ToHost(), pooled, "pooled, rows by key"));
  EXPECT_TRUE(Same(kseq.ToHost(), seq, "sequence, rows by key"));
  EXPECT_TRUE(Same(kmask.ToHost(), mask, "mask, rows by key"));
  // Pack gradient contributions (the outputs serve as gradients).
  std::vector<int64_t> coff(cpu.u + 1, 0);
  for (int64_t k = 0; k < cpu.u; ++k) {
    coff[k + 1] =
        coff[k] + static_cast<int64_t>(cpu.ub[k + 1] - cpu.ub[k]) * bt.parts[cpu.uk[k] >> 10].width;
  }
  std::vector<float> contrib(coff[cpu.u]);
  std::vector<const float*> fgrad = {pooled.data(), seq.data(), pooled.data()};
  PackArgs ka;
  ka.num_unique = cpu.u;
  ka.unique_begin = cpu.ub.data();
  ka.perm = cpu.perm.data();
  ka.item_part = cpu.part.data();
  ka.item_scale = cpu.scale.data();
  ka.item_out = cpu.out.data();
  ka.parts = bt.parts.data();
  ka.feature_grad = fgrad.data();
  ka.contrib_off = coff.data();
  ka.out = contrib.data();
  PackContributions(ExecContext::Cpu(), ka);
  DeviceVector<const float*> dfgrad(
      std::vector<const float*>{dpooled.get(), dseq.get(), dpooled.get()});
  DeviceVector<int64_t> dcoff(coff);
  DeviceVector<float> dcontrib(contrib.size());
  PackArgs dka = ka;
  dka.unique_begin = dub.get();
  dka.perm = dperm.get();
  dka.item_part = dpart.get();
  dka.item_scale = dscale.get();
  dka.item_out = dout.get();
  dka.parts = dparts.get();
  dka.feature_grad = dfgrad.get();
  dka.contrib_off = dcoff.get();
  dka.out = dcontrib.get();
  PackContributions(kCuda, dka);
  EXPECT_TRUE(Same(dcontrib.ToHost(), contrib, "contributions"));
}

// Reduce + update for every optimizer, with both weight-decay modes.
TEST(EmbeddingKernelsCuda, ReduceAndUpdateMatchCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const int W = 36, rows = 400, U = 150, E = 400;
  for (int type = 0; type < 4; ++type) {
    for (int decoupled = 0; decoupled < 2; ++decoupled) {
      OptimizerSpec os;
      os.type = static_cast<OptimizerType>(type);
      os.lr = 0.05f;
      os.weight_decay = 0.01f;
      os.decoupled_weight_decay = decoupled == 1;
      const OptimizerParams p = MakeOptimizerParams(os, W, false);
      std::vector<float> w(rows * W), s0(type == 2 ? rows : rows * W), s1(rows * W);
      std::vector<int32_t> steps(rows);
      for (float& x : w) x = dist(rng);
      for (float& x : s0) x = std::fabs(dist(rng));
      for (float& x : s1) x = std::fabs(dist(rng));
      for (auto& x : steps) x = static_cast<int32_t>(rng() % 5);
      // U distinct rows, E entries spread over them in order, 1-3 contributions each.
      std::vector<uint64_t> keys(U);
      for (int u = 0; u < U; ++u) keys[u] = static_cast<uint64_t>(u * 2 + 1);
      std::vector<int32_t> begin(U + 1), perm(E), count(E);
      for (int u = 0; u <= U; ++u) begin[u] = static_cast<int32_t>(static_cast<int64_t>(E) * u / U);
      std::vector<int64_t> coff(E + 1, 0);
      for (int e = 0; e < E; ++e) {
        perm[e] = (e * 7) % E;  // entries stored out of order
        count[perm[e]] = 1 + static_cast<int32_t>(rng() % 3);
      }
      for (int e = 0; e < E; ++e) coff[e + 1] = coff[e] + count[e] * W;
      std::vector<float> contrib(coff[E]);
      for (float& x : contrib) x = dist(rng);
      std::vector<const float*> hptr(E), dptr(E);
      DeviceVector<float> dcontrib(contrib);
      for (int e = 0; e < E; ++e) {
        hptr[e] = contrib.data() + coff[e];
        dptr[e] = dcontrib.get() + coff[e];
      }
      std::vector<int64_t> roff(U);
      for (int u = 0; u < U; ++u) roff[u] = static_cast<int64_t>(u) * W;
      DeviceVector<float> dw(w), ds0(s0), ds1(s1), dreduced(U * W);
      DeviceVector<int32_t> dsteps(steps);
      ShardView hv;
      hv.weights = w.data();
      hv.state0 = s0.data();
      hv.state1 = s1.data();
      hv.steps = steps.data();
      hv.num_rows = rows;
      hv.width = W;
      ShardView dvw = hv;
      dvw.weights = dw.get();
      dvw.state0 = ds0.get();
      dvw.state1 = ds1.get();
      dvw.steps = dsteps.get();
      std::vector<float> reduced(U * W);
      ReduceArgs ra;
      ra.num_rows = U;
      ra.keys = keys.data();
      ra.begin = begin.data();
      ra.entry_perm = perm.data();
      ra.entry_contrib = hptr.data();
      ra.entry_count = count.data();
      ra.row_bits = 12;
      ra.shards = &hv;
      ra.params = &p;
      ra.reduced_off = roff.data();
      ra.reduced = reduced.data();
      ReduceRows(ExecContext::Cpu(), ra);
      UpdateArgs ua;
      ua.num_rows = U;
      ua.keys = keys.data();
      ua.row_bits = 12;
      ua.shards = &hv;
      ua.params = &p;
      ua.reduced_off = roff.data();
      ua.reduced = reduced.data();
      ua.lr_scale = 0.7f;
      UpdateRows(ExecContext::Cpu(), ua);
      DeviceVector<uint64_t> dkeys(keys);
      DeviceVector<int32_t> dbegin(begin), dperm(perm), dcount(count);
      DeviceVector<const float*> dptrs(dptr);
      DeviceVector<ShardView> dshard(std::vector<ShardView>{dvw});
      DeviceVector<OptimizerParams> dparams(std::vector<OptimizerParams>{p});
      DeviceVector<int64_t> droff(roff);
      ReduceArgs dra = ra;
      dra.keys = dkeys.get();
      dra.begin = dbegin.get();
      dra.entry_perm = dperm.get();
      dra.entry_contrib = dptrs.get();
      dra.entry_count = dcount.get();
      dra.shards = dshard.get();
      dra.params = dparams.get();
      dra.reduced_off = droff.get();
      dra.reduced = dreduced.get();
      ReduceRows(kCuda, dra);
      EXPECT_TRUE(Same(dreduced.ToHost(), reduced, "reduced"));
      UpdateArgs dua = ua;
      dua.keys = dkeys.get();
      dua.shards = dshard.get();
      dua.params = dparams.get();
      dua.reduced_off = droff.get();
      dua.reduced = dreduced.get();
      UpdateRows(kCuda, dua);
      const std::string what =
          std::string(OptimizerName(os.type)) + (decoupled ? " decoupled" : " l2");
      EXPECT_TRUE(testing::AllClose(dw.ToHost(), w, 1e-5, 1e-7, what + " w"));
      EXPECT_TRUE(testing::AllClose(ds0.ToHost(), s0, 1e-5, 1e-7, what + " s0"));
      EXPECT_TRUE(testing::AllClose(ds1.ToHost(), s1, 1e-5, 1e-7, what + " s1"));
      EXPECT_EQ(dsteps.ToHost(), steps) << what;
    }
  }
}

}  // namespace
}  // namespace loom::embedding
