// A few extreme eigenpairs of a large symmetric matrix or operator: a thick-restarted block Lanczos
// solver with full reorthogonalization, and the dense reference it is tested against.
//
// Used where only r << n eigenvectors of an n x n symmetric matrix are wanted (LoRA-DA's guidance matrix):
// a dense tridiagonal eigen-solve costs O(n^3) whatever r is, the block Lanczos solver costs a few
// applications of the operator to blocks of vectors plus O(n m^2) orthogonalization per restart.
#pragma once

#include "lorakit/core/error.hpp"
#include "lorakit/core/random.hpp"
#include "lorakit/core/types.hpp"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace lorakit {

/// Settings of `smallest_eigenpairs`. A value of 0 means "choose from the problem size".
struct SymmetricEigenOptions {
  /// b, columns of each Krylov block (0: max(count, min(8, n / 8)), at least 1). Small blocks keep the basis
  /// small and cheap to orthogonalize, and more restarts cost less than a wide basis (the measurements behind the
  /// default are in docs/kernel.md).
  Index block_size = 0;
  /// m, columns of the basis before a restart (0: max(3 count + 2 b, 6 b), at most n).
  Index max_basis = 0;
  /// Restarts before giving up (the result then says `converged = false`).
  Index max_restarts = 60;
  /// An eigenpair (theta, v) has converged when ||M v - theta v|| <= tolerance * max_i |theta_i| over the
  /// wanted Ritz values.
  double tolerance = 1e-10;
  /// Seeds the random starting block (`lorakit::Rng`, stream 0).
  std::uint64_t seed = 0;
};

/// The `count` wanted eigenpairs, eigenvalues in ascending order, eigenvectors as orthonormal columns.
struct SymmetricEigenResult {
  Eigen::VectorXd values;
  Eigen::MatrixXd vectors;       ///< [n x count], column j belongs to values(j)
  Eigen::VectorXd residuals;     ///< ||M v_j - theta_j v_j|| of each returned pair
  bool converged = false;
  Index restarts = 0;            ///< restarts performed
  Index applications = 0;        ///< blocks of vectors the operator was applied to
  Index applied_columns = 0;     ///< vectors the operator was applied to, in all
};

namespace detail {

/// w -= V (V^T w), done twice (classical Gram-Schmidt with reorthogonalization, "CGS2").
template <class = void>  // a template: compiled only in the units that call it (docs/getting-started.md, "Build time")
void orthogonalize_against(const Eigen::Ref<const Eigen::MatrixXd>& V, Eigen::Ref<Eigen::MatrixXd> W) {
  if (V.cols() == 0) return;
  for (int pass = 0; pass < 2; ++pass) {
    const Eigen::MatrixXd coefficients = V.transpose() * W;
    W.noalias() -= V * coefficients;
  }
}

/// Makes the columns of W orthonormal and orthogonal to V. A column that is (numerically) in the span of V
/// and the previous columns is replaced by a random direction, so the block always has full rank.
template <class = void>  // a template: compiled only in the units that call it (docs/getting-started.md, "Build time")
void orthonormalize_krylov_block(const Eigen::Ref<const Eigen::MatrixXd>& V, Eigen::Ref<Eigen::MatrixXd> W,
                                 Rng& rng) {
  const Eigen::VectorXd original = W.colwise().norm().transpose();
  orthogonalize_against(V, W);
  for (Index j = 0; j < W.cols(); ++j) {
    for (int attempt = 0;; ++attempt) {
      for (int pass = 0; pass < 2; ++pass) {
        if (j > 0) {
          const Eigen::VectorXd c = W.leftCols(j).transpose() * W.col(j);
          W.col(j).noalias() -= W.leftCols(j) * c;
        }
      }
      const double norm = W.col(j).norm();
      const double reference = attempt == 0 ? original(j) : 1.0;
      if (norm > 1e-10 * reference && norm > std::numeric_limits<double>::min()) {
        W.col(j) /= norm;
        break;
      }
      if (attempt == 4) {
        detail::fail<Error>("smallest_eigenpairs", "could not extend the Krylov basis (the space is exhausted)");
      }
      Eigen::VectorXd fresh(W.rows());
      rng.fill_normal(fresh, 0.0, 1.0);
      orthogonalize_against(V, fresh);
      W.col(j) = fresh;
    }
  }
}

}  // namespace detail

