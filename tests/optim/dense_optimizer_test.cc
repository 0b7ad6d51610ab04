// DenseOptimizer on the CPU. Oracles:
//   * plain double-precision references written here from the papers' formulas (Adam: Kingma &
//     Ba 2015, Algorithm 1 with bias correction; AdamW: Loshchilov & Hutter 2019, Algorithm 2;
//     SGD with momentum/dampening/Nesterov as torch.optim.SGD documents it), run on f64
//     parameters through the public API;
//   * numbers from torch 1.13 (float64), hardcoded; produced once with /usr/bin/python3 by the
//     script quoted above TorchParity below;
//   * bit-identity where the design promises it (thread counts, resume from saved state).
#include "csrc/optim/dense_optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>
#include <omp.h>

#include "csrc/core/philox.h"
#include "csrc/core/rng.h"
#include "csrc/core/tensor.h"

namespace loom::optim {
namespace {

using Config = proto::OptimizerConfig;
constexpr uint64_t kSeed = 20240611;
constexpr double kPi = 3.14159265358979323846;

double Uniform(uint64_t a, uint64_t b, int64_t i, double lo, double hi) {
  return lo + (hi - lo) * static_cast<double>(PhiloxUniform(kSeed, MakeStream(kRngTest, a, b),
                                                            static_cast<uint64_t>(i)));
}

// Sizes cover a single element, a chunk boundary (2048), several chunks with a ragged tail,
// and an empty tensor.
const std::vector<int64_t> kSizes = {1, 7, 2048, 5000, 0, 300};

// Host parameters (values and gradients) as plain double vectors plus tensors of dtype T.
template <typename T>
struct Model {
  std::vector<std::vector<double>> w;  // mirror used to initialize
  std::vector<Tensor> values, grads;

