#include "csrc/model/interformer.h"

#include "csrc/model/layers/row_gather.h"
#include "csrc/model/ops/bce_loss.h"
#include "csrc/model/ops/elementwise.h"
#include "csrc/model/ops/reduce.h"
#include "csrc/model/ops/tokens.h"

namespace loom::model {
namespace {

using layers::CRows;
using layers::NewBuffer;
using layers::Rows;
using MC = proto::ModelConfig;

using ops::CopyTokenRange;

// dst = Σ parts (zero when there is none).
void SumInto(const ExecContext& ctx, const std::vector<ConstTensorView>& parts, TensorView dst) {
  if (parts.empty()) {
    ZeroTensor(dst, ctx.stream);
  } else if (parts.size() == 1) {
    ops::Scale(ctx, 1.0, parts[0], dst);  // an exact copy
  } else {
    ops::Add(ctx, parts[0], parts[1], dst);
    for (size_t i = 2; i < parts.size(); ++i) ops::Add(ctx, dst, parts[i], dst);
  }
}

ops::Activation MaskNetActivation(MC::MaskNetActivation a) {
  return a == MC::MASKNET_ACTIVATION_SILU ? ops::Activation::kSilu : ops::Activation::kRelu;
}

}  // namespace

StatusOr<std::unique_ptr<InterFormer>> InterFormer::Create(const proto::ModelConfig& config,
                                                           int64_t max_batch, int64_t seq_len,
                                                           DType dtype, Device device) {
  if (max_batch < 1) {
    return InvalidArgumentError("InterFormer: max_batch must be >= 1, got " +
                                std::to_string(max_batch));
  }
  if (dtype != DType::kF32 && dtype != DType::kF64) {
    return InvalidArgumentError(std::string("InterFormer: dtype must be f32 or f64, got ") +
                                DTypeName(dtype));
  }
  LOOM_ASSIGN_OR_RETURN(ModelDims dims, ResolveModelDims(config, seq_len));
  std::unique_ptr<InterFormer> m(new InterFormer(dtype));
  m->dims_ = std::move(dims);
  m->max_batch_ = max_batch;
  m->device_ = device;
  LOOM_RETURN_IF_ERROR(m->Build());
  return m;
}

Status InterFormer::Build() {
  const ModelDims& D = dims_;
  const MC& c = D.config;
  const int64_t B = max_batch_, d = D.d;
  const DType dt = dtype_;
  const Device dev = device_;
  const TensorSpec x_spec{Shape{B, D.Nx, d}, dt};
  const TensorSpec s_spec{Shape{B, D.sole ? 1 : D.Tp, d}, dt};

  // 1. Registration, in the reference's named_parameters() order. Every module's parameters
  // are contiguous in the store (offsets follow registration): record each module's range.
  auto range_from = [this](int64_t begin) { return ParamRange{begin, store_.total_elements()}; };
  int64_t begin = store_.total_elements();
  if (D.m > 0) {
    layers::LinearConfig lc{D.m, d, true, ops::Activation::kIdentity, std::nullopt};
    LOOM_ASSIGN_OR_RETURN(dense_proj_, layers::Linear::Create(lc, TensorSpec{Shape{B, D.m}, dt},
                                                              &store_, "dense_proj", dev));
  }
  dense_proj_range_ = range_from(begin);
  begin = store_.total_elements();
  if (!D.sole) {
    layers::MaskNetConfig mc;
    mc.d = d;
    mc.k = D.k;
    mc.expansion = c.masknet_expansion();
    mc.activation = MaskNetActivation(c.masknet_activation());
    mc.sigmoid_mask = c.masknet_sigmoid_mask();
    LOOM_ASSIGN_OR_RETURN(masknet_, layers::MaskNet::Create(mc, TensorSpec{Shape{B, D.T, d}, dt},
                                                            &store_, "masknet", dev));
  }
  masknet_range_ = range_from(begin);
  layers::GatingConfig gating;
  gating.d = d;
  gating.hidden = D.gate_hidden;
  gating.form = c.gating_form();
  gating.literal_activation = c.gating_literal_activation();
  for (int64_t l = 0; l < D.NumCross(); ++l) {
    layers::CrossArchConfig cc;
    cc.has_x = D.XSummaryUsed(l);
    cc.has_s = D.SSummaryUsed(l);
    cc.n_cls = D.n_cls;
    cc.gating = gating;
    cc.cls_in_s = D.c;
    cc.n_pma = D.n_pma;
    cc.recent = D.K;
    cc.heads = D.H;
    cc.recent_zero_padding = c.recent_zero_padding();
    begin = store_.total_elements();
    if (!cc.has_x && !cc.has_s) {
      cross_.push_back(nullptr);  // no parameters, never computed
      cross_range_.push_back(range_from(begin));
      continue;
    }
    LOOM_ASSIGN_OR_RETURN(auto arch, layers::CrossArch::Create(cc, x_spec, s_spec, &store_,
                                                               "cross." + std::to_string(l), dev));
    cross_.push_back(std::move(arch));
    cross_range_.push_back(range_from(begin));
  }
  for (int64_t l = 0; l < D.L; ++l) {
    layers::BlockConfig bc;
    bc.interaction.out_tokens = D.Nx;
    bc.interaction.dhen_layers = c.dhen_layers();
    bc.interaction.dhen.backbone = c.interaction_backbone();
    bc.interaction.dhen.dcn.layers = c.dcn_layers();
    bc.interaction.dhen.dcn.rank = c.dcn_rank();
    bc.interaction.dhen.layer_norm_eps = c.layer_norm_eps();
    bc.interaction.mlp_hidden = D.interaction_hidden;
    bc.feed_ssum = D.feed_ssum;
    bc.n_s = D.n_s;
    bc.has_sequence = !D.sole;
    bc.sequence.pffn.d = d;
    bc.sequence.pffn.n_cls = D.n_cls;
    bc.sequence.pffn.form = c.pffn_form();
    bc.sequence.pffn.hypernet_hidden = c.pffn_hypernet_hidden_dim();
    bc.sequence.heads = D.H;
    bc.sequence.rope = c.use_rope();
    bc.sequence.rope_base = c.rope_base();
    bc.sequence.residual = c.sequence_residual();
    bc.sequence.layer_norm_eps = c.layer_norm_eps();
    bc.sequence.const_xsum = D.const_xsum;
    begin = store_.total_elements();
    LOOM_ASSIGN_OR_RETURN(auto blk,
                          layers::InterFormerBlock::Create(bc, x_spec, s_spec, &store_,
                                                           "layers." + std::to_string(l), dev));
    blocks_.push_back(std::move(blk));
    block_range_.push_back(range_from(begin));
  }
  layers::HeadConfig hc;
  hc.widths = D.head_widths;
  hc.dropout = c.head_dropout();
  begin = store_.total_elements();
  LOOM_ASSIGN_OR_RETURN(
      head_, layers::Head::Create(hc, TensorSpec{Shape{B, D.head_in}, dt}, &store_, "head", dev));
  head_range_ = range_from(begin);
  store_.Allocate(dev);

  // 2. Buffers.
  sparse_offset_ = D.m > 0 ? 1 : 0;
  sole_offset_ = sparse_offset_ + D.n;
  x_.push_back(NewBuffer(x_spec.shape, dt, dev));
  if (D.sole) sole_mean_ = NewBuffer(Shape{B, 1, d}, dt, dev);
  // On the CPU the position-wise MaskNet runs on the positions that can reach the logits only
  // (packed rows; see BuildPackedRows). CUDA computes every position (the index list would
  // need the mask on the host).
  pack_supported_ = dev.is_cpu() && !D.sole;
  pack_positions_ = pack_supported_;
  if (!D.sole) s0_ = NewBuffer(s_spec.shape, dt, dev);
  if (pack_supported_) {
    rows_seq_ = Tensor::Empty(Shape{B * D.T}, DType::kI32);
    rows_s_ = Tensor::Empty(Shape{B * D.T}, DType::kI32);
    rows_attn_ = Tensor::Empty(Shape{B * D.Tp}, DType::kI32);
    grad_packed_ = NewBuffer(Shape{B * D.T, d}, dt, dev);
  }
  if (D.cls_prepend) {
    key_mask_ = NewBuffer(Shape{B, D.Tp}, DType::kU8, dev);
    Tensor ones = Tensor::Empty(Shape{B, D.c, 1}, DType::kU8);
    std::fill(ones.data<uint8_t>(), ones.data<uint8_t>() + ones.numel(), uint8_t{1});
    cls_ones_ = ones.To(dev);
  }
  h0_ = NewBuffer(Shape{B, D.head_in}, dt, dev);
  xl_.resize(D.L + 1);
  sl_.resize(D.L + 1);
  xsum_.resize(D.L);
  ssum_.resize(D.L);
  for (int64_t l = 0; l <= D.L; ++l) {
    grad_x_.push_back(NewBuffer(x_spec.shape, dt, dev));
    if (!D.sole) grad_s_.push_back(NewBuffer(s_spec.shape, dt, dev));
  }
  for (int64_t l = 0; l < D.L; ++l) {
    grad_xsum_.push_back(D.XSummaryUsed(l) ? NewBuffer(Shape{B, D.n_cls, d}, dt, dev) : Tensor());
    grad_ssum_.push_back(D.SSummaryUsed(l) ? NewBuffer(Shape{B, D.n_s, d}, dt, dev) : Tensor());
  }
  grad_h0_ = NewBuffer(Shape{B, D.head_in}, dt, dev);
  grad_xs_final_ = NewBuffer(Shape{B, D.n_cls, d}, dt, dev);
  if (!D.sole) grad_ss_final_ = NewBuffer(Shape{B, D.n_s, d}, dt, dev);
  tmp_x_a_ = NewBuffer(x_spec.shape, dt, dev);
  tmp_x_b_ = NewBuffer(x_spec.shape, dt, dev);
  if (!D.sole) {
    tmp_s_a_ = NewBuffer(s_spec.shape, dt, dev);
    tmp_s_b_ = NewBuffer(s_spec.shape, dt, dev);
    tmp_ssum_ = NewBuffer(Shape{B, D.n_s, d}, dt, dev);
    if (D.cls_prepend) tmp_sraw_ = NewBuffer(Shape{B, D.T, d}, dt, dev);
  }
  tmp_xsum_ = NewBuffer(Shape{B, D.n_cls, d}, dt, dev);
  tmp_tok_ = NewBuffer(Shape{B, 1, d}, dt, dev);
  if (D.m > 0) grad_dense_ = NewBuffer(Shape{B, D.m}, dt, dev);
  grad_sparse_ = NewBuffer(Shape{B, D.n, d}, dt, dev);
  for (int64_t j = 0; j < D.k; ++j) grad_seq_.push_back(NewBuffer(Shape{B, D.T, d}, dt, dev));
  return Status::Ok();
}

Status InterFormer::ValidateInputs(const DenseInputs& in) const {
  const ModelDims& D = dims_;
  const int64_t b = in.sparse.rank() >= 1 ? in.sparse.dim(0) : -1;
  auto expect = [&](const char* name, const ConstTensorView& v, const Shape& shape,
                    DType dtype) -> Status {
    if (v.shape() != shape || v.dtype() != dtype) {
      return InvalidArgumentError(std::string("InterFormer input ") + name + ": expected " +
                                  TensorSpec{shape, dtype}.ToString() + ", got " +
                                  v.spec().ToString());
    }
    if (shape.numel() > 0 && v.device() != device_) {
      return InvalidArgumentError(std::string("InterFormer input ") + name + " is on " +
                                  v.device().ToString() + ", the model on " + device_.ToString());
    }
    return Status::Ok();
  };
  if (b < 1 || b > max_batch_) {
    return InvalidArgumentError("InterFormer input sparse: batch (dim 0) must be in [1, " +
                                std::to_string(max_batch_) + "], got shape " +
                                in.sparse.shape().ToString());
  }
  LOOM_RETURN_IF_ERROR(expect("sparse", in.sparse, Shape{b, D.n, D.d}, dtype_));
  if (D.m > 0) LOOM_RETURN_IF_ERROR(expect("dense", in.dense, Shape{b, D.m}, dtype_));
  if (static_cast<int64_t>(in.seq.size()) != D.k) {
    return InvalidArgumentError("InterFormer input seq: expected " + std::to_string(D.k) +
                                " sequences, got " + std::to_string(in.seq.size()));
  }
  for (int64_t j = 0; j < D.k; ++j) {
    LOOM_RETURN_IF_ERROR(
        expect(("seq." + std::to_string(j)).c_str(), in.seq[j], Shape{b, D.T, D.d}, dtype_));
  }
  return expect("seq_mask", in.seq_mask, Shape{b, D.T}, DType::kU8);
}

void InterFormer::SetTraining(bool training, uint64_t seed, uint64_t step) {
  training_ = training;
  head_->SetDropout(training, seed, step);
}

// ---------------------------------------------------------------------------------------------
// Forward

void InterFormer::Forward(const ExecContext& ctx, const DenseInputs& in, TensorView logits) {
  LOOM_CHECK_OK(ValidateInputs(in));
  const ModelDims& D = dims_;
  const int64_t b = in.sparse.dim(0), d = D.d;
  b_ = b;
  inputs_ = in;

  // 1. X = [dense token] ++ sparse ++ [SOLE mean tokens].
  TensorView x0 = Rows(x_[0], b);
  if (D.m > 0) {
    CopyTokenRange(ctx, dense_proj_->Forward(ctx, in.dense).Reshape(Shape{b, 1, d}), 0, x0, 0, 1);
  }
  CopyTokenRange(ctx, in.sparse, 0, x0, sparse_offset_, D.n);
  if (D.sole) {
    TensorView mean = Rows(sole_mean_, b);
    for (int64_t j = 0; j < D.k; ++j) {
      ops::MaskedMeanTokens(ctx, in.seq[j], in.seq_mask, mean.Reshape(Shape{b, d}));
      CopyTokenRange(ctx, mean, 0, x0, sole_offset_ + j, 1);
    }
  }
  xl_[0] = x0;

  // 2-3. S = MaskNet(seqs), with the CLS prepend.
  if (!D.sole) {
    TensorView s0 = Rows(s0_, b);
    if (D.cls_prepend) {
      TensorView km = Rows(key_mask_, b);
      ops::ConcatTokens(ctx, {CRows(cls_ones_, b), in.seq_mask.Reshape(Shape{b, D.T, 1})},
                        km.Reshape(Shape{b, D.Tp, 1}));
      km_view_ = km;
      xsum_[0] = cross_[0]->XSummary(ctx, x0);
    } else {
      km_view_ = in.seq_mask;
    }
    rows_seq_view_ = rows_s_view_ = rows_attn_view_ = ConstTensorView();  // all positions
    if (pack_positions_) {
      BuildPackedRows(in.seq_mask);
      const ConstTensorView packed = masknet_->Forward(ctx, in.seq, rows_seq_view_);  // (n, d)
      ZeroTensor(s0, ctx.stream);  // positions that cannot reach the logits stay 0
      layers::ScatterRows(ctx, packed, 0, rows_s_view_, s0.Reshape(Shape{b * D.Tp, d}));
      if (D.cls_prepend) CopyTokenRange(ctx, xsum_[0], 0, s0, 0, D.c);
      sl_[0] = s0;
    } else {
      const ConstTensorView s_raw = masknet_->Forward(ctx, in.seq);
      if (D.cls_prepend) {
        ops::ConcatTokens(ctx, {xsum_[0], s_raw}, s0);
        sl_[0] = s0;
      } else {
        sl_[0] = s_raw;
      }
    }
  }

  // 4. The layers.
  for (int64_t l = 0; l < D.L; ++l) {
    ForwardSequencePath(ctx, l);
    ForwardInteractionPath(ctx, l);
  }

  // 5. Final summaries.
  if (D.extra_cross) {
    x_final_sum_ = cross_[D.L]->XSummary(ctx, xl_[D.L]);
    if (!D.sole) s_final_sum_ = cross_[D.L]->SSummary(ctx, sl_[D.L], km_view_, rows_attn_view_);
  } else {
    x_final_sum_ = xsum_[D.L - 1];
    if (!D.sole) s_final_sum_ = ssum_[D.L - 1];
  }

  // 6. Head.
  TensorView h0 = Rows(h0_, b);
  std::vector<ConstTensorView> parts = {x_final_sum_.Reshape(Shape{b, D.n_cls * d, 1})};
  if (!D.sole) parts.push_back(s_final_sum_.Reshape(Shape{b, D.n_s * d, 1}));
  ops::ConcatTokens(ctx, parts, h0.Reshape(Shape{b, D.head_in, 1}));
  logits_view_ = head_->Forward(ctx, h0);
  ops::Scale(ctx, 1.0, logits_view_, logits);
}

void InterFormer::BuildPackedRows(ConstTensorView seq_mask) {
  // A position of S reaches the logits only if it is a real token, or (without
  // recent_zero_padding) one of the last K positions, which S_sum reads as they are
  // (docs/model.md §6). Every other position is padding that is never a key and never read:
  // its MaskNet output is never observed and its gradient is exactly zero, so it is skipped.
  const ModelDims& D = dims_;
  const int64_t b = seq_mask.dim(0), t = D.T;
  const bool keep_recent = !D.config.recent_zero_padding();
  const uint8_t* mask = seq_mask.data<uint8_t>();
  int32_t* rs = rows_seq_.data<int32_t>();
  int32_t* rp = rows_s_.data<int32_t>();
  int32_t* ra = rows_attn_.data<int32_t>();
  int64_t n = 0, na = 0;
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t p = 0; p < D.c; ++p) ra[na++] = static_cast<int32_t>(i * D.Tp + p);  // CLS
    for (int64_t p = 0; p < t; ++p) {
      if (mask[i * t + p] || (keep_recent && p >= t - D.K)) {
        rs[n] = static_cast<int32_t>(i * t + p);
        rp[n] = static_cast<int32_t>(i * D.Tp + D.c + p);
        ra[na++] = rp[n];
        ++n;
      }
    }
  }
  rows_seq_view_ = rows_seq_.cview().Slice0(0, n);
  rows_s_view_ = rows_s_.cview().Slice0(0, n);
  // The MHA/PMA projections: the same positions plus the CLS tokens (always valid).
  rows_attn_view_ = rows_attn_.cview().Slice0(0, na);
}

