// Helpers shared by lorakit's tests: random inputs, relative errors, central finite differences.
#pragma once

#include <lorakit/core/random.hpp>
#include <lorakit/core/types.hpp>

#include <functional>

namespace lorakit::testing {

/// A [rows x cols] matrix with N(0, stddev^2) entries from seed.
template <class T>
Matrix<T> random_matrix(Index rows, Index cols, std::uint64_t seed, double stddev = 1.0) {
  Matrix<T> m(rows, cols);
  Rng rng(seed, 99);
  rng.fill_normal(m, T(0), static_cast<T>(stddev));
  return m;
}

/// ||a - b|| / max(||b||, tiny).
template <class DA, class DB>
double relative_error(const Eigen::MatrixBase<DA>& a, const Eigen::MatrixBase<DB>& b) {
  const double denominator = std::max(static_cast<double>(b.norm()), 1e-300);
  return static_cast<double>((a - b).norm()) / denominator;
}

/// Central finite differences of a scalar function f over the entries of `point` (modified in place, restored).
/// Returns the gradient with the same shape.
template <class T, class Derived>
Matrix<double> finite_difference_gradient(Eigen::MatrixBase<Derived>& point, const std::function<double()>& f,
                                          double h = 1e-6) {
  Matrix<double> grad(point.rows(), point.cols());
  for (Index i = 0; i < point.rows(); ++i) {
    for (Index j = 0; j < point.cols(); ++j) {
      const T saved = point(i, j);
      point(i, j) = static_cast<T>(saved + h);
      const double plus = f();
      point(i, j) = static_cast<T>(saved - h);
      const double minus = f();
      point(i, j) = saved;
      grad(i, j) = (plus - minus) / (2 * h);
    }
  }
  return grad;
}

/// Tolerance of a computation in T (single- or double-precision rounding).
template <class T>
constexpr double tolerance() {
  return std::is_same_v<T, float> ? 2e-5 : 1e-12;
}

}  // namespace lorakit::testing
