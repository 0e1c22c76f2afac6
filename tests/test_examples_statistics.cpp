// The statistics of the examples' studies (examples/common/statistics.hpp): Student t quantiles against published
// tables, intervals against hand-computed values, paired differences, and the verdict words of issue 15.
#include "common/statistics.hpp"

#include <catch2/catch.hpp>

namespace lorakit_test_examples_statistics {

namespace {

using namespace lorakit_examples;

TEST_CASE("student_t_975 matches the published t table, the expansion included", "[statistics]") {
  // Student t 0.975 quantiles from standard tables (e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2), the ones beyond df = 30
  // checked against the root of the regularized incomplete beta function (mpmath, 30 digits).
  CHECK(student_t_975(1) == Approx(12.706).epsilon(1e-4));
  CHECK(student_t_975(4) == Approx(2.776).epsilon(1e-3));
  CHECK(student_t_975(9) == Approx(2.262).epsilon(1e-3));
  CHECK(student_t_975(30) == Approx(2.042).epsilon(1e-3));
  // Beyond the tabulated range: the Cornish-Fisher expansion.
  CHECK(student_t_975(40) == Approx(2.021075).epsilon(2e-5));
  CHECK(student_t_975(60) == Approx(2.000298).epsilon(2e-5));
  CHECK(student_t_975(100) == Approx(1.983972).epsilon(2e-5));
  CHECK(student_t_975(1000000) == Approx(1.9599664).epsilon(1e-7));
  CHECK_THROWS_AS(student_t_975(0), lorakit::ValueError);
}

TEST_CASE("t_interval and paired_difference on hand-computed data", "[statistics]") {
  // values 1..5: mean 3, sample sd sqrt(2.5), half width t(4) * sqrt(2.5) / sqrt(5) = 2.776445 * 0.7071068.
  const Interval i = t_interval({1, 2, 3, 4, 5});
  CHECK(i.mean == Approx(3));
  CHECK(i.half_width() == Approx(2.776445 * std::sqrt(0.5)).epsilon(1e-6));
  CHECK(i.n == 5);
  CHECK_THROWS_AS(t_interval({1.0}), lorakit::ValueError);
  CHECK_THROWS_AS(t_interval({1.0, std::nan("")}), lorakit::ValueError);

  // Pairing removes the seed effect: b = a + 0.1 with a small jitter is separable although a's spread is large.
  const std::vector<double> a = {1.0, 3.0, 2.0, 5.0, 4.0};
  const std::vector<double> b = {1.11, 3.09, 2.10, 5.12, 4.08};
  const Interval d = paired_difference(a, b);
  CHECK(d.mean == Approx(-0.1).epsilon(1e-9));
  CHECK(d.high < 0);
  CHECK_FALSE(t_interval(a).high < t_interval(b).low);  // unpaired intervals overlap
  CHECK_THROWS_AS(paired_difference(a, {1.0, 2.0}), lorakit::ShapeError);
}

TEST_CASE("verdicts: holds or does not hold only when the interval excludes zero", "[statistics]") {
  const Interval lower{-0.2, -0.3, -0.1, 5}, higher{0.2, 0.1, 0.3, 5}, straddles{0.05, -0.1, 0.2, 5};
  CHECK(std::string(verdict(lower, true)) == "holds");
  CHECK(std::string(verdict(higher, true)) == "does not hold");
  CHECK(std::string(verdict(straddles, true)) == "not separable at this budget");
  CHECK(std::string(verdict(higher, false)) == "holds");  // accuracy: higher is better
  CHECK(std::string(verdict(lower, false)) == "does not hold");
  CHECK(std::string(combined_verdict(kHolds, kHolds)) == "holds");
  CHECK(std::string(combined_verdict(kHolds, kNotSeparable)) == "not separable at this budget");
  CHECK(std::string(combined_verdict(kHolds, kDoesNotHold)) == "not separable at this budget");
}

}  // namespace

}  // namespace lorakit_test_examples_statistics
