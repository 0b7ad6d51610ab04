// Dense optimizers: Adam, AdamW and SGD (+ momentum, Nesterov) over the replicated dense
// parameters, with global-norm gradient clipping and learning-rate schedules (lr_schedule.h).
// Configured by proto::OptimizerConfig (csrc/proto/optim.proto).
//
// Where it runs: after the gradient all-reduce, on every rank, with identical inputs; the update
// is a pure function of (config, step, parameters, gradients, state), so every rank ends with
// the same bits. It never communicates.
//
// Math, per parameter tensor w with gradient g (elementwise; lr_t = the scheduled learning
// rate of update t, t = 0, 1, ...; k = t + 1 is the bias-correction exponent):
//   clipping (max_grad_norm > 0):  n = sqrt(sum over ALL tensors of g^2) (fp64, fixed order),
//                                  c = max_grad_norm / (n + 1e-6);  g <- c * g  if c < 1
//   ADAM:  g <- g + wd * w
//          m <- beta1 * m + (1 - beta1) * g          v <- beta2 * v + (1 - beta2) * g^2
//          w <- w - (lr_t / (1 - beta1^k)) * m / (sqrt(v) / sqrt(1 - beta2^k) + eps)
//   ADAMW: w <- w * (1 - lr_t * wd), then the ADAM lines without the g <- g + wd * w term
//   SGD:   g <- g + wd * w;  if momentum mu > 0: buf <- g (t == 0) else
//          buf <- mu * buf + (1 - dampening) * g;  g <- nesterov ? g + mu * buf : buf
//          w <- w - lr_t * g
// These are torch.optim's Adam/AdamW/SGD (torch 1.13), operation for operation. A parameter
// with apply_weight_decay = false gets wd = 0 (the usual exclusion of biases and norms).
// The gradient tensors are read-only: clipping is folded into the update, grads are not
// rescaled in memory.
//
// Shapes and types: value and grad of one parameter have the same shape, dtype and device; all
// parameters share one dtype, f32 (training) or f64 (tests), and one device. Arithmetic is in
// that dtype, as torch; the clipping norm is accumulated in fp64. State tensors have the
// parameter's shape and dtype, start at zero, and are owned by the optimizer.
//
// Backends: dense_optimizer_cpu.cc (OpenMP over chunks, vectorized loops: the reference) and
// dense_optimizer_cuda.cu (one fused multi-tensor kernel per step, plus two small kernels for
// the norm when clipping). Both walk the same table of chunks (fused_update.h); the global norm
// is summed in the same canonical order on both, so it is bit-identical on CPU and CUDA and
// independent of the number of OpenMP threads.
//
// Ownership: the optimizer keeps the parameter views it was created with; the storage behind
// them must outlive it and stay at the same address (parameters are allocated once at setup).
#ifndef LOOM_OPTIM_DENSE_OPTIMIZER_H_
#define LOOM_OPTIM_DENSE_OPTIMIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "csrc/core/device.h"
#include "csrc/core/macros.h"
#include "csrc/core/status.h"
#include "csrc/core/tensor.h"
#include "csrc/optim/fused_update.h"
#include "csrc/optim/lr_schedule.h"
#include "csrc/proto/optim.pb.h"

