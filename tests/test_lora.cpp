// adapter/lora.hpp: Lora<T> against dense math, central finite differences and PEFT's semantics.
#include <catch2/catch.hpp>

#include "adapter_test_support.hpp"
#include "test_support.hpp"

#include <lorakit/adapter/lora.hpp>

#include <Eigen/SVD>

#include <cmath>
#include <limits>
#include <vector>

namespace lorakit_test_lora {

using namespace lorakit;
using lorakit::testing::finite_difference_gradient;
using lorakit::testing::random_matrix;
using lorakit::testing::relative_error;

namespace {

LoraConfig config_with(Index rank, double alpha, std::uint64_t seed = 1) {
  LoraConfig c;
  c.rank = rank;
  c.alpha = alpha;
  c.seed = seed;
  return c;
}

/// A Lora with random (non-zero) A and B so every gradient path is exercised.
template <class T>
Lora<T> random_lora(Index in, Index out, Index rank, double alpha, double dropout = 0) {
  LoraConfig c = config_with(rank, alpha);
  c.dropout = dropout;
  Lora<T> lora(in, out, c);
  lora.A() = random_matrix<T>(rank, in, 11, 0.3);
  lora.B() = random_matrix<T>(out, rank, 12, 0.3);
  return lora;
}

/// s B A computed independently in double.
template <class T>
Matrix<double> dense_delta(const Lora<T>& lora) {
  return static_cast<double>(lora.scaling()) * lora.B().template cast<double>() * lora.A().template cast<double>();
}

/// The loss L = sum(G ⊙ y) of a forward from zero, in double: its gradient w.r.t. y is G.
template <class T>
double probe_loss(Lora<T>& lora, const Matrix<T>& x, const Matrix<T>& G) {
  Matrix<T> y = Matrix<T>::Zero(x.rows(), lora.out_features());
  lora.forward(x, y);
  return (y.template cast<double>().array() * G.template cast<double>().array()).sum();
}

}  // namespace

TEMPLATE_TEST_CASE("Lora initializations follow PEFT", "[lora]", float, double) {
  using T = TestType;
  const Index in = 400, out = 300, r = 16;
  LoraConfig c = config_with(r, 32, 5);
  Lora<T> kaiming(in, out, c);
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  CHECK(kaiming.A().cwiseAbs().maxCoeff() <= static_cast<T>(bound));
  CHECK(kaiming.B().isZero(0));
  const double var = kaiming.A().template cast<double>().array().square().mean();
  CHECK(var == Approx(bound * bound / 3).epsilon(0.05));  // U(-b, b) has variance b^2 / 3

  c.init = LoraInit::gaussian;
  Lora<T> gaussian(in, out, c);
  const double std_dev = std::sqrt(gaussian.A().template cast<double>().array().square().mean());
  CHECK(std_dev == Approx(1.0 / r).epsilon(0.05));
  CHECK(gaussian.B().isZero(0));

  c.init = LoraInit::zeros;
  CHECK(Lora<T>(in, out, c).A().isZero(0));

  // The same seed gives the same A; another seed another A.
  c.init = LoraInit::kaiming_uniform;
  CHECK(Lora<T>(in, out, c).A() == kaiming.A());
  c.seed = 6;
  CHECK(Lora<T>(in, out, c).A() != kaiming.A());
}

TEST_CASE("Lora scaling is alpha / r, or alpha / sqrt(r) with rsLoRA", "[lora]") {
  LoraConfig c = config_with(16, 8);
  CHECK(Lora<double>(64, 64, c).scaling() == 0.5);
  c.use_rslora = true;
  CHECK(Lora<double>(64, 64, c).scaling() == 2.0);
  CHECK(lora_scaling(8, 16, true) == 2.0);
}

TEMPLATE_TEST_CASE("Lora forward accumulates s x A^T B^T", "[lora]", float, double) {
  using T = TestType;
  auto lora = random_lora<T>(37, 23, 5, 7.0);
  const Matrix<T> x = random_matrix<T>(11, 37, 3);
  const Matrix<T> y0 = random_matrix<T>(11, 23, 4);
  Matrix<T> y = y0;
  lora.forward(x, y);
  const Matrix<double> expected = y0.template cast<double>() + x.template cast<double>() * dense_delta(lora).transpose();
  CHECK(relative_error(y.template cast<double>(), expected) < lorakit::testing::tolerance<T>() * 10);
}

TEMPLATE_TEST_CASE("Lora backward matches central finite differences", "[lora]", float, double) {
  using T = TestType;
  const Index in = 9, out = 7, r = 3, n = 5;
  auto lora = random_lora<double>(in, out, r, 6.0);
  Matrix<double> x = random_matrix<double>(n, in, 21);
  const Matrix<double> G = random_matrix<double>(n, out, 22);
  auto loss = [&] { return probe_loss(lora, x, G); };
  const Matrix<double> fd_A = finite_difference_gradient<double>(lora.A(), loss);
  const Matrix<double> fd_B = finite_difference_gradient<double>(lora.B(), loss);
  const Matrix<double> fd_x = finite_difference_gradient<double>(x, loss);

  // The analytic gradients, computed in T.
  LoraConfig c = lora.config();
  Lora<T> typed = Lora<T>::from_factors(lora.A().template cast<T>(), lora.B().template cast<T>(), c);
  const Matrix<T> xt = x.template cast<T>(), Gt = G.template cast<T>();
  Matrix<T> y = Matrix<T>::Zero(n, out);
  const Matrix<T> dx0 = random_matrix<T>(n, in, 23);
  Matrix<T> dx = dx0;
  typed.forward(xt, y);
  typed.backward(xt, Gt, dx);
  const double tol = std::is_same_v<T, float> ? 1e-4 : 1e-7;
  CHECK(relative_error(typed.grad_A().template cast<double>(), fd_A) < tol);
  CHECK(relative_error(typed.grad_B().template cast<double>(), fd_B) < tol);
  CHECK(relative_error((dx - dx0).template cast<double>(), fd_x) < tol);  // dx is accumulated into

  // Gradients accumulate over calls until zero_grad; the overload without dx gives the same grads.
  const Matrix<T> once_A = typed.grad_A(), once_B = typed.grad_B();
  typed.forward(xt, y);
  typed.backward(xt, Gt);
  CHECK(relative_error(typed.grad_A(), Matrix<T>(2 * once_A)) < 1e-6);
  CHECK(relative_error(typed.grad_B(), Matrix<T>(2 * once_B)) < 1e-6);
  typed.zero_grad();
  CHECK(typed.grad_A().isZero(0));
  CHECK(typed.grad_B().isZero(0));
}

TEMPLATE_TEST_CASE("Lora dropout is inverted dropout on the branch input, off in evaluation", "[lora]", float, double) {
  using T = TestType;
  const Index in = 40, out = 30, r = 4, n = 50;
  auto lora = random_lora<T>(in, out, r, 4.0, 0.3);
  const Matrix<T> x = random_matrix<T>(n, in, 31), G = random_matrix<T>(n, out, 32);
  Matrix<T> y = Matrix<T>::Zero(n, out), dx = Matrix<T>::Zero(n, in);
  lora.forward(x, y);
  const Matrix<T> mask = lora.dropout_mask();
  REQUIRE(mask.rows() == n);
  CHECK((mask.array() == T(0) || mask.array() == static_cast<T>(1 / 0.7)).all());
  const double kept = static_cast<double>((mask.array() != T(0)).count()) / static_cast<double>(mask.size());
  CHECK(std::abs(kept - 0.7) < 0.05);

  // Dense truth with the mask as a constant: y = s (x ⊙ M) A^T B^T; grads through x ⊙ M.
  const Matrix<double> xd = x.template cast<double>().cwiseProduct(mask.template cast<double>());
  const Matrix<double> A = lora.A().template cast<double>(), B = lora.B().template cast<double>();
  const double s = lora.scaling();
  const Matrix<double> Gd = G.template cast<double>();
  CHECK(relative_error(y.template cast<double>(), Matrix<double>(xd * dense_delta(lora).transpose())) <
        lorakit::testing::tolerance<T>() * 10);
  lora.backward(x, G, dx);
  const Matrix<double> gA = s * (Gd * B).transpose() * xd;
  const Matrix<double> gB = s * Gd.transpose() * (xd * A.transpose());
  const Matrix<double> gx = (s * Gd * B * A).cwiseProduct(mask.template cast<double>());
  const double tol = lorakit::testing::tolerance<T>() * 10;
  CHECK(relative_error(lora.grad_A().template cast<double>(), gA) < tol);
  CHECK(relative_error(lora.grad_B().template cast<double>(), gB) < tol);
  CHECK(relative_error(dx.template cast<double>(), gx) < tol);

  // A new step draws a new mask; an adapter with the same seed draws the same masks.
  lora.forward(x, y);
  CHECK(lora.dropout_mask() != mask);
  auto twin = random_lora<T>(in, out, r, 4.0, 0.3);
  twin.forward(x, y);
  CHECK(twin.dropout_mask() == mask);

  // Evaluation mode: no dropout.
  lora.set_training(false);
  Matrix<T> y_eval = Matrix<T>::Zero(n, out);
  lora.forward(x, y_eval);
  CHECK(relative_error(y_eval.template cast<double>(), Matrix<double>(x.template cast<double>() * dense_delta(lora).transpose())) <
        tol);
}

TEMPLATE_TEST_CASE("Lora merge and unmerge add and remove s B A", "[lora]", float, double) {
  using T = TestType;
  auto lora = random_lora<T>(20, 15, 4, 8.0);
  const Matrix<T> W0 = random_matrix<T>(15, 20, 41);
  Matrix<T> W = W0;
  lora.merge_into(W);
  CHECK(relative_error(W.template cast<double>(), Matrix<double>(W0.template cast<double>() + dense_delta(lora))) <
        lorakit::testing::tolerance<T>() * 10);
  CHECK(relative_error(lora.delta_weight().template cast<double>(), dense_delta(lora)) < lorakit::testing::tolerance<T>() * 10);
  lora.unmerge_from(W);
  CHECK(relative_error(W, W0) < lorakit::testing::tolerance<T>() * 10);

  // A result that is not finite is refused and W stays as it was.
  Matrix<T> huge = W0;
  huge(3, 4) = std::numeric_limits<T>::max();
  const T big = std::sqrt(std::numeric_limits<T>::max());  // s B A overflows to inf
  lora.B().setConstant(big);
  lora.A().setConstant(big);
  const Matrix<T> before = huge;
  CHECK_THROWS_AS(lora.merge_into(huge), ValueError);
  CHECK(huge == before);
  CHECK_THROWS_WITH(lora.unmerge_from(huge), Catch::Contains("Lora::unmerge_from") && Catch::Contains("W is left unchanged"));
  Matrix<T> wrong(20, 15);
  CHECK_THROWS_WITH(lora.merge_into(wrong), "Lora::merge_into: W is [20 x 15], expected [15 x 20]");
}

TEST_CASE("Lora rejects bad configurations and inputs with clear errors", "[lora]") {
  CHECK_THROWS_WITH(Lora<float>(64, 32, config_with(0, 8)),
                    "Lora::Lora: rank is 0, expected >= 1");
  CHECK_THROWS_WITH(Lora<float>(64, 32, config_with(4, 1e40)),
                    "Lora::Lora: alpha is 1e+40: the scaling alpha / r overflows the scalar type");
  CHECK_NOTHROW(Lora<double>(64, 32, config_with(4, 1e40)));
  CHECK_THROWS_WITH(Lora<float>(0, 32, config_with(1, 8)), "Lora::Lora: in_features is 0, expected >= 1");
  CHECK_THROWS_WITH(Lora<float>(64, 32, config_with(4, std::nan(""))), Catch::Contains("alpha is nan"));
  LoraConfig c = config_with(4, 8);
  c.dropout = 1.0;
  CHECK_THROWS_WITH(Lora<float>(64, 32, c), "Lora::Lora: dropout is 1, expected 0 <= dropout < 1");

  Lora<float> lora(256, 128, config_with(8, 8));
  Matrix<float> x(4, 300), y(4, 128), good_x = Matrix<float>::Ones(4, 256);
  CHECK_THROWS_WITH(lora.forward(x, y), "Lora::forward: x has 300 columns, expected in_features = 256");
  Matrix<float> bad_y(4, 100);
  CHECK_THROWS_WITH(lora.forward(good_x, bad_y), "Lora::forward: y is [4 x 100], expected [4 x 128]");
  Matrix<float> empty(0, 256), empty_y(0, 128);
  CHECK_THROWS_WITH(lora.forward(empty, empty_y), Catch::Contains("x has 0 rows"));

  // Backward before any forward, or on another batch, is a StateError.
  Matrix<float> dy = Matrix<float>::Ones(4, 128);
  CHECK_THROWS_AS(lora.backward(good_x, dy), StateError);

  // NaN or Inf in x is found (naming the entry) before y is written.
  Matrix<float> nan_x = good_x;
  nan_x(2, 17) = std::numeric_limits<float>::infinity();
  y.setConstant(5.0f);
  CHECK_THROWS_WITH(lora.forward(nan_x, y), "Lora::forward: x[2, 17] is inf, expected a finite value");
  CHECK((y.array() == 5.0f).all());
  lora.forward(good_x, y);
  Matrix<float> nan_dy = dy;
  nan_dy(1, 3) = std::nanf("");
  const Matrix<float> grad_before = lora.grad_A();
  CHECK_THROWS_WITH(lora.backward(good_x, nan_dy), Catch::Contains("Lora::backward: dy[1, 3] is nan"));
  CHECK(lora.grad_A() == grad_before);
  Matrix<float> wrong_dy(4, 127);
  CHECK_THROWS_WITH(lora.backward(good_x, wrong_dy), "Lora::backward: dy is [4 x 127], expected [4 x 128]");
}

TEMPLATE_TEST_CASE("Lora parameters are views of A and B and their gradients", "[lora]", float, double) {
  using T = TestType;
  Lora<T> lora(30, 20, config_with(6, 6));
  CHECK(lora.num_parameters() == 6 * (30 + 20));
  auto params = lora.parameters();
  REQUIRE(params.size() == 2);
  CHECK(params[0].name == "A");
  CHECK(params[1].name == "B");
  CHECK(params[0].value.size() == 6 * 30);
  CHECK(params[1].grad.size() == 20 * 6);
  params[0].value[7] = T(3);  // row-major: entry (0, 7)
  CHECK(lora.A()(0, 7) == T(3));
  params[1].value[6 * 2 + 1] = T(-2);  // B(2, 1)
  CHECK(lora.B()(2, 1) == T(-2));
  CHECK(params[0].grad.data() == lora.grad_A().data());
}

TEMPLATE_TEST_CASE("Lora works on Eigen::Map views of caller memory without copies", "[lora]", float, double) {
  using T = TestType;
  auto lora = random_lora<T>(16, 12, 3, 3.0);
  const Index n = 6;
  std::vector<T> x_buffer(static_cast<std::size_t>(n * 16)), y_buffer(static_cast<std::size_t>(n * 12), T(0));
  for (std::size_t i = 0; i < x_buffer.size(); ++i) x_buffer[i] = static_cast<T>(std::sin(0.37 * static_cast<double>(i)));
  Eigen::Map<const Matrix<T>> x(x_buffer.data(), n, 16);
  Eigen::Map<Matrix<T>> y(y_buffer.data(), n, 12);
  lora.forward(x, y);
  const Matrix<T> x_copy = x;
  Matrix<T> y_copy = Matrix<T>::Zero(n, 12);
  auto twin = lora;
  twin.forward(x_copy, y_copy);
  CHECK(Matrix<T>(y) == y_copy);
  CHECK(y.data() == y_buffer.data());

  // A block of rows of a larger matrix is accepted as it is (Ref with an outer stride).
  const Matrix<T> big = random_matrix<T>(20, 16, 51);
  Matrix<T> y_block = Matrix<T>::Zero(4, 12), y_dense = Matrix<T>::Zero(4, 12);
  lora.forward(big.middleRows(3, 4), y_block);
  twin.forward(Matrix<T>(big.middleRows(3, 4)), y_dense);
  CHECK(y_block == y_dense);
}

TEST_CASE("Lora::from_factors takes A and B as given", "[lora]") {
  const Matrix<double> A = random_matrix<double>(3, 10, 1), B = random_matrix<double>(8, 3, 2);
  auto lora = Lora<double>::from_factors(A, B, config_with(3, 6));
  CHECK(lora.A() == A);
  CHECK(lora.B() == B);
  CHECK(lora.in_features() == 10);
  CHECK(lora.out_features() == 8);
  CHECK_THROWS_WITH(Lora<double>::from_factors(A, B, config_with(4, 6)),
                    "Lora::from_factors: A has 3 rows, expected config.rank = 4");
}

TEMPLATE_TEST_CASE("Lora accepts a rank above min(in, out), as PEFT does", "[lora]", float, double) {
  using T = TestType;
  Lora<T> lora(6, 4, config_with(9, 9));  // r = 9 > min(6, 4)
  lora.B() = testing::random_matrix<T>(4, 9, 3);
  CHECK(lora.rank() == 9);
  const Matrix<T> delta = lora.delta_weight();
  CHECK(delta.rows() == 4);
  CHECK(delta.cols() == 6);
  CHECK(testing::relative_error(delta, Matrix<T>(lora.B() * lora.A())) < 1e-6);  // s = 9 / 9
  Eigen::JacobiSVD<Eigen::MatrixXd> svd(delta.template cast<double>());
  CHECK(svd.singularValues()(3) > 0);  // full rank min(in, out) = 4, never more
}

TEMPLATE_TEST_CASE("A refused Lora call changes nothing (weights, gradients, workspaces, dropout stream)", "[lora]",
                   float, double) {
  using T = TestType;
  LoraConfig c = config_with(3, 6);
  c.dropout = 0.25;
  c.seed = 9;
  Lora<T> lora(12, 7, c);
  lora.B() = testing::random_matrix<T>(7, 3, 4);
  testing::check_refused_calls_change_nothing(lora, testing::random_matrix<T>(5, 12, 5),
                                              testing::random_matrix<T>(5, 7, 6));
  Lora<T> plain(12, 7, config_with(3, 6));
  plain.B() = testing::random_matrix<T>(7, 3, 4);
  testing::check_refused_calls_change_nothing(plain, testing::random_matrix<T>(5, 12, 5),
                                              testing::random_matrix<T>(5, 7, 6));
}

}  // namespace lorakit_test_lora
