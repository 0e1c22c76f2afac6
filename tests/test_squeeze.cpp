// rank/squeeze.hpp and rank/rank_schedule.hpp: LoRA-Squeeze against Eigen's BDCSVD of the dense update,
// constructed spectra, a brute-force budget optimum, and a teacher-student training run.
#include <catch2/catch.hpp>

#include <lorakit/core/random.hpp>
#include <lorakit/optim/adamw.hpp>
#include <lorakit/rank/squeeze.hpp>

#include <Eigen/Dense>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

namespace lorakit_test_squeeze {

using namespace lorakit;

namespace {

template <class T>
Matrix<T> normal_matrix(Index rows, Index cols, std::uint64_t seed, double stddev = 1.0) {
  Matrix<T> m(rows, cols);
  Rng(seed, 7).fill_normal(m, T(0), static_cast<T>(stddev));
  return m;
}

/// [rows x cols] with orthonormal columns (cols <= rows).
Matrix<double> orthonormal_columns(Index rows, Index cols, std::uint64_t seed) {
  const Eigen::MatrixXd g = normal_matrix<double>(rows, cols, seed);
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(g);
  return qr.householderQ() * Eigen::MatrixXd::Identity(rows, cols);
}

LoraConfig lora_config(Index rank, double alpha, bool rslora = false) {
  LoraConfig c;
  c.rank = rank;
  c.alpha = alpha;
  c.use_rslora = rslora;
  c.seed = 3;
  return c;
}

/// An adapter with random, non-zero factors.
template <class T>
Lora<T> random_lora(Index in, Index out, Index rank, double alpha, std::uint64_t seed, bool rslora = false) {
  return Lora<T>::from_factors(normal_matrix<T>(rank, in, seed, 0.5), normal_matrix<T>(out, rank, seed + 1, 0.5),
                               lora_config(rank, alpha, rslora));
}

/// An adapter whose update has exactly the singular values `sigma` (random singular vectors), with s = 1.
Lora<double> lora_with_spectrum(Index in, Index out, const std::vector<double>& sigma, std::uint64_t seed) {
  const auto r = static_cast<Index>(sigma.size());
  const Eigen::VectorXd s = Eigen::Map<const Eigen::VectorXd>(sigma.data(), r);
  Matrix<double> B = orthonormal_columns(out, r, seed) * s.asDiagonal();
  Matrix<double> A = orthonormal_columns(in, r, seed + 1).transpose();
  return Lora<double>::from_factors(std::move(A), std::move(B), lora_config(r, static_cast<double>(r)));
}

/// The best rank-k approximation of m, from Eigen's BDCSVD (the independent truth).
Matrix<double> truncated(const Matrix<double>& m, Index k) {
  Eigen::BDCSVD<Eigen::MatrixXd> svd(m, Eigen::ComputeThinU | Eigen::ComputeThinV);
  return svd.matrixU().leftCols(k) * svd.singularValues().head(k).asDiagonal() * svd.matrixV().leftCols(k).transpose();
}

double relative(const Matrix<double>& a, const Matrix<double>& b) { return (a - b).norm() / b.norm(); }

template <class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const ValueError& e) {
    return e.what();
  }
  return "(no ValueError)";
}

}  // namespace

TEST_CASE("squeeze gives the rank-k truncation of the dense update", "[squeeze]") {
  for (bool rslora : {false, true}) {
    const Lora<double> source = random_lora<double>(50, 40, 12, 24, 21, rslora);
    const Matrix<double> dense = source.delta_weight();
    for (Index k : {1, 5, 11, 12}) {
      const Lora<double> squeezed = squeeze(source, k);
      INFO("rslora " << rslora << ", k " << k);
      CHECK(squeezed.rank() == k);
      CHECK(squeezed.in_features() == 50);
      CHECK(squeezed.out_features() == 40);
      CHECK(relative(squeezed.delta_weight(), truncated(dense, k)) < 1e-10);
      CHECK(squeezed.config().use_rslora == rslora);
      CHECK(squeezed.grad_A().isZero(0));
      CHECK(squeezed.grad_B().isZero(0));
    }
  }
}