void InterFormer::ForwardSequencePath(const ExecContext& ctx, int64_t l) {
  const ModelDims& D = dims_;
  const bool reuse_xsum0 = l == 0 && D.cls_prepend;  // computed for the CLS prepend
  if (D.XSummaryUsed(l) && !reuse_xsum0) xsum_[l] = cross_[l]->XSummary(ctx, xl_[l]);
  if (!D.sole) {
    sl_[l + 1] = blocks_[l]->ForwardSequence(
        ctx, sl_[l], D.cls_prepend ? xsum_[l] : ConstTensorView(), km_view_, rows_attn_view_);
  }
}

void InterFormer::ForwardInteractionPath(const ExecContext& ctx, int64_t l) {
  const ModelDims& D = dims_;
  if (D.SSummaryUsed(l)) ssum_[l] = cross_[l]->SSummary(ctx, sl_[l], km_view_, rows_attn_view_);
  xl_[l + 1] =
      blocks_[l]->ForwardInteraction(ctx, xl_[l], D.feed_ssum ? ssum_[l] : ConstTensorView());
}

void InterFormer::Loss(const ExecContext& ctx, ConstTensorView labels, TensorView loss,
                       TensorView grad_logits, double grad_scale) {
  const ConstTensorView logits = logits_view_;
  if (!loss.empty()) ops::BceWithLogitsForward(ctx, logits, labels, ConstTensorView(), loss);
  if (!grad_logits.empty()) {
    ops::BceWithLogitsBackward(ctx, grad_scale, logits, labels, ConstTensorView(), grad_logits);
  }
}

