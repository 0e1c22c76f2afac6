// The result type of lorakit's truncated SVDs (`Svd<T>`) and the helpers every SVD routine shares:
// thin Householder QR, the deterministic sign convention, and argument checks.
#pragma once

#include "lorakit/core/error.hpp"
#include "lorakit/core/types.hpp"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>

namespace lorakit {

/// A truncated singular value decomposition \f$A \approx U\,\mathrm{diag}(S)\,V^T\f$ of an m x n matrix:
/// U [m x k] and V [n x k] have orthonormal columns, S [k] is descending and >= 0.
///
/// Signs follow one convention everywhere in lorakit (that of scikit-learn's `svd_flip`): in every column of U,
/// the entry of largest magnitude (the first one on a tie) is positive, and the column of V is flipped with it,
/// so a factorization does not depend on the solver that produced it when the singular values are distinct.
template <class T>
struct Svd {
  Matrix<T> U;
  Vector<T> S;
  Matrix<T> V;
};

namespace detail {

/// Column-major work matrix: Householder QR and Eigen's SVDs work on columns.
template <class T>
using ColMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;

/// Replaces y [m x l] (m >= l) by the Q factor of its thin Householder QR, y = Q R: orthonormal columns spanning
/// y's column space (completed by Householder's own basis where y is rank-deficient, so an all-zero y gives
/// orthonormal columns too, never NaN). Cost O(m l^2), blocked (Eigen applies the reflectors in blocks of 48).
template <class T>
void orthonormalize_columns(ColMatrix<T>& y) {
  const Index m = y.rows(), l = y.cols();
  Eigen::HouseholderQR<Eigen::Ref<ColMatrix<T>>> qr(y);  // factorizes in place: y holds R and the reflectors
  ColMatrix<T> q = ColMatrix<T>::Identity(m, l);
  q.applyOnTheLeft(qr.householderQ());
  y = std::move(q);
}

/// Thin QR of y [m x l]: Q [m x p] with orthonormal columns and R [p x l] upper trapezoidal, p = min(m, l).
template <class T>
void thin_qr(ColMatrix<T> y, ColMatrix<T>& q, ColMatrix<T>& r) {
  const Index m = y.rows(), l = y.cols(), p = std::min(m, l);
  Eigen::HouseholderQR<Eigen::Ref<ColMatrix<T>>> qr(y);
  r = y.topRows(p).template triangularView<Eigen::Upper>();
  q = ColMatrix<T>::Identity(m, p);
  q.applyOnTheLeft(qr.householderQ());
}

/// Flips the columns of u (and those of `with`, if given) so that the largest-magnitude entry of each column of u
/// (the first one on a tie) is positive.
template <class DU, class... DV>
void normalize_signs(Eigen::MatrixBase<DU>& u, Eigen::MatrixBase<DV>&... with) {
  for (Index j = 0; j < u.cols(); ++j) {
    Index at = 0;
    u.col(j).cwiseAbs().maxCoeff(&at);
    if (u(at, j) < 0) {
      u.col(j) = -u.col(j);
      ((with.col(j) = -with.col(j)), ...);
    }
  }
}

/// Builds Svd<T> from the leading k singular triplets of a thin SVD whose factors are u and v, applying the sign
/// convention. Negative zero and rounding-level negative values cannot occur: Eigen returns S >= 0.
template <class T, class DU, class DS, class DV>
Svd<T> make_svd(const Eigen::MatrixBase<DU>& u, const Eigen::MatrixBase<DS>& s, const Eigen::MatrixBase<DV>& v,
                Index k) {
  Svd<T> out;
  out.U = u.leftCols(k);
  out.S = s.head(k);
  out.V = v.leftCols(k);
  normalize_signs(out.U, out.V);
  return out;
}

/// Checks 1 <= k <= limit, naming the limit in the message.
inline void check_truncation_rank(const char* where, Index k, Index limit, const char* limit_name) {
  if (k < 1 || k > limit) lorakit::detail::fail<ValueError>(where, "k is ", k, ", expected 1 <= k <= ", limit_name, " = ", limit);
}

/// Checks that a matrix argument has at least one row and one column.
inline void check_non_empty(const char* where, const char* name, Index rows, Index cols) {
  if (rows < 1 || cols < 1) lorakit::detail::fail<ShapeError>(where, name, " is [", rows, " x ", cols, "], expected a non-empty matrix");
}

}  // namespace detail
}  // namespace lorakit

// Compiled once where core/eigen_instances.hpp is opted into (LORAKIT_EXTERN_EIGEN_DECOMPOSITIONS).
#ifdef LORAKIT_DECOMPOSITION_INSTANCE
namespace lorakit::detail {
LORAKIT_DECOMPOSITION_INSTANCE void orthonormalize_columns<float>(ColMatrix<float>&);
LORAKIT_DECOMPOSITION_INSTANCE void orthonormalize_columns<double>(ColMatrix<double>&);
LORAKIT_DECOMPOSITION_INSTANCE void thin_qr<float>(ColMatrix<float>, ColMatrix<float>&, ColMatrix<float>&);
LORAKIT_DECOMPOSITION_INSTANCE void thin_qr<double>(ColMatrix<double>, ColMatrix<double>&, ColMatrix<double>&);
}  // namespace lorakit::detail
#endif
