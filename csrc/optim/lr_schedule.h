// Learning-rate schedules of the dense optimizer (OptimizerConfig.lr_schedule, optim.proto).
//
//   lr_t = lr * WarmupFactor(t) * DecayFactor(t) * plateau_scale
//
// t is the 0-based index of the update (the first update is t = 0). WarmupFactor and
// DecayFactor are pure functions of (t, config): every rank computes the same value, and a
// resumed run computes the same values as an uninterrupted one without any state. The only
// stateful schedule, reduce-on-plateau, is the small ReducePlateau object below, whose state
// is saved and loaded through proto::LrPlateauState (checkpoints).
//
// Formulas (W = warmup.steps, s = warmup.start_factor):
//   WarmupFactor(t) = s + (1 - s) * (t + 1) / W        t < W
//                   = 1                                 otherwise
//   CONSTANT:          DecayFactor(t) = 1
//   COSINE:            DecayFactor(t) = f + (1 - f) * 0.5 * (1 + cos(pi * p)),
//                      p = clamp((t - W) / decay_steps, 0, 1), f = cosine.final_factor
//   STEP:              DecayFactor(t) = gamma ^ floor(max(0, t - W) / step_size)
//   REDUCE_ON_PLATEAU: DecayFactor(t) = 1; the scale comes from ReducePlateau.
// All arithmetic is in double.
#ifndef LOOM_OPTIM_LR_SCHEDULE_H_
#define LOOM_OPTIM_LR_SCHEDULE_H_

#include <cstdint>
#include <string>

#include "csrc/core/status.h"
#include "csrc/proto/optim.pb.h"

namespace loom::optim {

// InvalidArgument naming the field path under `path` (e.g. "optimizer.lr_schedule.cosine.
// decay_steps: must be > 0 when type is LR_SCHEDULE_COSINE, got 0") for any value outside the
// ranges documented in optim.proto.
Status ValidateLrSchedule(const proto::OptimizerConfig::LrSchedule& schedule,
                          const std::string& path = "optimizer.lr_schedule");

// Pure functions of (t, schedule); the schedule must be valid. t >= 0.
double WarmupFactor(const proto::OptimizerConfig::LrSchedule& schedule, int64_t t);
double DecayFactor(const proto::OptimizerConfig::LrSchedule& schedule, int64_t t);
// base_lr * WarmupFactor(t) * DecayFactor(t) (no plateau scale).
double ScheduledLearningRate(double base_lr, const proto::OptimizerConfig::LrSchedule& schedule,
                             int64_t t);

// ReduceLROnPlateau (the rules are written in optim.proto, LrSchedule.Plateau). It tracks a
// multiplicative scale in (0, 1] of the learning rate; it does not know the learning rate.
// Every rank must observe the same metric values (metrics.h computes global metrics that are
// bit-identical on every rank), so every rank keeps the same state.
class ReducePlateau {
 public:
  // `config` must be valid (ValidateLrSchedule).
  explicit ReducePlateau(const proto::OptimizerConfig::LrSchedule::Plateau& config);

  // Records one evaluation. Returns true iff the scale was reduced by this call.
  bool Observe(double metric);

  double scale() const { return scale_; }
  double best() const { return best_; }
  int num_bad_evals() const { return num_bad_evals_; }
  int cooldown_left() const { return cooldown_left_; }
  int64_t num_evals() const { return num_evals_; }

  // Checkpoint hooks. Load validates the ranges against the config (InvalidArgument naming
  // the field of the state under `path`, e.g. "plateau.scale: must be in [min_factor, 1] =
  // [0, 1], got 2") and leaves the object unchanged on error.
  proto::LrPlateauState Save() const;
  Status Load(const proto::LrPlateauState& state, const std::string& path = "plateau");

 private:
  bool IsBetter(double metric) const;

  proto::OptimizerConfig::LrSchedule::Plateau config_;
  double best_;
  int num_bad_evals_ = 0;
  int cooldown_left_ = 0;
  double scale_ = 1.0;
  int64_t num_evals_ = 0;
};

}  // namespace loom::optim

#endif  // LOOM_OPTIM_LR_SCHEDULE_H_
