// The dense InterFormer model (docs/model.md; spec interformer-spec.md): embedded inputs ->
// logits, its loss and its backward. The embeddings are owned by the embedding code; this
// class takes their outputs and returns the gradients with respect to them.
//
//   LOOM_ASSIGN_OR_RETURN(auto model, InterFormer::Create(config, /*max_batch=*/512,
//                                                         /*seq_len=*/50, DType::kF32,
//                                                         Device::Cpu()));
//   model->Initialize(seed);                      // Philox, identical on every rank/backend
//   model->Forward(ctx, inputs, logits);          // logits (B)
//   model->Loss(ctx, labels, loss, grad_logits);  // mean BCE-with-logits, grad = ∂loss/∂logits
//   model->parameters().ZeroGrad();               // parameter gradients accumulate (+=)
//   model->Backward(ctx, grad_logits);            // parameter grads += ; input grads =
//   model->input_grads().sparse ...               // for the embedding backward
//
// Shapes (B <= max_batch local batch, d embedding dim, m dense, n sparse, k sequences, T the
// sequence length fixed at Create):
//   dense    (B, m) (empty when m = 0)        sparse (B, n, d) (empty allowed when n = 0)
//   seq[j]   (B, T, d), j < k                  seq_mask (B, T) u8, 1 = real token (pre-padded)
//   logits   (B)                              labels (B)
// Input gradients (views of buffers the model owns, valid until the next Backward):
//   dense (B, m), sparse (B, n, d), seq[j] (B, T, d) — gradients of the loss given to Backward.
//
// Parameters: registered in the order of the PyTorch reference's named_parameters()
// (tests/reference/interformer_ref.py), so the flat buffer matches torch.cat of its
// parameters: dense_proj, masknet, cross.0 .. cross.{L or L−1}, layers.0 .. layers.{L−1},
// head; inside each, the order documented in the layer headers (csrc/model/layers/).
//
// Structure of one step (docs/model.md §3): X assembly (dense token, sparse tokens, SOLE
// mean tokens) -> MaskNet -> CLS prepend (INT, N2S) -> L blocks, each with its cross arch
// computing the layer-l summaries -> final summaries (EXTRA_CROSS: cross arch L; LITERAL:
// layer L−1's) -> head. Within a layer, the interaction path (S_sum, interaction arch) and
// the sequence path (X_sum, sequence arch) are independent (spec §6.4): each is its own
// method (ForwardInteractionPath / ForwardSequencePath and their backward twins) reading only
// the layer-l inputs and writing disjoint buffers, and the input gradients of the two
// backward paths are summed in a separate join step. Running them on two CUDA streams needs
// only an event join there (csrc/core/gpu.h has no events yet); today both run in order on
// `ctx`.
//
// Determinism: same config, seed, inputs and thread count -> same bits (every op is
// deterministic; no float atomics). Forward/Backward never allocate.
#ifndef LOOM_MODEL_INTERFORMER_H_
#define LOOM_MODEL_INTERFORMER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "csrc/core/device.h"
#include "csrc/core/status.h"
#include "csrc/core/tensor.h"
#include "csrc/model/layers/block.h"
#include "csrc/model/layers/cross_arch.h"
#include "csrc/model/layers/head.h"
#include "csrc/model/layers/linear.h"
#include "csrc/model/layers/masknet.h"
#include "csrc/model/model_config.h"
#include "csrc/model/parameter.h"
#include "csrc/proto/model.pb.h"

