// LR schedules: values at chosen steps against the closed forms in optim.proto, worked out by
// hand below; ReducePlateau against torch.optim.lr_scheduler.ReduceLROnPlateau (torch 1.13,
// numbers hardcoded, script quoted at the test) and hand-traced sequences.
#include "csrc/optim/lr_schedule.h"

#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

namespace loom::optim {
namespace {

using Schedule = proto::OptimizerConfig::LrSchedule;
using Plateau = Schedule::Plateau;

TEST(LrScheduleTest, ConstantIsConstant) {
  Schedule s;
  ASSERT_TRUE(ValidateLrSchedule(s).ok());
  for (int64_t t : {0, 1, 7, 1000000}) EXPECT_EQ(ScheduledLearningRate(0.25, s, t), 0.25);
}

TEST(LrScheduleTest, LinearWarmup) {
  Schedule s;
  s.mutable_warmup()->set_steps(4);
  ASSERT_TRUE(ValidateLrSchedule(s).ok());
  // start 0: (t + 1) / 4.
  EXPECT_DOUBLE_EQ(WarmupFactor(s, 0), 0.25);
  EXPECT_DOUBLE_EQ(WarmupFactor(s, 1), 0.5);
  EXPECT_DOUBLE_EQ(WarmupFactor(s, 3), 1.0);
  EXPECT_DOUBLE_EQ(WarmupFactor(s, 4), 1.0);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(2.0, s, 2), 1.5);
  // start 0.5: 0.5 + 0.5 * (t + 1) / 4.
  s.mutable_warmup()->set_start_factor(0.5);
  EXPECT_DOUBLE_EQ(WarmupFactor(s, 0), 0.625);
  EXPECT_DOUBLE_EQ(WarmupFactor(s, 2), 0.875);
  EXPECT_DOUBLE_EQ(WarmupFactor(s, 100), 1.0);
}

TEST(LrScheduleTest, CosineAfterWarmup) {
  Schedule s;
  s.set_type(Schedule::LR_SCHEDULE_COSINE);
  s.mutable_warmup()->set_steps(10);
  s.mutable_cosine()->set_decay_steps(100);
  s.mutable_cosine()->set_final_factor(0.1);
  ASSERT_TRUE(ValidateLrSchedule(s).ok());
  EXPECT_DOUBLE_EQ(DecayFactor(s, 0), 1.0);  // warm-up: no decay yet
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(1.0, s, 4), 0.5);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(1.0, s, 10), 1.0);   // p = 0
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(1.0, s, 60), 0.55);  // p = 1/2: 0.1 + 0.9 * 0.5
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(1.0, s, 35),         // p = 1/4
                   0.1 + 0.9 * 0.5 * (1 + std::sqrt(0.5)));
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(1.0, s, 110), 0.1);   // p = 1
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(1.0, s, 5000), 0.1);  // stays at the floor
  // Monotone non-increasing after warm-up.
  for (int64_t t = 10; t < 120; ++t) EXPECT_LE(DecayFactor(s, t + 1), DecayFactor(s, t));
}

TEST(LrScheduleTest, StepDecay) {
  Schedule s;
  s.set_type(Schedule::LR_SCHEDULE_STEP);
  s.mutable_step()->set_step_size(10);
  s.mutable_step()->set_gamma(0.5);
  ASSERT_TRUE(ValidateLrSchedule(s).ok());
  EXPECT_EQ(DecayFactor(s, 0), 1.0);
  EXPECT_EQ(DecayFactor(s, 9), 1.0);
  EXPECT_EQ(DecayFactor(s, 10), 0.5);
  EXPECT_EQ(DecayFactor(s, 25), 0.25);
  EXPECT_EQ(DecayFactor(s, 30), 0.125);
  // Counted from the end of warm-up.
  s.mutable_warmup()->set_steps(5);
  EXPECT_EQ(ScheduledLearningRate(1.0, s, 0), 0.2);
  EXPECT_EQ(ScheduledLearningRate(1.0, s, 14), 1.0);
  EXPECT_EQ(ScheduledLearningRate(1.0, s, 15), 0.5);
}