  explicit Model(const std::vector<int64_t>& sizes) {
    for (size_t p = 0; p < sizes.size(); ++p) {
      std::vector<T> init(static_cast<size_t>(sizes[p]));
      for (int64_t i = 0; i < sizes[p]; ++i) init[i] = static_cast<T>(Uniform(1, p, i, -2.0, 2.0));
      values.push_back(Tensor::FromVector(init, Shape{sizes[p]}));
      grads.push_back(Tensor::Zeros(Shape{sizes[p]}, DTypeOf<T>::value));
      w.emplace_back(init.begin(), init.end());
    }
  }
  // Gradients of update t: uniform in [-scale, scale], a different draw per (tensor, t).
  void SetGrads(int t, double scale = 1.0) {
    for (size_t p = 0; p < grads.size(); ++p) {
      T* g = grads[p].data<T>();
      for (int64_t i = 0; i < grads[p].numel(); ++i) {
        g[i] = static_cast<T>(Uniform(2 + t, p, i, -scale, scale));
      }
    }
  }
  std::vector<std::vector<double>> Grads() const {
    std::vector<std::vector<double>> out;
    for (const Tensor& g : grads) {
      std::vector<T> v = g.ToVector<T>();
      out.emplace_back(v.begin(), v.end());
    }
    return out;
  }
  std::vector<DenseParam> Params(const std::vector<bool>& decay = {}) const {
    std::vector<DenseParam> out;
    for (size_t p = 0; p < values.size(); ++p) {
      DenseParam d;
      d.name = "layer" + std::to_string(p) + ".weight";
      d.value = values[p].view();
      d.grad = grads[p].cview();
      d.apply_weight_decay = decay.empty() ? true : decay[p];
      out.push_back(d);
    }
    return out;
  }
  std::vector<T> Value(size_t p) const { return values[p].ToVector<T>(); }
};

// ---------------------------------------------------------------------------------------------
// The plain references (double, textbook form).

struct RefState {
  std::vector<std::vector<double>> w, m, v, buf;
  explicit RefState(const std::vector<std::vector<double>>& w0)
      : w(w0), m(w0.size()), v(w0.size()), buf(w0.size()) {
    for (size_t p = 0; p < w0.size(); ++p) {
      m[p].assign(w0[p].size(), 0.0);
      v[p].assign(w0[p].size(), 0.0);
      buf[p].assign(w0[p].size(), 0.0);
    }
  }
};

// torch.nn.utils.clip_grad_norm_ in long double: returns the coefficient applied.
double RefClip(std::vector<std::vector<double>>* g, double max_norm) {
  long double sq = 0;
  for (const auto& t : *g) {
    for (double x : t) sq += static_cast<long double>(x) * x;
  }
  const double norm = std::sqrt(static_cast<double>(sq));
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) {
    for (auto& t : *g) {
      for (double& x : t) x *= coef;
    }
  }
  return norm;
}

// One update with step number k = t + 1 (1-based, as in the papers) and learning rate lr.
void RefStep(const Config& c, int k, double lr, std::vector<std::vector<double>> g,
             const std::vector<bool>& decay, RefState* s) {
  if (c.max_grad_norm() > 0) RefClip(&g, c.max_grad_norm());
  for (size_t p = 0; p < g.size(); ++p) {
    const double wd = decay.empty() || decay[p] ? c.weight_decay() : 0.0;
    for (size_t i = 0; i < g[p].size(); ++i) {
      double& w = s->w[p][i];
      double gi = g[p][i];
      if (c.type() == Config::OPTIMIZER_TYPE_SGD) {
        // torch.optim.SGD: d_p = g + wd w; buf = d_p (first) or mu buf + (1 - dampening) d_p;
        // d_p = nesterov ? d_p + mu buf : buf; w -= lr d_p.
        gi += wd * w;
        if (c.momentum() > 0) {
          double& b = s->buf[p][i];
          b = k == 1 ? gi : c.momentum() * b + (1 - c.dampening()) * gi;
          gi = c.nesterov() ? gi + c.momentum() * b : b;
        }
        w -= lr * gi;
        continue;
      }
      // Kingma & Ba, Algorithm 1 (Adam with L2 in the gradient) / Loshchilov & Hutter,
      // Algorithm 2 (AdamW; schedule multiplier eta_t folded into lr as torch does).
      if (c.type() == Config::OPTIMIZER_TYPE_ADAM) gi += wd * w;
      double& m = s->m[p][i];
      double& v = s->v[p][i];
      m = c.beta1() * m + (1 - c.beta1()) * gi;
      v = c.beta2() * v + (1 - c.beta2()) * gi * gi;
      const double m_hat = m / (1 - std::pow(c.beta1(), k));
      const double v_hat = v / (1 - std::pow(c.beta2(), k));
      const double adam = m_hat / (std::sqrt(v_hat) + c.eps());
      if (c.type() == Config::OPTIMIZER_TYPE_ADAMW) {
        w = w - lr * (adam + wd * w);
      } else {
        w = w - lr * adam;
      }
    }
  }
}

// Runs `steps` updates through DenseOptimizer (f64) and the reference; compares every element.
void CheckAgainstReference(const Config& c, int steps, const std::vector<bool>& decay,
                           double grad_scale, double (*lr_of)(const Config&, int)) {
  Model<double> model(kSizes);
  RefState ref(model.w);
  auto opt = CreateDenseOptimizer(c, model.Params(decay));
  ASSERT_TRUE(opt.ok()) << opt.status();
  for (int t = 0; t < steps; ++t) {
    model.SetGrads(t, grad_scale);
    const double lr = lr_of(c, t);
    EXPECT_NEAR((*opt)->LearningRate(), lr, 1e-15 * lr) << "t=" << t;
    RefStep(c, t + 1, lr, model.Grads(), decay, &ref);
    (*opt)->Step(ExecContext::Cpu());
  }
  EXPECT_EQ((*opt)->step(), steps);
  for (size_t p = 0; p < kSizes.size(); ++p) {
    const std::vector<double> got = model.Value(p);
    ASSERT_EQ(got.size(), ref.w[p].size());
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_NEAR(got[i], ref.w[p][i], 1e-12 * std::max(1.0, std::abs(ref.w[p][i])))
          << Config::Type_Name(c.type()) << " param " << p << " element " << i;
    }
  }
}

double ConstantLr(const Config& c, int) { return c.lr(); }

// Warm-up 2 steps from 0, then cosine over 5 steps to 0.2 * lr (written independently of
// lr_schedule.cc from the formula in optim.proto).
double WarmupCosineLr(const Config& c, int t) {
  const double warm = t < 2 ? (t + 1) / 2.0 : 1.0;
  const double p = std::min(1.0, std::max(0, t - 2) / 5.0);
  return c.lr() * warm * (0.2 + 0.8 * 0.5 * (1 + std::cos(kPi * p)));
}

Config WithWarmupCosine(Config c) {
  auto* s = c.mutable_lr_schedule();
  s->set_type(Config::LrSchedule::LR_SCHEDULE_COSINE);
  s->mutable_warmup()->set_steps(2);
  s->mutable_cosine()->set_decay_steps(5);
  s->mutable_cosine()->set_final_factor(0.2);
  return c;
}