namespace loom::model {

struct DenseInputs {
  ConstTensorView dense;             // (B, m); empty when m = 0
  ConstTensorView sparse;            // (B, n, d)
  std::vector<ConstTensorView> seq;  // k x (B, T, d)
  ConstTensorView seq_mask;          // (B, T) u8
};

struct DenseInputGrads {
  TensorView dense;             // (B, m); empty when m = 0
  TensorView sparse;            // (B, n, d)
  std::vector<TensorView> seq;  // k x (B, T, d)
};

class InterFormer {
 public:
  // Validates the config (errors name the field: "model.num_heads: must divide embedding_dim
  // 64, got 3"), registers and allocates the parameters (values zero until Initialize) and
  // plans every buffer for max_batch rows of seq_len tokens.
  static StatusOr<std::unique_ptr<InterFormer>> Create(const proto::ModelConfig& config,
                                                       int64_t max_batch, int64_t seq_len,
                                                       DType dtype, Device device);

  const ModelDims& dims() const { return dims_; }
  ParameterStore& parameters() { return store_; }
  const ParameterStore& parameters() const { return store_; }
  int64_t max_batch() const { return max_batch_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }

  // Philox init of every parameter (docs/model.md §7 rules).
  void Initialize(uint64_t seed) { store_.Initialize(seed); }

  // InvalidArgument naming the input unless shapes/dtypes/devices match the plan.
  Status ValidateInputs(const DenseInputs& inputs) const;

  // Packed positions (CPU only; on by default there): MaskNet and the attention projections
  // skip the padded positions that cannot reach the logits (docs/model.md, "C++
  // implementation"). Off computes every position as the reference does; results agree to
  // rounding. For tests and benchmarks; takes effect at the next Forward.
  void SetPackedPositions(bool enable) { pack_positions_ = enable && pack_supported_; }
  bool packed_positions() const { return pack_positions_; }

  // Training mode turns the head dropout on (masks from Philox (seed, site, step); fold the
  // rank into `seed`). Evaluation mode (the default) is deterministic and dropout-free.
  void SetTraining(bool training, uint64_t seed = 0, uint64_t step = 0);

  // Writes logits (B). The inputs must stay unchanged until Backward.
  void Forward(const ExecContext& ctx, const DenseInputs& inputs, TensorView logits);

  // Mean BCE-with-logits of the last Forward's logits: writes loss (one element) and
  // grad_logits (B) = ∂loss/∂logits (times grad_scale). Either output may be empty.
  void Loss(const ExecContext& ctx, ConstTensorView labels, TensorView loss, TensorView grad_logits,
            double grad_scale = 1.0);

  // Backward of the last Forward: parameter gradients += (in parameters()), input gradients
  // = (input_grads()).
  void Backward(const ExecContext& ctx, ConstTensorView grad_logits);
  const DenseInputGrads& input_grads() const { return input_grads_; }

  // Gradient-final notifications, for overlapping the data-parallel gradient all-reduce with
  // the rest of Backward: during every Backward, callback(begin, end) reports an element range
  // [begin, end) of parameters().grads() as soon as no later work of that Backward writes it.
  // The ranges of one Backward are non-empty, disjoint and cover [0, P) exactly; they are the
  // modules' parameter ranges (precomputed at Create), reported in backward order: head,
  // cross L (EXTRA_CROSS), then for l = L−1 .. 0 layers.l and cross.l (after the layer's join,
  // the last use of both), then dense_proj and masknet. The callback runs on the calling thread
  // once the work is enqueued on ctx.stream (CUDA: synchronize that stream before reading the
  // range). Set it once at setup (Backward never copies or allocates it); an empty function
  // turns the notifications off (the default).
  using GradsFinalCallback = std::function<void(int64_t begin, int64_t end)>;
  void SetGradsFinalCallback(GradsFinalCallback callback) { grads_final_ = std::move(callback); }

 private:
  struct ParamRange {  // [begin, end) elements of the flat parameter buffers
    int64_t begin = 0, end = 0;
  };
  void ReportGradsFinal(const ParamRange& r) const {
    if (grads_final_ && r.end > r.begin) grads_final_(r.begin, r.end);
  }

