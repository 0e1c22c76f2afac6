// A study's table cells and its claims section: a mean with its 95% t interval as text, and each paper's claim read
// as the paired difference (method - baseline) over the seeds with its interval and verdict (statistics.hpp).
#pragma once

#include "report.hpp"
#include "statistics.hpp"

#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace lorakit_examples {

/// "mean [low, high]" of `values` times `scale` with printf `pattern` (e.g. "%.2f"); one value: "mean (one seed:
/// no interval)". Errors: as t_interval (a non-finite value).
inline std::string interval_text(const std::vector<double>& values, double scale, const char* pattern) {
  if (values.size() < 2) return format(pattern, scale * mean(values)) + " (one seed: no interval)";
  const Interval i = t_interval(values);
  return format(pattern, scale * i.mean) + " [" + format(pattern, scale * i.low) + ", " +
         format(pattern, scale * i.high) + "]";
}

/// A paper's claim "method is better than baseline", by the names of two rows of the study.
struct Claim {
  std::string text;
  std::string method;
  std::string baseline;
};

/// A claim as one run of a study reads it.
struct ClaimReading {
  Claim claim;
  bool assessed = false;  // false: a row is missing, or fewer than two seeds
  Interval difference;    // method - baseline, paired over the seeds
  const char* verdict = "not assessed";
};

/// Each claim whose two rows are in `values` (per row, one value per seed, the same seeds in the same order),
/// read as the paired difference method - baseline; `lower_is_better` as in `verdict`. A claim with a missing row
/// is left out; one with fewer than two seeds is returned unassessed. Errors: as paired_difference (rows with
/// different numbers of seeds, a non-finite value).
inline std::vector<ClaimReading> read_claims(const std::vector<Claim>& claims,
                                             const std::map<std::string, std::vector<double>>& values,
                                             bool lower_is_better) {
  std::vector<ClaimReading> out;
  for (const auto& claim : claims) {
    const auto a = values.find(claim.method), b = values.find(claim.baseline);
    if (a == values.end() || b == values.end()) continue;
    ClaimReading reading;
    reading.claim = claim;
    if (a->second.size() >= 2 || a->second.size() != b->second.size()) {  // a mismatch throws
      reading.difference = paired_difference(a->second, b->second);
      reading.verdict = verdict(reading.difference, lower_is_better);
      reading.assessed = true;
    }
    out.push_back(reading);
  }
  return out;
}

/// The claims as a markdown table: claim, paired difference (times `scale`, printf `pattern`, signed) with its
/// 95% t interval, verdict. `difference_header` names the middle column (what is subtracted, in which unit).
inline std::string claims_markdown(const std::vector<ClaimReading>& readings, const std::string& difference_header,
                                   double scale, const char* pattern) {
  std::ostringstream out;
  out << "| claim | " << difference_header << " | verdict |\n| --- | ---: | --- |\n";
  const std::string signed_pattern = std::string("%+") + (pattern[0] == '%' ? pattern + 1 : pattern);
  for (const auto& r : readings) {
    out << "| " << r.claim.text << " | ";
    if (!r.assessed) {
      out << "one seed: no interval | " << r.verdict << " |\n";
      continue;
    }
    out << format(signed_pattern.c_str(), scale * r.difference.mean) << " ["
        << format(signed_pattern.c_str(), scale * r.difference.low) << ", "
        << format(signed_pattern.c_str(), scale * r.difference.high) << "] | " << r.verdict << " |\n";
  }
  return out.str();
}

}  // namespace lorakit_examples
