// Shared helpers of the embedding tests: a size-1 communicator without MPI, the test config
// (tables of different sizes and dims, pooled multi-hot, sequences, a shared table), global
// batches generated from (seed, step, sample), and a plain single-process reference of the
// forward, the gradient reduction and every sparse optimizer, written from the math in
// sparse_optimizer.h without any of the collection's code.
#ifndef LOOM_TESTS_EMBEDDING_EMBEDDING_TEST_UTIL_H_
#define LOOM_TESTS_EMBEDDING_EMBEDDING_TEST_UTIL_H_

#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include "csrc/comm/communicator.h"
#include "csrc/core/philox.h"
#include "csrc/core/rng.h"
#include "csrc/embedding/embedding_collection.h"
#include "csrc/embedding/id_map.h"

namespace loom::embedding::testing {

// A communicator of one rank: every collective is a copy.
class LocalCommunicator final : public comm::Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  Device device() const override { return Device::Cpu(); }
  std::string backend() const override { return "local"; }
  void AllReduce(const void* send, void* recv, int64_t count, DType dtype,
                 comm::ReduceOp) override {
    if (send != recv) std::memmove(recv, send, count * DTypeSize(dtype));
  }
  void AllToAllV(const void* send, const std::vector<int64_t>& sc, const std::vector<int64_t>& sd,
                 void* recv, const std::vector<int64_t>& rc, const std::vector<int64_t>& rd,
                 DType dtype) override {
    CHECK_EQ(sc[0], rc[0]);
    std::memmove(static_cast<char*>(recv) + rd[0] * DTypeSize(dtype),
                 static_cast<const char*>(send) + sd[0] * DTypeSize(dtype),
                 sc[0] * DTypeSize(dtype));
  }
  void AllGather(const void* send, void* recv, int64_t count, DType dtype) override {
    std::memmove(recv, send, count * DTypeSize(dtype));
  }
  void AllGatherV(const void* send, int64_t send_count, void* recv, const std::vector<int64_t>&,
                  const std::vector<int64_t>& rd, DType dtype) override {
    std::memmove(static_cast<char*>(recv) + rd[0] * DTypeSize(dtype), send,
                 send_count * DTypeSize(dtype));
  }
  void ReduceScatter(const void* send, void* recv, int64_t count, DType dtype,
                     comm::ReduceOp) override {
    std::memmove(recv, send, count * DTypeSize(dtype));
  }
  void Broadcast(void*, int64_t, DType, int) override {}
  void Barrier() override {}
};

// Five tables of different sizes and dims; `items` is shared by item_id and item_history.
//   users  1000 x 8   MODULO   user_id (SINGLE)
//   items   500 x 16  HASH     item_id (SINGLE), item_history (SEQUENCE, T = 6)
//   cats     40 x 8   DIRECT   cat_bag (MULTI_HOT, MEAN, <= 5)
//   tags    300 x 12  MODULO   tags (MULTI_HOT, WEIGHTED_SUM, <= 4)
//   query   200 x 8   MODULO   query_seq (SEQUENCE, T = 4), query_bag (MULTI_HOT, SUM, <= 3)
inline proto::EmbeddingConfig TestConfig(const std::string& optimizer_text, uint64_t seed = 7) {
  const std::string text = R"pb(
    tables {
      name: "users"
      num_rows: 1000
      dim: 8
      initializer { kind: UNIFORM low: -0.1 high: 0.1 }
    }
    tables {
      name: "items"
      num_rows: 500
      dim: 16
      id_mapping: ID_MAPPING_HASH
      hash_seed: 99
      initializer { kind: NORMAL std: 0.05 }
    }
    tables { name: "cats" num_rows: 40 dim: 8 id_mapping: ID_MAPPING_DIRECT }
    tables { name: "tags" num_rows: 300 dim: 12 }
    tables { name: "query" num_rows: 200 dim: 8 }
    features { name: "user_id" kind: SINGLE table: "users" }
    features { name: "item_id" kind: SINGLE table: "items" }
    features { name: "item_history" kind: SEQUENCE table: "items" max_length: 6 }
    features {
      name: "cat_bag"
      kind: MULTI_HOT
      table: "cats"
      pooling: POOLING_MEAN
      max_ids_per_sample: 5
    }
    features {
      name: "tags"
      kind: MULTI_HOT
      table: "tags"
      pooling: POOLING_WEIGHTED_SUM
      max_ids_per_sample: 4
    }
    features { name: "query_seq" kind: SEQUENCE table: "query" max_length: 4 }
    features { name: "query_bag" kind: MULTI_HOT table: "query" max_ids_per_sample: 3 }
    data_parallel_max_bytes: 0
  )pb";
  proto::EmbeddingConfig config;
  CHECK(google::protobuf::TextFormat::ParseFromString(text, &config));
  config.set_seed(seed);
  for (auto& t : *config.mutable_tables()) {
    CHECK(google::protobuf::TextFormat::ParseFromString(optimizer_text, t.mutable_optimizer()));
  }
  return config;
}

