// Symmetric matrices from products, built from general matrix products (GEMM) by blocks: the Gram matrix
// M M^T of a matrix's rows, and the inverse of a symmetric positive definite matrix from its Cholesky factor.
//
// Eigen 3.4 has both operations (selfadjointView().rankUpdate(), its SYRK, and LLT::solve(Identity)), but its
// SYRK is slower than its GEMM, and solving against the identity ignores the identity's zeros (three times the
// arithmetic of the structured inverse). Both matter where the matrices are large: StreamingSvd's Gram matrix
// and LoRA-DA's Z^-1 and D^T D (docs/kernel.md has the figures).
#pragma once

#include "lorakit/core/types.hpp"

#include <Eigen/Dense>

#include <algorithm>

namespace lorakit {

namespace detail {

/// Rows per block of the blocked symmetric products: a sixteenth of the matrix, and at least 128 rows (the GEMM
/// of thinner blocks loses more speed than the skipped upper triangle saves).
inline Index symmetric_block_rows(Index n) { return std::max<Index>(128, (n + 15) / 16); }

}  // namespace detail

/// G = M M^T [m x m], full and exactly symmetric, for M [m x f] (any Eigen matrix expression, e.g. `X.transpose()`
/// for the Gram matrix of X's columns).
///
/// By row blocks of the lower triangle: with blocks \f$M_I\f$ of b rows, \f$G_{I,0:I} = M_I\, M_{0:I}^T\f$ is one
/// GEMM per block, and the strict upper triangle is mirrored from the lower: (1 + 1/blocks)/2 of the arithmetic of
/// the full product M M^T, at GEMM speed (Eigen's rankUpdate is slower: docs/kernel.md).
/// Cost O(m^2 f), exact to the rounding of the products (the two triangles are equal bit for bit).
template <class Derived, class Scalar = typename Derived::Scalar>
void gram_of_rows(const Eigen::MatrixBase<Derived>& M, Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>& G) {
  const Index m = M.rows(), block = detail::symmetric_block_rows(m);
  G.resize(m, m);
  for (Index start = 0; start < m; start += block) {
    const Index rows = std::min(block, m - start);
    G.block(start, 0, rows, start + rows).noalias() = M.middleRows(start, rows) * M.topRows(start + rows).transpose();
  }
  G.template triangularView<Eigen::StrictlyUpper>() = G.transpose();
}

/// L^-1 for a lower-triangular, nonsingular L [n x n] (only the lower triangle of the argument is read), as a
/// lower-triangular matrix.
///
/// Block column J of \f$L^{-1}\f$ is zero above its diagonal block, and below it solves
/// \f$L_{J:,J:}\, X_{J:,J} = [I; 0]\f$: one triangular solve with b right-hand sides per block column instead of
/// one with all n (solving against the whole identity), n^3/3 operations instead of n^3.
template <class Scalar>
Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> lower_triangular_inverse(
    const Eigen::Ref<const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>>& L) {
  const Index n = L.rows(), block = detail::symmetric_block_rows(n);
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> X = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>::Identity(n, n);
  for (Index start = 0; start < n; start += block) {
    const Index cols = std::min(block, n - start), tail = n - start;
    L.bottomRightCorner(tail, tail).template triangularView<Eigen::Lower>().solveInPlace(X.block(start, start, tail, cols));
  }
  return X;
}

/// \f$Z^{-1} = L^{-T} L^{-1}\f$ [n x n], full and exactly symmetric, from the Cholesky factorization Z = L L^T.
///
/// With X = L^-1 (`lower_triangular_inverse`), \f$Z^{-1} = X^T X\f$, and as X is lower triangular, block row I of
/// the lower triangle only sums over the rows of X from block I down:
/// \f$(Z^{-1})_{I,0:I} = X_{I:,I}^T\, X_{I:,0:I}\f$, one GEMM per block. Together about n^3/3 + n^3/3 operations
/// (plus what the blocks' diagonal triangles add), against 2n^3 for `llt.solve(Identity)` (LAPACK's potri does
/// 2n^3/3 by other means).
template <class Scalar>
Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> cholesky_inverse(
    const Eigen::LLT<Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>>& llt) {
  using Dense = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  const Dense X = lower_triangular_inverse<Scalar>(llt.matrixLLT());  // its lower triangle is L
  const Index n = X.rows(), block = detail::symmetric_block_rows(n);
  Dense inverse(n, n);
  for (Index start = 0; start < n; start += block) {
    const Index rows = std::min(block, n - start), tail = n - start;
    inverse.block(start, 0, rows, start + rows).noalias() =
        X.block(start, start, tail, rows).transpose() * X.block(start, 0, tail, start + rows);
  }
  inverse.template triangularView<Eigen::StrictlyUpper>() = inverse.transpose();
  return inverse;
}

}  // namespace lorakit