TEST(DenseOptimizerTest, AdamMatchesKingmaBa) {
  Config c;
  c.set_type(Config::OPTIMIZER_TYPE_ADAM);
  c.set_lr(0.01);
  c.set_weight_decay(0.05);
  CheckAgainstReference(c, 6, {}, 1.0, ConstantLr);
  c.set_beta1(0.5);
  c.set_beta2(0.9);
  c.set_eps(1e-3);
  CheckAgainstReference(WithWarmupCosine(c), 8, {true, false, true, true, true, false}, 1.0,
                        WarmupCosineLr);
}

TEST(DenseOptimizerTest, AdamWMatchesLoshchilovHutter) {
  Config c;
  c.set_type(Config::OPTIMIZER_TYPE_ADAMW);
  c.set_lr(0.003);
  c.set_weight_decay(0.1);
  CheckAgainstReference(c, 6, {}, 1.0, ConstantLr);
  CheckAgainstReference(WithWarmupCosine(c), 8, {false, true, true, false, true, true}, 1.0,
                        WarmupCosineLr);
}

TEST(DenseOptimizerTest, SgdVariantsMatchTorchDefinition) {
  Config c;
  c.set_type(Config::OPTIMIZER_TYPE_SGD);
  c.set_lr(0.05);
  CheckAgainstReference(c, 4, {}, 1.0, ConstantLr);  // plain, no state
  c.set_weight_decay(0.01);
  c.set_momentum(0.9);
  CheckAgainstReference(c, 5, {}, 1.0, ConstantLr);
  c.set_dampening(0.3);
  CheckAgainstReference(c, 5, {}, 1.0, ConstantLr);
  c.set_dampening(0.0);
  c.set_nesterov(true);
  CheckAgainstReference(WithWarmupCosine(c), 8, {true, true, false, true, true, true}, 1.0,
                        WarmupCosineLr);
}

TEST(DenseOptimizerTest, ClippingScalesAllGradientsByGlobalNorm) {
  // Gradients of scale 1 over ~7400 elements have norm ~50: clipping to 1 is active.
  for (auto type :
       {Config::OPTIMIZER_TYPE_ADAM, Config::OPTIMIZER_TYPE_ADAMW, Config::OPTIMIZER_TYPE_SGD}) {
    Config c;
    c.set_type(type);
    c.set_lr(0.1);
    c.set_weight_decay(0.01);
    c.set_max_grad_norm(1.0);
    if (type == Config::OPTIMIZER_TYPE_SGD) c.set_momentum(0.5);
    CheckAgainstReference(c, 4, {}, 1.0, ConstantLr);
    // Below the threshold nothing is scaled.
    c.set_max_grad_norm(1e6);
    CheckAgainstReference(c, 3, {}, 1.0, ConstantLr);
  }
}

TEST(DenseOptimizerTest, GradNormIsExactAndReported) {
  Model<float> model(kSizes);
  Config c;
  c.set_type(Config::OPTIMIZER_TYPE_SGD);
  c.set_max_grad_norm(0.5);
  auto opt = CreateDenseOptimizer(c, model.Params());
  ASSERT_TRUE(opt.ok()) << opt.status();
  EXPECT_TRUE(std::isnan((*opt)->last_grad_norm()));  // before the first step
  model.SetGrads(0);
  std::vector<std::vector<double>> g = model.Grads();
  const double norm = RefClip(&g, 0.5);
  (*opt)->Step(ExecContext::Cpu());
  // f32 squares are exact in f64; only the order of ~7400 additions differs from long double.
  EXPECT_NEAR((*opt)->last_grad_norm(), norm, 1e-14 * norm);
  // Off: NaN.
  c.set_max_grad_norm(0.0);
  auto off = CreateDenseOptimizer(c, model.Params());
  ASSERT_TRUE(off.ok());
  (*off)->Step(ExecContext::Cpu());
  EXPECT_TRUE(std::isnan((*off)->last_grad_norm()));
}

// -------------------------------------------------------------------------------------------
// torch 1.13, float64. Produced with /usr/bin/python3 by:
//   w0 = [0.5, -1.25, 2.0, 0.0]
//   grads = [[0.1, -0.2, 0.3, 0.4], [-0.5, 0.25, 0.125, -0.0625], [1.5, -1.0, 0.01, 0.2]]
//   p = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64)); opt = <optimizer>([p])
//   for g in grads: p.grad = torch.tensor(g, dtype=torch.float64); opt.step()
//   print('%.17g' % each element of p)
// Clipping: p as above and q = [3, -4] with grads grads[0] and [3, -4];
//   torch.nn.utils.clip_grad_norm_([p, q], max_norm=1.0); torch.optim.SGD([p, q], lr=0.1).step()
struct TorchCase {
  const char* name;
  Config config;
  std::vector<double> expected;
};

