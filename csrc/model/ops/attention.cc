// Validation and backend dispatch of the attention op (attention.h).
#include "csrc/model/ops/attention.h"

#include <cmath>
#include <sstream>
#include <string>

#include <glog/logging.h>

#include "csrc/core/dispatch.h"

namespace loom::ops {
namespace {

std::string SpecString(const TensorSpec& spec) { return spec.ToString(); }

bool IsCudaHeadDim(int64_t dh) { return dh == 16 || dh == 32 || dh == 64 || dh == 128; }

// The checks every step function repeats: shapes, dtypes and devices of all its views.
void CheckSameSpec(const char* what, const TensorSpec& got, const TensorSpec& want) {
  CHECK(got == want) << "attention: " << what << " is " << got.ToString() << ", expected "
                     << want.ToString();
}

void CheckDevice(const char* what, ConstTensorView t, Device device) {
  CHECK(t.empty() || t.device() == device)
      << "attention: " << what << " is on " << t.device().ToString() << ", the op runs on "
      << device.ToString();
}

}  // namespace

double AttentionScale(const AttentionArgs& args, int64_t head_dim) {
  if (args.scale != 0.0) return args.scale;
  return 1.0 / std::sqrt(static_cast<double>(head_dim > 0 ? head_dim : 1));
}

TensorSpec AttentionLseSpec(const TensorSpec& q) {
  const DType dtype = q.dtype == DType::kF64 ? DType::kF64 : DType::kF32;
  if (q.shape.rank() != 4) return TensorSpec{Shape{}, dtype};
  return TensorSpec{Shape{q.shape[0], q.shape[2], q.shape[1]}, dtype};
}

Status ValidateAttention(const AttentionArgs& args, Device device, const TensorSpec& q,
                         const TensorSpec& k, const TensorSpec& v, const TensorSpec& key_mask) {
  if (!std::isfinite(args.scale)) {
    std::ostringstream os;
    os << "attention: scale must be finite, got " << args.scale;
    return InvalidArgumentError(os.str());
  }
  if (q.shape.rank() != 4) {
    return InvalidArgumentError("attention: q must be (B, Tq, H, Dh), got " + SpecString(q));
  }
  const int64_t b = q.shape[0], h = q.shape[2], dh = q.shape[3];
  if (k.shape.rank() != 4 || k.shape[0] != b || k.shape[2] != h || k.shape[3] != dh) {
    return InvalidArgumentError("attention: k must be (B, Tk, H, Dh) = (" + std::to_string(b) +
                                ", Tk, " + std::to_string(h) + ", " + std::to_string(dh) +
                                ") to match q " + SpecString(q) + ", got " + SpecString(k));
  }
  if (v.shape != k.shape) {
    return InvalidArgumentError("attention: v must have k's shape " + k.shape.ToString() +
                                ", got " + SpecString(v));
  }
  if (key_mask.shape.rank() != 0) {
    if (key_mask.shape.rank() != 2 || key_mask.shape[0] != b || key_mask.shape[1] != k.shape[1]) {
      return InvalidArgumentError("attention: key_mask must be (B, Tk) = (" + std::to_string(b) +
                                  ", " + std::to_string(k.shape[1]) + ") or empty, got " +
                                  SpecString(key_mask));
    }
    if (key_mask.dtype != DType::kU8) {
      return InvalidArgumentError("attention: key_mask must be u8, got " + SpecString(key_mask));
    }
  }
  if (k.dtype != q.dtype || v.dtype != q.dtype) {
    return InvalidArgumentError("attention: q, k, v must share one dtype, got q " + SpecString(q) +
                                ", k " + SpecString(k) + ", v " + SpecString(v));
  }
  if (dh < 1) return InvalidArgumentError("attention: head dim must be >= 1, got " + SpecString(q));
  if (device.is_cpu()) {
    if (q.dtype != DType::kF32 && q.dtype != DType::kF64) {
      return InvalidArgumentError(std::string("attention (cpu): dtype must be f32 or f64, got ") +
                                  DTypeName(q.dtype));
    }
    if (dh > kAttentionMaxHeadDimCpu) {
      return InvalidArgumentError(
          "attention (cpu): head dim must be <= " + std::to_string(kAttentionMaxHeadDimCpu) +
          ", got " + std::to_string(dh));
    }
  } else {
    if (q.dtype != DType::kF32 && q.dtype != DType::kBF16) {
      return InvalidArgumentError(std::string("attention (cuda): dtype must be f32 or bf16, got ") +
                                  DTypeName(q.dtype));
    }
    if (!IsCudaHeadDim(dh)) {
      return InvalidArgumentError("attention (cuda): head dim must be 16, 32, 64 or 128, got " +
                                  std::to_string(dh));
    }
    if (args.cuda_kernel == AttentionCudaKernel::kTensorCore && q.dtype != DType::kBF16) {
      return InvalidArgumentError(
          "attention (cuda): cuda_kernel kTensorCore needs bf16 inputs, got " +
          std::string(DTypeName(q.dtype)));
    }
  }
  return Status::Ok();
}

void AttentionForward(const ExecContext& ctx, const AttentionArgs& args, ConstTensorView q,
                      ConstTensorView k, ConstTensorView v, ConstTensorView key_mask, TensorView o,
                      TensorView lse) {
  LOOM_CHECK_OK(ValidateAttention(args, ctx.device, q.spec(), k.spec(), v.spec(), key_mask.spec()));
  CheckSameSpec("o", o.spec(), q.spec());
  CheckSameSpec("lse", lse.spec(), AttentionLseSpec(q.spec()));
  for (auto [name, t] : {std::pair<const char*, ConstTensorView>{"q", q},
                         {"k", k},
                         {"v", v},
                         {"key_mask", key_mask},
                         {"o", o},
                         {"lse", lse}}) {
    CheckDevice(name, t, ctx.device);
  }
  LOOM_DISPATCH(ctx, AttentionForward, args, q, k, v, key_mask, o, lse);
}

void AttentionBackward(const ExecContext& ctx, const AttentionArgs& args, ConstTensorView q,
                       ConstTensorView k, ConstTensorView v, ConstTensorView key_mask,
                       ConstTensorView o, ConstTensorView lse, ConstTensorView grad_o,
                       TensorView grad_q, TensorView grad_k, TensorView grad_v) {
  LOOM_CHECK_OK(ValidateAttention(args, ctx.device, q.spec(), k.spec(), v.spec(), key_mask.spec()));
  CheckSameSpec("o", o.spec(), q.spec());
  CheckSameSpec("lse", lse.spec(), AttentionLseSpec(q.spec()));
  CheckSameSpec("grad_o", grad_o.spec(), q.spec());
  CheckSameSpec("grad_q", grad_q.spec(), q.spec());
  CheckSameSpec("grad_k", grad_k.spec(), k.spec());
  CheckSameSpec("grad_v", grad_v.spec(), v.spec());
  for (auto [name, t] : {std::pair<const char*, ConstTensorView>{"q", q},
                         {"k", k},
                         {"v", v},
                         {"key_mask", key_mask},
                         {"o", o},
                         {"lse", lse},
                         {"grad_o", grad_o},
                         {"grad_q", grad_q},
                         {"grad_k", grad_k},
                         {"grad_v", grad_v}}) {
    CheckDevice(name, t, ctx.device);
  }
  LOOM_DISPATCH(ctx, AttentionBackward, args, q, k, v, key_mask, o, lse, grad_o, grad_q, grad_k,
                grad_v);
}

}  // namespace loom::ops
