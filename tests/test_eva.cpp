// init/eva.hpp: EVA's statistics against Eigen's BDCSVD of the stacked data, convergence, rank redistribution,
// input groups, data-parallel merge, the adapters it builds, errors, and a teacher-student run in which an
// EVA-initialized adapter learns faster than a Kaiming-initialized one.
#include <catch2/catch.hpp>

#include "test_support.hpp"

#include <lorakit/core/random.hpp>
#include <lorakit/init/eva.hpp>
#include <lorakit/optim/adamw.hpp>

#include <Eigen/SVD>

#include <cmath>
#include <limits>

namespace lorakit_test_eva {

using namespace lorakit;

namespace {

/// An orthonormal basis [d x f] (rows) from the QR of a Gaussian matrix.
Matrix<double> orthonormal_rows(Index d, Index f, std::uint64_t seed) {
  Eigen::MatrixXd g(f, d);
  Rng rng(seed, 5);
  rng.fill_normal(g, 0.0, 1.0);
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(g);
  const Eigen::MatrixXd q = qr.householderQ() * Eigen::MatrixXd::Identity(f, d);
  return q.transpose();
}

/// rows samples z diag(scales) basis + offset + noise N(0, noise^2) in every feature.
template <class T>
Matrix<T> planted(Index rows, const Matrix<double>& basis, const std::vector<double>& scales, double noise,
                  std::uint64_t seed, double offset = 0.0) {
  const Index d = basis.rows(), f = basis.cols();
  Matrix<double> z(rows, d), e(rows, f);
  Rng rng(seed, 11);
  rng.fill_normal(z, 0.0, 1.0);
  rng.fill_normal(e, 0.0, noise);
  for (Index j = 0; j < d; ++j) z.col(j) *= scales[static_cast<std::size_t>(j)];
  Matrix<double> x = z * basis + e;
  x.array() += offset;
  return x.cast<T>();
}

/// The top-k right singular vectors (as rows) and all singular values of the centered stacked data.
struct Reference {
  Matrix<double> V;
  Eigen::VectorXd S;
  double total;
};

Reference reference_svd(const Matrix<double>& stacked, Index k) {
  const Eigen::RowVectorXd mean = stacked.colwise().mean();
  const Eigen::MatrixXd centered = stacked.rowwise() - mean;
  Eigen::BDCSVD<Eigen::MatrixXd> svd(centered, Eigen::ComputeThinV);
  return {svd.matrixV().leftCols(k).transpose(), svd.singularValues(), centered.squaredNorm()};
}

/// ||P_a - P_b||_F for the orthogonal projectors on the row spaces of a and b (orthonormal rows).
template <class DA, class DB>
double subspace_distance(const Eigen::MatrixBase<DA>& a, const Eigen::MatrixBase<DB>& b) {
  const Eigen::MatrixXd pa = a.template cast<double>().transpose() * a.template cast<double>();
  const Eigen::MatrixXd pb = b.template cast<double>().transpose() * b.template cast<double>();
  return (pa - pb).norm();
}

template <class T>
constexpr double tol() {
  return std::is_same_v<T, float> ? 2e-4 : 1e-9;
}

Matrix<double> stack(const std::vector<Matrix<double>>& parts) {
  Index rows = 0;
  for (const auto& p : parts) rows += p.rows();
  Matrix<double> out(rows, parts.front().cols());
  Index at = 0;
  for (const auto& p : parts) {
    out.middleRows(at, p.rows()) = p;
    at += p.rows();
  }
  return out;
}

}  // namespace

TEMPLATE_TEST_CASE("EVA's components span the planted input subspace, as a BDCSVD of all the data", "[eva]", float,
                   double) {
  using T = TestType;
  const Index f = 48;
  const Matrix<double> basis = orthonormal_rows(6, f, 1);
  const std::vector<double> scales{10, 8, 6, 5, 1, 1};
  EvaConfig config;
  config.rank = 4;
  config.tau = 2;  // never converges: every batch is used
  Eva<T> eva(config);
  eva.add_layer("fc", f, 32);
  std::vector<Matrix<double>> seen;
  for (int b = 0; b < 6; ++b) {
    seen.push_back(planted<double>(40, basis, scales, 0.01, 100 + b, 3.0));
    eva.observe("fc", seen.back().cast<T>());
  }
  CHECK(eva.samples_seen("fc") == 240);
  CHECK(eva.components("fc").rows() == 8);  // round(4 * 2)
  const Reference ref = reference_svd(stack(seen), 8);
  // The data has rank 6 plus 1e-2 noise: the top-4 subspace is that of the planted directions.
  // Against the planted directions, up to the sampling error of 240 rows (the 4th and 5th scales are 5 and 1).
  CHECK(subspace_distance(eva.components("fc").topRows(4), basis.topRows(4)) < 0.1);
  CHECK(subspace_distance(eva.components("fc").topRows(6), basis) < 1e-2);
  CHECK(subspace_distance(eva.components("fc").topRows(4), ref.V.topRows(4)) < 1e-3);
  for (Index j = 0; j < 6; ++j) {
    CHECK(static_cast<double>(eva.singular_values("fc")(j)) == Approx(ref.S(j)).epsilon(1e-3));
    CHECK(static_cast<double>(eva.explained_variance_ratio("fc")(j)) ==
          Approx(ref.S(j) * ref.S(j) / ref.total).epsilon(2e-3));
  }
  const auto adapters = eva.make_adapters(LoraConfig{});
  REQUIRE(adapters.contains("fc"));
  CHECK(adapters.at("fc").rank() == 4);  // one layer: the whole budget of 4
  CHECK(adapters.at("fc").A() == eva.components("fc").topRows(4));
}

TEMPLATE_TEST_CASE("EVA converges once successive components agree, then stops updating", "[eva]", float, double) {
  using T = TestType;
  const Index f = 32;
  const Matrix<double> basis = orthonormal_rows(4, f, 2);
  const std::vector<double> scales{8, 4, 2, 1};
  EvaConfig config;
  config.rank = 2;
  config.tau = 0.99;
  Eva<T> eva(config);
  eva.add_layer("a", f, 16);
  eva.add_layer("b", f, 16);
  CHECK_FALSE(eva.converged());
  CHECK(eva.progress() == 0.0);

  // The first update never converges, even when it is exact.
  eva.observe("a", planted<T>(400, basis, scales, 0.0, 1));
  CHECK_FALSE(eva.converged("a"));
  // Noise-free rank-4 data with k = 4: the second batch leaves the components where they were.
  eva.observe("a", planted<T>(400, basis, scales, 0.0, 2));
  CHECK(eva.converged("a"));
  CHECK_FALSE(eva.converged());
  CHECK(eva.progress() == 0.5);
  // A converged layer ignores further batches.
  const Matrix<T> frozen = eva.components("a");
  eva.observe("a", planted<T>(64, orthonormal_rows(4, f, 99), scales, 0.0, 3));
  CHECK(eva.samples_seen("a") == 800);
  CHECK(eva.updates("a") == 2);
  CHECK(eva.components("a") == frozen);

  // Layer b: the second batch comes from an orthogonal subspace, so its components turn and it has not converged.
  Matrix<double> both = orthonormal_rows(8, f, 3);
  eva.observe("b", planted<T>(64, both.topRows(4), scales, 0.0, 4));
  eva.observe("b", planted<T>(64, both.bottomRows(4), {80, 40, 20, 10}, 0.0, 5));
  CHECK_FALSE(eva.converged("b"));
  CHECK(eva.progress() == 0.5);
  // Batches from the mixture keep changing it less and less until it converges.
  int batches = 2;
  while (!eva.converged("b") && batches < 200) {
    Matrix<T> x(64, f);
    x.topRows(32) = planted<T>(32, both.topRows(4), scales, 0.0, 10 + batches);
    x.bottomRows(32) = planted<T>(32, both.bottomRows(4), {80, 40, 20, 10}, 0.0, 500 + batches);
    eva.observe("b", x);
    ++batches;
  }
  CHECK(eva.converged());
  CHECK(eva.progress() == 1.0);
  CHECK(batches > 2);
  CHECK(batches < 200);

  // tau > 1: never converges.
  EvaConfig never = config;
  never.tau = 1.5;
  Eva<T> stubborn(never);
  stubborn.add_layer("a", f, 16);
  for (int b = 0; b < 10; ++b) stubborn.observe("a", planted<T>(64, basis, scales, 0.0, 20 + b));
  CHECK_FALSE(stubborn.converged());
  CHECK(stubborn.samples_seen("a") == 640);
}

TEMPLATE_TEST_CASE("a layer whose inputs have a larger explained variance gets a higher rank", "[eva]", float, double) {
  using T = TestType;
  const Index f = 32;
  EvaConfig config;
  config.rank = 4;  // k = 8, budget 8
  config.tau = 2;
  Eva<T> eva(config);
  eva.add_layer("concentrated", f, 16);
  eva.add_layer("isotropic", f, 16);
  const Matrix<double> six = orthonormal_rows(6, f, 4);
  for (int b = 0; b < 4; ++b) {
    // Six equal directions: each explains 1/6 of the variance; isotropic inputs explain about 1/32 per direction.
    eva.observe("concentrated", planted<T>(100, six, {1, 1, 1, 1, 1, 1}, 0.0, 30 + b));
    eva.observe("isotropic", planted<T>(100, orthonormal_rows(f, f, 5), std::vector<double>(f, 1.0), 0.0, 40 + b));
  }
  const auto ratios = eva.explained_variance_ratio("concentrated");
  CHECK(static_cast<double>(ratios(5)) > 0.1);
  CHECK(static_cast<double>(eva.explained_variance_ratio("isotropic")(0)) < 0.1);
  CHECK(eva.ranks() == std::map<std::string, Index>{{"concentrated", 6}, {"isotropic", 2}});

  // With rank 3 (budget 6) the isotropic layer gets nothing and make_adapters leaves it out, saying so.
  config.rank = 3;
  Eva<T> small(config);
  small.add_layer("concentrated", f, 16);
  small.add_layer("isotropic", f, 16);
  for (int b = 0; b < 4; ++b) {
    small.observe("concentrated", planted<T>(100, six, {1, 1, 1, 1, 1, 1}, 0.0, 30 + b));
    small.observe("isotropic", planted<T>(100, orthonormal_rows(f, f, 5), std::vector<double>(f, 1.0), 0.0, 40 + b));
  }
  CHECK(small.ranks() == std::map<std::string, Index>{{"concentrated", 6}, {"isotropic", 0}});
  const auto adapters = small.make_adapters(LoraConfig{3, 6});
  CHECK(adapters.names() == std::vector<std::string>{"concentrated"});
  CHECK_FALSE(adapters.contains("isotropic"));  // rank 0: left out, as ranks() says
  // A layer's rank is capped by its out_features.
  Eva<T> narrow(config);
  narrow.add_layer("concentrated", f, 2);
  narrow.add_layer("isotropic", f, 16);
  narrow.observe("concentrated", planted<T>(100, six, {1, 1, 1, 1, 1, 1}, 0.0, 30));
  narrow.observe("isotropic", planted<T>(100, orthonormal_rows(f, f, 5), std::vector<double>(f, 1.0), 0.0, 40));
  CHECK(narrow.ranks() == std::map<std::string, Index>{{"concentrated", 2}, {"isotropic", 4}});
}

TEMPLATE_TEST_CASE("layers of one input group share one SVD and get identical A", "[eva]", float, double) {
  using T = TestType;
  const Index f = 24;
  EvaConfig config;
  config.rank = 3;
  config.tau = 2;
  Eva<T> eva(config);
  eva.add_layer("attn.q", f, 24, "attn.in");
  eva.add_layer("attn.k", f, 12, "attn.in");
  eva.add_layer("attn.v", f, 12, "attn.in");
  eva.add_layer("attn.o", f, 24);
  const Matrix<double> basis = orthonormal_rows(6, f, 6);
  for (int b = 0; b < 3; ++b) {
    const Matrix<T> x = planted<T>(50, basis, {6, 5, 4, 3, 2, 1}, 0.05, 60 + b);
    if (b == 1) {
      eva.observe("attn.k", x);  // a layer's name reaches its group
    } else {
      eva.observe("attn.in", x);
    }
    eva.observe("attn.o", planted<T>(50, basis, {1, 1, 1, 1, 1, 1}, 0.05, 70 + b));
  }
  CHECK(eva.samples_seen("attn.q") == 150);
  CHECK(eva.samples_seen("attn.v") == 150);
  CHECK(&eva.components("attn.q") == &eva.components("attn.v"));
  const auto adapters = eva.make_adapters(LoraConfig{3, 3});
  const auto ranks = eva.ranks();
  Index total = 0;
  for (const auto& [name, r] : ranks) total += r;
  CHECK(total == 12);
  const Matrix<T>& Aq = adapters.at("attn.q").A();
  for (const char* name : {"attn.k", "attn.v"}) {
    const Matrix<T>& A = adapters.at(name).A();
    const Index shared = std::min(A.rows(), Aq.rows());
    CHECK(A.topRows(shared) == Aq.topRows(shared));
  }
  CHECK(Aq == eva.components("attn.in").topRows(ranks.at("attn.q")));
}

TEMPLATE_TEST_CASE("merging two workers equals one worker on all the data", "[eva]", float, double) {
  using T = TestType;
  const Index f = 40;
  EvaConfig config;
  config.rank = 4;  // k = 8
  config.tau = 2;
  // Each batch lives in its own 2-dimensional subspace of an 8-dimensional one (k = 8): the streaming SVD is exact.
  const Matrix<double> basis = orthonormal_rows(8, f, 7);
  std::vector<Matrix<double>> batches;
  for (int b = 0; b < 4; ++b) {
    batches.push_back(planted<double>(30, basis.middleRows(2 * b, 2), {4.0 + b, 1.0 + b}, 0.0, 80 + b));
  }
  auto make = [&] {
    Eva<T> eva(config);
    eva.add_layer("x", f, 20);
    eva.add_layer("y", f, 20);
    return eva;
  };
  Eva<T> one = make(), first = make(), second = make();
  for (int b = 0; b < 4; ++b) {
    one.observe("x", batches[static_cast<std::size_t>(b)].cast<T>());
    (b < 2 ? first : second).observe("x", batches[static_cast<std::size_t>(b)].cast<T>());
  }
  // y: only the second worker sees data.
  one.observe("y", batches[0].cast<T>());
  second.observe("y", batches[0].cast<T>());
  first.merge(second);

  const Reference ref = reference_svd(stack(batches), 8);
  for (const Eva<T>* eva : {&one, &first}) {
    CHECK(eva->samples_seen("x") == 120);
    CHECK(subspace_distance(eva->components("x"), ref.V) < 50 * tol<T>());
    for (Index j = 0; j < 8; ++j) {
      CHECK(static_cast<double>(eva->singular_values("x")(j)) == Approx(ref.S(j)).epsilon(10 * tol<T>()));
    }
  }
  CHECK((first.components("x") - one.components("x")).norm() < 50 * tol<T>());
  CHECK(first.components("y") == one.components("y"));
  CHECK(first.samples_seen("y") == 30);
  CHECK(first.updates("x") == 4);
  CHECK(first.ranks() == one.ranks());

  Eva<T> other(config);
  other.add_layer("x", f, 20);
  CHECK_THROWS_AS(first.merge(other), ValueError);
  Eva<T> renamed(config);
  renamed.add_layer("x", f, 20);
  renamed.add_layer("z", f, 20);
  CHECK_THROWS_WITH(first.merge(renamed), Catch::Contains("other's layer 1 is 'z'"));
  CHECK(first.samples_seen("x") == 120);
}

TEMPLATE_TEST_CASE("make_adapters: shapes, zero B, scaling adjustment, whitening", "[eva]", float, double) {
  using T = TestType;
  const Index f = 20;
  EvaConfig config;
  config.rank = 2;
  config.tau = 2;
  const Matrix<double> basis = orthonormal_rows(5, f, 8);
  auto fill = [&](Eva<T>& eva) {
    eva.add_layer("wide", f, 30);
    eva.add_layer("flat", f, 10);
    for (int b = 0; b < 2; ++b) {
      eva.observe("wide", planted<T>(40, basis, {9, 7, 5, 3, 1}, 0.01, 90 + b));
      eva.observe("flat", planted<T>(40, orthonormal_rows(f, f, 12), std::vector<double>(f, 1.0), 0.0, 95 + b));
    }
  };
  Eva<T> eva(config);
  fill(eva);
  const auto ranks = eva.ranks();
  CHECK(ranks.at("wide") + ranks.at("flat") == 4);
  CHECK(ranks.at("wide") > ranks.at("flat"));
  LoraConfig base;
  base.rank = 2;
  base.alpha = 16;
  base.dropout = 0.1;
  base.seed = 5;
  const auto adapters = eva.make_adapters(base);
  for (const auto& [name, lora] : adapters) {
    const Index r = ranks.at(name);
    CHECK(lora.A().rows() == r);
    CHECK(lora.A().cols() == f);
    CHECK(lora.B().rows() == (name == "wide" ? 30 : 10));
    CHECK(lora.B().cols() == r);
    CHECK(lora.B().isZero(0));
    CHECK(lora.A() == eva.components(name).topRows(r));
    CHECK(static_cast<double>(lora.scaling()) == Approx(8.0));  // base.alpha / base.rank
    CHECK(lora.config().alpha == Approx(16.0 * static_cast<double>(r) / 2.0));
    CHECK(lora.config().dropout == 0.1);
    CHECK(lora.config().seed == 5u);
  }
  // rsLoRA: PEFT's rule alpha r_l / r changes the scaling alpha_l / sqrt(r_l) by sqrt(r_l / r) ...
  LoraConfig rs = base;
  rs.use_rslora = true;
  for (const auto& [name, lora] : eva.make_adapters(rs)) {
    const double r = static_cast<double>(ranks.at(name));
    CHECK(lora.config().alpha == Approx(16.0 * r / 2.0));
    CHECK(static_cast<double>(lora.scaling()) == Approx(16.0 * r / 2.0 / std::sqrt(r)));
  }
  // ... and keep_rslora_scaling keeps the base scaling alpha / sqrt(r) exactly.
  EvaConfig keeping = config;
  keeping.keep_rslora_scaling = true;
  Eva<T> kept(keeping);
  fill(kept);
  for (const auto& [name, lora] : kept.make_adapters(rs)) {
    CHECK(static_cast<double>(lora.scaling()) == Approx(16.0 / std::sqrt(2.0)));
  }

  EvaConfig plain = config;
  plain.adjust_scaling_factors = false;
  plain.whiten = true;
  Eva<T> whitened(plain);
  fill(whitened);
  for (const auto& [name, lora] : whitened.make_adapters(base)) {
    const Index r = ranks.at(name);
    CHECK(static_cast<double>(lora.scaling()) == Approx(16.0 / static_cast<double>(r)));
    for (Index j = 0; j < r; ++j) {
      const double sigma = static_cast<double>(whitened.singular_values(name)(j));
      const Matrix<T> expected = whitened.components(name).row(j) / static_cast<T>(std::sqrt(sigma));
      CHECK((lora.A().row(j) - expected).norm() <= tol<T>() * expected.norm());
    }
  }
}

TEST_CASE("select_rows keeps the rows a mask marks", "[eva]") {
  Matrix<float> x(4, 3);
  x << 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12;
  Matrix<float> expected(2, 3);
  expected << 4, 5, 6, 10, 11, 12;
  CHECK(select_rows(x, {false, true, false, true}) == expected);
  CHECK(select_rows(x, {false, false, false, false}).rows() == 0);
  CHECK_THROWS_WITH(select_rows(x, {true, false}), "select_rows: keep has 2 entries, expected x.rows() = 4");
  // An all-padding batch changes nothing.
  Eva<float> eva;
  eva.add_layer("fc", 3, 3);
  eva.observe("fc", select_rows(x, {false, false, false, false}));
  CHECK(eva.samples_seen("fc") == 0);
  eva.observe("fc", select_rows(x, {true, true, false, true}));
  CHECK(eva.samples_seen("fc") == 3);
}

TEST_CASE("Eva rejects bad configs, layers, batches and calls out of order", "[eva]") {
  CHECK_THROWS_AS(Eva<double>(EvaConfig{0}), ValueError);
  CHECK_THROWS_WITH(Eva<double>(EvaConfig{4, 0.5}), "Eva::Eva: config.rho is 0.5, expected a finite value >= 1");
  CHECK_THROWS_AS(Eva<double>(EvaConfig{4, 2, std::nan("")}), ValueError);

  Eva<double> eva;
  CHECK_THROWS_WITH(eva.make_adapters(LoraConfig{}),
                    "Eva::make_adapters: no layers were added, expected add_layer and observe first");
  eva.add_layer("q", 16, 16, "in");
  eva.add_layer("o", 16, 16);
  CHECK_THROWS_AS(eva.add_layer("q", 16, 16), ValueError);
  CHECK_THROWS_AS(eva.add_layer("", 16, 16), ValueError);
  CHECK_THROWS_AS(eva.add_layer("z", 0, 16), ValueError);
  CHECK_THROWS_AS(eva.add_layer("z", 16, 0), ValueError);
  CHECK_THROWS_WITH(eva.add_layer("k", 8, 16, "in"),
                    "Eva::add_layer: layer 'k' has in_features = 8 but its input group 'in' has 16, expected equal "
                    "in_features");
  CHECK_THROWS_AS(eva.add_layer("in", 16, 16, "other"), ValueError);  // 'in' is a group
  CHECK_THROWS_AS(eva.add_layer("v", 16, 16, "q"), ValueError);       // 'q' is a layer of group 'in'
  CHECK(eva.layer_names() == std::vector<std::string>{"q", "o"});

  CHECK_THROWS_WITH(eva.make_adapters(LoraConfig{}),
                    "Eva::make_adapters: layer 'q' has seen no inputs, expected observe before make_adapters");
  Matrix<double> x = Matrix<double>::Random(10, 16);
  CHECK_THROWS_WITH(eva.observe("nope", x),
                    "Eva::observe: no layer or input group named 'nope', expected one added with add_layer");
  CHECK_THROWS_WITH(eva.observe("q", Matrix<double>::Zero(10, 15)),
                    "Eva::observe: inputs has 15 columns, expected in_features = 16");
  x(3, 4) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(eva.observe("q", x), "Eva::observe: inputs[3, 4] is inf, expected a finite value");
  x(3, 4) = std::nan("");
  CHECK_THROWS_AS(eva.observe("in", x), ValueError);
  CHECK(eva.samples_seen("q") == 0);
  CHECK(eva.updates("q") == 0);
  x(3, 4) = 0;
  eva.observe("q", x);
  CHECK_THROWS_AS(eva.add_layer("late", 16, 16), StateError);
  // o has still seen nothing.
  CHECK_THROWS_AS(eva.make_adapters(LoraConfig{}), StateError);
  eva.observe("o", x);
  CHECK_THROWS_AS(eva.make_adapters(LoraConfig{0}), ValueError);
  CHECK(eva.make_adapters(LoraConfig{}).size() == 2);
}

namespace {

/// Steps of AdamW until the held-out loss of `adapters` falls below `target` (or `limit`).
/// Loss: 1/(2n) ||x dW_adapter^T - x dW^T||^2 on the student's own branch (the base weight cancels).
int steps_to_reach(AdapterSet<Lora<double>>& adapters, const Matrix<double>& delta, const Matrix<double>& basis,
                   const std::vector<double>& scales, double noise, double target, int limit) {
  Lora<double>& lora = adapters.at("fc");
  AdamWConfig opt;
  opt.lr = 1e-2;
  opt.weight_decay = 0;
  AdamW<double> adam(adapters.parameters(), opt);
  const Matrix<double> held_out = planted<double>(512, basis, scales, noise, 4242);
  const Matrix<double> held_target = held_out * delta.transpose();
  auto loss = [&] {
    Matrix<double> y = Matrix<double>::Zero(held_out.rows(), delta.rows());
    lora.set_training(false);
    lora.forward(held_out, y);
    lora.set_training(true);
    return (y - held_target).squaredNorm() / (2.0 * static_cast<double>(held_out.rows()));
  };
  for (int step = 0; step < limit; ++step) {
    if (loss() <= target) return step;
    const Matrix<double> x = planted<double>(64, basis, scales, noise, 10000 + static_cast<std::uint64_t>(step));
    Matrix<double> y = Matrix<double>::Zero(x.rows(), delta.rows());
    lora.forward(x, y);
    const Matrix<double> dy = (y - x * delta.transpose()) / static_cast<double>(x.rows());
    adam.zero_grad();
    lora.backward(x, dy);
    adam.step();
  }
  return limit;
}

}  // namespace

TEST_CASE("EVA's point: an EVA-initialized adapter learns a principal-subspace update in fewer steps", "[eva]") {
  // Inputs: a 4-dimensional principal subspace (variances 16 .. 6) plus small isotropic noise. The target
  // update dW = C P has its row space in that subspace; both students have rank 4, alpha 4, lr 1e-2.
  const Index f = 256, out = 32, rank = 4;
  const Matrix<double> basis = orthonormal_rows(rank, f, 9);
  const std::vector<double> scales{4, 3.5, 3, 2.5};
  const double noise = 0.3;
  Matrix<double> C(out, rank);
  Rng(10).fill_normal(C, 0.0, 0.5);
  const Matrix<double> delta = C * basis;

  EvaConfig config;
  config.rank = rank;
  Eva<double> eva(config);
  eva.add_layer("fc", f, out);
  int batches = 0;
  while (!eva.converged() && batches < 50) {
    eva.observe("fc", planted<double>(64, basis, scales, noise, 500 + static_cast<std::uint64_t>(batches)));
    ++batches;
  }
  REQUIRE(eva.converged());
  LoraConfig base;
  base.rank = rank;
  base.alpha = rank;
  AdapterSet<Lora<double>> eva_set = eva.make_adapters(base);
  AdapterSet<Lora<double>> kaiming_set;
  kaiming_set.add("fc", Lora<double>(f, out, base));

  const Matrix<double> probe = planted<double>(512, basis, scales, noise, 4242);
  const double initial = (probe * delta.transpose()).squaredNorm() / (2.0 * 512);
  const double target = 1e-2 * initial;
  const int limit = 4000;
  const int eva_steps = steps_to_reach(eva_set, delta, basis, scales, noise, target, limit);
  const int kaiming_steps = steps_to_reach(kaiming_set, delta, basis, scales, noise, target, limit);
  WARN("steps to 1% of the initial loss: EVA " << eva_steps << ", Kaiming " << kaiming_steps
                                               << " (EVA statistics from " << batches << " batches)");
  CHECK(eva_steps < limit);
  CHECK(eva_steps < kaiming_steps);
}

TEST_CASE("Eva: an empty batch changes nothing, and a huge rho keeps every component", "[eva]") {
  EvaConfig config;
  config.rank = 2;
  Eva<double> eva(config);
  eva.add_layer("a", 6, 4);
  eva.observe("a", Matrix<double>(0, 6));  // documented as changing nothing: layers may still be added
  CHECK_NOTHROW(eva.add_layer("b", 6, 4));
  CHECK(eva.samples_seen("a") == 0);

  for (double rho : {1e6, 1e300}) {
    EvaConfig wide = config;
    wide.rho = rho;
    Eva<double> huge(wide);
    huge.add_layer("a", 6, 4);
    huge.observe("a", testing::random_matrix<double>(20, 6, 3));
    CHECK(huge.components("a").rows() == 6);  // min(round(r rho), in), never an overflow to 1
  }
}

}  // namespace lorakit_test_eva
