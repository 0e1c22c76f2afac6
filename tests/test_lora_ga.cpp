// init/lora_ga.hpp: LoRA-GA's factors against Eigen's BDCSVD of the gradient in PEFT's and the reference form, every
// direction and scale, the unchanged layer output at step 0, the paper's claim (the first LoRA step is the full
// fine-tuning step on a planted rank-2r gradient) and the closed form of that step, the gradient accumulator, and
// errors that change nothing.
#include <catch2/catch.hpp>

#include "test_support.hpp"

#include <lorakit/init/lora_ga.hpp>

#include <Eigen/QR>
#include <Eigen/SVD>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

namespace lorakit_test_lora_ga {

using namespace lorakit;
using lorakit::testing::random_matrix;
using lorakit::testing::relative_error;

namespace {

LoraConfig rank_config(Index rank, double alpha) {
  LoraConfig c;
  c.rank = rank;
  c.alpha = alpha;
  return c;
}

/// A [m x n] matrix U diag(s) V^T with random orthonormal U, V and the given singular values (a planted spectrum).
Eigen::MatrixXd planted(Index m, Index n, const Eigen::VectorXd& s, std::uint64_t seed) {
  const Eigen::HouseholderQR<Eigen::MatrixXd> qu(random_matrix<double>(m, m, seed));
  const Eigen::HouseholderQR<Eigen::MatrixXd> qv(random_matrix<double>(n, n, seed + 1));
  const Index k = s.size();
  const Eigen::MatrixXd U = qu.householderQ() * Eigen::MatrixXd::Identity(m, k);
  const Eigen::MatrixXd V = qv.householderQ() * Eigen::MatrixXd::Identity(n, k);
  return U * s.asDiagonal() * V.transpose();
}

/// Singular values 8, 8/1.5, 8/1.5^2, ... (distinct, a gap at every index), k of them.
Eigen::VectorXd decaying_values(Index k) {
  Eigen::VectorXd s(k);
  for (Index j = 0; j < k; ++j) s(j) = 8.0 / std::pow(1.5, static_cast<double>(j));
  return s;
}

/// ||got - (+-want)|| / ||want||, with the sign that fits (singular vectors are defined up to sign).
double error_up_to_sign(const Eigen::VectorXd& got, const Eigen::VectorXd& want) {
  return std::min((got - want).norm(), (got + want).norm()) / want.norm();
}

/// A's rows and B's columns against G's singular triplets (BDCSVD): A.row(j) = a_factor V_a(j)^T and
/// B.col(j) = b_factor U_b(j) (times S_b(j) in PEFT's form), each up to sign.
void check_factors(const Eigen::MatrixXd& A, const Eigen::MatrixXd& B, const Eigen::MatrixXd& G,
                   const LoraGaReport& report, bool peft, double tol) {
  const Eigen::BDCSVD<Eigen::MatrixXd> svd(G, Eigen::ComputeThinU | Eigen::ComputeThinV);
  const Index r = A.rows();
  REQUIRE(report.singular_values.size() == 2 * r);
  CHECK(relative_error(report.singular_values, Eigen::VectorXd(svd.singularValues().head(2 * r))) < tol);
  for (Index j = 0; j < r; ++j) {
    const Index a = report.a_indices[static_cast<std::size_t>(j)], b = report.b_indices[static_cast<std::size_t>(j)];
    INFO("factor " << j << ": A from triplet " << a << ", B from triplet " << b);
    const Eigen::VectorXd a_want = report.a_factor * svd.matrixV().col(a);
    const double b_scale = report.b_factor * (peft ? svd.singularValues()(b) : 1.0);
    const Eigen::VectorXd b_want = b_scale * svd.matrixU().col(b);
    CHECK(error_up_to_sign(A.row(j).transpose(), a_want) < tol);
    CHECK(error_up_to_sign(B.col(j), b_want) < tol);
  }
}

}  // namespace

TEMPLATE_TEST_CASE("LoRA-GA in PEFT's form: A from G's top r right singular vectors, B from the next r times S",
                   "[lora_ga]", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 1e-4 : 1e-10;
  const Index out = 12, in = 10, r = 3;
  const Eigen::MatrixXd G = planted(out, in, decaying_values(in), 5);
  const Eigen::MatrixXd W0 = random_matrix<double>(out, in, 6);
  const double s = 2.0;  // alpha 6, rank 3
  const double zeta = std::pow(static_cast<double>(out), 0.25) / std::sqrt(16.0);
  const double sigma1 = Eigen::BDCSVD<Eigen::MatrixXd>(W0).singularValues()(0);
  const double S_r = Eigen::BDCSVD<Eigen::MatrixXd>(G).singularValues()(r);

  struct Case {
    LoraGaScale scale;
    double a_factor, b_factor;
  };
  for (const Case c : {Case{LoraGaScale::stable, 1.0, zeta}, Case{LoraGaScale::unit, 1.0, 1.0},
                       Case{LoraGaScale::gd, 1 / s, 1 / s}, Case{LoraGaScale::weight_svd, 1.0, sigma1 / S_r}}) {
    INFO("scale " << static_cast<int>(c.scale));
    Matrix<T> W = W0.cast<T>();
    Lora<T> lora(in, out, rank_config(r, 6));
    const auto views = lora.parameters();
    LoraGaConfig config;
    config.scale = c.scale;
    const LoraGaReport report = lora_ga_initialize(lora, W, G, config);
    CHECK(views[0].value.data() == lora.A().data());  // written in place
    CHECK(report.a_indices == std::vector<Index>{0, 1, 2});
    CHECK(report.b_indices == std::vector<Index>{3, 4, 5});
    CHECK(report.a_factor == Approx(c.a_factor).epsilon(tol));  // sigma_1(W) of W in T
    CHECK(report.b_factor == Approx(c.b_factor).epsilon(tol));
    const Eigen::MatrixXd A = lora.A().template cast<double>(), B = lora.B().template cast<double>();
    check_factors(A, B, G, report, true, tol);

    // W moved by -s B A: the sum, and so the layer's output, is unchanged at step 0.
    CHECK(relative_error(Eigen::MatrixXd(W.template cast<double>() + s * B * A), W0) < tol);
    const Matrix<T> x = random_matrix<T>(5, in, 3);
    Matrix<T> y = x * W.transpose();
    lora.set_training(false);
    lora.forward(x, y);
    const Eigen::MatrixXd y_before = x.template cast<double>() * W0.transpose();
    CHECK(relative_error(y.template cast<double>(), y_before) < tol);
  }
}

TEST_CASE("LoRA-GA's directions give A and B the triplets PEFT and the reference give them", "[lora_ga]") {
  const Index out = 9, in = 11, r = 4;
  const Eigen::MatrixXd G = planted(out, in, decaying_values(out), 8);
  const Eigen::MatrixXd W0 = random_matrix<double>(out, in, 9);
  struct Case {
    LoraGaDirection direction;
    std::vector<Index> a, b;
  };
  for (const LoraGaVariant variant : {LoraGaVariant::peft, LoraGaVariant::reference}) {
    const bool peft = variant == LoraGaVariant::peft;
    for (const Case& c : {Case{LoraGaDirection::arb2r, {0, 1, 2, 3}, {4, 5, 6, 7}},
                          Case{LoraGaDirection::a2rbr, {4, 5, 6, 7}, {0, 1, 2, 3}},
                          Case{LoraGaDirection::arbr, {1, 3, 5, 7}, {0, 2, 4, 6}}}) {
      INFO("variant " << static_cast<int>(variant) << ", direction " << static_cast<int>(c.direction));
      Matrix<double> W = W0;
      Lora<double> lora(in, out, rank_config(r, 4));
      LoraGaConfig config;
      config.direction = c.direction;
      config.variant = variant;
      config.scale = LoraGaScale::unit;
      const LoraGaReport report = lora_ga_initialize(lora, W, G, config);
      CHECK(report.a_indices == c.a);
      CHECK(report.b_indices == c.b);
      check_factors(lora.A(), lora.B(), G, report, peft, 1e-10);
    }
    // "random": PEFT gives A and B the same r of the 2r triplets, the reference splits a permutation in two halves;
    // the draw is a function of the seed.
    LoraGaConfig config;
    config.direction = LoraGaDirection::random;
    config.variant = variant;
    config.seed = 3;
    Matrix<double> W1 = W0, W2 = W0;
    Lora<double> one(in, out, rank_config(r, 4)), two(in, out, rank_config(r, 4));
    const LoraGaReport first = lora_ga_initialize(one, W1, G, config);
    const LoraGaReport again = lora_ga_initialize(two, W2, G, config);
    CHECK(first.a_indices == again.a_indices);
    CHECK(first.b_indices == again.b_indices);
    CHECK(one.A() == two.A());
    const std::set<Index> a(first.a_indices.begin(), first.a_indices.end());
    const std::set<Index> b(first.b_indices.begin(), first.b_indices.end());
    CHECK(a.size() == static_cast<std::size_t>(r));
    CHECK(*a.rbegin() < 2 * r);
    if (peft) {
      CHECK(first.a_indices == first.b_indices);
    } else {
      std::set<Index> all = a;
      all.insert(b.begin(), b.end());
      CHECK(all.size() == static_cast<std::size_t>(2 * r));
    }
    check_factors(one.A(), one.B(), G, first, peft, 1e-10);
  }
  // The draw depends on the seed: four seeds do not all give A the same triplets.
  LoraGaConfig config;
  config.direction = LoraGaDirection::random;
  config.variant = LoraGaVariant::reference;
  std::set<std::vector<Index>> draws;
  for (std::uint64_t seed = 0; seed < 4; ++seed) {
    config.seed = seed;
    Matrix<double> W = W0;
    Lora<double> lora(in, out, rank_config(r, 4));
    draws.insert(lora_ga_initialize(lora, W, G, config).a_indices);
  }
  CHECK(draws.size() > 1);
}

TEST_CASE("LoRA-GA's reference scales: stable on both factors, weightS from W's top-r singular values", "[lora_ga]") {
  const Index out = 16, in = 12, r = 3;
  const Eigen::MatrixXd G = planted(out, in, decaying_values(in), 12);
  const Eigen::MatrixXd W0 = random_matrix<double>(out, in, 13);
  const double s = 8.0 / 3.0;
  LoraGaConfig config;
  config.variant = LoraGaVariant::reference;

  Matrix<double> W = W0;
  Lora<double> lora(in, out, rank_config(r, 8));
  const LoraGaReport stable = lora_ga_initialize(lora, W, G, config);
  const double zeta = std::pow(16.0, 0.25) / 4.0;  // out^(1/4) / sqrt(16)
  CHECK(stable.a_factor == Approx(zeta).epsilon(1e-14));
  CHECK(stable.b_factor == Approx(zeta).epsilon(1e-14));
  check_factors(lora.A(), lora.B(), G, stable, false, 1e-10);
  // Orthonormal directions: A A^T = B^T B = zeta^2 I.
  CHECK((lora.A() * lora.A().transpose() - zeta * zeta * Eigen::MatrixXd::Identity(r, r)).norm() < 1e-12);
  CHECK((lora.B().transpose() * lora.B() - zeta * zeta * Eigen::MatrixXd::Identity(r, r)).norm() < 1e-12);
  CHECK(relative_error(Eigen::MatrixXd(W + lora.delta_weight()), W0) < 1e-13);

  config.scale = LoraGaScale::weight_svd;
  W = W0;
  const LoraGaReport weight = lora_ga_initialize(lora, W, G, config);
  const Eigen::VectorXd sigma = Eigen::BDCSVD<Eigen::MatrixXd>(W0).singularValues().head(r);
  const double mean_root = (sigma / s).cwiseSqrt().mean();
  CHECK(weight.a_factor == Approx(mean_root).epsilon(1e-12));
  CHECK(weight.b_factor == Approx(mean_root).epsilon(1e-12));
  check_factors(lora.A(), lora.B(), G, weight, false, 1e-10);
}

TEST_CASE("LoRA-GA's claim: on a rank-2r gradient the first LoRA step is the full fine-tuning step, to first order",
          "[lora_ga]") {
  // The paper's Theorem 3.1 in the reference form with the "gd" scale: one SGD step of rate eta on A and B moves
  // W + s B A by -eta s^2 (B B^T G + G A^T A) + eta^2 s^3 (G A^T)(B^T G) exactly, and the first term is -eta G
  // when G has rank 2r. The step is taken through the adapter's own backward pass (x = I, dy = G^T, so that
  // dy^T x = G is the weight gradient).
  const Index out = 10, in = 8, r = 2;
  Eigen::VectorXd values(2 * r);
  values << 5.0, 3.0, 2.0, 1.5;
  const Eigen::MatrixXd G = planted(out, in, values, 21);
  const double eta = 1e-3;
  for (const LoraGaDirection direction : {LoraGaDirection::arb2r, LoraGaDirection::a2rbr, LoraGaDirection::arbr}) {
    INFO("direction " << static_cast<int>(direction));
    Matrix<double> W = random_matrix<double>(out, in, 22);
    Lora<double> lora(in, out, rank_config(r, 6));  // s = 3
    const double s = 3.0;
    LoraGaConfig config;
    config.variant = LoraGaVariant::reference;
    config.scale = LoraGaScale::gd;
    config.direction = direction;
    lora_ga_initialize(lora, W, G, config);
    const Matrix<double> A0 = lora.A(), B0 = lora.B();

    const Matrix<double> x = Matrix<double>::Identity(in, in);
    const Matrix<double> dy = G.transpose();
    Matrix<double> y = Matrix<double>::Zero(in, out);
    lora.forward(x, y);
    lora.backward(x, dy);
    // The adapter's gradients are the chain rule's s B^T G and s G A^T.
    CHECK(relative_error(lora.grad_A(), Matrix<double>(s * B0.transpose() * G)) < 1e-13);
    CHECK(relative_error(lora.grad_B(), Matrix<double>(s * G * A0.transpose())) < 1e-13);
    const Matrix<double> A1 = A0 - eta * lora.grad_A(), B1 = B0 - eta * lora.grad_B();
    const Eigen::MatrixXd step = s * (B1 * A1 - B0 * A0);

    const Eigen::MatrixXd first_order = -eta * s * s * (B0 * B0.transpose() * G + G * A0.transpose() * A0);
    const Eigen::MatrixXd second_order = eta * eta * s * s * s * (G * A0.transpose()) * (B0.transpose() * G);
    CHECK(relative_error(step, Eigen::MatrixXd(first_order + second_order)) < 1e-12);  // the closed form
    CHECK(relative_error(first_order, Eigen::MatrixXd(-eta * G)) < 1e-12);              // the theorem
    // What is left is the O(eta^2) term, of order eta relative to the full step.
    const double gap = relative_error(step, Eigen::MatrixXd(-eta * G));
    CHECK(gap == Approx(second_order.norm() / (eta * G.norm())).epsilon(1e-6));
    CHECK(gap < 10 * eta);
  }
}

TEST_CASE("LoRA-GA: in PEFT's form the first step follows its own closed form, not -eta G", "[lora_ga]") {
  // With B = U_b diag(S_b) zeta (PEFT's "stable"): B B^T G = zeta^2 U_b S_b^3 V_b^T and G A^T A = U_a S_a V_a^T,
  // so the first-order step is -eta s^2 (zeta^2 U_b S_b^3 V_b^T + U_a S_a V_a^T).
  const Index out = 10, in = 8, r = 2;
  Eigen::VectorXd values(2 * r);
  values << 5.0, 3.0, 2.0, 1.5;
  const Eigen::MatrixXd G = planted(out, in, values, 31);
  Matrix<double> W = random_matrix<double>(out, in, 32);
  Lora<double> lora(in, out, rank_config(r, 2));  // s = 1
  lora_ga_initialize(lora, W, G);
  const Eigen::BDCSVD<Eigen::MatrixXd> svd(G, Eigen::ComputeThinU | Eigen::ComputeThinV);
  const double zeta2 = std::sqrt(static_cast<double>(out)) / 16.0;
  const Eigen::MatrixXd Ua = svd.matrixU().leftCols(r), Ub = svd.matrixU().middleCols(r, r);
  const Eigen::MatrixXd Va = svd.matrixV().leftCols(r), Vb = svd.matrixV().middleCols(r, r);
  const Eigen::VectorXd Sa = svd.singularValues().head(r), Sb = svd.singularValues().segment(r, r);
  const Eigen::MatrixXd expected = zeta2 * Ub * Sb.array().cube().matrix().asDiagonal() * Vb.transpose() +
                                   Ua * Sa.asDiagonal() * Va.transpose();
  const Matrix<double>& A = lora.A();
  const Matrix<double>& B = lora.B();
  CHECK(relative_error(Eigen::MatrixXd(B * B.transpose() * G + G * A.transpose() * A), expected) < 1e-12);
}

TEST_CASE("LoRA-GA with power iterations approaches the exact SVD on a decaying spectrum", "[lora_ga]") {
  const Index out = 40, in = 30, r = 4;
  const Eigen::MatrixXd G = planted(out, in, decaying_values(in), 41);
  const Eigen::MatrixXd W0 = planted(out, in, decaying_values(in), 43);  // "weight_svd" reads W's top spectrum
  for (const LoraGaVariant variant : {LoraGaVariant::peft, LoraGaVariant::reference}) {
    Matrix<double> W_exact = W0, W_fast = W0;
    Lora<double> exact(in, out, rank_config(r, 4)), fast(in, out, rank_config(r, 4));
    LoraGaConfig config;
    config.variant = variant;
    config.scale = LoraGaScale::weight_svd;
    lora_ga_initialize(exact, W_exact, G, config);
    config.power_iterations = 4;  // PEFT's niter; a sketch of min(4r, 30) = 16 columns
    const LoraGaReport report = lora_ga_initialize(fast, W_fast, G, config);
    check_factors(fast.A(), fast.B(), G, report, variant == LoraGaVariant::peft, 1e-4);
    CHECK(relative_error(fast.delta_weight(), exact.delta_weight()) < 1e-3);
    CHECK(relative_error(Matrix<double>(W_fast + fast.delta_weight()), Matrix<double>(W0)) < 1e-13);
  }
}

TEMPLATE_TEST_CASE("LoraGaGradient averages dy^T x over backward passes, merges, and feeds the initialization",
                   "[lora_ga]", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 1e-6 : 1e-14;
  const Index out = 7, in = 6, r = 2;
  LoraGaGradient<T> all(in, out), first(in, out), second(in, out);
  Eigen::MatrixXd expected = Eigen::MatrixXd::Zero(out, in);
  for (int b = 0; b < 4; ++b) {
    const Matrix<T> x = random_matrix<T>(3 + b, in, 100 + static_cast<std::uint64_t>(b));
    const Matrix<T> dy = random_matrix<T>(3 + b, out, 200 + static_cast<std::uint64_t>(b));
    expected += dy.template cast<double>().transpose() * x.template cast<double>();
    all.observe(x, dy);
    (b < 2 ? first : second).observe(x, dy);
  }
  expected /= 4.0;
  CHECK(all.batches() == 4);
  CHECK(relative_error(all.mean(), expected) < tol);
  first.merge(second);
  CHECK(first.batches() == 4);
  CHECK(relative_error(first.mean(), expected) < 1e-14);
  const LoraGaGradient<T> rebuilt = LoraGaGradient<T>::from_sum(all.sum(), 4);
  CHECK(rebuilt.mean() == all.mean());

  Matrix<T> W1 = random_matrix<T>(out, in, 300), W2 = W1;
  Lora<T> from_accumulator(in, out, rank_config(r, 2)), from_mean(in, out, rank_config(r, 2));
  lora_ga_initialize(from_accumulator, W1, all);
  lora_ga_initialize(from_mean, W2, all.mean());
  CHECK(from_accumulator.A() == from_mean.A());
  CHECK(from_accumulator.B() == from_mean.B());
  CHECK(W1 == W2);
}

TEST_CASE("LoRA-GA and its accumulator refuse bad input and change nothing", "[lora_ga]") {
  const Index out = 6, in = 5;
  Matrix<double> W = random_matrix<double>(out, in, 1);
  const Matrix<double> W_before = W;
  const Eigen::MatrixXd G = random_matrix<double>(out, in, 2);
  Lora<double> lora(in, out, rank_config(2, 2));
  const Matrix<double> A_before = lora.A();

  CHECK_THROWS_WITH(lora_ga_initialize(lora, W, Eigen::MatrixXd(G.transpose())),
                    "lora_ga_initialize: gradient is [5 x 6], expected [6 x 5]");
  Eigen::MatrixXd nan_G = G;
  nan_G(2, 3) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(lora_ga_initialize(lora, W, nan_G), Catch::Contains("gradient[2, 3] is nan"));
  CHECK_THROWS_WITH(lora_ga_initialize(lora, W, Eigen::MatrixXd::Zero(out, in)),
                    Catch::Contains("the gradient is zero"));
  Lora<double> too_wide(in, out, rank_config(3, 3));
  CHECK_THROWS_WITH(lora_ga_initialize(too_wide, W, G), Catch::Contains("rank is 3, expected 2r <= min(in, out) = 5"));
  Matrix<double> nan_W = W;
  nan_W(0, 1) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(lora_ga_initialize(lora, nan_W, G), Catch::Contains("W[0, 1] is inf"));
  Matrix<double> wrong_W = random_matrix<double>(in, out, 3);
  CHECK_THROWS_AS(lora_ga_initialize(lora, wrong_W, G), ShapeError);
  LoraGaConfig config;
  config.stable_gamma = 0;
  CHECK_THROWS_WITH(lora_ga_initialize(lora, W, G, config), Catch::Contains("stable_gamma is 0"));
  config.stable_gamma = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(lora_ga_initialize(lora, W, G, config), ValueError);
  config = {};
  config.power_iterations = -2;
  CHECK_THROWS_WITH(lora_ga_initialize(lora, W, G, config), Catch::Contains("power_iterations is -2"));
  Lora<double> negative(in, out, rank_config(2, -2));
  CHECK_THROWS_WITH(lora_ga_initialize(negative, W, G), Catch::Contains("scaling is -1, expected > 0"));
  CHECK(W == W_before);
  CHECK(lora.A() == A_before);
  CHECK(lora.B().isZero(0));

  LoraGaGradient<double> gradient(in, out);
  CHECK_THROWS_AS(gradient.mean(), StateError);
  CHECK_THROWS_AS(lora_ga_initialize(lora, W, gradient), StateError);
  LoraGaGradient<double> other_layer(in + 1, out);
  other_layer.observe(random_matrix<double>(2, in + 1, 4), random_matrix<double>(2, out, 5));
  CHECK_THROWS_AS(lora_ga_initialize(lora, W, other_layer), ShapeError);
  CHECK_THROWS_AS(gradient.merge(other_layer), ShapeError);
  const Matrix<double> x = random_matrix<double>(3, in, 6), dy = random_matrix<double>(3, out, 7);
  CHECK_THROWS_AS(gradient.observe(random_matrix<double>(3, in + 1, 8), dy), ShapeError);
  CHECK_THROWS_AS(gradient.observe(x, random_matrix<double>(2, out, 9)), ShapeError);
  CHECK_THROWS_AS(gradient.observe(Matrix<double>(0, in), Matrix<double>(0, out)), ShapeError);
  Matrix<double> nan_dy = dy;
  nan_dy(1, 1) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(gradient.observe(x, nan_dy), Catch::Contains("dy[1, 1] is nan"));
  CHECK(gradient.batches() == 0);
  CHECK(gradient.sum().isZero(0));
  CHECK_THROWS_AS(LoraGaGradient<double>(0, out), ValueError);
  CHECK_THROWS_AS(LoraGaGradient<double>::from_sum(Matrix<double>(0, 0), 1), ShapeError);
  CHECK_THROWS_AS(LoraGaGradient<double>::from_sum(G, 0), ValueError);
  CHECK(W == W_before);
  CHECK(lora.A() == A_before);
}

}  // namespace lorakit_test_lora_ga