// The global batch of one step: per feature, CSR over G samples. Deterministic in
// (seed, step); ids are skewed (small ids are frequent) so duplicates are common, and
// sequences are sometimes longer than T (truncation) or empty.
struct GlobalBatch {
  int64_t samples = 0;
  std::vector<std::vector<int64_t>> ids, offsets;  // [F][...]
  std::vector<std::vector<float>> weights;         // [F][...]
};

inline uint32_t TestRandom(uint64_t seed, uint64_t step, uint64_t i) {
  return PhiloxBlock(seed, MakeStream(kRngTest, step, 0), i >> 2).v[i & 3];
}

inline GlobalBatch MakeGlobalBatch(const EmbeddingSpec& spec, int64_t samples, uint64_t step,
                                   uint64_t seed = 1) {
  GlobalBatch gb;
  gb.samples = samples;
  const int F = static_cast<int>(spec.features.size());
  gb.ids.resize(F);
  gb.offsets.resize(F);
  gb.weights.resize(F);
  uint64_t counter = 0;
  auto rnd = [&]() { return TestRandom(seed, step, counter++); };
  for (int f = 0; f < F; ++f) {
    const FeatureSpec& fs = spec.features[f];
    const TableSpec& ts = spec.tables[fs.table];
    gb.offsets[f].push_back(0);
    for (int64_t b = 0; b < samples; ++b) {
      int len;
      if (fs.kind == FeatureKind::kSingle) {
        len = 1;
      } else if (fs.kind == FeatureKind::kMultiHot) {
        len = static_cast<int>(rnd() % (fs.max_ids + 1));
      } else {
        len = static_cast<int>(rnd() % (fs.max_length + 3));
      }
      for (int i = 0; i < len; ++i) {
        // Skewed: min of two uniforms over a small range, so rows repeat within a batch.
        const uint32_t a = rnd() % 23, c = rnd() % 23;
        int64_t id = std::min(a, c);
        if (ts.mapping == IdMapping::kDirect) {
          id = id % ts.num_rows;
        } else {
          id = id * 7919 + 3 - (rnd() % 2 ? 0 : 1000000007LL);  // negatives too
        }
        gb.ids[f].push_back(id);
        gb.weights[f].push_back(0.25f + static_cast<float>(rnd() % 8) * 0.125f);
      }
      gb.offsets[f].push_back(static_cast<int64_t>(gb.ids[f].size()));
    }
  }
  return gb;
}

// Samples [begin, begin + count) of a global batch, as tensors, plus the batch view.
struct LocalBatch {
  std::vector<Tensor> ids, offsets, weights;
  EmbeddingBatch batch;
};

inline LocalBatch SliceBatch(const GlobalBatch& gb, int64_t begin, int64_t count) {
  LocalBatch lb;
  lb.batch.batch_size = count;
  for (size_t f = 0; f < gb.ids.size(); ++f) {
    const int64_t i0 = gb.offsets[f][begin], i1 = gb.offsets[f][begin + count];
    std::vector<int64_t> ids(gb.ids[f].begin() + i0, gb.ids[f].begin() + i1);
    std::vector<float> w(gb.weights[f].begin() + i0, gb.weights[f].begin() + i1);
    std::vector<int64_t> off(count + 1);
    for (int64_t b = 0; b <= count; ++b) off[b] = gb.offsets[f][begin + b] - i0;
    lb.ids.push_back(Tensor::FromVector(ids, Shape{static_cast<int64_t>(ids.size())}));
    lb.weights.push_back(Tensor::FromVector(w, Shape{static_cast<int64_t>(w.size())}));
    lb.offsets.push_back(Tensor::FromVector(off, Shape{count + 1}));
  }
  for (size_t f = 0; f < gb.ids.size(); ++f) {
    lb.batch.features.push_back(
        FeatureBatch{lb.ids[f].cview(), lb.offsets[f].cview(), lb.weights[f].cview()});
  }
  return lb;
}

