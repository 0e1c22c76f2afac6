// Exact truncated SVD of a factored product B A (a LoRA update) without forming the [m x n] product:
// what LoRA-Squeeze uses to cut an adapter to a lower rank.
#pragma once

#include "lorakit/core/error.hpp"
#include "lorakit/core/types.hpp"
#include "lorakit/kernel/svd.hpp"

#include <Eigen/SVD>

#include <algorithm>

namespace lorakit {

/// Leading k singular triplets of \f$M = B A\f$, B [m x r], A [r x n], computed exactly from the factors:
/// \f[ B = Q_B R_B,\quad A^T = Q_A R_A \ \text{(thin QR)},\qquad B A = Q_B\,(R_B R_A^T)\,Q_A^T, \f]
/// \f[ R_B R_A^T = \hat U \Sigma \hat V^T \ \text{(BDCSVD of the small core)},\qquad U = Q_B \hat U,\ V = Q_A \hat V. \f]
/// (The standard reduction for products of factors; see e.g. Golub & Van Loan, "Matrix Computations", 4th ed.,
/// §8.7, and its use for LoRA by Vulić et al., LoRA-Squeeze.)
///
/// Exact up to rounding: the result equals the SVD of the dense product, the core being only
/// min(m, r) x min(n, r). Cost O((m + n) r^2 + r^3) time and O((m + n) r) memory; B A is never formed.
/// Signs follow `Svd`'s convention.
///
/// Errors: B or A empty, or B's columns differ from A's rows (ShapeError); k outside [1, min(m, n, r)],
/// a NaN or infinite entry (ValueError).
template <class T>
Svd<T> product_svd(const Eigen::Ref<const Matrix<T>>& B, const Eigen::Ref<const Matrix<T>>& A, Index k) {
  LORAKIT_STATIC_ASSERT_SCALAR(T);
  using detail::ColMatrix;
  constexpr const char* where = "product_svd";
  detail::check_non_empty(where, "B", B.rows(), B.cols());
  detail::check_non_empty(where, "A", A.rows(), A.cols());
  detail::check_rows(where, "A", A.rows(), B.cols(), "B's columns (the rank r)");
  const Index m = B.rows(), r = B.cols(), n = A.cols();
  detail::check_truncation_rank(where, k, std::min({m, n, r}), "min(m, n, r)");
  detail::check_finite(where, "B", B);
  detail::check_finite(where, "A", A);

  ColMatrix<T> q_b, r_b, q_a, r_a;
  detail::thin_qr<T>(B, q_b, r_b);              // q_b [m x p], r_b [p x r]
  detail::thin_qr<T>(A.transpose(), q_a, r_a);  // q_a [n x s], r_a [s x r]
  ColMatrix<T> core(r_b.rows(), r_a.rows());
  core.noalias() = r_b * r_a.transpose();
  Eigen::BDCSVD<ColMatrix<T>> svd(core, Eigen::ComputeThinU | Eigen::ComputeThinV);
  ColMatrix<T> u(m, k), v(n, k);
  u.noalias() = q_b * svd.matrixU().leftCols(k);
  v.noalias() = q_a * svd.matrixV().leftCols(k);
  return detail::make_svd<T>(u, svd.singularValues(), v, k);
}

}  // namespace lorakit

// Compiled once where core/eigen_instances.hpp is opted into (LORAKIT_EXTERN_EIGEN_DECOMPOSITIONS).
#ifdef LORAKIT_DECOMPOSITION_INSTANCE
namespace lorakit {
LORAKIT_DECOMPOSITION_INSTANCE Svd<float> product_svd<float>(const Eigen::Ref<const Matrix<float>>&,
                                                             const Eigen::Ref<const Matrix<float>>&, Index);
LORAKIT_DECOMPOSITION_INSTANCE Svd<double> product_svd<double>(const Eigen::Ref<const Matrix<double>>&,
                                                               const Eigen::Ref<const Matrix<double>>&, Index);
}  // namespace lorakit
#endif