TEST_CASE("squeeze in float matches the double truncation", "[squeeze]") {
  const Lora<float> source = random_lora<float>(60, 30, 16, 16, 5);
  const Lora<float> squeezed = squeeze(source, 6);
  const Matrix<double> dense = source.delta_weight().cast<double>();
  CHECK(relative(squeezed.delta_weight().cast<double>(), truncated(dense, 6)) < 1e-5);
}

TEST_CASE("keep_scaling keeps s and sets alpha = s k (s sqrt(k) with rsLoRA), otherwise alpha is kept", "[squeeze]") {
  const Lora<double> plain = random_lora<double>(30, 20, 16, 32, 8);  // s = 2
  const Lora<double> kept = squeeze(plain, 4);
  CHECK(kept.scaling() == Approx(2.0).epsilon(1e-15));
  CHECK(kept.config().alpha == Approx(8.0).epsilon(1e-15));

  const Lora<double> rs = random_lora<double>(30, 20, 16, 32, 8, true);  // s = 32 / 4 = 8
  const Lora<double> rs_kept = squeeze(rs, 9);
  CHECK(rs_kept.scaling() == Approx(8.0).epsilon(1e-15));
  CHECK(rs_kept.config().alpha == Approx(24.0).epsilon(1e-15));

  SqueezeOptions keep_alpha;
  keep_alpha.keep_scaling = false;
  const Lora<double> moved = squeeze(plain, 4, keep_alpha);
  CHECK(moved.config().alpha == 32.0);
  CHECK(moved.scaling() == Approx(8.0).epsilon(1e-15));
  CHECK(relative(moved.delta_weight(), truncated(plain.delta_weight(), 4)) < 1e-10);
  const Lora<double> rs_moved = squeeze(rs, 9, keep_alpha);
  CHECK(rs_moved.scaling() == Approx(32.0 / 3.0).epsilon(1e-15));
  CHECK(relative(rs_moved.delta_weight(), truncated(rs.delta_weight(), 9)) < 1e-10);
}

TEST_CASE("squeeze splits the singular values evenly: B = U sqrt(S / s), A = sqrt(S / s) V^T", "[squeeze]") {
  const Lora<double> source = random_lora<double>(40, 35, 10, 5, 13);  // s = 0.5
  const Lora<double> squeezed = squeeze(source, 6);
  Eigen::BDCSVD<Eigen::MatrixXd> svd(source.delta_weight());
  const Eigen::VectorXd expected = (svd.singularValues().head(6) / 0.5).cwiseSqrt();
  // B^T B = A A^T = diag(S / s): orthogonal columns of B, orthogonal rows of A, equal norms.
  const Eigen::MatrixXd btb = squeezed.B().transpose() * squeezed.B();
  const Eigen::MatrixXd aat = squeezed.A() * squeezed.A().transpose();
  const Eigen::MatrixXd target = expected.array().square().matrix().asDiagonal();
  CHECK((btb - target).norm() < 1e-10 * target.norm());
  CHECK((aat - target).norm() < 1e-10 * target.norm());
}

TEST_CASE("squeeze handles a negative scaling and keeps the adapter's settings", "[squeeze]") {
  LoraConfig c = lora_config(8, -4);
  c.dropout = 0.25;
  c.seed = 77;
  Lora<double> source =
      Lora<double>::from_factors(normal_matrix<double>(8, 20, 1), normal_matrix<double>(15, 8, 2), c);
  source.set_training(false);
  const Lora<double> squeezed = squeeze(source, 3);
  CHECK(squeezed.scaling() == Approx(-0.5).epsilon(1e-15));
  CHECK(relative(squeezed.delta_weight(), truncated(source.delta_weight(), 3)) < 1e-10);
  CHECK(squeezed.config().dropout == 0.25);
  CHECK(squeezed.config().seed == 77);
  CHECK_FALSE(squeezed.training());
}

