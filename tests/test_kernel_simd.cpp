// kernel/simd.hpp against plain scalar loops, on sizes that are not multiples of any vector width (remainders), in
// float and double.
#include <catch2/catch.hpp>

#include "test_support.hpp"

#include <lorakit/kernel/simd.hpp>
#include <lorakit/optim/adamw.hpp>

#include <cmath>
#include <vector>

namespace lorakit_test_kernel_simd {

using namespace lorakit;
using namespace lorakit::testing;

TEMPLATE_TEST_CASE("adamw_update equals PyTorch's AdamW written as a scalar loop", "[kernel][simd]", float, double) {
  using T = TestType;
  AdamWConfig config;
  config.lr = 3e-2;
  config.weight_decay = 0.1;
  for (Index n : {Index(1), Index(7), Index(16), Index(33), Index(1001)}) {
    INFO("n = " << n);
    const Matrix<T> start = random_matrix<T>(1, n, 1);
    std::vector<T> p(start.data(), start.data() + n), m(static_cast<std::size_t>(n), T(0)),
        v(static_cast<std::size_t>(n), T(0));
    std::vector<double> rp(p.begin(), p.end()), rm(m.begin(), m.end()), rv(v.begin(), v.end());
    for (long long t = 1; t <= 3; ++t) {
      const Matrix<T> grad = random_matrix<T>(1, n, 10 + static_cast<std::uint64_t>(t));
      adamw_update(p.data(), m.data(), v.data(), grad.data(), n, adamw_step_coefficients(config, t));
      // Reference in double, as torch.optim.AdamW (single tensor) writes it, from the hyper-parameters.
      const double bc1 = 1 - std::pow(config.beta1, static_cast<double>(t));
      const double bc2 = 1 - std::pow(config.beta2, static_cast<double>(t));
      for (Index i = 0; i < n; ++i) {
        const double g = grad(0, i);
        rp[i] *= 1 - config.lr * config.weight_decay;
        rm[i] = config.beta1 * rm[i] + (1 - config.beta1) * g;
        rv[i] = config.beta2 * rv[i] + (1 - config.beta2) * g * g;
        rp[i] -= config.lr / bc1 * rm[i] / (std::sqrt(rv[i]) / std::sqrt(bc2) + config.eps);
      }
      const double tol = std::is_same_v<T, float> ? 2e-6 : 1e-14;
      for (Index i = 0; i < n; ++i) {
        const auto at = static_cast<std::size_t>(i);
        REQUIRE(std::abs(p[at] - rp[at]) <= tol * (std::abs(rp[at]) + config.lr));
        // m = b1 m + (1 - b1) g may cancel: the rounding is relative to the terms, bounded by |m| + |g|.
        REQUIRE(std::abs(m[at] - rm[at]) <= tol * 4 * (std::abs(rm[at]) + std::abs(grad(0, i))));
        REQUIRE(std::abs(v[at] - rv[at]) <= tol * 4 * std::abs(rv[at]));
      }
    }
  }
}

TEST_CASE("the SIMD dispatch has a vector path on x86-64 and AArch64", "[kernel][simd]") {
  using Architectures = detail::SimdArchitectures;
#if defined(__x86_64__)
  STATIC_REQUIRE(Architectures::contains<xsimd::sse2>());
  STATIC_REQUIRE(detail::has_simd);
#elif defined(__aarch64__)
  STATIC_REQUIRE(Architectures::contains<xsimd::neon64>());
  STATIC_REQUIRE(detail::has_simd);
#else
  WARN("no SIMD architecture is dispatched on this target; the kernels run their scalar loops");
#endif
  // The path the kernels take on this CPU, for the log.
  detail::simd_dispatch([](auto arch) { UNSCOPED_INFO("dispatched to " << decltype(arch)::name()); });
  SUCCEED();
}

}  // namespace lorakit_test_kernel_simd