// Output gradients of the global batch: deterministic in (step, sample, column).
struct GlobalGrads {
  std::vector<float> pooled;                  // [G, pooled_width]
  std::vector<std::vector<float>> sequences;  // [S][G * T * D]
};

inline float GradValue(uint64_t step, uint64_t stream, uint64_t i) {
  return static_cast<float>(PhiloxUniform(11, MakeStream(kRngTest, step, stream), i)) - 0.5f;
}

inline GlobalGrads MakeGlobalGrads(const EmbeddingSpec& spec, int64_t samples, uint64_t step) {
  GlobalGrads gg;
  gg.pooled.resize(samples * spec.pooled_width);
  for (size_t i = 0; i < gg.pooled.size(); ++i) gg.pooled[i] = GradValue(step, 1000, i);
  for (const FeatureSpec& fs : spec.features) {
    if (!fs.is_sequence()) continue;
    const int64_t n = samples * fs.max_length * spec.tables[fs.table].dim;
    std::vector<float> g(n);
    for (int64_t i = 0; i < n; ++i) g[i] = GradValue(step, 2000 + fs.sequence_index, i);
    gg.sequences.push_back(g);
  }
  return gg;
}

struct LocalGrads {
  std::vector<Tensor> tensors;
  EmbeddingGrads grads;
};

inline LocalGrads SliceGrads(const EmbeddingSpec& spec, const GlobalGrads& gg, int64_t begin,
                             int64_t count) {
  LocalGrads lg;
  const int64_t pw = spec.pooled_width;
  std::vector<float> p(gg.pooled.begin() + begin * pw, gg.pooled.begin() + (begin + count) * pw);
  lg.tensors.push_back(Tensor::FromVector(p, Shape{count, pw}));
  lg.grads.pooled = lg.tensors.back().cview();
  int s = 0;
  for (const FeatureSpec& fs : spec.features) {
    if (!fs.is_sequence()) continue;
    const int64_t per = fs.max_length * spec.tables[fs.table].dim;
    std::vector<float> g(gg.sequences[s].begin() + begin * per,
                         gg.sequences[s].begin() + (begin + count) * per);
    lg.tensors.push_back(
        Tensor::FromVector(g, Shape{count, fs.max_length, int64_t{spec.tables[fs.table].dim}}));
    ++s;
  }
  for (size_t i = 1; i < lg.tensors.size(); ++i)
    lg.grads.sequences.push_back(lg.tensors[i].cview());
  return lg;
}

// ---------------------------------------------------------------------------------------
// Plain reference: whole tables in one process, loops written from the documented math.

struct PlainTable {
  std::vector<float> w, s0, s1;
  std::vector<int32_t> steps;
};

class PlainReference {
 public:
  explicit PlainReference(const EmbeddingSpec& spec) : spec_(spec) {
    for (size_t t = 0; t < spec.tables.size(); ++t) {
      const TableSpec& ts = spec.tables[t];
      PlainTable pt;
      pt.w.resize(ts.num_rows * ts.dim);
      const uint64_t stream = MakeStream(kRngInitEmbedding, t, 0);
      for (int64_t i = 0; i < ts.num_rows * ts.dim; ++i) {
        if (ts.init.kind == 0) {
          pt.w[i] =
              static_cast<float>(ts.init.low + (static_cast<double>(ts.init.high) - ts.init.low) *
                                                   PhiloxUniform(spec.seed, stream, i));
        } else if (ts.init.kind == 1) {
          pt.w[i] = static_cast<float>(ts.init.mean + static_cast<double>(ts.init.std) *
                                                          PhiloxNormal(spec.seed, stream, i));
        }
      }
      switch (ts.optimizer.type) {
        case OptimizerType::kAdagrad:
          pt.s0.assign(ts.num_rows * ts.dim, ts.optimizer.initial_accumulator);
          break;
        case OptimizerType::kRowwiseAdagrad:
          pt.s0.assign(ts.num_rows, ts.optimizer.initial_accumulator);
          break;
        case OptimizerType::kAdam:
          pt.s0.assign(ts.num_rows * ts.dim, 0.0f);
          pt.s1.assign(ts.num_rows * ts.dim, 0.0f);
          pt.steps.assign(ts.num_rows, 0);
          break;
        default:
          break;
      }
      tables_.push_back(pt);
    }
  }