TEST_CASE("squeeze rejects target ranks outside [1, source rank]", "[squeeze]") {
  const Lora<double> source = random_lora<double>(20, 20, 6, 6, 1);
  CHECK(message_of([&] { (void)squeeze(source, 0); }) ==
        "squeeze: target_rank is 0, expected 1 <= target_rank <= source rank = 6");
  CHECK(message_of([&] { (void)squeeze(source, 7); }) ==
        "squeeze: target_rank is 7, expected 1 <= target_rank <= source rank = 6");
  LoraConfig zero = lora_config(6, 0);
  const auto degenerate = Lora<double>::from_factors(source.A(), source.B(), zero);
  CHECK_THROWS_AS(squeeze(degenerate, 2), ValueError);
}

TEST_CASE("rank_for_energy on a constructed spectrum", "[squeeze]") {
  // sigma^2 = 16, 9, 4, 1, 0.25: total 30.25, prefix sums 16, 25, 29, 30, 30.25.
  const Lora<double> a = lora_with_spectrum(30, 25, {4, 3, 2, 1, 0.5}, 40);
  const Eigen::VectorXd sigma = update_singular_values(a);
  CHECK((sigma - Eigen::Vector<double, 5>(4, 3, 2, 1, 0.5)).norm() < 1e-12);
  CHECK(rank_for_energy(a, 1e-6) == 1);
  CHECK(rank_for_energy(a, 16 / 30.25) == 1);
  CHECK(rank_for_energy(a, 16.01 / 30.25) == 2);
  CHECK(rank_for_energy(a, 25 / 30.25) == 2);
  CHECK(rank_for_energy(a, 0.9) == 3);  // 27.2 needed
  CHECK(rank_for_energy(a, 29.5 / 30.25) == 4);
  CHECK(rank_for_energy(a, 30.1 / 30.25) == 5);
  CHECK(rank_for_energy(a, 1.0) == 5);
  // A rank-deficient update: 100% of the energy sits in its first 2 directions.
  const Lora<double> deficient = lora_with_spectrum(30, 25, {2, 1, 0, 0}, 41);
  CHECK(rank_for_energy(deficient, 1.0) == 2);
  // A zero update (B = 0 at initialization) needs the smallest rank.
  const Lora<double> zero(30, 25, lora_config(4, 4));
  CHECK(rank_for_energy(zero, 0.5) == 1);
  for (double bad : {0.0, -0.1, 1.5, std::nan("")}) {
    CHECK_THROWS_AS(rank_for_energy(a, bad), ValueError);
  }
  CHECK(message_of([&] { (void)rank_for_energy(a, 1.5); }) ==
        "rank_for_energy: energy is 1.5, expected a value in (0, 1]");
}

TEST_CASE("squeeze_dense approximates the truncation of a dense update", "[squeeze]") {
  // Exactly rank 6: the randomized SVD recovers it to rounding.
  const Matrix<double> low = normal_matrix<double>(70, 6, 50) * normal_matrix<double>(6, 90, 51);
  const Lora<double> exact = squeeze_dense<double>(low, 6, lora_config(99, 12));
  CHECK(exact.rank() == 6);
  CHECK(exact.scaling() == Approx(2.0).epsilon(1e-15));
  CHECK(relative(exact.delta_weight(), low) < 1e-10);
  // A decaying spectrum: within 5% of the optimal rank-5 error (two power iterations).
  const Eigen::VectorXd decay = Eigen::VectorXd::LinSpaced(40, 0, 39).unaryExpr([](double j) { return std::pow(0.8, j); });
  const Matrix<double> dense = orthonormal_columns(70, 40, 52) * decay.asDiagonal() * orthonormal_columns(90, 40, 53).transpose();
  const Lora<double> approx = squeeze_dense<double>(dense, 5, lora_config(5, 5));
  const double optimal = (dense - truncated(dense, 5)).norm();
  CHECK((approx.delta_weight() - dense).norm() <= 1.05 * optimal);
  CHECK_THROWS_AS(squeeze_dense<double>(dense, 0, lora_config(5, 5)), ValueError);
  CHECK_THROWS_AS(squeeze_dense<double>(dense, 71, lora_config(5, 5)), ValueError);
}