// ---------------------------------------------------------------------------------------------
// Backward

void InterFormer::Backward(const ExecContext& ctx, ConstTensorView grad_logits) {
  const ModelDims& D = dims_;
  const int64_t b = b_, d = D.d, L = D.L;
  CHECK(grad_logits.shape() == Shape{b})
      << "InterFormer::Backward: grad_logits " << grad_logits.shape().ToString() << ", batch " << b;
  // 6. Head, and the split of h0 into the two final summaries.
  TensorView gh0 = Rows(grad_h0_, b);
  head_->Backward(ctx, grad_logits, gh0);
  ReportGradsFinal(head_range_);
  TensorView gxs = Rows(grad_xs_final_, b);
  std::vector<TensorView> parts = {gxs.Reshape(Shape{b, D.n_cls * d, 1})};
  TensorView gss;
  if (!D.sole) {
    gss = Rows(grad_ss_final_, b);
    parts.push_back(gss.Reshape(Shape{b, D.n_s * d, 1}));
  }
  ops::SplitTokens(ctx, gh0.Reshape(Shape{b, D.head_in, 1}), parts);

  // 5. Final summaries: cross arch L (EXTRA_CROSS) or layer L−1's summaries (LITERAL).
  for (int64_t l = 0; l < L; ++l) {
    if (grad_xsum_[l].defined()) ZeroTensor(Rows(grad_xsum_[l], b), ctx.stream);
    if (grad_ssum_[l].defined()) ZeroTensor(Rows(grad_ssum_[l], b), ctx.stream);
  }
  if (D.extra_cross) {
    cross_[L]->XSummaryBackward(ctx, gxs, Rows(grad_x_[L], b));
    if (!D.sole) cross_[L]->SSummaryBackward(ctx, gss, Rows(grad_s_[L], b));
    ReportGradsFinal(cross_range_[L]);
  } else {
    ops::Scale(ctx, 1.0, gxs, Rows(grad_xsum_[L - 1], b));
    if (!D.sole) ops::Scale(ctx, 1.0, gss, Rows(grad_ssum_[L - 1], b));
  }

  // 4. The layers, last to first.
  for (int64_t l = L - 1; l >= 0; --l) {
    BackwardInteractionPath(ctx, l);
    BackwardSequencePath(ctx, l);
    JoinLayerGrads(ctx, l);
    // Layer l's block and cross arch l (both summaries; X_sum^0 of the CLS prepend in the
    // join) have no later use in this Backward.
    ReportGradsFinal(block_range_[l]);
    ReportGradsFinal(cross_range_[l]);
  }

  // 1-3. Input gradients.
  TensorView gx0 = Rows(grad_x_[0], b);
  input_grads_.sparse = Rows(grad_sparse_, b);
  CopyTokenRange(ctx, gx0, sparse_offset_, input_grads_.sparse, 0, D.n);
  if (D.m > 0) {
    TensorView tok = Rows(tmp_tok_, b);
    CopyTokenRange(ctx, gx0, 0, tok, 0, 1);
    input_grads_.dense = Rows(grad_dense_, b);
    dense_proj_->Backward(ctx, tok.Reshape(Shape{b, d}), input_grads_.dense);
  }
  ReportGradsFinal(dense_proj_range_);
  input_grads_.seq.clear();
  for (int64_t j = 0; j < D.k; ++j) input_grads_.seq.push_back(Rows(grad_seq_[j], b));
  if (D.sole) {
    TensorView tok = Rows(tmp_tok_, b);
    for (int64_t j = 0; j < D.k; ++j) {
      CopyTokenRange(ctx, gx0, sole_offset_ + j, tok, 0, 1);
      ops::MaskedMeanTokensBackward(ctx, tok.Reshape(Shape{b, d}), inputs_.seq_mask,
                                    input_grads_.seq[j]);
    }
  } else {
    ConstTensorView gs0 = Rows(grad_s_[0], b);
    if (rows_s_view_.rank() == 1) {  // the last Forward ran MaskNet packed
      TensorView packed = Rows(grad_packed_, rows_s_view_.dim(0));
      layers::GatherRows(ctx, gs0.Reshape(Shape{b * D.Tp, d}), rows_s_view_, 0, packed);
      gs0 = packed;
    } else if (D.cls_prepend) {
      TensorView graw = Rows(tmp_sraw_, b);
      CopyTokenRange(ctx, gs0, D.c, graw, 0, D.T);
      gs0 = graw;
    }
    masknet_->Backward(ctx, gs0, input_grads_.seq);
  }
  ReportGradsFinal(masknet_range_);
}

