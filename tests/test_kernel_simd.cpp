// kernel/simd.hpp and the VeRA products of kernel/lowrank_products.hpp against plain scalar loops, on sizes
// that are not multiples of any vector width (remainders), in float and double.
#include <catch2/catch.hpp>

#include "test_support.hpp"

#include <lorakit/kernel/lowrank_products.hpp>
#include <lorakit/kernel/simd.hpp>

#include <cmath>
#include <vector>

using namespace lorakit;
using namespace lorakit::testing;

TEMPLATE_TEST_CASE("adamw_update equals PyTorch's AdamW written as a scalar loop", "[kernel][simd]", float, double) {
  using T = TestType;
  kernel::AdamWStep step;
  step.lr = 3e-2;
  step.weight_decay = 0.1;
  for (Index n : {Index(1), Index(7), Index(16), Index(33), Index(1001)}) {
    INFO("n = " << n);
    const Matrix<T> start = random_matrix<T>(1, n, 1);
    std::vector<T> p(start.data(), start.data() + n), m(static_cast<std::size_t>(n), T(0)),
        v(static_cast<std::size_t>(n), T(0));
    std::vector<double> rp(p.begin(), p.end()), rm(m.begin(), m.end()), rv(v.begin(), v.end());
    for (std::int64_t t = 1; t <= 3; ++t) {
      const Matrix<T> grad = random_matrix<T>(1, n, 10 + static_cast<std::uint64_t>(t));
      step.step = t;
      kernel::adamw_update(p.data(), m.data(), v.data(), grad.data(), n, step);
      // Reference in double, as torch.optim.AdamW (single tensor) writes it.
      const double bc1 = 1 - std::pow(step.beta1, static_cast<double>(t));
      const double bc2 = 1 - std::pow(step.beta2, static_cast<double>(t));
      for (Index i = 0; i < n; ++i) {
        const double g = grad(0, i);
        rp[i] *= 1 - step.lr * step.weight_decay;
        rm[i] = step.beta1 * rm[i] + (1 - step.beta1) * g;
        rv[i] = step.beta2 * rv[i] + (1 - step.beta2) * g * g;
        rp[i] -= step.lr / bc1 * rm[i] / (std::sqrt(rv[i]) / std::sqrt(bc2) + step.eps);
      }
      const double tol = std::is_same_v<T, float> ? 2e-6 : 1e-14;
      for (Index i = 0; i < n; ++i) {
        const auto at = static_cast<std::size_t>(i);
        REQUIRE(std::abs(p[at] - rp[at]) <= tol * (std::abs(rp[at]) + step.lr));
        // m = b1 m + (1 - b1) g may cancel: the rounding is relative to the terms, bounded by |m| + |g|.
        REQUIRE(std::abs(m[at] - rm[at]) <= tol * 4 * (std::abs(rm[at]) + std::abs(grad(0, i))));
        REQUIRE(std::abs(v[at] - rv[at]) <= tol * 4 * std::abs(rv[at]));
      }
    }
  }
}

TEMPLATE_TEST_CASE("project_dot equals x A^T by scalar loops, with remainders and strides", "[kernel][simd]", float,
                   double) {
  using T = TestType;
  for (Index n : {Index(1), Index(3), Index(6), Index(9)}) {
    for (Index r : {Index(1), Index(3), Index(4), Index(7), Index(64)}) {
      for (Index in : {Index(1), Index(5), Index(17), Index(40), Index(129)}) {
        INFO(n << " x " << in << " times (" << r << " x " << in << ")^T");
        // Blocks of wider matrices: leading dimensions larger than the widths.
        const Matrix<T> xs = random_matrix<T>(n, in + 3, 1), as = random_matrix<T>(r, in + 5, 2);
        Matrix<T> out = Matrix<T>::Constant(n, r + 2, T(-7));
        kernel::project_dot(xs.data(), xs.cols(), as.data(), as.cols(), out.data(), out.cols(), n, r, in);
        for (Index i = 0; i < n; ++i) {
          for (Index j = 0; j < r; ++j) {
            double sum = 0, magnitude = 0;
            for (Index p = 0; p < in; ++p) {
              sum += static_cast<double>(xs(i, p)) * as(j, p);
              magnitude += std::abs(static_cast<double>(xs(i, p)) * as(j, p));
            }
            const double eps = std::is_same_v<T, float> ? 6e-8 : 1.2e-16;
            REQUIRE(std::abs(out(i, j) - sum) <= 2 * static_cast<double>(in) * eps * magnitude + 1e-30);
          }
          for (Index j = r; j < r + 2; ++j) REQUIRE(out(i, j) == T(-7));  // nothing written past r
        }
      }
    }
  }
}

