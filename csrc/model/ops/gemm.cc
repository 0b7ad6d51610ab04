#include "csrc/model/ops/gemm.h"

#include <string>

#include "csrc/core/dispatch.h"
#include "csrc/model/ops/op_util.h"

namespace loom::ops {
namespace {

using internal::Describe;

Status CheckDTypes(const char* op, const TensorSpec& a, const TensorSpec& b, const TensorSpec& c) {
  LOOM_RETURN_IF_ERROR(internal::ExpectFloat(op, "a", a, /*allow_bf16=*/true));
  if (b.dtype != a.dtype) {
    return InvalidArgumentError(std::string(op) + ": " + Describe("b", b) +
                                " must have the dtype of " + Describe("a", a));
  }
  const bool c_ok = c.dtype == a.dtype || (a.dtype == DType::kBF16 && c.dtype == DType::kF32);
  if (!c_ok) {
    return InvalidArgumentError(std::string(op) + ": " + Describe("c", c) + " must be " +
                                DTypeName(a.dtype) + (a.dtype == DType::kBF16 ? " or f32" : "") +
                                " to match a");
  }
  return Status::Ok();
}

struct Mat {
  int64_t rows, cols;
};

// Checks op(A) (M, K) · op(B) (K, N) = C (M, N) and fills the plan's sizes.
Status CheckProduct(const char* op, const GemmArgs& args, Mat a, Mat b, Mat c, const TensorSpec& sa,
                    const TensorSpec& sb, const TensorSpec& sc, internal::GemmPlan* plan) {
  const int64_t m = args.trans_a ? a.cols : a.rows;
  const int64_t ka = args.trans_a ? a.rows : a.cols;
  const int64_t kb = args.trans_b ? b.cols : b.rows;
  const int64_t n = args.trans_b ? b.rows : b.cols;
  if (ka != kb) {
    return InvalidArgumentError(std::string(op) + ": inner dims differ: op(a) of " +
                                Describe("a", sa) + (args.trans_a ? " (transposed)" : "") +
                                " has " + std::to_string(ka) + " columns, op(b) of " +
                                Describe("b", sb) + (args.trans_b ? " (transposed)" : "") +
                                " has " + std::to_string(kb) + " rows");
  }
  if (c.rows != m || c.cols != n) {
    return InvalidArgumentError(std::string(op) + ": " + Describe("c", sc) + " must be a (" +
                                std::to_string(m) + ", " + std::to_string(n) +
                                ") matrix per batch for op(a) · op(b)");
  }
  plan->trans_a = args.trans_a;
  plan->trans_b = args.trans_b;
  plan->m = m;
  plan->n = n;
  plan->k = ka;
  plan->lda = a.cols;
  plan->ldb = b.cols;
  plan->ldc = c.cols;
  plan->alpha = args.alpha;
  plan->beta = args.beta;
  plan->allow_tf32 = args.allow_tf32;
  return Status::Ok();
}

Status PlanGemm(const GemmArgs& args, const TensorSpec& a, const TensorSpec& b, const TensorSpec& c,
                internal::GemmPlan* plan) {
  const char* op = "Gemm";
  LOOM_RETURN_IF_ERROR(CheckDTypes(op, a, b, c));
  LOOM_RETURN_IF_ERROR(internal::ExpectRankAtLeast(op, "a", a, 2));
  LOOM_RETURN_IF_ERROR(internal::ExpectRankAtLeast(op, "b", b, 2));
  LOOM_RETURN_IF_ERROR(internal::ExpectRankAtLeast(op, "c", c, 2));
  LOOM_RETURN_IF_ERROR(CheckProduct(op, args, {MatrixRows(a.shape), MatrixCols(a.shape)},
                                    {MatrixRows(b.shape), MatrixCols(b.shape)},
                                    {MatrixRows(c.shape), MatrixCols(c.shape)}, a, b, c, plan));
  plan->batch = 1;
  return Status::Ok();
}

// Product of all dims but the last two.
int64_t BatchOf(const Shape& s) {
  int64_t g = 1;
  for (int i = 0; i + 2 < s.rank(); ++i) g *= s[i];
  return g;
}

Status PlanGemmBatched(const GemmArgs& args, const TensorSpec& a, const TensorSpec& b,
                       const TensorSpec& c, internal::GemmPlan* plan) {
  const char* op = "GemmBatched";
  LOOM_RETURN_IF_ERROR(CheckDTypes(op, a, b, c));
  LOOM_RETURN_IF_ERROR(internal::ExpectRankAtLeast(op, "a", a, 2));
  LOOM_RETURN_IF_ERROR(internal::ExpectRankAtLeast(op, "b", b, 2));
  LOOM_RETURN_IF_ERROR(internal::ExpectRankAtLeast(op, "c", c, 3));
  const int64_t g = BatchOf(c.shape);
  for (const auto& [name, spec] : {std::pair<const char*, const TensorSpec&>{"a", a}, {"b", b}}) {
    if (spec.shape.rank() > 2 && BatchOf(spec.shape) != g) {
      return InvalidArgumentError(std::string(op) + ": " + Describe(name, spec) + " holds " +
                                  std::to_string(BatchOf(spec.shape)) + " matrices but " +
                                  Describe("c", c) + " holds " + std::to_string(g) +
                                  " (use a rank-2 operand to broadcast one matrix)");
    }
  }
  const int ra = a.shape.rank(), rb = b.shape.rank(), rc = c.shape.rank();
  const Mat ma{a.shape[ra - 2], a.shape[ra - 1]}, mb{b.shape[rb - 2], b.shape[rb - 1]},
      mc{c.shape[rc - 2], c.shape[rc - 1]};
  LOOM_RETURN_IF_ERROR(CheckProduct(op, args, ma, mb, mc, a, b, c, plan));
  plan->batch = g;
  plan->stride_a = ra > 2 ? ma.rows * ma.cols : 0;
  plan->stride_b = rb > 2 ? mb.rows * mb.cols : 0;
  plan->stride_c = mc.rows * mc.cols;
  return Status::Ok();
}

Status PlanGemmBatchedSum(const GemmArgs& args, const TensorSpec& a, const TensorSpec& b,
                          const TensorSpec& c, internal::GemmPlan* plan) {
  const char* op = "GemmBatchedSum";
  LOOM_RETURN_IF_ERROR(CheckDTypes(op, a, b, c));
  LOOM_RETURN_IF_ERROR(internal::ExpectRankAtLeast(op, "a", a, 2));
  LOOM_RETURN_IF_ERROR(internal::ExpectRankAtLeast(op, "b", b, 2));
  LOOM_RETURN_IF_ERROR(internal::ExpectRank(op, "c", c, 2));
  if (a.shape.rank() < 3 && b.shape.rank() < 3) {
    return InvalidArgumentError(std::string(op) + ": " + Describe("a", a) + " or " +
                                Describe("b", b) + " must have rank >= 3 (the batch to sum)");
  }
  if (a.dtype == DType::kBF16 && c.dtype != DType::kF32) {
    return InvalidArgumentError(std::string(op) + ": " + Describe("c", c) +
                                " must be f32 for bf16 operands (the batch sum is kept in fp32)");
  }
  if (args.beta != 0.0 && args.beta != 1.0) {
    return InvalidArgumentError(std::string(op) + ": beta must be 0 or 1, got " +
                                std::to_string(args.beta));
  }
  const int64_t g = a.shape.rank() > 2 ? BatchOf(a.shape) : BatchOf(b.shape);
  if (a.shape.rank() > 2 && b.shape.rank() > 2 && BatchOf(b.shape) != g) {
    return InvalidArgumentError(std::string(op) + ": " + Describe("a", a) + " and " +
                                Describe("b", b) + " hold different numbers of matrices");
  }
  const int ra = a.shape.rank(), rb = b.shape.rank();
  const Mat ma{a.shape[ra - 2], a.shape[ra - 1]}, mb{b.shape[rb - 2], b.shape[rb - 1]},
      mc{c.shape[0], c.shape[1]};
  LOOM_RETURN_IF_ERROR(CheckProduct(op, args, ma, mb, mc, a, b, c, plan));
  plan->batch = g;
  plan->stride_a = ra > 2 ? ma.rows * ma.cols : 0;
  plan->stride_b = rb > 2 ? mb.rows * mb.cols : 0;
  plan->stride_c = 0;
  return Status::Ok();
}

}  // namespace

Status ValidateGemm(const GemmArgs& args, const TensorSpec& a, const TensorSpec& b,
                    const TensorSpec& c) {
  internal::GemmPlan plan;
  return PlanGemm(args, a, b, c, &plan);
}

Status ValidateGemmBatched(const GemmArgs& args, const TensorSpec& a, const TensorSpec& b,
                           const TensorSpec& c) {
  internal::GemmPlan plan;
  return PlanGemmBatched(args, a, b, c, &plan);
}

void Gemm(const ExecContext& ctx, const GemmArgs& args, ConstTensorView a, ConstTensorView b,
          TensorView c) {
  internal::GemmPlan plan;
  LOOM_OPS_CHECK_OK(PlanGemm(args, a.spec(), b.spec(), c.spec(), &plan));
  internal::CheckOnDevice("Gemm", ctx.device, {{"a", a}, {"b", b}, {"c", c}});
  LOOM_DISPATCH(ctx, Gemm, plan, a, b, c);
}

void GemmBatched(const ExecContext& ctx, const GemmArgs& args, ConstTensorView a, ConstTensorView b,
                 TensorView c) {
  internal::GemmPlan plan;
  LOOM_OPS_CHECK_OK(PlanGemmBatched(args, a.spec(), b.spec(), c.spec(), &plan));
  internal::CheckOnDevice("GemmBatched", ctx.device, {{"a", a}, {"b", b}, {"c", c}});
  LOOM_DISPATCH(ctx, Gemm, plan, a, b, c);
}

Status ValidateGemmBatchedSum(const GemmArgs& args, const TensorSpec& a, const TensorSpec& b,
                              const TensorSpec& c) {
  internal::GemmPlan plan;
  return PlanGemmBatchedSum(args, a, b, c, &plan);
}

void GemmBatchedSum(const ExecContext& ctx, const GemmArgs& args, ConstTensorView a,
                    ConstTensorView b, TensorView c) {
  internal::GemmPlan plan;
  LOOM_OPS_CHECK_OK(PlanGemmBatchedSum(args, a.spec(), b.spec(), c.spec(), &plan));
  internal::CheckOnDevice("GemmBatchedSum", ctx.device, {{"a", a}, {"b", b}, {"c", c}});
  LOOM_DISPATCH(ctx, GemmBatchedSum, plan, a, b, c);
}

}  // namespace loom::ops