namespace loom::optim {

// One dense parameter as the optimizer sees it.
struct DenseParam {
  std::string name;      // unique and non-empty, e.g. "cross.0.gate.weight"
  TensorView value;      // updated in place
  ConstTensorView grad;  // read only; same spec and device as value
  bool apply_weight_decay = true;
};

// A state tensor of the optimizer, for checkpoints: the checkpoint code reads it to save and
// writes into it (same spec) to restore.
struct NamedStateTensor {
  std::string name;  // "<param name>/exp_avg", "<param name>/exp_avg_sq" (Adam, AdamW),
                     // "<param name>/momentum_buffer" (SGD with momentum > 0)
  TensorView tensor;
};

// InvalidArgument naming the field path under `path` for any value outside the ranges in
// optim.proto, e.g. "optimizer.lr: must be > 0 and finite, got -1".
Status ValidateOptimizerConfig(const proto::OptimizerConfig& config,
                               const std::string& path = "optimizer");

class DenseOptimizer {
 public:
  // Validates the config and the parameters (names unique and non-empty; specs, dtypes and
  // devices as above; InvalidArgument naming the parameter otherwise) and allocates the state
  // (zeros) and the chunk tables on the parameters' device. Unimplemented for CUDA parameters
  // when no GPU can be used.
  static StatusOr<std::unique_ptr<DenseOptimizer>> Create(const proto::OptimizerConfig& config,
                                                          std::vector<DenseParam> params);
  ~DenseOptimizer();
  LOOM_DISALLOW_COPY_AND_ASSIGN(DenseOptimizer);

  // Applies update t = step() to every parameter with the current gradients, then step()++.
  // ctx.device must be the parameters' device (any device when there are no parameters); on
  // CUDA the work is enqueued on ctx.stream and the call returns without synchronizing. Never
  // allocates.
  void Step(const ExecContext& ctx);

  // Updates applied so far; the next Step applies update t = step().
  int64_t step() const { return step_; }
  // The learning rate the next Step uses: ScheduledLearningRate(lr, schedule, step()) times the
  // reduce-on-plateau scale.
  double LearningRate() const;
  // Global L2 norm of the gradients before clipping, as computed by the last Step; NaN when
  // clipping is off or before the first Step. Synchronizes the stream of the last Step on CUDA.
  double last_grad_norm() const;

  // Reports one evaluation metric to the reduce-on-plateau schedule; returns true when it
  // reduced the learning rate. A no-op returning false for other schedules. Every rank must
  // pass the same value.
  bool ObserveMetric(double metric);

  // Checkpoint hooks. StateTensors lists every state tensor in a fixed order (parameters in
  // creation order, then exp_avg, exp_avg_sq / momentum_buffer). SaveState/LoadState carry the
  // scalars (step count, plateau state). LoadState checks the optimizer type and ranges
  // (InvalidArgument naming the field); state tensors are restored by writing into StateTensors.
  std::vector<NamedStateTensor> StateTensors() const;
  proto::DenseOptimizerState SaveState() const;
  Status LoadState(const proto::DenseOptimizerState& state);

  const proto::OptimizerConfig& config() const { return config_; }
  const std::vector<DenseParam>& params() const { return params_; }
  Device device() const { return device_; }

 private:
  DenseOptimizer(const proto::OptimizerConfig& config, std::vector<DenseParam> params);
  Status Plan();
  internal::UpdateScalars Scalars() const;

  proto::OptimizerConfig config_;
  std::vector<DenseParam> params_;
  Device device_;
  DType dtype_ = DType::kF32;
  int64_t step_ = 0;
  std::optional<ReducePlateau> plateau_;
  bool has_stepped_ = false;
  Stream last_stream_;

  // State tensors: per parameter, up to two (internal::TensorSlot::state0/1).
  std::vector<std::vector<Tensor>> state_;
  std::vector<std::string> state_names_;  // suffixes: "exp_avg", ...
  // Chunk tables on device_ (host copies for the CPU backend are the same storage).
  Tensor slots_;     // (num_tensors * sizeof(TensorSlot)) bytes
  Tensor chunks_;    // (num_chunks * sizeof(Chunk)) bytes
  Tensor partials_;  // (num_chunks) f64: per-chunk sums of squares
  Tensor norm_sq_;   // (1) f64
  internal::FusedPlan plan_;
};

// Same as DenseOptimizer::Create.
StatusOr<std::unique_ptr<DenseOptimizer>> CreateDenseOptimizer(const proto::OptimizerConfig& config,
                                                               std::vector<DenseParam> params);

}  // namespace loom::optim

#endif  // LOOM_OPTIM_DENSE_OPTIMIZER_H_
