// Table, CSV and SVG of the study (the plot and the statistics are examples/common's).
#include "report.hpp"

#include "../common/claims.hpp"
#include "../common/report.hpp"
#include "../common/statistics.hpp"

#include <cstdio>
#include <fstream>
#include <sstream>
#include <utility>

namespace fashion_mnist {
namespace {

using lorakit_examples::format;
using lorakit_examples::open_output;

std::string with_thousands(Index value) {
  std::string digits = std::to_string(value), out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

}  // namespace

long long steps_to_95(const Curve& curve) {
  if (curve.empty()) return 0;
  const double target = 0.95 * curve.back().accuracy;
  for (const auto& point : curve) {
    if (point.accuracy >= target) return point.step;
  }
  return curve.back().step;
}

double mean(const std::vector<double>& values) { return lorakit_examples::mean(values); }

double stddev(const std::vector<double>& values) { return lorakit_examples::stddev(values); }

std::string markdown_table(const std::vector<MethodSummary>& rows, int seeds) {
  std::ostringstream out;
  out << "| method | lr | trainable parameters | test accuracy (%, mean [95% t interval], " << seeds
      << (seeds == 1 ? " seed" : " paired seeds") << ") | validation accuracy (%) | init time (s) | training time (s) "
      << "| steps to 95% of final validation accuracy |\n";
  out << "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n";
  for (const auto& row : rows) {
    out << "| " << row.name << " | " << format("%g", row.lr) << " | " << with_thousands(row.trainable) << " | "
        << lorakit_examples::interval_text(row.test, 100, "%.2f") << " | "
        << format("%.2f", 100 * mean(row.validation)) << " | " << format("%.3f", mean(row.init_seconds)) << " | "
        << format("%.1f", mean(row.train_seconds)) << " | " << format("%.0f", mean(row.steps_to_95)) << " |\n";
  }
  return out.str();
}

void write_curves_csv(const std::string& path, const std::vector<RunRecord>& runs) {
  std::ofstream out = open_output("write_curves_csv", path);
  out << "method,lr,seed,selected,step,validation_accuracy\n";
  for (const auto& run : runs) {
    for (const auto& point : run.curve) {
      out << '"' << run.method << "\"," << format("%g", run.lr) << ',' << run.seed << ',' << (run.selected ? 1 : 0)
          << ',' << point.step << ',' << format("%.4f", point.accuracy) << '\n';
    }
  }
}

void write_curves_svg(const std::string& path, const std::vector<MethodSummary>& rows, const std::string& title) {
  std::vector<lorakit_examples::Series> series;
  for (const auto& row : rows) {
    lorakit_examples::Series s{row.name, {}};
    for (const auto& p : row.mean_curve) s.points.emplace_back(static_cast<double>(p.step), p.accuracy);
    series.push_back(std::move(s));
  }
  lorakit_examples::Axis axis;  // accuracy in [0, 1], rounded out to whole 5% steps, labelled in percent
  axis.label = "validation accuracy (%)";
  axis.divisions = 20;
  axis.label_scale = 100;
  axis.tick_format = "%.1f";
  axis.floor = 0;
  axis.ceiling = 1;
  lorakit_examples::write_curves_svg(path, series, title, axis);
}

}  // namespace fashion_mnist