std::vector<TorchCase> TorchCases() {
  std::vector<TorchCase> cases;
  Config c;
  // torch.optim.Adam(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
  c.set_type(Config::OPTIMIZER_TYPE_ADAM);
  c.set_lr(0.01);
  c.set_weight_decay(0.1);
  cases.push_back(
      {"adam",
       c,
       {0.48996112659740465, -1.2295284185335957, 1.9711652946958946, -0.022046110963888952}});
  // torch.optim.AdamW(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
  c.set_type(Config::OPTIMIZER_TYPE_ADAMW);
  c.set_beta1(0.8);
  c.set_beta2(0.99);
  c.set_eps(1e-6);
  cases.push_back(
      {"adamw",
       c,
       {0.48977953683247, -1.2322325282026301, 1.9685741457054453, -0.021385350737615352}});
  // torch.optim.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
  c = Config();
  c.set_type(Config::OPTIMIZER_TYPE_SGD);
  c.set_lr(0.1);
  c.set_momentum(0.9);
  c.set_nesterov(true);
  c.set_weight_decay(0.01);
  cases.push_back(
      {"sgd_nesterov",
       c,
       {0.31201486198049994, -1.0490416992462501, 1.845338661512, -0.15823341686000003}});
  // torch.optim.SGD(lr=0.1, momentum=0.5, dampening=0.25)
  c = Config();
  c.set_type(Config::OPTIMIZER_TYPE_SGD);
  c.set_lr(0.1);
  c.set_momentum(0.5);
  c.set_dampening(0.25);
  cases.push_back(
      {"sgd_dampening",
       c,
       {0.42624999999999996, -1.1681250000000001, 1.9326874999999999, -0.077968750000000003}});
  // torch.optim.SGD(lr=0.1, weight_decay=0.2)
  c = Config();
  c.set_type(Config::OPTIMIZER_TYPE_SGD);
  c.set_lr(0.1);
  c.set_weight_decay(0.2);
  cases.push_back(
      {"sgd_plain", c, {0.35999199999999998, -1.081782, 1.840322, -0.052291000000000011}});
  return cases;
}

TEST(DenseOptimizerTest, TorchParity) {
  const std::vector<std::vector<double>> grads = {
      {0.1, -0.2, 0.3, 0.4}, {-0.5, 0.25, 0.125, -0.0625}, {1.5, -1.0, 0.01, 0.2}};
  for (const TorchCase& tc : TorchCases()) {
    Tensor w = Tensor::FromVector<double>({0.5, -1.25, 2.0, 0.0}, Shape{4});
    Tensor g = Tensor::Zeros(Shape{4}, DType::kF64);
    auto opt = CreateDenseOptimizer(tc.config, {{"w", w.view(), g.cview()}});
    ASSERT_TRUE(opt.ok()) << opt.status();
    for (const auto& gs : grads) {
      std::memcpy(g.raw(), gs.data(), 4 * sizeof(double));
      (*opt)->Step(ExecContext::Cpu());
    }
    const std::vector<double> got = w.ToVector<double>();
    for (int i = 0; i < 4; ++i) {
      EXPECT_NEAR(got[i], tc.expected[i], 1e-15 * std::max(1.0, std::abs(tc.expected[i])))
          << tc.name << " element " << i;
    }
  }
  // Clipping parity.
  Tensor p = Tensor::FromVector<double>({0.5, -1.25, 2.0, 0.0}, Shape{4});
  Tensor q = Tensor::FromVector<double>({3.0, -4.0}, Shape{2});
  Tensor gp = Tensor::FromVector<double>(grads[0], Shape{4});
  Tensor gq = Tensor::FromVector<double>({3.0, -4.0}, Shape{2});
  Config c;
  c.set_type(Config::OPTIMIZER_TYPE_SGD);
  c.set_lr(0.1);
  c.set_max_grad_norm(1.0);
  auto opt = CreateDenseOptimizer(c, {{"p", p.view(), gp.cview()}, {"q", q.view(), gq.cview()}});
  ASSERT_TRUE(opt.ok()) << opt.status();
  (*opt)->Step(ExecContext::Cpu());
  EXPECT_NEAR((*opt)->last_grad_norm(), 5.0299105359837171, 1e-15 * 5.03);
  const std::vector<double> want_p = {0.49801189346403796, -1.2460237869280759, 1.994035680392114,
                                      -0.0079524261438480882};
  const std::vector<double> want_q = {2.9403568039211394, -3.9204757385615192};
  const std::vector<double> got_p = p.ToVector<double>(), got_q = q.ToVector<double>();
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(got_p[i], want_p[i], 1e-15 * 2) << i;
  for (int i = 0; i < 2; ++i) EXPECT_NEAR(got_q[i], want_q[i], 1e-15 * 4) << i;
}

