// Randomized truncated SVD of a dense matrix (Halko, Martinsson & Tropp): the rank-k approximation used
// where an exact SVD would cost O(m n min(m, n)), e.g. compressing a dense weight update.
#pragma once

#include "lorakit/core/error.hpp"
#include "lorakit/core/random.hpp"
#include "lorakit/core/types.hpp"
#include "lorakit/kernel/svd.hpp"

#include <Eigen/SVD>

#include <algorithm>
#include <cstdint>

namespace lorakit {

/// Settings of `randomized_svd`.
struct RsvdOptions {
  /// p, extra columns of the test matrix: the sketch has l = min(k + p, min(m, n)) columns.
  Index oversamples = 10;
  /// q, power (subspace) iterations; each one multiplies the error's dependence on the spectral gap by
  /// (sigma_{k+1} / sigma_k)^2.
  Index power_iterations = 2;
  /// Seeds the Gaussian test matrix (`lorakit::Rng`, stream 0).
  std::uint64_t seed = 0;
};

/// Rank-k randomized SVD of a [m x n] (Halko, Martinsson, Tropp, "Finding structure with randomness:
/// probabilistic algorithms for constructing approximate matrix decompositions", SIAM Review 53(2), 2011;
/// Algorithms 4.4 (randomized subspace iteration) and 5.1 (direct SVD)).
///
/// With \f$\Omega \in \mathbb{R}^{n \times l}\f$ standard Gaussian (`Rng(seed)`, filled in row-major order),
/// \f[ Q_0 R_0 = A \Omega,\qquad \tilde Q_j \tilde R_j = A^T Q_{j-1},\quad Q_j R_j = A \tilde Q_j \ (j = 1..q), \f]
/// every product re-orthonormalized by a thin Householder QR (so the iteration keeps all l directions in
/// floating point), then the small SVD \f$ (A^T Q_q)^T = Q_q^T A = \hat U\, \Sigma\, V^T \f$ (Eigen's BDCSVD)
/// and \f$U = Q_q \hat U\f$, keeping the leading k triplets. In expectation (Halko et al., Corollary 10.10)
/// \f[ \|A - U \Sigma V^T\|_F \lesssim \Big(1 + \tfrac{k}{p-1}\Big)^{1/2}\Big(\textstyle\sum_{j>k}\sigma_j^{2(2q+1)}\Big)^{1/(2(2q+1))} \f]
/// relative to the optimal \f$(\sum_{j>k}\sigma_j^2)^{1/2}\f$: with q = 2 the error is within a few percent of
/// optimal on decaying spectra.
///
/// Cost: 2q + 2 products with a [n x l] or [m x l] block, O(m n l (q + 1)), plus 2q + 1 QRs of O((m + n) l^2)
/// and an O(n l^2) SVD. Signs follow `Svd`'s convention; the output is a deterministic function of (a, k, options).
/// A rank-deficient or zero input gives zero singular values (with orthonormal U, V), never NaN.
///
/// Errors: `a` empty (ShapeError); k outside [1, min(m, n)], negative oversamples or power_iterations,
/// a NaN or infinite entry (ValueError).
template <class T>
Svd<T> randomized_svd(const Eigen::Ref<const Matrix<T>>& a, Index k, const RsvdOptions& options = {}) {
  LORAKIT_STATIC_ASSERT_SCALAR(T);
  using detail::ColMatrix;
  using detail::orthonormalize_columns;
  constexpr const char* where = "randomized_svd";
  const Index m = a.rows(), n = a.cols();
  detail::check_non_empty(where, "a", m, n);
  const Index limit = std::min(m, n);
  detail::check_truncation_rank(where, k, limit, "min(rows, cols)");
  if (options.oversamples < 0) {
    detail::fail<ValueError>(where, "oversamples is ", options.oversamples, ", expected >= 0");
  }
  if (options.power_iterations < 0) {
    detail::fail<ValueError>(where, "power_iterations is ", options.power_iterations, ", expected >= 0");
  }
  detail::check_finite(where, "a", a);

  const Index l = std::min(k + options.oversamples, limit);
  ColMatrix<T> omega(n, l);
  Rng rng(options.seed);
  rng.fill_normal(omega, T(0), T(1));

  ColMatrix<T> q(m, l);
  q.noalias() = a * omega;
  orthonormalize_columns(q);
  ColMatrix<T>& z = omega;  // [n x l], reused
  for (Index it = 0; it < options.power_iterations; ++it) {
    z.noalias() = a.transpose() * q;
    orthonormalize_columns(z);
    q.noalias() = a * z;
    orthonormalize_columns(q);
  }
  z.noalias() = a.transpose() * q;  // B^T = A^T Q, [n x l]

  // B^T = W diag(S) X^T gives A ~ Q B = (Q X) diag(S) W^T.
  Eigen::BDCSVD<ColMatrix<T>> svd(z, Eigen::ComputeThinU | Eigen::ComputeThinV);
  ColMatrix<T> u(m, l);
  u.noalias() = q * svd.matrixV();
  return detail::make_svd<T>(u, svd.singularValues(), svd.matrixU(), k);
}

}  // namespace lorakit

// Compiled once where core/eigen_instances.hpp is opted into (LORAKIT_EXTERN_EIGEN_DECOMPOSITIONS).
#ifdef LORAKIT_DECOMPOSITION_INSTANCE
namespace lorakit {
LORAKIT_DECOMPOSITION_INSTANCE Svd<float> randomized_svd<float>(const Eigen::Ref<const Matrix<float>>&, Index,
                                                                const RsvdOptions&);
LORAKIT_DECOMPOSITION_INSTANCE Svd<double> randomized_svd<double>(const Eigen::Ref<const Matrix<double>>&, Index,
                                                                  const RsvdOptions&);
}  // namespace lorakit
#endif
