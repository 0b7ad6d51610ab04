// A reusable gradient checker in double precision (the oracle of every op and layer backward).
//
// Given variables x_v (inputs and parameters, f64 host tensors), a forward that recomputes the
// outputs f_k(x) from their current values, and a backward that, given ∂L/∂f_k, writes the
// gradients, CheckGradients compares the backward against central differences of the scalar
//   L(x) = Σ_k ⟨r_k, f_k(x)⟩,      r_k fixed, uniform in [−1, 1) (Philox, options.seed)
// for every element of every variable, or for a fixed random subset of
// options.max_checks_per_var elements (always including the first and the last) when larger.
//
// Per element:  numeric = (L(x + eps·e_i) − L(x − eps·e_i)) / (2·eps)
//               passes iff |analytic − numeric| <= rtol · max(|analytic|, |numeric|) + atol,
//               atol = atol_scale · max(1, Σ_k Σ_j |r_kj · f_kj(x)|).
// Why these defaults (eps 1e-6, rtol 1e-6, atol_scale 1e-8), in double:
//   * truncation error of the central difference is eps²·|f'''|/6 ≈ 1e-13·|f'''|, far below
//     rtol for smooth ops (inputs are kept away from kinks such as ReLU's 0 by the tests);
//   * rounding error: L is a sum whose terms have magnitude S = Σ|r·f|, computed to about
//     1e-16·S·(a few), so the difference quotient carries ≈ 1e-16·S/eps = 1e-10·S absolute
//     error; atol = 1e-8·S leaves a 100× margin, and it only matters for gradients smaller
//     than ~1e-2·S (below that the relative test would be fooled by rounding).
// Tighter or looser settings belong in the test, with a comment saying why.
//
// Gradient conventions are checked too (options.check_conventions): the backward runs once
// more on gradients pre-filled with random values; a GradMode::kOverwrite variable must come
// out bit-identical to the first run (=), a kAccumulate variable must come out as the fill
// plus the first run (+=, to 1e-12 relative).
//
// After the check the variables hold their original values and forward() has been re-run.
//
//   std::vector<GradCheckVar> vars = {{"x", x, grad_x}, {"gamma", gamma, grad_gamma,
//                                      GradMode::kAccumulate}};
//   GradCheckResult r = CheckGradients(vars, {y}, forward, backward);
//   EXPECT_TRUE(r.ok) << r.ToString();
#ifndef LOOM_TESTS_TESTING_GRADCHECK_H_
#define LOOM_TESTS_TESTING_GRADCHECK_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "csrc/core/tensor.h"

namespace loom::testing {

struct GradCheckOptions {
  double eps = 1e-6;
  double rtol = 1e-6;
  double atol_scale = 1e-8;
  int64_t max_checks_per_var = 400;
  uint64_t seed = 1701;
  bool check_conventions = true;
};

enum class GradMode { kOverwrite, kAccumulate };

struct GradCheckVar {
  std::string name;
  Tensor value;  // f64, host; forward() reads it (the checker perturbs it in place)
  Tensor grad;   // f64, host, value's shape; backward() writes (=) or accumulates (+=) into it
  GradMode mode = GradMode::kOverwrite;
};

struct GradCheckResult {
  bool ok = true;
  int64_t checked = 0;  // elements compared
  // The element with the largest error / allowed ratio.
  std::string worst_var;
  int64_t worst_index = -1;  // flat index into worst_var
  std::string worst_coords;  // "(i, j, ...)"
  double analytic = 0.0, numeric = 0.0, allowed = 0.0;
  double worst_ratio = 0.0;  // |analytic − numeric| / allowed; ok needs <= 1
  std::vector<std::string> convention_failures;

  std::string ToString() const;
};

// forward: recompute every tensor of `outputs` (f64, host) from the vars' current values.
// backward: given grad_outputs (same shapes as outputs), write each var's grad per its mode.
GradCheckResult CheckGradients(
    const std::vector<GradCheckVar>& vars, const std::vector<Tensor>& outputs,
    const std::function<void()>& forward,
    const std::function<void(const std::vector<Tensor>& grad_outputs)>& backward,
    const GradCheckOptions& options = {});

}  // namespace loom::testing

#endif  // LOOM_TESTS_TESTING_GRADCHECK_H_
