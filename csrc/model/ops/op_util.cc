#include "csrc/model/ops/op_util.h"

namespace loom::ops {

DType ScalarDType(DType x) { return x == DType::kF64 ? DType::kF64 : DType::kF32; }

int64_t MatrixRows(const Shape& s) {
  if (s.rank() == 0) return 1;
  int64_t rows = 1;
  for (int i = 0; i + 1 < s.rank(); ++i) rows *= s[i];
  return rows;
}

int64_t MatrixCols(const Shape& s) { return s.rank() == 0 ? 1 : s[s.rank() - 1]; }

namespace internal {

std::string Describe(const char* name, const TensorSpec& spec) {
  return std::string(name) + " " + spec.ToString();
}

Status ExpectFloat(const char* op, const char* name, const TensorSpec& spec, bool allow_bf16) {
  if (spec.dtype == DType::kF32 || spec.dtype == DType::kF64 ||
      (allow_bf16 && spec.dtype == DType::kBF16)) {
    return Status::Ok();
  }
  return InvalidArgumentError(std::string(op) + ": " + Describe(name, spec) + " must be f32" +
                              (allow_bf16 ? ", f64 or bf16" : " or f64"));
}

Status ExpectDType(const char* op, const char* name, const TensorSpec& spec, DType dtype) {
  if (spec.dtype == dtype) return Status::Ok();
  return InvalidArgumentError(std::string(op) + ": " + Describe(name, spec) + " must be " +
                              DTypeName(dtype));
}

Status ExpectRankAtLeast(const char* op, const char* name, const TensorSpec& spec, int rank) {
  if (spec.shape.rank() >= rank) return Status::Ok();
  return InvalidArgumentError(std::string(op) + ": " + Describe(name, spec) +
                              " must have rank >= " + std::to_string(rank));
}

Status ExpectRank(const char* op, const char* name, const TensorSpec& spec, int rank) {
  if (spec.shape.rank() == rank) return Status::Ok();
  return InvalidArgumentError(std::string(op) + ": " + Describe(name, spec) + " must have rank " +
                              std::to_string(rank));
}

Status ExpectSameSpec(const char* op, const char* name_a, const TensorSpec& a, const char* name_b,
                      const TensorSpec& b) {
  if (a == b) return Status::Ok();
  return InvalidArgumentError(std::string(op) + ": " + Describe(name_b, b) +
                              " must have the shape and dtype of " + Describe(name_a, a));
}

Status ExpectSameShape(const char* op, const char* name_a, const TensorSpec& a, const char* name_b,
                       const TensorSpec& b) {
  if (a.shape == b.shape) return Status::Ok();
  return InvalidArgumentError(std::string(op) + ": " + Describe(name_b, b) +
                              " must have the shape of " + Describe(name_a, a));
}

Status ExpectShape(const char* op, const char* name, const TensorSpec& spec,
                   const Shape& expected) {
  if (spec.shape == expected) return Status::Ok();
  return InvalidArgumentError(std::string(op) + ": " + Describe(name, spec) + " must have shape " +
                              expected.ToString());
}

void CheckOnDevice(const char* op, const Device& device, std::initializer_list<NamedView> views) {
  for (const NamedView& v : views) {
    if (v.view.empty()) continue;
    CHECK(v.view.device() == device)
        << op << ": " << v.name << " is on " << v.view.device().ToString() << " but the op runs on "
        << device.ToString();
  }
}

void CheckCpuDType(const char* op, DType dtype) {
  LOG(FATAL) << op << ": the CPU backend computes in f32 or f64, not " << DTypeName(dtype)
             << (dtype == DType::kBF16 ? " (bf16 is supported on CUDA only)" : "");
}

}  // namespace internal
}  // namespace loom::ops
