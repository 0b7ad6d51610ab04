// The InterFormer's derived sizes and structure flags, computed once from a
// loom.proto.ModelConfig (csrc/proto/model.proto) and validated (docs/model.md §1, §5, §8).
//
//   LOOM_ASSIGN_OR_RETURN(ModelDims dims, ResolveModelDims(config, /*seq_len=*/50));
//   dims.Nx, dims.M, dims.Tp ...
//
// Validation reports every error at once, each naming the field path, the rule and the value:
//   "model.num_heads: must divide embedding_dim 64, got 3"
// Dimension letters as in docs/model.md: d embedding dim, m dense, n sparse, k sequences,
// T sequence length, L layers, H heads, n_cls CLS tokens, K recent tokens.
#ifndef LOOM_MODEL_MODEL_CONFIG_H_
#define LOOM_MODEL_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "csrc/core/status.h"
#include "csrc/proto/model.pb.h"

namespace loom::model {

struct ModelDims {
  proto::ModelConfig config;  // the resolved config (defaults apply to unset fields)

  int64_t d = 0;      // embedding_dim
  int64_t m = 0;      // dense features (0: no dense token)
  int64_t n = 0;      // sparse features
  int64_t k = 0;      // sequences
  int64_t T = 0;      // sequence length of the input (-1 when not known)
  int64_t L = 0;      // layers
  int64_t H = 0;      // heads
  int64_t hd = 0;     // head dim = d / H
  int64_t n_cls = 0;  // CLS tokens = X_sum rows
  int64_t n_pma = 0;  // PMA queries
  int64_t K = 0;      // recent tokens

  bool sole = false;         // INTERLEAVING_SOLE: no sequence arch, k mean tokens in X
  bool cls_prepend = false;  // INT, N2S: X_sum^0 prepended to S, PFFN ctx = X_sum^l
  bool const_xsum = false;   // S2N, SEP: PFFN ctx = layers.<l>.sequence.const_xsum
  bool feed_ssum = false;    // INT, S2N: S_sum joins the interaction input
  bool extra_cross = false;  // FINAL_SUMMARY_EXTRA_CROSS: cross arch L exists

  int64_t Nx = 0;                    // non-sequence tokens n + [m > 0] (+ k in SOLE)
  int64_t c = 0;                     // CLS tokens in S (n_cls if cls_prepend, else 0)
  int64_t Tp = 0;                    // T' = T + c (-1 when T is not known)
  int64_t n_s = 0;                   // S_sum rows = c + n_pma + K (0 in SOLE)
  int64_t M = 0;                     // interaction tokens: Nx + n_s if feed_ssum else Nx
  int64_t gate_hidden = 0;           // gating_hidden_dim (0: one Linear d -> d)
  int64_t interaction_hidden = 0;    // h_i = interaction_mlp_hidden_dim or d
  int64_t masknet_hidden = 0;        // k·d·r
  std::vector<int64_t> head_widths;  // hidden widths of the head ([] = linear head)
  int64_t head_in = 0;               // (n_cls + n_s)·d

  // Whether cross arch l computes X_sum / S_sum (docs/model.md §5); l in [0, L], l = L is
  // the extra cross arch.
  bool XSummaryUsed(int64_t l) const;
  bool SSummaryUsed(int64_t l) const;
  // Number of cross arches: L + 1 with EXTRA_CROSS, else L.
  int64_t NumCross() const { return extra_cross ? L + 1 : L; }
};

// Validates `config` (every rule of docs/model.md §8 and the ranges of model.proto) and
// computes the derived sizes. seq_len: T, or -1 when not known yet (the T-dependent rule
// T' >= K is then skipped). `path` prefixes the field names in messages ("model").
// InvalidArgument lists every error found, joined by "; ".
StatusOr<ModelDims> ResolveModelDims(const proto::ModelConfig& config, int64_t seq_len,
                                     const std::string& path = "model");

// Short names of the enum values ("INT", "GLU", ...), for logs and test names.
std::string InterleavingName(proto::ModelConfig::Interleaving v);
std::string BackboneName(proto::ModelConfig::InteractionBackbone v);

// The config as JSON with proto field names (preserve_proto_field_names), defaults included:
// the `model_config` metadata of exported safetensors (docs/model.md §9).
std::string ModelConfigToJson(const proto::ModelConfig& config);

}  // namespace loom::model

#endif  // LOOM_MODEL_MODEL_CONFIG_H_
