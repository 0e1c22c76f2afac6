// init/pissa.hpp: PiSSA and OLoRA against Eigen's BDCSVD and HouseholderQR of W, the unchanged layer output at step
// 0, PEFT's conversion back to a plain LoRA on the original weight, and errors that change nothing.
#include <catch2/catch.hpp>

#include "test_support.hpp"

#include <lorakit/init/pissa.hpp>

#include <Eigen/QR>
#include <Eigen/SVD>

namespace lorakit_test_pissa {

using namespace lorakit;
using lorakit::testing::random_matrix;
using lorakit::testing::relative_error;

namespace {

LoraConfig rank_config(Index rank, double alpha, bool rslora = false) {
  LoraConfig c;
  c.rank = rank;
  c.alpha = alpha;
  c.use_rslora = rslora;
  return c;
}

/// A [m x n] matrix with singular values 10, 10/2, 10/4, ... (a clear gap after every index).
Eigen::MatrixXd decaying(Index m, Index n, std::uint64_t seed) {
  const Eigen::HouseholderQR<Eigen::MatrixXd> qu(random_matrix<double>(m, m, seed));
  const Eigen::HouseholderQR<Eigen::MatrixXd> qv(random_matrix<double>(n, n, seed + 1));
  const Index k = std::min(m, n);
  Eigen::VectorXd s(k);
  for (Index j = 0; j < k; ++j) s(j) = 10.0 / std::pow(2.0, static_cast<double>(j));
  const Eigen::MatrixXd U = qu.householderQ() * Eigen::MatrixXd::Identity(m, k);
  const Eigen::MatrixXd V = qv.householderQ() * Eigen::MatrixXd::Identity(n, k);
  return U * s.asDiagonal() * V.transpose();
}

}  // namespace

TEMPLATE_TEST_CASE("PiSSA puts W's top-r singular triplets into A and B as PEFT splits them", "[pissa]", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
  const Index out = 12, in = 9, r = 3;
  const Eigen::MatrixXd original = decaying(out, in, 7);
  Matrix<T> W = original.cast<T>();
  const Matrix<T> W_before = W;
  Lora<T> lora(in, out, rank_config(r, 6));  // s = 2
  const auto views = lora.parameters();
  pissa_initialize(lora, W);
  CHECK(views[0].value.data() == lora.A().data());

  // Independent truth: Eigen's BDCSVD of W in double.
  const Eigen::BDCSVD<Eigen::MatrixXd> svd(W_before.template cast<double>(), Eigen::ComputeThinU | Eigen::ComputeThinV);
  const double s = 2.0;
  const Eigen::MatrixXd A = lora.A().template cast<double>(), B = lora.B().template cast<double>();
  for (Index j = 0; j < r; ++j) {
    const double root = std::sqrt(svd.singularValues()(j) / s);
    CHECK(std::abs(A.row(j).norm() - root) < tol * 10 * root);  // rows of A: sqrt(S/s) V_r^T
    CHECK(std::abs(B.col(j).norm() - root) < tol * 10 * root);
    CHECK(std::abs(std::abs(A.row(j).dot(svd.matrixV().col(j))) - root) < tol * 10 * root);  // up to sign
  }
  // s B A is W's best rank-r approximation, and W is now the residual: the sum is unchanged.
  const Eigen::MatrixXd best = svd.matrixU().leftCols(r) * svd.singularValues().head(r).asDiagonal() *
                               svd.matrixV().leftCols(r).transpose();
  CHECK(relative_error(Eigen::MatrixXd(s * B * A), best) < tol * 10);
  CHECK(relative_error(Eigen::MatrixXd(W.template cast<double>() + s * B * A), W_before.template cast<double>()) < tol);
  const Eigen::BDCSVD<Eigen::MatrixXd> rest(W.template cast<double>());
  CHECK(std::abs(rest.singularValues()(0) - svd.singularValues()(r)) < tol * 100);

  // The layer's output is unchanged at step 0.
  const Matrix<T> x = random_matrix<T>(5, in, 3);
  Matrix<T> y = x * W.transpose();
  lora.set_training(false);
  lora.forward(x, y);
  const Matrix<T> y_before = x * W_before.transpose();
  CHECK(relative_error(y.template cast<double>(), y_before.template cast<double>()) < tol * 10);
}

TEST_CASE("PiSSA with pissa_niter_N approaches the exact split on a decaying spectrum", "[pissa]") {
  const Eigen::MatrixXd original = decaying(40, 30, 11);
  Matrix<double> W_exact = original, W_fast = original;
  Lora<double> exact(30, 40, rank_config(4, 4)), fast(30, 40, rank_config(4, 4));
  pissa_initialize(exact, W_exact);
  pissa_initialize(fast, W_fast, 4);
  // The updates agree (singular vectors may differ in sign, the products do not); a gap of 2 per index and
  // 4 power iterations leave an error of about 2^-9 relative to the next singular value.
  CHECK(relative_error(fast.delta_weight(), exact.delta_weight()) < 1e-2);
  CHECK(relative_error(Matrix<double>(W_fast + fast.delta_weight()), original) < 1e-12);
}

TEMPLATE_TEST_CASE("OLoRA: B and A are the leading columns of Q and rows of R in W = Q R", "[olora]", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
  const Index out = 10, in = 14, r = 4;
  Matrix<T> W = random_matrix<T>(out, in, 21);
  const Matrix<T> W_before = W;
  Lora<T> lora(in, out, rank_config(r, 8, true));  // rsLoRA: s = 8 / 2 = 4
  olora_initialize(lora, W);
  const Eigen::HouseholderQR<Eigen::MatrixXd> qr(W_before.template cast<double>());
  const Eigen::MatrixXd Q = qr.householderQ() * Eigen::MatrixXd::Identity(out, r);
  const Eigen::MatrixXd R = qr.matrixQR().template triangularView<Eigen::Upper>();
  CHECK(relative_error(Eigen::MatrixXd(lora.B().template cast<double>()), Q) < tol);
  CHECK(relative_error(Eigen::MatrixXd(lora.A().template cast<double>()), Eigen::MatrixXd(R.topRows(r))) < tol);
  const Eigen::MatrixXd BtB = lora.B().template cast<double>().transpose() * lora.B().template cast<double>();
  CHECK((BtB - Eigen::MatrixXd::Identity(r, r)).cwiseAbs().maxCoeff() < tol * 10);
  for (Index i = 0; i < r; ++i)
    for (Index j = 0; j < i; ++j) CHECK(lora.A()(i, j) == T(0));  // upper trapezoidal
  const Eigen::MatrixXd sum = W.template cast<double>() + 4.0 * lora.B().template cast<double>() *
                                                              lora.A().template cast<double>();
  CHECK(relative_error(sum, Eigen::MatrixXd(W_before.template cast<double>())) < tol);
}

TEMPLATE_TEST_CASE("pissa_to_lora gives a rank-2r LoRA on the original W, and compressed the best rank-r one", "[pissa]",
                   float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 1e-4 : 1e-11;
  for (bool rslora : {false, true}) {
    const Eigen::MatrixXd original = decaying(16, 12, 31);
    Matrix<T> W = original.cast<T>();
    Lora<T> lora(12, 16, rank_config(3, 12, rslora));
    pissa_initialize(lora, W);
    const Lora<T> initial = lora;
    lora.A() += random_matrix<T>(3, 12, 41, 0.1);  // "training"
    lora.B() += random_matrix<T>(16, 3, 42, 0.1);

    const Lora<T> plain = pissa_to_lora(lora, initial);
    CHECK(plain.rank() == 6);
    CHECK(static_cast<double>(plain.scaling()) == Approx(static_cast<double>(lora.scaling())));
    CHECK(plain.config().alpha == Approx(rslora ? 12 * std::sqrt(2.0) : 24.0));
    // W_original + the plain LoRA's update = the residual + the trained adapter's update.
    const Eigen::MatrixXd lhs = original + plain.delta_weight().template cast<double>();
    const Eigen::MatrixXd rhs = W.template cast<double>() + lora.delta_weight().template cast<double>();
    CHECK(relative_error(lhs, rhs) < tol);

    const CompressedLora<T> small = pissa_to_lora(lora, initial, 3);
    CHECK(small.adapter.rank() == 3);
    const Eigen::BDCSVD<Eigen::MatrixXd> svd(plain.delta_weight().template cast<double>());
    const Eigen::VectorXd sq = svd.singularValues().array().square();
    CHECK(small.kept_energy == Approx(sq.head(3).sum() / sq.sum()).epsilon(1e-4));
    const Eigen::MatrixXd error = plain.delta_weight().template cast<double>() -
                                  small.adapter.delta_weight().template cast<double>();
    CHECK(error.norm() == Approx(std::sqrt(sq.tail(sq.size() - 3).sum())).epsilon(1e-3).margin(1e-6));
  }
}

TEST_CASE("PiSSA and OLoRA refuse bad input and change nothing", "[pissa][olora]") {
  Matrix<double> W = random_matrix<double>(6, 5, 1);
  const Matrix<double> W_before = W;
  Lora<double> lora(5, 6, rank_config(2, 2));
  const Matrix<double> A_before = lora.A();
  Matrix<double> wrong = random_matrix<double>(5, 6, 2);
  CHECK_THROWS_WITH(pissa_initialize(lora, wrong), "pissa_initialize: W is [5 x 6], expected [6 x 5]");
  Matrix<double> nan_W = W;
  nan_W(1, 2) = std::nan("");
  CHECK_THROWS_WITH(olora_initialize(lora, nan_W), Catch::Contains("olora_initialize: W[1, 2] is nan"));
  CHECK_THROWS_WITH(pissa_initialize(lora, W, -2), Catch::Contains("power_iterations is -2"));
  Lora<double> too_wide(5, 6, rank_config(6, 6));
  CHECK_THROWS_WITH(pissa_initialize(too_wide, W), Catch::Contains("rank is 6, expected at most min(in, out) = 5"));
  Lora<double> negative(5, 6, rank_config(2, -2));
  CHECK_THROWS_WITH(olora_initialize(negative, W), Catch::Contains("scaling is -1, expected > 0"));
  CHECK(W == W_before);
  CHECK(lora.A() == A_before);
  CHECK(lora.B().isZero(0));
  Lora<double> other(5, 6, rank_config(3, 2));
  CHECK_THROWS_AS(pissa_to_lora(lora, other), ValueError);
  CHECK_THROWS_AS(pissa_to_lora(lora, lora, 5), ValueError);
}

}  // namespace lorakit_test_pissa
