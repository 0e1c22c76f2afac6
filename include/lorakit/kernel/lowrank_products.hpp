// The products of a low-rank adapter branch, shared by every adapter: project the input onto the rank-r
// space (x A^T), expand back and accumulate (y += s t B^T), and the transposed products of the backward.
//
// Adapters call these and never write their own products, so a faster kernel (kernel/simd.hpp) is
// swapped in here, in one place, for the shapes where the benchmarks show it wins.
#pragma once

#include "lorakit/core/types.hpp"

namespace lorakit::kernel {

/// out = x A^T: x [n x in], A [r x in], out [n x r] (resized on first use, reused after).
template <class T>
void project(const ConstMatrixRef<T>& x, const Matrix<T>& A, Matrix<T>& out) {
  out.resize(x.rows(), A.rows());
  out.noalias() = x * A.transpose();
}

/// y += s t B^T: t [n x r], B [out x r], y [n x out].
template <class T>
void expand_add(const Matrix<T>& t, const Matrix<T>& B, T s, MatrixRef<T> y) {
  y.noalias() += (s * t) * B.transpose();
}

/// out = s dy B: dy [n x out], B [out x r], out [n x r] (the gradient reaching the rank-r space).
template <class T>
void project_back(const ConstMatrixRef<T>& dy, const Matrix<T>& B, T s, Matrix<T>& out) {
  out.resize(dy.rows(), B.cols());
  out.noalias() = (s * dy) * B;
}

/// grad += s a^T b: a [n x p], b [n x q], grad [p x q] (the weight gradients of both factors).
template <class T, class DerivedB>
void accumulate_outer(const ConstMatrixRef<T>& a, const Eigen::MatrixBase<DerivedB>& b, T s, Matrix<T>& grad) {
  grad.noalias() += (s * a.transpose()) * b;
}

/// out += the column sums of a ⊙ b: a, b [n x c], out [c] (the gradient of a diagonal scaling). Row by row:
/// lorakit's matrices are row-major, where each row is one contiguous vectorized pass, while Eigen 3.4's
/// `colwise().sum()` of a row-major expression walks it with strided access, about 7x slower at 512 x 4096.
template <class T, class DerivedA, class DerivedB>
void add_column_sums_of_product(const Eigen::MatrixBase<DerivedA>& a, const Eigen::MatrixBase<DerivedB>& b,
                                Eigen::Ref<Vector<T>> out) {
  for (Index i = 0; i < a.rows(); ++i) out.noalias() += a.row(i).cwiseProduct(b.row(i)).transpose();
}

}  // namespace lorakit::kernel

// ---- VeRA's branch (Kopiczko et al., "VeRA: Vector-based Random Matrix Adaptation", ICLR 2024) ----
// y += ((x A^T) Λ_d B^T) Λ_b with Λ_d = diag(d) [r], Λ_b = diag(b) [out]. The two diagonal scalings are folded
// into the small operands (the [n x r] projection and the [out x r] matrix Λ_b B), so the [n x out] product is
// accumulated into y in one GEMM, with no [n x out] temporary.

namespace lorakit::kernel {

/// u = x A^T and ud = u Λ_d: x [n x in], A [r x in] (a block of the shared projection is fine), d [r];
/// u, ud [n x r] (resized on first use, reused after). The backward needs u.
template <class T>
void vera_project(const ConstMatrixRef<T>& x, const ConstMatrixRef<T>& A, const ConstVectorRef<T>& d, Matrix<T>& u,
                  Matrix<T>& ud) {
  u.resize(x.rows(), A.rows());
  u.noalias() = x * A.transpose();
  ud.resize(u.rows(), u.cols());
  ud.noalias() = u * d.asDiagonal();
}

/// y += ud (Λ_b B)^T = (ud B^T) Λ_b: ud [n x r], B [out x r], b [out], y [n x out]; scaled_B [out x r] is a
/// workspace that receives Λ_b B (the backward reuses it).
template <class T>
void vera_expand_add(const Matrix<T>& ud, const ConstMatrixRef<T>& B, const ConstVectorRef<T>& b, Matrix<T>& scaled_B,
                     MatrixRef<T> y) {
  scaled_B.resize(B.rows(), B.cols());
  scaled_B.noalias() = b.asDiagonal() * B;
  y.noalias() += ud * scaled_B.transpose();
}

/// The backward of the branch from dy [n x out], with u, ud from `vera_project` and scaled_B = Λ_b B from
/// `vera_expand_add` (same b):
/// \f[ H = dy\,\Lambda_b B,\quad \partial d \mathrel{+}= \textstyle\sum_n (H \odot u),\quad
///     \partial b \mathrel{+}= \textstyle\sum_r B \odot (dy^T\, u\Lambda_d), \f]
/// and h = H Λ_d [n x r], so that dx += h A. pair [out x r] is a workspace. The reduction for ∂b costs one
/// [out x n] x [n x r] product instead of keeping the [n x out] forward product.
template <class T>
void vera_backward(const ConstMatrixRef<T>& dy, const Matrix<T>& u, const Matrix<T>& ud, const ConstMatrixRef<T>& B,
                   const Matrix<T>& scaled_B, const ConstVectorRef<T>& d, Eigen::Ref<Vector<T>> grad_b,
                   Eigen::Ref<Vector<T>> grad_d, Matrix<T>& h, Matrix<T>& pair) {
  h.resize(dy.rows(), B.cols());
  h.noalias() = dy * scaled_B;
  add_column_sums_of_product<T>(h, u, grad_d);
  pair.resize(B.rows(), B.cols());
  pair.noalias() = dy.transpose() * ud;
  grad_b.noalias() += pair.cwiseProduct(B).rowwise().sum();
  h.array().rowwise() *= d.transpose().array();
}

}  // namespace lorakit::kernel