// f32 parameters (the training dtype) against the same optimizer on f64: the update is the
// same sequence of operations, so the difference is f32 rounding: a few ulp per step.
TEST(DenseOptimizerTest, Float32TracksFloat64) {
  for (auto type :
       {Config::OPTIMIZER_TYPE_ADAM, Config::OPTIMIZER_TYPE_ADAMW, Config::OPTIMIZER_TYPE_SGD}) {
    Config c = WithWarmupCosine(Config());
    c.set_type(type);
    c.set_lr(0.01);
    c.set_weight_decay(0.01);
    c.set_max_grad_norm(5.0);
    if (type == Config::OPTIMIZER_TYPE_SGD) c.set_momentum(0.9);
    Model<float> m32(kSizes);
    Model<double> m64(kSizes);
    // Same initial values (the f64 model is re-initialized from the rounded f32 values).
    for (size_t p = 0; p < kSizes.size(); ++p) {
      std::vector<float> v = m32.Value(p);
      std::vector<double> d(v.begin(), v.end());
      if (!d.empty()) std::memcpy(m64.values[p].raw(), d.data(), d.size() * sizeof(double));
    }
    auto o32 = CreateDenseOptimizer(c, m32.Params());
    auto o64 = CreateDenseOptimizer(c, m64.Params());
    ASSERT_TRUE(o32.ok() && o64.ok());
    constexpr int kSteps = 6;
    for (int t = 0; t < kSteps; ++t) {
      m32.SetGrads(t);
      for (size_t p = 0; p < kSizes.size(); ++p) {
        std::vector<float> g = m32.grads[p].ToVector<float>();
        double* dst = m64.grads[p].data<double>();
        for (size_t i = 0; i < g.size(); ++i) dst[i] = g[i];
      }
      (*o32)->Step(ExecContext::Cpu());
      (*o64)->Step(ExecContext::Cpu());
    }
    for (size_t p = 0; p < kSizes.size(); ++p) {
      const std::vector<float> a = m32.Value(p);
      const std::vector<double> b = m64.Value(p);
      for (size_t i = 0; i < a.size(); ++i) {
        // Per step: |w| ulp-level rounding plus lr * (relative f32 error of the update).
        const double tol = kSteps * (4 * 6e-8 * std::abs(b[i]) + 0.01 * 1e-5);
        ASSERT_NEAR(a[i], b[i], tol) << Config::Type_Name(type) << " param " << p << " i " << i;
      }
    }
  }
}

// Same inputs => same bits, whatever the number of OpenMP threads.
TEST(DenseOptimizerTest, BitIdenticalAcrossThreadCounts) {
  Config c;
  c.set_type(Config::OPTIMIZER_TYPE_ADAMW);
  c.set_weight_decay(0.1);
  c.set_max_grad_norm(2.0);
  const int saved_threads = omp_get_max_threads();
  std::vector<std::vector<float>> results[2];
  double norms[2];
  for (int run = 0; run < 2; ++run) {
    omp_set_num_threads(run == 0 ? 1 : 3);
    Model<float> model(kSizes);
    auto opt = CreateDenseOptimizer(c, model.Params());
    ASSERT_TRUE(opt.ok());
    for (int t = 0; t < 3; ++t) {
      model.SetGrads(t);
      (*opt)->Step(ExecContext::Cpu());
    }
    norms[run] = (*opt)->last_grad_norm();
    for (size_t p = 0; p < kSizes.size(); ++p) results[run].push_back(model.Value(p));
  }
  omp_set_num_threads(saved_threads);
  EXPECT_EQ(std::memcmp(&norms[0], &norms[1], sizeof(double)), 0);
  for (size_t p = 0; p < kSizes.size(); ++p) {
    ASSERT_EQ(results[0][p].size(), results[1][p].size());
    if (results[0][p].empty()) continue;
    EXPECT_EQ(std::memcmp(results[0][p].data(), results[1][p].data(),
                          results[0][p].size() * sizeof(float)),
              0)
        << "param " << p;
  }
}

