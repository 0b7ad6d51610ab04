// Validated, flattened view of an EmbeddingConfig (csrc/proto/embedding.proto): what the
// planner and the collection work from. Validation names the field path and value at fault,
// e.g. "features[2] (item_history).table: no table named 'items'".
#ifndef LOOM_EMBEDDING_EMBEDDING_SPEC_H_
#define LOOM_EMBEDDING_EMBEDDING_SPEC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "csrc/core/status.h"
#include "csrc/proto/embedding.pb.h"

namespace loom::embedding {

enum class OptimizerType { kSgd = 0, kAdagrad = 1, kRowwiseAdagrad = 2, kAdam = 3 };
enum class IdMapping { kModulo = 0, kHash = 1, kDirect = 2 };
enum class FeatureKind { kSingle = 0, kMultiHot = 1, kSequence = 2 };
enum class Pooling { kSum = 0, kMean = 1, kWeightedSum = 2 };
enum class Strategy { kTableWise = 0, kRowWise = 1, kColumnWise = 2, kDataParallel = 3 };

const char* OptimizerName(OptimizerType t);
const char* StrategyName(Strategy s);  // "TW", "RW", "CW", "DP"

// Hyper-parameters of a sparse optimizer (see SparseOptimizerConfig for the math).
struct OptimizerSpec {
  OptimizerType type = OptimizerType::kAdagrad;
  float lr = 0.01f;
  float eps = 1e-8f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float weight_decay = 0.0f;
  bool decoupled_weight_decay = false;
  float initial_accumulator = 0.0f;
  bool dense_update = false;  // update_mode UPDATE_DENSE (ADAM only): every row steps each step
};

// Optimizer state floats per element and per row of a table with this optimizer.
//   SGD: none. ADAGRAD: D floats (s). ROWWISE_ADAGRAD: 1 float per row (s).
//   ADAM: 2D floats (m, v) + one int32 step count per row.
int64_t OptimizerStateBytesPerRow(OptimizerType t, int64_t dim);

struct InitializerSpec {
  int kind = 0;  // EmbeddingInitializer::Kind
  float low = -0.05f, high = 0.05f, mean = 0.0f, std = 0.01f;
};

struct TableSpec {
  std::string name;
  int64_t num_rows = 0;
  int dim = 0;
  IdMapping mapping = IdMapping::kModulo;
  uint64_t hash_seed = 0;
  InitializerSpec init;
  OptimizerSpec optimizer;
  std::vector<int> features;  // indices of the features that look this table up, config order
  int64_t weight_bytes() const { return num_rows * dim * 4; }
  int64_t state_bytes() const { return num_rows * OptimizerStateBytesPerRow(optimizer.type, dim); }
};

struct FeatureSpec {
  std::string name;
  FeatureKind kind = FeatureKind::kSingle;
  Pooling pooling = Pooling::kSum;
  int table = 0;
  // Most ids one sample contributes after truncation: 1 (SINGLE), max_ids_per_sample
  // (MULTI_HOT), max_length T (SEQUENCE).
  int max_ids = 1;
  int max_length = 0;       // T (SEQUENCE only)
  int pooled_index = -1;    // position among pooled features (SINGLE, MULTI_HOT), else -1
  int sequence_index = -1;  // position among SEQUENCE features, else -1
  int64_t pooled_col = 0;   // first column of this feature in the pooled output row
  bool is_sequence() const { return kind == FeatureKind::kSequence; }
};

struct OverrideSpec {
  int table = 0;
  Strategy strategy = Strategy::kTableWise;
  std::vector<int> ranks;
};

struct EmbeddingSpec {
  std::vector<TableSpec> tables;
  std::vector<FeatureSpec> features;
  std::vector<OverrideSpec> overrides;
  int64_t budget_bytes = 0;
  int64_t dp_max_bytes = 0;
  uint64_t seed = 0;
  int num_pooled = 0;
  int num_sequence = 0;
  int64_t pooled_width = 0;  // sum of D over pooled features: the pooled output row length
};

// Checks every field (ranges, names, references, kind-specific fields) and flattens.
// world_size is used to check override ranks. InvalidArgument names the field path;
// Unimplemented for storage types other than F32.
StatusOr<EmbeddingSpec> BuildEmbeddingSpec(const proto::EmbeddingConfig& config, int world_size);

}  // namespace loom::embedding

#endif  // LOOM_EMBEDDING_EMBEDDING_SPEC_H_
