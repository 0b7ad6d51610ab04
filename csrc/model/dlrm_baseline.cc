#include "csrc/model/dlrm_baseline.h"

#include <string>
#include <utility>

#include "csrc/model/ops/bce_loss.h"
#include "csrc/model/ops/elementwise.h"
#include "csrc/model/ops/reduce.h"
#include "csrc/model/ops/tokens.h"

namespace loom::model {

StatusOr<std::unique_ptr<DlrmBaseline>> DlrmBaseline::Create(const proto::ModelConfig& config,
                                                             int64_t max_batch, int64_t seq_len,
                                                             DType dtype, Device device) {
  std::string errors;
  auto require = [&](bool ok, const std::string& field, const std::string& what, int64_t v) {
    if (ok) return;
    if (!errors.empty()) errors += "; ";
    errors += "model." + field + ": " + what + ", got " + std::to_string(v);
  };
  const int64_t d = config.embedding_dim(), m = config.num_dense_features(),
                n = config.num_sparse_features(), k = config.num_sequences();
  require(d >= 1 && d <= 4096, "embedding_dim", "must be in [1, 4096]", d);
  require(m >= 0 && m <= 65535, "num_dense_features", "must be in [0, 65535]", m);
  require(n >= 0 && n <= 65535, "num_sparse_features", "must be in [0, 65535]", n);
  require(k >= 0 && k <= 64, "num_sequences", "must be in [0, 64]", k);
  require(max_batch >= 1, "(max_batch)", "must be >= 1", max_batch);
  require(k == 0 || seq_len >= 1, "(sequence length)", "must be >= 1 with sequences", seq_len);
  const int64_t tokens = (m > 0 ? 1 : 0) + n + k;
  require(tokens >= 1, "num_sparse_features", "the model has no input token (m + n + k = 0)", 0);
  require(config.head_dropout() >= 0 && config.head_dropout() < 1, "head_dropout",
          "must be in [0, 1)", static_cast<int64_t>(config.head_dropout()));
  std::vector<int64_t> widths;
  if (config.head_hidden_dims_size() == 0) {
    widths = {1024, 512, 256, 128};
  } else if (!(config.head_hidden_dims_size() == 1 && config.head_hidden_dims(0) == 0)) {
    for (int i = 0; i < config.head_hidden_dims_size(); ++i) {
      const int64_t w = config.head_hidden_dims(i);
      require(w >= 1 && w <= 65535, "head_hidden_dims[" + std::to_string(i) + "]",
              "must be in [1, 65535]", w);
      widths.push_back(w);
    }
  }
  if (!errors.empty()) return InvalidArgumentError(errors);

  std::unique_ptr<DlrmBaseline> net(new DlrmBaseline(dtype));
  net->d_ = d;
  net->m_ = m;
  net->n_ = n;
  net->k_ = k;
  net->T_ = k > 0 ? seq_len : 0;
  net->num_tokens_ = tokens;
  net->max_batch_ = max_batch;
  net->dtype_ = dtype;
  net->device_ = device;
  const int64_t B = max_batch;
  if (m > 0) {
    layers::LinearConfig lc{m, d, true, ops::Activation::kIdentity, std::nullopt};
    LOOM_ASSIGN_OR_RETURN(net->dense_proj_,
                          layers::Linear::Create(lc, TensorSpec{Shape{B, m}, dtype}, &net->store_,
                                                 "dense_proj", device));
  }
  layers::HeadConfig hc;
  hc.widths = widths;
  hc.dropout = config.head_dropout();
  net->head_begin_ = net->store_.total_elements();
  LOOM_ASSIGN_OR_RETURN(
      net->head_, layers::Head::Create(hc, TensorSpec{Shape{B, tokens * d}, dtype}, &net->store_,
                                       "head", device));
  net->store_.Allocate(device);

  net->x_ = Tensor::Zeros(Shape{B, tokens, d}, dtype, device);
  net->grad_x_ = Tensor::Zeros(Shape{B, tokens, d}, dtype, device);
  net->grad_dense_tok_ = Tensor::Zeros(Shape{B, d}, dtype, device);
  net->grad_dense_ = Tensor::Zeros(Shape{B, m}, dtype, device);
  net->grad_sparse_ = Tensor::Zeros(Shape{B, n, d}, dtype, device);
  for (int64_t j = 0; j < k; ++j) {
    net->mean_.push_back(Tensor::Zeros(Shape{B, d}, dtype, device));
    net->grad_mean_.push_back(Tensor::Zeros(Shape{B, d}, dtype, device));
    net->grad_seq_.push_back(Tensor::Zeros(Shape{B, net->T_, d}, dtype, device));
  }
  return net;
}

Status DlrmBaseline::ValidateInputs(const DenseInputs& in) const {
  const int64_t b = in.sparse.rank() >= 1 ? in.sparse.dim(0) : -1;
  auto expect = [&](const std::string& name, const ConstTensorView& v, const Shape& shape,
                    DType dtype) -> Status {
    if (v.shape() != shape || v.dtype() != dtype) {
      return InvalidArgumentError("DlrmBaseline input " + name + ": expected " +
                                  TensorSpec{shape, dtype}.ToString() + ", got " +
                                  v.spec().ToString());
    }
    if (shape.numel() > 0 && v.device() != device_) {
      return InvalidArgumentError("DlrmBaseline input " + name + " is on " + v.device().ToString() +
                                  ", the model on " + device_.ToString());
    }
    return Status::Ok();
  };
  if (b < 1 || b > max_batch_) {
    return InvalidArgumentError("DlrmBaseline input sparse: batch (dim 0) must be in [1, " +
                                std::to_string(max_batch_) + "], got shape " +
                                in.sparse.shape().ToString());
  }
  LOOM_RETURN_IF_ERROR(expect("sparse", in.sparse, Shape{b, n_, d_}, dtype_));
  if (m_ > 0) LOOM_RETURN_IF_ERROR(expect("dense", in.dense, Shape{b, m_}, dtype_));
  if (static_cast<int64_t>(in.seq.size()) != k_) {
    return InvalidArgumentError("DlrmBaseline input seq: expected " + std::to_string(k_) +
                                " sequences, got " + std::to_string(in.seq.size()));
  }
  for (int64_t j = 0; j < k_; ++j) {
    LOOM_RETURN_IF_ERROR(expect("seq." + std::to_string(j), in.seq[j], Shape{b, T_, d_}, dtype_));
  }
  if (k_ > 0) return expect("seq_mask", in.seq_mask, Shape{b, T_}, DType::kU8);
  return Status::Ok();
}

void DlrmBaseline::SetTraining(bool training, uint64_t seed, uint64_t step) {
  head_->SetDropout(training, seed, step);
}

void DlrmBaseline::Forward(const ExecContext& ctx, const DenseInputs& in, TensorView logits) {
  const int64_t b = in.sparse.dim(0), d = d_;
  CHECK(b >= 1 && b <= max_batch_) << "DlrmBaseline::Forward: batch " << b;
  b_ = b;
  inputs_ = in;
  TensorView x = x_.view().Slice0(0, b);
  int64_t tok = 0;
  auto put = [&](ConstTensorView src, int64_t count) {
    ops::CopyTokensArgs a;
    a.src_begin = 0;
    a.dst_begin = tok;
    a.count = count;
    ops::CopyTokens(ctx, a, src, x);
    tok += count;
  };
  if (m_ > 0) put(dense_proj_->Forward(ctx, in.dense).Reshape(Shape{b, 1, d}), 1);
  if (n_ > 0) put(in.sparse, n_);
  for (int64_t j = 0; j < k_; ++j) {
    TensorView mean = mean_[j].view().Slice0(0, b);
    ops::MaskedMeanTokens(ctx, in.seq[j], in.seq_mask, mean);
    put(mean.Reshape(Shape{b, 1, d}), 1);
  }
  logits_view_ = head_->Forward(ctx, x.Reshape(Shape{b, num_tokens_ * d}));
  ops::Scale(ctx, 1.0, logits_view_, logits);
}

void DlrmBaseline::Loss(const ExecContext& ctx, ConstTensorView labels, TensorView loss,
                        TensorView grad_logits, double grad_scale) {
  if (!loss.empty()) {
    ops::BceWithLogitsForward(ctx, logits_view_, labels, ConstTensorView(), loss);
  }
  if (!grad_logits.empty()) {
    ops::BceWithLogitsBackward(ctx, grad_scale, logits_view_, labels, ConstTensorView(),
                               grad_logits);
  }
}

void DlrmBaseline::Backward(const ExecContext& ctx, ConstTensorView grad_logits) {
  const int64_t b = b_, d = d_;
  CHECK(grad_logits.shape() == Shape{b}) << "DlrmBaseline::Backward: grad_logits "
                                         << grad_logits.shape().ToString() << ", batch " << b;
  TensorView gx = grad_x_.view().Slice0(0, b);
  head_->Backward(ctx, grad_logits, gx.Reshape(Shape{b, num_tokens_ * d}));
  const int64_t total = store_.total_elements();
  if (grads_final_ && total > head_begin_) grads_final_(head_begin_, total);
  int64_t tok = 0;
  auto take = [&](TensorView dst, int64_t count) {
    ops::CopyTokensArgs a;
    a.src_begin = tok;
    a.dst_begin = 0;
    a.count = count;
    ops::CopyTokens(ctx, a, gx, dst);
    tok += count;
  };
  input_grads_.seq.clear();
  if (m_ > 0) {
    TensorView gtok = grad_dense_tok_.view().Slice0(0, b);
    take(gtok.Reshape(Shape{b, 1, d}), 1);
    input_grads_.dense = grad_dense_.view().Slice0(0, b);
    dense_proj_->Backward(ctx, gtok, input_grads_.dense);
    if (grads_final_ && head_begin_ > 0) grads_final_(0, head_begin_);
  } else {
    input_grads_.dense = TensorView();
  }
  input_grads_.sparse = grad_sparse_.view().Slice0(0, b);
  if (n_ > 0) take(input_grads_.sparse, n_);
  for (int64_t j = 0; j < k_; ++j) {
    TensorView gmean = grad_mean_[j].view().Slice0(0, b);
    take(gmean.Reshape(Shape{b, 1, d}), 1);
    TensorView gseq = grad_seq_[j].view().Slice0(0, b);
    ops::MaskedMeanTokensBackward(ctx, gmean, inputs_.seq_mask, gseq);
    input_grads_.seq.push_back(gseq);
  }
}

}  // namespace loom::model