  explicit InterFormer(DType dtype) : dtype_(dtype), store_(dtype) {}
  Status Build();
  // Layer l's two independent forward paths and their backward twins (spec §6.4).
  void ForwardInteractionPath(const ExecContext& ctx, int64_t l);
  void ForwardSequencePath(const ExecContext& ctx, int64_t l);
  void BackwardInteractionPath(const ExecContext& ctx, int64_t l);
  void BackwardSequencePath(const ExecContext& ctx, int64_t l);
  void JoinLayerGrads(const ExecContext& ctx, int64_t l);
  // The positions MaskNet computes (packed rows), from the host key mask.
  void BuildPackedRows(ConstTensorView seq_mask);

  ModelDims dims_;
  int64_t max_batch_ = 0;
  DType dtype_ = DType::kF32;
  Device device_;
  ParameterStore store_;

  std::unique_ptr<layers::Linear> dense_proj_;
  std::unique_ptr<layers::MaskNet> masknet_;
  std::vector<std::unique_ptr<layers::CrossArch>> cross_;
  std::vector<std::unique_ptr<layers::InterFormerBlock>> blocks_;
  std::unique_ptr<layers::Head> head_;
  // Each module's parameter range (empty when it has none), for SetGradsFinalCallback.
  ParamRange dense_proj_range_, masknet_range_, head_range_;
  std::vector<ParamRange> cross_range_, block_range_;  // per cross arch / per layer
  GradsFinalCallback grads_final_;

  // Activations (max batch).
  std::vector<Tensor> x_;        // X_l, l = 0 .. L (X_0 assembled; X_{l+1} views of the arches)
  Tensor s0_;                    // S_0 = concat(X_sum^0, S_raw), (B, T', d)
  bool pack_supported_ = false;  // CPU and a sequence arch
  bool pack_positions_ = false;  // MaskNet/MHA on packed positions
  Tensor rows_seq_, rows_s_;     // (B·T) i32 host: packed row -> b·T + t, b·T' + c + t
  Tensor rows_attn_;             // (B·T') i32 host: the same + CLS, for MHA/PMA
  ConstTensorView rows_seq_view_, rows_s_view_, rows_attn_view_;  // last Forward's
  Tensor grad_packed_;          // (B·T, d) packed gradient of MaskNet's output
  Tensor key_mask_, cls_ones_;  // km (B, T') (CLS prepend only), ones (B, c, 1) u8
  Tensor sole_mean_;            // (B, d) scratch of the SOLE mean tokens
  Tensor h0_;
  ConstTensorView logits_view_;                         // the head's output of the last Forward
  std::vector<ConstTensorView> xl_, sl_, xsum_, ssum_;  // per layer, last Forward
  ConstTensorView x_final_sum_, s_final_sum_, km_view_;
  DenseInputs inputs_;
  int64_t b_ = 0;
  int64_t sparse_offset_ = 0, sole_offset_ = 0;  // token offsets in X
  bool training_ = false;

  // Gradients (max batch).
  std::vector<Tensor> grad_x_, grad_s_;        // l = 0 .. L
  std::vector<Tensor> grad_xsum_, grad_ssum_;  // accumulators per layer l < L
  // Which of the shared path outputs the current layer's backward paths wrote (read by the
  // join): tmp_x_a_ (interaction arch -> X), tmp_s_a_ (S_sum -> S), tmp_s_b_ (sequence arch
  // -> S), tmp_x_b_ (X_sum -> X).
  bool wrote_x_a_ = false, wrote_s_a_ = false, wrote_s_b_ = false, wrote_x_b_ = false;
  Tensor grad_h0_, grad_xs_final_, grad_ss_final_;
  Tensor tmp_x_a_, tmp_x_b_, tmp_s_a_, tmp_s_b_, tmp_ssum_, tmp_xsum_, tmp_tok_, tmp_sraw_;
  Tensor grad_dense_, grad_sparse_;
  std::vector<Tensor> grad_seq_;
  DenseInputGrads input_grads_;
};

}  // namespace loom::model

#endif  // LOOM_MODEL_INTERFORMER_H_