void InterFormer::BackwardInteractionPath(const ExecContext& ctx, int64_t l) {
  const ModelDims& D = dims_;
  const int64_t b = b_;
  // LITERAL: layer L−1's arch outputs are never consumed; their gradients are zero.
  const bool active = D.extra_cross || l < D.L - 1;
  wrote_x_a_ = wrote_s_a_ = false;
  if (active) {
    TensorView gss = D.feed_ssum ? Rows(tmp_ssum_, b) : TensorView();
    blocks_[l]->BackwardInteraction(ctx, CRows(grad_x_[l + 1], b), Rows(tmp_x_a_, b), gss);
    if (D.feed_ssum) ops::Add(ctx, Rows(grad_ssum_[l], b), gss, Rows(grad_ssum_[l], b));
    wrote_x_a_ = true;
  }
  if (D.SSummaryUsed(l)) {
    cross_[l]->SSummaryBackward(ctx, CRows(grad_ssum_[l], b), Rows(tmp_s_a_, b));
    wrote_s_a_ = true;
  }
}

void InterFormer::BackwardSequencePath(const ExecContext& ctx, int64_t l) {
  const ModelDims& D = dims_;
  const int64_t b = b_;
  const bool active = D.extra_cross || l < D.L - 1;
  wrote_s_b_ = wrote_x_b_ = false;
  if (active && !D.sole) {
    TensorView gxs = D.cls_prepend ? Rows(tmp_xsum_, b) : TensorView();
    blocks_[l]->BackwardSequence(ctx, CRows(grad_s_[l + 1], b), Rows(tmp_s_b_, b), gxs);
    if (D.cls_prepend) ops::Add(ctx, Rows(grad_xsum_[l], b), gxs, Rows(grad_xsum_[l], b));
    wrote_s_b_ = true;
  }
  // X_sum^0 of the CLS prepend also feeds S_0: its backward waits for the join (below).
  if (D.XSummaryUsed(l) && !(l == 0 && D.cls_prepend)) {
    cross_[l]->XSummaryBackward(ctx, CRows(grad_xsum_[l], b), Rows(tmp_x_b_, b));
    wrote_x_b_ = true;
  }
}