namespace {

/// Energy fractions sigma_j^2 / sum sigma^2 of a spectrum.
std::vector<double> fractions(const std::vector<double>& sigma) {
  double total = 0;
  for (double s : sigma) total += s * s;
  std::vector<double> out;
  for (double s : sigma) out.push_back(s * s / total);
  return out;
}

/// Brute force: the ranks (1 <= r_l <= |spectrum_l|) maximizing the kept energy fractions under a cost bound.
std::vector<Index> best_allocation(const std::vector<std::vector<double>>& spectra, const std::vector<double>& costs,
                                   double budget) {
  std::vector<Index> best, current(spectra.size());
  double best_score = -1;
  std::function<void(std::size_t, double, double)> visit = [&](std::size_t l, double cost, double score) {
    if (cost > budget) return;
    if (l == spectra.size()) {
      if (score > best_score) best_score = score, best = current;
      return;
    }
    const std::vector<double> f = fractions(spectra[l]);
    double kept = 0;
    for (std::size_t r = 1; r <= f.size(); ++r) {
      kept += f[r - 1];
      current[l] = static_cast<Index>(r);
      visit(l + 1, cost + costs[l] * static_cast<double>(r), score + kept);
    }
  };
  visit(0, 0, 0);
  return best;
}

}  // namespace

