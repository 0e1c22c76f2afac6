// Tests of LoRA-DA (init/lora_da.hpp) and of the symmetric eigen-solver it uses (kernel/symmetric_eigen.hpp).
#include "test_support.hpp"

#include <catch2/catch.hpp>
#include <lorakit/init/lora_da.hpp>
#include <lorakit/kernel/symmetric_eigen.hpp>
#include <lorakit/optim/adamw.hpp>

#include <Eigen/Dense>

#include <cmath>
#include <limits>
#include <string>

namespace lorakit_test_lora_da {

using lorakit::Index;
using lorakit::Matrix;
using lorakit::testing::random_matrix;
using lorakit::testing::relative_error;

namespace {

/// ||P_U - P_V||_2 for two matrices with orthonormal columns: the sine of the largest principal angle.
double subspace_distance(const Eigen::MatrixXd& U, const Eigen::MatrixXd& V) {
  const Eigen::MatrixXd difference = U * U.transpose() - V * V.transpose();
  return Eigen::JacobiSVD<Eigen::MatrixXd>(difference).singularValues()(0);
}

/// A symmetric matrix Q diag(values) Q^T with a random orthogonal Q.
Eigen::MatrixXd symmetric_with_spectrum(const Eigen::VectorXd& values, std::uint64_t seed) {
  const Index n = values.size();
  const Eigen::MatrixXd M = random_matrix<double>(n, n, seed);
  const Eigen::MatrixXd Q = Eigen::HouseholderQR<Eigen::MatrixXd>(M).householderQ();
  return Q * values.asDiagonal() * Q.transpose();
}

/// Inputs with covariance C^T C for a C with geometrically decaying singular values (anisotropic).
Matrix<double> anisotropic_inputs(Index tokens, Index in, double decay, std::uint64_t seed) {
  Eigen::VectorXd scales(in);
  for (Index i = 0; i < in; ++i) scales(i) = std::pow(decay, static_cast<double>(i));
  const Eigen::MatrixXd Q =
      Eigen::HouseholderQR<Eigen::MatrixXd>(Eigen::MatrixXd(random_matrix<double>(in, in, seed + 1))).householderQ();
  const Eigen::MatrixXd C = scales.asDiagonal() * Q.transpose();
  return random_matrix<double>(tokens, in, seed) * C;
}

/// LoRA-DA written out densely from the raw data, independently of the library: explicit inverses, a full SVD
/// for sigma, the dense eigen-solver. Returns B A (invariant to the eigenvectors' signs).
Eigen::MatrixXd reference_delta(const Matrix<double>& x, const Matrix<double>& dy, Index samples, Index r,
                                const lorakit::LoraDaConfig& c) {
  const double T = static_cast<double>(x.rows());
  const Index in = x.cols();
  const Eigen::MatrixXd Z = Eigen::MatrixXd(x.transpose() * x) / T + c.damping * Eigen::MatrixXd::Identity(in, in);
  const Eigen::VectorXd ybar = dy.array().square().colwise().sum().transpose() / T;
  const Eigen::VectorXd yinv = (ybar.array() + c.damping).inverse();
  const Eigen::MatrixXd G = Eigen::MatrixXd(dy.transpose() * x) / static_cast<double>(samples);
  const Eigen::MatrixXd Zinv = Z.inverse();
  Eigen::MatrixXd D = c.use_natural_gradient ? Eigen::MatrixXd(-(yinv.asDiagonal() * G * Zinv)) : Eigen::MatrixXd(-G);
  const double sigma = Eigen::JacobiSVD<Eigen::MatrixXd>(D).singularValues()(0);
  D /= sigma;
  Eigen::MatrixXd omega = -c.bias_weight * D.transpose() * D +
                          c.variance_weight * (yinv.sum() / c.num_train_samples) / (sigma * sigma) * Zinv;
  omega = 0.5 * (omega + omega.transpose()).eval();
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(omega);
  const Eigen::MatrixXd A0 = eig.eigenvectors().leftCols(r);
  const Eigen::MatrixXd A = A0.transpose() / std::sqrt(c.gamma);
  const Eigen::MatrixXd B = D * A0 / std::sqrt(c.gamma);
  return B * A;
}

lorakit::LoraConfig rank_config(Index r) {
  lorakit::LoraConfig config;
  config.rank = r;
  config.alpha = static_cast<double>(r);
  return config;
}

template <class T>
Eigen::MatrixXd product_BA(const lorakit::Lora<T>& lora) {
  return (lora.B() * lora.A()).template cast<double>();
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// smallest_eigenpairs

TEST_CASE("smallest_eigenpairs matches the dense solver on separated and clustered spectra", "[symmetric_eigen]") {
  const Index n = 300;
  for (int kind = 0; kind < 3; ++kind) {
    Eigen::VectorXd values(n);
    for (Index i = 0; i < n; ++i) {
      const double t = static_cast<double>(i) / static_cast<double>(n);
      if (kind == 0) values(i) = -1.0 + 2.0 * t;               // evenly spread
      if (kind == 1) values(i) = -std::pow(0.97, double(i));   // decaying, like -D^T D
      if (kind == 2) values(i) = (i < 6 ? -1.0 - 1e-3 * double(i) : 0.5 * t);  // a tight cluster at the bottom
    }
    const Eigen::MatrixXd M = symmetric_with_spectrum(values, 10 + static_cast<std::uint64_t>(kind));
    const Index count = 5;
    const auto dense = lorakit::smallest_eigenpairs_dense(M, count);
    const auto iterative = lorakit::smallest_eigenpairs(
        [&](const Eigen::Ref<const Eigen::MatrixXd>& X, Eigen::Ref<Eigen::MatrixXd> Y) { Y.noalias() = M * X; }, n,
        count);
    INFO("spectrum kind " << kind);
    REQUIRE(iterative.converged);
    CHECK((iterative.values - dense.values).cwiseAbs().maxCoeff() < 1e-9);
    // The 5 smallest are separated from the 6th in kinds 0 and 1; in kind 2 the cluster holds 6 values, so
    // only the eigenvalues and the residuals are determined.
    if (kind != 2) CHECK(subspace_distance(iterative.vectors, dense.vectors) < 1e-7);
    CHECK(iterative.residuals.maxCoeff() < 1e-9);
    const Eigen::MatrixXd gram = iterative.vectors.transpose() * iterative.vectors;
    CHECK((gram - Eigen::MatrixXd::Identity(count, count)).cwiseAbs().maxCoeff() < 1e-12);
    CHECK(iterative.applied_columns < n * 4);
  }
}

TEST_CASE("smallest_eigenpairs rejects problems too small for its basis", "[symmetric_eigen]") {
  const Eigen::MatrixXd M = Eigen::MatrixXd::Identity(10, 10);
  auto apply = [&](const Eigen::Ref<const Eigen::MatrixXd>& X, Eigen::Ref<Eigen::MatrixXd> Y) { Y = M * X; };
  CHECK_THROWS_AS(lorakit::smallest_eigenpairs(apply, 10, 0), lorakit::ValueError);
  CHECK_THROWS_WITH(lorakit::smallest_eigenpairs(apply, 10, 4),
                    Catch::Contains("smallest_eigenpairs: n = 10") && Catch::Contains("dense solver"));
  CHECK_THROWS_AS(lorakit::smallest_eigenpairs_dense(M, 11), lorakit::ValueError);
}

// ---------------------------------------------------------------------------------------------------------------
// FisherStatistics

TEST_CASE("FisherStatistics: merging two halves equals one pass", "[lora_da]") {
  const Index in = 12, out = 9;
  const Matrix<double> x = random_matrix<double>(40, in, 1);
  const Matrix<double> dy = random_matrix<double>(40, out, 2);
  lorakit::FisherStatistics<double> whole(in, out), first(in, out), second(in, out);
  whole.observe(x, dy, 10);
  first.observe(x.topRows(25), dy.topRows(25), 6);
  second.observe(x.bottomRows(15), dy.bottomRows(15), 4);
  first.merge(second);
  CHECK(first.tokens() == 40);
  CHECK(first.samples() == 10);
  CHECK(relative_error(first.input_moment_sum(), whole.input_moment_sum()) < 1e-14);
  CHECK(relative_error(first.output_square_sum(), whole.output_square_sum()) < 1e-14);
  CHECK(relative_error(first.gradient_sum(), whole.gradient_sum()) < 1e-14);
  // The sums themselves, against their definition.
  CHECK(relative_error(whole.input_moment_sum(), Eigen::MatrixXd(x.transpose() * x)) < 1e-14);
  CHECK(relative_error(whole.gradient_sum(), Eigen::MatrixXd(dy.transpose() * x)) < 1e-14);
}

TEST_CASE("FisherStatistics<float> accumulates in double", "[lora_da]") {
  const Index in = 6, out = 5;
  const Matrix<double> x = random_matrix<double>(30, in, 3);
  const Matrix<double> dy = random_matrix<double>(30, out, 4);
  const Matrix<float> xf = x.cast<float>(), dyf = dy.cast<float>();
  lorakit::FisherStatistics<float> stats(in, out);
  stats.observe(xf, dyf, 3);
  const Eigen::MatrixXd xd = xf.cast<double>(), dyd = dyf.cast<double>();
  CHECK(relative_error(stats.input_moment_sum(), Eigen::MatrixXd(xd.transpose() * xd)) < 1e-15);
  CHECK(relative_error(stats.gradient_sum(), Eigen::MatrixXd(dyd.transpose() * xd)) < 1e-15);
}

TEST_CASE("FisherStatistics rejects bad input and leaves itself unchanged", "[lora_da]") {
  lorakit::FisherStatistics<double> stats(4, 3);
  const Matrix<double> x = random_matrix<double>(5, 4, 1);
  const Matrix<double> dy = random_matrix<double>(5, 3, 2);
  stats.observe(x, dy, 2);
  CHECK_THROWS_WITH(stats.observe(random_matrix<double>(5, 6, 1), dy, 1),
                    Catch::Contains("FisherStatistics::observe: x has 6 columns, expected in_features = 4"));
  CHECK_THROWS_AS(stats.observe(x, random_matrix<double>(5, 2, 1), 1), lorakit::ShapeError);
  CHECK_THROWS_AS(stats.observe(x, random_matrix<double>(4, 3, 1), 1), lorakit::ShapeError);
  CHECK_THROWS_WITH(stats.observe(x, dy, 0), Catch::Contains("samples is 0, expected >= 1"));
  CHECK_THROWS_AS(stats.observe(x, dy, -3), lorakit::ValueError);
  Matrix<double> bad = x;
  bad(2, 1) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(stats.observe(bad, dy, 1), Catch::Contains("x[2, 1] is nan"));
  Matrix<double> bad_dy = dy;
  bad_dy(0, 0) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_AS(stats.observe(x, bad_dy, 1), lorakit::ValueError);
  lorakit::FisherStatistics<double> other(4, 5);
  CHECK_THROWS_AS(stats.merge(other), lorakit::ShapeError);
  CHECK(stats.tokens() == 5);
  CHECK(stats.samples() == 2);
  CHECK(relative_error(stats.input_moment_sum(), Eigen::MatrixXd(x.transpose() * x)) < 1e-15);
  CHECK_THROWS_AS(lorakit::FisherStatistics<double>(0, 3), lorakit::ValueError);
}

// ---------------------------------------------------------------------------------------------------------------
// lora_da_initialize

TEMPLATE_TEST_CASE("lora_da_initialize matches a direct dense implementation", "[lora_da]", float, double) {
  using T = TestType;
  const double tolerance = std::is_same_v<T, float> ? 1e-4 : 1e-9;
  struct Case {
    Index in, out, r, tokens, samples;
    lorakit::LoraDaSolver solver;
    double variance_weight;
    bool natural;
  };
  const Case cases[] = {
      {24, 20, 3, 60, 12, lorakit::LoraDaSolver::dense, 0.03, true},
      {24, 20, 3, 60, 12, lorakit::LoraDaSolver::dense, 50.0, true},  // the variance term matters
      {20, 30, 4, 90, 30, lorakit::LoraDaSolver::dense, 0.03, false},
      {160, 120, 4, 400, 50, lorakit::LoraDaSolver::iterative, 0.03, true},
      {160, 120, 4, 400, 50, lorakit::LoraDaSolver::iterative, 0.0, false},
  };
  int index = 0;
  for (const Case& c : cases) {
    INFO("case " << index++);
    const Matrix<double> x = anisotropic_inputs(c.tokens, c.in, 0.97, 20 + static_cast<std::uint64_t>(index));
    const Matrix<double> dy = random_matrix<double>(c.tokens, c.out, 40 + static_cast<std::uint64_t>(index));
    const Matrix<T> xt = x.cast<T>(), dyt = dy.cast<T>();
    lorakit::FisherStatistics<T> stats(c.in, c.out);
    stats.observe(xt, dyt, c.samples);
    lorakit::LoraDaConfig config;
    config.solver = c.solver;
    config.variance_weight = c.variance_weight;
    config.use_natural_gradient = c.natural;
    lorakit::Lora<T> lora(c.in, c.out, rank_config(c.r));
    const auto views = lora.parameters();  // what an optimizer built before the initialization holds
    const auto report = lorakit::lora_da_initialize(lora, stats, config);
    CHECK(views[0].value.data() == lora.A().data());  // written in place: the views still see A and B
    CHECK(views[1].value.data() == lora.B().data());
    CHECK(report.iterative == (c.solver == lorakit::LoraDaSolver::iterative));
    CHECK_FALSE(report.fell_back_to_dense);
    const Eigen::MatrixXd expected =
        reference_delta(xt.template cast<double>(), dyt.template cast<double>(), c.samples, c.r, config);
    CHECK(relative_error(product_BA(lora), expected) < tolerance);
    CHECK(lora.A().rows() == c.r);
    // A's rows are orthonormal up to 1/sqrt(gamma).
    const Eigen::MatrixXd AAt = (lora.A() * lora.A().transpose()).template cast<double>() * config.gamma;
    CHECK((AAt - Eigen::MatrixXd::Identity(c.r, c.r)).cwiseAbs().maxCoeff() < 10 * tolerance);
  }
}

TEST_CASE("lora_da_initialize with variance_weight = 0, Z = I, Ybar = 1 gives G's top right singular vectors",
          "[lora_da]") {
  const Index in = 16, out = 12, r = 3;
  // x = 4 Q with Q orthogonal: (1/T) x^T x = I for T = 16 tokens; dy = +-1: Ybar = 1.
  const Eigen::MatrixXd Q =
      Eigen::HouseholderQR<Eigen::MatrixXd>(Eigen::MatrixXd(random_matrix<double>(in, in, 5))).householderQ();
  const Matrix<double> x = 4.0 * Q;
  const Matrix<double> dy = random_matrix<double>(in, out, 6).array().sign().matrix();
  lorakit::FisherStatistics<double> stats(in, out);
  stats.observe(x, dy, 4);
  const Eigen::MatrixXd G = Eigen::MatrixXd(dy.transpose() * x) / 4.0;
  const Eigen::JacobiSVD<Eigen::MatrixXd> svd(G, Eigen::ComputeFullV);
  const Eigen::MatrixXd top = svd.matrixV().leftCols(r);

  lorakit::LoraDaConfig config;
  config.variance_weight = 0;
  config.damping = 0;
  lorakit::Lora<double> lora(in, out, rank_config(r));
  const auto report = lorakit::lora_da_initialize(lora, stats, config);
  const Eigen::MatrixXd A0 = lora.A().transpose() * std::sqrt(config.gamma);
  CHECK(subspace_distance(A0, top) < 1e-10);
  CHECK(std::abs(report.sigma - svd.singularValues()(0)) < 1e-10 * report.sigma);
  // B A = -(1 / (gamma sigma)) G V_r V_r^T.
  const Eigen::MatrixXd expected = -G * top * top.transpose() / (config.gamma * report.sigma);
  CHECK(relative_error(Eigen::MatrixXd(lora.B() * lora.A()), expected) < 1e-10);
  // Eigenvalues of Omega = -D^T D with D = -G / sigma: -(s_i / s_1)^2.
  for (Index i = 0; i < r; ++i) {
    const double ratio = svd.singularValues()(i) / svd.singularValues()(0);
    CHECK(std::abs(report.eigenvalues(i) + ratio * ratio) < 1e-10);
  }
}

TEST_CASE("the raw-gradient ablation gives G's top right singular vectors whatever Z is", "[lora_da]") {
  const Index in = 200, out = 150, r = 5;
  const Matrix<double> x = anisotropic_inputs(300, in, 0.95, 7);
  const Matrix<double> dy = random_matrix<double>(300, out, 8);
  lorakit::FisherStatistics<double> stats(in, out);
  stats.observe(x, dy, 30);
  const Eigen::MatrixXd G = Eigen::MatrixXd(dy.transpose() * x) / 30.0;
  const Eigen::JacobiSVD<Eigen::MatrixXd> svd(G, Eigen::ComputeThinV);
  const Eigen::MatrixXd top = svd.matrixV().leftCols(r);
  for (auto solver : {lorakit::LoraDaSolver::dense, lorakit::LoraDaSolver::iterative}) {
    lorakit::LoraDaConfig config;
    config.variance_weight = 0;
    config.use_natural_gradient = false;
    config.solver = solver;
    lorakit::Lora<double> lora(in, out, rank_config(r));
    lorakit::lora_da_initialize(lora, stats, config);
    CHECK(subspace_distance(lora.A().transpose() * std::sqrt(config.gamma), top) < 1e-8);
  }
}

TEST_CASE("lora_da_initialize reports errors and leaves the adapter unchanged", "[lora_da]") {
  const Index in = 8, out = 6;
  lorakit::Lora<double> lora(in, out, rank_config(2));
  const Matrix<double> A = lora.A(), B = lora.B();
  lorakit::FisherStatistics<double> empty(in, out);
  CHECK_THROWS_WITH(lorakit::lora_da_initialize(lora, empty), Catch::Contains("seen 0 tokens"));

  // Fewer tokens than inputs: Z is singular without damping.
  lorakit::FisherStatistics<double> few(in, out);
  few.observe(random_matrix<double>(5, in, 1), random_matrix<double>(5, out, 2), 5);
  lorakit::LoraDaConfig no_damping;
  no_damping.damping = 0;
  CHECK_THROWS_WITH(lorakit::lora_da_initialize(lora, few, no_damping),
                    Catch::Contains("lora_da_initialize") && Catch::Contains("not positive definite"));
  lorakit::lora_da_initialize(lora, few);  // the default damping makes it positive definite
  lora.A() = A;
  lora.B() = B;

  lorakit::FisherStatistics<double> stats(in, out);
  stats.observe(random_matrix<double>(40, in, 3), random_matrix<double>(40, out, 4), 8);
  lorakit::Lora<double> wrong(in + 1, out, rank_config(2));
  CHECK_THROWS_AS(lorakit::lora_da_initialize(wrong, stats), lorakit::ShapeError);
  lorakit::LoraDaConfig bad;
  bad.gamma = 0;
  CHECK_THROWS_WITH(lorakit::lora_da_initialize(lora, stats, bad), Catch::Contains("config.gamma is 0"));
  bad = {};
  bad.variance_weight = std::nan("");
  CHECK_THROWS_AS(lorakit::lora_da_initialize(lora, stats, bad), lorakit::ValueError);
  bad = {};
  bad.damping = -1;
  CHECK_THROWS_AS(lorakit::lora_da_initialize(lora, stats, bad), lorakit::ValueError);

  // A zero gradient gives no direction.
  lorakit::FisherStatistics<double> flat(in, out);
  flat.observe(random_matrix<double>(40, in, 3), Matrix<double>::Zero(40, out), 8);
  CHECK_THROWS_WITH(lorakit::lora_da_initialize(lora, flat), Catch::Contains("D = 0"));
  lorakit::LoraDaConfig zero_damping;
  zero_damping.damping = 0;
  CHECK_THROWS_WITH(lorakit::lora_da_initialize(lora, flat, zero_damping), Catch::Contains("zero gradient second moment"));
  CHECK(lora.A() == A);
  CHECK(lora.B() == B);
}

// ---------------------------------------------------------------------------------------------------------------
// The method's point: a better start than Kaiming or EVA on a teacher-student problem.

namespace {

struct TeacherStudent {
  Index in = 64, out = 64, rank = 4, tokens = 1024;
  Matrix<double> W0, teacher_delta, x_train, y_train, x_test, y_test;

  TeacherStudent() {
    W0 = random_matrix<double>(out, in, 100, 1.0 / std::sqrt(double(in)));
    // The teacher adds a random rank-r update: nothing ties it to the input statistics.
    teacher_delta = random_matrix<double>(out, rank, 101) * random_matrix<double>(rank, in, 102) / double(in);
    x_train = anisotropic_inputs(tokens, in, 0.93, 103);
    x_test = anisotropic_inputs(tokens, in, 0.93, 203);
    y_train = x_train * (W0 + teacher_delta).transpose();
    y_test = x_test * (W0 + teacher_delta).transpose();
  }

  /// Mean over tokens of 1/2 ||y - y*||^2 (each token is one sample).
  double loss(const lorakit::Lora<double>& lora, const Matrix<double>& x, const Matrix<double>& y) const {
    const Matrix<double> prediction = x * (W0 + lora.delta_weight()).transpose();
    return 0.5 * (prediction - y).squaredNorm() / double(x.rows());
  }

  /// Per-sample gradients dLoss/dy at the base model, for the statistics.
  lorakit::FisherStatistics<double> statistics() const {
    lorakit::FisherStatistics<double> stats(in, out);
    const Matrix<double> dy = x_train * W0.transpose() - y_train;
    for (Index start = 0; start < tokens; start += 256) stats.observe(x_train.middleRows(start, 256), dy.middleRows(start, 256), 256);
    return stats;
  }

  /// K full-batch AdamW steps on the mean loss; returns the held-out loss.
  double train(lorakit::Lora<double>& lora, int steps, double lr) const {
    lorakit::AdamWConfig config;
    config.lr = lr;
    config.weight_decay = 0;
    lorakit::AdamW<double> optimizer(lora.parameters(), config);
    Matrix<double> y(tokens, out);
    for (int step = 0; step < steps; ++step) {
      optimizer.zero_grad();
      y.noalias() = x_train * W0.transpose();
      lora.forward(x_train, y);
      const Matrix<double> dy = (y - y_train) / double(tokens);
      lora.backward(x_train, dy);
      optimizer.step();
    }
    return loss(lora, x_test, y_test);
  }
};

}  // namespace

TEST_CASE("LoRA-DA's initialization trains to a lower loss than Kaiming and EVA", "[lora_da]") {
  const TeacherStudent problem;
  const int steps = 100;
  const double lr = 2e-3;
  const lorakit::LoraConfig config = rank_config(problem.rank);

  lorakit::Lora<double> kaiming(problem.in, problem.out, config);

  // EVA-like: A = the top-r right singular vectors of the stacked inputs, B = 0.
  const Eigen::BDCSVD<Eigen::MatrixXd> inputs(Eigen::MatrixXd(problem.x_train), Eigen::ComputeThinV);
  lorakit::Lora<double> eva = lorakit::Lora<double>::from_factors(
      inputs.matrixV().leftCols(problem.rank).transpose(), Matrix<double>::Zero(problem.out, problem.rank), config);

  // gamma = 1 gives A orthonormal rows, the scale of EVA's A, so the two differ only in A's directions (and
  // LoRA-DA's nonzero B). With the default gamma = 1024, A's rows have norm 1/32 and, at the same AdamW lr, the
  // adapter moves ~20x more slowly (B's updates reach W through A): it then ends behind Kaiming although its A
  // spans the teacher's row space (see docs/lora-da.md, "Scale").
  lorakit::LoraDaConfig da_config;
  da_config.gamma = 1;
  lorakit::Lora<double> da(problem.in, problem.out, config);
  lorakit::lora_da_initialize(da, problem.statistics(), da_config);
  // The point of the method: A spans the teacher's row space, which the input statistics alone do not reveal.
  const Eigen::JacobiSVD<Eigen::MatrixXd> teacher(problem.teacher_delta, Eigen::ComputeThinV);
  CHECK(subspace_distance(da.A().transpose(), teacher.matrixV().leftCols(problem.rank)) < 0.05);
  CHECK(subspace_distance(eva.A().transpose(), teacher.matrixV().leftCols(problem.rank)) > 0.5);

  const double base = problem.loss(lorakit::Lora<double>(problem.in, problem.out, [&] {
                                     auto c = config;
                                     c.init = lorakit::LoraInit::zeros;
                                     return c;
                                   }()),
                                   problem.x_test, problem.y_test);
  const double loss_kaiming = problem.train(kaiming, steps, lr);
  const double loss_eva = problem.train(eva, steps, lr);
  const double loss_da = problem.train(da, steps, lr);
  WARN("held-out loss after " << steps << " AdamW steps: base " << base << ", Kaiming " << loss_kaiming << ", EVA "
                              << loss_eva << ", LoRA-DA " << loss_da);
  CHECK(loss_da < loss_kaiming);
  CHECK(loss_da < loss_eva);
  CHECK(loss_da < 0.5 * base);
}

}  // namespace lorakit_test_lora_da