TEMPLATE_TEST_CASE("VeRA's fused products equal the unfused formulas", "[kernel][vera]", float, double) {
  using T = TestType;
  const Index n = 7, in = 13, out = 11, r = 5;
  const Matrix<double> x = random_matrix<double>(n, in, 1), A = random_matrix<double>(r, in, 2),
                       B = random_matrix<double>(out, r, 3), dy = random_matrix<double>(n, out, 4);
  const Vector<double> d = random_matrix<double>(r, 1, 5), b = random_matrix<double>(out, 1, 6);
  Matrix<T> u, ud, scaled, h, pair;
  Matrix<T> y = Matrix<double>(random_matrix<double>(n, out, 7)).cast<T>();
  const Matrix<double> y0 = y.template cast<double>();
  kernel::vera_project<T>(x.cast<T>(), A.cast<T>(), d.cast<T>(), u, ud);
  kernel::vera_expand_add<T>(ud, B.cast<T>(), b.cast<T>(), scaled, y);
  // Unfused, in double: y += x A^T diag(d) B^T diag(b).
  const Matrix<double> uref = x * A.transpose();
  const Matrix<double> yref = y0 + uref * d.asDiagonal() * B.transpose() * b.asDiagonal();
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-13;
  CHECK(relative_error(u.template cast<double>(), uref) < tol);
  CHECK(relative_error(y.template cast<double>(), yref) < tol);

  Vector<T> grad_b = Vector<T>::Constant(out, T(1)), grad_d = Vector<T>::Constant(r, T(2));
  kernel::vera_backward<T>(dy.cast<T>(), u, ud, B.cast<T>(), scaled, d.cast<T>(), grad_b, grad_d, h, pair);
  // dL/db_o = sum_n dy[n, o] (u diag(d) B^T)[n, o]; dL/dd_r = sum_n u[n, r] (dy diag(b) B)[n, r]; dx = h A with
  // h = dy diag(b) B diag(d); checked entry by entry with loops.
  for (Index o = 0; o < out; ++o) {
    double sum = 0;
    for (Index i = 0; i < n; ++i)
      for (Index k = 0; k < r; ++k) sum += dy(i, o) * uref(i, k) * d(k) * B(o, k);
    CHECK(std::abs(grad_b(o) - (1 + sum)) < tol * (1 + std::abs(sum)) * 10);
  }
  for (Index k = 0; k < r; ++k) {
    double sum = 0;
    for (Index i = 0; i < n; ++i)
      for (Index o = 0; o < out; ++o) sum += uref(i, k) * dy(i, o) * b(o) * B(o, k);
    CHECK(std::abs(grad_d(k) - (2 + sum)) < tol * (1 + std::abs(sum)) * 10);
  }
  const Matrix<double> href = dy * b.asDiagonal() * B * d.asDiagonal();
  CHECK(relative_error(h.template cast<double>(), href) < tol);
}

TEST_CASE("the SIMD dispatch has a vector path on x86-64 and AArch64", "[kernel][simd]") {
  using Architectures = kernel::simd_detail::Architectures;
#if defined(__x86_64__)
  STATIC_REQUIRE(Architectures::contains<xsimd::sse2>());
  STATIC_REQUIRE(kernel::simd_detail::has_simd);
#elif defined(__aarch64__)
  STATIC_REQUIRE(Architectures::contains<xsimd::neon64>());
  STATIC_REQUIRE(kernel::simd_detail::has_simd);
#else
  WARN("no SIMD architecture is dispatched on this target; the kernels run their scalar loops");
#endif
  // The path the kernels take on this CPU, for the log.
  kernel::simd_detail::dispatch([](auto arch) { UNSCOPED_INFO("dispatched to " << decltype(arch)::name()); });
  SUCCEED();
}