/// The `count` algebraically smallest eigenpairs of a symmetric n x n operator M, by thick-restarted block
/// Lanczos with full reorthogonalization (Golub & Underwood 1977; thick restart as in Wu & Simon,
/// "Thick-restart Lanczos method for large symmetric eigenvalue problems", SIAM J. Matrix Anal. Appl. 2000).
///
/// `apply(X, Y)` must set \f$Y = M X\f$ for a column-major block X [n x k] (Y is sized [n x k] on entry).
///
/// Each cycle grows an orthonormal basis \f$V = [V_0, V_1, \dots]\f$ with \f$V_{j+1} = \mathrm{orth}(M V_j)\f$
/// against every previous block (twice), keeping \f$M V\f$ alongside, until it has m columns; then the
/// Rayleigh-Ritz step diagonalizes \f$H = V^\top M V = S \Theta S^\top\f$ and the Ritz pairs
/// \f$(\theta_i, V s_i)\f$ are checked: the wanted ones have converged when
/// \f$\|M V s_i - \theta_i V s_i\| \le \mathrm{tol}\,\max_{j<\mathrm{count}} |\theta_j|\f$. Otherwise the basis
/// restarts from the m/2 smallest Ritz vectors (thick restart), extended by the images of the b smallest.
/// Results do not depend on the thread count. Needs count + b <= n / 2; use `smallest_eigenpairs_dense` below that.
template <class Apply>
SymmetricEigenResult smallest_eigenpairs(Apply&& apply, Index n, Index count,
                                         const SymmetricEigenOptions& options = {}) {
  constexpr const char* where = "smallest_eigenpairs";
  if (count < 1) detail::fail<ValueError>(where, "count is ", count, ", expected >= 1");
  const Index b = options.block_size > 0 ? options.block_size
                                         : std::max<Index>({count, std::min<Index>(8, n / 8), Index(1)});
  const Index m = std::min<Index>(n, options.max_basis > 0 ? options.max_basis : std::max(3 * count + 2 * b, 6 * b));
  if (count + b > n / 2 || m < count + 2 * b) {
    detail::fail<ValueError>(where, "n = ", n, " is too small for count = ", count, ", block size ", b, " and basis ",
                             m, " (expected count + b <= n / 2 and basis >= count + 2 b); use the dense solver");
  }
  if (!(options.tolerance > 0)) {
    detail::fail<ValueError>(where, "tolerance is ", options.tolerance, ", expected > 0");
  }

  SymmetricEigenResult result;
  Rng rng(options.seed, 0);
  Eigen::MatrixXd V(n, m), MV(n, m), block(n, b), image(n, b);
  auto apply_block = [&](Index column, Index width) {
    image.resize(n, width);
    apply(V.middleCols(column, width), image);
    MV.middleCols(column, width) = image;
    ++result.applications;
    result.applied_columns += width;
  };

  rng.fill_normal(block, 0.0, 1.0);
  detail::orthonormalize_krylov_block(V.leftCols(0), block, rng);
  V.leftCols(b) = block;
  apply_block(0, b);
  Index k = b;        // columns in the basis
  Index source = 0;   // first column of the block whose image extends the basis next

  for (Index cycle = 0;; ++cycle) {
    while (k + b <= m) {
      block = MV.middleCols(source, b);
      detail::orthonormalize_krylov_block(V.leftCols(k), block, rng);
      V.middleCols(k, b) = block;
      apply_block(k, b);
      source = k;
      k += b;
    }
    // Rayleigh-Ritz on the whole basis.
    Eigen::MatrixXd H = V.leftCols(k).transpose() * MV.leftCols(k);
    H = 0.5 * (H + H.transpose()).eval();
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> small(H);
    if (small.info() != Eigen::Success) detail::fail<Error>(where, "the projected eigenproblem failed");
    const Index keep = std::max(count + b, k / 2);
    const Eigen::MatrixXd S = small.eigenvectors().leftCols(keep);
    const Eigen::MatrixXd Y = V.leftCols(k) * S;
    const Eigen::MatrixXd MY = MV.leftCols(k) * S;
    const Eigen::VectorXd theta = small.eigenvalues().head(keep);
    const double scale = theta.head(count).cwiseAbs().maxCoeff();
    const Eigen::VectorXd residuals =
        (MY.leftCols(count) - Y.leftCols(count) * theta.head(count).asDiagonal()).colwise().norm().transpose();
    const bool converged = residuals.maxCoeff() <= options.tolerance * scale;
    if (converged || cycle >= options.max_restarts) {
      result.values = theta.head(count);
      result.vectors = Y.leftCols(count);
      result.residuals = residuals;
      result.converged = converged;
      result.restarts = cycle;
      return result;
    }
    // Thick restart: keep the `keep` smallest Ritz vectors, extend from the images of the b smallest.
    V.leftCols(keep) = Y;
    MV.leftCols(keep) = MY;
    k = keep;
    source = 0;
  }
}

