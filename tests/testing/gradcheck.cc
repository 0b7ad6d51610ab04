#include "tests/testing/gradcheck.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include <glog/logging.h>

#include "csrc/core/philox.h"
#include "csrc/core/rng.h"

namespace loom::testing {
namespace {

void CheckHostF64(const Tensor& t, const std::string& what) {
  CHECK(t.defined()) << "gradcheck: " << what << " is undefined";
  CHECK(t.dtype() == DType::kF64) << "gradcheck: " << what << " must be f64, is "
                                  << t.spec().ToString();
  CHECK(t.device().is_cpu()) << "gradcheck: " << what << " must live on the host";
}

// L = Σ_k ⟨r_k, f_k⟩ and S = Σ_k Σ_j |r_kj · f_kj|, in a fixed order.
void Project(const std::vector<Tensor>& outputs, const std::vector<Tensor>& r, double* l,
             double* s) {
  double sum = 0.0, mag = 0.0;
  for (size_t k = 0; k < outputs.size(); ++k) {
    const double* f = outputs[k].data<double>();
    const double* w = r[k].data<double>();
    for (int64_t j = 0; j < outputs[k].numel(); ++j) {
      sum += w[j] * f[j];
      mag += std::fabs(w[j] * f[j]);
    }
  }
  *l = sum;
  if (s) *s = mag;
}

std::string Coords(const Shape& shape, int64_t index) {
  std::vector<int64_t> c(static_cast<size_t>(shape.rank()));
  for (int d = shape.rank() - 1; d >= 0; --d) {
    c[d] = shape[d] ? index % shape[d] : 0;
    index = shape[d] ? index / shape[d] : 0;
  }
  std::ostringstream os;
  os << "(";
  for (size_t d = 0; d < c.size(); ++d) os << (d ? ", " : "") << c[d];
  os << ")";
  return os.str();
}

// Every index when n <= max, else the first, the last and a fixed random sample.
std::vector<int64_t> PickIndices(int64_t n, int64_t max, uint64_t seed, uint64_t var) {
  std::vector<int64_t> idx;
  if (n <= max) {
    idx.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) idx[i] = i;
    return idx;
  }
  idx.push_back(0);
  idx.push_back(n - 1);
  const uint64_t stream = MakeStream(kRngTest, 0xC4ECu, var);
  for (int64_t k = 0; static_cast<int64_t>(idx.size()) < max; ++k) {
    const uint32_t u = PhiloxBlock(seed, stream, static_cast<uint64_t>(k)).v[0];
    idx.push_back(static_cast<int64_t>(static_cast<uint64_t>(u) * static_cast<uint64_t>(n) >> 32));
  }
  std::sort(idx.begin(), idx.end());
  idx.erase(std::unique(idx.begin(), idx.end()), idx.end());
  return idx;
}

}  // namespace

std::string GradCheckResult::ToString() const {
  std::ostringstream os;
  os.precision(10);
  os << (ok ? "gradcheck passed" : "gradcheck FAILED") << ": " << checked << " elements";
  if (worst_index >= 0) {
    os << "; worst " << worst_var << "[" << worst_index << "] " << worst_coords << ": analytic "
       << analytic << ", numeric " << numeric << ", |diff| " << std::fabs(analytic - numeric)
       << " = " << worst_ratio << " x allowed " << allowed;
  }
  for (const std::string& f : convention_failures) os << "\n  convention: " << f;
  return os.str();
}

