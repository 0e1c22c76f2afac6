// The claims section and table cells of the examples' studies (examples/common/claims.hpp) against hand-computed
// intervals, and the one-process behaviour of their data-parallel glue (examples/common/data_parallel.hpp, built
// here without MPI: every call must be the identity, so that a study gives the same numbers in both builds).
#include "common/claims.hpp"
#include "common/data_parallel.hpp"

#include <catch2/catch.hpp>

#include <lorakit/init/lora_da.hpp>

namespace lorakit_test_examples_claims {

namespace {

using namespace lorakit_examples;

TEST_CASE("interval_text: mean and 95% t interval, scaled", "[claims]") {
  // 0.7, 0.8, 0.9: mean 0.8, sd 0.1, half width t(2) * 0.1 / sqrt(3) = 4.302653 * 0.057735 = 0.248414.
  CHECK(interval_text({0.7, 0.8, 0.9}, 100, "%.2f") == "80.00 [55.16, 104.84]");
  CHECK(interval_text({0.5}, 100, "%.1f") == "50.0 (one seed: no interval)");
  CHECK_THROWS_AS(interval_text({0.5, std::nan("")}, 100, "%.2f"), lorakit::ValueError);
}

TEST_CASE("read_claims pairs the seeds and gives the verdict words", "[claims]") {
  // method - baseline per seed: 0.010, 0.012, 0.008, 0.011, 0.009 (mean 0.01, sd 0.0015811, half width
  // 2.776445 * 0.0015811 / sqrt(5) = 0.0019632): separable although the baseline's spread is ten times larger.
  const std::map<std::string, std::vector<double>> values = {
      {"base", {0.70, 0.75, 0.80, 0.72, 0.78}},
      {"better", {0.710, 0.762, 0.808, 0.731, 0.789}},
      {"worse", {0.69, 0.74, 0.79, 0.71, 0.77}},
      {"level", {0.71, 0.74, 0.81, 0.71, 0.79}},
      {"one seed", {0.9}},
  };
  const std::vector<Claim> claims = {{"better beats base", "better", "base"},
                                     {"worse beats base", "worse", "base"},
                                     {"level beats base", "level", "base"},
                                     {"a missing row", "absent", "base"}};
  const auto readings = read_claims(claims, values, false);
  REQUIRE(readings.size() == 3);  // the claim with a missing row is left out
  CHECK(readings[0].difference.mean == Approx(0.01).epsilon(1e-9));
  CHECK(readings[0].difference.half_width() == Approx(2.776445 * 0.0015811388 / std::sqrt(5.0)).epsilon(1e-6));
  CHECK(std::string(readings[0].verdict) == kHolds);
  CHECK(std::string(readings[1].verdict) == kDoesNotHold);  // exactly 0.01 lower on every seed
  CHECK(std::string(readings[2].verdict) == kNotSeparable);  // differences +0.01, -0.01, +0.01, -0.01, +0.01
  // With lower-is-better metrics the same interval reads the other way.
  CHECK(std::string(read_claims(claims, values, true)[0].verdict) == kDoesNotHold);

  const auto single = read_claims({{"one seed", "one seed", "one seed"}}, values, false);
  REQUIRE(single.size() == 1);
  CHECK_FALSE(single[0].assessed);
  CHECK_THROWS_AS(read_claims({{"mismatched seeds", "one seed", "base"}}, values, false), lorakit::ShapeError);

  const std::string table = claims_markdown(readings, "difference (points)", 100, "%.2f");
  CHECK(table.find("| better beats base | +1.00 [+0.80, +1.20] | holds |") != std::string::npos);
  CHECK(table.find("| worse beats base | -1.00 [-1.00, -1.00] | does not hold |") != std::string::npos);
  CHECK(table.find("| level beats base | +0.20 [") != std::string::npos);
  CHECK(claims_markdown(single, "d", 1, "%.2f").find("one seed: no interval | not assessed") != std::string::npos);
}

TEST_CASE("DataParallel without MPI: one rank, every call the identity", "[claims][data_parallel]") {
  int argc = 1;
  char name[] = "test";
  char* args[] = {name, nullptr};
  char** argv = args;
  const DataParallel parallel(argc, argv);
  CHECK_FALSE(DataParallel::available());
  CHECK(parallel.rank() == 0);
  CHECK(parallel.size() == 1);
  CHECK(parallel.is_root());
  const Rows rows = parallel.my_rows(64);
  CHECK(rows.begin == 0);
  CHECK(rows.count == 64);

  std::vector<double> values = {1.5, -2.25};
  parallel.sum(values);
  CHECK(values == std::vector<double>{1.5, -2.25});
  CHECK(parallel.sum(3.0) == 3.0);

  lorakit::Matrix<float> value = lorakit::Matrix<float>::Constant(2, 3, 1.0f), grad(2, 3);
  grad << 1, 2, 3, 4, 5, 6;
  const lorakit::Matrix<float> grad_before = grad;
  std::vector<lorakit::Parameter<float>> parameters = {{"p", lorakit::flat_view(value), lorakit::flat_view(grad)}};
  parallel.broadcast_values(parameters);
  parallel.average_gradients(parameters, 17);  // one rank: its gradient is the whole batch's
  CHECK(grad == grad_before);
  CHECK(value == lorakit::Matrix<float>::Constant(2, 3, 1.0f));

  lorakit::FisherStatistics<float> stats(3, 2);
  lorakit::Matrix<float> x(2, 3), dy(2, 2);
  x << 1, 0, 2, 0, 1, 1;
  dy << 1, -1, 0.5, 2;
  stats.observe(x, dy, 2);
  const auto copy = parallel.merged(stats);
  parallel.merge(stats);  // one rank: merging adds nothing (twice the data would be a defect)
  CHECK(copy.samples() == stats.samples());
  CHECK(stats.samples() == 2);
}

}  // namespace

}  // namespace lorakit_test_examples_claims
