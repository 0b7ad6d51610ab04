// The error messages of the optimizer-config validators (dense_optimizer.cc, lr_schedule.cc):
// "<path>.<field>: <rule>, got <value>", numbers in their shortest round-trip form.
#ifndef LOOM_OPTIM_CONFIG_ERRORS_H_
#define LOOM_OPTIM_CONFIG_ERRORS_H_

#include <charconv>
#include <cstdint>
#include <string>

#include "csrc/core/status.h"

namespace loom::optim::internal {

// Shortest text that reads back as the same double ("0.1", "1e-08", "inf", "nan").
inline std::string Num(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}
inline std::string Num(int64_t v) { return std::to_string(v); }
inline std::string Num(int v) { return std::to_string(v); }

template <typename T>
Status FieldError(const std::string& path, const std::string& field, const std::string& rule,
                  T value) {
  return InvalidArgumentError(path + "." + field + ": " + rule + ", got " + Num(value));
}

}  // namespace loom::optim::internal

#endif  // LOOM_OPTIM_CONFIG_ERRORS_H_