TEST_CASE("squeezing a set under a budget keeps the total and follows the spectra", "[squeeze][budget]") {
  const std::vector<std::vector<double>> spectra{
      {10, 1, 0.5, 0.2, 0.1, 0.05},  // concentrated: one rank holds most of it
      {3, 2.9, 2.8, 2.7, 2.6, 2.5},  // flat: every rank counts
      {5, 3, 1.5, 0.8, 0.4, 0.2}};   // in between
  const std::vector<std::string> names{"h.0.q", "h.0.v", "h.1.q"};
  const std::vector<Index> ins{30, 24, 40}, outs{20, 28, 16};
  auto build = [&] {
    AdapterSet<Lora<double>> set;
    for (std::size_t l = 0; l < 3; ++l) set.add(names[l], lora_with_spectrum(ins[l], outs[l], spectra[l], 60 + l));
    return set;
  };

  SECTION("a rank budget") {
    for (double total : {3.0, 7.0, 10.0, 12.5, 18.0, 40.0}) {
      AdapterSet<Lora<double>> set = build();
      std::vector<Matrix<double>> before;
      for (auto& [name, a] : set) before.push_back(a.delta_weight());
      const auto ranks = squeeze(set, RankBudget::ranks(total));
      const std::vector<Index> expected = best_allocation(spectra, {1, 1, 1}, std::floor(total));
      Index sum = 0;
      for (std::size_t l = 0; l < 3; ++l) {
        INFO("total " << total << ", layer " << names[l]);
        CHECK(ranks.at(names[l]) == expected[l]);
        CHECK(set.at(names[l]).rank() == expected[l]);
        CHECK(relative(set.at(names[l]).delta_weight(), truncated(before[l], expected[l])) < 1e-10);
        sum += ranks.at(names[l]);
      }
      CHECK(sum <= std::min<double>(std::floor(total), 18));
    }
  }

  SECTION("a parameter budget") {
    const std::vector<double> costs{50, 52, 56};
    for (double total : {158.0, 500.0, 700.0}) {
      AdapterSet<Lora<double>> set = build();
      const auto ranks = squeeze(set, RankBudget::parameters(total));
      double spent = 0;
      for (std::size_t l = 0; l < 3; ++l) {
        spent += costs[l] * static_cast<double>(ranks.at(names[l]));
        CHECK(ranks.at(names[l]) >= 1);
        CHECK(set.at(names[l]).num_parameters() == ranks.at(names[l]) * static_cast<Index>(costs[l]));
      }
      CHECK(spent <= total);
    }
    // Greedy by energy per parameter: the flat layer's second rank (0.164 / 52) outbids the concentrated
    // layer's second (0.0098 / 50) and the middle layer's second (0.235 / 56 = 0.0042 > 0.164 / 52 = 0.0032).
    AdapterSet<Lora<double>> set = build();
    const auto ranks = squeeze(set, RankBudget::parameters(158 + 56 + 52));
    CHECK(ranks == std::map<std::string, Index>{{"h.0.q", 1}, {"h.0.v", 2}, {"h.1.q", 2}});
  }

  SECTION("layers that keep their rank are untouched, and a budget below one rank per layer changes nothing") {
    AdapterSet<Lora<double>> set = build();
    const double* untouched = set.at("h.0.v").A().data();
    const auto ranks = squeeze(set, RankBudget::ranks(13));
    REQUIRE(ranks.at("h.0.v") == 6);
    CHECK(set.at("h.0.v").A().data() == untouched);

    AdapterSet<Lora<double>> other = build();
    CHECK(message_of([&] { (void)squeeze(other, RankBudget::ranks(2)); }) ==
          "squeeze(AdapterSet): the budget of 2 ranks is below the 3 that the layers' min_rank require");
    for (auto& [name, a] : other) CHECK(a.rank() == 6);
  }

  SECTION("with an optimizer, the squeezed layers get fresh state of the new shapes") {
    AdapterSet<Lora<double>> set = build();
    AdamW<double> optimizer(set.parameters());
    for (int i = 0; i < 3; ++i) optimizer.step();
    const auto ranks = squeeze(set, RankBudget::ranks(9), optimizer);
    for (const auto& name : names) {
      const Lora<double>& a = set.at(name);
      const bool squeezed = ranks.at(name) < 6;
      CHECK(optimizer.first_moment(name + ".A").size() == a.A().size());
      CHECK(optimizer.first_moment(name + ".B").size() == a.B().size());
      CHECK(optimizer.steps(name + ".A") == (squeezed ? 0 : 3));
    }
  }
}