TEST(LrScheduleTest, ValidationNamesTheField) {
  struct Case {
    Schedule s;
    std::string message;
  };
  std::vector<Case> cases;
  Schedule s;
  s.mutable_warmup()->set_steps(-1);
  cases.push_back({s, "optimizer.lr_schedule.warmup.steps: must be in [0, 2^52], got -1"});
  s.Clear();
  s.mutable_warmup()->set_start_factor(1.5);
  cases.push_back({s, "optimizer.lr_schedule.warmup.start_factor: must be in [0, 1], got 1.5"});
  s.Clear();
  s.mutable_cosine()->set_decay_steps(5);
  cases.push_back({s, "optimizer.lr_schedule.cosine: set but type is LR_SCHEDULE_CONSTANT"});
  s.Clear();
  s.set_type(Schedule::LR_SCHEDULE_COSINE);
  s.mutable_cosine()->set_decay_steps(5);
  s.mutable_cosine()->set_final_factor(-0.5);
  cases.push_back({s, "optimizer.lr_schedule.cosine.final_factor: must be in [0, 1], got -0.5"});
  s.Clear();
  s.set_type(Schedule::LR_SCHEDULE_STEP);
  cases.push_back({s,
                   "optimizer.lr_schedule.step.step_size: must be > 0 when type is "
                   "LR_SCHEDULE_STEP, got 0"});
  s.mutable_step()->set_step_size(3);
  s.mutable_step()->set_gamma(0);
  cases.push_back({s, "optimizer.lr_schedule.step.gamma: must be in (0, 1], got 0"});
  s.Clear();
  s.set_type(Schedule::LR_SCHEDULE_REDUCE_ON_PLATEAU);
  s.mutable_plateau()->set_factor(1.0);
  cases.push_back({s, "optimizer.lr_schedule.plateau.factor: must be in (0, 1), got 1"});
  s.mutable_plateau()->set_factor(0.5);
  s.mutable_plateau()->set_patience(-3);
  cases.push_back({s, "optimizer.lr_schedule.plateau.patience: must be >= 0, got -3"});
  s.mutable_plateau()->set_patience(3);
  s.mutable_plateau()->set_threshold(std::numeric_limits<double>::infinity());
  cases.push_back({s, "optimizer.lr_schedule.plateau.threshold: must be finite and >= 0, got inf"});
  s.mutable_plateau()->set_threshold(0.1);
  s.mutable_plateau()->set_min_factor(2);
  cases.push_back({s, "optimizer.lr_schedule.plateau.min_factor: must be in [0, 1], got 2"});
  for (const Case& c : cases) {
    Status st = ValidateLrSchedule(c.s);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(st.message(), c.message);
  }
}

// torch 1.13, produced with /usr/bin/python3:
//   sch = ReduceLROnPlateau(SGD([p], lr=1.0), mode='min', factor=0.5, patience=2,
//                           threshold=0.01, threshold_mode='rel', cooldown=1, min_lr=0.2)
//   for m in metrics: sch.step(m); print(opt.param_groups[0]['lr'])
TEST(LrScheduleTest, ReducePlateauMatchesTorchMinRel) {
  Plateau p;
  p.set_mode(Plateau::PLATEAU_MODE_MIN);
  p.set_factor(0.5);
  p.set_patience(2);
  p.set_threshold(0.01);
  p.set_threshold_mode(Plateau::PLATEAU_THRESHOLD_REL);
  p.set_cooldown(1);
  p.set_min_factor(0.2);
  Schedule s;
  s.set_type(Schedule::LR_SCHEDULE_REDUCE_ON_PLATEAU);
  *s.mutable_plateau() = p;
  ASSERT_TRUE(ValidateLrSchedule(s).ok());
  const std::vector<double> metrics = {1.0, 0.995, 0.98, 0.99, 0.97, 0.97, 0.97, 0.97,
                                       0.5, 0.6,   0.6,  0.6,  0.6,  0.6,  0.6,  0.6};
  const std::vector<double> torch_lr = {1,   1,   1,   1,    1,    1,    1,    0.5,
                                        0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.2};
  ReducePlateau r(p);
  for (size_t i = 0; i < metrics.size(); ++i) {
    const double before = r.scale();
    const bool reduced = r.Observe(metrics[i]);
    EXPECT_DOUBLE_EQ(r.scale(), torch_lr[i]) << "evaluation " << i;
    EXPECT_EQ(reduced, r.scale() < before) << "evaluation " << i;
  }
  EXPECT_EQ(r.num_evals(), 16);
  // At the floor: no further reduction reported.
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(r.Observe(0.6));
  EXPECT_DOUBLE_EQ(r.scale(), 0.2);
}

