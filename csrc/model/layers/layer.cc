#include "csrc/model/layers/layer.h"

#include <cmath>

namespace loom::layers {

std::string JoinName(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

model::InitRule WeightInit(int64_t fan_in) {
  return model::InitRule::Uniform(1.0 / std::sqrt(static_cast<double>(fan_in)));
}

Status Check(bool cond, const std::string& where, const std::string& what) {
  if (cond) return Status::Ok();
  return InvalidArgumentError(where + ": " + what);
}

}  // namespace loom::layers