/// The `count` algebraically smallest eigenpairs of the symmetric matrix M (its lower triangle is read), by
/// Eigen's dense `SelfAdjointEigenSolver` (tridiagonalization and implicit QR, O(n^3)): the reference the
/// iterative solver is tested against.
template <class = void>  // a template: compiled only in the units that call it (docs/getting-started.md, "Build time")
SymmetricEigenResult smallest_eigenpairs_dense(const Eigen::Ref<const Eigen::MatrixXd>& M, Index count) {
  constexpr const char* where = "smallest_eigenpairs_dense";
  if (M.rows() != M.cols()) detail::fail<ShapeError>(where, "M is [", M.rows(), " x ", M.cols(), "], expected square");
  if (count < 1 || count > M.rows()) {
    detail::fail<ValueError>(where, "count is ", count, ", expected 1 <= count <= n = ", M.rows());
  }
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(M);
  if (solver.info() != Eigen::Success) detail::fail<Error>(where, "the eigen-solver did not converge");
  SymmetricEigenResult result;
  result.values = solver.eigenvalues().head(count);
  result.vectors = solver.eigenvectors().leftCols(count);
  result.residuals =
      (M.selfadjointView<Eigen::Lower>() * result.vectors - result.vectors * result.values.asDiagonal())
          .colwise()
          .norm()
          .transpose();
  result.converged = true;
  return result;
}

}  // namespace lorakit

// Compiled once where core/eigen_instances.hpp is opted into (LORAKIT_EXTERN_EIGEN_DECOMPOSITIONS).
#ifdef LORAKIT_DECOMPOSITION_INSTANCE
namespace lorakit {
namespace detail {
LORAKIT_DECOMPOSITION_INSTANCE void orthogonalize_against<>(const Eigen::Ref<const Eigen::MatrixXd>&,
                                                            Eigen::Ref<Eigen::MatrixXd>);
LORAKIT_DECOMPOSITION_INSTANCE void orthonormalize_krylov_block<>(const Eigen::Ref<const Eigen::MatrixXd>&,
                                                                  Eigen::Ref<Eigen::MatrixXd>, Rng&);
}  // namespace detail
LORAKIT_DECOMPOSITION_INSTANCE SymmetricEigenResult
smallest_eigenpairs_dense<>(const Eigen::Ref<const Eigen::MatrixXd>&, Index);
}  // namespace lorakit
#endif
