// Helpers shared by the kernel tests: matrices of known spectrum, orthonormality, and the reference SVD (BDCSVD).
#pragma once

#include "test_support.hpp"

#include <lorakit/kernel/svd.hpp>

#include <Eigen/Dense>

#include <functional>

namespace lorakit::testing {

using MatrixXdc = Eigen::MatrixXd;

/// [rows x cols] with orthonormal columns (rows >= cols), from the QR of a Gaussian matrix.
inline Eigen::MatrixXd random_orthonormal(Index rows, Index cols, std::uint64_t seed) {
  const Eigen::MatrixXd g = random_matrix<double>(rows, cols, seed);
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(g);
  return qr.householderQ() * Eigen::MatrixXd::Identity(rows, cols);
}

/// U diag(s) V^T with random orthonormal U [m x p], V [n x p], p = min(m, n), s_i = spectrum(i) for i = 1..p.
inline Matrix<double> matrix_with_spectrum(Index m, Index n, const std::function<double(Index)>& spectrum,
                                           std::uint64_t seed, Eigen::VectorXd* singular_values = nullptr) {
  const Index p = std::min(m, n);
  Eigen::VectorXd s(p);
  for (Index i = 0; i < p; ++i) s(i) = spectrum(i + 1);
  if (singular_values) *singular_values = s;
  return random_orthonormal(m, p, seed) * s.asDiagonal() * random_orthonormal(n, p, seed + 1).transpose();
}

/// max |Q^T Q - I| over the entries (Q's columns should be orthonormal).
template <class Derived>
double orthonormality_error(const Eigen::MatrixBase<Derived>& q) {
  const Eigen::MatrixXd wide = q.template cast<double>();
  return (wide.transpose() * wide - Eigen::MatrixXd::Identity(q.cols(), q.cols())).cwiseAbs().maxCoeff();
}

/// ||a - U diag(S) V^T||_F in double.
template <class T>
double reconstruction_error(const Matrix<double>& a, const Svd<T>& svd) {
  const Eigen::MatrixXd u = svd.U.template cast<double>(), v = svd.V.template cast<double>();
  const Eigen::VectorXd s = svd.S.template cast<double>();
  return (a - u * s.asDiagonal() * v.transpose()).norm();
}

/// The reference: the leading k triplets of BDCSVD of a, with lorakit's sign convention.
inline Svd<double> reference_svd(const Eigen::MatrixXd& a, Index k) {
  Eigen::BDCSVD<Eigen::MatrixXd> svd(a, Eigen::ComputeThinU | Eigen::ComputeThinV);
  return detail::make_svd<double>(svd.matrixU(), svd.singularValues(), svd.matrixV(), k);
}

/// Distance between the column spaces of two matrices with orthonormal columns: ||P_a - P_b||_max.
template <class DA, class DB>
double subspace_distance(const Eigen::MatrixBase<DA>& a, const Eigen::MatrixBase<DB>& b) {
  const Eigen::MatrixXd x = a.template cast<double>(), y = b.template cast<double>();
  return (x * x.transpose() - y * y.transpose()).cwiseAbs().maxCoeff();
}

}  // namespace lorakit::testing