GradCheckResult CheckGradients(
    const std::vector<GradCheckVar>& vars, const std::vector<Tensor>& outputs,
    const std::function<void()>& forward,
    const std::function<void(const std::vector<Tensor>& grad_outputs)>& backward,
    const GradCheckOptions& options) {
  for (const GradCheckVar& v : vars) {
    CheckHostF64(v.value, v.name + ".value");
    CheckHostF64(v.grad, v.name + ".grad");
    CHECK(v.value.shape() == v.grad.shape())
        << "gradcheck: " << v.name << " grad shape " << v.grad.shape().ToString();
  }
  std::vector<Tensor> r;
  for (size_t k = 0; k < outputs.size(); ++k) {
    CheckHostF64(outputs[k], "output " + std::to_string(k));
    Tensor rk = Tensor::Empty(outputs[k].spec());
    FillUniform(ExecContext::Cpu(), rk, options.seed, MakeStream(kRngTest, 0x6AD, k), -1.0, 1.0);
    r.push_back(rk);
  }

  GradCheckResult result;
  forward();
  double l0 = 0.0, scale = 0.0;
  Project(outputs, r, &l0, &scale);
  const double atol = options.atol_scale * std::max(1.0, scale);

  // Analytic gradients from zeroed buffers.
  for (const GradCheckVar& v : vars) ZeroTensor(v.grad);
  backward(r);
  std::vector<std::vector<double>> analytic;
  for (const GradCheckVar& v : vars) analytic.push_back(v.grad.ToVector<double>());

  if (options.check_conventions) {
    for (size_t i = 0; i < vars.size(); ++i) {
      FillUniform(ExecContext::Cpu(), vars[i].grad, options.seed, MakeStream(kRngTest, 0xF111, i),
                  -3.0, 3.0);
    }
    std::vector<std::vector<double>> fill;
    for (const GradCheckVar& v : vars) fill.push_back(v.grad.ToVector<double>());
    backward(r);
    for (size_t i = 0; i < vars.size(); ++i) {
      const std::vector<double> got = vars[i].grad.ToVector<double>();
      const bool accumulate = vars[i].mode == GradMode::kAccumulate;
      for (size_t j = 0; j < got.size(); ++j) {
        const double want = accumulate ? fill[i][j] + analytic[i][j] : analytic[i][j];
        const bool same = accumulate
                              ? std::fabs(got[j] - want) <=
                                    1e-12 * (std::fabs(fill[i][j]) + std::fabs(analytic[i][j]))
                              : std::memcmp(&got[j], &want, sizeof(double)) == 0;
        if (!same) {
          std::ostringstream os;
          os.precision(17);
          os << vars[i].name << "[" << j << "] "
             << Coords(vars[i].grad.shape(), static_cast<int64_t>(j)) << " should be "
             << (accumulate ? "accumulated (+=)" : "overwritten (=)") << ": prefilled "
             << fill[i][j] << ", got " << got[j] << ", expected " << want;
          result.convention_failures.push_back(os.str());
          result.ok = false;
          break;  // one report per variable
        }
      }
    }
  }

  for (size_t i = 0; i < vars.size(); ++i) {
    const GradCheckVar& v = vars[i];
    double* x = v.value.data<double>();
    for (int64_t j : PickIndices(v.value.numel(), options.max_checks_per_var, options.seed, i)) {
      const double saved = x[j];
      double lp = 0.0, lm = 0.0;
      x[j] = saved + options.eps;
      forward();
      Project(outputs, r, &lp, nullptr);
      x[j] = saved - options.eps;
      forward();
      Project(outputs, r, &lm, nullptr);
      x[j] = saved;
      const double numeric = (lp - lm) / (2.0 * options.eps);
      const double a = analytic[i][j];
      const double allowed = options.rtol * std::max(std::fabs(a), std::fabs(numeric)) + atol;
      double ratio = std::fabs(a - numeric) / allowed;
      if (std::isnan(ratio)) ratio = INFINITY;  // a NaN gradient is the worst possible
      ++result.checked;
      if (result.worst_index < 0 || ratio > result.worst_ratio) {
        result.worst_ratio = ratio;
        result.worst_var = v.name;
        result.worst_index = j;
        result.worst_coords = Coords(v.value.shape(), j);
        result.analytic = a;
        result.numeric = numeric;
        result.allowed = allowed;
      }
    }
  }
  if (!(result.worst_ratio <= 1.0)) result.ok = false;
  forward();  // leave the outputs at the unperturbed point
  return result;
}

}  // namespace loom::testing
