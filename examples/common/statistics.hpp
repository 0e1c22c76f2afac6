// The statistics of the examples' studies: mean and 95% confidence interval over seeds, a paper's claim read as a
// paired difference between two methods run with the same seeds, and the verdict words of the reports.
#pragma once

#include <lorakit/core/error.hpp>

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

namespace lorakit_examples {

/// Mean of the values (0 for none).
inline double mean(const std::vector<double>& values) {
  if (values.empty()) return 0;
  double sum = 0;
  for (double v : values) sum += v;
  return sum / static_cast<double>(values.size());
}

/// Sample standard deviation (n - 1 in the denominator; 0 for fewer than two values).
inline double stddev(const std::vector<double>& values) {
  if (values.size() < 2) return 0;
  const double m = mean(values);
  double sum = 0;
  for (double v : values) sum += (v - m) * (v - m);
  return std::sqrt(sum / static_cast<double>(values.size() - 1));
}

/// The 0.975 quantile of Student's t distribution with `df` degrees of freedom: the exact tabulated values for
/// df <= 30, then the Cornish-Fisher expansion of Student's t around the normal quantile z = 1.959964 to the
/// third order in 1/df (relative error below 1e-5 from df = 30 on). Errors (lorakit::ValueError): df < 1.
inline double student_t_975(std::size_t df) {
  static const double table[] = {12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004,
                                 2.262157,  2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905,
                                 2.109816,  2.100922, 2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899,
                                 2.059539,  2.055529, 2.051831, 2.048407, 2.045230, 2.042272};
  if (df < 1) lorakit::detail::fail<lorakit::ValueError>("student_t_975", "df is 0, expected >= 1");
  if (df <= 30) return table[df - 1];
  const double z = 1.959963984540054, n = static_cast<double>(df);
  const double z3 = z * z * z, z5 = z3 * z * z, z7 = z5 * z * z;
  return z + (z3 + z) / (4 * n) + (5 * z5 + 16 * z3 + 3 * z) / (96 * n * n) +
         (3 * z7 + 19 * z5 + 17 * z3 - 15 * z) / (384 * n * n * n);
}

/// A mean with its two-sided 95% Student-t confidence interval, \f$\bar x \pm t_{0.975,n-1}\, s/\sqrt n\f$.
struct Interval {
  double mean = 0, low = 0, high = 0;
  std::size_t n = 0;
  double half_width() const { return high - mean; }
};

/// The 95% t interval of the mean of `values`. Errors (lorakit::ValueError): fewer than two values, or a
/// non-finite one (a diverged run must be seen, not averaged).
inline Interval t_interval(const std::vector<double>& values) {
  if (values.size() < 2) {
    lorakit::detail::fail<lorakit::ValueError>("t_interval", "values has ", values.size(),
                                               " entries, expected >= 2 for an interval");
  }
  for (double v : values) lorakit::detail::check_finite_scalar("t_interval", "values", v);
  Interval out;
  out.n = values.size();
  out.mean = mean(values);
  const double half = student_t_975(values.size() - 1) * stddev(values) / std::sqrt(static_cast<double>(values.size()));
  out.low = out.mean - half;
  out.high = out.mean + half;
  return out;
}

/// The paired differences a[i] - b[i] (the same seed i for both methods: same data order, same dropout stream),
/// and their 95% t interval. Errors (lorakit::ShapeError): lengths differ; as t_interval otherwise.
inline Interval paired_difference(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) {
    lorakit::detail::fail<lorakit::ShapeError>("paired_difference", "a has ", a.size(), " values and b has ", b.size(),
                                               ", expected one per seed in both");
  }
  std::vector<double> d(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  return t_interval(d);
}

/// The verdict words of the reports: a claim "holds" or "does not hold" only when the 95% interval of its paired
/// difference excludes zero; otherwise it is "not separable at this budget".
inline constexpr const char* kHolds = "holds";
inline constexpr const char* kDoesNotHold = "does not hold";
inline constexpr const char* kNotSeparable = "not separable at this budget";

/// The verdict on "method is better than baseline" from the interval of (method - baseline), where
/// `lower_is_better` says which sign is better (bits per byte: lower; accuracy: higher).
inline const char* verdict(const Interval& difference, bool lower_is_better) {
  const bool better = lower_is_better ? difference.high < 0 : difference.low > 0;
  const bool worse = lower_is_better ? difference.low > 0 : difference.high < 0;
  return better ? kHolds : worse ? kDoesNotHold : kNotSeparable;
}

/// The verdict of two runs of a study with different seed sets: a verdict that changes between them is reported
/// as not separable.
inline const char* combined_verdict(const char* first, const char* second) {
  return std::string(first) == second ? first : kNotSeparable;
}

}  // namespace lorakit_examples