  int64_t Row(const TableSpec& ts, int64_t id) const {
    switch (ts.mapping) {
      case IdMapping::kModulo:
        return static_cast<int64_t>(static_cast<uint64_t>(id) % ts.num_rows);
      case IdMapping::kHash:
        return static_cast<int64_t>(Hash64(static_cast<uint64_t>(id), ts.hash_seed) % ts.num_rows);
      case IdMapping::kDirect:
        return id;
    }
    return 0;
  }

  // The ids of bag (b, f) after truncation, with their scales.
  void Bag(const GlobalBatch& gb, int f, int64_t b, std::vector<int64_t>* rows,
           std::vector<float>* scales) const {
    const FeatureSpec& fs = spec_.features[f];
    const TableSpec& ts = spec_.tables[fs.table];
    int64_t i0 = gb.offsets[f][b];
    const int64_t i1 = gb.offsets[f][b + 1];
    if (fs.is_sequence() && i1 - i0 > fs.max_length) i0 = i1 - fs.max_length;
    rows->clear();
    scales->clear();
    for (int64_t i = i0; i < i1; ++i) {
      rows->push_back(Row(ts, gb.ids[f][i]));
      float s = 1.0f;
      if (fs.pooling == Pooling::kMean) s = 1.0f / static_cast<float>(i1 - i0);
      if (fs.pooling == Pooling::kWeightedSum) s = gb.weights[f][i];
      scales->push_back(s);
    }
  }

  // pooled [G, pooled_width]; sequences [S][G, T, D]; masks [S][G, T].
  void Forward(const GlobalBatch& gb, std::vector<float>* pooled,
               std::vector<std::vector<float>>* sequences,
               std::vector<std::vector<float>>* masks) const {
    const int64_t G = gb.samples;
    pooled->assign(G * spec_.pooled_width, 0.0f);
    sequences->clear();
    masks->clear();
    std::vector<int64_t> rows;
    std::vector<float> scales;
    for (size_t f = 0; f < spec_.features.size(); ++f) {
      const FeatureSpec& fs = spec_.features[f];
      const int D = spec_.tables[fs.table].dim;
      const std::vector<float>& w = tables_[fs.table].w;
      if (fs.is_sequence()) {
        const int64_t T = fs.max_length;
        std::vector<float> out(G * T * D, 0.0f), mask(G * T, 0.0f);
        for (int64_t b = 0; b < G; ++b) {
          Bag(gb, static_cast<int>(f), b, &rows, &scales);
          const int64_t len = static_cast<int64_t>(rows.size());
          for (int64_t p = 0; p < len; ++p) {
            const int64_t t = T - len + p;
            mask[b * T + t] = 1.0f;
            for (int c = 0; c < D; ++c) out[(b * T + t) * D + c] = w[rows[p] * D + c];
          }
        }
        sequences->push_back(out);
        masks->push_back(mask);
      } else {
        for (int64_t b = 0; b < G; ++b) {
          Bag(gb, static_cast<int>(f), b, &rows, &scales);
          float* o = pooled->data() + b * spec_.pooled_width + fs.pooled_col;
          for (size_t p = 0; p < rows.size(); ++p) {
            for (int c = 0; c < D; ++c) o[c] = o[c] + scales[p] * w[rows[p] * D + c];
          }
        }
      }
    }
  }

