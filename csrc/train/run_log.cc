#include "csrc/train/run_log.h"

#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace loom::train {

std::string JsonNumber(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[40];
  if (v == std::floor(v) && std::fabs(v) < 9.0e15) {
    std::snprintf(buf, sizeof(buf), "%" PRId64, static_cast<int64_t>(v));
  } else {
    // The shortest %g text that reads back as the same double.
    for (int precision = 6; precision <= 17; ++precision) {
      std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
      if (std::strtod(buf, nullptr) == v) break;
    }
  }
  return buf;
}

namespace {
std::string Field(const char* key, const std::string& value, bool first = false) {
  return std::string(first ? "" : ", ") + "\"" + key + "\": " + value;
}
std::string Int(int64_t v) { return std::to_string(v); }
}  // namespace

std::string EvalRecordJson(const EvalRecord& r) {
  const EvalMetrics& m = r.metrics;
  std::string s = "{";
  s += Field("step", Int(r.step), true);
  s += Field("epoch", Int(r.epoch));
  s += Field("auc", JsonNumber(m.auc));
  s += Field("gauc", JsonNumber(m.gauc));
  s += Field("logloss", JsonNumber(m.logloss));
  s += Field("ne", JsonNumber(m.ne));
  s += Field("calibration", JsonNumber(m.calibration));
  s += Field("mean_prediction", JsonNumber(m.mean_prediction));
  s += Field("ctr", JsonNumber(m.ctr));
  s += Field("num_samples", Int(m.num_samples));
  s += Field("samples_per_sec", JsonNumber(r.samples_per_sec));
  s += Field("train_loss", JsonNumber(r.train_loss));
  s += Field("lr", JsonNumber(r.lr));
  s += Field("elapsed_sec", JsonNumber(r.elapsed_sec));
  return s + "}";
}

std::string ProgressRecordJson(const ProgressRecord& r) {
  std::string s = "{";
  s += Field("step", Int(r.step), true);
  s += Field("epoch", Int(r.epoch));
  s += Field("loss", JsonNumber(r.loss));
  s += Field("samples_per_sec", JsonNumber(r.samples_per_sec));
  s += Field("lr", JsonNumber(r.lr));
  s += Field("elapsed_sec", JsonNumber(r.elapsed_sec));
  return s + "}";
}

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t t = static_cast<int64_t>(std::llround(seconds));
  const int64_t h = t / 3600, m = (t / 60) % 60, s = t % 60;
  char buf[48];
  if (h > 0) {
    std::snprintf(buf, sizeof(buf), "%" PRId64 "h%02" PRId64 "m%02" PRId64 "s", h, m, s);
  } else if (m > 0) {
    std::snprintf(buf, sizeof(buf), "%" PRId64 "m%02" PRId64 "s", m, s);
  } else {
    std::snprintf(buf, sizeof(buf), "%" PRId64 "s", s);
  }
  return buf;
}

std::string ProgressLine(const ProgressRecord& r) {
  char buf[256];
  std::string step = std::to_string(r.step);
  if (r.total_steps > 0) step += "/" + std::to_string(r.total_steps);
  std::snprintf(buf, sizeof(buf),
                "step %s | epoch %" PRId64
                " | loss %.5f | %.0f samples/s | "
                "lr %.4g | elapsed %s | ETA %s",
                step.c_str(), r.epoch, r.loss, r.samples_per_sec, r.lr,
                FormatDuration(r.elapsed_sec).c_str(),
                r.eta_sec < 0 ? "?" : FormatDuration(r.eta_sec).c_str());
  return buf;
}

Status AppendLine(const std::string& path, const std::string& line) {
  std::FILE* f = std::fopen(path.c_str(), "a");
  if (f == nullptr)
    return InternalError(path + ": cannot open for appending: " + std::strerror(errno));
  const std::string text = line + "\n";
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  const bool closed = std::fclose(f) == 0;
  if (!ok || !closed) return InternalError(path + ": write failed");
  return Status::Ok();
}

}  // namespace loom::train
