#include "csrc/model/ops/tokens.h"

#include <string>

#include "csrc/core/dispatch.h"
#include "csrc/model/ops/op_util.h"

namespace loom::ops {
namespace {

using internal::Describe;

Status CheckCopy(const char* op, const CopyTokensArgs& args, const TensorSpec& src,
                 const TensorSpec& dst) {
  LOOM_RETURN_IF_ERROR(internal::ExpectRank(op, "src", src, 3));
  LOOM_RETURN_IF_ERROR(internal::ExpectRank(op, "dst", dst, 3));
  LOOM_RETURN_IF_ERROR(internal::ExpectDType(op, "dst", dst, src.dtype));
  if (src.shape[0] != dst.shape[0] || src.shape[2] != dst.shape[2]) {
    return InvalidArgumentError(std::string(op) + ": " + Describe("src", src) + " and " +
                                Describe("dst", dst) + " must agree in B and D");
  }
  if (args.count < 0 || args.src_begin < 0 || args.dst_begin < 0 ||
      args.src_begin + args.count > src.shape[1] || args.dst_begin + args.count > dst.shape[1]) {
    return InvalidArgumentError(std::string(op) + ": tokens [" + std::to_string(args.src_begin) +
                                ", +" + std::to_string(args.count) + ") of " +
                                Describe("src", src) + " into [" + std::to_string(args.dst_begin) +
                                ", +" + std::to_string(args.count) + ") of " +
                                Describe("dst", dst) + " are out of range");
  }
  if (args.accumulate) {
    LOOM_RETURN_IF_ERROR(internal::ExpectFloat(op, "dst", dst, /*allow_bf16=*/true));
  }
  return Status::Ok();
}

Status CheckConcat(const char* op, const std::vector<TensorSpec>& parts, const TensorSpec& whole) {
  LOOM_RETURN_IF_ERROR(internal::ExpectRank(op, "whole", whole, 3));
  int64_t offset = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string name = "part " + std::to_string(i);
    CopyTokensArgs args;
    args.dst_begin = offset;
    args.count = parts[i].shape.rank() == 3 ? parts[i].shape[1] : 0;
    LOOM_RETURN_IF_ERROR(CheckCopy(op, args, parts[i], whole).WithContext(name));
    offset += args.count;
  }
  if (offset != whole.shape[1]) {
    return InvalidArgumentError(std::string(op) + ": the parts hold " + std::to_string(offset) +
                                " tokens but " + Describe("whole", whole) + " has " +
                                std::to_string(whole.shape[1]));
  }
  return Status::Ok();
}

}  // namespace

Status ValidateCopyTokens(const CopyTokensArgs& args, const TensorSpec& src,
                          const TensorSpec& dst) {
  return CheckCopy("CopyTokens", args, src, dst);
}

Status ValidateConcatTokens(const std::vector<TensorSpec>& parts, const TensorSpec& whole) {
  return CheckConcat("ConcatTokens", parts, whole);
}

void CopyTokens(const ExecContext& ctx, const CopyTokensArgs& args, ConstTensorView src,
                TensorView dst) {
  LOOM_OPS_CHECK_OK(CheckCopy("CopyTokens", args, src.spec(), dst.spec()));
  internal::CheckOnDevice("CopyTokens", ctx.device, {{"src", src}, {"dst", dst}});
  LOOM_DISPATCH(ctx, CopyTokens, args, src, dst);
}

void ConcatTokens(const ExecContext& ctx, const std::vector<ConstTensorView>& inputs,
                  TensorView out) {
  int64_t offset = 0;
  for (const ConstTensorView& in : inputs) {
    CopyTokensArgs args;
    args.dst_begin = offset;
    args.count = in.rank() == 3 ? in.dim(1) : -1;
    CopyTokens(ctx, args, in, out);
    offset += args.count;
  }
  CHECK_EQ(offset, out.dim(1)) << "ConcatTokens: the inputs do not fill " << out.spec().ToString();
}

void SplitTokens(const ExecContext& ctx, ConstTensorView in,
                 const std::vector<TensorView>& outputs) {
  int64_t offset = 0;
  for (const TensorView& out : outputs) {
    CopyTokensArgs args;
    args.src_begin = offset;
    args.count = out.rank() == 3 ? out.dim(1) : -1;
    CopyTokens(ctx, args, in, out);
    offset += args.count;
  }
  CHECK_EQ(offset, in.dim(1)) << "SplitTokens: the outputs do not cover " << in.spec().ToString();
}

}  // namespace loom::ops
