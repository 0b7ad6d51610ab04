#include "csrc/model/model_config.h"

#include <cmath>
#include <sstream>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/reflection.h>
#include <google/protobuf/util/json_util.h>

namespace loom::model {
namespace {

// Collects "<path>.<field>: <what>, got <value>" messages.
class Errors {
 public:
  explicit Errors(std::string path) : path_(std::move(path)) {}

  template <typename V>
  void Require(bool ok, const std::string& field, const std::string& what, const V& value) {
    if (ok) return;
    std::ostringstream os;
    os << (path_.empty() ? "" : path_ + ".") << field << ": " << what << ", got " << value;
    errors_.push_back(os.str());
  }
  template <typename V>
  void InRange(const std::string& field, V value, V lo, V hi) {
    std::ostringstream what;
    what << "must be in [" << lo << ", " << hi << "]";
    Require(value >= lo && value <= hi, field, what.str(), value);
  }
  Status ToStatus() const {
    if (errors_.empty()) return Status::Ok();
    std::string msg;
    for (size_t i = 0; i < errors_.size(); ++i) msg += (i ? "; " : "") + errors_[i];
    return InvalidArgumentError(msg);
  }

 private:
  std::string path_;
  std::vector<std::string> errors_;
};

std::string Str(int64_t v) { return std::to_string(v); }

}  // namespace

bool ModelDims::XSummaryUsed(int64_t l) const {
  if (l == L) return extra_cross;
  return cls_prepend || (!extra_cross && l == L - 1);
}

bool ModelDims::SSummaryUsed(int64_t l) const {
  if (sole) return false;
  if (l == L) return extra_cross;
  return feed_ssum || (!extra_cross && l == L - 1);
}

StatusOr<ModelDims> ResolveModelDims(const proto::ModelConfig& config, int64_t seq_len,
                                     const std::string& path) {
  using MC = proto::ModelConfig;
  Errors err(path);
  ModelDims r;
  r.config = config;
  const MC& c = config;
  r.d = c.embedding_dim();
  r.m = c.num_dense_features();
  r.n = c.num_sparse_features();
  r.k = c.num_sequences();
  r.T = seq_len;
  r.L = c.num_layers();
  r.H = c.num_heads();
  r.n_cls = c.num_cls_tokens();
  r.n_pma = c.num_pma_tokens();
  r.K = c.num_recent_tokens();

  err.InRange<int64_t>("embedding_dim", r.d, 2, 4096);
  err.InRange<int64_t>("num_dense_features", r.m, 0, 65535);
  err.InRange<int64_t>("num_sparse_features", r.n, 0, 65535);
  err.InRange<int64_t>("num_sequences", r.k, 1, 64);
  err.InRange<int64_t>("num_layers", r.L, 1, 64);
  err.InRange<int64_t>("num_cls_tokens", r.n_cls, 1, 64);
  err.InRange<int64_t>("num_pma_tokens", r.n_pma, 1, 64);
  err.Require(r.K >= 0, "num_recent_tokens", "must be >= 0", r.K);
  err.Require(c.layer_norm_eps() > 0.0f && c.layer_norm_eps() <= 1e-2f, "layer_norm_eps",
              "must be in (0, 0.01]", c.layer_norm_eps());
  err.InRange<int64_t>("masknet_expansion", c.masknet_expansion(), 1, 16);
  err.InRange<int64_t>("gating_hidden_dim", c.gating_hidden_dim(), 0, 65535);
  err.InRange<int64_t>("dhen_layers", c.dhen_layers(), 1, 8);
  err.InRange<int64_t>("dcn_layers", c.dcn_layers(), 1, 8);
  err.InRange<int64_t>("dcn_rank", c.dcn_rank(), 1, 4096);
  err.InRange<int64_t>("interaction_mlp_hidden_dim", c.interaction_mlp_hidden_dim(), 0, 65535);
  err.InRange<int64_t>("pffn_hypernet_hidden_dim", c.pffn_hypernet_hidden_dim(), 1, 65535);
  err.Require(c.rope_base() > 1.0f && c.rope_base() <= 1e9f, "rope_base", "must be in (1, 1e9]",
              c.rope_base());
  err.Require(c.head_dropout() >= 0.0f && c.head_dropout() < 1.0f, "head_dropout",
              "must be in [0, 1)", c.head_dropout());
  err.Require(seq_len == -1 || seq_len >= 1, "(input) sequence length T", "must be >= 1", seq_len);

  if (r.H < 1 || r.H > r.d) {
    err.Require(false, "num_heads", "must be in [1, embedding_dim " + Str(r.d) + "]", r.H);
  } else {
    err.Require(r.d % r.H == 0, "num_heads", "must divide embedding_dim " + Str(r.d), r.H);
    r.hd = r.d / r.H;
    if (r.d % r.H == 0 && c.use_rope()) {
      err.Require(r.hd % 2 == 0, "num_heads",
                  "must leave an even head_dim (embedding_dim / num_heads) when use_rope, "
                  "head_dim = " +
                      Str(r.hd) + " for embedding_dim " + Str(r.d),
                  r.H);
    }
  }

  r.sole = c.interleaving() == MC::INTERLEAVING_SOLE;
  r.cls_prepend =
      c.interleaving() == MC::INTERLEAVING_INT || c.interleaving() == MC::INTERLEAVING_N2S;
  r.const_xsum =
      c.interleaving() == MC::INTERLEAVING_S2N || c.interleaving() == MC::INTERLEAVING_SEP;
  r.feed_ssum =
      c.interleaving() == MC::INTERLEAVING_INT || c.interleaving() == MC::INTERLEAVING_S2N;
  r.extra_cross = c.final_summary() == MC::FINAL_SUMMARY_EXTRA_CROSS;

  r.Nx = r.n + (r.m > 0 ? 1 : 0) + (r.sole ? r.k : 0);
  r.c = r.cls_prepend ? r.n_cls : 0;
  r.Tp = seq_len >= 0 ? seq_len + r.c : -1;
  r.n_s = r.sole ? 0 : r.c + r.n_pma + r.K;
  r.M = r.Nx + (r.feed_ssum ? r.n_s : 0);
  r.gate_hidden = c.gating_hidden_dim();
  r.interaction_hidden = c.interaction_mlp_hidden_dim() > 0 ? c.interaction_mlp_hidden_dim() : r.d;
  r.masknet_hidden = r.k * r.d * c.masknet_expansion();
  r.head_in = (r.n_cls + r.n_s) * r.d;

  err.Require(r.Nx >= 1, "num_sparse_features",
              "need at least one non-sequence token (num_sparse_features > 0 or "
              "num_dense_features > 0)",
              r.n);
  err.Require(r.M >= 2, "num_sparse_features",
              "the interaction arch needs M >= 2 tokens (M = " + Str(r.M) +
                  " non-sequence + summary tokens; the DOT module needs a pair)",
              r.n);
  if (seq_len >= 1 && r.K > r.Tp) {
    err.Require(
        false, "num_recent_tokens",
        "must be <= T' = T + CLS tokens = " + Str(r.Tp) + " (sequence length " + Str(seq_len) + ")",
        r.K);
  }

  if (c.head_hidden_dims_size() == 0) {
    r.head_widths = {1024, 512, 256, 128};
  } else if (c.head_hidden_dims_size() == 1 && c.head_hidden_dims(0) == 0) {
    r.head_widths = {};
  } else {
    for (int i = 0; i < c.head_hidden_dims_size(); ++i) {
      const int64_t w = c.head_hidden_dims(i);
      err.Require(w >= 1 && w <= 65535, "head_hidden_dims[" + std::to_string(i) + "]",
                  "must be in [1, 65535] (or the single value 0 for a linear head)", w);
      r.head_widths.push_back(w);
    }
  }
  LOOM_RETURN_IF_ERROR(err.ToStatus());
  return r;
}

std::string InterleavingName(proto::ModelConfig::Interleaving v) {
  const std::string full = proto::ModelConfig::Interleaving_Name(v);
  return full.substr(std::string("INTERLEAVING_").size());
}

std::string BackboneName(proto::ModelConfig::InteractionBackbone v) {
  const std::string full = proto::ModelConfig::InteractionBackbone_Name(v);
  return full.substr(std::string("INTERACTION_BACKBONE_").size());
}

std::string ModelConfigToJson(const proto::ModelConfig& config) {
  // Spell out every optional field at its default so the file states all its values.
  proto::ModelConfig full = config;
  const google::protobuf::Descriptor* desc = full.GetDescriptor();
  const google::protobuf::Reflection* refl = full.GetReflection();
  for (int i = 0; i < desc->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* f = desc->field(i);
    if (f->is_repeated() || refl->HasField(full, f)) continue;
    using FD = google::protobuf::FieldDescriptor;
    switch (f->cpp_type()) {
      case FD::CPPTYPE_INT32:
        refl->SetInt32(&full, f, f->default_value_int32());
        break;
      case FD::CPPTYPE_INT64:
        refl->SetInt64(&full, f, f->default_value_int64());
        break;
      case FD::CPPTYPE_UINT32:
        refl->SetUInt32(&full, f, f->default_value_uint32());
        break;
      case FD::CPPTYPE_UINT64:
        refl->SetUInt64(&full, f, f->default_value_uint64());
        break;
      case FD::CPPTYPE_FLOAT:
        refl->SetFloat(&full, f, f->default_value_float());
        break;
      case FD::CPPTYPE_DOUBLE:
        refl->SetDouble(&full, f, f->default_value_double());
        break;
      case FD::CPPTYPE_BOOL:
        refl->SetBool(&full, f, f->default_value_bool());
        break;
      case FD::CPPTYPE_ENUM:
        refl->SetEnum(&full, f, f->default_value_enum());
        break;
      case FD::CPPTYPE_STRING:
        refl->SetString(&full, f, f->default_value_string());
        break;
      default:
        break;
    }
  }
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(full, &json, opts);
  CHECK(status.ok()) << "ModelConfig to JSON: " << status.ToString();
  return json;
}

}  // namespace loom::model
