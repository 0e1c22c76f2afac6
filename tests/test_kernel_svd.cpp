// kernel/randomized_svd.hpp and kernel/product_svd.hpp against Eigen's BDCSVD, in float and double.
#include <catch2/catch.hpp>

#include "kernel_test_support.hpp"

#include <lorakit/kernel/product_svd.hpp>
#include <lorakit/kernel/randomized_svd.hpp>

#include <cmath>
#include <limits>

namespace lorakit_test_kernel_svd {

using namespace lorakit;
using namespace lorakit::testing;

namespace {

/// Optimal rank-k Frobenius error: sqrt(sum_{i>k} s_i^2).
double optimal_error(const Eigen::VectorXd& s, Index k) { return s.tail(s.size() - k).norm(); }

template <class T>
void check_factors(const Svd<T>& svd, Index m, Index n, Index k) {
  REQUIRE(svd.U.rows() == m);
  REQUIRE(svd.U.cols() == k);
  REQUIRE(svd.V.rows() == n);
  REQUIRE(svd.V.cols() == k);
  REQUIRE(svd.S.size() == k);
  CHECK(svd.U.allFinite());
  CHECK(svd.V.allFinite());
  CHECK(svd.S.allFinite());
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  CHECK(orthonormality_error(svd.U) < tol);
  CHECK(orthonormality_error(svd.V) < tol);
  for (Index i = 0; i < k; ++i) {
    CHECK(svd.S(i) >= T(0));
    if (i > 0) CHECK(svd.S(i) <= svd.S(i - 1));
  }
  // Sign convention: the largest-magnitude entry of each column of U is positive.
  for (Index j = 0; j < k; ++j) {
    Index at = 0;
    svd.U.col(j).cwiseAbs().maxCoeff(&at);
    CHECK(svd.U(at, j) >= T(0));
  }
}

}  // namespace

TEMPLATE_TEST_CASE("randomized_svd is near the optimal rank-k error on known spectra", "[kernel][rsvd]", float,
                   double) {
  using T = TestType;
  struct Spectrum {
    const char* name;
    std::function<double(Index)> f;
  };
  const Spectrum spectra[] = {{"1/i", [](Index i) { return 1.0 / static_cast<double>(i); }},
                              {"0.98^i", [](Index i) { return std::pow(0.98, static_cast<double>(i)); }},
                              {"flat", [](Index) { return 1.0; }}};
  const Index shapes[][2] = {{200, 150}, {150, 200}};
  const Index k = 12;
  for (const auto& spectrum : spectra) {
    for (const auto& shape : shapes) {
      const Index m = shape[0], n = shape[1];
      Eigen::VectorXd s;
      const Matrix<double> a = matrix_with_spectrum(m, n, spectrum.f, 7, &s);
      const Matrix<T> at = a.cast<T>();
      const double optimal = optimal_error(s, k);
      INFO("spectrum " << spectrum.name << ", " << m << " x " << n);
      for (Index iterations : {Index(2), Index(0)}) {
        RsvdOptions options;
        options.power_iterations = iterations;
        options.seed = 3;
        const Svd<T> svd = randomized_svd<T>(at, k, options);
        check_factors(svd, m, n, k);
        const double ratio = reconstruction_error(a, svd) / optimal;
        INFO("power iterations " << iterations << ", error / optimal = " << ratio);
        CHECK(ratio >= 1.0 - 1e-4);  // no rank-k matrix beats the truncated SVD (up to float rounding)
        CHECK(ratio <= (iterations == 2 ? 1.05 : 1.5));
      }
    }
  }
}

TEMPLATE_TEST_CASE("randomized_svd recovers the exact SVD of a matrix of rank <= l", "[kernel][rsvd]", float,
                   double) {
  using T = TestType;
  const Index m = 120, n = 90, k = 8;
  // Rank 15 < k + oversamples: the sketch captures the whole range, so the result is the exact truncated SVD.
  const Matrix<double> a =
      matrix_with_spectrum(m, n, [](Index i) { return i <= 15 ? 10.0 / static_cast<double>(i) : 0.0; }, 11);
  const Svd<T> svd = randomized_svd<T>(a.cast<T>(), k);
  const Svd<double> reference = reference_svd(a, k);
  check_factors(svd, m, n, k);
  const double tol = std::is_same_v<T, float> ? 2e-4 : 1e-10;
  CHECK(relative_error(svd.S.template cast<double>(), reference.S) < tol);
  CHECK(relative_error(svd.U.template cast<double>(), reference.U) < tol * 10);
  CHECK(relative_error(svd.V.template cast<double>(), reference.V) < tol * 10);
}

TEMPLATE_TEST_CASE("randomized_svd is deterministic and seed-dependent", "[kernel][rsvd]", float, double) {
  using T = TestType;
  const Matrix<T> a = random_matrix<T>(60, 80, 5);
  RsvdOptions options;
  options.seed = 17;
  options.power_iterations = 0;
  const Svd<T> first = randomized_svd<T>(a, 5, options), second = randomized_svd<T>(a, 5, options);
  CHECK(first.U == second.U);
  CHECK(first.S == second.S);
  CHECK(first.V == second.V);
  options.seed = 18;
  const Svd<T> other = randomized_svd<T>(a, 5, options);
  CHECK(other.S != first.S);  // a Gaussian matrix has no gap: the sketch from another seed differs
}

TEMPLATE_TEST_CASE("randomized_svd of rank-deficient and zero inputs gives zero singular values", "[kernel][rsvd]",
                   float, double) {
  using T = TestType;
  const Index m = 70, n = 50, k = 10;
  const Matrix<double> low = random_matrix<double>(m, 3, 1) * random_matrix<double>(3, n, 2);
  const Svd<T> svd = randomized_svd<T>(low.cast<T>(), k);
  check_factors(svd, m, n, k);
  const Svd<double> reference = reference_svd(low, 3);
  const double tol = std::is_same_v<T, float> ? 1e-4 : 1e-10;
  CHECK(relative_error(svd.S.head(3).template cast<double>(), reference.S) < tol);
  CHECK(svd.S.tail(k - 3).template cast<double>().maxCoeff() < tol * reference.S(0));

  for (Index shape : {0, 1}) {
    const Matrix<T> zero = Matrix<T>::Zero(shape ? n : m, shape ? m : n);
    const Svd<T> z = randomized_svd<T>(zero, k);
    check_factors(z, zero.rows(), zero.cols(), k);
    CHECK(z.S.isZero(0));
  }
}

TEMPLATE_TEST_CASE("randomized_svd with k = min(m, n) and no oversampling room is exact", "[kernel][rsvd]", float,
                   double) {
  using T = TestType;
  const Matrix<double> a = random_matrix<double>(9, 31, 4);
  const Svd<T> svd = randomized_svd<T>(a.cast<T>(), 9);
  check_factors(svd, 9, 31, 9);
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  CHECK(reconstruction_error(a, svd) < tol * a.norm());
}

TEMPLATE_TEST_CASE("randomized_svd rejects bad arguments", "[kernel][rsvd]", float, double) {
  using T = TestType;
  Matrix<T> a = random_matrix<T>(64, 80, 1);
  CHECK_THROWS_WITH(randomized_svd<T>(a, 0),
                    "randomized_svd: k is 0, expected 1 <= k <= min(rows, cols) = 64");
  CHECK_THROWS_AS(randomized_svd<T>(a, 65), ValueError);
  CHECK_THROWS_AS(randomized_svd<T>(a, -1), ValueError);
  RsvdOptions options;
  options.oversamples = -1;
  CHECK_THROWS_AS(randomized_svd<T>(a, 4, options), ValueError);
  options = {};
  options.power_iterations = -2;
  CHECK_THROWS_AS(randomized_svd<T>(a, 4, options), ValueError);
  CHECK_THROWS_AS(randomized_svd<T>(Matrix<T>(0, 5), 1), ShapeError);
  a(3, 7) = std::numeric_limits<T>::quiet_NaN();
  CHECK_THROWS_WITH(randomized_svd<T>(a, 4), Catch::Contains("a[3, 7] is nan"));
  a(3, 7) = std::numeric_limits<T>::infinity();
  CHECK_THROWS_AS(randomized_svd<T>(a, 4), ValueError);
}

TEMPLATE_TEST_CASE("product_svd equals the SVD of the dense product", "[kernel][product_svd]", float, double) {
  using T = TestType;
  // (m, r, n): tall, wide, r above one side, r above both.
  const Index shapes[][3] = {{150, 12, 110}, {80, 20, 170}, {10, 16, 60}, {7, 24, 9}};
  std::uint64_t seed = 30;
  for (const auto& shape : shapes) {
    const Index m = shape[0], r = shape[1], n = shape[2];
    const Index full = std::min({m, n, r});
    INFO(m << " x " << r << " x " << n);
    const Matrix<double> b = random_matrix<double>(m, r, seed++), a = random_matrix<double>(r, n, seed++);
    const Eigen::MatrixXd dense = b * a;
    const Svd<double> reference = reference_svd(dense, full);
    const Svd<T> svd = product_svd<T>(b.cast<T>(), a.cast<T>(), full);
    check_factors(svd, m, n, full);
    const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-10;
    const double scale = reference.S(0);
    CHECK((svd.S.template cast<double>() - reference.S).cwiseAbs().maxCoeff() < tol * scale);
    CHECK(reconstruction_error(dense, svd) < tol * dense.norm());
    // Singular vectors: equal to the reference's (same sign convention) where the gap to the neighbours is
    // not tiny; a vector's perturbation is bounded by ~ eps ||M|| / gap.
    for (Index j = 0; j < full; ++j) {
      double gap = std::numeric_limits<double>::infinity();
      if (j > 0) gap = std::min(gap, reference.S(j - 1) - reference.S(j));
      if (j + 1 < full) gap = std::min(gap, reference.S(j) - reference.S(j + 1));
      const double bound = tol * 10 * scale / gap;
      CHECK((svd.U.col(j).template cast<double>() - reference.U.col(j)).norm() < bound);
      CHECK((svd.V.col(j).template cast<double>() - reference.V.col(j)).norm() < bound);
    }
    // A truncation keeps the leading triplets.
    const Svd<T> cut = product_svd<T>(b.cast<T>(), a.cast<T>(), 2);
    check_factors(cut, m, n, 2);
    CHECK(cut.S == svd.S.head(2));
  }
}

TEMPLATE_TEST_CASE("product_svd of rank-deficient factors gives zero singular values", "[kernel][product_svd]",
                   float, double) {
  using T = TestType;
  Matrix<T> b = random_matrix<T>(40, 6, 1), a = random_matrix<T>(6, 30, 2);
  b.col(4) = b.col(1);  // rank(B) = 5 ...
  b.col(5).setZero();   // ... then 4
  const Svd<T> svd = product_svd<T>(b, a, 6);
  check_factors(svd, 40, 30, 6);
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  CHECK(svd.S(4) < tol * svd.S(0));
  CHECK(svd.S(5) < tol * svd.S(0));
  const Svd<T> zero = product_svd<T>(Matrix<T>::Zero(40, 6), a, 6);
  check_factors(zero, 40, 30, 6);
  CHECK(zero.S.isZero(0));
}

TEMPLATE_TEST_CASE("product_svd rejects bad arguments", "[kernel][product_svd]", float, double) {
  using T = TestType;
  Matrix<T> b = random_matrix<T>(40, 8, 1), a = random_matrix<T>(8, 30, 2);
  CHECK_THROWS_WITH(product_svd<T>(b, a, 9), "product_svd: k is 9, expected 1 <= k <= min(m, n, r) = 8");
  CHECK_THROWS_AS(product_svd<T>(b, a, 0), ValueError);
  CHECK_THROWS_WITH(product_svd<T>(b, random_matrix<T>(7, 30, 3), 2),
                    "product_svd: A has 7 rows, expected B's columns (the rank r) = 8");
  CHECK_THROWS_AS(product_svd<T>(Matrix<T>(0, 8), a, 1), ShapeError);
  b(0, 0) = std::numeric_limits<T>::infinity();
  CHECK_THROWS_WITH(product_svd<T>(b, a, 2), Catch::Contains("B[0, 0] is inf"));
  b(0, 0) = 0;
  a(7, 29) = std::numeric_limits<T>::quiet_NaN();
  CHECK_THROWS_AS(product_svd<T>(b, a, 2), ValueError);
}

}  // namespace lorakit_test_kernel_svd