// N steps + save + restore into a fresh optimizer + M steps == N + M steps, bit for bit.
TEST(DenseOptimizerTest, ResumeFromSavedStateIsBitIdentical) {
  for (auto type : {Config::OPTIMIZER_TYPE_ADAM, Config::OPTIMIZER_TYPE_SGD}) {
    Config c;
    c.set_type(type);
    c.set_lr(0.01);
    if (type == Config::OPTIMIZER_TYPE_SGD) c.set_momentum(0.9);
    auto* s = c.mutable_lr_schedule();
    s->set_type(Config::LrSchedule::LR_SCHEDULE_REDUCE_ON_PLATEAU);
    s->mutable_warmup()->set_steps(3);
    s->mutable_plateau()->set_patience(0);
    const std::vector<double> metrics = {1.0, 1.0, 0.5, 0.7, 0.7};

    Model<float> straight(kSizes);
    auto a = CreateDenseOptimizer(c, straight.Params());
    ASSERT_TRUE(a.ok());
    for (int t = 0; t < 5; ++t) {
      straight.SetGrads(t);
      (*a)->Step(ExecContext::Cpu());
      (*a)->ObserveMetric(metrics[t]);
    }

    Model<float> first(kSizes);
    auto b = CreateDenseOptimizer(c, first.Params());
    ASSERT_TRUE(b.ok());
    for (int t = 0; t < 3; ++t) {
      first.SetGrads(t);
      (*b)->Step(ExecContext::Cpu());
      (*b)->ObserveMetric(metrics[t]);
    }
    // "Checkpoint": the scalar state through its serialized bytes, the tensors by name.
    std::string bytes;
    ASSERT_TRUE((*b)->SaveState().SerializeToString(&bytes));
    std::map<std::string, Tensor> saved;
    for (const NamedStateTensor& st : (*b)->StateTensors()) {
      Tensor copy = Tensor::Empty(st.tensor.spec());
      CopyTensor(st.tensor, copy.view());
      saved[st.name] = copy;
    }
    Model<float> resumed(kSizes);
    for (size_t p = 0; p < kSizes.size(); ++p) CopyTensor(first.values[p], resumed.values[p]);
    auto r = CreateDenseOptimizer(c, resumed.Params());
    ASSERT_TRUE(r.ok());
    proto::DenseOptimizerState state;
    ASSERT_TRUE(state.ParseFromString(bytes));
    ASSERT_TRUE((*r)->LoadState(state).ok());
    const std::vector<NamedStateTensor> named = (*r)->StateTensors();
    ASSERT_EQ(named.size(), saved.size());
    for (const NamedStateTensor& st : named) {
      ASSERT_TRUE(saved.count(st.name)) << st.name;
      CopyTensor(saved[st.name], st.tensor);
    }
    EXPECT_EQ((*r)->step(), 3);
    EXPECT_EQ((*r)->LearningRate(), (*b)->LearningRate());
    for (int t = 3; t < 5; ++t) {
      resumed.SetGrads(t);
      (*r)->Step(ExecContext::Cpu());
      (*r)->ObserveMetric(metrics[t]);
    }
    EXPECT_EQ((*r)->LearningRate(), (*a)->LearningRate());
    for (size_t p = 0; p < kSizes.size(); ++p) {
      const std::vector<float> x = straight.Value(p), y = resumed.Value(p);
      if (x.empty()) continue;
      EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size() * sizeof(float)), 0) << "param " << p;
    }
  }
}

TEST(DenseOptimizerTest, StateTensorNamesAndShapes) {
  Model<float> model({3, 4});
  Config c;
  auto adam = CreateDenseOptimizer(c, model.Params());
  ASSERT_TRUE(adam.ok());
  std::vector<NamedStateTensor> s = (*adam)->StateTensors();
  ASSERT_EQ(s.size(), 4u);
  EXPECT_EQ(s[0].name, "layer0.weight/exp_avg");
  EXPECT_EQ(s[1].name, "layer0.weight/exp_avg_sq");
  EXPECT_EQ(s[3].name, "layer1.weight/exp_avg_sq");
  EXPECT_EQ(s[3].tensor.shape(), Shape({4}));
  EXPECT_EQ(s[0].tensor.data<float>()[2], 0.0f);  // zero-initialized
  c.set_type(Config::OPTIMIZER_TYPE_SGD);
  auto sgd = CreateDenseOptimizer(c, model.Params());
  ASSERT_TRUE(sgd.ok());
  EXPECT_TRUE((*sgd)->StateTensors().empty());  // no momentum, no state
  c.set_momentum(0.9);
  auto sgdm = CreateDenseOptimizer(c, model.Params());
  ASSERT_TRUE(sgdm.ok());
  ASSERT_EQ((*sgdm)->StateTensors().size(), 2u);
  EXPECT_EQ((*sgdm)->StateTensors()[1].name, "layer1.weight/momentum_buffer");
}