// torch 1.13: ReduceLROnPlateau(SGD([p], lr=1.0), mode='max', factor=0.1, patience=1,
//                               threshold=0.05, threshold_mode='abs'); NaN is a bad evaluation.
TEST(LrScheduleTest, ReducePlateauMatchesTorchMaxAbsWithNan) {
  Plateau p;
  p.set_mode(Plateau::PLATEAU_MODE_MAX);
  p.set_factor(0.1);
  p.set_patience(1);
  p.set_threshold(0.05);
  p.set_threshold_mode(Plateau::PLATEAU_THRESHOLD_ABS);
  const std::vector<double> metrics = {
      0.7, 0.74, 0.76, 0.8, 0.81, 0.79, std::numeric_limits<double>::quiet_NaN(), 0.9, 0.9, 0.9};
  const std::vector<double> torch_lr = {1,
                                        1,
                                        1,
                                        1,
                                        0.10000000000000001,
                                        0.10000000000000001,
                                        0.010000000000000002,
                                        0.010000000000000002,
                                        0.010000000000000002,
                                        0.0010000000000000002};
  ReducePlateau r(p);
  for (size_t i = 0; i < metrics.size(); ++i) {
    r.Observe(metrics[i]);
    EXPECT_DOUBLE_EQ(r.scale(), torch_lr[i]) << "evaluation " << i;
  }
}

TEST(LrScheduleTest, ReducePlateauSaveLoadContinuesIdentically) {
  Plateau p;
  p.set_patience(1);
  p.set_cooldown(2);
  p.set_factor(0.5);
  ReducePlateau a(p);
  const std::vector<double> metrics = {3, 2, 2, 2, 1, 1, 1, 1, 1, 0.5, 0.5, 0.5};
  for (int i = 0; i < 5; ++i) a.Observe(metrics[i]);
  const proto::LrPlateauState saved = a.Save();
  ReducePlateau b(p);
  ASSERT_TRUE(b.Load(saved).ok());
  EXPECT_EQ(b.Save().SerializeAsString(), saved.SerializeAsString());
  for (size_t i = 5; i < metrics.size(); ++i) {
    EXPECT_EQ(a.Observe(metrics[i]), b.Observe(metrics[i])) << i;
    EXPECT_EQ(a.scale(), b.scale());
    EXPECT_EQ(a.best(), b.best());
    EXPECT_EQ(a.num_bad_evals(), b.num_bad_evals());
    EXPECT_EQ(a.cooldown_left(), b.cooldown_left());
  }
  // A fresh object's state (best = +inf) round-trips too.
  ReducePlateau fresh(p);
  ReducePlateau fresh2(p);
  ASSERT_TRUE(fresh2.Load(fresh.Save()).ok());
  EXPECT_EQ(fresh2.best(), std::numeric_limits<double>::infinity());
}

TEST(LrScheduleTest, ReducePlateauLoadRejectsBadState) {
  Plateau p;
  p.set_patience(2);
  p.set_cooldown(1);
  p.set_min_factor(0.25);
  ReducePlateau r(p);
  proto::LrPlateauState s;
  EXPECT_EQ(r.Load(s).message(), "plateau.best: missing");
  s.set_best(1.0);
  s.set_num_bad_evals(3);
  EXPECT_EQ(r.Load(s).message(), "plateau.num_bad_evals: must be in [0, patience = 2], got 3");
  s.set_num_bad_evals(2);
  s.set_cooldown_left(2);
  EXPECT_EQ(r.Load(s).message(), "plateau.cooldown_left: must be in [0, cooldown = 1], got 2");
  s.set_cooldown_left(1);
  s.set_scale(0.125);
  EXPECT_EQ(r.Load(s).message(),
            "plateau.scale: must be in [min_factor, 1] = [0.25, 1], got 0.125");
  s.set_scale(0.5);
  ASSERT_TRUE(r.Load(s).ok());
  EXPECT_EQ(r.scale(), 0.5);
}

}  // namespace
}  // namespace loom::optim
