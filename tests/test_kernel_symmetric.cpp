// kernel/symmetric_products.hpp: the blocked Gram matrix and Cholesky inverse against Eigen's plain products and
// LLT solves, across the block boundaries (1, 127, 128, 129 and several blocks).
#include <catch2/catch.hpp>

#include "kernel_test_support.hpp"

#include <lorakit/kernel/symmetric_products.hpp>

namespace lorakit_test_kernel_symmetric {

using namespace lorakit;
using namespace lorakit::testing;

namespace {

/// An SPD matrix with eigenvalues spread over [1, condition], from random orthonormal vectors.
Eigen::MatrixXd spd_matrix(Index n, double condition, std::uint64_t seed) {
  const Eigen::MatrixXd q = random_orthonormal(n, n, seed);
  Eigen::VectorXd values(n);
  for (Index i = 0; i < n; ++i) values(i) = std::pow(condition, n > 1 ? static_cast<double>(i) / (n - 1) : 0.0);
  Eigen::MatrixXd z = q * values.asDiagonal() * q.transpose();
  return (z + z.transpose()) / 2;
}

}  // namespace

TEMPLATE_TEST_CASE("gram_of_rows is M M^T, exactly symmetric, across block boundaries", "[kernel][symmetric]", float,
                   double) {
  using T = TestType;
  using Dense = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
  for (const Index m : {1, 5, 127, 128, 129, 300, 700}) {
    CAPTURE(m);
    const Matrix<T> M = random_matrix<T>(m, 37, 100 + static_cast<std::uint64_t>(m));
    Dense G;
    gram_of_rows(M, G);
    const Dense expected = M * M.transpose();
    CHECK(G.rows() == m);
    CHECK(G.cols() == m);
    CHECK(relative_error(G, expected) < 10 * tolerance<T>());
    CHECK(G == G.transpose());
    // The Gram matrix of the columns, through a transposed expression.
    Dense C;
    gram_of_rows(M.transpose(), C);
    CHECK(relative_error(C, Dense(M.transpose() * M)) < 10 * tolerance<T>());
  }
}

TEST_CASE("lower_triangular_inverse inverts L and is lower triangular", "[kernel][symmetric]") {
  for (const Index n : {1, 2, 127, 129, 300}) {
    CAPTURE(n);
    const Eigen::LLT<Eigen::MatrixXd> llt(spd_matrix(n, 1e4, 7));
    const Eigen::MatrixXd L = llt.matrixL();
    const Eigen::MatrixXd X = lower_triangular_inverse<double>(L);
    CHECK((L * X - Eigen::MatrixXd::Identity(n, n)).cwiseAbs().maxCoeff() < 1e-11);
    CHECK(X.triangularView<Eigen::StrictlyUpper>().toDenseMatrix().isZero(0));
    // Only the lower triangle of the argument is read.
    Eigen::MatrixXd noisy = L;
    noisy.triangularView<Eigen::StrictlyUpper>().setConstant(std::nan(""));
    CHECK(lower_triangular_inverse<double>(noisy) == X);
  }
}

TEMPLATE_TEST_CASE("cholesky_inverse equals LLT::solve(Identity) and is exactly symmetric", "[kernel][symmetric]", float,
                   double) {
  using T = TestType;
  using Dense = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
  const double condition = std::is_same_v<T, float> ? 1e2 : 1e6;
  for (const Index n : {1, 3, 128, 129, 400}) {
    CAPTURE(n);
    const Dense z = spd_matrix(n, condition, 11 + static_cast<std::uint64_t>(n)).cast<T>();
    const Eigen::LLT<Dense> llt(z);
    REQUIRE(llt.info() == Eigen::Success);
    const Dense inverse = cholesky_inverse<T>(llt);
    const Dense expected = llt.solve(Dense::Identity(n, n));
    CHECK(relative_error(inverse, expected) < condition * 10 * tolerance<T>());
    CHECK(inverse == inverse.transpose());
    CHECK((z.template cast<double>() * inverse.template cast<double>() - Eigen::MatrixXd::Identity(n, n))
              .cwiseAbs()
              .maxCoeff() < condition * 100 * tolerance<T>());
  }
}

}  // namespace lorakit_test_kernel_symmetric