TEST(DenseOptimizerTest, LoadStateRejectsMismatches) {
  Model<float> model({3});
  Config c;
  auto opt = CreateDenseOptimizer(c, model.Params());
  ASSERT_TRUE(opt.ok());
  proto::DenseOptimizerState s;
  s.set_type(Config::OPTIMIZER_TYPE_SGD);
  Status st = (*opt)->LoadState(s);
  EXPECT_EQ(st.message(),
            "optimizer_state.type: state was written by OPTIMIZER_TYPE_SGD, the optimizer is "
            "OPTIMIZER_TYPE_ADAM");
  s.set_type(Config::OPTIMIZER_TYPE_ADAM);
  s.set_step(-2);
  EXPECT_EQ((*opt)->LoadState(s).message(), "optimizer_state.step: must be >= 0, got -2");
  s.set_step(2);
  s.mutable_plateau()->set_best(1.0);
  EXPECT_EQ((*opt)->LoadState(s).message(),
            "optimizer_state.plateau: present, but the schedule is LR_SCHEDULE_CONSTANT");
  s.clear_plateau();
  EXPECT_TRUE((*opt)->LoadState(s).ok());
  EXPECT_EQ((*opt)->step(), 2);

  c.mutable_lr_schedule()->set_type(Config::LrSchedule::LR_SCHEDULE_REDUCE_ON_PLATEAU);
  auto plateau = CreateDenseOptimizer(c, model.Params());
  ASSERT_TRUE(plateau.ok());
  EXPECT_EQ((*plateau)->LoadState(s).message(),
            "optimizer_state.plateau: missing, but the schedule is "
            "LR_SCHEDULE_REDUCE_ON_PLATEAU");
  s.mutable_plateau()->set_best(0.5);
  s.mutable_plateau()->set_scale(2.0);
  EXPECT_EQ((*plateau)->LoadState(s).message(),
            "optimizer_state.plateau.scale: must be in [min_factor, 1] = [0, 1], got 2");
  EXPECT_EQ((*plateau)->step(), 0);  // unchanged on error
}

TEST(DenseOptimizerTest, ConfigValidationNamesTheField) {
  struct Case {
    std::function<void(Config*)> edit;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](Config* c) { c->set_lr(-1); }, "optimizer.lr: must be > 0 and finite, got -1"},
      {[](Config* c) { c->set_lr(INFINITY); }, "optimizer.lr: must be > 0 and finite, got inf"},
      {[](Config* c) { c->set_beta1(1.0); }, "optimizer.beta1: must be in [0, 1), got 1"},
      {[](Config* c) { c->set_beta2(-0.5); }, "optimizer.beta2: must be in [0, 1), got -0.5"},
      {[](Config* c) { c->set_eps(0); }, "optimizer.eps: must be > 0 and finite, got 0"},
      {[](Config* c) { c->set_weight_decay(-0.1); },
       "optimizer.weight_decay: must be >= 0 and finite, got -0.1"},
      {[](Config* c) { c->set_max_grad_norm(NAN); },
       "optimizer.max_grad_norm: must be >= 0 and finite (0 = off), got nan"},
      {[](Config* c) { c->set_momentum(0.9); },
       "optimizer.momentum/dampening: only for OPTIMIZER_TYPE_SGD (Adam's momentum is beta1), "
       "type is OPTIMIZER_TYPE_ADAM"},
      {[](Config* c) {
         c->set_type(Config::OPTIMIZER_TYPE_SGD);
         c->set_nesterov(true);
       },
       "optimizer.nesterov: requires momentum > 0 and dampening == 0, got momentum 0 and "
       "dampening 0"},
      {[](Config* c) {
         c->set_type(Config::OPTIMIZER_TYPE_SGD);
         c->set_momentum(1.0);
       },
       "optimizer.momentum: must be in [0, 1), got 1"},
      {[](Config* c) {
         c->mutable_lr_schedule()->set_type(Config::LrSchedule::LR_SCHEDULE_COSINE);
       },
       "optimizer.lr_schedule.cosine.decay_steps: must be in [1, 2^52] when type is "
       "LR_SCHEDULE_COSINE, got 0"},
  };
  for (const Case& k : cases) {
    Config c;
    k.edit(&c);
    Status s = ValidateOptimizerConfig(c);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << k.message;
    EXPECT_EQ(s.message(), k.message);
    Model<float> model({2});
    auto opt = CreateDenseOptimizer(c, model.Params());
    EXPECT_FALSE(opt.ok());
  }
  EXPECT_TRUE(ValidateOptimizerConfig(Config()).ok());
}