TEST_CASE("RankSchedule stages, boundaries and errors", "[squeeze][schedule]") {
  using Stage = RankSchedule::Stage;
  auto starts = [](const RankSchedule& s) {
    std::vector<long long> out;
    for (const Stage& stage : s.stages()) out.push_back(stage.start_step);
    return out;
  };
  auto ranks = [](const RankSchedule& s) {
    std::vector<Index> out;
    for (const Stage& stage : s.stages()) out.push_back(stage.rank);
    return out;
  };

  const RankSchedule halving = RankSchedule::geometric(32, 4, 400);
  CHECK(ranks(halving) == std::vector<Index>{32, 16, 8, 4});
  CHECK(starts(halving) == std::vector<long long>{0, 100, 200, 300});
  CHECK(halving.source_rank() == 32);
  CHECK(halving.target_rank() == 4);
  CHECK(halving.rank_at(0) == 32);
  CHECK(halving.rank_at(99) == 32);
  CHECK(halving.rank_at(100) == 16);
  CHECK(halving.rank_at(299) == 8);
  CHECK(halving.rank_at(10000) == 4);
  CHECK(halving.stage_at(250) == 2);
  CHECK(halving.is_boundary(200));
  CHECK_FALSE(halving.is_boundary(0));
  CHECK_FALSE(halving.is_boundary(201));

  const RankSchedule by_default(32, 4, 400);
  CHECK(ranks(by_default) == ranks(halving));
  CHECK(starts(by_default) == starts(halving));
  CHECK(ranks(RankSchedule::geometric(32, 6, 100)) == std::vector<Index>{32, 16, 8, 6});
  CHECK(ranks(RankSchedule::geometric(8, 8, 5)) == std::vector<Index>{8});
  // Too many halvings for 12 steps of at least 4: the source, the target and one rank between.
  CHECK(ranks(RankSchedule::geometric(64, 2, 12, 4)) == std::vector<Index>{64, 16, 2});
  CHECK(ranks(RankSchedule::geometric(64, 2, 11, 4)) == std::vector<Index>{64, 2});

  // Equal shares: 10 steps over 3 stages start at 0, 3, 6 (3, 3 and 4 steps).
  const RankSchedule listed = RankSchedule::from_ranks({24, 12, 5}, 10);
  CHECK(starts(listed) == std::vector<long long>{0, 3, 6});
  const RankSchedule cont = RankSchedule::cont_squeeze(32, 8, 150);
  CHECK(cont.num_stages() == 2);
  CHECK(cont.rank_at(149) == 32);
  CHECK(cont.rank_at(150) == 8);

  CHECK(message_of([] { (void)RankSchedule::from_ranks({16, 16, 4}, 30); }) ==
        "RankSchedule::from_stages: stages[1].rank = 16 is not below stages[0].rank = 16, expected strictly "
        "decreasing ranks");
  CHECK_THROWS_AS(RankSchedule::from_ranks({8, 16}, 30), ValueError);
  CHECK_THROWS_AS(RankSchedule::from_ranks({}, 30), ValueError);
  CHECK_THROWS_AS(RankSchedule::from_ranks({8, 0}, 30), ValueError);
  CHECK(message_of([] { (void)RankSchedule::from_ranks({16, 8, 4}, 5, 2); }) ==
        "RankSchedule::from_ranks: total_steps is 5, expected at least 6 (3 stages of at least min_steps_per_stage = "
        "2 steps)");
  CHECK_THROWS_AS(RankSchedule::from_ranks({16, 8}, 30, 0), ValueError);
  CHECK_THROWS_AS(RankSchedule::geometric(8, 16, 30), ValueError);
  CHECK_THROWS_AS(RankSchedule::geometric(8, 0, 30), ValueError);
  CHECK_THROWS_AS(RankSchedule::geometric(64, 2, 7, 4), ValueError);
  CHECK_THROWS_AS(RankSchedule::cont_squeeze(8, 8, 10), ValueError);
  CHECK_THROWS_AS(RankSchedule::cont_squeeze(32, 8, 0), ValueError);
  CHECK_THROWS_AS(RankSchedule::from_stages({{32, 1}, {8, 10}}), ValueError);
  CHECK_THROWS_AS(RankSchedule::from_stages({{32, 0}, {16, 10}, {8, 10}}), ValueError);
}

namespace {

/// A teacher-student regression: learn dW* (out x in) through the adapter, y = s x A^T B^T, from targets
/// x dW*^T + e with fresh standard normal inputs x and label noise e ~ N(0, noise^2) each step (the same
/// stream for every run built from the same seed).
struct TeacherStudent {
  Index in, out, batch;
  double noise;
  Matrix<double> teacher;  // dW*
  Rng data;

  TeacherStudent(Index in_, Index out_, const std::vector<double>& sigma, Index batch_, double noise_,
                 std::uint64_t seed)
      : in(in_), out(out_), batch(batch_), noise(noise_), data(seed, 1) {
    const auto r = static_cast<Index>(sigma.size());
    const Eigen::VectorXd s = Eigen::Map<const Eigen::VectorXd>(sigma.data(), r);
    teacher = orthonormal_columns(out, r, seed) * s.asDiagonal() * orthonormal_columns(in, r, seed + 1).transpose();
  }

