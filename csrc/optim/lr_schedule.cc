#include "csrc/optim/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <glog/logging.h>

#include "csrc/optim/config_errors.h"

namespace loom::optim {
namespace {

using Schedule = proto::OptimizerConfig::LrSchedule;
using Plateau = proto::OptimizerConfig::LrSchedule::Plateau;

constexpr double kPi = 3.14159265358979323846;
// Warm-up lengths above this would lose precision in (t + 1) / W as doubles; nobody needs them.
constexpr int64_t kMaxSteps = int64_t{1} << 52;

using internal::FieldError;
using internal::Num;

bool InRange(double v, double lo, double hi) { return std::isfinite(v) && v >= lo && v <= hi; }

}  // namespace

Status ValidateLrSchedule(const Schedule& s, const std::string& path) {
  const std::string type_name = Schedule::Type_Name(s.type());
  if (s.has_warmup()) {
    const Schedule::Warmup& w = s.warmup();
    if (w.steps() < 0 || w.steps() > kMaxSteps) {
      return FieldError(path, "warmup.steps", "must be in [0, 2^52]", w.steps());
    }
    if (!InRange(w.start_factor(), 0.0, 1.0)) {
      return FieldError(path, "warmup.start_factor", "must be in [0, 1]", w.start_factor());
    }
  }
  if (s.has_cosine() && s.type() != Schedule::LR_SCHEDULE_COSINE) {
    return InvalidArgumentError(path + ".cosine: set but type is " + type_name);
  }
  if (s.has_step() && s.type() != Schedule::LR_SCHEDULE_STEP) {
    return InvalidArgumentError(path + ".step: set but type is " + type_name);
  }
  if (s.has_plateau() && s.type() != Schedule::LR_SCHEDULE_REDUCE_ON_PLATEAU) {
    return InvalidArgumentError(path + ".plateau: set but type is " + type_name);
  }
  switch (s.type()) {
    case Schedule::LR_SCHEDULE_CONSTANT:
      break;
    case Schedule::LR_SCHEDULE_COSINE: {
      const Schedule::Cosine& c = s.cosine();
      if (c.decay_steps() <= 0 || c.decay_steps() > kMaxSteps) {
        return FieldError(path, "cosine.decay_steps",
                          "must be in [1, 2^52] when type is LR_SCHEDULE_COSINE", c.decay_steps());
      }
      if (!InRange(c.final_factor(), 0.0, 1.0)) {
        return FieldError(path, "cosine.final_factor", "must be in [0, 1]", c.final_factor());
      }
      break;
    }
    case Schedule::LR_SCHEDULE_STEP: {
      const Schedule::Step& st = s.step();
      if (st.step_size() <= 0) {
        return FieldError(path, "step.step_size", "must be > 0 when type is LR_SCHEDULE_STEP",
                          st.step_size());
      }
      if (!InRange(st.gamma(), 0.0, 1.0) || st.gamma() == 0.0) {
        return FieldError(path, "step.gamma", "must be in (0, 1]", st.gamma());
      }
      break;
    }
    case Schedule::LR_SCHEDULE_REDUCE_ON_PLATEAU: {
      const Plateau& p = s.plateau();
      if (!InRange(p.factor(), 0.0, 1.0) || p.factor() == 0.0 || p.factor() == 1.0) {
        return FieldError(path, "plateau.factor", "must be in (0, 1)", p.factor());
      }
      if (p.patience() < 0) {
        return FieldError(path, "plateau.patience", "must be >= 0", p.patience());
      }
      if (!InRange(p.threshold(), 0.0, std::numeric_limits<double>::max())) {
        return FieldError(path, "plateau.threshold", "must be finite and >= 0", p.threshold());
      }
      if (p.cooldown() < 0) {
        return FieldError(path, "plateau.cooldown", "must be >= 0", p.cooldown());
      }
      if (!InRange(p.min_factor(), 0.0, 1.0)) {
        return FieldError(path, "plateau.min_factor", "must be in [0, 1]", p.min_factor());
      }
      break;
    }
    default:
      return FieldError(path, "type", "unknown schedule type", static_cast<int>(s.type()));
  }
  return Status::Ok();
}

double WarmupFactor(const Schedule& s, int64_t t) {
  DCHECK_GE(t, 0);
  const int64_t w = s.warmup().steps();
  if (t >= w) return 1.0;
  const double start = s.warmup().start_factor();
  return start + (1.0 - start) * (static_cast<double>(t + 1) / static_cast<double>(w));
}

double DecayFactor(const Schedule& s, int64_t t) {
  DCHECK_GE(t, 0);
  const int64_t since = std::max<int64_t>(0, t - s.warmup().steps());
  switch (s.type()) {
    case Schedule::LR_SCHEDULE_COSINE: {
      const double f = s.cosine().final_factor();
      const double p =
          std::min(1.0, static_cast<double>(since) / static_cast<double>(s.cosine().decay_steps()));
      return f + (1.0 - f) * 0.5 * (1.0 + std::cos(kPi * p));
    }
    case Schedule::LR_SCHEDULE_STEP: {
      const int64_t k = since / s.step().step_size();
      return std::pow(s.step().gamma(), static_cast<double>(k));
    }
    case Schedule::LR_SCHEDULE_CONSTANT:
    case Schedule::LR_SCHEDULE_REDUCE_ON_PLATEAU:
    default:
      return 1.0;
  }
}

double ScheduledLearningRate(double base_lr, const Schedule& s, int64_t t) {
  return base_lr * WarmupFactor(s, t) * DecayFactor(s, t);
}

ReducePlateau::ReducePlateau(const Plateau& config)
    : config_(config),
      best_(config.mode() == Plateau::PLATEAU_MODE_MIN ? std::numeric_limits<double>::infinity()
                                                       : -std::numeric_limits<double>::infinity()) {
}

bool ReducePlateau::IsBetter(double v) const {
  const double th = config_.threshold();
  const bool rel = config_.threshold_mode() == Plateau::PLATEAU_THRESHOLD_REL;
  if (config_.mode() == Plateau::PLATEAU_MODE_MIN) {
    return rel ? v < best_ * (1.0 - th) : v < best_ - th;
  }
  return rel ? v > best_ * (1.0 + th) : v > best_ + th;
}

bool ReducePlateau::Observe(double metric) {
  ++num_evals_;
  // NaN compares false: a NaN evaluation is a bad one, as in torch.
  if (IsBetter(metric)) {
    best_ = metric;
    num_bad_evals_ = 0;
  } else {
    ++num_bad_evals_;
  }
  if (cooldown_left_ > 0) {
    --cooldown_left_;
    num_bad_evals_ = 0;
  }
  if (num_bad_evals_ > config_.patience()) {
    const double reduced = std::max(scale_ * config_.factor(), config_.min_factor());
    cooldown_left_ = config_.cooldown();
    num_bad_evals_ = 0;
    if (reduced < scale_) {
      scale_ = reduced;
      return true;
    }
  }
  return false;
}

proto::LrPlateauState ReducePlateau::Save() const {
  proto::LrPlateauState s;
  s.set_best(best_);
  s.set_num_bad_evals(num_bad_evals_);
  s.set_cooldown_left(cooldown_left_);
  s.set_scale(scale_);
  s.set_num_evals(num_evals_);
  return s;
}

Status ReducePlateau::Load(const proto::LrPlateauState& s, const std::string& path) {
  if (!s.has_best()) return InvalidArgumentError(path + ".best: missing");
  if (std::isnan(s.best())) return FieldError(path, "best", "must not be NaN", s.best());
  // The counters can reach patience + 1 / cooldown only transiently inside Observe.
  if (s.num_bad_evals() < 0 || s.num_bad_evals() > config_.patience()) {
    return FieldError(path, "num_bad_evals",
                      "must be in [0, patience = " + std::to_string(config_.patience()) + "]",
                      s.num_bad_evals());
  }
  if (s.cooldown_left() < 0 || s.cooldown_left() > config_.cooldown()) {
    return FieldError(path, "cooldown_left",
                      "must be in [0, cooldown = " + std::to_string(config_.cooldown()) + "]",
                      s.cooldown_left());
  }
  if (!InRange(s.scale(), config_.min_factor(), 1.0)) {
    return FieldError(path, "scale",
                      "must be in [min_factor, 1] = [" + Num(config_.min_factor()) + ", 1]",
                      s.scale());
  }
  if (s.num_evals() < 0) return FieldError(path, "num_evals", "must be >= 0", s.num_evals());
  best_ = s.best();
  num_bad_evals_ = s.num_bad_evals();
  cooldown_left_ = s.cooldown_left();
  scale_ = s.scale();
  num_evals_ = s.num_evals();
  return Status::Ok();
}

}  // namespace loom::optim