// The example at the top of optim.proto parses and is valid.
TEST(DenseOptimizerTest, ProtoHeaderExampleIsValid) {
  Config c;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(
      R"pb(
        type: OPTIMIZER_TYPE_ADAMW
        lr: 0.001
        weight_decay: 0.01
        max_grad_norm: 1.0
        lr_schedule {
          type: LR_SCHEDULE_COSINE
          warmup { steps: 1000 }
          cosine { decay_steps: 100000 final_factor: 0.1 }
        }
      )pb",
      &c));
  EXPECT_TRUE(ValidateOptimizerConfig(c).ok()) << ValidateOptimizerConfig(c);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(c.lr(), c.lr_schedule(), 499), 0.0005);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(c.lr(), c.lr_schedule(), 101000), 0.0001);
}

TEST(DenseOptimizerTest, ParameterValidationNamesTheParameter) {
  Tensor w = Tensor::Zeros(Shape{3}, DType::kF32);
  Tensor g4 = Tensor::Zeros(Shape{4}, DType::kF32);
  Tensor g3 = Tensor::Zeros(Shape{3}, DType::kF32);
  Tensor w64 = Tensor::Zeros(Shape{3}, DType::kF64);
  Tensor g64 = Tensor::Zeros(Shape{3}, DType::kF64);
  Tensor wi = Tensor::Zeros(Shape{3}, DType::kI32);
  Config c;
  auto msg = [&](std::vector<DenseParam> params) {
    auto r = CreateDenseOptimizer(c, std::move(params));
    return r.ok() ? std::string("OK") : r.status().message();
  };
  EXPECT_EQ(msg({{"a", w.view(), g4.cview()}}),
            "dense parameter 0 'a': grad f32(4) does not match value f32(3)");
  EXPECT_EQ(msg({{"a", w.view(), g3.cview()}, {"a", w.view(), g3.cview()}}),
            "dense parameter 1 'a': duplicate name");
  EXPECT_EQ(msg({{"", w.view(), g3.cview()}}), "dense parameter 0 '': empty name");
  EXPECT_EQ(msg({{"a", w.view(), g3.cview()}, {"b", w64.view(), g64.cview()}}),
            "dense parameter 1 'b': f64, parameter 0 is f32 (one dtype per optimizer)");
  EXPECT_EQ(msg({{"i", wi.view(), wi.cview()}}),
            "dense parameter 0 'i': value is i32(3), the dense optimizer supports f32 and f64");
  EXPECT_EQ(msg({{"a", w.view(), g3.cview()}}), "OK");
  EXPECT_EQ(msg({}), "OK");  // nothing to optimize is allowed (Step only counts)
  auto none = CreateDenseOptimizer(c, {});
  ASSERT_TRUE(none.ok());
  (*none)->Step(ExecContext::Cpu());
  EXPECT_EQ((*none)->step(), 1);
}

TEST(DenseOptimizerTest, ReduceOnPlateauScalesTheLearningRate) {
  Model<float> model({2});
  Config c;
  c.set_lr(0.1);
  auto* s = c.mutable_lr_schedule();
  s->set_type(Config::LrSchedule::LR_SCHEDULE_REDUCE_ON_PLATEAU);
  s->mutable_plateau()->set_patience(1);
  s->mutable_plateau()->set_factor(0.5);
  auto opt = CreateDenseOptimizer(c, model.Params());
  ASSERT_TRUE(opt.ok());
  EXPECT_FALSE((*opt)->ObserveMetric(1.0));
  EXPECT_FALSE((*opt)->ObserveMetric(1.0));  // 1 bad evaluation: tolerated
  EXPECT_DOUBLE_EQ((*opt)->LearningRate(), 0.1);
  EXPECT_TRUE((*opt)->ObserveMetric(1.0));  // 2 > patience: reduce
  EXPECT_DOUBLE_EQ((*opt)->LearningRate(), 0.05);
  // Other schedules ignore metrics.
  c.clear_lr_schedule();
  auto constant = CreateDenseOptimizer(c, model.Params());
  ASSERT_TRUE(constant.ok());
  for (int i = 0; i < 20; ++i) EXPECT_FALSE((*constant)->ObserveMetric(1.0));
  EXPECT_DOUBLE_EQ((*constant)->LearningRate(), 0.1);
}

}  // namespace
}  // namespace loom::optim