  /// Population loss for x ~ N(0, I): E ||(dW - dW*) x||^2 / E ||dW* x||^2 = ||dW - dW*||_F^2 / ||dW*||_F^2.
  double loss(const AdapterSet<Lora<double>>& set) const {
    return (set.at("layer").delta_weight() - teacher).squaredNorm() / teacher.squaredNorm();
  }

  /// One AdamW step on the mean squared error of a fresh batch.
  void step(AdapterSet<Lora<double>>& set, AdamW<double>& optimizer) {
    Lora<double>& adapter = set.at("layer");
    x_.resize(batch, in);
    e_.resize(batch, out);
    data.fill_normal(x_, 0.0, 1.0);
    data.fill_normal(e_, 0.0, noise);
    y_.setZero(batch, out);
    adapter.forward(x_, y_);
    const Matrix<double> dy = (y_ - x_ * teacher.transpose() - e_) * (2.0 / static_cast<double>(y_.size()));
    optimizer.zero_grad();
    adapter.backward(x_, dy);
    optimizer.step();
  }

 private:
  Matrix<double> x_, y_, e_;
};

AdapterSet<Lora<double>> single(Index in, Index out, Index rank, std::uint64_t seed) {
  LoraConfig c = lora_config(rank, static_cast<double>(rank));  // s = 1 at every rank
  c.seed = seed;
  AdapterSet<Lora<double>> set;
  set.add("layer", Lora<double>(in, out, c));
  return set;
}

AdamWConfig adamw(double lr) {
  AdamWConfig c;
  c.lr = lr;
  c.weight_decay = 0;
  return c;
}

}  // namespace

TEST_CASE("RankAnnealer squeezes at the boundaries, rebinds AdamW, and training goes on", "[squeeze][schedule]") {
  TeacherStudent problem(24, 20, {3, 2, 1.5, 1, 0.7, 0.5}, 32, 0.0, 9);
  AdapterSet<Lora<double>> set = single(24, 20, 16, 1);
  set.add("other", Lora<double>(10, 12, lora_config(4, 4)));  // already at or below every stage's rank: untouched
  AdamW<double> optimizer(set.parameters(), adamw(3e-3));
  const RankAnnealer annealer(RankSchedule::from_ranks({16, 8, 6}, 300));

  std::vector<RankChange> changes;
  std::vector<double> after_first_step, stage_end;  // the loss one step after each squeeze, and at the stage's end
  for (long long step = 0; step < 300; ++step) {
    const double before = problem.loss(set);
    if (auto change = annealer.on_step(step, set, optimizer)) {
      if (!changes.empty()) stage_end.push_back(before);
      changes.push_back(*change);
      const Lora<double>& a = set.at("layer");
      CHECK(optimizer.first_moment("layer.A").size() == a.A().size());
      CHECK(optimizer.second_moment("layer.B").size() == a.B().size());
      CHECK(optimizer.steps("layer.A") == 0);
      CHECK(optimizer.steps("layer.B") == 0);
      CHECK(optimizer.steps("other.A") == step);
      CHECK_FALSE(annealer.on_step(step, set, optimizer).has_value());  // idempotent within a stage
    }
    problem.step(set, optimizer);
    if (!changes.empty() && changes.back().step == step) after_first_step.push_back(problem.loss(set));
  }
  stage_end.push_back(problem.loss(set));
  REQUIRE(changes.size() == 2);
  CHECK(changes[0].step == 100);
  CHECK(changes[0].stage == 1);
  CHECK(changes[0].ranks == std::map<std::string, Index>{{"layer", 8}});
  CHECK(changes[1].step == 200);
  CHECK(changes[1].stage == 2);
  CHECK(changes[1].ranks == std::map<std::string, Index>{{"layer", 6}});
  CHECK(set.at("layer").rank() == 6);
  CHECK(set.at("other").rank() == 4);
  CHECK(optimizer.steps("layer.A") == 100);
  REQUIRE(after_first_step.size() == 2);
  REQUIRE(stage_end.size() == 2);
  for (std::size_t i = 0; i < 2; ++i) {
    INFO("stage " << i + 1 << ": loss after its first step " << after_first_step[i] << ", at its end " << stage_end[i]);
    CHECK(stage_end[i] < 0.5 * after_first_step[i]);
  }
}

