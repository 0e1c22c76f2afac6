// The products of a low-rank adapter branch, shared by every adapter: project the input onto the rank-r
// space (x A^T), expand back and accumulate (y += s t B^T), and the transposed products of the backward.
//
// Adapters call these and never write their own products, so a faster kernel (kernel/simd.hpp) would be
// swapped in here, in one place.
#pragma once

#include "lorakit/core/types.hpp"

namespace lorakit {

/// out = x A^T: x [n x in], A [r x in], out [n x r] (resized on first use, reused after).
template <class T>
void lowrank_project(const ConstMatrixRef<T>& x, const Matrix<T>& A, Matrix<T>& out) {
  out.resize(x.rows(), A.rows());
  out.noalias() = x * A.transpose();
}

/// y += s t B^T: t [n x r], B [out x r], y [n x out].
template <class T>
void lowrank_expand_add(const Matrix<T>& t, const Matrix<T>& B, T s, MatrixRef<T> y) {
  y.noalias() += (s * t) * B.transpose();
}

/// out = s dy B: dy [n x out], B [out x r], out [n x r] (the gradient reaching the rank-r space).
template <class T>
void lowrank_project_back(const ConstMatrixRef<T>& dy, const Matrix<T>& B, T s, Matrix<T>& out) {
  out.resize(dy.rows(), B.cols());
  out.noalias() = (s * dy) * B;
}

/// grad += s a^T b: a [n x p], b [n x q], grad [p x q] (the weight gradients of both factors).
template <class T, class DerivedB>
void accumulate_factor_gradient(const ConstMatrixRef<T>& a, const Eigen::MatrixBase<DerivedB>& b, T s, Matrix<T>& grad) {
  grad.noalias() += (s * a.transpose()) * b;
}

/// out += the column sums of a ⊙ b: a, b [n x c], out [c] (the gradient of a diagonal scaling). Row by row:
/// lorakit's matrices are row-major, where each row is one contiguous vectorized pass, while Eigen 3.4's
/// `colwise().sum()` of a row-major expression walks it with strided access (docs/kernel.md).
template <class T, class DerivedA, class DerivedB>
void add_column_sums_of_product(const Eigen::MatrixBase<DerivedA>& a, const Eigen::MatrixBase<DerivedB>& b,
                                Eigen::Ref<Vector<T>> out) {
  for (Index i = 0; i < a.rows(); ++i) out.noalias() += a.row(i).cwiseProduct(b.row(i)).transpose();
}

}  // namespace lorakit