void InterFormer::JoinLayerGrads(const ExecContext& ctx, int64_t l) {
  const ModelDims& D = dims_;
  const int64_t b = b_;
  std::vector<ConstTensorView> xs, ss;
  if (wrote_x_a_) xs.push_back(CRows(tmp_x_a_, b));
  if (wrote_x_b_) xs.push_back(CRows(tmp_x_b_, b));
  SumInto(ctx, xs, Rows(grad_x_[l], b));
  if (D.sole) return;
  if (wrote_s_b_) ss.push_back(CRows(tmp_s_b_, b));
  if (wrote_s_a_) ss.push_back(CRows(tmp_s_a_, b));
  SumInto(ctx, ss, Rows(grad_s_[l], b));
  if (l == 0 && D.cls_prepend) {
    // S_0[:, 0:c] = X_sum^0: its gradient joins the PFFN context's before cross 0's backward.
    TensorView gxs = Rows(grad_xsum_[0], b);
    CopyTokenRange(ctx, CRows(grad_s_[0], b), 0, gxs, 0, D.c, /*accumulate=*/true);
    TensorView tmp = Rows(tmp_x_b_, b);
    cross_[0]->XSummaryBackward(ctx, gxs, tmp);
    ops::Add(ctx, Rows(grad_x_[0], b), tmp, Rows(grad_x_[0], b));
  }
}

}  // namespace loom::model
