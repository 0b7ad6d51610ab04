#include "csrc/embedding/sparse_optimizer.h"

#include <glog/logging.h>

namespace loom::embedding {

OptimizerParams MakeOptimizerParams(const OptimizerSpec& spec, int full_dim, bool external) {
  OptimizerParams p;
  p.type = static_cast<int32_t>(spec.type);
  p.decoupled = spec.decoupled_weight_decay ? 1 : 0;
  p.full_dim = full_dim;
  p.external_row_sq = external ? 1 : 0;
  p.lr = spec.lr;
  p.eps = spec.eps;
  p.beta1 = spec.beta1;
  p.beta2 = spec.beta2;
  p.weight_decay = spec.weight_decay;
  p.dense_update = spec.dense_update && spec.type == OptimizerType::kAdam ? 1 : 0;
  return p;
}

void ReduceRows(const ExecContext& ctx, const ReduceArgs& args) {
  if (args.num_rows == 0) return;
  if (ctx.device.is_cpu()) {
    internal::ReduceRowsCpu(args);
  } else {
    internal::ReduceRowsCuda(args, ctx.stream);
  }
}

void UpdateRows(const ExecContext& ctx, const UpdateArgs& args) {
  if (args.num_rows == 0) return;
  if (ctx.device.is_cpu()) {
    internal::UpdateRowsCpu(args);
  } else {
    internal::UpdateRowsCuda(args, ctx.stream);
  }
}

void StepUntouchedRows(const ExecContext& ctx, const UntouchedArgs& args) {
  if (args.num_shards == 0) return;
  if (ctx.device.is_cpu()) {
    internal::StepUntouchedRowsCpu(args);
  } else {
    internal::StepUntouchedRowsCuda(args, ctx.stream);
  }
}

void ReduceAndUpdateRows(const ExecContext& ctx, const ReduceArgs& reduce,
                         const UpdateArgs& update) {
  CHECK_EQ(reduce.num_rows, update.num_rows);
  if (reduce.num_rows == 0) return;
  if (ctx.device.is_cpu()) {
    internal::ReduceAndUpdateRowsCpu(reduce, update);
  } else {
    internal::ReduceRowsCuda(reduce, ctx.stream);
    internal::UpdateRowsCuda(update, ctx.stream);
  }
}

}  // namespace loom::embedding