  // One step: per table, row gradients accumulated in canonical order (sample, feature,
  // position), then the optimizer on the touched rows.
  void Step(const GlobalBatch& gb, const GlobalGrads& gg, float lr_scale = 1.0f) {
    const int64_t G = gb.samples;
    std::vector<std::map<int64_t, std::vector<float>>> grad(spec_.tables.size());
    std::vector<int64_t> rows;
    std::vector<float> scales;
    for (int64_t b = 0; b < G; ++b) {
      for (size_t f = 0; f < spec_.features.size(); ++f) {
        const FeatureSpec& fs = spec_.features[f];
        const int D = spec_.tables[fs.table].dim;
        Bag(gb, static_cast<int>(f), b, &rows, &scales);
        const int64_t len = static_cast<int64_t>(rows.size());
        for (int64_t p = 0; p < len; ++p) {
          const float* go;
          if (fs.is_sequence()) {
            go = gg.sequences[fs.sequence_index].data() +
                 (b * fs.max_length + fs.max_length - len + p) * D;
          } else {
            go = gg.pooled.data() + b * spec_.pooled_width + fs.pooled_col;
          }
          std::vector<float>& acc = grad[fs.table][rows[p]];
          if (acc.empty()) acc.assign(D, 0.0f);
          for (int c = 0; c < D; ++c) acc[c] = acc[c] + scales[p] * go[c];
        }
      }
    }
    for (size_t t = 0; t < spec_.tables.size(); ++t) {
      const TableSpec& ts = spec_.tables[t];
      const OptimizerSpec& o = ts.optimizer;
      const float lr = o.lr * lr_scale;
      PlainTable& pt = tables_[t];
      const int D = ts.dim;
      for (auto& [row, g] : grad[t]) {
        float* w = pt.w.data() + row * D;
        std::vector<float> w_old(w, w + D);
        if (o.weight_decay != 0.0f && !o.decoupled_weight_decay) {
          for (int c = 0; c < D; ++c) g[c] += o.weight_decay * w_old[c];
        }
        switch (o.type) {
          case OptimizerType::kSgd:
            for (int c = 0; c < D; ++c) w[c] -= lr * g[c];
            break;
          case OptimizerType::kAdagrad:
            for (int c = 0; c < D; ++c) {
              float& s = pt.s0[row * D + c];
              s += g[c] * g[c];
              w[c] -= lr * g[c] / (std::sqrt(s) + o.eps);
            }
            break;
          case OptimizerType::kRowwiseAdagrad: {
            double sq = 0;  // plain: one sum in double
            for (int c = 0; c < D; ++c) sq += static_cast<double>(g[c]) * g[c];
            float& s = pt.s0[row];
            s += static_cast<float>(sq / D);
            for (int c = 0; c < D; ++c) w[c] -= lr * g[c] / (std::sqrt(s) + o.eps);
            break;
          }
          case OptimizerType::kAdam: {
            const int k = ++pt.steps[row];
            const double bc1 = 1.0 - std::pow(static_cast<double>(o.beta1), k);
            const double bc2 = 1.0 - std::pow(static_cast<double>(o.beta2), k);
            for (int c = 0; c < D; ++c) {
              float& m = pt.s0[row * D + c];
              float& v = pt.s1[row * D + c];
              m = o.beta1 * m + (1.0f - o.beta1) * g[c];
              v = o.beta2 * v + (1.0f - o.beta2) * g[c] * g[c];
              w[c] -= static_cast<float>(lr * (m / bc1) / (std::sqrt(v / bc2) + o.eps));
            }
            break;
          }
        }
        if (o.decoupled_weight_decay) {
          for (int c = 0; c < D; ++c) w[c] -= lr * o.weight_decay * w_old[c];
        }
      }
    }
  }

  const PlainTable& table(int t) const { return tables_[t]; }

 private:
  EmbeddingSpec spec_;
  std::vector<PlainTable> tables_;
};

// Relative closeness for the plain oracle: |a - b| <= rel * max(|a|, |b|) + abs.
inline ::testing::AssertionResult AllClose(const std::vector<float>& a, const std::vector<float>& b,
                                           double rel, double abs, const std::string& what) {
  if (a.size() != b.size()) {
    return ::testing::AssertionFailure() << what << ": sizes " << a.size() << " vs " << b.size();
  }
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    const double tol = rel * std::max(std::fabs(a[i]), std::fabs(b[i])) + abs;
    if (!(d <= tol)) {
      return ::testing::AssertionFailure()
             << what << "[" << i << "]: " << a[i] << " vs " << b[i] << " (|diff| " << d << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

template <typename T>
::testing::AssertionResult BitEqual(const T* a, const T* b, size_t n, const std::string& what) {
  for (size_t i = 0; i < n; ++i) {
    if (std::memcmp(a + i, b + i, sizeof(T)) != 0) {
      return ::testing::AssertionFailure() << what << "[" << i << "]: " << a[i] << " vs " << b[i];
    }
  }
  return ::testing::AssertionSuccess();
}

inline const char* kOptimizers[] = {
    "type: SGD learning_rate: 0.1",
    "type: ADAGRAD learning_rate: 0.05 weight_decay: 0.01 initial_accumulator_value: 0.1",
    "type: ROWWISE_ADAGRAD learning_rate: 0.05 eps: 1e-6",
    "type: ADAM learning_rate: 0.01 weight_decay: 0.05 weight_decay_mode: WEIGHT_DECAY_DECOUPLED",
};

}  // namespace loom::embedding::testing

#endif  // LOOM_TESTS_EMBEDDING_EMBEDDING_TEST_UTIL_H_