TEST_CASE("RankAnnealer checks the optimizer before changing anything", "[squeeze][schedule]") {
  AdapterSet<Lora<double>> set;
  set.add("a", random_lora<double>(12, 10, 8, 8, 4));
  set.add("b", random_lora<double>(12, 10, 8, 8, 5));
  std::vector<Parameter<double>> only_a;
  for (auto& p : set.parameters()) {
    if (p.name.rfind("a.", 0) == 0) only_a.push_back(p);
  }
  AdamW<double> optimizer(only_a);
  const RankAnnealer annealer(RankSchedule::cont_squeeze(8, 2, 5));
  CHECK_FALSE(annealer.on_step(4, set, optimizer).has_value());
  CHECK(message_of([&] { (void)annealer.on_step(5, set, optimizer); }) ==
        "RankAnnealer::on_step: the optimizer has no parameter named 'b.A', expected it to be built over the set's "
        "parameters()");
  CHECK(set.at("a").rank() == 8);
  CHECK(set.at("b").rank() == 8);
  CHECK(optimizer.first_moment("a.A").size() == 8 * 12);
  // Without an optimizer the caller rebinds its own.
  const auto change = annealer.on_step(5, set);
  REQUIRE(change.has_value());
  CHECK(change->ranks == std::map<std::string, Index>{{"a", 2}, {"b", 2}});
}

TEST_CASE("LoRA-Squeeze's claim: rank 32 squeezed to 8 then trained beats rank 8 trained directly",
          "[squeeze][method]") {
  // A rank-8 teacher with a spread spectrum and noisy labels (noise std 0.5, about half the signal's per-output
  // std). Both runs take 300 steps on the same data stream with the same AdamW settings and s = 1; the squeezed
  // run trains at rank 32 for 200 steps, is squeezed to 8 (fresh AdamW moments) and trains 100 more. Each run's
  // best loss over the same learning-rate grid is compared. (Without label noise, rank 8 trained directly with
  // the best rate wins: see docs/squeeze.md on what AdamW's moment reset costs a converged adapter.)
  const std::vector<double> sigma{4, 3, 2.2, 1.6, 1.2, 0.9, 0.6, 0.4};
  const Index in = 48, out = 40, batch = 32;
  const long long total = 300, squeeze_step = 200;
  auto run = [&](Index start_rank, double lr) {
    TeacherStudent problem(in, out, sigma, batch, 0.5, 17);
    AdapterSet<Lora<double>> set = single(in, out, start_rank, 5);
    AdamW<double> optimizer(set.parameters(), adamw(lr));
    const RankSchedule schedule = start_rank > 8 ? RankSchedule::cont_squeeze(start_rank, 8, squeeze_step)
                                                 : RankSchedule::from_stages({{8, 0}});
    const RankAnnealer annealer(schedule);
    for (long long step = 0; step < total; ++step) {
      annealer.on_step(step, set, optimizer);
      problem.step(set, optimizer);
    }
    REQUIRE(set.at("layer").rank() == 8);
    return problem.loss(set);
  };
  double direct = std::numeric_limits<double>::infinity(), squeezed = direct;
  for (double lr : {3e-3, 1e-2, 3e-2}) {
    const double d = run(8, lr), s = run(32, lr);
    WARN("lr " << lr << ": rank 8 directly " << d << ", rank 32 -> squeeze -> 8 " << s);
    direct = std::min(direct, d);
    squeezed = std::min(squeezed, s);
  }
  WARN("best relative loss ||dW - dW*||^2 / ||dW*||^2: rank 8 directly " << direct << ", squeezed " << squeezed);
  CHECK(squeezed <= direct);
}

}  // namespace lorakit_test_squeeze
